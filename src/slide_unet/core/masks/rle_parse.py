"""Parsing an RLE string into runs, refusing anything that is not one.

An RLE is ``start length`` pairs of ASCII integers separated by whitespace
(see :mod:`slide_unet.core.masks.rle`). :func:`parse_rle` reads the numbers with
numpy, within the memory budget (:mod:`slide_unet.core.limits`);
:func:`rle_runs` checks the runs against the mask. Whatever the text, the
result is runs or one :class:`~slide_unet.core.errors.MaskError` line.

This module is part of the napari-free core.
"""

from __future__ import annotations

import numpy as np

from slide_unet.core.errors import InputError, MaskError
from slide_unet.core.limits import check_decode

__all__ = ["PARSE_BYTES_PER_CHAR", "parse_rle", "rle_runs"]

#: Character classes of the RLE parser, by byte: 0 not allowed, 1 whitespace,
#: 2 digit, 3 sign.
_CHAR_CLASS = np.zeros(256, dtype=np.uint8)
_CHAR_CLASS[list(b" \t\n\r\x0b\x0c")] = 1
_CHAR_CLASS[list(b"0123456789")] = 2
_CHAR_CLASS[list(b"+-")] = 3
#: Numbers of up to this many digits always fit in int64.
_SAFE_DIGITS = 18
#: Bytes the parser needs per character of an RLE, at most (the text, its
#: classes, and per number, at most one per two characters, a few int64s).
PARSE_BYTES_PER_CHAR = 16
_NOT_INTEGERS = "RLE must contain only integers separated by whitespace"


def parse_rle(rle: str) -> tuple[np.ndarray, np.ndarray]:
    """Split an RLE string into arrays of 1-based starts and lengths (unchecked).

    Numbers are ASCII digits with an optional sign, read by numpy a digit
    position at a time: no Python object per number (``str.split`` made a
    64-byte string of each, four times the text), and about as fast (~20 ms
    for HuBMAP's longest row, 322,166 numbers).

    Raises
    ------
    InputError
        `rle` is not a string.
    MaskError
        Anything but whitespace-separated integers, a number out of int64, or
        an odd count.
    LimitError
        An RLE too long to parse within the memory budget.
    """
    if not isinstance(rle, str):
        raise InputError(f"an RLE must be a string, got {type(rle).__name__}")
    check_decode(len(rle) * PARSE_BYTES_PER_CHAR, f"an RLE of {len(rle):,} characters")
    try:
        raw = rle.encode("ascii")
    except UnicodeEncodeError as exc:
        msg = f"{_NOT_INTEGERS}: found {rle[exc.start]!r} at character {exc.start + 1}"
        raise MaskError(msg) from None
    text = np.frombuffer(raw, dtype=np.uint8)
    kind = _CHAR_CLASS[text]
    if (bad := np.flatnonzero(kind == 0)).size:
        i = int(bad[0])
        raise MaskError(f"{_NOT_INTEGERS}: found {rle[i]!r} at character {i + 1}")
    # Numbers are the runs of digits and signs.
    inside = np.empty(len(text) + 2, dtype=np.int8)
    inside[0] = inside[-1] = 0
    np.greater_equal(kind, 2, out=inside[1:-1])
    edges = np.flatnonzero(np.diff(inside))
    del inside
    first, stop = edges[0::2], edges[1::2]
    del edges
    if first.size % 2:
        msg = f"RLE has an odd number of values ({first.size}): it must be 'start length' pairs"
        raise MaskError(msg)
    # A sign may only lead a number, and digits must follow it.
    signs = np.flatnonzero(kind == 3)
    number_of = np.searchsorted(first, signs, side="right") - 1
    bad = (first[number_of] != signs) | (stop[number_of] - signs < 2)
    if bad.any():
        i = int(number_of[np.argmax(bad)])
        word = rle[int(first[i]) : int(stop[i])]
        raise MaskError(f"{_NOT_INTEGERS}: found {word!r} (value {i + 1})")
    del signs, number_of, bad
    signed = kind[first] == 3
    digits = first + signed
    n_digits = stop - digits
    values = np.zeros(first.size, dtype=np.int64)
    for k in range(min(_SAFE_DIGITS, int(n_digits.max(initial=0)))):
        more = n_digits > k
        at = np.where(more, digits + k, 0)
        step = text[at].astype(np.int64) - 48
        values = np.where(more, values * 10 + step, values)
    for i in np.flatnonzero(n_digits > _SAFE_DIGITS).tolist():
        # Rare: too long for the loop's int64 (or leading zeros); checked exactly.
        number = int(raw[int(digits[i]) : int(stop[i])])
        if number > np.iinfo(np.int64).max:
            msg = f"{_NOT_INTEGERS} within int64: value {i + 1} is {number}"
            raise MaskError(msg)
        values[i] = number
    signed_minus = signed & (text[first] == ord("-"))
    np.negative(values, out=values, where=signed_minus)
    return values[0::2], values[1::2]


def rle_runs(rle: str, size: int) -> tuple[np.ndarray, np.ndarray]:
    """Parse and validate an RLE for a mask of `size` pixels.

    Returns
    -------
    starts, ends : numpy.ndarray
        0-based flat starts and (exclusive) ends of the runs, sorted.

    Raises
    ------
    MaskError
        As :func:`parse_rle`; also a start below 1, a length below 1, a run
        past the end of the mask, or runs that overlap or are not sorted.
    """
    starts, lengths = parse_rle(rle)
    if not starts.size:
        return starts, starts
    if (bad := np.flatnonzero(starts < 1)).size:
        i = int(bad[0])
        msg = f"RLE starts are 1-based: run {i + 1} starts at {int(starts[i])}"
        raise MaskError(msg)
    if (bad := np.flatnonzero(lengths < 1)).size:
        i = int(bad[0])
        msg = f"RLE run lengths must be positive: run {i + 1} has length {int(lengths[i])}"
        raise MaskError(msg)
    starts = starts - 1
    # Not `starts + lengths > size`: that sum can overflow.
    if (bad := np.flatnonzero(lengths > size - starts)).size:
        i = int(bad[0])
        msg = (
            f"RLE run {i + 1} goes past the end of the mask: it ends at pixel "
            f"{int(starts[i]) + int(lengths[i])}, but the mask has {size} pixels"
        )
        raise MaskError(msg)
    ends = starts + lengths
    if (bad := np.flatnonzero(starts[1:] < ends[:-1])).size:
        i = int(bad[0]) + 1
        msg = (
            f"RLE runs overlap or are not sorted by start: run {i + 1} starts at "
            f"{int(starts[i]) + 1}, before run {i} ends (at {int(ends[i - 1])})"
        )
        raise MaskError(msg)
    return starts, ends
