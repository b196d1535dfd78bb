"""The comparison tasks in a flow: artifacts in the Prefect API, with the plots embedded.

A tiny flow runs ``compare_task`` and ``publish_comparison`` (tasks/evaluation.py) on synthetic
predictions written in tmp_path, under the session's ``prefect_test_harness``; the artifacts are
read back through the Prefect client.
"""

from __future__ import annotations

import base64
import json
import re
from pathlib import Path

import numpy as np
import pytest

from streamguard_core.config import seed_dir
from streamguard_core.io import atomic_write_json, write_jsonl

N_ITEMS = 300


def write_synthetic_runs(root: Path, separations: dict[str, float], seeds: list[int]) -> None:
    """``<root>/<model>/seed_<s>/predictions.jsonl`` (+ status, metrics) of models whose logit is
    ``separation * (2y - 1)`` plus unit Gaussian noise."""
    rng = np.random.default_rng(0)
    labels = (rng.random(N_ITEMS) < 0.45).astype(int)
    for model, separation in separations.items():
        for seed in seeds:
            noise = np.random.default_rng([seed, int(separation * 100)]).normal(0, 1, N_ITEMS)
            p = 1 / (1 + np.exp(-(separation * (2 * labels - 1) + noise)))
            run = seed_dir(root, model, seed)
            write_jsonl(run / "predictions.jsonl", (
                {"id": f"fn{i}", "label": int(labels[i]), "probability": float(p[i]),
                 "prediction": int(p[i] >= 0.5)} for i in range(N_ITEMS)
            ))  # fmt: skip
            atomic_write_json(run / "metrics.json", {"valid": {"threshold": 0.5}})
            atomic_write_json(run / "run_status.json", {"status": "completed"})


def _artifacts(flow_run_id, key: str):
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterKey

    with get_client(sync_client=True) as client:
        return [
            a
            for a in client.read_artifacts(
                artifact_filter=ArtifactFilter(key=ArtifactFilterKey(any_=[key]))
            )
            if a.flow_run_id == flow_run_id
        ]


@pytest.fixture(scope="module")
def comparison_run(prefect_harness, tmp_path_factory):
    """One flow run of compare + publish over 'fusion' (strong) and 'baseline' (weak)."""
    from prefect import flow

    from tasks.evaluation import compare_task, publish_comparison

    root = tmp_path_factory.mktemp("compare_runs")
    write_synthetic_runs(root, {"fusion": 2.0, "baseline": 0.3}, [42, 43])

    @flow(name="compare-artifacts-test")
    def comparison_flow(output_root: str) -> dict:
        evaluation = compare_task(output_root, ["fusion", "baseline"], [42, 43], 0.9, n_boot=300)
        publish_comparison(evaluation)
        return evaluation

    state = comparison_flow(str(root), return_state=True)
    return root, state


def test_compare_task_returns_and_writes_the_evaluation(comparison_run):
    root, state = comparison_run
    assert state.is_completed(), state.message
    evaluation = state.result()
    assert json.loads((root / "evaluation" / "evaluation.json").read_text()) == evaluation
    assert evaluation["models"]["fusion"]["n_seeds"] == 2
    delong = next(t for t in evaluation["pairs"][0]["tests"] if t["test"] == "delong")
    assert delong["effect"] > 0.2 and delong["significant"]


def test_markdown_artifact_embeds_the_plots(comparison_run):
    root, state = comparison_run
    (artifact,) = _artifacts(state.state_details.flow_run_id, "model-comparison")
    assert artifact.type == "markdown"
    markdown = artifact.data
    assert (
        "| fusion (2 seeds) | " in markdown and "- fusion beats baseline on ROC-AUC: +" in markdown
    )
    images = dict(re.findall(r"!\[(\w+)\]\(data:image/png;base64,([A-Za-z0-9+/=]+)\)", markdown))
    assert set(images) == {"roc_pr", "reliability", "f1_per_seed"}
    for key, encoded in images.items():
        png = base64.b64decode(encoded)
        assert png[:8] == b"\x89PNG\r\n\x1a\n"
        assert png == (root / "evaluation" / f"{key}.png").read_bytes()


def test_table_artifact_lists_every_pairwise_test(comparison_run):
    _, state = comparison_run
    (artifact,) = _artifacts(state.state_details.flow_run_id, "model-comparison-tests")
    rows = json.loads(artifact.data)
    assert [(r["a"], r["b"], r["test"]) for r in rows] == [
        ("fusion", "baseline", "paired bootstrap"),
        ("fusion", "baseline", "paired bootstrap"),
        ("fusion", "baseline", "McNemar exact"),
        ("fusion", "baseline", "DeLong"),
    ]
    for row in rows:
        assert 0 < row["p_max_over_seeds"] <= row["p_holm"] < 0.05 and row["significant"]
        assert row["p_per_seed"].startswith("42: ") and ", 43: " in row["p_per_seed"]
        assert row["effect_a_minus_b"] > 0 and row["ci95_low"] > 0
