"""The ``evaluate`` text table."""

from __future__ import annotations

from types import SimpleNamespace

import pytest

from slide_unet.cli.evaluate import _print_table


def _result(mpp: float | None, source: str) -> SimpleNamespace:
    counts = SimpleNamespace(true_positives=3, false_positives=1, false_negatives=0)
    pooled = SimpleNamespace(
        dice=0.9,
        precision=0.75,
        recall=1.0,
        f1=0.86,
        true_positives=3,
        false_positives=1,
        false_negatives=0,
    )
    return SimpleNamespace(
        per_image={"a": 0.9},
        per_image_iou={"a": 0.8},
        per_image_counts={"a": counts},
        mpp={"a": SimpleNamespace(mpp=mpp, source=source)},
        n_images=1,
        mean_dice=0.9,
        pooled=pooled,
    )


def test_an_image_without_a_pixel_size_says_it_ran_at_its_own_scale(
    capsys: pytest.CaptureFixture[str],
) -> None:
    _print_table(_result(None, "unknown"))
    out = capsys.readouterr().out
    assert "unknown (unknown)" not in out
    assert "image's own scale" in out


def test_a_known_pixel_size_names_its_source(capsys: pytest.CaptureFixture[str]) -> None:
    _print_table(_result(0.5, "argument"))
    assert "0.5 µm (--mpp)" in capsys.readouterr().out
