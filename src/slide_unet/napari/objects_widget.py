"""The Objects widget: count, sizes and a table of a mask's objects.

Thin over :func:`slide_unet.core.objects.measure.measure`: *Measure* streams the
picked Labels layer's full-resolution data (a slide's store-backed multiscale
mask or a plain layer) in a background job with napari's progress bar and
Cancel, then shows the count and total area, a histogram of areas and a
sortable table. The scope *Visible region* restricts the count, the histogram
and the table to the objects whose centroid is in the camera's view (at full
resolution), following the camera as it moves. Clicking a row centres the view
on the object, zoomed so its bounding box fills half the canvas, and selects
its label (the value at its centroid: 1 for every object of a binary mask).

Updated after edits: a paint, fill, erase or Correct tool on the measured layer
(its ``paint`` and ``set_data`` events) re-measures it in the background after
:data:`DEBOUNCE_SECONDS` of quiet when the layer has at most
:data:`AUTO_PIXELS` pixels (measured: the 2048² sample in about 0.3 s on two
busy cores); a larger mask is marked *stale — Measure again* instead, since
measuring a whole slide takes minutes.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import numpy as np
from magicgui.widgets import ComboBox, Container
from qtpy.QtCore import Qt, QTimer, Signal
from qtpy.QtWidgets import (
    QAbstractItemView,
    QCheckBox,
    QComboBox,
    QFileDialog,
    QHBoxLayout,
    QHeaderView,
    QLabel,
    QPushButton,
    QTableView,
    QWidget,
)

from slide_unet.core.errors import InputError, UserError
from slide_unet.core.objects.table import ObjectTable
from slide_unet.napari.focus import centre_on, label_of, object_box, object_centroid
from slide_unet.napari.histogram import AreaHistogram
from slide_unet.napari.jobs import Job, failure_text, notify_error, start_job
from slide_unet.napari.layer_data import layer_probabilities
from slide_unet.napari.layers import (
    camera_of,
    full_resolution,
    layer_mpp,
    visible_region,
)
from slide_unet.napari.mask_layer import save_pending
from slide_unet.napari.object_model import ObjectModel
from slide_unet.napari.overlay import mask_layers
from slide_unet.napari.scroll import scrolling_layout

if TYPE_CHECKING:
    import napari

__all__ = ["AUTO_PIXELS", "DEBOUNCE_SECONDS", "SLIDE", "VISIBLE", "ObjectsWidget"]

SLIDE, VISIBLE = "Whole slide", "Visible region"
#: Quiet time after an edit before the table is measured again (s).
DEBOUNCE_SECONDS = 1.5
#: Largest mask (pixels) measured again by itself after an edit; larger ones are
#: marked stale.
AUTO_PIXELS = 8192 * 8192
#: Quiet time after a camera move before the visible-region figures follow (ms).
CAMERA_MS = 150


def _plural(count: int, word: str) -> str:
    return f"{count:,} {word}{'' if count == 1 else 's'}"


class ObjectsWidget(QWidget):
    """Measure a mask's objects: count, total area, histogram, sortable table.

    Parameters
    ----------
    napari_viewer : napari.Viewer
        The viewer whose Labels layers are offered.

    Attributes
    ----------
    table : ObjectTable or None
        The last measurement.
    measured : napari.layers.Labels or None
        The layer it was measured on.
    stale : bool
        The measured layer changed since (and is not being measured again).
    job : Job or None
        The last measuring job.
    model : ObjectModel
        The rows shown (the scope's), in the table view's sort.
    finished : Signal
        Emitted on the main thread when a measuring job has ended, whatever happened.
    """

    finished = Signal()

    def __init__(self, napari_viewer: napari.Viewer) -> None:
        super().__init__()
        self.viewer = napari_viewer
        self.table: ObjectTable | None = None
        self.measured: Any = None
        self.stale = False
        self.job: Job | None = None
        self._again = False  # an edit came while measuring: measure once more after

        self.layer = ComboBox(label="Mask", choices=self._layer_choices)
        self.measure_button = QPushButton("Measure")
        self.measure_button.setToolTip(
            "Find and measure every object (8-connected) of the mask at full resolution, "
            "in the background (Cancel in the activity dock)"
        )
        self.scope = QComboBox()
        self.scope.addItems([SLIDE, VISIBLE])
        self.scope.setToolTip(
            "Visible region: count, histogram and table of the objects whose centroid is "
            "on screen; they follow the view"
        )
        self.log_bins = QCheckBox("log bins")
        self.log_bins.setChecked(True)
        self.summary = QLabel("Not measured yet: pick a mask and press Measure.")
        self.summary.setWordWrap(True)
        self.summary.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
        self.histogram = AreaHistogram()
        self.model = ObjectModel()
        self.view = QTableView()
        self.view.setModel(self.model)
        self.view.setSortingEnabled(True)
        self.view.setEditTriggers(QAbstractItemView.EditTrigger.NoEditTriggers)
        self.view.setSelectionBehavior(QAbstractItemView.SelectionBehavior.SelectRows)
        self.view.setSelectionMode(QAbstractItemView.SelectionMode.SingleSelection)
        self.view.verticalHeader().setVisible(False)
        self.view.horizontalHeader().setSectionResizeMode(QHeaderView.ResizeMode.ResizeToContents)
        self.view.setToolTip("Click an object to centre the view on it and select its label")
        self.view.setMinimumHeight(150)
        self.save_button = QPushButton("Save table…")
        self.save_button.setToolTip("Write the table (whole slide) as CSV or Parquet")

        layout = scrolling_layout(self)
        self._picker = Container(widgets=[self.layer])  # with its label
        layout.addWidget(self._picker.native)
        layout.addWidget(self.measure_button)
        row = QHBoxLayout()
        row.addWidget(QLabel("Scope"))
        row.addWidget(self.scope, 1)
        row.addWidget(self.log_bins)
        layout.addLayout(row)
        layout.addWidget(self.summary)
        layout.addWidget(self.histogram)
        layout.addWidget(self.view)
        layout.addWidget(self.save_button)

        self._debounce = QTimer(self)
        self._debounce.setSingleShot(True)
        self._debounce.setInterval(int(DEBOUNCE_SECONDS * 1000))
        self._debounce.timeout.connect(self._auto_measure)
        self._camera_timer = QTimer(self)
        self._camera_timer.setSingleShot(True)
        self._camera_timer.setInterval(CAMERA_MS)
        self._camera_timer.timeout.connect(self.show_scope)

        self.measure_button.clicked.connect(lambda: self.measure())
        self.save_button.clicked.connect(self._save_clicked)
        self.scope.currentTextChanged.connect(self.show_scope)
        self.log_bins.toggled.connect(self.histogram.set_log)
        self.view.clicked.connect(lambda index: self.go_to(self.model.row_of(index.row())))
        camera = camera_of(self.viewer)
        camera.events.center.connect(self._camera_moved)
        camera.events.zoom.connect(self._camera_moved)
        self.destroyed.connect(_unhook(camera, self._camera_moved))

    # -- the layer ----------------------------------------------------------------------

    def _layer_choices(self, _widget: Any = None) -> list[tuple[str, Any]]:
        return [(layer.name, layer) for layer in mask_layers(self.viewer)]

    def reset_choices(self, _event: Any = None) -> None:
        """Refresh the layer list (napari calls this when layers change)."""
        self.layer.reset_choices()

    def _watch(self, layer: Any) -> None:
        """Follow edits of ``layer`` (and no longer of the layer measured before)."""
        old = self.measured
        if old is layer:
            return
        if old is not None:
            for event in (old.events.paint, old.events.set_data):
                event.disconnect(self._edited)
        layer.events.paint.connect(self._edited)
        layer.events.set_data.connect(self._edited)

    def _edited(self, _event: Any = None) -> None:
        """The measured layer changed: measure again soon, or mark the table stale."""
        layer = self.measured
        if layer is None:
            return
        shape = full_resolution(layer).shape
        if int(np.prod(shape[-2:])) <= AUTO_PIXELS:
            self._debounce.start()  # restarts: one measurement after a burst of strokes
            self.summary.setText(self._summary_text() + " Edited: measuring again shortly…")
        else:
            self.stale = True
            self.show_scope()

    def _auto_measure(self) -> None:
        if self.job is not None and self.job.running:
            self._again = True
            return
        self.measure(self.measured)

    # -- measuring ----------------------------------------------------------------------

    def measure(self, layer: Any = None) -> Job | None:
        """Measure ``layer`` (default: the picked one) in the background.

        Returns
        -------
        Job or None
            The running job, or None when refused (with a notification saying why).
        """
        if self.job is not None and self.job.running:
            notify_error(UserError("measuring is already running: wait, or cancel it"))
            return None
        layer = layer if layer is not None else self.layer.value
        try:
            if layer is None:
                raise InputError(
                    "no Labels layer to measure: segment a slide or open a mask first"
                )
            data = full_resolution(layer)
            if len(data.shape) != 2:
                raise InputError(
                    f"{layer.name!r} has shape {tuple(data.shape)}: measuring needs a 2-D mask"
                )
            save_pending(layer)
        except (UserError, OSError) as error:
            notify_error(error)
            return None
        mpp = layer_mpp(layer)
        # A slide's mask store keeps the model's probabilities: mean_probability fills.
        probabilities = layer_probabilities(layer, tuple(data.shape))

        def work(progress: Any, cancel: Any, _partial: Any) -> ObjectTable:
            from slide_unet.core.objects.measure import measure

            return measure(
                data, mpp=mpp, probabilities=probabilities, progress=progress, cancel=cancel
            )

        def done(table: ObjectTable) -> None:
            self._watch(layer)
            self.measured, self.table, self.stale = layer, table, False
            self.show_scope()

        def failed(error: BaseException) -> None:
            self.summary.setText(failure_text(error, "measuring cancelled"))

        self.measure_button.setEnabled(False)
        self.summary.setText(f"measuring {layer.name}…")
        self.job = start_job(
            work,
            f"Measuring the objects of {layer.name}",
            done=done,
            failed=failed,
            finished=self._finished,
        )
        return self.job

    def _finished(self) -> None:
        self.measure_button.setEnabled(True)
        self.finished.emit()
        if self._again:
            self._again = False
            self._debounce.start()

    # -- showing ------------------------------------------------------------------------

    def _camera_moved(self, _event: Any = None) -> None:
        if self.scope.currentText() == VISIBLE and self.table is not None:
            self._camera_timer.start()

    def scope_rows(self) -> np.ndarray:
        """The table rows in the chosen scope: all of them, or those whose centroid is
        in the visible region."""
        table = self.table
        if table is None:
            return np.zeros(0, dtype=np.int64)
        every = np.arange(len(table))
        if self.scope.currentText() != VISIBLE or self.measured is None:
            return every
        try:
            y0, y1, x0, x1 = visible_region(self.viewer, self.measured)
        except UserError:
            return every[:0]
        scale = table.mpp or 1.0
        cy = table[f"centroid_y_{table.unit}"] / scale
        cx = table[f"centroid_x_{table.unit}"] / scale
        inside = (cy >= y0 - 0.5) & (cy < y1 - 0.5) & (cx >= x0 - 0.5) & (cx < x1 - 0.5)
        return every[inside]

    def _summary_text(self) -> str:
        table = self.table
        if table is None:
            return "Not measured yet: pick a mask and press Measure."
        rows = self.scope_rows()
        unit = "µm²" if table.mpp else "px"
        area = float(table[f"area_{table.unit}2"][rows].sum())
        where = "on screen" if self.scope.currentText() == VISIBLE else "in the whole mask"
        text = f"{_plural(rows.size, 'object')} {where}, total area {area:,.0f} {unit}"
        if self.scope.currentText() == VISIBLE:
            text += f" (of {len(table):,})"
        text += "."
        if self.stale:
            text += " Stale: the mask changed since — Measure again."
        return text

    def show_scope(self, *_: Any) -> None:
        """Show the count, histogram and table rows of the chosen scope."""
        table = self.table
        if table is None:
            return
        rows = self.scope_rows()
        self.summary.setText(self._summary_text())
        self.histogram.set_areas(table[f"area_{table.unit}2"][rows], "µm²" if table.mpp else "px²")
        self.model.set_table(table, rows)

    def go_to(self, row: int) -> None:
        """Centre the view on table row ``row``'s object and select its label."""
        table, layer = self.table, self.measured
        if table is None or layer is None:
            return
        box, centroid = object_box(table, row), object_centroid(table, row)
        centre_on(self.viewer, layer, centroid, box)
        try:
            value = label_of(layer, centroid, box)
        except (OSError, ValueError) as error:
            notify_error(error)
            return
        if value:
            layer.selected_label = value

    # -- saving -------------------------------------------------------------------------

    def _save_clicked(self) -> None:
        if self.table is None:
            notify_error(UserError("nothing to save: press Measure first"))
            return
        path, _ = QFileDialog.getSaveFileName(
            self, "Save the object table", "objects.csv", "CSV (*.csv);;Parquet (*.parquet)"
        )
        if path:
            self.save(path)

    def save(self, path: str) -> bool:
        """Write the whole table to ``path`` (``.csv`` or ``.parquet``); True when written."""
        try:
            if self.table is None:
                raise UserError("nothing to save: press Measure first")
            written = self.table.write(path)
        except (UserError, OSError) as error:
            notify_error(error)
            return False
        self.summary.setText(self._summary_text() + f" Saved {written.name}.")
        return True


def _unhook(camera: Any, callback: Any) -> Any:
    """Disconnect the camera when the widget is destroyed (a closure: the widget is gone)."""

    def unhook(*_args: Any) -> None:
        for event in (camera.events.center, camera.events.zoom):
            event.disconnect(callback)

    return unhook
