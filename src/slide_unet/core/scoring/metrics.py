"""Scores of a predicted mask against an expert mask: Dice, IoU, per-tile Dice, object F1.

Any non-zero pixel is foreground (bool, 0/1, 0/255 and instance labels all
work). Masks may be numpy arrays or chunked arrays (dask, zarr): these are
read block by block (blocks aligned to the prediction's chunks, the next block
read in the background), so scoring a 1.4-gigapixel HuBMAP slide needs a few
blocks of memory plus O(number of objects), never a whole mask.

Conventions
-----------
- Two empty masks have Dice and IoU 1 (as the HuBMAP "Hacking the Kidney"
  competition scored them); an empty mask against a non-empty one scores 0.
- Objects are connected components (8-connectivity unless asked otherwise).
  A predicted and a true object match when their IoU is at least the
  threshold (0.5). At 0.5 and above the matching is unique by itself: above
  0.5 each object overlaps its partner by more than half, so it has at most
  one; at exactly 0.5, two true objects at IoU 0.5 with one predicted object
  would have to be inside it and cover it exactly, so they would touch and
  be one object (the same holds the other way round). Below 0.5 an object
  may reach several; pairs are then taken greedily by decreasing IoU (ties:
  lower predicted id, then lower true id), each object used once.
- Object precision, recall and F1 of two masks without objects are 1; with
  objects on one side only, all three are 0.

This module is part of the napari-free core: it never imports napari, Qt or
magicgui.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from slide_unet.core.errors import Cancelled, InputError
from slide_unet.core.masks.blocks import DEFAULT_BLOCK, BlockGrid, check_mask_pair
from slide_unet.core.scoring.matching import ObjectMatch, check_threshold, count_pair, match_counts

__all__ = [
    "CONFUSION_NAMES",
    "Cancelled",
    "ObjectMatch",
    "Scores",
    "TileDice",
    "confusion_overlay",
    "dice",
    "iou",
    "match_objects",
    "score",
    "tile_dice",
]

#: Values of :func:`confusion_overlay`.
CONFUSION_NAMES: dict[int, str] = {
    0: "true negative",
    1: "true positive",
    2: "false positive",
    3: "false negative",
}

#: numpy masks up to this many pixels are scored in one go rather than by blocks.
_IN_ONE_GO = 1 << 26


def _dice(intersection: int, pred_pixels: int, true_pixels: int) -> float:
    total = pred_pixels + true_pixels
    return 1.0 if total == 0 else 2.0 * intersection / total


def _iou(intersection: int, pred_pixels: int, true_pixels: int) -> float:
    union = pred_pixels + true_pixels - intersection
    return 1.0 if union == 0 else intersection / union


def _counts(pred: Any, truth: Any, block: int) -> tuple[int, int, int]:
    pred, truth, shape = check_mask_pair(pred, truth)
    if isinstance(pred, np.ndarray) and isinstance(truth, np.ndarray) and pred.size <= _IN_ONE_GO:
        p, t = pred != 0, truth != 0
        inter = np.count_nonzero(np.logical_and(p, t))
        return int(inter), int(np.count_nonzero(p)), int(np.count_nonzero(t))
    found = count_pair(pred, truth, shape, block=block)
    return found.intersection, found.pred_pixels, found.true_pixels


# -- pixel scores ------------------------------------------------------------------------------


def dice(pred: Any, truth: Any, *, block: int = DEFAULT_BLOCK) -> float:
    """Dice coefficient ``2 |P ∩ T| / (|P| + |T|)`` of two masks.

    Parameters
    ----------
    pred, truth : array-like
        2-D masks of the same shape (numpy, dask, zarr); any non-zero pixel is
        foreground.
    block : int, optional
        Side of the blocks chunked masks are read in (aligned to their chunks).

    Returns
    -------
    float
        In [0, 1]; 1 for two empty masks.

    Raises
    ------
    ValueError
        If the masks are not 2-D or their shapes differ.

    Examples
    --------
    >>> import numpy as np
    >>> a = np.zeros((4, 4), np.uint8); a[:2] = 1
    >>> b = np.zeros((4, 4), np.uint8); b[1:3] = 255
    >>> dice(a, b)
    0.5
    """
    return _dice(*_counts(pred, truth, block))


def iou(pred: Any, truth: Any, *, block: int = DEFAULT_BLOCK) -> float:
    """Intersection over union (Jaccard index) ``|P ∩ T| / |P ∪ T|`` of two masks.

    Parameters and errors as :func:`dice`. Two empty masks score 1. Relates
    to Dice as ``IoU = D / (2 - D)``.

    Returns
    -------
    float
        In [0, 1].
    """
    return _iou(*_counts(pred, truth, block))


@dataclass(frozen=True, eq=False)
class TileDice:
    """Dice per tile of a grid over the slide, and its means.

    Tiles are ``tile`` pixels a side from the top-left corner; those on the
    bottom and right edges are cut at the border (not padded). A tile empty in
    both masks has Dice 1, the whole-slide convention.

    Attributes
    ----------
    tile : int
        Tile side in pixels.
    shape : tuple of int
        ``(height, width)`` of the masks.
    intersection, pred_pixels, true_pixels : numpy.ndarray
        ``(tile rows, tile columns)`` pixel counts.
    """

    tile: int
    shape: tuple[int, int]
    intersection: np.ndarray
    pred_pixels: np.ndarray
    true_pixels: np.ndarray

    @property
    def dice(self) -> np.ndarray:
        """``(tile rows, tile columns)`` Dice per tile; 1 where both masks are empty."""
        total = self.pred_pixels + self.true_pixels
        out = np.ones(total.shape, dtype=np.float64)
        np.divide(2.0 * self.intersection, total, out=out, where=total > 0)
        return out

    def dice_map(self) -> np.ndarray:
        """The per-tile Dice grid for a heatmap: ``(tile rows, tile columns)``
        float32, NaN where both masks are empty (nothing to score there).

        Pixel ``(r, c)`` is the tile at full-resolution rows ``r * tile`` to
        ``(r + 1) * tile`` and columns ``c * tile`` to ``(c + 1) * tile``
        (cut at the border), so an image of it scaled by ``tile`` lies over
        the slide.
        """
        out = self.dice.astype(np.float32)
        out[self.empty] = np.nan
        return out

    @property
    def empty(self) -> np.ndarray:
        """Tiles with no foreground in either mask."""
        return (self.pred_pixels + self.true_pixels) == 0

    @property
    def mean(self) -> float:
        """Mean Dice over all tiles, empty ones counting 1.

        The mean over tiles is how earlier public HuBMAP projects reported
        Dice (per tile, then averaged); a tile empty in both masks counts 1,
        as the competition's convention and a smoothed per-tile Dice score
        it. On a slide that is mostly background it is dominated by such
        tiles, so it reads higher than :attr:`slide_dice`; see also
        :attr:`mean_nonempty`.
        """
        return float(self.dice.mean()) if self.dice.size else 1.0

    @property
    def mean_nonempty(self) -> float:
        """Mean Dice over the tiles with foreground in either mask (1 if there are none)."""
        keep = ~self.empty
        return float(self.dice[keep].mean()) if keep.any() else 1.0

    @property
    def slide_dice(self) -> float:
        """Whole-slide Dice, from the summed counts (the competition's score)."""
        return _dice(
            int(self.intersection.sum()), int(self.pred_pixels.sum()), int(self.true_pixels.sum())
        )

    def records(self) -> list[dict[str, Any]]:
        """The table, one dict per tile (row-major): grid position, pixel box, counts, Dice."""
        h, w = self.shape
        rows: list[dict[str, Any]] = []
        scores = self.dice
        for (r, c), d in np.ndenumerate(scores):
            y, x = r * self.tile, c * self.tile
            rows.append(
                {
                    "row": r,
                    "col": c,
                    "y": y,
                    "x": x,
                    "height": min(self.tile, h - y),
                    "width": min(self.tile, w - x),
                    "intersection": int(self.intersection[r, c]),
                    "pred_pixels": int(self.pred_pixels[r, c]),
                    "true_pixels": int(self.true_pixels[r, c]),
                    "dice": float(d),
                }
            )
        return rows


def _check_tile(tile: int) -> int:
    if int(tile) < 1:
        msg = f"tile must be a positive number of pixels, got {tile!r}"
        raise InputError(msg)
    return int(tile)


def tile_dice(pred: Any, truth: Any, tile: int = 1024, *, block: int = DEFAULT_BLOCK) -> TileDice:
    """Dice on each tile of a ``tile`` x ``tile`` grid, streaming.

    Parameters
    ----------
    pred, truth : array-like
        2-D masks of the same shape; any non-zero pixel is foreground.
    tile : int, optional
        Tile side in pixels (default 1024).
    block : int, optional
        Side of the blocks chunked masks are read in.

    Returns
    -------
    TileDice
        Per-tile counts and Dice (empty-empty tiles count 1), ``.mean`` over
        all tiles, ``.mean_nonempty``, ``.slide_dice`` and ``.records()``.

    Raises
    ------
    ValueError
        If the shapes differ, a mask is not 2-D or `tile` is not positive.
    """
    pred, truth, shape = check_mask_pair(pred, truth)
    tile = _check_tile(tile)
    found = count_pair(pred, truth, shape, block=block, tile=tile)
    assert found.tiles is not None
    return TileDice(tile, shape, *found.tiles)


# -- objects -----------------------------------------------------------------------------------


def match_objects(
    pred: Any,
    truth: Any,
    *,
    iou_threshold: float = 0.5,
    connectivity: int = 8,
    block: int = DEFAULT_BLOCK,
    progress: Callable[[int, int], None] | None = None,
    cancelled: Callable[[], bool] | None = None,
) -> ObjectMatch:
    """Match the connected components of two masks by IoU, streaming.

    Both masks are labelled block by block (:mod:`slide_unet.core.objects.components`);
    per block, the pixels where both have foreground add to a sparse table of
    (predicted id, true id) overlaps, which with the objects' areas gives each
    pair's IoU.

    Parameters
    ----------
    pred, truth : array-like
        2-D masks of the same shape; any non-zero pixel is foreground
        (instance labels are binarised: touching instances become one object).
    iou_threshold : float, optional
        Least IoU of a match (default 0.5). From 0.5 up matches are unique;
        below, candidates are taken greedily by IoU (see the module notes).
    connectivity : {8, 4}, optional
        Pixel connectivity of an object.
    block : int, optional
        Side of the blocks the masks are read in.
    progress : callable, optional
        Called as ``progress(done, total)`` after each block.
    cancelled : callable, optional
        Checked before each block; when it returns True, ``Cancelled`` is raised.

    Returns
    -------
    ObjectMatch

    Raises
    ------
    ValueError
        If the shapes differ, a mask is not 2-D, or a parameter is invalid.
    slide_unet.core.errors.Cancelled
        If `cancelled` returned True.
    """
    pred, truth, shape = check_mask_pair(pred, truth)
    threshold = check_threshold(iou_threshold)
    found = count_pair(
        pred,
        truth,
        shape,
        block=block,
        objects=True,
        connectivity=connectivity,
        progress=progress,
        cancelled=cancelled,
    )
    return match_counts(found, threshold)


# -- everything at once ------------------------------------------------------------------------


@dataclass(frozen=True, eq=False)
class Scores:
    """Every score of a prediction against the truth, from one pass over both masks.

    Attributes
    ----------
    dice, iou : float
        Whole-slide pixel scores (1 for two empty masks).
    tile_dice_mean : float
        Mean per-tile Dice, empty-empty tiles counting 1 (see :attr:`TileDice.mean`).
    tile_dice_mean_nonempty : float
        Mean per-tile Dice over tiles with foreground in either mask.
    object_precision, object_recall, object_f1 : float
        Object-level scores (see :class:`ObjectMatch`).
    true_positives, false_positives, false_negatives, n_pred_objects, n_true_objects : int
        Object counts.
    intersection, pred_pixels, true_pixels : int
        Pixel counts.
    shape : tuple of int
        ``(height, width)`` of the masks.
    tile, iou_threshold, connectivity
        The parameters used.
    tiles : TileDice
        The per-tile table.
    objects : ObjectMatch
        The object matching, with the matched pairs.
    """

    dice: float
    iou: float
    tile_dice_mean: float
    tile_dice_mean_nonempty: float
    object_precision: float
    object_recall: float
    object_f1: float
    true_positives: int
    false_positives: int
    false_negatives: int
    n_pred_objects: int
    n_true_objects: int
    intersection: int
    pred_pixels: int
    true_pixels: int
    shape: tuple[int, int]
    tile: int
    iou_threshold: float
    connectivity: int
    tiles: TileDice = field(repr=False)
    objects: ObjectMatch = field(repr=False)

    def as_dict(self, *, tiles: bool = False) -> dict[str, Any]:
        """The scores as plain Python values, ready for ``json.dumps``.

        Parameters
        ----------
        tiles : bool, optional
            Also include the per-tile table under ``"tiles"``.
        """
        out: dict[str, Any] = {
            name: getattr(self, name)
            for name in self.__dataclass_fields__
            if name not in ("tiles", "objects")
        }
        out["shape"] = list(self.shape)
        if tiles:
            out["tiles"] = self.tiles.records()
        return out


def score(
    pred: Any,
    truth: Any,
    *,
    tile: int = 1024,
    iou_threshold: float = 0.5,
    connectivity: int = 8,
    block: int = DEFAULT_BLOCK,
    progress: Callable[[int, int], None] | None = None,
    cancelled: Callable[[], bool] | None = None,
) -> Scores:
    """Dice, IoU, per-tile Dice and object precision/recall/F1, in one streaming pass.

    Parameters
    ----------
    pred, truth : array-like
        2-D masks of the same shape (numpy, dask, zarr); any non-zero pixel is
        foreground.
    tile : int, optional
        Side of the per-tile Dice grid (default 1024).
    iou_threshold : float, optional
        Least IoU of an object match (default 0.5).
    connectivity : {8, 4}, optional
        Pixel connectivity of an object.
    block : int, optional
        Side of the blocks the masks are read in.
    progress : callable, optional
        Called as ``progress(done, total)`` after each block.
    cancelled : callable, optional
        Checked before each block; when it returns True, ``Cancelled`` is raised.

    Returns
    -------
    Scores
        With ``.as_dict()`` for JSON.

    Raises
    ------
    ValueError
        If the shapes differ, a mask is not 2-D, or a parameter is invalid.
    slide_unet.core.errors.Cancelled
        If `cancelled` returned True.
    """
    pred, truth, shape = check_mask_pair(pred, truth)
    threshold = check_threshold(iou_threshold)
    tile = _check_tile(tile)
    found = count_pair(
        pred,
        truth,
        shape,
        block=block,
        tile=tile,
        objects=True,
        connectivity=connectivity,
        progress=progress,
        cancelled=cancelled,
    )
    assert found.tiles is not None
    tiles = TileDice(tile, shape, *found.tiles)
    objects = match_counts(found, threshold)
    counts = (found.intersection, found.pred_pixels, found.true_pixels)
    return Scores(
        dice=_dice(*counts),
        iou=_iou(*counts),
        tile_dice_mean=tiles.mean,
        tile_dice_mean_nonempty=tiles.mean_nonempty,
        object_precision=objects.precision,
        object_recall=objects.recall,
        object_f1=objects.f1,
        true_positives=objects.true_positives,
        false_positives=objects.false_positives,
        false_negatives=objects.false_negatives,
        n_pred_objects=objects.n_pred,
        n_true_objects=objects.n_true,
        intersection=found.intersection,
        pred_pixels=found.pred_pixels,
        true_pixels=found.true_pixels,
        shape=shape,
        tile=tile,
        iou_threshold=threshold,
        connectivity=connectivity,
        tiles=tiles,
        objects=objects,
    )


# -- overlay -----------------------------------------------------------------------------------


def _confusion(pred: np.ndarray, truth: np.ndarray) -> np.ndarray:
    p, t = np.asarray(pred) != 0, np.asarray(truth) != 0
    out = p.astype(np.uint8)  # TP 1, FP 2, FN 3 from p + (p & ~t) + 3 (~p & t)
    out += np.logical_and(p, ~t)
    out += 3 * np.logical_and(~p, t).view(np.uint8)
    return out


def confusion_overlay(pred: Any, truth: Any, *, block: int = DEFAULT_BLOCK) -> Any:
    """Per-pixel agreement of two masks, for display as a Labels layer.

    Values (:data:`CONFUSION_NAMES`): 0 true negative (background in both),
    1 true positive, 2 false positive (predicted only), 3 false negative
    (missed).

    Parameters
    ----------
    pred, truth : array-like
        2-D masks of the same shape; any non-zero pixel is foreground.
    block : int, optional
        Chunk side of the result when neither input is a dask array.

    Returns
    -------
    numpy.ndarray or dask.array.Array
        ``uint8`` of the masks' shape: a numpy array for two numpy inputs,
        otherwise a lazy dask array (computed block by block when read), so
        it works for whole slides.

    Raises
    ------
    ValueError
        If the shapes differ or a mask is not 2-D.
    """
    pred, truth, shape = check_mask_pair(pred, truth)
    if isinstance(pred, np.ndarray) and isinstance(truth, np.ndarray):
        return _confusion(pred, truth)
    import dask.array as da

    if isinstance(pred, da.Array):
        p = pred
    else:
        p = da.from_array(pred, chunks=BlockGrid.for_arrays(shape, block, [pred]).block_shape)
    # The truth follows the prediction's chunks, so the blocks pair up one to one.
    t = truth.rechunk(p.chunks) if isinstance(truth, da.Array) else da.from_array(truth, p.chunks)
    return da.map_blocks(_confusion, p, t, dtype=np.uint8, meta=np.empty((0, 0), np.uint8))
