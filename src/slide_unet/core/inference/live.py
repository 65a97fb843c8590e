"""Segment what is being looked at: blocks requested by priority, dropped when no
longer wanted, each written into the slide's mask store as it lands, none twice.

A :class:`LiveSegmenter` keeps one model loaded (warm) on its device and one
worker thread. :meth:`~LiveSegmenter.request` replaces what it still has to do
by the blocks of a region, nearest a point (the centre of the view) first; the
block running when a new request comes finishes, the rest of the old request
is dropped. Each block is one call of the engine
(:func:`~slide_unet.core.inference.segment.segment` on a region: it reads the
context around the block, so blocks meet without seams) writing into the
store, and is then recorded in the store's ledger
(:mod:`slide_unet.core.masks.ledger`) under the run's *signature*. Blocks the
ledger says already hold that result are never queued, and blocks with any
hand-edited pixel are never written over.

The napari Segment widget's *Live* switch drives one of these from the
camera; anyone building on the core can drive it from anything. No Qt here.

This module is part of the napari-free core.
"""

from __future__ import annotations

import hashlib
import json
import math
import threading
from collections.abc import Callable
from typing import Any

from slide_unet.core.errors import Cancelled
from slide_unet.core.masks.ledger import CELL
from slide_unet.core.masks.store import MaskStore
from slide_unet.core.masks.windows import StoreWindow, reload_windows

__all__ = ["LiveSegmenter", "result_signature"]

Box = tuple[int, int, int, int]


def result_signature(model: Any, **settings: Any) -> str:
    """A short string naming a model's weights and the settings that change its mask.

    Two runs with the same signature give the same mask, so a block that holds
    one need not run again; any other model, weights or setting is another result.
    """
    card = model.card
    record = {"model": card.name, "weights": card.sha256 or "", **settings}
    digest = hashlib.sha256(json.dumps(record, sort_keys=True, default=str).encode())
    return f"{card.name}:{digest.hexdigest()[:16]}"


class LiveSegmenter:
    """Segments blocks of one slide into its mask store, as they are asked for.

    Parameters
    ----------
    source : Slide or str or os.PathLike
        The slide (opened once and kept open when a path).
    store : MaskStore
        Its mask store: blocks are written there and recorded in its ledger.
    model : str, os.PathLike or torch.nn.Module
        What :func:`~slide_unet.core.model.store.load_model` accepts; loaded once.
    block : int
        Side of a block in full-resolution pixels (a multiple of the ledger's
        cell, :data:`~slide_unet.core.masks.ledger.CELL`); the default, 1024,
        is 256 pixels at a 2 µm/px working scale on a 0.5 µm/px slide: about
        0.2 s of a CPU.
    on_block : callable, optional
        Called with each block's box ``(y0, y1, x0, x1)`` after it is written
        and recorded, in the worker thread.
    mpp, device, precision, threshold, tta
        As for :func:`~slide_unet.core.inference.segment.segment`.
    """

    def __init__(
        self,
        source: Any,
        store: MaskStore,
        model: Any = "glomeruli",
        *,
        block: int = 1024,
        on_block: Callable[[Box], None] | None = None,
        mpp: float | None = None,
        device: str = "auto",
        precision: str = "auto",
        threshold: float | None = None,
        tta: bool = False,
    ) -> None:
        from slide_unet.core.devices import resolve_device
        from slide_unet.core.model.store import load_model

        if block < CELL or block % CELL:
            raise ValueError(f"block must be a multiple of {CELL} pixels, got {block}")
        if isinstance(source, str) or hasattr(source, "__fspath__"):
            from slide_unet.core.slide.slide import open_slide

            source = open_slide(source)
            self._owned: Any = source
        else:
            self._owned = None
        self.source = source
        self.store = store
        self.block = int(block)
        self.on_block = on_block
        self.device = resolve_device(device)
        self.model = load_model(model, device=self.device)
        threshold = threshold or None  # 0, as the widget's form gives it, is the model's
        self.options = {"mpp": mpp, "precision": precision, "threshold": threshold, "tta": tta}
        # The settings as the Viewport and Whole slide runs record them, so each
        # skips what the other did (Live removes no small objects).
        self.signature = result_signature(self.model, **self.options, min_object_um2=0.0)
        #: Engine calls made (one per block run): what a revisit must not add to.
        self.calls = 0
        self._queue: list[Box] = []
        self._running: Box | None = None
        self._stop = False
        self._changed = threading.Condition()
        self._thread = threading.Thread(target=self._work, name="live-segmenter", daemon=True)
        self._thread.start()

    # -- what to do ------------------------------------------------------------------

    def blocks_of(self, region: Box) -> list[Box]:
        """The grid blocks that ``region`` (y0, y1, x0, x1) touches, clipped to the slide."""
        h, w = self.store.shape
        y0, y1, x0, x1 = region
        side = self.block
        rows = range(max(0, y0) // side, math.ceil(min(h, y1) / side))
        cols = range(max(0, x0) // side, math.ceil(min(w, x1) / side))
        return [
            (i * side, min(h, (i + 1) * side), j * side, min(w, (j + 1) * side))
            for i in rows
            for j in cols
        ]

    def _wanted(self, box: Box) -> bool:
        ledger = self.store.ledger
        return not ledger.holds(box, self.signature) and not ledger.edited(box)

    def request(self, region: Box, centre: tuple[float, float] | None = None) -> list[Box]:
        """Segment the blocks of ``region`` not done yet, nearest ``centre`` first.

        Replaces whatever was still queued (the block running finishes).
        ``centre`` is ``(y, x)`` in full-resolution pixels, by default the
        region's centre. Returns the blocks queued, in order.
        """
        y0, y1, x0, x1 = region
        cy, cx = centre if centre is not None else ((y0 + y1) / 2, (x0 + x1) / 2)

        def distance(box: Box) -> float:
            return math.hypot((box[0] + box[1]) / 2 - cy, (box[2] + box[3]) / 2 - cx)

        todo = sorted((b for b in self.blocks_of(region) if self._wanted(b)), key=distance)
        with self._changed:
            self._queue = [b for b in todo if b != self._running]
            self._changed.notify_all()
            return list(self._queue)

    def cancel(self) -> None:
        """Drop every queued block (the one running finishes)."""
        with self._changed:
            self._queue = []
            self._changed.notify_all()

    @property
    def pending(self) -> int:
        """Blocks queued or running."""
        with self._changed:
            return len(self._queue) + (self._running is not None)

    def wait(self, timeout: float | None = None) -> bool:
        """Wait until nothing is queued or running; False if ``timeout`` passed first."""
        with self._changed:
            return self._changed.wait_for(
                lambda: not self._queue and self._running is None, timeout=timeout
            )

    def close(self) -> None:
        """Stop the worker (after the block running) and close the slide if opened here."""
        with self._changed:
            self._stop = True
            self._queue = []
            self._changed.notify_all()
        self._thread.join()
        if self._owned is not None:
            self._owned.close()

    def __enter__(self) -> LiveSegmenter:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- the worker ------------------------------------------------------------------

    def _work(self) -> None:
        while True:
            with self._changed:
                self._changed.wait_for(lambda: self._stop or bool(self._queue))
                if self._stop:
                    return
                box = self._running = self._queue.pop(0)
            try:
                if self._wanted(box):
                    self._run(box)
            except Cancelled:
                pass
            finally:
                with self._changed:
                    self._running = None
                    self._changed.notify_all()

    def _run(self, box: Box) -> None:
        from slide_unet.core.inference.segment import segment

        def written(part: Box) -> None:
            reload_windows(self.store, part)

        out = StoreWindow(self.store, box, on_write=written, edited=False)
        with self.store.writing("segmenting live"):
            self.calls += 1
            segment(
                self.source,
                self.model,
                region=box,
                device=self.device,
                out=out,
                cancel=lambda: self._stop,
                **self.options,
            )
            self.store.ledger.record(box, self.signature)
        if self.on_block is not None:
            self.on_block(box)
