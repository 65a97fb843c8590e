"""``slide-unet segment``: segment a slide (or a region of it) and write the mask."""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

from slide_unet.cli.common import add_device_option, add_json_option, progress_bar, region_arg

__all__ = ["add_parser", "run"]


def run(args: argparse.Namespace) -> int:
    """Segment a slide (or a region of it) and write the mask."""
    import time
    import warnings

    from slide_unet.core.errors import PlaceholderModelWarning

    output = Path(args.output)
    options: dict[str, Any] = {
        "region": args.region,
        "mpp": args.mpp,
        "device": args.device,
        "tile": args.tile,
        "threshold": args.threshold,
        "batch_size": args.batch_size,
        "tta": args.tta,
        "min_object_um2": args.min_object_um2,
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
                args.model,
                out=output,
                workers=args.workers,
                scheduler=args.scheduler,
                **options,
            )
        else:
            from slide_unet.core.inference.segment import segment

            segment(args.slide, args.model, out=output, **options)
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
    segment.add_argument(
        "--model", default="glomeruli", help="bundled or user model name, or a model file"
    )
    add_device_option(segment)
    segment.add_argument("--region", type=region_arg, help="Y0:Y1,X0:X1 in full-resolution pixels")
    segment.add_argument(
        "--mpp", type=float, help="input pixel size (µm) when the file does not record one"
    )
    segment.add_argument("--rle", help="also write the mask as a Kaggle RLE CSV")
    segment.add_argument("--tile", type=int, help="tile side at the model's working scale")
    segment.add_argument("--batch-size", type=int, help="tiles per batch")
    segment.add_argument("--threshold", type=float, help="probability threshold")
    segment.add_argument(
        "--tta",
        action="store_true",
        help="test-time augmentation: average the 8 rotations and flips of each tile (8x slower)",
    )
    segment.add_argument(
        "--min-object-um2",
        type=float,
        default=0.0,
        metavar="AREA",
        help="remove objects smaller than AREA µm² (pixels if the pixel size is unknown)",
    )
    scale = segment.add_mutually_exclusive_group()
    scale.add_argument("--workers", type=int, help="run on a local cluster of N processes")
    scale.add_argument("--scheduler", help="run on an existing dask.distributed cluster")
    add_json_option(segment)
    segment.set_defaults(run=run)
    return segment
