"""The minimum object area chosen by cross-validation, and recorded in the card."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from test_training import folders, tiny_config  # noqa: F401 (a fixture)

from slide_unet.core.model.store import load_model
from slide_unet.core.training.cross_validation import cross_validate, train_cross_validated
from slide_unet.core.training.data import TrainingImage
from slide_unet.core.training.image_pairs import find_pairs
from slide_unet.core.training.min_object import FRACTIONS, choose, median_object_um2


def _image(mask: np.ndarray) -> TrainingImage:
    h, w = mask.shape
    return TrainingImage("t", np.zeros((h, w, 3), np.uint8), mask, np.zeros((0, 2), np.int64))


def test_the_median_expert_object_is_measured_in_square_microns_at_the_working_scale() -> None:
    mask = np.zeros((20, 20), np.uint8)
    mask[0:2, 0:2] = 1  # 4 px
    mask[5:9, 5:9] = 1  # 16 px
    mask[12, 12] = mask[13, 13] = 1  # 2 px, touching diagonally: one object
    other = np.zeros((10, 10), np.uint8)
    other[0:5, 0:2] = 1  # 10 px
    assert median_object_um2([_image(mask), _image(other)], 2.0) == pytest.approx(7 * 4.0)
    assert median_object_um2([_image(np.zeros((4, 4), np.uint8))], 2.0) == 0.0


def test_the_best_mean_wins_and_a_tie_keeps_more_objects() -> None:
    keys = [f"{f:.6g}" for f in FRACTIONS]
    fold1 = {k: {"a": 0.8, "b": 0.6} for k in keys}
    fold2 = {k: {"c": 0.7} for k in keys}
    fold1[keys[3]] = {"a": 0.9, "b": 0.6}  # 1/16 helps image a
    fold1[keys[4]] = {"a": 0.9, "b": 0.6}  # 1/8 as much
    fold1[keys[5]] = {"a": 0.9, "b": 0.1}  # 1/4 drops b's real object
    choice = choose([fold1, fold2], median_um2=16000.0)
    assert choice is not None
    assert choice.fraction == FRACTIONS[3]
    assert choice.min_object_um2 == 1000.0
    assert choice.mean_dice == pytest.approx((0.9 + 0.6 + 0.7) / 3)
    card = choice.card()
    assert card["min_object_um2"] == 1000.0
    assert card["min_object_choice"]["mean_dice_by_fraction"]["0"] == pytest.approx(0.7)
    assert choose([fold1, None], 16000.0) is None  # a fold without its table: no choice
    assert choose([], 16000.0) is None


def test_cross_validation_scores_each_area_on_the_folds_unseen_images(
    folders: tuple[Path, Path],  # noqa: F811
    tmp_path: Path,
) -> None:
    pairs, _ = find_pairs(*folders)
    config = tiny_config(epochs=2, working_mpp=1.0, input_mpp=1.0)
    found = cross_validate(pairs, config, 2)
    assert len(found.min_object_tables) == 2
    for fold, table in zip(found.folds, found.min_object_tables, strict=True):
        assert table is not None
        assert sorted(table) == sorted(f"{f:.6g}" for f in FRACTIONS)
        assert all(sorted(scores) == fold for scores in table.values())
        # No area dropped: the very Dice the fold's own validation gave.
        assert table["0"] == {s: round(found.per_image[s], 4) for s in fold}

    out = tmp_path / "cv.safetensors"
    _, again = train_cross_validated(pairs, config, out, 2)
    card = load_model(out).card
    validation = card.validation
    choice = again.min_object(validation["min_object_choice"]["median_object_um2"])
    assert choice is not None
    assert validation["min_object_um2"] == choice.min_object_um2
    assert card.min_object_um2 == choice.min_object_um2  # what segment applies by default
    means = validation["min_object_choice"]["mean_dice_by_fraction"]
    assert means["0"] == round(found.mean_dice, 4)
    assert max(means.values()) == means[f"{choice.fraction:.6g}"]
    json.dumps(validation, allow_nan=False)


def test_a_recipe_without_a_working_pixel_size_makes_no_choice(
    folders: tuple[Path, Path],  # noqa: F811
    tmp_path: Path,
) -> None:
    pairs, _ = find_pairs(*folders)
    out = tmp_path / "native.safetensors"
    _, found = train_cross_validated(pairs, tiny_config(epochs=1), out, 2)
    assert found.min_object_tables == [None, None]
    assert "min_object_um2" not in load_model(out).card.validation
    assert load_model(out).card.min_object_um2 == 0.0
