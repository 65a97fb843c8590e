"""What a mask file's pixels mean: 0/1, 0/255, colours on black, label ids,
palette indices.

:func:`pixels_to_mask` makes a 2-D mask of what a TIFF, PNG, JPEG or zarr
holds (see :mod:`slide_unet.core.masks.io`): binary masks become ``uint8``
0/1 whatever they were stored as, instance label images keep their ids, and a
picture (more than :data:`MAX_MASK_COLOURS` colours) is refused.
:func:`png_palette_indices` reads a palette PNG by index, not by colour.

This module is part of the napari-free core.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import dask.array as da
import numpy as np
from PIL import PngImagePlugin

from slide_unet.core.errors import MaskError
from slide_unet.core.limits import check_decode
from slide_unet.core.masks.bounds import MAX_PLAUSIBLE_MPP, mask_shape_problem

__all__ = ["MAX_MASK_COLOURS", "check_channels", "pixels_to_mask", "png_palette_indices"]

#: An RGB "mask" with more colours than this (in a sample) is a picture.
MAX_MASK_COLOURS = 16
#: Pixels looked at to tell a mask from a picture and 0/255 from labels.
_SAMPLE_PIXELS = 2**22


def _sample(array: Any) -> np.ndarray:
    """Up to about :data:`_SAMPLE_PIXELS` pixels: chunks spread over a dask
    array (whole chunks: masks are smooth), or a strided view of numpy."""
    if isinstance(array, da.Array):
        rows, cols = array.numblocks[:2]
        per_block = max(1, int(np.prod(array.chunksize[:2])))
        n = max(1, min(rows * cols, _SAMPLE_PIXELS // per_block))
        picks = np.unique(np.linspace(0, rows * cols - 1, n).round().astype(int))
        blocks = [array.blocks[int(k // cols), int(k % cols)] for k in picks]
        computed = da.compute(*blocks)
        channels = array.shape[2:]
        return np.concatenate([b.reshape(-1, *channels) for b in computed])
    step = max(1, int(np.sqrt(array.shape[0] * array.shape[1] / _SAMPLE_PIXELS)))
    return np.asarray(array[::step, ::step]).reshape(-1, *array.shape[2:])


def _colours(pixels: np.ndarray) -> int:
    """Distinct colours among ``(n, channels)`` pixels."""
    if pixels.dtype == np.uint8 and pixels.shape[1] <= 4:
        packed = np.zeros(len(pixels), dtype=np.uint32)
        for c in range(pixels.shape[1]):
            packed |= pixels[:, c].astype(np.uint32) << (8 * c)
        return len(np.unique(packed))
    return len(np.unique(pixels, axis=0))


def check_channels(array: Any, where: str) -> None:
    """Refuse a ``(height, width, channels)`` array of more than RGBA's four."""
    if array.ndim == 3 and array.shape[2] > 4:
        raise MaskError(f"{where}: not a mask: it has {array.shape[2]} channels")


def pixels_to_mask(array: Any, where: str) -> Any:
    """A 2-D mask from what a mask file holds (see the module docstring)."""
    if array.ndim == 3:
        check_channels(array, where)
        colour = array[..., : 3 if array.shape[2] >= 3 else 1]  # alpha (2nd or 4th) ignored
        found = _colours(_sample(colour).reshape(-1, colour.shape[2]))
        if found > MAX_MASK_COLOURS:
            raise MaskError(
                f"{where}: not a mask: found {found} distinct colours in a sample; a mask "
                f"has a few (e.g. red on black), at most {MAX_MASK_COLOURS}"
            )
        return (colour != 0).any(axis=2).astype(np.uint8)
    if array.ndim != 2:
        raise MaskError(f"{where}: a mask must be 2-D, got shape {tuple(array.shape)}")
    dtype = np.dtype(array.dtype)
    if dtype == np.bool_:
        return array.astype(np.uint8)
    if dtype.kind == "f":
        values = np.unique(_sample(array))
        if not np.all(np.mod(values[np.isfinite(values)], 1) == 0) or np.isnan(values).any():
            fraction = values[np.mod(values, 1) != 0][:1]
            raise MaskError(
                f"{where}: not a mask: it holds fractional values such as {fraction} "
                "(a probability map? threshold it first)"
            )
        return (array != 0).astype(np.uint8) if values.max() <= 1 else array.astype(np.uint32)
    if dtype.kind not in "ui":
        raise MaskError(f"{where}: a mask must hold integers, got {dtype}")
    if dtype.kind == "i" or dtype.itemsize == 8:
        array = array.astype(np.dtype(f"u{min(dtype.itemsize, 4)}"))
        dtype = np.dtype(array.dtype)
    exact = isinstance(array, np.ndarray)  # else only a sample can be looked at
    if exact and array.size and array.max() <= 1:
        return array.astype(np.uint8, copy=False)
    if dtype.itemsize <= 2:
        # A single "on" value of 255 (or 65535) is a binary mask, not label 255.
        counts = np.bincount(np.asarray(array if exact else _sample(array)).ravel())
        present = np.flatnonzero(counts[1:]) + 1
        if len(present) == 1 and present[0] in (255, 65535):
            return (array != 0).astype(np.uint8)
    return array


def png_palette_indices(path: Path) -> tuple[np.ndarray, float | None] | None:
    """A palette PNG's colour indices (and pixel size), or None for any other file.

    A palette mask (QuPath's and many editors' indexed exports) means its
    indices: 0 is background and 1..n the objects, whatever colours the
    palette shows them in (index 0 drawn white, or 30 objects in 30 colours,
    which read as colours would be foreground or refused as a picture).
    """
    with path.open("rb") as fh:
        header = fh.read(26)
    # PNG signature, then the IHDR chunk: width, height, bit depth, colour type (3: palette).
    if len(header) < 26 or not header.startswith(b"\x89PNG\r\n\x1a\n") or header[25] != 3:
        return None
    width, height = int.from_bytes(header[16:20], "big"), int.from_bytes(header[20:24], "big")
    problem = mask_shape_problem((height, width))
    if problem:
        raise MaskError(f"{path}: not a readable PNG mask: {problem}")
    # Pillow's image of the indices, then numpy's copy.
    check_decode(2 * width * height, f"{path}: a {height} x {width} palette PNG")
    try:
        # The plugin itself, not Image.open: its decompression-bomb guard is
        # global state, and the budget above bounds the decoding instead.
        with PngImagePlugin.PngImageFile(path) as image:
            image.load()
            dpi = image.info.get("dpi")
            indices = np.asarray(image.getchannel(0) if image.mode == "PA" else image)
    except (OSError, SyntaxError, ValueError, EOFError) as exc:
        raise MaskError(f"{path}: cannot decode the palette PNG ({exc})") from None
    mpp = None
    if dpi and dpi[0]:
        mpp = 25400.0 / float(dpi[0])
        if not 0 < mpp <= MAX_PLAUSIBLE_MPP:
            mpp = None
    return np.ascontiguousarray(indices, dtype=np.uint8), mpp
