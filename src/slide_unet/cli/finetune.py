"""``slide-unet finetune``: adapt a model to a lab's own images and corrected masks.

Thin over :func:`slide_unet.core.training.finetune.finetune`; registered by
``slide_unet.cli.build_parser`` through :func:`add_parser`.
"""

from __future__ import annotations

import argparse
import json
import shlex
import sys
from typing import Any

from slide_unet.cli.common import (
    add_device_option,
    add_json_option,
    print_epoch,
    training_pairs,
)
from slide_unet.core.errors import UsageError

__all__ = ["add_parser", "run"]

#: The time budget when neither --minutes nor --epochs is given.
DEFAULT_MINUTES = 10.0


def _summary(result: Any) -> dict[str, Any]:
    last = result.history[-1]
    return {
        "model": result.card.name,
        "parent": result.card.parent,
        "path": str(result.path),
        "before_dice": result.before_dice,
        "after_dice": result.after_dice,
        "gain": round(result.after_dice - result.before_dice, 4),
        "best_epoch": result.card.training.get("best_epoch"),
        "epochs": last["epoch"],
        "seconds": result.card.training.get("seconds"),
        "stopped": result.stopped,
        "validation_images": result.card.training.get("validation_images", []),
        "history": result.history,
    }


def _print_trained(record: dict[str, Any], total: int | None) -> None:
    """An epoch's line; none for the base model's record (``say`` has printed its Dice)."""
    if record["epoch"]:
        print_epoch(record, total)


def run(args: argparse.Namespace) -> int:
    """Fine-tune a model on folders of images and masks, and save it as a new model."""
    from slide_unet.core.training.finetune import finetune

    for option, value in (("--minutes", args.minutes), ("--mpp", args.mpp)):
        if value is not None and not value > 0:
            raise UsageError(f"{option} must be positive, got {value:g}")
    if args.epochs is not None and args.epochs < 1:
        raise UsageError(f"--epochs must be at least 1, got {args.epochs}")
    minutes = args.minutes if args.epochs is None else None
    if minutes is None and args.epochs is None:
        minutes = DEFAULT_MINUTES
    pairs = training_pairs(args.images, args.masks)
    argv = getattr(args, "argv", None) or sys.argv[1:]
    quiet = args.json
    result = finetune(
        args.model,
        pairs,
        args.output,
        minutes=minutes,
        epochs=args.epochs,
        mpp=args.mpp,
        learning_rate=args.lr,
        batch_size=args.batch_size,
        patch=args.patch,
        val_fraction=args.val_fraction,
        seed=args.seed,
        device=args.device,
        precision=args.precision,
        command=shlex.join(["slide-unet", *argv]),
        progress=None if quiet else lambda record: _print_trained(record, args.epochs),
        say=(lambda _: None) if quiet else (lambda text: print(text, flush=True)),
    )
    if args.json:
        print(json.dumps(_summary(result), indent=2))
        return 0
    cancelled = " (cancelled)" if result.stopped == "cancelled" else ""
    print(f"validation Dice before {result.before_dice:.4f} -> after {result.after_dice:.4f}")
    print(f"saved {result.card.name!r}{cancelled}: {result.path}")
    return 0


def add_parser(commands: Any) -> argparse.ArgumentParser:
    """Register ``finetune`` on the sub-command parsers of ``slide-unet``."""
    finetune = commands.add_parser(
        "finetune",
        help="fine-tune a model on images and corrected masks, saved as a new model",
        description=(
            "Start from a bundled or user model, train it on folders of images and masks "
            "paired by file stem (held out by image; a lone image is split by region), keep "
            "the weights with the best validation Dice, and save them as a new model (a bare "
            "name goes to the user's models folder) whose card names its parent. Prints the "
            "validation Dice before and after. Bundled models are never modified."
        ),
    )
    finetune.add_argument("--model", required=True, help="base model: a name or a model file")
    finetune.add_argument("--images", action="append", required=True, metavar="DIR")
    finetune.add_argument(
        "--masks",
        action="append",
        required=True,
        metavar="DIR",
        help="masks named like the images (any non-zero pixel is foreground); repeat "
        "--images and --masks for more folders",
    )
    finetune.add_argument(
        "-o", "--output", required=True, help="a new model name, or X.safetensors"
    )
    finetune.add_argument(
        "--mpp", type=float, help="pixel size (µm) of images whose files do not say"
    )
    budget = finetune.add_mutually_exclusive_group()
    budget.add_argument("--minutes", type=float, help=f"time budget (default {DEFAULT_MINUTES:g})")
    budget.add_argument("--epochs", type=int, help="a number of epochs instead of a time budget")
    finetune.add_argument("--lr", type=float, default=3e-4, help="peak learning rate")
    finetune.add_argument("--batch-size", type=int, default=8)
    finetune.add_argument(
        "--patch", type=int, help="patch side (default: the base model's training patch)"
    )
    finetune.add_argument("--val-fraction", type=float, default=0.2, help="default 0.2")
    finetune.add_argument("--seed", type=int, default=0)
    add_device_option(finetune)
    finetune.add_argument("--precision", choices=("auto", "fp32", "bf16"), default="auto")
    add_json_option(finetune, help="print a JSON summary only")
    finetune.set_defaults(run=run)
    return finetune
