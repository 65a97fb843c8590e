"""The Fine-tune widget: train a model further on the masks the user corrected.

Thin over :func:`slide_unet.core.training.finetune.finetune`. The training data is an
image layer with its corrected Labels layer (one pair, or several added to a
list), or a folder of images with a folder of masks paired by file name
(:func:`~slide_unet.core.training.image_pairs.find_pairs`). A Shapes layer may restrict
a pair to the regions the user corrected: each shape (rectangle, polygon,
anything) counts as its bounding box in the image's pixels, and training
weighs patches toward those boxes. The mask store keeps the mask, not a
history of where it was edited, so the regions are whatever the user draws.

Training runs in the background (:mod:`slide_unet.napari.jobs`) with
napari's progress bar and Cancel, a progress bar and Cancel button here, and
a live curve (:mod:`slide_unet.napari.curve`): the base model's validation
Dice as soon as it is measured, the training loss every few steps, and each
epoch's validation Dice. The time budget covers the whole run, the last
validation and the save included. When it ends (finished, time budget spent,
or cancelled) the best weights are saved as a new user model, Dice before and
after is shown, every open Segment widget lists and selects the new model at
once, and *Segment viewport with it* runs it on what is on screen (both asked of
the Segment widget through :mod:`slide_unet.napari.segment_request`, not by
importing it).

Memory is bounded: a pair is read whole only when it has at most
:data:`MAX_PIXELS` pixels; a larger image (a whole slide) needs regions, and
then only their bounding area is read.
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from magicgui.widgets import ComboBox, Container, FileEdit, Label, LineEdit, PushButton
from magicgui.widgets import RadioButtons as MagicRadioButtons
from napari.utils.notifications import show_info
from qtpy.QtCore import Qt, QTimer, Signal
from qtpy.QtWidgets import (
    QFileDialog,
    QFormLayout,
    QInputDialog,
    QLabel,
    QListWidget,
    QProgressBar,
    QWidget,
)
from superqt import QCollapsible

from slide_unet.core.errors import InputError, UserError
from slide_unet.napari.curve import TrainingCurve
from slide_unet.napari.finetune_input import (
    MAX_PIXELS,
    LayerPair,
    check_new_name,
    default_model_name,
    layer_pair,
    layer_pairs,
    megapixels,
)
from slide_unet.napari.jobs import Job, failure_text, notify_error, start_job
from slide_unet.napari.layers import image_layers, labels_layers
from slide_unet.napari.params import form, read_form, setting
from slide_unet.napari.pickers import device_choices, model_summary
from slide_unet.napari.scroll import scrolling_layout
from slide_unet.napari.segment_request import publish_model
from slide_unet.napari.segment_request import segment_viewport as request_segment_viewport

if TYPE_CHECKING:
    import napari

    from slide_unet.core.training.finetune import FinetuneResult

__all__ = ["FinetuneSettings", "FinetuneWidget"]

LAYERS, FOLDERS = "Layers", "Folders"
#: How often the progress bar follows the clock between epochs (and napari's
#: Cancel button in the activity dock is noticed).
TICK_MS = 500
#: Where a pair-list item keeps its layer names.
_ROLE = Qt.ItemDataRole.UserRole


@dataclass(frozen=True)
class FinetuneSettings:
    """The Fine-tune widget's options: keyword arguments of the core's ``finetune``."""

    minutes: float = setting(
        10.0,
        "Time budget (min)",
        "The run, its last validation and the save end within this many minutes (or "
        "after the epochs below, whichever is first); the best model so far is kept",
        min=0.05,
        max=24 * 60.0,
        step=1.0,
    )
    learning_rate: float = setting(
        3e-4,
        "Learning rate",
        "Peak learning rate; low, so the model adapts without forgetting",
        advanced=True,
        min=1e-6,
        max=0.1,
        step=1e-5,
    )
    epochs: int = setting(
        0, "Epochs", "0: as many as the time budget allows", advanced=True, min=0, max=100_000
    )
    batch_size: int = setting(8, "Batch", "patches per step", advanced=True, min=1, max=256)
    device: str = setting(
        "auto",
        "Device",
        "auto: the GPU when there is one",
        advanced=True,
        # A callable, not a list: magicgui resets a combo box to its declared
        # choices when the widget is docked, which would drop a list set later.
        choices=lambda _widget=None: device_choices(),
    )


@dataclass(frozen=True)
class _PixelSize:
    """The pixel size of images (layers or files) that do not record one."""

    mpp: float = setting(
        0.0,
        "Pixel size (µm)",
        "of images whose layer or file does not record one; 0: the model's default",
        min=0.0,
        max=1000.0,
        step=0.05,
    )


class FinetuneWidget(QWidget):
    """Fine-tune a model on corrected masks and make it available to Segment.

    Parameters
    ----------
    napari_viewer : napari.Viewer

    Attributes
    ----------
    job : Job or None
        The last fine-tuning job.
    result : FinetuneResult or None
        The last successful run (finished or cancelled after an epoch).
    curve : TrainingCurve
        Training loss and validation Dice, live.
    finished : Signal
        Emitted on the main thread when a run has ended, whatever happened,
        after the results are shown (tests and callers wait on this).
    export_job : Job or None
        The last bioimage.io export.
    exported : Signal
        Emitted on the main thread when an export has ended, whatever happened.
    """

    finished = Signal()
    exported = Signal()

    def __init__(self, napari_viewer: napari.Viewer) -> None:
        super().__init__()
        self.viewer = napari_viewer
        self.job: Job | None = None
        self.result: FinetuneResult | None = None
        self._cards: dict[str, Any] = {}
        self._auto_name = ""
        self._started = 0.0
        self._budget = 0.0
        self._epochs = 0
        self._last_epoch = 0
        self._trained_on: str | None = None
        self._running = False

        # -- training data
        self.source = MagicRadioButtons(
            label="Train on", choices=[LAYERS, FOLDERS], value=LAYERS, orientation="horizontal"
        )
        self.image = ComboBox(label="Image", choices=self._image_choices)
        self.mask = ComboBox(label="Corrected mask", choices=self._labels_choices)
        self.mask.tooltip = "The Labels layer with the corrected mask (non-zero is foreground)"
        self.regions = ComboBox(label="Regions", choices=self._shapes_choices, nullable=True)
        self.regions.tooltip = (
            "Optional Shapes layer: rectangles (or any shapes) around the parts you corrected; "
            f"training concentrates there. Needed for images over {megapixels(MAX_PIXELS)}, "
            "of which only the regions' bounding area is read"
        )
        self.add_pair_button = PushButton(text="Add pair")
        self.add_pair_button.tooltip = "Train on several image/mask pairs: add each to the list"
        self.remove_pair_button = PushButton(text="Remove pair")
        self.pair_list = QListWidget()
        self.pair_list.setMaximumHeight(80)
        self.pair_list.setToolTip("Pairs to train on; when empty, the image and mask picked above")
        self.images_dir = FileEdit(label="Images folder", mode="d")
        self.masks_dir = FileEdit(label="Masks folder", mode="d")
        self.masks_dir.tooltip = (
            "Masks named as their images (any mask format); non-zero is foreground"
        )
        self.pixel_size = form(_PixelSize)

        # -- model and budget
        self.model = ComboBox(label="Base model", choices=self._model_choices)
        self.model_info = Label()
        self.model_info.native.setWordWrap(True)  # a long summary wraps, not widens
        self.new_name = LineEdit(label="New model name")
        self.new_name.tooltip = "Saved among your models; bundled models are never overwritten"
        self.settings = form(FinetuneSettings, advanced=False)
        self.advanced = form(FinetuneSettings, advanced=True)
        self.run_button = PushButton(text="Fine-tune")
        self.cancel_button = PushButton(text="Cancel", enabled=False)
        self.progress_bar = QProgressBar()
        self.progress_bar.setRange(0, 100)
        self.progress_bar.setValue(0)
        self.status = Label()
        self.curve = TrainingCurve()
        self.before_dice, self.after_dice, self.saved = QLabel(), QLabel(), QLabel()
        results = QFormLayout()
        for label, value in (
            ("Dice before", self.before_dice),
            ("Dice after", self.after_dice),
            ("Saved as", self.saved),
        ):
            value.setWordWrap(True)
            value.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
            results.addRow(label, value)
        self.segment_button = PushButton(text="Segment viewport with it", enabled=False)
        self.segment_button.tooltip = "Run the new model on what is on screen (Segment widget)"
        self.export_button = PushButton(text="Export for bioimage.io…", enabled=False)
        self.export_button.tooltip = (
            "Write the new model as a bioimage.io model package (.zip) for other "
            "bioimage.io tools (needs the bioimageio extra)"
        )
        self.export_job: Job | None = None

        pair_buttons = Container(
            widgets=[self.add_pair_button, self.remove_pair_button], layout="horizontal"
        )
        self._layer_fields = Container(widgets=[self.image, self.mask, self.regions])
        self._folder_fields = Container(widgets=[self.images_dir, self.masks_dir])
        model_fields = Container(
            widgets=[*self.pixel_size, self.model, self.model_info, self.new_name, *self.settings]
        )
        run_buttons = Container(widgets=[self.run_button, self.cancel_button], layout="horizontal")
        self._containers = [pair_buttons, model_fields, run_buttons]  # kept alive
        fold = QCollapsible("Advanced options")
        fold.addWidget(self.advanced.native)

        layout = scrolling_layout(self)
        layout.addWidget(self.source.native)
        layout.addWidget(self._layer_fields.native)
        layout.addWidget(pair_buttons.native)
        layout.addWidget(self.pair_list)
        layout.addWidget(self._folder_fields.native)
        layout.addWidget(model_fields.native)
        layout.addWidget(fold)
        layout.addWidget(run_buttons.native)
        layout.addWidget(self.progress_bar)
        layout.addWidget(self.status.native)
        layout.addWidget(self.curve)
        layout.addLayout(results)
        layout.addWidget(self.segment_button.native)
        layout.addWidget(self.export_button.native)
        layout.addStretch()
        self._pair_buttons = pair_buttons
        for label in (self.status, self.model_info):
            label.native.setWordWrap(True)

        self.source.changed.connect(self._show_source)
        self.model.changed.connect(self._model_changed)
        self.add_pair_button.clicked.connect(self.add_pair)
        self.remove_pair_button.clicked.connect(self.remove_pair)
        self.run_button.clicked.connect(self.run)
        self.cancel_button.clicked.connect(self.cancel)
        self.segment_button.clicked.connect(self.segment_viewport)
        self.export_button.clicked.connect(self.export_bioimageio)
        for event in (self.viewer.layers.events.inserted, self.viewer.layers.events.removed):
            event.connect(self.reset_choices)
        self._tick = QTimer(self)
        self._tick.setInterval(TICK_MS)
        self._tick.timeout.connect(self._follow_clock)
        self.reset_choices()
        self._model_changed()
        self._show_source()

    # -- pickers -------------------------------------------------------------------

    def _image_choices(self, _widget: Any = None) -> list[str]:
        return [layer.name for layer in image_layers(self.viewer)]

    def _labels_choices(self, _widget: Any = None) -> list[str]:
        return [layer.name for layer in labels_layers(self.viewer)]

    def _shapes_choices(self, _widget: Any = None) -> list[str]:
        from napari.layers import Shapes

        return [layer.name for layer in reversed(self.viewer.layers) if isinstance(layer, Shapes)]

    def _model_choices(self, _widget: Any = None) -> list[str]:
        from slide_unet.core.model.store import list_models

        self._cards = list_models()
        return list(self._cards)

    def reset_choices(self, _event: Any = None) -> None:
        """Follow the viewer's layers (napari calls this on layer changes)."""
        for combo in (self.image, self.mask, self.regions):
            combo.reset_choices()
        for combo in (self.image, self.mask):
            if combo.value is None and combo.choices:
                combo.value = combo.choices[0]

    def refresh_models(self, select: str | None = None) -> None:
        """Re-read the model list, keeping (or selecting) the base model."""
        current = self.model.value
        self.model.reset_choices()
        wanted = select if select is not None else current
        if wanted in self.model.choices:
            self.model.value = wanted
        self._model_changed()

    def _model_changed(self, _value: Any = None) -> None:
        card = self._cards.get(self.model.value)
        self.model_info.value = model_summary(card) if card is not None else ""
        # Follow the base model unless the user typed a name of their own.
        if self.model.value and self.new_name.value in ("", self._auto_name):
            self._auto_name = default_model_name(self.model.value, set(self._cards))
            self.new_name.value = self._auto_name

    def _show_source(self, _value: Any = None) -> None:
        layers = self.source.value == LAYERS
        self._layer_fields.visible = layers
        self._pair_buttons.visible = layers
        self.pair_list.setVisible(layers)
        self._folder_fields.visible = not layers

    # -- the pair list -------------------------------------------------------------

    @property
    def pairs(self) -> list[tuple[str, str, str | None]]:
        """The listed pairs: ``(image layer, Labels layer, Shapes layer or None)``."""
        return [tuple(self.pair_list.item(i).data(_ROLE)) for i in range(self.pair_list.count())]

    def add_pair(self) -> bool:
        """Add the picked image, mask and regions to the list (checked first)."""
        from qtpy.QtWidgets import QListWidgetItem

        names = (self.image.value, self.mask.value, self.regions.value)
        try:
            layer_pair(self.viewer, *names)
            if names in self.pairs:
                raise InputError(f"{names[0]!r} with {names[1]!r} is listed already")
        except UserError as exc:
            notify_error(exc)
            return False
        text = f"{names[0]}  +  {names[1]}" + (f"  [{names[2]}]" if names[2] else "")
        item = QListWidgetItem(text)
        item.setData(_ROLE, list(names))
        self.pair_list.addItem(item)
        return True

    def remove_pair(self) -> None:
        """Remove the selected pair (the last one when none is selected)."""
        row = self.pair_list.currentRow()
        self.pair_list.takeItem(row if row >= 0 else self.pair_list.count() - 1)

    # -- running -------------------------------------------------------------------

    def run(self) -> Job | None:
        """Start fine-tuning; returns the job, or None (one notification) on bad input."""
        if self._running:
            notify_error(UserError("fine-tuning is already running: cancel it first"))
            return None
        try:
            return self._start()
        except (UserError, OSError) as exc:
            notify_error(exc)
            return None

    def _training_data(self) -> tuple[list[LayerPair], Any]:
        """The layer pairs, or the folders' pairs, checked on the main thread."""
        if self.source.value == FOLDERS:
            from slide_unet.core.training.image_pairs import find_pairs

            images, masks = self.images_dir.value, self.masks_dir.value
            if not str(images) or str(images) == "." or not str(masks) or str(masks) == ".":
                raise InputError("pick a folder of images and a folder of their masks")
            files, _unpaired = find_pairs(images, masks)
            return [], files
        listed = self.pairs or [(self.image.value, self.mask.value, self.regions.value)]
        return layer_pairs(self.viewer, listed), None

    def _start(self) -> Job:
        base = self.model.value
        if not base:
            raise InputError("no base model: none is bundled or saved")
        name = check_new_name(self.new_name.value, set(self._model_choices()))
        layer_pairs, files = self._training_data()
        options = read_form(FinetuneSettings, self.settings, self.advanced)
        mpp = self.pixel_size.mpp.value or None
        command = (
            f"napari-slide-unet Fine-tune widget: --model {base} --minutes {options.minutes:g}"
            + (f" --epochs {options.epochs}" if options.epochs else "")
            + f" --learning-rate {options.learning_rate:g} --batch-size {options.batch_size}"
            + (
                f" --images {files[0].image.parent} --masks {files[0].mask.parent}"
                if files
                else ""
            )
            + f" -o {name}"
        )

        def work(progress: Any, cancel: threading.Event, partial: Any) -> FinetuneResult:
            from slide_unet.core.training.finetune import finetune

            pairs = list(files) if files else [pair.read() for pair in layer_pairs]

            def after_validation(record: dict[str, Any]) -> None:
                partial(dict(record))
                progress(self._percent(int(record["epoch"])), 100)

            return finetune(
                base,
                pairs,
                name,
                minutes=options.minutes,
                epochs=options.epochs or None,
                mpp=mpp,
                learning_rate=options.learning_rate,
                batch_size=options.batch_size,
                device=options.device,
                command=command,
                progress=after_validation,
                losses=lambda record: partial(dict(record)),
                say=partial,
                cancel=cancel,
            )

        self.result = None
        self._trained_on = layer_pairs[0].stem if layer_pairs else None
        self.curve.clear()
        for label in (self.before_dice, self.after_dice, self.saved):
            label.setText("")
        self.segment_button.enabled = False
        self.export_button.enabled = False
        self.progress_bar.setValue(0)
        self._started = time.monotonic()
        self._budget = options.minutes * 60
        self._epochs = options.epochs
        self._last_epoch = 0
        what = f"{len(files)} image pairs" if files else ", ".join(p.stem for p in layer_pairs)
        self.status.value = f"fine-tuning {base} on {what}..."
        self.run_button.enabled = False
        self.cancel_button.enabled = True
        self.job = start_job(
            work,
            f"Fine-tuning {base}",
            done=self._done,
            partial=self._partial,
            failed=self._failed,
            finished=self._finished,
        )
        self._running = True
        self._tick.start()
        return self.job

    def _percent(self, epoch: int | None = None) -> int:
        """How far the run is: epochs done or time spent, whichever is further, in %."""
        done = [(time.monotonic() - self._started) / self._budget] if self._budget else []
        if self._epochs:
            done.append((self._last_epoch if epoch is None else epoch) / self._epochs)
        return int(min(max([*done, 0.0]), 1.0) * 100)

    def _follow_clock(self) -> None:
        if self.job is not None and self._running:
            percent = self._percent()
            self.job.signals.progress.emit(percent, 100)  # also notices napari's Cancel
            self.progress_bar.setValue(percent)

    def _partial(self, value: Any) -> None:
        if isinstance(value, dict) and "val_dice" in value:  # a validation
            self.curve.add(value)
            self._last_epoch = int(value["epoch"])
            self.progress_bar.setValue(self._percent())
            dice = value["val_dice"]
            if self._last_epoch == 0:
                self.before_dice.setText(_dice_text(dice))
                self.status.value = f"base model: validation Dice {dice:.4f}; training..."
            else:
                self.status.value = (
                    f"epoch {value['epoch']}: loss {value.get('loss', float('nan')):.4f}, "
                    f"validation Dice {dice:.4f}"
                )
        elif isinstance(value, dict):  # the training loss of the last few steps
            self.curve.add_loss(value)
            self.status.value = (
                f"epoch {value['epoch']}, step {value['step']}: loss {value['loss']:.4f}"
            )
        else:  # a message from the core
            self.status.value = str(value)

    def cancel(self) -> None:
        """Stop after the current step; the best model so far is kept."""
        # Not ``job.running``: a job just started may not have reached its thread yet.
        if self.job is not None and self._running:
            self.job.cancel()
            self.status.value = "cancelling..."

    def _done(self, result: FinetuneResult) -> None:
        self.result = result
        self.curve.set_history(result.history)
        self.before_dice.setText(_dice_text(result.before_dice))
        self.after_dice.setText(_dice_text(result.after_dice))
        name = result.card.name
        self.saved.setText(f"{name} ({result.path})")
        epochs = max((int(h["epoch"]) for h in result.history), default=0)
        if result.stopped == "cancelled" and epochs == 0:
            self.status.value = (
                f"cancelled before the first epoch ended: nothing was learned; {name} was "
                "saved with the base model's weights"
            )
        elif result.stopped == "cancelled":
            self.status.value = (
                f"cancelled after {epochs} epochs: the best model so far is saved as {name}"
            )
        else:
            self.status.value = f"done: {epochs} epochs, saved as {name}"
        self.progress_bar.setValue(100)
        self.publish(name)
        self.segment_button.enabled = True
        self.export_button.enabled = True
        show_info(
            f"Fine-tuned {name}: validation Dice {_dice_text(result.before_dice)} → "
            f"{_dice_text(result.after_dice)}"
        )

    def _failed(self, error: BaseException) -> None:
        self.status.value = failure_text(
            error, "cancelled before the first epoch ended: nothing was saved"
        )

    def _finished(self) -> None:
        self._running = False
        self._tick.stop()
        self.run_button.enabled = True
        self.cancel_button.enabled = False
        self.finished.emit()

    # -- the new model in Segment --------------------------------------------------
    # Asked of the Segment widget through slide_unet.napari.segment_request: this
    # module does not import the Segment widget.

    def publish(self, name: str) -> None:
        """List (and select) model ``name`` here and in every open Segment widget."""
        self.new_name.value = ""  # taken now: the next run gets a fresh default
        self.refresh_models()
        publish_model(self.viewer, name)

    def segment_viewport(self) -> Job | None:
        """Segment what is on screen with the new model (opening Segment if needed)."""
        if self.result is None:
            notify_error(UserError("fine-tune a model first"))
            return None
        return request_segment_viewport(self.viewer, self.result.card.name, self._trained_on)

    # -- sharing the new model -----------------------------------------------------

    def export_bioimageio(self) -> Job | None:
        """Ask where, then write the new model as a bioimage.io package in the background.

        The fine-tuned card records its base model's licence but claims none, so
        the licence is asked for (offered: the base model's). Returns the job, or
        None when there is no model yet or the user cancelled a dialog.
        """
        if self.result is None:
            notify_error(UserError("fine-tune a model first"))
            return None
        card = self.result.card
        licence = card.licence
        if not licence:
            from slide_unet.core.model.bioimageio_export import licence_alias

            offered = licence_alias(str(card.training.get("parent_licence") or ""))
            licence, ok = QInputDialog.getText(
                self,
                "Licence of the fine-tuned weights",
                "SPDX licence identifier for bioimage.io (e.g. CC-BY-4.0, CC0-1.0, MIT)"
                + (f"; the base model's is {offered}" if offered else "")
                + ":",
                text=offered,
            )
            if not ok or not licence.strip():
                return None
        path, _ = QFileDialog.getSaveFileName(
            self,
            "Export for bioimage.io",
            str(Path(self.result.path).with_name(f"{card.name}.bioimageio.zip")),
            "bioimage.io model package (*.zip)",
        )
        if not path:
            return None
        output = Path(path) if path.lower().endswith(".zip") else Path(path + ".zip")
        weights = Path(self.result.path)

        def work(progress: Any, cancel: threading.Event, partial: Any) -> Path:
            from slide_unet.core.model.bioimageio_export import export_bioimageio

            return export_bioimageio(weights, output, licence=licence.strip())

        def done(written: Path) -> None:
            self.status.value = f"exported {card.name} for bioimage.io: {written}"
            show_info(f"Wrote the bioimage.io package {written}")

        def failed(error: BaseException) -> None:
            self.status.value = failure_text(error, "export cancelled")

        self.status.value = f"exporting {card.name} for bioimage.io..."
        self.export_button.enabled = False

        def finished() -> None:
            self.export_button.enabled = self.result is not None and not self._running
            self.exported.emit()

        self.export_job = start_job(
            work,
            f"Exporting {card.name} for bioimage.io",
            done=done,
            failed=failed,
            finished=finished,
        )
        return self.export_job


def _dice_text(value: float | None) -> str:
    return "–" if value is None else f"{value:.4f}"
