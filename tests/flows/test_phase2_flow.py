"""collect (offline source) -> phase 2 (score, weight, merge, retrain, compare) under a real
ephemeral Prefect server, on real OSS-Fuzz functions of four projects and a quick phase-1 run."""

from __future__ import annotations

import gzip
import json
from pathlib import Path

import pytest

from streamguard_core.config import (
    CollectConfig,
    FileSourceConfig,
    MergeConfig,
    NoiseConfig,
    Phase2Config,
)
from streamguard_core.io import read_jsonl
from streamguard_core.phase2.run import unique_changes

pytestmark = pytest.mark.slow

PROJECTS = ("curl", "file", "yara", "libarchive")
TEST_PROJECT = "file"


def _subset(shared: Path, out: Path) -> FileSourceConfig:
    """The shared OSS-Fuzz files cut to PROJECTS, plus one malformed line in each."""
    functions = out / "functions.jsonl.gz"
    records = out / "records.jsonl.gz"
    with (
        gzip.open(shared / "ossfuzz_fixes.jsonl.gz", "rt") as src,
        gzip.open(functions, "wt") as dst,
    ):
        for line in src:
            if json.loads(line)["project"] in PROJECTS:
                dst.write(line)
        dst.write('{"func": "int f(void) { return 0; }", "target": 1, "project": \n')
    with (
        gzip.open(shared / "osv_ossfuzz_records.jsonl.gz", "rt") as src,
        gzip.open(records, "wt") as dst,
    ):
        for line in src:
            record = json.loads(line)
            if record["affected"][0]["package"]["name"] in PROJECTS:
                dst.write(line)
        dst.write("{not json\n")
    return FileSourceConfig(records=str(records), functions=str(functions))


@pytest.fixture(scope="module")
def phase2_run(prefect_harness, shared_data, tmp_path_factory):
    from flows.collect import collect
    from flows.phase2 import phase2
    from flows.pipeline import streamguard_pipeline
    from tests.flows.test_pipeline import make_config

    root = tmp_path_factory.mktemp("phase2")
    source = _subset(shared_data, root)
    phase1 = make_config(root / "phase1", plan={"models": [{"kind": "baseline"}]},
                         run_preflight=False)  # fmt: skip
    assert streamguard_pipeline(phase1, return_state=True).is_completed()
    collect_config = CollectConfig(sources=[source], output_dir=str(root / "collected"))
    collected = collect(collect_config)
    config = Phase2Config(
        phase1_root=str(root / "phase1"),
        collected_dir=str(root / "collected"),
        output_root=str(root / "phase2"),
        noise=NoiseConfig(),
        merge=MergeConfig(test_projects=[TEST_PROJECT], max_collected_share=0.0),
        retrain=phase1.model_copy(update={"output_root": "ignored"}),
    )
    state = phase2(config, return_state=True)
    return root, collected, config, state


def test_collect_counts_every_row_of_the_offline_source(phase2_run) -> None:
    root, collected, _, _ = phase2_run
    (source,) = collected["sources"]
    with gzip.open(root / "functions.jsonl.gz", "rt") as fh:
        rows = sum(1 for _ in fh)
    # every line is a kept function or a reject: the malformed line is the one reject here
    functions = list(read_jsonl(root / "collected" / "file" / "functions.jsonl"))
    function_rejects = [
        r for r in read_jsonl(root / "collected" / "file" / "rejects.jsonl")
        if "functions.jsonl.gz" in (r["where"] or "")
    ]  # fmt: skip
    assert len(functions) + len(function_rejects) == rows
    assert [r["reason"] for r in function_rejects] == ["malformed_json"]
    assert {f["project"] for f in functions} == set(PROJECTS)
    assert source["functions"] == len(functions) and source["done"]
    record_rejects = [
        r for r in read_jsonl(root / "collected" / "file" / "rejects.jsonl")
        if "records.jsonl.gz" in (r["where"] or "")
    ]  # fmt: skip
    assert "malformed_json" in {r["reason"] for r in record_rejects}


def test_phase2_weights_merges_retrains_and_compares(phase2_run) -> None:
    root, _, config, state = phase2_run
    assert state.is_completed(), state.message
    summary = state.result()
    out = Path(config.output_root)
    split = json.loads((out / "split.json").read_text())
    assert split["test_projects"] == [TEST_PROJECT]
    assert sorted(split["train_projects"]) == sorted(set(PROJECTS) - {TEST_PROJECT})
    # nothing lost: kept + dropped == every train-project row, each change once (a fix that
    # closes several advisories repeats its rows once per advisory)
    collected = list(read_jsonl(root / "collected" / "file" / "functions.jsonl"))
    unique, repeats = unique_changes(collected)
    assert split["repeats_folded"] == repeats == len(collected) - len(unique)
    train_rows = [r for r in unique if r["project"] != TEST_PROJECT]
    kept = list(read_jsonl(out / "noise" / "weighted.jsonl"))
    dropped = list(read_jsonl(out / "noise" / "dropped.jsonl"))
    assert len(kept) + len(dropped) == len(train_rows)
    assert {r["weight"] for r in kept} <= {1.0, 0.3, 0.1}
    assert all(r["project"] != TEST_PROJECT for r in kept)
    # the merged test split holds phase 1's test and the held-out project, unfiltered
    test = [r for r in read_jsonl(out / "merged" / "test.jsonl") if r["id"].startswith("file:")]
    assert {r["project"] for r in test} == {TEST_PROJECT}
    assert len(test) == sum(1 for r in unique if r["project"] == TEST_PROJECT)
    # the distribution check warned (the collected-share bound is 0 here)
    assert summary["distribution_warnings"]
    # the phase-2 run trained with weights and was compared with phase 1 on valid and test
    spec = json.loads(next((out / "retrain" / "baseline").glob("seed_*/exp_config.json"))
                      .read_text())  # fmt: skip
    assert spec["train"]["use_weights"] is True
    comparison = json.loads((out / "comparison" / "phase_comparison.json").read_text())
    assert set(comparison["splits"]) >= {"valid", "test"}
    # the held-out project's fix pairs: the pre-fix version against the fixed one
    pairwise = comparison["splits"]["test"]["models"]["baseline"]["pairwise"]
    assert pairwise["phase1"]["pairs"] > 0 and pairwise["phase2"]["pairs"] > 0
    assert 0.0 <= pairwise["phase2"]["pre_fix_higher"] <= 1.0
    verdicts = summary["verdicts"]
    assert set(verdicts["test"]) == {"baseline"}
    assert verdicts["test"]["baseline"] in {
        "phase 2 better", "phase 1 better", "no significant difference"
    }  # fmt: skip


def test_phase2_publishes_its_artifacts_and_warning(phase2_run) -> None:
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterKey

    keys = ["phase2-noise", "phase2-distribution-warning", "phase-comparison", "collect-counts"]
    with get_client(sync_client=True) as client:
        found = {
            a.key
            for a in client.read_artifacts(artifact_filter=ArtifactFilter(
                key=ArtifactFilterKey(any_=keys)))
        }  # fmt: skip
    assert found == set(keys)


def test_monthly_retrain_refreshes_through_collectors_with_offline_fallback(
    phase2_run, tmp_path
) -> None:
    """The online source is unreachable (a dead port): the collection yields nothing, so
    monthly-retrain collects the offline fallback, runs phase 2 and promotes its best model."""
    from flows.monthly_retrain import monthly_retrain
    from streamguard_core.config import HttpConfig, OSVSourceConfig
    from tests.flows.test_pipeline import make_config

    root, _, phase2_config, _ = phase2_run
    fallback = FileSourceConfig(
        records=str(root / "records.jsonl.gz"), functions=str(root / "functions.jsonl.gz")
    )
    collect = CollectConfig(
        sources=[OSVSourceConfig(export_url="http://127.0.0.1:9")],
        http=HttpConfig(timeout_s=1.0, max_retries=0),
        offline_fallback=fallback,
    )
    config = make_config(tmp_path / "monthly", plan={"models": [{"kind": "baseline"}]},
                         run_preflight=False)  # fmt: skip
    p2 = Phase2Config(merge=MergeConfig(test_projects=[TEST_PROJECT]))
    decision = monthly_retrain(config, str(tmp_path / "registry"), 0.0, collect, p2)
    (dated,) = (tmp_path / "monthly").iterdir()
    online = json.loads((dated / "collected" / "collect_summary.json").read_text())
    assert online["totals"].get("functions", 0) == 0
    offline = json.loads((dated / "collected-offline" / "collect_summary.json").read_text())
    assert offline["totals"]["functions"] > 0
    assert (dated / "phase2" / "comparison" / "phase_comparison.json").exists()
    # the candidate is phase 2's best model, promoted into an empty registry
    assert decision["promote"] and "phase2" in Path(decision["model_dir"]).parts
    del phase2_config
