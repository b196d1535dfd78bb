"""Job specs, budget guard, costs and the polling loop (status edge cases via botocore Stubber)."""

from __future__ import annotations

import logging

import pytest
from _aws_testkit import IMAGE_URI, ROLE_ARN, client
from botocore.stub import Stubber
from pydantic import ValidationError

from streamguard_core.aws.jobs import (
    BudgetExceeded,
    JobFailed,
    JobStopped,
    SageMakerJobSpec,
    budget_check,
    checkpoint_s3_uri,
    job_cost,
    job_name_for,
    wait_for_job,
)


def _spec(**kw) -> SageMakerJobSpec:
    base = {
        "job_name": "sg-run1-gnn-s42",
        "image_uri": IMAGE_URI,
        "role_arn": ROLE_ARN,
        "input_s3_uri": "s3://b/data/abc/",
        "output_s3_path": "s3://b/models",
        "checkpoint_s3_uri": checkpoint_s3_uri("b", "sg", "run1", "gnn", 42),
        "hyperparameters": {"model": "gnn", "epochs": 2, "lr": None},
        "max_runtime_s": 3600,
        "max_wait_s": 7200,
        "tags": {"project": "streamguard"},
    }
    return SageMakerJobSpec(**{**base, **kw})


def test_spec_builds_a_create_training_job_request():
    request = _spec().to_request()
    assert request["StoppingCondition"] == {
        "MaxRuntimeInSeconds": 3600,
        "MaxWaitTimeInSeconds": 7200,
    }
    assert request["EnableManagedSpotTraining"] is True
    assert request["HyperParameters"] == {"model": "gnn", "epochs": "2", "lr": "null"}
    assert request["CheckpointConfig"] == {
        "S3Uri": "s3://b/sg/checkpoints/run1/gnn/seed_42/",
        "LocalPath": "/opt/ml/checkpoints",
    }
    assert request["InputDataConfig"][0]["ChannelName"] == "data"
    assert request["Tags"] == [{"Key": "project", "Value": "streamguard"}]
    on_demand = _spec(use_spot=False, max_wait_s=None).to_request()
    assert "MaxWaitTimeInSeconds" not in on_demand["StoppingCondition"]
    assert on_demand["EnableManagedSpotTraining"] is False


def test_spec_refuses_a_max_wait_shorter_than_the_runtime():
    with pytest.raises(ValidationError, match=r"max_wait_s \(1800\) must be >= max_runtime_s"):
        _spec(max_runtime_s=3600, max_wait_s=1800)
    with pytest.raises(ValidationError, match="spot training only"):
        _spec(use_spot=False, max_wait_s=7200)
    assert _spec(max_wait_s=None).max_wait_s == 3600  # spot default: the minimum legal wait
    with pytest.raises(ValidationError, match="invalid SageMaker job name"):
        _spec(job_name="bad_name")
    with pytest.raises(ValidationError, match="not an S3 URI"):
        _spec(input_s3_uri="/local/data")


def test_job_names_are_valid_and_deterministic():
    name = job_name_for("2024-05-01_run", "transformer", 42)
    assert name == "sg-2024-05-01-run-transformer-s42"
    long = job_name_for("x" * 100, "transformer", 42)
    assert len(long) <= 63 and long == job_name_for("x" * 100, "transformer", 42)
    assert long != job_name_for("x" * 100, "transformer", 43)
    _spec(job_name=long)


def test_budget_guard_refuses_with_a_clear_message():
    # 6 jobs x 2 h x $0.736/h = $8.83
    assert budget_check(7200, 0.736, 6, budget_usd=10.0) == pytest.approx(8.832)
    with pytest.raises(BudgetExceeded) as info:
        budget_check(7200, 0.736, 6, budget_usd=5.0)
    message = str(info.value)
    assert "$8.83" in message and "budget_usd $5.00" in message and "6 job(s)" in message
    assert budget_check(7200, 0.736, 6, budget_usd=None) == pytest.approx(8.832)
    with pytest.raises(BudgetExceeded):
        budget_check(3600, 1.0, 1, budget_usd=3.0, instance_count=4)


def test_job_cost_from_a_description():
    desc = {
        "ResourceConfig": {"InstanceType": "ml.g4dn.xlarge", "InstanceCount": 1},
        "TrainingTimeInSeconds": 3600,
        "BillableTimeInSeconds": 1080,
        "EnableManagedSpotTraining": True,
    }
    cost = job_cost(desc)
    assert cost["spot_savings_pct"] == 70.0
    assert cost["cost_usd"] == pytest.approx(0.3 * 0.736)
    assert (cost["instance_type"], cost["training_time_s"], cost["billable_time_s"]) == (
        "ml.g4dn.xlarge",
        3600,
        1080,
    )
    unknown = job_cost({**desc, "ResourceConfig": {"InstanceType": "ml.new.xlarge"}})
    assert unknown["cost_usd"] is None and unknown["spot_savings_pct"] == 70.0
    assert job_cost(desc, {"ml.g4dn.xlarge": 1.0})["cost_usd"] == pytest.approx(0.3)


def _describe(status, secondary, transitions, **extra):
    return {
        "TrainingJobName": "job",
        "TrainingJobArn": "arn:aws:sagemaker:us-east-1:1:training-job/job",
        "TrainingJobStatus": status,
        "SecondaryStatus": secondary,
        "AlgorithmSpecification": {"TrainingInputMode": "File"},
        "CreationTime": 0,
        "ModelArtifacts": {"S3ModelArtifacts": ""},
        "ResourceConfig": {"VolumeSizeInGB": 1},
        "StoppingCondition": {},
        "RoleArn": ROLE_ARN,
        "SecondaryStatusTransitions": [
            {"Status": s, "StartTime": 0, "StatusMessage": m} for s, m in transitions
        ],
        **extra,
    }


def _stubbed(responses):
    sm = client("sagemaker")
    stubber = Stubber(sm)
    for method, response, params in responses:
        stubber.add_response(method, response, params)
    stubber.activate()
    return sm, stubber


def test_wait_logs_every_transition_including_spot_restarts(caplog):
    start = [("Starting", "Launching"), ("Downloading", "Downloading input data")]
    training = [*start, ("Training", "Training in progress")]
    restarted = [*training, ("Interrupted", "spot"), ("Starting", "Restarting")]
    done = [*restarted, ("Training", "again"), ("Uploading", "model"), ("Completed", "done")]
    pages = [
        _describe("InProgress", "Downloading", start),
        _describe("InProgress", "Training", training),
        _describe("InProgress", "Training", training),
        _describe("InProgress", "Starting", restarted),
        _describe(
            "Completed", "Completed", done, TrainingTimeInSeconds=100, BillableTimeInSeconds=30
        ),
    ]
    sm, stubber = _stubbed(
        [("describe_training_job", p, {"TrainingJobName": "job"}) for p in pages]
    )
    seen, sleeps = [], []
    with caplog.at_level(logging.INFO, logger="streamguard.aws.jobs"):
        desc = wait_for_job(
            sm,
            "job",
            poll_s=1,
            max_poll_s=1.6,
            on_transition=lambda t: seen.append(t["Status"]),
            sleep=sleeps.append,
        )
    stubber.assert_no_pending_responses()
    assert desc["TrainingJobStatus"] == "Completed"
    assert seen == [s for s, _ in done]  # each transition once, in order
    assert sleeps == [1, 1, 1.5, 1]  # back-off while nothing changes, reset on news
    text = caplog.text
    assert "Interrupted" in text and "spot capacity reclaimed" in text
    assert "restarted after a spot interruption" in text


@pytest.mark.parametrize(
    ("secondary", "timed_out"),
    [("MaxWaitTimeExceeded", True), ("MaxRuntimeExceeded", True), ("Stopped", False)],
)
def test_wait_raises_job_stopped(secondary, timed_out):
    page = _describe("Stopped", secondary, [("Starting", ""), (secondary, "")])
    sm, _ = _stubbed([("describe_training_job", page, {"TrainingJobName": "job"})])
    with pytest.raises(JobStopped, match=secondary) as info:
        wait_for_job(sm, "job", sleep=lambda s: None)
    assert info.value.timed_out is timed_out
    assert info.value.description["TrainingJobStatus"] == "Stopped"


def test_wait_raises_job_failed_with_the_failure_reason():
    page = _describe(
        "Failed",
        "Failed",
        [("Starting", ""), ("Failed", "")],
        FailureReason="AlgorithmError: ValueError: bad",
    )
    sm, _ = _stubbed([("describe_training_job", page, {"TrainingJobName": "job"})])
    with pytest.raises(JobFailed, match="AlgorithmError: ValueError: bad") as info:
        wait_for_job(sm, "job", sleep=lambda s: None)
    assert info.value.reason == "AlgorithmError: ValueError: bad"


def test_cancel_stops_the_job_once():
    running = _describe("InProgress", "Training", [("Training", "")])
    stopping = _describe("Stopping", "Stopping", [("Training", ""), ("Stopping", "")])
    stopped = _describe("Stopped", "Stopped", [("Training", ""), ("Stopping", ""), ("Stopped", "")])
    name = {"TrainingJobName": "job"}
    sm, stubber = _stubbed(
        [
            ("describe_training_job", running, name),
            ("stop_training_job", {}, name),
            ("describe_training_job", stopping, name),
            ("describe_training_job", stopped, name),
        ]
    )
    with pytest.raises(JobStopped, match="stopped on request"):
        wait_for_job(sm, "job", should_cancel=lambda: True, sleep=lambda s: None)
    stubber.assert_no_pending_responses()
