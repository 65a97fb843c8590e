"""The colour of a model's training tissue, recorded in its card as ``colour_reference``.

The engine brings each slide's tissue colour to it
(:func:`slide_unet.core.inference.planning.colour_match`), so a slide from
another scanner or stain batch looks like the images the model learned from.
Measured like a slide (:func:`~slide_unet.core.slide.tissue.tissue_colour`: at
:data:`~slide_unet.core.slide.tissue.COLOUR_MPP`, over the pixels that are not
background): pooled over the training images, with the range of their colours
one by one for reference.

A model fine-tuned from one with a reference keeps it, so the engine matches
the user's slides to it: :func:`match_colours` brings the fine-tuning images
to it too, so the new weights learn the colours they will be shown.

This module is part of the napari-free core.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from typing import Any

import numpy as np

from slide_unet.core.inference.planning import colour_match
from slide_unet.core.slide.tissue import COLOUR_MPP, TissueColour, tissue_colour
from slide_unet.core.training.data import TrainingImage

__all__ = ["colour_reference", "match_colours"]


def colour_reference(images: Sequence[TrainingImage], mpp: float | None) -> dict[str, Any] | None:
    """The card's ``colour_reference`` of ``images`` (at pixel size ``mpp``), or None
    when none of them is brightfield tissue."""
    parts = [tissue_colour(image.pixels, mpp=mpp) for image in images]
    found = [part for part in parts if part is not None]
    return TissueColour.pooled(found).to_card(found) if found else None


def match_colours(
    images: Sequence[TrainingImage], reference: dict[str, Any], mpp: float | None
) -> tuple[list[TrainingImage], int]:
    """``images`` (at pixel size ``mpp``) with their colours brought to ``reference``
    as the engine brings a slide's (:func:`~slide_unet.core.inference.planning.colour_match`,
    each image measured on its own), and how many were changed: grey, fluorescence
    or near-empty images are left as they are, as the engine leaves them."""
    matched, changed = [], 0
    for image in images:
        found = tissue_colour(image.pixels, mpp=mpp, target_mpp=reference["mpp"] or COLOUR_MPP)
        if found is None:
            matched.append(image)
            continue
        gain, shift = colour_match(reference, found)
        pixels = image.pixels[..., :3].astype(np.float32) / 255.0 * np.float32(gain)
        pixels += np.float32(shift)
        pixels = (np.clip(pixels, 0.0, 1.0) * 255.0).round().astype(np.uint8)
        matched.append(dataclasses.replace(image, pixels=pixels))
        changed += 1
    return matched, changed
