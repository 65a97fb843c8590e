"""Fine-tune a model on corrected masks: a lab adapts it to its own stain and scanner.

:func:`finetune` starts from a bundled or user model (or one already loaded),
trains it on image/mask pairs through the same loop as the bundled models
(:func:`~slide_unet.core.training.train.train`), and saves the best weights as a new
model whose card names its parent. The base model's architecture,
normalisation, working pixel size and tile are kept.

The data
    Files (:class:`~slide_unet.core.training.image_pairs.ImagePair`, from
    :func:`~slide_unet.core.training.image_pairs.find_pairs`) and arrays in memory
    (:class:`ArrayPair`, e.g. napari layers) mix freely. An ``ArrayPair`` may
    list the boxes the user corrected: half of its patches are centred inside
    them, and a held-out image is scored inside them only
    (:mod:`slide_unet.core.training.data` has the details).

Validation
    By image when there are two images or more (seeded, ``val_fraction`` of
    them). A lone image (the usual case in the widget) is split by region: a
    band across one end holding about ``val_fraction`` of its corrected boxes'
    area (of its area when it has none) is held out, and training patches come
    only from the rest (:func:`~slide_unet.core.training.data.split_one_image`).
    A held-out band or box is segmented in place, the rest of its image around
    it as context, and only it is scored, so its Dice is what the same part
    of a whole-image segmentation scores.
    The base model is scored first (``before_dice``, history epoch 0), then
    after every epoch; the best weights are kept, so ``after_dice`` is never
    below ``before_dice``: when no epoch beats the base model, the saved model
    has its weights.

Time budget
    ``minutes`` covers the whole call, from loading the base model to saving
    the new one: the steps stop early enough for the last validation and the
    saves to fit (:class:`~slide_unet.core.training.budget.TimeBudget`, which
    plans with the durations measured so far in the run, and a margin).

Never overwritten
    Bundled weights: ``out`` may not be a bundled model's name nor a file in the
    bundled models folder. Nor the base model's own file, nor (for a model
    passed already loaded) the caller's module, which is copied first.

This module is part of the napari-free core.
"""

from __future__ import annotations

import copy
import dataclasses
import os
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from slide_unet.core.errors import Cancel, InputError, ModelError
from slide_unet.core.model.card import ModelCard
from slide_unet.core.model.unet import UNet
from slide_unet.core.training.image_pairs import ArrayPair, ImagePair

__all__ = ["ArrayPair", "FinetuneResult", "finetune"]

#: Steps between validations: a point on the loss curve about every minute on a 2-core CPU.
STEPS_PER_EPOCH = 20

#: Patch side when the base model's card records none it was trained at.
DEFAULT_PATCH = 256


@dataclass
class FinetuneResult:
    """What fine-tuning produced.

    Attributes
    ----------
    model : UNet
        The kept weights, in eval mode on the CPU, with their card as ``.card``.
    card : ModelCard
        As saved (``parent`` names the base model).
    path : Path
        The saved ``.safetensors`` file (its card is beside it).
    before_dice : float
        Mean validation Dice of the base model.
    after_dice : float
        Mean validation Dice of the kept (best) weights.
    history : list of dict
        One record per epoch, as :func:`~slide_unet.core.training.train.train`
        reports them (``epoch``, ``step``, ``loss``, ``val_dice``,
        ``best_dice``, ``lr``, ``seconds``); the first, epoch 0, is the base
        model's validation (``epoch``, ``step``, ``val_dice`` only).
    stopped : str
        ``"finished"`` (epochs or minutes used up) or ``"cancelled"``.
    """

    model: UNet
    card: ModelCard
    path: Path
    before_dice: float
    after_dice: float
    history: list[dict[str, Any]]
    stopped: str


def _base_model(model: str | os.PathLike[str] | UNet) -> tuple[UNet, Path | None]:
    """The model to start from (a private copy) and its weights file, if any."""
    from slide_unet.core.model.store import load_model, locate_model

    if isinstance(model, torch.nn.Module):
        if not isinstance(model, UNet) or not isinstance(getattr(model, "card", None), ModelCard):
            raise ModelError(
                f"a {type(model).__name__} passed as the base model must be a UNet carrying "
                "its ModelCard as .card (load it with load_model)"
            )
        # Training changes weights (and device) in place: never the caller's module.
        base = copy.deepcopy(model).cpu()
        base.card = model.card
        return base, None
    weights, _ = locate_model(model)
    return load_model(model), weights.resolve()


def _destination(out: str | os.PathLike[str], card: ModelCard, base_file: Path | None) -> str:
    """The new model's name; refuses, before any training, an ``out`` it may not write."""
    from slide_unet.core.model.store import (
        bundled_models_dir,
        bundled_names,
        is_bare_name,
        model_files,
        save_destination,
    )

    text = os.fspath(out)
    if not text:
        raise InputError("give the fine-tuned model a name or a file to be saved as")
    bundled = bundled_names()
    if is_bare_name(text) and text in bundled:
        raise InputError(
            f"{text!r} is a bundled model: bundled models are never overwritten; name the "
            f"fine-tuned model something else (bundled: {', '.join(bundled)})"
        )
    weights = model_files(Path(text).expanduser())[0]
    if not is_bare_name(text) and weights.parent.resolve() == bundled_models_dir().resolve():
        raise InputError(
            f"{text}: that is the bundled models folder, whose weights are never modified; "
            "save under a bare name (the user's models folder) or elsewhere"
        )
    if not is_bare_name(text) and not weights.parent.is_dir():
        raise InputError(f"{text}: the folder {weights.parent} does not exist")
    name = weights.name.removesuffix(".safetensors").removesuffix(".json")
    # The checks save_model makes (a usable name, no bundled name in the user's
    # folder), made now rather than after minutes of training.
    target, _ = save_destination(text, dataclasses.replace(card, name=name))
    if target.resolve() == base_file or (base_file is None and name == card.name):
        raise InputError(
            f"{text!r} is the model being fine-tuned: save the result under a new name "
            "(the base model is kept as it is)"
        )
    return name


def _patch(card: ModelCard, patch: int | None) -> int:
    """The patch side: given, else what the base model trained at, else its tile, capped."""
    if patch is not None:
        return patch
    trained = card.training.get("config", {}).get("patch") if card.training else None
    if isinstance(trained, int) and trained > 0:
        return trained
    multiple = 2 ** int(card.parameters.get("depth", 4))
    return max(multiple, min(card.tile, DEFAULT_PATCH) // multiple * multiple)


def _describe(pairs: Sequence[ImagePair | ArrayPair]) -> dict[str, Any]:
    """Facts about the data for the card (never the pixels)."""
    files = [p for p in pairs if isinstance(p, ImagePair)]
    arrays = [p for p in pairs if isinstance(p, ArrayPair)]
    data: dict[str, Any] = {"pairs": len(pairs)}
    if files:
        data["images"] = sorted({str(p.image.parent) for p in files})
        data["masks"] = sorted({str(p.mask.parent) for p in files})
    if arrays:
        data["in_memory"] = [p.stem for p in arrays]
        regions = {p.stem: [list(r) for r in p.regions] for p in arrays if p.regions}
        if regions:
            data["regions"] = regions
    return data


def _check_pairs(pairs: Sequence[Any]) -> list[ImagePair | ArrayPair]:
    pairs = list(pairs)
    if not pairs:
        raise InputError("no images to fine-tune on: give at least one image and its mask")
    wrong = [type(p).__name__ for p in pairs if not isinstance(p, ImagePair | ArrayPair)]
    if wrong:
        raise TypeError(
            f"pairs must be ImagePair or ArrayPair, got {', '.join(sorted(set(wrong)))}"
        )
    return pairs


def finetune(
    model: str | os.PathLike[str] | UNet,
    pairs: Sequence[ImagePair | ArrayPair],
    out: str | os.PathLike[str],
    *,
    minutes: float | None = 10.0,
    epochs: int | None = None,
    mpp: float | None = None,
    learning_rate: float = 3e-4,
    batch_size: int = 8,
    patch: int | None = None,
    val_fraction: float = 0.2,
    seed: int = 0,
    device: str = "auto",
    precision: str = "auto",
    command: str | None = None,
    progress: Callable[[dict[str, Any]], None] | None = None,
    losses: Callable[[dict[str, Any]], None] | None = None,
    say: Callable[[str], None] | None = None,
    cancel: Cancel | None = None,
) -> FinetuneResult:
    """Fine-tune a model on images and corrected masks, and save it as a new model.

    Parameters
    ----------
    model : str, os.PathLike or UNet
        The base model: a bundled or user model name, a model file, or a
        loaded model with its ``.card`` (copied, never changed).
    pairs : sequence of ImagePair or ArrayPair
        Images and their (corrected) masks; arrays may list the corrected
        boxes. Stems must be unique.
    out : str or os.PathLike
        A bare name (saved among the user's models, so it can be picked by
        name at once) or a path ``X`` / ``X.safetensors`` (with ``X.json``).
    minutes : float or None
        Time budget for the whole call: loading, the base model's validation,
        training, the last validation and the save. The steps stop early
        enough for the last epoch to be scored and saved in time. None:
        ``epochs`` only.
    epochs : int or None
        Number of epochs of :data:`STEPS_PER_EPOCH` steps; with ``minutes``
        too, whichever ends first.
    mpp : float, optional
        Pixel size (µm) of images that do not record one (default: the base
        card's ``default_input_mpp``). Needed when the model has a working
        pixel size.
    learning_rate : float
        Peak AdamW learning rate (warm-up, then cosine decay).
    batch_size : int
    patch : int, optional
        Patch side at the working scale, a multiple of ``2**depth``. Default:
        the patch the base model was trained at, else its tile up to 256.
    val_fraction : float
        Share of the images (or of a lone image's corrected area) held out.
    seed : int
        Seeds the split, patches and augmentation.
    device, precision : str
        As for :func:`~slide_unet.core.training.train.train` (``"auto"`` picks the
        GPU and bf16 where they help). Validation always runs in fp32.
    command : str, optional
        Recorded in the card (the CLI passes its command line).
    progress : callable, optional
        Called with each record of :attr:`FinetuneResult.history` as it is
        made: the base model's (epoch 0) once it is scored, then each epoch's.
    losses : callable, optional
        Called every :data:`~slide_unet.core.training.train.LOSS_EVERY` steps with
        ``{"epoch", "step", "loss"}`` (the mean loss of those steps), so a
        curve can move between validations.
    say : callable, optional
        Receives one-line messages: the split, the base model's Dice.
    cancel : callable or threading.Event, optional
        Checked before each step: stop, and save the best weights so far (the
        base model's if no epoch has beaten it yet).

    Returns
    -------
    FinetuneResult

    Raises
    ------
    ValueError
        No pairs, unreadable or mismatched data, a pixel size that is needed
        and unknown, bad settings, or an ``out`` that would overwrite a bundled
        model or the base model (checked before training starts).
    slide_unet.core.errors.ModelError
        (a ValueError) The base model cannot be loaded.
    """
    started = time.perf_counter()  # the budget covers loading the base model too
    from slide_unet.core.model.store import save_model
    from slide_unet.core.training.config import TrainingConfig
    from slide_unet.core.training.train import resume_path, train

    pairs = _check_pairs(pairs)
    if mpp is not None and not mpp > 0:
        raise InputError(f"mpp must be a positive number of µm per pixel, got {mpp!r}")
    base, base_file = _base_model(model)
    card = base.card
    name = _destination(out, card, base_file)
    params = card.parameters
    config = TrainingConfig(
        name=name,
        working_mpp=card.working_mpp,
        input_mpp=mpp or card.default_input_mpp,
        base_width=int(params.get("base_width", 16)),
        depth=int(params.get("depth", 4)),
        norm=str(params.get("norm", "batch")),
        patch=_patch(card, patch),
        batch_size=batch_size,
        epochs=epochs,
        steps_per_epoch=STEPS_PER_EPOCH,
        minutes=minutes,
        learning_rate=learning_rate,
        val_fraction=val_fraction,
        seed=seed,
        device=device,
        precision=precision,
        tile=card.tile,
    )
    # The parent's licence is recorded, not inherited: the new weights also
    # derive from the user's images, whose terms only the user knows.
    data = {**_describe(pairs), "parent_sha256": card.sha256, "parent_licence": card.licence}
    try:
        result = train(
            pairs,  # type: ignore[arg-type]  # train passes them to load_images, which takes both
            config,
            out,
            initial=base,
            command=command,
            data=data,
            licence=None,
            progress=progress,
            losses=losses,
            say=say,
            cancel=cancel,
            started=started,
        )
    finally:
        # train keeps its state after a cancel so `slide-unet train --resume`
        # can go on; fine-tuning does not resume, so leave nothing behind.
        resume_path(out).unlink(missing_ok=True)
    before = float(result.history[0]["val_dice"])
    # train's card says how it split by image; say how this run split, and
    # what the base model scored on the same held-out data.
    validation = {**result.card.validation, "before_dice": before, "parent": card.name}
    if len(pairs) == 1:
        validation["split"] = (
            f"by region of one image: a band at one end (about {val_fraction:.0%} of its "
            "corrected area, or of the image) held out; training patches from the rest"
        )
    saved = dataclasses.replace(result.card, validation=validation)
    path = save_model(result.model, out, saved)
    result.model.card = saved = ModelCard.from_json(path.with_suffix(".json"))
    return FinetuneResult(
        model=result.model,
        card=saved,
        path=path,
        before_dice=before,
        after_dice=round(result.best_dice, 4),
        history=result.history,
        stopped=result.stopped,
    )
