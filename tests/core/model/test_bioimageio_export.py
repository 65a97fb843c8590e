"""bioimage.io export: the package passes bioimageio.core's own test, offline.

``bioimageio test`` validates the package and runs its test input through the
exported model (built from the package's ``unet.py`` and ``weights.pt``, not from
this project), comparing with the package's test output.
"""

from __future__ import annotations

import json
import socket
import subprocess
import sys
import textwrap
import zipfile
from pathlib import Path
from typing import Any

import numpy as np
import pytest

pytest.importorskip("bioimageio.core", reason="needs the bioimageio extra")

from slide_unet.core.errors import ModelError, UserError
from slide_unet.core.model.bioimageio_export import (
    check_bioimageio_package,
    export_bioimageio,
    spdx_licence,
    standalone_unet_source,
)


@pytest.fixture(autouse=True)
def offline(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """No network (any connection attempt fails the test) and a private cache."""
    from bioimageio.spec import settings

    def refuse(*args: Any, **kwargs: Any) -> None:
        raise AssertionError(f"the export or its test tried to reach the network: {args}")

    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(socket, "create_connection", refuse)
    monkeypatch.setattr(settings, "cache_path", tmp_path / "bioimageio-cache")


def _rdf(path: Path) -> str:
    with zipfile.ZipFile(path) as package:
        return package.read("rdf.yaml").decode()


def _check(path: Path) -> None:
    result = check_bioimageio_package(path)
    assert result.passed, result.summary


@pytest.mark.slow
def test_bundled_glomeruli_package_passes_bioimageio_test(tmp_path: Path) -> None:
    path = export_bioimageio("glomeruli", tmp_path / "glomeruli.zip")
    with zipfile.ZipFile(path) as package:
        names = set(package.namelist())
        test_input = np.load(package.open("test_input.npy"))
        test_output = np.load(package.open("test_output.npy"))
    assert {"rdf.yaml", "unet.py", "weights.pt", "cover.png", "README.md"} <= names
    # A real crop at 2 µm/px with the halo each side, and glomeruli found in it.
    assert test_input.shape == (1, 3, 256 + 2 * 96, 256 + 2 * 96)
    assert test_input.dtype == np.uint8
    assert test_output.shape == (1, 1, 448, 448)
    assert 0.02 < (test_output[..., 96:-96, 96:-96] > 0.5).mean() < 0.9
    rdf = _rdf(path)
    for text in ("license: CC-BY-4.0", "unit: micrometer", "scale: 2.0", "halo: 96"):
        assert text in rdf
    assert "doi: 10.17632/k7nvtgn2x6.3" in rdf  # the training data's attribution
    _check(path)


def test_fine_tuned_gray_model_passes_bioimageio_test(tmp_path: Path, tiny_unet: Any) -> None:
    """A user's model (here a tiny one-channel U-Net, at the image's own scale)."""
    model = tiny_unet(channels="gray", trained=True, licence="CC0 1.0", parent="nuclei")
    path = export_bioimageio(model, tmp_path / "tiny.zip")
    rdf = _rdf(path)
    assert "license: CC0-1.0" in rdf
    assert "micrometer" not in rdf  # no working pixel size: none claimed
    with zipfile.ZipFile(path) as package:
        assert np.load(package.open("test_input.npy")).shape == (1, 1, 352, 352)
    _check(path)


def test_standalone_unet_source_needs_only_torch(tmp_path: Path, tiny_unet: Any) -> None:
    """The package's architecture runs where this project is not installed."""
    import torch

    model = tiny_unet()
    (tmp_path / "unet.py").write_text(standalone_unet_source())
    torch.save(model.state_dict(), tmp_path / "weights.pt")
    script = textwrap.dedent(
        f"""
        import importlib.util, sys
        import torch
        sys.modules["slide_unet"] = None  # importing it now fails
        spec = importlib.util.spec_from_file_location("unet", {str(tmp_path / "unet.py")!r})
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        net = module.UNet(**{model.config!r})
        net.load_state_dict(torch.load({str(tmp_path / "weights.pt")!r}, weights_only=True))
        torch.manual_seed(0)
        print(float(net.eval()(torch.rand(1, 3, 64, 64)).sum()))
        """
    )
    result = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, check=False
    )
    assert result.returncode == 0, result.stderr[-3000:]
    torch.manual_seed(0)
    with torch.no_grad():
        expected = float(model.eval()(torch.rand(1, 3, 64, 64)).sum())
    assert float(result.stdout.split()[-1]) == pytest.approx(expected, rel=1e-5)


@pytest.mark.parametrize(
    ("card", "spdx"),
    [("CC BY 4.0", "CC-BY-4.0"), ("CC0 1.0", "CC0-1.0"), ("CC0", "CC0-1.0"), ("MIT", "MIT")],
)
def test_card_licences_map_to_spdx(card: str, spdx: str) -> None:
    assert spdx_licence(card) == spdx


@pytest.mark.parametrize("licence", [None, "", "all rights reserved"])
def test_no_usable_licence_is_refused_by_name(licence: str | None) -> None:
    with pytest.raises(ModelError, match="--licence"):
        spdx_licence(licence)


def test_refuses_placeholders_and_the_models_own_files(tmp_path: Path, tiny_unet: Any) -> None:
    with pytest.raises(ModelError, match="placeholder"):
        export_bioimageio(tiny_unet(licence="MIT"), tmp_path / "x.zip")
    from slide_unet.core.model.store import locate_model

    _weights, card = locate_model("glomeruli")
    before = card.read_bytes()
    with pytest.raises(UserError, match="write over"):
        export_bioimageio("glomeruli", card)
    assert card.read_bytes() == before
    assert not list(tmp_path.iterdir())


def test_missing_extra_names_it(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "bioimageio.spec", None)
    with pytest.raises(UserError, match=r"napari-slide-unet\[bioimageio\]"):
        export_bioimageio("glomeruli", tmp_path / "x.zip")
    assert not list(tmp_path.iterdir())


def test_cli_writes_the_package_and_reports_the_test(
    tmp_path: Path, tiny_unet: Any, capsys: pytest.CaptureFixture[str]
) -> None:
    from slide_unet.cli import main
    from slide_unet.core.model.store import save_model

    model = tiny_unet(trained=True, licence="CC-BY-4.0", working_mpp=2.0)
    save_model(model, tmp_path / "tiny.safetensors", model.card)
    out = tmp_path / "tiny.zip"
    assert main(["export-model", str(tmp_path / "tiny.json"), "-o", str(out), "--check"]) == 0
    printed = capsys.readouterr().out
    assert f"wrote {out}" in printed
    assert "bioimageio test: passed" in printed
    assert "scale: 2.0" in _rdf(out)
    assert main(["export-model", "glomeruli", "-o", str(tmp_path / "g.zip"), "--json"]) == 0
    assert json.loads(capsys.readouterr().out.splitlines()[-1])["output"].endswith("g.zip")


def test_the_package_description_names_the_cards_minimum_object_area() -> None:
    import dataclasses

    from slide_unet.core.model.bioimageio_export import _readme
    from slide_unet.core.model.card import ModelCard

    card = ModelCard(name="g", normalization={"mean": [0.5] * 3, "std": [0.25] * 3})
    assert "objects under" not in _readme(card, "CC-BY-4.0", 32, 16, 512)
    chosen = dataclasses.replace(card, min_object_um2=1500.0)
    assert "objects under 1500 µm² are then removed" in _readme(chosen, "CC-BY-4.0", 32, 16, 512)
