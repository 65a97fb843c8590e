"""Tests of ``slide-unet info``: what it prints, its JSON, and its errors."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
from PIL import Image

from slide_unet import __version__, cli
from slide_unet.cli import info as cli_info
from slide_unet.core.slide import overviews
from slide_unet.core.slide import slide as slide_module


@pytest.fixture(autouse=True)
def _private_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SLIDE_UNET_CACHE_DIR", str(tmp_path / "cache"))


@pytest.fixture
def pyramid(slides, tmp_path: Path) -> Path:
    return slides.write_ome_pyramid(
        tmp_path / "kidney.ome.tif", slides.rgb_image(600, 800), levels=3, mpp=0.25
    )


def test_info_prints_levels_and_pixel_size(
    pyramid: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert cli.main(["info", str(pyramid)]) == 0
    out, err = capsys.readouterr()
    assert err == ""
    lines = out.splitlines()
    assert lines[0] == f"kidney  ({pyramid})"
    assert lines[1] == "  RGB, uint8, pixel size 0.25 µm"
    assert lines[2:] == [
        "  level 0: 600 x 800 (1/1, 0.25 µm/px)",
        "  level 1: 300 x 400 (1/2, 0.5 µm/px)",
        "  level 2: 150 x 200 (1/4, 1 µm/px)",
    ]


def test_info_says_when_the_pixel_size_is_unknown(
    slides, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "gray.png"
    Image.fromarray(slides.gray_image(30, 40, "uint8")).save(path)
    assert cli.main(["info", str(path)]) == 0
    out = capsys.readouterr().out
    assert "YX, uint8, pixel size unknown" in out
    assert "level 0: 30 x 40 (1/1)" in out


def test_info_json_is_parseable_with_levels_and_mpp(
    pyramid: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert cli.main(["info", "--json", str(pyramid)]) == 0
    info = json.loads(capsys.readouterr().out)
    assert info["path"] == str(pyramid)
    assert info["name"] == "kidney"
    assert info["axes"] == "YXC"
    assert info["dtype"] == "uint8"
    assert info["rgb"] is True
    assert info["mpp"] == pytest.approx(0.25)
    assert [level["shape"] for level in info["levels"]] == [
        [600, 800, 3],
        [300, 400, 3],
        [150, 200, 3],
    ]
    assert [level["downsample"] for level in info["levels"]] == [1, 2, 4]
    assert [level["mpp"] for level in info["levels"]] == pytest.approx([0.25, 0.5, 1.0])
    assert info["overviews"] is None


def test_info_json_of_a_large_flat_slide_reports_its_overview_cache(
    slides, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setattr(slide_module, "OVERVIEW_THRESHOLD", 256)
    monkeypatch.setattr(overviews, "SMALLEST_SIDE", 128)
    monkeypatch.setattr(overviews, "BAND_ROWS", 128)
    monkeypatch.setattr(overviews, "CHUNK_SIDE", 64)
    path = slides.write_tiled(
        tmp_path / "flat.tif", slides.rgb_image(300, 500), tile=64, compression=None
    )

    assert cli.main(["info", "--json", str(path)]) == 0
    info = json.loads(capsys.readouterr().out)
    assert len(info["levels"]) == 1
    assert info["overviews"]["cached"] is False
    assert not Path(info["overviews"]["path"]).exists()

    assert cli.main(["info", "--overviews", "--json", str(path)]) == 0
    info = json.loads(capsys.readouterr().out)
    assert info["overviews"]["cached"] is True
    assert Path(info["overviews"]["path"]).is_dir()
    assert [level["shape"][:2] for level in info["levels"]] == [[300, 500], [150, 250], [75, 125]]

    assert cli.main(["info", str(path)]) == 0
    assert "overviews: cached" in capsys.readouterr().out


def _text_file(tmp: Path, slides: SimpleNamespace) -> Path:
    path = tmp / "notes.tif"
    path.write_text("not an image\n")
    return path


def _empty_file(tmp: Path, slides: SimpleNamespace) -> Path:
    path = tmp / "empty.svs"
    path.touch()
    return path


def _truncated_tiff(tmp: Path, slides: SimpleNamespace) -> Path:
    path = slides.write_tiled(tmp / "cut.tif", slides.rgb_image(256, 256), compression="zlib")
    path.write_bytes(path.read_bytes()[:-500])
    return path


def _complex(tmp: Path, slides: SimpleNamespace) -> Path:
    import tifffile

    path = tmp / "complex.tif"
    tifffile.imwrite(path, np.ones((8, 8), np.complex64))
    return path


@pytest.mark.parametrize(
    "make",
    [lambda tmp, slides: tmp / "missing.tif", _text_file, _empty_file, _truncated_tiff, _complex],
    ids=["missing", "text", "empty", "truncated", "complex64"],
)
@pytest.mark.parametrize("json_flag", [[], ["--json"]], ids=["text", "json"])
def test_info_on_a_bad_file_exits_1_with_one_line_naming_it(
    slides, tmp_path: Path, make, json_flag: list[str], capsys: pytest.CaptureFixture[str]
) -> None:
    path = make(tmp_path, slides)
    assert cli.main(["info", *json_flag, str(path)]) == 1
    out, err = capsys.readouterr()
    assert out == ""
    assert err.endswith("\n")
    assert len(err.splitlines()) == 1
    assert err.startswith("slide-unet info: error: ")
    assert str(path) in err
    assert "Traceback" not in err


def test_version_flag(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as caught:
        cli.main(["--version"])
    assert caught.value.code == 0
    assert capsys.readouterr().out.strip() == f"slide-unet {__version__}"


def test_info_needs_a_slide_argument(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as caught:
        cli.main(["info"])
    assert caught.value.code == 2
    assert "slide" in capsys.readouterr().err


def _console_script() -> list[str]:
    script = Path(sys.executable).parent / "slide-unet"
    if script.is_file():
        return [str(script)]
    found = shutil.which("slide-unet")
    return [found] if found else [sys.executable, "-m", "slide_unet.cli"]


def test_console_script_runs_info_in_a_real_process(slides, tmp_path: Path, pyramid: Path) -> None:
    bad = _text_file(tmp_path, slides)
    env = {**os.environ, "SLIDE_UNET_CACHE_DIR": str(tmp_path / "cache")}
    command = _console_script()

    good = subprocess.run(
        [*command, "info", "--json", str(pyramid)],
        capture_output=True,
        text=True,
        env=env,
        timeout=60,
        check=False,
    )
    assert good.returncode == 0, good.stderr
    info = json.loads(good.stdout)
    assert info["mpp"] == pytest.approx(0.25)
    assert len(info["levels"]) == 3

    failed = subprocess.run(
        [*command, "info", str(bad)],
        capture_output=True,
        text=True,
        env=env,
        timeout=60,
        check=False,
    )
    assert failed.returncode == 1
    assert failed.stdout == ""
    assert failed.stderr.startswith("slide-unet info: error: ")
    assert str(bad) in failed.stderr
    assert len(failed.stderr.splitlines()) == 1


def test_a_bug_shows_its_traceback_and_asks_for_a_report(
    pyramid: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    # A ValueError that is not a user's error (say, from numpy deep in a command)
    # once showed as one line with no traceback; it is a bug and must say so.
    def broken(slide: object) -> dict[str, object]:
        return {"levels": [int("not a number")]}

    monkeypatch.setattr(cli_info, "slide_info", broken)
    assert cli.main(["info", "--json", str(pyramid)]) == cli.BUG_EXIT_STATUS == 70
    err = capsys.readouterr().err
    assert err.startswith("Traceback (most recent call last):")
    assert "ValueError: invalid literal for int()" in err
    assert "in broken" in err
    assert err.splitlines()[-1].startswith("slide-unet info: internal error (napari-slide-unet")
    assert "This is a bug" in err.splitlines()[-1]


def test_user_errors_are_one_line_whatever_their_kind(
    pyramid: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    from slide_unet.core.errors import LimitError, StoreBusyError, WorkersDiedError

    for error in (
        LimitError("too big"),
        StoreBusyError("in use by process 7"),
        WorkersDiedError("died"),
    ):

        def failing(slide: object, error: Exception = error) -> dict[str, object]:
            raise error

        monkeypatch.setattr(cli_info, "slide_info", failing)
        assert cli.main(["info", "--json", str(pyramid)]) == 1
        err = capsys.readouterr().err
        assert err == f"slide-unet info: error: {error}\n"
