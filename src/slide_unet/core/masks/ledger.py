"""Which parts of a mask store hold which result, and which a person edited.

The mask store (:mod:`slide_unet.core.masks.store`) keeps one mask per slide.
To compute nothing twice (issue 18: the live viewport, the *Viewport* button
and *Whole slide* skip what is already done) and to never let an automatic
pass overwrite a hand edit, the store keeps a ledger beside its levels: the
slide is cut into square cells of :data:`CELL` full-resolution pixels, and
for every cell the ledger records

- the result it holds: the index of a *signature* (a string that names the
  model, its weights and every setting that changes the mask, see
  :func:`slide_unet.core.inference.live.result_signature`), 0 for none;
- whether a person edited any pixel of it.

A result is recorded only for cells a run covered whole (or up to the
slide's edge), after their pixels are written; writing another result there
replaces the record. Clearing the store clears the ledger.

Layout: a zarr group ``ledger`` inside the store's folder with two small
arrays of one value per cell, ``results`` (uint16) and ``edited`` (uint8),
and the list of signatures in its attributes. It is made on first use, so
stores written before it exist have an empty ledger.

This module is part of the napari-free core.
"""

from __future__ import annotations

import math
import threading
from collections.abc import Callable, Collection, Iterable
from pathlib import Path
from typing import Any

import numpy as np
import zarr

__all__ = ["CELL", "Ledger", "Snapshot"]

#: Side of a ledger cell, full-resolution pixels.
CELL = 256
_GROUP = "ledger"
_CHUNK = 256  # cells per chunk side of the ledger's arrays
_LOCKS: dict[str, threading.Lock] = {}
_LOCKS_GUARD = threading.Lock()

Box = tuple[int, int, int, int]
#: One result's signature, or several any of which will do.
Signatures = str | Collection[str]


def _codes(known: list[str], signatures: Signatures) -> list[int]:
    """The ledger's codes (index + 1) of those of ``signatures`` it knows."""
    wanted = [signatures] if isinstance(signatures, str) else list(signatures)
    return [known.index(s) + 1 for s in wanted if s in known]


def _lock(path: Path) -> threading.Lock:
    with _LOCKS_GUARD:
        return _LOCKS.setdefault(str(path.resolve()), threading.Lock())


class Ledger:
    """The ledger of the mask store at ``path`` whose full resolution is ``shape``.

    Reads and writes go to disk each time (the arrays are small: one value
    per 256 x 256 pixels); writes are serialised within the process, and the
    callers hold the store for writing against other processes
    (:meth:`~slide_unet.core.masks.store.MaskStore.writing`).
    """

    def __init__(self, path: str | Path, shape: tuple[int, int]) -> None:
        self.path = Path(path)
        self.shape = (int(shape[0]), int(shape[1]))
        self.cells = (math.ceil(self.shape[0] / CELL), math.ceil(self.shape[1] / CELL))
        self._lock = _lock(self.path)

    # -- cells -----------------------------------------------------------------------

    def cells_touching(self, box: Box) -> tuple[slice, slice]:
        """The cells that any pixel of ``box`` (y0, y1, x0, x1) falls in."""
        y0, y1, x0, x1 = box
        return (
            slice(max(0, y0 // CELL), min(self.cells[0], math.ceil(y1 / CELL))),
            slice(max(0, x0 // CELL), min(self.cells[1], math.ceil(x1 / CELL))),
        )

    def cells_within(self, box: Box) -> tuple[slice, slice]:
        """The cells ``box`` covers whole (a cell cut by the slide's edge counts whole)."""
        y0, y1, x0, x1 = box
        h, w = self.shape
        rows = slice(math.ceil(y0 / CELL), (y1 if y1 < h else h + CELL - 1) // CELL)
        cols = slice(math.ceil(x0 / CELL), (x1 if x1 < w else w + CELL - 1) // CELL)
        return (
            slice(rows.start, max(rows.start, min(rows.stop, self.cells[0]))),
            slice(cols.start, max(cols.start, min(cols.stop, self.cells[1]))),
        )

    # -- storage ---------------------------------------------------------------------

    def _group(self, create: bool) -> Any:
        folder = self.path / _GROUP
        if not folder.exists():
            if not create:
                return None
            group = zarr.open_group(folder, mode="w", zarr_format=3)
            chunks = (min(_CHUNK, self.cells[0]), min(_CHUNK, self.cells[1]))
            for name, dtype in (("results", np.uint16), ("edited", np.uint8)):
                group.create_array(
                    name, shape=self.cells, chunks=chunks, dtype=dtype, fill_value=0
                )
            group.attrs["signatures"] = []
            return group
        return zarr.open_group(folder, mode="r+", zarr_format=3)

    def _read(self, name: str, cells: tuple[slice, slice]) -> np.ndarray:
        group = self._group(create=False)
        size = (cells[0].stop - cells[0].start, cells[1].stop - cells[1].start)
        if group is None:
            return np.zeros(size, np.uint16 if name == "results" else np.uint8)
        return np.asarray(group[name][cells])

    def signatures(self) -> list[str]:
        """The signatures recorded so far (index ``i`` is stored as ``i + 1``)."""
        group = self._group(create=False)
        return [] if group is None else list(group.attrs["signatures"])

    # -- results ---------------------------------------------------------------------

    def record(self, box: Box, signature: str, *, replaces_edits: bool = False) -> None:
        """Record that the cells ``box`` covers whole now hold the result ``signature``;
        with ``replaces_edits``, that what a person painted there was written over too."""
        cells = self.cells_within(box)
        if cells[0].stop <= cells[0].start or cells[1].stop <= cells[1].start:
            return
        with self._lock:
            group = self._group(create=True)
            known = list(group.attrs["signatures"])
            if signature not in known:
                known.append(signature)
                group.attrs["signatures"] = known
            group["results"][cells] = known.index(signature) + 1
            if replaces_edits:
                group["edited"][cells] = 0

    def holds(self, box: Box, signature: Signatures) -> bool:
        """Whether every cell that ``box`` touches holds the result ``signature`` (or
        one of them, given several)."""
        codes = _codes(self.signatures(), signature)
        if not codes:
            return False
        held = self._read("results", self.cells_touching(box))
        return bool(np.isin(held, codes).all())

    def done_map(self, signature: Signatures) -> Callable[[Box], bool]:
        """``done(box)``: whether every cell ``box`` touches holds ``signature`` (or
        one of them) and no one edited it since, from one read of the ledger (for a
        run that asks of many blocks)."""
        codes = _codes(self.signatures(), signature)
        if not codes:
            return lambda box: False
        every = (slice(0, self.cells[0]), slice(0, self.cells[1]))
        held = np.isin(self._read("results", every), codes)
        held &= self._read("edited", every) == 0

        def done(box: Box) -> bool:
            return bool(held[self.cells_touching(box)].all())

        return done

    def snapshot(self, region: Box, signature: Signatures) -> Snapshot:
        """The cells that ``region`` touches, read once: which hold ``signature`` (or
        one of them) and which a person edited (for asking of many blocks inside
        ``region`` without a read each, as the live viewport does on the UI thread)."""
        cells = self.cells_touching(region)
        size = (max(0, cells[0].stop - cells[0].start), max(0, cells[1].stop - cells[1].start))
        group = self._group(create=False)
        known = [] if group is None else list(group.attrs["signatures"])
        if group is None or 0 in size:
            held = np.zeros(size, bool)
            edited = np.zeros(size, bool)
        else:
            held = np.isin(np.asarray(group["results"][cells]), _codes(known, signature))
            edited = np.asarray(group["edited"][cells]) != 0
        return Snapshot(self, (cells[0].start, cells[1].start), held, edited)

    # -- hand edits ------------------------------------------------------------------

    def mark_edited(self, boxes: Iterable[Box]) -> None:
        """Record that a person edited pixels in each box."""
        boxes = list(boxes)
        if not boxes:
            return
        with self._lock:
            group = self._group(create=True)
            edited = group["edited"]
            for box in boxes:
                cells = self.cells_touching(box)
                edited[cells] = 1

    def edited(self, box: Box) -> bool:
        """Whether a person edited any cell that ``box`` touches."""
        return bool(self._read("edited", self.cells_touching(box)).any())

    def clear(self) -> None:
        """Forget every result and edit (the store was cleared)."""
        import shutil

        with self._lock:
            shutil.rmtree(self.path / _GROUP, ignore_errors=True)


class Snapshot:
    """Part of a ledger as it was read by :meth:`Ledger.snapshot`: asks of boxes
    inside the region it was read for cost no read."""

    def __init__(
        self, ledger: Ledger, origin: tuple[int, int], held: np.ndarray, edited: np.ndarray
    ) -> None:
        self._ledger = ledger
        self._origin = origin
        self._held = held
        self._edited = edited

    def _cells(self, box: Box) -> tuple[slice, slice]:
        rows, cols = self._ledger.cells_touching(box)
        (i, j), (h, w) = self._origin, self._held.shape
        if rows.start < i or cols.start < j or rows.stop > i + h or cols.stop > j + w:
            raise ValueError(f"the box {box} is not inside the region the snapshot read")
        return slice(rows.start - i, rows.stop - i), slice(cols.start - j, cols.stop - j)

    def holds(self, box: Box) -> bool:
        """As :meth:`Ledger.holds` for the snapshot's signature, when it was read."""
        return bool(self._held[self._cells(box)].all())

    def edited(self, box: Box) -> bool:
        """As :meth:`Ledger.edited`, when it was read."""
        return bool(self._edited[self._cells(box)].any())
