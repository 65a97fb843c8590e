"""``slide-unet segment``: segment a slide (or a region of it) and write the mask."""

from __future__ import annotations

import argparse
import json
from dataclasses import fields
from pathlib import Path
from typing import Any

from slide_unet.cli.common import (
    add_json_option,
    add_segment_options,
    progress_bar,
    region_arg,
)

__all__ = ["add_parser", "run"]


def run(args: argparse.Namespace) -> int:
    """Segment a slide (or a region of it) and write the mask."""
    import time
    import warnings

    from slide_unet.core.errors import PlaceholderModelWarning
    from slide_unet.core.inference.options import SegmentOptions

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
    with warnings.catch_warnings():
        if args.json:  # the placeholder warning still goes to stderr otherwise
            warnings.simplefilter("ignore", PlaceholderModelWarning)
        if args.workers or args.scheduler:
            from slide_unet.core.inference.distributed import segment_distributed

            segment_distributed(
                args.slide,
                chosen.model,
                out=output,
                workers=args.workers,
                scheduler=args.scheduler,
                **options,
            )
        else:
            from slide_unet.core.inference.segment import segment

            segment(args.slide, chosen.model, out=output, **options)
    seconds = time.perf_counter() - started
    if args.rle:
        from slide_unet.core.masks.io import export_mask

        export_mask(output, args.rle, image_id=Path(args.slide).name.split(".")[0])
    result = {"slide": args.slide, "output": str(output), "rle": args.rle, "seconds": seconds}
    if args.json:
        print(json.dumps(result, indent=2))
    else:
        extra = f" and {args.rle}" if args.rle else ""
        print(f"wrote {output}{extra} in {seconds:.1f} s")
    return 0


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
    add_segment_options(segment)  # --model, --device, --precision, --tile, ...
    scale = segment.add_mutually_exclusive_group()
    scale.add_argument("--workers", type=int, help="run on a local cluster of N processes")
    scale.add_argument("--scheduler", help="run on an existing dask.distributed cluster")
    add_json_option(segment)
    segment.set_defaults(run=run)
    return segment
