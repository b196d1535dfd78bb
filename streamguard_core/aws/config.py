"""Typed settings of the SageMaker backend, the training job's one hyperparameter, prices.

* :class:`SageMakerConfig` what a user chooses (image, role, instance, spot, limits, budget);
  a Prefect flow takes it as a parameter, so every field has a description.
* :func:`spec_hyperparameters` / :func:`spec_from_hyperparameters` what one training job
  receives in ``/opt/ml/input/config/hyperparameters.json``: a single value, ``spec``, the
  :class:`~streamguard_core.config.TrainJobSpec` as JSON (the same spec a local run takes).
* :data:`INSTANCE_PRICES_USD_PER_HOUR` an approximate on-demand price table (override it with
  ``SageMakerConfig.prices``).
* :func:`redact` hides secrets before a mapping is logged or saved.
* :func:`error_code` / :func:`error_message` what AWS said in a botocore ``ClientError``.

Nothing here holds credentials: they come from the default boto3 chain or a Prefect
``AwsCredentials`` block resolved by the orchestration layer.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

if TYPE_CHECKING:  # config.py imports this module: no import cycle at run time
    from streamguard_core.config import TrainJobSpec

# Approximate SageMaker *training* on-demand prices in us-east-1, USD per instance-hour. Spot
# prices are lower and vary; the budget guard uses these as the conservative upper bound. Check
# https://aws.amazon.com/sagemaker/pricing/ for your region and override via
# ``SageMakerConfig.prices``.
INSTANCE_PRICES_USD_PER_HOUR: dict[str, float] = {
    "ml.m5.xlarge": 0.23,
    "ml.m5.2xlarge": 0.461,
    "ml.c5.2xlarge": 0.408,
    "ml.g4dn.xlarge": 0.736,
    "ml.g4dn.2xlarge": 0.94,
    "ml.g5.xlarge": 1.408,
    "ml.g5.2xlarge": 1.515,
    "ml.g5.4xlarge": 2.03,
    "ml.p3.2xlarge": 3.825,
    "ml.p3.8xlarge": 14.688,
    "ml.p4d.24xlarge": 37.688,
}

MAX_RUNTIME_LIMIT_S = 28 * 24 * 3600  # SageMaker's upper bound on MaxRuntimeInSeconds
# CreateTrainingJob's HyperParameterValue: at most 2500 characters (botocore's service model,
# checked by tests/aws/test_config.py; the API page's prose still says 256)
MAX_HYPERPARAMETER_CHARS = 2500
SPEC_HYPERPARAMETER = "spec"
REDACTED = "***"
_SECRET_KEY = re.compile(
    r"secret|password|passwd|token|credential|private|session|access_?key|api_?key|auth",
    re.IGNORECASE,
)


def price_per_hour(instance_type: str, prices: Mapping[str, float] | None = None) -> float:
    """On-demand USD per instance-hour of ``instance_type`` (``prices`` first, then the table).

    Raises:
        ValueError: the instance type is in neither table.
    """
    table = {**INSTANCE_PRICES_USD_PER_HOUR, **(prices or {})}
    if instance_type not in table:
        raise ValueError(
            f"no price for instance type {instance_type!r}; add it to SageMakerConfig.prices "
            f"(known: {', '.join(sorted(table))})"
        )
    return float(table[instance_type])


class HyperparameterTooLong(ValueError):
    """A hyperparameter value is longer than SageMaker accepts."""


def redact(mapping: Mapping[str, Any]) -> dict[str, Any]:
    """A copy of ``mapping`` with every secret-looking key's value replaced by ``***``.

    Keys are matched by name (secret, password, token, credential, session, access key, ...), in
    nested mappings and lists too, so a config or request can be logged or saved safely.
    """

    def clean(value: Any) -> Any:
        if isinstance(value, Mapping):
            return {
                k: (REDACTED if _SECRET_KEY.search(str(k)) and v is not None else clean(v))
                for k, v in value.items()
            }
        if isinstance(value, list | tuple):
            return [clean(v) for v in value]
        return value

    return clean(mapping)


def _error(exc: BaseException) -> Mapping[str, Any]:
    response = getattr(exc, "response", None) or {}
    return response.get("Error") or {}


def error_code(exc: BaseException) -> str:
    """The AWS error code of a botocore ``ClientError`` (``"NoSuchKey"``); "" when it has none."""
    return str(_error(exc).get("Code") or "")


def error_message(exc: BaseException) -> str:
    """The AWS error message of a botocore ``ClientError``; ``str(exc)`` when it has none."""
    return str(_error(exc).get("Message") or exc)


def spec_hyperparameters(spec: TrainJobSpec) -> dict[str, str]:
    """The job's hyperparameters: one, ``spec``, the :class:`TrainJobSpec` as JSON.

    The container maps ``data_dir`` and ``run_dir`` onto its own ``/opt/ml`` layout, so only the
    model, train and seed parts matter; every field is sent (no defaults left to the image).

    Raises:
        HyperparameterTooLong: the JSON is over SageMaker's limit on one value.
    """
    value = spec.model_dump_json()
    if len(value) > MAX_HYPERPARAMETER_CHARS:
        raise HyperparameterTooLong(
            f"the job spec of {spec.name} seed {spec.seed} is {len(value):,} characters as JSON; "
            f"SageMaker takes at most {MAX_HYPERPARAMETER_CHARS:,} per hyperparameter value "
            "(CreateTrainingJob HyperParameters): shorten its longest strings (data_dir, "
            "run_dir, model_name_or_path, lr_cache_dir, name)"
        )
    return {SPEC_HYPERPARAMETER: value}


def spec_from_hyperparameters(raw: Mapping[str, Any]) -> TrainJobSpec:
    """The :class:`TrainJobSpec` in ``hyperparameters.json`` (``sagemaker_*`` keys ignored).

    The value may be the JSON itself (boto3's CreateTrainingJob) or that JSON encoded once more
    as a JSON string (the SageMaker Python SDK encodes every value).

    Raises:
        ValueError: ``spec`` is missing or invalid, or another key is present.
    """
    from pydantic import ValidationError

    from streamguard_core.config import TrainJobSpec

    values = {k: v for k, v in raw.items() if not k.startswith("sagemaker_")}
    unknown = sorted(set(values) - {SPEC_HYPERPARAMETER})
    if unknown or SPEC_HYPERPARAMETER not in values:
        problem = f"unknown key(s) {unknown}" if unknown else f"no {SPEC_HYPERPARAMETER!r}"
        raise ValueError(
            f"invalid hyperparameters: {problem}; a StreamGuard job takes one hyperparameter, "
            f"{SPEC_HYPERPARAMETER!r}: the TrainJobSpec as JSON"
        )
    value: Any = values[SPEC_HYPERPARAMETER]
    try:
        while isinstance(value, str):
            value = json.loads(value)
    except ValueError as exc:
        raise ValueError(
            f"invalid hyperparameters: {SPEC_HYPERPARAMETER} is not JSON ({exc})"
        ) from exc
    try:
        return TrainJobSpec.model_validate(value)
    except ValidationError as exc:
        problems = "; ".join(
            f"{'.'.join(str(p) for p in (SPEC_HYPERPARAMETER, *e['loc']))}: {e['msg']}"
            + (f" (got {e['input']!r})" if not isinstance(e.get("input"), dict) else "")
            for e in exc.errors()
        )
        raise ValueError(f"invalid hyperparameters: {problems}") from exc


class SageMakerConfig(BaseModel):
    """Where and how training jobs run on SageMaker (no credentials: those come from the
    default boto3 chain or an ``AwsCredentials`` block)."""

    model_config = ConfigDict(extra="forbid")

    region: str | None = Field(None, description="AWS region; empty = the default chain's")
    image_uri: str = Field(description="ECR URI of the training image (docker/Dockerfile.train)")
    role_arn: str = Field(description="IAM role SageMaker assumes (S3 read/write on the bucket)")
    bucket: str | None = Field(
        None,
        description="S3 bucket for data channels, checkpoints and models; empty = the bucket "
        "of the S3Bucket block the flow names (s3_bucket_block)",
    )
    prefix: str = Field("streamguard", description="Key prefix inside the bucket")
    instance_type: str = Field("ml.g4dn.xlarge", description="Training instance type")
    instance_count: int = Field(
        1,
        ge=1,
        description="Instances per job: 1. Each job trains on one instance (for the GPUs of a "
        "multi-GPU instance set train.nproc_per_node); multi-instance training is not "
        "implemented, so more would only bill idle instances",
    )
    volume_size_gb: int = Field(30, ge=1, description="EBS volume per instance (GB)")
    use_spot: bool = Field(True, description="Managed spot training (cheaper, interruptible)")
    max_runtime_s: int = Field(
        4 * 3600, ge=1, le=MAX_RUNTIME_LIMIT_S, description="Most training seconds per job"
    )
    max_wait_s: int | None = Field(
        None,
        ge=1,
        le=MAX_RUNTIME_LIMIT_S,
        description="Spot: most seconds per job including waiting for capacity (>= "
        "max_runtime_s); empty = twice max_runtime_s",
    )
    budget_usd: float | None = Field(
        None, gt=0, description="Refuse to launch when the worst-case cost exceeds this"
    )
    max_concurrent_jobs: int = Field(4, ge=1, description="Jobs running at once")
    poll_s: float = Field(30.0, gt=0, description="First interval between status polls (s)")
    max_poll_s: float = Field(120.0, gt=0, description="Longest interval between polls (s)")
    prices: dict[str, float] = Field(
        default_factory=dict,
        description="USD per instance-hour overrides of the built-in (approximate us-east-1 "
        "on-demand) table",
    )
    tags: dict[str, str] = Field(default_factory=dict, description="Tags on every job")

    @field_validator("bucket")
    @classmethod
    def _bare_bucket(cls, value: str | None) -> str | None:
        if value is not None and (value.startswith("s3://") or "/" in value):
            raise ValueError("bucket is a bare bucket name (put paths in 'prefix')")
        return value

    @field_validator("instance_count")
    @classmethod
    def _one_instance(cls, value: int) -> int:
        if value > 1:
            raise ValueError(
                f"instance_count {value} > 1 is not used by StreamGuard's training yet: each job "
                "trains on one instance, so the others would be billed idle; use "
                "train.nproc_per_node for the GPUs of one instance (a multi-GPU instance type "
                "such as ml.g5.12xlarge, 4 GPUs), or more jobs (seeds) for more instances"
            )
        return value

    @model_validator(mode="after")
    def _wait_covers_runtime(self) -> SageMakerConfig:
        if self.max_wait_s is not None and not self.use_spot:
            raise ValueError("max_wait_s applies to spot training only (use_spot=False)")
        if self.max_wait_s is not None and self.max_wait_s < self.max_runtime_s:
            raise ValueError(
                f"max_wait_s ({self.max_wait_s}) must be >= max_runtime_s ({self.max_runtime_s})"
            )
        return self

    @property
    def effective_max_wait_s(self) -> int | None:
        """The spot wait limit sent to SageMaker (None for on-demand jobs)."""
        if not self.use_spot:
            return None
        return self.max_wait_s or min(2 * self.max_runtime_s, MAX_RUNTIME_LIMIT_S)

    def price_per_hour(self) -> float:
        """On-demand USD per hour of one instance of ``instance_type``."""
        return price_per_hour(self.instance_type, self.prices)

    def require_bucket(self) -> str:
        """The bucket jobs use.

        Raises:
            ValueError: neither ``bucket`` nor an S3Bucket block gave one.
        """
        if not self.bucket:
            raise ValueError(
                "no S3 bucket for the SageMaker jobs: set sagemaker.bucket, or name an S3Bucket "
                "block in s3_bucket_block (`python -m deployments.install_aws --bucket NAME` "
                "saves one)"
            )
        return self.bucket
