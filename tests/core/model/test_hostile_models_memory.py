"""The worst model files, loaded in a fresh process whose peak memory and time are
measured: each is refused with one ModelError naming its file, or loads, within
60 s and 1.5 GB (the interpreter, torch and the bundled package included).

Before the card was checked against bounds and the weights' header, a card asking
for depth 20-50 or base width 20,000 built the network first: 5-14 GB, then an
allocation error that did not name the model.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest
import safetensors.torch
import torch
from test_hostile_models import _edit_card, _sha

from slide_unet.core.model.card import MAX_CARD_BYTES, ModelCard
from slide_unet.core.model.store import save_model
from slide_unet.core.model.unet import UNet, check_unet_config, unet_tensor_shapes

pytestmark = pytest.mark.slow

PEAK_LIMIT_MB = 1536
SECONDS_LIMIT = 60

#: Loads argv[1] and prints what happened, how long it took and the peak memory.
_CHILD = """
import json, sys, time
started = time.perf_counter()
from slide_unet.core.model.card import ModelError
from slide_unet.core.model.store import load_model
try:
    load_model(sys.argv[1])
    outcome = "loaded"
except ModelError as exc:
    outcome = "ModelError: " + str(exc)
# VmHWM, not ru_maxrss: that one survives exec, so it counts the forking parent too.
with open("/proc/self/status") as status:
    hwm = next(line for line in status if line.startswith("VmHWM:"))
print(json.dumps({
    "outcome": outcome,
    "seconds": time.perf_counter() - started,
    "peak_mb": int(hwm.split()[1]) / 1024,
}))
"""


def _load_in_a_fresh_process(path: Path) -> dict:
    # A refusal that came too late would show as a MemoryError traceback, not a result.
    done = subprocess.run(
        [sys.executable, "-c", _CHILD, os.fspath(path)],
        capture_output=True,
        text=True,
        timeout=2 * SECONDS_LIMIT,
        env={**os.environ, "PYTHONWARNINGS": "ignore"},
        check=False,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    return json.loads(done.stdout.strip().splitlines()[-1])


def _tiny(folder: Path) -> Path:
    torch.manual_seed(0)
    model = UNet(base_width=4, depth=2)
    return save_model(model, folder / "m", ModelCard("m", parameters=model.config, tile=64))


def _with_card(weights: Path, **changes: object) -> Path:
    """Change the card beside ``weights``; its sha256 still vouches for the weights."""
    _edit_card(weights, **changes)
    return weights


def _depth_50(folder: Path) -> Path:
    return _with_card(_tiny(folder), depth=50, tile=2**50)


def _width_20000(folder: Path) -> Path:
    return _with_card(_tiny(folder), base_width=20_000, depth=1)


def _original_unet_card_over_tiny_weights(folder: Path) -> Path:
    # In bounds (31 million weights, 124 MB): refused from the header, never built.
    return _with_card(_tiny(folder), base_width=64, depth=4)


def _header_claiming_an_exabyte(folder: Path) -> Path:
    weights = _tiny(folder)
    weights.write_bytes((2**60).to_bytes(8, "little") + b'{"a": 1}')
    return _with_card(weights)


def _header_of_a_4_billion_element_tensor(folder: Path) -> Path:
    weights = _tiny(folder)
    header = json.dumps(
        {"head.weight": {"dtype": "F32", "shape": [2**16, 2**16], "data_offsets": [0, 2**34]}}
    ).encode()
    weights.write_bytes(len(header).to_bytes(8, "little") + header + bytes(8))
    return _with_card(weights)


def _card_of_gigabytes(folder: Path) -> Path:
    weights = _tiny(folder)
    with weights.with_suffix(".json").open("r+b") as f:
        f.truncate(4 * 2**30)  # sparse: no disk taken
    return weights


def _card_of_the_most_json_objects(folder: Path) -> Path:
    # Just under the card limit, as many Python objects as JSON can make: accepted.
    weights = _tiny(folder)
    card = json.loads(weights.with_suffix(".json").read_text())
    room = MAX_CARD_BYTES - len(json.dumps(card)) - 100
    card["training"] = {"x": [{}] * (room // 4)}
    weights.with_suffix(".json").write_text(json.dumps(card, separators=(",", ":")))
    return weights


def _largest_model_accepted(folder: Path) -> Path:
    # 49.9 million weights (the bound is 50 million) stored as float64: a 400 MB file.
    parameters = {"in_channels": 3, "out_channels": 1, "base_width": 163, "depth": 3}
    parameters["norm"] = "batch"
    assert check_unet_config(**parameters) > 49_000_000
    weights = folder / "big.safetensors"
    state = {
        name: torch.zeros(shape, dtype=torch.int64 if not shape else torch.float64)
        for name, shape in unet_tensor_shapes(**parameters).items()
    }
    safetensors.torch.save_file(state, weights)
    del state
    card = ModelCard("big", parameters=parameters, tile=512, trained=True, sha256=_sha(weights))
    card.to_json(weights.with_suffix(".json"))
    return weights


@pytest.mark.parametrize(
    ("make", "expected"),
    [
        (_depth_50, r"ModelError: .*m\.json: parameters\['depth'\] must be at most 8, got 50"),
        (_width_20000, r"ModelError: .*m\.json: parameters\['base_width'\] must be at most 512"),
        (_original_unet_card_over_tiny_weights, r"ModelError: .*m\.safetensors: tensors do not"),
        (_header_claiming_an_exabyte, r"ModelError: .*m\.safetensors: not a safetensors file"),
        (_header_of_a_4_billion_element_tensor, r"ModelError: .*m\.safetensors: not a safet"),
        (_card_of_gigabytes, r"ModelError: .*m\.json: a model card is a small JSON file"),
        (_card_of_the_most_json_objects, r"loaded"),
        (_largest_model_accepted, r"loaded"),
    ],
    ids=lambda x: getattr(x, "__name__", "")[1:] or None,
)
def test_the_worst_model_files_are_refused_or_loaded_within_60_s_and_1_5_gb(
    tmp_path: Path, make: Callable[[Path], Path], expected: str
) -> None:
    result = _load_in_a_fresh_process(make(tmp_path))
    print(f"{make.__name__}: {result['seconds']:.1f} s, {result['peak_mb']:.0f} MB")
    assert re.match(expected, result["outcome"]), result["outcome"][:300]
    assert "\n" not in result["outcome"]
    assert result["seconds"] < SECONDS_LIMIT, result
    assert result["peak_mb"] < PEAK_LIMIT_MB, result
