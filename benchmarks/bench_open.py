"""Benchmark opening a gigapixel slide: ``slide_unet.open_slide`` against napari's built-in reader.

Builds once, and caches in ``benchmarks/.cache/``, two JPEG-tiled BigTIFF slides of
31,299 x 44,066 RGB (the size of HuBMAP kidney slide ``8242609fa``) made from the real PAS
kidney tiles of ``../shared/data/glomeruli/bueno_pas``: a pyramidal OME-TIFF with SubIFD
levels 1/2 .. 1/64 at 0.5 µm/px, and the same full-resolution level alone as a flat TIFF.
About half the area is tissue (randomly flipped and rotated copies of the 18 real 1024 x 1024
tiles, fixed seed) in a blob-like region; the rest is near-white background (240..245 with
slight noise), like a real slide. The slides are written tile by tile from a mosaic that can
render any band of rows at any power-of-two downsample, so the whole slide is never held in
memory.

Every measurement runs in a fresh Python process, so "peak RSS" is that process's own peak
resident set size (``VmHWM``: absolute, Python and imports included; the RSS right after the
imports is reported separately as the baseline). Measured, for each slide and reader:

- open the file and compute its smallest level into numpy (what a viewer shows first);
- read one 512 x 512 tile at full resolution at an unaligned offset inside the tissue;
- peak memory.

For the flat slide ``open_slide`` is measured twice: first with an empty overview cache
(open + ``build_overviews()`` + smallest level), then in a new process with that cache. A
separate run compares raw decode throughput of one band of 4096 rows of the flat slide through
our dask path and through tifffile's default zarr (+ dask) path, side by side.

Timings are wall-clock, with the slide files in the OS page cache (they were just built or read)
and include no import time. The machine may be shared: the load average before and after is
printed with the results.

Usage::

    python benchmarks/bench_open.py            # the full 31,299 x 44,066 slides
    python benchmarks/bench_open.py --quick    # an 8,192 x 11,000 smoke version
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np

REPO_ROOT = Path(__file__).resolve().parents[1]
CACHE_DIR = Path(__file__).resolve().parent / ".cache"
SOURCES = REPO_ROOT.parent / "shared" / "data" / "glomeruli" / "bueno_pas" / "images"

FULL_SHAPE = (31_299, 44_066)
QUICK_SHAPE = (8_192, 11_000)
MPP = 0.5
JPEG_QUALITY = 90
TIFF_TILE = 256
CELL = 1024  # side of a mosaic cell: one source tile
N_SUBIFDS = 6  # levels 1/2 .. 1/64
TISSUE_FRACTION = 0.5
SEED = 20_240_601
N_BACKGROUNDS = 4
READ_SIDE = 512
#: Offset of the 512 x 512 read inside a block of 2 x 2 tissue cells: unaligned to the
#: 256-pixel TIFF tiles and crossing a cell (and 1024-pixel chunk) border both ways.
READ_OFFSET = (777, 613)
DECODE_ROWS = 4096

#: Children that decode the whole slide (napari's reader) are killed past these.
DEFAULT_TIMEOUT_S = 300.0
RSS_KILL_MB = 6000.0

TARGETS = {
    "pyramid-ours": "open + lowest + tile < 0.5 s, peak < 500 MB",
    "flat-ours-build": "open + overviews + lowest < 60 s, peak < 1.5 GB",
    "flat-ours-cached": "open + lowest + tile < 0.5 s",
}


# -- the mosaic ------------------------------------------------------------------------------


def halve(image: np.ndarray) -> np.ndarray:
    """Average 2 x 2 blocks of an even-sized uint8 image (rounded)."""
    total = image[0::2, 0::2].astype(np.uint16)
    total += image[1::2, 0::2]
    total += image[0::2, 1::2]
    total += image[1::2, 1::2]
    total += 2
    return (total >> 2).astype(np.uint8)


def orient(image: np.ndarray, orientation: int) -> np.ndarray:
    """One of the 8 flips and rotations of a square image (a view)."""
    image = np.rot90(image, orientation % 4)
    return image[:, ::-1] if orientation >= 4 else image


class Mosaic:
    """A deterministic slide of ``height`` x ``width`` RGB made of 1024-pixel cells.

    Each cell is either tissue (a flipped or rotated real PAS tile) or background. The layout
    (which cells are tissue and what they show) is cheap; the pixels are rendered on demand, at
    full resolution or at any downsample ``2**k`` (from source tiles halved ``k`` times), one
    band of rows at a time.
    """

    def __init__(self, height: int, width: int, sources: Path = SOURCES, seed: int = SEED):
        self.height, self.width = height, width
        self.sources_dir = sources
        self.files = sorted(sources.glob("*.png"))
        if not self.files:
            raise SystemExit(f"no PNG tiles in {sources}: the shared data is needed")
        rng = np.random.default_rng(seed)
        self.rows, self.cols = -(-height // CELL), -(-width // CELL)
        self.tissue = self._blob(rng)
        shape = (self.rows, self.cols)
        self.source = rng.integers(len(self.files), size=shape)
        self.orientation = rng.integers(8, size=shape)
        self.background = rng.integers(N_BACKGROUNDS, size=shape)
        self._rng = rng
        self._pyramids: list[list[np.ndarray]] | None = None

    def _blob(self, rng: np.random.Generator) -> np.ndarray:
        """Cells that are tissue: a smooth random field of a few bumps, cut at its median."""
        y, x = np.mgrid[: self.rows, : self.cols].astype(float)
        field = np.zeros((self.rows, self.cols))
        side = min(self.rows, self.cols)
        for _ in range(5):
            cy = rng.uniform(0.2, 0.8) * self.rows
            cx = rng.uniform(0.2, 0.8) * self.cols
            sigma = rng.uniform(0.15, 0.3) * side
            field += rng.uniform(0.5, 1.0) * np.exp(-((y - cy) ** 2 + (x - cx) ** 2) / sigma**2)
        field += rng.normal(0, 0.03, field.shape)
        return field >= np.quantile(field, 1 - TISSUE_FRACTION)

    def level_shape(self, level: int) -> tuple[int, int, int]:
        """(height, width, 3) at downsample ``2**level`` (sizes rounded up)."""
        return -(-self.height // 2**level), -(-self.width // 2**level), 3

    def read_origin(self) -> tuple[int, int]:
        """Full-resolution (y, x) of the 512 x 512 read: a 2 x 2 block of tissue cells near
        the middle, offset by :data:`READ_OFFSET`."""
        t = self.tissue
        block = t[:-1, :-1] & t[1:, :-1] & t[:-1, 1:] & t[1:, 1:]
        rows, cols = np.nonzero(block)
        if not len(rows):
            raise RuntimeError("no 2 x 2 block of tissue cells")
        middle = ((rows - self.rows / 2) ** 2 + (cols - self.cols / 2) ** 2).argmin()
        y = int(rows[middle]) * CELL + READ_OFFSET[0]
        x = int(cols[middle]) * CELL + READ_OFFSET[1]
        return min(y, self.height - READ_SIDE), min(x, self.width - READ_SIDE)

    def _load(self) -> list[list[np.ndarray]]:
        """Per level: the source tiles, then the background tiles, each halved ``level`` times."""
        if self._pyramids is None:
            from PIL import Image

            tiles = []
            for file in self.files:
                with Image.open(file) as image:
                    tile = np.asarray(image.convert("RGB"))
                if tile.shape != (CELL, CELL, 3):
                    raise SystemExit(f"{file}: expected {CELL} x {CELL} RGB, got {tile.shape}")
                tiles.append(tile)
            for _ in range(N_BACKGROUNDS):
                tint = self._rng.uniform(241.5, 243.5, 3)
                noise = self._rng.normal(0.0, 0.8, (CELL, CELL, 3))
                tiles.append(np.clip(np.rint(tint + noise), 240, 245).astype(np.uint8))
            pyramids = [tiles]
            for _ in range(N_SUBIFDS):
                pyramids.append([halve(t) for t in pyramids[-1]])
            self._pyramids = pyramids
        return self._pyramids

    def render(self, level: int, y0: int, y1: int) -> np.ndarray:
        """Rows ``y0:y1`` of the slide at downsample ``2**level``, full width."""
        tiles = self._load()[level]
        side = CELL >> level
        width = self.level_shape(level)[1]
        out = np.empty((y1 - y0, width, 3), np.uint8)
        for row in range(y0 // side, -(-y1 // side)):
            top, bottom = max(y0, row * side), min(y1, (row + 1) * side)
            for col in range(self.cols):
                left, right = col * side, min(width, (col + 1) * side)
                if left >= width:
                    break
                if self.tissue[row, col]:
                    tile = tiles[self.source[row, col]]
                else:
                    tile = tiles[len(self.files) + self.background[row, col]]
                tile = orient(tile, int(self.orientation[row, col]))
                out[top - y0 : bottom - y0, left:right] = tile[
                    top - row * side : bottom - row * side, : right - left
                ]
        return out

    def tiles(self, level: int) -> Iterator[np.ndarray]:
        """The TIFF tiles of one level in file order (row-major), rendered band by band."""
        height, width, _ = self.level_shape(level)
        for y0 in range(0, height, TIFF_TILE):
            band = self.render(level, y0, min(y0 + TIFF_TILE, height))
            for x0 in range(0, width, TIFF_TILE):
                yield band[:, x0 : x0 + TIFF_TILE]


# -- building the slides ---------------------------------------------------------------------


def _write_options() -> dict[str, Any]:
    return {
        "dtype": np.uint8,
        "tile": (TIFF_TILE, TIFF_TILE),
        "photometric": "rgb",  # stored as JPEG YCbCr 4:2:0, like scanner output
        "compression": "jpeg",
        "compressionargs": {"level": JPEG_QUALITY},
        "resolutionunit": "CENTIMETER",
        "maxworkers": os.cpu_count(),
        "buffersize": 64 * 2**20,
    }


def write_pyramid(path: Path, mosaic: Mosaic) -> None:
    """Pyramidal OME-TIFF: full resolution plus SubIFD levels 1/2 .. 1/64."""
    import tifffile

    options = _write_options()
    metadata = {
        "axes": "YXS",
        "PhysicalSizeX": MPP,
        "PhysicalSizeXUnit": "µm",
        "PhysicalSizeY": MPP,
        "PhysicalSizeYUnit": "µm",
    }
    with tifffile.TiffWriter(path, bigtiff=True, ome=True) as tif:
        tif.write(
            mosaic.tiles(0),
            shape=mosaic.level_shape(0),
            subifds=N_SUBIFDS,
            resolution=(1e4 / MPP, 1e4 / MPP),
            metadata=metadata,
            **options,
        )
        for level in range(1, N_SUBIFDS + 1):
            pixels_per_cm = 1e4 / (MPP * 2**level)
            tif.write(
                mosaic.tiles(level),
                shape=mosaic.level_shape(level),
                subfiletype=1,
                resolution=(pixels_per_cm, pixels_per_cm),
                **options,
            )


def write_flat(path: Path, mosaic: Mosaic) -> None:
    """The same full-resolution level alone: a single-level tiled BigTIFF."""
    import tifffile

    with tifffile.TiffWriter(path, bigtiff=True, ome=False) as tif:
        tif.write(
            mosaic.tiles(0),
            shape=mosaic.level_shape(0),
            resolution=(1e4 / MPP, 1e4 / MPP),
            metadata=None,
            **_write_options(),
        )


def build_slides(paths: dict[str, Path], mosaic: Mosaic) -> None:
    """Write each slide that is not cached yet (to a temporary name, renamed when done)."""
    writers = {"pyramid": write_pyramid, "flat": write_flat}
    for kind, path in paths.items():
        if path.exists():
            print(f"{kind}: cached {path.relative_to(REPO_ROOT)} ({_size_mb(path):.0f} MB)")
            continue
        path.parent.mkdir(parents=True, exist_ok=True)
        partial = path.with_name(f".partial-{os.getpid()}-{path.name}")
        start = time.perf_counter()
        try:
            writers[kind](partial, mosaic)
            partial.rename(path)
        finally:
            partial.unlink(missing_ok=True)
        print(
            f"{kind}: built {path.relative_to(REPO_ROOT)} in {time.perf_counter() - start:.1f} s "
            f"({_size_mb(path):.0f} MB)"
        )


def _size_mb(path: Path) -> float:
    return path.stat().st_size / 1e6


# -- measurements, each in a fresh process -----------------------------------------------------


def _status_mb(field: str, pid: int | str = "self") -> float:
    """A memory field of ``/proc/PID/status`` in MB (0 when the process is gone)."""
    try:
        with open(f"/proc/{pid}/status") as status:
            for line in status:
                if line.startswith(f"{field}:"):
                    return int(line.split()[1]) / 1024
    except OSError:
        pass
    return 0.0


def _rss_mb() -> float:
    """Current resident set size of this process."""
    return _status_mb("VmRSS")


def _peak_rss_mb() -> float:
    """Peak resident set size of this process since it started.

    ``ru_maxrss`` would be the same number but for a Linux quirk: a child started by
    ``subprocess`` (vfork + exec) inherits the parent's peak RSS as a floor, so it would report
    the benchmark driver's memory. ``VmHWM`` belongs to the new program's own address space.
    """
    return max(_status_mb("VmHWM"), _rss_mb())


def _digest(array: np.ndarray) -> str:
    """A short hash of the pixels (to check that every reader returns the same tile)."""
    import hashlib

    return hashlib.sha256(np.ascontiguousarray(array).data).hexdigest()[:12]


def child(mode: str, slide: str, read_at: tuple[int, int]) -> dict[str, Any]:
    """One measurement; runs in its own process and returns a JSON-able result."""
    start = time.perf_counter()
    y, x = read_at
    tile_box = np.s_[y : y + READ_SIDE, x : x + READ_SIDE]
    result: dict[str, Any] = {}
    if mode == "napari":
        from napari_builtins.io import napari_get_reader

        result["import_s"] = time.perf_counter() - start
        result["baseline_rss_mb"] = _rss_mb()
        t0 = time.perf_counter()
        layer_data = napari_get_reader(slide)(slide)
        data = layer_data[0][0]
        levels = data if isinstance(data, list) else [data]
        lowest = np.asarray(levels[-1])
        t1 = time.perf_counter()
        tile = np.asarray(levels[0][tile_box])
        t2 = time.perf_counter()
        result.update(open_lowest_s=t1 - t0, tile_s=t2 - t1, levels=len(levels))
    elif mode in ("ours", "ours-build"):
        from slide_unet import open_slide

        result["import_s"] = time.perf_counter() - start
        result["baseline_rss_mb"] = _rss_mb()
        t0 = time.perf_counter()
        opened = open_slide(slide)
        t_open = time.perf_counter()
        built = opened.build_overviews() if mode == "ours-build" else None
        t_built = time.perf_counter()
        lowest = np.asarray(opened.levels[-1])
        t1 = time.perf_counter()
        tile = np.asarray(opened.levels[0][tile_box].compute())
        t2 = time.perf_counter()
        result.update(
            open_s=t_open - t0,
            build_s=t_built - t_open,
            open_lowest_s=t1 - t0,
            tile_s=t2 - t1,
            levels=len(opened.levels),
            built=built,
            needs_overviews=opened.needs_overviews,
        )
        opened.close()
    elif mode == "baseline":
        import napari_builtins.io  # noqa: F401

        import slide_unet  # noqa: F401

        return {"baseline_rss_mb": _rss_mb(), "peak_rss_mb": _peak_rss_mb()}
    elif mode == "decode":
        return decode_child(slide, tile_box)
    else:
        raise SystemExit(f"unknown mode {mode!r}")
    result.update(
        peak_rss_mb=_peak_rss_mb(),
        lowest_shape=list(lowest.shape),
        tile_digest=_digest(tile),
        tile_mean=float(tile.mean()),
    )
    return result


def decode_child(slide: str, tile_box: tuple[slice, slice]) -> dict[str, Any]:
    """Decode one band of full-resolution rows through each path, alternating in one process.

    Paths: ours (``open_slide``'s dask array); tifffile's default, ``da.from_zarr`` over its
    zarr store; that zarr store sliced directly (no dask); and the ceiling, imagecodecs alone
    decoding the band's JPEG tiles on every core and dropping them (no assembly). Then glibc's
    malloc is told to keep freed memory (``mallopt``) and ours and zarr direct run again: the
    difference is what re-faulting freshly allocated pages costs.
    """
    import ctypes
    from concurrent.futures import ThreadPoolExecutor

    import dask.array as da
    import imagecodecs
    import tifffile
    import zarr

    from slide_unet import open_slide

    opened = open_slide(slide)
    level0 = opened.levels[0]
    height, width = level0.shape[:2]
    y0 = (height // 2) // DECODE_ROWS * DECODE_ROWS  # a band through the middle of the tissue
    band = np.s_[y0 : y0 + DECODE_ROWS]
    tif = tifffile.TiffFile(slide)
    store = tif.series[0].aszarr()
    zarray = zarr.open(store, mode="r")
    tifffile_dask = da.from_zarr(zarray)
    page = tif.pages.first
    tiles_across = -(-width // page.tilewidth)
    first, last = y0 // page.tilelength, -(-(y0 + DECODE_ROWS) // page.tilelength)
    segments = []
    for i in range(first * tiles_across, last * tiles_across):
        tif.filehandle.seek(page.dataoffsets[i])
        segments.append(tif.filehandle.read(page.databytecounts[i]))

    def decode_only() -> None:
        with ThreadPoolExecutor(os.cpu_count()) as pool:
            for _ in pool.map(imagecodecs.jpeg8_decode, segments):
                pass

    def rounds(paths: dict[str, Any], check: bool = True) -> dict[str, list[float]]:
        seconds: dict[str, list[float]] = {name: [] for name in paths}
        digests = set()
        for _ in range(2):
            for name, read in paths.items():
                t0 = time.perf_counter()
                pixels = read()
                seconds[name].append(time.perf_counter() - t0)
                if check and pixels is not None:
                    digests.add(_digest(pixels))
                del pixels
        if len(digests) > 1:
            raise RuntimeError("the paths decode different pixels")
        return seconds

    seconds = rounds(
        {
            "ours": lambda: level0[band].compute(),
            "tifffile_dask": lambda: tifffile_dask[band].compute(),
            "zarr_direct": lambda: zarray[band],
            "decode_only": decode_only,
        }
    )
    tile_seconds = rounds(
        {"ours": lambda: level0[tile_box].compute(), "zarr_direct": lambda: zarray[tile_box]}
    )
    try:
        libc = ctypes.CDLL("libc.so.6")
        tuned = libc.mallopt(-1, 1 << 30) == 1 and libc.mallopt(-3, 64 << 20) == 1
    except OSError:
        tuned = False
    if tuned:  # M_TRIM_THRESHOLD 1 GB, M_MMAP_THRESHOLD 64 MB
        more = rounds(
            {"ours": lambda: level0[band].compute(), "zarr_direct": lambda: zarray[band]}
        )
        seconds.update({f"{name}_mallopt": s for name, s in more.items()})
    megapixels = DECODE_ROWS * width / 1e6
    result = {
        "rows": [y0, y0 + DECODE_ROWS],
        "megapixels": megapixels,
        "seconds": seconds,
        "tile_seconds": tile_seconds,
        "mp_per_s": {name: megapixels / min(s) for name, s in seconds.items()},
        "chunks_ours": list(level0.chunksize[:2]),
        "chunks_tifffile_dask": list(tifffile_dask.chunksize[:2]),
        "zarr_store_maxworkers": store._maxworkers,
        "peak_rss_mb": _peak_rss_mb(),
    }
    opened.close()
    store.close()
    tif.close()
    return result


def run_child(
    mode: str,
    slide: Path | None,
    read_at: tuple[int, int],
    env: dict[str, str] | None = None,
    timeout: float = DEFAULT_TIMEOUT_S,
) -> dict[str, Any]:
    """Run :func:`child` in a fresh interpreter; kill it past ``timeout`` or RSS_KILL_MB."""
    command = [
        sys.executable,
        str(Path(__file__).resolve()),
        "--child",
        mode,
        "--slide",
        str(slide or ""),
        "--read-at",
        f"{read_at[0]},{read_at[1]}",
    ]
    with tempfile.TemporaryFile("w+") as out, tempfile.TemporaryFile("w+") as err:
        process = subprocess.Popen(
            command, stdout=out, stderr=err, env={**os.environ, **(env or {})}, cwd=REPO_ROOT
        )
        start, killed = time.monotonic(), None
        while process.poll() is None:
            elapsed = time.monotonic() - start
            if elapsed > timeout:
                killed = f"timeout: killed after {timeout:.0f} s"
            elif _status_mb("VmRSS", process.pid) > RSS_KILL_MB:
                killed = f"over {RSS_KILL_MB:.0f} MB RSS after {elapsed:.0f} s: killed"
            if killed:
                process.kill()
                process.wait()
                return {"error": killed}
            time.sleep(0.1)
        out.seek(0)
        err.seek(0)
        lines = out.read().strip().splitlines()
        if process.returncode != 0 or not lines:
            tail = err.read().strip().splitlines()[-3:]
            return {"error": f"exit {process.returncode}: " + " | ".join(tail)}
        return json.loads(lines[-1])


def repeated(times: int, *args: Any, **kwargs: Any) -> dict[str, Any]:
    """The median run of ``times`` fresh processes (by total time), with all totals kept."""
    runs = [run_child(*args, **kwargs) for _ in range(times)]
    good = [r for r in runs if "error" not in r]
    if not good:
        return runs[0]
    if len(good) == 1:
        return good[0]
    good.sort(key=_total_s)
    median = dict(good[len(good) // 2])
    median["all_totals_s"] = [round(_total_s(r), 3) for r in good]
    median["peak_rss_mb"] = max(r["peak_rss_mb"] for r in good)
    return median


def _total_s(result: dict[str, Any]) -> float:
    return result["open_lowest_s"] + result["tile_s"]


# -- report ----------------------------------------------------------------------------------


def machine() -> str:
    model = "unknown CPU"
    with open("/proc/cpuinfo") as cpuinfo:
        for line in cpuinfo:
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    with open("/proc/meminfo") as meminfo:
        total_kb = int(meminfo.readline().split()[1])
    usable = len(os.sched_getaffinity(0))
    return (
        f"{usable} cores ({os.cpu_count()} online), {model}, {total_kb / 2**20:.0f} GiB RAM, "
        f"{platform.system()} {platform.release()}, Python {platform.python_version()}"
    )


def versions() -> str:
    from importlib.metadata import version

    names = ["tifffile", "imagecodecs", "zarr", "dask", "numpy", "napari"]
    return ", ".join(f"{name} {version(name)}" for name in names)


def verdict(key: str, result: dict[str, Any]) -> str:
    if key not in TARGETS:
        return "—"
    if "error" in result:
        return "FAIL"
    total = _total_s(result)
    peak = result["peak_rss_mb"]
    if key == "pyramid-ours":
        ok = total < 0.5 and peak < 500
    elif key == "flat-ours-build":
        ok = result["open_lowest_s"] < 60 and peak < 1500
    elif key == "flat-ours-cached":
        ok = total < 0.5
    else:
        return "—"
    return "PASS" if ok else "FAIL"


def table(rows: list[tuple[str, str, str, dict[str, Any]]]) -> str:
    lines = [
        "| slide | reader | open + lowest level (s) | 512² tile (s) | peak RSS (MB) "
        "| target | result |",
        "| --- | --- | ---: | ---: | ---: | --- | --- |",
    ]
    for slide, reader, key, result in rows:
        if "error" in result:
            cells = [result["error"], "—", "—"]
        else:
            cells = [
                f"{result['open_lowest_s']:.3f}",
                f"{result['tile_s']:.3f}",
                f"{result['peak_rss_mb']:.0f}",
            ]
        target = TARGETS.get(key, "— (reference)")
        lines.append(
            f"| {slide} | {reader} | {' | '.join(cells)} | {target} | {verdict(key, result)} |"
        )
    return "\n".join(lines)


def measure(
    paths: dict[str, Path], read_at: tuple[int, int], args: argparse.Namespace
) -> tuple[list[tuple[str, str, str, dict[str, Any]]], dict[str, Any], dict[str, Any]]:
    """Run every measurement, each in fresh processes, with a new, empty overview cache."""
    overview_dir = Path(tempfile.mkdtemp(prefix="overviews-", dir=CACHE_DIR))
    cache = {"SLIDE_UNET_CACHE_DIR": str(overview_dir)}
    limit = {"timeout": args.timeout}
    # (slide, reader, target key, runs, mode, extra run_child arguments); in this order, so
    # that the flat slide's overviews are built before they are read from the cache.
    plan: list[tuple[str, str, str, int, str, dict[str, Any]]] = [
        ("pyramid", "slide_unet.open_slide", "pyramid-ours", args.repeat, "ours", {"env": cache}),
        ("pyramid", "napari_builtins", "pyramid-napari", 1, "napari", limit),
        (
            "flat",
            "open_slide, empty cache: open + build_overviews",
            "flat-ours-build",
            1,
            "ours-build",
            {"env": cache, **limit},
        ),
        (
            "flat",
            "open_slide, overviews cached",
            "flat-ours-cached",
            args.repeat,
            "ours",
            {"env": cache},
        ),
        ("flat", "napari_builtins", "flat-napari", 1, "napari", limit),
    ]
    rows = []
    try:
        baseline = run_child("baseline", None, read_at)
        for slide, reader, key, runs, mode, extra in plan:
            if mode == "napari" and args.skip_napari:
                continue
            result = repeated(runs, mode, paths[slide], read_at, **extra)
            rows.append((slide, reader, key, result))
        decode = run_child("decode", paths["flat"], read_at, env=cache, **limit)
    finally:
        shutil.rmtree(overview_dir, ignore_errors=True)
    return rows, baseline, decode


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="8,192 x 11,000 smoke version")
    parser.add_argument("--repeat", type=int, default=3, help="runs of each fast measurement")
    parser.add_argument(
        "--timeout", type=float, default=DEFAULT_TIMEOUT_S, help="limit per process (s)"
    )
    parser.add_argument("--skip-napari", action="store_true", help="skip napari's reader")
    parser.add_argument("--child", help=argparse.SUPPRESS)
    parser.add_argument("--slide", help=argparse.SUPPRESS)
    parser.add_argument("--read-at", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)

    if args.child:
        read_at = tuple(int(v) for v in args.read_at.split(","))
        print(json.dumps(child(args.child, args.slide, read_at)))  # type: ignore[arg-type]
        return 0

    height, width = QUICK_SHAPE if args.quick else FULL_SHAPE
    prefix = "quick-" if args.quick else ""
    paths = {
        "pyramid": CACHE_DIR / f"{prefix}pyramid.ome.tif",
        "flat": CACHE_DIR / f"{prefix}flat.tif",
    }
    mosaic = Mosaic(height, width)
    print(
        f"slides: {height:,} x {width:,} RGB, JPEG q{JPEG_QUALITY} {TIFF_TILE}² tiles, "
        f"{mosaic.tissue.mean():.0%} of {mosaic.tissue.size} cells tissue"
    )
    build_slides(paths, mosaic)
    read_at = mosaic.read_origin()
    del mosaic

    load_before = os.getloadavg()
    print(f"measuring (each in a fresh process; read at y={read_at[0]}, x={read_at[1]}) ...")
    rows, baseline, decode = measure(paths, read_at, args)
    load_after = os.getloadavg()

    print()
    print(table(rows))
    print()
    print(
        f"Machine: {machine()}; load average {load_before[0]:.2f} before, "
        f"{load_after[0]:.2f} after (shared machine: timings are noisy)."
    )
    print(f"Versions: {versions()}.")
    if "error" in baseline:
        print(f"Baseline RSS: {baseline['error']}")
    else:
        print(
            f"Baseline RSS of Python + imports (numpy, slide_unet, napari_builtins): "
            f"{baseline['baseline_rss_mb']:.0f} MB; per reader, RSS after its imports: "
            + ", ".join(
                f"{reader} {r['baseline_rss_mb']:.0f} MB"
                for slide, reader, _, r in rows
                if slide == "pyramid" and "error" not in r
            )
            + "."
        )
    print()
    print("Details:")
    for slide, reader, _, result in rows:
        shown = {k: v for k, v in result.items() if not k.endswith("digest")}
        print(f"- {slide}, {reader}: {json.dumps(_round(shown))}")
    digests = {(r["tile_digest"]) for _, _, _, r in rows if "error" not in r}
    print(f"- 512² tile identical across all readers and slides: {len(digests) == 1}")
    if "error" in decode:
        print(f"Decode throughput: {decode['error']}")
    else:
        rate = decode["mp_per_s"]
        rows_ = decode["rows"]
        print(
            f"Decode throughput, flat level 0 rows {rows_[0]}:{rows_[1]} "
            f"({decode['megapixels']:.0f} MP; best of 2, alternating in one process):"
        )
        print(
            f"- ours (dask, chunks {decode['chunks_ours']}): {rate['ours']:.0f} MP/s\n"
            f"- tifffile zarr+dask (chunks {decode['chunks_tifffile_dask']}): "
            f"{rate['tifffile_dask']:.0f} MP/s\n"
            f"- zarr direct (no dask; store maxworkers={decode['zarr_store_maxworkers']}): "
            f"{rate['zarr_direct']:.0f} MP/s\n"
            f"- JPEG decode alone on {os.cpu_count()} threads, no assembly: "
            f"{rate['decode_only']:.0f} MP/s\n"
            f"- ours / tifffile zarr+dask = {rate['ours'] / rate['tifffile_dask']:.2f}x; "
            f"ours / zarr direct = {rate['ours'] / rate['zarr_direct']:.2f}x"
        )
        if "ours_mallopt" in rate:
            print(
                f"- after mallopt (keep freed memory): ours {rate['ours_mallopt']:.0f} MP/s, "
                f"zarr direct {rate['zarr_direct_mallopt']:.0f} MP/s"
            )
        tiles = decode["tile_seconds"]
        print(
            f"- 512² tile in that process (best of 2): ours {min(tiles['ours']):.3f} s, "
            f"zarr direct {min(tiles['zarr_direct']):.3f} s; "
            f"peak RSS {decode['peak_rss_mb']:.0f} MB"
        )
    return 0


def _round(value: Any) -> Any:
    """``value`` with every float rounded to 3 decimals (for printing)."""
    if isinstance(value, float):
        return round(value, 3)
    if isinstance(value, dict):
        return {k: _round(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_round(v) for v in value]
    return value


if __name__ == "__main__":
    sys.exit(main())
