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
   over images and the spread over folds are the recipe's figure; with a
   working pixel size, each fold's model also scores its images with small
   objects dropped at a few candidate areas
   (:mod:`~slide_unet.core.training.min_object`), and the best area over all
   the images is the recipe's minimum object area;
4. :func:`train_cross_validated` then trains the shipped model on every image
   with the same schedule and records that figure (and area, which
   ``segment`` then applies by default) in its card; the figure is what the
   widgets show.

That is ``k + 1`` trainings: hours on a CPU. Given the output's path, the run
can stop and go on (``slide-unet train --folds K --resume``): each finished
fold's scores are recorded beside the output (:func:`cv_record_path`, written
atomically, with the settings and folds they belong to), the fold under way
keeps its own resumable state (``OUTPUT.foldN.resume.safetensors``), and a
resumed run skips the folds recorded, resumes the one under way after its
last epoch, then the final training likewise. A resumed run gives the same
figure and weights as one never stopped (a fold's training resumes exactly).
The record and the folds' files are removed when the final model is saved.

This module is part of the napari-free core.
"""

from __future__ import annotations

import dataclasses
import json
import os
import tempfile
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from slide_unet.core.atomic import write_text_atomic
from slide_unet.core.errors import Cancel, Cancelled, InputError
from slide_unet.core.training.config import TrainingConfig
from slide_unet.core.training.data import load_images
from slide_unet.core.training.image_pairs import ImagePair
from slide_unet.core.training.min_object import (
    MinObjectChoice,
    choose,
    fold_scores,
    median_object_um2,
)
from slide_unet.core.training.train import TrainingResult, resume_path, train

__all__ = [
    "CrossValidation",
    "cross_validate",
    "cv_record_path",
    "image_folds",
    "train_cross_validated",
]


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
    min_object_tables : list of dict or None
        Each fold's minimum-area table
        (:func:`~slide_unet.core.training.min_object.fold_scores`), None for a
        fold without one.
    """

    folds: list[list[str]]
    per_image: dict[str, float]
    fold_dice: list[float]
    seed: int
    min_object_tables: list[dict[str, dict[str, float]] | None] = field(default_factory=list)

    def min_object(self, median_um2: float) -> MinObjectChoice | None:
        """The minimum object area these folds choose, as a fraction of ``median_um2``
        (None unless every fold has a table)."""
        return choose(self.min_object_tables, median_um2)

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


def cv_record_path(out: str | os.PathLike[str]) -> Path:
    """Where cross-validating for ``out`` records each finished fold's scores."""
    state = resume_path(out)  # a bare name resolves to the user models folder
    return state.with_name(state.name.removesuffix(".resume.safetensors") + ".cv.json")


def _fold_path(out: str | os.PathLike[str], fold: int) -> Path:
    """The weights of fold ``fold`` (from 1) while it trains: ``OUTPUT.foldN.safetensors``."""
    state = resume_path(out)
    return state.with_name(
        state.name.removesuffix(".resume.safetensors") + f".fold{fold}.safetensors"
    )


def _read_record(path: Path, settings: dict[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
    """The finished folds' scores and minimum-area tables in ``path``, checked to be of
    these settings."""
    if not path.exists():
        raise InputError(f"nothing to resume: {path} does not exist")
    try:
        record = json.loads(path.read_text())
        done = {str(i): dict(scores) for i, scores in record["done"].items()}
        tables = {str(i): dict(table) for i, table in record.get("min_object", {}).items()}
    except (OSError, ValueError, KeyError, TypeError, AttributeError) as error:
        raise InputError(f"{path} cannot be read ({error}): run again without --resume") from None
    if record.get("settings") != settings:
        raise InputError(f"{path} was written with other settings: resume with the same ones")
    return done, tables


def cross_validate(
    pairs: Sequence[ImagePair],
    config: TrainingConfig,
    k: int,
    *,
    out: str | os.PathLike[str] | None = None,
    resume: bool = False,
    say: Callable[[str], None] | None = None,
    progress: Callable[[int, dict[str, Any]], None] | None = None,
    cancel: Cancel | None = None,
    match_colour: bool = False,
) -> CrossValidation:
    """Train ``k`` models on ``k - 1`` folds each and score each on the one it left out.

    Parameters
    ----------
    pairs : sequence of ImagePair
    config : TrainingConfig
        The recipe; its ``validation_images`` and ``keep`` are set per fold.
    k : int
        Number of folds (2 up to the number of images).
    out : path-like, optional
        The output the cross-validation is for: the folds' progress is kept
        beside it (see the module's docstring), so that ``resume`` can go on.
        None: the folds train in a temporary folder and cannot be resumed.
    resume : bool
        Skip the folds recorded beside ``out`` and resume the one under way.
    say : callable, optional
        One-line messages (the fold under way, its score).
    progress : callable, optional
        ``progress(fold, record)`` with each epoch's record of each fold's training.
    cancel : callable or threading.Event, optional
        Stops the fold under way and raises :class:`~slide_unet.core.errors.Cancelled`.
    match_colour : bool
        As for :func:`~slide_unet.core.training.train.train` (each fold's own
        training images give its reference).

    Raises
    ------
    InputError
        ``resume`` with nothing recorded, or recorded with other settings.
    """
    say = say or (lambda _: None)
    folds = image_folds([p.stem for p in pairs], k, config.seed)
    settings = json.loads(json.dumps({"config": config.to_dict(), "folds": folds}))
    record = cv_record_path(out) if out is not None else None
    done: dict[str, dict[str, float]] = {}
    tables: dict[str, Any] = {}  # each fold's minimum-area table (see min_object)
    if resume:
        if record is None:
            raise InputError("resuming a cross-validation needs its output's path")
        under_way = [resume_path(_fold_path(out, j + 1)).exists() for j in range(k)]  # type: ignore[arg-type]
        if record.exists() or not any(under_way):
            done, tables = _read_record(record, settings)
    elif record is not None:
        record.unlink(missing_ok=True)  # another run's: this one starts afresh
    per_image: dict[str, float] = {}
    fold_dice: list[float] = []
    for i, fold in enumerate(folds):
        if str(i + 1) in done:
            scores = done[str(i + 1)]
            say(f"fold {i + 1}/{k}: done before, Dice {np.mean(list(scores.values())):.4f}")
        else:
            say(f"fold {i + 1}/{k}: holding out {', '.join(fold)}")
            scores, table = _train_fold(
                pairs, config, fold, i, out, resume, say, progress, cancel, match_colour
            )
            done[str(i + 1)] = scores
            if table is not None:
                tables[str(i + 1)] = table
            if out is not None:
                write_text_atomic(
                    record,
                    json.dumps({"settings": settings, "done": done, "min_object": tables}),
                )
                spent = _fold_path(out, i + 1)  # scored: the fold's model is not needed
                spent.unlink(missing_ok=True)
                spent.with_name(spent.name.removesuffix(".safetensors") + ".json").unlink(
                    missing_ok=True
                )
            dice = np.mean(list(scores.values()))
            say(f"fold {i + 1}/{k}: Dice {dice:.4f} on {len(scores)} unseen images")
        per_image.update(scores)
        fold_dice.append(float(np.mean(list(scores.values()))))
    by_fold = [tables.get(str(i + 1)) for i in range(k)]
    return CrossValidation(folds, per_image, fold_dice, config.seed, by_fold)


def _train_fold(
    pairs: Sequence[ImagePair],
    config: TrainingConfig,
    fold: list[str],
    index: int,
    out: str | os.PathLike[str] | None,
    resume: bool,
    say: Callable[[str], None],
    progress: Callable[[int, dict[str, Any]], None] | None,
    cancel: Cancel | None,
    match_colour: bool,
) -> tuple[dict[str, float], dict[str, dict[str, float]] | None]:
    """Train without ``fold``; its images' Dice, and their minimum-area table
    (:func:`~slide_unet.core.training.min_object.fold_scores`; None without a
    working pixel size)."""
    fold_config = dataclasses.replace(config, validation_images=tuple(fold), keep="last")
    watch = None if progress is None else (lambda r: progress(index, r))
    with tempfile.TemporaryDirectory(prefix="slide-unet-cv-") as tmp:
        if out is None:
            target = Path(tmp) / f"fold{index + 1}.safetensors"
        else:
            target = _fold_path(out, index + 1)
        again = resume and resume_path(target).exists()
        result = train(
            pairs,
            fold_config,
            target,
            resume=again,
            say=say,
            progress=watch,
            cancel=cancel,
            match_colour=match_colour,
        )
    if result.stopped != "finished":
        more = "" if out is None else ": run it again with --resume to go on from here"
        raise Cancelled(f"cross-validation cancelled{more}")
    scores = {str(s): float(d) for s, d in result.card.validation["per_image"].items()}
    table = None
    if config.working_mpp:
        images, held = load_images(pairs, fold_config, lambda _: None)
        median = median_object_um2(images, config.working_mpp)
        table = fold_scores(result.model, held, median)
    return scores, table


def train_cross_validated(
    pairs: Sequence[ImagePair],
    config: TrainingConfig,
    out: str | os.PathLike[str],
    k: int,
    *,
    say: Callable[[str], None] | None = None,
    progress: Callable[[int, dict[str, Any]], None] | None = None,
    cancel: Cancel | None = None,
    resume: bool = False,
    **card: Any,
) -> tuple[TrainingResult, CrossValidation]:
    """Cross-validate the recipe, then train on every image and save with that figure.

    ``progress`` gets ``(fold, record)``; the final model's fold is ``k``.
    ``resume`` goes on with a run stopped before (see the module's docstring).
    ``card`` passes ``command``, ``data``, ``licence`` and ``match_colour`` on
    to :func:`~slide_unet.core.training.train.train` (``match_colour`` to the
    folds' trainings too). The card's ``min_object_um2`` is the area the folds
    chose (:mod:`~slide_unet.core.training.min_object`), when they chose one.
    """
    found = cross_validate(
        pairs,
        config,
        k,
        out=out,
        resume=resume,
        say=say,
        progress=progress,
        cancel=cancel,
        match_colour=bool(card.get("match_colour")),
    )
    if say is not None:
        say(
            f"cross-validated Dice {found.mean_dice:.4f} (sd {found.fold_sd:.4f} over "
            f"{k} folds); training on all {len(pairs)} images"
        )
    final = dataclasses.replace(config, validation_images=(), keep="last")
    validation = found.card_validation()
    area = None
    if config.working_mpp and found.min_object_tables:
        images, _ = load_images(pairs, final, lambda _: None)
        choice = found.min_object(median_object_um2(images, config.working_mpp))
        if choice is not None:
            validation.update(choice.card())
            area = choice.min_object_um2
            if say is not None:
                say(
                    f"minimum object area {choice.min_object_um2:g} µm² "
                    f"({choice.fraction:g} of the median expert object): Dice "
                    f"{choice.mean_dice:.4f} on the folds' images"
                )
    result = train(
        pairs,
        final,
        out,
        resume=resume and resume_path(out).exists(),
        say=say,
        progress=None if progress is None else (lambda r: progress(k, r)),
        cancel=cancel,
        validation=validation,
        min_object_um2=area,
        **card,
    )
    if result.stopped == "finished":
        cv_record_path(out).unlink(missing_ok=True)
    return result, found
