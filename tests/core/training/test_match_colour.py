"""train(match_colour=True) records the training tissue's colour in the card; a fine-tuned
model keeps its parent's; without it the card records none."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from test_training import folders, tiny_config  # noqa: F401 (a fixture)

from slide_unet.core.model.store import load_model
from slide_unet.core.slide.tissue import tissue_colour
from slide_unet.core.training.image_pairs import find_pairs, read_pair
from slide_unet.core.training.train import train


def test_the_card_records_the_training_tissue_colour_and_a_fine_tune_keeps_it(
    folders: tuple[Path, Path],  # noqa: F811
    tmp_path: Path,
) -> None:
    pairs, _ = find_pairs(*folders)
    config = tiny_config(epochs=1, validation_images=("tile5",))
    matched = train(pairs, config, tmp_path / "matched.safetensors", match_colour=True)
    reference = load_model(tmp_path / "matched.safetensors").card.colour_reference
    assert reference is not None
    trained = [read_pair(p)[0] for p in pairs if p.stem != "tile5"]  # not the held-out one
    expected = np.mean([tissue_colour(image).mean for image in trained], axis=0)
    np.testing.assert_allclose(reference["mean"], expected, atol=0.01)
    assert reference == matched.card.colour_reference

    plain = train(pairs, config, tmp_path / "plain.safetensors")
    assert plain.card.colour_reference is None

    tuned = train(pairs, config, tmp_path / "tuned.safetensors", initial=matched.model)
    assert tuned.card.colour_reference == reference
    assert tuned.card.parent == matched.card.name


@pytest.mark.parametrize("flag", ["--match-colour", None])
def test_cli_train_match_colour(folders: tuple[Path, Path], tmp_path: Path, flag) -> None:  # noqa: F811
    from slide_unet import cli

    images, masks = folders
    out = tmp_path / "cli.safetensors"
    args = ["train", "--images", str(images), "--masks", str(masks), "-o", str(out)]
    args += ["--base-width", "4", "--depth", "2", "--patch", "64", "--batch-size", "4"]
    args += ["--epochs", "1", "--steps-per-epoch", "2", "--device", "cpu", "--tile", "64"]
    assert cli.main([*args, *([flag] if flag else []), "--json"]) == 0
    reference = load_model(out).card.colour_reference
    assert (reference is not None) == bool(flag)


def test_fine_tuning_images_are_brought_to_the_reference_as_segment_brings_a_slide(
    folders: tuple[Path, Path],  # noqa: F811
) -> None:
    from slide_unet.core.training.colour import match_colours
    from slide_unet.core.training.data import TrainingImage

    image = read_pair(find_pairs(*folders)[0][0])[0]
    # The same tissue scanned darker and bluer, as the HuBMAP tiles are against Bueno's.
    tinted = np.clip(image * np.array([0.8, 0.75, 0.95]) + np.array([-5, 0, 10]), 0, 255)
    tinted = tinted.astype(np.uint8)
    reference = tissue_colour(image).to_card([tissue_colour(image)])
    blank = np.full_like(image, 245)  # no tissue: nothing to measure
    mask = np.zeros(image.shape[:2], np.uint8)
    empty = np.zeros((0, 2), np.int64)
    images = [
        TrainingImage("tinted", tinted, mask, empty),
        TrainingImage("blank", blank, mask, empty),
    ]
    assert np.abs(np.subtract(tissue_colour(tinted).mean, tissue_colour(image).mean)).max() > 0.03
    matched, changed = match_colours(images, reference, None)
    assert changed == 1
    np.testing.assert_allclose(tissue_colour(matched[0].pixels).mean, reference["mean"], atol=0.01)
    np.testing.assert_allclose(tissue_colour(matched[0].pixels).std, reference["std"], atol=0.01)
    assert matched[1] is images[1]  # left as it is, as the engine leaves a blank slide
    assert matched[0].mask is mask


def test_a_fine_tune_of_a_colour_matched_model_trains_on_matched_images(
    folders: tuple[Path, Path],  # noqa: F811
    tmp_path: Path,
) -> None:
    pairs, _ = find_pairs(*folders)
    config = tiny_config(epochs=1, validation_images=("tile5",))
    base = train(pairs, config, tmp_path / "base.safetensors", match_colour=True)
    lines: list[str] = []
    tuned = train(
        pairs, config, tmp_path / "tuned.safetensors", initial=base.model, say=lines.append
    )
    assert tuned.card.training["colour_matched_images"] == 5
    assert any("5 of 5 training images brought to the base model's colour" in ln for ln in lines)
    plain = train(pairs, config, tmp_path / "plain.safetensors")
    again = train(pairs, config, tmp_path / "again.safetensors", initial=plain.model)
    assert "colour_matched_images" not in again.card.training
