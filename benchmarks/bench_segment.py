"""Benchmark tiled U-Net segmentation of a gigapixel slide with ``slide_unet.segment``.

The slide is ``benchmarks/.cache/pyramid.ome.tif`` from ``bench_open.py`` (built there, and
cached, when missing): 31,299 x 44,066 RGB, JPEG, pyramidal OME-TIFF at 0.5 µm/px, about half
of it real PAS kidney tissue. The model is the bundled ``glomeruli`` architecture (U-Net, base
width 16, depth 4, batch norm, 2.0 µm/px working scale); its weights are an untrained
placeholder, which does not change any timing.

Measured in one run, each in a fresh Python process (peak memory is that process's own
``VmHWM``; the times exclude imports, and the slide file is in the OS page cache):

- **whole slide**: ``segment(slide, model, out=tmp.zarr)``: wall time, throughput in megapixels
  of full-resolution slide area per second, peak RSS, and the fraction of blocks skipped as
  background. A forward hook on the model records what the engine ran (tiles, tile side,
  batch sizes, memory format, autocast) and how long it spent inside the model.
- **model only**: the model's forward alone on random batches of the same tile side, batch
  sizes and settings (device, channels-last, autocast, ``torch.inference_mode``), timed per
  batch and scaled to the number of batches the engine ran. Pipeline efficiency is that time
  over the end-to-end wall time (the same as end-to-end slide-MP/s over model-only slide-MP/s).
- **MONAI**: ``monai.inferers.sliding_window_inference`` with the same model on a 4096 x 4096
  region at working scale held in memory (read from the pyramid level at 2 µm/px, normalised,
  a tensor): roi = the tile the engine ran on that region, overlap = 2 * halo / tile,
  sw_batch_size = the engine's batch there, modes "gaussian" and "constant". Against it:
  ``segment(slide, model, region=...)`` on the same 16,384 x 16,384 full-resolution region,
  and, like for like, ``segment(array, model, mpp=2.0)`` on the same uint8 region in memory.
  Every process runs one warm-up forward first; ours and MONAI alternate for ``--rounds``
  rounds and the least time of each is kept. MONAI's time is the ``sliding_window_inference``
  call only (its input already normalised in memory, its output logits at working scale);
  ours on the slide is the whole call (open, plan, tissue mask, read, decode, resample, model,
  map back to full resolution, threshold), on the array the whole call too (tissue mask,
  normalisation, model, threshold; output at working scale).
- **naive**: what earlier public projects (Kaggle kernels) did: ``tifffile.imread`` of the whole
  full-resolution level, resize it to working scale (``torch.nn.functional.interpolate``,
  bilinear, antialiased, on uint8), cut 512 x 512 tiles without overlap, predict each batch
  (same model settings as the engine), stitch, and resize the mask back to full resolution.
  Killed past a time limit or above an RSS cap. Run last.
- **viewport**: ``segment(slide, model, region=...)`` on a 2048 x 1152 screen at working scale
  (4,608 x 8,192 full-resolution pixels): the first call in a fresh process (model loaded by
  name, torch's first run), then, with the slide open and the model loaded once and one
  warm-up call on another region, the median of 3 calls.

Usage::

    python benchmarks/bench_segment.py                 # everything, about 9-10 min on 2 cores
    python benchmarks/bench_segment.py --quick         # the 8,192 x 11,000 slide, no whole
                                                       # slide, no naive run: about 1-2 min
    python benchmarks/bench_segment.py --device cuda   # on a GPU machine
"""

from __future__ import annotations

import argparse
import json
import math
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import warnings
from pathlib import Path
from typing import Any

REPO_ROOT = Path(__file__).resolve().parents[1]
CACHE_DIR = Path(__file__).resolve().parent / ".cache"

MODEL = "glomeruli"
#: Working-scale sides: the MONAI region and the viewport (width x height on screen).
REGION_WORKING = 4096
QUICK_REGION_WORKING = 1024
VIEWPORT_WORKING = (1152, 2048)  # (height, width)
VIEWPORT_REPEAT = 3
NAIVE_TILE = 512
CELL = 1024  # the mosaic's cell side (bench_open.CELL): regions are chosen on its grid

TARGET_PEAK_MB = 2000.0
TARGET_EFFICIENCY = 0.85
TARGET_MONAI_SPEEDUP = 2.0
TARGET_VIEWPORT_CPU_S = 1.0
TARGET_GPU_WHOLE_S = 10.0

DEFAULT_TIMEOUT_S = 600.0
WHOLE_TIMEOUT_S = 900.0
NAIVE_TIMEOUT_S = 900.0
NAIVE_RSS_CAP_MB = 16_000.0
#: Every other child is killed above this (the engine's target is 2 GB).
RSS_KILL_MB = 8000.0


def _bench_open() -> Any:
    """``bench_open.py`` (its slide builder, memory probes and machine note)."""
    here = str(Path(__file__).resolve().parent)
    if here not in sys.path:
        sys.path.insert(0, here)
    import bench_open

    return bench_open


# -- helpers used in the children ----------------------------------------------------------


def _quiet() -> None:
    """Silence the placeholder model's warning (timings do not depend on the weights)."""
    from slide_unet.core.errors import PlaceholderModelWarning

    warnings.simplefilter("ignore", PlaceholderModelWarning)


def _peak_rss_mb() -> float:
    return float(_bench_open()._peak_rss_mb())


def _rss_mb() -> float:
    return float(_bench_open()._rss_mb())


def _cpu_snapshot() -> tuple[float, float, float]:
    """(wall clock, CPU seconds used by the whole machine, CPU seconds used by this process)."""
    with open("/proc/stat") as stat:
        fields = [int(v) for v in stat.readline().split()[1:]]
    # user nice system idle iowait irq softirq steal: busy is all but idle and iowait
    busy = sum(fields[:8]) - fields[3] - fields[4]
    own = os.times()
    return time.monotonic(), busy / os.sysconf("SC_CLK_TCK"), own.user + own.system


def _others_load(before: tuple[float, float, float]) -> dict[str, float]:
    """How busy the machine was with other processes since ``before``, in cores, and the
    cores this process used: a noisy measurement shows here."""
    after = _cpu_snapshot()
    wall = max(after[0] - before[0], 1e-9)
    own = (after[2] - before[2]) / wall
    return {"own_cores": own, "others_cores": max(0.0, (after[1] - before[1]) / wall - own)}


def _cpu() -> float:
    """CPU seconds this process has used, all threads (robust to other processes' load)."""
    times = os.times()
    return times.user + times.system


def _sync(device: str) -> None:
    import torch

    if device.startswith("cuda"):
        torch.cuda.synchronize()


class ForwardProbe:
    """Forward hooks that record every batch the engine runs through the model.

    Records each call's batch size, tile side, memory format, device and autocast type and,
    on the CPU only (a GPU would need a synchronisation that changes what is measured), the
    time spent inside ``forward``.
    """

    def __init__(self, model: Any) -> None:
        self.calls: list[dict[str, Any]] = []
        self._start = 0.0
        model.register_forward_pre_hook(self._pre)
        model.register_forward_hook(self._post)

    def _pre(self, module: Any, args: tuple[Any, ...]) -> None:
        import torch

        x = args[0]
        kind = x.device.type
        autocast = None
        if torch.is_autocast_enabled(kind):
            autocast = str(torch.get_autocast_dtype(kind)).removeprefix("torch.")
        self.calls.append(
            {
                "n": int(x.shape[0]),
                "side": [int(x.shape[2]), int(x.shape[3])],
                "channels_last": bool(x.is_contiguous(memory_format=torch.channels_last)),
                "device": str(x.device),
                "autocast": autocast,
                "start": time.perf_counter(),
            }
        )
        self._start = time.perf_counter()

    def _post(self, module: Any, args: tuple[Any, ...], output: Any) -> None:
        self.calls[-1]["forward_s"] = time.perf_counter() - self._start

    def summary(self, t0: float, cpu: bool) -> dict[str, Any]:
        """What ran, relative to ``t0`` (the start of the measured call)."""
        if not self.calls:
            return {"tiles": 0, "batches": 0}
        batch_sizes: dict[str, int] = {}
        shapes: dict[str, int] = {}  # "SIDExN": batches of N tiles of SIDE x SIDE
        for call in self.calls:
            batch_sizes[str(call["n"])] = batch_sizes.get(str(call["n"]), 0) + 1
            key = f"{call['side'][0]}x{call['n']}"
            shapes[key] = shapes.get(key, 0) + 1
        sides = sorted({tuple(c["side"]) for c in self.calls})
        first = self.calls[0]
        return {
            "tiles": sum(c["n"] for c in self.calls),
            "batches": len(self.calls),
            "batch_sizes": batch_sizes,
            "shapes": shapes,
            "sides": [list(s) for s in sides],
            "channels_last": all(c["channels_last"] for c in self.calls),
            "device": first["device"],
            "autocast": first["autocast"],
            "first_forward_at_s": first["start"] - t0,
            "forward_s": sum(c.get("forward_s", 0.0) for c in self.calls) if cpu else None,
        }


def _load(device: str) -> Any:
    """The bundled model, as the engine leaves it: eval, on the device, channels-last."""
    import torch

    from slide_unet import load_model

    model = load_model(MODEL)
    model.eval()
    if device.split(":")[0] in ("cpu", "cuda"):
        model.to(device=device, memory_format=torch.channels_last)
    else:
        model.to(device)
    return model


def _autocast(device: str, dtype_name: str | None) -> Any:
    import contextlib

    import torch

    if not dtype_name:
        return contextlib.nullcontext()
    return torch.autocast(device_type=device.split(":")[0], dtype=getattr(torch, dtype_name))


def _warm_up(model: Any, device: str, side: int, autocast: str | None) -> None:
    """One forward of one tile, so that one-time set-up (oneDNN, cuDNN) is not timed."""
    import torch

    x = torch.randn(1, 3, side, side, device=device).contiguous(memory_format=torch.channels_last)
    with torch.inference_mode(), _autocast(device, autocast):
        model(x)
    _sync(device)


def _engine_settings(path: str, region: Any, device: str) -> dict[str, Any]:
    """The tile, halo, batch and autocast the engine will use (from its own planner)."""
    from slide_unet.core.devices import default_batch_size, resolve_device, resolve_precision
    from slide_unet.core.inference.planning import plan_segmentation

    dev = resolve_device(device)
    plan = plan_segmentation(path, MODEL, region=region, device=dev)
    dtype = resolve_precision("auto", dev)
    return {
        "tile": plan.tile,
        "halo": plan.grid.halo,
        "block": plan.grid.block,
        "level": plan.level,
        "scale": plan.scale,
        "batch": default_batch_size(dev, plan.tile, 16),
        "autocast": None if dtype is None else str(dtype).removeprefix("torch."),
        "total_blocks": plan.total_blocks,
        "blocks_run": len(plan.blocks),
    }


# -- the children ----------------------------------------------------------------------------


def child_baseline(cfg: dict[str, Any]) -> dict[str, Any]:
    """RSS after the imports every measuring child makes, and what torch runs on."""
    import torch

    result = {
        "baseline_rss_mb": _rss_mb(),
        "torch_threads": torch.get_num_threads(),
        "cpu_capability": torch.backends.cpu.get_cpu_capability(),
        "gpu": torch.cuda.get_device_name() if torch.cuda.is_available() else None,
    }
    result.update(_engine_settings(cfg["slide"], cfg.get("region"), cfg["device"]))
    return result


def child_whole(cfg: dict[str, Any]) -> dict[str, Any]:
    """The whole slide, streamed to a zarr store."""
    from slide_unet.core.inference.segment import segment

    device = cfg["device"]
    baseline = _rss_mb()
    t_load = time.perf_counter()
    model = _load(device)
    load_s = time.perf_counter() - t_load
    probe = ForwardProbe(model)
    last = [0.0]

    def progress(done: int, total: int) -> None:
        now = time.perf_counter()
        if done in (0, total) or now - last[0] > 2.0:
            last[0] = now
            print(f"PROGRESS {done} {total} {now - t0:.3f}", file=sys.stderr, flush=True)

    out = Path(cfg["out"])
    c0, t0 = _cpu(), time.perf_counter()
    result = segment(cfg["slide"], model, device=device, out=out, progress=progress)
    _sync(device)
    wall, cpu = time.perf_counter() - t0, _cpu() - c0
    peak = _peak_rss_mb()
    shape = list(result.shape)
    shutil.rmtree(out, ignore_errors=True)
    return {
        "wall_s": wall,
        "cpu_s": cpu,
        "model_load_s": load_s,
        "peak_rss_mb": peak,
        "baseline_rss_mb": baseline,
        "out_shape": shape,
        "probe": probe.summary(t0, device == "cpu"),
    }


def child_region(cfg: dict[str, Any]) -> dict[str, Any]:
    """``segment(slide, model, region=...)`` into numpy, after a one-tile warm-up."""
    from slide_unet.core.inference.segment import segment

    device = cfg["device"]
    model = _load(device)
    _warm_up(model, device, cfg["tile"], cfg["autocast"])
    probe = ForwardProbe(model)
    baseline = _rss_mb()
    c0, t0 = _cpu(), time.perf_counter()
    mask = segment(cfg["slide"], model, region=cfg["region"], device=device)
    _sync(device)
    wall, cpu = time.perf_counter() - t0, _cpu() - c0
    return {
        "wall_s": wall,
        "cpu_s": cpu,
        "peak_rss_mb": _peak_rss_mb(),
        "baseline_rss_mb": baseline,
        "out_shape": list(mask.shape),
        "foreground": float(mask.mean()),
        "probe": probe.summary(t0, device == "cpu"),
    }


def child_array(cfg: dict[str, Any]) -> dict[str, Any]:
    """``segment(array, model, mpp=working)`` on the region MONAI gets, held in memory at
    working scale (uint8, as read): the like-for-like comparison, output at working scale."""
    from slide_unet.core.inference.segment import segment

    device = cfg["device"]
    model = _load(device)
    _warm_up(model, device, cfg["tile"], cfg["autocast"])
    pixels = _read_working_region(cfg["slide"], cfg["level"], cfg["working_box"])
    probe = ForwardProbe(model)
    baseline = _rss_mb()
    c0, t0 = _cpu(), time.perf_counter()
    mask = segment(pixels, model, mpp=model.card.working_mpp, device=device)
    _sync(device)
    wall, cpu = time.perf_counter() - t0, _cpu() - c0
    return {
        "wall_s": wall,
        "cpu_s": cpu,
        "peak_rss_mb": _peak_rss_mb(),
        "baseline_rss_mb": baseline,
        "out_shape": list(mask.shape),
        "probe": probe.summary(t0, device == "cpu"),
    }


def child_model(cfg: dict[str, Any]) -> dict[str, Any]:
    """The model's forward alone on random batches of the shapes the engine ran
    (``cfg["shapes"]``: ``"SIDExN"``, N tiles of SIDE x SIDE)."""
    import torch

    device, repeat = cfg["device"], cfg["repeat"]
    model = _load(device)
    _warm_up(model, device, int(cfg["shapes"][0].split("x")[0]), cfg["autocast"])
    per_batch: dict[str, float] = {}
    per_batch_cpu: dict[str, float] = {}
    samples: dict[str, list[float]] = {}
    for shape in cfg["shapes"]:
        side, size = (int(v) for v in shape.split("x"))
        x = torch.randn(size, 3, side, side, device=device).contiguous(
            memory_format=torch.channels_last
        )
        times, cpus = [], []
        with torch.inference_mode(), _autocast(device, cfg["autocast"]):
            model(x)  # this batch size's own first run
            _sync(device)
            for _ in range(repeat):
                c0, t0 = _cpu(), time.perf_counter()
                model(x)
                _sync(device)
                times.append(time.perf_counter() - t0)
                cpus.append(_cpu() - c0)
        per_batch[shape] = min(times)  # contention only adds: the least is the model's
        per_batch_cpu[shape] = min(cpus)
        samples[shape] = times
    return {
        "per_batch_s": per_batch,
        "per_batch_cpu_s": per_batch_cpu,
        "samples_s": samples,
        "peak_rss_mb": _peak_rss_mb(),
    }


def _read_working_region(path: str, level: int, box: list[int]) -> Any:
    """A region of one pyramid level, as a user holds it: tifffile's zarr store, sliced."""
    import tifffile
    import zarr

    with tifffile.TiffFile(path) as tif:
        store = tif.series[0].aszarr(level=level)
        try:
            array = zarr.open(store, mode="r")
            r0, r1, c0, c1 = box
            return array[r0:r1, c0:c1]
        finally:
            store.close()


def child_monai(cfg: dict[str, Any]) -> dict[str, Any]:
    """MONAI's sliding-window inference on a region at working scale held in memory."""
    import numpy as np
    import torch
    from monai.inferers import sliding_window_inference

    device, tile = cfg["device"], cfg["tile"]
    model = _load(device)
    card = model.card
    _warm_up(model, device, tile, cfg["autocast"])
    baseline = _rss_mb()

    t0 = time.perf_counter()
    pixels = _read_working_region(cfg["slide"], cfg["level"], cfg["working_box"])
    t_read = time.perf_counter()
    mean = np.asarray(card.normalization["mean"], np.float32)
    std = np.asarray(card.normalization["std"], np.float32)
    image = (pixels.astype(np.float32) / 255.0 - mean) / std
    x = torch.from_numpy(image).permute(2, 0, 1)[None].contiguous().to(device)
    t_norm = time.perf_counter()

    def predictor(batch: Any) -> Any:
        with _autocast(device, cfg["autocast"]):
            return model(batch).float()

    c0 = _cpu()
    with torch.inference_mode():
        logits = sliding_window_inference(
            x,
            roi_size=(tile, tile),
            sw_batch_size=cfg["batch"],
            predictor=predictor,
            overlap=cfg["overlap"],
            mode=cfg["mode"],
        )
    _sync(device)
    t_infer = time.perf_counter()
    infer_cpu = _cpu() - c0
    mask = (logits[0, 0] > 0).to(torch.uint8).cpu().numpy()  # sigmoid > 0.5
    t_post = time.perf_counter()
    windows = 1
    for n in x.shape[2:]:
        step = int(tile * (1 - cfg["overlap"]))
        windows *= math.ceil((n - tile) / step) + 1 if n > tile else 1
    return {
        "read_s": t_read - t0,
        "normalise_s": t_norm - t_read,
        "infer_s": t_infer - t_norm,
        "infer_cpu_s": infer_cpu,
        "threshold_s": t_post - t_infer,
        "windows": windows,
        "roi": tile,
        "shape": list(mask.shape),
        "peak_rss_mb": _peak_rss_mb(),
        "baseline_rss_mb": baseline,
    }


def child_viewport(cfg: dict[str, Any]) -> dict[str, Any]:
    """A cold first call, then warm calls with the slide open and the model loaded once."""
    from slide_unet import open_slide
    from slide_unet.core.inference.segment import segment

    device = cfg["device"]
    t0 = time.perf_counter()
    segment(cfg["slide"], MODEL, region=cfg["region"], device=device)
    _sync(device)
    cold_s = time.perf_counter() - t0
    slide = open_slide(cfg["slide"])
    model = _load(device)
    probe = ForwardProbe(model)
    t0 = time.perf_counter()
    segment(slide, model, region=cfg["warm_region"], device=device)
    _sync(device)
    warm_up_s = time.perf_counter() - t0
    times, cpus = [], []
    for _ in range(cfg["repeat"]):
        probe.calls.clear()
        c0, t0 = _cpu(), time.perf_counter()
        mask = segment(slide, model, region=cfg["region"], device=device)
        _sync(device)
        times.append(time.perf_counter() - t0)
        cpus.append(_cpu() - c0)
    slide.close()
    return {
        "cold_s": cold_s,
        "warm_up_s": warm_up_s,
        "warm_s": times,
        "median_s": statistics.median(times),
        "warm_cpu_s": cpus,
        "out_shape": list(mask.shape),
        "peak_rss_mb": _peak_rss_mb(),
        "probe": probe.summary(t0, device == "cpu"),
    }


def child_naive(cfg: dict[str, Any]) -> dict[str, Any]:
    """The whole slide in memory, resized to working scale, cut, predicted, stitched."""
    import numpy as np
    import tifffile
    import torch
    import torch.nn.functional as F

    device, side, batch = cfg["device"], NAIVE_TILE, cfg["batch"]
    model = _load(device)
    card = model.card
    _warm_up(model, device, side, cfg["autocast"])
    mean = torch.tensor(card.normalization["mean"], device=device).view(1, 3, 1, 1)
    std = torch.tensor(card.normalization["std"], device=device).view(1, 3, 1, 1)
    scale = cfg["scale"]
    stages: dict[str, float] = {}

    def mark(name: str, since: float) -> float:
        now = time.perf_counter()
        stages[name] = now - since
        print(f"STAGE {name} {stages[name]:.3f} rss {_rss_mb():.0f}", file=sys.stderr, flush=True)
        return now

    c0 = _cpu()
    t0 = t = time.perf_counter()
    slide = tifffile.imread(cfg["slide"])  # level 0, whole
    height, width = slide.shape[:2]
    t = mark("read", t)
    small_h, small_w = math.ceil(height / scale), math.ceil(width / scale)
    small = F.interpolate(
        torch.from_numpy(slide).permute(2, 0, 1)[None],
        size=(small_h, small_w),
        mode="bilinear",
        antialias=True,
    )[0].permute(1, 2, 0)
    del slide
    t = mark("resize", t)
    rows, cols = math.ceil(small_h / side), math.ceil(small_w / side)
    padded = torch.zeros((rows * side, cols * side, 3), dtype=torch.uint8)
    padded[:small_h, :small_w] = small
    del small
    prediction = np.zeros((rows * side, cols * side), np.uint8)
    corners = [(i * side, j * side) for i in range(rows) for j in range(cols)]
    with torch.inference_mode(), _autocast(device, cfg["autocast"]):
        for k in range(0, len(corners), batch):
            part = corners[k : k + batch]
            tiles = torch.stack([padded[y : y + side, x : x + side] for y, x in part])
            x = tiles.to(device).permute(0, 3, 1, 2).float() / 255.0
            x = ((x - mean) / std).contiguous(memory_format=torch.channels_last)
            masks = (model(x)[:, 0] > 0).to(torch.uint8).cpu().numpy()
            for (y, x0), m in zip(part, masks, strict=True):
                prediction[y : y + side, x0 : x0 + side] = m
    t = mark("predict", t)
    working = torch.from_numpy(prediction[:small_h, :small_w])[None, None]
    full = F.interpolate(working, size=(height, width), mode="nearest")[0, 0].numpy()
    t = mark("stitch", t)
    return {
        "wall_s": t - t0,
        "cpu_s": _cpu() - c0,
        "stages_s": stages,
        "tiles": len(corners),
        "working_shape": [small_h, small_w],
        "out_shape": list(full.shape),
        "peak_rss_mb": _peak_rss_mb(),
    }


CHILDREN = {
    "baseline": child_baseline,
    "whole": child_whole,
    "region": child_region,
    "array": child_array,
    "model": child_model,
    "monai": child_monai,
    "viewport": child_viewport,
    "naive": child_naive,
}


# -- running children --------------------------------------------------------------------------


def run_child(
    mode: str,
    cfg: dict[str, Any],
    *,
    timeout: float = DEFAULT_TIMEOUT_S,
    rss_cap_mb: float = RSS_KILL_MB,
) -> dict[str, Any]:
    """Run one measurement in a fresh interpreter; kill it past ``timeout`` or the RSS cap.

    A killed child's result has ``error`` and, when it printed them, its last progress
    (``PROGRESS done total elapsed``) and stage lines, and the highest RSS seen.
    """
    status_mb = _bench_open()._status_mb
    command = [sys.executable, str(Path(__file__).resolve()), "--child", mode]
    with tempfile.TemporaryFile("w+") as out, tempfile.TemporaryFile("w+") as err:
        process = subprocess.Popen(
            command, stdin=subprocess.PIPE, stdout=out, stderr=err, cwd=REPO_ROOT, text=True
        )
        assert process.stdin is not None
        process.stdin.write(json.dumps(cfg))
        process.stdin.close()
        start, killed, highest = time.monotonic(), None, 0.0
        while process.poll() is None:
            elapsed = time.monotonic() - start
            rss = status_mb("VmRSS", process.pid)
            highest = max(highest, rss)
            if elapsed > timeout:
                killed = f"timeout: killed after {timeout:.0f} s"
            elif rss > rss_cap_mb:
                killed = f"over the {rss_cap_mb:.0f} MB RSS cap after {elapsed:.0f} s: killed"
            if killed:
                process.kill()
                process.wait()
                break
            time.sleep(0.1)
        out.seek(0)
        err.seek(0)
        stdout, stderr = out.read(), err.read()
    lines = stdout.strip().splitlines()
    if killed or process.returncode != 0 or not lines:
        result: dict[str, Any] = {
            "error": killed or f"exit {process.returncode}",
            "highest_rss_mb": highest,
            "elapsed_s": time.monotonic() - start,
        }
        progress = [ln.split() for ln in stderr.splitlines() if ln.startswith("PROGRESS ")]
        if progress:
            done, total, at = progress[-1][1:4]
            result["progress"] = {"done": int(done), "total": int(total), "at_s": float(at)}
        stages = [ln for ln in stderr.splitlines() if ln.startswith("STAGE ")]
        if stages:
            result["stages"] = stages
        if not killed:
            other = [ln for ln in stderr.splitlines() if not ln.startswith(("PROGRESS", "STAGE"))]
            result["error"] += ": " + " | ".join(other[-3:])
        return result
    return json.loads(lines[-1])


# -- choosing regions --------------------------------------------------------------------------


def best_window(tissue: Any, rows: int, cols: int, avoid: Any = None) -> tuple[int, int]:
    """Top-left cell of the ``rows`` x ``cols`` window of cells with the most tissue
    (the first such, row by row), not overlapping the window ``avoid`` when it can."""
    import numpy as np

    n_rows, n_cols = tissue.shape
    rows, cols = min(rows, n_rows), min(cols, n_cols)
    summed = np.pad(tissue.astype(np.int64).cumsum(0).cumsum(1), ((1, 0), (1, 0)))
    best, best_free = None, None
    for i in range(n_rows - rows + 1):
        for j in range(n_cols - cols + 1):
            count = (
                summed[i + rows, j + cols]
                - summed[i, j + cols]
                - summed[i + rows, j]
                + summed[i, j]
            )
            if best is None or count > best[0]:
                best = (count, i, j)
            if avoid is not None:
                ai, aj, ar, ac = avoid
                free = i >= ai + ar or i + rows <= ai or j >= aj + ac or j + cols <= aj
                if free and (best_free is None or count > best_free[0]):
                    best_free = (count, i, j)
    if avoid is not None:
        chosen = best_free or next(
            (0, i, j)
            for i in range(n_rows - rows + 1)
            for j in range(n_cols - cols + 1)
            if (i, j) != avoid[:2]
        )
        return chosen[1], chosen[2]
    assert best is not None
    return best[1], best[2]


def plan_regions(mosaic: Any, scale: float, quick: bool) -> dict[str, Any]:
    """Full-resolution boxes ``[y0, y1, x0, x1]`` of the MONAI region and the viewports,
    on the mosaic's cell grid, where there is most tissue."""
    height, width = mosaic.height, mosaic.width
    side_working = QUICK_REGION_WORKING if quick else REGION_WORKING
    side = int(side_working * scale)
    cells = math.ceil(side / CELL)
    i, j = best_window(mosaic.tissue, cells, cells)
    y0, x0 = min(i * CELL, height - side), min(j * CELL, width - side)
    region = [y0, y0 + side, x0, x0 + side]
    vh, vw = (int(n * scale) for n in VIEWPORT_WORKING)
    vr, vc = math.ceil(vh / CELL), math.ceil(vw / CELL)
    i, j = best_window(mosaic.tissue, vr, vc)
    wi, wj = best_window(mosaic.tissue, vr, vc, avoid=(i, j, vr, vc))
    view = [min(i * CELL, height - vh), 0, min(j * CELL, width - vw), 0]
    view[1], view[3] = view[0] + vh, view[2] + vw
    warm = [min(wi * CELL, height - vh), 0, min(wj * CELL, width - vw), 0]
    warm[1], warm[3] = warm[0] + vh, warm[2] + vw

    def tissue_of(box: list[int]) -> float:
        t = mosaic.tissue[box[0] // CELL : -(-box[1] // CELL), box[2] // CELL : -(-box[3] // CELL)]
        return float(t.mean())

    return {
        "region": region,
        "region_working": side_working,
        "region_tissue": tissue_of(region),
        "viewport": view,
        "viewport_tissue": tissue_of(view),
        "warm_region": warm,
    }


# -- the report --------------------------------------------------------------------------------


def model_time_for(
    probe: dict[str, Any], model: dict[str, Any], key: str = "per_batch_s"
) -> float | None:
    """Seconds (wall, or CPU with ``key="per_batch_cpu_s"``) the model alone needs for the
    batches the engine ran."""
    if "error" in model or not probe.get("shapes"):
        return None
    per = model[key]
    if any(shape not in per for shape in probe["shapes"]):
        return None
    return sum(per[shape] * count for shape, count in probe["shapes"].items())


def _tiles(probe: dict[str, Any]) -> str:
    """``"193 × 752²"``: the tiles the engine ran, and their side(s)."""
    sides = " / ".join(f"{side[0]}²" for side in probe.get("sides", []))
    return f"{probe['tiles']} × {sides}" if sides else str(probe.get("tiles", 0))


def _shapes(probe: dict[str, Any]) -> str:
    """``"(96 of 2 x 752², 1 of 1 x 752²)"``: the batches the engine ran."""
    parts = []
    for shape, count in probe["shapes"].items():
        side, n = shape.split("x")
        parts.append(f"{count} of {n} x {side}²")
    return "(" + ", ".join(parts) + ")"


def versions() -> str:
    from importlib.metadata import PackageNotFoundError, version

    names = ["torch", "monai", "numpy", "tifffile", "imagecodecs", "zarr", "dask"]
    found = []
    for name in names:
        try:
            found.append(f"{name} {version(name)}")
        except PackageNotFoundError:
            found.append(f"{name} (not installed)")
    return ", ".join(found)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--quick", action="store_true", help="small slide and region; no whole slide, no naive"
    )
    parser.add_argument("--device", default="cpu", help="cpu (default), cuda, cuda:1 ...")
    parser.add_argument("--skip-naive", action="store_true", help="skip the naive approach")
    parser.add_argument("--skip-monai", action="store_true", help="skip MONAI")
    parser.add_argument(
        "--whole-timeout",
        type=float,
        default=WHOLE_TIMEOUT_S,
        help="stop the whole slide after this many s and extrapolate from its progress",
    )
    parser.add_argument("--naive-timeout", type=float, default=NAIVE_TIMEOUT_S)
    parser.add_argument(
        "--naive-rss-cap-mb",
        type=float,
        default=NAIVE_RSS_CAP_MB,
        help="kill the naive approach above this RSS (lowered to what the machine has free)",
    )
    parser.add_argument("--repeat", type=int, default=5, help="timed batches per batch size")
    parser.add_argument(
        "--rounds", type=int, default=2, help="rounds of ours vs MONAI (the least time is kept)"
    )
    parser.add_argument("--child", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)

    if args.child:
        cfg = json.loads(sys.stdin.read())
        t_import = time.perf_counter()
        import torch  # noqa: F401

        import slide_unet.core.inference.segment  # noqa: F401

        import_s = time.perf_counter() - t_import
        _quiet()
        before = _cpu_snapshot()
        result = CHILDREN[args.child](cfg)
        print(json.dumps({**result, "import_s": import_s, **_others_load(before)}))
        return 0

    bench_open = _bench_open()
    shape = bench_open.QUICK_SHAPE if args.quick else bench_open.FULL_SHAPE
    slide = CACHE_DIR / f"{'quick-' if args.quick else ''}pyramid.ome.tif"
    mosaic = bench_open.Mosaic(*shape)
    bench_open.build_slides({"pyramid": slide}, mosaic)
    slide_mp = shape[0] * shape[1] / 1e6
    device = args.device
    base_cfg = {"slide": str(slide), "device": device}

    print("planning (fresh process) ...", flush=True)
    baseline = run_child("baseline", {**base_cfg, "region": None})
    if "error" in baseline:
        print(f"cannot plan: {baseline['error']}")
        return 1
    scale = baseline["scale"]
    regions = plan_regions(mosaic, scale, args.quick)
    del mosaic
    tile, halo, batch = baseline["tile"], baseline["halo"], baseline["batch"]
    autocast = baseline["autocast"]
    level = baseline["level"]
    engine = {"tile": tile, "autocast": autocast}
    region = regions["region"]
    region_mp = (region[1] - region[0]) * (region[3] - region[2]) / 1e6
    view = regions["viewport"]
    view_mp = (view[1] - view[0]) * (view[3] - view[2]) / 1e6
    print(
        f"slide {slide.name}: {shape[0]:,} x {shape[1]:,} ({slide_mp:,.0f} MP); engine: level "
        f"{level}, scale {scale:g}, tile {tile}, halo {halo}, block {baseline['block']}, batch "
        f"{batch}, autocast {autocast}; region {region}; viewport {view}, warm-up "
        f"{regions['warm_region']}",
        flush=True,
    )

    load_before = os.getloadavg()
    started = time.monotonic()
    results: dict[str, dict[str, Any]] = {}

    def step(
        name: str, mode: str, cfg: dict[str, Any], key: str | None = None, **kwargs: Any
    ) -> dict[str, Any]:
        """Run a child; with ``key``, keep the run with the least ``key`` (contention only
        adds time), all runs' values listed in ``runs_s``."""
        t = time.monotonic()
        print(f"- {name} ...", end=" ", flush=True)
        result = run_child(mode, {**base_cfg, **cfg}, **kwargs)
        status = result.get("error", "ok")
        if "error" not in result:
            status = f"others' load {result['others_cores']:.2f} cores"
            if key:
                status = f"{result[key]:.1f} s, {status}"
        print(f"{status} ({time.monotonic() - t:.0f} s)", flush=True)
        previous = results.get(name)
        if key and previous and "error" not in previous:
            runs = [*previous["runs_s"], result.get(key)]
            if "error" not in result and result[key] < previous[key]:
                previous = result
            results[name] = {**previous, "runs_s": runs}
        elif key:
            results[name] = {**result, "runs_s": [result.get(key)]}
        else:
            results[name] = result
        return results[name]

    step(
        "viewport",
        "viewport",
        {
            "region": view,
            "warm_region": regions["warm_region"],
            "repeat": VIEWPORT_REPEAT,
        },
    )
    # Ours and MONAI alternate, round after round; the least time of each is kept.
    for _ in range(1 if args.quick else args.rounds):
        step("region", "region", {"region": region, **engine}, key="wall_s")
        working_box = [round(v / scale) for v in region]
        step(
            "array",
            "array",
            {"level": level, "working_box": working_box, **engine},
            key="wall_s",
        )
        # MONAI gets the tile and batch the engine ran on this region (its planner may
        # size tiles to the region: fewer, smaller ones than on the whole slide).
        probe = results["region"].get("probe") or {}
        if probe.get("sides"):
            roi = probe["sides"][0][0]
            roi_batch = int(max(probe["batch_sizes"].items(), key=lambda kv: kv[1])[0])
            regions["roi"], regions["roi_batch"] = roi, roi_batch
        roi, roi_batch = regions.get("roi", tile), regions.get("roi_batch", batch)
        for mode in () if args.skip_monai else ("gaussian", "constant"):
            step(
                f"monai-{mode}",
                "monai",
                {
                    "level": level,
                    "working_box": working_box,
                    "tile": roi,
                    "overlap": 2 * halo / roi,
                    "batch": roi_batch,
                    "mode": mode,
                    "autocast": autocast,
                },
                key="infer_s",
            )
    if not args.quick:
        out = Path(tempfile.mkdtemp(prefix="bench-segment-", dir=CACHE_DIR)) / "mask.zarr"
        try:
            step("whole", "whole", {"out": str(out)}, timeout=args.whole_timeout)
        finally:
            shutil.rmtree(out.parent, ignore_errors=True)
    # The model alone, on the batch shapes the engine ran (plus batch 1, for comparison).
    shapes = {f"{tile}x{batch}", f"{tile}x1"}
    for name in ("whole", "region"):
        probe = results.get(name, {}).get("probe", {})
        shapes.update(probe.get("shapes", {}))
        for side in probe.get("sides", []):
            shapes.add(f"{side[0]}x1")
    step(
        "model",
        "model",
        {
            "shapes": sorted(shapes, key=lambda v: [int(n) for n in v.split("x")]),
            "repeat": max(2, args.repeat // 2) if args.quick else args.repeat,
            "autocast": autocast,
        },
    )
    naive_cap = args.naive_rss_cap_mb
    if not args.quick and not args.skip_naive:
        with open("/proc/meminfo") as meminfo:
            info = {ln.split(":")[0]: int(ln.split()[1]) / 1024 for ln in meminfo}
        naive_cap = min(naive_cap, info["MemAvailable"] - 2000)
        step(
            "naive",
            "naive",
            {"scale": scale, "batch": batch, "autocast": autocast},
            timeout=args.naive_timeout,
            rss_cap_mb=naive_cap,
        )
    load_after = os.getloadavg()
    elapsed = time.monotonic() - started

    report(
        results,
        baseline=baseline,
        regions=regions,
        args=args,
        slide_mp=slide_mp,
        region_mp=region_mp,
        view_mp=view_mp,
        naive_cap=naive_cap,
    )
    print()
    print(
        f"Machine: {bench_open.machine()}; torch {baseline['torch_threads']} threads, CPU "
        f"capability {baseline['cpu_capability']}"
        + (f", GPU {baseline['gpu']}" if baseline["gpu"] else "")
        + f"; load average {load_before[0]:.2f} before, {load_after[0]:.2f} after; "
        f"measuring took {elapsed / 60:.1f} min."
    )
    print(f"Versions: {versions()}.")
    return 0


def report(
    results: dict[str, dict[str, Any]],
    *,
    baseline: dict[str, Any],
    regions: dict[str, Any],
    args: argparse.Namespace,
    slide_mp: float,
    region_mp: float,
    view_mp: float,
    naive_cap: float,
) -> None:
    """Print the measurement table, the targets table and the details."""
    cpu = args.device == "cpu"
    tile, halo, batch = baseline["tile"], baseline["halo"], baseline["batch"]
    roi, roi_batch = regions.get("roi", tile), regions.get("roi_batch", batch)
    model = results.get("model", {"error": "not run"})
    rows: list[list[str]] = []
    targets: list[list[str]] = []

    def verdict(ok: bool) -> str:
        return "PASS" if ok else "FAIL"

    def row(
        name: str, includes: str, result: dict[str, Any], *cells: str, cpu: float | None = None
    ) -> None:
        """A measurement row: ``cells`` are tiles, wall, MP/s and peak RSS."""
        load = result.get("others_cores")
        rows.append(
            [
                name,
                includes,
                *cells[:2],
                "—" if cpu is None else f"{cpu:.1f}",
                *cells[2:],
                "—" if load is None else f"{load:.2f}",
            ]
        )

    def failed(name: str, result: dict[str, Any]) -> None:
        row(name, f"FAILED: {result['error']}", {}, "—", "—", "—", "—")

    def ratio(wall: float, cpu: float | None, unit: str = "") -> str:
        return f"{wall:.2f}{unit}" + ("" if cpu is None else f" (CPU time: {cpu:.2f}{unit})")

    def runs(result: dict[str, Any]) -> str:
        values = [v for v in result.get("runs_s", []) if v is not None]
        if len(values) < 2:
            return ""
        return "; least of " + ", ".join(f"{v:.1f}" for v in values) + " s"

    # -- whole slide and the model alone
    whole = results.get("whole")
    efficiency = None
    if whole is not None and "error" in whole:
        p = whole.get("progress")
        if p and p["done"]:
            estimate = p["at_s"] * p["total"] / p["done"]
            row(
                "ours, whole slide → .zarr (EXTRAPOLATED)",
                f"{whole['error']}; {p['done']}/{p['total']} blocks in {p['at_s']:.0f} s",
                whole,
                f"{p['total']}",
                f"~{estimate:.0f}",
                f"~{slide_mp / estimate:.1f}",
                f"≥ {whole['highest_rss_mb']:.0f}",
            )
        else:
            failed("ours, whole slide → .zarr", whole)
        targets.append(["whole slide peak RSS", "—", "< 2000 MB", "FAIL"])
    elif whole is not None:
        probe = whole["probe"]
        skipped = 1 - probe["tiles"] / baseline["total_blocks"]
        row(
            "ours, whole slide → .zarr",
            "open, plan + tissue mask, read, resample, model, map back, threshold, write; "
            f"{skipped:.0%} of blocks skipped as background",
            whole,
            f"{_tiles(probe)} of {baseline['total_blocks']} blocks",
            f"{whole['wall_s']:.1f}",
            f"{slide_mp / whole['wall_s']:.1f}",
            f"{whole['peak_rss_mb']:.0f}",
            cpu=whole.get("cpu_s"),
        )
        targets.append(
            [
                "whole slide peak RSS",
                f"{whole['peak_rss_mb']:.0f} MB",
                f"< {TARGET_PEAK_MB:.0f} MB",
                verdict(whole["peak_rss_mb"] < TARGET_PEAK_MB),
            ]
        )
        model_s = model_time_for(probe, model)
        if model_s:
            efficiency = model_s / whole["wall_s"]
            model_cpu = model_time_for(probe, model, "per_batch_cpu_s")
            row(
                "model forward only, the engine's batches",
                f"{probe['batches']} batches {_shapes(probe)} of random tiles, least time "
                "per batch shape",
                model,
                _tiles(probe),
                f"{model_s:.1f}",
                f"{slide_mp / model_s:.1f}",
                f"{model['peak_rss_mb']:.0f}",
                cpu=model_cpu,
            )
            cpu_eff = model_cpu / whole["cpu_s"] if model_cpu and whole.get("cpu_s") else None
            targets.append(
                [
                    "pipeline efficiency, whole slide (model-only time / end-to-end)",
                    ratio(efficiency, cpu_eff),
                    f"≥ {TARGET_EFFICIENCY}",
                    verdict(efficiency >= TARGET_EFFICIENCY),
                ]
            )
        if not cpu:
            targets.append(
                [
                    "whole slide on one GPU",
                    f"{whole['wall_s']:.1f} s",
                    f"< {TARGET_GPU_WHOLE_S:.0f} s",
                    verdict(whole["wall_s"] < TARGET_GPU_WHOLE_S),
                ]
            )

    # -- a region: ours, the model alone, MONAI
    ours = results.get("region", {"error": "not run"})
    label = f"region {regions['region_working']}² working ({region_mp:,.0f} MP full res)"
    if "error" in ours:
        failed(f"ours, {label}", ours)
    else:
        probe = ours["probe"]
        row(
            f"ours, {label} → numpy",
            "open, plan + tissue mask, read, resample, model, map back to full res, "
            "threshold" + runs(ours),
            ours,
            _tiles(probe),
            f"{ours['wall_s']:.1f}",
            f"{region_mp / ours['wall_s']:.1f}",
            f"{ours['peak_rss_mb']:.0f}",
            cpu=ours.get("cpu_s"),
        )
        model_s = model_time_for(probe, model)
        if model_s:
            region_eff = model_s / ours["wall_s"]
            model_cpu = model_time_for(probe, model, "per_batch_cpu_s")
            row(
                "model forward only, the engine's batches",
                f"{probe['batches']} batches {_shapes(probe)}",
                model,
                _tiles(probe),
                f"{model_s:.1f}",
                f"{region_mp / model_s:.1f}",
                f"{model['peak_rss_mb']:.0f}",
                cpu=model_cpu,
            )
            informative = efficiency is not None
            cpu_eff = model_cpu / ours["cpu_s"] if model_cpu and ours.get("cpu_s") else None
            targets.append(
                [
                    "pipeline efficiency, region (model-only time / end-to-end)",
                    ratio(region_eff, cpu_eff),
                    f"≥ {TARGET_EFFICIENCY}" + (" (info)" if informative else ""),
                    "—" if informative else verdict(region_eff >= TARGET_EFFICIENCY),
                ]
            )
    array = results.get("array")
    if array is not None and "error" in array:
        failed("ours, the same region as an array in memory", array)
    elif array is not None:
        row(
            f"ours, the same region as a {regions['region_working']}² uint8 array in memory "
            "(mpp = working) → numpy",
            "segment(array): tissue mask, tile, normalise, model, threshold; output at "
            "working scale, like MONAI's" + runs(array),
            array,
            _tiles(array["probe"]),
            f"{array['wall_s']:.1f}",
            f"{region_mp / array['wall_s']:.1f}",
            f"{array['peak_rss_mb']:.0f}",
            cpu=array.get("cpu_s"),
        )
    for mode in ("gaussian", "constant"):
        monai = results.get(f"monai-{mode}")
        if monai is None:
            continue
        if "error" in monai:
            failed(f"MONAI {mode}", monai)
            continue
        row(
            f"MONAI sliding_window_inference, {mode}",
            f"the call only (input at working scale, normalised, in memory: read "
            f"{monai['read_s']:.1f} s + normalise {monai['normalise_s']:.1f} s not counted)"
            + runs(monai),
            monai,
            f"{monai['windows']} × {monai['roi']}²",
            f"{monai['infer_s']:.1f}",
            f"{region_mp / monai['infer_s']:.1f}",
            f"{monai['peak_rss_mb']:.0f}",
            cpu=monai.get("infer_cpu_s"),
        )
        for label, run in (
            ("slide region → full-res mask", ours),
            ("same array in memory", array),
        ):
            if run is None or "error" in run:
                continue
            speedup = monai["infer_s"] / run["wall_s"]
            cpu_speedup = None
            if monai.get("infer_cpu_s") and run.get("cpu_s"):
                cpu_speedup = monai["infer_cpu_s"] / run["cpu_s"]
            targets.append(
                [
                    f"ours ({label}) vs MONAI {mode} (MONAI time / ours)",
                    ratio(speedup, cpu_speedup, "x"),
                    f"≥ {TARGET_MONAI_SPEEDUP:.0f}x",
                    verdict(speedup >= TARGET_MONAI_SPEEDUP),
                ]
            )

    # -- naive
    naive = results.get("naive")
    name = "naive: whole slide in memory, resize, 512² tiles, stitch"
    if naive is not None and "error" in naive:
        stages = "; ".join(s.removeprefix("STAGE ") for s in naive.get("stages", []))
        row(
            name,
            f"FAILED: {naive['error']}" + (f" (done: {stages})" if stages else ""),
            naive,
            "—",
            f"> {naive['elapsed_s']:.0f}",
            "—",
            f"≥ {naive['highest_rss_mb']:.0f}",
        )
    elif naive is not None:
        st = naive["stages_s"]
        row(
            name,
            f"imread {st['read']:.0f} s, resize {st['resize']:.0f} s, predict "
            f"{st['predict']:.0f} s, stitch + upsample {st['stitch']:.0f} s; no overlap "
            "(seams), no background skipped",
            naive,
            f"{naive['tiles']} × {NAIVE_TILE}²",
            f"{naive['wall_s']:.1f}",
            f"{slide_mp / naive['wall_s']:.1f}",
            f"{naive['peak_rss_mb']:.0f}",
            cpu=naive.get("cpu_s"),
        )

    # -- viewport
    view = results.get("viewport", {"error": "not run"})
    vh, vw = VIEWPORT_WORKING
    if "error" in view:
        failed(f"viewport {vw} x {vh} working", view)
        targets.append(["viewport latency, warm", "—", "< 1 s", "FAIL"])
    else:
        probe = view["probe"]
        row(
            f"viewport {vw} x {vh} working, cold first call",
            "fresh process: load the model by name, open, plan, torch's first run "
            f"(imports {view['import_s']:.1f} s not counted)",
            view,
            _tiles(probe),
            f"{view['cold_s']:.2f}",
            f"{view_mp / view['cold_s']:.1f}",
            f"{view['peak_rss_mb']:.0f}",
        )
        row(
            f"viewport {vw} x {vh} working, warm (median of {len(view['warm_s'])})",
            "slide open, model loaded, one warm-up call on another region; "
            + ", ".join(f"{t:.2f}" for t in view["warm_s"])
            + " s",
            view,
            _tiles(probe),
            f"{view['median_s']:.2f}",
            f"{view_mp / view['median_s']:.1f}",
            "—",
            cpu=statistics.median(view["warm_cpu_s"]) if "warm_cpu_s" in view else None,
        )
        targets.append(
            [
                "viewport latency, warm" + (" (CPU)" if cpu else ""),
                f"{view['median_s']:.2f} s",
                f"< {TARGET_VIEWPORT_CPU_S:.0f} s" + ("" if cpu else " (a CPU target)"),
                verdict(view["median_s"] < TARGET_VIEWPORT_CPU_S) if cpu else "—",
            ]
        )

    print()
    print(
        "| measurement | includes | tiles | wall (s) | CPU (s) | slide MP/s | peak RSS (MB) "
        "| others' load (cores) |"
    )
    print("| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: |")
    for cells in rows:
        print("| " + " | ".join(cells) + " |")
    print()
    print("| target | measured | goal | result |")
    print("| --- | --- | --- | --- |")
    for cells in targets:
        print("| " + " | ".join(cells) + " |")
    print()
    print(
        f"Engine settings for the whole slide: tile {tile}, halo {halo}, block "
        f"{baseline['block']} full-res px, batch {batch}, autocast {baseline['autocast']}, "
        f"read from level {baseline['level']} (scale {baseline['scale']:g}). On the region "
        f"it ran tiles of {roi}² in batches of {roi_batch}: MONAI's roi_size and "
        f"sw_batch_size, with overlap 2 * {halo} / {roi} = {2 * halo / roi:.3f}. The whole slide "
        f"has {baseline['total_blocks']} blocks, {baseline['blocks_run']} with tissue "
        f"({1 - baseline['blocks_run'] / baseline['total_blocks']:.0%} skipped as background). "
        f"Region {regions['region']} ({regions['region_tissue']:.0%} tissue cells), viewport "
        f"{regions['viewport']} ({regions['viewport_tissue']:.0%} tissue), warm-up region "
        f"{regions['warm_region']}. Baseline RSS after imports (torch, slide_unet): "
        f"{baseline['baseline_rss_mb']:.0f} MB. CPU (s): CPU time of the measured call, all "
        "threads (on a shared machine the steadier cost; on a quiet 2-core machine wall is "
        "about CPU / 2). Others' load: CPU cores busy with other processes during that "
        f"measuring process (the machine has {os.cpu_count()}; above about 0.1 the row's wall "
        "time is inflated)."
    )
    if "error" not in model:
        per = model["per_batch_s"]
        print(
            "Model forward alone, least time per batch: "
            + ", ".join(
                f"{k.replace('x', '² x ')}: {v:.3f} s ({v / int(k.split('x')[1]):.3f} s/tile)"
                for k, v in sorted(per.items(), key=lambda kv: [int(n) for n in kv[0].split("x")])
            )
            + "."
        )
    for name in ("whole", "region", "viewport"):
        probe = results.get(name, {}).get("probe")
        wall = results.get(name, {}).get("wall_s", results.get(name, {}).get("warm_s", [0])[-1])
        if probe and probe.get("forward_s") is not None and wall:
            print(
                f"Inside the engine ({name}{', last warm call' if name == 'viewport' else ''}): "
                f"{probe['forward_s']:.1f} s of {wall:.1f} s in the model's forward "
                f"({probe['forward_s'] / wall:.0%}); first forward "
                f"{probe['first_forward_at_s']:.2f} s after the call; channels-last "
                f"{probe['channels_last']}, autocast {probe['autocast']}."
            )
    if "naive" in results:
        print(f"Naive approach: RSS cap {naive_cap:.0f} MB, limit {args.naive_timeout:.0f} s.")
    print()
    print("Details:")
    for name, result in results.items():
        print(f"- {name}: {json.dumps(_round(result))}")


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
