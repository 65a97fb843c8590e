"""Model cards and the model store: save, load, verify, refuse, list."""

from __future__ import annotations

import dataclasses
import json
import pickle
import shutil
import warnings
from pathlib import Path

import pytest
import safetensors.torch
import torch

from slide_unet.core.errors import ModelError, PlaceholderModelWarning
from slide_unet.core.model import store as model_store
from slide_unet.core.model.card import ModelCard
from slide_unet.core.model.store import (
    bundled_models_dir,
    list_models,
    load_model,
    save_model,
    user_models_dir,
)
from slide_unet.core.model.unet import UNet
from slide_unet.core.paths import MODELS_DIR_ENV

_REAL_PICKLE_LOADS = pickle.loads


#: A private user models folder and no unpickling, for every test (tests/conftest.py).
pytestmark = pytest.mark.usefixtures("user_dir")


def _tiny(seed: int = 0, **kwargs: object) -> UNet:
    torch.manual_seed(seed)
    model = UNet(**{"base_width": 4, "depth": 2, **kwargs})
    for module in model.modules():
        if isinstance(module, torch.nn.BatchNorm2d):
            module.running_mean.uniform_(-0.2, 0.2)
            module.running_var.uniform_(0.5, 1.5)
    return model.eval()


def _card(model: UNet, name: str = "mine", **kwargs: object) -> ModelCard:
    return ModelCard(name=name, parameters=dict(model.config), tile=64, **kwargs)


def _saved(tmp_path: Path, name: str = "m") -> tuple[UNet, Path]:
    model = _tiny()
    return model, save_model(model, tmp_path / name, _card(model, name))


# --- model cards -------------------------------------------------------------------------------


def test_card_round_trips_through_dict_and_json(tmp_path: Path) -> None:
    card = _card(
        _tiny(),
        working_mpp=2,
        default_input_mpp=0.5,
        trained=True,
        validation={"mean_dice": 0.91, "split": "by image", "n_images": 4},
        command="slide-unet train ...",
        licence="CC-BY-4.0",
    )
    assert ModelCard.from_dict(card.to_dict()) == card
    path = card.to_json(tmp_path / "card.json")
    assert ModelCard.from_json(path) == card
    assert json.loads(path.read_text())["working_mpp"] == 2.0
    assert [p.name for p in tmp_path.iterdir()] == ["card.json"], "temporary file left behind"


def test_card_fills_architecture_defaults_and_normalisation() -> None:
    card = ModelCard("x", parameters={"base_width": 8})
    assert card.parameters == {
        "in_channels": 3,
        "out_channels": 1,
        "base_width": 8,
        "depth": 4,
        "norm": "batch",
    }
    assert card.normalization == {"mean": [0.5] * 3, "std": [0.25] * 3}
    assert card.multiple == 16


def test_card_from_dict_names_missing_and_unknown_fields() -> None:
    data = ModelCard("x").to_dict()
    del data["working_mpp"]
    with pytest.raises(ModelError, match=r"lacks required field\(s\) \['working_mpp'\]"):
        ModelCard.from_dict(data)
    with pytest.raises(ModelError, match=r"unknown field\(s\) \['colour'\]"):
        ModelCard.from_dict({**ModelCard("x").to_dict(), "colour": "red"})


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"architecture": "resnet"}, "unknown architecture 'resnet'; known: unet"),
        ({"parameters": {"width": 3}}, r"unknown unet parameters \['width'\]"),
        ({"parameters": {"norm": "layer"}}, "parameters\\['norm'\\] must be one of"),
        ({"channels": "gray"}, "'gray' means 1 input channels, but .* is 3"),
        ({"normalization": {"mean": [0.5], "std": [0.2]}}, "one number per input channel"),
        ({"normalization": {"mean": [0] * 3, "std": [0, 1, 1]}}, "std'\\] must be positive"),
        ({"working_mpp": -1}, "working_mpp must be a positive number"),
        ({"tile": 500}, r"tile must be a multiple of 16 \(2\*\*depth\), got 500"),
        ({"threshold": 1.5}, "threshold must be a probability"),
        ({"min_object_um2": -5}, "min_object_um2 must be 0 or a positive area, got -5"),
        ({"min_object_um2": float("nan")}, "min_object_um2 must be 0 or a positive area"),
        ({"min_object_um2": "big"}, "min_object_um2 must be 0 or a positive area"),
        ({"sha256": "abc"}, "sha256 must be 64 lower-case hex digits"),
        ({"trained": "yes"}, "trained must be true or false"),
    ],
)
def test_card_refuses_invalid_values_with_a_clear_message(change: dict, message: str) -> None:
    with pytest.raises(ModelError, match=message):
        ModelCard.from_dict({**ModelCard("x").to_dict(), **change})


def test_card_from_json_names_the_file(tmp_path: Path) -> None:
    path = tmp_path / "bad.json"
    path.write_text("{not json")
    with pytest.raises(ModelError, match=r"bad\.json: model card is not valid JSON"):
        ModelCard.from_json(path)
    path.write_text(json.dumps({"name": "x"}))
    with pytest.raises(ModelError, match=r"bad\.json: model card lacks required field"):
        ModelCard.from_json(path)


# --- save and load -----------------------------------------------------------------------------


def test_save_then_load_gives_the_same_outputs_card_and_sha256(tmp_path: Path) -> None:
    model, weights = _saved(tmp_path)
    assert weights == tmp_path / "m.safetensors"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m.json", "m.safetensors"]
    loaded = load_model(weights)
    assert not loaded.training
    assert loaded.card == ModelCard.from_json(tmp_path / "m.json")
    assert loaded.card == _card(model, "m", sha256=loaded.card.sha256)
    assert loaded.card.sha256 == model_store._sha256(weights)
    x = torch.randn(2, 3, 32, 32)
    torch.testing.assert_close(loaded.predict(x), model.predict(x), rtol=0, atol=0)


@pytest.mark.parametrize("spec", ["m.safetensors", "m.json", "m"])
def test_load_accepts_weights_path_card_path_or_stem(tmp_path: Path, spec: str) -> None:
    _, weights = _saved(tmp_path)
    assert load_model(tmp_path / spec).card.sha256 == model_store._sha256(weights)
    assert load_model(str(tmp_path / spec)).card.name == "m"


def test_user_model_saved_by_name_loads_by_name(user_dir: Path) -> None:
    model = _tiny(3)
    weights = save_model(model, "kidney-v2", _card(model, "kidney-v2", parent="glomeruli"))
    assert weights == user_dir / "kidney-v2.safetensors"
    loaded = load_model("kidney-v2")
    assert loaded.card.parent == "glomeruli"
    x = torch.randn(1, 3, 16, 16)
    torch.testing.assert_close(loaded.predict(x), model.predict(x), rtol=0, atol=0)


def test_tampered_weights_are_refused_by_their_hash(tmp_path: Path) -> None:
    _, weights = _saved(tmp_path)
    data = bytearray(weights.read_bytes())
    data[-1] ^= 0x01  # one bit of one float: still a readable safetensors file
    weights.write_bytes(bytes(data))
    with pytest.raises(ModelError, match=r"m\.safetensors: sha256 [0-9a-f]{64} does not match"):
        load_model(weights)


def _pickle_that_creates(marker: Path) -> bytes:
    class Payload:
        def __reduce__(self) -> tuple:
            return (Path.touch, (marker,))

    return pickle.dumps(Payload())


def test_pickle_renamed_to_safetensors_is_refused_without_unpickling(tmp_path: Path) -> None:
    # The payload works: unpickling it (outside the store) does create its marker.
    control = tmp_path / "control-marker"
    _REAL_PICKLE_LOADS(_pickle_that_creates(control))
    assert control.exists()

    marker = tmp_path / "marker"
    weights = tmp_path / "evil.safetensors"
    weights.write_bytes(_pickle_that_creates(marker))
    # A card that even vouches for the file's hash: only the format check stands in the way.
    card = _card(_tiny(), "evil", sha256=model_store._sha256(weights))
    card.to_json(tmp_path / "evil.json")
    with pytest.raises(ModelError, match=r"evil\.safetensors: not a safetensors file.*pickle"):
        load_model(weights)
    assert not marker.exists(), "loading unpickled the file"


def test_torch_save_file_and_random_bytes_are_refused(tmp_path: Path) -> None:
    weights = tmp_path / "x.safetensors"
    _card(_tiny(), "x").to_json(tmp_path / "x.json")
    weights.write_bytes(b"PK\x03\x04" + bytes(range(200)))
    with pytest.raises(ModelError, match=r"x\.safetensors: not a safetensors file.*zip"):
        load_model(weights)
    weights.write_bytes(torch.randint(0, 256, (4096,), dtype=torch.uint8).numpy().tobytes())
    with pytest.raises(ModelError, match=r"x\.safetensors: not a safetensors file"):
        load_model(weights)
    weights.write_bytes(b"")
    with pytest.raises(ModelError, match=r"x\.safetensors: not a safetensors file"):
        load_model(weights)


def test_missing_card_is_refused_naming_it(tmp_path: Path) -> None:
    _, weights = _saved(tmp_path)
    (tmp_path / "m.json").unlink()
    with pytest.raises(ModelError, match=r"m\.json: model card not found"):
        load_model(weights)


def test_missing_file_is_refused_naming_it(tmp_path: Path) -> None:
    with pytest.raises(ModelError, match=r"nothere\.safetensors: no such model file"):
        load_model(tmp_path / "nothere.safetensors")


def test_card_without_sha256_is_refused(tmp_path: Path) -> None:
    _, weights = _saved(tmp_path)
    data = json.loads((tmp_path / "m.json").read_text())
    data["sha256"] = None
    (tmp_path / "m.json").write_text(json.dumps(data))
    with pytest.raises(ModelError, match="records no sha256"):
        load_model(weights)


@pytest.mark.parametrize(
    ("parameters", "message"),
    [
        ({"base_width": 8}, r"wrong shape \d+: .*\(card wants"),
        ({"depth": 3}, r"missing \d+: down\.2\."),
    ],
)
def test_weights_that_do_not_fit_the_card_architecture_are_refused(
    tmp_path: Path, parameters: dict, message: str
) -> None:
    _, weights = _saved(tmp_path)
    data = json.loads((tmp_path / "m.json").read_text())
    data["parameters"].update(parameters)
    (tmp_path / "m.json").write_text(json.dumps(data))
    with pytest.raises(ModelError, match=r"m\.safetensors: tensors do not match the card"):
        load_model(weights)
    with pytest.raises(ModelError, match=message):
        load_model(weights)


def test_extra_tensors_in_the_weights_are_refused(tmp_path: Path) -> None:
    model = _tiny()
    weights = tmp_path / "x.safetensors"
    state = {**model.state_dict(), "extra.weight": torch.zeros(2)}
    safetensors.torch.save_file(state, weights)
    _card(model, "x", sha256=model_store._sha256(weights)).to_json(tmp_path / "x.json")
    with pytest.raises(ModelError, match=r"unexpected 1: extra\.weight"):
        load_model(weights)


def test_save_refuses_a_card_that_does_not_describe_the_model(tmp_path: Path) -> None:
    card = ModelCard("m", parameters={"base_width": 8, "depth": 2}, tile=64)
    with pytest.raises(ModelError, match=r"the card describes unet .* but the model is UNet"):
        save_model(_tiny(), tmp_path / "m", card)
    assert list(tmp_path.iterdir()) == []


# --- names, folders, bundled models -----------------------------------------------------------


def test_user_models_dir_follows_the_environment(
    user_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    assert user_models_dir() == user_dir
    monkeypatch.delenv(MODELS_DIR_ENV)
    default = user_models_dir()
    assert default.name == "models"
    assert default.parent.name == "napari-slide-unet"


def test_bundled_models_dir_is_the_package_models_folder() -> None:
    import slide_unet

    assert bundled_models_dir() == Path(slide_unet.__file__).parent / "models"
    assert {"glomeruli", "nuclei"} <= {p.stem for p in bundled_models_dir().glob("*.json")}


def test_unknown_name_lists_the_available_models() -> None:
    model = _tiny()
    save_model(model, "mine", _card(model, "mine"))
    with pytest.raises(
        ModelError, match=r"unknown model 'nope'; available: glomeruli, nuclei, mine"
    ):
        load_model("nope")


@pytest.mark.parametrize("name", ["glomeruli", "nuclei"])
def test_saving_a_user_model_under_a_bundled_name_is_refused(user_dir: Path, name: str) -> None:
    model = _tiny()
    with pytest.raises(ModelError, match="would shadow the bundled model"):
        save_model(model, name, _card(model, name))
    with pytest.raises(ModelError, match="would shadow the bundled model"):
        save_model(model, user_dir / f"{name}.safetensors", _card(model, name))
    with pytest.raises(ModelError, match="would shadow the bundled model"):
        save_model(model, "other", _card(model, name))
    assert list(user_dir.glob("*.safetensors")) == []


def test_user_model_name_must_be_a_safe_file_name_and_match_its_card() -> None:
    model = _tiny()
    with pytest.raises(ModelError, match="not a usable model name"):
        save_model(model, ".hidden", _card(model, ".hidden"))
    with pytest.raises(ModelError, match="card name must be its file name 'a'"):
        save_model(model, "a", _card(model, "b"))


def test_list_models_gives_bundled_first_then_user_models(user_dir: Path) -> None:
    model = _tiny()
    save_model(model, "zeta", _card(model, "zeta"))
    save_model(model, "alpha", _card(model, "alpha"))
    assert list(list_models()) == ["glomeruli", "nuclei", "alpha", "zeta"]
    assert list_models()["alpha"].sha256 is not None


def test_list_models_skips_shadowing_and_broken_user_models(user_dir: Path) -> None:
    user_dir.mkdir()
    shutil.copy(bundled_models_dir() / "nuclei.json", user_dir / "nuclei.json")
    (user_dir / "broken.json").write_text("{")
    with warnings.catch_warnings(record=True) as record:
        warnings.simplefilter("always")
        models = list_models()
    assert list(models) == ["glomeruli", "nuclei"]
    assert models["nuclei"] == ModelCard.from_json(bundled_models_dir() / "nuclei.json")
    messages = sorted(str(w.message) for w in record)
    assert len(messages) == 2
    assert "may not take the bundled name 'nuclei'" in messages[0]
    assert "broken.json: model card is not valid JSON" in messages[1]
    # Loading by name also goes to the bundled model, never the user's copy.
    assert load_model("nuclei").card == models["nuclei"]


def test_bundled_cards_are_valid_and_untrained_ones_claim_nothing() -> None:
    cards = list_models()
    glomeruli, nuclei = cards["glomeruli"], cards["nuclei"]
    assert (glomeruli.working_mpp, glomeruli.default_input_mpp, glomeruli.tile) == (2.0, 0.5, 512)
    assert (nuclei.working_mpp, nuclei.default_input_mpp, nuclei.tile) == (None, None, 512)
    for name, card in cards.items():
        weights = bundled_models_dir() / f"{name}.safetensors"
        assert card.name == name
        assert card.channels == "RGB"
        if not card.trained:
            assert card.validation == {}, f"{name}: an untrained placeholder claims figures"
            assert not weights.exists()
        else:
            assert card.sha256 == model_store._sha256(weights)


@pytest.fixture
def placeholders(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A bundled-models folder whose cards say untrained and which holds no weights."""
    folder = tmp_path / "bundled"
    folder.mkdir()
    for name in ("glomeruli", "nuclei"):
        card = ModelCard.from_json(bundled_models_dir() / f"{name}.json")
        untrained = dataclasses.replace(
            card, trained=False, training={}, validation={}, command=None, sha256=None
        )
        untrained.to_json(folder / f"{name}.json")
    monkeypatch.setattr(model_store, "bundled_models_dir", lambda: folder)
    return folder


@pytest.mark.parametrize("name", ["glomeruli", "nuclei"])
def test_bundled_placeholder_is_seeded_from_its_name_and_warns(
    name: str, placeholders: Path
) -> None:
    rng = torch.get_rng_state()
    card = list_models()[name]
    with pytest.warns(PlaceholderModelWarning, match=f"'{name}' is an untrained placeholder"):
        first = load_model(name)
    with pytest.warns(PlaceholderModelWarning):
        again = load_model(name)
    assert torch.equal(torch.get_rng_state(), rng), "loading moved the global random state"
    assert first.card == card
    assert not first.card.trained
    assert first.config == card.parameters
    assert not first.training
    for key, value in first.state_dict().items():
        assert torch.equal(value, again.state_dict()[key])
    other = "nuclei" if name == "glomeruli" else "glomeruli"
    with pytest.warns(PlaceholderModelWarning):
        different = load_model(other)
    assert not torch.equal(first.head.weight, different.head.weight)


def test_weights_beside_a_bundled_card_are_loaded_and_checked(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(model_store, "bundled_models_dir", lambda: tmp_path)
    model = _tiny(5)
    save_model(model, tmp_path / "glomeruli", _card(model, "glomeruli", trained=True))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        loaded = load_model("glomeruli")
    x = torch.randn(1, 3, 16, 16)
    torch.testing.assert_close(loaded.predict(x), model.predict(x), rtol=0, atol=0)
    safetensors.torch.save_file(_tiny(6).state_dict(), tmp_path / "glomeruli.safetensors")
    with pytest.raises(ModelError, match="does not match"):
        load_model("glomeruli")
    (tmp_path / "glomeruli.safetensors").unlink()
    with pytest.raises(ModelError, match="weights file not found"):
        load_model("glomeruli")


def test_loaded_module_passes_through(tmp_path: Path) -> None:
    _, weights = _saved(tmp_path)
    model = load_model(weights).train()
    assert load_model(model, device=torch.device("cpu")) is model
    assert not model.training
    with pytest.raises(ModelError, match=r"must carry its ModelCard as \.card"):
        load_model(_tiny())


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_load_onto_cuda(tmp_path: Path) -> None:
    _, weights = _saved(tmp_path)
    assert next(load_model(weights, device="cuda").parameters()).is_cuda


def test_saved_weights_are_readable_by_everyone(tmp_path: Path) -> None:
    _, weights = _saved(tmp_path)
    assert weights.stat().st_mode & 0o444 == 0o444
