"""``slide-unet train``: train a U-Net on folders of images and expert masks."""

from __future__ import annotations

import argparse
import json
import shlex
import sys
from pathlib import Path
from typing import Any

from slide_unet.cli.common import add_json_option, print_epoch, training_pairs

__all__ = ["add_parser", "run", "training_config"]

_ARCHITECTURES = ("unet",)


def _stems(text: str) -> list[str]:
    return [s.strip() for s in text.split(",") if s.strip()]


def training_config(args: argparse.Namespace) -> Any:
    """The TrainingConfig the parsed ``train`` arguments ask for."""
    from slide_unet.core.training.augment import Augmentation
    from slide_unet.core.training.config import TrainingConfig

    name = args.name or Path(args.output).name.split(".")[0]
    return TrainingConfig(
        name=name,
        working_mpp=args.working_mpp,
        input_mpp=args.mpp,
        base_width=args.base_width,
        depth=args.depth,
        norm=args.norm,
        patch=args.patch,
        batch_size=args.batch_size,
        epochs=args.epochs,
        steps_per_epoch=args.steps_per_epoch,
        minutes=args.minutes,
        learning_rate=args.lr,
        weight_decay=args.weight_decay,
        ema=args.ema,
        val_fraction=args.val_fraction,
        seed=args.seed,
        foreground_fraction=args.foreground_fraction,
        norm_batches=args.norm_batches,
        augmentation=Augmentation(
            invert=args.invert,
            grayscale=args.grayscale,
            scale=args.scale_jitter,
            rotate=args.rotate,
            elastic=args.elastic,
            acquisition=args.acquisition,
            acquisition_factor=args.acquisition_factor,
            stain=args.stain,
            channel_gamma=args.channel_gamma,
            render_he=args.render_he,
        ),
        device=args.device,
        precision=args.precision,
        tile=args.tile,
    )


def _train_cross_validated(
    args: argparse.Namespace, pairs: list[Any], config: Any, **card: Any
) -> int:
    from slide_unet.core.training.cross_validation import train_cross_validated

    quiet = args.json
    k = args.folds

    def show(fold: int, record: dict[str, Any]) -> None:
        name = f"fold {fold + 1}/{k}" if fold < k else "all images"
        print_epoch(record, config.epochs, f"[{name}] ")

    result, _ = train_cross_validated(
        pairs,
        config,
        args.output,
        k,
        say=(lambda _: None) if quiet else (lambda text: print(text, flush=True)),
        progress=None if quiet else show,
        resume=args.resume,
        **card,
    )
    validation = result.card.validation  # the folds' figure, and the area they chose
    area = result.card.min_object_um2
    if args.json:
        summary = {"output": str(args.output), "seconds": round(result.seconds, 1)}
        summary["min_object_um2"] = area
        print(json.dumps({**summary, "cross_validation": validation}, indent=2))
    else:
        removed = f"; objects under {area:g} µm² removed by default" if area else ""
        print(
            f"saved {args.output}: cross-validated Dice {validation['mean_dice']:.4f} "
            f"(sd {validation['sd_over_folds']:.4f} over {k} folds), trained on all "
            f"{len(pairs)} images, {result.seconds / 60:.1f} min for the last training"
            f"{removed}"
        )
    return 0


def run(args: argparse.Namespace) -> int:
    """Train a U-Net and save the best weights with their model card."""
    from slide_unet.core.training.train import train

    if args.epochs is None and args.minutes is None:
        args.epochs = 30
    pairs = training_pairs(args.images, args.masks, args.exclude)
    config = training_config(args)
    data = {
        "images": [str(p) for p in args.images],
        "masks": [str(p) for p in args.masks],
        "pairs": len(pairs),
        "excluded": sorted(args.exclude or []),
    }
    if args.attribution:
        data["attribution"] = args.attribution
    argv = getattr(args, "argv", None) or sys.argv[1:]
    command = shlex.join(["slide-unet", *argv])
    if args.folds:
        card = {
            "command": command,
            "data": data,
            "licence": args.licence,
            "match_colour": args.match_colour,
        }
        return _train_cross_validated(args, pairs, config, **card)
    quiet = args.json
    result = train(
        pairs,
        config,
        args.output,
        resume=args.resume,
        command=command,
        data=data,
        licence=args.licence,
        match_colour=args.match_colour,
        progress=None if quiet else lambda r: print_epoch(r, config.epochs),
        say=(lambda _: None) if quiet else (lambda text: print(text, flush=True)),
    )
    summary = {
        "output": str(args.output),
        "best_dice": round(result.best_dice, 4),
        "best_epoch": result.best_epoch,
        "seconds": round(result.seconds, 1),
        "stopped": result.stopped,
        "validation_images": result.card.training["validation_images"],
    }
    if args.json:
        print(json.dumps(summary, indent=2))
    else:
        minutes = result.seconds / 60
        print(
            f"saved {args.output}: best validation Dice {result.best_dice:.4f} (epoch "
            f"{result.best_epoch}), {minutes:.1f} min"
        )
    return 0


def add_parser(commands: Any) -> argparse.ArgumentParser:
    """Register ``train`` on the subcommands of ``slide-unet``."""
    train = commands.add_parser(
        "train",
        help="train a U-Net on images and expert masks",
        description=(
            "Train a U-Net on folders of images and masks paired by file stem; hold out "
            "images (not tiles) for validation, keep the weights with the best validation "
            "Dice, and write OUTPUT.safetensors with its model card OUTPUT.json."
        ),
    )
    data = train.add_argument_group("data")
    data.add_argument("--images", action="append", required=True, type=Path, metavar="DIR")
    data.add_argument(
        "--masks",
        action="append",
        required=True,
        type=Path,
        metavar="DIR",
        help="masks named like the images: red on black, 0/1, 0/255 or instance labels",
    )
    data.add_argument("--mpp", type=float, help="pixel size of images whose files do not say (µm)")
    data.add_argument("--exclude", type=_stems, help="image stems to leave out, comma-separated")
    data.add_argument("--val-fraction", type=float, default=0.2, help="default 0.2")
    data.add_argument("--attribution", help="data attribution, recorded in the card")
    model = train.add_argument_group("model")
    model.add_argument("-o", "--output", required=True, help="X.safetensors, or a bare name")
    model.add_argument("--name", help="model name (default: the output's name)")
    model.add_argument("--arch", choices=_ARCHITECTURES, default="unet")
    model.add_argument("--base-width", type=int, default=16)
    model.add_argument("--depth", type=int, default=4)
    model.add_argument("--norm", choices=("batch", "group", "none"), default="batch")
    model.add_argument("--working-mpp", type=float, help="µm/px the model works at")
    model.add_argument("--tile", type=int, default=512, help="default inference tile")
    model.add_argument("--licence", help="licence of the weights, recorded in the card")
    model.add_argument(
        "--match-colour",
        action="store_true",
        help="record the training tissue's colour in the card, so that segment brings each "
        "slide's colour to it (brightfield RGB; another scanner or stain batch)",
    )
    fit = train.add_argument_group("training")
    fit.add_argument("--epochs", type=int, help="default 30 when --minutes is not given")
    fit.add_argument("--steps-per-epoch", type=int, default=50)
    fit.add_argument("--minutes", type=float, help="time budget")
    fit.add_argument("--patch", type=int, default=256)
    fit.add_argument("--batch-size", type=int, default=8)
    fit.add_argument("--lr", type=float, default=2e-3, help="peak learning rate")
    fit.add_argument("--weight-decay", type=float, default=1e-4)
    fit.add_argument(
        "--ema",
        type=float,
        default=0.0,
        metavar="DECAY",
        help="keep and validate a moving average of the weights with this decay "
        "(e.g. 0.995); default 0: off",
    )
    fit.add_argument("--foreground-fraction", type=float, default=0.5)
    fit.add_argument("--invert", type=float, default=0.0, help="inversion probability")
    fit.add_argument("--grayscale", type=float, default=0.0, help="grayscale probability")
    fit.add_argument(
        "--scale-jitter", type=float, default=0.2, help="patch scale jitter (default 0.2)"
    )
    fit.add_argument("--rotate", type=float, default=0.0, help="any-angle rotation probability")
    fit.add_argument("--elastic", type=float, default=0.0, help="elastic warp probability")
    fit.add_argument(
        "--acquisition",
        type=float,
        default=0.0,
        metavar="P",
        help="probability of a coarser acquisition: the patch shrunk by up to "
        "--acquisition-factor (area), sometimes JPEG-compressed, and brought back; "
        "default 0: off",
    )
    fit.add_argument(
        "--acquisition-factor",
        type=float,
        default=4.0,
        metavar="F",
        help="largest shrink of --acquisition (default 4: 8 µm/px scans for a 2 µm/px model)",
    )
    fit.add_argument(
        "--stain",
        type=float,
        default=0.05,
        metavar="S",
        help="stain jitter: each H, E and DAB optical density scaled by 1 + U(-S, S) "
        "and shifted by U(-S, S) (default 0.05)",
    )
    fit.add_argument(
        "--channel-gamma",
        type=float,
        default=0.0,
        metavar="G",
        help="each colour channel raised to its own gamma exp(U(-G, G)); default 0: off",
    )
    fit.add_argument(
        "--render-he",
        type=float,
        default=0.0,
        metavar="P",
        help="probability of rendering a patch of any modality (fluorescence, "
        "brightfield) as H&E, so nuclei of one teach the other; default 0: off",
    )
    fit.add_argument(
        "--norm-batches",
        type=int,
        default=8,
        metavar="N",
        help="batches over which batch-norm statistics are re-estimated before each "
        "validation; default 8",
    )
    fit.add_argument(
        "--folds",
        type=int,
        metavar="K",
        help="cross-validate over whole images in K folds with the fixed schedule (the last "
        "epoch of each), then train on every image and record the cross-validated Dice in "
        "the card (K + 1 trainings)",
    )
    fit.add_argument("--seed", type=int, default=0)
    fit.add_argument("--device", default="auto", help="auto, cpu, cuda, mps")
    fit.add_argument("--precision", choices=("auto", "fp32", "bf16"), default="auto")
    fit.add_argument(
        "--resume",
        action="store_true",
        help="continue an interrupted run (with --folds: skip the folds done, resume the "
        "one under way, then the final training)",
    )
    add_json_option(train, help="print a JSON summary only")
    train.set_defaults(run=run)
    return train
