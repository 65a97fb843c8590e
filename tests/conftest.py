"""Shared pytest fixtures."""

from __future__ import annotations

from pathlib import Path

import pytest

#: ``../shared/data`` next to the repository root (read-only real data).
SHARED_DATA = Path(__file__).resolve().parents[1] / ".." / "shared" / "data"


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """Return the shared real-data folder, or skip the test when it is absent."""
    if not SHARED_DATA.is_dir():
        pytest.skip(f"shared data not found at {SHARED_DATA.resolve()} (needs ../shared/data)")
    return SHARED_DATA.resolve()


@pytest.fixture(autouse=True, scope="session")
def _private_overview_cache(tmp_path_factory: pytest.TempPathFactory) -> None:
    """Keep every test (and the subprocesses they start) out of the user's cache."""
    import os

    from slide_unet.core.paths import CACHE_DIR_ENV

    os.environ[CACHE_DIR_ENV] = str(tmp_path_factory.mktemp("overview-cache"))


@pytest.fixture(autouse=True, scope="session")
def _private_masks_dir(tmp_path_factory: pytest.TempPathFactory) -> None:
    """Keep every test's mask stores (and its subprocesses') out of the user's data folder."""
    import os

    from slide_unet.core.paths import MASKS_DIR_ENV

    os.environ[MASKS_DIR_ENV] = str(tmp_path_factory.mktemp("mask-stores"))


@pytest.fixture
def user_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A private user models folder, and no unpickling anywhere in the test.

    Model tests use it for every test (``pytestmark = usefixtures("user_dir")``):
    weights are safetensors, and nothing may fall back to ``torch.load``.
    """
    import pickle

    import torch

    from slide_unet.core.paths import MODELS_DIR_ENV

    folder = tmp_path / "user-models"
    monkeypatch.setenv(MODELS_DIR_ENV, str(folder))

    def refuse(*args: object, **kwargs: object) -> None:
        raise AssertionError("something tried to unpickle")

    for module, name in [(torch, "load"), (pickle, "load"), (pickle, "loads")]:
        monkeypatch.setattr(module, name, refuse)
    return folder
