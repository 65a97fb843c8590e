"""Train a U-Net on images and expert masks: the bundled models and fine-tuning.

The loop, in short: images are resampled once to the model's working pixel
size and held in memory; each step cuts a batch of patches (half of them
centred on foreground, window sides jittered in scale), augments them
(:mod:`slide_unet.core.training.augment`), and takes an AdamW step on BCE + Dice loss
under a warm-up + cosine learning-rate schedule, optionally keeping a moving
average of the weights (``ema``). After every epoch the model (or the average)
segments each held-out image through the same engine as ``slide-unet segment``
(:func:`slide_unet.core.inference.segment.segment`), and the weights with the best mean
Dice are kept. Training stops after a number of epochs or minutes, whichever
comes first, or when cancelled (the best so far is kept), and can be resumed
from the state written after each epoch. A time budget covers the whole run:
the steps stop early enough for the last validation and the save to fit in it
(:class:`~slide_unet.core.training.budget.TimeBudget`).

Held-out images are chosen by image, never by tile, with a fixed seed, and
named in the model card.

This module is part of the napari-free core.
"""

from __future__ import annotations

import contextlib
import copy
import dataclasses
import json
import math
import os
import platform
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import safetensors.torch
import torch
import torch.nn.functional as F

from slide_unet.core.atomic import atomic_path
from slide_unet.core.devices import autocast, resolve_device, resolve_precision
from slide_unet.core.errors import Cancel, Cancelled, InputError, cancel_check
from slide_unet.core.inference.segment import segment
from slide_unet.core.model.card import ModelCard
from slide_unet.core.model.unet import UNet
from slide_unet.core.scoring.metrics import dice
from slide_unet.core.training.augment import Augmentation, augment
from slide_unet.core.training.budget import TimeBudget
from slide_unet.core.training.colour import colour_reference, match_colours
from slide_unet.core.training.config import TrainingConfig
from slide_unet.core.training.data import (
    HeldOutImage,
    TrainingImage,
    channel_statistics,
    load_images,
    sample_batch,
)
from slide_unet.core.training.image_pairs import ImagePair

__all__ = ["LOSS_EVERY", "TrainingResult", "train"]

#: Steps between reports of the training loss (``losses``), for a live curve.
LOSS_EVERY = 5

#: Fewest steps a time budget must leave room for to start an epoch.
MIN_EPOCH_STEPS = 5

#: A fixed schedule that keeps its last epoch (cross-validation's folds) validates
#: only every this many epochs and at the end: its scores pick nothing, and a
#: fold of the nuclei recipe holds out about 200 images.
SPARSE_VALIDATION_EVERY = 5


@dataclass
class TrainingResult:
    """What training produced."""

    model: UNet
    card: ModelCard
    history: list[dict[str, Any]]
    best_dice: float
    best_epoch: int
    seconds: float
    stopped: str


def _rounded(dice: float) -> float | None:
    """A Dice for a record: 4 decimals, None when nothing was validated."""
    return None if math.isnan(dice) else round(dice, 4)


def _loss(logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Binary cross-entropy plus soft Dice loss (over the whole batch)."""
    logits = logits.float()
    bce = F.binary_cross_entropy_with_logits(logits, target)
    prob = torch.sigmoid(logits)
    inter = (prob * target).sum()
    soft_dice = (2 * inter + 1) / (prob.sum() + target.sum() + 1)
    return bce + (1 - soft_dice)


def _learning_rate(peak: float, progress: float) -> float:
    """Linear warm-up over the first 5 %, then cosine down to 1 % of the peak."""
    warm = 0.05
    if progress < warm:
        return peak * (0.05 + 0.95 * progress / warm)
    t = min(1.0, (progress - warm) / (1 - warm))
    return peak * (0.01 + 0.99 * 0.5 * (1 + math.cos(math.pi * t)))


def recalibrate_norms(
    model: torch.nn.Module,
    images: Sequence[TrainingImage],
    config: TrainingConfig,
    rng: np.random.Generator,
    device: torch.device,
    mean: torch.Tensor,
    std: torch.Tensor,
    batches: int = 8,
) -> None:
    """Re-estimate batch-norm statistics on plain patches ("precise BN").

    The running averages kept during training follow augmented, foreground-
    heavy batches and lag behind the weights; segmenting uses them. Averaging
    them afresh over un-augmented patches cut anywhere, with the weights fixed,
    makes evaluation match what the model was trained to see.
    """
    norms = [m for m in model.modules() if isinstance(m, torch.nn.modules.batchnorm._BatchNorm)]
    if not norms:
        return
    plain = dataclasses.replace(
        config, foreground_fraction=0.0, augmentation=Augmentation(scale=0.0)
    )
    saved = [m.momentum for m in norms]
    for m in norms:
        m.reset_running_stats()
        m.momentum = None  # a cumulative average
    model.train()
    with torch.no_grad():
        for _ in range(batches):
            x, _ = sample_batch(images, plain, rng)
            model(((x.to(device) - mean) / std).contiguous(memory_format=torch.channels_last))
    for m, momentum in zip(norms, saved, strict=True):
        m.momentum = momentum


@torch.no_grad()
def _time_norm_batch(
    model: torch.nn.Module,
    images: Sequence[TrainingImage],
    config: TrainingConfig,
    device: torch.device,
    mean: torch.Tensor,
    std: torch.Tensor,
) -> float:
    """Seconds one batch of :func:`recalibrate_norms` takes, measured on a batch
    of its own: what the time budget reserves for the first epoch's end.

    In eval mode, so the batch-norm statistics are left as they are, and with
    a random stream of its own, so training draws what it would have drawn.
    """
    plain = dataclasses.replace(
        config, foreground_fraction=0.0, augmentation=Augmentation(scale=0.0)
    )
    started = time.perf_counter()
    x, _ = sample_batch(images, plain, np.random.default_rng([config.seed, 2]))
    model.eval()
    model(((x.to(device) - mean) / std).contiguous(memory_format=torch.channels_last))
    return time.perf_counter() - started


@torch.no_grad()
def _update_average(
    average: torch.nn.Module, model: torch.nn.Module, decay: float, step: int
) -> None:
    """Move ``average``'s weights towards ``model``'s (an exponential moving average).

    The decay ramps up over the first steps, ``(1 + step) / (10 + step)``, so
    the average does not stay anchored to the random initial weights. Batch-
    norm statistics are not averaged: :func:`recalibrate_norms` estimates them
    for the averaged weights before each validation.
    """
    rate = 1 - min(decay, (1 + step) / (10 + step))
    for a, p in zip(average.parameters(), model.parameters(), strict=True):
        a.lerp_(p.detach(), rate)


def validate(
    model: torch.nn.Module, held: Sequence[HeldOutImage], device: torch.device
) -> dict[str, float]:
    """Dice of the model on each held-out image, through the segmentation engine.

    A held-out part (``item.region``) is segmented in place, with its image
    around it as context, and scored alone.
    """
    scores = {}
    for item in held:
        mask = segment(
            item.pixels, model, region=item.region, mpp=item.mpp, device=device, precision="fp32"
        )
        scores[item.stem] = round(dice(mask, item.truth), 4)
    return scores


def _card(
    config: TrainingConfig,
    model: UNet,
    mean: list[float],
    std: list[float],
    parent: ModelCard | None,
) -> ModelCard:
    base = {
        "name": config.name,
        "parameters": model.config,
        "channels": "RGB",
        "normalization": {"mean": mean, "std": std},
        "working_mpp": config.working_mpp,
        "default_input_mpp": config.input_mpp,
        "tile": config.tile,
        "trained": True,
    }
    if parent is not None:
        base.update(
            normalization=parent.normalization,
            working_mpp=parent.working_mpp,
            default_input_mpp=config.input_mpp or parent.default_input_mpp,
            tile=parent.tile,
            threshold=parent.threshold,
            min_object_um2=parent.min_object_um2,
            parent=parent.name,
            colour_reference=parent.colour_reference,
        )
    return ModelCard(**base)


# -- resumable state ------------------------------------------------------------------


def resume_path(out: str | os.PathLike[str]) -> Path:
    """Where training to ``out`` keeps its state between epochs."""
    from slide_unet.core.model.store import user_models_dir

    text = os.fspath(out)
    path = Path(text)
    if path.name == text and not path.suffix:  # a bare name: a user model
        path = user_models_dir() / text
    name = path.name.removesuffix(".safetensors").removesuffix(".json")
    return path.with_name(name + ".resume.safetensors")


def _save_state(
    path: Path,
    model: torch.nn.Module,
    best: dict[str, torch.Tensor],
    optimizer: torch.optim.Optimizer,
    state: dict[str, Any],
    ema: torch.nn.Module | None = None,
) -> None:
    tensors = {f"model/{k}": v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    if ema is not None:
        tensors.update(
            {f"ema/{k}": v.detach().cpu().contiguous() for k, v in ema.state_dict().items()}
        )
    tensors.update({f"best/{k}": v.contiguous() for k, v in best.items()})
    for i, p in enumerate(optimizer.param_groups[0]["params"]):
        for key, value in optimizer.state.get(p, {}).items():
            tensors[f"opt/{i}/{key}"] = torch.as_tensor(value).detach().cpu().contiguous()
    with atomic_path(path) as tmp:
        safetensors.torch.save_file(tensors, os.fspath(tmp), metadata={"state": json.dumps(state)})


def _load_state(
    path: Path,
    model: torch.nn.Module,
    optimizer: torch.optim.Optimizer,
    ema: torch.nn.Module | None = None,
) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    with safetensors.safe_open(os.fspath(path), framework="pt") as f:
        state = json.loads((f.metadata() or {})["state"])
        tensors = {k: f.get_tensor(k) for k in f.keys()}  # noqa: SIM118 (not a dict)
    model.load_state_dict({k[6:]: v for k, v in tensors.items() if k.startswith("model/")})
    if ema is not None:
        ema.load_state_dict({k[4:]: v for k, v in tensors.items() if k.startswith("ema/")})
    best = {k[5:]: v for k, v in tensors.items() if k.startswith("best/")}
    params = optimizer.param_groups[0]["params"]
    for key, value in tensors.items():
        if key.startswith("opt/"):
            _, index, name = key.split("/")
            optimizer.state[params[int(index)]][name] = value.to(params[int(index)].device)
    return best, state


# -- the loop -------------------------------------------------------------------------


def _cpu_name() -> str:
    """The CPU's model name (Linux: /proc/cpuinfo), else what ``platform`` knows."""
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name") and ":" in line:
                return line.split(":", 1)[1].strip()
    return platform.processor() or platform.machine()


def _machine(device: torch.device) -> str:
    """What trained the model, for its card."""
    if device.type == "cuda":
        return f"{torch.cuda.get_device_name(device)} (CUDA)"
    return f"{_cpu_name()}, {os.cpu_count()} cores ({device.type})"


def train(
    pairs: Sequence[ImagePair],
    config: TrainingConfig,
    out: str | os.PathLike[str],
    *,
    initial: UNet | None = None,
    resume: bool = False,
    command: str | None = None,
    data: dict[str, Any] | None = None,
    licence: str | None = None,
    progress: Callable[[dict[str, Any]], None] | None = None,
    losses: Callable[[dict[str, Any]], None] | None = None,
    say: Callable[[str], None] | None = None,
    cancel: Cancel | None = None,
    started: float | None = None,
    validation: dict[str, Any] | None = None,
    match_colour: bool = False,
    min_object_um2: float | None = None,
) -> TrainingResult:
    """Train (or fine-tune) a U-Net and save the best weights with their card.

    Parameters
    ----------
    pairs : sequence of ImagePair
        Images and their masks (:func:`~slide_unet.core.training.image_pairs.find_pairs`).
    config : TrainingConfig
    out : path
        ``X.safetensors`` (with ``X.json``), or a bare name for the user's
        models folder (:func:`~slide_unet.core.model.store.save_model`).
    initial : UNet, optional
        A loaded model to start from (fine-tuning): its architecture,
        normalisation and working pixel size are kept and it becomes the
        card's parent. Default: a new U-Net from ``config``.
    resume : bool
        Continue from the state saved after the last finished epoch.
    command : str, optional
        The command line, recorded in the card.
    data : dict, optional
        Facts about the data for the card (folders, licence, attribution).
    licence : str, optional
        The weights' licence, for the card.
    progress : callable, optional
        Called with each record of the history as it is made: after each
        epoch with ``{"epoch", "step", "loss", "val_dice", "best_dice", "lr",
        "seconds"}``; first, when fine-tuning (``initial``), with the starting
        model's ``{"epoch": 0, "step": 0, "val_dice"}``.
    losses : callable, optional
        Called every :data:`LOSS_EVERY` steps with ``{"epoch", "step",
        "loss"}``: the epoch under way and the mean training loss of those
        steps (a live curve between validations).
    say : callable, optional
        Receives one-line messages (the split, resuming...).
    cancel : callable or threading.Event, optional
        Checked before each step; when set, stop and keep the best so far.
    started : float, optional
        :func:`time.perf_counter` when the time budget began (default: now);
        fine-tuning passes its own start, so loading the base model counts.
    validation : dict, optional
        The card's validation figures, when they come from elsewhere (a
        cross-validation, :mod:`slide_unet.core.training.cross_validation`); default:
        this run's held-out images.
    match_colour : bool
        Record the training tissue's colour in the card (``colour_reference``,
        :mod:`slide_unet.core.training.colour`), so that the engine, validation
        here included, brings each slide's colour to it. A fine-tuned model
        keeps its parent's, and its training images are brought to it
        (:func:`~slide_unet.core.training.colour.match_colours`; the card's
        ``training.colour_matched_images`` counts them).
    min_object_um2 : float, optional
        The card's minimum object area (what cross-validation chose); None: 0
        for a new model, the parent's for a fine-tuned one.

    Returns
    -------
    TrainingResult
    """
    from slide_unet.core.model.store import save_model

    say = say or (lambda _: None)
    cancelled = cancel_check(cancel)
    started = time.perf_counter() if started is None else started
    device = resolve_device(config.device)
    dtype = resolve_precision(config.precision, device)  # "auto": as segment's
    images, held = load_images(pairs, config, say)
    if not images:
        raise InputError("no training images left after holding some out")
    torch.manual_seed(config.seed)
    if initial is not None:
        model = initial
        parent = initial.card
        mean, std = parent.normalization["mean"], parent.normalization["std"]
    else:
        parent = None
        model = UNet(
            in_channels=3, base_width=config.base_width, depth=config.depth, norm=config.norm
        )
        mean, std = channel_statistics(images)
    card = _card(config, model, mean, std, parent)
    colour_matched = None  # images brought to the base model's colours (fine-tuning)
    if parent is not None and parent.colour_reference:
        images, colour_matched = match_colours(
            images, parent.colour_reference, config.working_mpp or config.input_mpp
        )
        say(
            f"{colour_matched} of {len(images)} training images brought to the base model's "
            "colour reference, as segment brings a slide"
        )
    if match_colour:
        reference = colour_reference(images, config.working_mpp or config.input_mpp)
        if reference is None:
            say("no brightfield tissue in the training images: colours will not be matched")
        card = dataclasses.replace(card, colour_reference=reference)
    model.card = card
    model.to(device=device, memory_format=torch.channels_last)
    optimizer = torch.optim.AdamW(
        model.parameters(), lr=config.learning_rate, weight_decay=config.weight_decay
    )
    # The weights validated and kept: a moving average of the trained ones, or
    # the trained ones themselves.
    kept = copy.deepcopy(model) if config.ema else model
    norm_mean = torch.tensor(mean, device=device).view(1, 3, 1, 1)
    norm_std = torch.tensor(std, device=device).view(1, 3, 1, 1)

    state_file = resume_path(out)
    history: list[dict[str, Any]] = []
    best: dict[str, torch.Tensor] = {}
    best_dice, best_epoch, best_scores = -1.0, 0, {}
    epoch = step = 0
    spent = 0.0  # seconds of training before this run (resumed)
    if resume:
        if not state_file.exists():
            raise InputError(f"nothing to resume: {state_file} does not exist")
        best, state = _load_state(state_file, model, optimizer, kept if config.ema else None)
        if state["config"] != json.loads(json.dumps(config.to_dict())):
            raise InputError(
                f"{state_file} was written with other settings: resume with the same ones"
            )
        epoch, step, spent = state["epoch"], state["step"], state["seconds"]
        history, best_dice = state["history"], state["best_dice"]
        best_epoch, best_scores = state["best_epoch"], state["best_scores"]
        say(f"resuming after epoch {epoch} (best validation Dice {best_dice:.4f})")
    clock = TimeBudget(
        config.minutes * 60 if config.minutes else None,
        started,
        spent,
        norm_batches=config.norm_batches,
    )
    if not resume and initial is not None and held:
        begun = time.perf_counter()
        best_scores = validate(model, held, device)
        clock.note_validation(time.perf_counter() - begun)
        best_dice = float(np.mean(list(best_scores.values())))
        best = {k: v.detach().cpu().clone() for k, v in model.state_dict().items()}
        say(f"before training: validation Dice {best_dice:.4f}")
        history.append({"epoch": 0, "step": 0, "val_dice": round(best_dice, 4)})
        if progress is not None:
            progress(dict(history[0]))
    has_norms = any(isinstance(m, torch.nn.modules.batchnorm._BatchNorm) for m in kept.modules())
    if clock.seconds is not None and has_norms:
        clock.note_norm_batch(_time_norm_batch(kept, images, config, device, norm_mean, norm_std))

    total_steps = config.epochs * config.steps_per_epoch if config.epochs else None

    def more_steps(steps: int = 1) -> bool:
        return (total_steps is None or step < total_steps) and clock.room_for_steps(steps)

    def progress_fraction() -> float:
        return max(step / total_steps if total_steps else 0.0, clock.fraction())

    def validating(epoch: int) -> bool:
        """Whether this epoch's end validates (always, unless a sparse fixed schedule)."""
        if config.keep != "last" or config.minutes or not total_steps:
            return True
        return epoch % SPARSE_VALIDATION_EVERY == 0 or step >= total_steps

    stopped = "finished"
    # An epoch costs a validation: start one only when a few steps fit before it.
    while more_steps(min(MIN_EPOCH_STEPS, config.steps_per_epoch)) and stopped == "finished":
        rng = np.random.default_rng([config.seed, epoch])
        gen = torch.Generator().manual_seed(config.seed * 100_003 + epoch)
        model.train()
        epoch_losses: list[float] = []
        for _ in range(config.steps_per_epoch):
            if cancelled():
                stopped = "cancelled"
                break
            if not more_steps():
                break
            begun = time.perf_counter()
            lr = _learning_rate(config.learning_rate, progress_fraction())
            for group in optimizer.param_groups:
                group["lr"] = lr
            x, m = sample_batch(images, config, rng)
            x, m = augment(x, m, config.augmentation, gen)
            x = ((x.to(device) - norm_mean) / norm_std).contiguous(
                memory_format=torch.channels_last
            )
            with autocast(device, dtype):
                logits = model(x)
            loss = _loss(logits, m.to(device))
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            if config.ema:
                _update_average(kept, model, config.ema, step)
            epoch_losses.append(loss.item())
            step += 1
            clock.note_step(time.perf_counter() - begun)
            if losses is not None and step % LOSS_EVERY == 0:
                recent = epoch_losses[-LOSS_EVERY:]
                losses(
                    {"epoch": epoch + 1, "step": step, "loss": round(float(np.mean(recent)), 4)}
                )
        if not epoch_losses:
            break
        epoch += 1
        wrap_up = time.perf_counter()
        recalibrate_norms(
            kept,
            images,
            config,
            np.random.default_rng([config.seed, epoch, 1]),
            device,
            norm_mean,
            norm_std,
            batches=config.norm_batches,
        )
        scores = validate(kept, held, device) if held and validating(epoch) else {}
        mean_dice = float(np.mean(list(scores.values()))) if scores else math.nan
        if config.keep == "last" or mean_dice > best_dice:
            best_dice, best_epoch, best_scores = mean_dice, epoch, scores
            best = {k: v.detach().cpu().clone() for k, v in kept.state_dict().items()}
        seconds = clock.elapsed()
        record = {
            "epoch": epoch,
            "step": step,
            "loss": round(float(np.mean(epoch_losses)), 4),
            "val_dice": _rounded(mean_dice),
            "best_dice": _rounded(best_dice),
            "lr": lr,
            "seconds": round(seconds, 1),
        }
        history.append(record)
        if progress is not None:
            progress(record)
        saving = time.perf_counter()
        _save_state(
            state_file,
            model,
            best,
            optimizer,
            {
                "config": config.to_dict(),
                "epoch": epoch,
                "step": step,
                "seconds": seconds,
                "history": history,
                "best_dice": best_dice,
                "best_epoch": best_epoch,
                "best_scores": best_scores,
            },
            kept if config.ema else None,
        )
        now = time.perf_counter()
        clock.note_wrap_up(now - wrap_up, now - saving)
    if not best:
        raise Cancelled("training was cancelled before its first epoch ended")
    if epoch == 0 and stopped == "finished":
        say("the time budget was spent before a first epoch could be trained and validated")
    seconds = clock.elapsed()
    model.load_state_dict(best)
    model.eval()
    if held and not best_scores:  # a sparse schedule stopped after an epoch it did not score
        best_scores = validate(model, held, device)
        best_dice = float(np.mean(list(best_scores.values())))
        history[-1].update(val_dice=_rounded(best_dice), best_dice=_rounded(best_dice))
    card = dataclasses.replace(
        card,
        training={
            **(data or {}),
            "train_images": sorted(i.stem for i in images),
            "validation_images": sorted(h.stem for h in held),
            "config": config.to_dict(),
            "epochs_run": epoch,
            "steps_run": step,
            "best_epoch": best_epoch,
            "stopped": stopped,
            "seconds": round(seconds, 1),
            "machine": _machine(device),
            "torch": torch.__version__,
            "history": history,
            **({} if colour_matched is None else {"colour_matched_images": colour_matched}),
        },
        validation=validation
        or {
            "mean_dice": _rounded(best_dice),
            "per_image": best_scores,
            "n_images": len(held),
            "precision": "fp32",
            "split": f"by image, seed {config.seed}, {len(held)} of {len(held) + len(images)}",
        },
        command=command,
        licence=licence or card.licence,
        min_object_um2=card.min_object_um2 if min_object_um2 is None else min_object_um2,
    )
    weights = save_model(model.cpu(), out, card)
    card = ModelCard.from_json(weights.with_name(weights.name[: -len(".safetensors")] + ".json"))
    model.card = card
    if stopped == "finished":  # a cancelled run may be resumed
        state_file.unlink(missing_ok=True)
    return TrainingResult(model, card, history, best_dice, best_epoch, seconds, stopped)
