"""The bounds inputs are held to: the memory budget for decoding what a file
declares (checked before decoding) and the range of pixel sizes.

A small file can declare an enormous image (a 1.5 KB PNG of 50,000 x 50,000, a
TIFF of empty 32,768² tiles, a GeoJSON or RLE mask with a shape of 10^8 a side).
Whatever must be decoded whole into memory is checked against one budget
first, and refused with a :class:`~slide_unet.core.errors.LimitError` that says
what was asked, the budget, and how to raise it. Work that streams (tiles,
strips, bands) is not limited by it.

A pixel size outside :data:`MPP_RANGE` is refused when a caller gives it
(:func:`check_mpp`) or a model card says it, and ignored with a warning when a
file says it.

This module is part of the napari-free core.
"""

from __future__ import annotations

import numbers
import os

from slide_unet.core.errors import InputError, LimitError

__all__ = [
    "DEFAULT_BUDGET_MB",
    "MEMORY_BUDGET_ENV",
    "MPP_RANGE",
    "check_decode",
    "check_mpp",
    "memory_budget",
    "plausible_mpp",
]

#: Environment variable that sets the budget, in MB.
MEMORY_BUDGET_ENV = "SLIDE_UNET_MAX_DECODE_MB"
#: The budget when the variable is not set: 1 GiB, a 32,768² RGB image at most in one piece
#: (what this program decodes whole is a small image or one strip, never a whole slide).
DEFAULT_BUDGET_MB = 1024


def memory_budget() -> int:
    """The budget in bytes: ``$SLIDE_UNET_MAX_DECODE_MB`` MB, else :data:`DEFAULT_BUDGET_MB`.

    Raises
    ------
    LimitError
        The variable is set to something that is not a positive number.
    """
    text = os.environ.get(MEMORY_BUDGET_ENV)
    if not text:
        return DEFAULT_BUDGET_MB * 2**20
    try:
        megabytes = float(text)
    except ValueError:
        megabytes = float("nan")
    if not megabytes > 0 or megabytes == float("inf"):
        raise LimitError(f"{MEMORY_BUDGET_ENV} must be a positive number of MB, got {text!r}")
    return int(megabytes * 2**20)


def check_decode(nbytes: float, what: str) -> None:
    """Refuse to decode ``nbytes`` into memory when it exceeds the budget.

    Parameters
    ----------
    nbytes : float
        Bytes the decoding would need at once.
    what : str
        What it is, for the message (``"slide.png: a 50000 x 50000 RGB image"``).

    Raises
    ------
    LimitError
        Over the budget.
    """
    budget = memory_budget()
    if not nbytes <= budget:
        raise LimitError(
            f"{what} needs {nbytes / 2**20:,.0f} MB decoded at once, over the budget of "
            f"{budget / 2**20:,.0f} MB: set {MEMORY_BUDGET_ENV} (in MB) to allow more"
        )


#: Pixel sizes (µm) this program works with. Below 10 nm is finer than any light
#: microscope resolves (a header saying 1e-6 µm would have tiling make billions
#: of tiles); above 100 µm is a screen or print resolution (72 dpi is 353 µm),
#: not a microscope's (and a model would see a few pixels).
MPP_RANGE = (0.01, 100.0)


def plausible_mpp(mpp: object) -> bool:
    """Whether ``mpp`` is a number of µm per pixel within :data:`MPP_RANGE`."""
    low, high = MPP_RANGE
    return (
        isinstance(mpp, numbers.Real)
        and not isinstance(mpp, bool)
        and low <= float(mpp) <= high  # False for nan
    )


def check_mpp(mpp: float | None, name: str = "mpp") -> float | None:
    """A pixel size given by a caller, as a float; None stays None.

    Parameters
    ----------
    mpp : float or None
        Microns per pixel.
    name : str
        What the caller called it, for the message.

    Returns
    -------
    float or None

    Raises
    ------
    InputError
        Not a number within :data:`MPP_RANGE` (negative, zero, nan, inf,
        1e-6 or 1e9 included): the message names the value and the range.
    """
    if mpp is None:
        return None
    if not plausible_mpp(mpp):
        low, high = MPP_RANGE
        raise InputError(
            f"{name}={mpp!r} is not a usable pixel size: expected a number of µm per pixel "
            f"from {low:g} to {high:g}"
        )
    return float(mpp)
