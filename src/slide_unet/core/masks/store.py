"""The mask of one slide in a chunked zarr store that is also its autosave.

Segmentation streams into the store and hand edits are written into it as
they happen, so nothing a user painted is only ever in memory. The store lives
in a per-user data folder (``platformdirs.user_data_dir("napari-slide-unet")/
masks``, or the folder named by ``$SLIDE_UNET_MASKS_DIR``), named after the
slide's file and a short hash of its resolved path, size and image shape: the
same slide opened again finds its mask, another file of the same name does not.
An image with no file (a napari layer) uses a key string instead.

Layout (zarr format 3)
    Arrays ``"0"``, ``"1"``, ...: level 0 is the full-resolution mask, level
    k+1 the 2x2 **maximum** of level k (:func:`~slide_unet.core.masks.pyramids.
    halve_max`: objects never vanish when zoomed out), halving until the
    largest side is at most
    :data:`~slide_unet.core.masks.store_layout.SMALLEST_SIDE`. Chunks are 1024 x 1024 at
    full resolution (a 2048-pixel block of the engine writes 4, not 16: 40 %
    faster) and 512 x 512 in the overviews, Blosc zstd with bit-shuffle;
    chunks without foreground are not stored.
    The group's attributes hold ``slide_unet`` (format version, slide path or
    key, shape, dtype, pixel size, created and modified times, whether a
    person edited it, a description of its source, regions segmented) and
    ``ome`` (NGFF 0.5 multiscales of a label image), so OME-Zarr readers and
    :func:`slide_unet.core.masks.io.read_mask` open it too.
    Array ``probability`` (made by the first segmentation that writes one,
    :meth:`MaskStore.write_probability`): the model's foreground probability
    at full resolution as uint8 ``round(p * 255)``, level 0's shape and
    chunks, 0 where unknown; no overviews. About 1 byte a segmented pixel
    before compression (see the README for the sample's size). Damaged
    chunks of it are not salvaged (as the mask's are): a read that fails
    raises.

Writes go to level 0 and then rebuild the overview levels of the written
region only. A lock per store folder (shared by every :class:`MaskStore` of
that folder in the process) serialises writes, so a worker thread can write
while the viewer reads: zarr replaces each chunk file atomically, so a reader
sees a chunk before or after a write, never half of it.

A new store is built under a temporary name and renamed into place, so a
store that exists is complete. A store whose attributes cannot be read is
*damaged*: opening it raises :class:`MaskStoreError`, except that
``create=True`` moves it aside (``<name>.damaged-<time>``, never deleted: it
may hold hand edits worth rescuing) with a :class:`MaskStoreWarning` and
starts a new one.

This module is part of the napari-free core: it never imports napari, Qt or
magicgui.
"""

from __future__ import annotations

import contextlib
import glob
import hashlib
import json
import os
import re
import shutil
import threading
import time
import uuid
import warnings
from collections.abc import Iterator, Sequence
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import dask.array as da
import filelock
import numpy as np
import zarr

from slide_unet.core.atomic import clean_stale_temporaries, temporary_name
from slide_unet.core.errors import MaskStoreError, MaskStoreWarning, StoreBusyError
from slide_unet.core.masks import store_layout as layout
from slide_unet.core.masks.bounds import check_shape
from slide_unet.core.masks.ledger import Ledger
from slide_unet.core.masks.overviews import rebuild, rebuild_stale
from slide_unet.core.paths import masks_dir

__all__ = [
    "KEEP_BACKUPS",
    "MaskStore",
]

#: Overviews are rebuilt in tiles of at most this many pixels a side (even,
#: and a multiple of the chunk side), so a big region never sits in memory whole.
REBUILD_TILE = 4096
#: Backups of a store kept beside it (see :meth:`MaskStore.backup`).
KEEP_BACKUPS = 3

_LOCKS: dict[str, threading.RLock] = {}
_LOCKS_GUARD = threading.Lock()
#: How long a writer waits for another process's write or run to end (s).
BUSY_WAIT_SECONDS = 2.0
#: One cross-process lock per store and process, shared by its threads: the
#: store's threads already take turns on its RLock; this keeps other processes out.
_FILE_LOCKS: dict[str, filelock.FileLock] = {}
_OWNING = threading.Lock()  # taking a file lock and recording its owner, together
#: Regions whose coarser overviews wait for a deferred rebuild, by store:
#: ``(level, y0, y1, x0, x1)``, up to date at ``level``.
_STALE: dict[str, list[Any]] = {}
#: Deferred overviews (``write(defer=True)``) are rebuilt at most this often (s).
DEFER_SECONDS = 1.0


def _safe_name(text: str) -> str:
    """A readable folder-name prefix made of portable characters."""
    return re.sub(r"[^A-Za-z0-9._-]+", "_", text).strip("._-")[:64] or "mask"


def _digest(*parts: object) -> str:
    return hashlib.sha256("\0".join(map(str, parts)).encode()).hexdigest()[:12]


def _slide_folder(path: str | os.PathLike[str], shape: tuple[int, int]) -> Path:
    path = Path(path).resolve()
    size = path.stat().st_size
    return masks_dir() / f"{_safe_name(path.stem)}-{_digest(path, size, *shape)}.zarr"


def _key_folder(key: str, shape: tuple[int, int]) -> Path:
    if not key:
        raise MaskStoreError("a mask store key must be a non-empty string")
    return masks_dir() / f"{_safe_name(key)}-{_digest('key', key, *shape)}.zarr"


def _file_lock_for(path: Path) -> filelock.FileLock:
    key = str(path.resolve())
    with _LOCKS_GUARD:
        lock = _FILE_LOCKS.get(key)
        if lock is None:
            lock = _FILE_LOCKS[key] = filelock.FileLock(f"{key}.lock", thread_local=False)
        return lock


def _owner_file(path: Path) -> Path:
    return path.with_name(f"{path.name}.owner")


def _describe_owner(path: Path) -> tuple[str, int | None]:
    """Who holds a store for writing, in words, and their process id."""
    try:
        owner = json.loads(_owner_file(path).read_text())
        pid = int(owner["pid"])
        return f"process {pid} ({owner['what']} since {owner['since']})", pid
    except (OSError, ValueError, KeyError, TypeError):
        return "another process", None


def _lock_for(path: Path) -> threading.RLock:
    with _LOCKS_GUARD:
        return _LOCKS.setdefault(str(path.resolve()), threading.RLock())


class MaskStore:
    """One slide's mask: full resolution plus 2x2-maximum overview levels.

    Open one with :meth:`for_slide`, :meth:`for_key` or :meth:`existing`, or
    ``MaskStore(folder)`` for a store folder at hand.

    Parameters
    ----------
    path : str or os.PathLike
        The store's folder.

    Raises
    ------
    FileNotFoundError
        No store at `path`.
    MaskStoreError
        The store is damaged or of another format version.
    """

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = Path(path)
        if not self.path.is_dir():
            raise FileNotFoundError(f"{self.path}: no mask store here")
        problem = layout.store_problem(self.path)
        if problem is not None:
            raise MaskStoreError(f"{self.path}: damaged mask store: {problem}")
        self._lock = _lock_for(self.path)
        group = zarr.open_group(self.path, mode="r+", zarr_format=3)
        info = group.attrs[layout.ATTRS]
        self.shape: tuple[int, int] = (int(info["shape"][0]), int(info["shape"][1]))
        self.dtype = np.dtype(info["dtype"])
        #: The levels as writable zarr arrays, full resolution first.
        self.levels: list[Any] = [group[str(k)] for k in range(int(info["levels"]))]
        self._rebuilt = time.monotonic()
        if info.get("stale") and not _STALE.get(str(self.path.resolve())):
            # Deferred overviews that a process which died never rebuilt (unless
            # another process is writing them now).
            with (
                contextlib.suppress(StoreBusyError),
                self.writing("rebuilding overviews", wait=0),
            ):
                self.flush_overviews()

    # -- finding and creating ------------------------------------------------------------

    @classmethod
    def for_slide(
        cls,
        path: str | os.PathLike[str],
        shape: tuple[int, int],
        mpp: float | None = None,
        *,
        dtype: np.dtype | type = np.uint8,
        chunk: int | None = None,
        source: str | None = None,
        create: bool = True,
    ) -> MaskStore:
        """The store of a slide file, created empty if there is none.

        Parameters
        ----------
        path : str or os.PathLike
            The slide file (it must exist: its size is part of the key).
        shape : tuple of int
            ``(height, width)`` of the slide's full resolution.
        mpp : float, optional
            Microns per pixel, recorded when the store is created.
        dtype : numpy dtype
            Pixel type of a new store (``uint8`` for 0/1 masks).
        chunk : int, optional
            Chunk side of a new store's level 0 (default twice
            :data:`~slide_unet.core.masks.store_layout.CHUNK_SIDE`).
        source : str, optional
            What a new store's mask comes from, e.g. ``"segment glomeruli"``.
        create : bool
            Create a missing store, and move a damaged one aside (with a
            :class:`MaskStoreWarning`) to start anew. False: raise instead.

        Raises
        ------
        FileNotFoundError
            The slide file is missing, or (``create=False``) it has no store.
        MaskStoreError
            The store holds another pixel type, or (``create=False``) it is damaged.
        """
        shape = check_shape(shape, error=MaskStoreError)
        folder = _slide_folder(path, shape)
        return cls._open(
            folder, shape, mpp, dtype, chunk, str(Path(path).resolve()), None, source, create
        )

    @classmethod
    def for_key(
        cls,
        key: str,
        shape: tuple[int, int],
        mpp: float | None = None,
        *,
        dtype: np.dtype | type = np.uint8,
        chunk: int | None = None,
        source: str | None = None,
        create: bool = True,
    ) -> MaskStore:
        """The store of an image with no file, named by the caller's ``key``.

        Parameters and errors are those of :meth:`for_slide`; the key and the
        shape together name the store.
        """
        shape = check_shape(shape, error=MaskStoreError)
        folder = _key_folder(key, shape)
        return cls._open(folder, shape, mpp, dtype, chunk, None, key, source, create)

    @classmethod
    def existing(
        cls, path: str | os.PathLike[str], shape: tuple[int, int], mpp: float | None = None
    ) -> MaskStore | None:
        """The store of a slide file if there is one, else None; creates no store.

        Use it when a slide is opened, to offer its saved mask back
        (:attr:`edited` tells whether a person edited it). A store whose
        metadata is lost but whose chunks are there is repaired (see
        :meth:`for_slide`), with a :class:`MaskStoreWarning`.

        Raises
        ------
        FileNotFoundError
            The slide file is missing.
        MaskStoreError
            The slide's store is damaged beyond repair.
        """
        shape = check_shape(shape, error=MaskStoreError)
        folder = _slide_folder(path, shape)
        if not folder.is_dir():
            return None
        if layout.store_problem(folder) is not None:
            from slide_unet.core.masks.salvage import rebuild_metadata

            rebuild_metadata(
                folder, shape, mpp, np.dtype(np.uint8), str(Path(path).resolve()), None
            )
        return cls(folder)

    @classmethod
    def existing_for_key(cls, key: str, shape: tuple[int, int]) -> MaskStore | None:
        """Like :meth:`existing`, for a store made by :meth:`for_key`."""
        folder = _key_folder(key, check_shape(shape, error=MaskStoreError))
        return cls(folder) if folder.is_dir() else None

    @classmethod
    def _open(
        cls,
        folder: Path,
        shape: tuple[int, int],
        mpp: float | None,
        dtype: np.dtype | type,
        chunk: int | None,
        slide: str | None,
        key: str | None,
        source: str | None,
        create: bool,
    ) -> MaskStore:
        dtype = np.dtype(dtype)
        if dtype.kind not in "biu":
            raise MaskStoreError(f"a mask store holds integer labels, not {dtype}")
        chunk = 2 * layout.CHUNK_SIDE if chunk is None else chunk
        if int(chunk) != chunk or chunk < 16:
            raise MaskStoreError(f"chunk must be a whole number >= 16, got {chunk}")
        with _lock_for(folder):
            if folder.is_dir() and create and layout.store_problem(folder) is not None:
                with contextlib.suppress(MaskStoreError):  # then moved aside, below
                    from slide_unet.core.masks.salvage import rebuild_metadata

                    rebuild_metadata(folder, shape, mpp, dtype, slide, key)
            if folder.is_dir() and create and layout.store_problem(folder) is not None:
                aside = folder.with_name(f"{folder.name}.damaged-{uuid.uuid4().hex[:8]}")
                warnings.warn(
                    f"{folder}: damaged mask store ({layout.store_problem(folder)}); moved to "
                    f"{aside.name} and started a new one",
                    MaskStoreWarning,
                    stacklevel=3,
                )
                os.replace(folder, aside)
            if not folder.is_dir():
                if not create:
                    raise FileNotFoundError(f"{folder}: no mask store for this image")
                cls._create(folder, shape, mpp, dtype, int(chunk), slide, key, source)
            store = cls(folder)
        if store.dtype != dtype:
            raise MaskStoreError(
                f"{folder}: the mask store holds {store.dtype} pixels, {dtype} were asked for"
            )
        return store

    @staticmethod
    def _create(
        folder: Path,
        shape: tuple[int, int],
        mpp: float | None,
        dtype: np.dtype,
        chunk: int,
        slide: str | None,
        key: str | None,
        source: str | None,
    ) -> None:
        # Built under a hidden temporary name and renamed: a crash leaves no
        # half-made store under the real name. (atomic.atomic_path would
        # replace a store another process made meanwhile; a rename onto an
        # existing folder fails instead, and we keep theirs.)
        folder.parent.mkdir(parents=True, exist_ok=True)
        clean_stale_temporaries(folder.parent)
        tmp = folder.with_name(temporary_name(folder.name))
        try:
            layout.build_store(tmp, shape, mpp, dtype, chunk, slide, key, source)
            try:
                os.rename(tmp, folder)
            except OSError:
                if layout.store_problem(folder) is not None:
                    raise
        finally:
            shutil.rmtree(tmp, ignore_errors=True)

    # -- attributes ------------------------------------------------------------------------

    @property
    def info(self) -> dict[str, Any]:
        """The store's ``slide_unet`` attributes, read afresh from disk."""
        return dict(zarr.open_group(self.path, mode="r", zarr_format=3).attrs[layout.ATTRS])

    def _update_info(self, **changes: Any) -> None:
        with self.writing(), self._lock:
            group = zarr.open_group(self.path, mode="r+", zarr_format=3)
            group.attrs[layout.ATTRS] = {**group.attrs[layout.ATTRS], **changes}

    @contextlib.contextmanager
    def writing(self, what: str = "writing", *, wait: float | None = None) -> Iterator[None]:
        """Hold the store for writing, against other processes, while the block runs.

        Every write takes it for its own length; a long job (a segmentation)
        takes it for its whole length, so that no other process mixes its
        writes in. It is re-entrant and shared by the threads of this process
        (they take turns on the store's own lock). Readers never take it.
        A process that dies releases it (the operating system's file lock).

        Parameters
        ----------
        what : str
            What this process is doing, for the message another one gets.
        wait : float, optional
            Seconds to wait for another process to finish (default
            :data:`BUSY_WAIT_SECONDS`).

        Raises
        ------
        StoreBusyError
            Another process still held it after ``wait``: the message names it.
        """
        lock = _file_lock_for(self.path)
        try:
            with _OWNING:
                lock.acquire(timeout=BUSY_WAIT_SECONDS if wait is None else wait)
                if lock.lock_counter == 1:
                    _owner_file(self.path).write_text(
                        json.dumps({"pid": os.getpid(), "what": what, "since": layout.now()})
                    )
        except filelock.Timeout:
            holder, pid = _describe_owner(self.path)
            raise StoreBusyError(
                f"The mask is in use by {holder}; try again when it is done (store "
                f"{self.path.name})",
                pid,
            ) from None
        try:
            yield
        finally:
            with _OWNING:
                if lock.lock_counter == 1:
                    with contextlib.suppress(OSError):
                        _owner_file(self.path).unlink()
                lock.release()

    @property
    def level0(self) -> Any:
        """The full-resolution level (a writable zarr array)."""
        return self.levels[0]

    @property
    def mpp(self) -> float | None:
        """Microns per pixel at full resolution, if known."""
        return self.info["mpp"]

    @property
    def slide(self) -> str | None:
        """Resolved path of the slide file (None for a store made by key)."""
        return self.info["slide"]

    @property
    def edited(self) -> bool:
        """True once a hand edit has been written (until :meth:`clear`)."""
        return bool(self.info["edited"])

    @property
    def source(self) -> str | None:
        """What the mask comes from, e.g. ``"segment glomeruli"``."""
        return self.info["source"]

    @property
    def created(self) -> datetime:
        """When the store was created (UTC)."""
        return datetime.fromisoformat(self.info["created"])

    @property
    def modified(self) -> datetime:
        """When the mask was last written (UTC)."""
        return datetime.fromisoformat(self.info["modified"])

    @property
    def ledger(self) -> Ledger:
        """Which cells hold which result and which a person edited (see
        :mod:`slide_unet.core.masks.ledger`)."""
        return Ledger(self.path, self.shape)

    @property
    def regions(self) -> list[tuple[int, int, int, int]]:
        """Regions recorded by :meth:`add_region`, as ``(y0, y1, x0, x1)``."""
        return [tuple(r) for r in self.info["regions"]]  # type: ignore[misc]

    def touch(self, edited: bool = True, *, source: str | None = None) -> None:
        """Record that the mask changed now; mark it edited by hand if `edited`.

        Parameters
        ----------
        edited : bool
            Set the ``edited`` flag (it is never unset, except by :meth:`clear`).
        source : str, optional
            New description of what the mask comes from.
        """
        changes: dict[str, Any] = {"modified": layout.now()}
        if edited:
            changes["edited"] = True
        if source is not None:
            changes["source"] = source
        self._update_info(**changes)

    def add_region(self, y0: int, y1: int, x0: int, x1: int) -> None:
        """Record a full-resolution region as segmented (e.g. one run of segment)."""
        with self.writing(), self._lock:
            regions = [*self.info["regions"], [int(y0), int(y1), int(x0), int(x1)]]
            self._update_info(regions=regions)

    # -- probabilities ---------------------------------------------------------------------

    @property
    def probability(self) -> Any:
        """The model's probabilities at full resolution (a uint8 zarr array,
        ``round(p * 255)``, 0 where unknown), or None until a segmentation wrote
        some (and after :meth:`clear`)."""
        folder = self.path / layout.PROBABILITY
        if not (folder / "zarr.json").is_file():
            return None
        return zarr.open_array(folder, mode="r+", zarr_format=3)

    def write_probability(self, y0: int, x0: int, block: Any) -> None:
        """Write a block of uint8 probabilities (``round(p * 255)``) at ``(y0, x0)``,
        creating the ``probability`` array on first use.

        Raises
        ------
        MaskStoreError
            The block is not 2-D uint8, or does not fit inside the mask.
        """
        block = np.asarray(block)
        if block.ndim != 2 or block.dtype != np.uint8:
            raise MaskStoreError(
                f"probabilities are a 2-D uint8 block (round(p * 255)), got {block.dtype} "
                f"of shape {block.shape}"
            )
        y0, x0 = int(y0), int(x0)
        y1, x1 = y0 + block.shape[0], x0 + block.shape[1]
        if y0 < 0 or x0 < 0 or y1 > self.shape[0] or x1 > self.shape[1]:
            raise MaskStoreError(
                f"a block of shape {block.shape} at ({y0}, {x0}) does not fit in the "
                f"mask of shape {self.shape}"
            )
        with self.writing(), self._lock:
            array = self.probability
            if array is None:
                chunks = tuple(int(c) for c in self.level0.chunks)
                layout.build_probability(self.path, self.shape, chunks)  # type: ignore[arg-type]
                array = self.probability
            array[y0:y1, x0:x1] = block

    # -- pixels ----------------------------------------------------------------------------

    def write(
        self, y0: int, x0: int, block: Any, *, edited: bool = False, defer: bool = False
    ) -> None:
        """Write a full-resolution block and rebuild the overviews of its region.

        Parameters
        ----------
        y0, x0 : int
            Top-left pixel of the block in the full-resolution mask.
        block : array-like
            2-D block; it must lie inside the mask, and its values fit the
            store's pixel type.
        edited : bool
            The block is a hand edit: set the ``edited`` flag.
        defer : bool
            Rebuild the overviews below the first at most every
            :data:`DEFER_SECONDS` (and at :meth:`flush_overviews`), each
            overview chunk once for every block landed meanwhile, instead of at
            once: for a stream of blocks, such as the segmentation engine's,
            whose blocks share the chunks of the coarse levels. The regions
            waiting are recorded in the store's attributes and rebuilt when it
            is next opened, should the process die first.

        Raises
        ------
        ValueError
            The block is not 2-D, does not fit inside the mask, or holds values
            the store's pixel type cannot.
        """
        self.write_blocks([(y0, x0, block)], edited=edited, defer=defer)

    def write_blocks(
        self,
        blocks: Sequence[tuple[int, int, Any]],
        *,
        edited: bool = False,
        defer: bool = False,
    ) -> None:
        """Write several full-resolution blocks, then the overviews of each, then
        the store's modified time once (the autosave of a burst of strokes).

        Parameters
        ----------
        blocks : sequence of (y0, x0, block)
            As for :meth:`write`; all are checked before any is written.
        edited : bool
            The blocks are hand edits: set the ``edited`` flag.
        defer : bool
            As for :meth:`write`.

        Raises
        ------
        ValueError
            As :meth:`write`.
        """
        checked = []
        for y0, x0, block in blocks:
            block = np.asarray(block)
            if block.ndim != 2:
                raise MaskStoreError(f"a mask block is 2-D, got shape {block.shape}")
            y0, x0 = int(y0), int(x0)
            y1, x1 = y0 + block.shape[0], x0 + block.shape[1]
            if y0 < 0 or x0 < 0 or y1 > self.shape[0] or x1 > self.shape[1]:
                raise MaskStoreError(
                    f"a block of shape {block.shape} at ({y0}, {x0}) does not fit in the "
                    f"mask of shape {self.shape}"
                )
            checked.append((y0, y1, x0, x1, self._as_dtype(block)))
        with self.writing(), self._lock:
            stale = _STALE.setdefault(str(self.path.resolve()), [])
            for y0, y1, x0, x1, block in checked:
                self._write_level0(y0, y1, x0, x1, block)
                if defer:
                    # Halved in memory while that writes whole chunks; the coarser
                    # levels, whose chunks several blocks share, wait.
                    level, box = self._rebuild_overviews(y0, y1, x0, x1, block, whole_chunks=True)
                    if level + 1 < len(self.levels):
                        stale.append((level, *box))
                else:
                    self._rebuild_overviews(y0, y1, x0, x1, block)
            if stale and (not defer or time.monotonic() - self._rebuilt >= DEFER_SECONDS):
                self._rebuild_stale(stale)
            changes: dict[str, Any] = {"modified": layout.now(), "stale": list(stale)}
            if edited:
                changes["edited"] = True
                self.ledger.mark_edited((y0, y1, x0, x1) for y0, y1, x0, x1, _ in checked)
            self._update_info(**changes)

    def _write_level0(self, y0: int, y1: int, x0: int, x1: int, block: np.ndarray) -> None:
        try:
            self.level0[y0:y1, x0:x1] = block
        except Exception:
            from slide_unet.core.masks.salvage import read_region

            read_region(self, 0, y0, y1, x0, x1)  # sets the damaged chunks aside, says so
            self.level0[y0:y1, x0:x1] = block

    def flush_overviews(self) -> None:
        """Rebuild the overviews that deferred writes left waiting (see :meth:`write`)."""
        with self.writing(), self._lock:
            stale = _STALE.setdefault(str(self.path.resolve()), [])
            if stale or self.info.get("stale"):
                stale.extend(tuple(entry) for entry in self.info.get("stale", []))
                self._rebuild_stale(stale)
                self._update_info(stale=[])

    def _as_dtype(self, block: np.ndarray) -> np.ndarray:
        if np.can_cast(block.dtype, self.dtype):
            return block.astype(self.dtype, copy=False)
        if block.dtype.kind not in "iu":
            raise MaskStoreError(
                f"a mask store holds whole numbers ({self.dtype}); got a {block.dtype} "
                "block: threshold or round it first"
            )
        info = np.iinfo(self.dtype)
        if block.size and (block.min() < info.min or block.max() > info.max):
            raise MaskStoreError(
                f"a {block.dtype} block with values {block.min()}..{block.max()} does "
                f"not fit a {self.dtype} mask store"
            )
        return block.astype(self.dtype)

    def update_overviews(
        self, y0: int, y1: int, x0: int, x1: int, *, edited: bool = False
    ) -> None:
        """Rebuild the overview levels over a full-resolution region.

        For pixels written straight into :attr:`level0` (napari painting into
        the array, or the segmentation engine). The region is clipped to the
        mask; each level's is widened to even bounds so every 2x2 block is
        taken whole. Also records the change time, and `edited` as in
        :meth:`touch`.
        """
        with self.writing(), self._lock:
            self._rebuild_overviews(y0, y1, x0, x1)
            self.touch(edited)

    def _rebuild_stale(self, stale: list[Any]) -> None:
        """Rebuild what deferred writes left waiting (``stale`` is emptied)."""
        rebuild_stale(self.levels, stale, chunk=layout.CHUNK_SIDE, tile=REBUILD_TILE)
        self._rebuilt = time.monotonic()

    def _rebuild_overviews(
        self,
        y0: int,
        y1: int,
        x0: int,
        x1: int,
        block: np.ndarray | None = None,
        *,
        whole_chunks: bool = False,
    ) -> tuple[int, tuple[int, int, int, int]]:
        """:func:`~slide_unet.core.masks.overviews.rebuild` over this store's levels."""
        return rebuild(
            self.levels, y0, y1, x0, x1, block, whole_chunks=whole_chunks, tile=REBUILD_TILE
        )

    def dask_levels(self) -> list[da.Array]:
        """The levels as dask arrays (full resolution first), e.g. for a
        multiscale napari Labels layer.

        Each call gives arrays with new dask names, so no cache keyed by task
        (napari keeps one) serves chunks read before a write: call again to refresh.
        """
        group = zarr.open_group(self.path, mode="r", zarr_format=3)
        token = uuid.uuid4().hex[:8]
        return [
            da.from_zarr(group[str(k)], name=f"slide-unet-mask-{k}-{token}", inline_array=True)
            for k in range(len(self.levels))
        ]

    def clear(self) -> None:
        """Erase the mask (every level all zeros), keeping the store.

        The stored chunks are deleted, which is instant whatever the slide's
        size, and the probabilities with them (:attr:`probability` is None
        again). The ``edited`` flag, source and regions are reset: nothing in
        the store is a person's work any more.
        """
        with self.writing(), self._lock:
            for k in range(len(self.levels)):
                shutil.rmtree(self.path / str(k) / "c", ignore_errors=True)
            shutil.rmtree(self.path / layout.PROBABILITY, ignore_errors=True)
            _STALE.pop(str(self.path.resolve()), None)
            self.ledger.clear()
            self._update_info(
                modified=layout.now(), edited=False, source=None, regions=[], stale=[]
            )

    def backup(self, keep: int = KEEP_BACKUPS) -> Path:
        """Copy the store aside, beside it, before something writes over hand edits.

        Parameters
        ----------
        keep : int
            How many backups of this store to keep, the newest: older ones are
            deleted once the new one is complete (a whole-slide store can take
            hundreds of MB a copy).

        Returns
        -------
        pathlib.Path
            The copy: ``<store>.backup-<UTC time>``, a complete store that
            :class:`MaskStore` opens (and ``read_mask`` reads).
        """
        if keep < 1:
            raise MaskStoreError(f"keep at least 1 backup, got {keep}")
        stamp = datetime.now(timezone.utc).strftime("%Y%m%dT%H%M%S%fZ")
        target = self.path.with_name(f"{self.path.name}.backup-{stamp}")
        tmp = self.path.with_name(f".{target.name}.tmp")
        with self.writing(), self._lock:
            shutil.copytree(self.path, tmp)
            tmp.rename(target)
            for old in self.backups()[:-keep]:
                shutil.rmtree(old, ignore_errors=True)
        return target

    def backups(self) -> list[Path]:
        """This store's backups (see :meth:`backup`), oldest first."""
        # The UTC stamps sort as text in time order.
        return sorted(self.path.parent.glob(f"{glob.escape(self.path.name)}.backup-*"))

    def delete(self) -> None:
        """Remove the store from disk; this object is unusable afterwards."""
        with self.writing(), self._lock:
            shutil.rmtree(self.path, ignore_errors=True)

    def __repr__(self) -> str:
        return f"MaskStore({str(self.path)!r}, shape={self.shape}, dtype={self.dtype.name})"
