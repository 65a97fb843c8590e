"""Whole-slide segmentation spread over processes or machines with dask.distributed.

The client plans the run (:func:`~slide_unet.core.inference.planning.plan_segmentation`)
and creates the output zarr store; each task carries the picklable plan and a
few block indices. A worker reopens the slide by path (tifffile handles do
not pickle), loads the model once and keeps it, and writes its blocks into
the shared store: blocks cover whole chunks, so no two tasks write the same
chunk. The result is the same as a single-process run, block for block.
"""

from __future__ import annotations

import logging
import os
import threading
from collections.abc import Callable, Sequence
from typing import Any

from slide_unet.core.errors import Cancel, Cancelled, InputError, WorkersDiedError, cancel_check
from slide_unet.core.inference.planning import SegmentationPlan, plan_segmentation
from slide_unet.core.inference.segment import (
    check_min_object,
    drop_small,
    run_blocks,
    stream_to_output,
)

#: Blocks per task: enough to keep a worker's batches full, few enough that
#: progress moves and work balances across workers.
BLOCKS_PER_TASK = 8

_worker_models: dict[tuple[str, str], Any] = {}
_worker_lock = threading.Lock()


def _model_on_worker(spec: str, device: str) -> Any:
    """The model, loaded once per worker process and kept for later tasks."""
    from slide_unet.core.devices import resolve_device
    from slide_unet.core.model.store import load_model

    device = str(resolve_device(device))  # "auto" means this worker's best device
    with _worker_lock:
        key = (spec, device)
        if key not in _worker_models:
            _worker_models[key] = load_model(spec, device=device)
        return _worker_models[key]


def run_task(
    plan: SegmentationPlan,
    block_indices: Sequence[int],
    device: str = "auto",
    batch_size: int | None = None,
    precision: str = "auto",
) -> int:
    """Run some blocks of ``plan`` into its zarr store (on a dask worker).

    Returns the number of blocks run.
    """
    import zarr

    from slide_unet.core.slide.slide import open_slide

    if plan.source is None or plan.out is None or plan.model is None:
        raise InputError(
            "a distributed plan needs a slide file, a model name or file, and a store"
        )
    model = _model_on_worker(plan.model, device)
    out = zarr.open_array(plan.out, mode="r+")
    with open_slide(plan.source) as slide:
        run_blocks(
            plan,
            block_indices,
            model=model,
            slide=slide,
            out_array=out,
            device=device,
            batch_size=batch_size,
            precision=precision,
        )
    return len(block_indices)


def connect(workers: int | None = None, scheduler: str | None = None) -> Any:
    """A dask.distributed Client: to ``scheduler``, or a LocalCluster of ``workers``.

    Local workers are processes with one thread each: torch uses every core
    of a process by itself, so processes share the machine's cores.
    """
    try:
        from dask.distributed import Client, LocalCluster
    except ImportError as exc:  # pragma: no cover - distributed is a dependency
        raise RuntimeError(
            "scale-out needs dask.distributed: pip install 'dask[distributed]'"
        ) from exc
    if scheduler:
        return Client(scheduler)
    count = max(1, int(workers or 1))
    threads = max(1, (os.cpu_count() or 1) // count)
    # Its own log lines (workers restarting, data lost) would bury the one line
    # that says what happened: errors reach the caller as exceptions.
    cluster = LocalCluster(
        n_workers=count,
        threads_per_worker=1,
        processes=True,
        dashboard_address=None,
        silence_logs=logging.CRITICAL,
    )
    client = Client(cluster)
    try:
        client.run(_limit_torch_threads, threads)
    except _worker_lost() as exc:  # killed as they started
        client.close()
        cluster.close()
        raise _died("as they started: 0 blocks done", exc) from exc
    return client


def _worker_lost() -> tuple[type[BaseException], ...]:
    """What a call raises when its workers are gone (killed, or the cluster lost)."""
    from concurrent.futures import CancelledError

    from distributed import KilledWorker
    from distributed.comm import CommClosedError

    return (CancelledError, KilledWorker, CommClosedError)


def _died(when: str, exc: BaseException) -> WorkersDiedError:
    return WorkersDiedError(
        f"the dask.distributed workers died {when} ({type(exc).__name__}): nothing was "
        "written. A worker the system killed for memory is the usual cause: run with fewer "
        "--workers or a smaller --batch-size"
    )


def _limit_torch_threads(threads: int) -> None:
    import torch

    torch.set_num_threads(threads)


def segment_distributed(
    source: str | os.PathLike[str],
    model: str | os.PathLike[str] = "glomeruli",
    *,
    out: str | os.PathLike[str],
    client: Any = None,
    workers: int | None = None,
    scheduler: str | None = None,
    region: Sequence[int] | None = None,
    mpp: float | None = None,
    device: str = "auto",
    tile: int | None = None,
    threshold: float | None = None,
    tissue: bool = True,
    batch_size: int | None = None,
    precision: str = "auto",
    tta: bool = False,
    min_object_um2: float | None = None,
    colour: bool = True,
    progress: Callable[[int, int], None] | None = None,
    cancel: Cancel | None = None,
) -> Any:
    """:func:`~slide_unet.core.inference.segment.segment` over a dask.distributed cluster.

    Parameters
    ----------
    source
        The slide file (workers open it by path: it must be reachable there).
    model
        A model name or file (workers load it themselves).
    out
        Output path (``.zarr``, ``.ome.tif``, ...), as for ``segment``; a zarr
        store must be on storage every worker can write.
    client, workers, scheduler
        An existing ``dask.distributed.Client``; else one to ``scheduler``;
        else a LocalCluster of ``workers`` processes, closed at the end.
    region, mpp, device, tile, threshold, tissue, batch_size, precision, tta, min_object_um2
    colour
        As for ``segment`` (the colour is matched in the plan, so every worker
        applies the same; ``min_object_um2`` None is the card's); ``device`` is
        what each worker uses; small objects are removed here, once every
        worker is done.
    progress, cancel
        ``progress(done, total)`` in blocks as tasks finish; ``cancel`` (a
        callable or threading.Event) cancels outstanding tasks and raises
        :class:`~slide_unet.core.errors.Cancelled`, leaving no output.

    Returns
    -------
    zarr.Array or pathlib.Path
        As ``segment`` returns for a path ``out``.
    """
    if not isinstance(model, (str, os.PathLike)):
        raise TypeError("distributed runs need a model name or file, not a loaded module")
    check_min_object(min_object_um2, probabilities=False)
    # Planned for the CPU (the client may have no GPU): pass `tile` for GPU workers.
    plan = plan_segmentation(
        source,
        model,
        region=region,
        mpp=mpp,
        device="cpu",
        tile=tile,
        threshold=threshold,
        tissue=tissue,
        tta=tta,
        colour=colour,
    )
    if plan.source is None:
        raise InputError("distributed runs need a slide file that workers can open by path")
    if min_object_um2 is None:  # the model card's (segment's default)
        min_object_um2 = plan.min_object_um2
    if tile is None and device != "cpu":
        plan = plan_segmentation(
            source,
            model,
            region=region,
            mpp=mpp,
            device=device,
            threshold=threshold,
            tissue=tissue,
            tta=tta,
            colour=colour,
        )
    own = client is None
    client = client or connect(workers, scheduler)
    try:

        def compute(p: SegmentationPlan, array: Any) -> None:
            _run_on_cluster(client, p, device, batch_size, precision, progress, cancel)
            drop_small(p, array, min_object_um2, cancel_check(cancel))

        return stream_to_output(plan, out, compute)
    finally:
        if own:
            cluster = getattr(client, "cluster", None)
            client.close()
            if cluster is not None:
                cluster.close()


def _run_on_cluster(
    client: Any,
    plan: SegmentationPlan,
    device: str,
    batch_size: int | None,
    precision: str,
    progress: Callable[[int, int], None] | None,
    cancel: Cancel | None,
) -> None:
    from dask.distributed import as_completed

    worker_lost = _worker_lost()
    cancelled = cancel_check(cancel)
    indices = list(range(len(plan.blocks)))
    groups = [indices[k : k + BLOCKS_PER_TASK] for k in range(0, len(indices), BLOCKS_PER_TASK)]
    try:
        plan_future = client.scatter(plan, broadcast=True)
    except worker_lost as exc:
        raise _died(f"before the run began: 0 of {len(indices)} blocks done", exc) from exc
    futures = [
        client.submit(run_task, plan_future, group, device, batch_size, precision, pure=False)
        for group in groups
    ]
    done = 0
    if progress is not None:
        progress(0, len(indices))
    try:
        for future in as_completed(futures):
            try:
                done += future.result()
            except worker_lost as exc:
                when = f"before the run finished: {done} of {len(indices)} blocks done"
                raise _died(when, exc) from exc
            if progress is not None:
                progress(done, len(indices))
            if cancelled():
                raise Cancelled("segmentation cancelled")
    finally:
        client.cancel([f for f in futures if not f.done()])
