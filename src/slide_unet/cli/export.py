"""``slide-unet export``: convert a mask between formats."""

from __future__ import annotations

import argparse
import json
from typing import Any

from slide_unet.cli.common import (
    MASK_FORMATS,
    add_geojson_options,
    add_json_option,
    geojson_classes_note,
    progress_bar,
    shape_arg,
)

__all__ = ["add_parser", "run"]


def run(args: argparse.Namespace) -> int:
    """Convert a mask between formats (by the output's extension)."""
    from slide_unet.core.masks.io import check_same_shape, export_mask, mask_suffix, read_mask
    from slide_unet.core.slide.slide import open_slide

    shape, mpp = args.shape, args.mpp
    sizeless = mask_suffix(args.mask) in (".csv", ".geojson", ".json")
    if args.image is not None:
        with open_slide(args.image) as slide:
            if not sizeless:  # the mask records its size: it must be the slide's
                check_same_shape(
                    read_mask(args.mask), slide.shape, ("mask", f"image {args.image}")
                )
            shape = shape or slide.shape[:2]
            # RLE and GeoJSON record no pixel size: the slide's is the mask's.
            if mpp is None and sizeless:
                mpp = slide.mpp
    measure_objects = None
    if args.measurements:
        from slide_unet.core.objects.qupath import feature_measurements

        def measure_objects(mask: Any, mask_mpp: float | None) -> Any:
            return feature_measurements(mask, mpp=mask_mpp)

    note = geojson_classes_note(args.mask, args.classification)
    written = export_mask(
        args.mask,
        args.output,
        image_id=args.id,
        shape=shape,
        mpp=mpp,
        object_type=args.object_type,
        measure_objects=measure_objects,
        read_classification=args.classification,
        progress=progress_bar("exporting"),
    )
    if args.json:
        print(json.dumps({"input": str(args.mask), "output": str(written)}))
    else:
        print(f"wrote {written}" + (f" ({note})" if note else ""))
    return 0


def add_parser(commands: Any) -> argparse.ArgumentParser:
    """Register ``export`` on the subcommands of ``slide-unet``."""
    export = commands.add_parser(
        "export",
        help="convert a mask between formats",
        description=f"Convert a mask; formats by extension: {MASK_FORMATS}. Written atomically.",
    )
    export.add_argument("mask", help="mask file (or OME-Zarr folder)")
    export.add_argument("-o", "--output", required=True, help="output file")
    export.add_argument("--id", help="row of an RLE CSV input (default: its only row)")
    export.add_argument("--shape", type=shape_arg, help="HEIGHT,WIDTH of an RLE or GeoJSON input")
    export.add_argument(
        "--image", help="slide whose size (and pixel size) an RLE or GeoJSON input has"
    )
    export.add_argument("--mpp", type=float, help="pixel size to record (µm)")
    export.add_argument(
        "--classification",
        metavar="NAME",
        help="of a GeoJSON input (QuPath's export), draw only the objects of this class "
        "('Unclassified': those without one); without it, several classes give a label "
        "mask, one value per class in sorted order (the output line says which)",
    )
    add_geojson_options(export)
    add_json_option(export)
    export.set_defaults(run=run)
    return export
