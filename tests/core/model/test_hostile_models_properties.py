"""Property-based checks of model cards and safetensors headers: whatever a card
or a weights file holds, loading it gives a usable model or one ModelError, never
another exception and never a large allocation.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import safetensors
import safetensors.torch
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from slide_unet.core.errors import ModelError
from slide_unet.core.model.card import MAX_NAME_LENGTH, MAX_TILE, MPP_RANGE, ModelCard
from slide_unet.core.model.store import load_model, read_safetensors_header, save_model
from slide_unet.core.model.unet import MAX_TENSOR_ELEMENTS, UNet, check_unet_config
from slide_unet.core.paths import MODELS_DIR_ENV

#: The most weights any U-Net these tests may build holds (the tiny one has ~10,000).
_SMALL = 100_000

_SETTINGS = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@pytest.fixture(scope="module")
def folder() -> Iterator[Path]:
    """One folder for every example (hypothesis runs many per test function)."""
    with tempfile.TemporaryDirectory() as name:
        old = os.environ.get(MODELS_DIR_ENV)
        os.environ[MODELS_DIR_ENV] = os.path.join(name, "user-models")
        try:
            yield Path(name)
        finally:
            if old is None:
                del os.environ[MODELS_DIR_ENV]
            else:
                os.environ[MODELS_DIR_ENV] = old


@pytest.fixture(scope="module")
def tiny(folder: Path) -> Path:
    torch.manual_seed(0)
    model = UNet(base_width=4, depth=2)
    return save_model(model, folder / "tiny", ModelCard("tiny", parameters=model.config, tile=64))


@pytest.fixture(autouse=True)
def only_small_networks(monkeypatch: pytest.MonkeyPatch) -> None:
    """Fail any example that builds a U-Net larger than the tiny one."""
    build = UNet.__init__

    def guarded(self: UNet, *args: Any, **kwargs: Any) -> None:
        elements = check_unet_config(*args, **kwargs)
        on_meta = torch.get_default_device().type == "meta"  # shapes only, no memory
        assert on_meta or elements <= _SMALL, f"built a U-Net of {elements:,} weights"
        build(self, *args, **kwargs)

    monkeypatch.setattr(UNet, "__init__", guarded)


def _load_or_refusal(load: Callable[[], Any]) -> Any:
    """What ``load`` returns, or the ModelError it raises (any other exception fails)."""
    try:
        return load()
    except ModelError as exc:
        return exc


# --- strategies ----------------------------------------------------------------------------

#: Integers too large for a float (JSON allows thousands of digits).
_huge = st.sampled_from([10**400, -(10**400), 2**1100])
_json_scalars = (
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**70), max_value=2**70)
    | _huge
    | st.floats(allow_nan=True, allow_infinity=True)
    | st.text(max_size=20)
)
_json = st.recursive(
    _json_scalars,
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4)
    ),
    max_leaves=12,
)
#: Integers around every bound: small ones that work, and huge ones.
_ints = st.one_of(
    st.integers(min_value=-2, max_value=20),
    st.integers(min_value=0, max_value=2**64),
    st.sampled_from([511, 512, 513, 20_000, 2**50, 10**30]),
    _huge,
)
#: Pixel sizes around the accepted range, and some far outside it.
_mpps = st.floats() | st.sampled_from([1e-6, 0.01, 0.5, 100, 100.5, 1e9]) | _huge
_parameters = st.fixed_dictionaries(
    {},
    optional={
        "in_channels": _ints | _json,
        "out_channels": _ints | _json,
        "base_width": _ints | _json,
        "depth": _ints | _json,
        "norm": st.sampled_from(["batch", "instance", "group", "none", "layer"]) | _json,
    },
)
_numbers = st.floats(-2, 2) | _json_scalars
#: Each field's values: valid ones, ones near and over its bounds, and any JSON.
_FIELD_VALUES = {
    "name": st.text(max_size=10) | st.text(min_size=190, max_size=210) | _json,
    "architecture": st.just("unet") | _json,
    "parameters": _parameters | _json,
    "channels": st.sampled_from(["RGB", "gray"]) | _json,
    "normalization": st.just({})
    | st.fixed_dictionaries(
        {
            "mean": st.lists(_numbers, min_size=3, max_size=3) | st.lists(_numbers),
            "std": st.lists(_numbers, min_size=3, max_size=3) | st.lists(_numbers),
        }
    )
    | _json,
    "working_mpp": _mpps | _json,
    "default_input_mpp": _mpps | _json,
    "tile": _ints | _json,
    "threshold": st.floats() | _json,
    "trained": st.booleans() | _json,
    "training": _json,
    "sha256": st.just("0" * 64) | _json,
    "colour": _json,
}
#: Several fields changed at once (the first bad one is refused) ...
_fields = st.fixed_dictionaries({}, optional=_FIELD_VALUES)
#: ... or one, so that every field's own check is reached with the others valid.
_one_field = st.sampled_from(sorted(_FIELD_VALUES)).flatmap(
    lambda key: _FIELD_VALUES[key].map(lambda value: {key: value})
)
_changes = _fields | _one_field


def _base_card() -> dict[str, Any]:
    return ModelCard("x", parameters={"base_width": 4, "depth": 2}, tile=64).to_dict()


def _check_usable(card: ModelCard) -> None:
    """What every accepted card promises: a bounded network, a bounded tile."""
    assert check_unet_config(**card.parameters) <= MAX_TENSOR_ELEMENTS
    assert card.tile <= MAX_TILE
    assert card.tile % card.multiple == 0
    assert 0 < len(card.name) <= MAX_NAME_LENGTH
    assert card.name.isprintable()
    for mpp in (card.working_mpp, card.default_input_mpp):
        assert mpp is None or MPP_RANGE[0] <= mpp <= MPP_RANGE[1]
    for values in card.normalization.values():
        assert all(math.isfinite(v) for v in values)
    assert all(v > 0 for v in card.normalization["std"])
    with torch.device("meta"):  # that it builds, without the memory
        UNet(**card.parameters)


# --- cards ---------------------------------------------------------------------------------


@_SETTINGS
@given(changes=_changes, drop=st.sets(st.sampled_from(sorted(_base_card())), max_size=3))
def test_any_card_dict_gives_a_bounded_card_or_a_model_error(changes: dict, drop: set) -> None:
    data = {**_base_card(), **changes}
    for key in drop:
        data.pop(key, None)
    card = _load_or_refusal(lambda: ModelCard.from_dict(data))
    if isinstance(card, ModelError):
        assert "\n" not in str(card)
        return
    _check_usable(card)


@_SETTINGS
@given(
    text=st.one_of(
        st.binary(max_size=200),
        _changes.map(lambda c: json.dumps({**_base_card(), **c}).encode()),
        _changes.map(lambda c: json.dumps({**_base_card(), **c}).encode()).flatmap(
            lambda b: st.integers(0, len(b)).map(lambda n: b[:n])  # truncated
        ),
    )
)
def test_any_card_file_gives_a_card_or_a_model_error_naming_it(folder: Path, text: bytes) -> None:
    path = folder / "card.json"
    path.write_bytes(text)
    card = _load_or_refusal(lambda: ModelCard.from_json(path))
    if isinstance(card, ModelError):
        assert str(card).startswith(f"{path}: ")
        return
    _check_usable(card)


@_SETTINGS
@given(parameters=_parameters, tile=_ints, trained=st.booleans())
def test_loading_any_card_beside_the_tiny_weights_gives_it_or_a_model_error(
    folder: Path, tiny: Path, parameters: dict, tile: Any, trained: bool
) -> None:
    card = json.loads(tiny.with_suffix(".json").read_text())
    card.update(parameters={**card["parameters"], **parameters}, tile=tile, trained=trained)
    (folder / "other.json").write_text(json.dumps(card))
    (folder / "other.safetensors").write_bytes(tiny.read_bytes())
    model = _load_or_refusal(lambda: load_model(folder / "other.safetensors"))
    if isinstance(model, ModelError):
        assert "\n" not in str(model)
        return
    assert model.config == json.loads(tiny.with_suffix(".json").read_text())["parameters"]


# --- safetensors headers -------------------------------------------------------------------

_DTYPES = ["F32", "F16", "BF16", "F64", "I64", "I32", "U8", "BOOL", "F8_E4M3", "Q7", ""]
_entry = st.fixed_dictionaries(
    {
        "dtype": st.sampled_from(_DTYPES) | _json,
        "shape": st.lists(st.integers(-1, 5) | st.integers(0, 2**40), max_size=5) | _json,
        "data_offsets": st.lists(st.integers(-1, 300) | st.integers(0, 2**64), max_size=3) | _json,
    }
)
_names = st.sampled_from(["head.weight", "head.bias", "__metadata__", "a", ""]) | st.text(
    max_size=6
)
_header_dicts = st.dictionaries(_names, _entry | _json, max_size=4)


@st.composite
def _consistent_header(draw: st.DrawFn) -> tuple[bytes, bytes]:
    """A header whose tensors lie back to back: a valid file, unless ``draw`` spoils it."""
    entries, position = {}, 0
    for name in draw(st.lists(st.text(min_size=1, max_size=6), max_size=4, unique=True)):
        dtype = draw(st.sampled_from(["F32", "F16", "I64", "U8"]))
        shape = draw(st.lists(st.integers(0, 4), max_size=3))
        size = math.prod(shape) * {"F32": 4, "F16": 2, "I64": 8, "U8": 1}[dtype]
        entries[name] = {
            "dtype": dtype,
            "shape": shape,
            "data_offsets": [position, position + size],
        }
        position += size
    if draw(st.booleans()):
        entries["__metadata__"] = draw(st.dictionaries(st.text(max_size=4), st.text(max_size=4)))
    body = bytes(position) + draw(st.sampled_from([b"", b"", b"\0"]))
    return json.dumps(entries).encode(), body


@_SETTINGS
@given(
    raw=st.one_of(
        st.binary(max_size=120),
        st.tuples(_header_dicts.map(lambda d: json.dumps(d).encode()), st.binary(max_size=64)),
        _consistent_header(),
        st.tuples(st.binary(max_size=64), st.binary(max_size=16)),
    ),
    length=st.none() | st.integers(0, 2**64 - 1) | st.sampled_from([2**60, 2**63]),
)
def test_any_weights_file_gives_its_header_or_a_model_error(
    folder: Path, raw: bytes | tuple[bytes, bytes], length: int | None
) -> None:
    path = folder / "w.safetensors"
    if isinstance(raw, bytes):
        path.write_bytes(raw)
    else:
        header, body = raw
        n = len(header) if length is None else length
        path.write_bytes(n.to_bytes(8, "little") + header + body)
    tensors = _load_or_refusal(lambda: read_safetensors_header(path))
    if isinstance(tensors, ModelError):
        assert str(tensors).startswith(f"{path}: not a safetensors file (")
        assert "\n" not in str(tensors)
        return
    # What is accepted, safetensors itself reads the same way.
    with safetensors.safe_open(str(path), framework="pt") as f:
        theirs = {k: tuple(f.get_slice(k).get_shape()) for k in f.keys()}  # noqa: SIM118
    assert theirs == {k: shape for k, (_, shape) in tensors.items()}


@_SETTINGS
@given(position=st.integers(0, 10**6), value=st.integers(0, 255))
def test_a_weights_file_with_any_byte_changed_loads_or_is_refused(
    folder: Path, tiny: Path, position: int, value: int
) -> None:
    data = bytearray(tiny.read_bytes())
    data[position % len(data)] = value
    path = folder / "flipped.safetensors"
    path.write_bytes(bytes(data))
    card = json.loads(tiny.with_suffix(".json").read_text())
    card["sha256"] = hashlib.sha256(bytes(data)).hexdigest()  # the card vouches for it
    path.with_suffix(".json").write_text(json.dumps(card))
    model = _load_or_refusal(lambda: load_model(path))
    if isinstance(model, ModelError):
        assert "\n" not in str(model)
        return
    assert model.config == card["parameters"]
