"""The Export widget: save a Labels layer as a mask file a lab or Kaggle can use.

Thin over :func:`slide_unet.napari.writers.save_mask` (and so over
:func:`slide_unet.core.masks.io.write_mask`): the same file as napari's
*File > Save* with the plugin's writers, plus PNG. The write runs in the
background with a progress bar that moves band by band (value and ETA) and a
Cancel button; it is atomic, so a failed or cancelled export leaves nothing
behind and any existing file as it was.

The file offered is ``<slide>_mask`` plus the format's extension (the slide's
file name made safe: no spaces, brackets or other characters a shell or
another OS would trip on), in the folder of the last export of this session,
else the user's Documents folder, else their home folder: never the slide's
folder by default, which is often a read-only share.
"""

from __future__ import annotations

import dataclasses
import os
import re
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar, NamedTuple

import numpy as np
import platformdirs
from magicgui.widgets import ComboBox, PushButton
from napari.utils.notifications import show_error, show_info
from qtpy.QtCore import Signal
from qtpy.QtWidgets import QWidget

from slide_unet.core.errors import Cancelled, InputError, UserError
from slide_unet.core.masks.io import IN_MEMORY_PIXELS, mask_stem, mask_suffix
from slide_unet.napari.jobs import Job, notify_error, start_job
from slide_unet.napari.layers import full_resolution, labels_layers, slide_path
from slide_unet.napari.mask_layer import save_pending
from slide_unet.napari.params import form, read_form, setting
from slide_unet.napari.scroll import scrolling_layout
from slide_unet.napari.writers import (
    DEFAULT_CLASSIFICATION,
    MASK_FORMATS,
    check_target,
    full_resolution_mask,
    pixel_size,
    save_mask,
)

if TYPE_CHECKING:
    import napari

__all__ = ["ExportOptions", "ExportWidget"]

_CSV, _GEOJSON = "RLE CSV", "GeoJSON"


@dataclasses.dataclass(frozen=True)
class ExportOptions:
    """What to write: the format, the file, and the format's own options."""

    format: str = setting(
        "pyramidal OME-TIFF",
        "Format",
        "RLE CSV: Kaggle id,predicted. OME-TIFF and OME-Zarr: pyramidal, with the pixel "
        "size, for QuPath, Fiji and napari. GeoJSON: polygons QuPath imports. PNG: small "
        "masks only.",
        choices=list(MASK_FORMATS),
    )
    # setting() returns a dataclasses.field; Path is immutable, so one default is safe.
    path: Path = setting(  # noqa: RUF009
        Path(), "Save to", "The output file (an OME-Zarr is a folder)", mode="w"
    )
    rle_id: str = setting(
        "",
        "RLE id",
        "The CSV row's id: the image id Kaggle expects. Empty: the file name.",
    )
    classification: str = setting(
        DEFAULT_CLASSIFICATION, "QuPath class", "The class of every GeoJSON object in QuPath"
    )


class _Failed(NamedTuple):
    """An export that failed for a reason the user can fix (not a bug)."""

    error: BaseException


def _file_name(name: str) -> str:
    """``name`` made safe as a file name on every system and in a shell: each run
    of characters other than letters, digits, ``.``, ``-`` and ``_`` becomes one
    ``_`` (``"kidney pas (2)"`` -> ``"kidney_pas_2"``)."""
    return re.sub(r"[^\w.-]+", "_", name).strip("._-") or "mask"


def _mask_name(layer: Any) -> str:
    """The file name, without extension, offered for ``layer``'s mask.

    ``<slide>_mask`` when the layer knows its slide's file (``kidney_pas.ome.tif``
    -> ``kidney_pas_mask``; a file that is a mask already keeps its name), else
    the layer's name.
    """
    source = slide_path(layer)
    if not source:
        return _file_name(layer.name)
    name = _file_name(mask_stem(source))
    return name if name.lower().endswith("mask") else f"{name}_mask"


def _writable_folder(folder: Path) -> bool:
    return folder.is_dir() and os.access(folder, os.W_OK | os.X_OK)


class ExportWidget(QWidget):
    """Export a Labels layer as RLE CSV, OME-TIFF, OME-Zarr, GeoJSON or PNG.

    Parameters
    ----------
    napari_viewer : napari.Viewer
        The viewer whose Labels layers can be exported.

    Attributes
    ----------
    finished : Signal
        Emitted on the main thread when an export job has ended, written or not.
    job : Job or None
        The last export started.
    last_folder : pathlib.Path or None
        Class-wide: the folder of the last export that succeeded in this
        session, offered first by every Export widget.
    """

    finished = Signal()
    last_folder: ClassVar[Path | None] = None

    def __init__(self, napari_viewer: napari.Viewer) -> None:
        super().__init__()
        self.viewer = napari_viewer
        self.job: Job | None = None
        self.layer = ComboBox(
            name="layer", label="Mask", choices=self._layer_choices, tooltip="The Labels layer"
        )
        self.options = form(ExportOptions)
        self.options.insert(0, self.layer)
        self.export_button = PushButton(name="export", text="Export")
        self.options.append(self.export_button)
        self.options["rle_id"].native.setPlaceholderText("the file name")

        layout = scrolling_layout(self)
        layout.addWidget(self.options.native)
        layout.addStretch()

        events = self.viewer.layers.events
        for event in (events.inserted, events.removed, events.reordered, events.renamed):
            event.connect(self._refresh_layers)
        self.layer.changed.connect(self._layer_changed)
        self.options["format"].changed.connect(self._format_changed)
        self.export_button.changed.connect(self.export)
        self._format_changed()
        self._layer_changed()

    # -- keeping the form in step with the viewer ---------------------------------

    def _layer_choices(self, _widget: Any = None) -> list[tuple[str, Any]]:
        return [(layer.name, layer) for layer in labels_layers(self.viewer)]

    def _refresh_layers(self, _event: Any = None) -> None:
        self.layer.reset_choices()

    def _suffix(self) -> str:
        return MASK_FORMATS[self.options["format"].value][0]

    def _layer_changed(self, _value: Any = None) -> None:
        """A new layer: a file named after its slide, its RLE id if it has one."""
        layer = self.layer.value
        if layer is None:
            return
        self.options["path"].value = self._folder() / (_mask_name(layer) + self._suffix())
        self.options["rle_id"].value = str((layer.metadata or {}).get("rle_id", ""))

    def _folder(self) -> Path:
        """Where the file goes: the folder in the form (the user's last choice),
        else that of this session's last export, else Documents, else home."""
        current = Path(self.options["path"].value or "")
        if current.name:
            return current.parent
        last = ExportWidget.last_folder
        if last is not None and _writable_folder(last):
            return last
        documents = Path(platformdirs.user_documents_dir())
        return documents if _writable_folder(documents) else Path.home()

    def _format_changed(self, _value: Any = None) -> None:
        """The file takes the format's extension; each format shows its own options."""
        name = self.options["format"].value
        suffixes = MASK_FORMATS[name]
        path_widget = self.options["path"]
        path_widget.filter = f"{name} ({' '.join('*' + s for s in suffixes)})"
        current = Path(path_widget.value or "")
        if current.name and mask_suffix(current) not in suffixes:
            path_widget.value = current.with_name(mask_stem(current) + suffixes[0])
        self.options["rle_id"].visible = name == _CSV
        self.options["classification"].visible = name == _GEOJSON

    # -- exporting -----------------------------------------------------------------

    def _target(self, options: ExportOptions) -> Path:
        """The file to write: the format's extension added when there is none."""
        if str(options.path).strip() in ("", "."):
            raise InputError("choose a file to export to")
        path = Path(options.path).expanduser()
        suffixes = MASK_FORMATS[options.format]
        suffix = mask_suffix(path)
        if suffix is None and not path.exists():
            path = path.with_name(path.name + suffixes[0])
        elif suffix is not None and suffix not in suffixes:
            raise InputError(
                f"{path.name} is not a {options.format} file name: end it with "
                f"{' or '.join(suffixes)}"
            )
        return check_target(path)

    def export(self) -> Job | None:
        """Write the chosen layer in the background; None when nothing was started.

        Input errors (no Labels layer, a folder as the file, a mask that is not
        2-D) are shown at once as a notification; errors while writing (a
        full disk, a mask too big for PNG) when the job fails.
        """
        layer = self.layer.value
        if layer is None:
            show_error("No Labels layer to export: segment a slide or open a mask first")
            return None
        options = read_form(ExportOptions, self.options)
        try:
            path = self._target(options)
            save_pending(layer)
            mask = full_resolution_mask(full_resolution(layer))
        except (UserError, OSError) as error:
            notify_error(error)
            return None
        if isinstance(mask, np.ndarray) and mask.size <= IN_MEMORY_PIXELS:
            # The user may paint on while the file is written: write one moment's
            # mask. (A chunked store is edited chunk by chunk and not copied.)
            mask = mask.copy()
        mpp = pixel_size(layer.metadata, layer.scale, layer.units)
        name = layer.name

        def work(progress: Any, cancel: Any, partial: Any) -> Path | _Failed:
            try:
                return save_mask(
                    path,
                    mask,
                    mpp=mpp,
                    rle_id=options.rle_id.strip() or None,
                    classification=options.classification.strip() or None,
                    suffixes=MASK_FORMATS[options.format],
                    progress=progress,
                    cancel=cancel,
                )
            except (UserError, OSError, Cancelled) as error:
                # A user's error comes back as a result, shown once by done():
                # raised, it would be notified by start_job, again by napari's
                # worker, and re-raised on the main thread by superqt
                # (create_worker without _ignore_errors).
                return _Failed(error)

        def done(result: Path | _Failed) -> None:
            if isinstance(result, _Failed) and isinstance(result.error, Cancelled):
                show_info(f"Export of {name!r} cancelled: nothing was written")
            elif isinstance(result, _Failed):
                notify_error(result.error)
            else:
                ExportWidget.last_folder = result.parent
                show_info(f"Exported {name!r} to {result}")

        self.export_button.enabled = False
        self.job = start_job(work, f"Exporting {name}", done=done, finished=self._finished)
        return self.job

    def _finished(self) -> None:
        self.export_button.enabled = True
        self.finished.emit()
