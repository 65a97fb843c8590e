"""Segment a slide, a region of it, or an image array with a U-Net, tile by tile.

:func:`segment` is :func:`plan_segmentation` (which blocks, from which
pyramid level, at which scale) followed by :func:`run_blocks` over every block
and by writing the result. The plan is a small picklable value that names the
slide and the model by path and name, so the blocks of one plan can be shared
out to other processes or machines, each of which reopens the slide, loads
the model, and calls :func:`run_blocks` on its own blocks, writing disjoint
chunk-aligned regions of one zarr store.

Scale
    Tiles are read from the best pyramid level (see
    :mod:`slide_unet.core.inference.planning`), resampled to the model's working scale
    (linear, antialiased when shrinking; see :mod:`slide_unet.core.inference.tiling`),
    and the probabilities are mapped back to full resolution the same way,
    then thresholded.

Exactness
    Every tile is cropped by the model's halo and aligned to its pooling grid,
    so the result equals one pass over the whole (resampled) image, up to
    float rounding, except within a halo of the image border.

This module is part of the napari-free core.
"""

from __future__ import annotations

import dataclasses
import itertools
import os
import shutil
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from slide_unet.core.atomic import (
    atomic_path,
    check_not_overwriting,
    clean_stale_temporaries,
    temporary_name,
)
from slide_unet.core.devices import default_batch_size, resolve_device, resolve_precision
from slide_unet.core.errors import Cancel, Cancelled, InputError, cancel_check
from slide_unet.core.inference import pipeline
from slide_unet.core.inference.planning import (
    SegmentationPlan,
    check_region,
    load_model_spec,
    make_plan,
    open_source,
    tile_for_side,
)
from slide_unet.core.inference.postprocess import (
    Steps,
    check_min_object,
    clear_skipped,
    drop_small,
    small_object_steps,
)

__all__ = [
    "FINE_WORK_LIMIT",
    "MAX_IN_MEMORY_PIXELS",
    "create_output",
    "run_blocks",
    "segment",
    "stream_to_output",
]

#: A block done in part runs as its undone squares only when their tiles' area is
#: under this share of the block's tile: smaller calls cost more than their area
#: (bench_viewport: 14 small blocks instead of 8 whole ones took as long).
FINE_WORK_LIMIT = 0.75

#: Outputs up to this many pixels may be returned as numpy arrays; bigger ones
#: need ``out=`` (a file, streamed to disk).
MAX_IN_MEMORY_PIXELS = 2**28

# -- running -------------------------------------------------------------------------


def _plan_level(slide: Any, plan: SegmentationPlan) -> Any:
    """The level the plan reads, found by its shape (a slide reopened elsewhere
    may lack overview levels cached here)."""
    levels = getattr(slide, "levels", None)
    if levels is None:
        is_list = isinstance(slide, Sequence) and not isinstance(slide, np.ndarray)
        levels = list(slide) if is_list else [slide]
    shapes = [tuple(int(n) for n in level.shape[:2]) for level in levels]
    if plan.level < len(levels) and shapes[plan.level] == plan.level_shape:
        return levels[plan.level]
    if plan.level_shape in shapes:
        return levels[shapes.index(plan.level_shape)]
    raise InputError(
        f"the slide has no level of shape {plan.level_shape} that the plan reads "
        f"(its levels: {shapes}); build its overview levels, or plan again"
    )


def run_blocks(
    plan: SegmentationPlan,
    block_indices: Iterable[int],
    *,
    model: torch.nn.Module,
    slide: Any,
    out_array: Any,
    device: str | torch.device = "auto",
    batch_size: int | None = None,
    precision: str = "auto",
    progress: Callable[[int, int], None] | None = None,
    cancel: Cancel | None = None,
    out_probabilities: Any = None,
) -> None:
    """Compute some blocks of a plan and store them in ``out_array``.

    Tiles are read and resampled by reader threads a batch ahead, run through
    the model in batches in this thread, and mapped back to full resolution
    and stored by writer threads. Each block covers whole chunks of the plan's
    output store, so processes given disjoint blocks may write the same store.

    Parameters
    ----------
    plan : SegmentationPlan
    block_indices : iterable of int
        Indices into ``plan.blocks``.
    model : torch.nn.Module
        The loaded model (its card is not read again: the plan has what it needs).
        It is put in eval mode and moved to ``device`` (and channels-last memory).
    slide : Slide, sequence of arrays, or array
        The slide the plan was made for (reopened by ``plan.source``
        elsewhere), its levels, or the array.
    out_array : array-like
        ``plan.shape`` numpy or zarr array (see :func:`create_output`).
    device : str or torch.device
        ``"auto"`` (CUDA, then MPS, then CPU), ``"cpu"``, ``"cuda"``, ``"mps"``.
    batch_size : int, optional
        Tiles per batch; default from the device and tile size.
    precision : str
        ``"auto"`` (bf16, else fp16, autocast on a CUDA GPU; bf16 on CPUs with
        native bf16, else fp32; fp32 on MPS), ``"fp32"``, ``"bf16"`` or ``"fp16"``
        (:func:`~slide_unet.core.devices.resolve_precision`).
    progress : callable, optional
        ``progress(done, total)`` in blocks, at the start and after each batch.
    cancel : callable or threading.Event, optional
        Checked before each batch; when it is set, stop.
    out_probabilities : array-like, optional
        For a mask plan: a ``plan.shape`` array that receives each block's
        probabilities as uint8 ``round(p * 255)``, written by the same writer
        threads just before the block's mask (see :class:`~slide_unet.core.
        inference.pipeline.BlockWriter`).

    Raises
    ------
    Cancelled
        ``cancel`` asked to stop; the blocks stored so far stay stored.
    ValueError
        ``out_array`` (or ``out_probabilities``) does not have the plan's
        shape, or ``slide`` lacks the level the plan reads.
    """
    for name, array in (("out_array", out_array), ("out_probabilities", out_probabilities)):
        if array is not None and tuple(array.shape) != plan.shape:
            raise InputError(f"{name} has shape {tuple(array.shape)}; the plan needs {plan.shape}")
    dev = resolve_device(device)
    resolve_precision(precision, dev)  # a bad value fails before any work
    cancelled = cancel_check(cancel)
    blocks = [plan.blocks[int(i)] for i in block_indices]
    total = len(blocks)
    if progress is not None:
        progress(0, total)
    if cancelled():
        raise Cancelled("segmentation cancelled")
    if not blocks:
        return
    width = int(getattr(model, "config", {}).get("base_width", 16))
    batch = int(batch_size or default_batch_size(dev, plan.tile, width))
    batches = [blocks[k : k + batch] for k in range(0, total, batch)]
    reader = pipeline.TileReader(plan, _plan_level(slide, plan))
    runner = pipeline.ModelRunner(model, plan, dev, precision, batch, batches=len(batches))
    prefetch = writers = None
    try:
        # On a CPU, readers and writers share the model's cores: they yield to it.
        nice = dev.type == "cpu"
        prefetch = pipeline.Prefetcher(
            batches, reader, workers=pipeline.reader_threads(), pin=dev.type == "cuda", nice=nice
        )
        writers = pipeline.WriterPool(
            pipeline.BlockWriter(plan, out_array, out_probabilities),
            workers=pipeline.writer_threads(dev),
            nice=nice,
        )
        done = 0
        for batch_blocks, tiles in prefetch:
            if cancelled():
                raise Cancelled("segmentation cancelled")
            probs = runner(tiles)
            for block, kept in zip(batch_blocks, probs, strict=True):
                writers.submit(kept, block)
            done += len(batch_blocks)
            if progress is not None:
                progress(done, total)
        writers.wait()
    finally:
        if prefetch is not None:
            prefetch.close()
        if writers is not None:
            writers.close()
        runner.restore()


def create_output(plan: SegmentationPlan, path: str | os.PathLike[str]) -> Any:
    """Create the zarr v3 array a plan's blocks are written to.

    Its chunks are the plan's store chunks, aligned with the blocks, so writers
    of different blocks never share a chunk. Background stays unwritten (the
    fill value, 0).

    Returns
    -------
    zarr.Array
    """
    import zarr

    side = plan.grid.store_chunk
    height, width = plan.shape
    array = zarr.create_array(
        store=os.fspath(path),
        shape=plan.shape,
        chunks=(min(side, height), min(side, width)),
        dtype=plan.dtype,
        fill_value=0,
        zarr_format=3,
        overwrite=True,
    )
    array.attrs.update(
        {
            "slide_unet": {
                "region": list(plan.region),
                "mpp": plan.input_mpp,
                "model": plan.model,
                "threshold": plan.threshold,
                "probabilities": plan.probabilities,
            }
        }
    )
    return array


def _output_kind(out: Any, probabilities: bool, shape: tuple[int, int]) -> str:
    """``"numpy"``, ``"array"`` (given), ``"zarr"`` or ``"file"``; checks first."""
    if out is None:
        if shape[0] * shape[1] > MAX_IN_MEMORY_PIXELS:
            raise InputError(
                f"a {shape[0]} x {shape[1]} output is too big to return in memory (at most "
                f"{MAX_IN_MEMORY_PIXELS} pixels): pass out= a .zarr or .ome.tif path"
            )
        return "numpy"
    if hasattr(out, "shape") and hasattr(out, "__setitem__"):
        return "array"
    from slide_unet.core.masks.io import MAX_PNG_PIXELS, mask_suffix

    path = Path(out)
    suffix = mask_suffix(path)
    if suffix is None:
        raise InputError(
            f"{path}: unknown output format {path.suffix!r}: expected .zarr, .ome.tif, .tif, "
            ".png, .csv or .geojson"
        )
    if not path.parent.is_dir():
        raise FileNotFoundError(f"{path.parent}: the output folder does not exist")
    if suffix == ".zarr":
        return "zarr"
    if probabilities:
        raise InputError(f"{path}: probabilities can only be written to .zarr (or returned)")
    if suffix == ".png" and shape[0] * shape[1] > MAX_PNG_PIXELS:
        raise InputError(
            f"a {shape[0]} x {shape[1]} mask is too big for PNG: write .ome.tif or .zarr"
        )
    return "file"


def segment(
    source: Any,
    model: Any = "glomeruli",
    *,
    region: Sequence[int] | None = None,
    mpp: float | None = None,
    device: str | torch.device = "auto",
    out: Any = None,
    progress: Callable[[int, int], None] | None = None,
    cancel: Cancel | None = None,
    batch_size: int | None = None,
    tile: int | None = None,
    threshold: float | None = None,
    tissue: bool = True,
    probabilities: bool = False,
    precision: str = "auto",
    tta: bool = False,
    colour: Any = True,
    min_object_um2: float | None = None,
    done: Callable[[tuple[int, int, int, int]], bool] | None = None,
    out_probabilities: Any = None,
) -> Any:
    """Segment a slide (or a region of it) with a U-Net, tile by tile.

    Parameters
    ----------
    source : str, os.PathLike, Slide, array or sequence of arrays
        A slide file (opened here and closed after), an open
        :class:`~slide_unet.core.slide.slide.Slide`, an image array ``YX`` or
        ``YXC`` (numpy, dask, zarr), or pyramid levels (largest first).
    model : str, os.PathLike or torch.nn.Module
        A bundled or user model name, a model file, or a loaded model (with
        its card as ``.card``; it is moved to ``device`` and left there).
    region : tuple of int, optional
        ``(y0, y1, x0, x1)`` in full-resolution pixels: compute only this
        window (context is still read from around it). Default: everything.
    mpp : float, optional
        Input pixel size in µm, when the file does not record one (default:
        the card's ``default_input_mpp``, else the image's own scale).
    device : str or torch.device
        ``"auto"`` (CUDA, then MPS, then CPU), ``"cpu"``, ``"cuda"``, ``"mps"``.
    out : None, path or array
        None: return a numpy array (outputs up to :data:`MAX_IN_MEMORY_PIXELS`).
        A ``.zarr`` path: a zarr v3 array (block-aligned chunks, the
        pixel size in its attributes). ``.ome.tif``/``.tif`` (pyramidal,
        pixel size kept), ``.png``, ``.csv`` (Kaggle RLE), ``.ome.zarr``,
        ``.geojson``: streamed into a temporary zarr store, then written with
        :func:`~slide_unet.core.masks.io.write_mask`. Files appear complete or
        not at all: a cancelled or failed run leaves no output and no
        temporary files. A writable array of the region's shape: filled in
        place, block by block (a viewer can show it as it fills; with an int
        attribute ``block_alignment`` the blocks are multiples of it on the
        image's grid, see :func:`~slide_unet.core.inference.tiling.make_grid`); it may hold an
        earlier result, which each block replaces as it lands, and the blocks
        skipped as background are set to 0 once every block has run (a
        cancelled run changes only the blocks it finished).
    progress : callable, optional
        ``progress(done, total)`` in steps: one per block that runs (background
        blocks are skipped), then, for an ``out`` array, one per skipped block
        cleared, then those of removing small objects (``min_object_um2``).
    cancel : callable or threading.Event, optional
        Checked between batches, and between blocks of clearing and of
        small-object removal; when true or set, stop and raise
        :class:`~slide_unet.core.errors.Cancelled`.
    batch_size : int, optional
        Tiles per batch (default: about 4 of 512 x 512 on a CPU, more on a GPU).
    tile : int, optional
        Largest model tile side at working scale (default: the card's, at
        least 8 halos, or 16 on a GPU, so the halo costs little).
    threshold : float, optional
        Foreground where the probability is above it (default: the card's).
    tissue : bool
        Skip blocks without tissue (brightfield RGB slides only): they are 0.
    colour : bool
        Bring the slide's tissue colour to the model's training images' (models
        whose card records a ``colour_reference``): see
        :func:`~slide_unet.core.inference.planning.colour_match`. A
        :class:`~slide_unet.core.slide.tissue.TissueColour` measured before may
        be given instead of True (the colour of the whole slide, not the region).
    probabilities : bool
        Return float32 probabilities instead of the 0/1 mask (numpy or
        ``.zarr`` outputs only).
    precision : str
        ``"auto"``: bf16 (else fp16) autocast on a CUDA GPU and on CPUs with
        native bf16 instructions (its Dice within 0.0005 of fp32 on real
        images), fp32 on other CPUs and MPS; ``"fp32"``, ``"bf16"`` or
        ``"fp16"`` to choose (``"fp32"`` for results exactly independent of
        the tiling).
    tta : bool
        Test-time augmentation: average the probabilities over the eight
        rotations and flips of each tile. About eight times slower; on the
        glomeruli model's held-out tiles it raises Dice a little (see the
        README).
    min_object_um2 : float, optional
        Remove objects smaller than this area in µm² (in pixels when the
        pixel size is unknown) once every block is done; objects are measured
        whole across blocks. 0: keep everything. None (the default): the
        model card's ``min_object_um2`` (the area its cross-validation chose;
        0 for a card that records none). Masks only.
    done : callable, optional
        For an ``out`` array that may already hold this result in places (a
        mask store's ledger knows where): ``done((y0, y1, x0, x1))``, a block
        in full-resolution image pixels, is true when ``out`` holds that
        block's result already. Such blocks are neither run nor cleared.
    out_probabilities : array-like, optional
        With an ``out`` array and a mask (not ``probabilities=True``): a
        writable array of the region's shape (numpy, zarr, a mask store's
        :class:`~slide_unet.core.masks.windows.ProbabilityWindow`) that
        receives the model's probabilities alongside the mask, in the same
        run: uint8 ``round(p * 255)`` (0..255 for 0..1), computed from the
        same full-resolution strips the mask is thresholded from and written
        block by block by the same writer threads, each block just before
        its mask, so no second model pass, no float32 copy of the region,
        and a writer's memory stays a few strips. The blocks skipped as
        background are cleared to 0 with the mask; blocks ``done`` says are
        done keep what they hold; small-object removal changes only the mask.

    Returns
    -------
    numpy.ndarray, zarr.Array or pathlib.Path
        The mask (``uint8`` 0/1, or float32 probabilities) of the region's
        shape at full resolution: a numpy array when ``out`` is None, the zarr
        array opened read-only for ``.zarr``, ``out`` itself for an array,
        else the path of the file written.

    Raises
    ------
    ValueError
        A bad region, channel count, tile, device, precision or output.
    slide_unet.core.errors.Cancelled
        ``cancel`` asked to stop.
    """
    dev = resolve_device(device)
    resolve_precision(precision, dev)
    check = cancel_check(cancel)  # a bad cancel fails before any work
    check_min_object(min_object_um2, probabilities)
    if out_probabilities is not None and probabilities:
        raise InputError("out_probabilities goes beside a mask: not with probabilities=True")
    if isinstance(source, str | os.PathLike) and isinstance(out, str | os.PathLike):
        check_not_overwriting([out], [source])
    with open_source(source) as src:
        box = check_region(region, (int(src.levels[0].shape[0]), int(src.levels[0].shape[1])))
        kind = _output_kind(out, probabilities, (box[1] - box[0], box[3] - box[2]))
        if out_probabilities is not None:
            region_shape = (box[1] - box[0], box[3] - box[2])
            if kind != "array":
                raise InputError(
                    "out_probabilities needs out= an array too (the mask store's path): "
                    "for a file of probabilities use probabilities=True"
                )
            if tuple(out_probabilities.shape) != region_shape:
                raise InputError(
                    f"out_probabilities has shape {tuple(out_probabilities.shape)}; the "
                    f"region needs {region_shape}"
                )
        net, spec = load_model_spec(model, dev)
        plan = make_plan(
            src,
            net,
            spec,
            region=box,
            mpp=mpp,
            device=dev,
            tile=tile,
            threshold=threshold,
            tissue=tissue,
            probabilities=probabilities,
            tta=tta,
            colour=colour,
            # An output that says so (a mask store's window) gets blocks that fill
            # its chunks: no chunk is rewritten by two blocks.
            align=getattr(out, "block_alignment", None) if kind == "array" else None,
        )
        if min_object_um2 is None:  # the model card's, as the plan carries it
            min_object_um2 = plan.min_object_um2
        options: dict[str, Any] = {
            "model": net,
            "slide": src.levels,
            "device": dev,
            "batch_size": batch_size,
            "precision": precision,
            "progress": progress,
            "cancel": check,
            "out_probabilities": out_probabilities,
        }
        # A given array may hold an earlier result: the blocks the engine skips as
        # background are cleared too, after every block ran, so a cancelled run
        # leaves everything but its finished blocks as it was. Blocks that already
        # hold this result are left alone (see _leave_done).
        clear = kind == "array"
        parts: list[tuple[SegmentationPlan, frozenset[Any]]] = [(plan, frozenset())]
        if done is not None and clear:
            align = getattr(out, "block_alignment", None)
            fine_tile = tile_for_side(align, plan.scale, net) if align else 0

            def finer() -> SegmentationPlan:
                return make_plan(
                    src, net, spec, region=box, mpp=mpp, device=dev, tile=fine_tile,
                    threshold=threshold, tissue=tissue, probabilities=probabilities,
                    tta=tta, align=align, colour=colour,
                )  # fmt: skip

            parts = _leave_done(plan, done, align, fine_tile, finer)
        sizes = {f"model{i}": len(p.blocks) for i, (p, _) in enumerate(parts)}
        if clear:
            for i, (p, keep) in enumerate(parts):
                sizes[f"clear{i}"] = p.total_blocks - len(p.blocks) - len(keep)
        sizes["small"] = small_object_steps(plan.shape) if min_object_um2 else 0
        steps = Steps(progress, **sizes)

        def compute(p: SegmentationPlan, array: Any) -> None:
            runs = parts if clear else [(p, frozenset())]
            for i, (part, _) in enumerate(runs):
                options["progress"] = steps.phase(f"model{i}")
                run_blocks(part, range(len(part.blocks)), out_array=array, **options)
            if clear:
                for i, (part, keep) in enumerate(runs):
                    clear_skipped(
                        part,
                        array,
                        check,
                        steps.phase(f"clear{i}"),
                        keep=keep,
                        probabilities=out_probabilities,
                    )
            drop_small(p, array, min_object_um2, check, steps.phase("small"))

        if kind == "numpy":
            result = np.zeros(plan.shape, plan.dtype)
            compute(plan, result)
            return result
        if kind == "array":
            if tuple(out.shape) != plan.shape:
                raise InputError(
                    f"out has shape {tuple(out.shape)}; the region needs {plan.shape}"
                )
            compute(plan, out)
            return out
        return stream_to_output(plan, out, compute)


def _squares(box: tuple[int, int, int, int], side: int) -> list[tuple[int, int, int, int]]:
    """``box`` cut on the image's grid of ``side``."""
    y0, y1, x0, x1 = box
    ys = [y0, *range((y0 // side + 1) * side, y1, side), y1]
    xs = [x0, *range((x0 // side + 1) * side, x1, side), x1]
    return [(a, b, c, d) for a, b in itertools.pairwise(ys) for c, d in itertools.pairwise(xs)]


def _leave_done(
    plan: SegmentationPlan,
    done: Callable[[tuple[int, int, int, int]], bool],
    align: int | None,
    fine_tile: int,
    finer: Callable[[], SegmentationPlan],
) -> list[tuple[SegmentationPlan, frozenset[Any]]]:
    """The plan without the blocks ``done`` says the output holds, as runs of
    ``(plan, blocks to leave alone)``.

    A block done whole is left alone. A block done only in part (a viewer
    segmented some of its squares of ``align`` pixels) is run as those squares
    that are not done, by a second plan of ``align``-sized blocks (``finer()``,
    tiles of ``fine_tile``), when their tiles' area is under
    :data:`FINE_WORK_LIMIT` of the block's own tile; else it runs whole (smaller
    tiles carry more halo per pixel: two squares of four cost about what the
    whole block does).
    """
    kept = {b for b in plan.grid.blocks() if done((b.y0, b.y1, b.x0, b.x1))}
    partial = set()
    if align:
        for b in plan.grid.blocks():
            squares = [] if b in kept else _squares((b.y0, b.y1, b.x0, b.x1), align)
            todo = sum(not done(square) for square in squares)
            cheaper = todo * fine_tile**2 < FINE_WORK_LIMIT * plan.tile**2
            if len(squares) > 1 and todo < len(squares) and cheaper:
                partial.add(b)
    coarse = [(dataclasses.replace(plan, blocks=tuple(
        b for b in plan.blocks if b not in kept and b not in partial
    )), frozenset(kept | partial))]  # fmt: skip
    if not partial:
        return coarse
    fine = finer()

    def within(f: Any) -> Any:
        return next((b for b in partial if b.y0 <= f.y0 and f.y1 <= b.y1 and b.x0 <= f.x0
                     and f.x1 <= b.x1), None)  # fmt: skip

    inside = {f: within(f) for f in fine.grid.blocks()}
    touching = [
        f for f in fine.grid.blocks()
        if any(f.y0 < b.y1 and b.y0 < f.y1 and f.x0 < b.x1 and b.x0 < f.x1 for b in partial)
    ]  # fmt: skip
    if any(inside[f] is None for f in touching):  # the finer grid does not nest: run them whole
        return [(dataclasses.replace(plan, blocks=tuple(
            b for b in plan.blocks if b not in kept
        )), frozenset(kept))]  # fmt: skip
    needed = {f for f in touching if not done((f.y0, f.y1, f.x0, f.x1))}
    fine = dataclasses.replace(fine, blocks=tuple(f for f in fine.blocks if f in needed))
    return [*coarse, (fine, frozenset(f for f in fine.grid.blocks() if f not in needed))]


def stream_to_output(
    plan: SegmentationPlan,
    out: str | os.PathLike[str],
    compute: Callable[[SegmentationPlan, Any], None],
) -> Any:
    """Run ``compute(plan, array)`` into a zarr store and publish it as ``out``.

    A ``.zarr`` output is computed under a temporary name and renamed into
    place; any other format is computed into a scratch store, then written
    with :func:`~slide_unet.core.masks.io.write_mask`. Either way a failed or
    cancelled run leaves no output and no temporary files. ``compute``
    receives the plan with its ``out`` set to the store, so that other
    processes can open it.

    Returns
    -------
    zarr.Array or pathlib.Path
        The zarr array (read-only) for ``.zarr``, else the path written.
    """
    path = Path(out)
    if mask_suffix_of(path) == ".zarr":
        import zarr

        with atomic_path(path) as tmp:
            plan = dataclasses.replace(plan, out=os.fspath(tmp))
            compute(plan, create_output(plan, tmp))
        return zarr.open_array(os.fspath(path), mode="r")
    # A name that says which process made it: a killed run's scratch is cleaned
    # by the next run (atomic.clean_stale_temporaries).
    clean_stale_temporaries(path.parent)
    scratch = path.parent / temporary_name(path.name)
    scratch.mkdir()
    try:
        plan = dataclasses.replace(plan, out=os.fspath(scratch / "mask.zarr"))
        array = create_output(plan, scratch / "mask.zarr")
        compute(plan, array)
        from slide_unet.core.masks.io import write_mask

        return write_mask(array, path, mpp=plan.input_mpp)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)


def mask_suffix_of(path: Path) -> str | None:
    """The mask format extension of ``path`` (``.zarr``, ``.ome.tif``...)."""
    from slide_unet.core.masks.io import mask_suffix

    return mask_suffix(path)
