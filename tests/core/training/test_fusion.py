"""Out-of-fold folds, fold jobs and the fusion detector, on a real (synthetic-source) processed
data set: every train function gets exactly one OOF prediction, fusion refuses missing ones,
and the saved fusion model scores raw code like the pipeline scored it."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from streamguard_core.config import BaselineConfig, TrainConfig, TrainingPlan
from streamguard_core.io import read_jsonl
from streamguard_core.preprocess.dataset import ProcessedDataset
from streamguard_core.training.folds import FoldError, assign_folds
from streamguard_core.training.job import run_job
from streamguard_core.training.paths import RunPaths


def _records(keys: list[str]) -> list[dict[str, object]]:
    return [{"id": f"r{i}", "normalized_key": k} for i, k in enumerate(keys)]


def test_folds_keep_groups_together_and_are_stratified() -> None:
    keys = [f"g{i // 2}" for i in range(200)]  # 100 groups of two near-duplicates
    labels = np.array([(i // 2) % 2 for i in range(200)])
    folds = assign_folds(_records(keys), labels, 5, seed=3)
    assert set(folds.tolist()) == set(range(5))
    for g in set(keys):
        members = {int(folds[i]) for i, k in enumerate(keys) if k == g}
        assert len(members) == 1, f"group {g} split across folds {members}"
    for k in range(5):
        rate = labels[folds == k].mean()
        assert 0.3 < rate < 0.7
    again = assign_folds(_records(keys), labels, 5, seed=3)
    assert np.array_equal(folds, again)  # every model and seed holds out the same functions


def test_folds_refuse_too_few_of_a_label() -> None:
    labels = np.array([0] * 50 + [1] * 3)
    with pytest.raises(FoldError, match="at least 5 vulnerable"):
        assign_folds(_records([f"k{i}" for i in range(53)]), labels, 5)


def test_plan_refuses_fusion_in_models_and_unknown_bases() -> None:
    with pytest.raises(ValueError, match=r"plan\.fusion"):
        TrainingPlan(models=[{"kind": "fusion"}])  # type: ignore[list-item]
    with pytest.raises(ValueError, match="not models of the plan"):
        TrainingPlan(models=["baseline"], fusion=True, fusion_model={"base_models": ["gnn"]})  # type: ignore[arg-type]


@pytest.fixture(scope="module")
def fused_run(make_processed, tmp_path_factory) -> tuple[Path, TrainingPlan]:
    data = make_processed(30, 400, 128)
    root = tmp_path_factory.mktemp("fusion_runs")
    plan = TrainingPlan(
        models=[
            BaselineConfig(),
            BaselineConfig(name="chars", features="chars", ngram_min=2, ngram_max=4),
        ],
        seeds=[7],
        train=TrainConfig(),
        fusion=True,
        n_folds=3,
    )
    for spec in plan.jobs(data, root) + plan.oof_jobs(data, root):
        status = run_job(spec)
        assert status.status == "completed", status.error
    return data, plan, root  # type: ignore[return-value]


def test_oof_predictions_cover_train_exactly_once(fused_run) -> None:
    data, plan, root = fused_run
    train_ids = sorted(str(r["id"]) for r in ProcessedDataset(data).split("train").records)
    for name in plan.names:
        seen: list[str] = []
        for spec in plan.oof_jobs(data, root):
            if spec.name == name:
                seen += [str(r["id"]) for r in read_jsonl(RunPaths(spec.run_dir).oof_predictions)]
        assert sorted(seen) == train_ids


def test_fusion_trains_saves_and_scores_raw_code(fused_run) -> None:
    from streamguard_core.models.registry import load_detector

    data, plan, root = fused_run
    (spec,) = plan.fusion_jobs(data, root)
    status = run_job(spec)
    assert status.status == "completed", status.error
    paths = RunPaths(spec.run_dir)
    metrics = json.loads(paths.metrics.read_text())
    assert 0.0 <= metrics["valid"]["roc_auc"] <= 1.0
    detector = load_detector(paths.model)
    card = json.loads((paths.model / "model_card.json").read_text())
    assert card["kind"] == "fusion" and card["base_models"] == ["baseline", "chars"]
    assert abs(sum(card["mixture"].values()) - 1.0) < 1e-6
    valid = ProcessedDataset(data).split("valid").records
    written = [r["probability"] for r in read_jsonl(paths.valid_predictions)]
    scored = detector.predict_proba([r["func"] for r in valid])
    np.testing.assert_allclose(scored, written, atol=1e-5)


def test_fusion_refuses_a_failed_fold(fused_run, tmp_path) -> None:
    import shutil

    data, plan, root = fused_run
    copy = tmp_path / "runs"
    shutil.copytree(root, copy)
    broken = plan.oof_jobs(data, copy)[1]
    status_file = RunPaths(broken.run_dir).status
    status = json.loads(status_file.read_text())
    status.update(status="collapsed", error="loss_nan: loss is NaN")
    status_file.write_text(json.dumps(status))
    (spec,) = plan.fusion_jobs(data, copy)
    result = run_job(spec)
    assert result.status == "failed"
    assert "fold_1" in (result.error or "") and "collapsed" in (result.error or "")
    assert not RunPaths(spec.run_dir).model.exists()
