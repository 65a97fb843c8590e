"""Connected components of a mask too big for memory, found block by block.

A HuBMAP mask is 31,299 x 44,066 pixels: its label image alone would take
5.5 GB as ``int32``. :func:`label_chunked` never builds it. It labels one
block at a time with :func:`scipy.ndimage.label`, finds which block labels
touch across block borders (the last row or column of a block against the
first of its neighbour, diagonal corners included for 8-connectivity), joins
them with a union-find (:func:`scipy.sparse.csgraph.connected_components`)
and keeps only what is proportional to the number of objects: per-object
area, bounding box and a map from block labels to global ids. A block's
global labels are rebuilt on demand from the mask (:meth:`ChunkedLabels.blocks`).

Before labelling, empty rows and columns are squeezed out of a block (one
empty line is kept in each gap, so objects that did not touch still do not):
the labels are the same, found several times faster on sparse masks such
as glomeruli (:func:`squeeze_empty`).

Global ids are numbered in the order of each object's first pixel in a
row-major scan, as :func:`scipy.ndimage.label` numbers them: for any block
size, the labels equal those of ``scipy.ndimage.label`` on the whole mask.

Any non-zero pixel is foreground. Inputs may be numpy arrays or chunked
arrays (dask, zarr, or anything with ``shape``, ``ndim`` and numpy-style
slicing); blocks are aligned to the input's chunks (or zarr shards).

This module is part of the napari-free core: it never imports napari, Qt or
magicgui.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import numpy as np
from scipy import ndimage
from scipy.sparse import coo_matrix
from scipy.sparse.csgraph import connected_components

from slide_unet.core.errors import Cancelled, InputError
from slide_unet.core.masks.blocks import (
    DEFAULT_BLOCK,
    BlockGrid,
    as_mask,
    iter_mask_blocks,
    read_binary,
)

__all__ = ["BlockLabeller", "ChunkedLabels", "Squeeze", "label_chunked", "squeeze_empty"]


def _structure(connectivity: int) -> np.ndarray:
    if connectivity == 8:
        return np.ones((3, 3), dtype=bool)
    if connectivity == 4:
        return ndimage.generate_binary_structure(2, 1)
    msg = f"connectivity must be 4 or 8, got {connectivity!r}"
    raise InputError(msg)


def _pairs(before: np.ndarray, after: np.ndarray, diagonal: bool) -> np.ndarray | None:
    """Pairs of ids that touch across a border line.

    ``before`` has two more pixels than ``after``: ``before[k + 1]`` is the
    direct neighbour of ``after[k]`` and ``before[k]``, ``before[k + 2]`` its
    diagonal ones.
    """
    n = after.size
    found = []
    for shift in (0, 1, 2) if diagonal else (1,):
        other = before[shift : shift + n]
        hit = (other > 0) & (after > 0)
        if hit.any():
            found.append(np.stack([after[hit], other[hit]], axis=1))
    if not found:
        return None
    return np.unique(np.concatenate(found), axis=0)


@dataclass(frozen=True)
class Squeeze:
    """The rows and columns of a block kept by :func:`squeeze_empty`.

    Attributes
    ----------
    rows, cols : numpy.ndarray
        Increasing indices of the kept rows and columns in the block.
    col_mask : numpy.ndarray
        The kept columns as a bool mask (faster to apply than indices).
    """

    rows: np.ndarray
    cols: np.ndarray
    col_mask: np.ndarray

    def apply(self, block: np.ndarray) -> np.ndarray:
        """The squeezed copy of `block` (C-contiguous)."""
        return np.compress(self.col_mask, np.take(block, self.rows, axis=0), axis=1)


def squeeze_empty(*blocks: np.ndarray, most: float = 0.9) -> Squeeze | None:
    """Rows and columns to keep so that labelling skips empty space but finds the same objects.

    Every row (column) with foreground in any of `blocks` is kept, and of each
    run of empty rows (columns) only the first: objects keep their shapes and
    pixel order, and objects that did not touch still do not, so labels
    of the squeezed block are those of the block, in the same order.

    Parameters
    ----------
    *blocks : numpy.ndarray
        Bool blocks of one shape (e.g. the prediction's and the truth's, so
        that both are squeezed alike and stay aligned).
    most : float, optional
        Return None (do not squeeze) when more than this fraction of the
        pixels would be kept: squeezing would then cost more than it saves.

    Returns
    -------
    Squeeze or None
    """
    rows = np.logical_or.reduce([b.any(axis=1) for b in blocks])
    cols = np.logical_or.reduce([b.any(axis=0) for b in blocks])
    rows[1:] |= rows[:-1].copy()
    cols[1:] |= cols[:-1].copy()
    if rows.size == 0 or cols.size == 0:
        return None
    rows[0], cols[0] = True, True  # keep a leading empty line, so the result is never empty
    if np.count_nonzero(rows) * np.count_nonzero(cols) > most * rows.size * cols.size:
        return None
    return Squeeze(np.flatnonzero(rows), np.flatnonzero(cols), cols)


def _border_lines(
    labels: np.ndarray, shape: tuple[int, int], squeezed: Squeeze | None
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """First row, last row, first column, last column of a block's labels, unsqueezed."""
    if squeezed is None:
        return labels[0], labels[-1], labels[:, 0], labels[:, -1]
    h, w = shape
    rows, cols = squeezed.rows, squeezed.cols

    def line(along: np.ndarray, size: int, here: np.ndarray, at: int, axis: int) -> np.ndarray:
        out = np.zeros(size, dtype=labels.dtype)
        found = np.flatnonzero(here == at)  # the line, if the squeeze kept it
        if found.size:
            out[along] = labels[found[0]] if axis == 0 else labels[:, found[0]]
        return out

    return (
        line(cols, w, rows, 0, 0),
        line(cols, w, rows, h - 1, 0),
        line(rows, h, cols, 0, 1),
        line(rows, h, cols, w - 1, 1),
    )


class BlockLabeller:
    """Label a 2-D mask block by block, then join the blocks' labels into global ids.

    Feed every block of `grid` to :meth:`add` in row-major order, then call
    :meth:`finish`. Between the two, :meth:`add` returns each block's local
    labels and their offset, so a caller (e.g. object matching) can
    accumulate its own per-block statistics keyed by *provisional* ids
    ``offset + local label``, which :attr:`ChunkedLabels.mapping` turns into
    global ids. Memory: one block row of border pixels plus O(number of
    objects).

    Parameters
    ----------
    grid : BlockGrid
        The blocks, and the shape of the mask.
    connectivity : {8, 4}, optional
        8: pixels touching by an edge or a corner are one object; 4: by an
        edge only.
    """

    def __init__(self, grid: BlockGrid, connectivity: int = 8) -> None:
        self.grid = grid
        self.connectivity = connectivity
        self._structure = _structure(connectivity)
        rows, cols = grid.n_blocks
        self._offsets = np.zeros((rows, cols), dtype=np.int64)
        self._counts = np.zeros((rows, cols), dtype=np.int64)
        width = grid.shape[1]
        # Provisional ids along the last row of the previous block row (padded
        # by one zero pixel at each side) and of the block row being labelled.
        self._row_above = np.zeros(width + 2, dtype=np.int64)
        self._row_here = np.zeros(width + 2, dtype=np.int64)
        self._col_left: np.ndarray | None = None
        self._next = 0
        self._total = 0
        self._edges: list[np.ndarray] = []
        self._stats: list[np.ndarray] = []  # per block: (n, 6) area, first, y0, x0, y1, x1

    @property
    def n_provisional(self) -> int:
        """Number of block labels so far (provisional ids run from 1 to this)."""
        return self._total

    def next_halo(self) -> tuple[np.ndarray, np.ndarray]:
        """Provisional ids just above and just left of the next block to :meth:`add`.

        For a caller whose per-block statistics look one pixel across the
        block's top and left borders (e.g. a perimeter measured on 2 x 2
        windows), without reading the neighbours' pixels again.

        Returns
        -------
        above : numpy.ndarray
            ``(width + 1,)``: row ``y0 - 1`` from column ``x0 - 1`` to
            ``x1 - 1`` (the corner first); zeros in the first block row and
            left of the mask.
        left : numpy.ndarray
            ``(height,)``: column ``x0 - 1`` from row ``y0`` to ``y1 - 1``;
            zeros in the first block column.
        """
        rows, cols = self.grid.n_blocks
        if self._next >= rows * cols:
            raise InputError("every block of the grid has already been added")
        i, j = divmod(self._next, cols)
        ys, xs = self.grid.slices(i, j)
        above = self._row_above[xs.start : xs.stop + 1].copy()
        if j > 0 and self._col_left is not None:
            left = self._col_left.copy()
        else:
            left = np.zeros(ys.stop - ys.start, dtype=np.int64)
        return above, left

    def add(self, binary: np.ndarray, squeezed: Squeeze | None = None) -> tuple[np.ndarray, int]:
        """Label the next block (row-major order).

        Parameters
        ----------
        binary : numpy.ndarray
            The block as a bool array (True is foreground), with the shape of
            the grid's next block; or, with `squeezed`, the block squeezed by it.
        squeezed : Squeeze, optional
            The rows and columns of the block that `binary` holds (see
            :func:`squeeze_empty`); the labels are the same, found faster.

        Returns
        -------
        labels : numpy.ndarray
            ``int32`` local labels of `binary` (squeezed if it is), 0
            background, 1..n objects of this block.
        offset : int
            Add to a non-zero local label to get its provisional id.

        Raises
        ------
        ValueError
            If every block was already added or `binary` has the wrong shape.
        """
        rows, cols = self.grid.n_blocks
        if self._next >= rows * cols:
            msg = "every block of the grid has already been added"
            raise InputError(msg)
        i, j = divmod(self._next, cols)
        ys, xs = self.grid.slices(i, j)
        shape = (ys.stop - ys.start, xs.stop - xs.start)
        expected = shape if squeezed is None else (squeezed.rows.size, squeezed.cols.size)
        if binary.shape != expected:
            msg = f"block ({i}, {j}) should have shape {expected}, got {binary.shape}"
            raise InputError(msg)
        binary = np.ascontiguousarray(binary, dtype=bool)
        offset = self._total
        if binary.any():
            labels, n = ndimage.label(binary, self._structure, output=np.int32)
            self._record(labels, n, binary, ys.start, xs.start, squeezed)
        else:
            labels, n = np.zeros(binary.shape, dtype=np.int32), 0
        self._offsets[i, j], self._counts[i, j] = offset, n
        self._total += n

        # Provisional ids on the block's borders, to compare with the neighbours'.
        first_row, last_row, first_col, last_col = (
            np.where(line > 0, line + offset, 0) for line in _border_lines(labels, shape, squeezed)
        )
        diagonal = self.connectivity == 8
        if i > 0:
            self._edge(_pairs(self._row_above[xs.start : xs.stop + 2], first_row, diagonal))
        if j > 0 and self._col_left is not None:
            left = np.pad(self._col_left, 1)  # corners across block rows come from the rows
            self._edge(_pairs(left, first_col, diagonal))
        self._row_here[xs.start + 1 : xs.stop + 1] = last_row
        self._col_left = last_col
        self._next += 1
        if j == cols - 1:
            self._row_above, self._row_here = self._row_here, self._row_above
            self._row_here[:] = 0
            self._col_left = None
        return labels, offset

    def _edge(self, pairs: np.ndarray | None) -> None:
        if pairs is not None:
            self._edges.append(pairs)

    def _record(
        self,
        labels: np.ndarray,
        n: int,
        binary: np.ndarray,
        y: int,
        x: int,
        squeezed: Squeeze | None,
    ) -> None:
        """Area, first pixel (row-major) and bounding box of each block label."""
        where = np.flatnonzero(binary)
        values = labels.ravel()[where]
        area = np.bincount(values, minlength=n + 1)[1:]
        # scipy numbers labels in order of their first pixel, so a label's first
        # pixel is where the running maximum grows; checked, with a fallback.
        grows = np.empty(values.size, dtype=bool)
        grows[0] = True
        np.greater(values[1:], np.maximum.accumulate(values)[:-1], out=grows[1:])
        first = where[grows]
        if first.size != n or not np.array_equal(values[grows], np.arange(1, n + 1)):
            first = np.full(n, np.iinfo(np.int64).max, dtype=np.int64)
            np.minimum.at(first, values - 1, where)
        # Bounding boxes from the foreground pixels (scipy's find_objects makes a
        # Python object per label: 20x slower on masks with many small objects).
        rows, cols = np.divmod(where, labels.shape[1])
        fy, fx = np.divmod(first, labels.shape[1])
        boxes = np.empty((n, 4), dtype=np.int64)
        boxes[:, 0] = fy
        ends = np.zeros(n + 1, dtype=np.int64)
        np.maximum.at(ends, values, rows)
        boxes[:, 2] = ends[1:] + 1
        starts = np.full(n + 1, np.iinfo(np.int64).max, dtype=np.int64)
        np.minimum.at(starts, values, cols)
        boxes[:, 1] = starts[1:]
        ends[:] = 0
        np.maximum.at(ends, values, cols)
        boxes[:, 3] = ends[1:] + 1
        if squeezed is not None:  # back to block coordinates (the maps are increasing)
            fy, fx = squeezed.rows[fy], squeezed.cols[fx]
            boxes[:, 0], boxes[:, 1] = squeezed.rows[boxes[:, 0]], squeezed.cols[boxes[:, 1]]
            boxes[:, 2] = squeezed.rows[boxes[:, 2] - 1] + 1
            boxes[:, 3] = squeezed.cols[boxes[:, 3] - 1] + 1
        first_global = (fy + y) * self.grid.shape[1] + (fx + x)
        boxes += (y, x, y, x)
        self._stats.append(np.column_stack([area, first_global, boxes]))

    def finish(self, source: Any = None) -> ChunkedLabels:
        """Join the block labels into global objects.

        Parameters
        ----------
        source : array-like, optional
            The mask that was labelled, kept so that :meth:`ChunkedLabels.blocks`
            can rebuild global label blocks from it.

        Returns
        -------
        ChunkedLabels

        Raises
        ------
        ValueError
            If some blocks were not added.
        """
        if self._next != len(self.grid):
            msg = f"only {self._next} of {len(self.grid)} blocks were added"
            raise InputError(msg)
        total = self._total
        stats = np.concatenate(self._stats) if self._stats else np.zeros((0, 6), np.int64)
        if self._edges:
            edges = np.concatenate(self._edges)
            graph = coo_matrix(
                (np.ones(len(edges), dtype=np.int8), (edges[:, 0], edges[:, 1])),
                shape=(total + 1, total + 1),
            )
            n_comp, component = connected_components(graph, directed=False)
        else:
            n_comp, component = total + 1, np.arange(total + 1)
        # Number objects by first pixel, background (node 0) first.
        first = np.full(n_comp, np.iinfo(np.int64).max, dtype=np.int64)
        np.minimum.at(first, component[1:], stats[:, 1])
        first[component[0]] = -1
        rank = np.empty(n_comp, dtype=np.int64)
        rank[np.argsort(first, kind="stable")] = np.arange(n_comp)
        mapping = rank[component]
        ids = mapping[1:]

        areas = np.zeros(n_comp, dtype=np.int64)
        np.add.at(areas, ids, stats[:, 0])
        areas[0] = self.grid.shape[0] * self.grid.shape[1] - int(areas[1:].sum())
        big = np.iinfo(np.int64).max
        boxes = np.empty((n_comp, 4), dtype=np.int64)
        boxes[:, :2], boxes[:, 2:] = big, -1
        for k in range(2):
            np.minimum.at(boxes[:, k], ids, stats[:, 2 + k])
            np.maximum.at(boxes[:, 2 + k], ids, stats[:, 4 + k])
        boxes[0] = 0
        return ChunkedLabels(
            shape=self.grid.shape,
            grid=self.grid,
            connectivity=self.connectivity,
            n_objects=n_comp - 1,
            areas=areas,
            bboxes=boxes,
            mapping=mapping,
            offsets=self._offsets,
            counts=self._counts,
            source=source,
        )


@dataclass(frozen=True, eq=False)
class ChunkedLabels:
    """The connected components of a mask, without its label image.

    Attributes
    ----------
    shape : tuple of int
        ``(height, width)`` of the mask.
    grid : BlockGrid
        The blocks the mask was labelled in.
    connectivity : int
        4 or 8.
    n_objects : int
        Number of objects; global ids run from 1 to `n_objects`, in the order
        of each object's first pixel (row-major), like ``scipy.ndimage.label``.
    areas : numpy.ndarray
        ``(n_objects + 1,)`` pixel counts by id; ``areas[0]`` is the background
        (as ``np.bincount`` of the label image would give).
    bboxes : numpy.ndarray
        ``(n_objects + 1, 4)`` bounding boxes ``(y0, x0, y1, x1)``, end
        exclusive, by id; row 0 is unused (zeros).
    mapping : numpy.ndarray
        Provisional id (block offset + local label) to global id; ``mapping[0] == 0``.
    offsets, counts : numpy.ndarray
        Per block, its provisional id offset and number of local labels.
    source : array-like or None
        The labelled mask, from which :meth:`blocks` rebuilds label blocks.
    """

    shape: tuple[int, int]
    grid: BlockGrid
    connectivity: int
    n_objects: int
    areas: np.ndarray
    bboxes: np.ndarray
    mapping: np.ndarray
    offsets: np.ndarray
    counts: np.ndarray
    source: Any = None

    @property
    def dtype(self) -> np.dtype:
        """``int32`` when the ids fit, else ``int64``."""
        return np.dtype(np.int32 if self.n_objects < 2**31 - 1 else np.int64)

    def object_slices(self) -> list[tuple[slice, slice]]:
        """Bounding boxes as slices, as :func:`scipy.ndimage.find_objects` gives them.

        The box of object ``k`` is at index ``k - 1``.
        """
        return [(slice(y0, y1), slice(x0, x1)) for y0, x0, y1, x1 in self.bboxes[1:].tolist()]

    def relabel(self, i: int, j: int, local: np.ndarray) -> np.ndarray:
        """Turn block ``(i, j)``'s local labels (from :class:`BlockLabeller`) into global ids."""
        offset, n = int(self.offsets[i, j]), int(self.counts[i, j])
        table = np.empty(n + 1, dtype=self.dtype)
        table[0] = 0
        table[1:] = self.mapping[offset + 1 : offset + n + 1]
        return table[local]

    def block(self, i: int, j: int) -> np.ndarray:
        """Global labels of block ``(i, j)``, relabelled from :attr:`source`.

        Raises
        ------
        ValueError
            If there is no source.
        RuntimeError
            If the source changed since it was labelled.
        """
        if self.source is None:
            msg = "these labels were made without a source mask; pass source= to finish()"
            raise InputError(msg)
        return self._from_binary(i, j, read_binary(self.source, self.grid.slices(i, j)))

    def _from_binary(self, i: int, j: int, binary: np.ndarray) -> np.ndarray:
        local, n = ndimage.label(binary, _structure(self.connectivity), output=np.int32)
        if n != self.counts[i, j]:
            msg = f"block ({i}, {j}) of the mask changed since it was labelled"
            raise RuntimeError(msg)
        return self.relabel(i, j, local)

    def blocks(self) -> Iterator[tuple[tuple[slice, slice], np.ndarray]]:
        """Yield ``(slices, global label block)`` for every block, row-major.

        Each block is re-read from :attr:`source` and relabelled on the fly;
        nothing the size of the mask is held.
        """
        if self.source is None:
            self.block(0, 0)  # raises the clear error
        for i, j, slices, (binary,) in iter_mask_blocks([self.source], self.grid):
            yield slices, self._from_binary(i, j, binary)

    def to_numpy(self) -> np.ndarray:
        """The whole label image (for small masks only: it is ``shape`` large)."""
        out = np.zeros(self.shape, dtype=self.dtype)
        for slices, labels in self.blocks():
            out[slices] = labels
        return out


def label_chunked(
    mask: Any,
    *,
    connectivity: int = 8,
    block: int = DEFAULT_BLOCK,
    progress: Callable[[int, int], None] | None = None,
    cancelled: Callable[[], bool] | None = None,
) -> ChunkedLabels:
    """Find the connected components of a 2-D mask, streaming block by block.

    Parameters
    ----------
    mask : array-like
        2-D numpy, dask or zarr array (or anything sliceable with ``shape``);
        any non-zero pixel is foreground.
    connectivity : {8, 4}, optional
        8 (default): pixels touching by an edge or a corner are one object.
    block : int, optional
        Side of a block in pixels (aligned to the mask's chunks). Peak memory
        is a few blocks (about 20 bytes per block pixel: 80 MB for the default
        2048) plus about 150 bytes per object.
    progress : callable, optional
        Called as ``progress(done, total)`` after each block.
    cancelled : callable, optional
        Checked before each block; when it returns True, :class:`Cancelled` is raised.

    Returns
    -------
    ChunkedLabels
        Areas, bounding boxes and ids of the objects, numbered as
        ``scipy.ndimage.label`` numbers them; :meth:`ChunkedLabels.blocks`
        yields the label image block by block.

    Raises
    ------
    ValueError
        If `mask` is not 2-D, or `connectivity` or `block` is invalid.
    Cancelled
        If `cancelled` returned True.

    Examples
    --------
    >>> import numpy as np
    >>> labels = label_chunked(np.eye(5, dtype=bool), block=2)
    >>> labels.n_objects, labels.areas[1:].tolist()
    (1, [5])
    >>> label_chunked(np.eye(5, dtype=bool), connectivity=4, block=2).n_objects
    5
    """
    mask = as_mask(mask)
    if mask.ndim != 2:
        msg = f"mask must be 2-D (height, width), got shape {tuple(mask.shape)}"
        raise InputError(msg)
    grid = BlockGrid.for_arrays(tuple(mask.shape), block, [mask])
    labeller = BlockLabeller(grid, connectivity)
    total = len(grid)
    for done, (_, _, _, (binary,)) in enumerate(iter_mask_blocks([mask], grid), start=1):
        if cancelled is not None and cancelled():
            raise Cancelled("labelling cancelled")
        squeezed = squeeze_empty(binary)
        labeller.add(binary if squeezed is None else squeezed.apply(binary), squeezed)
        if progress is not None:
            progress(done, total)
    return labeller.finish(source=mask)
