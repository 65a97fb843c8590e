"""``slide-unet export-model``: a model as a bioimage.io model package."""

from __future__ import annotations

import argparse
import json
import sys
import time
from typing import Any

from slide_unet.cli.common import add_json_option

__all__ = ["add_parser", "run"]


def run(args: argparse.Namespace) -> int:
    """Write the package; with ``--check``, run ``bioimageio test`` on it."""
    from slide_unet.core.model.bioimageio_export import (
        check_bioimageio_package,
        export_bioimageio,
    )

    start = time.perf_counter()
    written = export_bioimageio(args.model, args.output, licence=args.licence)
    seconds = time.perf_counter() - start
    result: dict[str, Any] = {"model": args.model, "output": str(written), "seconds": seconds}
    if not args.json:
        print(f"wrote {written} ({seconds:.1f} s)", flush=True)
    status = 0
    if args.check:
        start = time.perf_counter()
        test = check_bioimageio_package(written)
        result |= {"test_status": test.status, "test_seconds": time.perf_counter() - start}
        if not test.passed:
            print(test.summary, file=sys.stderr)
            status = 1
        if not args.json:
            print(f"bioimageio test: {test.status} ({result['test_seconds']:.1f} s)")
    if args.json:
        print(json.dumps(result))
    return status


def add_parser(commands: Any) -> argparse.ArgumentParser:
    """Register ``export-model`` on the subcommands of ``slide-unet``."""
    parser = commands.add_parser(
        "export-model",
        help="write a model as a bioimage.io model package",
        description=(
            "Write a model as a bioimage.io model package (format 0.5, a zip): "
            "pytorch_state_dict weights with the U-Net's source, input and output axes, "
            "pixel size and halo, the card's normalisation, a test input and output, a cover, "
            "licence and attribution. Written atomically. Needs the bioimageio extra: "
            'pip install "napari-slide-unet[bioimageio]".'
        ),
    )
    parser.add_argument("model", metavar="NAME", help="model name or .safetensors/.json file")
    parser.add_argument("-o", "--output", required=True, help="the package to write (.zip)")
    parser.add_argument(
        "--licence", help="SPDX licence of the weights (default: the model card's)"
    )
    parser.add_argument(
        "--check",
        action="store_true",
        help="then run bioimageio.core's test on the package (exit 1 unless it passes)",
    )
    add_json_option(parser)
    parser.set_defaults(run=run)
    return parser
