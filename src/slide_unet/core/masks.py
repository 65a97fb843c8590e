"""Mask formats in and out: the HuBMAP Kaggle run-length encoding and its CSV.

The encoding is the one of the HuBMAP "Hacking the Kidney" competition: a
space-separated list of ``start length`` pairs, ``start`` 1-based, over the
mask flattened **column-major** (top to bottom, then left to right, i.e.
``mask.T.ravel()``). A mask's shape is ``(height, width)``.

This module is part of the napari-free core: it never imports napari, Qt or
magicgui.
"""

from __future__ import annotations

import os
import secrets
from collections.abc import Mapping
from pathlib import Path

import numpy as np

__all__ = ["read_rle_csv", "rle_decode", "rle_encode", "write_rle_csv"]

#: Accepted names of the RLE column in a CSV (``train.csv`` uses ``encoding``,
#: submissions use ``predicted``).
RLE_COLUMNS: tuple[str, ...] = ("predicted", "encoding")


def rle_encode(mask: np.ndarray) -> str:
    """Run-length encode a 2-D mask in the HuBMAP Kaggle format.

    Parameters
    ----------
    mask : numpy.ndarray
        2-D array of shape ``(height, width)``; any non-zero value is
        foreground (bool, 0/1, 0/255 and instance labels all work).

    Returns
    -------
    str
        Space-separated ``start length`` pairs, 1-based, over the mask
        flattened column-major. An empty mask gives ``""``.

    Raises
    ------
    ValueError
        If `mask` is not 2-D.

    Examples
    --------
    >>> import numpy as np
    >>> rle_encode(np.array([[0, 1], [1, 1]], dtype=np.uint8))
    '2 3'
    """
    mask = np.asarray(mask)
    if mask.ndim != 2:
        msg = f"rle_encode needs a 2-D (height, width) mask, got shape {mask.shape}"
        raise ValueError(msg)
    # Column-major flattening; no copy when the mask is already Fortran-ordered.
    flat = mask.ravel(order="F") != 0
    # Indices where the value changes; the mask is taken as padded with a 0 at
    # each end (handled below rather than by copying the whole mask).
    runs = np.flatnonzero(np.diff(flat)).astype(np.int64) + 1
    if flat.size and flat[0]:
        runs = np.concatenate(([0], runs))
    if flat.size and flat[-1]:
        runs = np.concatenate((runs, [flat.size]))
    runs[1::2] -= runs[::2]
    runs[::2] += 1  # 1-based starts
    return " ".join(map(str, runs.tolist()))


def _check_shape(shape: tuple[int, int]) -> tuple[int, int]:
    """Validate a ``(height, width)`` shape and return it as a tuple of ints."""
    try:
        height, width = (int(v) for v in shape)
    except (TypeError, ValueError):
        msg = f"shape must be two integers (height, width), got {shape!r}"
        raise ValueError(msg) from None
    if height < 0 or width < 0:
        msg = f"shape must not be negative, got {shape!r}"
        raise ValueError(msg)
    return height, width


def _parse_rle(rle: str) -> tuple[np.ndarray, np.ndarray]:
    """Split an RLE string into arrays of 0-based starts and lengths (unchecked)."""
    tokens = rle.split()
    if len(tokens) % 2:
        msg = f"RLE has an odd number of values ({len(tokens)}): it must be 'start length' pairs"
        raise ValueError(msg)
    try:
        values = np.array(tokens, dtype=np.int64)
    except (ValueError, OverflowError):
        msg = "RLE must contain only integers separated by whitespace"
        raise ValueError(msg) from None
    return values[0::2] - 1, values[1::2]


def rle_decode(rle: str, shape: tuple[int, int]) -> np.ndarray:
    """Decode a HuBMAP Kaggle run-length encoding into a 0/1 mask.

    Parameters
    ----------
    rle : str
        Space-separated ``start length`` pairs, 1-based, over the mask
        flattened column-major, runs sorted and not overlapping. An empty
        (or all-whitespace) string is an empty mask.
    shape : tuple of int
        ``(height, width)`` of the mask.

    Returns
    -------
    numpy.ndarray
        ``uint8`` array of `shape` with values 0 and 1. It is Fortran-ordered
        (column-major, the encoding's own order), which avoids a copy of a
        whole slide's mask; use ``np.ascontiguousarray`` if C order matters.

    Raises
    ------
    ValueError
        If `rle` has an odd number of values or non-integers, a start below 1,
        a length below 1, a run past the end of the mask, or runs that overlap
        or are not sorted; or if `shape` is not two non-negative integers.

    Examples
    --------
    >>> rle_decode("2 3", (2, 2))
    array([[0, 1],
           [1, 1]], dtype=uint8)
    """
    height, width = _check_shape(shape)
    size = height * width
    starts, lengths = _parse_rle(rle)
    if starts.size:
        if starts.min() < 0:
            msg = "RLE starts are 1-based: found a start below 1"
            raise ValueError(msg)
        if lengths.min() < 1:
            msg = "RLE run lengths must be positive: found a length below 1"
            raise ValueError(msg)
        ends = starts + lengths
        if ends.max() > size:
            msg = (
                f"RLE run goes past the end of the mask: ends at pixel {int(ends.max())}, "
                f"but shape {(height, width)} has {size} pixels"
            )
            raise ValueError(msg)
        if np.any(starts[1:] < ends[:-1]):
            msg = "RLE runs overlap or are not sorted by start"
            raise ValueError(msg)
        # Alternate background and foreground runs, expanded in one pass.
        counts = np.empty(2 * starts.size + 1, dtype=np.int64)
        counts[0] = starts[0]
        counts[1:-1:2] = lengths
        counts[2:-1:2] = starts[1:] - ends[:-1]
        counts[-1] = size - ends[-1]
        values = np.zeros(counts.size, dtype=np.uint8)
        values[1::2] = 1
        flat = np.repeat(values, counts)
    else:
        flat = np.zeros(size, dtype=np.uint8)
    return flat.reshape(width, height).T


def _check_id(image_id: str) -> str:
    """Validate an image id for a CSV row."""
    image_id = str(image_id)
    if not image_id or any(c in image_id for c in ',"\r\n'):
        msg = f"CSV id must be non-empty, without commas, quotes or newlines: {image_id!r}"
        raise ValueError(msg)
    return image_id


def write_rle_csv(
    path: str | os.PathLike[str],
    masks: Mapping[str, np.ndarray | str],
    *,
    column: str = "predicted",
) -> Path:
    """Write masks as a Kaggle ``id,predicted`` RLE CSV, atomically.

    The file is written to a temporary file in the same folder and moved over
    `path` with :func:`os.replace`, so readers never see a partial file.

    Parameters
    ----------
    path : str or os.PathLike
        Output CSV file.
    masks : Mapping of str to numpy.ndarray or str
        Image id to a 2-D mask (encoded with :func:`rle_encode`) or to an
        already encoded RLE string (written as is).
    column : str, optional
        Name of the RLE column: ``"predicted"`` (default, submissions) or
        ``"encoding"`` (like the competition's ``train.csv``).

    Returns
    -------
    pathlib.Path
        The path written.

    Raises
    ------
    ValueError
        If an id is empty or holds a comma, quote or newline, if an RLE string
        holds a comma or newline, or if `column` is not an accepted name.
    """
    if column not in RLE_COLUMNS:
        msg = f"column must be one of {RLE_COLUMNS}, got {column!r}"
        raise ValueError(msg)
    path = Path(path)
    rows: list[tuple[str, str]] = []
    for image_id, value in masks.items():
        rle = value if isinstance(value, str) else rle_encode(value)
        if any(c in rle for c in ',"\r\n'):
            msg = f"RLE for {image_id!r} must not hold commas, quotes or newlines"
            raise ValueError(msg)
        rows.append((_check_id(image_id), " ".join(rle.split())))

    # Not tempfile.mkstemp: its files are private (0600); this one gets the umask's mode.
    tmp = path.with_name(f".{path.name}.{secrets.token_hex(8)}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)
    try:
        with os.fdopen(fd, "w", encoding="utf-8", newline="\n") as fh:
            fh.write(f"id,{column}\n")
            for image_id, rle in rows:
                fh.write(f"{image_id},{rle}\n")
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return path


def _split_row(line: str) -> list[str]:
    """Split one CSV line of ids and RLE strings (no embedded commas)."""
    return [field.strip().strip('"') for field in line.rstrip("\r\n").split(",")]


def read_rle_csv(path: str | os.PathLike[str], image_id: str) -> str:
    """Read the RLE string of one image from a Kaggle RLE CSV.

    Parameters
    ----------
    path : str or os.PathLike
        CSV file with a header holding ``id`` and ``encoding`` or
        ``predicted`` (the competition's ``train.csv`` or a submission).
    image_id : str
        The id whose RLE to return.

    Returns
    -------
    str
        The RLE string (``""`` for an empty mask). Decode it with
        :func:`rle_decode` and the image's ``(height, width)``.

    Raises
    ------
    ValueError
        If the header lacks ``id`` or an RLE column, a row is malformed, or
        `image_id` is not in the file (the message lists the ids found).
    """
    path = Path(path)
    with path.open(encoding="utf-8-sig", newline="") as fh:
        header = _split_row(fh.readline())
        names = [name.lower() for name in header]
        rle_col = next((names.index(c) for c in RLE_COLUMNS if c in names), None)
        if "id" not in names or rle_col is None:
            msg = f"{path}: header must have 'id' and one of {RLE_COLUMNS} columns, got {header}"
            raise ValueError(msg)
        id_col = names.index("id")
        seen: list[str] = []
        for lineno, line in enumerate(fh, start=2):
            if not line.strip():
                continue
            fields = _split_row(line)
            if len(fields) != len(header):
                msg = f"{path}, line {lineno}: expected {len(header)} fields, got {len(fields)}"
                raise ValueError(msg)
            if fields[id_col] == image_id:
                return fields[rle_col]
            seen.append(fields[id_col])
    shown = ", ".join(seen[:10]) + (", ..." if len(seen) > 10 else "")
    msg = f"id {image_id!r} not found in {path} (ids there: {shown or 'none'})"
    raise ValueError(msg)
