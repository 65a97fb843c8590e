"""The stages of tiled inference, each in its own threads so they overlap.

::

    reader threads ──> prefetch queue ──> model (caller's thread) ──> writer threads
    (decode, resample)  (ready batches)    (device, autocast)         (map to full
                                                                      resolution, store)

:class:`TileReader` turns a block into the tile its model input needs,
:class:`Prefetcher` keeps the next batch ready while the model runs,
:class:`ModelRunner` runs batches on the device (halving them on GPU
out-of-memory), :class:`BlockWriter` maps a tile's kept centre to the block's
full-resolution pixels, and :class:`WriterPool` writes blocks in the
background. :func:`slide_unet.core.inference.segment.run_blocks` wires them together.

This module is part of the napari-free core.
"""

from __future__ import annotations

import contextlib
import math
import os
import queue
import threading
import warnings
from collections import OrderedDict, deque
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from slide_unet.core.devices import autocast, is_out_of_memory, resolve_precision
from slide_unet.core.errors import InputError
from slide_unet.core.inference.tiling import (
    OutputBlock,
    apply_taps,
    block_output_taps,
    reflect_index,
    resample_taps,
)

if TYPE_CHECKING:
    from slide_unet.core.inference.planning import SegmentationPlan

__all__ = ["BlockWriter", "ModelRunner", "Prefetcher", "TileReader", "WriterPool", "quantise"]

#: At most this many bytes of decoded chunks are kept for neighbouring tiles
#: (44,000 RGB pixels x 2,048 rows is 270 MB).
CHUNK_CACHE_BYTES = 256 * 2**20

#: ITU-R BT.601 luma: what an RGB image looks like to a model trained on gray.
LUMA = np.array([0.299, 0.587, 0.114], np.float32)


#: Batches of one shape from which cuDNN's kernel search is worth its cost.
AUTOTUNE_MIN_BATCHES = 16


def reader_threads() -> int:
    """Threads that decode tiles: every core, up to 8 (decoders release the GIL)."""
    return max(2, min(8, os.cpu_count() or 2))


def writer_threads(device: torch.device) -> int:
    """Threads that write blocks: with the model on a GPU, half the cores (up to 8:
    mapping to full resolution and compressing is the heaviest CPU work left);
    on the CPU, one per four cores (at least one)."""
    cores = os.cpu_count() or 1
    if device.type != "cpu":
        return max(1, min(8, cores // 2))
    return max(1, min(4, cores // 4))


def lower_thread_priority() -> None:
    """Make the calling thread yield the CPU to the model's threads (Linux only).

    On a CPU the model's parallel operations run one thread per core and wait
    for the slowest, so a reader thread that takes a core for a few
    milliseconds delays every thread of the model. At a lower priority
    (niceness +10), readers and writers use the time the model leaves.
    """
    with contextlib.suppress(AttributeError, OSError):  # not Linux, or not allowed: as is
        os.setpriority(os.PRIO_PROCESS, threading.get_native_id(), 10)


def materialise(level: Any, tile_rows: int) -> Any:
    """A level to read tiles of ``tile_rows`` level rows from.

    A single-chunk dask array (PNG, JPEG) is decoded once here, else every
    tile would decode the whole image; other dask arrays are read through a
    :class:`ChunkCache` that holds the chunk rows a row of tiles spans, plus
    two (at most :data:`CHUNK_CACHE_BYTES`): what the next row of tiles reuses.
    """
    numblocks = getattr(level, "numblocks", None)
    if numblocks is None:
        return level
    if all(n == 1 for n in numblocks):
        return np.asarray(level.compute(scheduler="sync"))
    chunk_rows = max(level.chunks[0])
    row_bytes = chunk_rows * int(np.prod(level.shape[1:])) * level.dtype.itemsize
    rows = -(-tile_rows // chunk_rows) + 2
    return ChunkCache(level, min(CHUNK_CACHE_BYTES, rows * row_bytes))


class ChunkCache:
    """Decoded chunks of a dask level, shared by the reader threads.

    Neighbouring tiles overlap by twice the halo, and a tile seldom starts on
    a chunk edge, so reading each tile on its own decodes most chunks two to
    four times. Here each chunk is decoded once (a chunk wanted by two threads
    at once is decoded by the first, awaited by the second) and kept until
    ``max_bytes`` of newer chunks push it out; tiles go row by row, so a few
    rows of chunks is all that is ever reused.
    """

    def __init__(self, level: Any, max_bytes: int) -> None:
        self.level = level
        self.starts = [np.cumsum((0, *c)) for c in level.chunks[:2]]
        self.max_bytes = max_bytes
        self._bytes = 0
        self._lock = threading.Lock()
        self._chunks: OrderedDict[tuple[int, int], np.ndarray] = OrderedDict()
        self._decoding: dict[tuple[int, int], threading.Event] = {}

    @property
    def shape(self) -> tuple[int, ...]:
        """The level's shape."""
        return tuple(self.level.shape)

    def _chunk(self, key: tuple[int, int]) -> np.ndarray:
        while True:
            with self._lock:
                chunk = self._chunks.get(key)
                if chunk is not None:
                    self._chunks.move_to_end(key)
                    return chunk
                pending = self._decoding.get(key)
                if pending is None:
                    self._decoding[key] = threading.Event()
                    break
            pending.wait()  # another thread is decoding it; then look again
        try:
            chunk = np.asarray(self.level.blocks[key].compute(scheduler="sync"))
            with self._lock:
                self._chunks[key] = chunk
                self._bytes += chunk.nbytes
                while self._bytes > self.max_bytes and len(self._chunks) > 1:
                    self._bytes -= self._chunks.popitem(last=False)[1].nbytes
        finally:
            with self._lock:
                self._decoding.pop(key).set()
        return chunk

    def read(self, r0: int, r1: int, c0: int, c1: int) -> np.ndarray:
        """Pixels ``[r0, r1) x [c0, c1)``, from cached chunks."""
        out = np.empty((r1 - r0, c1 - c0, *self.level.shape[2:]), self.level.dtype)
        rows, cols = self.starts
        for i in range(int(np.searchsorted(rows, r0, "right")) - 1, len(rows) - 1):
            if rows[i] >= r1:
                break
            for j in range(int(np.searchsorted(cols, c0, "right")) - 1, len(cols) - 1):
                if cols[j] >= c1:
                    break
                chunk = self._chunk((i, j))
                y0, y1 = max(r0, rows[i]), min(r1, rows[i + 1])
                x0, x1 = max(c0, cols[j]), min(c1, cols[j + 1])
                out[y0 - r0 : y1 - r0, x0 - c0 : x1 - c0] = chunk[
                    y0 - rows[i] : y1 - rows[i], x0 - cols[j] : x1 - cols[j]
                ]
        return out


def read_box(level: Any, r0: int, r1: int, c0: int, c1: int) -> np.ndarray:
    """Pixels ``[r0, r1) x [c0, c1)`` of a level, decoded in this thread.

    Dask levels are computed with the synchronous scheduler: tiles are already
    read in parallel, one per reader thread, and nesting dask's thread pool in
    ours would only add contention.
    """
    if isinstance(level, ChunkCache):
        return level.read(r0, r1, c0, c1)
    part = level[r0:r1, c0:c1]
    compute = getattr(part, "compute", None)
    if compute is not None:
        return np.asarray(compute(scheduler="sync"))
    return np.asarray(part)


def _resample(data: np.ndarray, index: np.ndarray, weight: np.ndarray, axis: int) -> np.ndarray:
    """Resample along ``axis`` with local indices; a plain slice when they are one."""
    if index.shape[1] == 1 and weight[0, 0] == 1.0:
        first = int(index[0, 0])
        if np.array_equal(index[:, 0], np.arange(first, first + len(index))):
            return data[(slice(None),) * axis + (slice(first, first + len(index)),)]
        return np.take(data, index[:, 0], axis=axis)
    return apply_taps(data, index, weight, axis)


class TileReader:
    """Reads the model input of a block: its tile at working scale, with halo.

    The tile is in the source's units (raw uint8/uint16 when no resampling is
    needed, else float32), channels already matched to the model except for a
    gray-to-RGB repeat, which :class:`ModelRunner` does by broadcasting as it
    normalises on the device.
    """

    def __init__(self, plan: SegmentationPlan, level: Any) -> None:
        self.plan = plan
        dy, dx = plan.level_downsample
        self.ratios = (plan.scale / dy, plan.scale / dx)
        self.level = materialise(level, math.ceil(plan.tile * self.ratios[0]) + 4)
        self.shape = (int(self.level.shape[0]), int(self.level.shape[1]))

    def _channels(self, pixels: np.ndarray) -> np.ndarray:
        if pixels.ndim == 2:
            return pixels[..., None]
        mode = self.plan.channel_mode
        if mode == "drop-alpha":
            return pixels[..., :3]
        if mode == "luma":
            return (pixels[..., :3].astype(np.float32) @ LUMA)[..., None]
        return pixels

    def __call__(self, block: OutputBlock) -> np.ndarray:
        """The ``tile x tile x channels`` input of ``block``."""
        tile = self.plan.tile
        axes = []
        for origin, ratio, size in zip(
            (block.tile_y, block.tile_x), self.ratios, self.shape, strict=True
        ):
            taps = resample_taps(origin, origin + tile, ratio)
            index = reflect_index(taps.index, size)
            axes.append((index, taps.weight, int(index.min()), int(index.max()) + 1))
        (ri, rw, r0, r1), (ci, cw, c0, c1) = axes
        pixels = self._channels(read_box(self.level, r0, r1, c0, c1))
        pixels = _resample(pixels, ri - r0, rw, axis=0)
        return _resample(pixels, ci - c0, cw, axis=1)


def quantise(values: np.ndarray, out: np.ndarray) -> None:
    """Store probabilities in 0..1 as uint8 ``round(p * 255)`` in ``out``."""
    scaled = np.multiply(values, np.float32(255.0), dtype=np.float32)
    np.clip(scaled, 0.0, 255.0, out=scaled)
    np.rint(scaled, out=scaled)
    out[...] = scaled  # whole numbers 0..255: the cast is exact


class BlockWriter:
    """Maps a tile's kept centre to its block's full-resolution pixels and stores them.

    ``out`` is indexed relative to the plan's region; blocks are disjoint, so
    several writers may store at once. With ``probabilities`` (an array like
    ``out``, for a mask plan), each block's probabilities are stored there too,
    as uint8 ``round(p * 255)``, before the mask: from the same resampled strips
    the mask is thresholded from, so they cost no second pass and no
    full-resolution float copy.
    """

    def __init__(self, plan: SegmentationPlan, out: Any, probabilities: Any = None) -> None:
        if probabilities is not None and plan.probabilities:
            raise InputError("probabilities beside the mask need a mask plan")
        self.plan = plan
        self.out = out
        self.probabilities = probabilities

    #: Output rows resampled at a time: bounds a writer's float32 scratch.
    strip = 512

    def __call__(self, kept: np.ndarray, block: OutputBlock) -> None:
        """Store ``block`` from ``kept``, the ``(tile - 2*halo)``-square probabilities."""
        plan = self.plan
        rows, cols = block_output_taps(plan.grid, block)
        # Columns first, on the small working-scale rows (gathers along a row are
        # the costly kind); then rows, whose gathers copy whole rows, a strip at
        # a time, thresholded as they go.
        wide = _resample(kept, cols.index, cols.weight, axis=1)
        height = block.y1 - block.y0
        data = np.empty((height, wide.shape[1]), np.float32 if plan.probabilities else np.uint8)
        quantised = None if self.probabilities is None else np.empty(data.shape, np.uint8)
        for start in range(0, height, self.strip):
            part = slice(start, min(start + self.strip, height))
            values = _resample(wide, rows.index[part], rows.weight[part], axis=0)
            if plan.probabilities:
                data[part] = values
            else:
                np.greater(values, plan.threshold, out=data[part].view(np.bool_))
                if quantised is not None:
                    quantise(values, quantised[part])
        ry, rx = plan.region[0], plan.region[2]
        box = (slice(block.y0 - ry, block.y1 - ry), slice(block.x0 - rx, block.x1 - rx))
        if quantised is not None:
            # First: whoever hears of the mask's block (a store's on_write) finds
            # its probabilities there already.
            self.probabilities[box] = quantised
        self.out[box] = data


class ModelRunner:
    """Runs batches of tiles through the model on a device.

    Normalisation happens here, on the device: ``x * a + b`` per channel, with
    ``a`` and ``b`` from the model card and the source's value range (a
    gray-to-RGB repeat is a broadcast). The model is put in eval mode, moved
    to the device and to channels-last memory (faster convolutions on CPU
    and GPU); :meth:`restore` puts its training mode back.
    """

    def __init__(
        self,
        model: torch.nn.Module,
        plan: SegmentationPlan,
        device: torch.device,
        precision: str,
        batch_size: int,
        batches: int = 1,
    ) -> None:
        self.model = model
        self.plan = plan
        self.device = device
        self.dtype = resolve_precision(precision, device)
        self.batch_size = max(1, int(batch_size))
        self._warned = False
        self._was_training = model.training
        self.memory_format = (
            torch.channels_last if device.type in ("cpu", "cuda") else torch.contiguous_format
        )
        model.eval()
        model.to(device=device, memory_format=self.memory_format)
        # Every tile has the same shape, so on a long run cuDNN's search for its
        # fastest kernels pays; it costs about a second per new batch shape, more
        # than a viewport's few batches take.
        self._cudnn_benchmark = torch.backends.cudnn.benchmark
        if device.type == "cuda":
            torch.backends.cudnn.benchmark = batches >= AUTOTUNE_MIN_BATCHES
        self.a = torch.tensor(plan.input_scale, dtype=torch.float32, device=device)
        self.b = torch.tensor(plan.input_offset, dtype=torch.float32, device=device)

    def restore(self) -> None:
        """Put the model back in the training mode it had, and cuDNN's setting."""
        self.model.train(self._was_training)
        torch.backends.cudnn.benchmark = self._cudnn_benchmark

    def _forward(self, x: torch.Tensor) -> np.ndarray:
        halo, tile = self.plan.grid.halo, self.plan.tile
        with torch.inference_mode():
            x = x.to(self.device, non_blocking=True).float() * self.a + self.b
            x = x.permute(0, 3, 1, 2)  # NHWC memory is exactly channels-last NCHW
            if self.memory_format is torch.contiguous_format:
                x = x.contiguous()
            with autocast(self.device, self.dtype):
                logits = self.model(x)
            self._check(logits, x)
            crop = slice(halo, tile - halo)
            if self.plan.tta:
                prob = self._dihedral_mean(x, torch.sigmoid(logits[:, 0].float()))[:, crop, crop]
            else:
                prob = torch.sigmoid(logits[:, 0, crop, crop].float())
        return prob.cpu().numpy()

    @staticmethod
    def _check(logits: torch.Tensor, x: torch.Tensor) -> None:
        if logits.ndim != 4 or logits.shape[0] != x.shape[0] or logits.shape[2:] != x.shape[2:]:
            raise InputError(
                f"the model returned shape {tuple(logits.shape)} for input {tuple(x.shape)}: "
                "expected N x 1 x H x W logits"
            )

    def _dihedral_mean(self, x: torch.Tensor, prob: torch.Tensor) -> torch.Tensor:
        """Mean probability over the eight rotations and flips of square tiles.

        ``prob`` is the plain pass's; each other view is computed, turned back
        and added.
        """
        total = prob.clone()
        for flip in (False, True):
            for turns in range(4):
                if not flip and turns == 0:
                    continue
                view = x.flip(-1) if flip else x
                view = torch.rot90(view, turns, (-2, -1))
                if self.memory_format is torch.channels_last:
                    view = view.contiguous(memory_format=torch.channels_last)
                with autocast(self.device, self.dtype):
                    logits = self.model(view)
                back = torch.rot90(torch.sigmoid(logits[:, 0].float()), -turns, (-2, -1))
                total += back.flip(-1) if flip else back
        return total / 8

    def __call__(self, tiles: torch.Tensor) -> np.ndarray:
        """Foreground probabilities of the kept centre of each tile, ``N x k x k``."""
        n = len(tiles)
        parts = []
        start = 0
        while start < n:
            size = min(self.batch_size, n - start)
            try:
                parts.append(self._forward(tiles[start : start + size]))
            except Exception as exc:
                if not is_out_of_memory(exc) or size == 1:
                    raise
                self.batch_size = max(1, size // 2)
                if self.device.type == "cuda":
                    torch.cuda.empty_cache()
                if not self._warned:
                    self._warned = True
                    warnings.warn(
                        f"out of {self.device.type} memory with {size} tiles per batch: "
                        f"going on with {self.batch_size}",
                        RuntimeWarning,
                        stacklevel=2,
                    )
                continue
            start += size
        return parts[0] if len(parts) == 1 else np.concatenate(parts)


def _batch_dtype(dtype: np.dtype) -> np.dtype:
    """What a batch is stacked as: 8-bit stays 8-bit (a quarter of the bytes to
    copy to a GPU), other integers become int32 (torch has no uint16), the rest
    float32."""
    if dtype in (np.dtype(np.uint8), np.dtype(np.bool_)):
        return np.dtype(np.uint8)
    if dtype in (np.dtype(np.uint16), np.dtype(np.int16), np.dtype(np.int32)):
        return np.dtype(np.int32)
    return np.dtype(np.float32)


class _Failure:
    def __init__(self, exc: BaseException) -> None:
        self.exc = exc


_DONE = object()


class Prefetcher:
    """Reads batches of tiles in background threads while the model runs.

    Tiles are decoded by a pool of reader threads, a batch ahead; a feeder
    thread stacks each batch (into pinned memory for CUDA, so the copy to the
    GPU is asynchronous) and puts it on a bounded queue. Iterating yields
    ``(blocks, tensor)`` pairs in order and re-raises a reader's error.
    """

    def __init__(
        self,
        batches: Sequence[Sequence[OutputBlock]],
        read: Callable[[OutputBlock], np.ndarray],
        *,
        workers: int,
        depth: int = 1,
        pin: bool = False,
        nice: bool = False,
    ) -> None:
        self._batches = batches
        self._read = read
        self._depth = depth
        self._pin = pin
        self._queue: queue.Queue[Any] = queue.Queue(maxsize=depth)
        self._stop = threading.Event()
        self._pool = ThreadPoolExecutor(
            workers,
            thread_name_prefix="slide-unet-read",
            initializer=lower_thread_priority if nice else None,
        )
        self._thread = threading.Thread(target=self._run, name="slide-unet-prefetch", daemon=True)
        self._thread.start()

    def _put(self, item: Any) -> None:
        while not self._stop.is_set():
            try:
                self._queue.put(item, timeout=0.05)
                return
            except queue.Full:
                continue

    def _stack(self, tiles: list[np.ndarray]) -> torch.Tensor:
        dtype = _batch_dtype(np.result_type(*(t.dtype for t in tiles)))
        torch_dtype = torch.from_numpy(np.empty(0, dtype)).dtype
        tensor = torch.empty(
            (len(tiles), *tiles[0].shape), dtype=torch_dtype, pin_memory=self._pin
        )
        np.stack(tiles, out=tensor.numpy(), casting="unsafe")
        return tensor

    def _run(self) -> None:
        try:
            batches = iter(self._batches)
            pending: deque[tuple[Sequence[OutputBlock], list[Future[np.ndarray]]]] = deque()

            def submit_next() -> None:
                blocks = next(batches, None)
                if blocks is not None:
                    pending.append((blocks, [self._pool.submit(self._read, b) for b in blocks]))

            for _ in range(self._depth + 1):
                submit_next()
            while pending and not self._stop.is_set():
                blocks, futures = pending.popleft()
                tiles = [f.result() for f in futures]
                submit_next()
                self._put((blocks, self._stack(tiles)))
            self._put(_DONE)
        except BaseException as exc:  # handed to the consumer, which re-raises it
            self._put(_Failure(exc))

    def __iter__(self) -> Iterator[tuple[Sequence[OutputBlock], torch.Tensor]]:
        while True:
            item = self._queue.get()
            if item is _DONE:
                return
            if isinstance(item, _Failure):
                raise item.exc
            yield item

    def close(self) -> None:
        """Stop reading, drop what was read ahead, and wait for the threads."""
        self._stop.set()
        while True:
            try:
                self._queue.get_nowait()
            except queue.Empty:
                break
        self._thread.join()
        self._pool.shutdown(wait=True, cancel_futures=True)


class WriterPool:
    """Writes blocks in background threads, with a bounded number in flight.

    A writer's error is raised by the next :meth:`submit` or by :meth:`wait`.
    """

    def __init__(
        self, write: Callable[[np.ndarray, OutputBlock], None], *, workers: int, nice: bool = False
    ) -> None:
        self._write = write
        self._max = 2 * workers + 2
        self._pending: deque[Future[None]] = deque()
        self._pool = ThreadPoolExecutor(
            workers,
            thread_name_prefix="slide-unet-write",
            initializer=lower_thread_priority if nice else None,
        )

    def submit(self, kept: np.ndarray, block: OutputBlock) -> None:
        """Queue ``block`` for writing; waits while too many are in flight."""
        while self._pending and (len(self._pending) >= self._max or self._pending[0].done()):
            self._pending.popleft().result()
        self._pending.append(self._pool.submit(self._write, kept, block))

    def wait(self) -> None:
        """Wait for every queued write, raising the first error."""
        while self._pending:
            self._pending.popleft().result()

    def close(self) -> None:
        """Drop writes not started and wait for the running ones."""
        for future in self._pending:
            future.cancel()
        self._pending.clear()
        self._pool.shutdown(wait=True, cancel_futures=True)
