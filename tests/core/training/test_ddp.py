"""Data-parallel training (DDP, gloo on CPU): N processes train like one with the same global
batch, a stop request on any rank stops them all, and the ways in are wired (CLI flag,
torchrun launcher, kinds that ignore it, SageMaker's one instance per job).

Dropout is 0 in every model here: with dropout on, each rank draws its own masks (rank 0 the
one-process stream, the others their own), so N processes are a different random draw from one
process, not the same numbers. Everything else (data order, shards, the loss each rank
back-propagates, the evaluation on rank 0) is deterministic, so the weights agree to float
rounding (the gradient all-reduce adds the ranks' parts in another order than one process).

Most runs start their ranks from the local backend's forkserver (torch already imported, the
environment torchrun would give: RANK, WORLD_SIZE, LOCAL_RANK, MASTER_ADDR/PORT) and run
``run_job`` exactly as a torchrun worker does; one slow test goes through real torchrun, started
by the SageMaker entrypoint as on a multi-GPU instance (``run_job`` launches it for the CLI and
the local backend the same way).
"""

from __future__ import annotations

import json
import multiprocessing as mp
import os
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

from scripts.loopback import free_port
from streamguard_core.config import (
    BaselineConfig,
    GNNConfig,
    TrainConfig,
    TrainJobSpec,
    TransformerConfig,
)
from streamguard_core.io import read_jsonl
from streamguard_core.training.checkpoint import load_checkpoint, save_checkpoint
from streamguard_core.training.distributed import EpochForwarder, shard_batch, worker_env
from streamguard_core.training.job import read_run_status, run_job
from streamguard_core.training.paths import RunPaths

GNN = GNNConfig(hidden_dim=8, num_layers=2, node_token_dim=4, dropout=0.0)
TRANSFORMER = TransformerConfig(hidden_size=16, num_layers=1, dropout=0.0)
BASE = dict(num_threads=1, checkpoint_every_steps=3, seed=7)
CASES = {
    # 104 train examples in 7 batches of 15 (the last 14): every batch splits 8/7 over 2 ranks,
    # where a plain average of the ranks' mean losses would be wrong; two batches per
    # optimizer step (the first backward without the all-reduce: no_sync)
    "gnn": (GNN, TrainConfig(epochs=2, batch_size=15, accumulation_steps=2, **BASE)),
    # one example per step: rank 1 always runs a stand-in weighted 0 (and the relational GNN)
    "rgcn_batch_1": (
        GNN.model_copy(update={"arch": "rgcn"}),
        TrainConfig(epochs=1, batch_size=1, max_steps_per_epoch=3, **BASE),
    ),
    "transformer": (
        TRANSFORMER,
        TrainConfig(epochs=1, batch_size=8, max_steps_per_epoch=3, **BASE),
    ),
}
RTOL, ATOL = 1e-5, 1e-6


@pytest.fixture(scope="module")
def data_dir(make_processed) -> Path:
    return make_processed(pairs=5, vocab_size=400, max_seq_len=96)  # test_loop's data set


def _spec(case: str, data_dir: Path, run_dir: Path, nproc: int = 1) -> TrainJobSpec:
    model, train = CASES[case]
    train = train.model_copy(update={"nproc_per_node": nproc})
    return TrainJobSpec(model=model, train=train, seed=7, data_dir=str(data_dir),
                        run_dir=str(run_dir))  # fmt: skip


@pytest.fixture(scope="module")
def one_process(data_dir, tmp_path_factory):
    """The reference: each case trained by one process (``run_job`` here), once per module."""
    done: dict[str, Path] = {}

    def run(case: str) -> Path:
        if case not in done:
            run_dir = tmp_path_factory.mktemp(f"one_{case}")
            status = run_job(_spec(case, data_dir, run_dir), device="cpu")
            assert status.status == "completed", status.error
            done[case] = run_dir
        return done[case]

    return run


# --------------------------------------------------------------------------- ranks as torchrun


def _rank(spec_json: str, rank: int, world: int, port: int, stop_after: int | None) -> None:
    """One rank, as torchrun starts it: its environment, then ``run_job`` (job.main's call)."""
    os.environ.update({"RANK": str(rank), "LOCAL_RANK": str(rank), "WORLD_SIZE": str(world),
                       "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(port)})  # fmt: skip
    from streamguard_core.training.loop import TrainingInterrupted

    polls = [0]

    def should_stop() -> bool:  # only this rank ever asks: the all-reduce tells the others
        polls[0] += 1
        return stop_after is not None and polls[0] >= stop_after

    try:
        status = run_job(TrainJobSpec.model_validate_json(spec_json), device="cpu",
                         should_stop=should_stop)  # fmt: skip
    except TrainingInterrupted:
        raise SystemExit(143) from None  # job.main's exit status for a stopped worker
    raise SystemExit(0 if status.status == "completed" else 1)


def _run_ranks(spec: TrainJobSpec, world: int = 2, stop_rank: int | None = None,
               stop_after: int = 3) -> list[int | None]:  # fmt: skip
    """Exit codes of ``world`` ranks running ``spec``; ``stop_rank`` asks to stop at its
    ``stop_after``-th optimizer step."""
    from streamguard_core.backends.local import PRELOAD

    context = mp.get_context("forkserver")
    context.set_forkserver_preload(PRELOAD)  # the local backend's: shared, torch imported once
    port = free_port()
    procs = [
        context.Process(target=_rank, args=(spec.model_dump_json(), r, world, port,
                                            stop_after if r == stop_rank else None))
        for r in range(world)
    ]  # fmt: skip
    for proc in procs:
        proc.start()
    for proc in procs:
        proc.join(timeout=300)
    for proc in procs:
        if proc.is_alive():
            proc.kill()
    return [proc.exitcode for proc in procs]


# --------------------------------------------------------------------------- comparisons


def _state(run_dir: Path) -> dict:
    return load_checkpoint(RunPaths(run_dir).latest)


def _assert_same_weights(one: Path, other: Path) -> None:
    a, b = _state(one)["model"], _state(other)["model"]
    assert a.keys() == b.keys()
    for name in a:
        torch.testing.assert_close(b[name], a[name], rtol=RTOL, atol=ATOL, msg=name)


def _assert_same_run(one: Path, two: Path) -> None:
    """Same weights, losses, validation curve, validation probabilities and metrics."""
    _assert_same_weights(one, two)
    meta_1, meta_2 = (json.loads(RunPaths(d).metadata.read_text()) for d in (one, two))
    assert meta_2["world_size"] == 2 and meta_1["world_size"] == 1
    for row_1, row_2 in zip(meta_1["history"], meta_2["history"], strict=True):
        for key in ("train_loss", "valid_f1", "valid_roc_auc", "threshold", "lr"):
            assert row_2[key] == pytest.approx(row_1[key], rel=RTOL, abs=ATOL), key
        assert row_2["global_step"] == row_1["global_step"]
    probs_1, probs_2 = (
        np.array([r["probability"] for r in read_jsonl(RunPaths(d).valid_predictions)])
        for d in (one, two)
    )
    np.testing.assert_allclose(probs_2, probs_1, rtol=RTOL, atol=ATOL)
    metrics_1, metrics_2 = (json.loads(RunPaths(d).metrics.read_text()) for d in (one, two))
    assert metrics_2["valid"]["f1"] == pytest.approx(metrics_1["valid"]["f1"], abs=ATOL)


# --------------------------------------------------------------------------- tests


def test_shards_of_a_global_batch_are_the_batch_in_order():
    batch = np.array([9, 4, 7, 1, 3])
    shards = [shard_batch(batch, r, 2) for r in range(2)]
    assert [s.tolist() for s, _ in shards] == [[9, 4, 7], [1, 3]]
    assert not any(stand_in for _, stand_in in shards)
    # fewer examples than ranks: the empty rank runs the first example as a (weight 0) stand-in
    assert [(s.tolist(), stand_in) for s, stand_in in (shard_batch(batch[:1], r, 2)
                                                     for r in range(2))] == [
        ([9], False), ([9], True)]  # fmt: skip


def test_worker_environment_is_read_from_torchruns_variables():
    assert worker_env({}) is None and worker_env({"WORLD_SIZE": "1", "RANK": "0"}) is None
    env = worker_env({"WORLD_SIZE": "4", "RANK": "5", "LOCAL_RANK": "1"})
    assert env is not None and (env.rank, env.world_size, env.local_rank) == (5, 4, 1)


@pytest.mark.parametrize("case", list(CASES))
def test_two_processes_train_like_one(case, data_dir, one_process, tmp_path):
    """2 ranks x half batches == 1 process x the global batch: weights, losses, valid probs."""
    spec = _spec(case, data_dir, tmp_path / "two", nproc=2)
    assert _run_ranks(spec) == [0, 0]
    status = read_run_status(spec.run_dir)
    assert status is not None and status.status == "completed", status
    assert status.world_size == 2
    _assert_same_run(one_process(case), Path(spec.run_dir))
    # rank 0 alone wrote: one model, one log, every rank's RNG in the checkpoint
    assert len(_state(Path(spec.run_dir))["rng_ranks"]) == 2
    assert (Path(spec.run_dir) / "model" / "model_card.json").exists()


def test_a_stop_asked_by_one_rank_stops_all_and_resumes_exactly(data_dir, one_process, tmp_path):
    """Rank 1 alone asks at its 2nd step; both stop there, 'latest' is saved, and one process
    resuming it ends where the uninterrupted one-process run ended."""
    run_dir = tmp_path / "stopped"
    spec = _spec("gnn", data_dir, run_dir, nproc=2)
    assert _run_ranks(spec, stop_rank=1, stop_after=2) == [143, 143]
    meta = json.loads((RunPaths(run_dir).latest / "meta.json").read_text())
    assert (meta["global_step"], meta["epoch"], meta["world_size"]) == (2, 0, 2)
    assert read_run_status(run_dir) is None  # not over: no status

    resumed = run_job(_spec("gnn", data_dir, run_dir, nproc=1), device="cpu")
    assert resumed.status == "completed" and resumed.resumed
    _assert_same_weights(one_process("gnn"), run_dir)


@pytest.mark.slow  # real torchrun: three interpreters importing torch (~10-20 s here)
def test_a_sagemaker_job_trains_with_torchrun_like_one_process(
    data_dir, one_process, tmp_path, monkeypatch
):
    """The container entrypoint (one instance, ``SM_NUM_GPUS=0``: gloo on its CPU) with
    nproc_per_node 2: run_job starts torchrun, rank 0's status is published, and the run equals
    the one-process run."""
    from streamguard_core.aws.config import spec_hyperparameters
    from streamguard_core.aws.entrypoint import main

    base = tmp_path / "ml"
    (base / "input" / "config").mkdir(parents=True)
    spec = _spec("gnn", data_dir, tmp_path / "ignored", nproc=2)
    (base / "input" / "config" / "hyperparameters.json").write_text(
        json.dumps(spec_hyperparameters(spec))
    )
    shutil.copytree(data_dir, base / "input" / "data" / "data")
    monkeypatch.setenv("SM_BASE_DIR", str(base))
    monkeypatch.setenv("SM_NUM_GPUS", "0")
    run_dir = base / "checkpoints" / "run"
    paths = RunPaths(run_dir)
    code = main([])
    log = paths.torchrun_log.read_text() if paths.torchrun_log.exists() else ""
    assert code == 0, log[-3000:]
    status = json.loads((base / "model" / "run_status.json").read_text())
    assert (status["status"], status["world_size"], status["backend"]) == (
        "completed", 2, "sagemaker",
    )  # fmt: skip
    _assert_same_run(one_process("gnn"), run_dir)
    assert not paths.ddp_stop.exists() and not list(run_dir.glob(paths.ddp_spec.name + "*"))


def test_the_launcher_hands_on_each_new_epoch_row(tmp_path):
    """Rows rank 0 adds to training_metadata.json reach on_epoch_end once each; a resumed
    run's earlier epochs are not reported again."""
    paths = RunPaths(tmp_path)
    write = lambda rows: paths.metadata.write_text(json.dumps({"history": rows}))  # noqa: E731
    write([{"epoch": 0}])
    assert EpochForwarder(paths, 3, None).seen == 0  # no checkpoint: a stale file, not a resume
    save_checkpoint(paths.latest, {"position": {}}, {"global_step": 1})
    seen: list[dict] = []
    forwarder = EpochForwarder(paths, epochs=3, on_epoch_end=seen.append)
    forwarder.poll()
    write([{"epoch": 0}, {"epoch": 1}])
    forwarder.poll()
    forwarder.poll()
    assert seen == [{"epoch": 1, "epochs": 3}]


def test_a_ddp_jobs_gpu_slot_is_its_gpus():
    from streamguard_core.backends.local import child_environment, local_devices

    assert child_environment("cuda:0,1", parent_visible="4,5,6") == (
        {"CUDA_VISIBLE_DEVICES": "4,5"},
        "cuda",
    )
    if not torch.cuda.is_available():  # CPU slots whatever the processes per job
        assert local_devices(cpu_jobs=2, procs_per_job=2) == [None, None]


def test_a_single_named_gpu_cannot_hold_two_processes(data_dir, tmp_path):
    status = run_job(_spec("gnn", data_dir, tmp_path / "run", nproc=2), device="cuda:1")
    assert status.status == "failed"
    assert "CUDA_VISIBLE_DEVICES" in (status.error or "")
    assert read_run_status(tmp_path / "run") == status


def test_the_baseline_trains_in_one_process_whatever_nproc_says(data_dir, tmp_path, caplog):
    spec = TrainJobSpec(model=BaselineConfig(), train=TrainConfig(nproc_per_node=2),
                        data_dir=str(data_dir), run_dir=str(tmp_path / "baseline"))  # fmt: skip
    with caplog.at_level("WARNING", logger="streamguard.job"):
        status = run_job(spec)
    assert status.status == "completed" and status.world_size == 1
    assert "nproc_per_node 2 ignored" in caplog.text


def test_cli_flag_sets_nproc_per_node(data_dir, tmp_path, capsys):
    from streamguard_core.cli import EXIT_OK, main

    capsys.readouterr()
    argv = ["train", "gnn", "--data", str(data_dir), "--output-dir", str(tmp_path / "o"),
            "--nproc-per-node", "2", "--print-config"]  # fmt: skip
    assert main(argv) == EXIT_OK
    assert json.loads(capsys.readouterr().out)["train"]["nproc_per_node"] == 2


def test_sagemaker_refuses_more_than_one_instance_per_job():
    from pydantic import ValidationError

    from streamguard_core.aws.config import SageMakerConfig

    base = {
        "image_uri": "1.dkr.ecr.us-east-1.amazonaws.com/sg:1",
        "role_arn": "arn:aws:iam::1:role/r",
    }
    assert SageMakerConfig(**base).instance_count == 1
    with pytest.raises(ValidationError, match=r"instance_count 2 > 1 is not used.*nproc_per_node"):
        SageMakerConfig(**base, instance_count=2)
