"""Recovering what a damaged mask store still holds, never silently.

A mask store is a folder of small chunk files; a disk error, a sync tool or a
person can damage one of them, delete one, or delete the store's metadata. A
store is a user's hand edits, so whatever is intact must come back and whatever
is lost must be said:

- :func:`read_region` reads a region of a level chunk by chunk when a plain
  read fails: a damaged chunk (one that does not decode) reads as 0, its file
  is moved into the ``<store>.damaged`` folder beside the store (bytes kept,
  so a later write there works), and a :class:`MaskStoreWarning` names it;
- :func:`salvage` checks every stored chunk the same way at once, and finds
  full-resolution chunks that were deleted (an overview still shows a mask
  where the full resolution has none: zarr does not store empty chunks, so a
  deleted chunk is otherwise invisible);
- :func:`rebuild_metadata` writes back the metadata (the ``zarr.json``
  files) of a store whose chunks are there; :meth:`MaskStore.existing` and
  :meth:`MaskStore.for_slide` call it rather than start empty.

:class:`TolerantLevel` wraps a level for a viewer: reads never fail.

This module is part of the napari-free core.
"""

from __future__ import annotations

import math
import shutil
import threading
import warnings
from datetime import datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import zarr

from slide_unet.core import ngff
from slide_unet.core.atomic import temporary_name
from slide_unet.core.errors import MaskStoreError
from slide_unet.core.masks import store_layout as layout

if TYPE_CHECKING:
    from slide_unet.core.masks.store import MaskStore

__all__ = [
    "TolerantLevel",
    "damaged_folder",
    "read_region",
    "rebuild_metadata",
    "salvage",
]

_REPORTED: set[tuple[str, int, tuple[int, int]]] = set()
_GUARD = threading.Lock()


def damaged_folder(store: MaskStore) -> Path:
    """Where the damaged chunks of ``store`` are kept: ``<store>.damaged``."""
    return store.path.with_name(f"{store.path.name}.damaged")


def _chunk_file(store: MaskStore, level: int, index: tuple[int, int]) -> Path:
    return store.path / str(level) / "c" / str(index[0]) / str(index[1])


def _set_aside(store: MaskStore, level: int, index: tuple[int, int]) -> Path | None:
    """Move a chunk file into the store's ``.damaged`` folder; return where it went."""
    source = _chunk_file(store, level, index)
    if not source.is_file():
        return None
    target = damaged_folder(store) / str(level) / "c" / str(index[0]) / str(index[1])
    target.parent.mkdir(parents=True, exist_ok=True)
    shutil.move(source, target)
    return target


def _warn(store: MaskStore, found: list[str]) -> None:
    from slide_unet.core.errors import MaskStoreWarning

    # What happened first: a notification shows its first words.
    warnings.warn(
        f"Part of a saved mask is damaged: {'; '.join(found)}. The intact chunks are shown; "
        f"the damaged ones are kept in {damaged_folder(store)}",
        MaskStoreWarning,
        stacklevel=3,
    )


def _chunk_side(level: Any) -> tuple[int, int]:
    return int(level.chunks[0]), int(level.chunks[1])


def read_region(store: MaskStore, k: int, y0: int, y1: int, x0: int, x1: int) -> np.ndarray:
    """Level ``k``'s pixels over a region; a chunk that does not decode reads as 0.

    Such a chunk is moved into :func:`damaged_folder` and named in one warning.
    """
    level = store.levels[k]
    try:
        return np.asarray(level[y0:y1, x0:x1])
    except Exception:
        pass
    out = np.zeros((y1 - y0, x1 - x0), dtype=level.dtype)
    cy, cx = _chunk_side(level)
    found = []
    for i in range(y0 // cy, -(-y1 // cy)):
        for j in range(x0 // cx, -(-x1 // cx)):
            a, b = max(i * cy, y0), min((i + 1) * cy, y1)
            c, d = max(j * cx, x0), min((j + 1) * cx, x1)
            try:
                out[a - y0 : b - y0, c - x0 : d - x0] = level[a:b, c:d]
            except Exception as error:
                found += _damaged(store, k, (i, j), error)
    if found:
        _warn(store, found)
    return out


def _damaged(store: MaskStore, k: int, index: tuple[int, int], error: Exception) -> list[str]:
    """Set a chunk aside once; the words for the warning (none when said before)."""
    with _GUARD:
        seen = (str(store.path), k, index) in _REPORTED
        _REPORTED.add((str(store.path), k, index))
        _set_aside(store, k, index)
    if seen:
        return []
    where = f"chunk {index[0]}/{index[1]} of level {k}"
    return [f"{where} does not decode ({error}) and reads as empty"]


def salvage(store: MaskStore) -> list[str]:
    """Check every stored chunk of ``store``; set the damaged ones aside.

    Returns
    -------
    list of str
        What was found, in words (empty when the store is whole); the same is
        said in one :class:`MaskStoreWarning`.
    """
    found: list[str] = []
    for k, level in enumerate(store.levels):
        cy, cx = _chunk_side(level)
        height, width = level.shape
        for index in _stored_chunks(store, k):
            i, j = index
            try:
                level[i * cy : min((i + 1) * cy, height), j * cx : min((j + 1) * cx, width)]
            except Exception as error:
                found += _damaged(store, k, index, error)
    found += _missing(store)
    if found:
        _warn(store, found)
    return found


def _stored_chunks(store: MaskStore, k: int) -> list[tuple[int, int]]:
    return _chunks_under(store.path / str(k) / "c")


def _chunks_under(root: Path) -> list[tuple[int, int]]:
    """The (row, column) chunk indices stored under a level's ``c`` folder."""
    chunks = []
    if root.is_dir():
        for row in root.iterdir():
            if row.is_dir() and row.name.isdigit():
                chunks += [(int(row.name), int(f.name)) for f in row.iterdir() if f.name.isdigit()]
    return chunks


def _missing(store: MaskStore) -> list[str]:
    """Full-resolution chunks that an overview says held a mask, but are gone.

    Empty chunks are not stored, so a stored level-1 chunk means foreground
    somewhere under it: at least one level-0 chunk there must be stored (or
    have been set aside as damaged, which is said already).
    """
    if len(store.levels) < 2 or store.info.get("stale"):
        return []  # overviews waiting for a rebuild do not yet say what level 0 holds
    (cy0, cx0), (cy1, cx1) = _chunk_side(store.levels[0]), _chunk_side(store.levels[1])
    stored = set(_stored_chunks(store, 0)) | set(_chunks_under(damaged_folder(store) / "0" / "c"))
    lost = []
    for i, j in _stored_chunks(store, 1):
        rows = range(2 * i * cy1 // cy0, -(-2 * (i + 1) * cy1 // cy0))
        cols = range(2 * j * cx1 // cx0, -(-2 * (j + 1) * cx1 // cx0))
        under = [(r, c) for r in rows for c in cols]
        if (
            not any(chunk in stored for chunk in under)
            and np.asarray(store.levels[1][i * cy1 : (i + 1) * cy1, j * cx1 : (j + 1) * cx1]).any()
        ):
            y0, x0 = 2 * i * cy1, 2 * j * cx1
            lost.append(
                f"the full-resolution chunks at ({y0}, {x0}) are missing though the overview "
                "shows a mask there: it was lost"
            )
    return lost


class TolerantLevel:
    """A store level as an array-like whose reads never fail (see :func:`read_region`).

    For a viewer: one damaged chunk must not hide every intact one.
    """

    def __init__(self, store: MaskStore, k: int) -> None:
        self.store = store
        self.k = k
        level = store.levels[k]
        self.shape = tuple(int(n) for n in level.shape)
        self.dtype = level.dtype
        self.ndim = 2
        self.size = self.shape[0] * self.shape[1]
        self.chunks = level.chunks

    def __len__(self) -> int:
        return self.shape[0]

    def __getitem__(self, key: Any) -> np.ndarray:
        if not isinstance(key, tuple):
            key = (key,)
        key = key + (slice(None),) * (2 - len(key))
        if all(isinstance(item, slice) for item in key) and len(key) == 2:
            (y0, y1, ys), (x0, x1, xs) = (
                item.indices(size) for item, size in zip(key, self.shape, strict=True)
            )
            if y1 <= y0 or x1 <= x0:
                return np.zeros((len(range(y0, y1, ys)), len(range(x0, x1, xs))), self.dtype)
            return read_region(self.store, self.k, y0, y1, x0, x1)[::ys, ::xs]
        whole = read_region(self.store, self.k, 0, self.shape[0], 0, self.shape[1])
        return whole[key]

    def __array__(self, dtype: Any = None, copy: bool | None = None) -> np.ndarray:
        array = self[:, :]
        return array if dtype is None else array.astype(dtype)


# -- lost metadata ---------------------------------------------------------------------


def rebuild_metadata(
    folder: Path,
    shape: tuple[int, int],
    mpp: float | None,
    dtype: np.dtype,
    slide: str | None,
    key: str | None,
) -> None:
    """Write back the lost metadata of a store whose chunks are there.

    The store as found is copied to ``<store>.damaged-<time>`` first. Each
    level's array metadata that is missing or wrong is rewritten for the
    layout this version makes (level 0's chunk side read off its chunk
    files), and the store's attributes too: it is marked edited (it may hold
    hand edits; a new segmentation backs it up first).

    Raises
    ------
    MaskStoreError
        There is nothing to recover (no chunks), or it still cannot be read.
    """
    from slide_unet.core.errors import MaskStoreWarning

    problem = layout.store_problem(folder)
    if not (folder / "0" / "c").is_dir():
        raise MaskStoreError(
            f"{folder}: damaged mask store ({problem}), with no chunks to recover"
        )
    stamp = datetime.now(timezone.utc).strftime("%Y%m%dT%H%M%S%fZ")
    aside = folder.with_name(f"{folder.name}.damaged-{stamp}")
    shutil.copytree(folder, aside)
    shapes = ngff.level_shapes(shape, layout.level_count(shape))
    scratch = folder.with_name(temporary_name(folder.name))
    try:
        side = _level0_chunk_side(folder, dtype)
        layout.build_store(scratch, shape, mpp, dtype, side, slide, key, "recovered")
        for k in range(len(shapes)):
            meta = folder / str(k) / "zarr.json"
            if _array_problem(folder, k, shapes[k], dtype):
                meta.parent.mkdir(exist_ok=True)
                shutil.copy(scratch / str(k) / "zarr.json", meta)
        group = zarr.open_group(folder, mode="a", zarr_format=3)
        info = zarr.open_group(scratch, mode="r", zarr_format=3).attrs.asdict()
        info[layout.ATTRS]["edited"] = True
        group.attrs.update(info)
    except Exception as exc:
        raise MaskStoreError(f"{folder}: damaged mask store ({problem}): {exc}") from exc
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    if layout.store_problem(folder) is not None:
        raise MaskStoreError(f"{folder}: damaged mask store ({layout.store_problem(folder)})")
    chunks = sum(1 for _ in (folder / "0" / "c").rglob("*") if _.is_file())
    warnings.warn(
        f"A saved mask's metadata was lost ({problem}): it was rebuilt and its {chunks} "
        f"full-resolution chunks recovered; the store as found is kept in {aside}",
        MaskStoreWarning,
        stacklevel=4,
    )


def _level0_chunk_side(folder: Path, dtype: np.dtype) -> int:
    """The chunk side of a store's full resolution, read off a chunk file: the Blosc
    header records a chunk's decoded size (edge chunks are stored whole)."""
    for path in (folder / "0" / "c").rglob("*"):
        if path.is_file():
            with path.open("rb") as chunk:
                header = chunk.read(16)
            if len(header) == 16:
                side = math.isqrt(int.from_bytes(header[4:8], "little") // dtype.itemsize)
                if side >= 16:
                    return side
    return 2 * layout.CHUNK_SIDE


def _array_problem(folder: Path, k: int, shape: tuple[int, int], dtype: np.dtype) -> bool:
    try:
        array = zarr.open_array(folder / str(k), mode="r", zarr_format=3)
    except Exception:
        return True
    return tuple(array.shape) != shape or array.dtype != dtype
