"""SageMaker training-job control over a caller's boto3 clients: create, wait, stop, download,
cost and budget.

Every function takes clients (``session.client("sagemaker")``, ``session.client("s3")``) rather
than credentials, so the orchestration layer decides where they come from (a Prefect
``AwsCredentials`` block, the default chain) and boto3 decides the endpoint
(``AWS_ENDPOINT_URL_SAGEMAKER`` points it at the emulator). No function retries: the caller's
task retries I/O (``create_training_job`` is safe to retry: a name that already exists is
returned as the same job).

Typical use::

    sm, s3 = session.client("sagemaker"), session.client("s3")
    budget_check(cfg.effective_max_wait_s, cfg.price_per_hour(), n_jobs=6, budget_usd=20)
    data_uri = upload_channel(s3, "runs/devign", cfg.bucket, f"{cfg.prefix}/data")
    create_training_job(sm, spec)
    description = wait_for_job(sm, spec.job_name, poll_s=30)
    download_model(s3, description["ModelArtifacts"]["S3ModelArtifacts"], run_dir)
    cost = job_cost(description, cfg.prices)
"""

from __future__ import annotations

import hashlib
import logging
import re
import tempfile
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from streamguard_core.aws.config import (
    INSTANCE_PRICES_USD_PER_HOUR,
    MAX_RUNTIME_LIMIT_S,
    error_code,
    redact,
)
from streamguard_core.aws.s3 import parse_s3_uri
from streamguard_core.aws.tarsafe import safe_extract

log = logging.getLogger("streamguard.aws.jobs")

DATA_CHANNEL = "data"
CHECKPOINT_LOCAL_PATH = "/opt/ml/checkpoints"
JOB_NAME_PATTERN = re.compile(r"^[a-zA-Z0-9](-*[a-zA-Z0-9]){0,62}$")
TERMINAL_STATUSES = ("Completed", "Failed", "Stopped")


class JobFailed(RuntimeError):
    """The training job ended Failed; ``reason`` is SageMaker's ``FailureReason``."""

    def __init__(self, job_name: str, reason: str, description: dict[str, Any] | None = None):
        super().__init__(f"SageMaker training job {job_name} failed: {reason}")
        self.job_name, self.reason, self.description = job_name, reason, description or {}


class JobStopped(RuntimeError):
    """The job ended Stopped: by a stop request, ``MaxRuntimeExceeded`` or
    ``MaxWaitTimeExceeded`` (``reason`` is the final secondary status)."""

    def __init__(self, job_name: str, reason: str, description: dict[str, Any] | None = None):
        detail = {
            "MaxWaitTimeExceeded": "spot capacity plus training exceeded max_wait_s",
            "MaxRuntimeExceeded": "training exceeded max_runtime_s",
        }.get(reason, "stopped on request")
        super().__init__(f"SageMaker training job {job_name} stopped ({reason}): {detail}")
        self.job_name, self.reason, self.description = job_name, reason, description or {}

    @property
    def timed_out(self) -> bool:
        """True when a time limit (not a stop request) ended the job."""
        return self.reason in ("MaxWaitTimeExceeded", "MaxRuntimeExceeded")


class BudgetExceeded(RuntimeError):
    """The worst-case cost of the planned jobs is above the budget."""


def job_name_for(run_id: str, model: str, seed: int, prefix: str = "sg") -> str:
    """A valid, deterministic job name (<= 63 characters) for one run, model and seed.

    Deterministic so that a retried submit finds the job it already created.
    """
    raw = f"{prefix}-{run_id}-{model}-s{seed}"
    name = re.sub(r"[^a-zA-Z0-9-]+", "-", raw).strip("-")
    name = re.sub(r"-{2,}", "-", name)
    if len(name) > 63:
        digest = hashlib.sha256(raw.encode()).hexdigest()[:8]
        name = f"{name[:54].rstrip('-')}-{digest}"
    return name


def checkpoint_s3_uri(bucket: str, prefix: str, run_id: str, model: str, seed: int) -> str:
    """Where one model and seed's checkpoints live: each run x model x seed resumes its own."""
    key = "/".join(p for p in (prefix.strip("/"), "checkpoints", run_id, model, f"seed_{seed}"))
    return f"s3://{bucket}/{key}/"


class SageMakerJobSpec(BaseModel):
    """Everything ``CreateTrainingJob`` needs for one StreamGuard training job."""

    model_config = ConfigDict(extra="forbid")

    job_name: str = Field(description="Unique job name (1-63 of [a-zA-Z0-9-])")
    image_uri: str = Field(description="ECR URI of the training image")
    role_arn: str = Field(description="IAM role SageMaker assumes")
    instance_type: str = Field("ml.g4dn.xlarge", description="Training instance type")
    instance_count: int = Field(1, ge=1, description="Instances")
    volume_size_gb: int = Field(30, ge=1, description="EBS volume per instance (GB)")
    max_runtime_s: int = Field(
        4 * 3600, ge=1, le=MAX_RUNTIME_LIMIT_S, description="Most training seconds"
    )
    max_wait_s: int | None = Field(
        None,
        ge=1,
        le=MAX_RUNTIME_LIMIT_S,
        description="Spot: most seconds including waiting for capacity (>= max_runtime_s); "
        "empty = max_runtime_s",
    )
    use_spot: bool = Field(True, description="Managed spot training")
    hyperparameters: dict[str, Any] = Field(
        default_factory=dict, description="Hyperparameters (values are sent as strings)"
    )
    input_s3_uri: str = Field(description="The processed data set (channel 'data')")
    output_s3_path: str = Field(description="S3 path for <job>/output/model.tar.gz")
    checkpoint_s3_uri: str | None = Field(
        None, description="S3 prefix /opt/ml/checkpoints syncs with (one per model and seed)"
    )
    tags: dict[str, str] = Field(default_factory=dict, description="Job tags")
    environment: dict[str, str] = Field(
        default_factory=dict, description="Container environment variables (no secrets)"
    )

    @field_validator("job_name")
    @classmethod
    def _valid_name(cls, value: str) -> str:
        if not JOB_NAME_PATTERN.match(value):
            raise ValueError(
                f"invalid SageMaker job name {value!r}: 1-63 characters of [a-zA-Z0-9-], "
                "starting with a letter or digit (job_name_for() builds one)"
            )
        return value

    @field_validator("input_s3_uri", "output_s3_path", "checkpoint_s3_uri")
    @classmethod
    def _s3(cls, value: str | None) -> str | None:
        if value is not None:
            parse_s3_uri(value)
        return value

    @model_validator(mode="after")
    def _spot_limits(self) -> SageMakerJobSpec:
        if not self.use_spot:
            if self.max_wait_s is not None:
                raise ValueError("max_wait_s is for spot training only (use_spot=False)")
            return self
        if self.max_wait_s is None:
            self.max_wait_s = self.max_runtime_s
        if self.max_wait_s < self.max_runtime_s:
            raise ValueError(
                f"max_wait_s ({self.max_wait_s}) must be >= max_runtime_s ({self.max_runtime_s}) "
                "for spot training: the wait includes the training time"
            )
        return self

    def to_request(self) -> dict[str, Any]:
        """The keyword arguments of ``sagemaker_client.create_training_job``."""
        stopping: dict[str, int] = {"MaxRuntimeInSeconds": self.max_runtime_s}
        if self.use_spot and self.max_wait_s is not None:
            stopping["MaxWaitTimeInSeconds"] = self.max_wait_s
        request: dict[str, Any] = {
            "TrainingJobName": self.job_name,
            "AlgorithmSpecification": {
                "TrainingImage": self.image_uri,
                "TrainingInputMode": "File",
            },
            "RoleArn": self.role_arn,
            "HyperParameters": {
                k: v if isinstance(v, str) else _hp_string(v)
                for k, v in self.hyperparameters.items()
            },
            "InputDataConfig": [
                {
                    "ChannelName": DATA_CHANNEL,
                    "DataSource": {
                        "S3DataSource": {
                            "S3DataType": "S3Prefix",
                            "S3Uri": self.input_s3_uri,
                            "S3DataDistributionType": "FullyReplicated",
                        }
                    },
                    "InputMode": "File",
                }
            ],
            "OutputDataConfig": {"S3OutputPath": self.output_s3_path},
            "ResourceConfig": {
                "InstanceType": self.instance_type,
                "InstanceCount": self.instance_count,
                "VolumeSizeInGB": self.volume_size_gb,
            },
            "StoppingCondition": stopping,
            "EnableManagedSpotTraining": self.use_spot,
            "Tags": [{"Key": k, "Value": v} for k, v in self.tags.items()],
        }
        if self.checkpoint_s3_uri:
            request["CheckpointConfig"] = {
                "S3Uri": self.checkpoint_s3_uri,
                "LocalPath": CHECKPOINT_LOCAL_PATH,
            }
        if self.environment:
            request["Environment"] = dict(self.environment)
        return request


def _hp_string(value: Any) -> str:
    import json

    return json.dumps(value)


def create_training_job(sm: Any, spec: SageMakerJobSpec) -> str:
    """Submit the job; returns its ARN.

    A job of the same name that already exists is taken to be this one (a retried submit after
    a lost response) and its ARN returned.
    """
    from botocore.exceptions import ClientError

    request = spec.to_request()
    log.debug("CreateTrainingJob %s", redact(request))
    try:
        arn = sm.create_training_job(**request)["TrainingJobArn"]
    except ClientError as exc:
        if error_code(exc) != "ResourceInUse":
            raise
        arn = sm.describe_training_job(TrainingJobName=spec.job_name)["TrainingJobArn"]
        log.info("training job %s already exists (%s); not submitted again", spec.job_name, arn)
        return str(arn)
    log.info(
        "submitted training job %s (%s, %s%s)",
        spec.job_name,
        spec.instance_type,
        "spot" if spec.use_spot else "on-demand",
        f", checkpoints {spec.checkpoint_s3_uri}" if spec.checkpoint_s3_uri else "",
    )
    return str(arn)


def _describe_transition(job_name: str, t: Mapping[str, Any]) -> str:
    message = t.get("StatusMessage") or ""
    return f"training job {job_name}: {t.get('Status')}" + (f" - {message}" if message else "")


def wait_for_job(
    sm: Any,
    job_name: str,
    poll_s: float = 30.0,
    max_poll_s: float = 60.0,
    on_transition: Callable[[dict[str, Any]], None] | None = None,
    should_cancel: Callable[[], bool] | None = None,
    sleep: Callable[[float], None] = time.sleep,
) -> dict[str, Any]:
    """Poll ``DescribeTrainingJob`` until the job ends; returns the final description.

    The interval starts at ``poll_s`` and grows 1.5x per poll without news up to ``max_poll_s``;
    any new secondary status resets it. Every secondary-status transition is logged and passed to
    ``on_transition`` once (a dict with Status, StatusMessage, StartTime); a spot interruption
    shows as ``Interrupted`` followed by a restart. When ``should_cancel()`` answers True the job
    is stopped (``StopTrainingJob``) and waited for.

    Raises:
        JobFailed: the job failed (its ``FailureReason``).
        JobStopped: the job was stopped, or hit MaxRuntimeExceeded / MaxWaitTimeExceeded.
    """
    reported = 0
    last_secondary: str | None = None
    interval = poll_s
    stop_sent = False
    while True:
        desc = sm.describe_training_job(TrainingJobName=job_name)
        transitions = list(desc.get("SecondaryStatusTransitions") or [])
        news = transitions[reported:]
        secondary = desc.get("SecondaryStatus")
        if (
            not news
            and secondary
            and secondary != last_secondary
            and (not transitions or transitions[-1].get("Status") != secondary)
        ):
            news = [{"Status": secondary, "StatusMessage": ""}]  # no transition list (yet)
        for t in news:
            previous = last_secondary
            last_secondary = t.get("Status")
            text = _describe_transition(job_name, t)
            if previous == "Interrupted":
                log.warning(
                    "%s (restarted after a spot interruption; resumes from its checkpoints)", text
                )
            elif last_secondary == "Interrupted":
                log.warning("%s (spot capacity reclaimed)", text)
            else:
                log.info("%s", text)
            if on_transition is not None:
                on_transition(dict(t))
        reported = max(reported, len(transitions))
        status = desc["TrainingJobStatus"]
        if status in TERMINAL_STATUSES:
            return _finish(job_name, desc)
        if should_cancel is not None and not stop_sent and should_cancel():
            log.warning("stopping training job %s (cancel requested)", job_name)
            stop_training_job(sm, job_name)
            stop_sent = True
        interval = poll_s if news else min(max_poll_s, interval * 1.5)
        sleep(interval)


def _finish(job_name: str, desc: dict[str, Any]) -> dict[str, Any]:
    status, secondary = desc["TrainingJobStatus"], desc.get("SecondaryStatus") or ""
    if status == "Failed":
        reason = desc.get("FailureReason") or "no FailureReason given"
        log.error("training job %s failed: %s", job_name, reason)
        raise JobFailed(job_name, reason, desc)
    if status == "Stopped":
        raise JobStopped(job_name, secondary or "Stopped", desc)
    log.info(
        "training job %s completed: %s s training, %s s billable",
        job_name,
        desc.get("TrainingTimeInSeconds"),
        desc.get("BillableTimeInSeconds"),
    )
    return desc


def stop_training_job(sm: Any, job_name: str) -> None:
    """Ask SageMaker to stop the job (SIGTERM in the container; 'latest' is saved first).

    A job that has already ended is left alone.
    """
    from botocore.exceptions import ClientError

    try:
        sm.stop_training_job(TrainingJobName=job_name)
    except ClientError as exc:
        if error_code(exc) != "ValidationException":  # e.g. "job is in status Completed"
            raise
        log.info("training job %s not stopped: %s", job_name, exc)


def download_model(s3: Any, model_artifacts_uri: str, dest: str | Path) -> Path:
    """Download ``model.tar.gz`` and extract it safely into ``dest``; returns ``dest``.

    Raises:
        UnsafeArchiveError: the archive holds absolute paths, ``..``, links or devices.
    """
    bucket, key = parse_s3_uri(model_artifacts_uri)
    dest = Path(dest)
    dest.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=dest, prefix=".download-") as tmp:
        archive = Path(tmp) / "model.tar.gz"
        s3.download_file(bucket, key, str(archive))
        safe_extract(archive, dest)
    return dest


def download_output(s3: Any, model_artifacts_uri: str, dest: str | Path) -> Path | None:
    """Download the job's ``output.tar.gz`` (beside ``model.tar.gz``: ``training.log``) and
    extract it safely into ``dest``; None when the job uploaded none.

    Raises:
        UnsafeArchiveError: the archive holds absolute paths, ``..``, links or devices.
    """
    from botocore.exceptions import ClientError

    bucket, key = parse_s3_uri(model_artifacts_uri)
    if not key.endswith("/model.tar.gz"):
        return None
    key = key[: -len("model.tar.gz")] + "output.tar.gz"
    dest = Path(dest)
    dest.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=dest, prefix=".download-") as tmp:
        archive = Path(tmp) / "output.tar.gz"
        try:
            s3.download_file(bucket, key, str(archive))
        except ClientError as exc:
            if error_code(exc) not in ("404", "NoSuchKey"):
                raise
            return None
        safe_extract(archive, dest)
    return dest


def job_cost(
    description: Mapping[str, Any], prices: Mapping[str, float] | None = None
) -> dict[str, Any]:
    """Training vs billable time, spot savings and cost of a finished job.

    ``spot_savings_pct`` is ``100 * (1 - billable / training)``; ``cost_usd`` is billable hours
    x on-demand price x instances, an upper bound for spot jobs (their hourly price is lower), or
    None when the instance type has no price.
    """
    resources = description.get("ResourceConfig") or {}
    instance_type = resources.get("InstanceType")
    count = int(resources.get("InstanceCount") or 1)
    training = description.get("TrainingTimeInSeconds")
    billable = description.get("BillableTimeInSeconds")
    if billable is None:
        billable = training
    table = {**INSTANCE_PRICES_USD_PER_HOUR, **(prices or {})}
    price = table.get(instance_type) if instance_type else None
    savings = None
    if training:
        savings = round(100.0 * (1.0 - float(billable or 0) / float(training)), 1)
    cost = None
    if price is not None and billable is not None:
        cost = round(float(billable) / 3600.0 * float(price) * count, 4)
    return {
        "instance_type": instance_type,
        "instance_count": count,
        "training_time_s": training,
        "billable_time_s": billable,
        "spot_savings_pct": savings,
        "price_usd_per_hour": price,
        "cost_usd": cost,
        "managed_spot": bool(description.get("EnableManagedSpotTraining")),
    }


def budget_check(
    max_wait_s: float,
    price_per_hour: float,
    n_jobs: int,
    budget_usd: float | None,
    instance_count: int = 1,
) -> float:
    """Refuse to launch when the worst case could exceed the budget; returns the worst case.

    Worst case = ``max_wait_s`` hours x ``price_per_hour`` x ``instance_count`` x ``n_jobs``:
    every job billed for its whole limit at the on-demand price (pass ``max_runtime_s`` for
    on-demand jobs). ``budget_usd=None`` only computes it.

    Raises:
        BudgetExceeded: the worst case is above ``budget_usd``.
    """
    worst = max_wait_s / 3600.0 * price_per_hour * instance_count * n_jobs
    if budget_usd is not None and worst > budget_usd:
        raise BudgetExceeded(
            f"refusing to launch: the worst-case cost ${worst:,.2f} ({n_jobs} job(s) x "
            f"{instance_count} instance(s) x {max_wait_s / 3600:g} h max wait x "
            f"${price_per_hour:g}/h) exceeds budget_usd ${budget_usd:,.2f}; lower max_wait_s or "
            "the number of models/seeds, pick a cheaper instance type, or raise the budget"
        )
    return round(worst, 4)
