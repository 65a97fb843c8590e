"""``slide-unet evaluate``: score a model on a folder of images with expert masks.

Thin over :func:`slide_unet.core.training.evaluation.evaluate`; registered by
``slide_unet.cli.build_parser`` through :func:`add_parser`.
"""

from __future__ import annotations

import argparse
import json
import warnings
from typing import Any

from slide_unet.cli.common import add_device_option, add_json_option, progress_bar
from slide_unet.core.errors import UsageError

__all__ = ["add_parser", "run"]

#: How the table and JSON name where a pixel size came from.
_SOURCE_NAMES = {"argument": "--mpp"}


def _source(source: str) -> str:
    return _SOURCE_NAMES.get(source, source)


def _print_table(result: Any) -> None:
    width = max(len("image"), *(len(stem) for stem in result.per_image))
    print(
        f"{'image':<{width}}  {'Dice':>6}  {'IoU':>6}  {'TP':>4} {'FP':>4} {'FN':>4}"
        "  pixel size (source)"
    )
    for stem, value in result.per_image.items():
        size = result.mpp[stem]
        # No pixel size anywhere (a PNG, no --mpp, a card without a default): the
        # model ran at the image's own scale, which "unknown (unknown)" did not say.
        at = (
            "image's own scale"
            if size.mpp is None
            else f"{size.mpp:g} µm ({_source(size.source)})"
        )
        c = result.per_image_counts[stem]
        print(
            f"{stem:<{width}}  {value:>6.4f}  {result.per_image_iou[stem]:>6.4f}"
            f"  {c.true_positives:>4} {c.false_positives:>4} {c.false_negatives:>4}"
            f"  {at}"
        )
    n = result.n_images
    print(f"mean Dice {result.mean_dice:.4f} over {n} image{'s' if n != 1 else ''}")
    pooled = result.pooled
    print(f"pooled Dice {pooled.dice:.4f} (all pixels of all images together)")
    print(
        f"objects: precision {pooled.precision:.3f}  recall {pooled.recall:.3f}  "
        f"F1 {pooled.f1:.3f} (TP {pooled.true_positives}, FP {pooled.false_positives}, "
        f"FN {pooled.false_negatives}; matched at IoU >= 0.5)"
    )


def run(args: argparse.Namespace) -> int:
    """Segment every image of a folder that has a mask of the same stem, and print its Dice."""
    from slide_unet.core.devices import resolve_device
    from slide_unet.core.errors import PlaceholderModelWarning
    from slide_unet.core.model.store import load_model
    from slide_unet.core.training.evaluation import evaluate, held_out_stems

    if args.mpp is not None and not args.mpp > 0:
        raise UsageError(f"--mpp must be a positive number of µm per pixel, got {args.mpp:g}")
    device = resolve_device(args.device)
    with warnings.catch_warnings():
        if args.json:  # the placeholder warning still goes to stderr otherwise
            warnings.simplefilter("ignore", PlaceholderModelWarning)
        model = load_model(args.model, device=device)  # once, for the card and every image
        stems = None
        if args.held_out:
            stems = held_out_stems(model)
            if not stems:
                folds = (model.card.validation or {}).get("folds")
                why = (
                    f"it was trained on every image after {len(folds)}-fold cross-validation "
                    "(its card's validation.per_image holds each image's cross-validated Dice)"
                    if folds
                    else "its card has no training['validation_images']"
                )
                raise UsageError(
                    f"model {model.card.name!r} lists no held-out images ({why}): evaluate "
                    "without --held-out"
                )
        result = evaluate(
            model,
            args.images,
            args.masks,
            mpp=args.mpp,
            device=device,
            precision=args.precision,
            tta=args.tta,
            min_object_um2=args.min_object_um2,
            colour=args.colour,
            stems=stems,
            progress=progress_bar("evaluating"),
        )
    if args.json:
        out = result.as_dict()
        for size in out["mpp"].values():
            size["source"] = _source(size["source"])
        print(json.dumps(out, indent=2))
        return 0
    _print_table(result)
    if result.unpaired:
        names = ", ".join(result.unpaired[:5]) + (", ..." if len(result.unpaired) > 5 else "")
        print(f"({len(result.unpaired)} images without a mask were skipped: {names})")
    return 0


def add_parser(commands: Any) -> argparse.ArgumentParser:
    """Register ``evaluate`` on the sub-command parsers of ``slide-unet``."""
    evaluate = commands.add_parser(
        "evaluate",
        help="Dice of a model on a folder of images against their expert masks",
        description="Segment every image in IMAGES that has a mask of the same file stem in "
        "MASKS (any mask format; any non-zero pixel is foreground), with the engine of "
        "`segment`, and print per-image Dice, IoU and object counts, the mean Dice over images, "
        "the pooled Dice (all pixels together) and object precision/recall/F1. Pixel size: the "
        "file's, else --mpp, else the model card's default. An image whose mask and "
        "prediction are both empty scores 1.",
    )
    evaluate.add_argument(
        "--model", required=True, help="bundled or user model name, or a model file"
    )
    evaluate.add_argument("--images", required=True, help="folder of images")
    evaluate.add_argument("--masks", required=True, help="folder of masks named like the images")
    evaluate.add_argument(
        "--mpp", type=float, help="input pixel size (µm) of images whose file records none"
    )
    add_device_option(evaluate)
    evaluate.add_argument(
        "--precision",
        default="auto",
        choices=["auto", "fp32", "bf16", "fp16"],
        help="as for segment; fp32 reproduces a model card's validation figures exactly",
    )
    evaluate.add_argument(
        "--held-out",
        action="store_true",
        help="evaluate only the images the model card lists as held out from training",
    )
    evaluate.add_argument(
        "--tta", action="store_true", help="test-time augmentation, as for segment"
    )
    evaluate.add_argument(
        "--colour",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="match each image's colour to the model's training tissue, as segment does",
    )
    evaluate.add_argument(
        "--min-object-um2",
        type=float,
        default=None,
        metavar="AREA",
        help="remove objects smaller than AREA µm² before scoring, as for segment "
        "(default: the model card's, as segment's; 0 keeps all)",
    )
    add_json_option(evaluate)
    evaluate.set_defaults(run=run)
    return evaluate
