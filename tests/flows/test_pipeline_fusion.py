"""The pipeline with the fusion stage on: fold jobs per model x seed x fold, one fusion run per
seed, the fusion model aggregated and judged like the others, and the comparison published."""

from __future__ import annotations

import json

import pytest

from streamguard_core.config import oof_dir, seed_dir
from streamguard_core.io import read_jsonl
from streamguard_core.training.paths import RunPaths

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def fusion_run(prefect_harness, tmp_path_factory):
    from flows.pipeline import streamguard_pipeline
    from tests.flows.test_pipeline import make_config

    root = tmp_path_factory.mktemp("pipeline_fusion")
    config = make_config(
        root,
        plan={
            "models": [{"kind": "gnn", "hidden_dim": 32, "num_layers": 2}, {"kind": "baseline"}],
            "seeds": [42, 43],
            "fusion": True,
            "n_folds": 2,
        },
        run_preflight=False,
    )
    state = streamguard_pipeline(config, return_state=True)
    return root, config, state


def test_fusion_stage_runs_every_fold_and_seed(fusion_run) -> None:
    root, _, state = fusion_run
    assert state.is_completed(), state.message
    train_ids = {str(r["id"]) for r in read_jsonl(root / "data" / "train" / "records.jsonl")}
    for name in ("gnn", "baseline"):
        for seed in (42, 43):
            held = [
                str(r["id"])
                for k in range(2)
                for r in read_jsonl(RunPaths(oof_dir(root, name, seed, k)).oof_predictions)
            ]
            assert sorted(held) == sorted(train_ids)  # every train function exactly once
    folds = json.loads((root / "oof" / "folds.json").read_text())
    assert folds["n_folds"] == 2 and sum(f["n"] for f in folds["folds"]) == len(train_ids)
    for seed in (42, 43):
        card = json.loads((RunPaths(seed_dir(root, "fusion", seed)).model / "model_card.json")
                          .read_text())  # fmt: skip
        assert card["kind"] == "fusion" and card["base_models"] == ["gnn", "baseline"]


def test_fusion_is_aggregated_judged_and_compared(fusion_run) -> None:
    root, _, state = fusion_run
    summary = state.result()
    assert set(summary["models"]) == {"gnn", "baseline", "fusion"}
    assert "fusion" in summary["success"]["judged_models"]
    evaluation = json.loads((root / "evaluation" / "evaluation.json").read_text())
    assert set(evaluation["models"]) == {"gnn", "baseline", "fusion"}
    pairs = {tuple(sorted((p["model_a"], p["model_b"]))) for p in evaluation["pairs"]}
    assert pairs == {("baseline", "fusion"), ("baseline", "gnn"), ("fusion", "gnn")}


def test_fusion_artifacts_in_the_ui(fusion_run) -> None:
    from tests.flows.test_pipeline import _artifacts, _subflow_ids

    _, _, state = fusion_run
    ids = _subflow_ids(state.state_details.flow_run_id)
    assert _artifacts(ids, "oof-folds")
    (comparison,) = _artifacts(ids, "model-comparison")
    assert "data:image/png;base64," in comparison.data
