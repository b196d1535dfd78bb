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
from _aws_testkit import TINY_GNN

from streamguard_core.aws.entrypoint import (
    EXIT_INTERRUPTED,
    find_resume_checkpoint,
    main,
    prepare_resume,
)
from streamguard_core.models.registry import load_detector
from streamguard_core.training.checkpoint import is_valid_checkpoint


def _base(root: Path, hyperparameters: dict, data: Path | None) -> Path:
    """An /opt/ml layout: hyperparameters.json (all strings) and the 'data' channel."""
    config = root / "input" / "config"
    config.mkdir(parents=True)
    wire = {k: v if isinstance(v, str) else json.dumps(v) for k, v in hyperparameters.items()}
    (config / "hyperparameters.json").write_text(json.dumps(wire))
    if data is not None:
        shutil.copytree(data, root / "input" / "data" / "data")
    return root


def _run(monkeypatch, base: Path, argv: list[str] | None = None) -> int:
    monkeypatch.setenv("SM_BASE_DIR", str(base))
    monkeypatch.setenv("SM_NUM_GPUS", "0")
    return main(argv or [])


def test_bad_hyperparameter_fails_with_a_reason(monkeypatch, tmp_path, processed):
    base = _base(tmp_path / "ml", {"model": "gnn", "learning_rate": 0.1}, processed)
    assert _run(monkeypatch, base) == 1
    reason = (base / "output" / "failure").read_text()
    assert reason.startswith("ValueError: invalid hyperparameters") and "learning_rate" in reason
    assert not (base / "model" / "run_status.json").exists()


def test_missing_data_channel_fails_with_a_reason(monkeypatch, tmp_path):
    base = _base(tmp_path / "ml", {"model": "baseline"}, data=None)
    assert _run(monkeypatch, base, ["train"]) == 1
    reason = (base / "output" / "failure").read_text()
    assert "FileNotFoundError" in reason and "'data' input channel" in reason


def test_unexpected_arguments_are_a_usage_error(monkeypatch, tmp_path):
    assert _run(monkeypatch, tmp_path, ["train", "--epochs", "3"]) == 2


def test_baseline_writes_the_model_directory(monkeypatch, tmp_path, processed):
    base = _base(tmp_path / "ml", {"model": "baseline", "seed": 3}, processed)
    (base / "output").mkdir()
    (base / "output" / "failure").write_text("stale from an earlier run")
    assert _run(monkeypatch, base) == 0
    model = base / "model"
    status = json.loads((model / "run_status.json").read_text())
    assert {k: status[k] for k in ("model", "seed", "status", "error", "backend", "device")} == {
        "model": "baseline",
        "seed": 3,
        "status": "completed",
        "error": None,
        "backend": "sagemaker",
        "device": "cpu",
    }
    assert status["wall_s"] >= 0 and status["run_dir"] == str(base / "checkpoints" / "run")
    metrics = json.loads((model / "metrics.json").read_text())
    assert set(metrics) == {"valid", "test"}
    rows = (model / "predictions.jsonl").read_text().splitlines()
    assert len(rows) == metrics["test"]["n"]
    assert json.loads((model / "training_metadata.json").read_text())["history"] == []
    detector = load_detector(model / "model")
    assert detector.kind == "baseline"
    assert not (base / "output" / "failure").exists()


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
    base = _base(tmp_path / "ml", TINY_GNN, processed)
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
    base = _base(tmp_path_factory.mktemp("reference") / "ml", TINY_GNN, processed)
    with pytest.MonkeyPatch.context() as mp:
        assert _run(mp, base) == 0
    return json.loads((base / "model" / "metrics.json").read_text())


def test_sigterm_saves_latest_exits_nonzero_and_the_rerun_resumes(
    monkeypatch, tmp_path, processed, reference_metrics
):
    base = _base(tmp_path / "ml", TINY_GNN, processed)
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

    def collapsing(kind, model_cfg, cfg, data_dir, run_dir, **kw):
        event = CollapseEvent("constant_predictions", "one class for 2 evaluations", 1, None)
        (Path(run_dir) / "training_metadata.json").write_text('{"history": [], "device": "cpu"}')
        write_collapse_report(Path(run_dir) / "collapse_report.json", event, {"kind": kind})
        raise CollapseError(event)

    monkeypatch.setattr(run, "train_neural", collapsing)
    base = _base(tmp_path / "ml", TINY_GNN, processed)
    assert _run(monkeypatch, base) == 0  # the job completes; the aggregate reports it
    status = json.loads((base / "model" / "run_status.json").read_text())
    assert status["status"] == "collapsed"
    assert status["error"] == "constant_predictions: one class for 2 evaluations"
    assert (base / "model" / "collapse_report.json").exists()
    assert not (base / "model" / "model").exists() and not (base / "output" / "failure").exists()


def test_sigterm_before_training_starts_exits_at_once(tmp_path, processed):
    base = _base(tmp_path / "ml", TINY_GNN, processed)
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
        started = time.monotonic()
        proc.send_signal(signal.SIGTERM)
        output = proc.communicate(timeout=60)[0]
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == EXIT_INTERRUPTED, output
    assert "before training started" in output
    assert time.monotonic() - started < 5  # not after the torch import and a training step
    assert not (base / "output" / "failure").exists()
    assert not (base / "checkpoints" / "run" / "checkpoints" / "latest").exists()
