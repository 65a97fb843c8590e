"""The Export widget: every format reads back equal, bad input is one notification,
napari's progress bar moves while it writes, and it offers a writable folder and a
safe file name."""

from __future__ import annotations

import re
import threading
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from napari._qt.widgets.qt_progress_bar import QtLabeledProgressBar
from napari.utils.notifications import NotificationSeverity, notification_manager

from slide_unet.core.masks import io as mask_io
from slide_unet.core.masks.io import read_mask
from slide_unet.core.masks.pyramids import read_ome_zarr
from slide_unet.core.masks.rle_csv import rle_csv_ids
from slide_unet.core.slide.slide import open_slide
from slide_unet.napari.export_widget import ExportWidget
from slide_unet.napari.jobs import Job
from slide_unet.napari.writers import MASK_FORMATS

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


@pytest.fixture(autouse=True)
def _fresh_session(monkeypatch: pytest.MonkeyPatch) -> None:
    """No folder remembered from another test's export."""
    monkeypatch.setattr(ExportWidget, "last_folder", None)


@pytest.fixture
def home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A home folder with a Documents folder (as most desktops have)."""
    home = tmp_path / "home"
    (home / "Documents").mkdir(parents=True)
    monkeypatch.setenv("HOME", str(home))
    monkeypatch.delenv("XDG_CONFIG_HOME", raising=False)  # no user-dirs.dirs elsewhere
    return home


@pytest.fixture
def viewer_widget(viewer, dock):
    """A viewer and the Export widget, docked through the plugin manifest."""
    widget = dock("Export")
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


def test_file_name_is_the_layer_name_made_safe_with_the_formats_extension(viewer_widget, tmp_path):
    viewer, widget = viewer_widget
    widget.options["path"].value = tmp_path / "somewhere.ome.tif"
    viewer.add_labels(np.zeros((8, 8), np.uint8), name="kidney_pas mask")
    widget.layer.value = viewer.layers["kidney_pas mask"]
    assert widget.options["path"].value == tmp_path / "kidney_pas_mask.ome.tif"

    widget.options["format"].value = "RLE CSV"
    assert widget.options["path"].value == tmp_path / "kidney_pas_mask.csv"
    assert not widget.options["rle_id"].native.isHidden()
    widget.options["format"].value = "OME-Zarr"
    assert widget.options["path"].value == tmp_path / "kidney_pas_mask.ome.zarr"
    assert widget.options["rle_id"].native.isHidden()  # only a CSV has row ids


# -- the file offered ------------------------------------------------------------------


@pytest.mark.parametrize(
    ("slide", "expected"),
    [
        ("kidney_pas.ome.tif", "kidney_pas_mask.ome.tif"),
        ("HuBMAP 2f6ecfcdf (copy).tiff", "HuBMAP_2f6ecfcdf_copy_mask.ome.tif"),
        ("kidney_pas_mask.ome.tif", "kidney_pas_mask.ome.tif"),  # a mask file keeps its name
    ],
)
def test_default_file_is_named_after_the_slide_in_documents_not_its_folder(
    viewer_widget, home, tmp_path, slide, expected
):
    viewer, widget = viewer_widget
    slide_file = tmp_path / "slides" / slide  # often a read-only share
    viewer.add_labels(
        np.zeros((8, 8), np.uint8),
        name=f"{slide} mask (autosaved)",
        metadata={"slide_path": str(slide_file), "mpp": SAMPLE_MPP},
    )

    assert widget.options["path"].value == home / "Documents" / expected


def test_default_folder_is_home_without_a_documents_folder(viewer_widget, home):
    viewer, widget = viewer_widget
    (home / "Documents").rmdir()
    viewer.add_labels(np.zeros((8, 8), np.uint8), name="glomeruli (edited)")
    assert widget.options["path"].value == home / "glomeruli_edited.ome.tif"


def test_next_export_widget_offers_the_folder_of_the_last_export(
    qtbot, viewer_widget, home, tmp_path
):
    viewer, widget = viewer_widget
    viewer.add_labels(np.eye(16, dtype=np.uint8), name="first")
    chosen = tmp_path / "results"
    chosen.mkdir()
    widget.options["path"].value = chosen / "first_mask.ome.tif"
    export(qtbot, widget)
    assert (chosen / "first_mask.ome.tif").is_file()

    # Another Export widget of the same session (a second window, or re-opened).
    again = ExportWidget(viewer)
    viewer.window.add_dock_widget(again, name="Export again")
    viewer.add_labels(
        np.eye(16, dtype=np.uint8),
        name="second",
        metadata={"slide_path": str(tmp_path / "slides" / "kidney_pas.ome.tif")},
    )
    again.layer.value = viewer.layers["second"]

    assert again.options["path"].value == chosen / "kidney_pas_mask.ome.tif"


# -- progress and cancel -----------------------------------------------------------------


class GatedMask:
    """A mask array whose rows from ``gate_row`` on, read by a worker thread, wait for
    ``gate``: a slow disk that the test controls, so "mid-run" is a state, not a race.

    napari (the main thread) reads it freely.
    """

    def __init__(self, data: np.ndarray, gate_row: int, gate: threading.Event) -> None:
        self.data, self.gate_row, self.gate = data, gate_row, gate
        self.shape, self.dtype, self.ndim, self.size = data.shape, data.dtype, data.ndim, data.size

    def __len__(self) -> int:
        return len(self.data)

    def __getitem__(self, key: Any) -> np.ndarray:
        rows = key[0] if isinstance(key, tuple) else key
        start = rows.start or 0 if isinstance(rows, slice) else rows
        if threading.current_thread() is not threading.main_thread() and start >= self.gate_row:
            assert self.gate.wait(timeout=60), "the test never opened the gate"
        return self.data[key]

    def __array__(self, dtype: Any = None, copy: bool | None = None) -> np.ndarray:
        return self.data if dtype is None else self.data.astype(dtype)


def qt_bar(viewer, job: Job) -> QtLabeledProgressBar:
    """napari's progress bar (in the activity dock) of ``job``."""
    bars = viewer.window._qt_window.findChildren(QtLabeledProgressBar)
    (bar,) = [bar for bar in bars if bar.progress is job.bar]
    return bar


#: 4096 rows as a pyramidal OME-TIFF: 8 bands of 512 rows, then 2 overview levels.
BIG_STEPS = 10


@pytest.fixture
def gated_export(viewer_widget, sample_mask, tmp_path):
    """An OME-TIFF export of a 4096 x 4096 mask, held after its first band of 512 rows
    until the test sets the gate; yields the widget, job, bar, gate, target, states."""
    viewer, widget = viewer_widget
    gate = threading.Event()
    mask = GatedMask(np.tile(sample_mask, (2, 2)), gate_row=512, gate=gate)
    viewer.add_labels(mask, name="kidney_pas x4", scale=(SAMPLE_MPP, SAMPLE_MPP))
    widget.options["format"].value = "pyramidal OME-TIFF"
    path = tmp_path / "big.ome.tif"
    widget.options["path"].value = path

    job = widget.export()
    assert job is not None
    bar = qt_bar(viewer, job)
    states: list[tuple[int, int, str, bool]] = []

    def record(value: int) -> None:
        maximum, eta = bar.qt_progress_bar.maximum(), bar.eta_label.text()
        states.append((value, maximum, eta, widget.export_button.enabled))

    bar.qt_progress_bar.valueChanged.connect(record)
    if bar.qt_progress_bar.value() > 0:  # a step shown before the connection (a nested
        record(bar.qt_progress_bar.value())  # event loop of napari's can deliver it)
    try:
        yield widget, job, bar, gate, path, states
    finally:
        gate.set()  # never leave the worker waiting


def test_export_moves_napari_progress_bar_with_a_value_and_eta_to_the_end(
    qtbot, gated_export, sample_mask, tmp_path, notes
):
    widget, job, _bar, gate, path, states = gated_export
    qtbot.waitUntil(lambda: bool(states), timeout=60_000)

    # Mid-run: the first band is written, the worker waits for the second.
    assert states == [(1, BIG_STEPS, states[0][2], False)]
    assert re.search(rf"\b[01]/{BIG_STEPS} \[", states[0][2]), states[0][2]  # tqdm's count, ETA
    assert job.running
    (temporary,) = [p.name for p in tmp_path.iterdir()]  # being written, not yet renamed
    assert temporary.startswith(".big.ome.tif.tmp-"), temporary

    with qtbot.waitSignal(widget.finished, timeout=60_000):
        gate.set()

    values = [value for value, *_ in states]
    assert values == sorted(set(values))  # forwards only (steps closer than half a
    assert values[-1] == BIG_STEPS  # second are shown together), up to the total
    assert {maximum for _, maximum, _, _ in states} == {BIG_STEPS}
    assert not any(enabled for *_, enabled in states)  # all while the export ran
    assert errors(notes) == []
    np.testing.assert_array_equal(read_mask(path), np.tile(sample_mask, (2, 2)))
    with open_slide(path) as slide:
        assert len(slide.levels) == 3


def test_cancel_in_napari_progress_bar_stops_the_export_and_leaves_nothing(
    qtbot, gated_export, tmp_path, notes
):
    widget, job, bar, gate, _path, states = gated_export
    qtbot.waitUntil(lambda: bool(states), timeout=60_000)
    assert states[-1][:2] == (1, BIG_STEPS)

    bar.cancel_button.click()  # napari's own Cancel, in the activity dock
    # It only flags napari's bar; the job's watch (a Qt timer) passes it on.
    qtbot.waitUntil(job.cancelled.is_set, timeout=5_000)
    with qtbot.waitSignal(widget.finished, timeout=60_000):
        gate.set()

    assert [value for value, *_ in states] == [1]  # it stopped at the next step
    assert list(tmp_path.iterdir()) == []
    assert errors(notes) == []
    infos = [m for s, m in notes() if s == NotificationSeverity.INFO]
    assert infos == ["Export of 'kidney_pas x4' cancelled: nothing was written"]
    assert widget.export_button.enabled


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
