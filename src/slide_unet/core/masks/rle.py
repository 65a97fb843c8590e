"""The HuBMAP Kaggle run-length encoding (RLE); its CSV files are in :mod:`.rle_csv`.

The encoding is the one of the HuBMAP "Hacking the Kidney" competition: a
space-separated list of ``start length`` pairs, ``start`` 1-based, over the
mask flattened **column-major** (top to bottom, then left to right, i.e.
``mask.T.ravel()``). A mask's shape is ``(height, width)``.

Whole-slide masks do not fit in memory (a HuBMAP mask is 1.4 gigapixels), so
the codec streams: :func:`rle_encode` reads any chunked array (zarr, dask, or
anything with ``.shape`` and slicing) block by block, and :func:`rle_decode`
writes into one (``out=``) the same way. Blocks are whole chunks of the
array, grouped into bands of whole columns; because the flat order is column
after column, the bands' runs simply follow one another, and a run that
crosses from one band (or block) into the next is carried over. Peak memory is
a few blocks, whatever the mask's size, plus the RLE itself.

This module is part of the napari-free core: it never imports napari, Qt or
magicgui.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator, Sequence
from typing import TYPE_CHECKING, Any

import numpy as np

from slide_unet.core.atomic import atomic_path
from slide_unet.core.errors import InputError, LimitError
from slide_unet.core.limits import check_decode
from slide_unet.core.masks.bounds import check_mask_shape, check_shape
from slide_unet.core.masks.rle_parse import rle_runs

if TYPE_CHECKING:
    import zarr

__all__ = [
    "MAX_IN_MEMORY_PIXELS",
    "rle_decode",
    "rle_decode_to_zarr",
    "rle_encode",
]

#: Largest mask :func:`rle_decode` returns as a numpy array (256 megapixels);
#: bigger masks need ``out=`` or :func:`rle_decode_to_zarr`.
MAX_IN_MEMORY_PIXELS = 2**28

#: Bands are this many columns wide (or the nearest whole number of chunks).
_BAND_COLUMNS = 1024
#: Bytes of one block read while encoding (whole chunks, at least one).
_ENCODE_BLOCK_BYTES = 2**24
#: Bytes of one block written while decoding (whole chunks, at least one):
#: small, so that blocks without foreground, the most, cost nothing.
_DECODE_BLOCK_BYTES = 2**20
#: A decoded block is filled one column segment at a time (a Python loop, about
#: 0.5 us a segment) when it has fewer segments than one per this many pixels;
#: else all at once in column-major order, then transposed (about 1.5 ns a pixel).
_PIXELS_PER_SEGMENT_LOOP = 256

#: Progress callback: ``progress(done, total)``, called after each band.
Progress = Callable[[int, int], None]


# --- shapes, chunks and blocks -----------------------------------------------------


def _chunk_bounds(array: Any, axis: int, size: int) -> np.ndarray | None:
    """Chunk boundaries of `array` along `axis` (``0 ... size``), or None if unchunked.

    Understands zarr and h5py (``.chunks``, a tuple of ints; a sharded zarr
    array's shards, as it writes whole shards) and dask (``.chunks``, a tuple
    of tuples of sizes, possibly irregular).
    """
    chunks = getattr(array, "shards", None) or getattr(array, "chunks", None)
    if not chunks or len(chunks) <= axis:
        return None
    along = chunks[axis]
    if isinstance(along, (int, np.integer)):
        if along < 1:
            return None
        return np.append(np.arange(0, size, int(along)), size)
    return np.concatenate(([0], np.cumsum(np.asarray(along, dtype=np.int64))))


def _group(bounds: np.ndarray, target: int) -> list[tuple[int, int]]:
    """Group consecutive chunks into spans of at most `target` (at least one chunk)."""
    spans: list[tuple[int, int]] = []
    lo = int(bounds[0])
    for i in range(1, len(bounds)):
        hi = int(bounds[i])
        nxt = int(bounds[i + 1]) if i + 1 < len(bounds) else None
        if nxt is None or nxt - lo > target:
            spans.append((lo, hi))
            lo = hi
    return [(lo, hi) for lo, hi in spans if hi > lo]


def _spans(array: Any, axis: int, size: int, target: int) -> list[tuple[int, int]]:
    """Split ``range(size)`` into spans of whole chunks of about `target`."""
    bounds = _chunk_bounds(array, axis, size)
    if bounds is None:
        bounds = np.append(np.arange(0, size, max(1, target)), size)
    return _group(bounds, max(1, target))


def _n_chunks(bounds: np.ndarray | None, lo: int, hi: int) -> int:
    """How many chunks (with boundaries `bounds`, None: unchunked) ``lo:hi`` spans."""
    if bounds is None:
        return 1
    first = np.searchsorted(bounds, lo, side="right")
    return int(np.searchsorted(bounds, hi, side="left") - first) + 1


def _blocks(
    array: Any, shape: tuple[int, int], block_bytes: int, itemsize: int
) -> Iterator[tuple[int, int, list[tuple[int, int]]]]:
    """Yield ``(x0, x1, row_spans)``: bands of whole columns and their row blocks."""
    height, width = shape
    for x0, x1 in _spans(array, 1, width, _BAND_COLUMNS):
        rows = block_bytes // max(1, (x1 - x0) * itemsize)
        yield x0, x1, _spans(array, 0, height, rows)


# --- encoding -----------------------------------------------------------------------


class _RunWriter:
    """Turn sorted transition positions into ``start length`` text, piece by piece.

    A transition is a flat (0-based, column-major) position whose pixel differs
    from the one before it (the pixel before the first is background).
    Transitions alternate run starts and run ends; a start whose end is in a
    later band stays open until then.
    """

    def __init__(self) -> None:
        self.pieces: list[str] = []
        self.open_start: int | None = None

    def add(self, transitions: np.ndarray) -> None:
        t = transitions.astype(np.int64, copy=False)
        if self.open_start is not None:
            t = np.concatenate(([self.open_start], t))
        self.open_start = None
        if t.size % 2:
            self.open_start = int(t[-1])
            t = t[:-1]
        if t.size:
            pairs = t.reshape(-1, 2).copy()
            pairs[:, 1] -= pairs[:, 0]
            pairs[:, 0] += 1  # 1-based starts
            self.pieces.append(" ".join(map(str, pairs.ravel().tolist())))

    def finish(self, size: int) -> str:
        if self.open_start is not None:
            self.add(np.array([size], dtype=np.int64))
        return " ".join(self.pieces)


def _vertical_transitions(nz: np.ndarray, y0: int, x0: int, height: int) -> np.ndarray:
    """Flat positions inside a block (below its first row) where a column changes."""
    bh, bw = nz.shape
    if bh < 2:
        return np.empty(0, dtype=np.int64)
    if nz.flags.f_contiguous and not nz.flags.c_contiguous:
        # Column-major block (e.g. a Fortran-ordered numpy mask): work on its
        # transpose, which is C-contiguous, rather than copying it.
        flat = np.flatnonzero(nz.T[:, 1:] != nz.T[:, :-1])
        col, row = np.divmod(flat, bh - 1)
    else:
        flat = np.flatnonzero(nz[1:] != nz[:-1])
        row, col = np.divmod(flat, bw)
    return (x0 + col) * height + (y0 + 1 + row)


def _edge_transitions(
    row: np.ndarray, before: np.ndarray, y0: int, x0: int, height: int
) -> np.ndarray:
    """Flat positions in row `y0` of columns ``x0...`` whose pixel differs from `before`."""
    return (x0 + np.flatnonzero(row != before)) * height + y0


def _encode_band(
    mask: Any, x0: int, x1: int, row_spans: list[tuple[int, int]], height: int, carry: bool
) -> tuple[np.ndarray, bool]:
    """Sorted transitions of the band of columns ``x0:x1``, and its last pixel.

    `carry` is the pixel just before the band (the bottom of column ``x0 - 1``).
    """
    parts: list[np.ndarray] = []
    first_row = last_row = np.zeros(0, dtype=bool)
    for y0, y1 in row_spans:
        block = np.asarray(mask[y0:y1, x0:x1])
        count = np.count_nonzero(block)
        if count in (0, block.size):  # uniform: no change inside, rows constant
            top = bottom = np.full(x1 - x0, bool(count), dtype=bool)
        else:
            nz = block != 0
            parts.append(_vertical_transitions(nz, y0, x0, height))
            top, bottom = nz[0], nz[-1]
        if y0 == 0:
            first_row = top
        else:
            parts.append(_edge_transitions(top, last_row, y0, x0, height))
        last_row = bottom
    # The pixel above the top of each column is the bottom of the one before.
    above = np.concatenate(([carry], last_row[:-1]))
    parts.append(_edge_transitions(first_row, above, 0, x0, height))
    return np.sort(np.concatenate(parts)), bool(last_row[-1])


def _as_encodable(mask: Any) -> Any:
    """`mask` as an array that slices, checked to be 2-D."""
    if not (hasattr(mask, "shape") and hasattr(mask, "__getitem__")):
        mask = np.asarray(mask)
    if len(mask.shape) != 2:
        msg = f"rle_encode needs a 2-D (height, width) mask, got shape {tuple(mask.shape)}"
        raise InputError(msg)
    return mask


def _encode_bands(mask: Any) -> list[tuple[int, int, list[tuple[int, int]]]]:
    """The bands :func:`rle_encode` reads `mask` in (none when it is empty)."""
    height, width = (int(n) for n in mask.shape)
    if not (height and width):
        return []
    itemsize = np.dtype(getattr(mask, "dtype", np.uint8)).itemsize
    return list(_blocks(mask, (height, width), _ENCODE_BLOCK_BYTES, itemsize))


def rle_encode_steps(mask: Any) -> int:
    """How many ``progress`` calls :func:`rle_encode` makes for `mask` (its bands).

    Lets a caller that encodes several masks add their steps into one total.

    Parameters
    ----------
    mask : array-like
        2-D mask, as :func:`rle_encode` takes it; nothing is read.

    Returns
    -------
    int
        The number of bands of columns (0 for an empty mask).

    Raises
    ------
    InputError
        If `mask` is not 2-D.
    """
    return len(_encode_bands(_as_encodable(mask)))


def rle_encode(mask: Any, *, progress: Progress | None = None) -> str:
    """Run-length encode a 2-D mask in the HuBMAP Kaggle format, streaming.

    Parameters
    ----------
    mask : array-like
        2-D mask of shape ``(height, width)``; any non-zero value is
        foreground (bool, 0/1, 0/255 and instance labels all work). A numpy
        array, or a chunked array that never needs to fit in memory: a
        ``zarr.Array``, a ``dask.array.Array``, or anything with ``.shape``
        and 2-D slicing. It is read in bands of whole columns aligned to its
        chunks (about 1024 columns, and blocks of about 16 MB down each
        band), so peak memory does not grow with the mask's size.
    progress : callable, optional
        ``progress(done, total)``, called after each band of columns. To
        cancel, raise from it.

    Returns
    -------
    str
        Space-separated ``start length`` pairs, 1-based, over the mask
        flattened column-major. An empty mask gives ``""``.

    Raises
    ------
    InputError
        If `mask` is not 2-D.

    Examples
    --------
    >>> import numpy as np
    >>> rle_encode(np.array([[0, 1], [1, 1]], dtype=np.uint8))
    '2 3'
    """
    mask = _as_encodable(mask)
    height, width = (int(n) for n in mask.shape)
    writer = _RunWriter()
    bands = _encode_bands(mask)
    carry = False
    for done, (x0, x1, row_spans) in enumerate(bands, start=1):
        transitions, carry = _encode_band(mask, x0, x1, row_spans, height, carry)
        writer.add(transitions)
        if progress is not None:
            progress(done, len(bands))
    return writer.finish(height * width)


# --- decoding -----------------------------------------------------------------------


def _decode_flat(starts: np.ndarray, ends: np.ndarray, size: int) -> np.ndarray:
    """A flat 0/1 array of `size` pixels with the sorted runs ``[starts, ends)`` set."""
    if not starts.size:
        return np.zeros(size, dtype=np.uint8)
    # Alternate background and foreground runs, expanded in one pass.
    counts = np.empty(2 * starts.size + 1, dtype=np.int64)
    counts[0] = starts[0]
    counts[1:-1:2] = ends - starts
    counts[2:-1:2] = starts[1:] - ends[:-1]
    counts[-1] = size - ends[-1]
    values = np.zeros(counts.size, dtype=np.uint8)
    values[1::2] = 1
    return np.repeat(values, counts)


def _column_segments(
    starts: np.ndarray, ends: np.ndarray, x0: int, x1: int, height: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The runs inside columns ``x0:x1``, cut at column boundaries.

    Returns
    -------
    col, top, bottom : numpy.ndarray
        Each segment's column and rows ``[top, bottom)``, sorted column-major.
    """
    lo, hi = x0 * height, x1 * height
    i0 = int(np.searchsorted(ends, lo, side="right"))
    i1 = int(np.searchsorted(starts, hi, side="left"))
    s = np.maximum(starts[i0:i1], lo)
    e = np.minimum(ends[i0:i1], hi)
    first, last = s // height, (e - 1) // height
    n = last - first + 1
    run = np.repeat(np.arange(s.size), n)
    col = first[run] + np.arange(run.size) - np.repeat(np.cumsum(n) - n, n)
    top = np.maximum(s[run], col * height) - col * height
    bottom = np.minimum(e[run], (col + 1) * height) - col * height
    return col, top, bottom


def _fill_block(
    shape: tuple[int, int], col: np.ndarray, top: np.ndarray, bottom: np.ndarray
) -> np.ndarray:
    """A C-ordered 0/1 block with the column segments (block coordinates) set."""
    bh, bw = shape
    if col.size * _PIXELS_PER_SEGMENT_LOOP <= bh * bw:
        block = np.zeros(shape, dtype=np.uint8)
        for c, t, b in zip(col.tolist(), top.tolist(), bottom.tolist(), strict=True):
            block[t:b, c] = 1
        return block
    # Many segments: expand them in the block's column-major order, transpose.
    flat = col * bh
    column_major = _decode_flat(flat + top, flat + bottom, bh * bw).reshape(bw, bh)
    return np.ascontiguousarray(column_major.T)


def _known_zero(out: Any, region: tuple[slice, slice]) -> bool:
    """Whether `region` of `out` is known to be all zero without writing it.

    Only numpy arrays are checked: reading them is free, and skipping the
    write leaves the untouched pages of a fresh ``np.zeros`` unallocated.
    """
    return isinstance(out, np.ndarray) and not np.count_nonzero(out[region])


def _decode_into(
    out: Any,
    starts: np.ndarray,
    ends: np.ndarray,
    shape: tuple[int, int],
    *,
    zero_filled: bool = False,
    progress: Progress | None = None,
) -> None:
    """Write the runs into `out` block by block (blocks of whole chunks of `out`).

    With `zero_filled` (`out` is new and all background), blocks without
    foreground are not written at all.
    """
    height, width = shape
    # zarr's test for empty chunks costs more than writing one: skip it for
    # blocks of one chunk, which hold foreground (let zarr drop empty chunks
    # of bigger blocks).
    dense = out.with_config({"write_empty_chunks": True}) if hasattr(out, "with_config") else out
    row_bounds, col_bounds = _chunk_bounds(out, 0, height), _chunk_bounds(out, 1, width)
    bands = list(_blocks(out, shape, _DECODE_BLOCK_BYTES, 1))
    for done, (x0, x1, row_spans) in enumerate(bands, start=1):
        col, top, bottom = _column_segments(starts, ends, x0, x1, height)
        one_column_of_chunks = _n_chunks(col_bounds, x0, x1) == 1
        for y0, y1 in row_spans:
            keep = (bottom > y0) & (top < y1)
            if keep.any():
                one_chunk = one_column_of_chunks and _n_chunks(row_bounds, y0, y1) == 1
                (dense if one_chunk else out)[y0:y1, x0:x1] = _fill_block(
                    (y1 - y0, x1 - x0),
                    col[keep] - x0,
                    np.maximum(top[keep], y0) - y0,
                    np.minimum(bottom[keep], y1) - y0,
                )
            elif not (zero_filled or _known_zero(out, np.s_[y0:y1, x0:x1])):
                out[y0:y1, x0:x1] = 0
        if progress is not None:
            progress(done, len(bands))


def rle_decode(
    rle: str,
    shape: Sequence[int],
    out: Any | None = None,
    *,
    progress: Progress | None = None,
) -> Any:
    """Decode a HuBMAP Kaggle run-length encoding into a 0/1 mask.

    Parameters
    ----------
    rle : str
        Space-separated ``start length`` pairs, 1-based, over the mask
        flattened column-major, runs sorted and not overlapping. An empty
        (or all-whitespace) string is an empty mask.
    shape : tuple of int
        ``(height, width)`` of the mask.
    out : array-like, optional
        Where to write the mask: a ``zarr.Array`` (or any array that takes
        slice assignment, numpy included) of `shape`. It is written in blocks
        of its own chunks, bands of whole columns, and every pixel is
        overwritten; the whole mask is never in memory. Without `out`, a
        numpy array is returned, for masks up to :data:`MAX_IN_MEMORY_PIXELS`.
    progress : callable, optional
        ``progress(done, total)``, called after each band of columns written
        into `out`. To cancel, raise from it.

    Returns
    -------
    numpy.ndarray or array-like
        Without `out`: a ``uint8`` array of `shape` with values 0 and 1,
        Fortran-ordered (column-major, the encoding's own order, which avoids
        a copy; use ``np.ascontiguousarray`` if C order matters). With `out`:
        `out`.

    Raises
    ------
    MaskError
        If `rle` has an odd number of values or anything but integers, a start
        below 1, a length below 1, a run past the end of the mask, or runs
        that overlap or are not sorted.
    InputError
        If `shape` is not two non-negative integers, or `out` has another shape.
    LimitError
        Without `out`, a mask of more than :data:`MAX_IN_MEMORY_PIXELS`
        pixels or over the memory budget
        (:func:`~slide_unet.core.limits.check_decode`).

    See Also
    --------
    rle_decode_to_zarr : decode a whole-slide mask into a new zarr store.

    Examples
    --------
    >>> rle_decode("2 3", (2, 2))
    array([[0, 1],
           [1, 1]], dtype=uint8)
    """
    height, width = check_shape(shape, allow_empty=True)
    size = height * width
    if out is None and size > MAX_IN_MEMORY_PIXELS:
        msg = (
            f"a {height} x {width} mask ({size / 1e6:.0f} megapixels) is too big to decode "
            f"into memory (limit {MAX_IN_MEMORY_PIXELS / 1e6:.0f}); decode it into a chunked "
            "array with out=zarr.open_array(...) or rle_decode_to_zarr(rle, shape, path)"
        )
        raise LimitError(msg)
    if out is None:
        check_decode(size, f"a {height} x {width} mask decoded from RLE")
    elif tuple(out.shape) != (height, width):
        msg = f"out has shape {tuple(out.shape)}, but the mask is {(height, width)}"
        raise InputError(msg)
    starts, ends = rle_runs(rle, size)
    if out is None:
        return _decode_flat(starts, ends, size).reshape(width, height).T
    _decode_into(out, starts, ends, (height, width), progress=progress)
    return out


def rle_decode_to_zarr(
    rle: str,
    shape: Sequence[int],
    path: str | os.PathLike[str],
    *,
    chunks: tuple[int, int] = (1024, 1024),
    progress: Progress | None = None,
) -> zarr.Array:
    """Decode a run-length encoding into a new zarr store, atomically.

    The store (zarr format 3, ``uint8`` 0/1, zstd) is written under a
    temporary name next to `path` and renamed into place when complete, so an
    error or a cancel never leaves a partial store and an existing store at
    `path` is only replaced by a complete one. Chunks without foreground are
    not written at all.

    Parameters
    ----------
    rle : str
        The encoding, as for :func:`rle_decode`.
    shape : tuple of int
        ``(height, width)`` of the mask.
    path : str or os.PathLike
        The zarr store (a folder) to create or replace.
    chunks : tuple of int, optional
        Chunk shape, ``(1024, 1024)`` by default.
    progress : callable, optional
        ``progress(done, total)``, called after each band of columns. To
        cancel, raise from it.

    Returns
    -------
    zarr.Array
        The new store, opened read-only.

    Raises
    ------
    MaskError, InputError
        As :func:`rle_decode`; also a shape no mask can have
        (:func:`~slide_unet.core.masks.bounds.check_mask_shape`) or chunks
        that are not two positive integers.
    """
    import zarr

    height, width = check_mask_shape(check_shape(shape, allow_empty=True), "an RLE mask")
    try:
        chunks = tuple(int(c) for c in chunks)
    except (TypeError, ValueError, OverflowError):
        raise InputError(f"chunks must be two positive integers, got {chunks!r}") from None
    if len(chunks) != 2 or min(chunks) < 1:
        raise InputError(f"chunks must be two positive integers, got {chunks!r}")
    starts, ends = rle_runs(rle, height * width)  # fail before touching the disk
    with atomic_path(path) as tmp:
        out = zarr.create_array(
            tmp, shape=(height, width), chunks=tuple(chunks), dtype=np.uint8, fill_value=0
        )
        _decode_into(out, starts, ends, (height, width), zero_filled=True, progress=progress)
    return zarr.open_array(path, mode="r")
