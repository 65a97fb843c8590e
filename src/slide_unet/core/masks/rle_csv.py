"""Kaggle RLE CSV files: ``id,predicted`` submissions and ``id,encoding`` training sets.

Ids and RLE strings never hold commas or quotes, so rows are split on commas
without a CSV dialect; writes are atomic. A line is read whole only within
the memory budget (:mod:`slide_unet.core.limits`): a file of one endless line
is refused as it is read, not after.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import IO, Any

from slide_unet.core.atomic import atomic_path
from slide_unet.core.errors import InputError, MaskError
from slide_unet.core.limits import check_decode, memory_budget
from slide_unet.core.masks.rle import rle_encode, rle_encode_steps
from slide_unet.core.masks.rle_parse import PARSE_BYTES_PER_CHAR

__all__ = ["RLE_COLUMNS", "read_rle_csv", "rle_csv_ids", "write_rle_csv"]

#: Accepted names of the RLE column in a CSV (``train.csv`` uses ``encoding``,
#: submissions use ``predicted``).
RLE_COLUMNS: tuple[str, ...] = ("predicted", "encoding")


def _check_id(image_id: str) -> str:
    """Validate an image id for a CSV row."""
    image_id = str(image_id)
    if not image_id or any(c in image_id for c in ',"\r\n'):
        msg = f"CSV id must be non-empty, without commas, quotes or newlines: {image_id!r}"
        raise InputError(msg)
    return image_id


def write_rle_csv(
    path: str | os.PathLike[str],
    masks: Mapping[str, Any],
    *,
    column: str = "predicted",
    progress: Callable[[int, int], None] | None = None,
) -> Path:
    """Write masks as a Kaggle ``id,predicted`` RLE CSV, atomically.

    The file is written under a temporary name in the same folder and renamed
    over `path` (:func:`slide_unet.core.atomic.atomic_path`), so readers never
    see a partial file and an error leaves any existing file untouched.

    Parameters
    ----------
    path : str or os.PathLike
        Output CSV file.
    masks : Mapping of str to array-like or str
        Image id to a 2-D mask, numpy or chunked (encoded with
        :func:`rle_encode`, streaming), or to an already encoded RLE string
        (written as is).
    column : str, optional
        Name of the RLE column: ``"predicted"`` (default, submissions) or
        ``"encoding"`` (like the competition's ``train.csv``).
    progress : callable, optional
        ``progress(done, total)`` after each band of columns encoded, the
        bands of every mask counted in one total (see
        :func:`~slide_unet.core.masks.rle.rle_encode_steps`). To stop, raise from it
        (e.g. :class:`~slide_unet.core.errors.Cancelled`): nothing is written.

    Returns
    -------
    pathlib.Path
        The path written.

    Raises
    ------
    InputError
        If an id is empty or holds a comma, quote or newline, if an RLE string
        holds a comma or newline, or if `column` is not an accepted name.
    """
    if column not in RLE_COLUMNS:
        msg = f"column must be one of {RLE_COLUMNS}, got {column!r}"
        raise InputError(msg)
    path = Path(path)
    for image_id in masks:  # before encoding a whole slide for nothing
        _check_id(image_id)
    steps = {i: 0 if isinstance(v, str) else rle_encode_steps(v) for i, v in masks.items()}
    total = sum(steps.values())
    before = 0  # bands of the masks encoded so far

    def step(done: int, _bands: int) -> None:
        if progress is not None:
            progress(before + done, total)

    rows: list[tuple[str, str]] = []
    for image_id, value in masks.items():
        if isinstance(value, str):
            rle = value
        else:
            rle = rle_encode(value, progress=step)
            before += steps[image_id]
        if any(c in rle for c in ',"\r\n'):
            msg = f"RLE for {image_id!r} must not hold commas, quotes or newlines"
            raise InputError(msg)
        rows.append((_check_id(image_id), " ".join(rle.split())))

    with atomic_path(path) as tmp, tmp.open("w", encoding="utf-8", newline="\n") as fh:
        fh.write(f"id,{column}\n")
        for image_id, rle in rows:
            fh.write(f"{image_id},{rle}\n")
        fh.flush()
        os.fsync(fh.fileno())
    return path


def _split_row(line: str) -> list[str]:
    """Split one CSV line of ids and RLE strings (no embedded commas)."""
    return [field.strip().strip('"') for field in line.rstrip("\r\n").split(",")]


def _lines(fh: IO[str], path: Path, start: int = 1) -> Iterator[tuple[int, str]]:
    """``(line number, line)`` of a text file from line `start`, each line read
    only as far as the RLE parser could take it within the memory budget.

    Raises
    ------
    LimitError
        A line too long for that, found as it is read.
    """
    limit = memory_budget() // PARSE_BYTES_PER_CHAR
    lineno = start
    while line := fh.readline(limit + 1):
        if len(line) > limit:
            check_decode(
                len(line) * PARSE_BYTES_PER_CHAR,
                f"{path}, line {lineno}: an RLE of more than {limit:,} characters",
            )
        yield lineno, line
        lineno += 1


def _header(fh: IO[str], path: Path) -> list[str]:
    lines = _lines(fh, path)
    first = next(lines, None)
    if first is None:
        raise MaskError(f"{path}: not an RLE CSV: the file is empty")
    return _split_row(first[1])


def _open(path: Path) -> IO[str]:
    """The CSV as text; its bytes must be UTF-8 (ids and RLE are ASCII)."""
    return path.open(encoding="utf-8-sig", newline="")


def _decoding(path: Path) -> MaskError:
    return MaskError(f"{path}: not an RLE CSV: not UTF-8 text")


def rle_csv_ids(path: str | os.PathLike[str]) -> list[str]:
    """The ids of an RLE CSV's rows, in order.

    Raises
    ------
    MaskError
        The file is not text or has no ``id`` column.
    LimitError
        A line over the memory budget.
    """
    path = Path(path)
    ids = []
    try:
        with _open(path) as fh:
            header = [h.lower() for h in _header(fh, path)]
            if "id" not in header:
                raise MaskError(
                    f"{path}: not an RLE CSV: its header has no 'id' column ({header})"
                )
            column = header.index("id")
            for _, line in _lines(fh, path, start=2):
                if line.strip():
                    fields = _split_row(line)
                    ids.append(fields[column] if column < len(fields) else "")
    except UnicodeDecodeError:
        raise _decoding(path) from None
    return ids


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
    MaskError
        If the file is not text, the header lacks ``id`` or an RLE column, or
        a row is malformed.
    InputError
        If `image_id` is not in the file (the message lists the ids found).
    LimitError
        A line over the memory budget.
    """
    path = Path(path)
    try:
        with _open(path) as fh:
            header = _header(fh, path)
            names = [name.lower() for name in header]
            rle_col = next((names.index(c) for c in RLE_COLUMNS if c in names), None)
            if "id" not in names or rle_col is None:
                msg = (
                    f"{path}: header must have 'id' and one of {RLE_COLUMNS} columns, got {header}"
                )
                raise MaskError(msg)
            id_col = names.index("id")
            seen: list[str] = []
            for lineno, line in _lines(fh, path, start=2):
                if not line.strip():
                    continue
                fields = _split_row(line)
                if len(fields) != len(header):
                    msg = (
                        f"{path}, line {lineno}: expected {len(header)} fields, got {len(fields)}"
                    )
                    raise MaskError(msg)
                if fields[id_col] == image_id:
                    return fields[rle_col]
                seen.append(fields[id_col])
    except UnicodeDecodeError:
        raise _decoding(path) from None
    shown = ", ".join(seen[:10]) + (", ..." if len(seen) > 10 else "")
    msg = f"id {image_id!r} not found in {path} (ids there: {shown or 'none'})"
    raise InputError(msg)
