"""Where the tissue is on a slide, and its colour, from a low-resolution level.

:func:`tissue_mask` finds the tissue so the engine skips background tiles;
:func:`tissue_colour` measures the mean and spread of each colour channel over
the tissue at a fixed coarse scale, so a slide from another scanner or stain
batch can be brought to the colours a model was trained on (see
:mod:`slide_unet.core.inference.planning`).

This module is part of the napari-free core.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from slide_unet.core.limits import check_mpp

__all__ = ["COLOUR_MPP", "TissueColour", "TissueMask", "tissue_colour", "tissue_mask"]

#: Pixel size (µm) at which :func:`tissue_colour` measures a slide: coarse enough
#: to read from an overview, and the same for every slide and for the training
#: images (the spread of colours shrinks as pixels grow).
COLOUR_MPP = 8.0
#: Fewer tissue pixels than this at :data:`COLOUR_MPP` say too little about the colours.
MIN_COLOUR_PIXELS = 256


@dataclass(frozen=True)
class TissueMask:
    """Where tissue is, on a low-resolution grid.

    Attributes
    ----------
    mask : numpy.ndarray
        2-D bool, True where there is tissue (dilated a little).
    downsample : tuple of float
        Full-resolution pixels per mask pixel, along y and x.
    """

    mask: np.ndarray
    downsample: tuple[float, float]

    def any_in(self, y0: int, y1: int, x0: int, x1: int) -> bool:
        """Whether the full-resolution box ``[y0, y1) x [x0, x1)`` touches tissue."""
        dy, dx = self.downsample
        rows = slice(int(y0 // dy), max(int(y0 // dy) + 1, math.ceil(y1 / dy)))
        cols = slice(int(x0 // dx), max(int(x0 // dx) + 1, math.ceil(x1 / dx)))
        return bool(self.mask[rows, cols].any())

    @property
    def fraction(self) -> float:
        """Fraction of the slide that is tissue."""
        return float(self.mask.mean()) if self.mask.size else 0.0


def _levels_and_mpp(source: Any) -> tuple[list[Any], float | None]:
    levels = getattr(source, "levels", None)
    if levels is not None:
        return list(levels), getattr(source, "mpp", None)
    if isinstance(source, Sequence) and not isinstance(source, np.ndarray):
        return list(source), None
    return [source], None


def _tissue_level(levels: list[Any], mpp: float | None, target_mpp: float, min_side: int) -> int:
    """The coarsest level finer than ``target_mpp`` (or at least ``min_side`` a side)."""
    width = levels[0].shape[1]
    chosen = 0
    for i, level in enumerate(levels):
        downsample = width / level.shape[1]
        fine_enough = mpp * downsample <= target_mpp if mpp else max(level.shape[:2]) >= min_side
        if fine_enough:
            chosen = i
    return chosen


def _array_step(level: Any, mpp: float | None, target_mpp: float) -> int:
    """Subsampling that brings an in-memory level of pixel size ``mpp`` near
    ``target_mpp`` (a lone image has no coarser level to read instead)."""
    if not isinstance(level, np.ndarray) or not mpp:
        return 1
    return max(1, int(target_mpp / mpp))


def _read_level(level: Any, max_pixels: int, step: int = 1) -> np.ndarray | None:
    """The level's pixels (numpy arrays subsampled by ``step``, and to ``max_pixels``)."""
    pixels = int(level.shape[0]) * int(level.shape[1])
    if isinstance(level, np.ndarray):
        step = max(step, math.ceil(math.sqrt(pixels / max_pixels)))
        return level[::step, ::step]
    if pixels > max_pixels:
        return None  # decoding a big level costs as much as the tiles it would save
    compute = getattr(level, "compute", None)
    return np.asarray(compute() if compute else level[...])


def _brightfield_levels(source: Any, mpp: float | None) -> tuple[list[Any], float | None]:
    """The levels and pixel size of an 8- or 16-bit RGB(A) source, else ``([], mpp)``."""
    levels, slide_mpp = _levels_and_mpp(source)
    mpp = check_mpp(mpp) or slide_mpp
    base = levels[0]
    if (
        base.ndim != 3
        or base.shape[2] not in (3, 4)
        or np.dtype(base.dtype) not in (np.dtype(np.uint8), np.dtype(np.uint16))
    ):
        return [], mpp
    return levels, mpp


def _background(pixels: np.ndarray, saturation: float, brightness: float) -> np.ndarray | None:
    """Where ``pixels`` (``YXC``, 8- or 16-bit) are background: bright and grey, near
    black, or transparent; None when the image is not clearly brightfield."""
    top = float(np.iinfo(pixels.dtype).max)
    colour = pixels[..., :3]
    value = colour.max(axis=2).astype(np.float32) / top
    if value.size == 0 or float(np.median(value)) < 0.5:
        return None  # dark background: fluorescence, not brightfield
    spread = (colour.max(axis=2).astype(np.float32) - colour.min(axis=2)) / top
    sat = spread / np.maximum(value, 1e-6)
    background = ((value > brightness) & (sat < saturation)) | (value < 0.05)
    if pixels.shape[2] == 4:
        background |= pixels[..., 3] == 0
    return background


@dataclass(frozen=True)
class TissueColour:
    """The colour of tissue: per RGB channel, mean and standard deviation as
    fractions of the full scale, over ``pixels`` tissue pixels at ``mpp``."""

    pixels: int
    mean: tuple[float, float, float]
    std: tuple[float, float, float]
    mpp: float | None = COLOUR_MPP

    @classmethod
    def pooled(cls, parts: Sequence[TissueColour]) -> TissueColour:
        """The colour of all the tissue of ``parts`` together (each pixel counts once)."""
        n = np.array([p.pixels for p in parts], dtype=np.float64)
        if not parts or n.sum() == 0:
            raise ValueError("no tissue to pool")
        mean = np.array([p.mean for p in parts])
        second = np.array([p.std for p in parts]) ** 2 + mean**2
        total = (n[:, None] * mean).sum(0) / n.sum()
        var = (n[:, None] * second).sum(0) / n.sum() - total**2
        return cls(
            int(n.sum()),
            tuple(float(v) for v in total),  # type: ignore[arg-type]
            tuple(float(v) for v in np.sqrt(np.maximum(var, 0))),  # type: ignore[arg-type]
            parts[0].mpp,
        )

    def to_card(self, parts: Sequence[TissueColour] = ()) -> dict[str, Any]:
        """The model card's ``colour_reference``: this colour, and the range of the
        colours of ``parts`` (the training images one by one; default: this one alone)."""
        parts = list(parts) or [self]

        def rounded(values: Any) -> list[float]:
            return [round(float(v), 5) for v in values]

        means = np.array([p.mean for p in parts])
        stds = np.array([p.std for p in parts])
        return {
            "mpp": self.mpp,
            "mean": rounded(self.mean),
            "std": rounded(self.std),
            "mean_range": [rounded(means.min(0)), rounded(means.max(0))],
            "std_range": [rounded(stds.min(0)), rounded(stds.max(0))],
        }


def tissue_colour(
    source: Any,
    *,
    mpp: float | None = None,
    target_mpp: float = COLOUR_MPP,
    max_pixels: int = 2**24,
    saturation: float = 0.05,
    brightness: float = 0.85,
) -> TissueColour | None:
    """Measure the colour of a brightfield slide's tissue at ``target_mpp``.

    The coarsest level with pixels at most ``target_mpp`` is read (as
    :func:`tissue_mask` reads it) and averaged over blocks of pixels to
    ``target_mpp`` (as a coarser scan integrates light), and the pixels that
    are not background (:func:`tissue_mask`'s rule, without its dilation) are
    measured. Without a pixel size the chosen level is measured as it is.

    Returns
    -------
    TissueColour or None
        None when it does not apply: not 8- or 16-bit RGB(A), not clearly
        brightfield, no level small enough, or fewer than
        :data:`MIN_COLOUR_PIXELS` tissue pixels.
    """
    levels, mpp = _brightfield_levels(source, mpp)
    if not levels:
        return None
    base = levels[0]
    index = _tissue_level(levels, mpp, target_mpp, 512)
    pixels = _read_level(levels[index], max_pixels)  # a big in-memory level is subsampled
    if pixels is None:
        return None
    size = mpp * base.shape[1] / pixels.shape[1] if mpp else None  # µm per pixel read
    factor = max(1, round(target_mpp / size)) if size else 1
    blocks = _block_means(pixels, factor)
    if blocks is None:
        return None
    top = float(np.iinfo(pixels.dtype).max)
    background = _background((blocks * top).round().astype(pixels.dtype), saturation, brightness)
    if background is None:
        return None
    tissue = blocks[~background][:, :3].astype(np.float64)
    if len(tissue) < MIN_COLOUR_PIXELS:
        return None
    return TissueColour(
        len(tissue),
        tuple(float(v) for v in tissue.mean(0)),  # type: ignore[arg-type]
        tuple(float(v) for v in tissue.std(0)),  # type: ignore[arg-type]
        target_mpp if mpp else None,
    )


def _block_means(pixels: np.ndarray, factor: int, band: int = 64) -> np.ndarray | None:
    """Means of ``factor`` x ``factor`` blocks of ``pixels`` (``YXC``) as fractions of
    the full scale (float32), band by band: never a float copy of the whole level.
    An alpha channel is the blocks' least (any transparent pixel: transparent)."""
    top = float(np.iinfo(pixels.dtype).max)
    height, width = pixels.shape[0] // factor, pixels.shape[1] // factor
    if height == 0 or width == 0:
        return None
    out = np.empty((height, width, pixels.shape[2]), np.float32)
    for row in range(0, height, band):
        rows = min(band, height - row)
        part = np.asarray(
            pixels[row * factor : (row + rows) * factor, : width * factor], dtype=np.float32
        ).reshape(rows, factor, width, factor, pixels.shape[2])
        out[row : row + rows, :, :3] = part[..., :3].mean((1, 3)) / top
        if pixels.shape[2] == 4:
            out[row : row + rows, :, 3] = part[..., 3].min((1, 3)) / top
    return out


def tissue_mask(
    source: Any,
    *,
    mpp: float | None = None,
    target_mpp: float = 16.0,
    min_side: int = 512,
    max_pixels: int = 2**24,
    saturation: float = 0.05,
    brightness: float = 0.85,
    dilate: int = 2,
) -> TissueMask | None:
    """Find tissue on a brightfield slide's low-resolution level.

    Background in brightfield microscopy is bright and grey: a pixel whose HSV
    value (brightest channel) is above ``brightness`` and whose saturation is
    below ``saturation`` is background, and so are near-black pixels (scanner
    padding) and transparent ones. Isolated specks are removed (a one-pixel
    opening) and the tissue dilated by ``dilate`` pixels so that tile edges
    never cut off tissue.

    Parameters
    ----------
    source : Slide, sequence of arrays, or array
        A :class:`~slide_unet.core.slide.slide.Slide`, its levels (largest first,
        ``YX`` or ``YXC``), or one array.
    mpp : float, optional
        Full-resolution pixel size in µm; default: the slide's, if it knows it.
    target_mpp : float
        Use the coarsest level with pixels at most this size (µm), when the
        pixel size is known.
    min_side : int
        Otherwise, the smallest level at least this many pixels a side.
    max_pixels : int
        Never decode a level larger than this (numpy arrays are subsampled
        instead): without a small enough level, return None.
    saturation, brightness : float
        Background thresholds, 0..1.
    dilate : int
        Pixels of dilation at the chosen level.

    Returns
    -------
    TissueMask or None
        None when detection does not apply: not 8- or 16-bit RGB(A), not
        clearly brightfield (the median pixel is dark, as in fluorescence),
        or no level small enough. Every tile should then run.

    Raises
    ------
    InputError
        ``mpp`` outside :data:`~slide_unet.core.limits.MPP_RANGE`.
    """
    from scipy import ndimage

    levels, mpp = _brightfield_levels(source, mpp)
    if not levels:
        return None
    base = levels[0]
    index = _tissue_level(levels, mpp, target_mpp, min_side)
    level_mpp = mpp * base.shape[1] / levels[index].shape[1] if mpp else None
    pixels = _read_level(
        levels[index], max_pixels, _array_step(levels[index], level_mpp, target_mpp)
    )
    if pixels is None:
        return None
    background = _background(pixels, saturation, brightness)
    if background is None:
        return None
    tissue = ndimage.binary_opening(~background)
    if dilate > 0:
        tissue = ndimage.binary_dilation(tissue, iterations=dilate)
    height, width = base.shape[:2]
    return TissueMask(tissue, (height / tissue.shape[0], width / tissue.shape[1]))
