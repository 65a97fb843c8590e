"""A review queue: a mask's objects ordered by how much they need a human, and its log.

Order (:func:`review_queue`), first to last:

1. with a truth mask, the **false positives**: predicted objects with no truth
   pixel under any of their pixels (lowest mean probability first, where
   known; then the smallest);
2. with a truth mask, the **misses**: truth objects with no predicted pixel
   under any of theirs (the smallest first: the model gave them no object, so
   no probability);
3. the other predicted objects whose **mean probability** is known (the
   table's ``mean_probability``, measured with the probabilities a mask store
   keeps beside the mask), the **lowest first**: the objects the model was
   least sure of. Ties (equal to three decimals) go to those cut by a tile
   edge (below), then the smallest. Their kind is :data:`CUT` or :data:`PROBABILITY`;
4. the predicted objects without a known probability (a mask from elsewhere,
   objects painted by hand, or every object when the table has no
   probabilities) **cut by a tile edge**: an object whose bounding box starts
   or ends on a multiple of :data:`TILE` pixels (rows or columns), or on the
   image border. Segmentation runs in blocks of this size, and an object that
   ends exactly on a block line is often a fragment of one cut there (an
   object that crosses a line is not: its box does not end on it);
5. every other predicted object.

Within groups 4 and 5 the smallest come first (the fragments and specks a
model gets wrong most). Without probabilities the order is therefore 1, 2, 4, 5,
as before they were kept.

The log (:class:`ReviewLog`) keeps which objects were reviewed, keyed by each
object's bounding box and pixel count in full-resolution pixels (not by its
id, which changes when any object before it changes): a review survives a
restart and a re-measure, and an object edited since is new to review. For a
slide's mask it is a small JSON file in the mask store's folder.

:func:`measure_for_review` measures what the order needs (both the napari
Review dock and ``slide-unet measure --review`` run it), and
:func:`review_table` writes the queue as an object table in review order, with
its rank and reason.

This module is part of the napari-free core.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from scipy import ndimage

from slide_unet.core.atomic import write_text_atomic
from slide_unet.core.errors import Cancel, Cancelled, cancel_check
from slide_unet.core.objects.table import ObjectTable

__all__ = [
    "CUT",
    "FALSE_POSITIVE",
    "MISSED",
    "OTHER",
    "PROBABILITY",
    "READ_BLOCK",
    "REASONS",
    "REVIEW_FILE",
    "TILE",
    "Entry",
    "ReviewLog",
    "cut_by_tile_edge",
    "measure_for_review",
    "object_key",
    "object_pixels",
    "overlaps",
    "review_queue",
    "review_table",
]

#: Side of the segmentation blocks whose edges may cut objects (px).
TILE = 1024
#: Side of the squares :func:`overlaps` reads the mask and the truth in (px).
READ_BLOCK = 2048
#: The log's file name in a mask store's folder.
REVIEW_FILE = "review.json"
FALSE_POSITIVE, MISSED, CUT, OTHER = "false positive", "missed", "cut by a tile edge", "small"
#: The kind of an object of group 3 (ordered by mean probability) not cut by a tile edge.
PROBABILITY = "object"
EIGHT = np.ones((3, 3), dtype=bool)
#: The ``review_reason`` of each kind in :func:`review_table`.
REASONS = {
    FALSE_POSITIVE: "false positive",
    MISSED: "miss",
    PROBABILITY: "low probability",
    CUT: "cut by a tile edge",
    OTHER: "small",
}


@dataclass(frozen=True)
class Entry:
    """One object in the queue.

    Attributes
    ----------
    kind : str
        :data:`FALSE_POSITIVE`, :data:`MISSED`, :data:`CUT`, :data:`PROBABILITY`
        or :data:`OTHER`.
    row : int
        Its row in the predicted table, or in the truth table for a miss.
    key : str
        Its key in the :class:`ReviewLog`.
    """

    kind: str
    row: int
    key: str

    @property
    def in_truth(self) -> bool:
        """A miss: the object is in the truth mask, not in the prediction."""
        return self.kind == MISSED


def _boxes(table: ObjectTable) -> np.ndarray:
    """``(n, 4)`` bounding boxes ``y0, x0, y1, x1`` in pixels."""
    scale = table.mpp or 1.0
    names = [f"bbox_{k}_{table.unit}" for k in ("y0", "x0", "y1", "x1")]
    return np.rint(np.column_stack([table[n] / scale for n in names])).astype(np.int64)


def object_key(table: ObjectTable, row: int) -> str:
    """The log key of ``row``: ``"y0,x0,y1,x1,pixels"`` in full-resolution pixels."""
    y0, x0, y1, x1 = (int(v) for v in _boxes(table)[row])
    return f"{y0},{x0},{y1},{x1},{int(table['pixels'][row])}"


def cut_by_tile_edge(table: ObjectTable, tile: int = TILE) -> np.ndarray:
    """Whether each object's box starts or ends on a multiple of ``tile`` or the border."""
    boxes = _boxes(table)
    height, width = table.shape
    on_line = (boxes % tile == 0).any(axis=1)
    on_border = (boxes[:, 2] == height) | (boxes[:, 3] == width)
    return on_line | on_border


def object_pixels(window: np.ndarray, pixels: int) -> np.ndarray:
    """The pixels of the object whose bounding box is ``window``, as a boolean mask.

    ``window`` is the mask under the object's box: the object is the 8-connected
    component that spans the whole window with ``pixels`` pixels (the largest
    spanning one should two have the same count, which needs two objects with
    the same box).
    """
    labels, count = ndimage.label(np.asarray(window) != 0, EIGHT)
    if count == 0:
        return np.zeros(labels.shape, dtype=bool)
    sizes = np.bincount(labels.ravel(), minlength=count + 1)
    spans = np.zeros(count + 1, dtype=bool)
    for index, found in enumerate(ndimage.find_objects(labels), start=1):
        if found is not None:
            spans[index] = all(
                s.start == 0 and s.stop == n for s, n in zip(found, labels.shape, strict=True)
            )
    exact = np.flatnonzero(spans & (sizes == pixels))
    candidates = exact if exact.size else np.flatnonzero(spans)
    if candidates.size == 0:
        candidates = np.arange(1, count + 1)
    best = candidates[np.argmax(sizes[candidates])]
    return labels == best


def overlaps(
    table: ObjectTable,
    mask: Any,
    other: Any,
    *,
    progress: Callable[[int, int], None] | None = None,
    cancel: Cancel | None = None,
    block: int = READ_BLOCK,
) -> np.ndarray:
    """Whether each object of ``mask`` (measured in ``table``) has a non-zero pixel of
    ``other`` under it.

    Streams over any array: the objects whose boxes lie inside one square of
    ``block`` pixels of a grid over the mask are judged from one read of that
    square of both arrays (a chunked array read object by object cost 2 ms an
    object: 40 s for 18,793 nuclei); the few whose boxes cross the grid are read
    box by box. Squares with no object are not read.
    """
    stop = cancel_check(cancel)
    boxes = _boxes(table)
    pixels = np.asarray(table["pixels"], dtype=np.int64)
    found = np.zeros(len(table), dtype=bool)
    cells = boxes[:, :2] // block
    inside = (boxes[:, 2:] <= (cells + 1) * block).all(axis=1)
    rows = np.flatnonzero(inside)
    rows = rows[np.lexsort((cells[rows, 1], cells[rows, 0]))]
    groups = np.split(rows, np.flatnonzero(np.diff(cells[rows], axis=0).any(axis=1)) + 1)
    # Each object crossing the grid is a "group" of its own, read by its box.
    squares = [(tuple(cells[g[0]] * block), g) for g in groups if g.size]
    squares += [(None, np.array([row])) for row in np.flatnonzero(~inside)]
    height, width = table.shape
    done = 0
    for corner, members in squares:
        if stop():
            raise Cancelled("building the review queue cancelled")
        if corner is None:
            y0, x0, y1, x1 = (int(v) for v in boxes[members[0]])
        else:
            y0, x0 = (int(v) for v in corner)
            y1, x1 = min(y0 + block, height), min(x0 + block, width)
        below = np.asarray(other[y0:y1, x0:x1]) != 0
        if below.any():
            here = np.asarray(mask[y0:y1, x0:x1])
            for row in members.tolist():
                b0, b1, c0, c1 = _window(boxes[row], y0, x0)
                under = below[b0:b1, c0:c1]
                if under.any():
                    own = object_pixels(here[b0:b1, c0:c1], int(pixels[row]))
                    found[row] = bool(under[own].any())
        done += members.size
        if progress is not None:
            progress(done, len(boxes))
    return found


def _window(box: np.ndarray, y0: int, x0: int) -> tuple[int, int, int, int]:
    """``box`` (``y0, x0, y1, x1``) as row and column bounds inside a read at ``(y0, x0)``."""
    return int(box[0]) - y0, int(box[2]) - y0, int(box[1]) - x0, int(box[3]) - x0


def review_queue(
    table: ObjectTable,
    *,
    truth: ObjectTable | None = None,
    hit: np.ndarray | None = None,
    found: np.ndarray | None = None,
    tile: int = TILE,
) -> list[Entry]:
    """The objects in review order (see the module's docstring).

    Parameters
    ----------
    table : ObjectTable
        The predicted objects.
    truth : ObjectTable, optional
        The truth's objects; with ``hit`` and ``found`` it adds the false
        positives and misses.
    hit : numpy.ndarray of bool, optional
        Per predicted object: some truth under it (:func:`overlaps`).
    found : numpy.ndarray of bool, optional
        Per truth object: some prediction under it.
    tile : int
        The block side whose edges cut objects.
    """
    area = table["pixels"].astype(np.float64)
    cut = cut_by_tile_edge(table, tile)
    probability = np.asarray(table["mean_probability"], dtype=np.float64)
    known = np.isfinite(probability)
    false_positive = ~hit if hit is not None else np.zeros(len(table), dtype=bool)
    entries: list[Entry] = []
    groups = [
        (FALSE_POSITIVE, false_positive),
        (PROBABILITY, ~false_positive & known),
        (CUT, ~false_positive & ~known & cut),
        (OTHER, ~false_positive & ~known & ~cut),
    ]
    # Lowest known probability first (unknown last), then (group 3) cut ones, then the
    # smallest.
    # (to three decimals, as shown: float sums of equal values differ in the last bits)
    sure = np.where(known, np.round(probability, 3), np.inf)
    for kind, chosen in groups:
        rows = np.flatnonzero(chosen)
        ties = ~cut[rows] if kind == PROBABILITY else np.zeros(rows.size, dtype=bool)
        order = np.lexsort((area[rows], ties, sure[rows]))
        for row in rows[order].tolist():
            shown = CUT if kind == PROBABILITY and cut[row] else kind
            entries.append(Entry(shown, row, object_key(table, row)))
        if kind == FALSE_POSITIVE and truth is not None and found is not None:
            missed = np.flatnonzero(~found)
            sizes = truth["pixels"][missed]
            for row in missed[np.argsort(sizes, kind="stable")].tolist():
                entries.append(Entry(MISSED, row, "missed:" + object_key(truth, row)))
    return entries


def measure_for_review(
    mask: Any,
    truth: Any = None,
    *,
    mpp: float | None = None,
    probabilities: Any = None,
    progress: Callable[[int, int], None] | None = None,
    cancel: Cancel | None = None,
) -> tuple[ObjectTable, ObjectTable | None, np.ndarray | None, np.ndarray | None]:
    """Measure ``mask`` (and ``truth``, of the same shape) for :func:`review_queue`.

    Returns
    -------
    table, truths, hit, found
        The predicted objects' table; with a truth, its objects' table, whether
        each predicted object has truth under it and each truth object a
        prediction (else three Nones): :func:`review_queue`'s arguments.
    """
    from slide_unet.core.objects.measure import measure

    table = measure(mask, mpp=mpp, probabilities=probabilities, progress=progress, cancel=cancel)
    if truth is None:
        return table, None, None, None
    truths = measure(truth, mpp=mpp, progress=progress, cancel=cancel)
    hit = overlaps(table, mask, truth, progress=progress, cancel=cancel)
    found = overlaps(truths, truth, mask, progress=progress, cancel=cancel)
    return table, truths, hit, found


def review_table(
    table: ObjectTable, entries: list[Entry], truth: ObjectTable | None = None
) -> ObjectTable:
    """The queue ``entries`` as one object table, in review order.

    Each row is the object's row of ``table`` (of ``truth`` for a miss: its
    ``id`` is then the truth's, and it has no ``mean_probability``), with two
    more columns: ``review_rank`` (1 for the first to review) and
    ``review_reason`` (:data:`REASONS`: ``false positive``, ``miss``, ``low
    probability``, ``cut by a tile edge`` or ``small``).
    """
    columns: dict[str, list[Any]] = {name: [] for name in table.names}
    for entry in entries:
        source = truth if entry.in_truth and truth is not None else table
        for name in table.names:
            columns[name].append(source[name][entry.row])
    out = {name: np.asarray(values, dtype=table[name].dtype) for name, values in columns.items()}
    out["review_rank"] = np.arange(1, len(entries) + 1, dtype=np.int64)
    out["review_reason"] = np.asarray([REASONS[e.kind] for e in entries], dtype=object)
    return ObjectTable(out, table.mpp, table.shape)


class ReviewLog:
    """Which objects were reviewed, and how: ``{key: "accepted" | "rejected"}``.

    Parameters
    ----------
    path : path-like, optional
        The JSON file it is kept in (read now, written on every change); None:
        kept in memory only.
    """

    def __init__(self, path: str | os.PathLike[str] | None = None) -> None:
        self.path = Path(path) if path is not None else None
        self.marks: dict[str, str] = {}
        if self.path is not None and self.path.exists():
            try:
                record = json.loads(self.path.read_text())
                self.marks = {str(k): str(v) for k, v in record.get("reviewed", {}).items()}
            except (OSError, ValueError, AttributeError):
                self.marks = {}  # an unreadable log starts the review afresh

    def mark(self, key: str, verdict: str) -> None:
        """Record ``key`` as ``verdict`` (``accepted`` or ``rejected``) and save."""
        self.marks[key] = verdict
        self._save()

    def forget(self, key: str) -> None:
        """Take back the verdict on ``key`` (an undone Reject) and save."""
        if self.marks.pop(key, None) is not None:
            self._save()

    def _save(self) -> None:
        if self.path is not None:
            write_text_atomic(self.path, json.dumps({"reviewed": self.marks}, indent=1))

    def verdict(self, key: str) -> str | None:
        """How ``key`` was reviewed, or None."""
        return self.marks.get(key)

    def reviewed(self, entries: list[Entry]) -> int:
        """How many of ``entries`` are reviewed."""
        return sum(entry.key in self.marks for entry in entries)
