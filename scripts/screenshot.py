"""Take the README's screenshot: the sample slide in a real napari window.

Needs a display; headless, run it under a virtual one::

    xvfb-run -a -s "-screen 0 1600x1000x24" python scripts/screenshot.py

Writes ``docs/screenshot.png`` (or the path given).
"""

from __future__ import annotations

import argparse
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("output", nargs="?", type=Path, default=REPO / "docs" / "screenshot.png")
    args = parser.parse_args()

    import napari
    from qtpy.QtWidgets import QApplication

    viewer = napari.Viewer(title="napari-slide-unet", show=True)
    viewer.window._qt_window.resize(1400, 900)
    viewer.open_sample("napari-slide-unet", "kidney_pas")
    viewer.scale_bar.visible = True
    viewer.reset_view()
    for _ in range(30):
        QApplication.processEvents()
    args.output.parent.mkdir(parents=True, exist_ok=True)
    viewer.screenshot(str(args.output), canvas_only=False, flash=False)
    viewer.close()
    print(f"wrote {args.output}")


if __name__ == "__main__":
    main()
