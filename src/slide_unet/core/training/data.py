"""Training data: images split by image, resampled to the working scale, cut into patches.

Images (files, or arrays in memory) are read once
(:func:`~slide_unet.core.training.image_pairs.read_pair`), held out by image with a
seeded shuffle (:func:`split_by_image`), and the training ones resampled to the
model's working pixel size and kept in memory as uint8. :func:`sample_batch`
cuts patches from them: a ``foreground_fraction`` of them centred on
foreground, window sides jittered in scale, borders reflected.

Corrected regions
    An :class:`~slide_unet.core.training.image_pairs.ArrayPair` may name the boxes the
    user corrected. In an image that has them, :data:`REGION_FRACTION` of the
    patches are centred inside them (half on their foreground, half on their
    background, when both exist); the rest are drawn as for any image. A
    held-out image with regions is scored on its regions only, since outside
    them the mask was never checked by a person.

One image
    With a single image there is nothing to hold out by image, so it is split
    by region (:func:`split_one_image`): the image is cut across the longer
    side of its regions' bounding box (of the image when it has none) into two
    bands, and the band at one end holding about ``val_fraction`` of the
    regions' area (of the image's area) is held out; the end is the one that
    leaves the bigger training band. Training patches come only from the other
    band, so no training pixel is ever scored.

Context
    A held-out part (a band, a corrected box) is segmented in place, with the
    rest of its image around it as the model's context, and only the part is
    scored (:attr:`HeldOutImage.region`): cut out and segmented alone, a band a
    few hundred pixels across loses the context the model relies on at its
    edges (the bundled glomeruli model scored 0.09 on such a band of the sample
    slide, against 0.63 on the same band of a whole-slide segmentation).

This module is part of the napari-free core.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import numpy as np
import torch
import torch.nn.functional as F

from slide_unet.core.errors import InputError
from slide_unet.core.inference.tiling import reflect_index
from slide_unet.core.training.config import TrainingConfig
from slide_unet.core.training.image_pairs import ArrayPair, ImagePair, Region, read_pair

__all__ = [
    "REGION_FRACTION",
    "HeldOutImage",
    "TrainingImage",
    "channel_statistics",
    "cut_window",
    "load_images",
    "sample_batch",
    "split_by_image",
    "split_one_image",
]

#: Share of the patches of an image with corrected regions centred inside them.
REGION_FRACTION = 0.5

#: Least side, in full-resolution pixels, of each band when one image is split.
MIN_BAND = 16

#: Patch centres kept per image (and per kind inside regions): enough to pick from.
CENTRES = 4096


def _no_points() -> np.ndarray:
    return np.empty((0, 2), np.int64)


@dataclass
class TrainingImage:
    """A training image and its mask, resampled to the working pixel size."""

    stem: str
    pixels: np.ndarray  # H x W x 3 uint8 at working scale
    mask: np.ndarray  # H x W uint8 0/1 at working scale
    foreground: np.ndarray  # K x 2 coordinates of (some) foreground pixels
    regions: np.ndarray = field(default_factory=_no_points)  # K x 2, inside corrected boxes


@dataclass
class HeldOutImage:
    """A held-out image, or a part of one, to score.

    Attributes
    ----------
    stem : str
        The image's stem, or ``stem[y0:y1,x0:x1]`` for a part.
    pixels : numpy.ndarray
        The whole image as read (full resolution): a part is segmented with
        the rest around it as context.
    truth : numpy.ndarray
        The mask of what is scored: the region's when there is one.
    mpp : float or None
    region : (y0, y1, x0, x1) or None
        The part of ``pixels`` that is segmented and scored; None: all of it.
    """

    stem: str
    pixels: np.ndarray
    truth: np.ndarray
    mpp: float | None
    region: Region | None = None


def split_by_image(
    stems: Sequence[str], fraction: float, seed: int
) -> tuple[list[str], list[str]]:
    """Training and held-out stems: a seeded shuffle, at least one on each side."""
    if len(stems) < 2:
        raise InputError(f"need at least 2 images to hold one out, got {len(stems)}")
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


def _name(pair: ImagePair | ArrayPair) -> str:
    """How messages name a pair: its image file, or its stem when in memory."""
    return str(pair.image) if isinstance(pair, ImagePair) else pair.stem


def _pixel_size(
    pair: ImagePair | ArrayPair, file_mpp: float | None, config: TrainingConfig
) -> float | None:
    mpp = file_mpp or config.input_mpp
    if config.working_mpp is not None and mpp is None:
        raise InputError(
            f"{_name(pair)}: the file does not say its pixel size, and the model works at "
            f"{config.working_mpp} µm/px: give the images' pixel size (--mpp)"
        )
    return mpp


def _sample(points: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    return points[rng.permutation(len(points))[:CENTRES]]


def _region_points(
    regions: Sequence[Region], scale: float, mask: np.ndarray, rng: np.random.Generator
) -> np.ndarray:
    """Patch centres inside the boxes (full resolution, scaled to ``mask``'s grid):
    up to :data:`CENTRES` on foreground and as many on background."""
    h, w = mask.shape
    inside = np.zeros((h, w), bool)
    for y0, y1, x0, x1 in regions:
        top, left = min(h - 1, math.floor(y0 * scale)), min(w - 1, math.floor(x0 * scale))
        bottom, right = max(top + 1, math.ceil(y1 * scale)), max(left + 1, math.ceil(x1 * scale))
        inside[top:bottom, left:right] = True  # never empty, however small the scale
    on = np.argwhere(inside & (mask != 0))
    off = np.argwhere(inside & (mask == 0))
    return np.concatenate([_sample(on, rng), _sample(off, rng)])


def _training_image(
    stem: str,
    pixels: np.ndarray,
    truth: np.ndarray,
    mpp: float | None,
    regions: Sequence[Region],
    config: TrainingConfig,
    rng: np.random.Generator,
) -> TrainingImage:
    """An image resampled to the working scale, with its patch centres."""
    scale = mpp / config.working_mpp if config.working_mpp and mpp else 1.0
    small, mask = _resize(_as_rgb8(pixels), truth, scale)
    ys, xs = np.nonzero(mask)
    keep = rng.permutation(len(ys))[:CENTRES]
    image = TrainingImage(stem, small, mask, np.stack([ys[keep], xs[keep]], axis=1))
    if regions:
        image.regions = _region_points(regions, scale, mask, rng)
    return image


def _crop_name(stem: str, box: Region) -> str:
    y0, y1, x0, x1 = box
    return f"{stem}[{y0}:{y1},{x0}:{x1}]"


def _held_parts(
    stem: str,
    pixels: np.ndarray,
    truth: np.ndarray,
    mpp: float | None,
    regions: Sequence[Region],
) -> list[HeldOutImage]:
    """A held-out image, or its corrected boxes only (each named after its box and
    scored in place, the whole image as its context)."""
    if not regions:
        return [HeldOutImage(stem, pixels, truth, mpp)]
    return [
        HeldOutImage(
            _crop_name(stem, box), pixels, truth[box[0] : box[1], box[2] : box[3]], mpp, box
        )
        for box in regions
    ]


def _intersect(regions: Sequence[Region], box: Region) -> list[Region]:
    """The parts of ``regions`` inside ``box`` (full-resolution coordinates)."""
    out = []
    for y0, y1, x0, x1 in regions:
        part = (max(y0, box[0]), min(y1, box[1]), max(x0, box[2]), min(x1, box[3]))
        if part[0] < part[1] and part[2] < part[3]:
            out.append(part)
    return out


def split_one_image(
    shape: tuple[int, int], regions: Sequence[Region], fraction: float
) -> tuple[Region, Region]:
    """Training and held-out bands of a lone image (see the module notes).

    Parameters
    ----------
    shape : (int, int)
        The image's height and width.
    regions : sequence of (y0, y1, x0, x1)
        The corrected boxes (inside the image); empty: the whole image.
    fraction : float
        About this share of the regions' area (or the image's) is held out.

    Returns
    -------
    train, held : (y0, y1, x0, x1)
        Two bands that together cover the image and do not overlap.

    Raises
    ------
    ValueError
        The regions (or the image) are too small to cut in two.
    """
    h, w = shape
    boxes = list(regions) or [(0, h, 0, w)]
    tall = max(b[1] for b in boxes) - min(b[0] for b in boxes)
    wide = max(b[3] for b in boxes) - min(b[2] for b in boxes)
    axis = 0 if tall >= wide else 1
    n = (h, w)[axis]
    # Area of the boxes on each line across the axis (overlaps counted twice:
    # this only places the cut).
    profile = np.zeros(n)
    for y0, y1, x0, x1 in boxes:
        a, b, other = (y0, y1, x1 - x0) if axis == 0 else (x0, x1, y1 - y0)
        profile[a:b] += other
    before = np.concatenate([[0.0], np.cumsum(profile)])  # area of lines [0, c)
    total = before[-1]
    if n < 2 * MIN_BAND:
        raise InputError(
            f"a lone {h} x {w} image is too small to hold a part out for validation "
            f"(each part needs {MIN_BAND} pixels): give a second image"
        )
    # Held out at the end, [cut, n), or at the start, [0, cut): whichever
    # leaves more to train on, as long as it holds some of the regions.
    end = int(np.searchsorted(before, (1 - fraction) * total, "right")) - 1
    end = min(max(end, MIN_BAND), n - MIN_BAND)
    start = int(np.searchsorted(before, fraction * total, "left"))
    start = min(max(start, MIN_BAND), n - MIN_BAND)
    choices = []  # (training lines, training band, held band)
    if total - before[end] > 0:
        choices.append((end, (0, end), (end, n)))
    if before[start] > 0:
        choices.append((n - start, (start, n), (0, start)))
    if not choices:
        raise InputError(
            f"the corrected regions of this {h} x {w} image are too small to hold a part out "
            "for validation: draw a larger region, or give a second image"
        )
    _, train_band, held_band = max(choices, key=lambda c: c[0])  # a tie: held at the end

    def box(band: tuple[int, int]) -> Region:
        return (*band, 0, w) if axis == 0 else (0, h, *band)

    return box(train_band), box(held_band)


def _load_one(
    pair: ImagePair | ArrayPair, config: TrainingConfig, say: Callable[[str], None]
) -> tuple[list[TrainingImage], list[HeldOutImage]]:
    """A lone image split by region: one band trains, the other is scored."""
    pixels, truth, file_mpp = read_pair(pair)
    mpp = _pixel_size(pair, file_mpp, config)
    regions = list(getattr(pair, "regions", ()))
    train_box, held_box = split_one_image(truth.shape, regions, config.val_fraction)
    y0, y1, x0, x1 = train_box
    local = [(a - y0, b - y0, c - x0, d - x0) for a, b, c, d in _intersect(regions, train_box)]
    rng = np.random.default_rng(config.seed)
    image = _training_image(
        _crop_name(pair.stem, train_box),
        pixels[y0:y1, x0:x1],
        truth[y0:y1, x0:x1],
        mpp,
        local,
        config,
        rng,
    )
    held = _held_parts(
        pair.stem, pixels, truth, mpp, _intersect(regions, held_box) if regions else [held_box]
    )
    scored = "its corrected regions in it" if regions else "all of it"
    say(
        f"one image, split by region: {image.stem} trains, "
        f"{_crop_name(pair.stem, held_box)} is held out ({scored} scored)"
    )
    return [image], held


def load_images(
    pairs: Sequence[ImagePair | ArrayPair], config: TrainingConfig, say: Callable[[str], None]
) -> tuple[list[TrainingImage], list[HeldOutImage]]:
    """Read every pair, split them by image (one image: by region), and resample
    the training ones.

    Parameters
    ----------
    pairs : sequence of ImagePair or ArrayPair
        Files or arrays; an :class:`~slide_unet.core.training.image_pairs.ArrayPair`'s
        ``regions`` weight its patches and restrict its scoring.
    config : TrainingConfig
    say : callable
        Receives a one-line description of the split.

    Returns
    -------
    images : list of TrainingImage
    held : list of HeldOutImage
        Held-out images, or parts of them (named ``stem[y0:y1,x0:x1]``, scored in
        place).

    Raises
    ------
    ValueError
        No pairs, two with one stem, unreadable or mismatched files, a pixel
        size that is needed but unknown, or a lone image too small to split.
    """
    if not pairs:
        raise InputError("no images to train on")
    stems = [p.stem for p in pairs]
    if len(set(stems)) != len(stems):
        raise InputError("two training images share a name: stems must be unique")
    chosen = config.validation_images
    if chosen is not None:
        unknown = sorted(set(chosen) - set(stems))
        if unknown:
            raise InputError(f"validation images {unknown} are not among the training pairs")
        if len(set(chosen)) == len(stems):
            raise InputError("every image is held out for validation: none is left to train on")
        val_stems = sorted(set(chosen))
    elif len(pairs) == 1:
        return _load_one(pairs[0], config, say)
    else:
        _train_stems, val_stems = split_by_image(stems, config.val_fraction, config.seed)
    held_out = set(val_stems)
    images: list[TrainingImage] = []
    held: list[HeldOutImage] = []
    rng = np.random.default_rng(config.seed)
    for pair in pairs:
        pixels, truth, file_mpp = read_pair(pair)
        mpp = _pixel_size(pair, file_mpp, config)
        regions = list(getattr(pair, "regions", ()))
        if pair.stem in held_out:
            held.extend(_held_parts(pair.stem, pixels, truth, mpp, regions))
            continue
        images.append(_training_image(pair.stem, pixels, truth, mpp, regions, config, rng))
    say(
        f"{len(images)} training images, {len(val_stems)} held out ({', '.join(val_stems[:8])}"
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
    image: TrainingImage,
    side: int,
    rng: np.random.Generator,
    on_foreground: bool,
    centres: np.ndarray | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """A ``side``-square window of an image and its mask (borders reflected).

    Centred (give or take a quarter side) on one of ``centres``, else on a
    foreground pixel when ``on_foreground``, else anywhere.
    """
    h, w = image.mask.shape
    if centres is None and on_foreground:
        centres = image.foreground
    if centres is not None and len(centres):
        cy, cx = centres[rng.integers(len(centres))]
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
        # Images without regions draw exactly as before regions existed (same
        # random stream), so `slide-unet train` runs are unchanged.
        if len(image.regions) and rng.random() < REGION_FRACTION:
            pixels, mask = cut_window(image, side, rng, False, centres=image.regions)
        else:
            on_foreground = rng.random() < config.foreground_fraction
            pixels, mask = cut_window(image, side, rng, on_foreground)
        x = torch.from_numpy(pixels).permute(2, 0, 1).float() / 255
        m = torch.from_numpy(mask)[None].float()
        if side != p:
            x = F.interpolate(x[None], size=(p, p), mode="bilinear", antialias=True)[0]
            m = (F.interpolate(m[None], size=(p, p), mode="bilinear")[0] > 0.5).float()
        xs.append(x.clamp(0, 1))
        ms.append(m)
    return torch.stack(xs), torch.stack(ms)
