"""Augmentation for training on histology: geometry, stain, light, focus.

Every transform works on a batch ``N x 3 x H x W`` of float RGB in 0..1 with its
masks ``N x 1 x H x W``, draws its parameters per image from a
:class:`torch.Generator`, and is cheap enough to run on a CPU between steps.

- 90° rotations and flips (the eight symmetries of a square: slides have no
  up or down);
- optionally rotations by any angle and smooth elastic warps (Ronneberger et
  al. 2015, "U-Net": elastic deformation is what lets a U-Net learn shapes
  from few annotated images), done together in one resampling;
- stain jitter in haematoxylin-eosin-DAB space (Tellez et al. 2018, "H&E
  stain augmentation improves generalization of convolutional networks for
  histopathological mitosis detection"): each stain's optical density scaled
  and shifted a little, which is how stains and scanners differ;
- brightness, contrast and gamma, and optionally a gamma per colour channel
  (scanners' colour responses differ channel by channel);
- Gaussian blur (focus) and noise (sensor);
- optionally inverted intensities (dark nuclei on bright brightfield versus
  bright nuclei on dark fluorescence);
- optionally any modality rendered as H&E brightfield
  (:func:`slide_unet.core.training.augment_he.render_he`), so fluorescence nuclei teach
  H&E nuclei;
- optionally a coarser acquisition: the patch shrunk by a random factor up to
  ``acquisition_factor`` (area averaging, as a scanner's larger pixels
  integrate light), sometimes JPEG-compressed at that size, and brought back
  to the working scale as the engine upsamples a coarser slide, so a slide
  scanned at 2-8 µm/px looks like something the model has seen. The mask is
  the truth at the working scale and stays as it is.

Scale jitter is done where patches are cut (:mod:`slide_unet.core.training.train`),
by cutting a larger or smaller window and resizing it.

This module is part of the napari-free core.
"""

from __future__ import annotations

import io
import math
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from slide_unet.core.errors import InputError
from slide_unet.core.training.augment_he import HED_FROM_RGB, RGB_FROM_HED, render_he

__all__ = ["Augmentation", "augment", "coarser_acquisition", "warp"]


@dataclass(frozen=True)
class Augmentation:
    """How strongly to augment; probabilities are per image.

    Attributes
    ----------
    dihedral : bool
        Random 90° rotations and flips.
    stain : float
        Stain jitter: each H, E, DAB optical density is multiplied by
        ``1 + U(-stain, stain)`` and shifted by ``U(-stain, stain)``.
    brightness, contrast : float
        Additive brightness ``U(-b, b)`` and contrast factor ``1 + U(-c, c)``.
    gamma : float
        Gamma ``exp(U(-g, g))``.
    blur : float
        Probability of a Gaussian blur with sigma ``U(0.3, blur_sigma)`` pixels.
    blur_sigma : float
    noise : float
        Probability of Gaussian noise with sd ``U(0, 0.03)``.
    invert : float
        Probability of inverting intensities.
    grayscale : float
        Probability of replacing colour by its luminance.
    scale : float
        Scale jitter, applied where patches are cut: window side times
        ``exp(U(-log(1 + scale), log(1 + scale)))``.
    rotate : float
        Probability of a rotation by an angle ``U(0, 360)`` degrees (borders
        reflected).
    elastic : float
        Probability of an elastic warp: a random displacement field smoothed
        by a Gaussian of ``elastic_sigma`` pixels, scaled so its largest
        displacement is ``elastic_alpha`` pixels.
    elastic_alpha, elastic_sigma : float
    acquisition : float
        Probability of a coarser acquisition: the image shrunk by a factor
        ``exp(U(0, log(acquisition_factor)))`` (area averaging), JPEG-compressed
        at quality ``U(40, 90)`` half the time, and resized back (bilinear).
    acquisition_factor : float
        The largest shrink factor (4: a 2 µm/px working scale from an 8 µm/px scan).
    channel_gamma : float
        Each colour channel raised to its own gamma ``exp(U(-g, g))``; 0: off.
    render_he : float
        Probability of rendering the image as H&E brightfield
        (:func:`~slide_unet.core.training.augment_he.render_he`); 0: off.
    """

    dihedral: bool = True
    stain: float = 0.05
    brightness: float = 0.1
    contrast: float = 0.2
    gamma: float = 0.2
    blur: float = 0.2
    blur_sigma: float = 1.5
    noise: float = 0.2
    invert: float = 0.0
    grayscale: float = 0.0
    scale: float = 0.2
    rotate: float = 0.0
    elastic: float = 0.0
    elastic_alpha: float = 8.0
    elastic_sigma: float = 12.0
    acquisition: float = 0.0
    acquisition_factor: float = 4.0
    channel_gamma: float = 0.0
    render_he: float = 0.0

    def __post_init__(self) -> None:
        for name in ("acquisition", "render_he"):
            value = getattr(self, name)
            if not 0 <= value <= 1:
                raise InputError(f"{name} must be a probability, got {value!r}")
        if not 0 <= self.channel_gamma <= 2:
            raise InputError(f"channel_gamma must be from 0 to 2, got {self.channel_gamma!r}")
        if not 1 <= self.acquisition_factor <= 64:
            raise InputError(
                f"acquisition_factor must be from 1 to 64, got {self.acquisition_factor!r}"
            )

    def to_dict(self) -> dict[str, Any]:
        """The settings as a JSON-ready dict (for a model card)."""
        return asdict(self)


def _uniform(n: int, low: float, high: float, gen: torch.Generator) -> torch.Tensor:
    return torch.rand(n, generator=gen) * (high - low) + low


def _chance(n: int, p: float, gen: torch.Generator) -> torch.Tensor:
    return torch.rand(n, generator=gen) < p


def dihedral(
    images: torch.Tensor, masks: torch.Tensor, gen: torch.Generator
) -> tuple[torch.Tensor, torch.Tensor]:
    """Each image and its mask turned by a random multiple of 90° and maybe flipped."""
    out_i, out_m = [], []
    turns = torch.randint(0, 4, (len(images),), generator=gen).tolist()
    flips = _chance(len(images), 0.5, gen).tolist()
    for image, mask, k, flip in zip(images, masks, turns, flips, strict=True):
        if flip:
            image, mask = image.flip(-1), mask.flip(-1)
        out_i.append(torch.rot90(image, k, (-2, -1)))
        out_m.append(torch.rot90(mask, k, (-2, -1)))
    return torch.stack(out_i), torch.stack(out_m)


def _smooth_field(n: int, h: int, w: int, sigma: float, gen: torch.Generator) -> torch.Tensor:
    """``n x 2 x h x w`` random displacements, Gaussian-smoothed, each field's peak 1."""
    coarse = max(1.0, sigma / 2)  # smooth at a coarser grid, then upsample: cheap
    ch, cw = max(2, math.ceil(h / coarse)), max(2, math.ceil(w / coarse))
    field = torch.rand((n, 2, ch, cw), generator=gen) * 2 - 1
    kernel = _gaussian_kernel(sigma / coarse)
    r = len(kernel) // 2
    k = kernel.view(1, 1, 1, -1).expand(2 * n, 1, 1, -1)
    flat = field.view(1, 2 * n, ch, cw)
    flat = F.conv2d(F.pad(flat, (r, r, 0, 0), mode="replicate"), k, groups=2 * n)
    flat = F.conv2d(F.pad(flat, (0, 0, r, r), mode="replicate"), k.transpose(-1, -2), groups=2 * n)
    field = F.interpolate(flat.view(n, 2, ch, cw), size=(h, w), mode="bilinear")
    peak = field.abs().amax(dim=(1, 2, 3), keepdim=True).clamp_min(1e-6)
    return field / peak


def warp(
    images: torch.Tensor, masks: torch.Tensor, settings: Augmentation, gen: torch.Generator
) -> tuple[torch.Tensor, torch.Tensor]:
    """Rotate some images by any angle and warp some elastically, masks alike.

    One bilinear resampling per image with reflected borders; masks are
    resampled the same way and thresholded at one half.
    """
    n, _, h, w = images.shape
    none = torch.zeros(n, dtype=torch.bool)
    rotated = _chance(n, settings.rotate, gen) if settings.rotate > 0 else none
    warped = _chance(n, settings.elastic, gen) if settings.elastic > 0 else none
    angle = _uniform(n, 0, 2 * math.pi, gen) * rotated if settings.rotate > 0 else torch.zeros(n)
    if not (rotated.any() or warped.any()):
        return images, masks
    cos, sin = torch.cos(angle), torch.sin(angle)
    # Normalised coordinates are scaled by the side, so rotate in pixel units.
    theta = torch.zeros(n, 2, 3)
    theta[:, 0, 0], theta[:, 0, 1] = cos, -sin * h / w
    theta[:, 1, 0], theta[:, 1, 1] = sin * w / h, cos
    grid = F.affine_grid(theta, [n, 1, h, w], align_corners=False)
    if warped.any():
        field = _smooth_field(n, h, w, settings.elastic_sigma, gen)
        scale = torch.tensor([2 / w, 2 / h]).view(1, 2, 1, 1) * settings.elastic_alpha
        field = field * scale * warped.view(n, 1, 1, 1)
        grid = grid + field.permute(0, 2, 3, 1)
    chosen = (rotated | warped).view(n, 1, 1, 1)
    new_images = F.grid_sample(
        images, grid, mode="bilinear", padding_mode="reflection", align_corners=False
    )
    new_masks = F.grid_sample(
        masks, grid, mode="bilinear", padding_mode="reflection", align_corners=False
    )
    images = torch.where(chosen, new_images.clamp(0, 1), images)
    masks = torch.where(chosen, (new_masks > 0.5).to(masks.dtype), masks)
    return images, masks


def stain_jitter(images: torch.Tensor, amount: float, gen: torch.Generator) -> torch.Tensor:
    """Scale and shift each image's H, E and DAB optical densities a little."""
    n = len(images)
    od = -torch.log(images.clamp_min(1e-6))  # N x 3 x H x W, RGB optical density
    hed = torch.einsum("nchw,cd->ndhw", od, HED_FROM_RGB)
    alpha = 1 + _uniform(n * 3, -amount, amount, gen).view(n, 3, 1, 1)
    beta = _uniform(n * 3, -amount, amount, gen).view(n, 3, 1, 1)
    od = torch.einsum("ndhw,dc->nchw", hed * alpha + beta, RGB_FROM_HED)
    return torch.exp(-od.clamp_min(0)).clamp(0, 1)


def _gaussian_kernel(sigma: float) -> torch.Tensor:
    radius = max(1, math.ceil(3 * sigma))
    x = torch.arange(-radius, radius + 1, dtype=torch.float32)
    kernel = torch.exp(-0.5 * (x / sigma) ** 2)
    return kernel / kernel.sum()


def blur(image: torch.Tensor, sigma: float) -> torch.Tensor:
    """Separable Gaussian blur of one ``C x H x W`` image (reflected borders)."""
    kernel = _gaussian_kernel(sigma)
    r = len(kernel) // 2
    c = image.shape[0]
    x = F.pad(image[None], (r, r, r, r), mode="reflect")
    x = F.conv2d(x, kernel.view(1, 1, 1, -1).expand(c, 1, 1, -1), groups=c)
    x = F.conv2d(x, kernel.view(1, 1, -1, 1).expand(c, 1, -1, 1), groups=c)
    return x[0]


def _jpeg(image: torch.Tensor, quality: int) -> torch.Tensor:
    """One ``3 x H x W`` image in 0..1 through JPEG at ``quality`` and back."""
    from PIL import Image

    array = (image.permute(1, 2, 0) * 255).round().to(torch.uint8).numpy()
    buffer = io.BytesIO()
    Image.fromarray(array).save(buffer, format="JPEG", quality=quality)
    decoded = np.asarray(Image.open(io.BytesIO(buffer.getvalue())).convert("RGB"))
    return torch.from_numpy(decoded.copy()).permute(2, 0, 1).float() / 255


def coarser_acquisition(
    images: torch.Tensor, settings: Augmentation, gen: torch.Generator
) -> torch.Tensor:
    """Images as a coarser scanner would give them, brought back to their size.

    See :attr:`Augmentation.acquisition`. Masks are not changed: the truth at
    the working scale is what the model must still find.
    """
    n, _, h, w = images.shape
    chosen = _chance(n, settings.acquisition, gen).tolist()
    factors = torch.exp(_uniform(n, 0.0, math.log(settings.acquisition_factor), gen)).tolist()
    jpeg = _chance(n, 0.5, gen).tolist()
    qualities = _uniform(n, 40, 90, gen).round().int().tolist()
    out = []
    for image, use, factor, compress, quality in zip(
        images, chosen, factors, jpeg, qualities, strict=True
    ):
        if use and factor > 1.05:
            size = (max(1, round(h / factor)), max(1, round(w / factor)))
            small = F.interpolate(image[None], size=size, mode="area")[0].clamp(0, 1)
            if compress and image.shape[0] == 3 and min(size) >= 8:
                small = _jpeg(small, quality)
            image = F.interpolate(small[None], size=(h, w), mode="bilinear")[0]
        out.append(image)
    return torch.stack(out).clamp(0, 1)


def augment(
    images: torch.Tensor, masks: torch.Tensor, settings: Augmentation, gen: torch.Generator
) -> tuple[torch.Tensor, torch.Tensor]:
    """Augment a batch: float RGB ``N x 3 x H x W`` in 0..1 and masks ``N x 1 x H x W``.

    Returns new tensors (the inputs are not changed); images stay in 0..1.
    """
    n = len(images)
    if settings.dihedral:
        images, masks = dihedral(images, masks, gen)
    if settings.rotate > 0 or settings.elastic > 0:
        images, masks = warp(images, masks, settings, gen)
    if settings.render_he > 0:
        chosen = _chance(n, settings.render_he, gen)
        if chosen.any():
            rendered = render_he(images, gen)
            images = torch.where(chosen.view(n, 1, 1, 1), rendered, images)
    if settings.acquisition > 0:
        images = coarser_acquisition(images, settings, gen)
    if settings.stain > 0:
        images = stain_jitter(images, settings.stain, gen)
    if settings.grayscale > 0:
        gray = _chance(n, settings.grayscale, gen)
        if gray.any():
            luma = (images * torch.tensor([0.299, 0.587, 0.114]).view(1, 3, 1, 1)).sum(1, True)
            images = torch.where(gray.view(n, 1, 1, 1), luma.expand_as(images), images)
    if settings.invert > 0:
        flip = _chance(n, settings.invert, gen).view(n, 1, 1, 1)
        images = torch.where(flip, 1 - images, images)
    if settings.contrast > 0 or settings.brightness > 0:
        c = 1 + _uniform(n, -settings.contrast, settings.contrast, gen).view(n, 1, 1, 1)
        b = _uniform(n, -settings.brightness, settings.brightness, gen).view(n, 1, 1, 1)
        mean = images.mean(dim=(1, 2, 3), keepdim=True)
        images = ((images - mean) * c + mean + b).clamp(0, 1)
    if settings.gamma > 0:
        g = torch.exp(_uniform(n, -settings.gamma, settings.gamma, gen)).view(n, 1, 1, 1)
        images = images.clamp_min(1e-6) ** g
    if settings.channel_gamma > 0:
        g = settings.channel_gamma
        images = images.clamp_min(1e-6) ** torch.exp(_uniform(n * 3, -g, g, gen)).view(n, 3, 1, 1)
    if settings.blur > 0:
        chosen = _chance(n, settings.blur, gen).tolist()
        sigmas = _uniform(n, 0.3, settings.blur_sigma, gen).tolist()
        images = torch.stack(
            [blur(im, s) if c else im for im, s, c in zip(images, sigmas, chosen, strict=True)]
        )
    if settings.noise > 0:
        sd = _uniform(n, 0, 0.03, gen) * _chance(n, settings.noise, gen)
        noise = torch.randn(images.shape, generator=gen) * sd.view(n, 1, 1, 1)
        images = (images + noise).clamp(0, 1)
    return images.contiguous(), masks.contiguous()
