"""The colour of a model's training tissue, recorded in its card as ``colour_reference``.

The engine brings each slide's tissue colour to it
(:func:`slide_unet.core.inference.planning.colour_match`), so a slide from
another scanner or stain batch looks like the images the model learned from.
Measured like a slide (:func:`~slide_unet.core.slide.tissue.tissue_colour`: at
:data:`~slide_unet.core.slide.tissue.COLOUR_MPP`, over the pixels that are not
background): pooled over the training images, with the range of their colours
one by one for reference.

This module is part of the napari-free core.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from slide_unet.core.slide.tissue import TissueColour, tissue_colour
from slide_unet.core.training.data import TrainingImage

__all__ = ["colour_reference"]


def colour_reference(images: Sequence[TrainingImage], mpp: float | None) -> dict[str, Any] | None:
    """The card's ``colour_reference`` of ``images`` (at pixel size ``mpp``), or None
    when none of them is brightfield tissue."""
    parts = [tissue_colour(image.pixels, mpp=mpp) for image in images]
    found = [part for part in parts if part is not None]
    return TissueColour.pooled(found).to_card(found) if found else None
