"""A training job's container output from CloudWatch Logs: ``streamguard aws logs JOB``.

SageMaker writes what the training container prints (the entrypoint's log lines, tracebacks)
to the log group ``/aws/sagemaker/TrainingJobs``, one stream per instance and start named
``<job>/algo-1-<epoch seconds>``: a job restarted after a spot interruption has a second
stream. :func:`print_job_logs` prints every stream of a job in the order they were created
(with a ``==> stream <==`` header once there is more than one), optionally from ``--since`` on,
and with ``follow`` keeps polling until the job has ended. ``training.log`` itself comes back
into the run directory with the job's output (``output.tar.gz``); this is the way to read a job
while it runs, or one that failed before it wrote any output.

The emulator (:mod:`streamguard_core.aws.emulator`) writes its containers' output to the same
group and streams when it is given a CloudWatch Logs endpoint (``--with-moto`` does), so the
command works in the offline rehearsal too.
"""

from __future__ import annotations

import argparse
import datetime as dt
import re
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, TextIO

from streamguard_core.aws.config import error_code, error_message

LOG_GROUP = "/aws/sagemaker/TrainingJobs"
TERMINAL = ("Completed", "Failed", "Stopped")
_DURATION = re.compile(r"^(\d+(?:\.\d+)?)\s*([smhdw])$")
_UNIT_S = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 7 * 86400}


class LogsError(RuntimeError):
    """The job or its log streams cannot be read (the message says why and what to do)."""


def parse_since(value: str, now: dt.datetime | None = None) -> int:
    """``--since``: ``90s``, ``10m``, ``2h``, ``1d``, ``1w`` ago, or an ISO 8601 time (UTC when
    it names no zone); returns epoch milliseconds.

    Raises:
        ValueError: neither form.
    """
    now = now or dt.datetime.now(dt.UTC)
    text = value.strip()
    match = _DURATION.match(text.lower())
    if match:
        start = now - dt.timedelta(seconds=float(match.group(1)) * _UNIT_S[match.group(2)])
    else:
        try:
            start = dt.datetime.fromisoformat(text.replace("Z", "+00:00"))
        except ValueError:
            raise ValueError(
                f"--since {value!r}: give a duration (90s, 10m, 2h, 1d, 1w) or an ISO 8601 time "
                "(2026-01-31T12:00:00Z)"
            ) from None
        if start.tzinfo is None:
            start = start.replace(tzinfo=dt.UTC)
    return int(start.timestamp() * 1000)


def describe_job(sm: Any, job_name: str) -> dict[str, Any]:
    """DescribeTrainingJob, with an unknown name as a :class:`LogsError`."""
    from botocore.exceptions import ClientError

    try:
        return dict(sm.describe_training_job(TrainingJobName=job_name))
    except ClientError as exc:
        # SageMaker answers an unknown name with a ValidationException "Requested resource not
        # found"; a malformed one with another ValidationException
        if error_code(exc) in ("ValidationException", "ResourceNotFound"):
            region = getattr(getattr(sm, "meta", None), "region_name", None) or "this region"
            said = error_message(exc)
            raise LogsError(
                f"no SageMaker training job {job_name!r} in {region} ({said}); the job names "
                "of a pipeline run are in its sagemaker_jobs.json and each seed's "
                "run_status.json (job_name)"
            ) from exc
        raise


def job_streams(logs: Any, job_name: str) -> list[dict[str, Any]]:
    """The job's log streams (``<job>/...``), oldest first; [] when there are none (yet)."""
    from botocore.exceptions import ClientError

    streams: list[dict[str, Any]] = []
    try:
        pages = logs.get_paginator("describe_log_streams").paginate(
            logGroupName=LOG_GROUP, logStreamNamePrefix=f"{job_name}/"
        )
        for page in pages:
            streams.extend(page.get("logStreams", []))
    except ClientError as exc:
        if error_code(exc) == "ResourceNotFoundException":  # no job in this region has logged yet
            return []
        raise
    return sorted(streams, key=lambda s: (s.get("creationTime", 0), s["logStreamName"]))


@dataclass
class _Cursor:
    """Where printing stands in one stream (the forward token of its last page)."""

    token: str | None = None
    header_printed: bool = False


@dataclass
class JobLogReader:
    """Prints new events of a job's streams on each :meth:`drain` (the follow loop's state)."""

    logs: Any
    job_name: str
    start_ms: int | None = None
    out: TextIO = field(default_factory=lambda: sys.stdout)
    cursors: dict[str, _Cursor] = field(default_factory=dict)
    printed: int = 0

    def drain(self) -> int:
        """Print every event not printed yet, stream by stream; returns how many."""
        streams = [s["logStreamName"] for s in job_streams(self.logs, self.job_name)]
        before = self.printed
        for name in streams:
            cursor = self.cursors.setdefault(name, _Cursor())
            for message in self._new_events(name, cursor):
                if len(streams) > 1 and not cursor.header_printed:
                    self.out.write(f"==> {name} <==\n")
                    cursor.header_printed = True
                self.out.write(message if message.endswith("\n") else message + "\n")
                self.printed += 1
        self.out.flush()
        return self.printed - before

    def _new_events(self, stream: str, cursor: _Cursor) -> list[str]:
        messages: list[str] = []
        while True:
            kwargs: dict[str, Any] = {
                "logGroupName": LOG_GROUP,
                "logStreamName": stream,
                "startFromHead": True,
            }
            if self.start_ms is not None:  # sent with every page, as a paginator does
                kwargs["startTime"] = self.start_ms
            if cursor.token is not None:
                kwargs["nextToken"] = cursor.token
            page = self.logs.get_log_events(**kwargs)
            messages.extend(str(e.get("message", "")) for e in page.get("events", []))
            token = page.get("nextForwardToken")
            # the end of the stream: the same token comes back (or a page with no events)
            done = token is None or token == cursor.token or not page.get("events")
            cursor.token = token or cursor.token
            if done:
                return messages


def print_job_logs(
    sm: Any,
    logs: Any,
    job_name: str,
    follow: bool = False,
    since_ms: int | None = None,
    poll_s: float = 5.0,
    out: TextIO | None = None,
    sleep: Callable[[float], None] = time.sleep,
) -> dict[str, Any]:
    """Print the job's CloudWatch log streams; with ``follow``, until the job has ended.

    Returns:
        The job's last DescribeTrainingJob answer.

    Raises:
        LogsError: no such job, or (without ``follow``) no stream: the job has not started its
            container yet, or ended before it printed anything.
    """
    desc = describe_job(sm, job_name)
    reader = JobLogReader(logs, job_name, since_ms, out or sys.stdout)
    reader.drain()
    if not follow:
        if not reader.cursors:
            raise LogsError(_no_stream(job_name, desc))
        return desc
    final_drain_done = False
    while True:
        status = desc["TrainingJobStatus"]
        if status in TERMINAL:
            if final_drain_done:
                break
            # the container's last lines can reach CloudWatch a moment after the status flips
            sleep(poll_s)
            reader.drain()
            final_drain_done = True
            continue
        sleep(poll_s)
        reader.drain()
        desc = describe_job(sm, job_name)
    if not reader.cursors:
        raise LogsError(_no_stream(job_name, desc))
    return desc


def _no_stream(job_name: str, desc: dict[str, Any]) -> str:
    status, secondary = desc.get("TrainingJobStatus"), desc.get("SecondaryStatus") or ""
    where = f"log group {LOG_GROUP}"
    if status not in TERMINAL:
        return (
            f"training job {job_name} has no log stream in {where} yet: it is {status} "
            f"({secondary}), and its container's output appears once it is Training; add "
            "--follow to wait for it"
        )
    reason = f": {desc['FailureReason']}" if desc.get("FailureReason") else ""
    return (
        f"training job {job_name} ({status}, {secondary}{reason}) has no log stream in {where}: "
        "it ended before its container printed anything (a download or capacity failure), or "
        "the execution role may not write CloudWatch Logs (logs:CreateLogStream, "
        "logs:PutLogEvents on /aws/sagemaker/*; `streamguard aws setup` grants them)"
    )


# --------------------------------------------------------------------------- the command


def add_logs_parser(aws: argparse.ArgumentParser) -> None:
    """Add ``aws logs`` to the ``aws`` command."""
    from streamguard_core.cli import _Formatter, subcommands

    sub = subcommands(aws)
    cmd = sub.add_parser(
        "logs",
        help="print a training job's CloudWatch log stream(s); --follow until it ends",
        description=f"Print the container output of a SageMaker training job from CloudWatch "
        f"Logs ({LOG_GROUP}, streams JOB/...; one per start, so a job restarted after a spot "
        "interruption shows two). Exit status with --follow: 0 Completed, 1 Failed or Stopped.",
        formatter_class=_Formatter,
    )
    cmd.add_argument(
        "job", metavar="JOB", help="the training job's name (run_status.json: job_name)"
    )
    cmd.add_argument(
        "--follow",
        "-f",
        action="store_true",
        help="keep printing new lines until the job has ended",
    )
    cmd.add_argument(
        "--since",
        default=None,
        help="only events from then on: 10m, 2h, 1d ago, or an ISO 8601 time",
    )
    cmd.add_argument("--poll-s", type=float, default=5.0, help="seconds between polls (--follow)")
    cmd.add_argument("--region", default=None, help="AWS region (default chain otherwise)")
    cmd.add_argument("--profile", default=None, help="AWS profile (default chain otherwise)")
    cmd.set_defaults(func=cmd_logs)


def cmd_logs(args: argparse.Namespace) -> int:
    """``streamguard aws logs``: 0 printed (with --follow: the job Completed), 1 otherwise."""
    from botocore.exceptions import BotoCoreError, ClientError

    try:
        since = parse_since(args.since) if args.since else None
    except ValueError as exc:
        print(f"streamguard aws logs: error: {exc}", file=sys.stderr)
        return 2
    if args.poll_s <= 0:
        print("streamguard aws logs: error: --poll-s must be > 0", file=sys.stderr)
        return 2
    try:
        import boto3

        session = boto3.session.Session(region_name=args.region, profile_name=args.profile)
        desc = print_job_logs(
            session.client("sagemaker"),
            session.client("logs"),
            args.job,
            follow=args.follow,
            since_ms=since,
            poll_s=args.poll_s,
        )
    except LogsError as exc:
        print(f"streamguard aws logs: error: {exc}", file=sys.stderr)
        return 1
    except (ClientError, BotoCoreError) as exc:
        print(f"streamguard aws logs: error: {exc}", file=sys.stderr)
        return 1
    if not args.follow:
        return 0
    status = desc["TrainingJobStatus"]
    reason = f": {desc['FailureReason']}" if desc.get("FailureReason") else ""
    print(
        f"training job {args.job}: {status} ({desc.get('SecondaryStatus')}){reason}",
        file=sys.stderr,
    )
    return 0 if status == "Completed" else 1
