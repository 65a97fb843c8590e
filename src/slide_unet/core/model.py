"""The U-Net that segments slides: a configurable encoder-decoder with skip links.

Same-padding convolutions keep every feature map aligned with the input, so a
tile of any side that is a multiple of ``2**depth`` works, and a tile's
prediction equals the corresponding part of a whole-image prediction once the
tile is cropped by :attr:`UNet.halo` on each side (the tiling engine relies on
that to hide seams).
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

NORMS = ("batch", "instance", "group", "none")


def _norm(kind: str, channels: int) -> nn.Module:
    if kind == "batch":
        return nn.BatchNorm2d(channels)
    if kind == "instance":
        return nn.InstanceNorm2d(channels, affine=True)
    if kind == "group":
        return nn.GroupNorm(min(8, channels), channels)
    return nn.Identity()


class _DoubleConv(nn.Sequential):
    def __init__(self, in_channels: int, out_channels: int, norm: str) -> None:
        bias = norm == "none"
        super().__init__(
            nn.Conv2d(in_channels, out_channels, 3, padding=1, bias=bias),
            _norm(norm, out_channels),
            nn.ReLU(inplace=True),
            nn.Conv2d(out_channels, out_channels, 3, padding=1, bias=bias),
            _norm(norm, out_channels),
            nn.ReLU(inplace=True),
        )


class UNet(nn.Module):
    """U-Net (Ronneberger et al. 2015) with same padding and a one-channel logit output.

    Parameters
    ----------
    in_channels
        Channels of the input (3 for RGB).
    out_channels
        Channels of the output logits (1: foreground).
    base_width
        Feature maps of the first level; doubled at each level down.
    depth
        Number of 2x poolings. Tile sides must be multiples of ``2**depth``.
    norm
        ``"batch"``, ``"instance"``, ``"group"`` or ``"none"``. Instance and
        group normalisation compute statistics over the whole tile, so their
        tiles differ slightly from a whole-image pass (see :attr:`tile_exact`).
    """

    def __init__(
        self,
        in_channels: int = 3,
        out_channels: int = 1,
        base_width: int = 16,
        depth: int = 4,
        norm: str = "batch",
    ) -> None:
        super().__init__()
        if norm not in NORMS:
            raise ValueError(f"norm must be one of {NORMS}, got {norm!r}")
        if depth < 1 or base_width < 1 or in_channels < 1 or out_channels < 1:
            raise ValueError("in_channels, out_channels, base_width and depth must be >= 1")
        self.config: dict[str, Any] = {
            "in_channels": in_channels,
            "out_channels": out_channels,
            "base_width": base_width,
            "depth": depth,
            "norm": norm,
        }
        widths = [base_width * 2**i for i in range(depth + 1)]
        self.down = nn.ModuleList()
        channels = in_channels
        for width in widths[:-1]:
            self.down.append(_DoubleConv(channels, width, norm))
            channels = width
        self.pool = nn.MaxPool2d(2)
        self.bottom = _DoubleConv(widths[-2], widths[-1], norm)
        self.up = nn.ModuleList()
        self.merge = nn.ModuleList()
        for width in reversed(widths[:-1]):
            self.up.append(nn.ConvTranspose2d(width * 2, width, 2, stride=2))
            self.merge.append(_DoubleConv(width * 2, width, norm))
        self.head = nn.Conv2d(widths[0], out_channels, 1)

    @property
    def multiple(self) -> int:
        """Tile sides must be multiples of this (``2**depth``)."""
        return 2 ** self.config["depth"]

    @property
    def in_channels(self) -> int:
        """Channels the model expects."""
        return int(self.config["in_channels"])

    @property
    def receptive_radius(self) -> int:
        """How far (in input pixels) an output pixel can see, each way, on a tile
        that starts on a multiple of :attr:`multiple`.

        The 3x3 convolutions reach one step each: two per level on the way
        down and two on the way up (``2**level`` input pixels per step), two at
        the bottom. On aligned tiles the 2x2 poolings and transposed
        convolutions add at most one pixel to that (checked in float64 for
        depths 1 to 5 in the tests).
        """
        depth = self.config["depth"]
        convolutions = 4 * (2**depth - 1) + 2 * 2**depth
        return convolutions + 1

    @property
    def halo(self) -> int:
        """Margin to crop from each side of a tile so it matches a whole-image pass.

        The receptive radius rounded up to a multiple of :attr:`multiple`.
        """
        m = self.multiple
        return -(-self.receptive_radius // m) * m

    @property
    def tile_exact(self) -> bool:
        """Whether cropped tiles equal a whole-image pass (no per-image normalisation)."""
        return self.config["norm"] in ("batch", "none")

    def check_input(self, x: torch.Tensor) -> None:
        """Raise a ValueError saying which shape would work, if ``x`` does not."""
        if x.ndim != 4:
            raise ValueError(f"expected a batch N x C x H x W, got shape {tuple(x.shape)}")
        if x.shape[1] != self.in_channels:
            raise ValueError(
                f"expected {self.in_channels} input channels, got {x.shape[1]} "
                f"(shape {tuple(x.shape)})"
            )
        m = self.multiple
        bad = [(name, n) for name, n in zip("HW", x.shape[2:], strict=True) if n % m or n == 0]
        if bad:
            fix = ", ".join(
                f"{name} {n} -> {max(m, n // m * m)} or {-(-n // m) * m}" for name, n in bad
            )
            raise ValueError(
                f"tile sides must be positive multiples of {m} (2**depth); got "
                f"{tuple(x.shape[2:])}: use {fix}"
            )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Logits N x out_channels x H x W for a normalised batch N x C x H x W."""
        self.check_input(x)
        skips = []
        for block in self.down:
            x = block(x)
            skips.append(x)
            x = self.pool(x)
        x = self.bottom(x)
        for up, merge, skip in zip(self.up, self.merge, reversed(skips), strict=True):
            x = merge(torch.cat([up(x), skip], dim=1))
        return self.head(x)

    @torch.inference_mode()
    def predict(self, x: torch.Tensor) -> torch.Tensor:
        """Foreground probabilities (sigmoid of the logits), without autograd."""
        was_training = self.training
        self.eval()
        try:
            return torch.sigmoid(self(x))
        finally:
            self.train(was_training)
