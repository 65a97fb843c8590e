"""Training data: images split by image, resampled to the working scale, cut into patches.

Images are read once (:func:`~slide_unet.core.image_pairs.read_pair`), held out
by image with a seeded shuffle (:func:`split_by_image`), and the training ones
resampled to the model's working pixel size and kept in memory as uint8.
:func:`sample_batch` cuts patches from them: a ``foreground_fraction`` of them
centred on foreground, window sides jittered in scale, borders reflected.

This module is part of the napari-free core.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np
import torch
import torch.nn.functional as F

from slide_unet.core.image_pairs import ImagePair, read_pair
from slide_unet.core.tiling import reflect_index

if TYPE_CHECKING:
    from slide_unet.core.training import TrainingConfig

__all__ = [
    "HeldOutImage",
    "TrainingImage",
    "channel_statistics",
    "cut_window",
    "load_images",
    "sample_batch",
    "split_by_image",
]


@dataclass
class TrainingImage:
    """A training image and its mask, resampled to the working pixel size."""

    stem: str
    pixels: np.ndarray  # H x W x 3 uint8 at working scale
    mask: np.ndarray  # H x W uint8 0/1 at working scale
    foreground: np.ndarray  # K x 2 coordinates of (some) foreground pixels


@dataclass
class HeldOutImage:
    """A held-out image as read (full resolution), its truth and pixel size."""

    stem: str
    pixels: np.ndarray  # as read, full resolution
    truth: np.ndarray
    mpp: float | None


def split_by_image(
    stems: Sequence[str], fraction: float, seed: int
) -> tuple[list[str], list[str]]:
    """Training and held-out stems: a seeded shuffle, at least one on each side."""
    if len(stems) < 2:
        raise ValueError(f"need at least 2 images to hold one out, got {len(stems)}")
    order = sorted(stems)
    np.random.default_rng(seed).shuffle(order)
    n_val = min(len(order) - 1, max(1, round(fraction * len(order))))
    return sorted(order[n_val:]), sorted(order[:n_val])


def _as_rgb8(image: np.ndarray) -> np.ndarray:
    if image.dtype != np.uint8:
        top = float(np.iinfo(image.dtype).max) if image.dtype.kind in "ui" else 1.0
        image = np.clip(image.astype(np.float32) / top * 255 + 0.5, 0, 255).astype(np.uint8)
    if image.shape[2] == 1:
        image = np.repeat(image, 3, axis=2)
    return image


def _resize(pixels: np.ndarray, mask: np.ndarray, scale: float) -> tuple[np.ndarray, np.ndarray]:
    """Image and mask resampled by ``scale`` (antialiased; the mask by area, then > 0.5)."""
    if scale == 1.0:
        return pixels, mask.astype(np.uint8)
    h, w = pixels.shape[:2]
    size = (max(1, round(h * scale)), max(1, round(w * scale)))
    x = torch.from_numpy(pixels).permute(2, 0, 1)[None].float()
    x = F.interpolate(x, size=size, mode="bilinear", antialias=True, align_corners=False)
    m = torch.from_numpy(mask.astype(np.float32))[None, None]
    mode = "area" if scale < 1 else "bilinear"
    m = F.interpolate(m, size=size, mode=mode)
    out = x[0].permute(1, 2, 0).round().clamp(0, 255).to(torch.uint8).numpy()
    return out, (m[0, 0] > 0.5).to(torch.uint8).numpy()


def _pixel_size(pair: ImagePair, file_mpp: float | None, config: TrainingConfig) -> float | None:
    mpp = file_mpp or config.input_mpp
    if config.working_mpp is not None and mpp is None:
        raise ValueError(
            f"{pair.image}: the file does not say its pixel size, and the model works at "
            f"{config.working_mpp} µm/px: give the images' pixel size (--mpp)"
        )
    return mpp


def load_images(
    pairs: Sequence[ImagePair], config: TrainingConfig, say: Callable[[str], None]
) -> tuple[list[TrainingImage], list[HeldOutImage]]:
    """Read every pair, split them by image, and resample the training ones."""
    stems = [p.stem for p in pairs]
    if len(set(stems)) != len(stems):
        raise ValueError("two training images share a name: stems must be unique")
    _train_stems, val_stems = split_by_image(stems, config.val_fraction, config.seed)
    held_out = set(val_stems)
    images: list[TrainingImage] = []
    held: list[HeldOutImage] = []
    rng = np.random.default_rng(config.seed)
    for pair in pairs:
        pixels, truth, file_mpp = read_pair(pair)
        mpp = _pixel_size(pair, file_mpp, config)
        if pair.stem in held_out:
            held.append(HeldOutImage(pair.stem, pixels, truth, mpp))
            continue
        scale = mpp / config.working_mpp if config.working_mpp and mpp else 1.0
        small, mask = _resize(_as_rgb8(pixels), truth, scale)
        ys, xs = np.nonzero(mask)
        keep = rng.permutation(len(ys))[:4096]  # enough centres to pick from
        images.append(
            TrainingImage(pair.stem, small, mask, np.stack([ys[keep], xs[keep]], axis=1))
        )
    say(
        f"{len(images)} training images, {len(held)} held out ({', '.join(val_stems[:8])}"
        f"{', ...' if len(val_stems) > 8 else ''})"
    )
    return images, held


def channel_statistics(images: Sequence[TrainingImage]) -> tuple[list[float], list[float]]:
    """Per-channel mean and standard deviation of the training pixels, in 0..1."""
    total = np.zeros(3)
    square = np.zeros(3)
    count = 0
    for image in images:
        x = image.pixels.reshape(-1, 3).astype(np.float64) / 255
        total += x.sum(0)
        square += (x**2).sum(0)
        count += len(x)
    mean = total / count
    std = np.sqrt(np.maximum(square / count - mean**2, 1e-6))
    return [round(float(v), 4) for v in mean], [round(float(v), 4) for v in std]


def cut_window(
    image: TrainingImage, side: int, rng: np.random.Generator, on_foreground: bool
) -> tuple[np.ndarray, np.ndarray]:
    """A ``side``-square window of an image and its mask (borders reflected)."""
    h, w = image.mask.shape
    if on_foreground and len(image.foreground):
        cy, cx = image.foreground[rng.integers(len(image.foreground))]
        y0 = int(cy) - side // 2 + int(rng.integers(-side // 4, side // 4 + 1))
        x0 = int(cx) - side // 2 + int(rng.integers(-side // 4, side // 4 + 1))
    else:
        y0 = int(rng.integers(0, h - side + 1)) if h >= side else (h - side) // 2
        x0 = int(rng.integers(0, w - side + 1)) if w >= side else (w - side) // 2
    rows = reflect_index(np.arange(y0, y0 + side), h)
    cols = reflect_index(np.arange(x0, x0 + side), w)
    return image.pixels[rows[:, None], cols], image.mask[rows[:, None], cols]


def sample_batch(
    images: Sequence[TrainingImage], config: TrainingConfig, rng: np.random.Generator
) -> tuple[torch.Tensor, torch.Tensor]:
    """A batch of patches: float RGB ``N x 3 x P x P`` in 0..1, masks ``N x 1 x P x P``."""
    p = config.patch
    jitter = math.log1p(config.augmentation.scale)
    xs, ms = [], []
    for _ in range(config.batch_size):
        image = images[int(rng.integers(len(images)))]
        side = max(8, round(p * math.exp(rng.uniform(-jitter, jitter))))
        pixels, mask = cut_window(image, side, rng, rng.random() < config.foreground_fraction)
        x = torch.from_numpy(pixels).permute(2, 0, 1).float() / 255
        m = torch.from_numpy(mask)[None].float()
        if side != p:
            x = F.interpolate(x[None], size=(p, p), mode="bilinear", antialias=True)[0]
            m = (F.interpolate(m[None], size=(p, p), mode="bilinear")[0] > 0.5).float()
        xs.append(x.clamp(0, 1))
        ms.append(m)
    return torch.stack(xs), torch.stack(ms)
