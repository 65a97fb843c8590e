"""One streaming pass over a prediction and a truth mask, and object matching by IoU.

:func:`count_pair` reads both masks once, block by block, and accumulates
what the scores need: pixel counts (whole mask and per tile) and, when asked,
the two masks' connected components (:class:`~slide_unet.core.objects.components.BlockLabeller`)
with a sparse table of overlaps between predicted and true objects.
:func:`match_counts` turns that table into one-to-one matches.

This module is part of the napari-free core: it never imports napari, Qt or
magicgui.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from slide_unet.core.errors import Cancelled, InputError
from slide_unet.core.masks.blocks import BlockGrid, iter_mask_blocks
from slide_unet.core.objects.components import BlockLabeller, ChunkedLabels, squeeze_empty

__all__ = ["ObjectMatch", "PairCounts", "check_threshold", "count_pair", "match_counts"]


@dataclass
class PairCounts:
    """What one pass over both masks accumulated (see :func:`count_pair`).

    Attributes
    ----------
    intersection, pred_pixels, true_pixels : int
        Foreground pixels in both masks, in the prediction, in the truth.
    tiles : numpy.ndarray or None
        ``(3, tile rows, tile columns)``: the same three counts per tile.
    pred_labels, true_labels : ChunkedLabels or None
        The masks' connected components.
    overlaps : numpy.ndarray or None
        ``(k, 3)`` rows of (predicted id, true id, overlapping pixels), one per
        pair of objects that overlap, sorted by ids.
    """

    intersection: int = 0
    pred_pixels: int = 0
    true_pixels: int = 0
    tiles: np.ndarray | None = None  # (3, rows, cols): intersection, pred, true
    pred_labels: ChunkedLabels | None = None
    true_labels: ChunkedLabels | None = None
    overlaps: np.ndarray | None = None  # (k, 3): global pred id, global true id, pixels


def _tile_counts(binary: np.ndarray, y: int, x: int, tile: int) -> np.ndarray:
    """Foreground pixels of `binary` (at ``(y, x)``) in each tile of the global grid it meets."""
    h, w = binary.shape
    rows = np.unique(np.r_[0, np.arange(-y % tile, h, tile)])
    cols = np.unique(np.r_[0, np.arange(-x % tile, w, tile)])
    if rows.size * cols.size <= 256:
        edges_r, edges_c = np.r_[rows, h], np.r_[cols, w]
        return np.array(
            [
                [np.count_nonzero(binary[r0:r1, c0:c1]) for c0, c1 in itertools.pairwise(edges_c)]
                for r0, r1 in itertools.pairwise(edges_r)
            ],
            dtype=np.int64,
        ).reshape(rows.size, cols.size)
    sums = np.add.reduceat(binary.view(np.uint8), rows, axis=0, dtype=np.int64)
    return np.add.reduceat(sums, cols, axis=1)


def _overlap_counts(a: np.ndarray, b: np.ndarray, na: int, nb: int) -> np.ndarray:
    """(k, 3) distinct (a, b, count) among paired non-zero local labels."""
    key = a.astype(np.int64) * (nb + 1) + b
    if (na + 1) * (nb + 1) <= max(1 << 22, 4 * key.size):
        counts = np.bincount(key, minlength=(na + 1) * (nb + 1))
        keys = np.flatnonzero(counts)
        counts = counts[keys]
    else:
        keys, counts = np.unique(key, return_counts=True)
    return np.column_stack([keys // (nb + 1), keys % (nb + 1), counts])


def count_pair(
    pred: Any,
    truth: Any,
    shape: tuple[int, int],
    *,
    block: int,
    tile: int | None = None,
    objects: bool = False,
    connectivity: int = 8,
    progress: Callable[[int, int], None] | None = None,
    cancelled: Callable[[], bool] | None = None,
) -> PairCounts:
    """Read both masks once, block by block, and accumulate every count asked for.

    Parameters
    ----------
    pred, truth : array-like
        2-D masks of `shape` (checked by the caller); non-zero is foreground.
    shape : tuple of int
        ``(height, width)``.
    block : int
        Side of a block, aligned to the first chunked mask's chunks.
    tile : int, optional
        Also count per tile of this side.
    objects : bool, optional
        Also label both masks and tabulate the overlaps of their objects.
    connectivity : {8, 4}, optional
        Pixel connectivity of an object.
    progress : callable, optional
        Called as ``progress(done, total)`` after each block.
    cancelled : callable, optional
        Checked before each block; when it returns True, ``Cancelled`` is raised.

    Returns
    -------
    PairCounts

    Raises
    ------
    slide_unet.core.errors.Cancelled
        If `cancelled` returned True.
    """
    grid = BlockGrid.for_arrays(shape, block, [pred, truth])
    out = PairCounts()
    if tile is not None:
        out.tiles = np.zeros((3, -(-shape[0] // tile), -(-shape[1] // tile)), dtype=np.int64)
    labellers = (BlockLabeller(grid, connectivity), BlockLabeller(grid, connectivity))
    pairs: list[np.ndarray] = []
    tally = [0, 0, 0]  # intersection, prediction, truth
    total = len(grid)
    for done, (_, _, (ys, xs), (p, t)) in enumerate(
        iter_mask_blocks([pred, truth], grid), start=1
    ):
        if cancelled is not None and cancelled():
            raise Cancelled("scoring cancelled")
        found_p, found_t = bool(p.any()), bool(t.any())
        both = np.logical_and(p, t) if found_p and found_t else None
        masks = (both, p if found_p else None, t if found_t else None)
        if out.tiles is not None and tile is not None:
            r, c = ys.start // tile, xs.start // tile
            for k, m in enumerate(masks):
                if m is not None:
                    cnt = _tile_counts(m, ys.start, xs.start, tile)
                    out.tiles[k, r : r + cnt.shape[0], c : c + cnt.shape[1]] += cnt
                    tally[k] += int(cnt.sum())
        else:
            for k, m in enumerate(masks):
                if m is not None:
                    tally[k] += int(np.count_nonzero(m))
        if objects:
            squeezed = squeeze_empty(p, t)
            if squeezed is not None:
                p, t = squeezed.apply(p), squeezed.apply(t)
                if both is not None:
                    both = squeezed.apply(both)
            (lp, off_p), (lt, off_t) = (
                labellers[0].add(p, squeezed),
                labellers[1].add(t, squeezed),
            )
            if both is not None and both.any():
                n_lp = labellers[0].n_provisional - off_p
                n_lt = labellers[1].n_provisional - off_t
                found = _overlap_counts(lp[both], lt[both], n_lp, n_lt)
                found[:, 0] += off_p
                found[:, 1] += off_t
                pairs.append(found)
        if progress is not None:
            progress(done, total)
    out.intersection, out.pred_pixels, out.true_pixels = tally
    if objects:
        out.pred_labels = labellers[0].finish(source=pred)
        out.true_labels = labellers[1].finish(source=truth)
        if pairs:
            found = np.concatenate(pairs)
            gp = out.pred_labels.mapping[found[:, 0]]
            gt = out.true_labels.mapping[found[:, 1]]
            key = gp * (out.true_labels.n_objects + 1) + gt
            keys, inverse = np.unique(key, return_inverse=True)
            sums = np.zeros(keys.size, dtype=np.int64)
            np.add.at(sums, inverse.ravel(), found[:, 2])
            n = out.true_labels.n_objects + 1
            out.overlaps = np.column_stack([keys // n, keys % n, sums])
        else:
            out.overlaps = np.zeros((0, 3), dtype=np.int64)
    return out


@dataclass(frozen=True, eq=False)
class ObjectMatch:
    """Object-level agreement: connected components matched one to one by IoU.

    Attributes
    ----------
    true_positives : int
        Matched pairs.
    false_positives : int
        Predicted objects without a match.
    false_negatives : int
        True objects without a match.
    precision, recall, f1 : float
        ``TP / n_pred``, ``TP / n_true``, ``2 TP / (n_pred + n_true)``; 1 when
        neither mask has objects, 0 when only one has.
    n_pred, n_true : int
        Objects in each mask.
    iou_threshold : float
        Least IoU of a match.
    pred_ids, true_ids, ious : numpy.ndarray
        The matched pairs: global ids (numbered as ``scipy.ndimage.label``
        numbers the whole mask) and their IoU.
    """

    true_positives: int
    false_positives: int
    false_negatives: int
    precision: float
    recall: float
    f1: float
    n_pred: int
    n_true: int
    iou_threshold: float
    pred_ids: np.ndarray = field(repr=False)
    true_ids: np.ndarray = field(repr=False)
    ious: np.ndarray = field(repr=False)

    def as_dict(self) -> dict[str, Any]:
        """The counts and scores as plain Python values (JSON-ready)."""
        names = ("true_positives", "false_positives", "false_negatives", "precision")
        names += ("recall", "f1", "n_pred", "n_true", "iou_threshold")
        return {name: getattr(self, name) for name in names}


def match_counts(found: PairCounts, iou_threshold: float) -> ObjectMatch:
    """Match objects one to one from a pass's overlap table (greedy by IoU below 0.5).

    Parameters
    ----------
    found : PairCounts
        From :func:`count_pair` with ``objects=True``.
    iou_threshold : float
        Least IoU of a match.

    Returns
    -------
    ObjectMatch
    """
    assert found.pred_labels is not None
    assert found.true_labels is not None
    assert found.overlaps is not None
    n_pred, n_true = found.pred_labels.n_objects, found.true_labels.n_objects
    gp, gt, inter = found.overlaps.T
    union = found.pred_labels.areas[gp] + found.true_labels.areas[gt] - inter
    ious = inter / np.maximum(union, 1)
    keep = ious >= iou_threshold
    gp, gt, ious = gp[keep], gt[keep], ious[keep]
    if iou_threshold <= 0.5 and gp.size:
        # Greedy by IoU (ties: lower ids first); from 0.5 up every pair is unique already
        # (see slide_unet.core.scoring.metrics), so this only decides below 0.5.
        order = np.lexsort((gt, gp, -ious))
        used_p: set[int] = set()
        used_t: set[int] = set()
        chosen = []
        for k in order.tolist():
            a, b = int(gp[k]), int(gt[k])
            if a not in used_p and b not in used_t:
                used_p.add(a)
                used_t.add(b)
                chosen.append(k)
        chosen_idx = np.sort(np.array(chosen, dtype=np.int64))
        gp, gt, ious = gp[chosen_idx], gt[chosen_idx], ious[chosen_idx]
    tp = int(gp.size)
    if n_pred == 0 and n_true == 0:
        precision = recall = f1 = 1.0
    else:
        precision = tp / n_pred if n_pred else 0.0
        recall = tp / n_true if n_true else 0.0
        f1 = 2 * tp / (n_pred + n_true)
    return ObjectMatch(
        true_positives=tp,
        false_positives=n_pred - tp,
        false_negatives=n_true - tp,
        precision=precision,
        recall=recall,
        f1=f1,
        n_pred=n_pred,
        n_true=n_true,
        iou_threshold=float(iou_threshold),
        pred_ids=gp,
        true_ids=gt,
        ious=ious,
    )


def check_threshold(iou_threshold: float) -> float:
    """`iou_threshold` as a float in (0, 1], or a clear ValueError."""
    if not 0.0 < float(iou_threshold) <= 1.0:
        msg = f"iou_threshold must be in (0, 1], got {iou_threshold!r}"
        raise InputError(msg)
    return float(iou_threshold)
