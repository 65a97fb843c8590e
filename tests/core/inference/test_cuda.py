"""The engine on a real CUDA GPU: same result as the CPU, autocast, real out-of-memory.

Skipped on machines without CUDA (CI has none); run on a GPU machine with
``pytest tests/core/inference/test_cuda.py``.
"""

from __future__ import annotations

import warnings

import numpy as np
import pytest
import torch

from slide_unet.core.devices import resolve_device, resolve_precision
from slide_unet.core.inference.segment import segment

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")


def test_auto_picks_cuda_with_bf16_autocast() -> None:
    device = resolve_device("auto")
    assert device.type == "cuda"
    assert resolve_precision("auto", device) in (torch.bfloat16, torch.float16)


def test_fp32_on_cuda_matches_the_cpu(random_rgb, tiny_unet) -> None:
    image = random_rgb(700, 900, seed=3)
    model = tiny_unet(seed=1)
    on_cpu = segment(
        image, model, device="cpu", precision="fp32", probabilities=True, tissue=False
    )
    on_gpu = segment(
        image, model, device="cuda", precision="fp32", probabilities=True, tissue=False
    )
    # TF32 convolutions on Hopper differ from the CPU in the last bits only.
    np.testing.assert_allclose(on_gpu, on_cpu, atol=2e-3)


def test_autocast_on_cuda_keeps_the_mask(random_rgb, red_threshold) -> None:
    image = random_rgb(600, 800, seed=4)
    on_cpu = segment(image, red_threshold(), device="cpu", tissue=False)
    on_gpu = segment(image, red_threshold(), device="cuda", tissue=False)
    assert on_gpu.dtype == np.uint8
    assert on_gpu.shape == on_cpu.shape
    # bf16 rounds the normalised input: pixels right at the threshold may flip.
    assert np.mean(on_gpu == on_cpu) > 0.999


def test_out_of_memory_halves_the_batch_and_goes_on(random_rgb, red_threshold) -> None:
    image = random_rgb(1024, 1024, seed=5)

    class GreedyOnBigBatches(red_threshold):
        """Takes real GPU memory in proportion to its batch: big batches run out of it."""

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            free, _ = torch.cuda.mem_get_info(x.device)
            per_tile = free // 3  # three tiles fit, four do not
            scratch = torch.empty(x.shape[0] * per_tile, dtype=torch.uint8, device=x.device)
            del scratch
            return super().forward(x)

    expected = segment(image, red_threshold(tile=128), device="cpu", tissue=False)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        mask = segment(
            image, GreedyOnBigBatches(tile=128), device="cuda", batch_size=16, tissue=False
        )
    said = [str(w.message) for w in caught if "out of cuda memory" in str(w.message)]
    assert len(said) == 1, said  # said once, not per batch
    assert np.mean(mask == expected) > 0.999
