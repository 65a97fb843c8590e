"""The ``slide-unet`` command line: one module per subcommand over :mod:`slide_unet.core`.

This module holds the parser and :func:`main`, the one place where errors become
exit statuses (``slide-unet`` and ``python -m slide_unet.cli`` run it). Each
subcommand is a module of this package with ``add_parser(commands)`` and
``run(args)``; what they share is in :mod:`slide_unet.cli.common`. Every command
exits 1 with a one-line message on bad input (a bug exits 70 with its traceback
and a request to report it), and ``--json`` prints machine-readable results.
"""

from __future__ import annotations

import argparse
import os
import sys
import traceback
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from slide_unet import __version__
from slide_unet.cli import (
    evaluate,
    export,
    export_model,
    finetune,
    info,
    measure,
    score,
    segment,
    train,
)
from slide_unet.core.errors import UserError

__all__ = ["BUG_EXIT_STATUS", "build_parser", "main"]

#: Exit status of a run that met a bug (sysexits' EX_SOFTWARE); bad input exits 1.
BUG_EXIT_STATUS = 70

#: The subcommands, in the order ``--help`` lists them.
COMMANDS = (info, segment, score, measure, export, evaluate, train, finetune, export_model)


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of ``slide-unet``."""
    parser = argparse.ArgumentParser(
        prog="slide-unet",
        description="Segment glomeruli and nuclei in gigapixel microscopy slides.",
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for command in COMMANDS:
        sub = command.add_parser(commands)
        sub.set_defaults(subparser=sub)  # for main's usage errors
    return parser


#: Arguments that name what a command reads, and what it writes: no command may
#: write over one of its inputs (a slide replaced by its mask, exit 0, was possible).
INPUT_ARGUMENTS = ("slide", "mask", "image", "pred", "truth", "images", "masks", "model")
OUTPUT_ARGUMENTS = ("output", "rle")


def _check_outputs(args: argparse.Namespace) -> None:
    from slide_unet.core.atomic import check_not_overwriting

    inputs: list[Any] = []
    for name in INPUT_ARGUMENTS:
        value = getattr(args, name, None)
        for item in value if isinstance(value, list) else [value]:
            if item is not None and Path(item).exists():  # a model may be a name
                inputs.append(item)
    check_not_overwriting([getattr(args, name, None) for name in OUTPUT_ARGUMENTS], inputs)


def _one_line_warning(command: str) -> Any:
    """Warnings as one line each, like errors (Python's default adds the file, line
    number and source line of the code that warned: noise to a user)."""

    def show(message: Any, category: Any, *args: Any, **kwargs: Any) -> None:
        print(f"slide-unet {command}: warning: {message}", file=sys.stderr)

    return show


def main(argv: Sequence[str] | None = None) -> int:
    """Run ``slide-unet``; returns the exit status."""
    parser = build_parser()
    args, unknown = parser.parse_known_args(argv)
    if unknown:  # said by the subcommand, with its usage, not the top level's
        args.subparser.error(f"unrecognized arguments: {' '.join(unknown)}")
    args.argv = list(sys.argv[1:] if argv is None else argv)
    try:
        with warnings.catch_warnings():
            warnings.showwarning = _one_line_warning(args.command)
            _check_outputs(args)
            return int(args.run(args))
    except BrokenPipeError:  # output piped into `head` and the like: not an error
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0
    except (UserError, OSError) as exc:  # bad input, or the file system's say: one line
        print(f"slide-unet {args.command}: error: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print(f"slide-unet {args.command}: interrupted", file=sys.stderr)
        return 130
    except Exception:  # a bug: the traceback is what a maintainer needs
        traceback.print_exc()
        print(
            f"slide-unet {args.command}: internal error (napari-slide-unet {__version__}). "
            "This is a bug, not something wrong with your input: please report it to the "
            "napari-slide-unet maintainers with the command line and the traceback above",
            file=sys.stderr,
        )
        return BUG_EXIT_STATUS
