"""The configuration tree: one source of defaults, derived shapes, and forms the UI can render."""

from __future__ import annotations

from pathlib import Path

import pytest
from pydantic import BaseModel, ValidationError

from streamguard_core.config import (
    BaselineConfig,
    GNNConfig,
    PipelineConfig,
    TrainConfig,
    TrainingPlan,
    TrainJobSpec,
    TransformerConfig,
    load_yaml,
    model_config_for,
)

REPO = Path(__file__).resolve().parents[2]


def test_tiny_shape_is_a_validator_not_a_callers_duty():
    cfg = TransformerConfig(hidden_size=48)
    assert (cfg.heads, cfg.feed_forward_size) == (2, 96)
    # derived sizes stay empty: a UI form or a job file that changes hidden_size re-derives them
    assert (cfg.num_heads, cfg.intermediate_size) == (None, None)
    assert cfg.model_copy(update={"hidden_size": 64}).feed_forward_size == 128
    assert TransformerConfig(hidden_size=33).heads == 1
    explicit = TransformerConfig(hidden_size=48, num_heads=4, intermediate_size=64)
    assert (explicit.heads, explicit.feed_forward_size) == (4, 64)
    with pytest.raises(ValidationError, match="not a multiple of num_heads"):
        TransformerConfig(hidden_size=48, num_heads=5)


def test_plan_accepts_kind_names_and_rejects_clashing_run_names():
    plan = TrainingPlan.model_validate({"models": "gnn,baseline", "seeds": [1]})
    assert [type(m) for m in plan.models] == [GNNConfig, BaselineConfig]
    assert plan.names == ["gnn", "baseline"]
    with pytest.raises(ValidationError, match="share the run name"):
        TrainingPlan(models=[GNNConfig(), GNNConfig(hidden_dim=64)])
    two = TrainingPlan(models=[GNNConfig(), GNNConfig(name="gnn-wide", hidden_dim=512)])
    assert two.model("gnn-wide").hidden_dim == 512
    with pytest.raises(ValidationError):
        TrainingPlan(models=[{"kind": "svm"}])


def test_jobs_carry_the_plan_settings_and_their_own_seed(tmp_path):
    plan = TrainingPlan(
        models=[model_config_for("gnn")],
        seeds=[7, 8],
        train=TrainConfig(lr_finder=True, use_weights=True, seed=1),
    )
    jobs = plan.jobs(tmp_path / "data", tmp_path / "out")
    assert [(j.seed, j.train.seed) for j in jobs] == [(7, 7), (8, 8)]
    assert all(j.train.lr_finder and j.train.use_weights for j in jobs)
    assert jobs[1].run_dir == str(tmp_path / "out" / "gnn" / "seed_8")
    spec = jobs[0].with_paths("/opt/ml/input/data/data", "/opt/ml/checkpoints/run")
    assert spec.model == jobs[0].model and spec.train == jobs[0].train


def test_sagemaker_backend_needs_its_settings():
    with pytest.raises(ValidationError, match="needs the 'sagemaker' settings"):
        PipelineConfig(backend="sagemaker")


def _models_in(annotation: object) -> list[type[BaseModel]]:
    """Every pydantic model inside a type annotation (unions, lists, Annotated)."""
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return [annotation]
    found = []
    for arg in getattr(annotation, "__args__", ()) or ():
        found += _models_in(arg)
    for meta in getattr(annotation, "__metadata__", ()) or ():
        found += _models_in(meta)
    origin = getattr(annotation, "__origin__", None)
    if origin is not None and origin is not annotation:
        found += _models_in(origin) if isinstance(origin, type) else []
    return found


def _fields_without_description(model: type[BaseModel], seen: set) -> list[str]:
    missing: list[str] = []
    if model in seen:
        return missing
    seen.add(model)
    for name, field in model.model_fields.items():
        if not field.description:
            missing.append(f"{model.__name__}.{name}")
        for sub in _models_in(field.annotation):
            missing += _fields_without_description(sub, seen)
    return missing


def test_every_field_a_form_shows_has_a_description():
    """The Prefect UI renders PipelineConfig as a form: every field needs help text."""
    seen: set = set()
    missing = _fields_without_description(PipelineConfig, seen)
    missing += _fields_without_description(TrainJobSpec, seen)
    assert {GNNConfig, TransformerConfig, BaselineConfig, TrainConfig} <= seen  # walked into
    assert missing == []


def test_the_readme_example_job_file_is_a_valid_job():
    spec = load_yaml(REPO / "deployments" / "jobs" / "transformer.yaml", TrainJobSpec)
    assert spec.model.kind == "transformer"
    assert (spec.model.heads, spec.model.feed_forward_size) == (2, 128)
    assert spec.train.lr_finder and spec.train.use_weights and spec.train.seed == spec.seed
