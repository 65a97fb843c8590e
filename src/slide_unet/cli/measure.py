"""``slide-unet measure``: one row per object of a mask, to CSV or Parquet.

With ``--review`` the rows come in the napari Review dock's order (the same
:mod:`slide_unet.core.objects.review` code: false positives and misses first
when ``--truth`` is given, then the least sure, the cut, the small), with
``review_rank`` and ``review_reason`` added."""

from __future__ import annotations

import argparse
import json
import time
from typing import Any

from slide_unet.cli.common import MASK_FORMATS, add_json_option, progress_bar, shape_arg

__all__ = ["add_parser", "run"]


def _mask_and_mpp(args: argparse.Namespace) -> tuple[Any, float | None]:
    """The mask, and its pixel size: ``--mpp``, else the mask file's, else the slide's."""
    from slide_unet.core.limits import check_mpp
    from slide_unet.core.masks.io import check_same_shape, mask_suffix, read_mask_with_mpp
    from slide_unet.core.slide.slide import open_slide

    mpp = check_mpp(args.mpp, "--mpp")
    shape, slide_mpp, slide_shape = args.shape, None, None
    if args.image is not None:
        with open_slide(args.image) as slide:
            slide_shape, slide_mpp = tuple(slide.shape[:2]), slide.mpp
        shape = shape or slide_shape
    mask, recorded = read_mask_with_mpp(args.mask, image_id=args.id, shape=shape)
    if slide_shape is not None and mask_suffix(args.mask) not in (".csv", ".geojson", ".json"):
        check_same_shape(mask, slide_shape, ("mask", f"image {args.image}"))
    return mask, mpp or recorded or slide_mpp


def _probabilities(args: argparse.Namespace, shape: tuple[int, ...]) -> Any:
    """The probabilities kept in the mask store ``args.mask`` is (None for any other
    mask, for a store without them, or with ``--no-probabilities``)."""
    from slide_unet.core.masks.store_layout import read_probability

    if args.no_probabilities:
        return None
    probabilities = read_probability(args.mask)
    if probabilities is None or tuple(probabilities.shape) != tuple(shape):
        return None
    return probabilities


def _truth(args: argparse.Namespace, shape: tuple[int, ...]) -> Any:
    """The ``--truth`` mask read at the mask's ``shape`` (lazily when big), or None."""
    from slide_unet.core.errors import InputError
    from slide_unet.core.masks.io import check_same_shape, read_mask

    if args.truth is None:
        for name, value in (
            ("--classification", args.classification),
            ("--truth-id", args.truth_id),
        ):
            if value is not None:
                raise InputError(f"{name} is for the --truth mask: pass --truth too")
        return None
    truth = read_mask(
        args.truth, image_id=args.truth_id, shape=shape, classification=args.classification
    )
    check_same_shape(truth, shape, (f"truth {args.truth}", f"mask {args.mask}"))
    return truth


def run(args: argparse.Namespace) -> int:
    """Measure every object of a mask and write the table (in review order with
    ``--review``)."""
    from slide_unet.core.errors import InputError
    from slide_unet.core.objects.table import check_table_path

    chosen = (args.truth, args.classification, args.truth_id)
    if not args.review and any(v is not None for v in chosen):
        raise InputError("--truth, --classification and --truth-id order a review: pass --review")
    check_table_path(args.output)  # before a long measurement
    start = time.perf_counter()
    mask, mpp = _mask_and_mpp(args)
    probabilities = _probabilities(args, tuple(mask.shape))
    if args.review:
        table, reasons = _review(args, mask, mpp, probabilities)
    else:
        from slide_unet.core.objects.measure import measure

        reasons = None
        table = measure(
            mask, mpp=mpp, probabilities=probabilities, progress=progress_bar("measuring")
        )
    written = table.write(args.output)
    seconds = time.perf_counter() - start
    if args.json:
        result = {
            "mask": str(args.mask),
            "output": str(written),
            "objects": len(table),
            "total_area": table.total_area,
            "unit": table.unit,
            "mpp": table.mpp,
            "probabilities": probabilities is not None,
            "seconds": round(seconds, 3),
        }
        if reasons is not None:
            result["review"] = reasons
        print(json.dumps(result))
        return 0
    if mpp:
        area = f"total area {table.total_area:.6g} µm²"
    else:
        area = f"total area {table.total_area:.0f} px (no pixel size: pass --mpp or --image)"
    kept = ", mean probabilities from the store" if probabilities is not None else ""
    order = ""
    if reasons is not None:
        counts = ", ".join(f"{n} {reason}" for reason, n in reasons.items() if n)
        order = f" in review order ({counts or 'nothing to review'})"
    print(
        f"{len(table)} objects, {area}{kept}, measured in {seconds:.1f} s; wrote {written}{order}"
    )
    return 0


def _review(
    args: argparse.Namespace, mask: Any, mpp: float | None, probabilities: Any
) -> tuple[Any, dict[str, int]]:
    """The table in review order, and how many rows of each ``review_reason``."""
    from slide_unet.core.objects.review import (
        REASONS,
        measure_for_review,
        review_queue,
        review_table,
    )

    truth = _truth(args, tuple(mask.shape))
    table, truths, hit, found = measure_for_review(
        mask, truth, mpp=mpp, probabilities=probabilities, progress=progress_bar("measuring")
    )
    entries = review_queue(table, truth=truths, hit=hit, found=found)
    ordered = review_table(table, entries, truths)
    reasons = dict.fromkeys(REASONS.values(), 0)
    for reason in ordered["review_reason"].tolist():
        reasons[reason] += 1
    return ordered, reasons


def add_parser(commands: Any) -> argparse.ArgumentParser:
    """Register ``measure`` on the subcommands of ``slide-unet``."""
    measure = commands.add_parser(
        "measure",
        help="one row per object of a mask (centroid, box, area, perimeter...) to CSV or Parquet",
        description="Measure every object (8-connected component) of a mask of any size, "
        "streaming: id, centroid, bounding box, area, equivalent diameter, perimeter, "
        "solidity, and, for a slide's mask store (the folder napari's Segment writes), "
        "the model's mean probability over each object as kept in the store. Lengths in "
        "µm and areas in µm² when the pixel size is known, else in pixels. Mask formats: "
        f"{MASK_FORMATS}. Written atomically.",
    )
    measure.add_argument("mask", help="mask file (or OME-Zarr folder)")
    measure.add_argument(
        "-o", "--output", required=True, help="table to write: .csv, or .parquet (needs pyarrow)"
    )
    measure.add_argument(
        "--image", help="the mask's slide: its pixel size (when the mask has none) and size"
    )
    measure.add_argument(
        "--mpp", type=float, help="pixel size in µm (default: the mask's, else the slide's)"
    )
    measure.add_argument("--id", help="row of an RLE CSV mask (default: its only row)")
    measure.add_argument(
        "--no-probabilities",
        action="store_true",
        help="leave mean_probability empty even when the mask store keeps probabilities",
    )
    measure.add_argument("--shape", type=shape_arg, help="HEIGHT,WIDTH of an RLE or GeoJSON mask")
    review = measure.add_argument_group(
        "review order",
        "write the rows in the order the napari Review dock walks them, with review_rank "
        "(1 first) and review_reason (false positive, miss, low probability, cut by a tile "
        "edge, small) added; a miss is a row of the truth's objects",
    )
    review.add_argument(
        "--review",
        action="store_true",
        help="order the rows for review: false positives and misses first (with --truth), "
        "then the lowest mean probability, objects cut by a tile edge, the smallest",
    )
    review.add_argument(
        "--truth", help="truth mask (any mask format, read at the mask's size) for --review"
    )
    review.add_argument(
        "--classification",
        help="QuPath class of a GeoJSON --truth to use ('Unclassified': those without one; "
        "default: every class)",
    )
    review.add_argument("--truth-id", help="row of an RLE CSV --truth (default: its only row)")
    add_json_option(measure)
    measure.set_defaults(run=run)
    return measure
