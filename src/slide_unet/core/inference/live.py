"""Segment what is being looked at: blocks requested by priority, dropped when no
longer wanted, each written into the slide's mask store as it lands, none twice.

A :class:`LiveSegmenter` keeps one model loaded (warm) on its device and one
worker thread. :meth:`~LiveSegmenter.request` replaces what it still has to do
by the blocks of a region, nearest a point (the centre of the view) first; the
block running when a new request comes finishes, the rest of the old request
is dropped. The first block of a request runs alone, for latency; after it,
the queued blocks of a 2 x 2 square of the block grid (or two side by side)
run together, for throughput (the model's halo, 96 pixels a side for the
bundled U-Nets, costs less on a larger tile). Each run is one call of the
engine (:func:`~slide_unet.core.inference.segment.segment` on a region: it
reads the context around it, so blocks meet without seams) with a tile just
large enough for the region, writing into the store; blocks without tissue
(found once, on the slide's overview) are cleared instead of run. Each block
is then recorded in the store's ledger
(:mod:`slide_unet.core.masks.ledger`) under the run's *signature*. The
model's probabilities are kept beside each block in the store's
``probability`` array (0 for blocks cleared as background). Blocks the
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
from collections.abc import Callable, Iterable
from typing import Any

import numpy as np

from slide_unet.core.errors import Cancelled
from slide_unet.core.masks.ledger import CELL
from slide_unet.core.masks.store import MaskStore
from slide_unet.core.masks.windows import ProbabilityWindow, StoreWindow, reload_windows

__all__ = ["LiveSegmenter", "result_signature", "results_like"]

Box = tuple[int, int, int, int]


def result_signature(model: Any, *, min_object_um2: float | None = 0.0, **settings: Any) -> str:
    """A short string naming a model's weights and the settings that change its mask.

    Two runs with the same signature give the same mask, so a block that holds
    one need not run again; any other model, weights or setting is another result.
    The result with objects under ``min_object_um2`` removed is named after the
    result without (``RESULT+min AREA``), so that what shows results with every
    object (Live) can take it for one (:func:`results_like`).
    """
    card = model.card
    # min_object_um2 0.0 in the digest: the signatures stores recorded before it
    # was split off stay valid.
    record = {"model": card.name, "weights": card.sha256 or "", **settings, "min_object_um2": 0.0}
    digest = hashlib.sha256(json.dumps(record, sort_keys=True, default=str).encode())
    raw = f"{card.name}:{digest.hexdigest()[:16]}"
    return f"{raw}+min {float(min_object_um2):g}" if min_object_um2 else raw


def results_like(signature: str, known: Iterable[str]) -> list[str]:
    """``signature`` and those of ``known`` that are its result with small objects
    removed: what a run that keeps every object may take as done."""
    return [s for s in known if s == signature or s.startswith(f"{signature}+min ")]


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
    mpp, device, precision, threshold, tta, colour
        As for :func:`~slide_unet.core.inference.segment.segment`; the slide's
        colour is measured once, here, for every block.
    threads : int, optional
        Torch's CPU threads in the worker; by default one fewer than torch
        would use (at least one), so that a core stays free for the thread
        that shows the blocks: on a 2-core CPU, two torch threads and
        napari's drawing (software OpenGL under a virtual display) fought for
        the cores, the UI thread stalled for a tenth of a second at a time,
        and under load each block ran slower too (the threads wait for each
        other). Only the worker's own count changes.
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
        colour: bool = True,
        threads: int | None = None,
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
        self.threads = threads
        self.device = resolve_device(device)
        self.model = load_model(model, device=self.device)
        threshold = threshold or None  # 0, as the widget's form gives it, is the model's
        self.options = {
            "mpp": mpp,
            "precision": precision,
            "threshold": threshold,
            "tta": tta,
            "colour": colour,
        }
        # The settings as the Viewport and Whole slide runs record them, so each
        # skips what the other did (Live removes no small objects; it shows a
        # button's result with small objects removed as it is).
        self.signature = result_signature(self.model, **self.options)
        self._scale, self._tissue, self._colour = self._survey(mpp, colour)
        #: Engine calls made (one per block run): what a revisit must not add to.
        self.calls = 0
        self._queue: list[Box] = []
        self._running: Box | None = None
        self._running_all: list[Box] = []
        self._fresh = True
        self._stop = False
        self._changed = threading.Condition()
        self._thread = threading.Thread(target=self._work, name="live-segmenter", daemon=True)
        self._thread.start()

    def _survey(self, mpp: float | None, colour: bool) -> tuple[float, Any, Any]:
        """Full-resolution pixels per working pixel, the slide's tissue mask, and
        ``segment``'s ``colour``: the slide's tissue colour measured once (False
        when there is nothing to match)."""
        from slide_unet.core.inference.planning import OpenedSource, slide_colour
        from slide_unet.core.slide.tissue import tissue_mask

        card = self.model.card
        levels = list(self.source.levels)
        input_mpp = getattr(self.source, "mpp", None) or mpp or card.default_input_mpp
        scale = card.working_mpp / input_mpp if card.working_mpp and input_mpp else 1.0
        reference = getattr(card, "colour_reference", None)
        found = None
        if colour and reference:
            path = getattr(self.source, "path", None)
            opened = OpenedSource(levels, None if path is None else str(path), input_mpp)
            found = slide_colour(opened, input_mpp, reference)  # as the button
        return float(scale), tissue_mask(levels, mpp=input_mpp), found or False

    def _tile_for(self, box: Box) -> int:
        """The smallest tile that covers ``box`` at working scale with the model's halo."""
        from slide_unet.core.inference.planning import tile_for_side

        return tile_for_side(max(box[1] - box[0], box[3] - box[2]), self._scale, self.model)

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

    def _done(self) -> list[str]:
        """The results a block may hold to need no run: this one, or this one with
        small objects removed (a Segment button run with a minimum object area)."""
        return results_like(self.signature, self.store.ledger.signatures())

    def _wanted(self, box: Box) -> bool:
        ledger = self.store.ledger
        return not ledger.holds(box, self._done()) and not ledger.edited(box)

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

        blocks = self.blocks_of(region)
        todo: list[Box] = []
        if blocks:
            # One read of the ledger for all of them: this runs on a UI thread
            # each time the camera settles, and a read each (three small zarr
            # reads) cost tenths of a second for the 30 blocks of a zoomed-out view.
            ledger = self.store.ledger.snapshot(
                (blocks[0][0], blocks[-1][1], blocks[0][2], blocks[-1][3]), self._done()
            )
            wanted = [b for b in blocks if not ledger.holds(b) and not ledger.edited(b)]
            todo = sorted(wanted, key=distance)
        with self._changed:
            self._queue = [b for b in todo if b not in self._running_all]
            self._fresh = True  # its first block runs alone: shown soonest
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
            return len(self._queue) + len(self._running_all)

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

    def _take(self) -> list[Box]:
        """The next block, with the queued blocks of its 2 x 2 square when all of them
        are queued and it is not a request's first (called holding ``_changed``)."""
        box = self._queue.pop(0)
        if not self._fresh:
            side = 2 * self.block
            square = self.blocks_of(
                (
                    box[0] // side * side,
                    box[0] // side * side + side,
                    box[2] // side * side,
                    box[2] // side * side + side,
                )
            )
            others = [b for b in square if b != box]
            if others and all(b in self._queue for b in others):
                for b in others:
                    self._queue.remove(b)
                return [box, *others]
            # Else a neighbour in the same square, side by side or one above the other.
            for other in others:
                if other in self._queue and (other[0] == box[0] or other[2] == box[2]):
                    self._queue.remove(other)
                    return [box, other]
        self._fresh = False
        return [box]

    def _limit_threads(self) -> None:
        """Set the worker's torch threads (see ``threads``), in the worker."""
        import torch

        before = torch.get_num_threads()
        wanted = self.threads if self.threads is not None else max(1, before - 1)
        if wanted == before:
            return
        torch.set_num_threads(wanted)
        # The call also sets the count that threads starting torch later take up
        # (a Segment button's run): give that back, from a thread of its own, as
        # the call sets its caller's count too.
        restore = threading.Thread(target=torch.set_num_threads, args=(before,))
        restore.start()
        restore.join()

    def _work(self) -> None:
        self._limit_threads()
        while True:
            with self._changed:
                self._changed.wait_for(lambda: self._stop or bool(self._queue))
                if self._stop:
                    return
                boxes = self._take()
                self._running = boxes[0]
                self._running_all = boxes
            try:
                wanted = [b for b in boxes if self._wanted(b)]
                if wanted:
                    self._run(wanted)
            except Cancelled:
                pass
            finally:
                with self._changed:
                    self._running = None
                    self._running_all = []
                    self._changed.notify_all()

    def _run(self, boxes: list[Box]) -> None:
        """Segment ``boxes`` in one call when they make a rectangle, else one by one."""
        from slide_unet.core.inference.segment import segment

        region = (
            min(b[0] for b in boxes),
            max(b[1] for b in boxes),
            min(b[2] for b in boxes),
            max(b[3] for b in boxes),
        )
        area = sum((b[1] - b[0]) * (b[3] - b[2]) for b in boxes)
        if area != (region[1] - region[0]) * (region[3] - region[2]):  # not a rectangle
            for box in boxes:
                self._run([box])
            return

        def written(part: Box) -> None:
            reload_windows(self.store, part)

        with self.store.writing("segmenting live"):
            if self._tissue is not None and not self._tissue.any_in(*region):
                if np.asarray(
                    self.store.level0[region[0] : region[1], region[2] : region[3]]
                ).any():
                    shape = (region[1] - region[0], region[3] - region[2])
                    self.store.write(region[0], region[2], np.zeros(shape, self.store.dtype))
                probability = self.store.probability
                if (
                    probability is not None
                    and np.asarray(probability[region[0] : region[1], region[2] : region[3]]).any()
                ):
                    shape = (region[1] - region[0], region[3] - region[2])
                    self.store.write_probability(region[0], region[2], np.zeros(shape, np.uint8))
            else:
                out = StoreWindow(self.store, region, on_write=written, edited=False)
                self.calls += 1
                segment(
                    self.source,
                    self.model,
                    region=region,
                    device=self.device,
                    out=out,
                    cancel=lambda: self._stop,
                    tissue=False,  # looked at once, above
                    tile=self._tile_for(region),
                    out_probabilities=ProbabilityWindow(self.store, region),
                    # Every object kept: an object cut by the blocks' edge would be
                    # measured in part (the card's area is for whole-region runs).
                    min_object_um2=0.0,
                    **{**self.options, "colour": self._colour},  # measured once, above
                )
            for box in boxes:
                self.store.ledger.record(box, self.signature)
        if self.on_block is not None:
            for box in boxes:
                self.on_block(box)
