"""How a segmentation will run: which level, which scale, which tiles, which blocks.

:func:`plan_segmentation` looks at the slide (or array) and the model card
and returns a :class:`SegmentationPlan`, a small picklable value that
:func:`slide_unet.core.inference.segment.run_blocks` executes, here or in another
process.

Pixel size
    The input's pixel size comes from the file, else ``mpp=``, else the model
    card's ``default_input_mpp``, else the image is taken at the model's own
    scale. The scale factor is the card's working pixel size over the
    input's (1 when either is unknown). A pixel size from a caller outside
    :data:`~slide_unet.core.limits.MPP_RANGE` is refused (tiling at
    1e-6 µm would never end); a file's was already dropped when it was opened.
Level
    Tiles are read from the pyramid level with the largest downsample not
    above the scale factor, so the fewest pixels are decoded. A level up to
    5% coarser is accepted (a scanner's 0.2527 µm slide still reads its 4x
    level for a 1 µm model): enlarging by 5% loses nothing a model sees.
Channels
    An RGB model drops the alpha of RGBA input and repeats gray input; a gray
    model sees the luma of RGB. Pixels are divided by their type's maximum
    (255 for uint8, 65535 for uint16; float input is taken as 0..1) and
    normalised with the card's mean and std.

This module is part of the napari-free core.
"""

from __future__ import annotations

import contextlib
import math
import os
import warnings
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from slide_unet.core.devices import resolve_device
from slide_unet.core.errors import InputError, ModelError
from slide_unet.core.inference.tiling import OutputBlock, TileGrid, make_grid
from slide_unet.core.limits import MPP_RANGE, check_mpp, plausible_mpp
from slide_unet.core.model.card import DEFAULT_MEAN, DEFAULT_STD
from slide_unet.core.slide.files import consistent_levels
from slide_unet.core.slide.tissue import COLOUR_MPP, TissueColour, tissue_colour, tissue_mask

__all__ = [
    "LEVEL_TOLERANCE",
    "OpenedSource",
    "SegmentationPlan",
    "check_region",
    "load_model_spec",
    "make_plan",
    "open_source",
    "plan_segmentation",
    "tile_for_side",
]

#: A pyramid level up to this much coarser than the working scale is still used.
LEVEL_TOLERANCE = 1.05


@dataclass(frozen=True)
class SegmentationPlan:
    """What to compute: picklable, so blocks can run in other processes.

    Attributes
    ----------
    source : str or None
        The slide file, reopened by path (None for an in-memory array).
    image_shape : tuple of int
        Full-resolution ``(height, width)``.
    level : int
        Pyramid level read.
    level_shape : tuple of int
        Its ``(height, width)``, to find it again in a slide reopened elsewhere
        (whose cached overview levels may differ).
    level_downsample : tuple of float
        Full-resolution pixels per pixel of that level (y, x).
    input_mpp, working_mpp : float or None
        Pixel size of the input (full resolution) and of the model, in µm.
    scale : float
        Full-resolution pixels per working pixel.
    region : tuple of int
        ``(y0, y1, x0, x1)`` computed, full resolution; the output's shape.
    grid : TileGrid
        Blocks, tiles and halo (see :mod:`slide_unet.core.inference.tiling`).
    blocks : tuple of OutputBlock
        The blocks to run (those touching tissue), row by row.
    total_blocks : int
        Blocks in the region, run or skipped as background.
    model : str or None
        Model name or path for :func:`~slide_unet.core.model.store.load_model`;
        None when a loaded model was given (it must then be passed along).
    channel_mode : str
        ``"same"``, ``"drop-alpha"``, ``"luma"`` (RGB to a gray model) or
        ``"repeat"`` (gray to an RGB model).
    input_scale, input_offset : tuple of float
        Per model channel, ``x * scale + offset`` normalises a pixel value:
        the card's mean and std applied to pixels divided by the type's max,
        after the colour matching below.
    threshold : float
        Probabilities above it are foreground.
    probabilities : bool
        Store float32 probabilities instead of a 0/1 mask.
    out : str or None
        The zarr store blocks are written to, when there is one.
    tta : bool
        Test-time augmentation: average the probabilities of the eight
        rotations and flips of every tile (eight times the work).
    colour_gain, colour_shift : tuple of float or None
        The colour matching folded into ``input_scale`` and ``input_offset``
        (:func:`colour_match`): each RGB channel ``c`` (0..1) became
        ``c * gain + shift``; None when colours were left as they are.
    min_object_um2 : float
        The card's minimum object area (µm², chosen by its cross-validation):
        what a run drops unless told another; 0 for probabilities.
    """

    source: str | None
    image_shape: tuple[int, int]
    level: int
    level_shape: tuple[int, int]
    level_downsample: tuple[float, float]
    input_mpp: float | None
    working_mpp: float | None
    scale: float
    region: tuple[int, int, int, int]
    grid: TileGrid
    blocks: tuple[OutputBlock, ...]
    total_blocks: int
    model: str | None
    channel_mode: str
    input_scale: tuple[float, ...]
    input_offset: tuple[float, ...]
    threshold: float
    probabilities: bool
    out: str | None = None
    tta: bool = False
    colour_gain: tuple[float, ...] | None = None
    colour_shift: tuple[float, ...] | None = None
    min_object_um2: float = 0.0

    @property
    def tile(self) -> int:
        """Model tile side, working pixels."""
        return self.grid.tile

    @property
    def shape(self) -> tuple[int, int]:
        """Output ``(height, width)``: the region's."""
        y0, y1, x0, x1 = self.region
        return y1 - y0, x1 - x0

    @property
    def dtype(self) -> np.dtype:
        """Output type: uint8 0/1, or float32 probabilities."""
        return np.dtype(np.float32 if self.probabilities else np.uint8)


# -- model card ----------------------------------------------------------------------


@dataclass(frozen=True)
class _Card:
    channels: str
    in_channels: int
    mean: tuple[float, ...]
    std: tuple[float, ...]
    working_mpp: float | None
    default_input_mpp: float | None
    tile: int | None
    threshold: float
    colour_reference: dict[str, Any] | None = None
    min_object_um2: float = 0.0


#: Bounds of the colour matching's per-channel gain: a slide whose tissue is
#: nearly one colour (or a synthetic image) must not have its noise blown up.
COLOUR_GAIN = (0.5, 2.0)


def colour_match(
    reference: dict[str, Any], found: TissueColour
) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """Per RGB channel ``(gain, shift)`` that bring tissue of colour ``found`` to the
    card's ``reference`` (the training tissue's mean and spread, pooled): ``c *
    gain + shift``, Reinhard et al.'s colour transfer per channel in RGB.

    Measured with the bundled glomeruli model (issue 16): on ``hubmap_red16`` (a
    HuBMAP scanner at 8 µm/px, darker and bluer than the training tiles) pooled
    Dice 0.000 -> 0.727; on the sample slide 0.875 -> 0.852. Bringing a slide only
    to the edge of the training images' range (``mean_range``, ``std_range``),
    which leaves the sample slide as it is, gave 0.412 on ``hubmap_red16``: the
    full transfer was kept.
    """
    low, high = COLOUR_GAIN
    gain = tuple(
        float(min(max(r / max(f, 1e-6), low), high))
        for r, f in zip(reference["std"], found.std, strict=True)
    )
    shift = tuple(
        float(r - g * f) for r, g, f in zip(reference["mean"], gain, found.mean, strict=True)
    )
    return gain, shift


#: Slides' measured colours by file (path, modification time, size, pixel sizes):
#: measuring reads an 8 µm/px level (0.7-0.9 s on a 31,299 x 44,066 slide), which
#: each Viewport click and region would otherwise read again.
_COLOURS: dict[tuple[Any, ...], TissueColour | None] = {}
_COLOURS_KEPT = 32


def slide_colour(
    source: OpenedSource, mpp: float | None, reference: dict[str, Any]
) -> TissueColour | None:
    """:func:`~slide_unet.core.slide.tissue.tissue_colour` of an opened source at the
    pixel size of a card's ``reference``, remembered for a file until it changes."""
    target_mpp = reference["mpp"] or COLOUR_MPP
    key = None
    if source.path:
        try:
            stat = os.stat(source.path)
        except OSError:
            stat = None
        if stat is not None:
            path = os.path.realpath(source.path)
            key = (path, stat.st_mtime_ns, stat.st_size, mpp, target_mpp)
            if key in _COLOURS:
                return _COLOURS[key]
    measured = tissue_colour(source.levels, mpp=mpp, target_mpp=target_mpp)
    if key is not None:
        while len(_COLOURS) >= _COLOURS_KEPT:
            _COLOURS.pop(next(iter(_COLOURS)), None)
        _COLOURS[key] = measured
    return measured


def _card_of(model: torch.nn.Module) -> _Card:
    """The model card's fields, with defaults for a model that has none."""
    card = getattr(model, "card", None)
    in_channels = int(getattr(model, "in_channels", 3))
    channels = getattr(card, "channels", None) or ("gray" if in_channels == 1 else "RGB")
    norm = getattr(card, "normalization", None) or {}
    mean = tuple(float(v) for v in norm.get("mean", [DEFAULT_MEAN] * in_channels))
    std = tuple(float(v) for v in norm.get("std", [DEFAULT_STD] * in_channels))
    if len(mean) == 1:
        mean *= in_channels
    if len(std) == 1:
        std *= in_channels
    if len(mean) != in_channels or len(std) != in_channels:
        raise ModelError(
            f"the model card's normalisation has {len(mean)} means and {len(std)} stds "
            f"for a model with {in_channels} input channels"
        )
    tile = getattr(card, "tile", None)
    threshold = getattr(card, "threshold", None)
    for name in ("working_mpp", "default_input_mpp"):
        value = getattr(card, name, None)
        if value is not None and not plausible_mpp(value):
            low, high = MPP_RANGE
            raise ModelError(
                f"the model card's {name} of {value!r} is not a usable pixel size: expected "
                f"a number of µm per pixel from {low:g} to {high:g}"
            )
    return _Card(
        channels=str(channels),
        in_channels=in_channels,
        mean=mean,
        std=std,
        working_mpp=getattr(card, "working_mpp", None),
        default_input_mpp=getattr(card, "default_input_mpp", None),
        tile=int(tile) if tile else None,
        threshold=0.5 if threshold is None else float(threshold),
        colour_reference=getattr(card, "colour_reference", None),
        min_object_um2=float(getattr(card, "min_object_um2", None) or 0.0),
    )


def load_model_spec(model: Any, device: torch.device) -> tuple[torch.nn.Module, str | None]:
    """Load a model given by name or path, or take a loaded one as it is.

    Parameters
    ----------
    model : str, os.PathLike or torch.nn.Module
        What :func:`~slide_unet.core.model.store.load_model` accepts.
    device : torch.device
        Where to load it.

    Returns
    -------
    module : torch.nn.Module
    spec : str or None
        The name or path it was loaded from (what a plan records), None for a
        module given as such.
    """
    if isinstance(model, torch.nn.Module):
        return model, None
    if not isinstance(model, (str, os.PathLike)):
        raise TypeError(
            f"model must be a name, a path or a torch.nn.Module, got {type(model).__name__}"
        )
    from slide_unet.core.model.store import load_model  # torch-heavy; loaded on demand

    return load_model(model, device=str(device)), os.fspath(model)


# -- source --------------------------------------------------------------------------


@dataclass
class OpenedSource:
    """An image to segment: its levels (largest first), file, and pixel size."""

    levels: list[Any]
    path: str | None
    mpp: float | None


@contextlib.contextmanager
def open_source(source: Any) -> Iterator[OpenedSource]:
    """Open what :func:`~slide_unet.core.inference.segment.segment` accepts as a source.

    A path is opened with :func:`~slide_unet.core.slide.slide.open_slide` and closed
    on exit; a Slide is used as it is; an array, or a sequence of arrays
    (pyramid levels), must be ``YX`` or ``YXC``.

    Yields
    ------
    OpenedSource

    Raises
    ------
    InputError
        An array that is not 2-D (with optional channels), a source whose
        ``mpp`` is not a usable pixel size, or an unreadable file
        (:class:`~slide_unet.core.errors.SlideError`).

    Warns
    -----
    UserWarning
        Levels given as a sequence that are not the first halved (they are
        left out, as :func:`~slide_unet.core.slide.slide.open_slide` leaves out such
        levels of a file).
    """
    if isinstance(source, (str, os.PathLike)):
        from slide_unet.core.slide.slide import open_slide

        with open_slide(source) as slide:
            yield OpenedSource(list(slide.levels), os.fspath(slide.path), slide.mpp)
        return
    if hasattr(source, "levels"):
        path = getattr(source, "path", None)
        # A Slide's own mpp is plausible; one set by hand may not be.
        mpp = check_mpp(getattr(source, "mpp", None), "the source's mpp")
        yield OpenedSource(list(source.levels), None if path is None else os.fspath(path), mpp)
        return
    if isinstance(source, Sequence) and source and all(hasattr(a, "shape") for a in source):
        levels = list(source)
    else:
        levels = [source if hasattr(source, "shape") else np.asarray(source)]
    for level in levels:
        if level.ndim not in (2, 3) or min(level.shape[:2]) < 1:
            raise InputError(
                f"expected an image YX or YXC (height, width[, channels]), got shape "
                f"{tuple(level.shape)}"
            )
    yield OpenedSource(consistent_levels(levels, "the pyramid given"), None, None)


def _level_downsample(base: tuple[int, int], shape: tuple[int, int]) -> tuple[float, float]:
    """Full-resolution pixels per level pixel, snapped to the integer a pyramid used."""
    dx = base[1] / shape[1]
    r = round(dx)
    if r >= 1 and all(s in (b // r, -(-b // r)) for b, s in zip(base, shape, strict=True)):
        return float(r), float(r)
    return base[0] / shape[0], dx


def _choose_level(levels: list[Any], scale: float) -> tuple[int, tuple[float, float]]:
    base = (int(levels[0].shape[0]), int(levels[0].shape[1]))
    chosen, downsample = 0, (1.0, 1.0)
    for i, level in enumerate(levels):
        d = _level_downsample(base, (int(level.shape[0]), int(level.shape[1])))
        if max(d) <= scale * LEVEL_TOLERANCE and d[1] > downsample[1]:
            chosen, downsample = i, d
    return chosen, downsample


def check_region(region: Any, shape: tuple[int, int]) -> tuple[int, int, int, int]:
    """``region`` as four ints inside an image of ``shape``; None is the whole image.

    Raises
    ------
    InputError
        Not four numbers, empty (``y1 <= y0`` or ``x1 <= x0``), or not inside
        the image; the message gives the bounds.
    """
    height, width = shape
    if region is None:
        return 0, height, 0, width
    try:
        y0, y1, x0, x1 = (int(v) for v in region)
    except (TypeError, ValueError) as exc:
        raise InputError(
            f"region must be (y0, y1, x0, x1) in full-resolution pixels, got {region!r}"
        ) from exc
    if not (0 <= y0 < y1 <= height and 0 <= x0 < x1 <= width):
        raise InputError(
            f"region {(y0, y1, x0, x1)} is not a non-empty window of the image: expected "
            f"(y0, y1, x0, x1) with 0 <= y0 < y1 <= {height} and 0 <= x0 < x1 <= {width}"
        )
    return y0, y1, x0, x1


def _channel_mode(card: _Card, shape: tuple[int, ...]) -> str:
    have = shape[2] if len(shape) == 3 else 1
    want = card.in_channels
    if want == 3 and card.channels.upper() == "RGB":
        modes = {3: "same", 4: "drop-alpha", 1: "repeat"}
        expected = "YX (gray), or YXC with 3 (RGB) or 4 (RGBA) channels"
    elif want == 1:
        modes = {1: "same", 3: "luma", 4: "luma"}
        expected = "YX (gray), or YXC with 3 (RGB) or 4 (RGBA) channels"
    else:
        modes = {want: "same"}
        expected = f"YXC with {want} channels"
    if have not in modes:
        raise InputError(
            f"the model expects {card.channels} input ({want} channels); the image has "
            f"{have} channels (shape {tuple(shape)}): expected {expected}"
        )
    return modes[have]


def _value_range(dtype: np.dtype) -> float:
    """What a pixel value of ``dtype`` is divided by to scale it to 0..1."""
    if dtype == np.bool_:
        return 1.0
    if dtype.kind in "ui":
        return float(np.iinfo(dtype).max)
    return 1.0  # float images are taken to be 0..1 already


def _default_tile(card: _Card, halo: int, multiple: int, device: torch.device) -> int:
    """The card's tile, enlarged until the halo costs at most about half the work
    on a CPU (8 halos a side) or a quarter on a GPU (16 halos)."""
    floor = (16 if device.type == "cuda" else 8) * halo
    tile = max(card.tile or 512, floor, 2 * halo + 4 * multiple)
    return -(-tile // multiple) * multiple


# -- planning ------------------------------------------------------------------------


def tile_for_side(side: int, scale: float, net: torch.nn.Module) -> int:
    """The smallest model tile that computes a block of ``side`` full-resolution
    pixels at ``scale`` (full-resolution pixels per working pixel), with the
    model's halo and two multiples of slack (resampling and the pooling grid
    widen a block's span)."""
    halo = int(getattr(net, "halo", 0))
    multiple = int(getattr(net, "multiple", 1))
    working = math.ceil(side / scale) + 2 * halo
    return -(-working // multiple) * multiple + 2 * multiple


def make_plan(
    source: OpenedSource,
    net: torch.nn.Module,
    spec: str | None,
    *,
    region: Any,
    mpp: float | None,
    device: torch.device,
    tile: int | None,
    threshold: float | None,
    tissue: bool,
    probabilities: bool,
    tta: bool = False,
    align: int | None = None,
    colour: bool | TissueColour = True,
) -> SegmentationPlan:
    """Plan the segmentation of an opened source by a loaded model.

    The work of :func:`plan_segmentation`, for callers that already hold the
    source and the model (``spec`` is the model's name or path, if any);
    ``align`` is :func:`~slide_unet.core.inference.tiling.make_grid`'s;
    ``colour`` may be the slide's colour measured before (Live measures it once).
    """
    mpp = check_mpp(mpp)  # before anything scales by it
    card = _card_of(net)
    base = source.levels[0]
    shape = (int(base.shape[0]), int(base.shape[1]))
    mode = _channel_mode(card, tuple(base.shape))
    if source.mpp and mpp and abs(source.mpp - mpp) > 0.01 * source.mpp:
        warnings.warn(
            f"the slide records {source.mpp:g} µm per pixel; mpp={mpp:g} is ignored",
            stacklevel=3,
        )
    input_mpp = source.mpp or mpp or card.default_input_mpp
    scale = 1.0
    if card.working_mpp:
        if input_mpp:
            scale = float(card.working_mpp) / float(input_mpp)
        else:
            warnings.warn(
                "the image's pixel size is unknown: running the model at the image's own "
                f"scale (it works at {card.working_mpp:g} µm per pixel); pass mpp= to resample",
                stacklevel=3,
            )
    level, downsample = _choose_level(source.levels, scale)
    box = check_region(region, shape)
    multiple = int(getattr(net, "multiple", 1))
    halo = int(getattr(net, "halo", 0))
    if tile is None:
        tile = _default_tile(card, halo, multiple, device)
    elif int(tile) % multiple or int(tile) <= 2 * halo:
        low = max(multiple, int(tile) // multiple * multiple)
        raise InputError(
            f"tile={tile} does not suit this model: tiles must be multiples of {multiple} "
            f"(2**depth) and larger than twice its halo of {halo} pixels, e.g. "
            f"{max(low, 2 * halo + 4 * multiple)} or more"
        )
    grid = make_grid(
        shape, box, scale=scale, tile=int(tile), halo=halo, multiple=multiple, align=align
    )
    blocks = grid.blocks()
    total = len(blocks)
    if tissue:
        found = tissue_mask(source.levels, mpp=input_mpp)
        if found is not None:
            blocks = [b for b in blocks if found.any_in(b.y0, b.y1, b.x0, b.x1)]
    top = _value_range(np.dtype(base.dtype))
    gain, shift = (1.0,) * card.in_channels, (0.0,) * card.in_channels
    matched = None
    if colour is not False and card.colour_reference and card.in_channels == 3:
        measured = colour if isinstance(colour, TissueColour) else None
        if measured is None:
            measured = slide_colour(source, input_mpp, card.colour_reference)
        if measured is not None:
            matched = gain, shift = colour_match(card.colour_reference, measured)
    return SegmentationPlan(
        source=source.path,
        image_shape=shape,
        level=level,
        level_shape=(int(source.levels[level].shape[0]), int(source.levels[level].shape[1])),
        level_downsample=downsample,
        input_mpp=float(input_mpp) if input_mpp else None,
        working_mpp=float(card.working_mpp) if card.working_mpp else None,
        scale=scale,
        region=box,
        grid=grid,
        blocks=tuple(blocks),
        total_blocks=total,
        model=spec,
        channel_mode=mode,
        # ((x / top) * gain + shift - mean) / std, as one multiply-add per channel.
        input_scale=tuple(g / (top * s) for g, s in zip(gain, card.std, strict=True)),
        input_offset=tuple(
            (b - m) / s for b, m, s in zip(shift, card.mean, card.std, strict=True)
        ),
        threshold=card.threshold if threshold is None else float(threshold),
        probabilities=bool(probabilities),
        tta=bool(tta),
        colour_gain=matched[0] if matched else None,
        colour_shift=matched[1] if matched else None,
        min_object_um2=0.0 if probabilities else card.min_object_um2,
    )


def plan_segmentation(
    source: Any,
    model: Any = "glomeruli",
    *,
    region: Sequence[int] | None = None,
    mpp: float | None = None,
    device: str | torch.device = "auto",
    tile: int | None = None,
    threshold: float | None = None,
    tissue: bool = True,
    probabilities: bool = False,
    tta: bool = False,
    colour: bool = True,
) -> SegmentationPlan:
    """Plan a segmentation without running it: level, scale, tiles, blocks to run.

    Parameters are those of :func:`segment`; ``device`` only sets the default
    tile size (larger on a GPU).

    Returns
    -------
    SegmentationPlan

    Raises
    ------
    InputError
        A bad region, tile or channel count, or an ``mpp`` outside
        :data:`~slide_unet.core.limits.MPP_RANGE` (the message names the
        value and the range); an unreadable file is a
        :class:`~slide_unet.core.errors.SlideError`, a bad model card a
        :class:`~slide_unet.core.errors.ModelError`.
    """
    dev = resolve_device(device)
    with open_source(source) as src:
        net, spec = load_model_spec(model, dev)
        return make_plan(
            src,
            net,
            spec,
            region=region,
            mpp=mpp,
            device=dev,
            tile=tile,
            threshold=threshold,
            tissue=tissue,
            probabilities=probabilities,
            tta=tta,
            colour=colour,
        )
