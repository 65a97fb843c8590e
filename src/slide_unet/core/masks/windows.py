"""Rectangles of a mask store as writable 2-D arrays: write-through and autosaved.

Two views of a :class:`~slide_unet.core.masks.store.MaskStore` rectangle that
napari (or any code that indexes arrays) can read and write:

:class:`StoreWindow`
    Every assignment goes straight to the store (full resolution, then the
    overviews of the written box). For writers that produce big blocks from
    worker threads, such as the segmentation engine.
:class:`ProbabilityWindow`
    The same rectangle of the store's ``probability`` array (uint8
    ``round(p * 255)``), for the engine's ``out_probabilities``.
:class:`AutosavedWindow`
    The rectangle is held in memory (read from the store chunk by chunk as it is
    first needed); assignments land in memory at once and a background thread
    writes the changed boxes to the store, batched, :data:`AUTOSAVE_SECONDS`
    after the first change of a burst. For painting: a brush dab costs a numpy
    assignment instead of a dozen zarr reads and writes and an overview rebuild,
    and a crash (even ``kill -9``) loses at most the last
    :data:`AUTOSAVE_SECONDS` of strokes plus one write.

napari only ever indexes a Labels layer's data with slices, integers, integer
arrays and 2-D boolean masks, which is all these take.

This module is part of the napari-free core.
"""

from __future__ import annotations

import atexit
import contextlib
import threading
import time
import weakref
from collections.abc import Callable
from typing import Any

import numpy as np

from slide_unet.core.errors import InputError
from slide_unet.core.masks.salvage import read_region
from slide_unet.core.masks.store import MaskStore

__all__ = [
    "AUTOSAVE_SECONDS",
    "AutosavedWindow",
    "Box",
    "ProbabilityWindow",
    "StoreWindow",
    "flush_windows",
    "reload_windows",
]

Box = tuple[int, int, int, int]

#: How long an edit may stay only in memory before the autosave writes it (s).
AUTOSAVE_SECONDS = 0.5


def _axis(item: Any, size: int) -> tuple[int, int, Any]:
    """One axis of an index: its bounds ``(lo, hi)`` and the item relative to ``lo``."""
    if isinstance(item, slice):
        start, stop, step = item.indices(size)
        if step < 0:
            raise IndexError("a mask window does not take negative slice steps")
        if stop <= start:
            return 0, 0, slice(0, 0)
        return start, stop, slice(0, stop - start, step)
    if isinstance(item, int | np.integer):
        index = int(item) + (size if item < 0 else 0)
        if not 0 <= index < size:
            raise IndexError(f"index {int(item)} is out of bounds for an axis of size {size}")
        return index, index + 1, 0
    array = np.asarray(item)
    if array.dtype == bool:
        array = np.flatnonzero(array)
    if not np.issubdtype(array.dtype, np.integer):
        raise IndexError(f"a mask window takes integer or slice indices, got {array.dtype}")
    array = np.where(array < 0, array + size, array).astype(np.intp, copy=False)
    if array.size == 0:
        return 0, 0, array
    lo, hi = int(array.min()), int(array.max()) + 1
    if lo < 0 or hi > size:
        raise IndexError(f"an index is out of bounds for an axis of size {size}")
    return lo, hi, array - lo


class _Window:
    """What both windows share: the rectangle, array attributes and index parsing."""

    def __init__(self, store: MaskStore, region: Box) -> None:
        y0, y1, x0, x1 = (int(v) for v in region)
        height, width = store.shape
        if not (0 <= y0 < y1 <= height and 0 <= x0 < x1 <= width):
            raise InputError(
                f"the window {y0}:{y1}, {x0}:{x1} is not inside the mask of shape {store.shape}"
            )
        self.store = store
        self.region: Box = (y0, y1, x0, x1)
        self.shape = (y1 - y0, x1 - x0)
        self.dtype = store.dtype
        self.ndim = 2

    @property
    def size(self) -> int:
        return self.shape[0] * self.shape[1]

    def __len__(self) -> int:
        return self.shape[0]

    def _parse(self, key: Any) -> tuple[Box, tuple[Any, Any]]:
        """The box an index touches (window pixels) and the index relative to it."""
        if not isinstance(key, tuple):
            key = (key,)
        if len(key) == 1 and isinstance(key[0], np.ndarray) and key[0].ndim == 2:
            key = np.nonzero(key[0])  # a 2-D boolean mask
        at = next((i for i, item in enumerate(key) if item is Ellipsis), None)
        if at is not None:
            key = key[:at] + (slice(None),) * (3 - len(key)) + key[at + 1 :]
        key = key + (slice(None),) * (2 - len(key))
        if len(key) != 2:
            raise IndexError(f"too many indices for a 2-D mask window: {len(key)}")
        (y0, y1, rows), (x0, x1, cols) = (
            _axis(item, size) for item, size in zip(key, self.shape, strict=True)
        )
        return (y0, y1, x0, x1), (rows, cols)

    def _to_store(self, box: Box) -> Box:
        top, _, left, _ = self.region
        return box[0] + top, box[1] + top, box[2] + left, box[3] + left

    def _read(self, box: Box) -> np.ndarray:
        raise NotImplementedError

    def __getitem__(self, key: Any) -> Any:
        box, local = self._parse(key)
        return self._read(box)[local]

    def __array__(self, dtype: Any = None, copy: bool | None = None) -> np.ndarray:
        array = self._read((0, self.shape[0], 0, self.shape[1]))
        return array if dtype is None else array.astype(dtype, copy=False)

    def __repr__(self) -> str:
        y0, y1, x0, x1 = self.region
        return f"{type(self).__name__}({self.store.path.name!r}, {y0}:{y1}, {x0}:{x1})"


class StoreWindow(_Window):
    """A rectangle of a mask store's full resolution whose writes go straight to it.

    Reads come from the store; every assignment is written at once with
    :meth:`MaskStore.write` (marked as a hand edit unless ``edited=False``, as
    for the segmentation engine's output), which also rebuilds the overview
    levels of the written box.

    Parameters
    ----------
    store : MaskStore
        The slide's mask store.
    region : tuple of int
        ``(y0, y1, x0, x1)``: the rectangle, in full-resolution pixels.
    on_write : callable, optional
        Called with the written box ``(y0, y1, x0, x1)`` (store pixels) after
        each write, in the writing thread.
    edited : bool
        Whether writes are hand edits (the store's ``edited`` mark).
    defer_overviews : bool
        Rebuild the coarser overviews in batches (``MaskStore.write(defer=True)``;
        call ``store.flush_overviews()`` after the last write): for a stream of
        blocks.
    """

    def __init__(
        self,
        store: MaskStore,
        region: Box,
        on_write: Callable[[Box], None] | None = None,
        *,
        edited: bool = True,
        defer_overviews: bool = False,
    ) -> None:
        super().__init__(store, region)
        self.on_write = on_write
        self.edited = edited
        self.defer_overviews = defer_overviews

    @property
    def block_alignment(self) -> int:
        """Blocks that are multiples of this, on the image's grid, fill whole chunks
        of the store's full resolution (and of its overviews, as deep as they can)."""
        return int(max(self.store.level0.chunks))

    def _read(self, box: Box) -> np.ndarray:
        y0, y1, x0, x1 = self._to_store(box)
        if y1 <= y0 or x1 <= x0:
            return np.zeros((y1 - y0, x1 - x0), dtype=self.dtype)
        return read_region(self.store, 0, y0, y1, x0, x1)

    def __setitem__(self, key: Any, value: Any) -> None:
        box, local = self._parse(key)
        y0, y1, x0, x1 = box
        if y1 <= y0 or x1 <= x0:
            return
        rows, cols = local
        if isinstance(rows, slice) and isinstance(cols, slice) and rows.step == cols.step == 1:
            block = np.broadcast_to(np.asarray(value), (y1 - y0, x1 - x0))
        else:
            block = self._read(box)
            block[local] = value
        target = self._to_store(box)
        self.store.write(
            target[0], target[2], block, edited=self.edited, defer=self.defer_overviews
        )
        if self.on_write is not None:
            self.on_write(target)


class ProbabilityWindow(_Window):
    """A rectangle of a mask store's probabilities, written straight to the store.

    What :func:`~slide_unet.core.inference.segment.segment` takes as
    ``out_probabilities`` beside a :class:`StoreWindow`: assignments of uint8
    ``round(p * 255)`` blocks go to :meth:`MaskStore.write_probability` (which
    creates the array on first use); reads give 0 where nothing was written.
    Only rectangular (slice) assignments, as the engine makes.
    """

    def __init__(self, store: MaskStore, region: Box) -> None:
        super().__init__(store, region)
        self.dtype = np.dtype(np.uint8)

    def _read(self, box: Box) -> np.ndarray:
        y0, y1, x0, x1 = self._to_store(box)
        array = self.store.probability
        if array is None or y1 <= y0 or x1 <= x0:
            return np.zeros((max(0, y1 - y0), max(0, x1 - x0)), np.uint8)
        return np.asarray(array[y0:y1, x0:x1])

    def __setitem__(self, key: Any, value: Any) -> None:
        box, local = self._parse(key)
        y0, y1, x0, x1 = box
        if y1 <= y0 or x1 <= x0:
            return
        rows, cols = local
        rectangle = isinstance(rows, slice) and isinstance(cols, slice)
        if not (rectangle and rows.step == cols.step == 1):
            raise IndexError("a probability window takes rectangular (slice) assignments only")
        block = np.broadcast_to(np.asarray(value, np.uint8), (y1 - y0, x1 - x0))
        target = self._to_store(box)
        self.store.write_probability(target[0], target[2], block)


#: The autosaved windows open in this process, by store folder: a window opened
#: later, and every reader that calls flush_windows, sees edits not yet saved.
_OPEN: dict[str, weakref.WeakSet[AutosavedWindow]] = {}
_OPEN_GUARD = threading.Lock()


def _windows_of(store: MaskStore | str) -> list[AutosavedWindow]:
    key = str(store.path if isinstance(store, MaskStore) else store)
    with _OPEN_GUARD:
        return list(_OPEN.get(key, ()))


def flush_windows(store: MaskStore | str) -> None:
    """Write every edit held by this process's autosaved windows of ``store`` now.

    Call it before reading the store by another route (an export, a score, a
    window opened anew) so that strokes of the last half second are included.
    """
    for window in _windows_of(store):
        window.flush()


def reload_windows(store: MaskStore, box: Box) -> None:
    """Re-read ``box`` (store pixels) from the store into every autosaved window of it.

    For writers that go around the windows (the segmentation engine writes the
    store directly): each window first saves its own pending edits, then takes
    the store's pixels. Safe to call from any thread.
    """
    for window in _windows_of(store):
        window.reload(box)


def _flush_at_exit() -> None:
    with _OPEN_GUARD:
        windows = [w for group in _OPEN.values() for w in group]
    for window in windows:
        with contextlib.suppress(Exception):  # nothing is left to tell at exit
            window.close()


# Saved before the interpreter shuts its thread pools down (zarr writes through
# asyncio's default executor, which refuses work once concurrent.futures' own exit
# hook ran): threading's exit hooks run before plain atexit ones, latest first.
# ``threading._register_atexit`` is what concurrent.futures itself uses.
getattr(threading, "_register_atexit", atexit.register)(_flush_at_exit)


class AutosavedWindow(_Window):
    """A rectangle of a mask store held in memory and saved back in the background.

    Reads and writes touch only memory: the pixels are read from the store a
    chunk at a time when first needed, and each assignment is recorded as a
    changed box per store chunk. A background thread writes the changed boxes
    to the store (full resolution, then their overviews, then the store's
    modified time and ``edited`` mark once) :data:`AUTOSAVE_SECONDS` after the
    first change of a burst, so at most that much of a user's work is ever
    only in memory. A failed save (a full disk) keeps the changes and retries
    at the next save; :attr:`save_error` tells.

    Parameters
    ----------
    store : MaskStore
        The slide's mask store.
    region : tuple of int
        ``(y0, y1, x0, x1)``: the rectangle, in full-resolution pixels.
    edited : bool
        Whether writes are hand edits (the store's ``edited`` mark).
    delay : float
        Seconds between the first change of a burst and its save.
    on_saved : callable, optional
        Called with each saved box ``(y0, y1, x0, x1)`` (store pixels), in the
        saving thread.
    on_error : callable, optional
        Called with the exception when saving starts failing (once, until a
        save works again), in the saving thread.

    Notes
    -----
    Opening a window first saves the pending edits of the other windows of the
    same store in this process, so it never starts from stale pixels.
    """

    def __init__(
        self,
        store: MaskStore,
        region: Box,
        *,
        edited: bool = True,
        delay: float = AUTOSAVE_SECONDS,
        on_saved: Callable[[Box], None] | None = None,
        on_error: Callable[[BaseException], None] | None = None,
    ) -> None:
        super().__init__(store, region)
        flush_windows(store)
        self.edited = edited
        self.delay = float(delay)
        self.on_saved = on_saved
        self.on_error = on_error
        self.save_error: BaseException | None = None
        self._chunk = int(store.level0.chunks[0]), int(store.level0.chunks[1])
        # Chunk rows and columns of the store met by the window, relative to its first.
        top, bottom, left, right = self.region
        self._first = top // self._chunk[0], left // self._chunk[1]
        last = (bottom - 1) // self._chunk[0], (right - 1) // self._chunk[1]
        grid = last[0] - self._first[0] + 1, last[1] - self._first[1] + 1
        self._data = np.zeros(self.shape, self.dtype)
        self._loaded = np.zeros(grid, bool)
        self._dirty: dict[tuple[int, int], list[int]] = {}
        self._in_flight = 0
        self._first_change = 0.0
        self._lock = threading.Lock()  # guards _data, _loaded and _dirty
        self._saving = threading.Lock()  # one save at a time, in order
        self._wake = threading.Condition(self._lock)
        self._closed = False
        self._thread: threading.Thread | None = None
        with _OPEN_GUARD:
            _OPEN.setdefault(str(store.path), weakref.WeakSet()).add(self)

    # -- memory ------------------------------------------------------------------------

    def _chunks_of(self, box: Box) -> tuple[range, range]:
        """The window's chunk rows and columns that ``box`` (window pixels) meets."""
        y0, y1, x0, x1 = self._to_store(box)
        (cy, cx), (fy, fx) = self._chunk, self._first
        return (
            range(y0 // cy - fy, (y1 - 1) // cy - fy + 1),
            range(x0 // cx - fx, (x1 - 1) // cx - fx + 1),
        )

    def _chunk_box(self, i: int, j: int) -> Box:
        """Chunk ``(i, j)`` of the window, cut to the window, in window pixels."""
        (cy, cx), (fy, fx) = self._chunk, self._first
        top, bottom, left, right = self.region
        y0, x0 = max((fy + i) * cy, top), max((fx + j) * cx, left)
        y1, x1 = min((fy + i + 1) * cy, bottom), min((fx + j + 1) * cx, right)
        return y0 - top, y1 - top, x0 - left, x1 - left

    def _load(self, box: Box) -> None:
        """Read the not yet loaded chunks that ``box`` meets (with the lock held)."""
        if box[1] <= box[0] or box[3] <= box[2]:
            return
        rows, cols = self._chunks_of(box)
        missing = ~self._loaded[rows.start : rows.stop, cols.start : cols.stop]
        if not missing.any():
            return
        # One read of the missing chunks' bounding box: zarr decodes each chunk once.
        ii, jj = np.nonzero(missing)
        top = self._chunk_box(rows.start + int(ii.min()), cols.start + int(jj.min()))
        bottom = self._chunk_box(rows.start + int(ii.max()), cols.start + int(jj.max()))
        y0, y1, x0, x1 = top[0], bottom[1], top[2], bottom[3]
        a, b, c, d = self._to_store((y0, y1, x0, x1))
        fresh = read_region(self.store, 0, a, b, c, d)
        for i, j in zip(ii + rows.start, jj + cols.start, strict=True):
            a, b, c, d = self._chunk_box(int(i), int(j))
            self._data[a:b, c:d] = fresh[a - y0 : b - y0, c - x0 : d - x0]
            self._loaded[i, j] = True

    def _read(self, box: Box) -> np.ndarray:
        y0, y1, x0, x1 = box
        with self._lock:
            self._load(box)
            return self._data[y0:y1, x0:x1].copy()

    def __getitem__(self, key: Any) -> Any:
        box, local = self._parse(key)
        y0, y1, x0, x1 = box
        with self._lock:
            self._load(box)
            # Indexing a view of the box copies for integer arrays; copy slices too,
            # so a caller (napari's undo history) never holds a live view.
            return np.array(self._data[y0:y1, x0:x1][local], copy=True)

    def __setitem__(self, key: Any, value: Any) -> None:
        box, local = self._parse(key)
        y0, y1, x0, x1 = box
        if y1 <= y0 or x1 <= x0:
            return
        value = self._checked(value)
        with self._lock:
            if self._closed:
                raise InputError(f"{self!r} is closed: its edits were saved, open a new window")
            self._load(box)
            self._data[y0:y1, x0:x1][local] = value
            self._mark(box)

    def _checked(self, value: Any) -> Any:
        array = np.asarray(value)
        if array.dtype.kind == "b" or np.can_cast(array.dtype, self.dtype):
            return array
        if array.dtype.kind not in "iu":
            raise InputError(
                f"a mask holds whole numbers ({self.dtype}); got {array.dtype} values"
            )
        info = np.iinfo(self.dtype)
        if array.size and (array.min() < info.min or array.max() > info.max):
            raise InputError(f"values {array.min()}..{array.max()} do not fit a {self.dtype} mask")
        return array

    def _mark(self, box: Box) -> None:
        """Record ``box`` (window pixels) as changed, per chunk, and wake the saver."""
        rows, cols = self._chunks_of(box)
        for i in rows:
            for j in cols:
                a, b, c, d = self._chunk_box(i, j)
                part = [max(a, box[0]), min(b, box[1]), max(c, box[2]), min(d, box[3])]
                old = self._dirty.get((i, j))
                if old is not None:
                    part = [
                        min(old[0], part[0]),
                        max(old[1], part[1]),
                        min(old[2], part[2]),
                        max(old[3], part[3]),
                    ]
                self._dirty[(i, j)] = part
        if not self._first_change:
            self._first_change = time.monotonic()
        if self._thread is None:
            self._thread = threading.Thread(
                target=self._autosave, name=f"autosave {self.store.path.name}", daemon=True
            )
            self._thread.start()

    # -- saving ------------------------------------------------------------------------

    @property
    def pending(self) -> int:
        """How many changed boxes are not saved yet (waiting, or being written)."""
        with self._lock:
            return len(self._dirty) + self._in_flight

    def _autosave(self) -> None:
        """The saver: one thread per burst of changes, ending once all is saved, so
        an idle window holds no thread (and is freed with its layer)."""
        while True:
            with self._lock:
                if not self._dirty:
                    self._thread = None
                    return
                wait = self._first_change + self.delay - time.monotonic()
            if wait > 0:
                with self._lock:
                    self._wake.wait_for(lambda: self._closed, timeout=wait)
            try:
                self.flush()
            except Exception:  # kept pending by flush; try again after a pause
                time.sleep(self.delay)

    def flush(self) -> None:
        """Save every pending change to the store now (in the calling thread).

        Raises
        ------
        Exception
            What the store raised (the changes stay pending and are retried).
        """
        with self._saving:
            with self._lock:
                if not self._dirty:
                    return
                dirty, self._dirty = self._dirty, {}
                self._in_flight = len(dirty)
                self._first_change = 0.0
                blocks = [
                    (tuple(box), self._data[box[0] : box[1], box[2] : box[3]].copy())
                    for box in dirty.values()
                ]
            try:
                self.store.write_blocks(
                    [(self._to_store(box)[0], self._to_store(box)[2], b) for box, b in blocks],
                    edited=self.edited,
                )
            except Exception as exc:
                with self._lock:  # keep the changes: nothing a user did may be dropped
                    self._in_flight = 0
                    for key, box in dirty.items():
                        old = self._dirty.get(key, box)
                        self._dirty[key] = [
                            min(old[0], box[0]),
                            max(old[1], box[1]),
                            min(old[2], box[2]),
                            max(old[3], box[3]),
                        ]
                    self._first_change = self._first_change or time.monotonic()
                first = self.save_error is None
                self.save_error = exc
                if first and self.on_error is not None:
                    self.on_error(exc)
                raise
            self.save_error = None
            with self._lock:
                self._in_flight = 0
        if self.on_saved is not None:
            for box, _ in blocks:
                self.on_saved(self._to_store(box))

    def reload(self, box: Box) -> None:
        """Save pending edits, then re-read ``box`` (store pixels) from the store."""
        top, bottom, left, right = self.region
        y0, y1 = max(box[0], top) - top, min(box[1], bottom) - top
        x0, x1 = max(box[2], left) - left, min(box[3], right) - left
        if y1 <= y0 or x1 <= x0:
            return
        with self._lock:
            rows, cols = self._chunks_of((y0, y1, x0, x1))
            if not self._loaded[rows.start : rows.stop, cols.start : cols.stop].any():
                return  # read from the store when first needed anyway
        self.flush()
        a, b, c, d = self._to_store((y0, y1, x0, x1))
        fresh = read_region(self.store, 0, a, b, c, d)
        with self._lock:
            # A stroke made since the flush stays: keep its boxes as they are in memory.
            kept = [
                (box, self._data[box[0] : box[1], box[2] : box[3]].copy())
                for box in self._dirty.values()
            ]
            self._data[y0:y1, x0:x1] = fresh
            for box, pixels in kept:
                self._data[box[0] : box[1], box[2] : box[3]] = pixels

    def close(self) -> None:
        """Save what is pending and stop the autosave thread (reads still work)."""
        with self._lock:
            self._closed = True
            self._wake.notify()
        self.flush()
        thread = self._thread
        if thread is not None and thread is not threading.current_thread():
            thread.join(timeout=10)
        with _OPEN_GUARD:
            group = _OPEN.get(str(self.store.path))
            if group is not None:
                group.discard(self)

    @property
    def closed(self) -> bool:
        """Whether :meth:`close` was called."""
        return self._closed
