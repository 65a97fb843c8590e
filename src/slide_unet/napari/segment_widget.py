"""The Segment widget: run a U-Net over the viewport or the whole slide.

Pick an image layer, a model (bundled or the user's own, with its pixel size
and validation Dice), a device, and *Viewport* (what is on screen) or *Whole
slide*; press Segment. The work runs in a background thread
(:mod:`slide_unet.napari.jobs`) with a napari progress bar and Cancel; tiles
stream into the slide's mask store (:mod:`slide_unet.napari.mask_layer`),
whose Labels layer appears at once and fills in as tiles finish. Re-running
on the viewport rewrites only that region; each new tile replaces the old one
as it lands, so Cancel leaves the earlier mask everywhere else. A store that
holds hand edits is copied aside before segmentation writes over it, so edits
are never lost.
"""

from __future__ import annotations

import dataclasses
import threading
from dataclasses import make_dataclass
from typing import TYPE_CHECKING, Any

from magicgui.widgets import CheckBox, ComboBox, Container, Label, PushButton
from napari.utils.notifications import show_info
from qtpy.QtCore import QTimer, Signal
from qtpy.QtWidgets import QWidget
from superqt import QCollapsible

from slide_unet.core.errors import InputError, UserError
from slide_unet.core.inference.into_store import segment_into_store
from slide_unet.core.inference.options import SegmentOptions
from slide_unet.core.masks.store import MaskStore
from slide_unet.napari.jobs import Job, failure_text, notify_error, start_job
from slide_unet.napari.layer_data import mask_layer_kwargs
from slide_unet.napari.layers import (
    full_resolution,
    image_layers,
    layer_by_name,
    layer_mpp,
    slide_path,
    visible_region,
)
from slide_unet.napari.live_view import LiveView
from slide_unet.napari.mask_layer import attach_store, find_mask_layer, store_for_image
from slide_unet.napari.params import form, option_settings, read_form, setting
from slide_unet.napari.pickers import device_choices, device_summary, model_summary
from slide_unet.napari.scroll import scrolling_layout

if TYPE_CHECKING:
    import napari

__all__ = ["VIEWPORT", "WHOLE_SLIDE", "SegmentSettings", "SegmentWidget"]

VIEWPORT, WHOLE_SLIDE = "Viewport", "Whole slide"

#: Shortest time between two refreshes of the Labels layer while tiles land: each
#: re-reads and redraws the view, which without a GPU cost an 8,192² run about 5 %
#: at 4 a second. After the first ten seconds of a run, every other second.
REFRESH_SECONDS = 1.0
LATE_REFRESH_SECONDS = 2.0
#: The settings a Live view runs with (``_start_live``): changing one restarts it.
LIVE_SETTINGS = frozenset({"device", "threshold", "tta", "colour"})


#: The Segment widget's form: where to segment, then the fields of
#: :class:`~slide_unet.core.inference.options.SegmentOptions` that have a form entry
#: (device, tile, batch, threshold, min. object, TTA), labels, tooltips, limits and
#: defaults all from there. :meth:`SegmentWidget.options` turns its values into
#: SegmentOptions (``SegmentOptions.from_form`` maps the form's 0s back to None).
SegmentSettings = make_dataclass(
    "SegmentSettings",
    [
        (
            "region",
            str,
            setting(
                VIEWPORT,
                "Segment",
                "Viewport: the part of the slide on screen now; Whole slide: every tile",
                choices=[VIEWPORT, WHOLE_SLIDE],
                widget_type="RadioButtons",
            ),
        ),
        # device's choices: a callable, which magicgui re-evaluates when the widget docks.
        *option_settings(SegmentOptions, device={"choices": lambda _w=None: device_choices()}),
    ],
    frozen=True,
)
SegmentSettings.__module__ = __name__  # make_dataclass's module= needs Python 3.12


def _warm_imports() -> None:
    """Import in the background what the first Labels layer needs (pandas, for its
    features table: 0.6 s), so the Segment click does not pay for it on the UI thread."""
    import pandas  # noqa: F401


def _source_of(image: Any) -> Any:
    """What the engine reads: the slide file the plugin opened, else the layer's data."""
    path = slide_path(image)
    return path if path and (image.metadata or {}).get("slide_path") else image.data


class SegmentWidget(QWidget):
    """Segment the viewport or the whole slide of an image layer with a U-Net.

    Attributes
    ----------
    finished : Signal
        Emitted on the main thread when a run ends, whatever the outcome (wait
        on this rather than on the job's worker: a short run may finish before
        a caller connects to the worker).
    """

    finished = Signal()

    def __init__(self, napari_viewer: napari.Viewer) -> None:
        super().__init__()
        self.viewer = napari_viewer
        threading.Thread(target=_warm_imports, daemon=True).start()
        self.job: Job | None = None
        self.last_result: dict[str, Any] | None = None
        self._cards: dict[str, Any] = {}

        self.image = ComboBox(label="Image", choices=self._image_choices)
        self.model = ComboBox(label="Model", choices=self._model_choices)
        self.model_info = Label()
        self.model_info.native.setWordWrap(True)  # a long summary wraps, not widens
        self.settings = form(SegmentSettings, advanced=False)
        self.device_info = Label()
        self.advanced = form(SegmentSettings, advanced=True)
        self.run_button = PushButton(text="Segment")
        self.cancel_button = PushButton(text="Cancel", enabled=False)
        self.live_switch = CheckBox(
            text="Live",
            tooltip="segment what is on screen as you pan and zoom: blocks nearest the "
            "centre first, none twice, hand edits never written over",
        )
        self.live: LiveView | None = None
        self.status = Label()
        top = Container(
            widgets=[self.image, self.model, self.model_info, *self.settings, self.device_info]
        )
        buttons = Container(
            widgets=[self.run_button, self.cancel_button, self.live_switch], layout="horizontal"
        )

        fold = QCollapsible("Advanced options")
        fold.addWidget(self.advanced.native)
        layout = scrolling_layout(self)
        layout.addWidget(top.native)
        layout.addWidget(fold)
        layout.addWidget(buttons.native)
        layout.addWidget(self.status.native)
        layout.addStretch()

        self.model.changed.connect(self._show_model)
        self.settings.device.changed.connect(self._show_device)
        self.run_button.clicked.connect(self.run)
        self.cancel_button.clicked.connect(self.cancel)
        self.live_switch.changed.connect(self._toggle_live)
        # New model or settings while Live is on: a new result, from the view now.
        self.model.changed.connect(self._restart_live)
        self.image.changed.connect(self._restart_live)
        for widget in (*self.settings, *self.advanced):
            if widget.name in LIVE_SETTINGS:  # others (batch size, min. object) it ignores
                widget.changed.connect(self._restart_live)
        for event in (self.viewer.layers.events.inserted, self.viewer.layers.events.removed):
            event.connect(self.reset_choices)
        self.reset_choices()
        self._show_model()
        self._show_device()

        self._dirty = False
        self._refresh_timer = QTimer(self)
        self._refresh_timer.setInterval(int(REFRESH_SECONDS * 1000))
        self._refresh_timer.timeout.connect(self._refresh_layer)
        self._settle_timer = QTimer(self)  # a run's first seconds refresh faster
        self._settle_timer.setSingleShot(True)
        self._settle_timer.setInterval(10_000)
        self._settle_timer.timeout.connect(self._slow_refresh)
        self.layer: Any = None

    # -- pickers -----------------------------------------------------------------

    def _image_choices(self, _widget: Any = None) -> list[str]:
        return [layer.name for layer in image_layers(self.viewer)]

    def _model_choices(self, _widget: Any = None) -> list[str]:
        from slide_unet.core.model.store import list_models

        self._cards = list_models()
        return list(self._cards)

    def reset_choices(self, _event: Any = None) -> None:
        """Follow the viewer's image layers (napari calls this on layer changes)."""
        self.image.reset_choices()
        if self.image.value is None and self.image.choices:
            self.image.value = self.image.choices[0]

    def refresh_models(self, select: str | None = None) -> None:
        """Re-read the model list (e.g. after fine-tuning saved a new one)."""
        self.model.reset_choices()
        if select is not None and select in self.model.choices:
            self.model.value = select
        self._show_model()

    def _show_model(self, _value: Any = None) -> None:
        card = self._cards.get(self.model.value)
        self.model_info.value = model_summary(card) if card is not None else ""
        if card is not None:  # the model's own, as StarDist's plugin sets its thresholds
            self.advanced.min_object_um2.value = card.min_object_um2

    def _show_device(self, _value: Any = None) -> None:
        try:
            self.device_info.value = device_summary(self.settings.device.value)
        except UserError as exc:
            self.device_info.value = str(exc)

    # -- live --------------------------------------------------------------------

    def _toggle_live(self, on: bool) -> None:
        if on:
            self._start_live()
        else:
            self._stop_live()

    def _start_live(self) -> None:
        try:
            image = self._chosen_image()
            options = self.options()
            store = store_for_image(image)
        except (UserError, OSError) as exc:
            notify_error(exc)
            self.live_switch.value = False
            return
        card = self._cards.get(self.model.value)
        settings = {
            "source": _source_of(image),
            "model": self.model.value,
            "device": options.device,
            "threshold": options.threshold,
            "tta": options.tta,
            "colour": options.colour,
            "working_mpp": None if card is None else card.working_mpp,
        }
        self.layer = self._mask_layer(store, image)
        self.layer.metadata["model"] = self.model.value
        self.live = LiveView(self.viewer, image, store, self.layer, settings, self._say)
        self.live.failed.connect(self._live_failed)

    def _say(self, text: str) -> None:
        self.status.value = text

    def _live_failed(self, error: BaseException) -> None:
        notify_error(error)
        self.live_switch.value = False  # stops it

    def _stop_live(self) -> None:
        if self.live is not None:
            self.live.close()
            self.live = None
            self.status.value = "Live off"

    def _restart_live(self, _value: Any = None) -> None:
        if self.live is not None:
            self._stop_live()
            self._start_live()

    # -- running -----------------------------------------------------------------

    def options(self, **more: Any) -> SegmentOptions:
        """The form's settings (and ``more``, such as the layer's pixel size) as the
        core's :class:`SegmentOptions`."""
        values = dataclasses.asdict(read_form(SegmentSettings, self.settings, self.advanced))
        del values["region"]  # where, not how: the widget's own
        return SegmentOptions.from_form(model=self.model.value, **values, **more)

    def run(self) -> Job | None:
        """Start segmenting; returns the running job (None when the input is bad)."""
        if self.job is not None and self.job.running:
            notify_error(UserError("a segmentation is already running: cancel it first"))
            return None
        try:
            return self._start()
        except (UserError, OSError) as exc:
            notify_error(exc)
            return None

    def segment_viewport(self, model: str, image: str | None = None) -> Job | None:
        """Segment what is on screen with ``model`` (on the image layer ``image`` when
        it is one): what another widget asks through
        :mod:`slide_unet.napari.segment_request`. None after one notification."""
        self.refresh_models(select=model)
        if self.model.value != model:
            notify_error(UserError(f"the model {model!r} is not listed: was it deleted?"))
            return None
        if image in self.image.choices:
            self.image.value = image
        self.settings.region.value = VIEWPORT
        return self.run()

    def _chosen_image(self) -> Any:
        """The image layer picked, with a model to run on it; one clear error if not."""
        image = layer_by_name(self.viewer, self.image.value)
        if image is None:
            raise InputError("no image layer: open a slide first (File > Open)")
        if not self.model.value:
            raise InputError("no model to run: none is bundled or saved")
        return image

    def _start(self) -> Job:
        image = self._chosen_image()
        options = self.options(mpp=layer_mpp(image))
        shape = full_resolution(image).shape[:2]
        if self.settings.region.value == VIEWPORT:
            region = visible_region(self.viewer, image)
        else:
            region = (0, int(shape[0]), 0, int(shape[1]))
        source = _source_of(image)
        store = store_for_image(image)

        def work(progress: Any, cancel: threading.Event, partial: Any) -> dict[str, Any]:
            return segment_into_store(
                store,
                source,
                region,
                options,
                progress=progress,
                cancel=cancel,
                landed=partial,
            )

        y0, y1, x0, x1 = region
        self.status.value = f"segmenting {y1 - y0} x {x1 - x0} px with {self.model.value}..."
        self.run_button.enabled = False
        self.cancel_button.enabled = True
        self._refresh_timer.setInterval(int(REFRESH_SECONDS * 1000))
        self._refresh_timer.start()
        self._settle_timer.start()
        self.job = start_job(
            work,
            f"Segmenting {image.name}",
            done=self._done,
            partial=self._landed,
            failed=self._failed,
            finished=self._finished,
        )
        # After the start: napari takes a few tenths of a second to add a Labels
        # layer, while the work loads the model and plans.
        self.layer = self._mask_layer(store, image)
        self.layer.metadata["model"] = self.model.value
        return self.job

    def _mask_layer(self, store: MaskStore, image: Any) -> Any:
        layer = find_mask_layer(self.viewer, store)
        if layer is None:
            data, kwargs = mask_layer_kwargs(
                store,
                f"{image.name} mask",
                scale=tuple(image.scale[-2:]),
                translate=tuple(image.translate[-2:]),
                units=tuple(str(u) for u in image.units[-2:]),
                slide_path=slide_path(image),
            )
            layer = self.viewer.add_labels(data, **kwargs)
            self.viewer.layers.selection.active = image  # keep the image selected
        attach_store(layer, store)
        return layer

    def _slow_refresh(self) -> None:
        if self._refresh_timer.isActive():
            self._refresh_timer.setInterval(int(LATE_REFRESH_SECONDS * 1000))

    def _landed(self, _box: Any) -> None:
        self._dirty = True

    def _refresh_layer(self) -> None:
        if self._dirty and self.layer is not None:
            self._dirty = False
            self.layer.refresh()

    def cancel(self) -> None:
        """Stop the running segmentation after its current batch."""
        if self.job is not None:
            self.job.cancel()
            self.status.value = "cancelling..."

    def _done(self, result: dict[str, Any]) -> None:
        self.last_result = result
        area = result["min_object_um2"]
        removed = f", objects under {area:g} µm² removed" if area else ""
        backup = f"; earlier edits copied to {result['backup']}" if result["backup"] else ""
        self.status.value = f"done in {result['seconds']:.1f} s{removed}"
        show_info(f"Segmented in {result['seconds']:.1f} s{removed}{backup}")

    def _failed(self, error: BaseException) -> None:
        self.status.value = failure_text(
            error, "cancelled: the finished tiles replace the earlier mask, the rest is as it was"
        )

    def _finished(self) -> None:
        self._refresh_timer.stop()
        self._settle_timer.stop()
        self._dirty = True
        self._refresh_layer()
        self.run_button.enabled = True
        self.cancel_button.enabled = False
        self.finished.emit()
