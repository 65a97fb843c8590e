"""Measure every object of a mask of any size, streaming block by block.

:func:`measure` labels the mask as :func:`~slide_unet.core.objects.components.label_chunked`
does (8-connected components of the non-zero pixels, found per block and
joined across block borders by a union-find) and, in the same single pass,
adds up per block what each object's measurements need. An object that
crosses block borders is measured whole, exactly as in one block; nothing
the size of the mask is held (a few blocks, plus per object its sums and
the ends of its pixel runs in each row).

What the columns mean (:func:`~slide_unet.core.objects.table.column_names`)
    ``id``
        The object's number: objects are numbered in the order of their
        first pixel in a row-major scan, as ``scipy.ndimage.label`` numbers
        them (and as :func:`label_chunked` does).
    ``centroid_y``, ``centroid_x``
        The mean of the object's pixel positions, a pixel's position being
        its row and column index (pixel centres at whole numbers, as in
        napari and scikit-image), times the pixel size.
    ``bbox_y0``, ``bbox_x0``, ``bbox_y1``, ``bbox_x1``
        The bounding box as pixel indices, start inclusive and end exclusive
        (``mask[y0:y1, x0:x1]`` holds the object), times the pixel size.
    ``area``
        The pixel count times the pixel area.
    ``equivalent_diameter``
        The diameter of the disc of the same area, ``sqrt(4 * area / pi)``.
    ``perimeter``
        The Crofton estimate in 4 directions over the 2 x 2 pixel windows
        that meet the object, the estimator of scikit-image's
        ``perimeter_crofton`` (about ``2 pi r`` for a disc of radius ``r``,
        unlike counting pixel edges, which gives ``8 r``). Each window's
        weight is shared among its object pixels, so the sum is additive
        over blocks; the pixels one step across a block's top and left
        borders come from the labeller (:meth:`BlockLabeller.next_halo`),
        never re-read.
    ``solidity``
        The pixel count over the area of the convex hull of the object's
        pixels taken as unit squares (the hull of their corners), so a
        rectangle has 1 and any object at most 1. The hull is found at the
        end from the leftmost and rightmost pixel of each of the object's
        rows, kept per block as it streams (what the hull depends on, and
        bounded by the object's height times the blocks it spans).
    ``pixels``
        The pixel count.
    ``mean_probability``
        The mean of ``probabilities`` over the object's pixels, when given;
        else missing (NaN; an empty CSV field). Float probabilities are taken
        as they are (0..1); uint8 ones as a mask store keeps them
        (``round(p * 255)``, 0 where unknown) are divided by 255 and their 0s
        left out, so an object painted by hand or segmented before the store
        kept probabilities is averaged over the pixels whose probability is
        known (NaN when none is).

Units: lengths in µm (``_um``) and areas in µm² (``_um2``) when the pixel size
is known, else in pixels (``_px``, ``_px2``); ``solidity``, ``pixels`` and
``mean_probability`` have none.

Instance masks: any non-zero pixel is foreground, as everywhere in this
package (scoring, small-object removal), and objects are the 8-connected
components: two touching instances with different ids are one object, one id
in two pieces is two.

This module is part of the napari-free core.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import Any

import numpy as np
from scipy.spatial import ConvexHull

from slide_unet.core.errors import Cancel, Cancelled, InputError, cancel_check
from slide_unet.core.limits import check_mpp
from slide_unet.core.masks.blocks import DEFAULT_BLOCK, BlockGrid, as_mask, iter_mask_blocks
from slide_unet.core.objects.components import BlockLabeller, Squeeze
from slide_unet.core.objects.table import ObjectTable, column_names

__all__ = ["CROFTON_SHARES", "measure"]


def _crofton_shares() -> np.ndarray:
    """Each 2 x 2 window's Crofton weight (scikit-image's, 4 directions) over its
    number of foreground pixels, by the window's code: bottom-right 1, top-right
    2, bottom-left 4, top-left 8."""
    s2 = np.sqrt(2.0)
    weights = [
        0,
        np.pi / 4 * (1 + 1 / s2),
        np.pi / (4 * s2),
        np.pi / (2 * s2),
        0,
        np.pi / 4 * (1 + 1 / s2),
        0,
        np.pi / (4 * s2),
        np.pi / 4,
        np.pi / 2,
        np.pi / (4 * s2),
        np.pi / (4 * s2),
        np.pi / 4,
        np.pi / 2,
        0,
        0,
    ]
    return np.array([w / max(bin(c).count("1"), 1) for c, w in enumerate(weights)])


#: Perimeter weight of a 2 x 2 window per object pixel in it, by the window's code.
CROFTON_SHARES = _crofton_shares()

#: Squeeze a block's empty rows and columns out when at most this fraction is kept.
_SQUEEZE_MOST = 0.9


def _kept(extended: np.ndarray) -> tuple[np.ndarray, np.ndarray] | None:
    """Rows and columns of a block with its halo that keep every object pixel's
    3 x 3 neighbourhood (each empty run of lines kept as its first line), or None
    when that would keep most of it. The halo (line 0) and the block's first line
    (line 1) are always kept."""
    lines = []
    for axis in (1, 0):
        full = extended.any(axis=axis)
        kept = full.copy()
        kept[1:] |= full[:-1]
        kept[:2] = True
        lines.append(kept)
    rows, cols = lines
    if np.count_nonzero(rows) * np.count_nonzero(cols) > _SQUEEZE_MOST * extended.size:
        return None
    return rows, cols


class _Sums:
    """Per-object sums of one pass over the blocks, keyed by provisional id."""

    def __init__(self, grid: BlockGrid, probabilities: Any) -> None:
        self.grid = grid
        self.labeller = BlockLabeller(grid, 8)
        self.probabilities = probabilities
        self.sum_y: list[np.ndarray] = []
        self.sum_x: list[np.ndarray] = []
        self.sum_p: list[np.ndarray] = []
        # uint8 round(p * 255): 0 is unknown, and each object's known pixels are counted.
        self.quantised = probabilities is not None and np.dtype(probabilities.dtype) == np.uint8
        self.known: list[np.ndarray] = []
        self.perimeter = np.zeros(1024)
        self.runs: list[np.ndarray] = []  # per block: (k, 4) provisional id, row, x0, x1

    def add(self, slices: tuple[slice, slice], binary: np.ndarray) -> None:
        ys, xs = slices
        h, w = binary.shape
        height, width = self.grid.shape
        above, left = self.labeller.next_halo()
        bottom, right = int(ys.stop == height), int(xs.stop == width)
        extended = np.zeros((h + 1 + bottom, w + 1 + right), dtype=bool)
        extended[0, : w + 1] = above > 0
        extended[1 : h + 1, 0] = left > 0
        extended[1 : h + 1, 1 : w + 1] = binary
        kept = _kept(extended)
        if kept is None:
            squeeze = None
            rows, cols = np.arange(h), np.arange(w)
            ext_rows, ext_cols = np.arange(extended.shape[0]), np.arange(extended.shape[1])
            labels, offset = self.labeller.add(binary)
        else:
            ext_rows, ext_cols = np.flatnonzero(kept[0]), np.flatnonzero(kept[1])
            col_mask = kept[1][1 : w + 1].copy()
            rows, cols = np.flatnonzero(kept[0][1 : h + 1]), np.flatnonzero(col_mask)
            squeeze = Squeeze(rows, cols, col_mask)
            labels, offset = self.labeller.add(squeeze.apply(binary), squeeze)
        n = self.labeller.n_provisional - offset
        if extended.any():
            ids = np.zeros((ext_rows.size, ext_cols.size), dtype=np.int64)
            halo_cols = ext_cols[ext_cols <= w]
            ids[0, : halo_cols.size] = above[halo_cols]
            ids[1 : rows.size + 1, 0] = left[rows]
            ids[1 : rows.size + 1, 1 : cols.size + 1] = np.where(labels > 0, labels + offset, 0)
            self._perimeter(ids)
        if n:
            self._objects(labels, n, offset, rows + ys.start, cols + xs.start, slices, squeeze)
        else:
            for sums in (self.sum_y, self.sum_x, self.sum_p, self.known):
                sums.append(np.zeros(0))

    def _perimeter(self, ids: np.ndarray) -> None:
        """Share each 2 x 2 window's Crofton weight among its object pixels."""
        fg = (ids > 0).view(np.uint8)
        code = fg[1:, 1:] | (fg[:-1, 1:] << 1) | (fg[1:, :-1] << 2) | (fg[:-1, :-1] << 3)
        hit = np.flatnonzero(code)
        if not hit.size:
            return
        share = CROFTON_SHARES[code.ravel()[hit]]
        width = ids.shape[1]
        wy, wx = np.divmod(hit, code.shape[1])
        top_left = wy * width + wx
        flat = ids.ravel()
        corners = np.concatenate([flat[top_left + step] for step in (0, 1, width, width + 1)])
        weights = np.tile(share, 4)
        on = corners > 0
        corners, weights = corners[on], weights[on]
        low, high = int(corners.min()), int(corners.max())
        if high >= self.perimeter.size:
            grown = np.zeros(max(high + 1, 2 * self.perimeter.size))
            grown[: self.perimeter.size] = self.perimeter
            self.perimeter = grown
        self.perimeter[low : high + 1] += np.bincount(corners - low, weights=weights)

    def _objects(
        self,
        labels: np.ndarray,
        n: int,
        offset: int,
        rows: np.ndarray,
        cols: np.ndarray,
        slices: tuple[slice, slice],
        squeeze: Squeeze | None,
    ) -> None:
        """Sums of positions (and probabilities), and the row runs, of a block's objects."""
        where = np.flatnonzero(labels)
        values = labels.ravel()[where]
        r, c = np.divmod(where, labels.shape[1])
        y, x = rows[r], cols[c]  # mask coordinates (pixel counts come from the labeller)
        self.sum_y.append(np.bincount(values, weights=y, minlength=n + 1)[1:])
        self.sum_x.append(np.bincount(values, weights=x, minlength=n + 1)[1:])
        if self.probabilities is not None:
            block = np.asarray(self.probabilities[slices], dtype=np.float64)
            if squeeze is not None:
                block = squeeze.apply(block)
            p = block.ravel()[where]
            if self.quantised:
                known = p > 0
                self.known.append(np.bincount(values[known], minlength=n + 1)[1:])
                p = p / 255.0
            self.sum_p.append(np.bincount(values, weights=p, minlength=n + 1)[1:])
        # Runs of one object's pixels in a row: their ends are all the hull needs.
        new = np.ones(values.size, dtype=bool)
        new[1:] = (values[1:] != values[:-1]) | (y[1:] != y[:-1]) | (x[1:] != x[:-1] + 1)
        starts = np.flatnonzero(new)
        ends = np.append(starts[1:], values.size) - 1
        self.runs.append(
            np.column_stack([values[starts] + offset, y[starts], x[starts], x[ends] + 1])
        )

    def table(self, mpp: float | None) -> ObjectTable:
        labels = self.labeller.finish()
        n, total = labels.n_objects, self.labeller.n_provisional
        ids = labels.mapping[1 : total + 1]
        pixels = labels.areas[1:]

        def per_object(parts: list[np.ndarray]) -> np.ndarray:
            values = np.concatenate(parts) if parts else np.zeros(0)
            return np.bincount(ids, weights=values, minlength=n + 1)[1:]

        centroid_y = per_object(self.sum_y) / np.maximum(pixels, 1)
        centroid_x = per_object(self.sum_x) / np.maximum(pixels, 1)
        by_id = np.zeros(total + 1)
        kept = min(total + 1, self.perimeter.size)
        by_id[:kept] = self.perimeter[:kept]
        perimeter = np.bincount(ids, weights=by_id[1:], minlength=n + 1)[1:]
        if self.quantised:
            known = per_object(self.known)
            with np.errstate(invalid="ignore", divide="ignore"):
                mean_p = np.where(known > 0, per_object(self.sum_p) / known, np.nan)
        elif self.probabilities is not None:
            mean_p = per_object(self.sum_p) / np.maximum(pixels, 1)
        else:
            mean_p = np.full(n, np.nan)
        boxes = labels.bboxes[1:]
        hull = _hull_areas(self.runs, labels.mapping, pixels, boxes)
        scale = mpp or 1.0
        area = pixels * scale * scale
        names = column_names("um" if mpp else "px")
        values = [
            np.arange(1, n + 1, dtype=np.int64),
            centroid_y * scale,
            centroid_x * scale,
            *(boxes[:, k] * scale if mpp else boxes[:, k].copy() for k in range(4)),
            area.astype(np.float64) if mpp else area.astype(np.int64),
            np.sqrt(4 * area / np.pi),
            perimeter * scale,
            pixels / np.maximum(hull, 1),
            pixels.astype(np.int64),
            mean_p,
        ]
        return ObjectTable(dict(zip(names, values, strict=True)), mpp, labels.shape)


def _hull_areas(
    runs: list[np.ndarray], mapping: np.ndarray, pixels: np.ndarray, boxes: np.ndarray
) -> np.ndarray:
    """Area of each object's convex hull (its pixels as unit squares), from its row runs."""
    n = pixels.size
    hull = pixels.astype(np.float64)
    rectangle = pixels == (boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1])
    if not runs or rectangle.all():
        return hull
    run = np.concatenate(runs)
    obj = mapping[run[:, 0]] - 1
    keep = ~rectangle[obj]
    obj, y, x0, x1 = obj[keep], run[keep, 1], run[keep, 2], run[keep, 3]
    # One leftmost and one rightmost end per object row.
    order = np.lexsort((y, obj))
    obj, y, x0, x1 = obj[order], y[order], x0[order], x1[order]
    first = np.ones(obj.size, dtype=bool)
    first[1:] = (obj[1:] != obj[:-1]) | (y[1:] != y[:-1])
    starts = np.flatnonzero(first)
    obj, y = obj[starts], y[starts]
    x0, x1 = np.minimum.reduceat(x0, starts), np.maximum.reduceat(x1, starts)
    corners = np.stack(
        [
            np.column_stack([y, x0]),
            np.column_stack([y + 1, x0]),
            np.column_stack([y, x1]),
            np.column_stack([y + 1, x1]),
        ],
        axis=1,
    ).astype(np.float64)
    bounds = np.searchsorted(obj, np.arange(n + 1))
    for k in np.flatnonzero(~rectangle):
        points = corners[bounds[k] : bounds[k + 1]].reshape(-1, 2)
        hull[k] = ConvexHull(points).volume  # a 2-D hull's "volume" is its area
    return hull


def measure(
    mask: Any,
    *,
    mpp: float | None = None,
    probabilities: Any = None,
    block: int = DEFAULT_BLOCK,
    progress: Callable[[int, int], None] | None = None,
    cancel: Cancel | None = None,
) -> ObjectTable:
    """Measure every object of a mask: position, box, area, diameter, perimeter, solidity.

    Streams over the mask in blocks with bounded memory (any size: a
    gigapixel mask from a zarr store or a pyramidal OME-TIFF is read one block
    at a time); an object crossing block borders is measured whole. See the
    module's documentation for what each column means.

    Parameters
    ----------
    mask : array-like or path
        A 2-D mask (numpy, dask, zarr...; any non-zero pixel is foreground),
        or a mask file in any format :func:`~slide_unet.core.masks.io.read_mask`
        reads (its recorded pixel size is used when `mpp` is None).
    mpp : float, optional
        Microns per pixel. Without one (given or recorded), the table is in
        pixels.
    probabilities : array-like, optional
        The model's probabilities, the shape of the mask: float in 0..1, or
        uint8 ``round(p * 255)`` with 0 for unknown (a mask store's
        :attr:`~slide_unet.core.masks.store.MaskStore.probability`); each
        object's mean over its pixels (its known ones, for uint8) fills
        ``mean_probability`` (else NaN).
    block : int, optional
        Side of the blocks read at a time, in pixels (aligned to the mask's
        chunks). Peak memory is a few blocks.
    progress : callable, optional
        ``progress(done, total)`` after each block.
    cancel : threading.Event or callable, optional
        Checked before each block; once set, :class:`Cancelled` is raised.

    Returns
    -------
    ObjectTable
        One row per object, numbered as ``scipy.ndimage.label`` numbers the
        8-connected components; :meth:`ObjectTable.write` writes CSV or Parquet.

    Raises
    ------
    InputError
        A mask that is not 2-D, probabilities of another shape, a pixel size
        that is not a positive number, or a mask file that cannot be read
        (:class:`~slide_unet.core.errors.MaskError` and the like).
    FileNotFoundError
        No such mask file.
    Cancelled
        `cancel` asked to stop.

    Examples
    --------
    >>> import numpy as np
    >>> mask = np.zeros((6, 6), dtype=np.uint8)
    >>> mask[1:4, 1:4] = 1
    >>> table = measure(mask, mpp=0.5)
    >>> table["area_um2"].tolist(), table["centroid_y_um"].tolist(), table["solidity"].tolist()
    ([2.25], [1.0], [1.0])
    """
    stop = cancel_check(cancel)
    mpp = check_mpp(mpp)
    if isinstance(mask, (str, os.PathLike)):
        from slide_unet.core.masks.io import read_mask_with_mpp

        mask, recorded = read_mask_with_mpp(mask)
        mpp = mpp or recorded
    mask = as_mask(mask)
    if mask.ndim != 2:
        raise InputError(f"a mask must be 2-D (height, width), got shape {tuple(mask.shape)}")
    shape = (int(mask.shape[0]), int(mask.shape[1]))
    if min(shape) < 1:
        raise InputError(f"the mask is empty (shape {shape})")
    if probabilities is not None:
        probabilities = as_mask(probabilities)
        found = tuple(int(v) for v in probabilities.shape)
        if found != shape:
            raise InputError(f"probabilities of shape {found} do not match the mask {shape}")
        kind = np.dtype(probabilities.dtype).kind
        if kind != "f" and np.dtype(probabilities.dtype) != np.uint8:
            raise InputError(
                f"probabilities are float (0..1) or uint8 (round(p * 255)), not "
                f"{probabilities.dtype}"
            )
    grid = BlockGrid.for_arrays(shape, block, [mask])
    sums = _Sums(grid, probabilities)
    total = len(grid)
    for done, (_, _, slices, (binary,)) in enumerate(iter_mask_blocks([mask], grid), start=1):
        if stop():
            raise Cancelled("measuring cancelled")
        sums.add(slices, binary)
        if progress is not None:
            progress(done, total)
    return sums.table(mpp)
