"""Scale-out: a 2-worker LocalCluster gives the single-process result, block for block."""

from __future__ import annotations

import dataclasses
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch

from slide_unet.core.inference.segment import segment
from slide_unet.core.model.card import ModelCard
from slide_unet.core.model.store import save_model
from slide_unet.core.model.unet import UNet

SAMPLE = Path(__file__).resolve().parents[3] / "sample_data" / "kidney_pas.ome.tif"


@pytest.fixture(scope="module")
def model_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A small random U-Net whose threshold splits the sample's pixels roughly in half,
    so the masks compared are far from trivial."""
    torch.manual_seed(3)
    net = UNet(base_width=4, depth=3).eval()
    card = ModelCard(
        name="random",
        parameters=dict(net.config),
        normalization={"mean": [0.5] * 3, "std": [0.25] * 3},
        working_mpp=1.0,
        default_input_mpp=0.5,
        tile=256,
        trained=True,
    )
    net.card = card
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        probs = segment(SAMPLE, net, probabilities=True, tissue=False)
    # Its card's minimum object area applies on both sides unless told otherwise.
    card = dataclasses.replace(card, threshold=float(np.median(probs)), min_object_um2=20.0)
    return save_model(net, tmp_path_factory.mktemp("models") / "random", card)


@pytest.mark.slow
def test_two_worker_local_cluster_matches_a_single_process_run(model_file, tmp_path):
    from slide_unet.core.inference.distributed import segment_distributed

    local = segment(SAMPLE, model_file, out=tmp_path / "local.zarr", tissue=False)
    done = []
    spread = segment_distributed(
        SAMPLE,
        model_file,
        out=tmp_path / "spread.zarr",
        workers=2,
        tissue=False,
        progress=lambda d, t: done.append((d, t)),
    )
    expected, got = np.asarray(local[:]), np.asarray(spread[:])
    assert 0.2 < expected.mean() < 0.8
    np.testing.assert_array_equal(got, expected)
    every = segment(SAMPLE, model_file, tissue=False, min_object_um2=0)
    assert (every != expected).any()  # the card's area removed specks on both sides
    assert done[-1][0] == done[-1][1] > 0
    assert sorted(p.name for p in tmp_path.iterdir()) == ["local.zarr", "spread.zarr"]


def test_the_plan_carries_the_cards_minimum_object_area(model_file):
    """Workers and the client read the area from one place: the plan."""
    from slide_unet.core.inference.planning import plan_segmentation

    assert plan_segmentation(SAMPLE, model_file, tissue=False).min_object_um2 == 20.0
    probabilities = plan_segmentation(SAMPLE, model_file, tissue=False, probabilities=True)
    assert probabilities.min_object_um2 == 0.0


def test_distributed_runs_refuse_a_loaded_module(tmp_path):
    from slide_unet.core.inference.distributed import segment_distributed

    with pytest.raises(TypeError, match="model name or file"):
        segment_distributed(SAMPLE, UNet(base_width=2, depth=2), out=tmp_path / "x.zarr")


@pytest.mark.slow
def test_workers_that_die_are_one_clear_error_and_leave_no_output(model_file, tmp_path):
    import os
    import signal

    from dask.distributed import Client, LocalCluster

    from slide_unet.core.errors import WorkersDiedError
    from slide_unet.core.inference.distributed import segment_distributed

    cluster = LocalCluster(n_workers=2, threads_per_worker=1, dashboard_address=None)
    client = Client(cluster)
    pids = list(client.run(os.getpid).values())

    def kill_every_worker(done: int, total: int) -> None:
        if done == 0:  # before any result: every worker goes, with the data it held
            for pid in pids:
                os.kill(pid, signal.SIGKILL)

    try:
        with pytest.raises(WorkersDiedError, match=r"workers died .*0 of \d+ blocks done"):
            segment_distributed(
                SAMPLE,
                model_file,
                out=tmp_path / "mask.zarr",
                client=client,
                tissue=False,
                progress=kill_every_worker,
            )
    finally:
        client.close()
        cluster.close()
    assert list(tmp_path.iterdir()) == []


def test_workers_that_die_as_they_start_are_one_clear_error(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Killed while the cluster sets them up (distributed's CommClosedError from
    client.run, an OSError, read as a user error saying nothing of workers)."""
    import os

    from slide_unet.core.errors import WorkersDiedError
    from slide_unet.core.inference import distributed

    # The set-up call each worker runs ends the worker instead.
    monkeypatch.setattr(distributed, "_limit_torch_threads", os._exit)
    with pytest.raises(WorkersDiedError, match="workers died as they started"):
        distributed.connect(workers=1)
