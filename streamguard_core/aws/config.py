"""Typed settings of the SageMaker backend, the training job's hyperparameters, instance prices.

* :class:`SageMakerConfig` what a user chooses (image, role, instance, spot, limits, budget);
  a Prefect flow takes it as a parameter, so every field has a description.
* :class:`TrainHyperparameters` what one training job receives in
  ``/opt/ml/input/config/hyperparameters.json``: SageMaker passes every value as a string, so
  :meth:`TrainHyperparameters.to_sagemaker` and :meth:`TrainHyperparameters.from_sagemaker`
  encode and decode them.
* :data:`INSTANCE_PRICES_USD_PER_HOUR` an approximate on-demand price table (override it with
  ``SageMakerConfig.prices``).
* :func:`redact` hides secrets before a mapping is logged or saved.

Nothing here holds credentials: they come from the default boto3 chain or a Prefect
``AwsCredentials`` block resolved by the orchestration layer.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

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


def parse_hyperparameter(value: Any) -> Any:
    """Decode one SageMaker hyperparameter string: JSON first (``"3"``, ``"1e-3"``, ``"true"``,
    ``"null"``, ``'"gnn"'``), then Python spellings (``True``, ``None``), else the string."""
    if not isinstance(value, str):
        return value
    text = value.strip()
    try:
        return json.loads(text)
    except ValueError:
        pass
    python_literals = {"True": True, "False": False, "None": None, "none": None}
    return python_literals.get(text, value)


ModelKind = Literal["transformer", "gnn", "baseline"]


class TrainHyperparameters(BaseModel):
    """Settings of one SageMaker training job (one model and seed), as hyperparameters."""

    model_config = ConfigDict(extra="forbid")

    model: ModelKind = Field(description="Model kind to train")
    seed: int = Field(42, description="Seed for initialisation, data order and dropout")
    epochs: int = Field(10, ge=1, description="Most epochs (early stopping on)")
    batch_size: int = Field(32, ge=1, description="Examples per forward pass")
    lr: float | None = Field(None, gt=0, description="Learning rate; empty = per-model default")
    max_steps_per_epoch: int | None = Field(
        None, ge=1, description="Cut every epoch to N optimizer steps (quick runs)"
    )
    hidden_dim: int | None = Field(
        None, ge=1, description="Hidden size; empty = the kind's default (gnn 256, tiny 128)"
    )
    num_layers: int | None = Field(
        None, ge=1, description="Layers; empty = the kind's default (gnn 4, tiny transformer 2)"
    )
    arch: Literal["gcn", "ggnn"] = Field("gcn", description="GNN architecture")
    node_token_dim: int | None = Field(
        None, ge=0, description="GNN identifier-bucket embedding size; 0 ignores identifiers"
    )
    dropout: float | None = Field(
        None, ge=0, lt=1, description="Dropout; empty = the kind's default (gnn 0.3, 0.1)"
    )
    transformer_model: str = Field(
        "tiny", description="'tiny' (from scratch), a Hugging Face name or a local directory"
    )
    max_seq_len: int = Field(512, ge=16, description="Transformer position limit")
    checkpoint_every_steps: int = Field(
        50, ge=1, description="Optimizer steps between 'latest' checkpoints (spot resume point)"
    )
    num_threads: int | None = Field(None, ge=1, description="torch CPU threads")
    mixed_precision: Literal["auto", "off", "fp16", "bf16"] = Field(
        "auto", description="AMP on CUDA ('auto': bf16 where supported, else fp16)"
    )
    early_stopping_patience: int = Field(3, ge=1, description="Epochs without F1 gain")

    @classmethod
    def from_sagemaker(cls, raw: Mapping[str, Any]) -> TrainHyperparameters:
        """Parse ``hyperparameters.json`` (all values strings); ``sagemaker_*`` keys (set by the
        SageMaker SDK's script mode) are ignored, any other unknown key is an error."""
        values = {
            k: parse_hyperparameter(v) for k, v in raw.items() if not k.startswith("sagemaker_")
        }
        return cls.model_validate(values)

    def to_sagemaker(self) -> dict[str, str]:
        """The string map ``CreateTrainingJob`` takes (unset optional values are left out)."""
        out: dict[str, str] = {}
        for key, value in self.model_dump(mode="json").items():
            if value is None:
                continue
            out[key] = value if isinstance(value, str) else json.dumps(value)
        return out

    def model_and_train_configs(self) -> tuple[Any, Any]:
        """``(GNNConfig | TransformerConfig, TrainConfig)`` for a neural kind (imports torch)."""
        from streamguard_core.training.loop import TrainConfig

        model_cfg: Any
        if self.model == "gnn":
            from streamguard_core.models.gnn import GNNConfig

            gnn: dict[str, Any] = {"arch": self.arch}
            for key, value in (
                ("hidden_dim", self.hidden_dim),
                ("num_layers", self.num_layers),
                ("dropout", self.dropout),
                ("node_token_dim", self.node_token_dim),
            ):
                if value is not None:
                    gnn[key] = value
            model_cfg = GNNConfig(**gnn)
        elif self.model == "transformer":
            from streamguard_core.models.transformer import TransformerConfig, tiny_shape

            tf: dict[str, Any] = {
                "model_name_or_path": self.transformer_model,
                "max_seq_len": self.max_seq_len,
                # the same width rule as a local run, so one plan builds one model on both backends
                **(tiny_shape(self.hidden_dim) if self.hidden_dim is not None else {}),
            }
            for key, value in (
                ("num_layers", self.num_layers),
                ("dropout", self.dropout),
            ):
                if value is not None:
                    tf[key] = value
            model_cfg = TransformerConfig(**tf)
        else:
            raise ValueError("the baseline has no neural configuration")
        train = TrainConfig(
            epochs=self.epochs,
            batch_size=self.batch_size,
            lr=self.lr,
            seed=self.seed,
            max_steps_per_epoch=self.max_steps_per_epoch,
            num_threads=self.num_threads,
            checkpoint_every_steps=self.checkpoint_every_steps,
            mixed_precision=self.mixed_precision,
            early_stopping_patience=self.early_stopping_patience,
        )
        return model_cfg, train


class SageMakerConfig(BaseModel):
    """Where and how training jobs run on SageMaker (no credentials: those come from the
    default boto3 chain or an ``AwsCredentials`` block)."""

    model_config = ConfigDict(extra="forbid")

    region: str | None = Field(None, description="AWS region; empty = the default chain's")
    image_uri: str = Field(description="ECR URI of the training image (docker/Dockerfile.train)")
    role_arn: str = Field(description="IAM role SageMaker assumes (S3 read/write on the bucket)")
    bucket: str = Field(description="S3 bucket for data channels, checkpoints and models")
    prefix: str = Field("streamguard", description="Key prefix inside the bucket")
    instance_type: str = Field("ml.g4dn.xlarge", description="Training instance type")
    instance_count: int = Field(1, ge=1, description="Instances per job")
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
    def _bare_bucket(cls, value: str) -> str:
        if value.startswith("s3://") or "/" in value:
            raise ValueError("bucket is a bare bucket name (put paths in 'prefix')")
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
