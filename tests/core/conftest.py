"""Fixtures of the core tests: stand-in models and images for the tests that run
``segment`` (a tiny random U-Net with its card, a red-threshold 'model' that makes
the geometry visible, a smooth random RGB image).

torch is imported when a fixture is first used, not when pytest loads this file.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pytest

#: The tiny U-Net's normalisation (its card says so too: ``card.normalization``).
MEAN, STD = [0.6, 0.5, 0.55], [0.2, 0.25, 0.3]


@pytest.fixture(scope="session")
def tiny_unet() -> Callable[..., Any]:
    """``tiny_unet(seed=0, channels="RGB", **card)``: a random-weight U-Net small
    enough for tests, with its card (``normalization`` mean and std as :data:`MEAN`
    and :data:`STD`, ``tile`` 256 unless given)."""
    import torch

    from slide_unet.core.model.card import ModelCard
    from slide_unet.core.model.unet import UNet

    def make(*, seed: int = 0, channels: str = "RGB", **card: Any) -> UNet:
        torch.manual_seed(seed)
        n = 3 if channels == "RGB" else 1
        model = UNet(in_channels=n, base_width=4, depth=3).eval()
        model.card = ModelCard(
            name="tiny",
            parameters=model.config,
            channels=channels,
            normalization={"mean": MEAN[:n], "std": STD[:n]},
            **{"tile": 256, **card},
        )
        return model

    return make


@dataclass
class StandInCard:
    """The fields of a model card that segment reads."""

    name: str = "red"
    channels: str = "RGB"
    normalization: dict[str, list[float]] = field(
        default_factory=lambda: {"mean": [0.0] * 3, "std": [1.0] * 3}
    )
    working_mpp: float | None = None
    default_input_mpp: float | None = None
    tile: int = 128
    threshold: float = 0.5
    min_object_um2: float = 0.0


@pytest.fixture(scope="session")
def red_threshold() -> type:
    """The class ``RedThreshold(working_mpp=None, tile=128)``: a 'model' whose
    foreground is where red is above half (geometry made visible); ``.tiles`` counts
    the tiles it ran. A class, so that a test may subclass it."""
    import torch

    class RedThreshold(torch.nn.Module):
        in_channels = 3
        multiple = 1
        halo = 0

        def __init__(self, working_mpp: float | None = None, tile: int = 128) -> None:
            super().__init__()
            self.card = StandInCard(working_mpp=working_mpp, tile=tile)
            self.tiles = 0

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            self.tiles += x.shape[0]
            return (x[:, :1] - 0.5) * 50

    return RedThreshold


def _random_rgb(height: int, width: int, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    smooth = rng.integers(0, 256, (height // 8 + 2, width // 8 + 2, 3)).astype(np.float32)
    big = np.kron(smooth, np.ones((8, 8, 1)))[:height, :width]
    return np.clip(big + rng.normal(0, 25, big.shape), 0, 255).astype(np.uint8)


@pytest.fixture(scope="session")
def random_rgb() -> Callable[..., np.ndarray]:
    """``random_rgb(height, width, seed=0)``: a smooth random RGB uint8 image."""
    return _random_rgb
