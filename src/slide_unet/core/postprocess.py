"""Clean-up after segmentation, streaming over masks of any size.

:func:`drop_small_objects` removes objects below a minimum area from a mask
held in a chunked array (a zarr store, or a window of one), with the
connected components found block by block
(:func:`~slide_unet.core.components.label_chunked`): an object that crosses
block borders is measured whole, and nothing the size of the mask is held.

This module is part of the napari-free core.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np

from slide_unet.core.blocks import DEFAULT_BLOCK, Cancelled
from slide_unet.core.components import label_chunked

__all__ = ["drop_small_objects", "min_pixels"]


def min_pixels(min_area_um2: float, mpp: float | None) -> int:
    """The pixel count of ``min_area_um2`` square microns at ``mpp`` µm per pixel.

    Without a pixel size the area is taken in pixels.
    """
    if min_area_um2 < 0:
        raise ValueError(f"the minimum object area must be 0 or more, got {min_area_um2}")
    return int(np.ceil(min_area_um2 / (mpp * mpp))) if mpp else int(np.ceil(min_area_um2))


def drop_small_objects(
    mask: Any,
    min_pixels: int,
    *,
    connectivity: int = 8,
    block: int = DEFAULT_BLOCK,
    write: Callable[[int, int, np.ndarray], None] | None = None,
    progress: Callable[[int, int], None] | None = None,
    cancelled: Callable[[], bool] | None = None,
) -> int:
    """Set to 0 every object of ``mask`` smaller than ``min_pixels`` pixels.

    Two passes over the blocks: one labels the mask, one removes the small
    objects, relabelling (and rewriting) only the blocks that hold one.

    Parameters
    ----------
    mask : array-like
        A writable 2-D array (numpy, zarr...); any non-zero pixel is foreground.
    min_pixels : int
        Objects with fewer pixels are removed (0 or 1: nothing is).
    connectivity : {8, 4}
    block : int
        Side of the blocks the mask is labelled in.
    write : callable, optional
        ``write(y0, x0, block)`` stores a changed block (e.g. a store's write,
        which also updates its overviews); default ``mask[...] = block``.
    progress : callable, optional
        ``progress(done, total)`` after each block of either pass; ``total`` is
        twice the number of blocks.
    cancelled : callable, optional
        Checked before each block of either pass.

    Returns
    -------
    int
        The number of objects removed.

    Raises
    ------
    Cancelled
        ``cancelled()`` became true. During the second pass, the blocks
        finished so far keep their removals (each block is written whole).
    """
    if min_pixels <= 1:
        if progress is not None:
            progress(1, 1)
        return 0

    def labelling(done: int, total: int) -> None:
        if progress is not None:
            progress(done, 2 * total)

    labels = label_chunked(
        mask, connectivity=connectivity, block=block, progress=labelling, cancelled=cancelled
    )
    total = len(labels.grid)
    small = np.flatnonzero(labels.areas < min_pixels)
    small = small[small > 0]
    boxes = labels.bboxes[small]
    for done, (i, j, slices) in enumerate(labels.grid, 1):
        if cancelled is not None and cancelled():
            raise Cancelled("removing small objects cancelled")
        y0, x0 = slices[0].start, slices[1].start
        y1, x1 = slices[0].stop, slices[1].stop
        # Only objects whose box meets this block can be in it.
        near = small[
            (boxes[:, 0] < y1) & (boxes[:, 2] > y0) & (boxes[:, 1] < x1) & (boxes[:, 3] > x0)
        ]
        if near.size:
            drop = np.isin(labels.block(i, j), near)
            if drop.any():
                # Only the box of what changes is read and written back: specks
                # are small, blocks are millions of pixels.
                rows, cols = np.flatnonzero(drop.any(axis=1)), np.flatnonzero(drop.any(axis=0))
                a, b, c, d = rows[0], rows[-1] + 1, cols[0], cols[-1] + 1
                box = (slice(y0 + a, y0 + b), slice(x0 + c, x0 + d))
                values = np.asarray(mask[box]).copy()
                values[drop[a:b, c:d]] = 0
                if write is None:
                    mask[box] = values
                else:
                    write(y0 + a, x0 + c, values)
        if progress is not None:
            progress(total + done, 2 * total)
    return int(small.size)
