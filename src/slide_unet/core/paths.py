"""The per-user folders and the environment variables that move them.

``$SLIDE_UNET_MODELS_DIR``
    The user's own (trained or fine-tuned) models; else
    ``platformdirs.user_data_dir("napari-slide-unet")/models``.
``$SLIDE_UNET_MASKS_DIR``
    The per-slide mask stores (autosaved edits and segmentations); else
    ``platformdirs.user_data_dir("napari-slide-unet")/masks``.
``$SLIDE_UNET_CACHE_DIR``
    The cache (overviews of flat slides live in its ``overviews`` folder); else
    ``platformdirs.user_cache_dir("napari-slide-unet")``.

A folder may not exist yet: whoever writes into it creates it. The variables
are read at each call, so a test or a shared machine may set them at any time.

This module is part of the napari-free core.
"""

from __future__ import annotations

import os
from pathlib import Path

import platformdirs

__all__ = [
    "APP_NAME",
    "CACHE_DIR_ENV",
    "MASKS_DIR_ENV",
    "MODELS_DIR_ENV",
    "cache_dir",
    "masks_dir",
    "models_dir",
]

#: The name platformdirs files the folders under.
APP_NAME = "napari-slide-unet"
#: Environment variable that moves the user models folder (tests, shared installs).
MODELS_DIR_ENV = "SLIDE_UNET_MODELS_DIR"
#: Environment variable that moves the masks folder (tests, shared machines).
MASKS_DIR_ENV = "SLIDE_UNET_MASKS_DIR"
#: Environment variable that moves the cache (tests, shared machines).
CACHE_DIR_ENV = "SLIDE_UNET_CACHE_DIR"


def _from_env(variable: str) -> Path | None:
    value = os.environ.get(variable)
    return Path(value) if value else None


def models_dir() -> Path:
    """Folder of the user's own models: ``$SLIDE_UNET_MODELS_DIR``, else the user data folder's
    ``models``."""
    return _from_env(MODELS_DIR_ENV) or (
        Path(platformdirs.user_data_dir(APP_NAME, appauthor=False)) / "models"
    )


def masks_dir() -> Path:
    """Folder of the per-slide mask stores: ``$SLIDE_UNET_MASKS_DIR``, else the user data
    folder's ``masks``."""
    return _from_env(MASKS_DIR_ENV) or (
        Path(platformdirs.user_data_dir(APP_NAME, appauthor=False)) / "masks"
    )


def cache_dir() -> Path:
    """The cache folder: ``$SLIDE_UNET_CACHE_DIR``, else the user cache folder."""
    return _from_env(CACHE_DIR_ENV) or Path(platformdirs.user_cache_dir(APP_NAME))
