"""The model comparison as Prefect tasks: compute it, then publish it as UI artifacts.

``compare_task`` calls :func:`streamguard_core.evaluation.compare.compare_runs` (files in
``<output_root>/evaluation/``). ``publish_comparison`` turns its result into a markdown artifact
(key ``model-comparison``) with the plots embedded as ``data:image/png;base64`` images, so the
Prefect UI shows them without access to the worker's disk, and a table artifact of the pairwise
tests (key ``model-comparison-tests``).
"""

from __future__ import annotations

import base64
from pathlib import Path
from typing import Any

from prefect import task
from prefect.artifacts import create_markdown_artifact, create_table_artifact
from prefect.cache_policies import NO_CACHE

from streamguard_core.evaluation.compare import (
    DEFAULT_TARGET_PRECISION,
    METRIC_LABELS,
    TESTS,
    compare_runs,
    comparison_markdown,
)
from streamguard_core.evaluation.stats import DEFAULT_N_BOOT

COMPARISON_KEY = "model-comparison"
TESTS_TABLE_KEY = "model-comparison-tests"


@task(name="compare", retries=0, cache_policy=NO_CACHE)  # reads files that change: never cached
def compare_task(
    output_root: str,
    models: list[str],
    seeds: list[int],
    target_precision: float = DEFAULT_TARGET_PRECISION,
    n_boot: int = DEFAULT_N_BOOT,
) -> dict[str, Any]:
    """Compare ``models`` over ``seeds`` under ``output_root``; returns the evaluation dict."""
    return compare_runs(
        output_root, models, seeds, target_precision=target_precision, n_boot=n_boot
    )


def embedded_images(evaluation: dict[str, Any]) -> dict[str, str]:
    """Each plot of the evaluation as a ``data:image/png;base64,...`` URI (missing files are
    left out, and the markdown then falls back to the file name)."""
    links = {}
    for key, path in (evaluation.get("plots") or {}).items():
        file = Path(path)
        if file.is_file():
            links[key] = "data:image/png;base64," + base64.b64encode(file.read_bytes()).decode()
    return links


def pairwise_rows(evaluation: dict[str, Any]) -> list[dict[str, Any]]:
    """One table row per pair x test: effect with its CI, p (max over seeds), every seed's p,
    the seed-mean test's p, the Holm-adjusted p and the verdict."""
    rows = []
    for pair in evaluation["pairs"]:
        for test in pair["tests"]:
            rows.append(
                {
                    "a": pair["model_a"],
                    "b": pair["model_b"],
                    "test": TESTS[test["test"]][1],
                    "metric": METRIC_LABELS[test["metric"]],
                    "effect_a_minus_b": test["effect"],
                    "ci95_low": test.get("ci95_low"),
                    "ci95_high": test.get("ci95_high"),
                    "p_max_over_seeds": test["p"],
                    "p_per_seed": ", ".join(
                        f"{r['seed']}: {r['p']:.3g}" if r["p"] is not None else f"{r['seed']}: n/a"
                        for r in test["per_seed"]
                    ),
                    "p_seed_mean": (test.get("seed_mean") or {}).get("p"),
                    "p_holm": test["p_holm"],
                    "significant": test["significant"],
                    "verdict": test["verdict"],
                }
            )
    return rows


@task(name="publish-comparison", retries=3, retry_delay_seconds=[2, 5, 15])
def publish_comparison(evaluation: dict[str, Any]) -> None:
    """The comparison's markdown (plots embedded) and its pairwise-test table as artifacts."""
    markdown = (
        f"> Files: `{evaluation.get('evaluation_path')}` and the PNG plots beside it.\n\n"
        + comparison_markdown(evaluation, image_links=embedded_images(evaluation))
    )
    create_markdown_artifact(
        key=COMPARISON_KEY,
        markdown=markdown,
        description="Models with mean ± 95% CI over seeds, paired tests with Holm-adjusted "
        "p-values, calibration and plots",
    )
    create_table_artifact(
        key=TESTS_TABLE_KEY,
        table=pairwise_rows(evaluation),
        description="Pairwise tests: effect (A - B) with its 95% CI, p (largest over seeds), "
        "per-seed p, seed-mean p and Holm-adjusted p",
    )
