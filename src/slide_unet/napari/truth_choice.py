"""The truth pickers of the Score and Review widgets: a Labels layer or a mask file,
and for a file its RLE row id or (a GeoJSON from QuPath) one class or all.

One :class:`TruthFileFields` per widget holds the file half: its fields, which
of them show, the classes a GeoJSON offers, and what was picked, checked
without reading the file.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from magicgui.widgets import ComboBox, FileEdit, LineEdit

from slide_unet.core.errors import InputError, UserError
from slide_unet.core.masks.geojson_read import geojson_file_classes
from slide_unet.core.masks.io import mask_suffix

__all__ = [
    "ALL_CLASSES",
    "FILE",
    "GEOJSON_SUFFIXES",
    "LAYER",
    "MASK_FILE_FILTER",
    "PickedTruthFile",
    "TruthFileFields",
]

LAYER, FILE = "Labels layer", "File"
#: The Class picker's choice that takes every class of a GeoJSON truth together.
ALL_CLASSES = "all classes"
#: Mask file suffixes read as GeoJSON (with classes to choose from).
GEOJSON_SUFFIXES = (".geojson", ".json")
#: The file dialog's filter for a truth mask file.
MASK_FILE_FILTER = (
    "Masks (*.tif *.tiff *.png *.jpg *.csv *.geojson *.json *.zarr *.zattrs zarr.json);;"
    "All files (*)"
)

#: ``(path, RLE row id or None, class or None)``.
PickedTruthFile = tuple[Path, "str | None", "str | None"]


class TruthFileFields:
    """The file, RLE id and class fields of a truth picker (add them to the widget's
    container; call :meth:`show` when the truth's source changes)."""

    def __init__(self, file_tooltip: str | None = None) -> None:
        self.file = FileEdit(label="Truth file", mode="r", filter=MASK_FILE_FILTER)
        if file_tooltip:
            self.file.tooltip = file_tooltip
        self.rle_id = LineEdit(label="RLE id")
        self.rle_id.tooltip = "The row (id) of an RLE CSV; not needed when it holds one mask"
        self.rle_id.native.setPlaceholderText("only for a CSV of several masks")
        self.truth_class = ComboBox(label="Class", choices=[ALL_CLASSES])
        self.truth_class.tooltip = (
            "The QuPath class of the GeoJSON truth; 'all classes' takes every object together"
        )
        self._from_file = False
        self.file.changed.connect(lambda *_: self.show(self._from_file))
        self.file.changed.connect(self.read_classes)

    @property
    def widgets(self) -> tuple[Any, ...]:
        return (self.file, self.rle_id, self.truth_class)

    def show(self, from_file: bool) -> None:
        """Show the file field (and the RLE id or class field its file needs) or none."""
        self._from_file = from_file
        self.file.visible = from_file
        suffix = mask_suffix(self.file.value)
        self.rle_id.visible = from_file and suffix == ".csv"
        self.truth_class.visible = from_file and suffix in GEOJSON_SUFFIXES

    def read_classes(self, *_: Any) -> None:
        """Offer the classes of a GeoJSON truth file (an unreadable one is reported when
        the widget reads it)."""
        path = Path(self.file.value or "")
        classes: list[str] = []
        if mask_suffix(path) in GEOJSON_SUFFIXES and path.is_file():
            try:
                classes = geojson_file_classes(path)
            except (UserError, OSError):
                classes = []
        self.truth_class.choices = [ALL_CLASSES, *classes]
        self.truth_class.value = ALL_CLASSES

    def picked(self) -> PickedTruthFile:
        """The file, RLE id and class picked, checked without reading the file.

        Raises
        ------
        FileNotFoundError, InputError
            No such file, or a folder that is no mask store.
        """
        path = Path(self.file.value or "")
        if not path.exists():
            raise FileNotFoundError(f"{path}: no such truth file")
        zarr_folder = any((path / n).exists() for n in ("zarr.json", ".zgroup", ".zarray"))
        if path.is_dir() and not (mask_suffix(path) or zarr_folder):
            raise InputError("no truth file: choose a mask file (or a Labels layer) as the truth")
        image_id = None
        if mask_suffix(path) == ".csv":
            image_id = self.rle_id.value.strip() or None
        classification = None
        if mask_suffix(path) in GEOJSON_SUFFIXES and self.truth_class.value != ALL_CLASSES:
            classification = self.truth_class.value
        return path, image_id, classification
