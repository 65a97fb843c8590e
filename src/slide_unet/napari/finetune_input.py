"""What the Fine-tune widget trains on, checked on the main thread before a run.

An image layer with its corrected Labels layer, optionally restricted by a
Shapes layer to the regions the user corrected (each shape counts as its
bounding box in the image's full-resolution pixels), becomes a
:class:`LayerPair`: the arrays and the window of them to read, which the
worker reads into a core ``ArrayPair``. Memory is bounded: a pair is read
whole only when it has at most :data:`MAX_PIXELS` pixels; a larger image (a
whole slide) needs regions, and then only their bounding area is read.

The new model's name is checked here too, so a run never trains for minutes
and then fails to save.
"""

from __future__ import annotations

import dataclasses
import datetime
import re
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from slide_unet.core.errors import InputError
from slide_unet.napari.layers import full_resolution, layer_by_name, layer_mpp

if TYPE_CHECKING:
    from slide_unet.core.training.finetune import ArrayPair

__all__ = [
    "MAX_PIXELS",
    "LayerPair",
    "check_new_name",
    "default_model_name",
    "layer_pair",
    "layer_pairs",
    "megapixels",
    "shape_boxes",
]

#: Most image pixels (all pairs together) read into memory for one run.
MAX_PIXELS = 64 * 2**20
Box = tuple[int, int, int, int]
_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]*")
_FINETUNED = re.compile(r"-finetuned-\d{4}-\d{2}-\d{2}(-\d+)?$")


def default_model_name(base: str, taken: set[str], today: datetime.date | None = None) -> str:
    """``<base>-finetuned-<date>``, with ``-2``, ``-3``... when that name is taken.

    A base that is itself a fine-tuned model loses its own suffix first, so
    names do not grow with each round.
    """
    root = _FINETUNED.sub("", base) or "model"
    name = f"{root}-finetuned-{(today or datetime.date.today()).isoformat()}"
    candidate, n = name, 1
    while candidate in taken:
        n += 1
        candidate = f"{name}-{n}"
    return candidate


def check_new_name(name: str, taken: set[str]) -> str:
    """The new model's name, stripped; ValueError when it cannot be saved under it."""
    name = name.strip()
    if not name:
        raise InputError("give the new model a name")
    from slide_unet.core.model.store import bundled_names

    if name in bundled_names():
        raise InputError(
            f"{name!r} is a bundled model: bundled models are never overwritten, "
            "give the fine-tuned model another name"
        )
    if not _NAME.fullmatch(name):
        raise InputError(
            f"{name!r} is not a usable model name: use letters, digits, '.', '_' and '-', "
            "starting with a letter or digit"
        )
    if name in taken:
        raise InputError(f"a model named {name!r} exists already: give the new one another name")
    return name


def shape_boxes(shapes: Any, image: Any) -> list[Box]:
    """Each shape of a Shapes layer as its bounding box in ``image``'s full-resolution pixels.

    Vertices go from the shapes' data to world to the image's data
    coordinates, so layers with different scales or translations line up as
    they do on screen. Boxes are clipped to the image; shapes outside it are
    left out.
    """
    height, width = full_resolution(image).shape[:2]
    boxes = []
    for vertices in shapes.data:
        points = np.array(
            [image.world_to_data(shapes.data_to_world(v)) for v in np.asarray(vertices)]
        )[:, -2:]
        y0, x0 = np.floor(points.min(axis=0)).astype(int)
        y1, x1 = np.ceil(points.max(axis=0)).astype(int)
        y0, x0 = max(int(y0), 0), max(int(x0), 0)
        y1, x1 = min(int(y1), height), min(int(x1), width)
        if y1 > y0 and x1 > x0:
            boxes.append((y0, y1, x0, x1))
    return boxes


@dataclass(frozen=True)
class LayerPair:
    """An image layer's pixels and its corrected mask, as they will be read.

    Attributes
    ----------
    stem : str
        The pair's name (the image layer's).
    image, mask : array-like
        Full-resolution pixels (numpy, dask or zarr): ``YX`` or ``YXC``, and ``YX``.
    window : tuple of int
        ``(y0, y1, x0, x1)``: the part read (all of it, or the regions' bounding area).
    regions : tuple of boxes
        Corrected regions inside ``window``, in its own coordinates.
    mpp : float or None
        The image's pixel size in µm.
    """

    stem: str
    image: Any
    mask: Any
    window: Box
    regions: tuple[Box, ...]
    mpp: float | None

    @property
    def pixels(self) -> int:
        y0, y1, x0, x1 = self.window
        return (y1 - y0) * (x1 - x0)

    def read(self) -> ArrayPair:
        """Read the window into memory (in the worker thread)."""
        from slide_unet.core.training.finetune import ArrayPair

        y0, y1, x0, x1 = self.window
        image = np.asarray(self.image[y0:y1, x0:x1])
        if image.ndim == 3 and image.shape[2] == 4:  # RGBA: drop alpha
            image = image[..., :3]
        mask = (np.asarray(self.mask[y0:y1, x0:x1]) != 0).astype(np.uint8)
        return ArrayPair(self.stem, image, mask, mpp=self.mpp, regions=self.regions)


def layer_pair(
    viewer: Any, image_name: str | None, mask_name: str | None, shapes_name: str | None
) -> LayerPair:
    """Check an image layer, its Labels layer and optional Shapes layer; return what to read.

    Raises
    ------
    ValueError
        A layer is missing or gone, the image is not 2D, the mask's shape is
        not the image's, the Shapes layer has nothing over the image, or the
        image is too large to read whole and no regions restrict it.
    """
    image = layer_by_name(viewer, image_name)
    if image is None:
        raise InputError(
            "no image layer: open the image the mask was made on (File > Open)"
            if not image_name
            else f"the image layer {image_name!r} is gone"
        )
    mask = layer_by_name(viewer, mask_name)
    if mask is None:
        raise InputError(
            "no Labels layer: segment the image (Segment widget) and correct the mask first"
            if not mask_name
            else f"the Labels layer {mask_name!r} is gone"
        )
    pixels, labels = full_resolution(image), full_resolution(mask)
    two_d = pixels.ndim == 2 or (pixels.ndim == 3 and image.rgb)
    if not two_d:
        raise InputError(
            f"the image layer {image.name!r} has shape {tuple(pixels.shape)}: expected a 2D "
            "image (gray Y x X, or RGB)"
        )
    height, width = pixels.shape[:2]
    if tuple(labels.shape) != (height, width):
        raise InputError(
            f"the Labels layer {mask.name!r} is {' x '.join(map(str, labels.shape))} px but "
            f"the image {image.name!r} is {height} x {width}: pick the whole mask made on "
            "this image"
        )
    regions: list[Box] = []
    if shapes_name:
        shapes = layer_by_name(viewer, shapes_name)
        if shapes is None:
            raise InputError(f"the Shapes layer {shapes_name!r} is gone")
        regions = shape_boxes(shapes, image)
        if not regions:
            raise InputError(
                f"the Shapes layer {shapes.name!r} has no shape over the image {image.name!r}: "
                "draw rectangles around the parts you corrected"
            )
    window: Box = (0, height, 0, width)
    if height * width > MAX_PIXELS:
        if not regions:
            raise InputError(
                f"the image {image.name!r} is {height} x {width} px "
                f"({megapixels(height * width)}), too large to fine-tune on whole (at most "
                f"{megapixels(MAX_PIXELS)}): draw rectangles around the corrected parts on a "
                "Shapes layer and pick it as Regions"
            )
        ys0, ys1, xs0, xs1 = zip(*regions, strict=True)
        window = (min(ys0), max(ys1), min(xs0), max(xs1))
        y0, _, x0, _ = window
        regions = [(a - y0, b - y0, c - x0, d - x0) for a, b, c, d in regions]
    pair = LayerPair(image.name, pixels, labels, window, tuple(regions), layer_mpp(image))
    if pair.pixels > MAX_PIXELS:
        wy, wx = window[1] - window[0], window[3] - window[2]
        raise InputError(
            f"the regions on {image.name!r} span {wy} x {wx} px ({megapixels(pair.pixels)}), more "
            f"than the {megapixels(MAX_PIXELS)} read at once: draw them closer together, or add "
            "them as separate pairs"
        )
    return pair


def layer_pairs(viewer: Any, listed: list[tuple[str | None, ...]]) -> list[LayerPair]:
    """:func:`layer_pair` of each ``(image, Labels, Shapes or None)`` layer-name triple.

    Stems are made unique (one image may come with several region sets).

    Raises
    ------
    ValueError
        As :func:`layer_pair`, or when the pairs add up to more than
        :data:`MAX_PIXELS`.
    """
    pairs: list[LayerPair] = []
    seen: dict[str, int] = {}
    for names in listed:
        pair = layer_pair(viewer, *names)
        n = seen[pair.stem] = seen.get(pair.stem, 0) + 1
        if n > 1:
            pair = dataclasses.replace(pair, stem=f"{pair.stem}-{n}")
        pairs.append(pair)
    total = sum(pair.pixels for pair in pairs)
    if total > MAX_PIXELS:
        raise InputError(
            f"the pairs add up to {megapixels(total)}, more than the {megapixels(MAX_PIXELS)} "
            "read at once: use fewer pairs or restrict them to regions"
        )
    return pairs


def megapixels(pixels: int) -> str:
    """``pixels`` in words (``"64 MP"``)."""
    return f"{pixels / 2**20:.0f} MP"
