"""Clean-up after segmentation, streaming over masks of any size.

:func:`drop_small_objects` removes objects below a minimum area from a mask
held in a chunked array (a zarr store, or a window of one), with the
connected components found block by block
(:func:`~slide_unet.core.objects.components.label_chunked`): an object that crosses
block borders is measured whole, and nothing the size of the mask is held.
:func:`clear_skipped` zeroes the blocks a plan skipped as background in an
output that held an earlier result, and :class:`Steps` runs one progress
callback over the model's blocks and these phases.

This module is part of the napari-free core.
"""

from __future__ import annotations

from collections.abc import Callable, Collection
from typing import TYPE_CHECKING, Any

import numpy as np

from slide_unet.core.errors import Cancelled, InputError
from slide_unet.core.masks.blocks import DEFAULT_BLOCK
from slide_unet.core.objects.components import label_chunked

if TYPE_CHECKING:
    from slide_unet.core.inference.planning import SegmentationPlan
    from slide_unet.core.inference.tiling import OutputBlock

__all__ = [
    "Steps",
    "check_min_object",
    "clear_skipped",
    "drop_small",
    "drop_small_objects",
    "min_pixels",
    "model_min_object",
    "small_object_steps",
]


def min_pixels(min_area_um2: float, mpp: float | None) -> int:
    """The pixel count of ``min_area_um2`` square microns at ``mpp`` µm per pixel.

    Without a pixel size the area is taken in pixels.
    """
    if min_area_um2 < 0:
        raise InputError(f"the minimum object area must be 0 or more, got {min_area_um2}")
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


class Steps:
    """One ``progress(done, total)`` over the phases of a run.

    Each phase is given a number of steps (the model: one per block run;
    clearing: one per skipped block; small-object removal: see
    :func:`small_object_steps`) and reports its own ``(done, total)``, which is
    scaled into its share, so the bar runs once from 0 to the sum.

    Parameters
    ----------
    progress : callable or None
        The caller's callback.
    **sizes : int
        Steps of each phase, in the order they run.
    """

    def __init__(self, progress: Callable[[int, int], None] | None, **sizes: int) -> None:
        self.progress = progress
        self.sizes = {name: max(0, int(n)) for name, n in sizes.items()}
        self.total = sum(self.sizes.values())
        self.offsets: dict[str, int] = {}
        offset = 0
        for name, n in self.sizes.items():
            self.offsets[name] = offset
            offset += n

    def phase(self, name: str) -> Callable[[int, int], None] | None:
        """The callback for phase ``name`` (None when there is no progress to show)."""
        if self.progress is None:
            return None
        progress, offset, size, total = (
            self.progress,
            self.offsets[name],
            self.sizes[name],
            self.total,
        )

        def report(done: int, of: int) -> None:
            share = size if of <= 0 else min(size, size * done // of)
            progress(offset + share, total)

        return report


def clear_skipped(
    plan: SegmentationPlan,
    array: Any,
    cancelled: Callable[[], bool],
    progress: Callable[[int, int], None] | None = None,
    *,
    keep: Collection[OutputBlock] = (),
    probabilities: Any = None,
) -> None:
    """Set to 0 the blocks of the plan's region that it skips as background
    (but those in ``keep``, which already hold their result), in ``array`` and
    in ``probabilities`` when given (an earlier run's are out of date there).

    Only blocks that hold something are written (a read of an unwritten store
    chunk costs nothing), one block at a time.

    Raises
    ------
    Cancelled
        ``cancelled()`` became true; the blocks cleared so far stay cleared.
    """
    ran = set(plan.blocks) | set(keep)
    skipped = [block for block in plan.grid.blocks() if block not in ran]
    ry, rx = plan.region[0], plan.region[2]
    for done, block in enumerate(skipped, 1):
        if cancelled():
            raise Cancelled("segmentation cancelled")
        rows = slice(block.y0 - ry, block.y1 - ry)
        cols = slice(block.x0 - rx, block.x1 - rx)
        shape = (rows.stop - rows.start, cols.stop - cols.start)
        if probabilities is not None and np.any(probabilities[rows, cols]):
            probabilities[rows, cols] = np.zeros(shape, np.uint8)
        if np.any(array[rows, cols]):
            array[rows, cols] = np.zeros(shape, bool)
        if progress is not None:
            progress(done, len(skipped))


def model_min_object(model: Any, min_object_um2: float | None, probabilities: bool) -> float:
    """The minimum object area a run applies: the one given, else the model card's
    (``min_object_um2``, chosen by its cross-validation; none for probabilities)."""
    if min_object_um2 is not None:
        return min_object_um2
    if probabilities:
        return 0.0
    return float(getattr(getattr(model, "card", None), "min_object_um2", 0.0) or 0.0)


def check_min_object(min_object_um2: float | None, probabilities: bool) -> None:
    """Refuse a negative minimum object area, or one asked of probabilities (None:
    the model's, checked when the card is read)."""
    if min_object_um2 is None:
        return
    if not min_object_um2 >= 0:
        raise InputError(
            f"min_object_um2 must be 0 or a positive area in µm², got {min_object_um2!r}"
        )
    if min_object_um2 and probabilities:
        raise InputError("min_object_um2 removes objects from masks: not with probabilities=True")


def small_object_steps(shape: tuple[int, int]) -> int:
    """Progress steps of removing small objects from a mask of ``shape``: its
    labelling blocks, twice (one pass labels, one removes)."""
    rows, cols = -(-shape[0] // DEFAULT_BLOCK), -(-shape[1] // DEFAULT_BLOCK)
    return 2 * rows * cols


def drop_small(
    plan: SegmentationPlan,
    array: Any,
    min_object_um2: float,
    cancel: Callable[[], bool],
    progress: Callable[[int, int], None] | None = None,
) -> None:
    """Remove objects below ``min_object_um2`` µm² from a finished output."""
    if not min_object_um2:
        return
    drop_small_objects(
        array,
        min_pixels(min_object_um2, plan.input_mpp),
        cancelled=cancel,
        progress=progress,
    )
