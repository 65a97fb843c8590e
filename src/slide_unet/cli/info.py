"""``slide-unet info``: a slide's levels, shapes, dtype and pixel size."""

from __future__ import annotations

import argparse
import json
from typing import TYPE_CHECKING, Any

from slide_unet.cli.common import add_json_option, progress_bar

if TYPE_CHECKING:
    from slide_unet.core.slide.slide import Slide

__all__ = ["add_parser", "print_info", "run", "slide_info"]


def slide_info(slide: Slide) -> dict[str, Any]:
    """What ``info`` reports of a slide, JSON-ready."""
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


def print_info(info: dict[str, Any]) -> None:
    """:func:`slide_info` as text."""
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


def run(args: argparse.Namespace) -> int:
    """Print a slide's levels, shapes, dtype and pixel size."""
    from slide_unet.core.slide.slide import open_slide

    with open_slide(args.slide) as slide:
        if args.overviews and slide.needs_overviews:
            slide.build_overviews(progress=progress_bar("building overviews"))
        info = slide_info(slide)
    if args.json:
        print(json.dumps(info, indent=2))
    else:
        print_info(info)
    return 0


def add_parser(commands: Any) -> argparse.ArgumentParser:
    """Register ``info`` on the subcommands of ``slide-unet``."""
    info = commands.add_parser("info", help="levels, shapes, dtype and pixel size of a slide")
    info.add_argument("slide", help="TIFF, OME-TIFF, SVS, PNG or JPEG file")
    info.add_argument(
        "--overviews",
        action="store_true",
        help="build and cache the overview levels of a large single-level slide",
    )
    add_json_option(info)
    info.set_defaults(run=run)
    return info
