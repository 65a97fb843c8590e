"""Keeping a mask store's overview levels in step with its full resolution.

Level k+1 of a mask store is the 2x2 maximum of level k
(:func:`~slide_unet.core.masks.pyramids.halve_max`). After a write to the full
resolution, the levels below are recomputed over the written region only:

- from the written pixels themselves while the region covers whole 2x2 cells of
  the level above (the engine's aligned blocks: no reads), else by reading the
  level above back, in tiles;
- or, for a stream of blocks whose coarse chunks many blocks share, later and in
  one go (:func:`rebuild_stale`): each waiting chunk of each level once.

These functions take the store's levels (zarr arrays, full resolution first)
and the sizes to work in; :class:`~slide_unet.core.masks.store.MaskStore` holds
the lock and the bookkeeping.

This module is part of the napari-free core.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from slide_unet.core.masks.pyramids import halve_max

__all__ = ["covers_whole_chunks", "halve_region", "rebuild", "rebuild_stale"]

Box = tuple[int, int, int, int]


def halve_region(
    levels: Sequence[Any], k: int, y0: int, y1: int, x0: int, x1: int, *, tile: int
) -> Box:
    """Recompute level ``k`` over level ``k - 1``'s region, reading it in tiles of
    ``tile`` pixels (even); return level k's region."""
    above, below = levels[k - 1], levels[k]
    height, width = above.shape
    y0, x0 = y0 - y0 % 2, x0 - x0 % 2
    y1, x1 = min(height, y1 + y1 % 2), min(width, x1 + x1 % 2)
    # Tiles on a fixed even grid: every tile but the image's last is even
    # on both sides, so halve_max pads (with 0, like a full rebuild) only there.
    for ty in range(y0 - y0 % tile, y1, tile):
        for tx in range(x0 - x0 % tile, x1, tile):
            ya, yb = max(ty, y0), min(ty + tile, y1)
            xa, xb = max(tx, x0), min(tx + tile, x1)
            half = halve_max(np.asarray(above[ya:yb, xa:xb]))
            below[ya // 2 : ya // 2 + half.shape[0], xa // 2 : xa // 2 + half.shape[1]] = half
    return y0 // 2, -(-y1 // 2), x0 // 2, -(-x1 // 2)


def covers_whole_chunks(levels: Sequence[Any], k: int, y0: int, y1: int, x0: int, x1: int) -> bool:
    """Whether level ``k - 1``'s region, halved, fills whole chunks of level ``k``."""
    height, width = levels[k].shape
    a0, a1, b0, b1 = y0 // 2, -(-y1 // 2), x0 // 2, -(-x1 // 2)
    side_y, side_x = (int(c) for c in levels[k].chunks)
    return (
        a0 % side_y == 0
        and b0 % side_x == 0
        and (a1 % side_y == 0 or a1 == height)
        and (b1 % side_x == 0 or b1 == width)
    )


def rebuild(
    levels: Sequence[Any],
    y0: int,
    y1: int,
    x0: int,
    x1: int,
    block: np.ndarray | None = None,
    *,
    whole_chunks: bool = False,
    tile: int,
) -> tuple[int, Box]:
    """Recompute the overviews over a full-resolution region.

    Parameters
    ----------
    levels : sequence of arrays
        The store's levels, full resolution first.
    y0, y1, x0, x1 : int
        The region (clipped to the mask).
    block : numpy.ndarray, optional
        The region's pixels, when at hand: a level whose region covers whole
        2x2 cells of the level above (even start, even end or the level's
        edge) is halved from them in memory; otherwise (and below) the level
        above is read back.
    whole_chunks : bool
        Stop before the first level that the region would not fill in whole
        chunks (where a write would need a read of what is there).
    tile : int
        Side of the tiles a level is read back in.

    Returns
    -------
    tuple
        The last level rebuilt (0: none) and the region there, ``(y0, y1, x0, x1)``.
    """
    height, width = levels[0].shape
    y0, y1 = max(0, int(y0)), min(height, int(y1))
    x0, x1 = max(0, int(x0)), min(width, int(x1))
    if block is not None and block.shape != (y1 - y0, x1 - x0):
        block = None
    last = 0
    if y0 >= y1 or x0 >= x1:
        return last, (y0, y1, x0, x1)
    for k in range(1, len(levels)):
        height, width = levels[k - 1].shape
        whole = not (y0 % 2 or x0 % 2 or (y1 % 2 and y1 != height) or (x1 % 2 and x1 != width))
        in_memory = block is not None and whole
        if whole_chunks and not (in_memory and covers_whole_chunks(levels, k, y0, y1, x0, x1)):
            break
        if in_memory:
            block = halve_max(block)
            rows = slice(y0 // 2, y0 // 2 + block.shape[0])
            levels[k][rows, x0 // 2 : x0 // 2 + block.shape[1]] = block
            y0, y1, x0, x1 = y0 // 2, -(-y1 // 2), x0 // 2, -(-x1 // 2)
        else:
            block = None
            y0, y1, x0, x1 = halve_region(levels, k, y0, y1, x0, x1, tile=tile)
        last = k
    return last, (y0, y1, x0, x1)


def rebuild_stale(levels: Sequence[Any], stale: list[Any], *, chunk: int, tile: int) -> None:
    """Rebuild the levels that deferred writes left waiting, each chunk once.

    Parameters
    ----------
    levels : sequence of arrays
        The store's levels, full resolution first.
    stale : list
        ``(level, y0, y1, x0, x1)`` entries: the region is up to date at
        ``level``, the levels below it are not. Emptied.
    chunk : int
        Chunk side of the overview levels.
    tile : int
        As for :func:`halve_region`.
    """
    waiting: dict[int, set[tuple[int, ...]]] = {}
    for level, *box in stale:
        waiting.setdefault(int(level), set()).add(tuple(int(v) for v in box))
    stale.clear()
    if not waiting:
        return
    for k in range(min(waiting) + 1, len(levels)):
        height, width = levels[k].shape
        above_h, above_w = levels[k - 1].shape
        chunks = set()
        for y0, y1, x0, x1 in waiting.get(k - 1, ()):
            for cy in range(y0 // 2 // chunk, (-(-y1 // 2) - 1) // chunk + 1):
                for cx in range(x0 // 2 // chunk, (-(-x1 // 2) - 1) // chunk + 1):
                    chunks.add((cy, cx))
        done = waiting.setdefault(k, set())
        for cy, cx in sorted(chunks):
            y0, x0 = cy * chunk, cx * chunk
            y1, x1 = min(y0 + chunk, height), min(x0 + chunk, width)
            halve_region(
                levels, k, 2 * y0, min(2 * y1, above_h), 2 * x0, min(2 * x1, above_w), tile=tile
            )
            done.add((y0, y1, x0, x1))
