"""Hostile slides (issue 15): small files that declare huge images, pixel sizes
out of any microscope's range, pyramids whose levels lie.

Each is segmented through the command line in a child process that must
finish within 60 s of CPU time and 1.5 GB (both measured by the
child), with exit 0 and the right result or exit 1 and one line naming the file.
"""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
import time
import warnings
from pathlib import Path

import numpy as np
import pytest
import tifffile
from hostile_slide_files import (
    deflated_zeros,
    write_png_header,
    write_raw_tiff,
)
from hypothesis import given
from hypothesis import strategies as st
from PIL import Image

import slide_unet
from slide_unet.core.errors import InputError, LimitError, SlideError
from slide_unet.core.inference.planning import plan_segmentation
from slide_unet.core.limits import MEMORY_BUDGET_ENV, MPP_RANGE, check_mpp
from slide_unet.core.slide.files import pyramid_problems
from slide_unet.core.slide.slide import open_slide

SAMPLE = Path(__file__).resolve().parents[3] / "sample_data" / "kidney_pas.ome.tif"
SECONDS = 60
PEAK_MB = 1536
#: The wall-clock safety net: the bound is on the child's CPU time, which other
#: work on a shared machine does not stretch (a hang spins, and is caught too).
WALL_SECONDS = 4 * SECONDS

#: Run in the child: the command line's exit status, and its own peak memory.
_CHILD = """
import json, resource, sys, warnings
warnings.simplefilter("ignore")
resource.setrlimit(resource.RLIMIT_AS, (6 * 2**30, 6 * 2**30))  # the machine's safety net
from slide_unet import cli
try:
    status = cli.main(sys.argv[1:])
except SystemExit as exc:  # argparse
    status = exc.code
except MemoryError:
    status = "MemoryError"
usage = resource.getrusage(resource.RUSAGE_SELF)
cpu = usage.ru_utime + usage.ru_stime
# VmHWM, not ru_maxrss: that one survives exec, so it counts the forking parent too.
with open("/proc/self/status") as status_file:
    hwm = next(line for line in status_file if line.startswith("VmHWM:"))
peak_mb = int(hwm.split()[1]) / 1024
print("\\n" + json.dumps({"status": status, "peak_mb": peak_mb, "cpu": cpu}))
"""


def run_cli(*args: str | Path) -> tuple[object, list[str], float, float]:
    """``slide-unet ARGS`` in a child: (exit status, error lines, CPU seconds, peak MB)."""
    src = str(Path(slide_unet.__file__).resolve().parents[1])
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([src, os.environ.get("PYTHONPATH", "")])}
    env.pop(MEMORY_BUDGET_ENV, None)
    started = time.perf_counter()
    try:
        done = subprocess.run(
            [sys.executable, "-c", _CHILD, *map(str, args)],
            capture_output=True,
            text=True,
            env=env,
            timeout=WALL_SECONDS,
            check=False,
        )
    except subprocess.TimeoutExpired:
        pytest.fail(f"slide-unet {' '.join(map(str, args))} ran past {WALL_SECONDS} s")
    wall = time.perf_counter() - started
    lines = done.stdout.strip().splitlines()
    assert lines, done.stderr[-3000:]
    result = json.loads(lines[-1])
    errors = [line for line in done.stderr.splitlines() if "error" in line.lower()]
    assert "Traceback" not in done.stderr, done.stderr[-3000:]
    assert wall < WALL_SECONDS
    return result["status"], errors, result["cpu"], result["peak_mb"]


def segment_region(slide: Path, out: Path, *extra: str) -> tuple[object, list[str]]:
    """Segment a 512 x 512 region of ``slide`` into ``out`` within the time and memory."""
    status, errors, seconds, peak_mb = run_cli(
        "segment", slide, "-o", out, "--region", "0:512,0:512", *extra
    )
    assert seconds < SECONDS
    assert peak_mb < PEAK_MB, f"{slide.name}: peak {peak_mb:.0f} MB"
    return status, errors


# -- decompression bombs ----------------------------------------------------------


def _png_50000(folder: Path) -> Path:
    return write_png_header(folder / "bomb.png", 50_000, 50_000)


def _strip(side: int, rows_stored: int) -> object:
    def write(folder: Path) -> Path:
        data = deflated_zeros(rows_stored * side * 3)
        return write_raw_tiff(
            folder / f"strip{side}.tif", side, side, [data], samples=3, deflated=True
        )

    return write


@pytest.mark.parametrize(
    ("write", "message"),
    [
        pytest.param(_png_50000, MEMORY_BUDGET_ENV, id="png-50000-declared"),
        pytest.param(_strip(20_000, 16), "truncated or corrupt", id="strip-20000-short"),
        pytest.param(_strip(200_000, 1), "truncated or corrupt", id="strip-200000-short"),
    ],
)
def test_a_file_declaring_more_than_it_holds_is_refused_in_one_line(write, message, tmp_path):
    slide = write(tmp_path)
    assert slide.stat().st_size < 2_000_000
    out = tmp_path / "mask.ome.tif"
    status, errors = segment_region(slide, out)
    assert status == 1
    assert len(errors) == 1, errors
    assert slide.name in errors[0]
    assert message in errors[0]
    assert not out.exists()


def test_tiles_with_no_bytes_read_as_background_without_decoding_them(tmp_path):
    # 65,536² RGB in four empty 32,768² tiles: 12 GiB declared, 184 bytes on disk.
    slide = write_raw_tiff(
        tmp_path / "empty.tif", 65_536, 65_536, [b""] * 4, samples=3, tile=(32_768, 32_768)
    )
    assert slide.stat().st_size < 1000
    out = tmp_path / "mask.zarr"
    status, errors = segment_region(slide, out)
    assert (status, errors) == (0, [])
    mask = np.asarray(slide_unet.read_mask(out))
    assert mask.shape == (512, 512)
    assert not mask.any()


def test_a_whole_deflated_strip_is_decoded_only_as_far_as_the_region_needs(tmp_path):
    # One strip of 20,000² RGB zeros: 1.1 GB decoded whole (over the budget), 1.2 MB stored.
    data = deflated_zeros(20_000 * 20_000 * 3)
    slide = write_raw_tiff(
        tmp_path / "strip.tif", 20_000, 20_000, [data], samples=3, deflated=True
    )
    out = tmp_path / "mask.zarr"
    status, errors = segment_region(slide, out)
    assert (status, errors) == (0, [])
    assert np.asarray(slide_unet.read_mask(out)).shape == (512, 512)


@pytest.mark.parametrize("compression", [None, "zlib", "adobe_deflate"])
@pytest.mark.parametrize("layout", ["one-strip", "strips", "tiles"])
def test_large_strips_and_tiles_read_by_rows_give_the_same_pixels(compression, layout, tmp_path):
    from slide_unet.core.slide import tiff_level

    rng = np.random.default_rng(7)
    image = rng.integers(0, 256, (301, 203, 3), dtype=np.uint8)
    options = {
        "one-strip": {"rowsperstrip": 301},
        "strips": {"rowsperstrip": 70},
        "tiles": {"tile": (64, 96)},
    }[layout]
    path = tmp_path / "a.tif"
    tifffile.imwrite(path, image, photometric="rgb", compression=compression, **options)
    # Make these chunks count as large, so that they are read row by row.
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(tiff_level, "LARGE_CHUNK_BYTES", 1000)
        patch.setattr(tiff_level, "SPLIT_CHUNK_PIXELS", 30 * 30)
        patch.setattr(tiff_level, "TARGET_CHUNK_SIDE", 40)
        with open_slide(path) as slide:
            assert slide._source._readers[0].rows is not None
            level = slide.levels[0]
            assert len(level.chunks[0]) > 1
            np.testing.assert_array_equal(level.compute(), image)
            for _ in range(20):
                y0, x0 = rng.integers(0, 300), rng.integers(0, 202)
                y1, x1 = rng.integers(y0 + 1, 302), rng.integers(x0 + 1, 204)
                np.testing.assert_array_equal(level[y0:y1, x0:x1].compute(), image[y0:y1, x0:x1])


def test_a_png_over_the_budget_is_refused_when_read_and_pillow_keeps_its_guard(tmp_path):
    guard = Image.MAX_IMAGE_PIXELS
    bomb = _png_50000(tmp_path)
    with open_slide(bomb) as slide:
        assert slide.shape == (50_000, 50_000, 3)
        with pytest.raises(LimitError, match=MEMORY_BUDGET_ENV) as caught:
            slide.levels[0][:512, :512].compute()
    assert str(bomb) in str(caught.value)
    assert guard == Image.MAX_IMAGE_PIXELS
    # Pillow's own guard stays on, at a bound of ours: a header beyond any slide.
    huge = write_png_header(tmp_path / "huge.png", 3_000_000, 3_000_000)
    with pytest.raises(SlideError, match="too large"):
        open_slide(huge)


# -- pixel sizes ------------------------------------------------------------------


@pytest.mark.parametrize("value", ["-1", "inf", "nan", "1e9", "1e-6"])
def test_a_pixel_size_out_of_range_from_the_user_is_refused(value, tmp_path):
    slide = tmp_path / "small.tif"
    tifffile.imwrite(slide, np.full((512, 512, 3), 200, np.uint8), photometric="rgb")
    out = tmp_path / "mask.ome.tif"
    status, errors = segment_region(slide, out, f"--mpp={value}")
    assert status in (1, 2)
    assert len(errors) == 1, errors
    assert "0.01" in errors[0]
    assert "100" in errors[0]
    assert not out.exists()


@pytest.mark.parametrize("value", [-1.0, 0.0, math.nan, math.inf, 1e9, 1e-6, True, "0.5"])
def test_the_api_refuses_a_pixel_size_out_of_range_before_any_work(value):
    image = np.zeros((64, 64, 3), np.uint8)
    started = time.perf_counter()
    with pytest.raises(InputError, match="pixel size"):
        plan_segmentation(image, mpp=value)
    assert time.perf_counter() - started < 10


@given(st.floats(allow_nan=True, allow_infinity=True))
def test_check_mpp_accepts_exactly_the_stated_range(value):
    low, high = MPP_RANGE
    if low <= value <= high:
        assert check_mpp(value) == value
    else:
        with pytest.raises(InputError):
            check_mpp(value)


def _ome_tiny_pixels(folder: Path) -> Path:
    path = folder / "tiny.ome.tif"
    image = np.full((512, 512, 3), 200, np.uint8)
    metadata = {"axes": "YXS", "PhysicalSizeX": 1e-6, "PhysicalSizeY": 1e-6}
    tifffile.imwrite(path, image, photometric="rgb", metadata=metadata)
    return path


def _resolution_tiny_pixels(folder: Path) -> Path:
    # 4e9 pixels a centimetre: 2.5e-6 µm a pixel.
    chunk = bytes(512 * 512 * 3)
    return write_raw_tiff(
        folder / "tiny.tif", 512, 512, [chunk], samples=3, pixels_per_cm=4 * 10**9
    )


@pytest.mark.parametrize("write", [_ome_tiny_pixels, _resolution_tiny_pixels], ids=["ome", "tags"])
def test_a_pixel_size_out_of_range_in_a_file_is_ignored_with_a_warning(write, tmp_path):
    slide = write(tmp_path)
    with pytest.warns(UserWarning, match=r"outside 0.01-100 µm and is ignored"):
        opened = open_slide(slide)
    with opened:
        assert opened.mpp is None
    out = tmp_path / "mask.zarr"
    status, errors = segment_region(slide, out)
    assert (status, errors) == (0, [])
    assert np.asarray(slide_unet.read_mask(out)).shape == (512, 512)


# -- pyramids that lie ------------------------------------------------------------


def _write_pyramid(path: Path, levels: list[np.ndarray]) -> Path:
    with tifffile.TiffWriter(path, ome=True) as tif:
        options = {"photometric": "rgb", "tile": (256, 256), "compression": "zlib"}
        metadata = {"axes": "YXS", "PhysicalSizeX": 0.5, "PhysicalSizeY": 0.5}
        tif.write(levels[0], subifds=len(levels) - 1, metadata=metadata, **options)
        for level in levels[1:]:
            tif.write(level, subfiletype=1, **options)
    return path


def test_pyramid_levels_that_are_not_halvings_of_level_0_are_ignored(tmp_path):
    with open_slide(SAMPLE) as proper:
        good = [np.asarray(level) for level in proper.levels]
    assert [g.shape[0] for g in good] == [2048, 1024, 512, 256]
    # Level 2 (what the model reads at 0.5 µm) is taller than level 1 and blank;
    # level 3 is not level 0 halved (its height is off by 40%).
    lying = [
        good[0],
        good[1],
        np.zeros((1500, 512, 3), np.uint8),
        np.zeros((360, 256, 3), np.uint8),
    ]
    slide = _write_pyramid(tmp_path / "lying.ome.tif", lying)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        with open_slide(slide) as opened:
            assert [level.shape[0] for level in opened.levels] == [2048, 1024]
    said = [str(w.message) for w in caught if "pyramid level" in str(w.message)]
    assert len(said) == 2, said
    assert all("ignored" in s for s in said)
    assert all(slide.name in s for s in said)

    # The same levels 0 and 1 without the lying ones: what the model must see.
    proper = _write_pyramid(tmp_path / "proper.ome.tif", good[:2])
    region = ("--region", "0:1024,0:1024")
    reference, hostile = tmp_path / "reference.zarr", tmp_path / "hostile.zarr"
    assert run_cli("segment", proper, "-o", reference, *region)[0] == 0
    status, errors, seconds, peak_mb = run_cli("segment", slide, "-o", hostile, *region)
    assert (status, errors) == (0, [])
    assert seconds < SECONDS
    assert peak_mb < PEAK_MB
    want = np.asarray(slide_unet.read_mask(reference))
    assert np.count_nonzero(want) > 10_000  # glomeruli found, not a blank level
    np.testing.assert_array_equal(np.asarray(slide_unet.read_mask(hostile)), want)


@pytest.mark.parametrize(
    ("shapes", "ignored"),
    [
        ([(1000, 800), (500, 400), (250, 200)], []),
        ([(1001, 799), (500, 400), (251, 199), (125, 100)], []),  # scanners round their own way
        ([(1000, 800), (1200, 400)], [1]),  # taller than the level before
        ([(1000, 800), (500, 400), (600, 300)], [2]),
        ([(1000, 800), (700, 400)], [1]),  # not a downsample of level 0
        ([(1000, 800), (1000, 800)], [1]),  # not smaller
        ([(1000, 800, 3), (500, 400, 4)], [1]),  # other channels
        ([(1000, 800), (0, 400)], [1]),
    ],
)
def test_pyramid_problems_name_the_levels_to_ignore(shapes, ignored):
    assert sorted(pyramid_problems(shapes)) == ignored


def test_an_array_pyramid_given_to_the_api_loses_its_inconsistent_levels():
    from slide_unet.core.inference.planning import open_source

    levels = [np.zeros((512, 512), np.uint8), np.zeros((600, 256), np.uint8)]
    with pytest.warns(UserWarning, match="pyramid level 1"), open_source(levels) as src:
        assert len(src.levels) == 1


def test_the_command_line_says_a_warning_in_one_line(tmp_path, capsys):
    """Python's default shows the warning's file, line number and source line."""
    from slide_unet.cli import main

    slide = _ome_tiny_pixels(tmp_path)
    assert main(["info", str(slide)]) == 0
    said = [line for line in capsys.readouterr().err.splitlines() if line.strip()]
    assert len(said) == 1, said
    assert said[0].startswith("slide-unet info: warning: ")
    assert "outside 0.01-100 µm and is ignored" in said[0]
