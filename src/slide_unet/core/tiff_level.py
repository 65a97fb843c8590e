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
"""

from __future__ import annotations

import asyncio
import itertools
import json
from collections.abc import Coroutine
from typing import Any

import dask.array as da
import numpy as np
import tifffile
from tifffile.zarr import ZarrTiffStore
from zarr.core.buffer import default_buffer_prototype

from slide_unet.core.errors import SlideError

#: Aim for dask chunks of about this many pixels a side: big enough that task
#: overhead is small next to decoding, small enough that one screen tile or one
#: model tile does not decode much it does not need.
TARGET_CHUNK_SIDE = 512

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

    def _get(self, key: str) -> np.ndarray | None:
        try:
            buffer = _run_to_completion(lambda: self._store.get(key, _PROTOTYPE))
        except Exception as exc:  # codecs raise their own types on corrupt data
            raise SlideError(
                self._path, f"cannot decode image data (tile or strip {key}): {exc}"
            ) from exc
        return None if buffer is None else buffer.as_numpy_array()

    def _native_chunk(self, index: tuple[int, ...]) -> np.ndarray | None:
        data = self._get(".".join(map(str, index)))
        if data is None:
            return None
        return data.view(self.dtype).reshape(self.native_chunks)

    def read(self, box: tuple[slice, ...]) -> np.ndarray:
        """Decode the block ``box`` (one slice with start and stop per axis)."""
        out_shape = tuple(s.stop - s.start for s in box)
        out = np.empty(out_shape, self.dtype)
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
            chunk = self._native_chunk(index)
            if chunk is None:
                out[tuple(dst)] = self.fill_value
            else:
                out[tuple(dst)] = chunk[tuple(src)]
        return out

    def close(self) -> None:
        """Release the store (the TIFF file itself is closed by its owner)."""
        self._store.close()


def _split(size: int, step: int) -> tuple[int, ...]:
    step = max(1, min(step, size))
    full, rest = divmod(size, step)
    return (step,) * full + ((rest,) if rest else ())


def _dask_chunks(reader: TiffLevelReader) -> tuple[tuple[int, ...], ...]:
    """Several native tiles per chunk along X, then Y, about TARGET_CHUNK_SIDE² pixels.

    A striped level (native chunks as wide as the image) gets as many whole
    strips as make up the same area.
    """
    chunks = []
    width = 1
    # By position, not by letter: tifffile names several axes "Q" (e.g. QQQYX).
    for i in reversed(range(len(reader.axes))):
        axis = reader.axes[i]
        size, native = reader.shape[i], reader.native_chunks[i]
        if axis == "X":
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
