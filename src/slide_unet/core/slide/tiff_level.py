"""One pyramid level of a TIFF series as a dask array that decodes in parallel.

tifffile's zarr store is the most complete map from an array index to the
TIFF strips or tiles holding it (tiled, striped, planar, multi-page series,
JPEG tables...), so we use it for that. But reading it through ``zarr`` routes
every decode through zarr's single event-loop thread, and on machines with
fewer than three cores tifffile also decodes inline: one core does all the
work. Here each dask task asks the store for its tiles directly, in the task's
own thread, so decodes (which release the GIL in imagecodecs) run on every
core. File reads stay serialised by tifffile's lock; they are cheap next to
decoding.

A header can ask for any amount of memory (one strip of 200,000² pixels,
tiles of 32,768²). Tiles and strips larger than :data:`LARGE_CHUNK_BYTES` are
read with care: empty ones (no bytes in the file) are never decoded;
uncompressed and deflated ones without a predictor are decoded row by row,
only up to the last row a block needs and keeping only the rows and columns
it needs (see :class:`_RowStreams`); any other is checked against the budget
of :mod:`slide_unet.core.limits` and decoded whole, one at a time. A level of
such chunks is cut into dask chunks of about :data:`TARGET_CHUNK_SIDE`, so
reading a region takes memory in proportion to the region.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import math
import threading
import zlib
from collections.abc import Coroutine
from typing import Any

import dask.array as da
import numpy as np
import tifffile
from tifffile.zarr import ZarrTiffStore
from zarr.core.buffer import default_buffer_prototype

from slide_unet.core.errors import SlideError
from slide_unet.core.limits import check_decode, memory_budget

#: Aim for dask chunks of about this many pixels a side: big enough that task
#: overhead is small next to decoding, small enough that one screen tile or one
#: model tile does not decode much it does not need.
TARGET_CHUNK_SIDE = 512

#: Tiles or strips of more bytes than this are decoded one at a time in the
#: whole process, so that the budget bounds what is decoded at once, not what
#: each of the dask threads decodes. (No scanner writes chunks this large.)
LARGE_CHUNK_BYTES = 64 * 2**20

#: A level whose native chunks have more pixels than this, some of them empty
#: or all of them decodable row by row, gets dask chunks of about
#: :data:`TARGET_CHUNK_SIDE` instead of whole native chunks.
SPLIT_CHUNK_PIXELS = 4096**2

#: Decoded bytes one step of a row-by-row decode produces at most.
STREAM_STEP_BYTES = 4 * 2**20

#: ... but never more than this many dask chunks per level: a graph of one task
#: per 512² of a 2,000,000² header would itself be the memory bomb.
MAX_SPLIT_CHUNKS = 2**16

_LARGE_DECODES = threading.Lock()

_PROTOTYPE = default_buffer_prototype()


def _run_to_completion(make_coroutine: Any) -> Any:
    """Run a coroutine that never suspends in this thread, without an event loop.

    ``ZarrTiffStore.get`` with ``maxworkers=1`` does its reading and decoding
    synchronously; driving it by hand avoids one event loop per worker thread.
    Should a future tifffile ever suspend, we fall back to ``asyncio.run``.
    """
    coroutine: Coroutine[Any, Any, Any] = make_coroutine()
    try:
        coroutine.send(None)
    except StopIteration as stop:
        return stop.value
    coroutine.close()
    return asyncio.run(make_coroutine())


class TiffLevelReader:
    """Read rectangular blocks of one level of a TIFF series.

    Parameters
    ----------
    series
        The series to read, as tifffile parses it.
    level
        Which of the series' pyramid levels.
    """

    def __init__(self, series: tifffile.TiffPageSeries, level: int = 0) -> None:
        self._path = series.parent.filehandle.path
        self._store = ZarrTiffStore(series, level=level, maxworkers=1)
        meta = json.loads(self._get(".zarray").tobytes())
        self.shape: tuple[int, ...] = tuple(meta["shape"])
        self.native_chunks: tuple[int, ...] = tuple(meta["chunks"])
        self.dtype = np.dtype(meta["dtype"])
        self.fill_value = meta["fill_value"] or 0
        self.axes: str = series.levels[level].axes
        if len(self.axes) != len(self.shape):
            raise RuntimeError(f"axes {self.axes!r} do not match shape {self.shape}")
        #: Bytes one native tile or strip takes decoded.
        self.chunk_nbytes = math.prod(self.native_chunks) * self.dtype.itemsize
        keyframe = series.levels[level].keyframe
        self._chunk_name = "tile" if keyframe is not None and keyframe.is_tiled else "strip"
        large = self.chunk_nbytes > LARGE_CHUNK_BYTES
        #: Decodes rows of the native chunks, when they are large and the format allows.
        self.rows = _RowStreams.for_level(series.levels[level], self) if large else None
        #: Whether dask chunks should cut native chunks (see :data:`SPLIT_CHUNK_PIXELS`).
        self.split_native_chunks = _yx_pixels(self.native_chunks, self.axes) > (
            SPLIT_CHUNK_PIXELS
        ) and (self.rows is not None or _has_empty_chunks(series.levels[level]))

    def _get(self, key: str) -> np.ndarray | None:
        try:
            buffer = _run_to_completion(lambda: self._store.get(key, _PROTOTYPE))
        except Exception as exc:  # codecs raise their own types on corrupt data
            raise SlideError(
                self._path, f"cannot decode image data (tile or strip {key}): {exc}"
            ) from exc
        return None if buffer is None else buffer.as_numpy_array()

    def _exists(self, key: str) -> bool:
        """Whether the chunk has data in the file (an empty one reads as the fill value)."""
        return bool(_run_to_completion(lambda: self._store.exists(key)))

    def _native_chunk(self, index: tuple[int, ...]) -> np.ndarray | None:
        key = ".".join(map(str, index))
        if self.chunk_nbytes > min(LARGE_CHUNK_BYTES, memory_budget()):
            if not self._exists(key):
                return None
            shape = " x ".join(map(str, self.native_chunks))
            check_decode(
                self.chunk_nbytes,
                f"{self._path}: a {self._chunk_name} of {shape} {self.dtype} pixels "
                f"(decoded whole)",
            )
            with _LARGE_DECODES:
                data = self._get(key)
        else:
            data = self._get(key)
        if data is None:
            return None
        return data.view(self.dtype).reshape(self.native_chunks)

    def read(self, box: tuple[slice, ...]) -> np.ndarray:
        """Decode the block ``box`` (one slice with start and stop per axis)."""
        out_shape = tuple(s.stop - s.start for s in box)
        # Allocated after the first chunk is fetched: a chunk over the budget is
        # refused before a block of its size is allocated.
        out: np.ndarray | None = None
        ranges = [
            range(s.start // c, -(-s.stop // c))
            for s, c in zip(box, self.native_chunks, strict=True)
        ]
        for index in itertools.product(*ranges):
            starts = [i * c for i, c in zip(index, self.native_chunks, strict=True)]
            src, dst = [], []
            for start, c, s in zip(starts, self.native_chunks, box, strict=True):
                lo, hi = max(start, s.start), min(start + c, s.stop)
                src.append(slice(lo - start, hi - start))
                dst.append(slice(lo - s.start, hi - s.start))
            if self.rows is not None:
                chunk = self.rows.read(index, src)
                src = [slice(0, d.stop - d.start) for d in dst]
            else:
                chunk = self._native_chunk(index)
            if out is None:
                out = np.empty(out_shape, self.dtype)
            if chunk is None:
                out[tuple(dst)] = self.fill_value
            else:
                out[tuple(dst)] = chunk[tuple(src)]
        assert out is not None  # a box touches at least one chunk
        return out

    def close(self) -> None:
        """Release the store (the TIFF file itself is closed by its owner)."""
        self._store.close()


class _RowStreams:
    """Rows of the large tiles or strips of a one-page level, decoded from the file.

    An uncompressed chunk is read at its rows' offset; a deflated one is
    inflated from its start up to the last row asked for, at most
    :data:`STREAM_STEP_BYTES` at a time, keeping only the rows and columns
    asked for. The inflater's state at the end of each read is kept (a few
    chunks' worth), so a chunk read band after band is inflated once.

    Use :meth:`for_level`, which says None where the format does not allow it.
    """

    _SAVED_STATES = 32

    def __init__(self, page: tifffile.TiffPage, reader: TiffLevelReader, iy: int, ix: int) -> None:
        self._path = reader._path
        self._iy, self._ix = iy, ix
        self._shape = reader.native_chunks
        self._dtype = reader.dtype
        self._file_dtype = reader.dtype.newbyteorder(page.parent.byteorder)
        self._across = -(-page.imagewidth // reader.native_chunks[ix])
        self._offsets = page.dataoffsets
        self._counts = page.databytecounts
        self._deflated = page.compression != tifffile.COMPRESSION.NONE
        pixels = reader.native_chunks[iy] * reader.native_chunks[ix]
        self._pixel_bytes = reader.chunk_nbytes // pixels
        self._row_bytes = self._pixel_bytes * reader.native_chunks[ix]
        self._name = "tile" if page.is_tiled else "strip"
        self._saved: dict[tuple[int, int], tuple[Any, int, bytes]] = {}
        self._lock = threading.Lock()

    @classmethod
    def for_level(
        cls, level: tifffile.TiffPageSeries, reader: TiffLevelReader
    ) -> _RowStreams | None:
        """Row access to ``reader``'s chunks, or None where the format does not allow it."""
        pages = level.pages
        if len(pages) != 1 or not isinstance(pages[0], tifffile.TiffPage):
            return None
        page = pages[0]
        streamable = (
            tifffile.COMPRESSION.NONE,
            tifffile.COMPRESSION.ADOBE_DEFLATE,
            tifffile.COMPRESSION.DEFLATE,
        )
        if (
            page.compression not in streamable
            or page.predictor != 1
            or page.fillorder != 1
            or page.is_subsampled
            or (page.samplesperpixel > 1 and page.planarconfig != 1)
            or page.bitspersample != 8 * reader.dtype.itemsize
        ):
            return None
        axes, shape, chunks = reader.axes, reader.shape, reader.native_chunks
        if "Y" not in axes or "X" not in axes or axes.rindex("Y") > axes.rindex("X"):
            return None
        iy, ix = axes.rindex("Y"), axes.rindex("X")
        for i, (size, chunk) in enumerate(zip(shape, chunks, strict=True)):
            # Samples (last, after X) must be whole in each chunk; any other axis is 1.
            samples_last = i == len(axes) - 1 and i > ix and size == chunk == page.samplesperpixel
            if i not in (iy, ix) and size != 1 and not samples_last:
                return None
        if page.is_tiled:
            geometry = (page.tilelength, page.tilewidth)
        else:
            geometry = (min(page.rowsperstrip, page.imagelength), page.imagewidth)
        if geometry != (chunks[iy], chunks[ix]):
            return None
        return cls(page, reader, iy, ix)

    def read(self, index: tuple[int, ...], src: list[slice]) -> np.ndarray | None:
        """The part ``src`` of native chunk ``index`` (None when the chunk is empty)."""
        segment = index[self._iy] * self._across + index[self._ix]
        if segment >= len(self._counts) or not self._counts[segment]:
            return None
        shape = tuple(s.stop - s.start for s in src)
        rows, cols = src[self._iy], src[self._ix]
        check_decode(
            math.prod(shape) * self._dtype.itemsize,
            f"{self._path}: {shape[self._iy]} x {shape[self._ix]} pixels of a {self._name}",
        )
        columns = (cols.start * self._pixel_bytes, cols.stop * self._pixel_bytes)
        span = (rows.start * self._row_bytes, rows.stop * self._row_bytes)
        if self._deflated:
            kept = self._inflate(segment, span, columns)
        else:
            kept = self._read(segment, span, columns)
        array = np.frombuffer(kept, self._file_dtype).astype(self._dtype, copy=False)
        return array.reshape(shape)

    def _pread(self, fh: Any, position: int, size: int) -> bytes:
        fh.seek(position)
        return fh.read(size)

    def _truncated(self, segment: int, have: int, want: int) -> SlideError:
        return SlideError(
            self._path,
            f"{self._name} {segment} ends after {have:,} bytes of pixels, short of the {want:,} "
            "that its rows need: the file is truncated or corrupt",
        )

    def _read(self, segment: int, span: tuple[int, int], columns: tuple[int, int]) -> bytearray:
        kept = bytearray()
        start, stop = span
        step = max(self._row_bytes, STREAM_STEP_BYTES // self._row_bytes * self._row_bytes)
        count = self._counts[segment]
        with open(self._path, "rb") as fh:
            for at in range(start, stop, step):
                size = min(step, stop - at)
                data = self._pread(fh, self._offsets[segment] + at, min(size, max(0, count - at)))
                if len(data) < size:
                    raise self._truncated(segment, at + len(data), stop)
                _keep_columns(memoryview(data), at, span, self._row_bytes, columns, kept)
        return kept

    def _inflate(self, segment: int, span: tuple[int, int], columns: tuple[int, int]) -> bytearray:
        start, stop = span
        offset, count = self._offsets[segment], self._counts[segment]
        with self._lock:  # resume from the furthest saved state not past the start
            done = [at for (seg, at) in self._saved if seg == segment and at <= start]
            resume = self._saved.get((segment, max(done))) if done else None
        if resume is None:
            inflater, read, pending, position = zlib.decompressobj(), 0, b"", 0
        else:
            saved, read, pending = resume
            inflater, position = saved.copy(), max(done)
        kept = bytearray()
        try:
            with open(self._path, "rb") as fh:
                while position < stop:
                    if not pending:
                        if inflater.eof or read >= count:
                            raise self._truncated(segment, position, stop)
                        pending = self._pread(fh, offset + read, min(2**20, count - read))
                        read += len(pending)
                        if not pending:
                            raise self._truncated(segment, position, stop)
                    out = inflater.decompress(pending, min(STREAM_STEP_BYTES, stop - position))
                    pending = inflater.unconsumed_tail
                    if not out and inflater.eof:
                        raise self._truncated(segment, position, stop)
                    _keep_columns(memoryview(out), position, span, self._row_bytes, columns, kept)
                    position += len(out)
        except zlib.error as exc:
            raise SlideError(
                self._path, f"cannot decode image data ({self._name} {segment}): {exc}"
            ) from exc
        with self._lock:
            if len(self._saved) >= self._SAVED_STATES:
                del self._saved[next(iter(self._saved))]
            self._saved[(segment, stop)] = (inflater.copy(), read, pending)
        return kept


def _keep_columns(
    out: memoryview,
    position: int,
    span: tuple[int, int],
    row_bytes: int,
    columns: tuple[int, int],
    kept: bytearray,
) -> None:
    """Append to ``kept`` the bytes of ``out`` (decoded from ``position`` on) that
    lie within ``span`` and, within each row, within ``columns`` (byte offsets)."""
    start, stop = span
    if position < start:
        skip = min(len(out), start - position)
        out, position = out[skip:], position + skip
    out = out[: max(0, stop - position)]
    first, last = columns
    while out:
        in_row = position % row_bytes
        take = min(len(out), row_bytes - in_row)
        lo, hi = max(first, in_row), min(last, in_row + take)
        if lo < hi:
            kept += out[lo - in_row : hi - in_row]
        out, position = out[take:], position + take


def _yx_pixels(shape: tuple[int, ...], axes: str) -> int:
    """Pixels in the Y and X extent of ``shape`` (by position: several axes may be "Q")."""
    return shape[axes.rindex("Y")] * shape[axes.rindex("X")] if "Y" in axes and "X" in axes else 0


def _has_empty_chunks(series: tifffile.TiffPageSeries) -> bool:
    """Whether any tile or strip of ``series`` has no bytes in the file.

    The byte counts are part of the parsed header: nothing is read.
    """
    for page in series.pages:
        if page is None or any(count == 0 for count in page.databytecounts):
            return True
    return False


def _split(size: int, step: int) -> tuple[int, ...]:
    step = max(1, min(step, size))
    full, rest = divmod(size, step)
    return (step,) * full + ((rest,) if rest else ())


def _dask_chunks(reader: TiffLevelReader) -> tuple[tuple[int, ...], ...]:
    """Several native tiles per chunk along X, then Y, about TARGET_CHUNK_SIDE² pixels.

    A striped level (native chunks as wide as the image) gets as many whole
    strips as make up the same area. A level of huge native chunks, some
    empty, gets chunks of about TARGET_CHUNK_SIDE² that cut them.
    """
    chunks = []
    width = 1
    piece = TARGET_CHUNK_SIDE
    if reader.split_native_chunks:
        # Few enough chunks that the graph stays small, whatever the header says.
        pixels = _yx_pixels(reader.shape, reader.axes)
        piece = max(TARGET_CHUNK_SIDE, math.ceil(math.sqrt(pixels / MAX_SPLIT_CHUNKS)))
    # By position, not by letter: tifffile names several axes "Q" (e.g. QQQYX).
    for i in reversed(range(len(reader.axes))):
        axis = reader.axes[i]
        size, native = reader.shape[i], reader.native_chunks[i]
        if reader.split_native_chunks and axis == "X" and native == size:
            # Strips: decoded a whole row at a time, so keep rows whole if they fit.
            pixel_bytes = reader.chunk_nbytes // _yx_pixels(reader.native_chunks, reader.axes)
            step = size if piece * size * pixel_bytes <= LARGE_CHUNK_BYTES else piece
        elif reader.split_native_chunks and axis in "YX":
            step = piece
        elif axis == "X":
            step = native * max(1, round(TARGET_CHUNK_SIDE / native))
            width = min(step, size)
        elif axis == "Y":
            step = native * max(1, round(TARGET_CHUNK_SIDE**2 / (width * native)))
        else:
            step = native
        chunks.append(_split(size, step))
    return tuple(reversed(chunks))


def level_as_dask(reader: TiffLevelReader, name: str) -> da.Array:
    """A dask array over ``reader`` whose chunks are whole native tiles or strips.

    Chunks along Y and X hold several native tiles (about
    :data:`TARGET_CHUNK_SIDE` pixels a side); a striped level keeps whole rows
    of strips, since a strip is decoded whole anyway.
    """
    chunks = _dask_chunks(reader)
    starts = [np.cumsum((0, *c[:-1])) for c in chunks]
    graph: dict[tuple[Any, ...], Any] = {}
    for block in itertools.product(*(range(len(c)) for c in chunks)):
        box = tuple(
            slice(int(starts[axis][i]), int(starts[axis][i]) + chunks[axis][i])
            for axis, i in enumerate(block)
        )
        graph[(name, *block)] = (reader.read, box)
    return da.Array(graph, name, chunks=chunks, dtype=reader.dtype)
