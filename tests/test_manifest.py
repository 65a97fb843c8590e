"""Every command in the npe2 manifest (``napari.yaml``) points at something real."""

from __future__ import annotations

import importlib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
MANIFEST = ROOT / "napari.yaml"
PLUGIN_NAME = "napari-slide-unet"


def _python_names(node: Any) -> Iterator[str]:
    """Yield every ``python_name`` value anywhere in the parsed manifest."""
    if isinstance(node, dict):
        for key, value in node.items():
            if key == "python_name":
                yield value
            else:
                yield from _python_names(value)
    elif isinstance(node, list):
        for item in node:
            yield from _python_names(item)


PYTHON_NAMES = sorted(set(_python_names(yaml.safe_load(MANIFEST.read_text()))))


def test_manifest_names_commands() -> None:
    assert PYTHON_NAMES, f"no python_name in {MANIFEST}"


@pytest.mark.parametrize("python_name", PYTHON_NAMES)
def test_manifest_python_name_imports_to_a_callable(python_name: str) -> None:
    module_name, sep, attr_path = python_name.partition(":")
    assert sep, f"{python_name!r} is not of the form 'module:attribute'"
    assert attr_path, f"{python_name!r} is not of the form 'module:attribute'"
    target = importlib.import_module(module_name)
    for attr in attr_path.split("."):
        target = getattr(target, attr)
    assert callable(target), f"{python_name} is {type(target).__name__}, not callable"


def test_manifest_is_valid_npe2_with_prefixed_ids() -> None:
    npe2 = pytest.importorskip("npe2")
    manifest = npe2.PluginManifest.from_file(MANIFEST)
    assert manifest.name == PLUGIN_NAME
    ids = [command.id for command in manifest.contributions.commands or []]
    assert ids
    assert all(i.startswith(f"{PLUGIN_NAME}.") for i in ids), ids


def test_package_manifest_is_the_top_level_manifest() -> None:
    # npe2 finds the manifest inside the package (entry point `slide_unet:napari.yaml`).
    packaged = ROOT / "src" / "slide_unet" / "napari.yaml"
    assert packaged.read_bytes() == MANIFEST.read_bytes()
