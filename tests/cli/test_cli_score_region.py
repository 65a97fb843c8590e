"""``slide-unet score --region``: a region-sized mask against the truth's crop."""

from __future__ import annotations

import json

import numpy as np
import pytest
from PIL import Image

from slide_unet import cli


@pytest.fixture
def truth_and_region(tmp_path):
    truth = np.zeros((200, 300), np.uint8)
    truth[20:60, 30:90] = 255  # outside the region
    truth[120:160, 200:260] = 255  # inside it
    path = tmp_path / "truth.png"
    Image.fromarray(truth).save(path)
    return path, truth


def _score(args, capsys):
    assert cli.main(["score", *args, "--json"]) == 0
    return json.loads(capsys.readouterr().out)


def test_a_region_sized_prediction_is_scored_against_the_truths_crop(
    tmp_path, capsys, truth_and_region
):
    truth_path, truth = truth_and_region
    pred = tmp_path / "pred.png"
    Image.fromarray(truth[100:200, 150:300]).save(pred)  # what segment --region writes
    result = _score([str(pred), str(truth_path), "--region", "100:200,150:300"], capsys)
    assert result["dice"] == pytest.approx(1.0)
    assert result["true_positives"] == 1
    assert result["false_negatives"] == 0


def test_a_whole_prediction_is_cropped_too(tmp_path, capsys, truth_and_region):
    truth_path, truth = truth_and_region
    pred = tmp_path / "pred.png"
    whole = truth.copy()
    whole[20:60, 30:90] = 0  # a miss outside the region does not count
    Image.fromarray(whole).save(pred)
    result = _score([str(pred), str(truth_path), "--region", "100:200,150:300"], capsys)
    assert result["dice"] == pytest.approx(1.0)


def test_a_region_outside_the_truth_is_a_one_line_error(tmp_path, capsys, truth_and_region):
    truth_path, truth = truth_and_region
    pred = tmp_path / "pred.png"
    Image.fromarray(truth[:50, :50]).save(pred)
    assert cli.main(["score", str(pred), str(truth_path), "--region", "0:50,280:330"]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1
    assert "--region" in err[0]


def test_tiles_image_is_the_per_tile_dice_grid_nan_where_both_are_empty(
    tmp_path, capsys, truth_and_region
):
    import tifffile

    truth_path, truth = truth_and_region
    pred = tmp_path / "pred.png"
    damaged = truth.copy()
    damaged[120:160, 200:260] = 0  # the object in tile (1, 2) missed
    Image.fromarray(damaged).save(pred)
    out = tmp_path / "heat.tif"
    args = [str(pred), str(truth_path), "--tile", "100", "--tiles-image", str(out)]
    result = _score(args, capsys)
    grid = tifffile.imread(out)
    assert grid.dtype == np.float32
    assert grid.shape == (2, 3)
    np.testing.assert_array_equal(np.isnan(grid), [[False, True, True], [True, True, False]])
    assert grid[0, 0] == 1.0
    assert grid[1, 2] == 0.0
    assert result["dice"] == pytest.approx(2 * 2400 / (2400 + 4800))


def test_tiles_image_over_an_input_is_refused(tmp_path, capsys, truth_and_region):
    truth_path, truth = truth_and_region
    pred = tmp_path / "pred.png"
    Image.fromarray(truth).save(pred)
    assert cli.main(["score", str(pred), str(truth_path), "--tiles-image", str(pred)]) == 1
    assert "is one of the masks scored" in capsys.readouterr().err
    assert np.array_equal(np.asarray(Image.open(pred)), truth)
