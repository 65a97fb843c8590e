"""Nuclei images of any modality rendered as H&E brightfield, for training.

The nuclei model learns from the 2018 Data Science Bowl: mostly fluorescence
(bright nuclei on black), some brightfield, few H&E. Users point it at H&E
slides. :func:`render_he` turns a patch of any of these into something that
looks like an H&E patch, so the model learns the nuclei's shape and not the
modality's colours:

1. a nuclear-stain density in 0..1 per pixel: the luminance where the
   background is dark (fluorescence: bright is stained), one minus it where
   the background is bright (brightfield: dark is stained), stretched between
   its 1st and 99th percentiles;
2. haematoxylin optical density proportional to that density (a random
   amount per image), plus eosin over a smooth random texture of cytoplasm and
   stroma with holes (lumina, fat), plus a faint haematoxylin background;
3. Beer-Lambert back to RGB with the Ruifrok-Johnston stain vectors that
   :func:`slide_unet.core.training.augment.stain_jitter` uses (defined here), so the
   stain jitter after it varies the rendered stains as it varies real ones.

Masks are not changed. This module is part of the napari-free core.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

__all__ = ["HED_FROM_RGB", "RGB_FROM_HED", "render_he", "stain_density"]

#: Colour deconvolution matrix of Ruifrok and Johnston (2001), rows H, E, DAB in
#: RGB optical density, as scikit-image's ``rgb_from_hed``.
RGB_FROM_HED = torch.tensor(
    [[0.65, 0.70, 0.29], [0.07, 0.99, 0.11], [0.27, 0.57, 0.78]], dtype=torch.float32
)
HED_FROM_RGB = torch.linalg.inv(RGB_FROM_HED)


def stain_density(images: torch.Tensor) -> torch.Tensor:
    """``N x 1 x H x W`` nuclear-stain density in 0..1 of RGB images ``N x 3 x H x W``.

    Dark-background images (mean luminance below one half) read bright as
    stained, bright-background ones dark as stained.
    """
    luma = (images * torch.tensor([0.299, 0.587, 0.114]).view(1, 3, 1, 1)).sum(1, keepdim=True)
    dark = luma.mean(dim=(1, 2, 3), keepdim=True) < 0.5
    density = torch.where(dark, luma, 1 - luma)
    flat = density.flatten(1)
    step = max(1, flat.shape[1] // 16384)  # percentiles from a subsample: cheap
    sample = flat[:, ::step]
    low = torch.quantile(sample, 0.01, dim=1).view(-1, 1, 1, 1)
    high = torch.quantile(sample, 0.99, dim=1).view(-1, 1, 1, 1)
    return ((density - low) / (high - low).clamp_min(0.1)).clamp(0, 1)


def _texture(n: int, h: int, w: int, gen: torch.Generator) -> torch.Tensor:
    """``n x 1 x h x w`` smooth random texture in 0..1 with some empty holes:
    uniform noise on a grid of 4-16 px cells, upsampled bicubically."""
    cell = float(torch.empty(1).uniform_(4.0, 16.0, generator=gen))
    coarse = torch.rand((n, 1, math.ceil(h / cell) + 1, math.ceil(w / cell) + 1), generator=gen)
    field = F.interpolate(coarse, size=(h, w), mode="bicubic", align_corners=False)
    holes = torch.empty(n, 1, 1, 1).uniform_(0.0, 0.4, generator=gen)  # below: empty
    return ((field - holes) / (1 - holes)).clamp(0, 1)


def render_he(images: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
    """RGB images ``N x 3 x H x W`` in 0..1 rendered as H&E brightfield (same shape)."""
    n, _, h, w = images.shape
    density = stain_density(images)

    def uniform(low: float, high: float) -> torch.Tensor:
        return torch.empty(n, 1, 1, 1).uniform_(low, high, generator=gen)

    haematoxylin = density * uniform(0.5, 1.5) + uniform(0.0, 0.12)
    eosin = _texture(n, h, w, gen) * uniform(0.1, 0.7) * (1 - 0.5 * density)
    od = (
        haematoxylin * RGB_FROM_HED[0].view(1, 3, 1, 1)
        + eosin * RGB_FROM_HED[1].view(1, 3, 1, 1)
        + uniform(0.0, 0.05) * RGB_FROM_HED[2].view(1, 3, 1, 1)
    )
    return torch.exp(-od).clamp(0, 1)
