"""Tile grids at the model's working scale and exact resampling.

How a slide is cut into model tiles
    The output (a region of the slide at full resolution) is cut into square
    *blocks* of ``block`` full-resolution pixels, anchored at the region's
    origin. Blocks tile the output exactly, without gaps or overlaps, and are
    also the chunks of the output store, so each block is written whole by one
    task (several processes can fill one zarr store). Each block is computed
    from one model *tile* of ``tile`` working-scale pixels whose kept centre
    covers every working pixel the block needs, with ``halo`` pixels of
    context on every side. Tile origins are multiples of the model's
    ``multiple`` (``2**depth``) in absolute working coordinates, so every tile
    pools on the same grid as a single pass over the whole image, and its
    centre (``halo`` from each edge) equals that pass: no blending, no seams.

How scales map
    The working image is the slide resampled to the model's pixel size: working
    pixel ``j`` covers full-resolution ``[j * scale, (j + 1) * scale)``, and is
    computed from the chosen pyramid level by :func:`resample_taps` (linear
    interpolation, antialiased when shrinking, as Pillow's bilinear resize).
    The taps of a pixel depend only on its absolute position, never on the
    tile it falls in, so neighbouring tiles see the same working image and
    tiling stays exact at any scale, integer or not. Probabilities map back
    to full resolution the same way. Pixels beyond the image edge are
    mirrored (symmetric reflection), so near the image border results differ
    from a whole-image pass with zero padding.

Tissue
    :func:`tissue_mask` (from :mod:`slide_unet.core.slide.tissue`) finds bright,
    unsaturated background in a brightfield slide's low-resolution level;
    blocks that touch no tissue are not run.

This module is part of the napari-free core.
"""

from __future__ import annotations

import itertools
import math
from dataclasses import dataclass
from typing import NamedTuple

import numpy as np

from slide_unet.core.errors import InputError

__all__ = [
    "OutputBlock",
    "Taps",
    "TileGrid",
    "apply_taps",
    "block_output_taps",
    "make_grid",
    "reflect_index",
    "resample_taps",
]

#: Blocks are multiples of this (full-resolution pixels) when they can be:
#: tidy store chunks, at most 63 pixels of block lost.
BLOCK_QUANTUM = 64
#: Store chunks are at most this many pixels a side; a larger block is split
#: into several (a viewer reads a chunk whole).
MAX_STORE_CHUNK = 2048


# -- resampling ----------------------------------------------------------------------


def reflect_index(index: np.ndarray, size: int) -> np.ndarray:
    """Map indices outside ``[0, size)`` into it by symmetric reflection.

    ``-1 -> 0``, ``-2 -> 1``, ``size -> size - 1``; indices far outside repeat
    with period ``2 * size``.
    """
    period = 2 * size
    index = np.mod(index, period)
    return np.where(index < size, index, period - 1 - index)


class Taps(NamedTuple):
    """Where each output pixel of a 1-D resampling reads its input, and how much.

    Attributes
    ----------
    index : numpy.ndarray
        ``(n_out, k)`` absolute input indices (int64), not yet clipped or
        reflected into the input.
    weight : numpy.ndarray
        ``(n_out, k)`` float32 weights; each row sums to 1.
    identity : bool
        True when output pixel ``i`` is input pixel ``i`` (one tap, weight 1).
    """

    index: np.ndarray
    weight: np.ndarray
    identity: bool


def resample_taps(start: int, stop: int, ratio: float) -> Taps:
    """Linear-interpolation taps for output pixels ``[start, stop)``.

    Output pixel ``o`` covers input ``[o * ratio, (o + 1) * ratio)``; its value
    is a triangle-weighted mean of the input pixels around its centre, the
    triangle ``max(ratio, 1)`` input pixels wide each way (antialiased when
    shrinking, plain bilinear when enlarging). The weights depend only on
    ``o``, so any window of the output gets the same values as the whole.

    Parameters
    ----------
    start, stop : int
        Output pixels, in absolute coordinates.
    ratio : float
        Input pixels per output pixel.

    Returns
    -------
    Taps
    """
    out = np.arange(start, stop, dtype=np.int64)
    if ratio == 1.0:
        return Taps(out[:, None], np.ones((len(out), 1), np.float32), True)
    half = max(float(ratio), 1.0)
    centre = (out + 0.5) * ratio - 0.5
    first = np.floor(centre - half).astype(np.int64) + 1
    index = first[:, None] + np.arange(math.ceil(2 * half) + 1)
    weight = np.maximum(0.0, 1.0 - np.abs(index - centre[:, None]) / half)
    keep = weight.any(axis=0)  # drop tap columns that are zero for every pixel
    index, weight = index[:, keep], weight[:, keep]
    weight /= weight.sum(axis=1, keepdims=True)
    return Taps(index, weight.astype(np.float32), False)


def apply_taps(data: np.ndarray, index: np.ndarray, weight: np.ndarray, axis: int) -> np.ndarray:
    """Resample ``data`` along ``axis`` with local tap indices (into ``data``) and weights.

    Returns float32; one tap column at a time, so memory stays at two outputs.
    """
    shape = [1] * data.ndim
    shape[axis] = len(index)
    out = np.take(data, index[:, 0], axis=axis).astype(np.float32, copy=False)
    out *= weight[:, 0].reshape(shape)
    part = np.empty_like(out)
    for k in range(1, index.shape[1]):
        np.multiply(np.take(data, index[:, k], axis=axis), weight[:, k].reshape(shape), out=part)
        out += part
    return out


# -- the grid ------------------------------------------------------------------------


class OutputBlock(NamedTuple):
    """One block of the output: its full-resolution box and the working-scale origin of
    its tile (not to be confused with the blocks a mask is read in,
    :class:`~slide_unet.core.masks.blocks.BlockGrid`)."""

    y0: int
    y1: int
    x0: int
    x1: int
    tile_y: int
    tile_x: int


@dataclass(frozen=True)
class _Axis:
    edges: tuple[int, ...]  # full-resolution block edges, absolute
    tile_starts: tuple[int, ...]  # working origin of the tile of each block
    span: int  # the most working pixels any block needs, from its tile's kept start


def _output_taps(start: int, stop: int, scale: float, working_size: int) -> Taps:
    """Working pixels that full-resolution pixels ``[start, stop)`` read."""
    taps = resample_taps(start, stop, 1.0 / scale)
    return taps._replace(index=np.clip(taps.index, 0, working_size - 1))


def _needed(lo: int, hi: int, scale: float, working_size: int) -> tuple[np.ndarray, np.ndarray]:
    """For each full-resolution pixel in ``[lo, hi)``, the first and last working
    pixel it reads with a non-zero weight."""
    taps = _output_taps(lo, hi, scale, working_size)
    # Zero-weight taps are read (and clipped) but need not be exact.
    live = taps.weight > 0
    first = np.where(live, taps.index, working_size).min(axis=1)
    last = np.where(live, taps.index, -1).max(axis=1)
    return first, last


def _plan_axis(
    lo: int,
    hi: int,
    block: int,
    needed: tuple[np.ndarray, np.ndarray],
    halo: int,
    multiple: int,
    align: int = 0,
) -> _Axis:
    first, last = needed
    if align:  # inner edges on the image's grid of ``align``: the first block may be cut
        edges = (lo, *range(lo // align * align + block, hi, block), hi)
    else:
        edges = (*range(lo, hi, block), hi)
    starts, span = [], 0
    for a, b in itertools.pairwise(edges):
        need_lo, need_hi = int(first[a - lo : b - lo].min()), int(last[a - lo : b - lo].max()) + 1
        kept = need_lo // multiple * multiple
        starts.append(kept - halo)
        span = max(span, need_hi - kept)
    return _Axis(edges, tuple(starts), span)


def _store_chunk(block: int) -> int | None:
    """The store chunk side for a block: the block itself up to
    :data:`MAX_STORE_CHUNK`, else the largest whole fraction of it that is at
    most that and a multiple of 16; None if there is none."""
    if block <= MAX_STORE_CHUNK:
        return block
    for parts in range(2, block // 16 + 1):
        side, rest = divmod(block, parts)
        if not rest and side <= MAX_STORE_CHUNK and side % 16 == 0:
            return side
    return None


def _block_candidates(largest: int) -> list[int]:
    """Block sides to try, largest first: multiples of :data:`BLOCK_QUANTUM` that
    split into store chunks, then multiples of 16, then any."""
    big = range(largest // BLOCK_QUANTUM * BLOCK_QUANTUM, BLOCK_QUANTUM - 1, -BLOCK_QUANTUM)
    small = range(min(largest, BLOCK_QUANTUM - 1) // 16 * 16, 15, -16)
    tidy = [b for b in big if _store_chunk(b) is not None]
    return [*tidy, *small, *range(min(largest, 15), 0, -1)]


@dataclass(frozen=True)
class TileGrid:
    """Blocks over a full-resolution region and the model tiles that compute them.

    Attributes
    ----------
    region : tuple of int
        ``(y0, y1, x0, x1)`` at full resolution.
    scale : float
        Full-resolution pixels per working pixel.
    working_shape : tuple of int
        ``(height, width)`` of the whole image at working scale.
    tile : int
        Side of every model tile (working pixels), a multiple of the model's
        ``multiple``; at most the tile asked for.
    halo : int
        Context cropped from each side of a tile's output.
    block : int
        Side of a block (full-resolution pixels); edge blocks are cut at the
        region's border.
    store_chunk : int
        Side of an output store chunk: ``block`` or a divisor of it.
    row_edges, col_edges : tuple of int
        Absolute full-resolution block edges.
    tile_rows, tile_cols : tuple of int
        Working-scale origins of the tiles of each block row and column
        (negative or beyond the image near its border: those parts are
        mirrored).
    """

    region: tuple[int, int, int, int]
    scale: float
    working_shape: tuple[int, int]
    tile: int
    halo: int
    block: int
    store_chunk: int
    row_edges: tuple[int, ...]
    col_edges: tuple[int, ...]
    tile_rows: tuple[int, ...]
    tile_cols: tuple[int, ...]

    @property
    def shape(self) -> tuple[int, int]:
        """Block rows and columns."""
        return len(self.row_edges) - 1, len(self.col_edges) - 1

    def __len__(self) -> int:
        rows, cols = self.shape
        return rows * cols

    def block_at(self, i: int, j: int) -> OutputBlock:
        """Block ``(i, j)`` (row, column)."""
        return OutputBlock(
            self.row_edges[i],
            self.row_edges[i + 1],
            self.col_edges[j],
            self.col_edges[j + 1],
            self.tile_rows[i],
            self.tile_cols[j],
        )

    def blocks(self) -> list[OutputBlock]:
        """Every block, row by row."""
        rows, cols = self.shape
        return [self.block_at(i, j) for i in range(rows) for j in range(cols)]


def make_grid(
    image_shape: tuple[int, int],
    region: tuple[int, int, int, int],
    *,
    scale: float,
    tile: int,
    halo: int,
    multiple: int,
    align: int | None = None,
) -> TileGrid:
    """Cut a region into blocks that tiles of side at most ``tile`` can compute.

    Parameters
    ----------
    image_shape : tuple of int
        ``(height, width)`` of the image at full resolution.
    region : tuple of int
        ``(y0, y1, x0, x1)`` at full resolution, inside the image.
    scale : float
        Full-resolution pixels per working pixel (the model's pixel size over
        the image's).
    tile : int
        Largest model tile side, working pixels; a multiple of ``multiple``.
    halo : int
        Context each tile needs on every side; a multiple of ``multiple``.
    multiple : int
        Tile origins and sides are multiples of this (``2**depth``).
    align : int, optional
        Blocks are multiples of this and their edges inside the region lie on
        the image's grid of ``align`` (the first block is cut short when the
        region does not start on it: no more blocks than without), when such a
        block fits in a tile: so that each block fills whole chunks of an
        output chunked by ``align`` in image coordinates (a slide's mask
        store). The result is the same.

    Returns
    -------
    TileGrid
        The tidy block side (see :data:`BLOCK_QUANTUM`) whose tiles fit in
        ``tile`` and that costs the least model work (tiles times tile area;
        the largest block, but for regions a little over a whole number of
        blocks); tiles are only as large as the blocks need.

    Raises
    ------
    ValueError
        If ``tile`` is not a multiple of ``multiple`` or leaves no room inside
        the halo.
    """
    if tile % multiple or halo % multiple:
        raise InputError(f"tile {tile} and halo {halo} must be multiples of {multiple}")
    inner = tile - 2 * halo
    if inner < multiple:
        raise InputError(
            f"a tile of {tile} pixels leaves nothing inside the model's halo of {halo} "
            f"pixels a side: use tile >= {2 * halo + 4 * multiple}"
        )
    y0, y1, x0, x1 = region
    working = (math.ceil(image_shape[0] / scale), math.ceil(image_shape[1] / scale))
    needed = (_needed(y0, y1, scale, working[0]), _needed(x0, x1, scale, working[1]))
    largest = max(1, math.floor(inner * scale) + 1)
    best: tuple[int, _Axis, _Axis, int] | None = None
    candidates = _block_candidates(largest)
    aligned = [b for b in candidates if align and b % align == 0]
    for block in aligned or candidates:
        if best is not None and block < best[0] // 2:
            break  # halving the block only multiplies the halo's cost
        grid = int(align) if aligned and align else 0
        rows = _plan_axis(y0, y1, block, needed[0], halo, multiple, grid)
        cols = _plan_axis(x0, x1, block, needed[1], halo, multiple, grid)
        side = -(-max(rows.span, cols.span) // multiple) * multiple
        if side > inner:
            continue
        # Model work: tiles times tile area. A region a little larger than a
        # whole number of blocks may do better with smaller blocks.
        cost = (len(rows.edges) - 1) * (len(cols.edges) - 1) * (side + 2 * halo) ** 2
        if best is None or cost < best[3]:
            best = (block, rows, cols, cost)
    if best is None:  # unreachable for inner >= multiple: one pixel always fits
        raise InputError(f"no block fits in tiles of {tile} pixels with a halo of {halo}")
    block, rows, cols, _ = best
    side = -(-max(rows.span, cols.span) // multiple) * multiple
    return TileGrid(
        region=(y0, y1, x0, x1),
        scale=scale,
        working_shape=working,
        tile=side + 2 * halo,
        halo=halo,
        block=block,
        store_chunk=_store_chunk(block) or block,
        row_edges=rows.edges,
        col_edges=cols.edges,
        tile_rows=rows.tile_starts,
        tile_cols=cols.tile_starts,
    )


def block_output_taps(grid: TileGrid, block: OutputBlock) -> tuple[Taps, Taps]:
    """Taps from a block's tile centre to its full-resolution pixels.

    Indices are local to the tile's kept centre (``tile - 2 * halo`` pixels a
    side, starting ``halo`` into the tile); taps of zero weight are clipped
    into it.
    """
    kept = grid.tile - 2 * grid.halo
    taps = []
    for start, stop, origin, size in (
        (block.y0, block.y1, block.tile_y, grid.working_shape[0]),
        (block.x0, block.x1, block.tile_x, grid.working_shape[1]),
    ):
        t = _output_taps(start, stop, grid.scale, size)
        taps.append(t._replace(index=np.clip(t.index - (origin + grid.halo), 0, kept - 1)))
    return taps[0], taps[1]
