"""The Score widget: a predicted mask against an expert mask, with a TP/FP/FN overlay.

Thin over :func:`slide_unet.core.scoring.metrics.score`: the widget picks the two
masks (the truth a Labels layer or a file in any format
:func:`slide_unet.core.masks.io.read_mask` reads, an RLE CSV with its row id),
scores them in a background job, then shows Dice, IoU, object
precision/recall/F1, a per-tile table whose rows move the view to their tile,
and the overlay of :mod:`slide_unet.napari.overlay`. A GeoJSON truth (QuPath's
export) is scored by the class picked from those in the file, or all together.
*Show error map* adds the per-tile Dice as a heatmap over the slide
(:mod:`slide_unet.napari.error_map`); a later scoring updates it.

Bad input (no Labels layer, mismatched shapes, a missing or unreadable file,
a CSV whose row is not given) ends as one napari notification and changes
nothing: the previous results, table and overlay stay as they were.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from magicgui.widgets import ComboBox, Container, PushButton, RadioButtons
from qtpy.QtCore import Qt, Signal
from qtpy.QtWidgets import (
    QAbstractItemView,
    QFormLayout,
    QHeaderView,
    QLabel,
    QTableWidget,
    QTableWidgetItem,
    QWidget,
)

from slide_unet.core.errors import InputError, UserError
from slide_unet.core.masks.io import check_same_shape, read_mask
from slide_unet.napari.error_map import ERROR_MAP_KEY, show_error_map
from slide_unet.napari.jobs import Job, notify_error, start_job
from slide_unet.napari.layers import full_resolution, layer_by_name
from slide_unet.napari.mask_layer import save_pending
from slide_unet.napari.overlay import (
    legend_html,
    mask_layers,
    overlay_levels,
    show_overlay,
)
from slide_unet.napari.params import form, read_form, setting
from slide_unet.napari.scroll import scrolling_layout
from slide_unet.napari.truth_choice import FILE, LAYER, TruthFileFields

if TYPE_CHECKING:
    import napari

    from slide_unet.core.scoring.metrics import Scores

__all__ = ["ScoreParams", "ScoreWidget"]

#: The per-tile table's columns: heading and the record key it shows.
COLUMNS = (
    ("Row", "row"),
    ("Column", "col"),
    ("Dice", "dice"),
    ("Pred px", "pred_pixels"),
    ("True px", "true_pixels"),
)
#: The results shown above the table: key and label.
RESULTS = (
    ("dice", "Dice"),
    ("iou", "IoU"),
    ("object_precision", "Object precision"),
    ("object_recall", "Object recall"),
    ("object_f1", "Object F1"),
    ("objects", "Objects"),
    ("tiles", "Tiles"),
)


@dataclass(frozen=True)
class ScoreParams:
    """The scoring options: the keyword arguments of
    :func:`slide_unet.core.scoring.metrics.score`."""

    tile: int = setting(
        1024,
        "Tile size (px)",
        "Side of the per-tile table's tiles, in full-resolution pixels",
        min=16,
        max=65536,
        step=16,
    )
    iou_threshold: float = setting(
        0.5,
        "Object IoU",
        "Least overlap (intersection over union) of a predicted and a true object "
        "for them to count as the same object",
        min=0.05,
        max=1.0,
        step=0.05,
    )


@dataclass(frozen=True)
class _Truth:
    """Where the truth comes from: a layer's full-resolution array or a file."""

    name: str
    array: Any = None
    levels: tuple[Any, ...] = ()
    path: Path | None = None
    image_id: str | None = None
    classification: str | None = None


class ScoreWidget(QWidget):
    """Score a prediction (Labels layer) against the truth (Labels layer or file).

    Parameters
    ----------
    napari_viewer : napari.Viewer
        The viewer whose Labels layers are offered and where the overlay goes.

    Attributes
    ----------
    scores : Scores or None
        The last scores shown.
    overlay : napari.layers.Labels or None
        The last overlay added.
    error_map : napari.layers.Image or None
        The error map shown by :meth:`show_error_map`, if any.
    job : Job or None
        The last scoring job (cancel it with its ``cancel()``; wait on :attr:`finished`).
    results : dict of str to QLabel
        The scores shown: ``dice``, ``iou``, ``object_precision``,
        ``object_recall``, ``object_f1``, ``objects`` (counts) and ``tiles``.
    table : QTableWidget
        One row per tile with foreground in either mask, worst Dice first.
    finished : Signal
        Emitted on the main thread when a scoring job has ended, whatever
        happened (after the results and overlay are shown, or the error
        notified).
    """

    finished = Signal()

    def __init__(self, napari_viewer: napari.Viewer) -> None:
        super().__init__()
        self.viewer = napari_viewer
        self.scores: Scores | None = None
        self.overlay: Any = None
        self.error_map: Any = None
        self.job: Job | None = None
        self._scored_layer: Any = None
        self._records: list[dict[str, Any]] = []

        self.prediction = ComboBox(label="Prediction", choices=self._layer_names)
        self.truth_source = RadioButtons(
            label="Truth from", choices=[LAYER, FILE], value=LAYER, orientation="horizontal"
        )
        self.truth_layer = ComboBox(label="Truth layer", choices=self._layer_names)
        self.truth_fields = TruthFileFields()
        self.truth_file = self.truth_fields.file
        self.rle_id = self.truth_fields.rle_id
        self.truth_class = self.truth_fields.truth_class
        self.params = form(ScoreParams)
        self.score_button = PushButton(text="Score")
        self.score_button.changed.connect(self.score)
        self.error_map_button = PushButton(text="Show error map")
        self.error_map_button.tooltip = (
            "Dice per tile as a heatmap over the slide: red 0, green 1, "
            "clear where both masks are empty"
        )
        self.error_map_button.enabled = False
        self.error_map_button.changed.connect(self.show_error_map)
        self.truth_source.changed.connect(self._show_truth_fields)
        controls = Container(
            widgets=[
                self.prediction,
                self.truth_source,
                self.truth_layer,
                self.truth_file,
                self.rle_id,
                self.truth_class,
                self.params,
                self.score_button,
                self.error_map_button,
            ]
        )
        self._show_truth_fields()

        legend = QLabel(legend_html())
        legend.setTextFormat(Qt.TextFormat.RichText)
        legend.setWordWrap(True)
        summary = QFormLayout()
        self.results: dict[str, QLabel] = {}
        for key, label in RESULTS:
            value = QLabel("–")
            value.setWordWrap(True)
            value.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
            summary.addRow(label, value)
            self.results[key] = value
        self.table = QTableWidget(0, len(COLUMNS))
        self.table.setHorizontalHeaderLabels([heading for heading, _ in COLUMNS])
        self.table.setEditTriggers(QAbstractItemView.EditTrigger.NoEditTriggers)
        self.table.setSelectionBehavior(QAbstractItemView.SelectionBehavior.SelectRows)
        self.table.setSelectionMode(QAbstractItemView.SelectionMode.SingleSelection)
        self.table.verticalHeader().setVisible(False)
        self.table.setToolTip("Click a tile to move the view to it")
        self.table.horizontalHeader().setSectionResizeMode(QHeaderView.ResizeMode.Stretch)
        self.table.cellClicked.connect(self._jump_to_row)

        layout = scrolling_layout(self)
        layout.addWidget(controls.native)
        layout.addWidget(legend)
        layout.addLayout(summary)
        layout.addWidget(self.table)
        self._controls = controls  # kept alive with the widget

    # -- choosing the masks ------------------------------------------------------------------

    def _layer_names(self, _widget: Any = None) -> list[str]:
        """Labels layers a user may score, top first; earlier overlays are left out."""
        return [layer.name for layer in mask_layers(self.viewer)]

    def reset_choices(self, *_: Any) -> None:
        """Refresh the layer pickers (napari calls this as layers come, go or are renamed)."""
        self.prediction.reset_choices()
        self.truth_layer.reset_choices()

    def _show_truth_fields(self, *_: Any) -> None:
        from_file = self.truth_source.value == FILE
        self.truth_layer.visible = not from_file
        self.truth_fields.show(from_file)

    def _truth(self, shape: tuple[int, ...]) -> _Truth:
        """The truth as picked, checked as far as possible without reading a file."""
        if self.truth_source.value == LAYER:
            layer = layer_by_name(self.viewer, self.truth_layer.value)
            if layer is None:
                raise InputError("no truth layer: pick a Labels layer, or a file as the truth")
            array = full_resolution(layer)
            check_same_shape(
                array.shape,
                shape,
                (f"truth {layer.name!r}", f"prediction {self.prediction.value!r}"),
            )
            levels = tuple(layer.data) if layer.multiscale else (array,)
            return _Truth(layer.name, array=array, levels=levels)
        path, image_id, classification = self.truth_fields.picked()
        name = path.name
        if image_id:
            name = f"{path.name} [{image_id}]"
        if classification:
            name = f"{path.name} [{classification}]"
        return _Truth(name, path=path, image_id=image_id, classification=classification)

    # -- scoring -----------------------------------------------------------------------------

    def score(self) -> Job | None:
        """Score the picked prediction against the truth in the background.

        Returns
        -------
        Job or None
            The running job, or None when the input was refused (with a
            notification saying why).
        """
        if self.job is not None and self.job.running:
            notify_error(UserError("scoring is already running: wait, or cancel it"))
            return None
        try:
            layer = layer_by_name(self.viewer, self.prediction.value)
            if layer is None:
                raise InputError(
                    "no prediction: add or open a Labels layer (a mask) and pick it as the "
                    "prediction"
                )
            save_pending(layer, layer_by_name(self.viewer, self.truth_layer.value))
            pred = full_resolution(layer)
            if len(pred.shape) != 2:
                raise InputError(
                    f"the prediction {layer.name!r} has shape {tuple(pred.shape)}: "
                    "scoring needs a 2-D mask"
                )
            truth = self._truth(tuple(pred.shape))
            params = read_form(ScoreParams, self.params)
        except (UserError, OSError) as error:
            notify_error(error)
            return None

        pred_levels = list(layer.data) if layer.multiscale else [pred]
        shape = tuple(int(v) for v in pred.shape)
        pred_name = layer.name  # read here: the work runs in another thread

        def work(progress: Any, cancel: Any, _partial: Any) -> tuple[Any, list[Any]]:
            from slide_unet.core.scoring.metrics import score

            truth_array = truth.array
            if truth.path is not None:
                truth_array = read_mask(
                    truth.path,
                    image_id=truth.image_id,
                    shape=shape,
                    classification=truth.classification,
                )
                check_same_shape(
                    truth_array,
                    shape,
                    (f"truth {truth.name}", f"prediction {pred_name!r}"),
                )
            scores = score(
                pred,
                truth_array,
                **dataclasses.asdict(params),
                progress=progress,
                cancelled=cancel.is_set,
            )
            levels = overlay_levels(
                pred_levels, truth_array, truth.levels, cancelled=cancel.is_set
            )
            return scores, levels

        def done(result: tuple[Any, list[Any]]) -> None:
            scores, levels = result
            self._show(scores, layer)
            self.overlay = show_overlay(
                self.viewer,
                levels,
                name=f"{pred_name} vs {truth.name}",
                pair=(pred_name, truth.name),
                like=layer,
            )
            if any(ERROR_MAP_KEY in (lay.metadata or {}) for lay in self.viewer.layers):
                self.show_error_map()  # one already shown: it follows the new scores

        self.score_button.enabled = False
        self.job = start_job(
            work,
            f"Scoring {pred_name} against {truth.name}",
            done=done,
            finished=self._finished,
        )
        return self.job

    def show_error_map(self) -> Any:
        """Show the last scores' Dice per tile as a heatmap over the slide.

        Adds the Image layer :data:`~slide_unet.napari.error_map.ERROR_MAP_NAME`
        (one pixel per tile, lined up with the scored layer), or updates it.

        Returns
        -------
        napari.layers.Image or None
            The layer, or None before anything was scored (with a notification).
        """
        if self.scores is None or self._scored_layer is None:
            notify_error(UserError("nothing scored yet: press Score first"))
            return None
        self.error_map = show_error_map(self.viewer, self.scores.tiles, like=self._scored_layer)
        return self.error_map

    def _finished(self) -> None:
        self.score_button.enabled = True
        self.finished.emit()

    # -- results -----------------------------------------------------------------------------

    def _show(self, scores: Scores, layer: Any) -> None:
        self.scores = scores
        self._scored_layer = layer
        self.error_map_button.enabled = True
        shown = {
            "dice": f"{scores.dice:.4f}",
            "iou": f"{scores.iou:.4f}",
            "object_precision": f"{scores.object_precision:.3f}",
            "object_recall": f"{scores.object_recall:.3f}",
            "object_f1": f"{scores.object_f1:.3f}",
            "objects": f"{scores.true_positives} matched, "
            f"{scores.false_positives} false positive, {scores.false_negatives} missed "
            f"({scores.n_pred_objects} predicted, {scores.n_true_objects} true; "
            f"match at IoU ≥ {scores.iou_threshold:g})",
            "tiles": f"mean Dice {scores.tile_dice_mean_nonempty:.4f} over the "
            f"{int((~scores.tiles.empty).sum())} tiles of {scores.tile} px with foreground",
        }
        for key, text in shown.items():
            self.results[key].setText(text)
        # Empty-empty tiles (Dice 1 by convention) would bury the ones worth looking at.
        self._records = [r for r in scores.tiles.records() if r["pred_pixels"] + r["true_pixels"]]
        self.table.setSortingEnabled(False)
        self.table.setRowCount(len(self._records))
        for row, record in enumerate(self._records):
            for column, (_, key) in enumerate(COLUMNS):
                value = round(record[key], 4) if key == "dice" else record[key]
                item = QTableWidgetItem()
                # Numbers as display data so sorting by a column is numeric.
                item.setData(Qt.ItemDataRole.DisplayRole, value)
                item.setData(Qt.ItemDataRole.UserRole, row)
                self.table.setItem(row, column, item)
        self.table.setSortingEnabled(True)
        self.table.sortItems(COLUMNS.index(("Dice", "dice")), Qt.SortOrder.AscendingOrder)

    def _jump_to_row(self, row: int, _column: int = 0) -> None:
        """Centre the view on the tile of table row ``row`` and zoom so it fills the view."""
        item = self.table.item(row, 0)
        if item is None or self._scored_layer is None:
            return
        record = self._records[item.data(Qt.ItemDataRole.UserRole)]
        layer = self._scored_layer
        y, x, h, w = record["y"], record["x"], record["height"], record["width"]
        # Pixel i covers data coordinates i - 0.5 to i + 0.5.
        edges = ((y - 0.5, x - 0.5), (y + h - 0.5, x + w - 0.5))
        corners = [layer.data_to_world(p)[-2:] for p in edges]
        start, end = (tuple(float(v) for v in c) for c in corners)
        self.viewer.camera.center = tuple((a + b) / 2 for a, b in zip(start, end, strict=True))
        extent = [max(abs(b - a), 1e-12) for a, b in zip(start, end, strict=True)]
        canvas = self.viewer.canvas.size
        self.viewer.camera.zoom = 0.95 * min(canvas[0] / extent[0], canvas[1] / extent[1])
