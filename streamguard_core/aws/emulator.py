"""An offline SageMaker for tests and local rehearsal: the training-job API over real HTTP.

:class:`SageMakerEmulator` serves the SageMaker JSON 1.1 protocol on 127.0.0.1 for
``CreateTrainingJob``, ``DescribeTrainingJob``, ``StopTrainingJob`` and ``ListTrainingJobs``;
boto3 is pointed at it with ``AWS_ENDPOINT_URL_SAGEMAKER`` while S3 stays on moto's server (or
any S3). Unlike moto, which reports every job Completed at once, it *runs* each job the way
SageMaker does, in a background thread::

    Starting -> Downloading  channels (and existing checkpoints from CheckpointConfig.S3Uri)
                             into a fresh /opt/ml-like directory per attempt
             -> Training     the real entrypoint as a subprocess (SM_BASE_DIR and SM_* set);
                             <base>/checkpoints is synced to S3 while it runs and at the end
             -> Uploading    <base>/model as <S3OutputPath>/<job>/output/model.tar.gz
             -> Completed    TrainingTimeInSeconds, BillableTimeInSeconds (spot: a 70% saving)

A non-zero exit with ``/opt/ml/output/failure`` ends Failed with that FailureReason;
``StopTrainingJob`` SIGTERMs the process (Stopping -> Stopped); MaxRuntimeInSeconds and
MaxWaitTimeInSeconds are enforced. A spot interruption can be injected: once the number of
synced checkpoints of an attempt reaches K (default 1: the first checkpoint), the process gets
SIGTERM, the job records ``Interrupted`` and restarts in a fresh directory that resumes from the
S3 checkpoints. The container is paused (SIGSTOP) while that K-th checkpoint is uploaded, so the
interruption lands right after it however fast the model trains. Set it for every job
(``interruptions=``, ``interrupt_after_checkpoints=``) or per job with the tags
``streamguard:emulate-interruptions`` and ``streamguard:emulate-interrupt-after-checkpoints``.

Given a CloudWatch Logs endpoint (``logs_endpoint_url``; ``--with-moto`` uses moto's), each
attempt's container output also goes where SageMaker puts it: log group
``/aws/sagemaker/TrainingJobs``, stream ``<job>/algo-1-<epoch seconds>``, so
``streamguard aws logs JOB`` reads it as it would on AWS.

Run it by hand (``--with-moto`` also starts an S3 and a CloudWatch Logs on 127.0.0.1)::

    python -m streamguard_core.aws.emulator --port 8765 --with-moto

Real-time endpoints are emulated the same way (:class:`EndpointEmulator`): ``CreateModel``,
``CreateEndpointConfig``, ``CreateEndpoint``, ``UpdateEndpoint``, ``DeleteEndpoint``,
``Describe*``, ``Delete*`` and ``ListEndpoints`` over the same JSON 1.1 protocol, and the
runtime's ``InvokeEndpoint`` (``POST /endpoints/<name>/invocations``, point
``AWS_ENDPOINT_URL_SAGEMAKER_RUNTIME`` here). CreateEndpoint *runs* the endpoint::

    Creating -> ModelDataUrl downloaded from S3 and extracted safely into a fresh
                /opt/ml/model-like directory; the serving "container" started as a process:
                ``python -m streamguard_core serve`` (what ``docker run IMAGE serve`` runs)
                with SM_MODEL_DIR set, on a free 127.0.0.1 port
             -> InService once its /ping answers 200
             -> Failed (FailureReason + the log's tail) if it exits or misses the deadline

UpdateEndpoint starts the new container next to the old one and switches when it pings (a
failed update leaves the old one InService with a FailureReason, as SageMaker's rollback
does); DeleteEndpoint stops the process; InvokeEndpoint forwards to its ``/invocations`` (a
container error comes back as SageMaker's ``ModelError`` with the original status). The image
is checked to be an ECR URI but never pulled: every model runs the StreamGuard server.

This is a development tool: no authentication, one instance per job or endpoint, File input
mode only.
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import os
import re
import signal
import subprocess
import sys
import tarfile
import tempfile
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

from streamguard_core.aws.config import (
    MAX_HYPERPARAMETER_CHARS,
    MAX_RUNTIME_LIMIT_S,
    error_code,
)
from streamguard_core.aws.deploy import ECR_IMAGE
from streamguard_core.aws.logs import LOG_GROUP
from streamguard_core.aws.s3 import DirSync, download_prefix, parse_s3_uri
from streamguard_core.aws.tarsafe import safe_extract

log = logging.getLogger("streamguard.aws.emulator")

ACCOUNT_ID = "123456789012"
JOB_NAME = re.compile(r"^[a-zA-Z0-9](-*[a-zA-Z0-9]){0,62}$")
ROLE_ARN = re.compile(r"^arn:aws[a-z\-]*:iam::\d{12}:role/?[a-zA-Z_0-9+=,.@\-_/]+$")
CHANNEL_NAME = re.compile(r"^[A-Za-z0-9.\-_]+$")
TAG_INTERRUPTIONS = "streamguard:emulate-interruptions"
TAG_INTERRUPT_AFTER = "streamguard:emulate-interrupt-after-checkpoints"
ENTRYPOINT = [sys.executable, "-m", "streamguard_core.aws.entrypoint", "train"]
SERVE_COMMAND = [sys.executable, "-m", "streamguard_core", "serve"]  # `docker run IMAGE serve`
INVOKE_MAX_BYTES = 6 * 1024 * 1024  # InvokeEndpoint's payload limit
INVOKE_TIMEOUT_S = 60.0  # SageMaker's limit on one real-time invocation
PACKAGE_ROOT = Path(__file__).resolve().parents[2]  # the directory holding streamguard_core/


class ApiError(Exception):
    """An error response: HTTP 400 with ``{"__type": code, "message": message}``."""

    def __init__(self, code: str, message: str, status: int = 400) -> None:
        super().__init__(message)
        self.code, self.message, self.status = code, message, status


class _JobError(Exception):
    """Ends a job Failed with this FailureReason."""


@dataclass
class EmulatedJob:
    """One training job's state, as DescribeTrainingJob reports it, plus the runner's notes."""

    name: str
    arn: str
    request: dict[str, Any]
    created: float
    status: str = "InProgress"
    secondary: str = "Starting"
    failure_reason: str | None = None
    transitions: list[dict[str, Any]] = field(default_factory=list)
    start_time: float | None = None
    end_time: float | None = None
    last_modified: float = 0.0
    training_time_s: float = 0.0
    model_artifacts: str | None = None
    interruptions_left: int = 0
    interrupt_after: int = 1
    log_streams: list[str] = field(default_factory=list)  # CloudWatch, one per attempt
    exit_codes: list[int] = field(default_factory=list)  # one per attempt
    attempt_dirs: list[Path] = field(default_factory=list)
    stop_event: threading.Event = field(default_factory=threading.Event)
    lock: threading.Lock = field(default_factory=threading.Lock)
    thread: threading.Thread | None = None
    process: subprocess.Popen | None = None

    @property
    def spot(self) -> bool:
        return bool(self.request.get("EnableManagedSpotTraining"))

    def transition(self, secondary: str, message: str, status: str | None = None) -> None:
        """Record a secondary-status transition (closing the previous one)."""
        now = time.time()
        with self.lock:
            if self.transitions and "EndTime" not in self.transitions[-1]:
                self.transitions[-1]["EndTime"] = now
            self.transitions.append(
                {"Status": secondary, "StartTime": now, "StatusMessage": message}
            )
            self.secondary = secondary
            if status is not None:
                self.status = status
            self.last_modified = now
        log.info("job %s: %s - %s", self.name, secondary, message)

    def describe(self, spot_savings: float) -> dict[str, Any]:
        """The DescribeTrainingJob response."""
        r = self.request
        with self.lock:
            out: dict[str, Any] = {
                "TrainingJobName": self.name,
                "TrainingJobArn": self.arn,
                "TrainingJobStatus": self.status,
                "SecondaryStatus": self.secondary,
                "HyperParameters": r.get("HyperParameters", {}),
                "AlgorithmSpecification": r["AlgorithmSpecification"],
                "RoleArn": r["RoleArn"],
                "InputDataConfig": r.get("InputDataConfig", []),
                "OutputDataConfig": r["OutputDataConfig"],
                "ResourceConfig": r["ResourceConfig"],
                "StoppingCondition": r["StoppingCondition"],
                "CreationTime": self.created,
                "LastModifiedTime": self.last_modified or self.created,
                "SecondaryStatusTransitions": [dict(t) for t in self.transitions],
                "EnableManagedSpotTraining": self.spot,
                "ModelArtifacts": {"S3ModelArtifacts": self.model_artifacts or ""},
            }
            if "CheckpointConfig" in r:
                out["CheckpointConfig"] = r["CheckpointConfig"]
            if r.get("Environment"):
                out["Environment"] = r["Environment"]
            if self.failure_reason:
                out["FailureReason"] = self.failure_reason
            if self.start_time is not None:
                out["TrainingStartTime"] = self.start_time
            if self.end_time is not None:
                out["TrainingEndTime"] = self.end_time
                training = max(1, math.ceil(self.training_time_s))
                billable = training
                if self.spot:
                    billable = max(1, math.ceil(training * (1.0 - spot_savings)))
                out["TrainingTimeInSeconds"] = training
                out["BillableTimeInSeconds"] = billable
            return out

    def summary(self) -> dict[str, Any]:
        """One ListTrainingJobs entry."""
        with self.lock:
            out = {
                "TrainingJobName": self.name,
                "TrainingJobArn": self.arn,
                "CreationTime": self.created,
                "TrainingJobStatus": self.status,
                "SecondaryStatus": self.secondary,
                "LastModifiedTime": self.last_modified or self.created,
            }
            if self.end_time is not None:
                out["TrainingEndTime"] = self.end_time
            return out


def _require(condition: bool, message: str) -> None:
    if not condition:
        raise ApiError("ValidationException", message)


def validate_create_request(body: dict[str, Any]) -> None:
    """Check a CreateTrainingJob request the way SageMaker does for the fields used here.

    Raises:
        ApiError: ValidationException naming the problem.
    """
    name = body.get("TrainingJobName") or ""
    _require(
        bool(JOB_NAME.match(name)),
        f"1 validation error detected: Value '{name}' at 'trainingJobName' failed to "
        "satisfy constraint: Member must satisfy regular expression pattern: "
        "^[a-zA-Z0-9](-*[a-zA-Z0-9]){0,62}",
    )
    algo = body.get("AlgorithmSpecification") or {}
    _require(
        bool(algo.get("TrainingImage")),
        "AlgorithmSpecification.TrainingImage is required (algorithms are not emulated)",
    )
    _require(
        algo.get("TrainingInputMode", "File") == "File",
        "the emulator supports TrainingInputMode 'File' only",
    )
    _require(
        bool(ROLE_ARN.match(body.get("RoleArn") or "")),
        f"1 validation error detected: Value '{body.get('RoleArn')}' at 'roleArn' failed "
        "to satisfy constraint: Member must satisfy regular expression pattern: "
        "^arn:aws[a-z\\-]*:iam::\\d{12}:role/?[a-zA-Z_0-9+=,.@\\-_/]+$",
    )
    output = (body.get("OutputDataConfig") or {}).get("S3OutputPath") or ""
    _require(output.startswith("s3://"), f"OutputDataConfig.S3OutputPath {output!r} is not s3://")
    resources = body.get("ResourceConfig") or {}
    _require(bool(resources.get("InstanceType")), "ResourceConfig.InstanceType is required")
    _require(int(resources.get("InstanceCount", 0)) >= 1, "ResourceConfig.InstanceCount >= 1")
    _require(
        int(resources.get("InstanceCount", 1)) == 1,
        "the emulator runs single-instance jobs only (InstanceCount 1)",
    )
    _require(int(resources.get("VolumeSizeInGB", 0)) >= 1, "ResourceConfig.VolumeSizeInGB >= 1")
    stopping = body.get("StoppingCondition") or {}
    runtime = stopping.get("MaxRuntimeInSeconds")
    _require(
        runtime is not None and 1 <= int(runtime) <= MAX_RUNTIME_LIMIT_S,
        f"StoppingCondition.MaxRuntimeInSeconds must be 1..{MAX_RUNTIME_LIMIT_S}",
    )
    wait = stopping.get("MaxWaitTimeInSeconds")
    if body.get("EnableManagedSpotTraining"):
        _require(
            wait is not None and int(wait) >= int(runtime or 0),
            "Invalid MaxWaitTimeInSeconds. It must be present and be greater than or equal "
            "to MaxRuntimeInSeconds",
        )
    else:
        _require(
            wait is None,
            "MaxWaitTimeInSeconds can only be set when EnableManagedSpotTraining is true",
        )
    channels = body.get("InputDataConfig") or []
    names = [c.get("ChannelName", "") for c in channels]
    _require(len(set(names)) == len(names), "InputDataConfig channel names must be unique")
    for channel in channels:
        _require(
            bool(CHANNEL_NAME.match(channel.get("ChannelName", ""))),
            f"invalid channel name {channel.get('ChannelName')!r}",
        )
        uri = ((channel.get("DataSource") or {}).get("S3DataSource") or {}).get("S3Uri", "")
        _require(
            uri.startswith("s3://"),
            f"channel {channel.get('ChannelName')}: S3Uri {uri!r} is not s3://",
        )
    checkpoint = body.get("CheckpointConfig")
    if checkpoint is not None:
        _require(
            str(checkpoint.get("S3Uri", "")).startswith("s3://"),
            "CheckpointConfig.S3Uri must be an s3:// URI",
        )
    hps = body.get("HyperParameters") or {}
    _require(len(hps) <= 100, "at most 100 hyperparameters")
    for key, value in hps.items():
        _require(
            isinstance(value, str) and len(value) <= MAX_HYPERPARAMETER_CHARS and len(key) <= 256,
            f"1 validation error detected: Value at 'hyperParameters' failed to satisfy "
            f"constraint: Map value must satisfy constraint: [Member must have length less "
            f"than or equal to {MAX_HYPERPARAMETER_CHARS}] (key {key!r})",
        )


def _page(items: list[dict[str, Any]], body: dict[str, Any], field: str) -> dict[str, Any]:
    """One page of a List* answer: ``MaxResults`` items from ``NextToken`` (an offset)."""
    start = int(body.get("NextToken") or 0)
    size = int(body.get("MaxResults") or 10)
    _require(1 <= size <= 100, "MaxResults must be 1..100")
    out: dict[str, Any] = {field: items[start : start + size]}
    if start + size < len(items):
        out["NextToken"] = str(start + size)
    return out


def _tag(request: dict[str, Any], key: str) -> str | None:
    for tag in request.get("Tags") or []:
        if tag.get("Key") == key:
            return str(tag.get("Value"))
    return None


class SageMakerEmulator:
    """SageMaker's training-job API on 127.0.0.1, running jobs with the real entrypoint.

    Args:
        work_root: where each job's attempt directories and logs go (default: a temp dir,
            removed by :meth:`stop`).
        port: 0 picks a free port (see :attr:`url`).
        s3_endpoint_url: S3 for channels, checkpoints and models (default: boto3's own
            ``AWS_ENDPOINT_URL_S3`` / ``AWS_ENDPOINT_URL`` handling).
        interruptions: spot interruptions injected into every spot job (tags override).
        interrupt_after_checkpoints: synced checkpoints of an attempt before each injected
            interruption (1: right after the first).
        spot_savings: share of the training time not billed for spot jobs.
        sync_interval_s: the longest gap between checkpoint syncs (and log shipments) while
            training.
        stop_grace_s: seconds between SIGTERM and SIGKILL.
        command: the training command (default: the StreamGuard entrypoint).
        num_gpus: SM_NUM_GPUS the container sees (0: it trains on the CPU).
        endpoint_startup_timeout_s: an endpoint's container must answer /ping within this.
        serve_command: the serving container's command (default: ``streamguard serve``).
        logs_endpoint_url: CloudWatch Logs endpoint that receives each attempt's container
            output (group ``/aws/sagemaker/TrainingJobs``); None: not sent (:meth:`job_log`
            still has it).

    Spot interruptions need a CheckpointConfig (they are counted in synced checkpoints).
    """

    def __init__(
        self,
        work_root: str | Path | None = None,
        host: str = "127.0.0.1",
        port: int = 0,
        s3_endpoint_url: str | None = None,
        region: str = "us-east-1",
        interruptions: int = 0,
        interrupt_after_checkpoints: int = 1,
        spot_savings: float = 0.7,
        sync_interval_s: float = 0.2,
        poll_interval_s: float = 0.05,
        stop_grace_s: float = 60.0,
        command: list[str] | None = None,
        num_gpus: int = 0,
        endpoint_startup_timeout_s: float = 300.0,
        serve_command: list[str] | None = None,
        logs_endpoint_url: str | None = None,
    ) -> None:
        import boto3

        self._own_root = work_root is None
        self.work_root = Path(work_root or tempfile.mkdtemp(prefix="sagemaker-emulator-"))
        self.host, self.port, self.region = host, port, region
        self.interruptions, self.interrupt_after = interruptions, interrupt_after_checkpoints
        self.spot_savings, self.sync_interval_s = spot_savings, sync_interval_s
        self.poll_interval_s, self.stop_grace_s = poll_interval_s, stop_grace_s
        self.command = list(command or ENTRYPOINT)
        self.num_gpus = num_gpus
        self.s3 = boto3.session.Session(region_name=region).client(
            "s3", endpoint_url=s3_endpoint_url
        )
        self.logs = (
            boto3.session.Session(region_name=region).client("logs", endpoint_url=logs_endpoint_url)
            if logs_endpoint_url
            else None
        )
        self.jobs: dict[str, EmulatedJob] = {}
        self._jobs_lock = threading.Lock()
        self._server: ThreadingHTTPServer | None = None
        self._serve_thread: threading.Thread | None = None
        self._closing = threading.Event()
        self.endpoints = EndpointEmulator(
            self.s3,
            self.work_root / "endpoints",
            region=region,
            startup_timeout_s=endpoint_startup_timeout_s,
            command=serve_command,
            poll_interval_s=max(poll_interval_s, 0.05),
        )

    # ------------------------------------------------------------------ server

    @property
    def url(self) -> str:
        """``http://127.0.0.1:PORT`` (valid after :meth:`start`)."""
        return f"http://{self.host}:{self.port}"

    def start(self) -> SageMakerEmulator:
        """Bind and serve in a background thread."""
        emulator = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def do_POST(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                raw = self.rfile.read(length) if length else b"{}"
                invocation = INVOCATION_PATH.match(self.path.split("?")[0])
                if invocation is not None:  # the sagemaker-runtime API (REST JSON)
                    code, headers, answer = emulator.endpoints.invoke(
                        invocation.group(1), raw if length else b"", dict(self.headers.items())
                    )
                    self.send_response(code)
                    for key, value in headers.items():
                        self.send_header(key, value)
                    self.send_header("Content-Length", str(len(answer)))
                    self.send_header("x-amzn-RequestId", str(uuid.uuid4()))
                    self.end_headers()
                    self.wfile.write(answer)
                    return
                target = self.headers.get("X-Amz-Target", "")
                status, payload = emulator.handle(target, raw)
                data = json.dumps(payload).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/x-amz-json-1.1")
                self.send_header("Content-Length", str(len(data)))
                self.send_header("x-amzn-RequestId", str(uuid.uuid4()))
                self.end_headers()
                self.wfile.write(data)

            def log_message(self, format: str, *args: Any) -> None:
                log.debug("%s " + format, self.address_string(), *args)

        self.work_root.mkdir(parents=True, exist_ok=True)
        self._server = ThreadingHTTPServer((self.host, self.port), Handler)
        self._server.daemon_threads = True
        self.port = int(self._server.server_address[1])
        self._serve_thread = threading.Thread(
            target=self._server.serve_forever, name="sagemaker-emulator", daemon=True
        )
        self._serve_thread.start()
        log.info("SageMaker emulator on %s (work root %s)", self.url, self.work_root)
        return self

    def stop(self) -> None:
        """Stop serving, kill running jobs, and remove a work root this emulator created."""
        import shutil

        self._closing.set()
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
        with self._jobs_lock:
            jobs = list(self.jobs.values())
        for job in jobs:
            job.stop_event.set()
            proc = job.process
            if proc is not None and proc.poll() is None:
                proc.kill()
        for job in jobs:
            if job.thread is not None:
                job.thread.join(timeout=30)
        self.endpoints.stop()
        if self._own_root:
            shutil.rmtree(self.work_root, ignore_errors=True)

    def __enter__(self) -> SageMakerEmulator:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def handle(self, target: str, raw: bytes) -> tuple[int, dict[str, Any]]:
        """Dispatch one JSON 1.1 request; returns (HTTP status, response body)."""
        operations: dict[str, Callable[[dict[str, Any]], dict[str, Any]]] = {
            "SageMaker.CreateTrainingJob": self.create_training_job,
            "SageMaker.DescribeTrainingJob": self.describe_training_job,
            "SageMaker.StopTrainingJob": self.stop_training_job,
            "SageMaker.ListTrainingJobs": self.list_training_jobs,
            **{f"SageMaker.{op}": fn for op, fn in self.endpoints.operations().items()},
        }
        try:
            operation = operations.get(target)
            if operation is None:
                raise ApiError(
                    "UnknownOperationException", f"{target or 'no X-Amz-Target'} is not emulated"
                )
            try:
                body = json.loads(raw or b"{}")
            except ValueError as exc:
                raise ApiError(
                    "SerializationException", f"request body is not JSON: {exc}"
                ) from exc
            return 200, operation(body)
        except ApiError as exc:
            return exc.status, {"__type": exc.code, "message": exc.message}
        except Exception as exc:  # a bug here must show as a server error, not a hang
            log.exception("emulator error on %s", target)
            return 500, {"__type": "InternalFailure", "message": str(exc)}

    # ------------------------------------------------------------------ API

    def create_training_job(self, body: dict[str, Any]) -> dict[str, Any]:
        validate_create_request(body)
        name = body["TrainingJobName"]
        arn = f"arn:aws:sagemaker:{self.region}:{ACCOUNT_ID}:training-job/{name.lower()}"
        with self._jobs_lock:
            if name in self.jobs:
                raise ApiError(
                    "ResourceInUse",
                    f"Training job names must be unique within an AWS account and "
                    f"region, and a training job with this name already exists "
                    f"({self.jobs[name].arn})",
                )
            job = EmulatedJob(name=name, arn=arn, request=body, created=time.time())
            job.interruptions_left = int(_tag(body, TAG_INTERRUPTIONS) or self.interruptions)
            job.interrupt_after = int(_tag(body, TAG_INTERRUPT_AFTER) or self.interrupt_after)
            if not job.spot:
                job.interruptions_left = 0  # on-demand capacity is not reclaimed
            self.jobs[name] = job
        job.transition("Starting", "Launching requested ML instances")
        job.thread = threading.Thread(
            target=self._run, args=(job,), name=f"job-{name}", daemon=True
        )
        job.thread.start()
        return {"TrainingJobArn": arn}

    def _job(self, body: dict[str, Any], missing_code: str) -> EmulatedJob:
        name = body.get("TrainingJobName", "")
        with self._jobs_lock:
            job = self.jobs.get(name)
        if job is None:
            raise ApiError(missing_code, "Requested resource not found.")
        return job

    def describe_training_job(self, body: dict[str, Any]) -> dict[str, Any]:
        # like SageMaker: an unknown name is a ValidationException, not ResourceNotFound
        return self._job(body, "ValidationException").describe(self.spot_savings)

    def stop_training_job(self, body: dict[str, Any]) -> dict[str, Any]:
        job = self._job(body, "ResourceNotFound")
        with job.lock:
            status = job.status
        if status in ("Completed", "Failed", "Stopped"):
            raise ApiError(
                "ValidationException",
                f"The request was rejected because the training job is in status {status}.",
            )
        if status != "Stopping":
            job.transition("Stopping", "Stopping the training job", status="Stopping")
            job.stop_event.set()
        return {}

    def list_training_jobs(self, body: dict[str, Any]) -> dict[str, Any]:
        with self._jobs_lock:
            jobs = list(self.jobs.values())
        summaries = [j.summary() for j in jobs]
        if body.get("NameContains"):
            summaries = [s for s in summaries if body["NameContains"] in s["TrainingJobName"]]
        if body.get("StatusEquals"):
            summaries = [s for s in summaries if s["TrainingJobStatus"] == body["StatusEquals"]]
        if body.get("CreationTimeAfter") is not None:
            summaries = [s for s in summaries if s["CreationTime"] > body["CreationTimeAfter"]]
        if body.get("CreationTimeBefore") is not None:
            summaries = [s for s in summaries if s["CreationTime"] < body["CreationTimeBefore"]]
        sort_key = {"Name": "TrainingJobName", "Status": "TrainingJobStatus"}.get(
            body.get("SortBy", "CreationTime"), "CreationTime"
        )
        summaries.sort(key=lambda s: s[sort_key], reverse=body.get("SortOrder") == "Descending")
        return _page(summaries, body, "TrainingJobSummaries")

    def job_log(self, name: str) -> str:
        """The container output of every attempt of a job (CloudWatch's stand-in)."""
        job = self.jobs[name]
        parts = []
        for i, attempt in enumerate(job.attempt_dirs, 1):
            logfile = attempt.with_suffix(".log")
            text = logfile.read_text(errors="replace") if logfile.exists() else ""
            parts.append(f"----- attempt {i} ({attempt}) -----\n{text}")
        return "\n".join(parts)

    # ------------------------------------------------------------------ the job runner

    def _run(self, job: EmulatedJob) -> None:
        try:
            self._run_attempts(job)
        except _JobError as exc:
            self._fail(job, str(exc))
        except Exception as exc:
            log.exception("job %s: emulator error", job.name)
            self._fail(job, f"InternalServerError: {type(exc).__name__}: {exc}")

    def _fail(self, job: EmulatedJob, reason: str) -> None:
        with job.lock:
            job.failure_reason = reason[:1024]
            job.end_time = time.time()
        job.transition("Failed", "Training job failed", status="Failed")

    def _stopped(self, job: EmulatedJob, secondary: str, base: Path | None) -> None:
        if base is not None and any((base / "model").glob("*")):
            self._upload_model(job, base)
        with job.lock:
            job.end_time = time.time()
        messages = {
            "MaxRuntimeExceeded": "Training job reached the maximum runtime and was stopped",
            "MaxWaitTimeExceeded": "Training job reached the maximum wait time and was stopped",
        }
        job.transition(secondary, messages.get(secondary, "Training job stopped"), status="Stopped")

    def _limit_reached(self, job: EmulatedJob, attempt_started: float | None) -> str | None:
        stopping = job.request["StoppingCondition"]
        trained = job.training_time_s + (
            time.monotonic() - attempt_started if attempt_started is not None else 0.0
        )
        if trained > float(stopping["MaxRuntimeInSeconds"]):
            return "MaxRuntimeExceeded"
        wait = stopping.get("MaxWaitTimeInSeconds")
        if wait is not None and time.time() - job.created > float(wait):
            return "MaxWaitTimeExceeded"
        return None

    def _run_attempts(self, job: EmulatedJob) -> None:
        attempt = 0
        while True:
            attempt += 1
            if attempt > 1:
                job.transition("Starting", "Restarting the training job after a spot interruption")
            if job.stop_event.is_set():
                return self._stopped(job, "Stopped", None)
            base = self.work_root / job.name / f"attempt-{attempt}"
            job.attempt_dirs.append(base)
            job.transition("Downloading", "Downloading input data")
            started = time.monotonic()
            with job.lock:
                job.start_time = job.start_time or time.time()
            sync = self._prepare(job, base)
            if job.stop_event.is_set():
                job.training_time_s += time.monotonic() - started
                return self._stopped(job, "Stopped", None)
            job.transition("Training", "Training image download completed. Training in progress.")
            outcome, code = self._train(job, base, sync, started)
            job.exit_codes.append(code)
            if outcome == "interrupted":
                job.training_time_s += time.monotonic() - started
                job.transition(
                    "Interrupted",
                    "The training job was interrupted: spot capacity was reclaimed (emulated)",
                )
                continue
            if outcome in ("Stopped", "MaxRuntimeExceeded", "MaxWaitTimeExceeded"):
                job.training_time_s += time.monotonic() - started
                return self._stopped(job, outcome, base)
            if outcome == "failed":
                job.training_time_s += time.monotonic() - started
                failure = base / "output" / "failure"
                detail = (
                    failure.read_text(errors="replace").strip()
                    if failure.exists()
                    else f"the training process exited with code {code} and wrote no "
                    "/opt/ml/output/failure; see the job log"
                )
                with job.lock:
                    job.end_time = time.time()
                raise _JobError(f"AlgorithmError: {detail}")
            job.transition("Uploading", "Uploading generated training model")
            self._upload_model(job, base)
            job.training_time_s += time.monotonic() - started
            with job.lock:
                job.end_time = time.time()
            job.transition("Completed", "Training job completed", status="Completed")
            return None

    def _prepare(self, job: EmulatedJob, base: Path) -> DirSync | None:
        """The /opt/ml layout: config files, channels and checkpoints from S3."""
        request = job.request
        for sub in ("input/config", "input/data", "model", "output/data", "checkpoints"):
            (base / sub).mkdir(parents=True, exist_ok=True)
        config = base / "input" / "config"
        (config / "hyperparameters.json").write_text(
            json.dumps(request.get("HyperParameters") or {})
        )
        (config / "resourceconfig.json").write_text(
            json.dumps({"current_host": "algo-1", "hosts": ["algo-1"]})
        )
        channels = request.get("InputDataConfig") or []
        (config / "inputdataconfig.json").write_text(
            json.dumps(
                {
                    c["ChannelName"]: {
                        "TrainingInputMode": "File",
                        "S3DistributionType": "FullyReplicated",
                    }
                    for c in channels
                }
            )
        )
        for channel in channels:
            uri = channel["DataSource"]["S3DataSource"]["S3Uri"]
            files = download_prefix(self.s3, uri, base / "input" / "data" / channel["ChannelName"])
            if not files:
                bucket, _ = parse_s3_uri(uri)
                raise _JobError(
                    f'ClientError: No S3 objects found under S3 URL "{uri}" given in input data '
                    f"source. Please ensure that the bucket exists in the selected region "
                    f"({self.region}), that objects exist under that S3 prefix, and that the "
                    f'role "{request["RoleArn"]}" has "s3:ListBucket" permissions on bucket '
                    f'"{bucket}".'
                )
        checkpoint = request.get("CheckpointConfig")
        if checkpoint is None:
            return None
        restored = download_prefix(self.s3, checkpoint["S3Uri"], base / "checkpoints")
        if restored:
            log.info("job %s: restored %d checkpoint files", job.name, len(restored))
        sync = DirSync(base / "checkpoints", checkpoint["S3Uri"])
        sync.mark_current()  # what came from S3 need not go back
        return sync

    def _environment(self, job: EmulatedJob, base: Path) -> dict[str, str]:
        # the container sees no AWS credentials or endpoints: SageMaker moves the data
        env = {k: v for k, v in os.environ.items() if not k.startswith("AWS_")}
        channels = [c["ChannelName"] for c in job.request.get("InputDataConfig") or []]
        env.update(
            {
                "SM_BASE_DIR": str(base),
                "SM_MODEL_DIR": str(base / "model"),
                "SM_OUTPUT_DATA_DIR": str(base / "output" / "data"),
                "SM_CHANNELS": json.dumps(channels),
                "SM_NUM_GPUS": str(self.num_gpus),
                "SM_CURRENT_HOST": "algo-1",
                "SM_HOSTS": json.dumps(["algo-1"]),
                "SM_HPS": json.dumps(job.request.get("HyperParameters") or {}),
                "TRAINING_JOB_NAME": job.name,
                "TRAINING_JOB_ARN": job.arn,
                "PYTHONUNBUFFERED": "1",
                "PYTHONPATH": os.pathsep.join(
                    p for p in (str(PACKAGE_ROOT), env.get("PYTHONPATH", "")) if p
                ),
            }
        )
        for name in channels:
            env[f"SM_CHANNEL_{name.upper()}"] = str(base / "input" / "data" / name)
        env.update(job.request.get("Environment") or {})
        return env

    def _train(
        self, job: EmulatedJob, base: Path, sync: DirSync | None, started: float
    ) -> tuple[str, int]:
        """Run the entrypoint until it exits; returns (outcome, exit code).

        Outcomes: completed, failed, interrupted, Stopped, MaxRuntimeExceeded,
        MaxWaitTimeExceeded.
        """
        logfile = base.with_suffix(".log")
        synced_checkpoints = 0
        reason: str | None = None  # why we sent SIGTERM
        term_sent_at: float | None = None
        last_sync = time.monotonic()
        with open(logfile, "wb") as out:
            proc = subprocess.Popen(
                self.command,
                cwd=base,
                env=self._environment(job, base),
                stdout=out,
                stderr=subprocess.STDOUT,
            )
            job.process = proc
            shipper = self._log_shipper(job, logfile)
            try:
                while proc.poll() is None:
                    if reason is None:
                        if job.stop_event.is_set():
                            reason = "Stopped"
                        else:
                            reason = self._limit_reached(job, started)
                        if reason is not None:
                            proc.send_signal(signal.SIGTERM)
                            term_sent_at = time.monotonic()
                    interrupt = reason is None and job.interruptions_left > 0
                    # the checkpoint an interruption is due at is looked for at every poll, not
                    # every sync: the reclaim then lands right after it, however fast it trains
                    due = (
                        sync is not None
                        and interrupt
                        and synced_checkpoints + 1 >= job.interrupt_after
                        and _new_checkpoint(sync)
                    )
                    if sync is not None and (
                        due or time.monotonic() - last_sync >= self.sync_interval_s
                    ):
                        synced_checkpoints += self._sync(job, proc, sync, pause=due)
                        last_sync = time.monotonic()
                        if interrupt and synced_checkpoints >= job.interrupt_after:
                            job.interruptions_left -= 1
                            reason = "interrupted"
                            proc.send_signal(signal.SIGTERM)  # pending until it runs again
                            term_sent_at = time.monotonic()
                            log.info("job %s: spot interruption after checkpoint %d (emulated)",
                                     job.name, synced_checkpoints)  # fmt: skip
                        if due:  # paused by _sync: let it run into the pending SIGTERM
                            proc.send_signal(signal.SIGCONT)
                        if shipper is not None:
                            shipper.ship()
                    if term_sent_at is not None and (
                        time.monotonic() - term_sent_at > self.stop_grace_s
                    ):
                        proc.kill()
                    time.sleep(self.poll_interval_s)
            finally:
                if proc.poll() is None:
                    proc.send_signal(signal.SIGCONT)  # never leave it paused
                    proc.kill()
                code = proc.wait()
                job.process = None
        if shipper is not None:
            shipper.ship(final=True)
        if sync is not None:
            sync.sync(self.s3)  # what SageMaker uploads after the container exits
        if reason is not None:
            return reason, code
        return ("completed" if code == 0 else "failed"), code

    def _sync(self, job: EmulatedJob, proc: subprocess.Popen, sync: DirSync, pause: bool) -> bool:
        """Upload the changed checkpoint files; returns whether a checkpoint's meta.json went.

        With ``pause`` (an interruption is due at the new checkpoint) the container is paused
        (SIGSTOP) before the upload and left paused: the caller sends the SIGTERM before it lets
        it run again (SIGCONT), so the interruption comes right after this checkpoint, not steps
        later.
        """
        if pause:
            proc.send_signal(signal.SIGSTOP)
        try:
            uploaded = sync.sync(self.s3)
        except Exception as exc:  # the next round retries
            log.warning("job %s: checkpoint sync failed: %s", job.name, exc)
            uploaded = []
        return any(Path(p).name == "meta.json" for p in uploaded)

    def _log_shipper(self, job: EmulatedJob, logfile: Path) -> _LogShipper | None:
        """A new CloudWatch stream for this attempt (None without a logs endpoint)."""
        if self.logs is None:
            return None
        stamp = int(time.time())
        while f"{job.name}/algo-1-{stamp}" in job.log_streams:
            stamp += 1  # two attempts in one second: keep the streams apart
        name = f"{job.name}/algo-1-{stamp}"
        job.log_streams.append(name)
        shipper = _LogShipper(self.logs, LOG_GROUP, name, logfile)
        shipper.open()
        return shipper

    def _upload_model(self, job: EmulatedJob, base: Path) -> None:
        """``<base>/model`` -> ``<S3OutputPath>/<job>/output/model.tar.gz`` (and output data)."""
        bucket, prefix = parse_s3_uri(job.request["OutputDataConfig"]["S3OutputPath"])
        key_base = "/".join(p for p in (prefix.strip("/"), job.name, "output") if p)
        for source, name in (
            (base / "model", "model.tar.gz"),
            (base / "output" / "data", "output.tar.gz"),
        ):
            if name == "output.tar.gz" and not any(source.glob("*")):
                continue
            archive = base.parent / f"{base.name}-{name}"
            with tarfile.open(archive, "w:gz") as tar:
                for entry in sorted(source.iterdir()) if source.is_dir() else []:
                    tar.add(entry, arcname=entry.name)
            self.s3.upload_file(str(archive), bucket, f"{key_base}/{name}")
            if name == "model.tar.gz":
                with job.lock:
                    job.model_artifacts = f"s3://{bucket}/{key_base}/{name}"


def _new_checkpoint(sync: DirSync) -> bool:
    """A checkpoint (its meta.json, renamed into place last) not synced yet."""
    return any(Path(rel).name == "meta.json" for rel, _ in sync.changed())


LOG_EVENT_MAX_BYTES = 256 * 1024 - 26  # PutLogEvents: an event's message plus 26 bytes
LOG_BATCH_MAX_BYTES = 1_048_576
LOG_BATCH_MAX_EVENTS = 10_000


@dataclass
class _LogShipper:
    """Sends the new complete lines of a container's output file to one CloudWatch stream.

    A failure to ship is logged once and ends shipping for the attempt: logs never fail a job.
    """

    logs: Any
    group: str
    stream: str
    path: Path
    offset: int = 0
    broken: bool = False

    def open(self) -> None:
        """Create the group (once per account and region) and this attempt's stream."""
        from botocore.exceptions import ClientError

        try:
            try:
                self.logs.create_log_group(logGroupName=self.group)
            except ClientError as exc:
                if error_code(exc) != "ResourceAlreadyExistsException":
                    raise
            self.logs.create_log_stream(logGroupName=self.group, logStreamName=self.stream)
        except Exception as exc:
            self._broke(exc)

    def ship(self, final: bool = False) -> int:
        """Send what was written since the last call (a partial last line waits unless
        ``final``); returns the number of events sent."""
        if self.broken or not self.path.exists():
            return 0
        with open(self.path, "rb") as fh:
            fh.seek(self.offset)
            data = fh.read()
        if not final:
            data = data[: data.rfind(b"\n") + 1]
        if not data:
            return 0
        self.offset += len(data)
        now = int(time.time() * 1000)
        messages = [
            line.rstrip("\r")[:LOG_EVENT_MAX_BYTES]
            for line in data.decode("utf-8", errors="replace").split("\n")
            if line.strip()
        ]
        sent = 0
        batch: list[dict[str, Any]] = []
        size = 0
        for message in [*messages, None]:
            length = 0 if message is None else len(message.encode("utf-8")) + 26
            if batch and (
                message is None
                or len(batch) >= LOG_BATCH_MAX_EVENTS
                or size + length > LOG_BATCH_MAX_BYTES
            ):
                try:
                    self.logs.put_log_events(logGroupName=self.group, logStreamName=self.stream,
                                             logEvents=batch)  # fmt: skip
                except Exception as exc:
                    self._broke(exc)
                    return sent
                sent += len(batch)
                batch, size = [], 0
            if message is not None:
                batch.append({"timestamp": now, "message": message})
                size += length
        return sent

    def _broke(self, exc: Exception) -> None:
        self.broken = True
        log.warning("CloudWatch stream %s: not shipping the container output (%s)", self.stream,
                    exc)  # fmt: skip


# --------------------------------------------------------------------------- endpoints

INVOCATION_PATH = re.compile(r"^/endpoints/([^/]+)/invocations$")
LOG_TAIL_CHARS = 600


class _EndpointError(Exception):
    """A deployment failed with this FailureReason."""


@dataclass
class EmulatedResource:
    """A model or an endpoint config: its request, as Describe* returns it."""

    name: str
    arn: str
    request: dict[str, Any]
    created: float


@dataclass
class EndpointContainer:
    """One running serving process: the endpoint's single instance."""

    process: subprocess.Popen
    port: int
    base: Path

    @property
    def log(self) -> Path:
        return self.base / "container.log"

    def stop(self, grace_s: float = 10.0) -> None:
        """SIGTERM, then SIGKILL after ``grace_s``."""
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(grace_s)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()


@dataclass
class EmulatedEndpoint:
    """One endpoint's state, as DescribeEndpoint reports it, plus its running container."""

    name: str
    arn: str
    config_name: str
    created: float
    status: str = "Creating"
    failure_reason: str | None = None
    last_modified: float = 0.0
    container: EndpointContainer | None = None
    variant: dict[str, Any] = field(default_factory=dict)
    image: str = ""
    deployments: int = 0
    deleted: threading.Event = field(default_factory=threading.Event)
    lock: threading.Lock = field(default_factory=threading.Lock)
    thread: threading.Thread | None = None

    def set(self, status: str, reason: str | None = None, **changes: Any) -> None:
        with self.lock:
            self.status, self.failure_reason = status, reason
            self.last_modified = time.time()
            for key, value in changes.items():
                setattr(self, key, value)
        log.info("endpoint %s: %s%s", self.name, status, f" - {reason}" if reason else "")

    def describe(self) -> dict[str, Any]:
        """The DescribeEndpoint response."""
        with self.lock:
            out: dict[str, Any] = {
                "EndpointName": self.name,
                "EndpointArn": self.arn,
                "EndpointConfigName": self.config_name,
                "EndpointStatus": self.status,
                "CreationTime": self.created,
                "LastModifiedTime": self.last_modified or self.created,
            }
            if self.variant:
                count = 1 if self.container is not None else 0
                out["ProductionVariants"] = [
                    {
                        "VariantName": self.variant["VariantName"],
                        "DeployedImages": [
                            {"SpecifiedImage": self.image, "ResolvedImage": self.image}
                        ],
                        "CurrentWeight": float(self.variant.get("InitialVariantWeight", 1.0)),
                        "DesiredWeight": float(self.variant.get("InitialVariantWeight", 1.0)),
                        "CurrentInstanceCount": count,
                        "DesiredInstanceCount": int(self.variant["InitialInstanceCount"]),
                    }
                ]
            if self.failure_reason:
                out["FailureReason"] = self.failure_reason
            return out

    def summary(self) -> dict[str, Any]:
        """One ListEndpoints entry."""
        with self.lock:
            return {
                "EndpointName": self.name,
                "EndpointArn": self.arn,
                "CreationTime": self.created,
                "LastModifiedTime": self.last_modified or self.created,
                "EndpointStatus": self.status,
            }


def _free_port(host: str = "127.0.0.1") -> int:
    import socket

    with socket.socket() as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


def _not_found(kind: str, arn: str) -> ApiError:
    return ApiError("ValidationException", f'Could not find {kind} "{arn}".')


class EndpointEmulator:
    """SageMaker's real-time endpoint API and InvokeEndpoint, each endpoint a real
    ``streamguard serve`` process on 127.0.0.1 (see the module docstring).

    Args:
        s3: the S3 client ModelDataUrl is read with.
        work_root: each deployment's ``model/`` and ``container.log`` go under it.
        startup_timeout_s: a container must answer /ping within this (else Failed).
        command: the serving command (``--host 127.0.0.1 --port N`` are appended).
    """

    def __init__(
        self,
        s3: Any,
        work_root: Path,
        region: str = "us-east-1",
        startup_timeout_s: float = 300.0,
        command: list[str] | None = None,
        poll_interval_s: float = 0.1,
    ) -> None:
        self.s3, self.work_root, self.region = s3, Path(work_root), region
        self.startup_timeout_s, self.poll_interval_s = startup_timeout_s, poll_interval_s
        self.command = list(command or SERVE_COMMAND)
        self.models: dict[str, EmulatedResource] = {}
        self.configs: dict[str, EmulatedResource] = {}
        self.endpoints: dict[str, EmulatedEndpoint] = {}
        self._lock = threading.Lock()

    def operations(self) -> dict[str, Callable[[dict[str, Any]], dict[str, Any]]]:
        """The JSON 1.1 operations, by name."""
        return {
            "CreateModel": self.create_model,
            "DescribeModel": self.describe_model,
            "DeleteModel": self.delete_model,
            "CreateEndpointConfig": self.create_endpoint_config,
            "DescribeEndpointConfig": self.describe_endpoint_config,
            "DeleteEndpointConfig": self.delete_endpoint_config,
            "CreateEndpoint": self.create_endpoint,
            "DescribeEndpoint": self.describe_endpoint,
            "UpdateEndpoint": self.update_endpoint,
            "DeleteEndpoint": self.delete_endpoint,
            "ListEndpoints": self.list_endpoints,
        }

    def _arn(self, kind: str, name: str) -> str:
        return f"arn:aws:sagemaker:{self.region}:{ACCOUNT_ID}:{kind}/{name.lower()}"

    def _name(self, body: dict[str, Any], key: str, member: str) -> str:
        name = str(body.get(key) or "")
        _require(
            bool(JOB_NAME.match(name)),
            f"1 validation error detected: Value '{name}' at '{member}' failed to satisfy "
            "constraint: Member must satisfy regular expression pattern: "
            "^[a-zA-Z0-9](-*[a-zA-Z0-9]){0,62}",
        )
        return name

    # ------------------------------------------------------------------ models and configs

    def create_model(self, body: dict[str, Any]) -> dict[str, Any]:
        name = self._name(body, "ModelName", "modelName")
        arn = self._arn("model", name)
        role = body.get("ExecutionRoleArn") or ""
        _require(
            bool(ROLE_ARN.match(role)),
            f"1 validation error detected: Value '{role}' at 'executionRoleArn' failed to "
            "satisfy constraint: Member must satisfy regular expression pattern: "
            "^arn:aws[a-z\\-]*:iam::\\d{12}:role/?[a-zA-Z_0-9+=,.@\\-_/]+$",
        )
        container = body.get("PrimaryContainer") or {}
        _require(not body.get("Containers"), "the emulator runs PrimaryContainer models only")
        image = str(container.get("Image") or "")
        _require(bool(image), "PrimaryContainer.Image is required")
        _require(
            bool(ECR_IMAGE.match(image)),
            f"Requested image {image} is not an ECR image URI "
            "(<account>.dkr.ecr.<region>.amazonaws.com/<repository>[:tag|@sha256:digest])",
        )
        data = str(container.get("ModelDataUrl") or "")
        _require(bool(data), "PrimaryContainer.ModelDataUrl is required (the emulator runs "
                             "StreamGuard models, which are model.tar.gz archives)")  # fmt: skip
        if not self._readable(data):
            raise ApiError(
                "ValidationException",
                f"Could not access model data at {data}. Please ensure that the role "
                f'"{role}" exists and that its trust relationship policy allows the action '
                '"sts:AssumeRole" for the service principal "sagemaker.amazonaws.com". Also '
                'ensure that the role has "s3:GetObject" permissions and that the object is '
                f"located in {self.region}.",
            )
        with self._lock:
            if name in self.models:
                raise ApiError(
                    "ValidationException", f'Cannot create already existing model "{arn}".'
                )
            self.models[name] = EmulatedResource(name, arn, body, time.time())
        return {"ModelArn": arn}

    def _readable(self, url: str) -> bool:
        from botocore.exceptions import ClientError

        try:
            bucket, key = parse_s3_uri(url)
            self.s3.head_object(Bucket=bucket, Key=key)
        except (ValueError, ClientError):
            return False
        return True

    def describe_model(self, body: dict[str, Any]) -> dict[str, Any]:
        model = self._get(self.models, body.get("ModelName"), "model")
        r = model.request
        out = {
            "ModelName": model.name,
            "ModelArn": model.arn,
            "PrimaryContainer": r["PrimaryContainer"],
            "ExecutionRoleArn": r["ExecutionRoleArn"],
            "CreationTime": model.created,
        }
        return out

    def delete_model(self, body: dict[str, Any]) -> dict[str, Any]:
        model = self._get(self.models, body.get("ModelName"), "model")
        with self._lock:
            self.models.pop(model.name, None)
        return {}

    def create_endpoint_config(self, body: dict[str, Any]) -> dict[str, Any]:
        name = self._name(body, "EndpointConfigName", "endpointConfigName")
        arn = self._arn("endpoint-config", name)
        variants = body.get("ProductionVariants") or []
        _require(len(variants) >= 1, "ProductionVariants must hold at least one variant")
        _require(len(variants) == 1, "the emulator runs endpoints of one production variant")
        for variant in variants:
            _require(bool(variant.get("VariantName")), "ProductionVariants.VariantName is required")
            _require(bool(variant.get("InstanceType")),
                     "ProductionVariants.InstanceType is required (serverless endpoints are not "
                     "emulated)")  # fmt: skip
            _require(int(variant.get("InitialInstanceCount") or 0) >= 1,
                     "ProductionVariants.InitialInstanceCount must be >= 1")  # fmt: skip
            model = str(variant.get("ModelName") or "")
            with self._lock:
                known = model in self.models
            if not known:
                raise _not_found("model", self._arn("model", model))
        with self._lock:
            if name in self.configs:
                raise ApiError(
                    "ValidationException",
                    f'Cannot create already existing endpoint configuration "{arn}".',
                )
            self.configs[name] = EmulatedResource(name, arn, body, time.time())
        return {"EndpointConfigArn": arn}

    def describe_endpoint_config(self, body: dict[str, Any]) -> dict[str, Any]:
        config = self._get(self.configs, body.get("EndpointConfigName"), "endpoint configuration")
        return {
            "EndpointConfigName": config.name,
            "EndpointConfigArn": config.arn,
            "ProductionVariants": config.request["ProductionVariants"],
            "CreationTime": config.created,
        }

    def delete_endpoint_config(self, body: dict[str, Any]) -> dict[str, Any]:
        config = self._get(self.configs, body.get("EndpointConfigName"), "endpoint configuration")
        with self._lock:
            self.configs.pop(config.name, None)
        return {}

    def _get(self, table: dict[str, Any], name: Any, kind: str) -> Any:
        with self._lock:
            found = table.get(str(name or ""))
        if found is None:
            slug = {"endpoint configuration": "endpoint-config"}.get(kind, kind)
            raise _not_found(kind, self._arn(slug, str(name or "")))
        return found

    # ------------------------------------------------------------------ endpoints

    def create_endpoint(self, body: dict[str, Any]) -> dict[str, Any]:
        name = self._name(body, "EndpointName", "endpointName")
        arn = self._arn("endpoint", name)
        config = self._get(self.configs, body.get("EndpointConfigName"), "endpoint configuration")
        with self._lock:
            if name in self.endpoints:
                raise ApiError(
                    "ValidationException", f'Cannot create already existing endpoint "{arn}".'
                )
            endpoint = EmulatedEndpoint(name, arn, config.name, time.time())
            self.endpoints[name] = endpoint
        log.info("endpoint %s: Creating (%s)", name, config.name)
        endpoint.thread = threading.Thread(
            target=self._deploy, args=(endpoint, config, False), name=f"endpoint-{name}",
            daemon=True,
        )  # fmt: skip
        endpoint.thread.start()
        return {"EndpointArn": arn}

    def describe_endpoint(self, body: dict[str, Any]) -> dict[str, Any]:
        endpoint: EmulatedEndpoint = self._get(self.endpoints, body.get("EndpointName"),
                                               "endpoint")  # fmt: skip
        return endpoint.describe()

    def update_endpoint(self, body: dict[str, Any]) -> dict[str, Any]:
        endpoint: EmulatedEndpoint = self._get(self.endpoints, body.get("EndpointName"),
                                               "endpoint")  # fmt: skip
        config = self._get(self.configs, body.get("EndpointConfigName"), "endpoint configuration")
        with endpoint.lock:
            status = endpoint.status
            if status == "InService":
                endpoint.status = "Updating"  # under the lock: one update at a time
        if status != "InService":
            raise ApiError(
                "ValidationException", f'Cannot update in-progress endpoint "{endpoint.arn}".'
            )
        endpoint.set("Updating")
        endpoint.thread = threading.Thread(
            target=self._deploy, args=(endpoint, config, True), name=f"endpoint-{endpoint.name}",
            daemon=True,
        )  # fmt: skip
        endpoint.thread.start()
        return {"EndpointArn": endpoint.arn}

    def delete_endpoint(self, body: dict[str, Any]) -> dict[str, Any]:
        endpoint: EmulatedEndpoint = self._get(self.endpoints, body.get("EndpointName"),
                                               "endpoint")  # fmt: skip
        endpoint.set("Deleting")
        self._shut_down(endpoint)
        with self._lock:
            self.endpoints.pop(endpoint.name, None)
        return {}

    def _shut_down(self, endpoint: EmulatedEndpoint) -> None:
        endpoint.deleted.set()  # a deployment in progress stops its new container itself
        if endpoint.thread is not None and endpoint.thread is not threading.current_thread():
            endpoint.thread.join(timeout=30)
        container = endpoint.container
        if container is not None:
            container.stop()

    def list_endpoints(self, body: dict[str, Any]) -> dict[str, Any]:
        with self._lock:
            endpoints = list(self.endpoints.values())
        summaries = [e.summary() for e in endpoints]
        if body.get("NameContains"):
            summaries = [s for s in summaries if body["NameContains"] in s["EndpointName"]]
        if body.get("StatusEquals"):
            summaries = [s for s in summaries if s["EndpointStatus"] == body["StatusEquals"]]
        sort_key = {"Name": "EndpointName", "Status": "EndpointStatus"}.get(
            body.get("SortBy", "CreationTime"), "CreationTime"
        )
        summaries.sort(key=lambda s: s[sort_key], reverse=body.get("SortOrder") != "Ascending")
        return _page(summaries, body, "Endpoints")

    def endpoint_log(self, name: str) -> str:
        """The current container's output (CloudWatch's stand-in)."""
        endpoint = self.endpoints[name]
        container = endpoint.container
        if container is None or not container.log.exists():
            return ""
        return container.log.read_text(errors="replace")

    def stop(self) -> None:
        """Stop every endpoint's container."""
        with self._lock:
            endpoints = list(self.endpoints.values())
        for endpoint in endpoints:
            self._shut_down(endpoint)

    # ------------------------------------------------------------------ the deployment runner

    def _deploy(self, endpoint: EmulatedEndpoint, config: EmulatedResource, update: bool) -> None:
        """Start the config's container; switch the endpoint to it once it pings."""
        try:
            container, variant, image = self._start(endpoint, config)
        except _EndpointError as exc:
            reason = str(exc)[:1024]
        except Exception as exc:  # a bug here must end the deployment, not hang it
            log.exception("endpoint %s: emulator error", endpoint.name)
            reason = f"InternalServerError: {type(exc).__name__}: {exc}"
        else:
            with endpoint.lock:  # traffic goes to the new container from here on
                old, endpoint.container = endpoint.container, container
            if old is not None:
                old.stop()
            endpoint.set("InService", None, config_name=config.name, variant=variant, image=image)
            return
        if endpoint.deleted.is_set():
            return
        if update:  # SageMaker rolls a failed update back: the old container keeps serving
            endpoint.set("InService", f"Update failed: {reason}")
        else:
            endpoint.set("Failed", reason)

    def _start(
        self, endpoint: EmulatedEndpoint, config: EmulatedResource
    ) -> tuple[EndpointContainer, dict[str, Any], str]:
        variant = config.request["ProductionVariants"][0]
        with self._lock:
            model = self.models.get(variant["ModelName"])
        if model is None:
            raise _EndpointError(f"Model {variant['ModelName']} of the endpoint config was deleted")
        container_def = model.request["PrimaryContainer"]
        endpoint.deployments += 1
        base = self.work_root / endpoint.name / f"deployment-{endpoint.deployments}"
        model_dir = base / "model"
        model_dir.mkdir(parents=True, exist_ok=True)
        url = container_def["ModelDataUrl"]
        archive = base / "model.tar.gz"
        try:
            bucket, key = parse_s3_uri(url)
            self.s3.download_file(bucket, key, str(archive))
            safe_extract(archive, model_dir)
        except Exception as exc:
            raise _EndpointError(
                f'Failed to extract model data archive from URL "{url}". Please ensure that '
                f"the object located at the URL is a valid tar.gz archive ({exc})"
            ) from exc
        finally:
            archive.unlink(missing_ok=True)
        port = _free_port()
        env = {k: v for k, v in os.environ.items() if not k.startswith("AWS_")}
        env.update(
            {
                "SM_MODEL_DIR": str(model_dir),
                "PYTHONUNBUFFERED": "1",
                "PYTHONPATH": os.pathsep.join(
                    p for p in (str(PACKAGE_ROOT), env.get("PYTHONPATH", "")) if p
                ),
            }
        )
        env.update(container_def.get("Environment") or {})
        command = [*self.command, "--host", "127.0.0.1", "--port", str(port)]
        with open(base / "container.log", "wb") as out:
            process = subprocess.Popen(command, cwd=base, env=env, stdout=out,
                                       stderr=subprocess.STDOUT)  # fmt: skip
        container = EndpointContainer(process, port, base)
        try:
            self._wait_ping(endpoint, container, variant["VariantName"])
        except BaseException:
            container.stop(grace_s=5)
            raise
        return container, variant, str(container_def["Image"])

    def _wait_ping(
        self, endpoint: EmulatedEndpoint, container: EndpointContainer, variant: str
    ) -> None:
        import http.client

        deadline = time.monotonic() + self.startup_timeout_s
        while True:
            if endpoint.deleted.is_set():
                raise _EndpointError("the endpoint was deleted while it was being created")
            code = container.process.poll()
            if code is not None:
                raise _EndpointError(
                    f"The primary container for production variant {variant} did not pass the "
                    f"ping health check: it exited with code {code}. Log tail: "
                    + self._tail(container)
                )
            try:
                conn = http.client.HTTPConnection("127.0.0.1", container.port, timeout=2)
                conn.request("GET", "/ping")
                status = conn.getresponse().status
                conn.close()
                if status == 200:
                    return
            except OSError:
                pass  # not listening yet
            if time.monotonic() > deadline:
                raise _EndpointError(
                    f"The primary container for production variant {variant} did not pass the "
                    f"ping health check within {self.startup_timeout_s:g} s. Log tail: "
                    + self._tail(container)
                )
            time.sleep(self.poll_interval_s)

    @staticmethod
    def _tail(container: EndpointContainer) -> str:
        text = container.log.read_text(errors="replace") if container.log.exists() else ""
        text = " | ".join(line for line in text.strip().splitlines()[-8:])
        return text[-LOG_TAIL_CHARS:] or "(no output)"

    # ------------------------------------------------------------------ the runtime API

    def invoke(
        self, name: str, body: bytes, headers: dict[str, str]
    ) -> tuple[int, dict[str, str], bytes]:
        """InvokeEndpoint: forward to the container's /invocations; (status, headers, body)."""
        import http.client

        def error(status: int, code: str, message: str, **extra: Any) -> tuple[
            int, dict[str, str], bytes
        ]:  # fmt: skip
            payload = {"message": message, **extra}
            return status, {"x-amzn-ErrorType": code, "Content-Type": "application/json"}, (
                json.dumps(payload).encode()
            )  # fmt: skip

        with self._lock:
            endpoint = self.endpoints.get(name)
        if endpoint is None:
            return error(
                400, "ValidationError", f"Endpoint {name} of account {ACCOUNT_ID} not found."
            )
        with endpoint.lock:
            container, status = endpoint.container, endpoint.status
            variant = endpoint.variant.get("VariantName", "AllTraffic")
        if container is None or status not in ("InService", "Updating"):
            message = f"Endpoint {name} of account {ACCOUNT_ID} is {status}, not InService."
            return error(400, "ValidationError", message)
        if len(body) > INVOKE_MAX_BYTES:
            return error(400, "ValidationError",
                         f"Request body of {len(body)} bytes exceeds the limit of "
                         f"{INVOKE_MAX_BYTES} bytes.")  # fmt: skip
        lower = {k.lower(): v for k, v in headers.items()}
        forward = {"Content-Type": lower.get("content-type", "application/octet-stream"),
                   "Accept": lower.get("accept", "*/*")}  # fmt: skip
        if "x-amzn-sagemaker-custom-attributes" in lower:
            forward["X-Amzn-SageMaker-Custom-Attributes"] = lower[
                "x-amzn-sagemaker-custom-attributes"
            ]
        log_stream = (f"arn:aws:logs:{self.region}:{ACCOUNT_ID}:log-group:"
                      f"/aws/sagemaker/Endpoints/{name}")  # fmt: skip
        try:
            conn = http.client.HTTPConnection("127.0.0.1", container.port, timeout=INVOKE_TIMEOUT_S)
            conn.request("POST", "/invocations", body=body, headers=forward)
            response = conn.getresponse()
            answer, code = response.read(), response.status
            content_type = response.getheader("Content-Type") or "application/octet-stream"
            conn.close()
        except TimeoutError:
            return error(424, "ModelError",
                         f"Your invocation timed out while waiting for a response from container "
                         f"primary (the container of variant {variant}).", OriginalStatusCode=0,
                         OriginalMessage="timed out", LogStreamArn=log_stream)  # fmt: skip
        except OSError as exc:
            return error(424, "ModelError",
                         f"Received no response from primary: {exc}", OriginalStatusCode=0,
                         OriginalMessage=str(exc), LogStreamArn=log_stream)  # fmt: skip
        if 200 <= code < 300:
            return 200, {"Content-Type": content_type,
                         "x-Amzn-Invoked-Production-Variant": variant}, answer  # fmt: skip
        text = answer.decode("utf-8", errors="replace")
        side = "client" if 400 <= code < 500 else "server"
        return error(
            424, "ModelError",
            f'Received {side} error ({code}) from primary with message "{text}". See '
            f"{log_stream} in account {ACCOUNT_ID} for more information.",
            OriginalStatusCode=code, OriginalMessage=text, LogStreamArn=log_stream,
            ErrorCode=f"{side.upper()}_ERROR_FROM_MODEL",
        )  # fmt: skip


def main(argv: list[str] | None = None) -> int:
    """``python -m streamguard_core.aws.emulator``: serve until interrupted."""
    parser = argparse.ArgumentParser(
        prog="python -m streamguard_core.aws.emulator",
        description="An offline SageMaker (training jobs, real-time endpoints, InvokeEndpoint) "
        "on 127.0.0.1 that runs the real StreamGuard entrypoint and server.",
    )
    parser.add_argument("--port", type=int, default=0, help="0 = a free port")
    parser.add_argument("--work-root", default=None, help="job directories (default: temp)")
    parser.add_argument("--s3-endpoint-url", default=None, help="S3 endpoint (default: boto3's)")
    parser.add_argument(
        "--with-moto",
        action="store_true",
        help="also start moto's server (S3, CloudWatch Logs) on a free 127.0.0.1 port",
    )
    parser.add_argument("--interruptions", type=int, default=0, help="spot interruptions per job")
    parser.add_argument(
        "--interrupt-after-checkpoints",
        type=int,
        default=1,
        help="synced checkpoints of an attempt before each interruption (1: the first)",
    )
    parser.add_argument(
        "--logs-endpoint-url",
        default=None,
        help="CloudWatch Logs endpoint for the containers' output (default: moto's with "
        "--with-moto, else none)",
    )
    parser.add_argument("--region", default=os.environ.get("AWS_DEFAULT_REGION", "us-east-1"))
    parser.add_argument(
        "--create-bucket",
        default=None,
        metavar="NAME",
        help="create this S3 bucket first (e.g. in the --with-moto S3)",
    )
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    moto_server = None
    s3_url = args.s3_endpoint_url
    if args.with_moto:
        import socket

        from moto.server import ThreadedMotoServer

        with socket.socket() as sock:
            sock.bind(("127.0.0.1", 0))
            moto_port = sock.getsockname()[1]
        moto_server = ThreadedMotoServer(ip_address="127.0.0.1", port=moto_port, verbose=False)
        moto_server.start()
        s3_url = f"http://127.0.0.1:{moto_port}"
        os.environ.setdefault("AWS_ACCESS_KEY_ID", "testing")
        os.environ.setdefault("AWS_SECRET_ACCESS_KEY", "testing")
    emulator = SageMakerEmulator(
        work_root=args.work_root,
        port=args.port,
        s3_endpoint_url=s3_url,
        region=args.region,
        interruptions=args.interruptions,
        interrupt_after_checkpoints=args.interrupt_after_checkpoints,
        logs_endpoint_url=args.logs_endpoint_url or (s3_url if args.with_moto else None),
    ).start()
    if args.create_bucket:
        emulator.s3.create_bucket(Bucket=args.create_bucket)
    print(f"export AWS_ENDPOINT_URL_SAGEMAKER={emulator.url}")
    print(f"export AWS_ENDPOINT_URL_SAGEMAKER_RUNTIME={emulator.url}")
    if s3_url:
        print(f"export AWS_ENDPOINT_URL={s3_url}")
    print("# serving; Ctrl-C stops", flush=True)

    def interrupt(signum: int, frame: Any) -> None:
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, interrupt)  # `kill` cleans up like Ctrl-C
    try:
        while True:
            time.sleep(3600)
    except KeyboardInterrupt:
        pass
    finally:
        emulator.stop()
        if moto_server is not None:
            moto_server.stop()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
