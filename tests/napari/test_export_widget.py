"""The Export widget: every format reads back equal, and bad input is one notification."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from napari.utils.notifications import NotificationSeverity, notification_manager

from slide_unet._widgets.export import ExportWidget
from slide_unet._writer import MASK_FORMATS
from slide_unet.core import mask_io
from slide_unet.core.mask_io import read_mask
from slide_unet.core.mask_pyramids import read_ome_zarr
from slide_unet.core.rle_csv import rle_csv_ids
from slide_unet.core.slide import open_slide

ROOT = Path(__file__).resolve().parents[2]
SAMPLE_MASK = ROOT / "sample_data" / "kidney_pas_mask.ome.tif"
SAMPLE_MPP = 0.5
PLUGIN = "napari-slide-unet"

pytestmark = pytest.mark.gui


@pytest.fixture(scope="module")
def sample_mask() -> np.ndarray:
    return np.asarray(read_mask(SAMPLE_MASK))


@pytest.fixture
def notes():
    """Notifications shown during the test: ``(severity, message)``."""
    start = len(notification_manager.records)
    return lambda: [(n.severity, n.message) for n in notification_manager.records[start:]]


@pytest.fixture
def viewer_widget(make_napari_viewer):
    """A viewer and the Export widget, docked through the plugin manifest."""
    viewer = make_napari_viewer()
    _dock, widget = viewer.window.add_plugin_dock_widget(PLUGIN, "Export")
    assert isinstance(widget, ExportWidget)
    return viewer, widget


def export(qtbot, widget: ExportWidget) -> None:
    """Press Export and wait for the background write to end."""
    with qtbot.waitSignal(widget.finished, timeout=60_000):
        widget.export_button.native.click()


def errors(notes) -> list[str]:
    return [m for s, m in notes() if s == NotificationSeverity.ERROR]


def test_layer_choice_follows_labels_layers_added_renamed_and_removed(viewer_widget):
    viewer, widget = viewer_widget
    assert widget.layer.choices == ()
    viewer.add_image(np.zeros((8, 8)), name="slide")
    first = viewer.add_labels(np.zeros((8, 8), np.uint8), name="glomeruli")
    second = viewer.add_labels(np.zeros((8, 8), np.uint8), name="nuclei")
    assert {layer.name for layer in widget.layer.choices} == {"nuclei", "glomeruli"}

    first.name = "glomeruli corrected"
    assert "glomeruli corrected" in [widget.layer.native.itemText(i) for i in range(2)]

    viewer.layers.remove(second)
    assert widget.layer.choices == (first,)


def test_file_name_is_the_layer_name_with_the_formats_extension(viewer_widget, tmp_path):
    viewer, widget = viewer_widget
    widget.options["path"].value = tmp_path / "somewhere.ome.tif"
    viewer.add_labels(np.zeros((8, 8), np.uint8), name="kidney_pas mask")
    widget.layer.value = viewer.layers["kidney_pas mask"]
    assert widget.options["path"].value == tmp_path / "kidney_pas mask.ome.tif"

    widget.options["format"].value = "RLE CSV"
    assert widget.options["path"].value == tmp_path / "kidney_pas mask.csv"
    assert not widget.options["rle_id"].native.isHidden()
    widget.options["format"].value = "OME-Zarr"
    assert widget.options["path"].value == tmp_path / "kidney_pas mask.ome.zarr"
    assert widget.options["rle_id"].native.isHidden()  # only a CSV has row ids


@pytest.mark.parametrize("format_name", list(MASK_FORMATS))
def test_export_writes_each_format_that_reads_back_equal(
    qtbot, viewer_widget, tmp_path, sample_mask, notes, format_name
):
    viewer, widget = viewer_widget
    viewer.add_labels(sample_mask, name="kidney_pas", scale=(SAMPLE_MPP, SAMPLE_MPP))
    widget.options["format"].value = format_name
    path = tmp_path / f"kidney_pas{MASK_FORMATS[format_name][0]}"
    widget.options["path"].value = path

    export(qtbot, widget)

    assert errors(notes) == []
    assert any(str(path) in m for s, m in notes() if s == NotificationSeverity.INFO)
    np.testing.assert_array_equal(read_mask(path, shape=sample_mask.shape), sample_mask)
    if format_name == "OME-Zarr":
        assert read_ome_zarr(path)[1] == pytest.approx(SAMPLE_MPP)
    elif format_name in ("pyramidal OME-TIFF", "PNG"):
        with open_slide(path) as slide:
            assert slide.mpp == pytest.approx(SAMPLE_MPP)
    assert [p.name for p in tmp_path.iterdir()] == [path.name]
    assert widget.export_button.enabled


def test_export_names_the_csv_row_by_the_rle_id_field(qtbot, viewer_widget, tmp_path):
    viewer, widget = viewer_widget
    viewer.add_labels(np.eye(16, dtype=np.uint8), name="mask", metadata={"rle_id": "2f6ecfcdf"})
    widget.options["format"].value = "RLE CSV"
    assert widget.options["rle_id"].value == "2f6ecfcdf"  # from the layer
    widget.options["rle_id"].value = "aaa6a05cc"
    widget.options["path"].value = tmp_path / "submission.csv"

    export(qtbot, widget)

    assert rle_csv_ids(tmp_path / "submission.csv") == ["aaa6a05cc"]


def test_export_adds_the_formats_extension_to_a_bare_name(qtbot, viewer_widget, tmp_path):
    viewer, widget = viewer_widget
    viewer.add_labels(np.eye(16, dtype=np.uint8), name="mask")
    widget.options["format"].value = "GeoJSON"
    widget.options["path"].value = tmp_path / "for_qupath"

    export(qtbot, widget)

    np.testing.assert_array_equal(
        read_mask(tmp_path / "for_qupath.geojson", shape=(16, 16)), np.eye(16)
    )


def test_export_without_a_labels_layer_says_so_and_writes_nothing(viewer_widget, tmp_path, notes):
    viewer, widget = viewer_widget
    viewer.add_image(np.zeros((8, 8)), name="slide")
    widget.options["path"].value = tmp_path / "mask.csv"

    assert widget.export() is None

    assert len(errors(notes)) == 1
    assert "No Labels layer" in errors(notes)[0]
    assert list(tmp_path.iterdir()) == []


def test_export_to_a_folder_says_so_and_leaves_it_alone(viewer_widget, tmp_path, notes):
    viewer, widget = viewer_widget
    viewer.add_labels(np.eye(16, dtype=np.uint8), name="mask")
    folder = tmp_path / "results"
    folder.mkdir()
    (folder / "notes.txt").write_text("keep me")
    for format_name in ("RLE CSV", "OME-Zarr"):
        widget.options["format"].value = format_name
        widget.options["path"].value = folder

        assert widget.export() is None

    assert [m for m in errors(notes) if "is a folder" in m] == errors(notes)
    assert len(errors(notes)) == 2
    assert [p.name for p in tmp_path.iterdir()] == ["results"]
    assert [p.name for p in folder.iterdir()] == ["notes.txt"]


def test_export_to_a_missing_folder_fails_in_the_job_with_one_notification(
    qtbot, viewer_widget, tmp_path, notes
):
    viewer, widget = viewer_widget
    viewer.add_labels(np.eye(16, dtype=np.uint8), name="mask")
    widget.options["path"].value = tmp_path / "missing" / "mask.ome.tif"

    export(qtbot, widget)

    assert len(errors(notes)) == 1
    assert "does not exist" in errors(notes)[0]
    assert list(tmp_path.iterdir()) == []
    assert widget.export_button.enabled


def test_export_of_a_mask_too_big_for_png_says_so_and_writes_nothing(
    qtbot, viewer_widget, tmp_path, sample_mask, notes, monkeypatch
):
    monkeypatch.setattr(mask_io, "MAX_PNG_PIXELS", 1000)
    viewer, widget = viewer_widget
    viewer.add_labels(sample_mask, name="kidney_pas")
    widget.options["format"].value = "PNG"
    widget.options["path"].value = tmp_path / "kidney_pas.png"

    export(qtbot, widget)

    assert len(errors(notes)) == 1
    assert "too big for PNG" in errors(notes)[0]
    assert list(tmp_path.iterdir()) == []


def test_export_refuses_a_file_name_of_another_format(viewer_widget, tmp_path, notes):
    viewer, widget = viewer_widget
    viewer.add_labels(np.eye(16, dtype=np.uint8), name="mask")
    widget.options["format"].value = "RLE CSV"
    widget.options["path"].value = tmp_path / "mask.png"

    assert widget.export() is None

    assert "end it with .csv" in errors(notes)[0]
    assert list(tmp_path.iterdir()) == []
