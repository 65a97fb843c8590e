"""The Fine-tune widget, as a user drives it: corrected layers in, a new model in Segment out.

A tiny U-Net is trained once on synthetic pink tissue with dark red disks
(seconds on a 2-core CPU) and copied into each test's private models folder
as the base model; fine-tuning runs for one or two epochs. The live curve and
the time budget are checked with the bundled glomeruli model on the real
sample slide.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import time
import zipfile
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from qtpy.QtCore import Qt

from slide_unet.core.inference.segment import segment as segment_array
from slide_unet.core.model.store import bundled_models_dir, list_models
from slide_unet.core.paths import MASKS_DIR_ENV, MODELS_DIR_ENV
from slide_unet.napari import finetune_input
from slide_unet.napari.segment_request import segment_widgets

pytestmark = pytest.mark.gui

BASE = "tinydisks"
WAIT_MS = 240_000
SAMPLE = Path(__file__).resolve().parents[2] / "sample_data"


def _validated_epoch(value: object) -> int | None:
    """The epoch of a validation record sent to the widget; None for anything else
    (a training-loss record, a message)."""
    if isinstance(value, dict) and "val_dice" in value:
        return int(value["epoch"])
    return None


def disks(seed: int, size: int = 160, count: int = 6) -> tuple[np.ndarray, np.ndarray]:
    """A pink RGB image with dark red disks, and the disks' mask (uint8 0/1)."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[:size, :size]
    mask = np.zeros((size, size), bool)
    for _ in range(count):
        cy, cx = rng.integers(12, size - 12, 2).tolist()
        mask |= (yy - cy) ** 2 + (xx - cx) ** 2 < int(rng.integers(6, 12)) ** 2
    image = np.empty((size, size, 3), np.float32)
    image[:] = (235, 190, 215)
    image[mask] = (150, 40, 90)
    image += rng.normal(0, 12, image.shape)
    return np.clip(image, 0, 255).astype(np.uint8), mask.astype(np.uint8)


def _write_pairs(folder: Path, seeds: range) -> tuple[Path, Path]:
    images, masks = folder / "images", folder / "masks"
    images.mkdir(parents=True)
    masks.mkdir()
    for seed in seeds:
        image, mask = disks(seed)
        Image.fromarray(image).save(images / f"tile{seed}.png")
        Image.fromarray(mask * 255).save(masks / f"tile{seed}.png")
    return images, masks


@pytest.fixture(scope="module")
def tiny_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny disk-finding U-Net (weights and card), trained once for the module."""
    from slide_unet.core.training.config import TrainingConfig
    from slide_unet.core.training.image_pairs import find_pairs
    from slide_unet.core.training.train import train

    folder = tmp_path_factory.mktemp("tiny-model")
    pairs, _ = find_pairs(*_write_pairs(folder, range(4)))
    config = TrainingConfig(
        name=BASE,
        base_width=4,
        depth=2,
        patch=64,
        batch_size=4,
        epochs=2,
        steps_per_epoch=6,
        learning_rate=1e-2,
        val_fraction=0.25,
        device="cpu",
        tile=64,
    )
    out = folder / "model" / f"{BASE}.safetensors"
    out.parent.mkdir()
    train(pairs, config, out)
    return out.parent


@pytest.fixture(autouse=True)
def _private_folders(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, tiny_model: Path) -> None:
    models = tmp_path / "models"
    shutil.copytree(tiny_model, models)
    monkeypatch.setenv(MODELS_DIR_ENV, str(models))
    monkeypatch.setenv(MASKS_DIR_ENV, str(tmp_path / "masks"))


def _bundled_hashes() -> dict[str, str]:
    return {
        p.name: hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(bundled_models_dir().iterdir())
    }


def _open(viewer, dock, *, seeds=(0,), regions: bool = True):
    """Image and corrected Labels layers (and a Shapes layer of two boxes); the widget."""
    for seed in seeds:
        image, mask = disks(seed)
        viewer.add_image(image, name=f"tissue{seed}", rgb=True)
        viewer.add_labels(mask, name=f"tissue{seed} mask")
    if regions:
        boxes = [np.array([[5, 5], [5, 90], [90, 90], [90, 5]]), np.array([[80, 70], [150, 150]])]
        viewer.add_shapes(boxes, shape_type=["rectangle", "rectangle"], name="corrected")
    widget = dock("Fine-tune")
    widget.model.value = BASE
    widget.image.value = f"tissue{seeds[0]}"
    widget.mask.value = f"tissue{seeds[0]} mask"
    widget.regions.value = "corrected" if regions else None
    widget.settings.minutes.value = 5.0
    widget.advanced.device.value = "cpu"
    widget.advanced.batch_size.value = 4
    widget.advanced.learning_rate.value = 1e-3
    return widget


def _run(qtbot, widget, epochs: int):
    widget.advanced.epochs.value = epochs
    with qtbot.waitSignal(widget.finished, timeout=WAIT_MS):
        job = widget.run()
        assert job is not None
    return job


def test_finetunes_corrected_layers_and_segment_lists_and_runs_the_new_model(
    viewer, dock, qtbot, errors
) -> None:
    hashes = _bundled_hashes()
    segment = dock("Segment")
    widget = _open(viewer, dock)
    name = widget.new_name.value
    assert name.startswith(f"{BASE}-finetuned-")
    records: list[dict] = []
    widget.advanced.epochs.value = 2
    with qtbot.waitSignal(widget.finished, timeout=WAIT_MS):
        job = widget.run()
        job.signals.partial.connect(lambda v: isinstance(v, dict) and records.append(v))
    assert errors == []
    # Live: the base model's Dice, then one point per epoch, with training
    # losses every few steps in between.
    assert [_validated_epoch(r) for r in records if "val_dice" in r] == [0, 1, 2]
    assert any("val_dice" not in r for r in records)
    result = widget.result
    assert result is not None
    assert result.stopped == "finished"
    assert [p["epoch"] for p in widget.curve.points] == [0, 1, 2]
    assert all(p["val_dice"] is not None for p in widget.curve.points)
    assert widget.before_dice.text() == f"{result.before_dice:.4f}"
    assert widget.after_dice.text() == f"{result.after_dice:.4f}"
    assert result.after_dice >= result.before_dice  # the best epoch is kept
    assert widget.progress_bar.value() == 100
    assert str(result.path) in widget.saved.text()
    card = list_models()[name]
    assert card.parent == BASE
    assert Path(result.path).parent == Path(os.environ[MODELS_DIR_ENV])
    # The new model is in the Segment widget's picker at once, selected.
    assert name in segment.model.choices
    assert segment.model.value == name
    # A fresh default name for the next run (this one is taken now).
    assert widget.new_name.value != name
    # Segment viewport with it (the button, clicked): the Segment widget's mask of the
    # image on screen, from the new model, in its Labels layer and mask store.
    assert widget.segment_button.enabled
    with qtbot.waitSignal(segment.finished, timeout=WAIT_MS):
        qtbot.mouseClick(widget.segment_button.native, Qt.MouseButton.LeftButton)
    assert errors == []
    assert segment.last_result is not None
    y0, y1, x0, x1 = segment.last_result["region"]
    labels = segment.layer
    assert labels in viewer.layers
    assert labels.metadata["model"] == name
    shown = np.asarray(labels.data[0] if labels.multiscale else labels.data)
    expected = segment_array(viewer.layers["tissue0"].data, name, region=(y0, y1, x0, x1))
    np.testing.assert_array_equal(shown[y0:y1, x0:x1], expected)
    assert expected.any()  # the disks, found by the fine-tuned model
    assert _bundled_hashes() == hashes


def test_segment_viewport_opens_the_segment_widget_when_none_is_open(
    viewer, dock, qtbot, errors
) -> None:
    widget = _open(viewer, dock, regions=False)
    _run(qtbot, widget, epochs=1)
    assert segment_widgets(viewer) == []
    job = widget.segment_viewport()
    assert job is not None
    (segment,) = segment_widgets(viewer)
    qtbot.waitUntil(lambda: not job.running, timeout=WAIT_MS)
    assert segment.model.value == widget.result.card.name
    assert errors == []


def test_several_pairs_from_the_list_train_together(viewer, dock, qtbot, errors) -> None:
    widget = _open(viewer, dock, seeds=(0, 1), regions=False)
    assert widget.add_pair()
    widget.image.value, widget.mask.value = "tissue1", "tissue1 mask"
    assert widget.add_pair()
    assert not widget.add_pair()  # the same pair twice: refused
    assert len(errors) == 1
    assert "listed already" in errors[0]
    assert [p[:2] for p in widget.pairs] == [
        ("tissue0", "tissue0 mask"),
        ("tissue1", "tissue1 mask"),
    ]
    _run(qtbot, widget, epochs=1)
    assert errors == ["'tissue1' with 'tissue1 mask' is listed already"]
    assert widget.result is not None
    assert widget.result.stopped == "finished"
    assert widget.result.card.name in list_models()
    widget.pair_list.setCurrentRow(0)
    widget.remove_pair()
    assert [p[0] for p in widget.pairs] == ["tissue1"]


def test_folders_of_images_and_masks(dock, qtbot, errors, tmp_path) -> None:
    images, masks = _write_pairs(tmp_path / "data", range(10, 13))
    widget = dock("Fine-tune")
    widget.source.value = "Folders"
    assert not widget.image.visible
    widget.images_dir.value, widget.masks_dir.value = images, masks
    widget.model.value = BASE
    widget.advanced.device.value = "cpu"
    widget.advanced.batch_size.value = 4
    _run(qtbot, widget, epochs=1)
    assert errors == []
    assert widget.result is not None
    assert widget.result.card.name in list_models()


def test_cancel_after_the_first_epoch_keeps_the_best_and_the_widget_stays_usable(
    viewer, dock, qtbot, errors
) -> None:
    widget = _open(viewer, dock)
    widget.advanced.epochs.value = 1000
    name = widget.new_name.value

    def first_epoch(value: object) -> None:
        if _validated_epoch(value) == 1:
            widget.cancel()

    with qtbot.waitSignal(widget.finished, timeout=WAIT_MS):
        job = widget.run()
        job.signals.partial.connect(first_epoch)
    assert errors == []  # a cancel is not an error
    result = widget.result
    assert result is not None
    assert result.stopped == "cancelled"
    assert widget.status.value.startswith("cancelled after")
    best = max(h["val_dice"] for h in result.history)  # epoch 0 (the base model) included
    assert result.after_dice == pytest.approx(best, abs=1e-4)
    assert max(p["epoch"] for p in widget.curve.points) < 1000
    assert name in list_models()
    assert widget.run_button.enabled
    assert not widget.cancel_button.enabled
    _run(qtbot, widget, epochs=1)  # usable again
    assert widget.result is not None
    assert widget.result.stopped == "finished"


def test_napari_activity_dock_cancel_stops_the_run(viewer, dock, qtbot, errors) -> None:
    widget = _open(viewer, dock)
    widget.advanced.epochs.value = 1000

    def first_epoch(value: object) -> None:
        if _validated_epoch(value) == 1:
            widget.job.bar.cancel()  # what the activity dock's Cancel button does

    with qtbot.waitSignal(widget.finished, timeout=WAIT_MS):
        job = widget.run()
        job.signals.partial.connect(first_epoch)
    assert errors == []
    assert widget.result is not None
    assert widget.result.stopped == "cancelled"
    assert max(h["epoch"] for h in widget.result.history) < 1000


def test_cancel_before_the_first_epoch_keeps_the_base_weights_and_says_so(
    viewer, dock, qtbot, errors
) -> None:
    widget = _open(viewer, dock)
    widget.advanced.epochs.value = 1000
    name = widget.new_name.value
    with qtbot.waitSignal(widget.finished, timeout=WAIT_MS):
        assert widget.run() is not None
        widget.cancel()
    assert errors == []
    # Fine-tuning starts from the base model's weights, so they are what is kept.
    assert widget.result is not None
    assert widget.result.stopped == "cancelled"
    assert [h["epoch"] for h in widget.result.history] == [0]
    assert widget.result.after_dice == pytest.approx(widget.result.before_dice, abs=1e-4)
    assert "saved with the base model's weights" in widget.status.value
    assert name in list_models()
    assert widget.run_button.enabled


def test_the_curve_moves_while_training_and_the_time_budget_holds(
    viewer, dock, qtbot, errors
) -> None:
    from slide_unet.core.training.finetune import STEPS_PER_EPOCH
    from slide_unet.core.training.image_pairs import ImagePair, read_pair
    from slide_unet.core.training.train import LOSS_EVERY

    image, mask, mpp = read_pair(
        ImagePair("kidney", SAMPLE / "kidney_pas.ome.tif", SAMPLE / "kidney_pas_mask.ome.tif")
    )
    viewer.add_image(image, name="kidney", rgb=True)
    viewer.add_labels(mask.astype(np.uint8), name="kidney mask")
    widget = dock("Fine-tune")
    widget.model.value = "glomeruli"
    widget.image.value, widget.mask.value, widget.regions.value = "kidney", "kidney mask", None
    widget.pixel_size.mpp.value = mpp
    budget = 30.0
    widget.settings.minutes.value = budget / 60
    widget.advanced.epochs.value = 0  # as many as the budget allows
    widget.advanced.device.value = "cpu"
    # Small batches: steps of a fraction of a second on a busy 2-core CPU, so
    # training losses come in well before the first epoch's validation.
    widget.advanced.batch_size.value = 2

    def live() -> bool:
        # The base model's Dice and a training loss, shown while the run goes on.
        return bool(widget.curve.points and widget.curve.losses) and widget.job.running

    started = time.perf_counter()
    with qtbot.waitSignal(widget.finished, timeout=WAIT_MS):
        assert widget.run() is not None
        qtbot.waitUntil(live, timeout=int(budget * 1000))
        points, losses = list(widget.curve.points), list(widget.curve.losses)
        shown_before = widget.before_dice.text()
    elapsed = time.perf_counter() - started
    assert errors == []
    result = widget.result
    assert result is not None
    assert result.stopped == "finished"
    assert points[0]["epoch"] == 0
    assert points[0]["val_dice"] == result.before_dice
    assert shown_before == f"{result.before_dice:.4f}"
    assert losses[0]["step"] == LOSS_EVERY < STEPS_PER_EPOCH  # before the first validation
    assert len(widget.curve.losses) > len(losses)
    assert [p["epoch"] for p in widget.curve.points][:2] == [0, 1]
    # From the click to the saved model, within the budget (10 % over at most).
    assert elapsed <= 1.1 * budget, f"{elapsed:.1f} s for a {budget:.0f} s budget"


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ("no_image", "no image layer"),
        ("other_shape", "pick the whole mask"),
        ("bundled_name", "bundled"),
        ("bad_name", "not a usable model name"),
        ("taken_name", "exists already"),
        ("too_large", "too large"),
        ("empty_regions", "no shape over the image"),
    ],
)
def test_bad_input_is_one_notification_and_starts_nothing(
    viewer, dock, errors, monkeypatch, change: str, message: str
) -> None:
    widget = _open(viewer, dock, regions=change == "empty_regions")
    if change == "no_image":
        viewer.layers.remove("tissue0")
        widget.mask.value = "tissue0 mask"
    elif change == "other_shape":
        viewer.add_labels(np.zeros((50, 60), np.uint8), name="window")
        widget.mask.value = "window"
    elif change == "bundled_name":
        widget.new_name.value = "nuclei"
    elif change == "bad_name":
        widget.new_name.value = "../elsewhere"
    elif change == "taken_name":
        widget.new_name.value = BASE
    elif change == "too_large":
        monkeypatch.setattr(finetune_input, "MAX_PIXELS", 100 * 100)
    elif change == "empty_regions":
        viewer.layers["corrected"].data = [np.array([[500, 500], [600, 600]])]
    models = set(list_models())
    assert widget.run() is None
    assert len(errors) == 1, errors
    assert message in errors[0]
    assert widget.job is None
    assert widget.run_button.enabled
    assert set(list_models()) == models


def test_large_images_read_only_the_regions_bounding_area(viewer, dock, monkeypatch) -> None:
    _open(viewer, dock)
    monkeypatch.setattr(finetune_input, "MAX_PIXELS", 150 * 150)
    pair = finetune_input.layer_pair(viewer, "tissue0", "tissue0 mask", "corrected")
    assert pair.window == (5, 150, 5, 150)
    assert pair.regions == ((0, 85, 0, 85), (75, 145, 65, 145))
    read = pair.read()
    image, mask = disks(0)
    np.testing.assert_array_equal(read.image, image[5:150, 5:150])
    np.testing.assert_array_equal(read.mask, mask[5:150, 5:150])
    monkeypatch.setattr(finetune_input, "MAX_PIXELS", 100 * 100)
    with pytest.raises(ValueError, match="span 145 x 145"):
        finetune_input.layer_pair(viewer, "tissue0", "tissue0 mask", "corrected")


def test_regions_follow_the_layers_scale_and_translation(viewer) -> None:
    image = viewer.add_image(np.zeros((200, 300), np.uint8), scale=(0.5, 0.5), translate=(10, 20))
    # World (µm) box from (20, 30) to (40, 70): image pixels rows 20-60, columns 20-100.
    shapes = viewer.add_shapes([np.array([[20, 30], [40, 70]])], shape_type="rectangle")
    assert finetune_input.shape_boxes(shapes, image) == [(20, 60, 20, 100)]
    # A shape partly outside the image is clipped; one wholly outside is left out.
    shapes.data = [np.array([[0, 0], [15, 30]]), np.array([[500, 500], [600, 600]])]
    assert finetune_input.shape_boxes(shapes, image) == [(0, 10, 0, 20)]


def test_default_names_follow_the_base_and_avoid_taken_ones() -> None:
    import datetime

    day = datetime.date(2025, 11, 26)
    assert finetune_input.default_model_name("nuclei", set(), day) == (
        "nuclei-finetuned-2025-11-26"
    )
    taken = {"nuclei-finetuned-2025-11-26"}
    assert finetune_input.default_model_name("nuclei", taken, day) == (
        "nuclei-finetuned-2025-11-26-2"
    )
    assert finetune_input.default_model_name("nuclei-finetuned-2025-11-01", set(), day) == (
        "nuclei-finetuned-2025-11-26"
    )


def test_export_for_bioimageio_writes_a_package_that_passes_its_test(
    viewer, dock, qtbot, errors, tmp_path, monkeypatch
) -> None:
    """The button after a run: a licence asked for (the base model's offered), a path
    from the file dialog, the package written in the background; bioimageio test passes."""
    pytest.importorskip("bioimageio.core", reason="needs the bioimageio extra")
    from qtpy.QtWidgets import QFileDialog, QInputDialog

    from slide_unet.core.model.bioimageio_export import check_bioimageio_package

    widget = _open(viewer, dock)
    assert not widget.export_button.enabled  # nothing to export before a run
    _run(qtbot, widget, epochs=1)
    assert widget.export_button.enabled
    asked: list[str] = []

    def licence(parent, title, label, text=""):
        asked.append(text)
        return "CC0-1.0", True

    target = tmp_path / "shared" / "tiny"  # no .zip: the widget adds it
    target.parent.mkdir()
    monkeypatch.setattr(QInputDialog, "getText", staticmethod(licence))
    monkeypatch.setattr(
        QFileDialog, "getSaveFileName", staticmethod(lambda *a, **k: (str(target), ""))
    )
    with qtbot.waitSignal(widget.exported, timeout=WAIT_MS):
        qtbot.mouseClick(widget.export_button.native, Qt.MouseButton.LeftButton)
    assert errors == []
    package = target.with_suffix(".zip")
    assert package.is_file()
    assert str(package) in widget.status.value
    assert len(asked) == 1  # a fine-tuned card claims no licence: the user gives one
    assert "license: CC0-1.0" in zipfile.ZipFile(package).read("rdf.yaml").decode()
    assert widget.export_button.enabled
    result = check_bioimageio_package(package)
    assert result.passed, result.summary
    # A cancelled dialog writes nothing.
    monkeypatch.setattr(QFileDialog, "getSaveFileName", staticmethod(lambda *a, **k: ("", "")))
    assert widget.export_bioimageio() is None
    assert sorted(p.name for p in package.parent.iterdir()) == ["tiny.zip"]
