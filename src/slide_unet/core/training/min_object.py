"""The smallest object a model should report, chosen by cross-validation.

A model's false positives on unseen slides are mostly specks: the glomeruli
model's on an empty HuBMAP tile are a few hundred µm², where the expert
glomeruli of its training tiles are thousands. Dropping objects below an
area removes them, but too large an area drops real objects cut by a tile's
edge. Which area helps is a question for images the model never saw, so it
is asked inside cross-validation: each fold's model segments the fold's
images once, and each candidate area is scored on them
(:func:`fold_scores`); the area whose mean Dice over every image is best is
the recipe's (:func:`choose`), and the card records it as
``validation.min_object_um2`` beside the whole table.

Candidates are fractions of the median expert object area of the images a
fold trained on (:data:`FRACTIONS`), so one grid serves glomeruli and any
other object; the shipped model's area is the chosen fraction of the median
over all its training images. Areas are in µm² at the model's working pixel
size: a recipe without one (images at their own, perhaps unknown, scale) has
no choice made.

This module is part of the napari-free core.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np
import torch
from scipy import ndimage

from slide_unet.core.inference.postprocess import drop_small_objects, min_pixels
from slide_unet.core.inference.segment import segment
from slide_unet.core.scoring.metrics import dice
from slide_unet.core.training.data import HeldOutImage, TrainingImage

__all__ = ["FRACTIONS", "MinObjectChoice", "choose", "fold_scores", "median_object_um2"]

#: Candidate minimum areas, as fractions of the median expert object area.
FRACTIONS = (0.0, 1 / 64, 1 / 32, 1 / 16, 1 / 8, 1 / 4)


def _key(fraction: float) -> str:
    return f"{fraction:.6g}"


def median_object_um2(images: Sequence[TrainingImage], working_mpp: float) -> float:
    """Median area (µm²) of the expert objects (8-connected) of masks at ``working_mpp``."""
    areas: list[np.ndarray] = []
    for image in images:
        labels, count = ndimage.label(image.mask, structure=np.ones((3, 3), bool))
        if count:
            areas.append(np.bincount(labels.ravel())[1:])
    if not areas:
        return 0.0
    return float(np.median(np.concatenate(areas))) * working_mpp * working_mpp


def fold_scores(
    model: torch.nn.Module, held: Sequence[HeldOutImage], median_um2: float
) -> dict[str, dict[str, float]]:
    """Each image's Dice with objects below each candidate area dropped.

    Returns ``{fraction: {stem: dice}}`` (fractions as their
    :data:`FRACTIONS` keys). Each image is segmented once, in fp32, as
    training validates.
    """
    device = next(model.parameters()).device
    table: dict[str, dict[str, float]] = {_key(f): {} for f in FRACTIONS}
    for item in held:
        mask = segment(
            item.pixels, model, region=item.region, mpp=item.mpp, device=device, precision="fp32"
        )
        for fraction in FRACTIONS:
            kept = mask.copy()
            drop_small_objects(kept, min_pixels(fraction * median_um2, item.mpp))
            table[_key(fraction)][item.stem] = round(dice(kept, item.truth), 4)
    return table


class MinObjectChoice:
    """The cross-validated table of candidate areas and the one chosen."""

    def __init__(self, table: Mapping[str, Mapping[str, float]], median_um2: float) -> None:
        #: ``{fraction: {stem: dice}}`` over every image of every fold.
        self.table = {k: dict(v) for k, v in table.items()}
        #: Median expert object area (µm²) of all the images the shipped model trains on.
        self.median_um2 = median_um2
        means = {k: float(np.mean(list(v.values()))) for k, v in self.table.items()}
        #: Mean Dice over images for each candidate fraction.
        self.means = means
        best = max(means.values())
        #: The smallest fraction with the best mean (ties go to keeping more).
        self.fraction = min((float(k) for k, m in means.items() if m == best))

    @property
    def min_object_um2(self) -> float:
        """The shipped model's minimum object area: the chosen fraction of the median."""
        return round(self.fraction * self.median_um2, 1)

    @property
    def mean_dice(self) -> float:
        return self.means[_key(self.fraction)]

    def card(self) -> dict[str, object]:
        """What the card's ``validation`` records of the choice."""
        return {
            "min_object_um2": self.min_object_um2,
            "min_object_choice": {
                "median_object_um2": round(self.median_um2, 1),
                "fraction_of_median": self.fraction,
                "mean_dice_by_fraction": {k: round(m, 4) for k, m in self.means.items()},
            },
        }


def choose(
    folds: Sequence[Mapping[str, Mapping[str, float]] | None], median_um2: float
) -> MinObjectChoice | None:
    """Pool the folds' tables and choose; None if a fold has no table (or none do)."""
    if not folds or any(f is None for f in folds):
        return None
    pooled: dict[str, dict[str, float]] = {}
    for table in folds:
        for key, scores in table.items():  # type: ignore[union-attr]
            pooled.setdefault(key, {}).update(scores)
    return MinObjectChoice(pooled, median_um2)
