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
