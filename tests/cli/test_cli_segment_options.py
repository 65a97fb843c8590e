"""``slide-unet segment``'s options come from SegmentOptions: help, defaults, --precision."""

from __future__ import annotations

import re

import pytest

from slide_unet import cli
from slide_unet.cli import build_parser
from slide_unet.core.inference import segment as segment_module
from slide_unet.core.inference.options import SegmentOptions


def _help(capsys: pytest.CaptureFixture[str]) -> str:
    with pytest.raises(SystemExit):
        build_parser().parse_args(["segment", "--help"])
    return " ".join(capsys.readouterr().out.split())  # unwrapped


def test_segment_help_shows_the_defaults(capsys: pytest.CaptureFixture[str]) -> None:
    text = _help(capsys)
    assert "(default: glomeruli)" in text
    assert re.search(r"--tile TILE .*default: the model card's, 512", text)
    assert re.search(r"--threshold THRESHOLD .*default: the model card's, 0.5", text)
    assert re.search(r"--device .*default: auto", text)


def test_segment_takes_precision(capsys: pytest.CaptureFixture[str]) -> None:
    args = build_parser().parse_args(["segment", "x.tif", "-o", "y.zarr", "--precision", "bf16"])
    assert args.precision == "bf16"
    assert "--precision {auto,fp32,bf16,fp16}" in _help(capsys)


def test_each_segment_option_is_a_flag_with_the_options_default() -> None:
    args = build_parser().parse_args(["segment", "x.tif", "-o", "y.zarr"])
    defaults = SegmentOptions()
    for name in ("model", "device", "precision", "tile", "batch_size", "threshold", "tta"):
        assert getattr(args, name) == getattr(defaults, name), name
    assert args.min_object_um2 == defaults.min_object_um2
    assert args.mpp == defaults.mpp


def test_segment_passes_every_option_to_the_engine(tmp_path, monkeypatch) -> None:
    seen = {}

    def fake_segment(source, model, **kwargs):
        seen.update(kwargs, source=source, model=model)

    monkeypatch.setattr(segment_module, "segment", fake_segment)
    argv = ["segment", "x.tif", "-o", str(tmp_path / "m.zarr"), "--model", "nuclei"]
    argv += ["--precision", "fp32", "--tile", "256", "--threshold", "0.7", "--tta"]
    assert cli.main(argv) == 0
    assert seen["model"] == "nuclei"
    assert seen["precision"] == "fp32"
    assert seen["tile"] == 256
    assert seen["threshold"] == 0.7
    assert seen["tta"] is True
    assert seen["tissue"] is True


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["--precision", "fp8"], "argument --precision: invalid choice: 'fp8'"),
        (["--no-such-flag"], "unrecognized arguments: --no-such-flag"),
    ],
)
def test_a_usage_error_prints_the_subcommands_usage(
    capsys: pytest.CaptureFixture[str], extra: list[str], message: str
) -> None:
    with pytest.raises(SystemExit) as exit_:
        cli.main(["segment", "x.tif", "-o", "y.zarr", *extra])
    assert exit_.value.code == 2
    err = capsys.readouterr().err
    assert err.startswith("usage: slide-unet segment ")
    assert f"slide-unet segment: error: {message}" in err
