"""The README's picture of *Live*: the mask following the view, frame by frame.

Opens the 31,299 x 44,066 benchmark slide (``benchmarks/.cache/pyramid.ome.tif``,
built by ``python benchmarks/bench_open.py``) in a real napari window with a
1600 x 1000 canvas, docks the Segment widget through the plugin's manifest,
ticks *Live* with the bundled ``glomeruli`` model on the CPU, and grabs the
canvas as the camera settles and each time the Labels layer is refreshed with
newly landed blocks, over three moves of the camera:

1. a view 2x zoomed out, in tissue (the centre block lands first, then the rest);
2. the same view panned right by half its width (the old half is there at once,
   the new half fills in);
3. zoomed out 4x around both (what was seen is kept, the blocks around it land).

Writes a 2 x 2 strip of four of those frames, each downscaled and captioned
(``docs/live.png``), and an animated GIF of every frame (``docs/live.gif``).
The mask is shown in green (napari's colour for label 1 is a brown that hardly
shows on PAS tissue), and the blocks landed since the camera settled are outlined
in yellow (drawn on the picture, not by the plugin).

Run under a virtual display; without ``DISPLAY`` the script starts ``xvfb-run``
itself::

    xvfb-run -a -s "-screen 0 1600x1000x24" python scripts/live_strip.py

The mask store goes to a temporary folder, so nothing is reused from earlier
runs and the user's own masks are untouched.
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
BENCHMARKS = ROOT / "benchmarks"
SLIDE = BENCHMARKS / ".cache" / "pyramid.ome.tif"
PLUGIN = "napari-slide-unet"
SCREEN = "1600x1000x24"
#: Width of each frame in the strip and in the GIF (px).
STRIP_WIDTH, GIF_WIDTH = 640, 480
#: The mask's colour, and the outline of the blocks landed since the camera settled.
MASK_COLOUR, BLOCK_COLOUR = "#00ff5a", "#ffd400"
#: Colours of the strip PNG's palette (fewer: a smaller file).
COLOURS = 128
#: The first two views' zoom-out (1 screen px = 2 slide px), then the last's.
NEAR, FAR = 2.0, 4.0


@dataclass
class Frame:
    """One grab of the canvas: as the camera settled, or just after a refresh of the mask."""

    step: str
    landed: list[tuple[int, int, int, int]]  # blocks landed so far in this step
    queued: int  # blocks this step asked for
    boxes: list[tuple[float, float, float, float]]  # their outlines, in canvas px
    image: np.ndarray


@dataclass
class Recorder:
    """Grabs the canvas after each refresh of the Labels layer that showed new blocks."""

    viewer: Any
    image: Any
    live: Any
    frames: list[Frame] = field(default_factory=list)
    landed: list[tuple[int, int, int, int]] = field(default_factory=list)
    step: str = ""
    queued: int = 0

    def attach(self) -> None:
        segmenter = self.live.segmenter
        original_block = segmenter.on_block

        def on_block(box: tuple[int, int, int, int]) -> None:
            self.landed.append(tuple(int(v) for v in box))  # the worker thread
            original_block(box)

        segmenter.on_block = on_block
        original_refresh = self.live._refresh_layer

        def refresh() -> None:
            dirty = self.live._dirty
            original_refresh()
            if dirty and self.step:
                self.grab()

        self.live._refresh.timeout.disconnect()
        self.live._refresh.timeout.connect(refresh)

    def grab(self) -> None:
        landed = list(self.landed)
        picture = self.viewer.screenshot(canvas_only=True, flash=False)
        self.frames.append(
            Frame(
                self.step,
                landed,
                self.queued,
                [on_canvas_of(self.viewer, self.image, box, picture.shape) for box in landed],
                picture,
            )
        )


def on_canvas_of(viewer: Any, image: Any, box: tuple, shape: tuple) -> tuple:
    """A full-resolution box ``(y0, y1, x0, x1)`` as canvas pixels ``(x0, y0, x1, y1)``."""
    from slide_unet.napari.layers import camera_of

    camera = camera_of(viewer)
    cy, cx = (float(v) for v in camera.center[-2:])
    zoom = float(camera.zoom)
    sy, sx = (float(v) for v in image.scale[-2:])
    ty, tx = (float(v) for v in image.translate[-2:])
    height, width = (int(n) for n in viewer.canvas.size)
    fy, fx = shape[0] / height, shape[1] / width  # the grab's pixels per canvas pixel

    def y(v: float) -> float:
        return ((v * sy + ty - cy) * zoom + height / 2) * fy

    def x(v: float) -> float:
        return ((v * sx + tx - cx) * zoom + width / 2) * fx

    return (x(box[2]), y(box[0]), x(box[3]), y(box[1]))


def tissue_centre(image: Any, view: tuple[float, float]) -> tuple[float, float]:
    """The centre (full-resolution pixels) of the ``view``-sized window with the most tissue."""
    from slide_unet.napari.layers import full_resolution

    low = np.asarray(image.data[-1] if image.multiscale else image.data)
    factor = full_resolution(image).shape[0] / low.shape[0]
    tissue = (low[..., :3].mean(axis=-1) < 200).astype(np.int64)
    rows, cols = (max(1, int(v / factor)) for v in view)
    summed = np.pad(tissue.cumsum(0).cumsum(1), ((1, 0), (1, 0)))
    counts = (
        summed[rows:, cols:]
        - summed[:-rows, cols:]
        - summed[rows:, :-cols]
        + summed[:-rows, :-cols]
    )
    i, j = np.unravel_index(int(np.argmax(counts)), counts.shape)
    return ((i + rows / 2) * factor, (j + cols / 2) * factor)


def show_mask(layer: Any) -> None:
    """Glomeruli in green, which stands out on pink PAS tissue (napari's label 1 is brown)."""
    from napari.utils.colormaps import DirectLabelColormap

    layer.colormap = DirectLabelColormap(color_dict={None: MASK_COLOUR, 0: "transparent"})
    layer.opacity = 0.55


def record(app: Any, viewer: Any, recorder: Recorder, step: str, view: tuple) -> None:
    """Move the camera to ``view`` and grab frames until its blocks have all landed."""
    wait = __import__("bench_napari")._wait
    set_view = __import__("bench_viewport")._view
    live = recorder.live
    requests = live.requests
    recorder.landed.clear()
    set_view(viewer, *view)
    wait(app, lambda: live.requests > requests, 30)
    recorder.queued = live.segmenter.pending
    recorder.step = step
    wait(app, lambda: False, 0.05)  # the new view drawn
    recorder.grab()  # before any block landed (for the GIF)
    wait(app, lambda: live.segmenter.pending == 0 and not live._dirty, 300)
    wait(app, lambda: False, 0.4)
    recorder.step = ""
    print(f"{step}: {recorder.queued} blocks, {len(recorder.frames)} frames so far", flush=True)


def capture(slide: Path) -> tuple[list[Frame], tuple[int, int]]:
    """Drive Live in a real napari window; the frames grabbed and the canvas size."""
    for folder in (BENCHMARKS, ROOT / "src"):
        if str(folder) not in sys.path:
            sys.path.insert(0, str(folder))
    import napari
    from qtpy.QtWidgets import QApplication

    wait = __import__("bench_napari")._wait
    bench_viewport = __import__("bench_viewport")

    viewer = napari.Viewer(title="napari-slide-unet", show=True)
    app = QApplication.instance()
    image = viewer.open(str(slide), plugin=PLUGIN)[0]
    _, widget = viewer.window.add_plugin_dock_widget(PLUGIN, "Segment")
    canvas = bench_viewport._canvas(viewer, app)
    widget.model.value = "glomeruli"
    widget.settings.device.value = "cpu"
    mpp = float(image.scale[-1])
    height, width = canvas
    # The far view holds the other two: centre it on the most tissue at its size.
    centre = tissue_centre(image, (height * FAR, width * FAR))
    shift = width * NEAR / 4  # the near view's centre: a quarter of its width left
    first = (centre[0], centre[1] - shift)
    panned = (centre[0], centre[1] + shift)
    # Live is switched on over the slide's top-left corner (background), so the
    # model is loaded before the first view.
    bench_viewport._view(viewer, (height / 2, width / 2), mpp, 1.0)
    wait(app, lambda: False, 1.0)
    widget.live_switch.value = True
    wait(app, lambda: widget.live.segmenter is not None, 180)
    wait(app, lambda: widget.live.segmenter.pending == 0, 120)
    show_mask(widget.layer)
    recorder = Recorder(viewer, image, widget.live)
    recorder.attach()
    record(app, viewer, recorder, "view", (first, mpp, NEAR))
    record(app, viewer, recorder, "pan", (panned, mpp, NEAR))
    record(app, viewer, recorder, "zoom", (centre, mpp, FAR))
    widget.live_switch.value = False
    viewer.close()
    return recorder.frames, canvas


def _font(size: int) -> Any:
    from PIL import ImageFont

    return ImageFont.load_default(size=size)


def panel(frame: Frame, caption: str, width: int) -> Any:
    """One frame downscaled to ``width``, its landed blocks outlined, ``caption`` below."""
    from PIL import Image, ImageDraw

    picture = Image.fromarray(frame.image[..., :3])
    factor = width / picture.width
    picture = picture.resize((width, round(picture.height * factor)), Image.Resampling.LANCZOS)
    draw = ImageDraw.Draw(picture)
    for x0, y0, x1, y1 in frame.boxes:
        draw.rectangle(
            (x0 * factor, y0 * factor, x1 * factor - 1, y1 * factor - 1),
            outline=BLOCK_COLOUR,
            width=2,
        )
    font = _font(max(12, width // 36))
    lines = caption.split("\n")
    line_height = font.getbbox("Ag")[3] + 4
    out = Image.new("RGB", (width, picture.height + 10 + line_height * len(lines)), "white")
    out.paste(picture, (0, 0))
    text = ImageDraw.Draw(out)
    for k, line in enumerate(lines):
        text.text((8, picture.height + 5 + k * line_height), line, fill="black", font=font)
    return out


def pick(frames: list[Frame]) -> list[tuple[Frame, str]]:
    """The strip's four frames, with their captions."""
    steps = {s: [f for f in frames if f.step == s] for s in ("view", "pan", "zoom")}
    for name, found in steps.items():
        if not any(f.landed for f in found):
            raise SystemExit(f"no frame was grabbed while Live served the {name!r} view")
    view, pan, zoom = ([f for f in found if f.landed] for found in steps.values())
    first, complete, panned = view[0], view[-1], pan[0]
    middle = min(zoom, key=lambda f: abs(len(f.landed) - f.queued / 2))
    return [
        (
            first,
            "1. The camera settles: the block under the centre\n"
            f"lands first ({len(first.landed)} of {first.queued} blocks)",
        ),
        (complete, f"2. The rest land around it: the view complete\n({complete.queued} blocks)"),
        (
            panned,
            "3. Panned right by half a view: the left half is there\n"
            f"at once, the new half fills in ({len(panned.landed)} of {panned.queued} blocks)",
        ),
        (
            middle,
            "4. Zoomed out 4x: what was seen stays, the blocks\n"
            f"around it land ({len(middle.landed)} of {middle.queued} blocks)",
        ),
    ]


LEGEND = (
    "Green: Live's glomeruli mask (napari Labels layer). Yellow squares: blocks landed since "
    "the camera last settled (drawn on the picture)."
)


def strip(chosen: list[tuple[Frame, str]], path: Path) -> None:
    """The four panels as a 2 x 2 grid with a legend, saved as a palette PNG."""
    from PIL import Image, ImageDraw

    panels = [panel(frame, caption, STRIP_WIDTH) for frame, caption in chosen]
    gap = 6
    cell_w = max(p.width for p in panels)
    cell_h = max(p.height for p in panels)
    font = _font(max(12, STRIP_WIDTH // 40))
    footer = font.getbbox("Ag")[3] + 12
    grid = Image.new("RGB", (2 * cell_w + gap, 2 * cell_h + gap + footer), "white")
    for k, p in enumerate(panels):
        grid.paste(p, ((k % 2) * (cell_w + gap), (k // 2) * (cell_h + gap)))
    ImageDraw.Draw(grid).text((8, 2 * cell_h + gap + 4), LEGEND, fill="dimgray", font=font)
    path.parent.mkdir(parents=True, exist_ok=True)
    grid.quantize(colors=COLOURS, method=Image.Quantize.MEDIANCUT).save(path, optimize=True)
    print(f"wrote {path} ({path.stat().st_size / 1e3:.0f} KB)")


def gif(frames: list[Frame], path: Path) -> None:
    """Every frame in order, captioned, the last of each move held longer."""
    from PIL import Image

    titles = {
        "view": "the camera settles",
        "pan": "panned right by half a view",
        "zoom": "zoomed out 4x",
    }
    pictures, durations = [], []
    for k, frame in enumerate(frames):
        caption = (
            f"Live: {titles[frame.step]}\n{len(frame.landed)} of {frame.queued} new blocks "
            "landed (yellow)"
        )
        pictures.append(panel(frame, caption, GIF_WIDTH))
        last = k + 1 == len(frames) or frames[k + 1].step != frame.step
        durations.append(1800 if last else 400)
    palette = pictures[len(pictures) // 2].quantize(colors=255, method=Image.Quantize.MEDIANCUT)
    frames_p = [p.quantize(palette=palette, dither=Image.Dither.NONE) for p in pictures]
    frames_p[0].save(
        path,
        save_all=True,
        append_images=frames_p[1:],
        duration=durations,
        loop=0,
        optimize=True,
    )
    print(f"wrote {path} ({path.stat().st_size / 1e3:.0f} KB, {len(frames_p)} frames)")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--slide", type=Path, default=SLIDE)
    parser.add_argument("--out", type=Path, default=ROOT / "docs" / "live.png")
    parser.add_argument("--gif", type=Path, default=ROOT / "docs" / "live.gif")
    parser.add_argument("--no-gif", action="store_true", help="write the strip only")
    args = parser.parse_args(argv)
    if not args.slide.exists():
        print(
            f"no slide at {args.slide}: build it with `python benchmarks/bench_open.py` "
            "(it writes benchmarks/.cache/pyramid.ome.tif), or pass --slide"
        )
        return 1
    if not os.environ.get("DISPLAY"):
        if shutil.which("xvfb-run") is None:
            print("needs a display: install xvfb (xvfb-run), or run under one")
            return 1
        command = ["xvfb-run", "-a", "-s", f"-screen 0 {SCREEN}", sys.executable, __file__]
        return subprocess.run([*command, *(argv or sys.argv[1:])], check=False).returncode
    with tempfile.TemporaryDirectory(prefix="live-strip-masks-") as folder:
        os.environ["SLIDE_UNET_MASKS_DIR"] = folder
        frames, canvas = capture(args.slide)
    print(f"canvas {canvas[1]} x {canvas[0]}: {len(frames)} frames")
    strip(pick(frames), args.out)
    if not args.no_gif:
        gif(frames, args.gif)
    return 0


if __name__ == "__main__":
    sys.exit(main())
