"""The Segment widget's *Live* switch: the mask follows the view as you pan and zoom.

While Live is on, every time the camera settles (:data:`SETTLE_MS` after the
last move) the blocks covering the view are requested from a
:class:`~slide_unet.core.inference.live.LiveSegmenter`, nearest the centre
first; blocks that left the view are dropped, blocks already done with the
same model and settings are not run again, and hand-edited blocks are never
written over. Each block lands in the slide's mask store from the
segmenter's thread; the Labels layer is refreshed at most every
:data:`REFRESH_MS`. The model is loaded (and the segmenter built or closed) in
a background thread: the UI thread never waits on the model.

When the view holds more than :data:`MAX_VIEW_MPX` megapixels at the model's
working scale (zoomed far out), nothing is queued and the status says to zoom
in or run *Whole slide*.
"""

from __future__ import annotations

import math
import threading
from collections.abc import Callable
from typing import Any

from qtpy.QtCore import QObject, QTimer, Signal

from slide_unet.core.errors import UserError
from slide_unet.napari.layers import camera_of, layer_mpp, visible_region

__all__ = ["MAX_VIEW_MPX", "REFRESH_MS", "SETTLE_MS", "LiveView"]

#: The camera has settled when it has not moved for this long (ms).
SETTLE_MS = 150
#: Shortest time between two refreshes of the Labels layer while blocks land (ms).
REFRESH_MS = 250
#: Largest view served live, in megapixels at the model's working scale: about
#: 6 s of a 2-core CPU; beyond it the status asks to zoom in.
MAX_VIEW_MPX = 4.0


class LiveView(QObject):
    """Drives one live segmenter from a viewer's camera for one image layer.

    Parameters
    ----------
    viewer : napari.Viewer
    image : napari.layers.Image
        The slide.
    store : MaskStore
        Its mask store (a Labels layer shows it).
    layer : napari.layers.Labels
        That layer, refreshed as blocks land.
    settings : dict
        ``model``, ``device``, ``threshold``, ``tta``, ``colour``, ``working_mpp`` (None:
        the image's own scale), and ``source`` (a slide path or the layer's data).
    say : callable
        Shows a one-line status (the widget's label).
    """

    #: Emitted (from any thread) when a block landed: refresh soon.
    landed = Signal()
    #: Emitted with the segmenter when it is ready (built in the background).
    ready = Signal(object)
    #: Emitted with the exception when the segmenter could not be built (a bad model).
    failed = Signal(object)

    def __init__(
        self,
        viewer: Any,
        image: Any,
        store: Any,
        layer: Any,
        settings: dict[str, Any],
        say: Callable[[str], None],
    ) -> None:
        super().__init__()
        self.viewer, self.image, self.store, self.layer = viewer, image, store, layer
        self.settings = settings
        self.say = say
        self.segmenter: Any = None
        self.requests = 0
        self._closed = False
        self._dirty = False
        self._settle = QTimer(self)
        self._settle.setSingleShot(True)
        self._settle.setInterval(SETTLE_MS)
        self._settle.timeout.connect(self.update)
        self._refresh = QTimer(self)
        self._refresh.setInterval(REFRESH_MS)
        self._refresh.timeout.connect(self._refresh_layer)
        self.landed.connect(self._mark_dirty)
        self.ready.connect(self._ready)
        camera = camera_of(viewer)
        camera.events.center.connect(self._moved)
        camera.events.zoom.connect(self._moved)
        self._refresh.start()
        say("Live: loading the model...")
        threading.Thread(target=self._build, name="live-build", daemon=True).start()

    def _build(self) -> None:
        from slide_unet.core.inference.live import LiveSegmenter

        try:
            segmenter = LiveSegmenter(
                self.settings["source"],
                self.store,
                self.settings["model"],
                on_block=lambda _box: self.landed.emit(),
                mpp=layer_mpp(self.image),
                device=self.settings["device"],
                threshold=self.settings["threshold"],
                tta=self.settings["tta"],
                colour=self.settings.get("colour", True),
            )
        except Exception as exc:  # the widget shows it and turns Live off
            self.failed.emit(exc)
            return
        if self._closed:
            segmenter.close()
            return
        self.ready.emit(segmenter)

    def _ready(self, segmenter: Any) -> None:
        # Here, on the UI thread, not in the build thread: whoever sees the
        # segmenter also sees the view's first request made (a test or benchmark
        # waiting for it, then for nothing pending, saw nothing pending before).
        if self._closed:
            threading.Thread(target=segmenter.close, name="live-close", daemon=True).start()
            return
        self.segmenter = segmenter
        self.update()

    # -- the camera --------------------------------------------------------------

    def _moved(self, _event: Any = None) -> None:
        self._settle.start()  # restarts: only a settled camera asks for blocks

    def view_mpx(self, region: tuple[int, int, int, int]) -> float:
        """Megapixels of ``region`` at the model's working scale."""
        y0, y1, x0, x1 = region
        working = self.settings.get("working_mpp")
        mpp = layer_mpp(self.image)
        scale = (mpp / working) ** 2 if working and mpp else 1.0
        return (y1 - y0) * (x1 - x0) * scale / 1e6

    def update(self) -> list[tuple[int, int, int, int]]:
        """Ask for the blocks of the view now (the camera settled); returns those queued."""
        if self.segmenter is None or self._closed:
            return []
        try:
            region = visible_region(self.viewer, self.image)
        except UserError:
            self.segmenter.cancel()
            self.say("Live: the slide is not in view")
            return []
        size = self.view_mpx(region)
        if size > MAX_VIEW_MPX:
            self.segmenter.cancel()
            zoom = math.sqrt(size / MAX_VIEW_MPX)
            self.say(
                f"Live: zoom in {zoom:.1f}x more to segment as you look, or segment the "
                "Whole slide"
            )
            return []
        point = list(self.viewer.dims.point)
        point[-2:] = list(camera_of(self.viewer).center[-2:])
        centre = self.image.world_to_data(point)
        queued = self.segmenter.request(region, centre=tuple(centre[-2:]))
        self.requests += 1
        self.say(f"Live: {len(queued)} blocks to segment" if queued else "Live: view done")
        return queued

    # -- landing -----------------------------------------------------------------

    def _mark_dirty(self) -> None:
        self._dirty = True

    def _refresh_layer(self) -> None:
        if self._dirty:
            self._dirty = False
            self.layer.refresh()
            if self.segmenter is not None and not self.segmenter.pending:
                self.say("Live: view done")

    def close(self) -> None:
        """Stop: drop the queue, let the block running finish in the background."""
        if self._closed:
            return
        self._closed = True
        self._settle.stop()
        self._refresh.stop()
        camera = camera_of(self.viewer)
        camera.events.center.disconnect(self._moved)
        camera.events.zoom.disconnect(self._moved)
        segmenter, self.segmenter = self.segmenter, None
        if segmenter is not None:
            segmenter.cancel()
            threading.Thread(target=segmenter.close, name="live-close", daemon=True).start()
