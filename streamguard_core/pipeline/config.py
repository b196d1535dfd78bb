"""Settings of a production training run: which models and seeds, how long, what counts as success.

These pydantic models are also the Prefect flows' parameters, so every field has a description
(the UI renders them as form help text) and the choices are ``Literal`` (drop-downs).
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

ModelKind = Literal["transformer", "gnn", "baseline"]
MODEL_KINDS: tuple[ModelKind, ...] = ("transformer", "gnn", "baseline")


class TrainingPlan(BaseModel):
    """Models x seeds and the training settings shared by every seed."""

    model_config = ConfigDict(extra="forbid")

    models: list[ModelKind] = Field(
        default_factory=lambda: list(MODEL_KINDS), description="Models to train"
    )
    seeds: list[int] = Field(
        default_factory=lambda: [42, 43, 44], description="One run per model and seed"
    )
    epochs: int = Field(10, ge=1, description="Most epochs per neural run (early stopping on)")
    batch_size: int = Field(32, ge=1, description="Batch size of the neural models")
    lr: float | None = Field(None, gt=0, description="Learning rate; empty = per-model default")
    early_stopping_patience: int = Field(3, ge=1, description="Epochs without F1 gain")
    transformer_model: str = Field(
        "tiny",
        description="'tiny' (from scratch, offline), a Hugging Face name such as "
        "microsoft/codebert-base, or a local model directory",
    )
    transformer_hidden_dim: int = Field(128, ge=8, description="Tiny transformer width")
    transformer_layers: int = Field(2, ge=1, description="Tiny transformer layers")
    gnn_hidden_dim: int = Field(256, ge=8, description="GCN hidden size")
    gnn_layers: int = Field(4, ge=1, description="GCN layers")
    max_steps_per_epoch: int | None = Field(
        None, ge=1, description="Cut every epoch to N steps (quick runs); empty = full epochs"
    )
    num_threads: int | None = Field(None, ge=1, description="torch CPU threads per run")
    mixed_precision: Literal["auto", "off", "fp16", "bf16"] = Field(
        "auto", description="AMP on CUDA ('auto': bf16 where supported, else fp16); off on CPU"
    )


class SuccessCriteria(BaseModel):
    """When a production run counts as a success (checked on the best model's test metrics)."""

    model_config = ConfigDict(extra="forbid")

    min_mean_f1: float = Field(
        0.6, ge=0, le=1, description="Best model's mean vulnerable-class F1 over seeds"
    )
    max_f1_std: float = Field(0.05, ge=0, description="Best model's F1 std across seeds below")
    require_all_seeds: bool = Field(True, description="Every model x seed run completed")
    require_no_collapse: bool = Field(True, description="No run collapsed")
