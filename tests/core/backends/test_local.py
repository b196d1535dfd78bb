"""The local backend: one process per job, device slots mapped to CUDA_VISIBLE_DEVICES."""

from __future__ import annotations

import random

import numpy as np
import pytest
import torch

from streamguard_core.backends.local import LocalBackend, child_environment
from streamguard_core.config import GNNConfig, TrainConfig, TrainJobSpec
from streamguard_core.training.job import read_run_status


def test_cuda_slot_maps_through_the_parents_visible_devices():
    assert child_environment("cuda:1", parent_visible="2,3") == (
        {"CUDA_VISIBLE_DEVICES": "3"},
        "cuda",
    )
    assert child_environment("cuda:0", parent_visible="") == ({"CUDA_VISIBLE_DEVICES": "0"}, "cuda")
    assert child_environment(None) == ({}, None)
    assert child_environment("cpu") == ({}, "cpu")


def _spec(data_dir, run_dir, seed=42):
    return TrainJobSpec(
        model=GNNConfig(hidden_dim=8, num_layers=2, node_token_dim=4),
        train=TrainConfig(epochs=2, batch_size=16, max_steps_per_epoch=2, num_threads=1),
        seed=seed,
        data_dir=str(data_dir),
        run_dir=str(run_dir),
    )


@pytest.mark.slow
def test_jobs_run_in_their_own_process(make_processed, tmp_path):
    """The job trains in a child: the parent's RNGs and logger are untouched, epochs stream back."""
    data = make_processed(4, 500, 128)
    random.seed(7)
    np.random.seed(7)
    torch.manual_seed(7)
    before = (random.getstate(), np.random.get_state()[1].tobytes(), torch.get_rng_state())
    rows: list[dict] = []
    status = LocalBackend().run(_spec(data, tmp_path / "run"), on_epoch_end=rows.append)
    after = (random.getstate(), np.random.get_state()[1].tobytes(), torch.get_rng_state())
    assert status.status == "completed", status.error
    assert [r["epoch"] for r in rows] == [0, 1]
    assert before[0] == after[0] and before[1] == after[1]
    assert torch.equal(before[2], after[2])  # an in-process run would have reseeded these
    assert read_run_status(tmp_path / "run") == status
    assert (tmp_path / "run" / "training.log").read_text().count("epoch") >= 2


@pytest.mark.slow
def test_a_failing_job_is_a_status_not_an_exception(tmp_path):
    status = LocalBackend().run(_spec(tmp_path / "no_such_data", tmp_path / "run"))
    assert status.status == "failed"
    assert "no_such_data" in (status.error or "")
    assert read_run_status(tmp_path / "run").status == "failed"


@pytest.mark.skipif(
    torch.cuda.is_available(), reason="CPU slots are what a machine without CUDA gets"
)
def test_cpu_slots_share_the_cores():
    from streamguard_core.backends.local import cpu_threads_per_job, local_devices

    assert local_devices() == [None]
    assert local_devices(cpu_jobs=2) == [None, None]
    assert cpu_threads_per_job(1) is None  # one job: torch's own default
    assert cpu_threads_per_job(2) == max(1, (__import__("os").cpu_count() or 1) // 2)
    assert cpu_threads_per_job(10_000) == 1
