"""The Review widget: walk a mask's objects, most doubtful first; accept or reject each.

*Build queue* measures the picked mask (and the truth, when one is picked) in
the background and orders the objects as
:func:`slide_unet.core.objects.review.review_queue` says: false positives and
misses first when there is a truth, then objects cut by a tile edge, then the
rest, smallest first in each group. *Next* and *Previous* (keys ``.`` and
``,`` while the dock is open) centre each object in turn, zoomed so its box
fills half the canvas. *Accept* (Shift-A) marks it reviewed; *Reject*
(Shift-R) erases it from the mask and marks it reviewed, and *Undo reject*
(Shift-U) puts the last rejected object back, exactly, and takes its verdict
back. On an editable layer a Reject is also one napari undo step (the Correct
widget's path: ``data_setitem`` in ``block_history``; a slide's mask is
autosaved by it).
Progress ("23 of 140 reviewed") is kept in the mask store's folder
(:class:`~slide_unet.core.objects.review.ReviewLog`) for a slide's mask, so a
review resumes when the slide is opened again; for a plain layer it lasts
as long as the widget.

The truth is a Labels layer or a file: any mask :func:`slide_unet.core.masks.io.read_mask`
reads (an RLE CSV with its row id; a GeoJSON such as QuPath's export with the
class to review against, or all its classes together), read at the mask's size
in the background, lazily when it is big. A miss is then shown in the mask's
place (the truth has no layer of its own).

A mask too large for one editable layer (a multiscale view of its store) is
reviewed the same way: *Reject* erases the object in the store (its box only,
marked as a hand edit so Live leaves it alone) and refreshes the view, and
*Undo reject* writes the pixels back; where an *Edit here* window holds the
object, the change goes through the window (its next autosave would otherwise
write the old pixels back), as one napari undo step there.
"""

from __future__ import annotations

import dataclasses
import math
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
from magicgui.widgets import ComboBox, Container, RadioButtons
from qtpy.QtCore import Signal
from qtpy.QtWidgets import QGridLayout, QLabel, QPushButton, QWidget

from slide_unet.core.errors import InputError, UserError
from slide_unet.core.masks.io import check_same_shape, read_mask
from slide_unet.core.objects.review import (
    REVIEW_FILE,
    Entry,
    ReviewLog,
    measure_for_review,
    object_pixels,
    review_queue,
)
from slide_unet.core.objects.table import ObjectTable
from slide_unet.napari.focus import centre_on, label_of, object_box, object_centroid
from slide_unet.napari.jobs import Job, failure_text, notify_error, start_job
from slide_unet.napari.layer_data import layer_probabilities
from slide_unet.napari.layers import full_resolution, layer_mpp
from slide_unet.napari.mask_layer import (
    edit_window_over,
    save_pending,
    show_store_changes,
    store_behind,
)
from slide_unet.napari.overlay import mask_layers
from slide_unet.napari.scroll import scrolling_layout
from slide_unet.napari.truth_choice import FILE, LAYER, TruthFileFields

if TYPE_CHECKING:
    import napari

__all__ = [
    "ACCEPT_KEY",
    "NEXT_KEY",
    "NO_TRUTH",
    "PREVIOUS_KEY",
    "REJECT_KEY",
    "UNDO_KEY",
    "ReviewWidget",
]

NO_TRUTH = "(none)"
NEXT_KEY, PREVIOUS_KEY = ".", ","
#: Shift and a letter, as the Correct widget's keys: a bare letter is napari's
#: (``e`` erases, ``p`` paints, ...), and one pressed by mistake should do nothing.
ACCEPT_KEY, REJECT_KEY, UNDO_KEY = "Shift-A", "Shift-R", "Shift-U"
_KEYS = (NEXT_KEY, PREVIOUS_KEY, ACCEPT_KEY, REJECT_KEY, UNDO_KEY)


@dataclasses.dataclass(frozen=True)
class _Rejection:
    """What one Reject erased, to put back: the object's pixels (``rows``,
    ``cols`` inside ``box``, full-resolution ``y0, x0, y1, x1``) and their values,
    erased through ``layer`` (whose top-left pixel is ``origin``) or, when
    ``layer`` is None, in ``store``."""

    key: str
    position: int
    box: tuple[int, int, int, int]
    rows: np.ndarray
    cols: np.ndarray
    values: np.ndarray
    layer: Any
    origin: tuple[int, int]
    store: Any


def _log_for(layer: Any) -> ReviewLog:
    """The review log of ``layer``: in its mask store's folder, else in memory."""
    store = (layer.metadata or {}).get("mask_store")
    if store and Path(store).is_dir():
        return ReviewLog(Path(store) / REVIEW_FILE)
    return ReviewLog()


class ReviewWidget(QWidget):
    """Review a mask's objects one by one: Next, Previous, Accept, Reject.

    Parameters
    ----------
    napari_viewer : napari.Viewer
        The viewer whose Labels layers are offered.

    Attributes
    ----------
    queue : list of Entry
        The objects in review order.
    position : int
        The entry shown (-1 before the first).
    log : ReviewLog
        The verdicts, kept in the mask store for a slide's mask.
    job : Job or None
        The last queue-building job.
    finished : Signal
        Emitted on the main thread when building a queue has ended, whatever happened.
    """

    finished = Signal()

    def __init__(self, napari_viewer: napari.Viewer) -> None:
        super().__init__()
        self.viewer = napari_viewer
        self.queue: list[Entry] = []
        self.position = -1
        self.log = ReviewLog()
        self.job: Job | None = None
        self.table: ObjectTable | None = None
        self.truth_table: ObjectTable | None = None
        self.reviewed_layer: Any = None
        self.truth: Any = None

        self.layer = ComboBox(label="Mask", choices=self._layer_choices)
        self.truth_source = RadioButtons(
            label="Truth from", choices=[LAYER, FILE], value=LAYER, orientation="horizontal"
        )
        self.truth_layer = ComboBox(label="Truth", choices=self._truth_choices)
        self.truth_layer.tooltip = (
            "Optional: with a truth mask, false positives and misses come first"
        )
        self.truth_fields = TruthFileFields(
            "A truth mask in any format slide-unet reads, read at the mask's size: "
            "false positives and misses come first"
        )
        self.truth_file = self.truth_fields.file
        self.rle_id = self.truth_fields.rle_id
        self.truth_class = self.truth_fields.truth_class
        self.truth_source.changed.connect(self._show_truth_fields)
        self.build_button = QPushButton("Build queue")
        self.build_button.setToolTip(
            "Measure the mask's objects (and the truth's) and order them for review"
        )
        self.current = QLabel("No queue yet: pick a mask and press Build queue.")
        self.current.setWordWrap(True)
        self.progress = QLabel()
        self.previous_button = QPushButton(f"Previous ({PREVIOUS_KEY})")
        self.next_button = QPushButton(f"Next ({NEXT_KEY})")
        self.accept_button = QPushButton(f"Accept ({ACCEPT_KEY})")
        self.accept_button.setToolTip("Mark the object reviewed and keep it")
        self.reject_button = QPushButton(f"Reject ({REJECT_KEY})")
        self.reject_button.setToolTip("Erase the object from the mask and mark it reviewed")
        self.undo_button = QPushButton(f"Undo reject ({UNDO_KEY})")
        self.undo_button.setToolTip("Put the last rejected object back and take its verdict back")
        self.rejections: list[_Rejection] = []

        layout = scrolling_layout(self)
        self._pickers = Container(  # with labels
            widgets=[
                self.layer,
                self.truth_source,
                self.truth_layer,
                self.truth_file,
                self.rle_id,
                self.truth_class,
            ]
        )
        self._show_truth_fields()
        layout.addWidget(self._pickers.native)
        layout.addWidget(self.build_button)
        layout.addWidget(self.current)
        layout.addWidget(self.progress)
        grid = QGridLayout()
        grid.addWidget(self.previous_button, 0, 0)
        grid.addWidget(self.next_button, 0, 1)
        grid.addWidget(self.accept_button, 1, 0)
        grid.addWidget(self.reject_button, 1, 1)
        grid.addWidget(self.undo_button, 2, 0, 1, 2)
        layout.addLayout(grid)
        layout.addStretch()

        self.build_button.clicked.connect(lambda: self.build())
        self.next_button.clicked.connect(lambda: self.step(1))
        self.previous_button.clicked.connect(lambda: self.step(-1))
        self.accept_button.clicked.connect(lambda: self.accept())
        self.reject_button.clicked.connect(lambda: self.reject())
        self.undo_button.clicked.connect(lambda: self.undo_reject())
        actions = (
            lambda: self.step(1),
            lambda: self.step(-1),
            self.accept,
            self.reject,
            self.undo_reject,
        )
        for key, action in zip(_KEYS, actions, strict=True):
            self.viewer.bind_key(key, _on_key(action), overwrite=True)
        self.destroyed.connect(_unbind(self.viewer))
        self._enable()

    # -- layers -------------------------------------------------------------------------

    def _layers(self) -> list[Any]:
        return mask_layers(self.viewer)

    def _layer_choices(self, _widget: Any = None) -> list[tuple[str, Any]]:
        return [(layer.name, layer) for layer in self._layers()]

    def _truth_choices(self, _widget: Any = None) -> list[tuple[str, Any]]:
        return [(NO_TRUTH, None)] + [(layer.name, layer) for layer in self._layers()]

    def reset_choices(self, _event: Any = None) -> None:
        """Refresh the layer lists (napari calls this when layers change)."""
        self.layer.reset_choices()
        self.truth_layer.reset_choices()

    def _show_truth_fields(self, *_: Any) -> None:
        from_file = self.truth_source.value == FILE
        self.truth_layer.visible = not from_file
        self.truth_fields.show(from_file)

    def _truth_file(self) -> dict[str, Any] | None:
        """The truth file as picked (path, RLE id, class), checked without reading it;
        None when the truth is a layer."""
        if self.truth_source.value != FILE:
            return None
        path, image_id, classification = self.truth_fields.picked()
        return {"path": path, "image_id": image_id, "classification": classification}

    # -- building -----------------------------------------------------------------------

    def build(self) -> Job | None:
        """Measure and order the picked mask's objects in the background.

        Returns
        -------
        Job or None
            The running job, or None when refused (with a notification saying why).
        """
        if self.job is not None and self.job.running:
            notify_error(UserError("the queue is being built: wait, or cancel it"))
            return None
        layer, truth = self.layer.value, self.truth_layer.value
        truth_file: dict[str, Any] | None = None
        try:
            if layer is None:
                raise InputError("no Labels layer to review: segment a slide or open a mask first")
            pred = full_resolution(layer)
            if len(pred.shape) != 2:
                raise InputError(f"{layer.name!r} is not a 2-D mask: it cannot be reviewed")
            truth_file = self._truth_file()
            if truth_file is not None:
                truth = None
            if truth is layer:
                raise InputError("the truth is the mask itself: pick another layer or (none)")
            truth_data = full_resolution(truth) if truth is not None else None
            if truth_data is not None and tuple(truth_data.shape) != tuple(pred.shape):
                raise InputError(
                    f"the truth {truth.name!r} is {tuple(truth_data.shape)} px and the mask "
                    f"{layer.name!r} {tuple(pred.shape)} px: they must be the same size"
                )
            save_pending(layer, *([truth] if truth is not None else []))
        except (UserError, OSError) as error:
            notify_error(error)
            return None
        mpp = layer_mpp(layer)
        # Kept in a slide's mask store: the least sure objects come first.
        probabilities = layer_probabilities(layer, tuple(pred.shape))

        shape = tuple(int(v) for v in pred.shape)
        name = layer.name  # read here: the work runs in another thread

        def work(progress: Any, cancel: Any, _partial: Any) -> tuple[Any, ...]:
            truths_data = truth_data
            if truth_file is not None:  # read here: a GeoJSON is drawn, a file may be big
                truths_data = read_mask(truth_file["path"], shape=shape, **_options(truth_file))
                check_same_shape(
                    truths_data, shape, (f"truth {truth_file['path'].name}", f"mask {name!r}")
                )
            return measure_for_review(
                pred,
                truths_data,
                mpp=mpp,
                probabilities=probabilities,
                progress=progress,
                cancel=cancel,
            )

        def done(result: tuple[Any, ...]) -> None:
            table, truths, hit, found = result
            self.table, self.truth_table = table, truths
            self.reviewed_layer, self.truth = layer, truth
            self.queue = review_queue(table, truth=truths, hit=hit, found=found)
            self.log = _log_for(layer)
            self.rejections = []  # their positions were in the old queue
            first = next(
                (k for k, e in enumerate(self.queue) if self.log.verdict(e.key) is None), 0
            )
            self.position = -1
            if self.queue:
                self.show_entry(first)  # resume at the first object not reviewed
            else:
                self.current.setText("No objects in the mask: nothing to review.")
            self._show_progress()

        def failed(error: BaseException) -> None:
            self.current.setText(failure_text(error, "building the queue cancelled"))

        self.build_button.setEnabled(False)
        self.current.setText(f"measuring {layer.name}…")
        self.job = start_job(
            work,
            f"Building the review queue of {layer.name}",
            done=done,
            failed=failed,
            finished=self._finished,
        )
        return self.job

    def _finished(self) -> None:
        self.build_button.setEnabled(True)
        self._enable()
        self.finished.emit()

    # -- walking ------------------------------------------------------------------------

    def entry(self) -> Entry | None:
        """The entry shown, or None."""
        return self.queue[self.position] if 0 <= self.position < len(self.queue) else None

    def _source(self, entry: Entry) -> tuple[ObjectTable, Any]:
        if entry.in_truth:
            # A truth file has no layer: its objects are shown where the mask is.
            where = self.truth if self.truth is not None else self.reviewed_layer
            return self.truth_table, where  # type: ignore[return-value]
        return self.table, self.reviewed_layer  # type: ignore[return-value]

    def step(self, by: int) -> None:
        """Show the next (``by=1``) or previous (``by=-1``) object of the queue."""
        if not self.queue:
            return
        self.show_entry(min(max(self.position + by, 0), len(self.queue) - 1))

    def show_entry(self, position: int) -> None:
        """Centre the view on the queue's ``position``-th object and say what it is."""
        self.position = position
        entry = self.queue[position]
        table, layer = self._source(entry)
        box, centroid = object_box(table, entry.row), object_centroid(table, entry.row)
        centre_on(self.viewer, layer, centroid, box)
        if not entry.in_truth:
            value = label_of(layer, centroid, box)
            if value:
                layer.selected_label = value
        unit = "µm²" if table.mpp else "px"
        area = float(table[f"area_{table.unit}2"][entry.row])
        verdict = self.log.verdict(entry.key)
        where = " (in the truth: the mask has nothing here)" if entry.in_truth else ""
        probability = float(table["mean_probability"][entry.row])
        sure = f", mean probability {probability:.2f}" if math.isfinite(probability) else ""
        self.current.setText(
            f"{position + 1} of {len(self.queue)}: {entry.kind}{where}, {area:,.1f} {unit}"
            + sure
            + (f" — {verdict}" if verdict else "")
        )
        self._enable()

    def _show_progress(self) -> None:
        done = self.log.reviewed(self.queue)
        self.progress.setText(f"{done:,} of {len(self.queue):,} reviewed")

    def _enable(self) -> None:
        entry = self.entry()
        has = entry is not None
        self.previous_button.setEnabled(has and self.position > 0)
        self.next_button.setEnabled(has and self.position < len(self.queue) - 1)
        self.accept_button.setEnabled(has)
        self.reject_button.setEnabled(has and not entry.in_truth)  # type: ignore[union-attr]
        self.undo_button.setEnabled(bool(self.rejections))

    # -- verdicts -----------------------------------------------------------------------

    def accept(self) -> None:
        """Mark the object shown reviewed (kept) and move to the next one."""
        entry = self.entry()
        if entry is None:
            return
        self.log.mark(entry.key, "accepted")
        self._after_verdict()

    def reject(self) -> bool:
        """Erase the object shown from the mask, mark it reviewed and move on; True
        when it was erased (*Undo reject* puts it back)."""
        entry = self.entry()
        if entry is None or entry.in_truth:
            return False
        layer = self.reviewed_layer
        box = object_box(self.table, entry.row)  # type: ignore[arg-type]
        y0, x0, y1, x1 = box
        try:
            target, origin, store = self._erasable(layer, box)
            if target is not None:
                oy, ox = origin
                window = np.asarray(target.data[y0 - oy : y1 - oy, x0 - ox : x1 - ox])
            else:
                window = np.array(store.level0[y0:y1, x0:x1])
            own = object_pixels(window, int(self.table["pixels"][entry.row]))  # type: ignore[index]
            rows, cols = np.nonzero(own)
            if rows.size == 0:
                raise InputError("the object is no longer in the mask: Build queue again")
            rejection = _Rejection(
                key=entry.key,
                position=self.position,
                box=box,
                rows=rows,
                cols=cols,
                values=window[rows, cols].copy(),
                layer=target,
                origin=origin,
                store=store,
            )
            _put(rejection, 0, viewer=self.viewer, view=layer)
        except (UserError, OSError) as error:
            notify_error(error)
            return False
        self.rejections.append(rejection)
        self.log.mark(entry.key, "rejected")
        self._after_verdict()
        return True

    def _erasable(self, layer: Any, box: tuple[int, int, int, int]) -> tuple[Any, Any, Any]:
        """Where to erase ``box``: ``(layer, origin, store)`` with ``layer`` None when
        the pixels are changed in ``store`` (a multiscale view no window holds)."""
        if not layer.multiscale:
            return layer, (0, 0), None
        window = edit_window_over(self.viewer, layer, box)
        if window is not None:
            return window[0], window[1], None
        store = store_behind(layer)
        if store is None:
            raise InputError(
                f"{layer.name!r} is too large to edit at once and is not a slide's mask "
                "store: open the Correct widget's Edit here on this object and delete it there"
            )
        return None, (0, 0), store

    def undo_reject(self) -> bool:
        """Put the last rejected object back as it was, take its verdict back and
        show it; True when there was one."""
        if not self.rejections:
            return False
        rejection = self.rejections[-1]
        try:
            _put(rejection, rejection.values, viewer=self.viewer, view=self.reviewed_layer)
        except (UserError, OSError) as error:
            notify_error(error)
            return False
        self.rejections.pop()
        self.log.forget(rejection.key)
        self._show_progress()
        if rejection.position < len(self.queue):
            self.show_entry(rejection.position)
        return True

    def _after_verdict(self) -> None:
        self._show_progress()
        if self.position < len(self.queue) - 1:
            self.step(1)
        else:
            self.show_entry(self.position)


def _put(rejection: _Rejection, values: Any, *, viewer: Any = None, view: Any = None) -> None:
    """Set the rejected object's pixels to ``values`` (0 erases; its old values put
    it back) where it was erased: through its layer as one undo step, or in the
    store, refreshing ``view``. An *Edit here* window closed since hands its part
    back to the store."""
    y0, x0, y1, x1 = rejection.box
    layer, store = rejection.layer, rejection.store
    if layer is not None and viewer is not None and layer not in viewer.layers:
        layer, store = None, store_behind(view)  # the window was closed: its store
        if store is None:
            raise InputError("the layer the object was erased in is gone: nothing to undo")
    if layer is not None:
        oy, ox = rejection.origin
        with layer.block_history():  # one undo step; a paint event, so autosaved
            layer.data_setitem((rejection.rows + y0 - oy, rejection.cols + x0 - ox), values)
        return
    window = np.array(store.level0[y0:y1, x0:x1])
    window[rejection.rows, rejection.cols] = values
    store.write(y0, x0, window, edited=True)
    if view is not None:
        show_store_changes(view, store)


def _on_key(action: Any) -> Any:
    """A key binding that runs ``action`` (napari passes the viewer)."""

    def run(_viewer: Any) -> None:
        action()

    return run


def _options(truth_file: dict[str, Any]) -> dict[str, Any]:
    """:func:`read_mask`'s options for the picked truth file."""
    return {"image_id": truth_file["image_id"], "classification": truth_file["classification"]}


def _unbind(viewer: Any) -> Any:
    """Unbind the keys when the widget is destroyed (a closure: the widget is gone)."""

    def unbind(*_args: Any) -> None:
        for key in _KEYS:
            viewer.bind_key(key, None)

    return unbind
