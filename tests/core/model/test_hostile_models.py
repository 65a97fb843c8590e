"""Hostile model files: a card that asks for a huge network, weights whose header
does not fit the card, and safetensors headers that are themselves hostile.

Each is refused with one ModelError naming the file, within a second or two,
before the network is built, the tensors are read or the file is hashed (the
guard below fails the test if any of those happens). The bundled models still
load as before.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import safetensors
import safetensors.torch
import torch
from PIL import Image

from slide_unet.core.devices import resolve_device, resolve_precision
from slide_unet.core.errors import InputError, ModelError, PlaceholderModelWarning
from slide_unet.core.inference.segment import segment
from slide_unet.core.model import store as model_store
from slide_unet.core.model.card import MAX_CARD_BYTES, MAX_TILE, ModelCard
from slide_unet.core.model.store import (
    MAX_HEADER_BYTES,
    load_model,
    read_safetensors_header,
    save_model,
)
from slide_unet.core.model.unet import UNet, unet_tensor_shapes
from slide_unet.core.training.evaluation import evaluate
from slide_unet.core.training.finetune import ArrayPair, finetune


class Allocated(BaseException):
    """Raised by the guard; a BaseException so no ``except Exception`` turns it into a refusal."""


#: A private user models folder and no unpickling, for every test (tests/conftest.py).
pytestmark = pytest.mark.usefixtures("user_dir")


@contextlib.contextmanager
def nothing_built_or_read(seconds: float = 2.0) -> Iterator[None]:
    """Fail if the block builds a U-Net, reads tensors, hashes the weights or takes long."""

    def refuse(what: str) -> Callable[..., Any]:
        def raiser(*args: object, **kwargs: object) -> None:
            raise Allocated(what)

        return raiser

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(UNet, "__init__", refuse("built the network"))
        patch.setattr(safetensors.torch, "load_file", refuse("read the tensors"))
        patch.setattr(safetensors, "safe_open", refuse("opened the tensors"))
        patch.setattr(model_store, "_sha256", refuse("hashed the whole weights file"))
        start = time.perf_counter()
        yield
        elapsed = time.perf_counter() - start
    assert elapsed < seconds, f"took {elapsed:.1f} s"


def _sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _saved(folder: Path, name: str = "m", **kwargs: Any) -> Path:
    torch.manual_seed(0)
    model = UNet(**{"base_width": 4, "depth": 2, **kwargs})
    return save_model(model, folder / name, ModelCard(name, parameters=model.config, tile=64))


def _edit_card(weights: Path, **changes: Any) -> Path:
    """Change the card beside ``weights``, keeping a sha256 that vouches for the weights."""
    card = weights.with_suffix(".json")
    data = json.loads(card.read_text())
    for key, value in changes.items():
        if key in ("depth", "base_width", "in_channels", "out_channels", "norm"):
            data["parameters"][key] = value
        else:
            data[key] = value
    data["sha256"] = _sha(weights)
    card.write_text(json.dumps(data))
    return card


def _write_safetensors(
    path: Path, header: bytes, body: bytes = b"", length: int | None = None
) -> Path:
    """A file laid out as safetensors: 8-byte little-endian length, JSON header, data."""
    n = len(header) if length is None else length
    path.write_bytes(n.to_bytes(8, "little") + header + body)
    return path


def _hostile_weights(folder: Path, header: bytes, body: bytes = b"", **kw: Any) -> Path:
    """Weights ``m.safetensors`` with the given raw header, beside a valid card that vouches
    for them (so only the header check can refuse them)."""
    weights = _saved(folder)
    _write_safetensors(weights, header, body, **kw)
    _edit_card(weights)
    return weights


# --- a card that asks for a network out of bounds -------------------------------------------


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"depth": 20, "tile": 2**20}, r"parameters\['depth'\] must be at most 8, got 20"),
        ({"depth": 50, "tile": 2**50}, r"parameters\['depth'\] must be at most 8, got 50"),
        ({"depth": 10**30}, r"parameters\['depth'\] must be at most 8, got 1000000000000"),
        ({"base_width": 20_000, "depth": 1}, r"parameters\['base_width'\] must be at most 512"),
        ({"base_width": 512, "depth": 4}, r"has 1,985,689,107 weights \(7\.9 GB in float32\)"),
        ({"base_width": 4, "depth": 8, "tile": 256}, None),  # in bounds: refused by its tensors
        ({"out_channels": 10**6}, r"parameters\['out_channels'\] must be at most 64"),
        (
            {"base_width": 12, "norm": "group"},
            r"parameters\['norm'\] 'group' needs every level's width .* gives 12",
        ),
        ({"tile": 2**40}, rf"tile must be at most {MAX_TILE}, got {2**40}"),
        ({"parameters": [1, 2]}, r"parameters must be a mapping of keyword arguments"),
        ({"architecture": ["unet"]}, r"unknown architecture \['unet'\]"),
    ],
)
def test_a_card_asking_for_a_huge_network_is_refused_before_building_it(
    tmp_path: Path, changes: dict, message: str | None
) -> None:
    weights = _saved(tmp_path)
    _edit_card(weights, **changes)
    if message is None:  # a valid card whose network (31 million weights) is not these tensors
        message = r"m\.safetensors: tensors do not match the card's unet .* missing \d+: down\.2"
    else:
        message = r"m\.json: .*" + message
    with nothing_built_or_read(), pytest.raises(ModelError, match=message) as info:
        load_model(weights)
    assert "\n" not in str(info.value)


def test_an_untrained_placeholder_card_asking_for_a_huge_network_is_refused(
    tmp_path: Path,
) -> None:
    card = ModelCard("p", parameters={"base_width": 4, "depth": 2}, tile=64).to_dict()
    card["parameters"].update(depth=40)
    card["tile"] = 2**40
    (tmp_path / "p.json").write_text(json.dumps(card))
    with nothing_built_or_read(), pytest.raises(ModelError, match=r"p\.json: .*'depth'"):
        load_model(tmp_path / "p.json")


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("[" * 100_000, r"not valid JSON \(nested too deeply\)"),
        ('{"name": ' + "9" * 5000 + "}", r"not valid JSON \(Exceeds the limit"),
        (None, r"nested too deeply"),  # valid JSON, but too deep to copy
    ],
)
def test_a_card_that_is_hostile_json_is_refused_naming_it(
    tmp_path: Path, text: str | None, message: str
) -> None:
    weights = _saved(tmp_path)
    card = weights.with_suffix(".json")
    if text is None:
        data = json.loads(card.read_text())
        data["training"] = {"x": json.loads("[" * 900 + "]" * 900)}
        text = json.dumps(data)
    card.write_text(text)
    with nothing_built_or_read(), pytest.raises(ModelError, match=r"m\.json: .*" + message):
        load_model(weights)


@pytest.mark.parametrize(
    ("field", "value", "message"),
    [
        ("working_mpp", "NaN", r"working_mpp must be a positive number of µm per pixel .* nan"),
        ("working_mpp", "-Infinity", r"working_mpp must be a positive number .* -inf"),
        ("working_mpp", "-0.5", r"working_mpp must be a positive number .* -0\.5"),
        ("working_mpp", "1e-06", r"working_mpp .* from 0\.01 to 100, got 1e-06"),
        ("default_input_mpp", "1" + "0" * 400, r"default_input_mpp .* \(401 characters\)"),
        ("default_input_mpp", '"0.5"', r"default_input_mpp must be a number .* got '0\.5'"),
        ("tile", "-512", r"tile must be a positive integer, got -512"),
        ("tile", "512.0", r"tile must be a positive integer, got 512\.0"),
        ("tile", "1" + "0" * 400, r"tile must be at most 8192, got 1000.*\(401 characters\)"),
        ("threshold", "NaN", r"threshold must be a probability between 0 and 1, got nan"),
        (
            "normalization",
            '{"mean": [0, 0, 1e999], "std": [1, 1, 1]}',
            r"normalization\['mean'\] must hold finite numbers, got \[0, 0, inf\]",
        ),
        (
            "normalization",
            '{"mean": [0, 0, 0], "std": [1, 1, -1' + "0" * 400 + "]}",
            r"normalization\['std'\] must hold finite",
        ),
        (
            "normalization",
            '{"mean": [0, 0, 0], "std": [1, 1, 0]}',
            r"normalization\['std'\] must be positive",
        ),
        ("normalization", '{"mean": [0, 0, 0]}', r"normalization must be \{'mean'"),
        ("parameters", '{"depth": "4"}', r"parameters\['depth'\] must be a positive integer"),
        ("parameters", '{"depth": 2.0}', r"parameters\['depth'\] must be a positive integer"),
        ("parameters", '{"": 1, "Depth": 2}', r"unknown unet parameters \['', 'Depth'\]"),
        ("name", '"a\\nb"', r"name must be at most 200 printable characters, got 'a\\nb'"),
        ("name", '"' + "x" * 5000 + '"', r"name must be at most 200 .*\(5,002 characters\)"),
        ("trained", '"false"', r"trained must be true or false, got 'false'"),
        ("training", "[]", r"training must be a mapping, got \[\]"),
        ("sha256", 'null, "sha256": 5', r"sha256 must be 64 lower-case hex digits, got 5"),
        ("parent", "{}", r"parent must be a string or null, got \{\}"),
        ("working_mpp", None, r"model card lacks required field\(s\) \['working_mpp'\]"),
        ("x" * 5000, "1", r"model card has unknown field\(s\) \['xxx.*\(5,004 characters\)"),
    ],
)
def test_a_malformed_card_is_one_model_error_naming_it(
    tmp_path: Path, field: str, value: str | None, message: str
) -> None:
    """Each field's wrong type, NaN, infinity, negative, huge or missing value, written
    as JSON text (Python's reader accepts NaN and Infinity; a card must not)."""
    weights = _saved(tmp_path)
    card = weights.with_suffix(".json")
    data = json.loads(card.read_text())
    data.pop(field, None)
    text = json.dumps(data)
    if value is not None:
        text = text[:-1] + f', "{field}": {value}}}'
    card.write_text(text)
    with nothing_built_or_read(), pytest.raises(ModelError, match=r"m\.json: " + message) as info:
        load_model(weights)
    assert "\n" not in str(info.value)
    assert len(str(info.value)) < 400


def test_a_card_file_of_gigabytes_is_refused_without_reading_it_all(tmp_path: Path) -> None:
    weights = _saved(tmp_path)
    with weights.with_suffix(".json").open("r+b") as f:
        f.truncate(4 * 2**30)  # sparse: 4 GiB of zeros that take no disk
    with nothing_built_or_read(), pytest.raises(ModelError, match=r"m\.json: .*at most 4 MB"):
        load_model(weights)
    assert MAX_CARD_BYTES == 4 * 2**20


def test_a_hostile_card_is_left_out_of_the_list_of_user_models(user_dir: Path) -> None:
    user_dir.mkdir()
    weights = _saved(user_dir, "huge")
    _edit_card(weights, depth=30, tile=2**30)
    with pytest.warns(UserWarning, match=r"huge\.json: parameters\['depth'\] must be at most 8"):
        models = model_store.list_models()
    assert "huge" not in models
    assert {"glomeruli", "nuclei"} <= models.keys()


# --- weights whose header does not fit the card ---------------------------------------------


def test_weights_of_another_width_are_refused_from_the_header(tmp_path: Path) -> None:
    weights = _saved(tmp_path, base_width=8)
    _edit_card(weights, base_width=4)
    with (
        nothing_built_or_read(),
        pytest.raises(ModelError, match=r"m\.safetensors: .*wrong shape \d+: .*\(card wants"),
    ):
        load_model(weights)


def test_weights_with_other_names_are_refused_from_the_header(tmp_path: Path) -> None:
    weights = tmp_path / "m.safetensors"
    safetensors.torch.save_file({"evil\nname": torch.zeros(2), "x" * 500: torch.zeros(1)}, weights)
    card = ModelCard("m", parameters={"base_width": 4, "depth": 2}, tile=64, sha256=_sha(weights))
    card.to_json(tmp_path / "m.json")
    with nothing_built_or_read(), pytest.raises(ModelError) as info:
        load_model(weights)
    message = str(info.value)
    assert "m.safetensors: tensors do not match" in message
    assert "missing" in message
    assert "unexpected 2: 'evil\\nname'" in message
    assert "\n" not in message
    assert len(message) < 1000


def test_weights_of_an_integer_dtype_are_refused_from_the_header(tmp_path: Path) -> None:
    torch.manual_seed(0)
    model = UNet(base_width=4, depth=2)
    weights = tmp_path / "m.safetensors"
    state = {k: v.to(torch.int32) for k, v in model.state_dict().items()}
    safetensors.torch.save_file(state, weights)
    ModelCard("m", parameters=model.config, tile=64, sha256=_sha(weights)).to_json(
        tmp_path / "m.json"
    )
    with (
        nothing_built_or_read(),
        pytest.raises(ModelError, match=r"wrong dtype \d+: bottom\.0\.weight I32"),
    ):
        load_model(weights)


def test_weights_in_half_precision_still_load(tmp_path: Path) -> None:
    torch.manual_seed(0)
    model = UNet(base_width=4, depth=2).eval()
    weights = tmp_path / "m.safetensors"
    state = {k: v.half() if v.is_floating_point() else v for k, v in model.state_dict().items()}
    safetensors.torch.save_file(state, weights)
    ModelCard("m", parameters=model.config, tile=64, sha256=_sha(weights)).to_json(
        tmp_path / "m.json"
    )
    loaded = load_model(weights)
    assert loaded.head.weight.dtype == torch.float32


# --- safetensors headers that are themselves hostile ----------------------------------------


def _tensor(dtype: str = "F32", shape: list | None = None, offsets: list | None = None) -> dict:
    return {"dtype": dtype, "shape": shape or [2], "data_offsets": offsets or [0, 8]}


@pytest.mark.parametrize(
    ("header", "body", "length", "message"),
    [
        (b'{"a": 1}', b"", 2**60, r"its header claims 1,152,921,504,606,846,976 bytes"),
        (b'{"head.weight": {"dtype": "F32", "sha', b"", None, r"does not start with a safe"),
        (b"[1, 2, 3]", b"", None, r"its header is not a JSON object"),
        (b'"just a string"', b"", None, r"its header is not a JSON object"),
        (b"[" * 100_000, b"", None, r"nested too deeply"),
        (b'{"a": ' + b"9" * 5000 + b"}", b"", None, r"does not start with a safetensors"),
        (b"\xff\xfe{}", b"", None, r"does not start with a safetensors header"),
        (json.dumps({"a": _tensor("Q7")}).encode(), b"\0" * 8, None, r"unknown dtype 'Q7'"),
        (json.dumps({"a": 5}).encode(), b"", None, r"tensor 'a' is not \{dtype, shape"),
        (
            json.dumps({"a": _tensor(shape=[2**31, 2**31], offsets=[0, 2**64])}).encode(),
            b"\0" * 8,
            None,
            r"data_offsets \[0, 18446744073709551616\] outside the 8 bytes",
        ),
        (
            json.dumps({"a": _tensor(shape=[2**31, 2**31])}).encode(),
            b"\0" * 8,
            None,
            r"F32 \[2147483648, 2147483648\] does not fill its data_offsets \[0, 8\]",
        ),
        (json.dumps({"a": _tensor(shape=[1] * 100)}).encode(), b"\0" * 8, None, "invalid shape"),
        (json.dumps({"a": _tensor(shape=[-2])}).encode(), b"\0" * 8, None, "invalid shape"),
        (json.dumps({"a": _tensor()}).encode(), b"\0" * 4096, None, r"fill 8 of the 4,096 bytes"),
        (
            json.dumps({"a": _tensor(), "b": _tensor()}).encode(),
            b"\0" * 8,
            None,
            r"do not lie back to back \(a gap or overlap at byte 8\)",
        ),
        (
            json.dumps({"__metadata__": {"k": [1]}, "a": _tensor()}).encode(),
            b"\0" * 8,
            None,
            r"__metadata__ is not a mapping of strings",
        ),
        (
            b"{" + b" " * MAX_HEADER_BYTES + b"}",
            b"",
            None,
            rf"its header is {MAX_HEADER_BYTES + 2:,} bytes, over the {MAX_HEADER_BYTES:,}",
        ),
    ],
)
def test_a_hostile_safetensors_header_is_one_line_refusal(
    tmp_path: Path, header: bytes, body: bytes, length: int | None, message: str
) -> None:
    weights = _hostile_weights(tmp_path, header, body, length=length)
    full = r"m\.safetensors: not a safetensors file \(.*" + message
    with nothing_built_or_read(), pytest.raises(ModelError, match=full) as info:
        load_model(weights)
    assert "\n" not in str(info.value)
    assert len(str(info.value)) < 600


def test_a_file_too_short_for_its_header_length_is_refused(tmp_path: Path) -> None:
    weights = _hostile_weights(tmp_path, b"", length=None)
    weights.write_bytes(b"\x10\x00")
    with pytest.raises(ModelError, match=r"does not start with a safetensors header"):
        read_safetensors_header(weights)


# --- the paths that load a model --------------------------------------------------------------


@pytest.fixture
def huge_card(tmp_path: Path) -> Path:
    """Weights whose card asks for a depth-20 U-Net (and vouches for the weights' hash)."""
    weights = _saved(tmp_path, "huge")
    _edit_card(weights, depth=20, tile=2**20)
    return weights


def test_segment_refuses_a_huge_card_before_building_it(huge_card: Path) -> None:
    image = np.zeros((64, 64, 3), np.uint8)
    with nothing_built_or_read(), pytest.raises(ModelError, match=r"huge\.json: .*'depth'"):
        segment(image, model=huge_card, device="cpu")


def test_evaluate_refuses_a_huge_card_before_building_it(huge_card: Path, tmp_path: Path) -> None:
    for folder in ("images", "masks"):
        (tmp_path / folder).mkdir()
        Image.fromarray(np.zeros((32, 32, 3), np.uint8)).save(tmp_path / folder / "a.png")
    with nothing_built_or_read(), pytest.raises(ModelError, match=r"huge\.json: .*'depth'"):
        evaluate(huge_card, tmp_path / "images", tmp_path / "masks", device="cpu")


def test_finetune_refuses_a_huge_card_before_building_it(huge_card: Path, tmp_path: Path) -> None:
    image = np.zeros((64, 64, 3), np.uint8)
    pair = ArrayPair("x", image, image[..., 0] > 0)
    with nothing_built_or_read(), pytest.raises(ModelError, match=r"huge\.json: .*'depth'"):
        finetune(huge_card, [pair], tmp_path / "out", epochs=1, device="cpu")
    assert not (tmp_path / "out.safetensors").exists()


# --- good models load as before ---------------------------------------------------------------


@pytest.mark.parametrize("name", ["glomeruli", "nuclei"])
def test_the_bundled_models_fit_their_cards_header_and_load(name: str) -> None:
    weights = model_store.bundled_models_dir() / f"{name}.safetensors"
    card = ModelCard.from_json(weights.with_suffix(".json"))
    header = read_safetensors_header(weights)
    assert {k: shape for k, (_, shape) in header.items()} == unet_tensor_shapes(**card.parameters)
    with safetensors.safe_open(str(weights), framework="pt") as f:
        assert {k: tuple(f.get_slice(k).get_shape()) for k in f.keys()} == {  # noqa: SIM118
            k: shape for k, (_, shape) in header.items()
        }
    model = load_model(name)
    assert model.card == card
    assert model.config == card.parameters


def test_a_card_within_bounds_still_builds_a_placeholder(tmp_path: Path) -> None:
    card = ModelCard("p", parameters={"base_width": 4, "depth": 3}, tile=64)
    card.to_json(tmp_path / "p.json")
    with pytest.warns(PlaceholderModelWarning):
        model = load_model(tmp_path / "p.json")
    assert model.config["depth"] == 3


@pytest.mark.parametrize(
    ("call", "message"),
    [
        (lambda: resolve_device("tpu"), r"unknown device 'tpu': expected 'auto', 'cpu'"),
        (lambda: resolve_device(["cpu"]), r"unknown device \['cpu'\]"),
        (lambda: resolve_device("cuda:99"), r"device 'cuda:99' is not available"),
        (lambda: resolve_precision("fp8", torch.device("cpu")), r"precision must be one of"),
        (lambda: resolve_precision("fp16", torch.device("cpu")), r"'fp16' is not supported"),
    ],
)
def test_an_unknown_device_or_precision_is_an_input_error(call: Callable, message: str) -> None:
    with pytest.raises(InputError, match=message):
        call()
