"""The QuPath round trip from the command line: GeoJSON out with measurements
and object types, and QuPath's own exports (written by hand) as truth and as
input, by class."""

from __future__ import annotations

import json
import warnings
from pathlib import Path

import numpy as np
import pytest

import slide_unet
from slide_unet import cli
from tests.core.masks.test_qupath import SHAPE, expected, qupath_export

SAMPLE = Path(__file__).resolve().parents[2] / "sample_data" / "kidney_pas.ome.tif"


@pytest.fixture(autouse=True)
def _quiet_placeholder():
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        yield


@pytest.fixture
def qupath_file(tmp_path) -> Path:
    path = tmp_path / "qupath.geojson"
    path.write_text(json.dumps(qupath_export(), indent=2), encoding="utf-8")
    return path


def _features(path: Path) -> list[dict]:
    return json.loads(path.read_text(encoding="utf-8"))["features"]


def test_export_geojson_has_measurements_in_um_and_detection(tmp_path, capsys):
    mask = np.zeros((40, 50), dtype=np.uint8)
    mask[2:12, 3:9] = 1
    mask[20:30, 30:45] = 1
    src = slide_unet.write_mask(mask, tmp_path / "m.ome.tif", mpp=0.5)
    out = tmp_path / "m.geojson"
    assert cli.main(["export", str(src), "-o", str(out), "--object-type", "detection"]) == 0
    features = _features(out)
    assert [f["properties"]["objectType"] for f in features] == ["detection", "detection"]
    areas = sorted(f["properties"]["measurements"]["Area µm^2"] for f in features)
    assert areas == [15.0, 37.5]  # 60 and 150 pixels of 0.25 µm²
    assert cli.main(["export", str(src), "-o", str(out), "--no-measurements"]) == 0
    features = _features(out)
    assert all("measurements" not in f["properties"] for f in features)
    assert {f["properties"]["objectType"] for f in features} == {"annotation"}


def test_export_qupath_file_by_class_and_as_labels(tmp_path, qupath_file, capsys):
    one = tmp_path / "tubule.png"
    shape = f"{SHAPE[0]},{SHAPE[1]}"
    args = ["export", str(qupath_file), "--shape", shape]
    assert cli.main([*args, "-o", str(one), "--classification", "Tubule"]) == 0
    np.testing.assert_array_equal(slide_unet.read_mask(one), expected("Tubule"))
    capsys.readouterr()
    labels = tmp_path / "labels.ome.tif"
    assert cli.main([*args, "-o", str(labels)]) == 0
    assert "classes: 1 = Glomerulus, 2 = Tubule" in capsys.readouterr().out
    want = expected("Glomerulus") + 2 * expected("Tubule")
    np.testing.assert_array_equal(slide_unet.read_mask(labels), want)


def test_score_against_a_qupath_truth_by_class(tmp_path, qupath_file, capsys):
    pred = slide_unet.write_mask(expected("Glomerulus"), tmp_path / "pred.png")
    # several classes and none picked: one line that lists them
    assert cli.main(["score", str(pred), str(qupath_file)]) != 0
    err = capsys.readouterr().err
    assert "several QuPath classes" in err
    assert "1 = Glomerulus, 2 = Tubule" in err
    argv = ["score", str(pred), str(qupath_file), "--json", "--classification", "Glomerulus"]
    assert cli.main(argv) == 0
    assert json.loads(capsys.readouterr().out)["dice"] == pytest.approx(1.0)
    argv[-1] = "Tubule"
    assert cli.main(argv) == 0
    assert json.loads(capsys.readouterr().out)["dice"] == pytest.approx(0.0)


def test_segment_to_geojson_with_measurements(tmp_path, capsys):
    out = tmp_path / "glomeruli.geojson"
    argv = ["segment", str(SAMPLE), "-o", str(out), "--region", "0:512,0:512"]
    assert cli.main([*argv, "--object-type", "detection"]) == 0
    assert sorted(p.name for p in tmp_path.iterdir()) == ["glomeruli.geojson"]
    features = _features(out)
    mask = slide_unet.read_mask(out, shape=(512, 512))
    table = slide_unet.measure(mask, mpp=0.5)
    assert len(features) == len(table)
    for feature in features:
        assert feature["properties"]["objectType"] == "detection"
    got = sorted(f["properties"]["measurements"]["Area µm^2"] for f in features)
    assert got == sorted(table["area_um2"].tolist())
