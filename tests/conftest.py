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

    from slide_unet.core.overviews import CACHE_ENV

    os.environ[CACHE_ENV] = str(tmp_path_factory.mktemp("overview-cache"))


@pytest.fixture(autouse=True, scope="session")
def _private_masks_dir(tmp_path_factory: pytest.TempPathFactory) -> None:
    """Keep every test's mask stores (and its subprocesses') out of the user's data folder."""
    import os

    from slide_unet.core.mask_store import MASKS_DIR_ENV

    os.environ[MASKS_DIR_ENV] = str(tmp_path_factory.mktemp("mask-stores"))
