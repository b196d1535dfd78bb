"""Every preset in deployments/params is one PipelineConfig, validated by the flow itself.

Also checks that deployments/automations.yaml parses into Prefect automations whose templates
the server will accept (the installer reads it).
"""

from __future__ import annotations

import importlib
import uuid
from pathlib import Path
from typing import Any

import pytest
import yaml

from streamguard_core.config import (
    BaselineConfig,
    PipelineConfig,
    SuccessCriteria,
    load_yaml,
)

REPO = Path(__file__).resolve().parents[2]
PARAMS_DIR = REPO / "deployments" / "params"
PRESETS = sorted(PARAMS_DIR.glob("*.yaml"))


def load(path: Path) -> dict:
    preset = yaml.safe_load(path.read_text(encoding="utf-8"))
    assert isinstance(preset, dict), f"{path.name}: expected a mapping (one PipelineConfig)"
    return preset


def test_the_expected_presets_exist():
    assert {p.stem for p in PRESETS} >= {"quick", "demo", "full", "sagemaker-emulator"}


@pytest.mark.parametrize("path", PRESETS, ids=lambda p: p.name)
def test_preset_is_one_pipeline_config_through_prefects_validation(path: Path):
    """Each preset is what a deployment run of streamguard-pipeline receives as ``config``."""
    from flows.pipeline import streamguard_pipeline

    raw = load(path)
    config = load_yaml(path, PipelineConfig)  # extra="forbid" everywhere: a typo fails here
    # Prefect's own coercion of the parameters (what a deployment run does)
    (validated,) = streamguard_pipeline.validate_parameters({"config": raw}).values()
    assert validated == config
    # and it survives the JSON round trip a deployment's parameters go through
    assert PipelineConfig.model_validate_json(config.model_dump_json()) == config


def test_quick_preset_is_tiny_and_full_fuses_three_seeds_on_five_folds():
    quick = load_yaml(PARAMS_DIR / "quick.yaml", PipelineConfig)
    assert quick.plan.seeds == [42] and quick.plan.train.epochs == 1
    assert quick.plan.train.max_steps_per_epoch == 4
    assert {m.kind for m in quick.plan.models} == {"baseline", "gnn", "transformer"}
    assert quick.data.synthetic_pairs_per_cwe == 4
    full = load_yaml(PARAMS_DIR / "full.yaml", PipelineConfig)
    assert full.plan.seeds == [42, 43, 44] and full.plan.fusion and full.plan.n_folds == 5
    assert full.plan.names[0] == "baseline" and full.plan.model("baseline") == BaselineConfig()
    assert {m.kind for m in full.plan.models} >= {"baseline", "gnn"}
    assert full.plan.train.threshold_objective == "accuracy"
    codebert = load_yaml(PARAMS_DIR / "full-codebert.yaml", PipelineConfig)
    transformer = codebert.plan.model("transformer")
    assert transformer.model_name_or_path == "microsoft/codebert-base"  # type: ignore[union-attr]
    assert codebert.preprocessing.tokenizer == "microsoft/codebert-base"
    assert codebert.plan.train.lr is None  # each kind's default LR (2.5e-5 for CodeBERT)


def test_demo_is_judged_by_the_default_criteria():
    """`make demo` must pass the real criteria: its preset may tune models and data, not them."""
    demo = load_yaml(PARAMS_DIR / "demo.yaml", PipelineConfig)
    assert demo.criteria == SuccessCriteria()
    assert {m.kind for m in demo.plan.models} == {"transformer", "gnn", "baseline"}
    assert len(demo.plan.seeds) == 3 and demo.backend == "local" and not demo.data.inputs


def _deployments() -> list[dict[str, Any]]:
    return yaml.safe_load((REPO / "prefect.yaml").read_text())["deployments"]


@pytest.mark.parametrize("deployment", _deployments(), ids=lambda d: d["name"])
def test_prefect_yaml_parameters_are_complete_for_their_flow(deployment: dict[str, Any]):
    """Prefect merges a run's parameters into the deployment's by top-level name only, so each
    deployment's own parameters must be valid for its flow without any run parameters."""
    path, name = deployment["entrypoint"].split(":")
    flow = getattr(importlib.import_module(path.removesuffix(".py").replace("/", ".")), name)
    parameters = dict(deployment.get("parameters") or {})
    if "data_dir" in (flow.parameters.required or []):
        parameters.setdefault("data_dir", "runs/data")  # a run of `local` must name its data
    given = flow.validate_parameters(parameters)
    if deployment["name"] == "sagemaker":
        config = given["config"]
        assert config.backend == "sagemaker" and config.sagemaker is not None
        assert config.s3_bucket_block == "streamguard-bucket" and not config.run_preflight


def _definitions_missing_descriptions(schema: dict[str, Any]) -> list[str]:
    missing = []
    for model, definition in schema.get("definitions", {}).items():
        for field, spec in definition.get("properties", {}).items():
            if not spec.get("description"):
                missing.append(f"{model}.{field}")
    return missing


def test_the_ui_forms_have_help_text_and_drop_downs():
    """The flows' parameter schemas (what the UI renders as forms): every nested field has a
    description, Literal choices are enums (drop-downs), the model list is a union on kind."""
    from flows.monthly_retrain import monthly_retrain
    from flows.pipeline import streamguard_pipeline
    from flows.train_production import train_production

    for flow in (streamguard_pipeline, monthly_retrain, train_production):
        schema = flow.parameters.model_dump()
        assert schema["properties"]["config"]["$ref"] == "#/definitions/PipelineConfig"
        assert _definitions_missing_descriptions(schema) == [], flow.name
    definitions = streamguard_pipeline.parameters.model_dump()["definitions"]
    assert set(definitions) >= {"PipelineConfig", "TrainingPlan", "TrainConfig", "GNNConfig",
                                "TransformerConfig", "BaselineConfig", "SuccessCriteria",
                                "SageMakerConfig", "DataConfig", "PreprocessConfig"}  # fmt: skip
    assert definitions["PipelineConfig"]["properties"]["backend"]["enum"] == ["local", "sagemaker"]
    assert definitions["TrainConfig"]["properties"]["mixed_precision"]["enum"] == [
        "auto", "off", "fp16", "bf16"
    ]  # fmt: skip
    assert definitions["GNNConfig"]["properties"]["arch"]["enum"] == ["gcn", "ggnn", "rgcn"]
    models = definitions["TrainingPlan"]["properties"]["models"]["items"]
    assert models["discriminator"]["propertyName"] == "kind"
    assert {m["$ref"].rsplit("/", 1)[1] for m in models["oneOf"]} == {
        "GNNConfig", "TransformerConfig", "BaselineConfig", "FusionConfig"
    }  # fmt: skip


def test_automations_file_parses_and_its_templates_are_valid():
    from prefect.server.events.actions import SendNotification as ServerSendNotification

    from deployments.install import load_automations, notification_block_name

    block_id = uuid.uuid4()
    automations = load_automations(block_id)
    assert notification_block_name() == "streamguard-alerts"
    expected = {
        "prefect.flow-run.Failed",
        "prefect.flow-run.Crashed",
        "streamguard.training.collapsed",
        "streamguard.model.below_threshold",
        "streamguard.preflight.failed",
        "streamguard.phase2.distribution_shift",
    }
    assert set().union(*(a.trigger.expect for a in automations)) == expected
    for automation in automations:
        assert automation.name.startswith("streamguard-")
        (action,) = automation.actions
        assert action.type == "send-notification" and action.block_document_id == block_id
        # The server validates the Jinja templates with this model on create/update.
        ServerSendNotification.model_validate(action.model_dump())


def test_phase2_config_files_are_phase2_configs():
    """Every deployments/phase2/*.yaml validates as the phase2 flow's parameter."""
    from flows.phase2 import phase2

    files = sorted((REPO / "deployments" / "phase2").glob("*.yaml"))
    assert files
    for path in files:
        raw = yaml.safe_load(path.read_text())
        config = phase2.validate_parameters({"config": raw})["config"]  # unknown keys fail
        assert config.model_dump(exclude_unset=True) == raw, path
