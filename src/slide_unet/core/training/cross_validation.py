"""K-fold cross-validation over whole images: the honest figure of a training recipe.

With a handful of annotated images, the best epoch's Dice on three held-out
tiles says more about those tiles than about the next slide (the glomeruli
card said 0.931; six unseen tiles gave 0.731). Here the recipe, not an
epoch, is what is judged:

1. the images are dealt into ``k`` folds, whole images each (a seeded
   shuffle; fold sizes differ by at most one);
2. for each fold, a model is trained on the other folds with the fixed
   schedule (:attr:`TrainingConfig.keep` ``"last"``: no epoch is picked by
   its score) and scores the fold's images through the engine
   (:func:`~slide_unet.core.training.train.validate`, fp32);
3. every image is thus scored once, by a model that never saw it: the mean
   over images and the spread over folds are the recipe's figure;
4. :func:`train_cross_validated` then trains the shipped model on every image
   with the same schedule and records that figure in its card, which is what
   the widgets show.

This module is part of the napari-free core.
"""

from __future__ import annotations

import dataclasses
import os
import tempfile
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from slide_unet.core.errors import Cancel, Cancelled, InputError
from slide_unet.core.training.config import TrainingConfig
from slide_unet.core.training.image_pairs import ImagePair
from slide_unet.core.training.train import TrainingResult, train

__all__ = ["CrossValidation", "cross_validate", "image_folds", "train_cross_validated"]


def image_folds(stems: Sequence[str], k: int, seed: int) -> list[list[str]]:
    """Deal whole images into ``k`` folds: a seeded shuffle, sizes within one.

    Raises
    ------
    InputError
        ``k`` below 2, or more folds than images.
    """
    if not 2 <= k <= len(stems):
        raise InputError(
            f"cross-validation needs from 2 to {len(stems)} folds for {len(stems)} images, got {k}"
        )
    if len(set(stems)) != len(stems):
        raise InputError("two images share a name: stems must be unique")
    order = sorted(stems)
    np.random.default_rng(seed).shuffle(order)
    return [sorted(order[i::k]) for i in range(k)]


@dataclass(frozen=True)
class CrossValidation:
    """What a recipe scored on images its models never saw.

    Attributes
    ----------
    folds : list of list of str
        The stems of each fold.
    per_image : dict of str to float
        Each image's Dice, from the model trained without its fold.
    fold_dice : list of float
        Mean Dice of each fold.
    seed : int
    """

    folds: list[list[str]]
    per_image: dict[str, float]
    fold_dice: list[float]
    seed: int

    @property
    def k(self) -> int:
        return len(self.folds)

    @property
    def mean_dice(self) -> float:
        """Mean over images (each scored once, by a model that never saw it)."""
        return float(np.mean(list(self.per_image.values())))

    @property
    def fold_sd(self) -> float:
        """Standard deviation of the folds' mean Dice (ddof 1): how much it moves."""
        return float(np.std(self.fold_dice, ddof=1))

    def card_validation(self) -> dict[str, Any]:
        """The card's ``validation`` mapping: the figure the widgets show."""
        return {
            "mean_dice": round(self.mean_dice, 4),
            "sd_over_folds": round(self.fold_sd, 4),
            "fold_dice": [round(d, 4) for d in self.fold_dice],
            "per_image": {s: round(d, 4) for s, d in sorted(self.per_image.items())},
            "n_images": len(self.per_image),
            "precision": "fp32",
            "split": f"{self.k}-fold cross-validation over whole images, seed {self.seed}; "
            "each image scored by the model trained without its fold, the last epoch of the "
            "fixed schedule",
            "folds": self.folds,
        }


def cross_validate(
    pairs: Sequence[ImagePair],
    config: TrainingConfig,
    k: int,
    *,
    say: Callable[[str], None] | None = None,
    progress: Callable[[int, dict[str, Any]], None] | None = None,
    cancel: Cancel | None = None,
) -> CrossValidation:
    """Train ``k`` models on ``k - 1`` folds each and score each on the one it left out.

    Parameters
    ----------
    pairs : sequence of ImagePair
    config : TrainingConfig
        The recipe; its ``validation_images`` and ``keep`` are set per fold.
    k : int
        Number of folds (2 up to the number of images).
    say : callable, optional
        One-line messages (the fold under way, its score).
    progress : callable, optional
        ``progress(fold, record)`` with each epoch's record of each fold's training.
    cancel : callable or threading.Event, optional
        Stops the fold under way and raises :class:`~slide_unet.core.errors.Cancelled`.
    """
    say = say or (lambda _: None)
    folds = image_folds([p.stem for p in pairs], k, config.seed)
    per_image: dict[str, float] = {}
    fold_dice: list[float] = []
    for i, fold in enumerate(folds):
        say(f"fold {i + 1}/{k}: holding out {', '.join(fold)}")
        fold_config = dataclasses.replace(config, validation_images=tuple(fold), keep="last")
        with tempfile.TemporaryDirectory(prefix="slide-unet-cv-") as tmp:
            result = train(
                pairs,
                fold_config,
                Path(tmp) / f"fold{i + 1}.safetensors",
                say=say,
                progress=None if progress is None else (lambda r, i=i: progress(i, r)),
                cancel=cancel,
            )
        if result.stopped != "finished":
            raise Cancelled("cross-validation cancelled")
        scores = result.card.validation["per_image"]
        per_image.update(scores)
        fold_dice.append(float(np.mean(list(scores.values()))))
        say(f"fold {i + 1}/{k}: Dice {fold_dice[-1]:.4f} on {len(scores)} unseen images")
    return CrossValidation(folds, per_image, fold_dice, config.seed)


def train_cross_validated(
    pairs: Sequence[ImagePair],
    config: TrainingConfig,
    out: str | os.PathLike[str],
    k: int,
    *,
    say: Callable[[str], None] | None = None,
    progress: Callable[[int, dict[str, Any]], None] | None = None,
    cancel: Cancel | None = None,
    **card: Any,
) -> tuple[TrainingResult, CrossValidation]:
    """Cross-validate the recipe, then train on every image and save with that figure.

    ``progress`` gets ``(fold, record)``; the final model's fold is ``k``.
    ``card`` passes ``command``, ``data`` and ``licence`` on to
    :func:`~slide_unet.core.training.train.train`.
    """
    found = cross_validate(pairs, config, k, say=say, progress=progress, cancel=cancel)
    if say is not None:
        say(
            f"cross-validated Dice {found.mean_dice:.4f} (sd {found.fold_sd:.4f} over "
            f"{k} folds); training on all {len(pairs)} images"
        )
    final = dataclasses.replace(config, validation_images=(), keep="last")
    result = train(
        pairs,
        final,
        out,
        say=say,
        progress=None if progress is None else (lambda r: progress(k, r)),
        cancel=cancel,
        validation=found.card_validation(),
        **card,
    )
    return result, found
