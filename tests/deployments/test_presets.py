"""Every parameter preset in deployments/params validates against the pipeline's parameters.

Also checks that deployments/automations.yaml parses into Prefect automations whose templates
the server will accept (the installer reads it).
"""

from __future__ import annotations

import importlib.util
import typing
import uuid
from collections.abc import Callable
from pathlib import Path

import pytest
import yaml
from pydantic import BaseModel

from streamguard_core.aws.config import SageMakerConfig
from streamguard_core.config import DataConfig, PreprocessConfig
from streamguard_core.pipeline.config import SuccessCriteria, TrainingPlan

REPO = Path(__file__).resolve().parents[2]
PARAMS_DIR = REPO / "deployments" / "params"
PRESETS = sorted(PARAMS_DIR.glob("*.yaml"))

# The streamguard-pipeline flow's parameters (flows/pipeline.py) and what each must be.
PARAMETER_MODELS: dict[str, type[BaseModel]] = {
    "data": DataConfig,
    "preprocessing": PreprocessConfig,
    "plan": TrainingPlan,
    "criteria": SuccessCriteria,
    "sagemaker": SageMakerConfig,
}
SCALAR_PARAMETERS: dict[str, Callable[[object], bool]] = {
    "output_root": lambda v: isinstance(v, str) and bool(v),
    "backend": lambda v: v in {"local", "sagemaker"},
    "run_preflight": lambda v: isinstance(v, bool),
    "aws_credentials_block": lambda v: isinstance(v, str) and bool(v),
}


def load(path: Path) -> dict:
    preset = yaml.safe_load(path.read_text(encoding="utf-8"))
    assert isinstance(preset, dict), f"{path.name}: expected a mapping of flow parameters"
    return preset


def test_the_expected_presets_exist():
    assert {p.stem for p in PRESETS} >= {"quick", "full"}


@pytest.mark.parametrize("path", PRESETS, ids=lambda p: p.name)
def test_preset_validates_against_the_parameter_models(path: Path):
    preset = load(path)
    unknown = set(preset) - set(PARAMETER_MODELS) - set(SCALAR_PARAMETERS)
    assert not unknown, f"{path.name}: not a streamguard-pipeline parameter: {sorted(unknown)}"
    for name, value in preset.items():
        if name in PARAMETER_MODELS:
            # extra="forbid" on every model, so a misspelt key fails here.
            PARAMETER_MODELS[name].model_validate(value or {})
        else:
            assert SCALAR_PARAMETERS[name](value), f"{path.name}: invalid {name}={value!r}"


def test_quick_preset_is_tiny_and_full_has_three_seeds():
    quick = load(PARAMS_DIR / "quick.yaml")
    plan = TrainingPlan.model_validate(quick["plan"])
    assert plan.seeds == [42] and plan.epochs == 1 and plan.max_steps_per_epoch == 4
    assert set(plan.models) == {"baseline", "gnn", "transformer"}
    assert DataConfig.model_validate(quick["data"]).synthetic_pairs_per_cwe == 4
    full = TrainingPlan.model_validate(load(PARAMS_DIR / "full.yaml")["plan"])
    assert full.seeds == [42, 43, 44] and full.epochs == TrainingPlan().epochs


@pytest.mark.parametrize("path", PRESETS, ids=lambda p: p.name)
def test_preset_matches_the_flow_signature(path: Path):
    """Against the real flow, once flows/pipeline.py exists (same types, same names)."""
    if importlib.util.find_spec("flows.pipeline") is None:
        pytest.skip("flows/pipeline.py not written yet")
    from flows.pipeline import streamguard_pipeline

    hints = typing.get_type_hints(streamguard_pipeline.fn)
    preset = load(path)
    assert set(preset) <= set(hints) - {"return"}
    for name, model in PARAMETER_MODELS.items():
        if name in preset:
            assert model in typing.get_args(hints[name]) or hints[name] is model, name
    # Prefect's own coercion of the parameters (what a deployment run does).
    streamguard_pipeline.validate_parameters(preset)


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
    }
    assert set().union(*(a.trigger.expect for a in automations)) == expected
    for automation in automations:
        assert automation.name.startswith("streamguard-")
        (action,) = automation.actions
        assert action.type == "send-notification" and action.block_document_id == block_id
        # The server validates the Jinja templates with this model on create/update.
        ServerSendNotification.model_validate(action.model_dump())
