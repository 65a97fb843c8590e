"""The parser: every subcommand runs its own module's ``run``."""

from __future__ import annotations

import pytest

from slide_unet.cli import build_parser

COMMANDS = {
    "info": ["x.tif"],
    "segment": ["x.tif", "-o", "y.ome.tif"],
    "score": ["a.png", "b.png"],
    "export": ["a.png", "-o", "b.csv"],
    "measure": ["a.png", "-o", "b.csv"],
    "evaluate": ["--model", "m", "--images", "i", "--masks", "k"],
    "train": ["--images", "i", "--masks", "k", "-o", "o"],
    "finetune": ["--model", "m", "--images", "i", "--masks", "k", "-o", "o"],
}


@pytest.mark.parametrize("command", COMMANDS)
def test_each_subcommand_runs_its_modules_run(command: str) -> None:
    args = build_parser().parse_args([command, *COMMANDS[command]])
    assert callable(args.run)
    assert args.run.__module__ == f"slide_unet.cli.{command}"
    assert args.run.__name__ == "run"
