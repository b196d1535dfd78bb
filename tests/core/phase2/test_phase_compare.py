"""Phase comparison on tiny real detectors: both phases scored on the same items, the verdicts."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from streamguard_core.data.splits import assign_splits
from streamguard_core.data.synthetic import generate_synthetic
from streamguard_core.io import atomic_write_json, read_jsonl, write_jsonl
from streamguard_core.models.baseline import BaselineConfig, BaselineDetector
from streamguard_core.phase2.compare import (
    COMPARISON_FILE,
    MARKDOWN_FILE,
    NO_DIFFERENCE,
    PHASE2_BETTER,
    compare_phases,
    pair_seeds,
)
from streamguard_core.phase2.score import ScoringError

MODELS = {"baseline": "tokens", "chars": "chars"}
N_BOOT = 200


def _save_run(root: Path, model: str, seed: int, detector: BaselineDetector) -> None:
    """A finished run as the pipeline leaves it: model/, run_status.json, predictions.jsonl."""
    run = root / model / f"seed_{seed}"
    detector.save(run / "model")
    atomic_write_json(run / "run_status.json", {"model": model, "seed": seed,
                                                "status": "completed"})  # fmt: skip
    write_jsonl(run / "predictions.jsonl", [{"id": "x", "label": 0, "probability": 0.1,
                                             "prediction": 0}])  # fmt: skip


@pytest.fixture(scope="module")
def world(tmp_path_factory) -> dict[str, Path]:
    """A data dir (valid, test) and run roots: phase 1 trained on shuffled labels (chance),
    phase 2 on the real labels; seeds 42 and 43 (and a phase 2 with seed 7 only)."""
    tmp = tmp_path_factory.mktemp("phases")
    records = generate_synthetic(pairs_per_cwe=16, seed=3)
    splits = assign_splits(records, "group", ratios=(0.5, 0.25, 0.25), seed=3).splits
    data = tmp / "data"
    for split in ("valid", "test"):
        write_jsonl(data / split / "records.jsonl", (r.to_dict() for r in splits[split]))
    train, valid = splits["train"], splits["valid"]
    funcs, labels = [r.func for r in train], np.array([r.label for r in train])
    valid_funcs, valid_labels = [r.func for r in valid], [r.label for r in valid]
    roots = {name: tmp / name for name in ("phase1", "phase2", "phase2_seed7")}
    for model, features in MODELS.items():
        for seed in (42, 43):
            shuffled = np.random.default_rng(seed).permutation(labels)
            chance = BaselineDetector(BaselineConfig(min_df=1, features=features), seed=seed)
            chance.fit(funcs, shuffled, valid_funcs, valid_labels)
            _save_run(roots["phase1"], model, seed, chance)
            good = BaselineDetector(BaselineConfig(min_df=1, features=features), seed=seed)
            good.fit(funcs, labels, valid_funcs, valid_labels)
            _save_run(roots["phase2"], model, seed, good)
        _save_run(roots["phase2_seed7"], model, 7, good)
    return {"data": data, **roots}


def _predictions(path: Path) -> list[dict]:
    return list(read_jsonl(path))


def test_a_better_phase_2_wins_on_the_same_items(world, tmp_path):
    out = tmp_path / "cmp"
    result = compare_phases(
        world["phase1"], world["phase2"], world["data"], list(MODELS), out, n_boot=N_BOOT
    )
    assert (out / COMPARISON_FILE).is_file() and (out / MARKDOWN_FILE).is_file()
    assert json.loads((out / COMPARISON_FILE).read_text()) == result
    for split in ("valid", "test"):
        data_rows = list(read_jsonl(world["data"] / split / "records.jsonl"))
        ids = [r["id"] for r in data_rows]
        part = result["splits"][split]
        assert part["n"] == len(ids)
        for model in MODELS:
            for seed in (42, 43):
                p1_dir = out / split / f"phase1-{model}" / f"seed_{seed}"
                p2_dir = out / split / f"phase2-{model}" / f"seed_{seed}"
                p1, p2 = (
                    _predictions(p1_dir / "predictions.jsonl"),
                    _predictions(p2_dir / "predictions.jsonl"),
                )
                assert [r["id"] for r in p1] == [r["id"] for r in p2] == ids
                assert [r["label"] for r in p2] == [r["label"] for r in data_rows]
                threshold = json.loads(
                    (world["phase2"] / model / f"seed_{seed}" / "model" / "model_card.json")
                    .read_text()
                )["threshold"]  # fmt: skip
                assert all(r["prediction"] == int(r["probability"] >= threshold) for r in p2)
                status = json.loads((p1_dir / "run_status.json").read_text())
                assert status["status"] == "completed"
            entry = part["models"][model]
            assert (out / split / model / "evaluation.json").is_file()
            assert entry["paired_seeds"] == [42, 43]
            delong = entry["tests"]["delong"]
            assert entry["phase2"]["roc_auc"] > entry["phase1"]["roc_auc"]
            assert delong["effect"] == pytest.approx(
                entry["phase2"]["roc_auc"] - entry["phase1"]["roc_auc"]
            )
            assert delong["effect"] > 0 and delong["p_holm"] < 0.05
            assert delong["p_holm"] >= delong["p"]  # Holm over the split's 4 tests
            assert entry["verdict"] == PHASE2_BETTER
    assert result["seed_pairing"]["baseline"]["mode"] == "by value"
    text = (out / MARKDOWN_FILE).read_text()
    assert text.count(PHASE2_BETTER) == 4  # 2 models x 2 splits
    tables = [line for line in text.splitlines() if line.startswith("|")]
    assert max(line.count("|") - 1 for line in tables) == 7


def test_identical_models_show_no_difference(world, tmp_path):
    result = compare_phases(
        world["phase1"], world["phase1"], world["data"], ["baseline"], tmp_path / "same",
        splits=("test",), n_boot=N_BOOT,
    )  # fmt: skip
    entry = result["splits"]["test"]["models"]["baseline"]
    assert entry["verdict"] == NO_DIFFERENCE
    for test in entry["tests"].values():
        assert test["effect"] == 0 and test["p"] == 1.0 and test["p_holm"] == 1.0


def test_seeds_without_overlap_pair_by_position_and_missing_splits_are_noted(world, tmp_path):
    out = tmp_path / "pos"
    # ``seeds`` is the phase-2 plan's (as the phase2 flow passes it): phase 1 keeps its own
    result = compare_phases(
        world["phase1"], world["phase2_seed7"], world["data"], ["baseline"], out,
        splits=("train", "test"), seeds=[7], n_boot=N_BOOT,
    )  # fmt: skip
    pairing = result["seed_pairing"]["baseline"]
    assert pairing["mode"] == "by position"
    assert pairing["pairs"] == [{"phase1": 42, "phase2": 7, "as": 42}]
    assert any("by position" in note for note in result["notes"])
    assert any("'train'" in note and "skipped" in note for note in result["notes"])
    assert set(result["splits"]) == {"test"}
    written = json.loads(
        (out / "test" / "phase2-baseline" / "seed_42" / "run_status.json").read_text()
    )
    assert written["seed"] == 7  # phase 2's seed 7, written under phase 1's 42
    entry = result["splits"]["test"]["models"]["baseline"]
    assert entry["paired_seeds"] == [42] and entry["phase1"]["seeds"] == [42, 43]
    assert entry["verdict"] == PHASE2_BETTER
    assert "by position" in (out / MARKDOWN_FILE).read_text()


def test_a_model_missing_from_a_root_is_an_error(world, tmp_path):
    with pytest.raises(ScoringError, match="gnn"):
        compare_phases(world["phase1"], world["phase2"], world["data"], ["gnn"], tmp_path)


def test_pair_seeds():
    assert pair_seeds([42, 43, 44], [42])["pairs"] == [{"phase1": 42, "phase2": 42, "as": 42}]
    by_position = pair_seeds([44, 42], [9, 8, 7])
    assert by_position["mode"] == "by position"
    assert [(p["phase1"], p["phase2"]) for p in by_position["pairs"]] == [(42, 7), (44, 8)]
    assert by_position["phase2_as"] == {7: 42, 8: 44, 9: 9}


def test_pairwise_order_counts_pre_fix_above_post_fix() -> None:
    from streamguard_core.phase2.compare import pairwise_order

    groups = ["a", "a", "b", "b", "c", "c", "d", None, "e", "e", "e"]
    labels = [1, 0, 1, 0, 0, 1, 1, 0, 1, 0, 1]
    probs = np.asarray([0.9, 0.2, 0.4, 0.4, 0.3, 0.1, 0.5, 0.5, 0.6, 0.6, 0.6])
    result = pairwise_order(groups, labels, probs)
    # a: right, b: tie (half), c: wrong; d has one member, e three: not pairs
    assert result is not None and result["pairs"] == 3
    assert result["pre_fix_higher"] == pytest.approx(1.5 / 3)
    assert result["median_gap"] == pytest.approx(0.2)
    assert 0.0 < result["p_binomial"] <= 1.0
    assert pairwise_order([None, None], [1, 0], np.asarray([0.1, 0.2])) is None
    # forty pairs all ordered right: far from a coin
    many = pairwise_order([f"g{i // 2}" for i in range(80)], [1, 0] * 40,
                          np.asarray([0.7, 0.3] * 40))  # fmt: skip
    assert many is not None and many["pre_fix_higher"] == 1.0 and many["p_binomial"] < 1e-9
