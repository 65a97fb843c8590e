"""Reading 2-D masks block by block: the grid, the reader, the input checks.

Masks may be numpy arrays or chunked arrays (dask, zarr, or anything with
``shape``, ``ndim`` and numpy-style slicing); any non-zero pixel is
foreground. Blocks follow the first chunked input's chunks (or zarr shards),
so each chunk is decoded once, and the next block is read in a background
thread while the caller works on the current one.

This module is part of the napari-free core: it never imports napari, Qt or
magicgui.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

import numpy as np

from slide_unet.core.errors import InputError

__all__ = [
    "DEFAULT_BLOCK",
    "BlockGrid",
    "as_mask",
    "check_mask_pair",
    "iter_mask_blocks",
    "read_binary",
]

#: Default side of a block in pixels (4 Mpx). Measured on the 31,299 x 44,066 HuBMAP mask,
#: scoring with 2048 was as fast as with 1024 and faster than with 4096 (labelling skips
#: more empty space in smaller blocks), at about 120 MB above the imports (4096: 450 MB).
DEFAULT_BLOCK = 2048


def _chunk_shape(array: Any) -> tuple[int, ...] | None:
    """The storage chunk (or zarr shard) shape of `array`, None for in-memory arrays."""
    if isinstance(array, np.ndarray):
        return None
    chunksize = getattr(array, "chunksize", None)  # dask
    if chunksize is not None:
        return tuple(int(c) for c in chunksize)
    for name in ("shards", "chunks"):  # zarr: a shard is the unit of reading
        value = getattr(array, name, None)
        if isinstance(value, tuple) and value and all(isinstance(c, int) for c in value):
            return value
    return None


@dataclass(frozen=True)
class BlockGrid:
    """A grid of blocks over a 2-D array, row-major.

    Attributes
    ----------
    shape : tuple of int
        ``(height, width)`` of the array.
    block_shape : tuple of int
        ``(block_height, block_width)``; blocks at the bottom and right edges
        are cut at the array's border.
    """

    shape: tuple[int, int]
    block_shape: tuple[int, int]

    @classmethod
    def for_arrays(
        cls, shape: tuple[int, int], block: int = DEFAULT_BLOCK, arrays: Sequence[Any] = ()
    ) -> BlockGrid:
        """A grid of blocks about `block` pixels a side, aligned to the first chunked array.

        Along each axis the block is the largest multiple of the chunk that is
        at most `block`, or one chunk when chunks are larger (up to twice
        `block`; beyond that alignment is given up to keep memory bounded).

        Parameters
        ----------
        shape : tuple of int
            ``(height, width)``.
        block : int, optional
            Target side of a block in pixels.
        arrays : sequence, optional
            Arrays whose chunks the blocks should follow, first one first.

        Returns
        -------
        BlockGrid

        Raises
        ------
        ValueError
            If `block` is not a positive integer.
        """
        if int(block) < 1:
            msg = f"block must be a positive number of pixels, got {block!r}"
            raise InputError(msg)
        block = int(block)
        chunks = next((c for c in map(_chunk_shape, arrays) if c is not None), None)
        sides = []
        for axis in range(2):
            side = block
            if chunks is not None and len(chunks) == 2:
                c = chunks[axis]
                side = (block // c) * c if c <= block else (c if c <= 2 * block else block)
            sides.append(max(1, min(side, max(shape[axis], 1))))
        return cls((int(shape[0]), int(shape[1])), (sides[0], sides[1]))

    @property
    def n_blocks(self) -> tuple[int, int]:
        """Number of block rows and block columns."""
        return (
            -(-self.shape[0] // self.block_shape[0]),
            -(-self.shape[1] // self.block_shape[1]),
        )

    def slices(self, i: int, j: int) -> tuple[slice, slice]:
        """The ``(rows, cols)`` slices of block ``(i, j)``."""
        (h, w), (bh, bw) = self.shape, self.block_shape
        return slice(i * bh, min((i + 1) * bh, h)), slice(j * bw, min((j + 1) * bw, w))

    def __iter__(self) -> Iterator[tuple[int, int, tuple[slice, slice]]]:
        """Yield ``(i, j, slices)`` for every block, row-major."""
        rows, cols = self.n_blocks
        for i in range(rows):
            for j in range(cols):
                yield i, j, self.slices(i, j)

    def __len__(self) -> int:
        rows, cols = self.n_blocks
        return rows * cols


def read_binary(array: Any, slices: tuple[slice, slice]) -> np.ndarray:
    """One block of `array` as a C-contiguous bool array (non-zero is True)."""
    block = np.asarray(array[slices])
    if block.dtype == bool:
        return np.ascontiguousarray(block)
    return block != 0


def iter_mask_blocks(
    arrays: Sequence[Any], grid: BlockGrid, *, prefetch: bool | None = None
) -> Iterator[tuple[int, int, tuple[slice, slice], list[np.ndarray]]]:
    """Yield the blocks of several same-shape masks, binarised, in row-major order.

    Parameters
    ----------
    arrays : sequence of array-like
        2-D masks (numpy, dask, zarr, ...); any non-zero pixel is foreground.
    grid : BlockGrid
        The blocks to read.
    prefetch : bool, optional
        Read the next block in a background thread while the caller works on
        this one (costs one more block of memory per mask). Default: on unless
        every array is a numpy array.

    Yields
    ------
    i, j : int
        Block row and column.
    slices : tuple of slice
        Where the block lies in the masks.
    blocks : list of numpy.ndarray
        One C-contiguous bool block per mask.
    """
    if prefetch is None:
        prefetch = not all(isinstance(a, np.ndarray) for a in arrays)

    def read(slices: tuple[slice, slice]) -> list[np.ndarray]:
        return [read_binary(a, slices) for a in arrays]

    if not prefetch:
        for i, j, slices in grid:
            yield i, j, slices, read(slices)
        return
    cells = list(grid)
    with ThreadPoolExecutor(max_workers=1, thread_name_prefix="slide-unet-read") as pool:
        pending = pool.submit(read, cells[0][2]) if cells else None
        for k, (i, j, slices) in enumerate(cells):
            assert pending is not None
            blocks = pending.result()
            pending = pool.submit(read, cells[k + 1][2]) if k + 1 < len(cells) else None
            yield i, j, slices, blocks


def as_mask(mask: Any) -> Any:
    """`mask` itself if it is array-like (``shape`` and ``ndim``), else ``np.asarray(mask)``."""
    return mask if hasattr(mask, "shape") and hasattr(mask, "ndim") else np.asarray(mask)


def check_mask_pair(pred: Any, truth: Any) -> tuple[Any, Any, tuple[int, int]]:
    """Check that two masks are 2-D and of the same shape.

    Parameters
    ----------
    pred, truth : array-like
        The prediction and the truth (numpy, dask, zarr, nested lists, ...).

    Returns
    -------
    pred, truth : array-like
        The masks, as array-likes (lists become numpy arrays).
    shape : tuple of int
        Their ``(height, width)``.

    Raises
    ------
    ValueError
        ``"prediction shape (h, w) does not match truth (H, W)"`` when the
        shapes differ, or a message naming both shapes when one is not 2-D.
    """
    pred, truth = as_mask(pred), as_mask(truth)
    p_shape = tuple(int(v) for v in pred.shape)
    t_shape = tuple(int(v) for v in truth.shape)
    if pred.ndim != 2 or truth.ndim != 2:
        msg = (
            f"masks must be 2-D (height, width): prediction has shape {p_shape}, "
            f"truth has shape {t_shape}"
        )
        raise InputError(msg)
    if p_shape != t_shape:
        msg = f"prediction shape {p_shape} does not match truth {t_shape}"
        raise InputError(msg)
    return pred, truth, (p_shape[0], p_shape[1])
