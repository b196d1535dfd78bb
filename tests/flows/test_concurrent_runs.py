"""Concurrent runs on one output root and one registry: a busy run directory refuses a second
run at once; runs with their own run_id share the output root, its processed data set and the
registry, and lose nothing of each other."""

from __future__ import annotations

import contextvars
import json
import os
import re
import threading
from pathlib import Path

import pytest

from streamguard_core.pipeline.rundir import hold_run_dir


def _quick(output_root: Path, **fields: object):
    """The quick preset, baseline only, no preflight, one preprocessing worker."""
    from flows.presets import load_preset, override

    config = override(
        load_preset("quick"), models="baseline", output_root=str(output_root),
        run_preflight=False, **fields,
    )  # fmt: skip
    prep = config.preprocessing.model_copy(update={"workers": 1})
    return config.model_copy(update={"preprocessing": prep})


def _preprocess_runs(flow_run_ids: list) -> list:
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import (
        TaskRunFilter,
        TaskRunFilterFlowRunId,
        TaskRunFilterName,
    )

    with get_client(sync_client=True) as client:
        return client.read_task_runs(
            task_run_filter=TaskRunFilter(
                flow_run_id=TaskRunFilterFlowRunId(any_=flow_run_ids),
                name=TaskRunFilterName(like_="preprocess ->"),
            )
        )


def _text_files(root: Path) -> list[Path]:
    """Every JSON/Markdown/log file under ``root``, not following the shared data link."""
    found = []
    for folder, _, files in os.walk(root):  # os.walk does not follow symlinks
        found += [Path(folder) / f for f in files if f.endswith((".json", ".jsonl", ".md", ".log"))]
    return found


def test_run_id_flag():
    from flows.pipeline import config_from_args

    assert config_from_args(["--preset", "quick"]).run_id is None
    assert config_from_args(["--preset", "quick", "--run-id", "nightly-3"]).run_id == "nightly-3"
    assert config_from_args(["--preset", "quick", "--run-id", "auto"]).run_id == "auto"
    with pytest.raises(ValueError, match=r"run_id '\.\./x': use 1-128 letters"):
        config_from_args(["--preset", "quick", "--run-id", "../x"])


def test_a_second_run_on_a_busy_output_root_fails_at_once(prefect_harness, tmp_path):
    from flows.pipeline import config_from_args, streamguard_pipeline
    from flows.presets import exit_status

    out = tmp_path / "quick"
    config = config_from_args(["--preset", "quick", "--output-root", str(out)])
    with hold_run_dir(out, "streamguard-pipeline flow run 'first'"):
        state = streamguard_pipeline(config, return_state=True)
        assert os.listdir(out) == [".run.lock"]  # the refused run wrote nothing
    assert state.is_failed() and exit_status(state, "streamguard-pipeline") == 1
    assert f"RunDirBusy: {out} is in use by another run" in state.message
    assert "flow run 'first' (pid" in state.message and "run_id (--run-id NAME" in state.message


@pytest.mark.slow  # trains in a process per job
def test_two_retraining_runs_share_output_root_data_and_registry(prefect_harness, tmp_path):
    from prefect.client.orchestration import get_client

    from flows.monthly_retrain import monthly_retrain
    from streamguard_core.pipeline.registry import ModelRegistry
    from tests.flows.test_pipeline import _subflow_ids

    out, registry_dir = tmp_path / "monthly", tmp_path / "registry"
    states: dict[str, object] = {}

    def retrain(run_id: str) -> None:
        states[run_id] = monthly_retrain(
            _quick(out, run_id=run_id), str(registry_dir), return_state=True
        )

    # two runs at once; the same data, model and seed: equal F1, so exactly one may promote
    threads = [
        threading.Thread(target=contextvars.copy_context().run, args=(retrain, run_id))
        for run_id in ("a", "auto")
    ]
    for t in threads:
        t.start()
    for t in threads:
        t.join(600)
    assert set(states) == {"a", "auto"}
    for state in states.values():
        assert state.is_completed(), state.message

    (dated,) = out.iterdir()  # <output_root>/<UTC date>
    assert sorted(p.name for p in dated.iterdir()) == ["data", "runs"]  # nothing at the top
    with get_client(sync_client=True) as client:
        auto_name = client.read_flow_run(states["auto"].state_details.flow_run_id).name
    run_dirs = {name: dated / "runs" / name for name in ("a", auto_name)}
    assert sorted(p.name for p in (dated / "runs").iterdir()) == sorted(run_dirs)

    # one processed data set, built by one run, reused by the other through its data link
    (shared,) = (dated / "data").iterdir()
    assert (shared / "preprocessing_metadata.json").is_file()
    # (the preprocess task runs in each retrain's pipeline subflow)
    flow_runs = [i for s in states.values() for i in _subflow_ids(s.state_details.flow_run_id)]
    assert len(_preprocess_runs(flow_runs)) == 1

    files = {}
    for name, run_dir in run_dirs.items():
        assert (run_dir / "data").is_symlink() and (run_dir / "data").resolve() == shared
        seed = run_dir / "baseline" / "seed_42"
        assert json.loads((seed / "run_status.json").read_text())["status"] == "completed"
        assert (seed / "model" / "model_card.json").is_file()
        spec = json.loads((seed / "exp_config.json").read_text())
        assert spec["run_dir"] == str(seed) and spec["data_dir"] == str(shared)
        summary = run_dir / "production_summary" / "production_summary.json"
        assert json.loads(summary.read_text())["best_overall_model"] == "baseline", name
        assert not (run_dir / ".run.lock").exists()
        files[name] = {p.relative_to(run_dir) for p in _text_files(run_dir)}
    assert files["a"] == files[auto_name]  # the same complete layout in each
    for name, run_dir in run_dirs.items():  # and nothing of one in the other
        other = re.compile(
            re.escape(str(run_dirs[auto_name if name == "a" else "a"])) + r"(?![\w.-])"
        )
        for path in _text_files(run_dir):
            assert not other.search(path.read_text(errors="replace")), path

    # one registry: both registered, the first to promote won, the other compared with it
    decisions = [s.result() for s in states.values()]
    registry = ModelRegistry(registry_dir)
    assert sorted(registry.versions()) == sorted(d["version"] for d in decisions)
    (won,) = [d for d in decisions if d["promote"]]
    (kept,) = [d for d in decisions if not d["promote"]]
    assert won["previous"] == "none" and kept["previous"] == won["version"]
    assert kept["candidate"] == pytest.approx(kept["production"])
    assert registry.production()["version"] == won["version"]
    assert [e["version"] for e in registry.history()] == [won["version"]]
