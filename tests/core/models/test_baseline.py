"""TF-IDF + logistic regression baseline: learns, tunes a threshold, reloads without pickle."""

from __future__ import annotations

import json

import numpy as np
import pytest

from streamguard_core.data.splits import assign_splits
from streamguard_core.data.synthetic import generate_synthetic
from streamguard_core.models.baseline import BaselineConfig, BaselineDetector


@pytest.fixture(scope="module")
def synthetic_splits():
    records = generate_synthetic(pairs_per_cwe=12, seed=3)
    return assign_splits(records, "group", seed=3).splits


def test_learns_synthetic_flaws_and_round_trips(synthetic_splits, tmp_path):
    tr, va, te = (synthetic_splits[s] for s in ("train", "valid", "test"))
    det = BaselineDetector(BaselineConfig(min_df=1))
    metrics = det.fit(
        [r.func for r in tr], [r.label for r in tr], [r.func for r in va], [r.label for r in va]
    )
    assert metrics["n"] == len(va) and 0.0 < det.threshold < 1.0
    probs = det.predict_proba([r.func for r in te])
    assert probs.shape == (len(te),) and ((probs >= 0) & (probs <= 1)).all()
    y = np.array([r.label for r in te])
    # better than chance on held-out pairs (the fixed/vulnerable text differs by the fix only)
    assert probs[y == 1].mean() > probs[y == 0].mean()

    det.save(tmp_path / "model")
    card = json.loads((tmp_path / "model" / "model_card.json").read_text())
    assert card["kind"] == "baseline" and card["threshold"] == det.threshold
    assert not list((tmp_path / "model").glob("*.pkl"))
    again = BaselineDetector.load(tmp_path / "model")
    assert np.allclose(again.predict_proba([r.func for r in te]), probs, atol=1e-6)
    assert again.threshold == det.threshold


def test_refuses_one_class_and_wrong_kind(tmp_path):
    with pytest.raises(ValueError, match="one class"):
        BaselineDetector().fit(["int a;", "int b;"], [1, 1])
    (tmp_path / "model_card.json").write_text(json.dumps({"kind": "gnn"}))
    with pytest.raises(ValueError, match="not 'baseline'"):
        BaselineDetector.load(tmp_path)


@pytest.mark.slow
def test_devign_sample_beats_chance(shared_data):
    from streamguard_core.data.loaders import iter_records

    train = list(iter_records(shared_data / "devign_train.jsonl.gz", max_records=3000))
    valid = list(iter_records(shared_data / "devign_valid.jsonl.gz", max_records=800))
    det = BaselineDetector()
    metrics = det.fit(
        [r.func for r in train],
        [r.label for r in train],
        [r.func for r in valid],
        [r.label for r in valid],
    )
    assert metrics["roc_auc"] > 0.55  # Devign is hard; 3,000 functions already beat chance


def test_baseline_job_then_scoring_the_raw_test_file(tmp_path):
    """A baseline job on a processed data set; its saved model scores the raw test file as
    training scored the processed one."""
    from streamguard_core.config import DataConfig, PreprocessConfig, TrainJobSpec
    from streamguard_core.data.loaders import DataError
    from streamguard_core.evaluation.metrics import classification_metrics
    from streamguard_core.io import read_jsonl, write_jsonl
    from streamguard_core.models.registry import load_detector, load_labelled
    from streamguard_core.preprocess.run import preprocess
    from streamguard_core.training.run import train_job

    records = generate_synthetic(pairs_per_cwe=6, seed=5)
    splits = assign_splits(records, "group", seed=5).splits
    paths = {}
    for name, rows in splits.items():
        paths[name] = tmp_path / f"{name}.jsonl"
        write_jsonl(paths[name], ({"func": r.func, "target": r.label} for r in rows))
    data = tmp_path / "data"
    preprocess(
        DataConfig(inputs=[f"{s}={p}" for s, p in paths.items()], split_strategy="explicit",
                   dedup="none"),
        PreprocessConfig(workers=1, vocab_size=300),
        data,
        show_progress=False,
    )  # fmt: skip
    out = tmp_path / "run"
    spec = TrainJobSpec(model=BaselineConfig(min_df=1), seed=3, data_dir=str(data),
                        run_dir=str(out))  # fmt: skip
    metrics = train_job(spec)
    assert set(metrics) == {"valid", "test"} and metrics["test"]["n"] == len(splits["test"])
    assert json.loads((out / "metrics.json").read_text()) == metrics
    assert json.loads((out / "exp_config.json").read_text())["model"]["kind"] == "baseline"
    assert (out / "model" / "weights.npz").exists()
    card = json.loads((out / "model" / "model_card.json").read_text())
    assert card["seed"] == 3 and card["config"] == spec.model.model_dump(mode="json")

    preds = list(read_jsonl(out / "predictions.jsonl"))
    assert len(preds) == len(splits["test"]) and {"id", "label", "probability"} <= set(preds[0])
    detector = load_detector(out / "model")
    test_records, rejects = load_labelled(paths["test"])
    assert not rejects
    probs = detector.predict_proba([r.func for r in test_records])
    assert probs.tolist() == pytest.approx([p["probability"] for p in preds], abs=1e-6)
    scored = classification_metrics([r.label for r in test_records], probs, detector.threshold)
    assert scored["f1"] == pytest.approx(metrics["test"]["f1"])
    with pytest.raises(DataError, match=r"no model_card\.json"):
        load_detector(tmp_path)
