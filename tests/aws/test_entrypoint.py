"""The container entrypoint run directly (no emulator) with SM_BASE_DIR in a temp directory."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from _aws_testkit import tiny_gnn

from streamguard_core.aws.config import spec_hyperparameters
from streamguard_core.aws.entrypoint import (
    EXIT_INTERRUPTED,
    find_resume_checkpoint,
    main,
    prepare_resume,
)
from streamguard_core.config import TrainJobSpec
from streamguard_core.models.registry import load_detector
from streamguard_core.training.checkpoint import is_valid_checkpoint

BASELINE = TrainJobSpec(model={"kind": "baseline"}, seed=3, data_dir="/d", run_dir="/r")


def _base(root: Path, hyperparameters: TrainJobSpec | dict, data: Path | None) -> Path:
    """An /opt/ml layout: hyperparameters.json (a spec, or raw strings) and the 'data' channel."""
    config = root / "input" / "config"
    config.mkdir(parents=True)
    if isinstance(hyperparameters, TrainJobSpec):
        hyperparameters = spec_hyperparameters(hyperparameters)
    (config / "hyperparameters.json").write_text(json.dumps(hyperparameters))
    if data is not None:
        shutil.copytree(data, root / "input" / "data" / "data")
    return root


def _run(monkeypatch, base: Path, argv: list[str] | None = None) -> int:
    monkeypatch.setenv("SM_BASE_DIR", str(base))
    monkeypatch.setenv("SM_NUM_GPUS", "0")
    return main(argv or [])


def test_bad_hyperparameter_fails_with_a_reason(monkeypatch, tmp_path, processed):
    wire = {**spec_hyperparameters(tiny_gnn()), "learning_rate": "0.1"}
    base = _base(tmp_path / "ml", wire, processed)
    assert _run(monkeypatch, base) == 1
    reason = (base / "output" / "failure").read_text()
    assert reason.startswith("ValueError: invalid hyperparameters") and "learning_rate" in reason
    assert not (base / "model" / "run_status.json").exists()


def test_an_invalid_spec_names_the_field(monkeypatch, tmp_path, processed):
    raw = tiny_gnn().model_dump(mode="json")
    raw["train"]["batch_size"] = 0
    base = _base(tmp_path / "ml", {"spec": json.dumps(raw)}, processed)
    assert _run(monkeypatch, base) == 1
    reason = (base / "output" / "failure").read_text()
    assert reason.startswith("ValueError: invalid hyperparameters: spec.train.batch_size")


def test_missing_data_channel_fails_with_a_reason(monkeypatch, tmp_path):
    base = _base(tmp_path / "ml", BASELINE, data=None)
    assert _run(monkeypatch, base, ["train"]) == 1
    reason = (base / "output" / "failure").read_text()
    assert "FileNotFoundError" in reason and "'data' input channel" in reason


def test_unexpected_arguments_are_a_usage_error(monkeypatch, tmp_path):
    assert _run(monkeypatch, tmp_path, ["train", "--epochs", "3"]) == 2


def test_baseline_runs_through_run_job_and_writes_the_model_directory(
    monkeypatch, tmp_path, processed
):
    base = _base(tmp_path / "ml", BASELINE, processed)
    (base / "output").mkdir()
    (base / "output" / "failure").write_text("stale from an earlier run")
    monkeypatch.setenv("TRAINING_JOB_NAME", "sg-run-baseline-s3")
    assert _run(monkeypatch, base) == 0
    model = base / "model"
    status = json.loads((model / "run_status.json").read_text())
    assert {k: status[k] for k in ("model", "kind", "seed", "status", "error", "backend",
                                   "device", "job_name")} == {
        "model": "baseline", "kind": "baseline", "seed": 3, "status": "completed",
        "error": None, "backend": "sagemaker", "device": "cpu", "job_name": "sg-run-baseline-s3",
    }  # fmt: skip
    run_dir = base / "checkpoints" / "run"
    assert status["wall_s"] >= 0 and status["run_dir"] == str(run_dir)
    assert json.loads((run_dir / "run_status.json").read_text()) == status
    # the spec it ran: the one sent, with the container's data channel and run directory
    ran = json.loads((model / "exp_config.json").read_text())
    assert ran.pop("resumed") is False
    assert ran == BASELINE.with_paths(base / "input" / "data" / "data", run_dir).model_dump(
        mode="json"
    )
    metrics = json.loads((model / "metrics.json").read_text())
    assert set(metrics) == {"valid", "test"}
    rows = (model / "predictions.jsonl").read_text().splitlines()
    assert len(rows) == metrics["test"]["n"]
    assert json.loads((model / "training_metadata.json").read_text())["history"] == []
    detector = load_detector(model / "model")
    assert detector.kind == "baseline"
    assert not (base / "output" / "failure").exists()


def test_a_fold_job_publishes_its_out_of_fold_and_valid_predictions(
    monkeypatch, tmp_path, processed
):
    """Fusion needs both files back from SageMaker (they land in the job's run dir locally)."""
    spec = BASELINE.model_copy(update={"fold": {"index": 1, "count": 2}})
    base = _base(tmp_path / "ml", TrainJobSpec.model_validate(spec.model_dump()), processed)
    assert _run(monkeypatch, base) == 0
    model = base / "model"
    held = [json.loads(line) for line in (model / "oof_predictions.jsonl").read_text().splitlines()]
    train = (processed / "train" / "records.jsonl").read_text().splitlines()
    assert 0 < len(held) < len(train)
    assert json.loads((model / "exp_config.json").read_text())["fold"]["index"] == 1
    valid = (model / "valid_predictions.jsonl").read_text().splitlines()
    assert len(valid) == len((processed / "valid" / "records.jsonl").read_text().splitlines())


def _fake_checkpoint(path: Path, step: int, complete: bool = True) -> Path:
    path.mkdir(parents=True)
    (path / "meta.json").write_text(json.dumps({"global_step": step}))
    if complete:
        (path / "state.pt").write_bytes(b"state")
    return path


def test_the_newest_complete_checkpoint_is_chosen(tmp_path, caplog):
    ck = tmp_path / "run" / "checkpoints"
    assert find_resume_checkpoint(ck) is None
    _fake_checkpoint(ck / "epoch_0", 10)
    _fake_checkpoint(ck / "epoch_1", 20)
    _fake_checkpoint(ck / "latest", 26, complete=False)  # a sync cut short
    assert find_resume_checkpoint(ck) == ck / "epoch_1"
    assert "ignoring incomplete checkpoint" in caplog.text
    assert prepare_resume(tmp_path / "run") == ck / "epoch_1"
    assert is_valid_checkpoint(ck / "latest")
    assert json.loads((ck / "latest" / "meta.json").read_text())["global_step"] == 20
    _fake_checkpoint(ck / "epoch_2", 20)
    assert find_resume_checkpoint(ck) == ck / "latest"  # a tie goes to 'latest'


def test_a_partial_latest_is_ignored(monkeypatch, tmp_path, processed, caplog):
    base = _base(tmp_path / "ml", tiny_gnn(), processed)
    _fake_checkpoint(base / "checkpoints" / "run" / "checkpoints" / "latest", 8, complete=False)
    assert _run(monkeypatch, base) == 0
    assert "ignoring incomplete checkpoint" in caplog.text
    status = json.loads((base / "model" / "run_status.json").read_text())
    assert status["status"] == "completed" and status["resumed"] is False
    run = base / "checkpoints" / "run"
    assert json.loads((run / "exp_config.json").read_text())["resumed"] is False
    assert is_valid_checkpoint(run / "checkpoints" / "latest")
    assert load_detector(base / "model" / "model").kind == "gnn"


@pytest.fixture(scope="module")
def reference_metrics(processed, tmp_path_factory) -> dict:
    """metrics.json of an uninterrupted run of TINY_GNN (in this process)."""
    base = _base(tmp_path_factory.mktemp("reference") / "ml", tiny_gnn(), processed)
    with pytest.MonkeyPatch.context() as mp:
        assert _run(mp, base) == 0
    return json.loads((base / "model" / "metrics.json").read_text())


def test_sigterm_saves_latest_exits_nonzero_and_the_rerun_resumes(
    monkeypatch, tmp_path, processed, reference_metrics
):
    base = _base(tmp_path / "ml", tiny_gnn(), processed)
    env = {**os.environ, "SM_BASE_DIR": str(base), "SM_NUM_GPUS": "0", "OMP_NUM_THREADS": "1"}
    latest = base / "checkpoints" / "run" / "checkpoints" / "latest"
    proc = subprocess.Popen(
        [sys.executable, "-m", "streamguard_core.aws.entrypoint", "train"],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )
    try:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline and proc.poll() is None:
            try:
                if json.loads((latest / "meta.json").read_text())["global_step"] >= 4:
                    break
            except (OSError, ValueError):
                pass
            time.sleep(0.01)
        else:
            pytest.fail(f"no checkpoint appeared: {proc.communicate()[0].decode()[-3000:]}")
        proc.send_signal(signal.SIGTERM)
        output = proc.communicate(timeout=60)[0].decode()
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == EXIT_INTERRUPTED, output[-3000:]
    assert "received signal 15" in output
    assert is_valid_checkpoint(latest)
    step = json.loads((latest / "meta.json").read_text())["global_step"]
    assert step >= 4
    assert not (base / "output" / "failure").exists()  # an interruption is not a failure
    assert not (base / "model" / "run_status.json").exists()

    # the restarted container finds the checkpoint and continues exactly
    assert _run(monkeypatch, base) == 0
    status = json.loads((base / "model" / "run_status.json").read_text())
    assert status["resumed"] is True and status["status"] == "completed"
    assert json.loads((base / "model" / "metrics.json").read_text()) == reference_metrics


def test_a_collapse_completes_the_job_with_status_collapsed(monkeypatch, tmp_path, processed):
    from streamguard_core.training import run
    from streamguard_core.training.collapse import (
        CollapseError,
        CollapseEvent,
        write_collapse_report,
    )

    def collapsing(spec, *args, **kw):
        event = CollapseEvent("constant_predictions", "one class for 2 evaluations", 1, None)
        run_dir = Path(spec.run_dir)
        (run_dir / "training_metadata.json").write_text('{"history": [], "device": "cpu"}')
        write_collapse_report(run_dir / "collapse_report.json", event, {"kind": spec.model.kind})
        raise CollapseError(event)

    monkeypatch.setattr(run, "train_neural", collapsing)
    base = _base(tmp_path / "ml", tiny_gnn(), processed)
    assert _run(monkeypatch, base) == 0  # the job completes; the aggregate reports it
    status = json.loads((base / "model" / "run_status.json").read_text())
    assert status["status"] == "collapsed"
    assert status["error"] == "constant_predictions: one class for 2 evaluations"
    assert (base / "model" / "collapse_report.json").exists()
    assert not (base / "model" / "model").exists() and not (base / "output" / "failure").exists()


def test_sigterm_before_training_starts_exits_at_once(tmp_path, processed):
    base = _base(tmp_path / "ml", tiny_gnn(), processed)
    env = {**os.environ, "SM_BASE_DIR": str(base), "SM_NUM_GPUS": "0"}
    proc = subprocess.Popen(
        [sys.executable, "-m", "streamguard_core.aws.entrypoint"],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        assert proc.stdout is not None
        for line in proc.stdout:  # the handler is installed once main() logs its first line
            if "training gnn seed 7" in line:
                break
        proc.send_signal(signal.SIGTERM)
        output = proc.communicate(timeout=60)[0]
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == EXIT_INTERRUPTED, output
    # stopped at once: no training step, nothing saved or half-written, no failure reported
    assert "before training started: stopping now" in output
    assert "saving 'latest' after the current step" not in output
    run_dir = base / "checkpoints" / "run"
    assert not (run_dir / "checkpoints").exists() and not (run_dir / "exp_config.json").exists()
    assert not (run_dir / "run_status.json").exists()
    assert not (base / "output" / "failure").exists() and not (base / "model").exists()


def test_a_failed_run_exits_1_with_its_error_as_the_reason(monkeypatch, tmp_path, processed):
    from streamguard_core.training import run

    def failing(spec, *args, **kw):
        raise RuntimeError("CUDA error: an illegal memory access was encountered")

    monkeypatch.setattr(run, "train_neural", failing)
    base = _base(tmp_path / "ml", tiny_gnn(), processed)
    assert _run(monkeypatch, base) == 1
    reason = (base / "output" / "failure").read_text()
    assert reason == "RuntimeError: CUDA error: an illegal memory access was encountered\n"
    status = json.loads((base / "model" / "run_status.json").read_text())
    assert status["status"] == "failed" and status["error"] == reason.strip()
