"""Segment a region of a slide into its mask store, as the Segment widget does.

No Qt here: the widget runs :func:`segment_into_store` in a worker thread and
adapts its plain callbacks (``progress``, ``cancel``, ``landed``) to napari.

This module is part of the napari-free core.
"""

from __future__ import annotations

import dataclasses
import threading
import time
from typing import Any

from slide_unet.core.inference.options import SegmentOptions
from slide_unet.core.masks.store import MaskStore
from slide_unet.core.masks.windows import (
    ProbabilityWindow,
    StoreWindow,
    flush_windows,
    reload_windows,
)

__all__ = ["segment_into_store"]


def segment_into_store(
    store: MaskStore,
    source: Any,
    region: tuple[int, int, int, int],
    options: SegmentOptions,
    *,
    progress: Any,
    cancel: threading.Event,
    landed: Any,
) -> dict[str, Any]:
    """Segment ``region`` of ``source`` into ``store`` with ``options`` (run in a
    worker thread; the widget's form gives ``options`` through
    :meth:`SegmentOptions.from_form`).

    One call of the core's :func:`~slide_unet.core.inference.segment.segment`, whose
    output is the store's window over the region: each finished block replaces
    what the store held there as it lands (and is re-read by the autosaved
    windows open on the store), the blocks skipped as background are cleared
    once every block ran, and small objects are removed last, streaming. A
    cancelled run therefore leaves everything but its finished blocks as it was.
    The model's probabilities land beside each block in the store's
    ``probability`` array (:attr:`MaskStore.probability`, uint8
    ``round(p * 255)``), from the same pass; blocks cleared as background get 0.
    A store holding hand edits is copied aside first (the newest
    ``KEEP_BACKUPS`` copies are kept). The store is held for writing
    (:meth:`MaskStore.writing`) for the whole run: another process that
    writes it meanwhile is told it is in use.
    """
    started = time.perf_counter()
    model = options.model
    with store.writing(f"segmenting with {model}"):  # no other process mixes its writes in
        # Imported here: the widget imports this module when it docks, torch only on a run.
        from slide_unet.core.devices import resolve_device
        from slide_unet.core.inference.live import result_signature
        from slide_unet.core.inference.postprocess import model_min_object
        from slide_unet.core.inference.segment import segment
        from slide_unet.core.model.store import load_model

        flush_windows(store)
        backup = store.backup() if store.edited else None
        store.touch(edited=False, source=f"segment {model}")
        loaded = load_model(model, device=resolve_device(options.device))
        # The card's minimum object area unless one was given: one value for the run,
        # its signature and what the caller is told.
        area = model_min_object(loaded, options.min_object_um2, probabilities=False)
        options = dataclasses.replace(options, min_object_um2=area)
        settings = {
            "mpp": options.mpp,
            "precision": options.precision,
            "threshold": options.threshold,
            "tta": options.tta,
            "colour": options.colour,
        }
        raw = result_signature(loaded, **settings)  # every object kept: Live's result
        signature = result_signature(loaded, **settings, min_object_um2=area)
        ledger = store.ledger

        # Each block holds the result with every object as it lands (so a cancelled
        # run's blocks count, for Live and the next run); small objects are removed
        # over the whole region at the end, which makes it this run's result. A run
        # cancelled while removing them leaves blocks marked as every object kept
        # that lack some specks: the next run with an area finishes the removal.
        def written(box: tuple[int, int, int, int]) -> None:
            ledger.record(box, raw, replaces_edits=True)
            reload_windows(store, box)
            landed(box)

        # The engine writes each finished block as out[rows, cols] = block, from its
        # writer threads: straight into the store, announced with landed(); the
        # coarse overviews, which many blocks share, are rebuilt in batches.
        out = StoreWindow(store, region, on_write=written, edited=False, defer_overviews=True)
        try:
            segment(
                source,
                loaded,
                region=region,
                out=out,
                progress=progress,
                cancel=cancel,
                # Live or an earlier run left this result there (or the one with every
                # object kept, whose small objects go at the end), and no one painted since.
                done=ledger.done_map({raw, signature}),
                out_probabilities=ProbabilityWindow(store, region),
                **options.engine_kwargs(),
            )
        finally:
            store.flush_overviews()
            landed(region)
        store.add_region(*region)
        # The whole region now holds this result (hand edits in it were copied aside
        # and written over): Live and later runs need not segment it again.
        ledger.record(region, signature, replaces_edits=True)
        return {
            "seconds": time.perf_counter() - started,
            "region": region,
            "min_object_um2": options.min_object_um2,
            "backup": str(backup) if backup else None,
        }
