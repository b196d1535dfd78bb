"""Phase-2 tasks: score, weight, merge (with its distribution check) and compare the phases."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

from prefect import task
from prefect.artifacts import create_markdown_artifact, create_table_artifact
from prefect.cache_policies import CacheKeyFnPolicy

from streamguard_core.collect.records import FUNCTIONS_FILE
from streamguard_core.collect.store import load_collected
from streamguard_core.config import Phase2Config
from streamguard_core.io import atomic_write_json
from streamguard_core.phase2 import merge, noise, run
from streamguard_core.phase2.compare import compare_phases, phase_markdown
from tasks.events import DISTRIBUTION_SHIFT, PHASE_COMPARED, emit


@task(name="split-projects")
def split_task(config: Phase2Config) -> dict[str, Any]:
    """Collected projects -> train (weighted, trained on) and test (held out); ``split.json``."""
    rows, repeats = collected_rows(config)
    projects = sorted({str(r["project"]) for r in rows})
    train, test = merge.split_projects(projects, config.merge)
    train_rows, test_rows = run.split_rows(rows, train)
    out = {
        "train_projects": train,
        "test_projects": test,
        "rows": len(rows),
        "repeats_folded": repeats,
        "train_rows": len(train_rows),
        "test_rows": len(test_rows),
    }
    atomic_write_json(Path(config.output_root) / "split.json", out)
    print(
        f"{len(rows):,} collected function versions ({repeats:,} repeats of the same change "
        f"under another advisory folded) of {len(projects)} projects; test projects {test} "
        f"({len(test_rows):,} rows), train {len(train_rows):,} rows"
    )
    return out


def collected_rows(config: Phase2Config) -> tuple[list[dict[str, Any]], int]:
    """Every collected function version once (:func:`run.unique_changes`)."""
    return run.unique_changes(load_collected(config.collected_dir))


def _score_key(context: Any, parameters: dict[str, Any]) -> str:
    """Scores are reused while the phase-1 models, the scorers and the collected rows are the
    same (a second phase-2 run with other noise settings does not score again)."""
    config: Phase2Config = parameters["config"]
    h = hashlib.sha256(json.dumps(parameters["train_projects"]).encode())
    h.update(json.dumps(parameters["scorers"]).encode())
    for path in sorted(Path(config.collected_dir).glob(f"*/{FUNCTIONS_FILE}")):
        h.update(f"{path}:{path.stat().st_size}:{path.stat().st_mtime_ns}".encode())
    for status in sorted(Path(config.phase1_root).glob("*/seed_*/run_status.json")):
        h.update(f"{status}:{status.stat().st_mtime_ns}".encode())
    return h.hexdigest()


@task(
    name="score-collected",
    cache_policy=CacheKeyFnPolicy(cache_key_fn=_score_key),
    persist_result=True,
)
def score_task(
    config: Phase2Config, scorers: list[str], train_projects: list[str]
) -> dict[str, Any]:
    """Every phase-1 model x seed scores the collected rows of the train projects."""
    rows, _ = run.split_rows(collected_rows(config)[0], train_projects)
    scores = run.score_collected(config.phase1_root, scorers, rows)
    print(f"{len(scores['scorers'])} phase-1 runs scored {len(rows):,} collected functions")
    return scores


@task(name="noise-reduction")
def noise_task(
    config: Phase2Config, scores: dict[str, Any], train_projects: list[str]
) -> dict[str, Any]:
    """Weight the train-project rows by phase-1 confidence; the report says what was kept."""
    rows, _ = run.split_rows(collected_rows(config)[0], train_projects)
    probabilities = run.aligned_probabilities(scores, rows)
    result = noise.assign_weights(rows, probabilities, config.noise)
    without = None
    if config.noise.priors:  # measured with and without: the tiers the priors moved
        plain = config.noise.model_copy(update={"priors": []})
        without = noise.assign_weights(rows, probabilities, plain)
    out = Path(config.output_root) / "noise"
    noise.write_weighted(rows, result, out / "weighted.jsonl")
    noise.write_dropped(rows, result, out / "dropped.jsonl", config.noise)
    report = noise.noise_report(rows, result, config.noise, without_priors=without)
    report["scorers"] = scores["scorers"]
    atomic_write_json(out / "noise_report.json", report)
    markdown = noise.noise_markdown(report)
    (out / "noise_report.md").write_text(markdown)
    create_markdown_artifact(key="phase2-noise", markdown=markdown)
    return {"weighted": str(out / "weighted.jsonl"), "report": report}


@task(name="merge-collected")
def merge_task(
    config: Phase2Config, weighted_path: str, test_projects: list[str]
) -> dict[str, Any]:
    """Merged train/valid/test inputs and the distribution check (a warning artifact and a
    ``streamguard.phase2.distribution_shift`` event when a bound is passed)."""
    from streamguard_core.io import read_jsonl

    weighted = list(read_jsonl(weighted_path))
    test_rows = [r for r in collected_rows(config)[0] if r.get("project") in set(test_projects)]
    phase1_data = Path(config.phase1_root) / "data"
    out = Path(config.output_root) / "merged"
    inputs = merge.write_merged_inputs(phase1_data, weighted, test_rows, out)
    phase1_train = run.phase1_records(phase1_data, "train")
    merged_train = phase1_train + weighted
    check = merge.distribution_check(phase1_train, merged_train, config.merge)
    atomic_write_json(out / "distribution.json", check)
    markdown = merge.distribution_markdown(check)
    (out / "distribution.md").write_text(markdown)
    create_markdown_artifact(key="phase2-distribution", markdown=markdown)
    if check["warnings"]:
        for warning in check["warnings"]:
            print(f"WARNING distribution shift: {warning}")
        create_markdown_artifact(
            key="phase2-distribution-warning",
            markdown="# Distribution shift\n\n" + "\n".join(f"- {w}" for w in check["warnings"]),
            description="Merged data moved past a configured bound",
        )
        emit(DISTRIBUTION_SHIFT, {"warnings": check["warnings"], "merged": str(out)})
    return {"inputs": inputs, "warnings": check["warnings"]}


@task(name="compare-phases")
def compare_task(
    config: Phase2Config, data_dir: str, models: list[str], seeds: list[int]
) -> dict[str, Any]:
    """Phase 1 vs phase 2 on the same items with the paired statistics; the verdicts."""
    out = Path(config.output_root) / "comparison"
    result = compare_phases(
        config.phase1_root,
        str(Path(config.output_root) / "retrain"),
        data_dir,
        models,
        out,
        seeds=seeds,
    )
    create_markdown_artifact(key="phase-comparison", markdown=phase_markdown(result))
    rows = []
    for split, per_split in result.get("splits", {}).items():
        for model, verdict in per_split.get("models", {}).items():
            rows.append({"split": split, "model": model, "verdict": verdict.get("verdict")})
    if rows:
        create_table_artifact(key="phase-verdicts", table=rows, description="Phase 2 vs phase 1")
    emit(PHASE_COMPARED, {"verdicts": rows})
    return result
