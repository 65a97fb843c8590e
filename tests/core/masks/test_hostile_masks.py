"""Hostile mask files (issue 15): each is refused with one line naming the file
and what is wrong, or read right, within 60 s and 1.5 GB, through the command
line and the core API."""

from __future__ import annotations

import json
import os
import resource
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import zarr
from PIL import Image

import slide_unet
from slide_unet.core.errors import InputError, LimitError, MaskError
from slide_unet.core.limits import MEMORY_BUDGET_ENV
from slide_unet.core.masks.geojson import geojson_polygons
from slide_unet.core.masks.io import export_mask, read_mask, write_mask

#: The package under test, for the subprocesses.
SRC = Path(slide_unet.__file__).resolve().parents[1]
#: What a hostile file may take.
SECONDS, MEGABYTES = 60, 1536

SQUARE = [[10, 10], [50, 10], [50, 50], [10, 50], [10, 10]]


def _address_space() -> int | None:
    """Bytes of address space this process has mapped (Linux), else None."""
    try:
        with open("/proc/self/status") as fh:
            line = next(line for line in fh if line.startswith("VmSize:"))
    except (OSError, StopIteration):
        return None
    return int(line.split()[1]) * 1024


@pytest.fixture(autouse=True)
def _bounded():
    """Each test (and the processes it starts) gets twice :data:`SECONDS` (a
    test may run the command line and the API) and about 3 GB of address space
    more than it had: code that regresses fails the test
    (TimeoutError, MemoryError) instead of running on or exhausting the machine."""
    soft, hard = resource.getrlimit(resource.RLIMIT_AS)
    used = _address_space()
    if used is not None:
        limit = used + 3 * 2**30
        resource.setrlimit(resource.RLIMIT_AS, (limit if hard < 0 else min(limit, hard), hard))

    def timeout(signum, frame):
        raise TimeoutError(f"over {2 * SECONDS} s")

    previous = signal.signal(signal.SIGALRM, timeout)
    signal.alarm(2 * SECONDS)
    try:
        yield
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, previous)
        resource.setrlimit(resource.RLIMIT_AS, (soft, hard))


def _peak_rss(pid: int) -> int:
    """Peak resident memory (bytes) of a running process (Linux), else 0."""
    try:
        with open(f"/proc/{pid}/status") as fh:
            line = next(line for line in fh if line.startswith("VmHWM:"))
    except (OSError, StopIteration):
        return 0
    return int(line.split()[1]) * 1024


def _cli(*args: str | Path, cwd: Path) -> tuple[int, str, float, float]:
    """Run ``slide-unet`` in a process of its own: exit status, stderr, seconds
    and peak resident memory (MB, as last seen while it ran), the process
    killed after :data:`SECONDS`."""
    # Few malloc arenas: the address space limit is not taken by threads' reserves.
    env = {**os.environ, "PYTHONPATH": str(SRC), "MALLOC_ARENA_MAX": "2"}
    env.pop(MEMORY_BUDGET_ENV, None)
    start = time.monotonic()
    peak = 0
    with subprocess.Popen(
        [sys.executable, "-m", "slide_unet.cli", *map(str, args)],
        cwd=cwd,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    ) as proc:
        try:
            while proc.poll() is None and time.monotonic() - start < SECONDS:
                peak = max(peak, _peak_rss(proc.pid))
                time.sleep(0.02)
        finally:  # over time, or the test's own time is up: leave no process behind
            if proc.poll() is None:
                proc.kill()
            stderr = proc.communicate()[1]
    return proc.returncode, stderr, time.monotonic() - start, peak / 2**20


def _refused(result: tuple[int, str, float, float], *needles: str) -> str:
    """Assert a CLI run was refused fast, in bounded memory, with one line that
    holds each needle; return that line."""
    rc, stderr, seconds, megabytes = result
    assert seconds < SECONDS, seconds
    assert megabytes < MEGABYTES, megabytes
    assert rc == 1, stderr
    lines = stderr.strip().splitlines()
    assert len(lines) == 1, stderr
    assert lines[0].startswith("slide-unet export: error: "), stderr
    for needle in needles:
        assert needle in lines[0], (needle, lines[0])
    return lines[0]


def _feature(coords: list, fid: str | None = None) -> dict:
    feature = {"type": "Feature", "geometry": {"type": "Polygon", "coordinates": [coords]}}
    if fid is not None:
        feature["id"] = fid
    feature["properties"] = {"objectType": "annotation"}
    return feature


def _geojson(path: Path, *features: dict) -> Path:
    text = json.dumps({"type": "FeatureCollection", "features": list(features)}, allow_nan=True)
    path.write_text(text)
    return path


# -- 1. a declared shape no mask can have -------------------------------------------


@pytest.fixture
def sizeless(tmp_path: Path) -> dict[str, Path]:
    rle = tmp_path / "m.csv"
    rle.write_text("id,predicted\nslide,1 5 100 20\n")
    return {"geojson": _geojson(tmp_path / "m.geojson", _feature(SQUARE)), "rle": rle}


@pytest.mark.parametrize(
    ("source", "shape", "output"),
    [
        ("geojson", "100000000,100000000", "out.ome.tif"),
        ("rle", "100000000,100000000", "out.ome.tif"),
        ("geojson", "3000000,3000000", "out.zarr"),
        ("rle", "3000000,3000000", "out.zarr"),
        ("rle", "3000000,3000000", "out.csv"),
    ],
)
def test_export_refuses_a_shape_no_mask_has(sizeless, tmp_path, source, shape, output) -> None:
    src = sizeless[source]
    line = _refused(_cli("export", src, "--shape", shape, "-o", output, cwd=tmp_path), src.name)
    assert "more than a mask can have" in line
    assert not (tmp_path / output).exists()


def test_export_api_refuses_a_huge_shape_before_reading(sizeless, tmp_path) -> None:
    for src in sizeless.values():
        start = time.monotonic()
        with pytest.raises(InputError, match="more than a mask can have"):
            export_mask(src, tmp_path / "out.ome.tif", shape=(10**8, 10**8))
        with pytest.raises(InputError, match=src.name):
            read_mask(src, shape=(3_000_000, 3_000_000))
        assert time.monotonic() - start < 5
    assert not (tmp_path / "out.ome.tif").exists()


def test_a_shape_too_wide_for_the_memory_budget_is_refused(sizeless, tmp_path, monkeypatch):
    monkeypatch.delenv(MEMORY_BUDGET_ENV, raising=False)
    # Within the bounds of a mask, but a band of 512 rows of 2 million pixels,
    # read, written and halved at once, is over the 1 GiB budget.
    with pytest.raises(LimitError, match=MEMORY_BUDGET_ENV):
        export_mask(sizeless["rle"], tmp_path / "wide.ome.tif", shape=(1024, 2_000_000))
    assert not (tmp_path / "wide.ome.tif").exists()


@pytest.mark.parametrize("shape", ["0,100", "-5,100", "100,-1"])
def test_export_refuses_a_shape_that_is_not_positive(sizeless, tmp_path, shape) -> None:
    result = _cli("export", sizeless["rle"], f"--shape={shape}", "-o", "o.png", cwd=tmp_path)
    _refused(result, "m.csv", "positive")


# -- 2. GeoJSON vertices that are not finite pixel positions ------------------------


@pytest.mark.parametrize(
    ("vertex", "problem"),
    [
        ("NaN", "not a finite number"),
        ("Infinity", "not a finite number"),
        ("-Infinity", "not a finite number"),
        ("1e400", "not a finite number"),  # JSON parsers make it inf
        ("1e308", "beyond"),
        ("-1e308", "beyond"),
        ("1" + "0" * 400, "beyond"),  # an integer no float holds
    ],
)
def test_geojson_with_a_vertex_that_cannot_be_drawn_is_refused(tmp_path, vertex, problem):
    good = json.dumps(_feature(SQUARE, "a"))
    bad = json.dumps(_feature([[10, 10], [99999, 10], [50, 50], [10, 10]], "glom-7"))
    bad = bad.replace("99999", vertex)
    path = tmp_path / "bad.geojson"
    path.write_text(f'{{"type": "FeatureCollection", "features": [{good}, {bad}]}}')
    line = _refused(
        _cli("export", path, "--shape", "100,100", "-o", "out.png", cwd=tmp_path),
        "bad.geojson",
        "feature 1",
        "glom-7",
        problem,
    )
    assert "vertex 1" in line
    assert not (tmp_path / "out.png").exists()
    with pytest.raises(MaskError, match=r"feature 1 \(id 'glom-7'\).*" + problem):
        read_mask(path, shape=(100, 100))
    with pytest.raises(MaskError, match="feature 1"):
        geojson_polygons(json.loads(path.read_text()))


def test_a_far_vertex_on_a_big_mask_is_refused_not_a_numpy_error(tmp_path) -> None:
    # Streamed (dask) above 2^26 pixels: the old rasteriser's "negative dimensions".
    path = _geojson(tmp_path / "far.geojson", _feature([[0, 0], [1e308, 0], [0, 1e308]]))
    with pytest.raises(MaskError, match=r"far\.geojson: GeoJSON feature 0: vertex 1"):
        read_mask(path, shape=(10_000, 10_000))


def test_a_feature_is_named_by_its_qupath_name(tmp_path) -> None:
    feature = _feature([[0, 0], [float("nan"), 0], [0, 5]])
    feature["properties"]["name"] = "Glomerulus 12"
    path = _geojson(tmp_path / "named.geojson", feature)
    with pytest.raises(MaskError, match="feature 0 \\(name 'Glomerulus 12'\\)"):
        read_mask(path, shape=(16, 16))


# -- 3. palette PNG masks are read by index ------------------------------------------


def _palette_png(path: Path, indices: np.ndarray, palette: list[int]) -> Path:
    image = Image.fromarray(indices.astype(np.uint8), "P")
    image.putpalette(palette + [0] * (768 - len(palette)))
    image.save(path)
    return path


def test_a_palette_png_with_index_0_white_reads_by_index(tmp_path) -> None:
    indices = np.zeros((64, 80), np.uint8)
    indices[10:20, 30:45] = 1
    path = _palette_png(tmp_path / "white0.png", indices, [255, 255, 255, 0, 0, 0])
    assert Image.open(path).mode == "P"
    mask = read_mask(path)
    assert mask.dtype == np.uint8
    np.testing.assert_array_equal(mask, indices)  # 150 pixels, not 64 x 80 - 150

    rc, stderr, seconds, megabytes = _cli("export", path, "-o", "m.csv", cwd=tmp_path)
    assert rc == 0, stderr
    assert seconds < SECONDS
    assert megabytes < MEGABYTES
    rows = (tmp_path / "m.csv").read_text().splitlines()
    lengths = [int(n) for n in rows[1].split(",")[1].split()[1::2]]
    assert sum(lengths) == 150


def test_a_palette_instance_mask_of_30_ids_keeps_its_ids(tmp_path) -> None:
    indices = np.zeros((64, 64), np.uint8)
    for i in range(30):
        y, x = divmod(i, 6)
        indices[y * 10 : y * 10 + 8, x * 10 : x * 10 + 8] = i + 1
    colours = np.random.default_rng(0).integers(1, 256, 3 * 31).tolist()
    path = _palette_png(tmp_path / "objects.png", indices, [0, 0, 0, *colours])
    np.testing.assert_array_equal(read_mask(path), indices)

    rc, stderr, *_ = _cli("export", path, "-o", "objects.ome.tif", cwd=tmp_path)
    assert rc == 0, stderr
    np.testing.assert_array_equal(np.asarray(read_mask(tmp_path / "objects.ome.tif")), indices)


def test_a_palette_png_with_transparency_and_few_bits_reads_by_index(tmp_path) -> None:
    indices = np.zeros((40, 33), np.uint8)
    indices[5:9, 2:30] = 1
    image = Image.fromarray(indices, "P")
    image.putpalette([255, 0, 0, 255, 255, 255])
    path = tmp_path / "two.png"
    image.save(path, bits=1, transparency=0)
    np.testing.assert_array_equal(read_mask(path), indices)


def test_a_palette_png_declaring_a_huge_size_is_refused(tmp_path) -> None:
    indices = np.zeros((8, 8), np.uint8)
    path = _palette_png(tmp_path / "bomb.png", indices, [0, 0, 0, 255, 255, 255])
    data = bytearray(path.read_bytes())
    data[16:24] = (3_000_000).to_bytes(4, "big") + (3_000_000).to_bytes(4, "big")
    path.write_bytes(bytes(data))
    with pytest.raises(MaskError, match=r"bomb\.png"):
        read_mask(path)


# -- 4. malformed OME-Zarr masks -------------------------------------------------------


def _store(tmp_path: Path) -> Path:
    mask = np.zeros((64, 48), np.uint8)
    mask[8:20, 4:40] = 1
    return write_mask(mask, tmp_path / "m.ome.zarr", mpp=0.5)


def _edit_json(path: Path, edit) -> None:
    meta = json.loads(path.read_text())
    edit(meta)
    path.write_text(json.dumps(meta, allow_nan=True))


def _datasets(meta: dict) -> list:
    return meta["multiscales"][0]["datasets"]


ZATTRS_CASES = {
    "empty multiscales": (lambda m: m.update(multiscales=[]), "'multiscales' must be"),
    "multiscales an object": (
        lambda m: m.update(multiscales={"datasets": []}),
        "'multiscales' must be",
    ),
    "missing array": (lambda m: _datasets(m)[0].update(path="nope"), "'nope' is not in the store"),
    "datasets a string": (
        lambda m: m["multiscales"][0].update(datasets="0"),
        "'datasets' must be",
    ),
    "axes a string": (lambda m: m["multiscales"][0].update(axes="yx"), "'axes' must be a list"),
    "negative scale": (
        lambda m: _datasets(m)[0]["coordinateTransformations"][0].update(scale=[-0.5, -0.5]),
        "not a positive number",
    ),
    "scale of strings": (
        lambda m: _datasets(m)[0]["coordinateTransformations"][0].update(scale=["a", "b"]),
        "not a positive number",
    ),
    "scale NaN": (
        lambda m: _datasets(m)[0]["coordinateTransformations"][0].update(scale=[float("nan")] * 2),
        "not a positive number",
    ),
    "transforms a string": (
        lambda m: _datasets(m)[0].update(coordinateTransformations="scale"),
        "must be a list",
    ),
    "path a number": (lambda m: _datasets(m)[0].update(path=7), "is not the name"),
    "path outside": (lambda m: _datasets(m)[0].update(path="../x"), "is not the name"),
    "labels a string": (lambda m: m.clear() or m.update(labels="0"), "'labels' must be"),
}


@pytest.mark.parametrize("case", sorted(ZATTRS_CASES))
def test_malformed_ome_zarr_metadata_is_one_mask_error(tmp_path, case) -> None:
    store = _store(tmp_path)
    edit, problem = ZATTRS_CASES[case]
    _edit_json(store / ".zattrs", edit)
    with pytest.raises(MaskError, match=r"m\.ome\.zarr: not a readable OME-Zarr mask") as caught:
        read_mask(store)
    assert problem in str(caught.value)
    assert "\n" not in str(caught.value)
    line = _refused(_cli("export", store, "-o", "out.zarr", cwd=tmp_path), "m.ome.zarr", problem)
    assert "not a readable OME-Zarr mask" in line
    assert not (tmp_path / "out.zarr").exists()  # a negative scale is not copied


@pytest.mark.parametrize(
    ("zarray", "problem"),
    [
        ({"shape": [10**12, 10**12]}, "more than a mask can have"),
        ({"shape": [3_000_000, 3_000_000], "chunks": [3_000_000, 3_000_000]}, "more than a mask"),
        ({"shape": [2**70, 48]}, "more than a mask can have"),
        ({"shape": [1_000_000, 1_000_000], "chunks": [1, 1]}, "rechunk it"),
        ({"chunks": [0, 0]}, "m.ome.zarr"),
        ({"chunks": [60_000, 60_000]}, MEMORY_BUDGET_ENV),
        ({"shape": "64x48"}, "m.ome.zarr"),
        ({"dtype": "<f99"}, "m.ome.zarr"),
        ({"compressor": {"id": "no-such-codec"}}, "m.ome.zarr"),
    ],
)
def test_a_zarr_array_declaring_what_no_mask_is_refused(tmp_path, zarray, problem) -> None:
    store = _store(tmp_path)
    _edit_json(store / "0" / ".zarray", lambda meta: meta.update(zarray))
    with pytest.raises(InputError, match=r"m\.ome\.zarr") as caught:
        read_mask(store)
    assert problem in str(caught.value)
    _refused(_cli("export", store, "-o", "out.ome.tif", cwd=tmp_path), "m.ome.zarr", problem)


def test_a_zarr_mask_of_strings_is_refused_before_any_chunk_is_read(tmp_path) -> None:
    store = tmp_path / "words.zarr"
    array = zarr.create_array(store, shape=(4, 4), chunks=(4, 4), dtype=str, zarr_format=2)
    array[:] = np.full((4, 4), "glom")
    with pytest.raises(MaskError, match=r"words\.zarr: not a readable OME-Zarr mask: .*numbers"):
        read_mask(store)
    _refused(_cli("export", store, "-o", "out.png", cwd=tmp_path), "words.zarr", "not numbers")


def test_a_corrupt_zarr_chunk_is_one_mask_error_naming_the_store(tmp_path) -> None:
    store = _store(tmp_path)
    chunks = [p for p in (store / "0").rglob("*") if p.is_file() and not p.name.startswith(".")]
    assert chunks
    for chunk in chunks:
        chunk.write_bytes(b"\x02\x01garbage" * 3)
    with pytest.raises(MaskError, match=r"m\.ome\.zarr: a chunk cannot be read"):
        np.asarray(read_mask(store))
    _refused(_cli("export", store, "-o", "out.png", cwd=tmp_path), "m.ome.zarr", "chunk")


def test_an_implausible_pixel_size_is_read_as_unknown_not_copied(tmp_path) -> None:
    store = _store(tmp_path)
    transform = {"type": "scale", "scale": [5000.0, 5000.0]}  # 5 mm a pixel
    _edit_json(
        store / ".zattrs", lambda m: _datasets(m)[0].update(coordinateTransformations=[transform])
    )
    rc, stderr, *_ = _cli("export", store, "-o", "out.zarr", cwd=tmp_path)
    assert rc == 0, stderr
    scale = json.loads((tmp_path / "out.zarr" / ".zattrs").read_text())
    assert "unit" not in json.dumps(scale["multiscales"][0]["axes"])
