"""scripts/cv_by_modality.py: a card's per-image Dice averaged by imaging modality."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
from PIL import Image

from slide_unet.core.model.card import ModelCard

SCRIPT = Path(__file__).resolve().parents[1] / "scripts" / "cv_by_modality.py"


def test_the_scores_are_averaged_by_fluorescence_grey_and_coloured_brightfield(
    tmp_path: Path,
) -> None:
    images = tmp_path / "images"
    images.mkdir()
    rng = np.random.default_rng(0)
    dark = rng.integers(0, 60, (32, 32, 3), dtype=np.uint8)  # fluorescence
    grey = np.repeat(rng.integers(150, 250, (32, 32, 1), dtype=np.uint8), 3, axis=2)
    purple = np.stack([rng.integers(150, 200, (32, 32))] * 3, axis=-1).astype(np.uint8)
    purple[..., 1] -= 60  # stained: channels apart
    for name, pixels in [("f1", dark), ("f2", dark), ("g", grey), ("he", purple)]:
        Image.fromarray(pixels).save(images / f"{name}.png")
    card = ModelCard(
        name="n",
        normalization={"mean": [0.5] * 3, "std": [0.25] * 3},
        validation={"per_image": {"f1": 0.9, "f2": 0.8, "g": 0.7, "he": 0.5}},
    )
    path = tmp_path / "n.json"
    path.write_text(json.dumps(card.to_dict()))
    done = subprocess.run(
        [sys.executable, str(SCRIPT), str(path), "--images", str(images), "--json"],
        capture_output=True,
        text=True,
        check=True,
    )
    table = json.loads(done.stdout)
    assert table["fluorescence"] == {"images": 2, "mean_dice": 0.85}
    assert table["brightfield grey"] == {"images": 1, "mean_dice": 0.7}
    assert table["brightfield colour"] == {"images": 1, "mean_dice": 0.5}
    assert table["all"] == {"images": 4, "mean_dice": 0.725}
    path.write_text(json.dumps({**card.to_dict(), "validation": {}}))
    refused = subprocess.run(
        [sys.executable, str(SCRIPT), str(path), "--images", str(images)],
        capture_output=True,
        text=True,
    )
    assert refused.returncode == 2
    assert "records no per-image validation Dice" in refused.stderr
