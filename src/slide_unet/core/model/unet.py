"""The U-Net that segments slides: a configurable encoder-decoder with skip links.

Same-padding convolutions keep every feature map aligned with the input, so a
tile of any side that is a multiple of ``2**depth`` works, and a tile's
prediction equals the corresponding part of a whole-image prediction once the
tile is cropped by :attr:`UNet.halo` on each side (the tiling engine relies on
that to hide seams).

:func:`unet_tensor_shapes` gives the names and shapes of a U-Net's tensors
without building it, and :func:`check_unet_config` refuses a configuration
outside :data:`MAX_DEPTH`, :data:`MAX_BASE_WIDTH`, :data:`MAX_CHANNELS` and
:data:`MAX_TENSOR_ELEMENTS`, so that a model card can be checked against its
weights file before anything is allocated.
"""

from __future__ import annotations

import math
from typing import Any

import torch
from torch import nn

from slide_unet.core.errors import InputError

NORMS = ("batch", "instance", "group", "none")

#: The deepest U-Net accepted: 8 poolings is a 256-pixel multiple and a
#: 1,536-pixel halo; real U-Nets use 4 or 5.
MAX_DEPTH = 8
#: The widest first level accepted (the original U-Net has 64).
MAX_BASE_WIDTH = 512
#: The most input or output channels accepted (this tool feeds 1 or 3 and reads 1).
MAX_CHANNELS = 64
#: The most tensor elements (weights and buffers) accepted: 50 million, 200 MB
#: in float32. The original U-Net (base width 64, depth 4) has 31 million, the
#: bundled models 1.9 million.
MAX_TENSOR_ELEMENTS = 50_000_000


def brief(value: Any) -> str:
    """``repr(value)``, cut short: a hostile file's value may be megabytes long."""
    text = repr(value)
    return text if len(text) <= 80 else f"{text[:60]}... ({len(text):,} characters)"


def _norm(kind: str, channels: int) -> nn.Module:
    if kind == "batch":
        return nn.BatchNorm2d(channels)
    if kind == "instance":
        return nn.InstanceNorm2d(channels, affine=True)
    if kind == "group":
        return nn.GroupNorm(min(8, channels), channels)
    return nn.Identity()


def _norm_shapes(kind: str, prefix: str, channels: int) -> dict[str, tuple[int, ...]]:
    """Tensors of :func:`_norm` (as ``state_dict`` names them)."""
    if kind == "batch":
        return {
            f"{prefix}.weight": (channels,),
            f"{prefix}.bias": (channels,),
            f"{prefix}.running_mean": (channels,),
            f"{prefix}.running_var": (channels,),
            f"{prefix}.num_batches_tracked": (),
        }
    if kind in ("instance", "group"):  # affine, without running statistics
        return {f"{prefix}.weight": (channels,), f"{prefix}.bias": (channels,)}
    return {}


def _double_conv_shapes(
    prefix: str, in_channels: int, out_channels: int, norm: str
) -> dict[str, tuple[int, ...]]:
    """Tensors of :class:`_DoubleConv` (layers 0 and 3 convolve, 1 and 4 normalise)."""
    shapes: dict[str, tuple[int, ...]] = {}
    for conv, channels_in in ((0, in_channels), (3, out_channels)):
        shapes[f"{prefix}.{conv}.weight"] = (out_channels, channels_in, 3, 3)
        if norm == "none":
            shapes[f"{prefix}.{conv}.bias"] = (out_channels,)
        shapes.update(_norm_shapes(norm, f"{prefix}.{conv + 1}", out_channels))
    return shapes


def unet_tensor_shapes(
    in_channels: int = 3,
    out_channels: int = 1,
    base_width: int = 16,
    depth: int = 4,
    norm: str = "batch",
) -> dict[str, tuple[int, ...]]:
    """Names and shapes of the tensors of ``UNet(...)``'s ``state_dict``, without building it.

    Parameters
    ----------
    in_channels, out_channels, base_width, depth, norm
        As for :class:`UNet`; call :func:`check_unet_config` first, since
        nothing here bounds them.

    Returns
    -------
    dict
        Tensor name (as in ``state_dict``) to shape, in ``state_dict`` order.
    """
    widths = [base_width * 2**i for i in range(depth + 1)]
    shapes: dict[str, tuple[int, ...]] = {}
    channels = in_channels
    for i, width in enumerate(widths[:-1]):
        shapes.update(_double_conv_shapes(f"down.{i}", channels, width, norm))
        channels = width
    shapes.update(_double_conv_shapes("bottom", widths[-2], widths[-1], norm))
    for i, width in enumerate(reversed(widths[:-1])):
        shapes[f"up.{i}.weight"] = (width * 2, width, 2, 2)
        shapes[f"up.{i}.bias"] = (width,)
    for i, width in enumerate(reversed(widths[:-1])):
        shapes.update(_double_conv_shapes(f"merge.{i}", width * 2, width, norm))
    shapes["head.weight"] = (out_channels, widths[0], 1, 1)
    shapes["head.bias"] = (out_channels,)
    return shapes


def _check_int(name: str, value: Any, most: int) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise InputError(f"{name} must be a positive integer, got {brief(value)}")
    if value > most:
        raise InputError(f"{name} must be at most {most}, got {brief(value)}")


def check_unet_config(
    in_channels: Any = 3,
    out_channels: Any = 1,
    base_width: Any = 16,
    depth: Any = 4,
    norm: Any = "batch",
    *,
    key: str = "{}",
) -> int:
    """Refuse a U-Net configuration that is invalid or too large, before building it.

    Parameters
    ----------
    in_channels, out_channels, base_width, depth, norm
        As for :class:`UNet`; any type (a model card may hold anything).
    key
        How the messages name a parameter: ``key.format(name)``, e.g.
        ``"parameters[{!r}]"`` for a model card.

    Returns
    -------
    int
        The number of tensor elements (weights and buffers) the U-Net would hold.

    Raises
    ------
    InputError
        (a ``ValueError``) naming the parameter: not a positive integer, above
        :data:`MAX_CHANNELS`, :data:`MAX_BASE_WIDTH` or :data:`MAX_DEPTH`, an
        unknown ``norm``, group normalisation of a width it cannot split, or
        more than :data:`MAX_TENSOR_ELEMENTS` elements in all.
    """
    _check_int(key.format("in_channels"), in_channels, MAX_CHANNELS)
    _check_int(key.format("out_channels"), out_channels, MAX_CHANNELS)
    _check_int(key.format("base_width"), base_width, MAX_BASE_WIDTH)
    _check_int(key.format("depth"), depth, MAX_DEPTH)
    if not isinstance(norm, str) or norm not in NORMS:
        raise InputError(f"{key.format('norm')} must be one of {NORMS}, got {brief(norm)}")
    if norm == "group":
        # GroupNorm splits a level's channels into min(8, channels) equal groups.
        uneven = [w for w in (base_width * 2**i for i in range(depth + 1)) if w % min(8, w)]
        if uneven:
            raise InputError(
                f"{key.format('norm')} 'group' needs every level's width to be a multiple "
                f"of 8 (or below 8); "
                f"base_width {base_width} gives {uneven[0]}"
            )
    # Bounded above, so this costs microseconds whatever the caller asked for.
    shapes = unet_tensor_shapes(in_channels, out_channels, base_width, depth, norm)
    elements = sum(math.prod(shape) for shape in shapes.values())
    if elements > MAX_TENSOR_ELEMENTS:
        raise InputError(
            f"a U-Net of base_width {base_width} and depth {depth} has {elements:,} weights "
            f"({elements * 4 / 1e9:.1f} GB in float32); at most {MAX_TENSOR_ELEMENTS:,} "
            f"({MAX_TENSOR_ELEMENTS * 4 / 1e6:.0f} MB) are accepted"
        )
    return elements


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

    Raises
    ------
    InputError
        (a ``ValueError``) for a configuration :func:`check_unet_config`
        refuses, before anything is allocated.
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
        check_unet_config(in_channels, out_channels, base_width, depth, norm)
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
        """Raise an :class:`~slide_unet.core.errors.InputError` (a ``ValueError``)
        saying which shape would work, if ``x`` does not."""
        if x.ndim != 4:
            raise InputError(f"expected a batch N x C x H x W, got shape {tuple(x.shape)}")
        if x.shape[1] != self.in_channels:
            raise InputError(
                f"expected {self.in_channels} input channels, got {x.shape[1]} "
                f"(shape {tuple(x.shape)})"
            )
        m = self.multiple
        bad = [(name, n) for name, n in zip("HW", x.shape[2:], strict=True) if n % m or n == 0]
        if bad:
            fix = ", ".join(
                f"{name} {n} -> {max(m, n // m * m)} or {-(-n // m) * m}" for name, n in bad
            )
            raise InputError(
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
