"""Training jobs end to end through the SageMaker emulator and moto's server (real HTTP): S3 for
channels, checkpoints and models, CloudWatch Logs for the containers' output.

Each job runs the real entrypoint as a subprocess: a tiny GNN (~2 s of training, ~8 s of
imports on a slow machine). The uninterrupted and the interrupted job run side by side; the
first is waited for with `streamguard aws logs --follow`, which prints its output as it comes.
"""

from __future__ import annotations

import io
import json
import re
import time
import urllib.error
import urllib.request
from typing import Any

import boto3
import pytest
from _aws_testkit import BUCKET, IMAGE_URI, ROLE_ARN, client, tiny_gnn
from botocore.exceptions import ClientError

from streamguard_core.aws.config import spec_hyperparameters
from streamguard_core.aws.emulator import TAG_INTERRUPT_AFTER, TAG_INTERRUPTIONS
from streamguard_core.aws.jobs import (
    JobFailed,
    JobStopped,
    SageMakerJobSpec,
    checkpoint_s3_uri,
    create_training_job,
    download_model,
    job_cost,
    stop_training_job,
    wait_for_job,
)
from streamguard_core.aws.logs import LogsError, print_job_logs
from streamguard_core.aws.s3 import list_keys, parse_s3_uri
from streamguard_core.cli import main
from streamguard_core.models.registry import load_detector

pytestmark = pytest.mark.integration
JOB_TIMEOUT_S = 240


def _spec(
    name: str, data_uri: str, hyperparameters: dict[str, Any] | None = None, **kw: Any
) -> SageMakerJobSpec:
    hp = spec_hyperparameters(tiny_gnn()) if hyperparameters is None else hyperparameters
    fields: dict[str, Any] = {
        "job_name": name,
        "image_uri": IMAGE_URI,
        "role_arn": ROLE_ARN,
        "instance_type": "ml.g4dn.xlarge",
        "hyperparameters": hp,
        "input_s3_uri": data_uri,
        "output_s3_path": f"s3://{BUCKET}/models",
        "checkpoint_s3_uri": checkpoint_s3_uri(BUCKET, "streamguard", "emu", name, 7),
        "max_runtime_s": 600,
        "max_wait_s": 1200,
    }
    return SageMakerJobSpec(**{**fields, **kw})


def _wait(emulator, sm, name: str, **kw: Any) -> dict[str, Any]:
    """wait_for_job with a deadline (the job is stopped when it passes) and quick polls."""
    deadline = time.monotonic() + JOB_TIMEOUT_S
    cancel = kw.pop("should_cancel", None)
    try:
        return wait_for_job(
            sm,
            name,
            poll_s=0.2,
            max_poll_s=1.0,
            should_cancel=lambda: time.monotonic() > deadline or bool(cancel and cancel()),
            **kw,
        )
    except (JobFailed, JobStopped) as exc:
        exc.add_note(emulator.job_log(name)[-4000:])
        raise


def _statuses(desc: dict[str, Any]) -> list[str]:
    return [t["Status"] for t in desc["SecondaryStatusTransitions"]]


@pytest.fixture
def clients(sagemaker_endpoints):
    """SageMaker and S3 clients whose endpoints come from AWS_ENDPOINT_URL[_SAGEMAKER]."""
    session = boto3.session.Session()
    return session.client("sagemaker"), session.client("s3")


@pytest.fixture(scope="module")
def finished_jobs(emulator, moto_server, data_uri, tmp_path_factory):
    """An uninterrupted and a spot-interrupted run of the same job, side by side."""
    sm, s3 = client("sagemaker", emulator.url), client("s3", moto_server)
    logs = client("logs", moto_server)
    straight = _spec("emu-straight", data_uri)
    interrupted = _spec(
        "emu-interrupted", data_uri, tags={TAG_INTERRUPTIONS: "1", TAG_INTERRUPT_AFTER: "2"}
    )
    for spec in (straight, interrupted):
        create_training_job(sm, spec)
    out: dict[str, Any] = {}
    deadline = time.monotonic() + JOB_TIMEOUT_S

    def sleep(seconds: float) -> None:
        if time.monotonic() > deadline:
            raise AssertionError(emulator.job_log("emu-straight")[-4000:])
        time.sleep(seconds)

    # `streamguard aws logs --follow`: prints from the first line on, returns once it has ended
    followed = io.StringIO()
    print_job_logs(sm, logs, "emu-straight", follow=True, poll_s=0.2, out=followed, sleep=sleep)
    for spec in (straight, interrupted):
        desc = _wait(emulator, sm, spec.job_name)
        dest = download_model(
            s3, desc["ModelArtifacts"]["S3ModelArtifacts"], tmp_path_factory.mktemp(spec.job_name)
        )
        out[spec.job_name] = {"spec": spec, "desc": desc, "dir": dest}
    out["followed"] = followed.getvalue()
    return out


def test_a_job_runs_to_completed_and_its_model_loads(finished_jobs, clients, emulator):
    sm, _ = clients
    job = finished_jobs["emu-straight"]
    desc = job["desc"]
    assert desc["TrainingJobStatus"] == "Completed"
    assert _statuses(desc) == ["Starting", "Downloading", "Training", "Uploading", "Completed"]
    assert desc["ModelArtifacts"]["S3ModelArtifacts"] == (
        f"s3://{BUCKET}/models/emu-straight/output/model.tar.gz"
    )
    model_dir = job["dir"]
    status = json.loads((model_dir / "run_status.json").read_text())
    assert status["status"] == "completed" and status["resumed"] is False
    assert status["job_name"] == "emu-straight" and status["backend"] == "sagemaker"
    assert {"valid", "test"} <= set(json.loads((model_dir / "metrics.json").read_text()))
    detector = load_detector(model_dir / "model")
    probs = detector.predict_proba(["int f(char *s) { char b[4]; strcpy(b, s); return 0; }"])
    assert 0.0 <= float(probs[0]) <= 1.0

    cost = job_cost(desc)
    assert cost["training_time_s"] >= 1 and cost["billable_time_s"] < cost["training_time_s"]
    assert 50 <= cost["spot_savings_pct"] <= 70 and cost["cost_usd"] > 0

    listed = sm.list_training_jobs(NameContains="emu-straight")["TrainingJobSummaries"]
    assert [(j["TrainingJobName"], j["TrainingJobStatus"]) for j in listed] == [
        ("emu-straight", "Completed")
    ]
    # a retried submit finds the existing job instead of failing
    assert create_training_job(sm, job["spec"]) == desc["TrainingJobArn"]
    stop_training_job(sm, "emu-straight")  # a finished job is left alone


def test_an_interrupted_job_resumes_from_s3_and_matches(finished_jobs, clients, emulator):
    _, s3 = clients
    job = finished_jobs["emu-interrupted"]
    desc = job["desc"]
    statuses = _statuses(desc)
    assert desc["TrainingJobStatus"] == "Completed"
    at = statuses.index("Interrupted")
    assert statuses[at + 1 : at + 4] == ["Starting", "Downloading", "Training"]
    assert statuses[-1] == "Completed"
    assert emulator.jobs["emu-interrupted"].exit_codes == [143, 0], emulator.job_log(
        "emu-interrupted"
    )[-4000:]
    bucket, prefix = parse_s3_uri(job["spec"].checkpoint_s3_uri)
    keys = list_keys(s3, bucket, prefix)
    assert f"{prefix}run/checkpoints/latest/state.pt" in keys
    status = json.loads((job["dir"] / "run_status.json").read_text())
    assert status["resumed"] is True and status["status"] == "completed"
    # the resumed run ends exactly where the uninterrupted one did
    straight = finished_jobs["emu-straight"]["dir"]
    for name in ("metrics.json", "predictions.jsonl"):
        assert (job["dir"] / name).read_text() == (straight / name).read_text(), name
    history = [
        json.loads((d / "training_metadata.json").read_text())["history"]
        for d in (job["dir"], straight)
    ]
    assert [h["train_loss"] for h in history[0]] == [h["train_loss"] for h in history[1]]


def test_the_container_output_is_in_cloudwatch_where_sagemaker_puts_it(
    finished_jobs, sagemaker_endpoints, emulator, capsys
):
    # followed while it ran: the container's first line to its last, each once
    followed = finished_jobs["followed"].splitlines()
    attempt = emulator.jobs["emu-straight"].attempt_dirs[0]
    assert f"training gnn seed 7 in {attempt / 'checkpoints' / 'run'}" in followed[0]
    assert followed[-1].endswith(f"run completed: {attempt / 'model'}")
    written = [line for line in emulator.job_log("emu-straight").splitlines()[1:] if line.strip()]
    assert followed == written  # all of it, in order, each line once

    # the interrupted job: one stream per attempt, printed in order under their names
    assert main(["aws", "logs", "emu-interrupted"]) == 0
    out = capsys.readouterr().out
    streams = emulator.jobs["emu-interrupted"].log_streams
    assert len(streams) == 2 and all(re.fullmatch(r"emu-interrupted/algo-1-\d+", s)
                                     for s in streams)  # fmt: skip
    first, second = out.split(f"==> {streams[1]} <==\n")
    assert first.startswith(f"==> {streams[0]} <==\n")
    assert "so the job restarts and resumes" in first and "resuming gnn seed 7" not in first
    assert "resuming gnn seed 7 from" in second and "run completed" in second


def test_a_failing_job_surfaces_its_failure_reason(clients, emulator, data_uri, capsys):
    sm, _ = clients
    spec = _spec(
        "emu-bad-hp", data_uri, {**spec_hyperparameters(tiny_gnn()), "learning_rate": "0.1"}
    )
    create_training_job(sm, spec)
    with pytest.raises(JobFailed) as info:
        _wait(emulator, sm, spec.job_name)
    reason = info.value.reason
    assert reason.startswith("AlgorithmError: ValueError: invalid hyperparameters")
    assert "learning_rate" in reason
    assert _statuses(info.value.description)[-1] == "Failed"
    # its container's output says why, and `aws logs --follow` ends with the job's failure
    assert main(["aws", "logs", spec.job_name, "--follow", "--poll-s", "0.05"]) == 1
    out = capsys.readouterr()
    assert "ValueError: invalid hyperparameters" in out.out
    assert f"training job {spec.job_name}: Failed (Failed): AlgorithmError: " in out.err


def test_a_missing_channel_fails_the_download(clients, emulator, moto_server):
    sm, _ = clients
    spec = _spec("emu-no-data", f"s3://{BUCKET}/nothing-here/")
    create_training_job(sm, spec)
    with pytest.raises(JobFailed, match="No S3 objects found under S3 URL"):
        _wait(emulator, sm, spec.job_name)
    assert emulator.jobs["emu-no-data"].exit_codes == []  # the container never started
    with pytest.raises(LogsError, match="ended before its container printed anything"):
        print_job_logs(sm, client("logs", moto_server), spec.job_name, out=io.StringIO())


def test_stop_sends_sigterm_and_the_job_ends_stopped(clients, emulator, data_uri):
    sm, _ = clients
    spec = _spec("emu-stop", data_uri, spec_hyperparameters(tiny_gnn(epochs=50)))
    create_training_job(sm, spec)
    seen: list[str] = []
    with pytest.raises(JobStopped) as info:  # cancel (as a cancelled flow run does) in Training
        _wait(
            emulator,
            sm,
            spec.job_name,
            on_transition=lambda t: seen.append(t["Status"]),
            should_cancel=lambda: "Training" in seen,
        )
    assert info.value.reason == "Stopped" and not info.value.timed_out
    assert _statuses(info.value.description)[-3:] == ["Training", "Stopping", "Stopped"]
    assert emulator.jobs["emu-stop"].exit_codes[0] != 0  # SIGTERM ended the container
    # (that SIGTERM saves 'latest' first: test_entrypoint and the interruption test show it)


def test_max_runtime_is_enforced(clients, emulator, data_uri):
    sm, _ = clients
    spec = _spec("emu-runtime", data_uri, use_spot=False, max_runtime_s=1, max_wait_s=None)
    create_training_job(sm, spec)
    with pytest.raises(JobStopped) as info:
        _wait(emulator, sm, spec.job_name)
    assert info.value.reason == "MaxRuntimeExceeded" and info.value.timed_out


def test_requests_are_validated_like_sagemaker(clients, emulator, data_uri):
    sm, _ = clients
    request = _spec("emu-invalid", data_uri).to_request()
    request["StoppingCondition"] = {"MaxRuntimeInSeconds": 3600, "MaxWaitTimeInSeconds": 60}
    with pytest.raises(ClientError, match="MaxWaitTimeInSeconds") as info:
        sm.create_training_job(**request)
    assert info.value.response["Error"]["Code"] == "ValidationException"
    request["StoppingCondition"] = {"MaxRuntimeInSeconds": 3600}
    with pytest.raises(ClientError, match="must be present"):
        sm.create_training_job(**request)
    request["EnableManagedSpotTraining"] = False
    request["StoppingCondition"] = {"MaxRuntimeInSeconds": 60, "MaxWaitTimeInSeconds": 60}
    with pytest.raises(ClientError, match="EnableManagedSpotTraining"):
        sm.create_training_job(**request)
    request["StoppingCondition"] = {"MaxRuntimeInSeconds": 60}
    request["HyperParameters"] = {"spec": "x" * 2501}
    with pytest.raises(ClientError, match="less than or equal to 2500"):
        sm.create_training_job(**request)
    request["HyperParameters"] = {"spec": "x" * 2500}
    request["RoleArn"] = "arn:aws:iam::not-an-account:role/x"
    with pytest.raises(ClientError, match="roleArn"):
        sm.create_training_job(**request)
    assert "emu-invalid" not in emulator.jobs

    with pytest.raises(ClientError, match="Requested resource not found") as info:
        sm.describe_training_job(TrainingJobName="emu-missing")
    assert info.value.response["Error"]["Code"] == "ValidationException"
    with pytest.raises(ClientError) as info:
        sm.stop_training_job(TrainingJobName="emu-missing")
    assert info.value.response["Error"]["Code"] == "ResourceNotFound"

    unknown = urllib.request.Request(
        emulator.url,
        data=b"{}",
        method="POST",
        headers={"X-Amz-Target": "SageMaker.CreateTransformJob"},
    )
    with pytest.raises(urllib.error.HTTPError) as http:
        urllib.request.urlopen(unknown, timeout=10)
    assert http.value.code == 400
    assert json.loads(http.value.read())["__type"] == "UnknownOperationException"


def test_the_emulator_runs_as_a_command(tmp_path, monkeypatch):
    import os
    import signal
    import subprocess
    import sys

    command = [
        sys.executable,
        "-m",
        "streamguard_core.aws.emulator",
        "--port",
        "0",
        "--with-moto",
        "--create-bucket",
        "rehearsal",
        "--work-root",
        str(tmp_path),
    ]
    proc = subprocess.Popen(
        command, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True, env=dict(os.environ)
    )
    exports: dict[str, str] = {}
    try:
        assert proc.stdout is not None
        for line in proc.stdout:
            if line.startswith("export "):
                key, _, value = line[len("export ") :].strip().partition("=")
                exports[key] = value
            if line.startswith("# serving"):
                break
        for key, value in exports.items():
            monkeypatch.setenv(key, value)
        session = boto3.session.Session()
        assert session.client("sagemaker").list_training_jobs()["TrainingJobSummaries"] == []
        session.client("s3").head_bucket(Bucket="rehearsal")
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=30)
    assert set(exports) == {
        "AWS_ENDPOINT_URL_SAGEMAKER",
        "AWS_ENDPOINT_URL_SAGEMAKER_RUNTIME",
        "AWS_ENDPOINT_URL",
    }
    assert proc.returncode == 0
