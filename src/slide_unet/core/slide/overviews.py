"""Overview levels for single-level slides, computed once and cached as OME-Zarr.

A flat 30,000 x 45,000 TIFF has no zoomed-out levels, so showing it whole
would decode every tile on every view. We stream it once in bands of rows,
halving each band level by level (2x2 area averaging), and write the levels to
an OME-Zarr image in a per-user cache folder keyed by the slide's path, size
and modification time. Memory stays at a few bands whatever the slide size.

The build writes to a private temporary folder renamed into place at the end,
so a cache that exists is complete; a cancelled or crashed build leaves
nothing that could be mistaken for one. While a build runs, :class:`LiveLevel`
arrays show what is done so far (the rest reads as zeros), which lets a viewer
fill in the zoomed-out picture as it is computed.
"""

from __future__ import annotations

import hashlib
import math
import os
import shutil
import threading
import uuid
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import TYPE_CHECKING, Any

import dask.array as da
import numpy as np
import zarr

from slide_unet.core import ngff
from slide_unet.core.paths import cache_dir

if TYPE_CHECKING:
    from slide_unet.core.slide.slide import Slide


#: Overviews stop once the smallest level fits in this many pixels a side.
SMALLEST_SIDE = 1024

#: Rows of full resolution read per band (a multiple of every level's factor).
BAND_ROWS = 1024

CHUNK_SIDE = 512
#: A level's rows are written band by band while they are at most this many bytes
#: (the levels a zoomed-out view shows); larger levels a row of chunks at a time.
LIVE_WRITE_BYTES = 4 * 2**20

FORMAT_VERSION = 1


def cache_root() -> Path:
    """Folder holding cached overviews: ``$SLIDE_UNET_CACHE_DIR`` or the user cache."""
    return cache_dir() / "overviews"


def slide_key(path: Path) -> str:
    """A key that changes when the file at ``path`` is replaced or modified."""
    stat = path.stat()
    ident = f"{path.resolve()}\0{stat.st_size}\0{stat.st_mtime_ns}"
    return hashlib.sha256(ident.encode()).hexdigest()[:20]


def overview_shapes(shape: tuple[int, ...]) -> list[tuple[int, ...]]:
    """Shapes (YX or YXC) of the levels below full resolution, each half the last."""
    height, width = shape[:2]
    count = max(1, ngff.level_count((height, width), SMALLEST_SIDE) - 1)
    return [
        (math.ceil(height / 2**k), math.ceil(width / 2**k), *shape[2:])
        for k in range(1, count + 1)
    ]


def halve(band: np.ndarray) -> np.ndarray:
    """Average 2x2 blocks (edge rows and columns repeated to make sizes even)."""
    height, width = band.shape[:2]
    if height % 2 or width % 2:
        pad = [(0, height % 2), (0, width % 2)] + [(0, 0)] * (band.ndim - 2)
        band = np.pad(band, pad, mode="edge")
    if band.dtype == np.uint8:
        # Row pairs, then column pairs: two passes over contiguous memory.
        rows = band[0::2].astype(np.uint16)
        rows += band[1::2]
        total = rows[:, 0::2] + rows[:, 1::2]
        total += 2
        return (total >> 2).astype(np.uint8)
    rows = band[0::2].astype(np.float64)
    rows += band[1::2]
    total = rows[:, 0::2] + rows[:, 1::2]
    total /= 4
    if np.issubdtype(band.dtype, np.integer):
        np.rint(total, out=total)
    return total.astype(band.dtype)


def _halved_band(band: da.Array) -> np.ndarray:
    """Compute ``halve(band)``, halving each dask chunk in its own task when the
    chunks have even sizes (all but the last), so the averaging runs in
    parallel with decoding instead of after it."""
    ychunks, xchunks = band.chunks[:2]
    if all(c % 2 == 0 for c in ychunks[:-1] + xchunks[:-1]):
        chunks = (
            tuple(-(-c // 2) for c in ychunks),
            tuple(-(-c // 2) for c in xchunks),
            *band.chunks[2:],
        )
        return np.asarray(band.map_blocks(halve, chunks=chunks, dtype=band.dtype).compute())
    return halve(np.asarray(band.compute()))


def _to_store_layout(array: np.ndarray, inverse: bool = False) -> np.ndarray:
    """YXC in memory, CYX on disk (OME-Zarr puts channels before space)."""
    if array.ndim != 3:
        return array
    return array.transpose(1, 2, 0) if inverse else array.transpose(2, 0, 1)


class OverviewCache:
    """The cached overview levels of one slide file.

    Parameters
    ----------
    path
        The cache's OME-Zarr folder.
    shape, dtype
        Shape (YX or YXC) and type of the slide's full-resolution level.
    mpp
        Microns per pixel at full resolution, recorded in the OME metadata.
    """

    def __init__(
        self, path: Path, shape: tuple[int, ...], dtype: np.dtype, mpp: float | None = None
    ) -> None:
        self.path = path
        self.shape = tuple(shape)
        self.dtype = np.dtype(dtype)
        self.mpp = mpp
        self.shapes = overview_shapes(self.shape)
        #: Rows of each overview level written so far by a running build.
        self.rows_done = [0] * len(self.shapes)
        self._building: Path | None = None
        self._lock = threading.RLock()

    @classmethod
    def for_slide(cls, slide: Slide) -> OverviewCache:
        """The cache entry for ``slide`` (keyed by its path, size and mtime)."""
        path = cache_root() / f"{slide.name}-{slide_key(slide.path)}.ome.zarr"
        return cls(path, slide.shape, slide.dtype, slide.mpp)

    @property
    def complete(self) -> bool:
        """True when the cache exists and matches the slide."""
        try:
            group = zarr.open_group(self.path, mode="r")
            info = group.attrs["slide_unet"]
        except Exception:
            return False
        return info.get("version") == FORMAT_VERSION and tuple(info["shape"]) == self.shape

    def levels(self) -> list[da.Array]:
        """The cached levels as dask arrays (YX or YXC), largest first."""
        group = zarr.open_group(self.path, mode="r")
        arrays = [da.from_zarr(group[str(k)]) for k in range(1, len(self.shapes) + 1)]
        return [a.transpose(1, 2, 0) if a.ndim == 3 else a for a in arrays]

    def live_levels(self) -> list[LiveLevel]:
        """Array-likes over the levels that show a running build's progress."""
        return [LiveLevel(self, k) for k in range(len(self.shapes))]

    # -- building --------------------------------------------------------------

    def build(
        self,
        level0: da.Array,
        progress: Callable[[int, int], None] | None = None,
        cancelled: Callable[[], bool] | None = None,
    ) -> bool:
        """Stream ``level0`` once and write every overview level.

        Parameters
        ----------
        level0
            The slide's full-resolution level (YX or YXC).
        progress
            Called as ``progress(done, total)`` after each band of rows.
        cancelled
            Polled between bands; returning True stops the build and leaves
            no cache behind.

        Returns
        -------
        bool
            True when the cache is complete, False when cancelled.
        """
        steps = self.iter_build(level0)
        for done, total in steps:
            if progress is not None:
                progress(done, total)
            if cancelled is not None and cancelled():
                steps.close()
                return False
        return self.complete

    @property
    def band_rows(self) -> int:
        """Rows of full resolution per band: a multiple of every level's factor,
        so each band halves into whole rows at every level."""
        return math.lcm(BAND_ROWS, 2 ** len(self.shapes))

    def band_count(self) -> int:
        """Bands of rows a build reads (its progress total)."""
        return math.ceil(self.shape[0] / self.band_rows)

    def iter_build(self, level0: da.Array) -> Iterator[tuple[int, int]]:
        """Build the cache, yielding ``(bands done, bands in all)`` after each band.

        Closing the generator early cancels the build: the partial output is
        removed and no cache is published.
        """
        tmp = self.path.with_name(f"{self.path.name}.tmp-{os.getpid()}-{uuid.uuid4().hex[:8]}")
        tmp.parent.mkdir(parents=True, exist_ok=True)
        group = zarr.open_group(tmp, mode="w", zarr_format=3)
        arrays = [
            group.create_array(
                str(k + 1),
                shape=(*shape[2:], *shape[:2]),
                chunks=(*shape[2:], CHUNK_SIDE, CHUNK_SIDE),
                dtype=self.dtype,
                fill_value=0,
            )
            for k, shape in enumerate(self.shapes)
        ]
        with self._lock:
            self._building = tmp
            self.rows_done = [0] * len(self.shapes)
        try:
            yield from self._stream(level0, arrays)
            group.attrs.update(self._metadata())
            self._publish(tmp)
        finally:
            with self._lock:
                self._building = None
            if tmp.exists():
                shutil.rmtree(tmp, ignore_errors=True)

    def _stream(self, level0: da.Array, arrays: list[Any]) -> Iterator[tuple[int, int]]:
        band_rows = self.band_rows
        starts = list(range(0, self.shape[0], band_rows))
        pending: list[list[np.ndarray]] = [[] for _ in arrays]
        written = [0] * len(arrays)

        def write(k: int, block: np.ndarray, y0: int) -> None:
            rows = (..., slice(y0, y0 + block.shape[0]), slice(None))
            if y0 % CHUNK_SIDE == 0:
                # New rows of chunks: no reader (which reads only rows below
                # rows_done) can see them half-written.
                arrays[k][rows] = _to_store_layout(block)
                with self._lock:
                    self.rows_done[k] = max(self.rows_done[k], y0 + block.shape[0])
                return
            # Rows added to a row of chunks that readers may be reading: they wait.
            with self._lock:
                arrays[k][rows] = _to_store_layout(block)
                self.rows_done[k] = max(self.rows_done[k], y0 + block.shape[0])

        # Stages overlap: dask decodes and halves the next band on every core
        # while this thread halves further and a writer thread compresses.
        with ThreadPoolExecutor(1) as reader, ThreadPoolExecutor(1) as writer:
            future = reader.submit(_halved_band, level0[starts[0] : starts[0] + band_rows])
            writes: list[Any] = []
            try:
                for i in range(len(starts)):
                    band = future.result()
                    if i + 1 < len(starts):
                        y0 = starts[i + 1]
                        future = reader.submit(_halved_band, level0[y0 : y0 + band_rows])
                    last = i + 1 == len(starts)
                    for k in range(len(arrays)):
                        if k:
                            band = halve(band)
                        pending[k].append(band)
                        # A level is written once it fills a row of chunks, or
                        # at every band when that is small, so the zoomed-out
                        # view fills in band by band instead of at the end.
                        rows = sum(p.shape[0] for p in pending[k])
                        small = sum(p.nbytes for p in pending[k]) <= LIVE_WRITE_BYTES
                        if rows >= CHUNK_SIDE or last or small:
                            block = np.concatenate(pending[k])
                            pending[k] = []
                            writes.append(writer.submit(write, k, block, written[k]))
                            written[k] += block.shape[0]
                    # Compressing level k overlaps halving level k + 1.
                    for done in writes:
                        done.result()
                    writes = []
                    yield i + 1, len(starts)
            finally:
                future.cancel()

    def _metadata(self) -> dict[str, Any]:
        multiscale = ngff.multiscale(
            self.path.name,
            len(self.shapes),
            self.mpp,
            channels=len(self.shape) == 3,
            first_level=1,
        )
        return {
            "ome": {"version": "0.5", "multiscales": [multiscale]},
            "slide_unet": {"version": FORMAT_VERSION, "shape": list(self.shape)},
        }

    def _publish(self, tmp: Path) -> None:
        with self._lock:
            if self.path.exists() and not self.complete:
                shutil.rmtree(self.path, ignore_errors=True)
            try:
                os.rename(tmp, self.path)
            except OSError:
                # Another process published the same slide first: keep theirs.
                if not self.complete:
                    raise


class LiveLevel:
    """One overview level as an array-like that napari can show during a build.

    Rows the build has not reached yet read as zeros; once the cache is
    complete it reads the cache. Reads and the build's writes take turns, so a
    chunk is never read half-written.
    """

    def __init__(self, cache: OverviewCache, index: int) -> None:
        self._cache = cache
        self._index = index
        self.shape = cache.shapes[index]
        self.dtype = cache.dtype
        self.ndim = len(self.shape)
        self.size = math.prod(self.shape)
        self._arrays: dict[Path, Any] = {}

    def __len__(self) -> int:
        return self.shape[0]

    def _array(self, path: Path) -> Any:
        if path not in self._arrays:
            self._arrays[path] = zarr.open_group(path, mode="r")[str(self._index + 1)]
        return self._arrays[path]

    def __getitem__(self, key: Any) -> np.ndarray:
        slices, squeeze = _as_slices(key, self.shape)
        rows = slices[0]
        out_shape = tuple(
            len(range(*s.indices(n))) for s, n in zip(slices, self.shape, strict=True)
        )
        out = np.zeros(out_shape, self.dtype)
        cache = self._cache
        with cache._lock:
            building = cache._building
            if building is not None:
                path, rows_done = building, cache.rows_done[self._index]
            elif cache.complete:
                path, rows_done = cache.path, self.shape[0]
            else:
                return out[squeeze]
            wanted = np.arange(*rows.indices(self.shape[0]))
            ready = np.flatnonzero(wanted < rows_done)
            if len(ready):
                # Read the ready rows' span forwards, then pick them (any step).
                first, last = wanted[ready].min(), wanted[ready].max()
                read = (slice(int(first), int(last) + 1), *slices[1:])
                stored = _to_store_layout(
                    np.asarray(self._array(path)[_to_store_key(read)]), inverse=True
                )
                out[ready] = stored[wanted[ready] - first]
        return out[squeeze]

    def __array__(self, dtype: Any = None, copy: Any = None) -> np.ndarray:
        array = self[...]
        return array if dtype is None else array.astype(dtype)


def _as_slices(key: Any, shape: tuple[int, ...]) -> tuple[tuple[slice, ...], tuple[Any, ...]]:
    """Split a numpy basic index into one slice per axis, and the index that
    afterwards drops the axes indexed by integers."""
    if not isinstance(key, tuple):
        key = (key,)
    if any(k is Ellipsis for k in key):
        at = key.index(Ellipsis)
        key = key[:at] + (slice(None),) * (len(shape) - len(key) + 1) + key[at + 1 :]
    key = key + (slice(None),) * (len(shape) - len(key))
    slices, squeeze = [], []
    for k, n in zip(key, shape, strict=True):
        if isinstance(k, slice):
            slices.append(k)
            squeeze.append(slice(None))
        else:
            i = int(k) + n if int(k) < 0 else int(k)
            slices.append(slice(i, i + 1))
            squeeze.append(0)
    return tuple(slices), tuple(squeeze)


def _to_store_key(slices: tuple[slice, ...]) -> tuple[slice, ...]:
    """Index a CYX store with YXC slices."""
    return (slices[2], slices[0], slices[1]) if len(slices) == 3 else slices
