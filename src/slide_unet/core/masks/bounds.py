"""What no mask can be: the bounds on a mask's shape and pixel size.

A mask's shape may come from a file's header or from the user (RLE and GeoJSON
record none: ``--shape``). Streaming makes memory independent of the size, not
time: a shape of 10^8 a side would run for years. A shape beyond these bounds,
or a pixel size that is not a positive number, is refused before any work.

This module is part of the napari-free core.
"""

from __future__ import annotations

import math
from typing import Any

from slide_unet.core.errors import InputError
from slide_unet.core.limits import MPP_RANGE
from slide_unet.core.slide.slide import MAX_SIDE

__all__ = [
    "MAX_MASK_PIXELS",
    "MAX_MASK_SIDE",
    "MAX_MPP",
    "MAX_PLAUSIBLE_MPP",
    "check_mask_shape",
    "check_shape",
    "check_written_mpp",
    "mask_shape_problem",
]

#: Largest side of a mask: the largest side of a slide (2^21, about 2 million
#: pixels, ten times the biggest scans), well inside what TIFF (2^32 - 1) and
#: Bio-Formats (2^31 - 1) hold.
MAX_MASK_SIDE = MAX_SIDE
#: Most pixels of a mask, about 1.1 terapixels: some 25 times the biggest
#: slides scanned today (200,000² pixels). Even streamed, a bigger one would
#: take days; a shape beyond it is a mistake or a hostile file.
MAX_MASK_PIXELS = 2**40
#: Coarsest pixel size written (µm): a metre a pixel. Beyond it the overview
#: levels' scales (twice the pixel size each) soon stop being numbers.
MAX_MPP = 1e6
#: Coarsest pixel size read from a file as one (µm), as for slides: 72 dpi is
#: 353 µm, a screen's, not a microscope's.
MAX_PLAUSIBLE_MPP = MPP_RANGE[1]


def check_shape(
    shape: Any, *, allow_empty: bool = False, error: type[InputError] = InputError
) -> tuple[int, int]:
    """``shape`` as ``(height, width)``: two whole numbers, positive (or, with
    ``allow_empty``, not negative).

    The one rule for a mask's shape given as an argument (an RLE or GeoJSON mask's
    size, a mask store's); :func:`check_mask_shape` then bounds its size.

    Parameters
    ----------
    shape : sequence of int
    allow_empty : bool
        Take sides of 0 (an RLE mask may be empty).
    error : type of InputError
        What to raise (a mask store raises :class:`~slide_unet.core.errors.MaskStoreError`).

    Raises
    ------
    InputError
        Not two whole numbers, or a side too small.
    """
    try:
        height, width = (int(v) for v in shape)
        whole = all(int(v) == v for v in shape)
    except (TypeError, ValueError, OverflowError):
        whole = False
    if not whole:
        raise error(f"shape must be two integers (height, width), got {shape!r}")
    if min(height, width) < (0 if allow_empty else 1):
        least = "must not be negative" if allow_empty else "must be positive (height, width)"
        raise error(f"shape {least}, got {shape!r}")
    return height, width


def mask_shape_problem(shape: tuple[int, ...]) -> str | None:
    """What makes ``(height, width)`` too big for any mask, or None when it is not."""
    height, width = (int(v) for v in shape[:2])
    if max(height, width) > MAX_MASK_SIDE:
        return (
            f"a side of {max(height, width):,} pixels is more than a mask can have "
            f"(at most {MAX_MASK_SIDE:,})"
        )
    if height * width > MAX_MASK_PIXELS:
        return (
            f"{height:,} x {width:,} is {height * width:.3g} pixels, more than a mask can "
            f"have (at most 2^40 = {MAX_MASK_PIXELS:.3g}, some 25 whole slides)"
        )
    return None


def check_mask_shape(shape: tuple[int, int], what: str) -> tuple[int, int]:
    """Refuse a declared ``(height, width)`` that no mask can have, before any work.

    Streaming makes memory independent of size, but not time: a shape of
    10^8 a side would run for years. Sides are at most :data:`MAX_MASK_SIDE`
    and pixels at most :data:`MAX_MASK_PIXELS`.

    Parameters
    ----------
    shape : tuple of int
        ``(height, width)``, already checked to be integers.
    what : str
        What has that shape, for the message (``"m.csv: an RLE mask"``).

    Returns
    -------
    tuple of int
        `shape`.

    Raises
    ------
    InputError
        A side or a pixel count over the limits.
    """
    problem = mask_shape_problem(shape)
    if problem:
        raise InputError(f"{what}: {problem}")
    return int(shape[0]), int(shape[1])


def check_written_mpp(mpp: Any) -> float | None:
    """The pixel size a writer records: None (unknown) or a number in ``(0, MAX_MPP]`` µm.

    A user's pixel size is held to :func:`~slide_unet.core.limits.check_mpp`
    first; this bounds what the writers themselves record (overview scales).

    Raises
    ------
    InputError
        Anything else: a zero, negative or non-finite pixel size is never
        written (readers divide by it, and OME-Zarr scales must be positive).
    """
    if mpp is None:
        return None
    try:
        value = float(mpp)
    except (TypeError, ValueError):
        value = math.nan
    if not 0 < value <= MAX_MPP:
        raise InputError(
            f"the pixel size must be a positive number of µm (at most {MAX_MPP:g}) or None "
            f"(unknown), got {mpp!r}"
        )
    return value
