"""flows/presets.py and the command line of ``python -m flows.pipeline``: presets + flags ->
one PipelineConfig."""

from __future__ import annotations

import pytest
import yaml

from flows.pipeline import config_from_args
from flows.presets import load_preset, override, select_models
from streamguard_core.config import PipelineConfig, TrainingPlan, model_config_for

PLAN = TrainingPlan.model_validate(
    {
        "models": [
            {"kind": "gnn", "name": "gnn-small", "hidden_dim": 32},
            {"kind": "gnn", "name": "gnn-wide", "hidden_dim": 512},
            {"kind": "baseline", "C": 0.5},
        ],
        "seeds": [1, 2],
    }
)


def test_models_are_chosen_by_run_name_or_kind_and_new_kinds_get_defaults():
    assert [m.run_name for m in select_models(PLAN, ["gnn-wide"])] == ["gnn-wide"]
    # a kind keeps every model of that kind, with the preset's settings
    chosen = select_models(PLAN, ["baseline", "gnn"])
    assert [m.run_name for m in chosen] == ["baseline", "gnn-small", "gnn-wide"]
    assert chosen[0].C == 0.5 and chosen[2].hidden_dim == 512
    # a kind the preset lacks: that kind's defaults
    (transformer,) = select_models(PLAN, ["transformer"])
    assert transformer == model_config_for("transformer")
    with pytest.raises(ValueError, match="'lstm': not a model of the preset"):
        select_models(PLAN, ["lstm"])


def test_override_revalidates_the_whole_config():
    config = PipelineConfig(plan=PLAN)
    changed = override(config, models="gnn-small,transformer", seeds="7", output_root="/tmp/x")
    assert changed.plan.names == ["gnn-small", "transformer"] and changed.plan.seeds == [7]
    assert changed.output_root == "/tmp/x" and changed.plan.train == config.plan.train
    with pytest.raises(ValueError, match="seeds must be distinct"):
        override(config, seeds="7,7")
    with pytest.raises(ValueError, match="needs the 'sagemaker' settings"):
        override(config, backend="sagemaker")


def test_the_command_line_maps_onto_the_preset(tmp_path, shared_data):
    config = config_from_args(
        ["--preset", "demo", "--data", str(shared_data), "--models", "gnn,baseline",
         "--seeds", "42", "--output-root", str(tmp_path), "--no-preflight"]
    )  # fmt: skip
    demo = load_preset("demo")
    assert config.plan.models == [m for m in demo.plan.models if m.kind in ("gnn", "baseline")]
    assert config.plan.seeds == [42] and config.plan.train == demo.plan.train
    assert config.data.inputs[0].endswith("devign_train.jsonl.gz")
    assert config.data.codexglue_splits and config.data.synthetic_pairs_per_cwe == (
        demo.data.synthetic_pairs_per_cwe
    )
    assert config.output_root == str(tmp_path) and config.run_preflight is False
    assert config.criteria == demo.criteria and config.preprocessing == demo.preprocessing


def test_a_yaml_path_is_a_preset_and_unknown_keys_fail(tmp_path):
    path = tmp_path / "mine.yaml"
    path.write_text(yaml.safe_dump({"plan": {"models": ["baseline"], "seeds": [3]}}))
    assert load_preset(str(path)).plan.seeds == [3]
    path.write_text(yaml.safe_dump({"plan": {"modles": ["baseline"]}}))
    with pytest.raises(ValueError, match="modles"):
        load_preset(str(path))
    with pytest.raises(FileNotFoundError, match="no preset 'nope'"):
        load_preset("nope")


def test_sagemaker_backend_from_the_command_line_reads_the_presets_settings():
    config = config_from_args(["--preset", "sagemaker-emulator", "--backend", "sagemaker"])
    assert config.sagemaker is not None and config.sagemaker.bucket == "streamguard-emulator"
    local = config_from_args(["--preset", "sagemaker-emulator", "--backend", "local"])
    assert local.backend == "local" and local.plan == config.plan
