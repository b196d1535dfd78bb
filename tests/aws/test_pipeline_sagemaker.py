"""streamguard-pipeline with backend=sagemaker, end to end: Prefect -> emulator + moto S3."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from _aws_testkit import BUCKET, IMAGE_URI, ROLE_ARN

from streamguard_core.aws.config import SageMakerConfig
from streamguard_core.config import DataConfig, PreprocessConfig
from streamguard_core.pipeline.config import SuccessCriteria, TrainingPlan

PLAN = TrainingPlan(
    models=["gnn", "baseline"], seeds=[42], epochs=1, max_steps_per_epoch=3, batch_size=8,
    gnn_hidden_dim=16, gnn_layers=2, num_threads=1,
)  # fmt: skip


def _config(**overrides) -> SageMakerConfig:
    values = {"image_uri": IMAGE_URI, "role_arn": ROLE_ARN, "bucket": BUCKET,
              "instance_type": "ml.g4dn.xlarge", "max_runtime_s": 3600, "poll_s": 0.2,
              "max_poll_s": 1.0, "budget_usd": 10.0}  # fmt: skip
    return SageMakerConfig(**{**values, **overrides})


@pytest.mark.integration
def test_pipeline_trains_every_seed_as_a_sagemaker_job(
    prefect_harness, sagemaker_endpoints, emulator, tmp_path
):
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterKey

    from flows.pipeline import streamguard_pipeline
    from streamguard_core.models.registry import load_detector

    out = tmp_path / "out"
    summary = streamguard_pipeline(
        DataConfig(synthetic_pairs_per_cwe=4),
        PreprocessConfig(workers=1, vocab_size=300, max_seq_len=64),
        PLAN, SuccessCriteria(min_mean_f1=0.0), str(out), backend="sagemaker",
        run_preflight=False, sagemaker=_config(),
    )  # fmt: skip
    for model in ("gnn", "baseline"):
        run = out / model / "seed_42"
        status = json.loads((run / "run_status.json").read_text())
        assert status["status"] == "completed", status
        assert status["backend"] == "sagemaker"
        job = emulator.jobs[status["job_name"]]
        assert job.exit_codes == [0]  # the real entrypoint ran once, in its own /opt/ml
        cost = status["cost"]
        assert cost["instance_type"] == "ml.g4dn.xlarge" and cost["managed_spot"] is True
        assert cost["billable_time_s"] <= cost["training_time_s"]
        assert cost["cost_usd"] is not None
        metrics = json.loads((run / "metrics.json").read_text())
        assert metrics["test"]["n"] > 0
        detector = load_detector(run / "model")
        assert 0.0 <= detector.threshold <= 1.0
    assert summary["models"]["gnn"]["n_completed"] == 1
    assert summary["models"]["baseline"]["cost"]["total_usd"] is not None
    report = Path(summary["report_path"]).read_text()
    assert "## Cost" in report and "spot savings" in report
    # the job specs kept for cancellation hold no secrets
    jobs = (out / "sagemaker_jobs.json").read_text()
    assert "gnn/seed_42" in jobs and "testing" not in jobs
    with get_client(sync_client=True) as client:
        costs = client.read_artifacts(
            artifact_filter=ArtifactFilter(key=ArtifactFilterKey(any_=["sagemaker-costs"]))
        )
    assert costs and {r["model"] for r in json.loads(costs[0].data)} == {"gnn", "baseline"}


@pytest.mark.integration
def test_budget_guard_refuses_before_any_upload(
    prefect_harness, sagemaker_endpoints, processed, tmp_path
):
    from flows.train_production import train_production

    state = train_production(
        str(processed), PLAN, SuccessCriteria(), str(tmp_path / "out"), backend="sagemaker",
        sagemaker=_config(budget_usd=0.5), return_state=True,
    )  # fmt: skip
    assert state.is_failed()
    with pytest.raises(Exception, match="budget"):
        state.result()
    assert not (tmp_path / "out" / "sagemaker_jobs.json").exists()


def test_sagemaker_backend_without_settings_is_a_clear_error(prefect_harness, processed, tmp_path):
    from flows.train_production import train_production

    state = train_production(
        str(processed), PLAN, SuccessCriteria(), str(tmp_path / "out"), backend="sagemaker",
        return_state=True,
    )  # fmt: skip
    assert state.is_failed()
    with pytest.raises(ValueError, match="needs the 'sagemaker' parameter"):
        state.result()


@pytest.mark.integration
def test_cancelling_the_flow_run_stops_its_sagemaker_job(
    prefect_harness, sagemaker_endpoints, emulator, processed, tmp_path
):
    import threading
    import time
    import uuid

    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterName
    from prefect.states import Cancelling

    from flows.train_production import train_production

    name = f"cancel-{uuid.uuid4().hex[:8]}"
    out = tmp_path / "out"
    long_plan = PLAN.model_copy(update={"models": ["gnn"], "epochs": 200,
                                        "max_steps_per_epoch": None})  # fmt: skip
    result: dict = {}

    def run() -> None:
        flow = train_production.with_options(flow_run_name=name)
        result["state"] = flow(
            str(processed), long_plan, SuccessCriteria(), str(out), backend="sagemaker",
            sagemaker=_config(), return_state=True,
        )  # fmt: skip

    thread = threading.Thread(target=run)
    thread.start()
    deadline = time.monotonic() + 120
    job = None
    while time.monotonic() < deadline and job is None:
        job = next((j for j in list(emulator.jobs.values()) if j.secondary == "Training"
                    and j.name.endswith("gnn-s42") and j.exit_codes == []
                    and (out / "sagemaker_jobs.json").exists()), None)  # fmt: skip
        time.sleep(0.2)
    assert job is not None, "the job never started"
    with get_client(sync_client=True) as client:
        run = client.read_flow_runs(
            flow_run_filter=FlowRunFilter(name=FlowRunFilterName(any_=[name]))
        )[0]
        client.set_flow_run_state(run.id, Cancelling(), force=True)
    thread.join(timeout=180)
    assert not thread.is_alive()
    status = json.loads((out / "gnn" / "seed_42" / "run_status.json").read_text())
    assert status["status"] == "failed" and "stopped" in status["error"]
    assert emulator.jobs[status["job_name"]].status == "Stopped"
