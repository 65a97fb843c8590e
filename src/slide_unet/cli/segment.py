"""``slide-unet segment``: segment a slide (or a region of it) and write the mask."""

from __future__ import annotations

import argparse
import json
from dataclasses import fields
from pathlib import Path
from typing import Any

from slide_unet.cli.common import (
    add_geojson_options,
    add_json_option,
    add_segment_options,
    progress_bar,
    region_arg,
)

__all__ = ["add_parser", "run"]


def run(args: argparse.Namespace) -> int:
    """Segment a slide (or a region of it) and write the mask."""
    import shutil
    import tempfile
    import time

    from slide_unet.core.inference.options import SegmentOptions
    from slide_unet.core.masks.io import mask_suffix

    output = Path(args.output)
    # The fields with a flag; the others (tissue) keep their defaults.
    chosen = SegmentOptions(
        **{f.name: getattr(args, f.name) for f in fields(SegmentOptions) if "cli" in f.metadata}
    )
    options: dict[str, Any] = {
        **chosen.engine_kwargs(),
        "region": args.region,
        "progress": progress_bar("segmenting"),
    }
    started = time.perf_counter()
    scratch = None
    if mask_suffix(output) in (".geojson", ".json"):
        # Segmented into a store, then traced with the object table's measurements.
        output.parent.mkdir(parents=True, exist_ok=True)
        scratch = Path(tempfile.mkdtemp(prefix=".segment-", dir=output.parent))
    target = scratch / "mask.zarr" if scratch is not None else output
    try:
        _segment(args, chosen, options, target)
        if scratch is not None:
            _write_geojson(args, target, output)
        if args.rle:
            from slide_unet.core.masks.io import export_mask

            export_mask(target, args.rle, image_id=Path(args.slide).name.split(".")[0])
    finally:
        if scratch is not None:
            shutil.rmtree(scratch, ignore_errors=True)
    seconds = time.perf_counter() - started
    result = {"slide": args.slide, "output": str(output), "rle": args.rle, "seconds": seconds}
    if args.json:
        print(json.dumps(result, indent=2))
    else:
        extra = f" and {args.rle}" if args.rle else ""
        print(f"wrote {output}{extra} in {seconds:.1f} s")
    return 0


def _segment(args: argparse.Namespace, chosen: Any, options: dict[str, Any], out: Path) -> None:
    import warnings

    from slide_unet.core.errors import PlaceholderModelWarning

    with warnings.catch_warnings():
        if args.json:  # the placeholder warning still goes to stderr otherwise
            warnings.simplefilter("ignore", PlaceholderModelWarning)
        if args.workers or args.scheduler:
            from slide_unet.core.inference.distributed import segment_distributed

            segment_distributed(
                args.slide,
                chosen.model,
                out=out,
                workers=args.workers,
                scheduler=args.scheduler,
                **options,
            )
        else:
            from slide_unet.core.inference.segment import segment

            segment(args.slide, chosen.model, out=out, **options)


def _write_geojson(args: argparse.Namespace, store: Path, output: Path) -> None:
    """Trace the segmented store into ``output``, with measurements (in µm at the
    slide's pixel size, which the mask has) unless switched off."""
    from slide_unet.core.masks.io import export_mask
    from slide_unet.core.slide.slide import open_slide

    with open_slide(args.slide) as slide:
        mpp = slide.mpp

    measure_objects = None
    if args.measurements:
        from slide_unet.core.objects.qupath import feature_measurements

        def measure_objects(mask: Any, mpp: float | None) -> Any:
            return feature_measurements(mask, mpp=mpp)

    export_mask(
        store, output, mpp=mpp, object_type=args.object_type, measure_objects=measure_objects
    )


def add_parser(commands: Any) -> argparse.ArgumentParser:
    """Register ``segment`` on the subcommands of ``slide-unet``."""
    segment = commands.add_parser(
        "segment",
        help="segment a slide (or a region) with a U-Net and write the mask",
        description="Segment a slide tile by tile; OUT by extension: .ome.tif/.tif (tiled, "
        "pyramidal, pixel size kept), .zarr, .png (small only), .csv (Kaggle RLE), .geojson.",
    )
    segment.add_argument("slide", help="TIFF, OME-TIFF, SVS, PNG or JPEG file")
    segment.add_argument("-o", "--output", required=True, help="output mask file")
    segment.add_argument("--region", type=region_arg, help="Y0:Y1,X0:X1 in full-resolution pixels")
    segment.add_argument("--rle", help="also write the mask as a Kaggle RLE CSV")
    add_geojson_options(segment)
    add_segment_options(segment)  # --model, --device, --precision, --tile, ...
    scale = segment.add_mutually_exclusive_group()
    scale.add_argument("--workers", type=int, help="run on a local cluster of N processes")
    scale.add_argument("--scheduler", help="run on an existing dask.distributed cluster")
    add_json_option(segment)
    segment.set_defaults(run=run)
    return segment
