"""`streamguard aws logs JOB` against moto's CloudWatch Logs and SageMaker (the session's moto
server, shared with the other AWS tests; each test uses its own job names).

The streams and events are written here the way SageMaker writes them (group
/aws/sagemaker/TrainingJobs, streams ``<job>/algo-1-<epoch>``); tests/aws/test_emulator.py reads
the streams the emulator wrote for its real jobs.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import io
import time
from typing import Any

import pytest
from _aws_testkit import REGION, client

from streamguard_core.aws.logs import (
    LOG_GROUP,
    LogsError,
    _no_stream,
    parse_since,
    print_job_logs,
)
from streamguard_core.cli import main

# `streamguard aws logs` run by ``main`` goes to the same moto server
pytestmark = pytest.mark.usefixtures("endpoints")


@pytest.fixture(scope="module")
def aws(moto_server: str) -> tuple[Any, Any]:
    """Clients of the session's moto server, made once. Not an in-process ``mock_aws``: leaving
    one resets moto's global state, which the moto server of the other AWS tests shares."""
    sm, logs = client("sagemaker", moto_server), client("logs", moto_server)
    # the emulator's jobs may have made it already
    with contextlib.suppress(logs.exceptions.ResourceAlreadyExistsException):
        logs.create_log_group(logGroupName=LOG_GROUP)
    return sm, logs


def _job(sm: Any, name: str) -> None:
    """A training job (moto reports it Completed at once)."""
    sm.create_training_job(
        TrainingJobName=name,
        AlgorithmSpecification={
            "TrainingImage": "123456789012.dkr.ecr.us-east-1.amazonaws.com/"
            "streamguard-train:latest",
            "TrainingInputMode": "File",
        },
        RoleArn="arn:aws:iam::123456789012:role/streamguard-sagemaker",
        OutputDataConfig={"S3OutputPath": "s3://bucket/output/"},
        ResourceConfig={"InstanceType": "ml.m5.large", "InstanceCount": 1, "VolumeSizeInGB": 1},
        StoppingCondition={"MaxRuntimeInSeconds": 60},
    )


def _stream(logs: Any, name: str, lines: list[str], at_ms: int) -> None:
    logs.create_log_stream(logGroupName=LOG_GROUP, logStreamName=name)
    logs.put_log_events(
        logGroupName=LOG_GROUP,
        logStreamName=name,
        logEvents=[{"timestamp": at_ms + i, "message": line} for i, line in enumerate(lines)],
    )


def _now_ms() -> int:
    return int(time.time() * 1000)


def test_every_stream_of_the_job_is_printed_in_order_with_headers(aws):
    sm, logs = aws
    _job(sm, "sg-run-gnn-s1")
    now = _now_ms()
    _stream(logs, "sg-run-gnn-s1/algo-1-1000", ["training gnn seed 1", "exiting 143"], now - 5000)
    _stream(logs, "sg-run-gnn-s1/algo-1-2000", ["resuming gnn seed 1", "run completed"], now)
    _stream(logs, "sg-run-gnn-s10/algo-1-1500", ["another job's line"], now)  # same prefix
    out = io.StringIO()
    desc = print_job_logs(sm, logs, "sg-run-gnn-s1", out=out)
    assert desc["TrainingJobStatus"] == "Completed"
    assert out.getvalue().splitlines() == [
        "==> sg-run-gnn-s1/algo-1-1000 <==",
        "training gnn seed 1",
        "exiting 143",
        "==> sg-run-gnn-s1/algo-1-2000 <==",
        "resuming gnn seed 1",
        "run completed",
    ]

    # one stream: its lines alone; --since drops what is older
    _job(sm, "sg-run-tf-s1")
    _stream(logs, "sg-run-tf-s1/algo-1-1000", ["an hour ago"], now - 3_600_000)
    logs.put_log_events(
        logGroupName=LOG_GROUP,
        logStreamName="sg-run-tf-s1/algo-1-1000",
        logEvents=[{"timestamp": now, "message": "just now"}],
    )
    out = io.StringIO()
    print_job_logs(sm, logs, "sg-run-tf-s1", out=out)
    assert out.getvalue() == "an hour ago\njust now\n"
    out = io.StringIO()
    print_job_logs(sm, logs, "sg-run-tf-s1", since_ms=parse_since("10m"), out=out)
    assert out.getvalue() == "just now\n"


def test_follow_prints_until_the_job_has_ended_and_only_new_lines(aws):
    sm, logs = aws
    _job(sm, "sg-follow-s1")
    _stream(logs, "sg-follow-s1/algo-1-1000", ["line 1", "line 2"], _now_ms())
    sleeps: list[float] = []

    def sleep(seconds: float) -> None:  # the container writes on between two polls
        sleeps.append(seconds)
        if len(sleeps) == 1:
            logs.put_log_events(
                logGroupName=LOG_GROUP,
                logStreamName="sg-follow-s1/algo-1-1000",
                logEvents=[{"timestamp": _now_ms(), "message": "line 3"}],
            )

    out = io.StringIO()
    desc = print_job_logs(sm, logs, "sg-follow-s1", follow=True, poll_s=0.5, out=out, sleep=sleep)
    assert out.getvalue() == "line 1\nline 2\nline 3\n"  # nothing twice
    assert desc["TrainingJobStatus"] == "Completed" and sleeps == [0.5]


def test_a_job_without_streams_and_an_unknown_job_are_clear_errors(aws, capsys):
    sm, logs = aws
    _job(sm, "sg-silent-s1")
    with pytest.raises(LogsError, match="has no log stream in log group /aws/sagemaker/Training"):
        print_job_logs(sm, logs, "sg-silent-s1", out=io.StringIO())
    assert main(["aws", "logs", "sg-no-such-job", "--region", REGION]) == 1
    err = capsys.readouterr().err
    assert "no SageMaker training job 'sg-no-such-job' in us-east-1" in err
    assert "Traceback" not in err
    # the same job while it has not started its container: --follow waits for it
    starting = {"TrainingJobStatus": "InProgress", "SecondaryStatus": "Downloading"}
    assert "yet: it is InProgress (Downloading)" in _no_stream("j", starting)
    assert "add --follow to wait" in _no_stream("j", starting)
    failed = {
        "TrainingJobStatus": "Failed",
        "SecondaryStatus": "Failed",
        "FailureReason": "ClientError: No S3 objects found",
    }
    assert "(Failed, Failed: ClientError: No S3 objects found)" in _no_stream("j", failed)


def test_the_command_prints_the_stream(aws, capsys):
    sm, logs = aws
    _job(sm, "sg-cli-s1")
    _stream(logs, "sg-cli-s1/algo-1-1000", ["hello from the container"], _now_ms())
    assert (
        main(["aws", "logs", "sg-cli-s1", "--region", REGION, "--follow", "--poll-s", "0.01"]) == 0
    )
    out = capsys.readouterr()
    assert out.out == "hello from the container\n"
    assert "training job sg-cli-s1: Completed" in out.err
    assert main(["aws", "logs", "sg-cli-s1", "--since", "yesterday-ish"]) == 2
    assert "give a duration (90s, 10m, 2h, 1d, 1w) or an ISO 8601 time" in capsys.readouterr().err


def test_since_takes_durations_and_iso_times():
    now = dt.datetime(2026, 1, 31, 12, 0, tzinfo=dt.UTC)
    ms = int(now.timestamp() * 1000)
    assert parse_since("90s", now) == ms - 90_000
    assert parse_since("10m", now) == ms - 600_000
    assert parse_since("2h", now) == ms - 7_200_000
    assert parse_since("1d", now) == ms - 86_400_000
    assert parse_since("2026-01-31T11:00:00Z", now) == ms - 3_600_000
    assert parse_since("2026-01-31T11:00:00", now) == ms - 3_600_000  # no zone: UTC
    with pytest.raises(ValueError, match="--since 'soon'"):
        parse_since("soon", now)
