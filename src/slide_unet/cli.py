"""The ``slide-unet`` command: thin over :mod:`slide_unet.core`.

Every command exits non-zero with a one-line message on bad input, and
``--json`` prints machine-readable results.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from typing import Any

from slide_unet import __version__
from slide_unet.core.errors import SlideError
from slide_unet.core.slide import Slide, open_slide


class UsageError(Exception):
    """Bad command-line input, reported on one line."""


def _slide_info(slide: Slide) -> dict[str, Any]:
    return {
        "path": str(slide.path),
        "name": slide.name,
        "axes": slide.axes,
        "dtype": str(slide.dtype),
        "rgb": slide.rgb,
        "mpp": slide.mpp,
        "levels": [
            {"shape": list(level.shape), "downsample": round(d, 4), "mpp": slide.level_mpp(i)}
            for i, (level, d) in enumerate(zip(slide.levels, slide.downsamples, strict=True))
        ],
        "overviews": (
            None
            if slide.overview_cache is None
            else {"cached": not slide.needs_overviews, "path": str(slide.overview_cache.path)}
        ),
    }


def _print_info(info: dict[str, Any]) -> None:
    mpp = "unknown" if info["mpp"] is None else f"{info['mpp']:g} µm"
    colour = "RGB" if info["rgb"] else info["axes"]
    print(f"{info['name']}  ({info['path']})")
    print(f"  {colour}, {info['dtype']}, pixel size {mpp}")
    for i, level in enumerate(info["levels"]):
        shape = " x ".join(map(str, level["shape"][:2]))
        at = "" if level["mpp"] is None else f", {level['mpp']:.4g} µm/px"
        print(f"  level {i}: {shape} (1/{level['downsample']:g}{at})")
    if info["overviews"] is not None:
        state = "cached" if info["overviews"]["cached"] else "not built yet"
        print(f"  overviews: {state} ({info['overviews']['path']})")


def _progress_bar(label: str) -> Any:
    if not sys.stderr.isatty():
        return None

    def show(done: int, total: int) -> None:
        width = 30
        filled = width * done // max(total, 1)
        end = "\n" if done >= total else ""
        bar = "#" * filled + "-" * (width - filled)
        print(f"\r{label} [{bar}] {done}/{total}", end=end, file=sys.stderr, flush=True)

    return show


def cmd_info(args: argparse.Namespace) -> int:
    """Print a slide's levels, shapes, dtype and pixel size."""
    with open_slide(args.slide) as slide:
        if args.overviews and slide.needs_overviews:
            slide.build_overviews(progress=_progress_bar("building overviews"))
        info = _slide_info(slide)
    if args.json:
        print(json.dumps(info, indent=2))
    else:
        _print_info(info)
    return 0


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of ``slide-unet``."""
    parser = argparse.ArgumentParser(
        prog="slide-unet",
        description="Segment glomeruli and nuclei in gigapixel microscopy slides.",
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    info = commands.add_parser("info", help="levels, shapes, dtype and pixel size of a slide")
    info.add_argument("slide", help="TIFF, OME-TIFF, SVS, PNG or JPEG file")
    info.add_argument(
        "--overviews",
        action="store_true",
        help="build and cache the overview levels of a large single-level slide",
    )
    info.add_argument("--json", action="store_true", help="print JSON")
    info.set_defaults(run=cmd_info)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run ``slide-unet``; returns the exit status."""
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return int(args.run(args))
    except (SlideError, UsageError, ValueError, OSError) as exc:
        print(f"slide-unet {args.command}: error: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print(f"slide-unet {args.command}: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
