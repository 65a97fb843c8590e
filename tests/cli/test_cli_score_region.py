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
