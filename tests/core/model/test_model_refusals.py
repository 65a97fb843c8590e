"""Model files that must be refused, with a message that says why: the cases
``test_model_store.py`` leaves out, and the same refusals on the fine-tuning path
(a base model is checked before any training starts).
"""

from __future__ import annotations

import json
import pickle
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

from slide_unet.core.errors import ModelError
from slide_unet.core.model.card import ModelCard
from slide_unet.core.model.store import load_model, save_model
from slide_unet.core.model.unet import UNet
from slide_unet.core.training.finetune import ArrayPair, finetune

#: A private user models folder and no unpickling, for every test (tests/conftest.py).
pytestmark = pytest.mark.usefixtures("user_dir")


def _saved(folder: Path, name: str, seed: int = 0) -> Path:
    torch.manual_seed(seed)
    model = UNet(base_width=4, depth=2)
    return save_model(model, folder / name, ModelCard(name, parameters=model.config, tile=64))


def _pair() -> ArrayPair:
    rng = np.random.default_rng(0)
    image = rng.integers(0, 255, (64, 64, 3), dtype=np.uint8)
    return ArrayPair("x", image, image[..., 0] > 128)


def test_a_card_that_belongs_to_other_weights_is_refused(tmp_path: Path) -> None:
    _saved(tmp_path, "a", seed=0)
    _saved(tmp_path, "b", seed=1)
    shutil.copy(tmp_path / "b.json", tmp_path / "a.json")  # valid, but b's
    with pytest.raises(ModelError, match=r"a\.safetensors: sha256 .* the card belongs to other"):
        load_model(tmp_path / "a.safetensors")


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"sha256": "not-a-hash"}, r"m\.json: sha256 must be 64 lower-case hex digits"),
        ({"architecture": "resnet"}, r"m\.json: unknown architecture 'resnet'"),
        ({"normalization": {"mean": [0.5], "std": [0.2]}}, r"m\.json: .*normali[sz]ation"),
    ],
)
def test_a_wrong_card_is_refused_naming_it(tmp_path: Path, change: dict, message: str) -> None:
    _saved(tmp_path, "m")
    card = tmp_path / "m.json"
    card.write_text(json.dumps({**json.loads(card.read_text()), **change}))
    with pytest.raises(ModelError, match=message):
        load_model(tmp_path / "m.safetensors")


def test_a_tampered_user_model_is_refused_by_name(user_dir: Path) -> None:
    weights = _saved(user_dir.parent, "mine")
    user_dir.mkdir()
    for path in (weights, weights.with_suffix(".json")):
        shutil.move(path, user_dir / path.name)
    data = bytearray((user_dir / "mine.safetensors").read_bytes())
    data[-1] ^= 0x01
    (user_dir / "mine.safetensors").write_bytes(bytes(data))
    with pytest.raises(ModelError, match="does not match"):
        load_model("mine")


def test_finetuning_refuses_a_base_model_that_is_not_safetensors(tmp_path: Path) -> None:
    weights = _saved(tmp_path, "evil")
    weights.write_bytes(pickle.dumps({"not": "weights"}))
    with pytest.raises(ModelError, match=r"evil\.safetensors: not a safetensors file.*pickle"):
        finetune(weights, [_pair()], tmp_path / "out", epochs=1, device="cpu")
    assert not (tmp_path / "out.safetensors").exists()


def test_finetuning_refuses_a_base_model_whose_hash_is_wrong(tmp_path: Path) -> None:
    weights = _saved(tmp_path, "changed")
    card = tmp_path / "changed.json"
    card.write_text(json.dumps({**json.loads(card.read_text()), "sha256": "0" * 64}))
    with pytest.raises(ModelError, match="does not match"):
        finetune(weights, [_pair()], tmp_path / "out", epochs=1, device="cpu")
    assert not (tmp_path / "out.safetensors").exists()


def test_a_torch_pickle_file_given_by_path_is_refused_as_not_safetensors(tmp_path: Path) -> None:
    path = tmp_path / "model.pt"
    path.write_bytes(pickle.dumps({"not": "weights"}))
    with pytest.raises(ModelError, match=r"model\.pt: .*safetensors"):
        load_model(path)
