"""The napari path against the ``slide-unet`` command beneath it, in a real window.

A user's session, timed: a real napari window under a virtual display (run it
as ``xvfb-run -a -s "-screen 0 1600x1000x24" python benchmarks/bench_napari.py``;
without ``DISPLAY`` the script starts ``xvfb-run`` for its napari processes
itself), the plugin's widgets docked through its manifest, and a ``QTimer``
asking to tick every 10 ms on the UI thread: the longest gap between the ticks
Qt delivers is the longest time the window could not react (repaint, pan, click
Cancel). The slide is ``benchmarks/.cache/pyramid.ome.tif`` from
``bench_open.py`` (31,299 x 44,066 RGB, JPEG tiles of real PAS kidney tissue,
pyramidal OME-TIFF, 0.5 µm/px; built there when missing), the model the
bundled ``glomeruli``.

Each case runs in a fresh process; the command line twice (before and after
the napari session, their mean is the reference), so that a drift of this
shared machine's load shows:

- **open**: ``viewer.open(slide)`` with the plugin reader: time to the first
  draw of the canvas and the longest UI gap, for the first slide of the session
  (napari's own first-layer set-up included) and for a second open; and, as the
  reference for what napari itself costs, its built-in reader opening a 1024 x
  1024 PNG in another fresh window.
- **Segment** a fixed 8,192 x 8,192 region (the window of 8 x 8 mosaic cells
  with most tissue, brought exactly on screen: a square canvas at the zoom
  that shows 8,192 pixels) with *Min. object* 1,000 µm², from the click to the
  widget's ``finished`` signal, against ``slide-unet segment SLIDE -o
  mask.ome.tif --region ... --min-object-um2 1000`` (its ``main()`` timed in a
  process that has imported torch already, as the napari process has), and the
  peak RSS (``VmHWM``) of either process. The progress bar napari shows is read
  every 200 ms during the run.
- **Cancel** a second run of the same at 40 % of its blocks: the store must
  hold exactly what the first run left (same model and settings: any change is
  a loss), and the time from Cancel to the end.
- **Paint**: *Edit here* on a 2,048 x 2,048 window (the view zoomed to it, the
  Correct widget's button), then 30 brush dabs with napari's brush
  (``layer.paint``, what a mouse drag calls), each timed with the repaint that
  follows it (``processEvents``); the median, the longest UI gap, and how long
  after the last dab the store holds it.
- **Reopen**: the layers removed and the slide opened again: a Labels layer
  over the store must come back, holding the store's pixels.

Targets (issue 14): time ratio <= 1.2, RSS difference <= 400 MB, longest UI gap
< 200 ms during work and < 300 ms on open, brush dab <= 20 ms.

With ``--whole-slide``, also the whole slide from the widget (*Whole slide*,
Min. object 1,000 µm²) against the CLI, each in a fresh process: time, peak RSS,
the UI gap, and that both found the same foreground pixels.

Usage::

    xvfb-run -a -s "-screen 0 1600x1000x24" python benchmarks/bench_napari.py
    python benchmarks/bench_napari.py --whole-slide   # plus the whole slide (~3 min more)
    python benchmarks/bench_napari.py --quick   # 8,192 x 11,000 slide, a 4,096 region
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

HERE = Path(__file__).resolve().parent
REPO_ROOT = HERE.parent
PLUGIN = "napari-slide-unet"
MODEL = "glomeruli"
MIN_OBJECT_UM2 = 1000.0
REGION_SIDE = 8192
QUICK_REGION_SIDE = 4096
EDIT_SIDE = 2048
DABS = 30
CANCEL_AT = 0.4
TICK_MS = 10
PROGRESS_MS = 200
SCREEN = "1600x1000x24"
CHILD_TIMEOUT_S = 1800.0

TARGET_RATIO = 1.2
TARGET_RSS_DIFF_MB = 400.0
TARGET_GAP_WORK_MS = 200.0
TARGET_GAP_OPEN_MS = 300.0
TARGET_DAB_MS = 20.0


def _bench(name: str) -> Any:
    if str(HERE) not in sys.path:
        sys.path.insert(0, str(HERE))
    return __import__(name)


# -- measuring in the children -------------------------------------------------------------


def _status_mb(field: str) -> float:
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith(f"{field}:"):
                return int(line.split()[1]) / 1024
    return 0.0


def child_cli(slide: str, region: list[int]) -> dict[str, Any]:
    """``slide-unet segment`` on the region, its ``main()`` timed after torch is imported."""
    import torch  # noqa: F401  (the napari process has it imported before the click too)

    from slide_unet import cli

    rss_before = _status_mb("VmRSS")
    with tempfile.TemporaryDirectory() as folder:
        out = Path(folder) / "mask.ome.tif"
        argv = ["segment", slide, "-o", str(out), "--model", MODEL]
        argv += ["--min-object-um2", str(MIN_OBJECT_UM2)]
        if region:  # else the whole slide
            y0, y1, x0, x1 = region
            argv += ["--region", f"{y0}:{y1},{x0}:{x1}"]
        started, cpu = time.perf_counter(), _cpu_s()
        code = cli.main(argv)
        seconds, cpu = time.perf_counter() - started, _cpu_s() - cpu
        peak = _status_mb("VmHWM")  # before the check below reads the mask
        foreground = _foreground(out)
    return {
        "exit_code": code,
        "seconds": seconds,
        "cpu_s": cpu,
        "peak_rss_mb": peak,
        "rss_before_mb": rss_before,
        "foreground": foreground,
    }


def _cpu_s() -> float:
    """CPU seconds this process has used, all its threads together."""
    import resource

    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def _foreground(mask: Any) -> int:
    """Non-zero pixels of a mask file or array, counted block by block."""
    import dask.array as da

    from slide_unet.core.masks.io import read_mask

    array = read_mask(mask) if isinstance(mask, str | Path) else mask
    return int(da.count_nonzero(da.asarray(array, chunks=(4096, 4096))).compute())


class Heartbeat:
    """A 10 ms QTimer on the UI thread; the gaps between its ticks, by time."""

    def __init__(self) -> None:
        from qtpy.QtCore import QTimer

        self.times = [time.perf_counter()]
        self.timer = QTimer()
        self.timer.setInterval(TICK_MS)
        self.timer.timeout.connect(lambda: self.times.append(time.perf_counter()))
        self.timer.start()

    def longest_gap_ms(self, start: float, end: float) -> float:
        """The longest time without a tick between ``start`` and ``end``."""
        times = np.asarray([start, *[t for t in self.times if start < t < end], end])
        return float(np.diff(times).max() * 1000)


def _wait(app: Any, condition: Any, seconds: float) -> bool:
    """Run Qt's event loop until ``condition()`` holds (False past ``seconds``).

    A real ``QEventLoop``, as napari's own: the UI thread sleeps in Qt between
    events instead of spinning on ``processEvents`` (which would take the GIL
    from the work it measures), and deferred deletions are delivered (napari
    hides its activity spinner when a finished progress bar's widget is deleted).
    """
    from qtpy.QtCore import QEvent, QEventLoop, QTimer

    deadline = time.perf_counter() + seconds
    if condition():
        return True
    loop = QEventLoop()
    met = [False]

    def check() -> None:
        app.sendPostedEvents(None, QEvent.Type.DeferredDelete.value)
        if condition():
            met[0] = True
            loop.quit()
        elif time.perf_counter() > deadline:
            loop.quit()

    poll = QTimer()
    poll.setInterval(20)
    poll.timeout.connect(check)
    poll.start()
    loop.exec()
    poll.stop()
    return met[0]


def _draws(viewer: Any) -> list[float]:
    """Times of the canvas's draw events, as they happen."""
    times: list[float] = []
    canvas = viewer.window._qt_viewer.canvas._scene_canvas
    canvas.events.draw.connect(lambda _event: times.append(time.perf_counter()))
    return times


def _open_timed(viewer: Any, app: Any, beat: Heartbeat, path: str, plugin: str) -> dict[str, Any]:
    """``viewer.open``: time to the first draw with the new layer, and the longest UI gap."""
    draws = _draws(viewer)
    added: list[float] = []
    viewer.layers.events.inserted.connect(lambda _event: added.append(time.perf_counter()))
    started = time.perf_counter()
    layers = viewer.open(path, plugin=plugin)
    returned = time.perf_counter()

    def drawn() -> bool:
        return bool(added) and any(t > added[0] for t in draws)

    _wait(app, drawn, 30)
    first_draw = next((t for t in draws if added and t > added[0]), time.perf_counter())
    _wait(app, lambda: False, 0.5)  # what follows the first draw counts too
    return {
        "layers": [layer.name for layer in layers],
        "open_call_s": returned - started,
        "first_draw_s": first_draw - started,
        "longest_gap_ms": beat.longest_gap_ms(started, first_draw + 0.5),
    }


def _square_canvas(viewer: Any, app: Any) -> int:
    """Resize the window until the canvas is square; return its side."""
    window = viewer.window._qt_window
    for _ in range(6):
        _wait(app, lambda: False, 0.2)
        height, width = (int(n) for n in viewer.canvas.size)
        if abs(height - width) <= 0:
            return height
        window.resize(window.width() + height - width, window.height())
    raise RuntimeError(f"could not make the canvas square: {viewer.canvas.size}")


def _look_at(viewer: Any, box: list[int], mpp: float, canvas_px: int) -> None:
    from slide_unet.napari.layers import camera_of

    y0, y1, x0, x1 = box
    camera = camera_of(viewer)
    camera.center = ((y0 + y1) / 2 * mpp, (x0 + x1) / 2 * mpp)
    camera.zoom = canvas_px / ((y1 - y0) * mpp)


def _progress_bars(viewer: Any) -> list[Any]:
    from napari._qt.widgets.qt_progress_bar import QtLabeledProgressBar

    return viewer.window._qt_window.findChildren(QtLabeledProgressBar)


def _segment(widget: Any, viewer: Any, app: Any, cancel_at: float | None) -> dict[str, Any]:
    """Click Segment; sample the progress bar; Cancel at ``cancel_at`` of the blocks."""
    from qtpy.QtCore import QTimer

    finished: list[float] = []
    samples: list[dict[str, Any]] = []
    cancelled: list[float] = []
    widget.finished.connect(lambda: finished.append(time.perf_counter()))

    def sample() -> None:
        for bar in _progress_bars(viewer):
            if bar.description_label.text().startswith("Segmenting"):
                samples.append(
                    {
                        "t": time.perf_counter(),
                        "value": bar.qt_progress_bar.value(),
                        "maximum": bar.qt_progress_bar.maximum(),
                        "eta": bar.eta_label.text().strip(),
                    }
                )

    poll = QTimer()
    poll.setInterval(PROGRESS_MS)
    poll.timeout.connect(sample)
    started = time.perf_counter()
    job = widget.run()
    clicked = time.perf_counter()
    if job is None:
        raise RuntimeError(f"Segment did not start: {widget.status.value}")
    if cancel_at is not None:

        def maybe_cancel(done: int, total: int) -> None:
            # Of the model's blocks: the progress total also counts clearing and
            # small-object steps, which come after.
            if not cancelled and done >= cancel_at * total * 0.8:
                cancelled.append(time.perf_counter())
                widget.cancel()

        job.signals.progress.connect(maybe_cancel)
    poll.start()
    _wait(app, lambda: bool(finished), CHILD_TIMEOUT_S)
    poll.stop()
    return {
        "started": started,
        "clicked": clicked,
        "finished": finished[0],
        "seconds": finished[0] - started,
        "status": widget.status.value,
        "samples": samples,
        "cancelled_at": cancelled[0] if cancelled else None,
    }


def child_napari(slide: str, region: list[int], png: str) -> dict[str, Any]:
    """The napari session: open, segment, cancel, paint, reopen."""
    os.environ.setdefault("SLIDE_UNET_MASKS_DIR", tempfile.mkdtemp(prefix="bench-masks-"))
    import napari
    from qtpy.QtWidgets import QApplication

    from slide_unet.core.masks.store import MaskStore

    viewer = napari.Viewer(show=True)
    app = QApplication.instance()
    viewer.window._qt_window.resize(1500, 950)
    _wait(app, lambda: False, 1.0)
    beat = Heartbeat()
    result: dict[str, Any] = {}

    result["open_first"] = _open_timed(viewer, app, beat, slide, PLUGIN)
    viewer.layers.clear()
    result["open_again"] = _open_timed(viewer, app, beat, slide, PLUGIN)
    image = viewer.layers[0]
    mpp = float(image.scale[-1])

    _, widget = viewer.window.add_plugin_dock_widget(PLUGIN, "Segment")
    widget.model.value = MODEL
    widget.settings.region.value = "Viewport"
    widget.advanced.min_object_um2.value = MIN_OBJECT_UM2
    side = _square_canvas(viewer, app)
    _look_at(viewer, region, mpp, side)
    _wait(app, lambda: False, 1.0)
    from slide_unet.napari.layers import visible_region

    shown = list(visible_region(viewer, image))
    result["region"] = shown
    result["canvas_px"] = side
    result["rss_before_mb"] = _status_mb("VmRSS")

    run = _segment(widget, viewer, app, cancel_at=None)
    result["segment"] = {
        "seconds": run["seconds"],
        "status": run["status"],
        "click_s": run["clicked"] - run["started"],
        "longest_gap_ms": beat.longest_gap_ms(run["clicked"], run["finished"]),
        "peak_rss_mb": _status_mb("VmHWM"),
        "samples": run["samples"],
        "region": list(widget.last_result["region"]) if widget.last_result else None,
    }
    store = MaskStore(widget.layer.metadata["mask_store"])
    y0, y1, x0, x1 = result["segment"]["region"] or shown
    earlier = np.asarray(store.level0[y0:y1, x0:x1]) != 0
    result["segment"]["foreground"] = int(np.count_nonzero(earlier))

    run = _segment(widget, viewer, app, cancel_at=CANCEL_AT)
    after = np.asarray(MaskStore(store.path).level0[y0:y1, x0:x1]) != 0
    result["cancel"] = {
        "status": run["status"],
        "cancel_to_end_s": run["finished"] - run["cancelled_at"] if run["cancelled_at"] else None,
        # Foreground of the first run that is gone. The finished blocks were
        # replaced by the same model's output before small objects are removed,
        # which can only add specks; everything else must be as it was.
        "lost_pixels": int(np.count_nonzero(earlier & ~after)),
        "added_pixels": int(np.count_nonzero(after & ~earlier)),
        "longest_gap_ms": beat.longest_gap_ms(run["clicked"], run["finished"]),
    }
    del earlier, after

    _, correct = viewer.window.add_plugin_dock_widget(PLUGIN, "Correct")
    centre = ((y0 + y1) // 2, (x0 + x1) // 2)
    half = EDIT_SIDE // 2
    box = [centre[0] - half, centre[0] + half, centre[1] - half, centre[1] + half]
    side = _square_canvas(viewer, app)
    _look_at(viewer, box, mpp, side)
    _wait(app, lambda: False, 0.5)
    correct.layer.value = widget.layer
    window = correct.edit_here()
    if window is None:
        raise RuntimeError(f"Edit here did not open: {correct.status.text()}")
    layer = window.layer
    wy0, wy1, wx0, wx1 = window.region
    result["paint"] = {
        "window": [wy1 - wy0, wx1 - wx0],
        **_dabs(layer, app, beat),
    }
    y, x = _dab_at(DABS - 1)
    last = time.perf_counter()
    saved = _wait(app, lambda: MaskStore(store.path).level0[y + wy0, x + wx0] == 1, 10)
    result["paint"]["on_disk_after_s"] = (time.perf_counter() - last) if saved else None
    # napari's own floor on this machine: the same dabs on a plain numpy Labels layer.
    plain = viewer.add_labels(
        np.zeros((wy1 - wy0, wx1 - wx0), np.uint8), scale=layer.scale, translate=layer.translate
    )
    result["paint_numpy"] = _dabs(plain, app, beat)
    viewer.layers.remove(plain)
    correct.done()

    viewer.layers.clear()
    layers = viewer.open(slide, plugin=PLUGIN)
    masks = [layer for layer in layers if type(layer).__name__ == "Labels"]
    same = False
    if masks:
        level = masks[0].data[0] if masks[0].multiscale else masks[0].data
        same = bool(
            np.array_equal(
                np.asarray(level[y0:y1:64, x0:x1:64]), np.asarray(store.level0[y0:y1:64, x0:x1:64])
            )
        )
    result["reopen"] = {"layers": [layer.name for layer in layers], "same_pixels": same}
    viewer.close()
    return result


def _dab_at(k: int) -> tuple[int, int]:
    return 200 + 10 * k, 300 + 25 * k  # a stroke across the window, in its pixels


def _dabs(layer: Any, app: Any, beat: Heartbeat) -> dict[str, Any]:
    """Paint ``DABS`` dabs with napari's brush: each ``paint`` call alone, and with the
    repaint it asks for."""
    layer.mode = "paint"
    layer.brush_size = 20
    layer.selected_label = 1
    _wait(app, lambda: False, 1.0)
    calls, with_repaint = [], []
    started = time.perf_counter()
    for k in range(DABS):
        t0 = time.perf_counter()
        layer.paint(_dab_at(k), 1)
        t1 = time.perf_counter()
        app.processEvents()  # the repaint the dab asks for
        calls.append((t1 - t0) * 1000)
        with_repaint.append((time.perf_counter() - t0) * 1000)
    return {
        "paint_ms": calls,
        "median_ms": statistics.median(calls),
        "with_repaint_ms": with_repaint,
        "median_with_repaint_ms": statistics.median(with_repaint),
        "longest_gap_ms": beat.longest_gap_ms(started, time.perf_counter()),
    }


def child_napari_whole(slide: str) -> dict[str, Any]:
    """Segment the whole slide (Min. object as above) from the widget, in a fresh window."""
    os.environ.setdefault("SLIDE_UNET_MASKS_DIR", tempfile.mkdtemp(prefix="bench-masks-"))
    import napari
    from qtpy.QtWidgets import QApplication

    from slide_unet.core.masks.store import MaskStore

    viewer = napari.Viewer(show=True)
    app = QApplication.instance()
    viewer.window._qt_window.resize(1500, 950)
    viewer.open(slide, plugin=PLUGIN)
    _, widget = viewer.window.add_plugin_dock_widget(PLUGIN, "Segment")
    widget.model.value = MODEL
    widget.settings.region.value = "Whole slide"
    widget.advanced.min_object_um2.value = MIN_OBJECT_UM2
    _wait(app, lambda: False, 1.0)
    beat = Heartbeat()
    cpu = _cpu_s()
    run = _segment(widget, viewer, app, cancel_at=None)
    cpu = _cpu_s() - cpu
    peak = _status_mb("VmHWM")
    store = MaskStore(widget.layer.metadata["mask_store"])
    result = {
        "seconds": run["seconds"],
        "cpu_s": cpu,
        "peak_rss_mb": peak,
        "click_s": run["clicked"] - run["started"],
        "longest_gap_ms": beat.longest_gap_ms(run["clicked"], run["finished"]),
        "status": run["status"],
        "foreground": _foreground(store.level0),
    }
    viewer.close()
    return result


def child_napari_reference(png: str) -> dict[str, Any]:
    """napari's own reader on a small PNG in a fresh window: what napari itself costs."""
    import napari
    from qtpy.QtWidgets import QApplication

    viewer = napari.Viewer(show=True)
    app = QApplication.instance()
    viewer.window._qt_window.resize(1500, 950)
    _wait(app, lambda: False, 1.0)
    beat = Heartbeat()
    result = _open_timed(viewer, app, beat, png, "napari")
    viewer.close()
    return result


# -- the driver ----------------------------------------------------------------------------


def _run_child(args: list[str], display: bool) -> dict[str, Any]:
    command = [sys.executable, __file__, *args]
    if display and not os.environ.get("DISPLAY"):
        command = ["xvfb-run", "-a", "-s", f"-screen 0 {SCREEN}", *command]
    done = subprocess.run(
        command, capture_output=True, text=True, timeout=CHILD_TIMEOUT_S, check=False
    )
    lines = [line for line in done.stdout.splitlines() if line.startswith("{")]
    if done.returncode != 0 or not lines:
        return {"error": f"exit {done.returncode}: {done.stderr.strip()[-1500:]}"}
    return json.loads(lines[-1])


def _pick_region(quick: bool) -> tuple[str, list[int]]:
    bench_open = _bench("bench_open")
    bench_segment = _bench("bench_segment")
    height, width = bench_open.QUICK_SHAPE if quick else bench_open.FULL_SHAPE
    prefix = "quick-" if quick else ""
    path = bench_open.CACHE_DIR / f"{prefix}pyramid.ome.tif"
    mosaic = bench_open.Mosaic(height, width)
    bench_open.build_slides({"pyramid": path}, mosaic)
    side = QUICK_REGION_SIDE if quick else REGION_SIDE
    cells = side // bench_open.CELL
    i, j = bench_segment.best_window(mosaic.tissue, cells, cells)
    y0, x0 = min(i * bench_open.CELL, height - side), min(j * bench_open.CELL, width - side)
    return str(path), [y0, y0 + side, x0, x0 + side]


def _mid_run(samples: list[dict[str, Any]]) -> str:
    middle = [s for s in samples if 0 < s["value"] < s["maximum"]]
    if not middle:
        return "none seen"
    s = middle[len(middle) // 2]
    return f"{100 * s['value'] // s['maximum']}% ({s['value']}/{s['maximum']}), ETA '{s['eta']}'"


def _verdict(ok: bool | None) -> str:
    return "—" if ok is None else ("pass" if ok else "FAIL")


def report(cli: list[dict[str, Any]], nap: dict[str, Any], ref: dict[str, Any]) -> str:
    rows = []
    good = [c for c in cli if "error" not in c]
    cli_s = statistics.mean(c["seconds"] for c in good) if good else float("nan")
    cli_rss = max(c["peak_rss_mb"] for c in good) if good else float("nan")
    for key, label in (("open_first", "first slide of the session"), ("open_again", "again")):
        o = nap[key]
        rows.append(
            (
                f"open ({label}): first draw / longest UI gap",
                f"{o['first_draw_s']:.2f} s / {o['longest_gap_ms']:.0f} ms",
                "—",
                f"gap < {TARGET_GAP_OPEN_MS:.0f} ms",
                _verdict(o["longest_gap_ms"] < TARGET_GAP_OPEN_MS),
            )
        )
    if "error" not in ref:
        rows.append(
            (
                "napari's own reader, 1024² PNG, fresh window (reference)",
                f"{ref['first_draw_s']:.2f} s / {ref['longest_gap_ms']:.0f} ms",
                "—",
                "—",
                "—",
            )
        )
    seg = nap["segment"]
    ratio = seg["seconds"] / cli_s
    y0, y1, x0, x1 = seg["region"]
    each = " / ".join(f"{c['seconds']:.1f}" for c in good)
    rows.append(
        (
            f"Segment {y1 - y0} x {x1 - x0} region, Min. object {MIN_OBJECT_UM2:g} µm²: time",
            f"{seg['seconds']:.1f} s",
            f"{cli_s:.1f} s ({each})",
            f"ratio {ratio:.2f} <= {TARGET_RATIO}",
            _verdict(ratio <= TARGET_RATIO),
        )
    )
    diff = seg["peak_rss_mb"] - cli_rss
    rows.append(
        (
            "peak RSS",
            f"{seg['peak_rss_mb']:.0f} MB",
            f"{cli_rss:.0f} MB",
            f"+{diff:.0f} MB <= {TARGET_RSS_DIFF_MB:.0f}",
            _verdict(diff <= TARGET_RSS_DIFF_MB),
        )
    )
    rows.append(
        (
            "Segment click (napari adds the Labels layer and its progress bar) / longest UI gap "
            "during the run",
            f"{seg['click_s'] * 1000:.0f} ms / {seg['longest_gap_ms']:.0f} ms",
            "—",
            f"gap < {TARGET_GAP_WORK_MS:.0f} ms",
            _verdict(seg["longest_gap_ms"] < TARGET_GAP_WORK_MS),
        )
    )
    rows.append(
        (
            "progress shown mid-run",
            _mid_run(seg["samples"]),
            "—",
            "moves, with an ETA",
            _verdict(_mid_run(seg["samples"]) != "none seen"),
        )
    )
    can = nap["cancel"]
    stop = can["cancel_to_end_s"]
    rows.append(
        (
            f"Cancel a second run at {CANCEL_AT:.0%}: foreground of the first run lost "
            "(added: specks in the finished blocks)",
            f"{can['lost_pixels']:,} (added {can['added_pixels']:,}; Cancel to end "
            f"{stop or float('nan'):.1f} s)",
            "—",
            "0 lost",
            _verdict(can["lost_pixels"] == 0 and can["status"].startswith("cancelled")),
        )
    )
    rows.append(
        (
            "longest UI gap during the cancelled run",
            f"{can['longest_gap_ms']:.0f} ms",
            "—",
            f"< {TARGET_GAP_WORK_MS:.0f} ms",
            _verdict(can["longest_gap_ms"] < TARGET_GAP_WORK_MS),
        )
    )
    paint, plain = nap["paint"], nap["paint_numpy"]
    rows.append(
        (
            f"brush dab on a {paint['window'][0]} x {paint['window'][1]} Edit here window, median "
            f"of {DABS}: napari's paint call",
            f"{paint['median_ms']:.1f} ms (max {max(paint['paint_ms']):.1f})",
            "—",
            f"<= {TARGET_DAB_MS:.0f} ms",
            _verdict(paint["median_ms"] <= TARGET_DAB_MS),
        )
    )
    rows.append(
        (
            "the same with the repaint it asks for (software OpenGL) / on a plain numpy layer",
            f"{paint['median_with_repaint_ms']:.1f} ms / {plain['median_with_repaint_ms']:.1f} ms",
            "—",
            "as numpy",
            _verdict(paint["median_with_repaint_ms"] <= 1.2 * plain["median_with_repaint_ms"] + 2),
        )
    )
    on_disk = paint["on_disk_after_s"]
    rows.append(
        (
            "last dab on disk after / longest UI gap while painting",
            f"{on_disk:.2f} s / {paint['longest_gap_ms']:.0f} ms" if on_disk else "never",
            "—",
            f"<= 1 s / < {TARGET_GAP_WORK_MS:.0f} ms",
            _verdict(bool(on_disk) and on_disk <= 1.0 and paint["longest_gap_ms"] < 200),
        )
    )
    reopen = nap["reopen"]
    masks = [name for name in reopen["layers"] if " mask (" in name]
    rows.append(
        (
            "reopen shows the mask",
            f"{masks[0]!r}, same pixels: {reopen['same_pixels']}" if masks else "no mask layer",
            "—",
            "yes",
            _verdict(bool(masks) and reopen["same_pixels"]),
        )
    )
    header = ("what", "napari", "slide-unet (CLI)", "target", "")
    lines = ["| " + " | ".join(header) + " |", "| --- | ---: | ---: | --- | --- |"]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    return "\n".join(lines)


def whole_report(whole: dict[str, Any]) -> str:
    """The whole-slide row: the widget against the CLI."""
    cli, nap = whole["cli"], whole["napari"]
    if "error" in cli or "error" in nap:
        return f"whole slide: {cli.get('error') or nap.get('error')}"
    ratio = nap["seconds"] / cli["seconds"]
    diff = nap["peak_rss_mb"] - cli["peak_rss_mb"]
    lines = [
        "| whole slide, Min. object 1000 µm² | napari | slide-unet (CLI) | ratio / difference |",
        "| --- | ---: | ---: | --- |",
        f"| time | {nap['seconds']:.1f} s | {cli['seconds']:.1f} s | {ratio:.2f} "
        f"({_verdict(ratio <= TARGET_RATIO)}) |",
        f"| CPU time, all threads | {nap['cpu_s']:.1f} s | {cli['cpu_s']:.1f} s | "
        f"{nap['cpu_s'] / cli['cpu_s']:.2f} |",
        f"| peak RSS | {nap['peak_rss_mb']:.0f} MB | {cli['peak_rss_mb']:.0f} MB | +{diff:.0f} MB "
        f"({_verdict(diff <= TARGET_RSS_DIFF_MB)}) |",
        f"| longest UI gap during the run (click: {nap['click_s'] * 1000:.0f} ms) | "
        f"{nap['longest_gap_ms']:.0f} ms | — | {_verdict(nap['longest_gap_ms'] < 200)} |",
        f"| foreground pixels | {nap['foreground']:,} | {cli['foreground']:,} | "
        f"{'same' if nap['foreground'] == cli['foreground'] else 'DIFFERENT'} |",
    ]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="8,192 x 11,000 slide, 4,096 region")
    parser.add_argument(
        "--whole-slide",
        action="store_true",
        help="also segment the whole slide from the widget and the CLI (a few minutes more)",
    )
    parser.add_argument("--child", help=argparse.SUPPRESS)
    parser.add_argument("--slide", help=argparse.SUPPRESS)
    parser.add_argument("--region", help=argparse.SUPPRESS)
    parser.add_argument("--png", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)

    if args.child:
        region = [int(v) for v in args.region.split(",")] if args.region else []
        if args.child == "cli":
            result = child_cli(args.slide, region)
        elif args.child == "napari":
            result = child_napari(args.slide, region, args.png)
        elif args.child == "napari-whole":
            result = child_napari_whole(args.slide)
        else:
            result = child_napari_reference(args.png)
        print(json.dumps(result))
        return 0

    slide, region = _pick_region(args.quick)
    bench_open = _bench("bench_open")
    print(f"slide {slide}; region y {region[0]}:{region[1]}, x {region[2]}:{region[3]}")
    with tempfile.TemporaryDirectory() as folder:
        png = Path(folder) / "reference.png"
        from PIL import Image

        rng = np.random.default_rng(0)
        Image.fromarray(rng.integers(0, 255, (1024, 1024, 3), dtype=np.uint8)).save(png)
        load_before = os.getloadavg()
        where = ["--slide", slide, "--region", ",".join(map(str, region)), "--png", str(png)]
        print("CLI ...", flush=True)
        cli = [_run_child(["--child", "cli", *where], display=False)]
        print("napari ...", flush=True)
        nap = _run_child(["--child", "napari", *where], display=True)
        if "error" in nap:
            print(f"napari session failed: {nap['error']}")
            return 1
        shown = nap["segment"]["region"] or nap["region"]
        if shown != region:
            print(f"(the view showed y {shown[0]}:{shown[1]}, x {shown[2]}:{shown[3]})")
        where[3] = ",".join(map(str, shown))
        print("CLI again ...", flush=True)
        cli.append(_run_child(["--child", "cli", *where], display=False))
        print("napari's own reader ...", flush=True)
        ref = _run_child(["--child", "reference", *where], display=True)
        whole: dict[str, Any] = {}
        if args.whole_slide:
            print("whole slide: CLI, napari ...", flush=True)
            whole["cli"] = _run_child(["--child", "cli", "--slide", slide], display=False)
            whole["napari"] = _run_child(["--child", "napari-whole", "--slide", slide], True)
        load_after = os.getloadavg()
    for run in cli:
        if "error" in run:
            print(f"CLI run failed: {run['error']}")
    print()
    print(report(cli, nap, ref))
    if whole:
        print()
        print(whole_report(whole))
    print()
    print(
        f"Machine: {bench_open.machine()}; load average {load_before[0]:.2f} before, "
        f"{load_after[0]:.2f} after (shared machine: timings are noisy)."
    )
    print(f"Versions: {bench_open.versions()}.")
    fg = [c.get("foreground") for c in cli]
    print(
        f"Foreground pixels: napari {nap['segment']['foreground']:,}, CLI {fg} "
        "(the same region, model and settings)."
    )
    print(
        f"RSS of the napari process before the click: {nap['rss_before_mb']:.0f} MB; of the CLI "
        f"process before main(): {cli[0].get('rss_before_mb', float('nan')):.0f} MB."
    )
    for key in ("paint", "paint_numpy"):
        dabs = nap[key]["with_repaint_ms"]
        print(f"Dabs with repaint, {key} (ms): {', '.join(f'{d:.0f}' for d in dabs)}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
