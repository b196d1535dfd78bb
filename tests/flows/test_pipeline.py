"""The production flows under one ephemeral Prefect server: pipeline, failures, cache, retrain.

Every flow takes one :class:`PipelineConfig`; the runs are tiny (3 optimizer steps, hidden
sizes 32-64) on a small synthetic data set. Tests that train (a process per job) are ``slow``.
"""

from __future__ import annotations

import json
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
import yaml

from streamguard_core.config import PipelineConfig

MODELS = [
    {"kind": "transformer", "hidden_size": 32, "num_layers": 1},
    {"kind": "gnn", "hidden_dim": 64, "num_layers": 2},
    {"kind": "baseline"},
]
TRAIN = {"epochs": 1, "max_steps_per_epoch": 3, "batch_size": 32, "num_threads": 1}
# judges only that every run completed without collapse: 3 steps learn nothing
ANY_F1 = {"min_mean_f1": 0.0, "max_f1_std": None, "beat_trivial": False}


def make_config(output_root: Path | str, **fields: Any) -> PipelineConfig:
    """A tiny pipeline config; ``plan``/``criteria``/... in ``fields`` replace the defaults."""
    plan = {"models": MODELS, "seeds": [42], "train": TRAIN, **fields.pop("plan", {})}
    return PipelineConfig.model_validate(
        {
            "data": {"synthetic_pairs_per_cwe": 4},
            "preprocessing": {"workers": 1, "vocab_size": 400, "max_seq_len": 128},
            "plan": plan,
            "criteria": ANY_F1,
            "output_root": str(output_root),
            **fields,
        }
    )


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
    state = streamguard_pipeline(make_config(root, plan={"seeds": [42, 43]}), return_state=True)
    return root, state


@pytest.mark.slow  # trains in a process per job
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
            spec = json.loads((run / "exp_config.json").read_text())
            assert spec["seed"] == seed and spec["train"]["max_steps_per_epoch"] == 3
        per_model = json.loads((root / model / "production_summary.json").read_text())
        assert per_model["n_completed"] == 2
        f1s = [row["f1"] for row in per_model["seeds"]]
        assert per_model["metrics"]["f1"]["mean"] == pytest.approx(sum(f1s) / 2)
    # the job spec carries the plan's model config into the run, field for field
    transformer = json.loads((root / "transformer" / "seed_42" / "exp_config.json").read_text())
    assert transformer["model"]["hidden_size"] == 32 and transformer["model"]["num_layers"] == 1
    assert transformer["model"]["max_seq_len"] == 128  # filled in from the data set
    overall = json.loads((root / "production_summary" / "production_summary.json").read_text())
    assert overall["best_overall_model"] == summary["best_overall_model"]
    assert overall["success"]["passed"] is True  # only completion is judged
    report = (root / "production_summary" / "production_report.md").read_text()
    assert "PASSED" in report
    for png in ("training_curves.png", "confusion_matrix.png", "pr_curve.png"):
        assert (root / "production_summary" / png).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert json.loads((root / "preflight_report.json").read_text())["go"] is True


@pytest.mark.slow  # trains in a process per job
def test_pipeline_publishes_artifacts_to_the_ui(pipeline_run):
    _, state = pipeline_run
    runs = _subflow_ids(state.state_details.flow_run_id)
    table = _artifacts(runs, "production-summary")
    assert table, "no production-summary table artifact"
    rows = json.loads(table[0].data)
    assert {(r["model"], r["seed"]) for r in rows} == {
        (m, s) for m in ("transformer", "gnn", "baseline") for s in (42, 43)
    }
    models = {r["model"]: r for r in json.loads(_artifacts(runs, "production-models")[0].data)}
    assert set(models) == {"transformer", "gnn", "baseline"}
    for row in models.values():
        # the synthetic data is paired: half the functions are vulnerable
        assert row["all_vulnerable_f1"] == pytest.approx(2 / 3, abs=0.05)
        assert row["majority_accuracy"] == pytest.approx(0.5, abs=0.05)
    assert models["baseline"]["criteria"] == "not judged"
    assert models["gnn"]["criteria"] == "passed"
    checks = json.loads(_artifacts(runs, "production-checks")[0].data)
    assert {(c["model"], c["check"]) for c in checks} >= {
        ("gnn", "mean_f1:gnn"), ("transformer", "f1_std:transformer"), (None, "no_collapse")
    }  # fmt: skip
    report = _artifacts(runs, "production-report")
    assert report and "PASSED" in report[0].data
    progress = _artifacts(runs, "training-progress-gnn-seed-42")
    assert progress and float(progress[0].data) == 100.0


@pytest.mark.slow  # trains in a process per job
def test_a_failed_seed_does_not_cancel_the_others(prefect_harness, pipeline_run, tmp_path):
    from flows.train_production import train_production

    root, _ = pipeline_run
    out = tmp_path / "out"
    missing = str(tmp_path / "no-such-model")
    config = make_config(
        out,
        plan={"models": [{"kind": "transformer", "model_name_or_path": missing},
                         {"kind": "baseline"}]},
    )  # fmt: skip
    state = train_production(str(root / "data"), config, return_state=True)
    failed = json.loads((out / "transformer" / "seed_42" / "run_status.json").read_text())
    assert failed["status"] == "failed" and "no-such-model" in failed["error"]
    assert (
        json.loads((out / "baseline" / "seed_42" / "run_status.json").read_text())["status"]
        == "completed"
    )
    # a run that did not complete fails the criteria: the flow run ends Failed, saying why
    assert state.is_failed()
    assert "all_seeds_completed" in state.message and "transformer seed 42 failed" in state.message
    summary = json.loads((out / "production_summary" / "production_summary.json").read_text())
    assert summary["models"]["transformer"]["n_failed"] == 1
    assert summary["best_overall_model"] == "baseline"
    report = (out / "production_summary" / "production_report.md").read_text()
    assert "no-such-model" in report


@pytest.mark.slow  # trains in a process per job
def test_training_is_cached_and_reruns_when_outputs_are_gone(prefect_harness, pipeline_run):
    from flows.train_production import train_production

    root, _ = pipeline_run
    config = make_config(root, plan={"models": MODELS[1:], "seeds": [42, 43]})
    stamps = {
        p: p.stat().st_mtime_ns
        for p in (root / "gnn" / "seed_42" / "run_status.json",
                  root / "baseline" / "seed_43" / "run_status.json")
    }  # fmt: skip
    # the pipeline's own task runs had the same job specs: this rerun is served from the cache
    train_production(str(root / "data"), config)
    assert {p: p.stat().st_mtime_ns for p in stamps} == stamps
    # a run whose files are gone is trained again, the others stay cached
    (root / "gnn" / "seed_42" / "run_status.json").unlink()
    train_production(str(root / "data"), config)
    assert (root / "gnn" / "seed_42" / "run_status.json").exists()
    baseline = root / "baseline" / "seed_43" / "run_status.json"
    assert baseline.stat().st_mtime_ns == stamps[baseline]


@pytest.mark.slow  # trains in a process per job
def test_several_slots_train_concurrently_one_chain_each(prefect_harness, pipeline_run, tmp_path):
    """Two CPU slots (local_parallel_jobs=2; the same chains GPUs get): every job runs once, in
    its own process, with half the cores' threads."""
    from flows.train_production import train_production

    root, _ = pipeline_run
    config = make_config(
        tmp_path / "out", plan={"models": MODELS[1:], "seeds": [42, 43]}, local_parallel_jobs=2
    )
    summary = train_production(str(root / "data"), config)
    assert summary["success"]["passed"] is True
    for spec in config.plan.jobs(root / "data", config.output_root):
        status = json.loads((Path(spec.run_dir) / "run_status.json").read_text())
        assert status["status"] == "completed" and status["device"] == "cpu"
        # a process per job: its log holds its own run only (threads sharing the `streamguard`
        # logger wrote the concurrent seed's lines into both logs)
        log = (Path(spec.run_dir) / "training.log").read_text()
        own, other = (
            (" epoch 0 ", "baseline:") if spec.model.kind == "gnn" else ("baseline:", " epoch 0 ")
        )
        assert log.count(own) == 1 and other not in log, log


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
    config = make_config(
        tmp_path / "out", data={"inputs": [str(one_class)]}, plan={"models": ["baseline"]}
    )
    state = streamguard_pipeline(config, return_state=True)
    assert state.is_failed()
    with pytest.raises(Exception, match="preflight no-go: data: train holds label"):
        state.result()
    report = json.loads((tmp_path / "out" / "preflight_report.json").read_text())
    assert report["go"] is False
    assert not (tmp_path / "out" / "baseline").exists()


@pytest.mark.slow  # trains in a process per job
def test_failed_criteria_fail_the_run_after_publishing_and_alert(prefect_harness, tmp_path):
    """Defect 6: `python -m flows.pipeline` exited 0 and the run ended Completed whatever the
    criteria said. Now: exit 1, flow run Failed naming the failed checks, artifacts published,
    the below-threshold alert raised."""
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import FlowFilter, FlowFilterName
    from prefect.client.schemas.sorting import FlowRunSort
    from prefect.events.filters import EventFilter, EventNameFilter, EventOccurredFilter

    from flows.pipeline import main
    from tasks.events import MODEL_BELOW_THRESHOLD

    out = tmp_path / "out"
    # one seed: the F1 spread is n/a and its check fails; no tiny run reaches F1 1.0 either
    preset = make_config(
        out, plan={"models": MODELS[1:]}, criteria={"min_mean_f1": 1.0}, run_preflight=False
    )
    path = tmp_path / "failing.yaml"
    path.write_text(yaml.safe_dump(preset.model_dump(mode="json")))
    started = datetime.now(UTC)
    assert main(["--preset", str(path)]) == 1

    with get_client(sync_client=True) as client:
        runs = [
            r
            for r in client.read_flow_runs(
                flow_filter=FlowFilter(name=FlowFilterName(any_=["streamguard-pipeline"])),
                sort=FlowRunSort.START_TIME_DESC,
                limit=20,
            )
            if (r.parameters.get("config") or {}).get("output_root") == str(out)
        ]
    (run,) = runs
    assert run.state.is_failed()
    assert "success criteria failed" in run.state.message
    for check in ("mean_f1:gnn", "f1_std:gnn"):
        assert check in run.state.message
    assert "mean_f1:baseline" not in run.state.message  # the baseline is not judged
    # everything was published before the run failed
    ids = _subflow_ids(run.id)
    for key in ("production-summary", "production-models", "production-checks",
                "production-report", "production-report-file"):  # fmt: skip
        assert _artifacts(ids, key), key
    assert (out / "production_summary" / "production_report.md").exists()

    def alerts() -> list:
        with get_client(sync_client=True) as client:
            page = client.read_events(
                EventFilter(
                    event=EventNameFilter(name=[MODEL_BELOW_THRESHOLD]),
                    occurred=EventOccurredFilter(since=started),
                ),
                limit=50,  # the client's default (100) is above the server's maximum
            )
        return [e for e in page.events if e.payload.get("model") == "gnn"]

    deadline = time.monotonic() + 60  # the events worker sends in the background
    while not alerts() and time.monotonic() < deadline:
        time.sleep(1)
    (event,) = alerts()
    assert "mean_f1:gnn" in event.payload["reason"] and event.payload["threshold"] == 1.0


@pytest.mark.slow  # trains in a process per job
def test_lr_finder_settings_reach_production_runs_and_hit_the_cache(
    prefect_harness, pipeline_run, tmp_path
):
    """Defect 4: the LR finder and its cache were CLI-only. Two production runs with
    plan.train.lr_finder: the second run's LR comes from the first run's cache entry."""
    from flows.train_production import train_production

    root, _ = pipeline_run
    train = {**TRAIN, "lr_finder": True, "lr_finder_steps": 10,
             "lr_cache_dir": str(tmp_path / "lr_cache"), "weight_decay": 0.05,
             "warmup_ratio": 0.2, "accumulation_steps": 2, "use_weights": True}  # fmt: skip
    reports = []
    for name in ("first", "second"):
        config = make_config(tmp_path / name, plan={"models": [MODELS[1]], "train": train})
        train_production(str(root / "data"), config)
        run = tmp_path / name / "gnn" / "seed_42"
        reports.append(json.loads((run / "training_metadata.json").read_text())["lr_finder"])
        spec = json.loads((run / "exp_config.json").read_text())
        assert {k: spec["train"][k] for k in train} == train
    first, second = reports
    assert first["source"] in ("finder", "fallback")
    assert second["source"] == "cache" and second["lr"] == first["lr"]
    assert list((tmp_path / "lr_cache").glob("*.json"))


@pytest.mark.slow  # trains in a process per job
def test_monthly_retrain_promotes_only_a_better_model(prefect_harness, tmp_path):
    from flows.monthly_retrain import monthly_retrain
    from streamguard_core.pipeline.registry import ModelRegistry

    registry = tmp_path / "registry"
    config = make_config(tmp_path / "monthly", plan={"models": ["baseline"]}, run_preflight=False)
    first = monthly_retrain(config, str(registry))
    assert first["promote"] is True and first["previous"] == "none"
    assert ModelRegistry(registry).production()["version"] == first["version"]
    # the same data and model again: equal F1 on the same validation data is not better
    second = monthly_retrain(config, str(registry))
    assert second["promote"] is False
    assert second["candidate"] == pytest.approx(second["production"])
    reg = ModelRegistry(registry)
    assert reg.versions() == [first["version"], second["version"]]
    assert reg.production()["version"] == first["version"]
    assert len(reg.history()) == 1


def test_monthly_retrain_with_sagemaker_reaches_the_sagemaker_path(prefect_harness, tmp_path):
    """Defect 2: monthly-retrain offered backend sagemaker without a sagemaker parameter, so it
    always raised. Its config now carries the settings to the SageMaker launcher: here its
    budget guard refuses this config's worst case (2 jobs of ml.p3.2xlarge), before any upload."""
    from prefect.exceptions import ParameterTypeError

    from flows.monthly_retrain import monthly_retrain

    sagemaker = {
        "image_uri": "123456789012.dkr.ecr.us-east-1.amazonaws.com/sg:latest",
        "role_arn": "arn:aws:iam::123456789012:role/sg",
        "bucket": "sg-bucket",
        "instance_type": "ml.p3.2xlarge",
        "max_runtime_s": 3600,
        "budget_usd": 0.5,
    }
    config = make_config(
        tmp_path / "monthly", plan={"models": ["baseline"], "seeds": [42, 43]},
        backend="sagemaker", run_preflight=False, sagemaker=sagemaker,
    )  # fmt: skip
    # the flow's own parameter validation (what a deployment run goes through)
    assert monthly_retrain.validate_parameters({"config": config.model_dump(mode="json")})
    with pytest.raises(ParameterTypeError, match="needs the 'sagemaker' settings"):
        monthly_retrain.validate_parameters({"config": {"backend": "sagemaker"}})
    state = monthly_retrain(config, str(tmp_path / "registry"), return_state=True)
    assert state.is_failed()
    with pytest.raises(Exception, match=r"refusing to launch.*2 job\(s\)") as raised:
        state.result()
    assert "budget" in str(raised.value) and "0.5" in str(raised.value)
    assert not (tmp_path / "registry").exists()


def test_task_bodies_run_without_prefect(tmp_path):
    """The thin tasks' bodies (``.fn``) call the core directly: no server, no run context."""
    from streamguard_core.config import SuccessCriteria, TrainingPlan
    from tasks.training import PreflightNoGo, aggregate_task, preflight_task

    plan = TrainingPlan(models=["baseline"], train=TRAIN)
    with pytest.raises(PreflightNoGo, match="no such directory"):
        preflight_task.fn(str(tmp_path / "missing"), plan, str(tmp_path / "preflight.json"))
    assert json.loads((tmp_path / "preflight.json").read_text())["go"] is False
    summary = aggregate_task.fn(
        str(tmp_path / "empty"), TrainingPlan(models=["gnn"], seeds=[42]), SuccessCriteria()
    )
    assert summary["best_overall_model"] is None
    assert summary["models"]["gnn"]["n_failed"] == 1
    assert summary["success"]["passed"] is False
    assert Path(summary["report_path"]).exists()


def test_preprocessing_is_cached_on_input_content(prefect_harness, tmp_path):
    from prefect import flow

    from streamguard_core.config import DataConfig, PreprocessConfig
    from tasks.data import preprocess_task

    raw = tmp_path / "funcs.jsonl"
    rows = [
        {"func": "int f(int x) { " + "x = x + 1; " * (i + 1) + "return x; }", "target": i % 2}
        for i in range(40)
    ]
    raw.write_text("".join(json.dumps(r) + "\n" for r in rows))
    data = DataConfig(inputs=[str(raw)])
    prep = PreprocessConfig(workers=1, vocab_size=400, max_seq_len=128)
    out = str(tmp_path / "processed")

    @flow
    def twice() -> list[str]:
        first = preprocess_task(data, prep, out, return_state=True)
        second = preprocess_task(data, prep, out, return_state=True)
        raw.write_text(raw.read_text() + json.dumps({"func": "int g(void) { return 0; }",
                                                      "target": 1}) + "\n")  # fmt: skip
        third = preprocess_task(data, prep, out, return_state=True)
        return [first.name, second.name, third.name, third.result()["counts"]["read"]]

    first, second, third, read = twice()
    assert (first, second, third) == ("Completed", "Cached", "Completed")  # same path, new bytes
    assert read == 41
