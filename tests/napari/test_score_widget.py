"""The Score widget, in a real napari viewer, against the sample's expert mask."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import dask.array as da
import numpy as np
import pytest
import tifffile
from qtpy.QtCore import Qt
from scipy import ndimage as ndi

from slide_unet.core.masks.io import write_mask
from slide_unet.core.masks.rle_csv import write_rle_csv
from slide_unet.core.scoring.metrics import confusion_overlay, dice
from slide_unet.napari import overlay as _overlay
from slide_unet.napari.score_widget import ScoreWidget
from slide_unet.napari.truth_choice import FILE, LAYER

SAMPLE = Path(__file__).resolve().parents[2] / "sample_data"
TRUTH_TIF = SAMPLE / "kidney_pas_mask.ome.tif"
TRUTH_CSV = SAMPLE / "kidney_pas_mask.csv"
RLE_ID = "kidney_pas"  # the CSV's only row
PLUGIN = "napari-slide-unet"
WAIT_MS = 120_000

pytestmark = pytest.mark.gui


@pytest.fixture(scope="module")
def truth() -> np.ndarray:
    """The sample's expert glomerulus mask, 2048 x 2048 uint8 0/1 (four glomeruli)."""
    return (tifffile.imread(TRUTH_TIF) != 0).astype(np.uint8)


@pytest.fixture(scope="module")
def prediction(truth: np.ndarray) -> np.ndarray:
    """A realistic imperfect prediction: one glomerulus missed, the others eroded 2 px
    and shifted (3, -2) px, and a false object where the truth is empty."""
    objects, _ = ndi.label(truth, np.ones((3, 3), bool))
    pred = ndi.binary_erosion((objects != 0) & (objects != 2), np.ones((3, 3), bool), iterations=2)
    pred = np.roll(pred, (3, -2), axis=(0, 1))
    pred[40:100, 40:100] = True
    return pred.astype(np.uint8)


@pytest.fixture
def widget(dock) -> ScoreWidget:
    """The widget as napari adds it: through the manifest (Layers > Measure > Score)."""
    widget = dock("Score")
    assert isinstance(widget, ScoreWidget)
    return widget


def _pick(widget: ScoreWidget, pred: str, *, truth_layer=None, truth_file=None, rle_id=""):
    widget.prediction.value = pred
    if truth_file is not None:
        widget.truth_source.value = FILE
        widget.truth_file.value = truth_file
        widget.rle_id.value = rle_id
    else:
        widget.truth_source.value = LAYER
        widget.truth_layer.value = truth_layer


def _score(qtbot, widget: ScoreWidget) -> None:
    """Press Score and wait until the job has ended (results shown or error notified)."""
    with qtbot.waitSignal(widget.finished, timeout=WAIT_MS):
        widget.score_button.native.click()


def _cli_scores(tmp_path: Path, prediction: np.ndarray, truth: Path, *extra: str) -> dict:
    pred_file = write_mask(prediction, tmp_path / "pred.ome.tif", mpp=0.5)
    command = ["score", str(pred_file), str(truth), "--json", *extra]
    out = subprocess.run(
        [sys.executable, "-m", "slide_unet.cli", *command],
        capture_output=True,
        text=True,
        check=True,
    )
    return json.loads(out.stdout)


def _table(widget: ScoreWidget) -> list[list[float]]:
    return [
        [widget.table.item(r, c).data(0) for c in range(widget.table.columnCount())]
        for r in range(widget.table.rowCount())
    ]


# -- choosing the masks ------------------------------------------------------------------


def test_layer_pickers_follow_labels_layers_added_renamed_and_removed(viewer, widget):
    assert widget.prediction.choices == ()
    viewer.add_image(np.zeros((8, 8)), name="image")  # not a mask: never offered
    first = viewer.add_labels(np.zeros((8, 8), np.uint8), name="first")
    viewer.add_labels(np.zeros((8, 8), np.uint8), name="second")
    assert set(widget.prediction.choices) == {"first", "second"}
    assert set(widget.truth_layer.choices) == {"first", "second"}
    first.name = "renamed"
    assert set(widget.prediction.choices) == {"renamed", "second"}
    viewer.layers.remove("second")
    assert widget.prediction.choices == ("renamed",)


def test_rle_id_is_asked_for_only_when_the_truth_is_a_csv(widget):
    def shown(field) -> bool:  # hidden on purpose, not just because the window is hidden
        return not field.native.isHidden()

    widget.truth_source.value = LAYER
    assert shown(widget.truth_layer)
    assert not shown(widget.truth_file)
    widget.truth_source.value = FILE
    widget.truth_file.value = TRUTH_TIF
    assert shown(widget.truth_file)
    assert not shown(widget.truth_layer)
    assert not shown(widget.rle_id)
    widget.truth_file.value = TRUTH_CSV
    assert shown(widget.rle_id)


# -- scores ------------------------------------------------------------------------------


def test_dice_of_a_truth_file_equals_the_cli_and_the_table_lists_tiles_worst_first(
    qtbot, viewer, widget, prediction, tmp_path
):
    viewer.add_labels(prediction, name="pred", scale=(0.5, 0.5))
    _pick(widget, "pred", truth_file=TRUTH_TIF)
    widget.params.tile.value = 256
    _score(qtbot, widget)

    cli = _cli_scores(tmp_path, prediction, TRUTH_TIF, "--tile", "256")
    scores = widget.scores
    assert scores is not None
    assert scores.dice == cli["dice"]
    assert scores.iou == cli["iou"]
    assert scores.object_f1 == cli["object_f1"]
    assert 0.5 < scores.dice < 0.95  # an imperfect prediction, as built
    shown = {key: label.text() for key, label in widget.results.items()}
    assert shown["dice"] == f"{cli['dice']:.4f}"
    assert shown["iou"] == f"{cli['iou']:.4f}"
    assert shown["object_precision"] == f"{cli['object_precision']:.3f}"
    assert shown["object_recall"] == f"{cli['object_recall']:.3f}"
    assert shown["object_f1"] == f"{cli['object_f1']:.3f}"
    assert shown["objects"].startswith(
        f"{cli['true_positives']} matched, {cli['false_positives']} false positive, "
        f"{cli['false_negatives']} missed"
    )
    counts = ("true_positives", "false_positives", "false_negatives")
    assert [getattr(scores, name) for name in counts] == [cli[name] for name in counts]
    assert (scores.true_positives, scores.false_negatives) == (3, 1)  # one glomerulus missed

    records = [r for r in scores.tiles.records() if r["pred_pixels"] + r["true_pixels"]]
    rows = _table(widget)
    assert len(rows) == len(records) < 64  # tiles empty in both masks are left out
    shown_dice = [row[2] for row in rows]
    assert shown_dice == sorted(shown_dice)
    keys = ("row", "col", "dice", "pred_pixels", "true_pixels")
    expected = [[round(r[k], 4) if k == "dice" else r[k] for k in keys] for r in records]
    assert sorted(rows) == sorted(expected)


def test_rle_csv_truth_with_its_id_gives_the_same_dice(qtbot, viewer, widget, prediction, truth):
    viewer.add_labels(prediction, name="pred")
    _pick(widget, "pred", truth_file=TRUTH_CSV, rle_id=RLE_ID)
    _score(qtbot, widget)
    assert widget.scores is not None
    assert widget.scores.dice == dice(prediction, truth)
    assert widget.overlay.name == f"pred vs {TRUTH_CSV.name} [{RLE_ID}]"


def test_overlay_marks_tp_fp_fn_pixels_and_replaces_the_last_one_of_the_pair(
    qtbot, viewer, widget, prediction, truth
):
    pred_layer = viewer.add_labels(prediction, name="pred", scale=(0.5, 0.5), translate=(7, 9))
    viewer.add_labels(truth, name="expert")
    _pick(widget, "pred", truth_layer="expert")
    _score(qtbot, widget)

    overlay = widget.overlay
    assert overlay.name == "pred vs expert"
    np.testing.assert_allclose(overlay.scale, pred_layer.scale)
    np.testing.assert_allclose(overlay.translate, pred_layer.translate)
    p, t = prediction != 0, truth != 0
    counts = np.bincount(np.asarray(overlay.data).ravel(), minlength=4)
    assert counts[1] == np.count_nonzero(p & t) == widget.scores.intersection
    assert counts[2] == np.count_nonzero(p & ~t)
    assert counts[3] == np.count_nonzero(~p & t)
    # Three distinct, opaque colours; background transparent.
    colours = [tuple(overlay.colormap.map(v)) for v in (1, 2, 3)]
    assert len(set(colours)) == 3
    assert all(c[3] == 1 for c in colours)
    assert overlay.colormap.map(0)[3] == 0
    # An overlay is not a prediction to score.
    assert "pred vs expert" not in widget.prediction.choices

    n_layers = len(viewer.layers)
    _score(qtbot, widget)
    assert len(viewer.layers) == n_layers
    assert [layer.name for layer in viewer.layers].count("pred vs expert") == 1
    assert widget.overlay is viewer.layers["pred vs expert"]


def test_clicking_a_tile_row_centres_the_camera_on_that_tile(
    qtbot, viewer, widget, prediction, truth
):
    layer = viewer.add_labels(prediction, name="pred", scale=(0.5, 0.5), translate=(100, -40))
    viewer.add_labels(truth, name="expert")
    _pick(widget, "pred", truth_layer="expert")
    widget.params.tile.value = 512
    _score(qtbot, widget)

    table = widget.table
    assert table.rowCount() >= 2
    for row in (1, 0):
        rect = table.visualItemRect(table.item(row, 0))
        qtbot.mouseClick(table.viewport(), Qt.MouseButton.LeftButton, pos=rect.center())
        tile_row, tile_col = table.item(row, 0).data(0), table.item(row, 1).data(0)
        y, x = tile_row * 512, tile_col * 512
        centre = layer.data_to_world((y + 255.5, x + 255.5))
        np.testing.assert_allclose(viewer.camera.center[-2:], centre)
        # The 256 µm tile fills the view without spilling over.
        shown = np.asarray(viewer.canvas.size) / viewer.camera.zoom
        assert shown.min() == pytest.approx(256 / 0.95)


def test_multiscale_prediction_gets_a_multiscale_overlay_lazy_where_big(
    qtbot, viewer, widget, prediction, truth, monkeypatch
):
    # Levels above 600 x 600 stay lazy here (a slide's are gigapixels), coarser ones are computed.
    monkeypatch.setattr(_overlay, "IN_MEMORY_PIXELS", 600 * 600)
    levels = [da.from_array(prediction[::f, ::f], chunks=256) for f in (1, 2, 4)]
    viewer.add_labels(levels, name="pred", multiscale=True)
    _pick(widget, "pred", truth_file=TRUTH_TIF)
    _score(qtbot, widget)

    overlay = widget.overlay
    assert overlay.multiscale
    assert [level.shape for level in overlay.data] == [level.shape for level in levels]
    level0, level1, level2 = overlay.data
    assert isinstance(level0, da.Array)
    assert isinstance(level1, da.Array)
    assert isinstance(level2, np.ndarray)
    np.testing.assert_array_equal(np.asarray(level0), confusion_overlay(prediction, truth))
    # Coarse levels: the prediction's own level against the truth at pixel centres.
    np.testing.assert_array_equal(
        np.asarray(level1), confusion_overlay(prediction[::2, ::2], truth[1::2, 1::2])
    )
    np.testing.assert_array_equal(
        level2, confusion_overlay(prediction[::4, ::4], truth[2::4, 2::4])
    )
    assert widget.scores.dice == dice(prediction, truth)


def test_overlay_levels_use_the_truth_layers_own_level_when_it_fits():
    pred = np.zeros((8, 8), np.uint8)
    pred[:4] = 1
    truth = np.zeros((8, 8), np.uint8)
    truth_small = np.ones((4, 4), np.uint8)  # deliberately not a sample of `truth`
    levels = _overlay.overlay_levels([pred, pred[::2, ::2]], truth, [truth, truth_small])
    np.testing.assert_array_equal(levels[1], confusion_overlay(pred[::2, ::2], truth_small))


# -- bad input ---------------------------------------------------------------------------


def test_no_labels_layer_notifies_and_adds_nothing(viewer, widget, errors):
    viewer.add_image(np.zeros((8, 8)), name="image")
    assert widget.score() is None
    assert len(errors) == 1
    assert "no prediction" in errors[0]
    assert len(viewer.layers) == 1
    assert widget.scores is None


def test_mismatched_truth_layer_notifies_and_adds_nothing(viewer, widget, errors, prediction):
    viewer.add_labels(prediction, name="pred")
    viewer.add_labels(prediction[:1000], name="small")
    _pick(widget, "pred", truth_layer="small")
    assert widget.score() is None
    assert errors == [
        "truth 'small' shape (1000, 2048) does not match prediction 'pred' (2048, 2048)"
    ]
    assert len(viewer.layers) == 2


@pytest.mark.parametrize(
    ("path", "message"),
    [("nowhere.ome.tif", "nowhere.ome.tif: no such truth file"), ("", "no truth file")],
)
def test_missing_truth_file_notifies_and_adds_nothing(
    viewer, widget, errors, prediction, tmp_path, path, message
):
    viewer.add_labels(prediction, name="pred")
    _pick(widget, "pred", truth_file=tmp_path / path if path else "")
    assert widget.score() is None
    assert len(errors) == 1
    assert message in errors[0]
    assert len(viewer.layers) == 1


def _bad_file(case: str, tmp_path: Path, truth: np.ndarray, prediction: np.ndarray) -> Path:
    if case == "unreadable":
        bad = tmp_path / "garbage.tif"
        bad.write_bytes(b"not a TIFF at all")
        return bad
    if case == "wrong size":
        return write_mask(truth[:1024], tmp_path / "small.ome.tif")
    return write_rle_csv(tmp_path / "two.csv", {"a": truth, "b": prediction})


@pytest.mark.parametrize(
    ("case", "message"),
    [
        ("unreadable", "garbage.tif: not a TIFF"),
        ("wrong size", "shape (1024, 2048) does not match prediction 'pred' (2048, 2048)"),
        ("csv without id", "two.csv holds 2 masks"),
    ],
)
def test_bad_truth_file_notifies_and_keeps_the_last_results(
    qtbot, viewer, widget, errors, prediction, truth, tmp_path, case, message
):
    viewer.add_labels(prediction, name="pred")
    viewer.add_labels(truth, name="expert")
    _pick(widget, "pred", truth_layer="expert")
    _score(qtbot, widget)
    before, overlay, n_layers = widget.scores, widget.overlay, len(viewer.layers)

    _pick(widget, "pred", truth_file=_bad_file(case, tmp_path, truth, prediction))
    _score(qtbot, widget)  # pytest-qt fails the test if the error also escapes to Qt
    assert len(errors) == 1
    assert message in errors[0]
    assert widget.scores is before
    assert widget.overlay is overlay
    assert len(viewer.layers) == n_layers
    assert widget.score_button.enabled  # ready to try again


# -- the error map -----------------------------------------------------------------------


def _tile_centre_world(layer, i: int, j: int, tile: int) -> np.ndarray:
    """World coordinates of the centre of tile (i, j) of ``layer``'s full-resolution grid."""
    centre = (i * tile + (tile - 1) / 2, j * tile + (tile - 1) / 2)
    return np.asarray(layer.data_to_world(centre))[-2:]


def test_error_map_shows_dice_per_tile_over_the_slide_worst_tile_lowest(
    qtbot, viewer, widget, truth
):
    (slide,) = viewer.open(SAMPLE / "kidney_pas.ome.tif", plugin=PLUGIN)
    # The expert mask, slightly eroded, with the glomerulus of tile (1, 0) erased.
    damaged = ndi.binary_erosion(truth, np.ones((3, 3), bool)).astype(np.uint8)
    damaged[1024:, :1024] = 0
    pred = viewer.add_labels(damaged, name="pred", scale=slide.scale[-2:])
    _pick(widget, "pred", truth_file=TRUTH_TIF)
    assert not widget.error_map_button.enabled  # nothing scored yet
    _score(qtbot, widget)
    assert widget.error_map_button.enabled
    widget.error_map_button.native.click()

    heat = viewer.layers["error map (Dice per tile)"]
    assert widget.error_map.name == heat.name  # (the widget holds napari's proxy of it)
    assert heat.data.shape == widget.scores.tiles.dice.shape == (2, 2)
    np.testing.assert_allclose(heat.data, widget.scores.tiles.dice, rtol=1e-6)
    assert np.unravel_index(np.nanargmin(heat.data), heat.data.shape) == (1, 0)
    assert heat.data[1, 0] == 0
    assert np.nanmin(np.delete(heat.data.ravel(), 2)) > 0.9
    # Lined up with the slide: each tile's centre falls on its pixel of the map.
    for i in range(2):
        for j in range(2):
            world = _tile_centre_world(slide, i, j, 1024)
            np.testing.assert_allclose(heat.world_to_data(world), (i, j), atol=1e-9)
    # Hovering the damaged tile shows its Dice in the status bar.
    status = heat.get_status(_tile_centre_world(slide, 1, 0, 1024), world=True)
    assert status["layer_name"] == "error map (Dice per tile)"
    assert status["coordinates"].rsplit(": ", 1)[1] == "0"
    np.testing.assert_allclose(slide.scale[-2:], (0.5, 0.5))  # in microns, as the slide
    assert tuple(str(u) for u in heat.units) == tuple(str(u) for u in pred.units)
    # Red for Dice 0, green for 1, translucent, one flat colour per tile.
    red, green = heat.colormap.map(np.array([0.0, 1.0]))
    assert red[0] > 0.8 > red[1]
    assert green[1] > 0.7 > green[0]
    assert tuple(heat.contrast_limits) == (0.0, 1.0)
    assert heat.opacity == 0.5
    assert heat.blending == "translucent"
    assert heat.interpolation2d == "nearest"


def test_error_map_follows_a_new_scoring_with_empty_tiles_clear(qtbot, viewer, widget, truth):
    viewer.add_labels(truth, name="pred", scale=(0.5, 0.5), translate=(30, -12))
    _pick(widget, "pred", truth_file=TRUTH_TIF)
    _score(qtbot, widget)
    first = widget.show_error_map()
    first.opacity = 0.3  # the user's choice survives an update
    n_layers = len(viewer.layers)

    widget.params.tile.value = 512
    _score(qtbot, widget)  # the map already shown is updated, not added again
    assert len(viewer.layers) == n_layers
    assert [layer.name for layer in viewer.layers].count("error map (Dice per tile)") == 1
    heat = viewer.layers["error map (Dice per tile)"]
    assert heat.opacity == 0.3
    assert heat.data.shape == (4, 4)
    empty = widget.scores.tiles.empty
    assert empty.any()
    assert np.isnan(heat.data[empty]).all()  # nothing to score: drawn transparent
    assert (heat.data[~empty] == 1).all()
    assert heat.colormap.map(np.array([np.nan]))[0][3] == 0
    pred = viewer.layers["pred"]
    for i, j in [(0, 0), (3, 1), (2, 3)]:
        world = _tile_centre_world(pred, i, j, 512)
        np.testing.assert_allclose(heat.world_to_data(world), (i, j), atol=1e-9)


def test_error_map_before_scoring_notifies(viewer, widget, errors):
    assert widget.show_error_map() is None
    assert errors == ["nothing scored yet: press Score first"]
    assert len(viewer.layers) == 0


# -- a QuPath GeoJSON truth, by class -----------------------------------------------------


def _box_ring(y0: int, x0: int, y1: int, x1: int) -> list[list[int]]:
    return [[x0, y0], [x1, y0], [x1, y1], [x0, y1], [x0, y0]]


def _qupath_truth(path: Path, truth: np.ndarray) -> Path:
    """A QuPath-style export over the sample: each glomerulus as a Glomerulus box, and
    two Tubule squares where there is no glomerulus."""
    objects, _ = ndi.label(truth)

    def feature(ring, name, colour):
        return {
            "type": "Feature",
            "geometry": {"type": "Polygon", "coordinates": [ring]},
            "properties": {
                "objectType": "annotation",
                "classification": {"name": name, "color": colour},
            },
        }

    features = [
        feature(_box_ring(ys.start, xs.start, ys.stop, xs.stop), "Glomerulus", [255, 0, 0])
        for ys, xs in ndi.find_objects(objects)
    ]
    features += [
        feature(_box_ring(y, x, y + 200, x + 200), "Tubule", [0, 200, 0])
        for y, x in [(1500, 1500), (100, 1000)]
    ]
    path.write_text(json.dumps({"type": "FeatureCollection", "features": features}))
    return path


def test_class_picker_lists_a_geojson_truths_classes_and_scores_the_one_picked(
    qtbot, viewer, widget, truth, tmp_path
):
    geojson = _qupath_truth(tmp_path / "qupath.geojson", truth)
    viewer.add_labels(truth, name="pred")
    _pick(widget, "pred", truth_file=TRUTH_TIF)
    assert widget.truth_class.native.isHidden()  # a TIFF has no classes
    _pick(widget, "pred", truth_file=geojson)
    assert not widget.truth_class.native.isHidden()
    assert widget.truth_class.choices == ("all classes", "Glomerulus", "Tubule")

    found = {}
    for name in ("Glomerulus", "Tubule", "all classes"):
        widget.truth_class.value = name
        _score(qtbot, widget)
        found[name] = widget.scores.dice
        suffix = "" if name == "all classes" else f" [{name}]"
        assert widget.overlay.name == f"pred vs qupath.geojson{suffix}"
    assert 0.6 < found["Glomerulus"] < 1  # boxes round the glomeruli
    assert found["Tubule"] == 0  # no glomerulus there
    assert found["Tubule"] < found["all classes"] < found["Glomerulus"]
