"""No command writes over one of its inputs; killed runs' temporaries are cleaned."""

from __future__ import annotations

import hashlib
import os
import shutil
import time
from pathlib import Path

import numpy as np
import pytest

from slide_unet import cli
from slide_unet.core.atomic import STALE_SECONDS, clean_stale_temporaries
from slide_unet.core.errors import InputError
from slide_unet.core.inference.segment import segment

ROOT = Path(__file__).resolve().parents[2]
SAMPLE = ROOT / "sample_data" / "kidney_pas.ome.tif"
RLE = ROOT / "sample_data" / "kidney_pas_mask.csv"


def _digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.fixture
def slide(tmp_path: Path) -> Path:
    copy = tmp_path / "slide.ome.tif"
    shutil.copy(SAMPLE, copy)
    return copy


def _refused(argv: list[str], capsys) -> str:
    assert cli.main(argv) == 1
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1, err
    assert "would write over the input" in err
    return err


def test_segment_refuses_to_write_the_mask_over_its_slide(slide, capsys) -> None:
    before = _digest(slide)
    _refused(["segment", str(slide), "-o", str(slide)], capsys)
    _refused(
        ["segment", str(slide), "-o", str(slide.parent / "m.ome.tif"), "--rle", str(slide)], capsys
    )
    assert _digest(slide) == before
    assert sorted(p.name for p in slide.parent.iterdir()) == ["slide.ome.tif"]


def test_a_hard_link_or_another_path_to_the_input_is_the_input(slide, capsys) -> None:
    before = _digest(slide)
    linked = slide.parent / "linked.ome.tif"
    os.link(slide, linked)
    _refused(["segment", str(slide), "-o", str(linked)], capsys)
    (slide.parent / "dir").symlink_to(slide.parent)
    _refused(["segment", str(slide), "-o", str(slide.parent / "dir" / slide.name)], capsys)
    _refused(["segment", str(slide.parent / "." / slide.name), "-o", str(slide)], capsys)
    assert _digest(slide) == before


def test_export_refuses_to_write_over_the_image_or_the_mask(slide, tmp_path, capsys) -> None:
    before = _digest(slide)
    _refused(["export", str(RLE), "-o", str(slide), "--image", str(slide)], capsys)
    mask = tmp_path / "mask.csv"
    shutil.copy(RLE, mask)
    _refused(["export", str(mask), "-o", str(mask), "--image", str(slide)], capsys)
    assert _digest(slide) == before


def test_the_python_api_refuses_too(slide) -> None:
    before = _digest(slide)
    with pytest.raises(InputError, match="would write over the input"):
        segment(str(slide), "glomeruli", out=slide, device="cpu")
    assert _digest(slide) == before


def test_a_killed_runs_temporaries_are_cleaned_by_the_next_run(tmp_path: Path) -> None:
    dead = tmp_path / ".mask.ome.tif.tmp-999999999-abcd1234"  # no such process
    dead.mkdir()
    (dead / "mask.zarr").mkdir()
    mine = tmp_path / f".other.zarr.tmp-{os.getpid()}-abcd1234"  # a running writer's
    mine.mkdir()
    old = tmp_path / f".old.csv.tmp-{os.getppid()}-abcd1234"  # alive, but a day old
    old.write_text("x")
    week = time.time() - 7 * STALE_SECONDS
    os.utime(old, (week, week))
    keep = tmp_path / ".hidden.tmp-notours"  # not of this program's making
    keep.write_text("x")
    out = tmp_path / "m.ome.tif"
    segment(str(SAMPLE), "glomeruli", region=(0, 256, 0, 256), out=out, device="cpu")
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(
        ["m.ome.tif", mine.name, keep.name]
    )
    assert clean_stale_temporaries(tmp_path / "missing") == []


def test_export_mask_in_python_refuses_to_write_over_its_source(tmp_path: Path) -> None:
    from slide_unet.core.masks.io import export_mask, write_mask

    source = tmp_path / "mask.ome.tif"
    write_mask(np.eye(64, dtype=np.uint8), source)
    before = source.read_bytes()
    os.link(source, tmp_path / "link.ome.tif")
    for dst in (source, tmp_path / "link.ome.tif", tmp_path / "." / "mask.ome.tif"):
        with pytest.raises(InputError, match="write over the input"):
            export_mask(source, dst)
    assert source.read_bytes() == before
