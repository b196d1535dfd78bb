"""The production flows under one ephemeral Prefect server: pipeline, failures, cache, retrain."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from streamguard_core.config import DataConfig, PreprocessConfig
from streamguard_core.pipeline.config import SuccessCriteria, TrainingPlan

TINY = {
    "epochs": 1, "max_steps_per_epoch": 3, "batch_size": 16, "num_threads": 1,
    "transformer_hidden_dim": 32, "transformer_layers": 1, "gnn_hidden_dim": 64, "gnn_layers": 2,
}  # fmt: skip
DATA = DataConfig(synthetic_pairs_per_cwe=4)
PREP = PreprocessConfig(workers=1, vocab_size=400, max_seq_len=128)


def _artifacts(flow_run_ids: list, key: str):
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterKey

    with get_client(sync_client=True) as client:
        return [
            a
            for a in client.read_artifacts(
                artifact_filter=ArtifactFilter(key=ArtifactFilterKey(any_=[key]))
            )
            if a.flow_run_id in flow_run_ids
        ]


def _subflow_ids(parent_id) -> list:
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterParentFlowRunId

    with get_client(sync_client=True) as client:
        children = client.read_flow_runs(
            flow_run_filter=FlowRunFilter(
                parent_flow_run_id=FlowRunFilterParentFlowRunId(any_=[parent_id])
            )
        )
    return [parent_id, *[c.id for c in children]]


@pytest.fixture(scope="module")
def pipeline_run(prefect_harness, tmp_path_factory):
    """One quick pipeline run (preflight included), every model, two seeds."""
    from flows.pipeline import streamguard_pipeline

    root = tmp_path_factory.mktemp("pipeline")
    state = streamguard_pipeline(
        DATA, PREP, TrainingPlan(seeds=[42, 43], **TINY), SuccessCriteria(min_mean_f1=0.0),
        str(root), return_state=True,
    )  # fmt: skip
    return root, state


def test_pipeline_writes_the_layout_summary_and_report(pipeline_run):
    root, state = pipeline_run
    assert state.is_completed(), state.message
    summary = state.result()
    for model in ("transformer", "gnn", "baseline"):
        for seed in (42, 43):
            run = root / model / f"seed_{seed}"
            status = json.loads((run / "run_status.json").read_text())
            assert status["status"] == "completed", status
            assert (run / "metrics.json").exists() and (run / "model" / "model_card.json").exists()
        per_model = json.loads((root / model / "production_summary.json").read_text())
        assert per_model["n_completed"] == 2
        f1s = [row["f1"] for row in per_model["seeds"]]
        assert per_model["metrics"]["f1"]["mean"] == pytest.approx(sum(f1s) / 2)
    overall = json.loads((root / "production_summary" / "production_summary.json").read_text())
    assert overall["best_overall_model"] == summary["best_overall_model"]
    assert overall["best_overall_f1"] == max(
        m["metrics"]["f1"]["mean"] for m in overall["models"].values()
    )
    assert overall["success"]["passed"] is True  # min_mean_f1 0: nothing can fail
    report = (root / "production_summary" / "production_report.md").read_text()
    assert "Verdict: PASSED" in report
    for png in ("training_curves.png", "confusion_matrix.png", "pr_curve.png"):
        assert (root / "production_summary" / png).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert json.loads((root / "preflight_report.json").read_text())["go"] is True


def test_pipeline_publishes_artifacts_to_the_ui(pipeline_run):
    _, state = pipeline_run
    runs = _subflow_ids(state.state_details.flow_run_id)
    table = _artifacts(runs, "production-summary")
    assert table, "no production-summary table artifact"
    rows = json.loads(table[0].data)
    assert {(r["model"], r["seed"]) for r in rows} == {
        (m, s) for m in ("transformer", "gnn", "baseline") for s in (42, 43)
    }
    report = _artifacts(runs, "production-report")
    assert report and "Verdict: PASSED" in report[0].data
    progress = _artifacts(runs, "training-progress-gnn-seed-42")
    assert progress and float(progress[0].data) == 100.0


def test_a_failed_seed_does_not_cancel_the_others(prefect_harness, pipeline_run, tmp_path):
    from flows.train_production import train_production

    root, _ = pipeline_run
    plan = TrainingPlan(
        models=["transformer", "baseline"], seeds=[42],
        **{**TINY, "transformer_model": str(tmp_path / "no-such-model")},
    )  # fmt: skip
    out = tmp_path / "out"
    summary = train_production(str(root / "data"), plan, SuccessCriteria(min_mean_f1=0.0), str(out))
    failed = json.loads((out / "transformer" / "seed_42" / "run_status.json").read_text())
    assert failed["status"] == "failed" and "no-such-model" in failed["error"]
    assert (
        json.loads((out / "baseline" / "seed_42" / "run_status.json").read_text())["status"]
        == "completed"
    )
    assert summary["models"]["transformer"]["n_failed"] == 1
    assert summary["best_overall_model"] == "baseline"
    checks = {c["name"]: c for c in summary["success"]["checks"]}
    assert checks["all_seeds_completed"]["passed"] is False
    assert summary["success"]["passed"] is False
    report = (out / "production_summary" / "production_report.md").read_text()
    assert "no-such-model" in report


def test_training_is_cached_and_reruns_when_outputs_are_gone(prefect_harness, pipeline_run):
    from flows.train_production import train_production

    root, _ = pipeline_run
    plan = TrainingPlan(models=["gnn", "baseline"], seeds=[42, 43], **TINY)
    stamps = {
        p: p.stat().st_mtime_ns
        for p in (root / "gnn" / "seed_42" / "run_status.json",
                  root / "baseline" / "seed_43" / "run_status.json")
    }  # fmt: skip
    # the pipeline's own task runs used the same inputs: this rerun is served from the cache
    train_production(str(root / "data"), plan, SuccessCriteria(min_mean_f1=0.0), str(root))
    assert {p: p.stat().st_mtime_ns for p in stamps} == stamps
    # a run whose files are gone is trained again, the others stay cached
    (root / "gnn" / "seed_42" / "run_status.json").unlink()
    train_production(str(root / "data"), plan, SuccessCriteria(min_mean_f1=0.0), str(root))
    assert (root / "gnn" / "seed_42" / "run_status.json").exists()
    baseline = root / "baseline" / "seed_43" / "run_status.json"
    assert baseline.stat().st_mtime_ns == stamps[baseline]


def test_preflight_no_go_fails_the_pipeline_before_training(prefect_harness, tmp_path):
    from flows.pipeline import streamguard_pipeline

    one_class = tmp_path / "all_safe.jsonl"
    # structurally distinct functions (normalised dedup would merge renamed copies), all safe
    one_class.write_text(
        "".join(
            json.dumps({"func": "int f(int x) { " + "x = x + 1; " * (i + 1) + "return x; }",
                        "target": 0}) + "\n"
            for i in range(60)
        )
    )  # fmt: skip
    state = streamguard_pipeline(
        DataConfig(inputs=[str(one_class)]), PREP, TrainingPlan(models=["baseline"], **TINY),
        SuccessCriteria(), str(tmp_path / "out"), return_state=True,
    )  # fmt: skip
    assert state.is_failed()
    with pytest.raises(Exception, match="preflight no-go: data: train holds label"):
        state.result()
    report = json.loads((tmp_path / "out" / "preflight_report.json").read_text())
    assert report["go"] is False
    assert not (tmp_path / "out" / "baseline").exists()


def test_monthly_retrain_promotes_only_a_better_model(prefect_harness, tmp_path):
    from flows.monthly_retrain import monthly_retrain
    from streamguard_core.pipeline.registry import ModelRegistry

    registry = tmp_path / "registry"
    plan = TrainingPlan(models=["baseline"], seeds=[42], **TINY)
    args = (DATA, PREP, plan, SuccessCriteria(min_mean_f1=0.0), str(tmp_path / "monthly"),
            str(registry))  # fmt: skip
    first = monthly_retrain(*args, run_preflight=False)
    assert first["promote"] is True and first["previous"] == "none"
    assert ModelRegistry(registry).production()["version"] == first["version"]
    # the same data and model again: equal F1 on the same validation data is not better
    second = monthly_retrain(*args, run_preflight=False)
    assert second["promote"] is False
    assert second["candidate"] == pytest.approx(second["production"])
    reg = ModelRegistry(registry)
    assert reg.versions() == [first["version"], second["version"]]
    assert reg.production()["version"] == first["version"]
    assert len(reg.history()) == 1


def test_task_bodies_run_without_prefect(tmp_path):
    """The thin tasks' bodies (``.fn``) call the core directly: no server, no run context."""
    from tasks.training import PreflightNoGo, aggregate_task, preflight_task

    with pytest.raises(PreflightNoGo, match="no such directory"):
        preflight_task.fn(str(tmp_path / "missing"), ["baseline"], TrainingPlan(**TINY), 128,
                          str(tmp_path / "preflight.json"))  # fmt: skip
    assert json.loads((tmp_path / "preflight.json").read_text())["go"] is False
    summary = aggregate_task.fn(str(tmp_path / "empty"), ["gnn"], [42], SuccessCriteria())
    assert summary["best_overall_model"] is None
    assert summary["models"]["gnn"]["n_failed"] == 1
    assert summary["success"]["passed"] is False
    assert Path(summary["report_path"]).exists()


def test_preprocessing_is_cached_on_input_content(prefect_harness, tmp_path):
    from prefect import flow

    from tasks.data import preprocess_task

    raw = tmp_path / "funcs.jsonl"
    rows = [
        {"func": "int f(int x) { " + "x = x + 1; " * (i + 1) + "return x; }", "target": i % 2}
        for i in range(40)
    ]
    raw.write_text("".join(json.dumps(r) + "\n" for r in rows))
    data = DataConfig(inputs=[str(raw)])
    out = str(tmp_path / "processed")

    @flow
    def twice() -> list[str]:
        first = preprocess_task(data, PREP, out, return_state=True)
        second = preprocess_task(data, PREP, out, return_state=True)
        raw.write_text(raw.read_text() + json.dumps({"func": "int g(void) { return 0; }",
                                                      "target": 1}) + "\n")  # fmt: skip
        third = preprocess_task(data, PREP, out, return_state=True)
        return [first.name, second.name, third.name, third.result()["counts"]["read"]]

    first, second, third, read = twice()
    assert (first, second, third) == ("Completed", "Cached", "Completed")  # same path, new bytes
    assert read == 41
