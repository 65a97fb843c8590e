"""Writers of small hostile slide files: headers that declare far more than they hold.

The TIFFs are written byte by byte (one IFD, classic little-endian TIFF), since
no well-behaved writer produces them: a 32,768² image of tiles with no bytes,
one deflated strip declaring 200,000² pixels. Each is a few hundred bytes to
a few megabytes on disk.
"""

from __future__ import annotations

import struct
import zlib
from collections.abc import Iterable
from pathlib import Path

_SHORT, _LONG, _RATIONAL = 3, 4, 5
_DEFLATE = 8


def _values(kind: int, values: list[int]) -> bytes:
    if kind == _RATIONAL:
        return b"".join(struct.pack("<II", *values[i : i + 2]) for i in range(0, len(values), 2))
    return b"".join(struct.pack("<H" if kind == _SHORT else "<I", v) for v in values)


def write_raw_tiff(
    path: Path,
    height: int,
    width: int,
    chunks: list[bytes],
    *,
    samples: int = 1,
    tile: tuple[int, int] | None = None,
    deflated: bool = False,
    pixels_per_cm: int | None = None,
) -> Path:
    """A TIFF whose strips (or tiles) are ``chunks`` as stored (b"" for an empty one).

    The header declares ``height`` x ``width`` 8-bit pixels of ``samples``
    samples, whatever ``chunks`` hold.
    """
    tags: list[tuple[int, int, list[int]]] = [
        (256, _LONG, [width]),
        (257, _LONG, [height]),
        (258, _SHORT, [8] * samples),
        (259, _SHORT, [_DEFLATE if deflated else 1]),
        (262, _SHORT, [2 if samples == 3 else 1]),
        (277, _SHORT, [samples]),
        (284, _SHORT, [1]),
    ]
    if pixels_per_cm is not None:
        tags += [(282, _RATIONAL, [pixels_per_cm, 1]), (283, _RATIONAL, [pixels_per_cm, 1])]
        tags += [(296, _SHORT, [3])]
    counts = [len(c) for c in chunks]
    if tile is None:
        rows = height if len(chunks) == 1 else -(-height // len(chunks))
        offsets_tag = 273
        tags += [(273, _LONG, [0] * len(chunks)), (278, _LONG, [rows]), (279, _LONG, counts)]
    else:
        offsets_tag = 324
        tags += [(322, _LONG, [tile[1]]), (323, _LONG, [tile[0]])]
        tags += [(324, _LONG, [0] * len(chunks)), (325, _LONG, counts)]
    tags.sort()
    # Layout: header, IFD, values too long for the IFD, then the chunks.
    position = 8 + 2 + 12 * len(tags) + 4
    placed: list[int | None] = []
    for _, kind, values in tags:
        size = len(_values(kind, values))
        placed.append(position if size > 4 else None)
        position += size + (size & 1) if size > 4 else 0
    offsets, at = [], position
    for chunk in chunks:
        offsets.append(at if chunk else 0)
        at += len(chunk)
    ifd, extra = struct.pack("<H", len(tags)), b""
    for (tag, kind, values), where in zip(tags, placed, strict=True):
        values = offsets if tag == offsets_tag else values
        data = _values(kind, values)
        count = len(values) // 2 if kind == _RATIONAL else len(values)
        if where is None:
            ifd += struct.pack("<HHI", tag, kind, count) + data.ljust(4, b"\0")
        else:
            ifd += struct.pack("<HHII", tag, kind, count, where)
            extra += data + b"\0" * (len(data) & 1)
    ifd += struct.pack("<I", 0)
    path.write_bytes(b"II*\0" + struct.pack("<I", 8) + ifd + extra + b"".join(chunks))
    return path


def deflated_zeros(nbytes: int, piece: int = 2**24) -> bytes:
    """``nbytes`` zero bytes, deflated (zlib), compressed a piece at a time."""
    compressor = zlib.compressobj(9)
    out = []
    zeros = bytes(piece)
    for start in range(0, nbytes, piece):
        out.append(compressor.compress(zeros[: min(piece, nbytes - start)]))
    out.append(compressor.flush())
    return b"".join(out)


def write_png_header(path: Path, height: int, width: int) -> Path:
    """An RGB PNG whose header declares ``height`` x ``width``, with a few rows of data."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return (
            struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))
        )

    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    parts: Iterable[bytes] = (
        b"\x89PNG\r\n\x1a\n",
        chunk(b"IHDR", header),
        chunk(b"IDAT", zlib.compress(bytes(200_000), 9)),
        chunk(b"IEND", b""),
    )
    path.write_bytes(b"".join(parts))
    return path
