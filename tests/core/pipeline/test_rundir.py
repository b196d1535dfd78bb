"""streamguard_core/pipeline/rundir.py: run directory layouts, run_id checks, the run-directory
lock's refusal, the shared data set's content key and its link (another process holding a lock:
tests/core/test_locks.py)."""

from __future__ import annotations

import logging
import os
import threading
import time

import pytest
from pydantic import ValidationError

from streamguard_core.config import PipelineConfig
from streamguard_core.pipeline.rundir import (
    RUN_LOCK_FILE,
    RunDirBusy,
    data_cache_key,
    data_lock,
    hold_run_dir,
    link_run_data,
    resolve_run_dir,
    resolve_run_id,
    run_paths,
)


def test_layouts_default_run_id_and_auto(tmp_path):
    default = PipelineConfig(output_root=str(tmp_path))
    assert resolve_run_dir(default) == tmp_path
    paths = run_paths(default, tmp_path)
    assert paths.data_dir == tmp_path / "data" and not paths.shared_data
    assert paths.preflight_report == tmp_path / "preflight_report.json"

    named = PipelineConfig(output_root=str(tmp_path), run_id="exp-1.b_2")
    run_dir = resolve_run_dir(named)
    assert run_dir == tmp_path / "runs" / "exp-1.b_2"
    paths = run_paths(named, run_dir)
    assert paths.shared_data and paths.data_dir.parent == tmp_path / "data"
    inner = paths.run_config(named)
    assert inner.output_root == str(run_dir) and inner.run_id is None
    assert inner.plan == named.plan

    auto = PipelineConfig(output_root=str(tmp_path), run_id="auto")
    assert resolve_run_dir(auto, "crimson-tortoise") == tmp_path / "runs" / "crimson-tortoise"
    assert resolve_run_id("auto", "nightly 2025/01/02: a") == "nightly-2025-01-02-a"
    with pytest.raises(ValueError, match="no flow run here"):
        resolve_run_dir(auto, None)
    with pytest.raises(ValueError, match="no safe folder name"):
        resolve_run_id("auto", "../..")


@pytest.mark.parametrize("bad", ["../x", "a/b", "..", ".hidden", "-x", "a..b", "é", "x" * 129])
def test_run_id_must_be_one_safe_folder_name(bad):
    with pytest.raises(ValidationError, match="one folder name"):
        PipelineConfig(run_id=bad)


def test_empty_run_id_means_unset():
    assert PipelineConfig(run_id="").run_id is None


def test_a_second_run_on_a_busy_run_dir_is_refused_naming_dir_and_holder(tmp_path):
    run_dir = tmp_path / "quick"
    with hold_run_dir(run_dir, "streamguard-pipeline flow run 'first'"):
        assert (run_dir / RUN_LOCK_FILE).exists()
        with (
            pytest.raises(RunDirBusy) as refused,
            hold_run_dir(run_dir, "streamguard-pipeline flow run 'second'"),
        ):
            pytest.fail("a second holder got in")
        message = str(refused.value)
        assert message.startswith(f"{run_dir} is in use by another run: ")
        assert f"flow run 'first' (pid {os.getpid()} on " in message
        assert "run_id (--run-id NAME, or 'auto'" in message
        assert str(run_dir / RUN_LOCK_FILE) in message
    assert not (run_dir / RUN_LOCK_FILE).exists()  # released and removed: the layout as before
    with hold_run_dir(run_dir, "third"):
        pass


def test_data_key_follows_content_and_settings_not_execution(tmp_path):
    data_file = tmp_path / "train.jsonl"
    data_file.write_text('{"func": "int f(void) { return 0; }", "target": 0}\n')
    base = PipelineConfig(data={"inputs": [str(data_file)]}, run_id="a")
    key = data_cache_key(base.data, base.preprocessing)
    same = base.preprocessing.model_copy(update={"workers": 7, "executor": "dask"})
    assert data_cache_key(base.data, same) == key  # how it runs, not what it writes
    other = base.preprocessing.model_copy(update={"vocab_size": 999})
    assert data_cache_key(base.data, other) != key
    data_file.write_text('{"func": "int g(void) { return 1; }", "target": 1}\n')
    assert data_cache_key(base.data, base.preprocessing) != key  # same path, new content


def test_shared_data_lock_and_link(tmp_path):
    config = PipelineConfig(output_root=str(tmp_path), run_id="a")
    paths = run_paths(config, resolve_run_dir(config))
    with data_lock(paths, "run a") as complete:
        assert complete is False and paths.data_lock.exists()
        paths.data_dir.mkdir(parents=True)
        (paths.data_dir / "preprocessing_metadata.json").write_text("{}")
    with data_lock(paths, "run a") as complete:
        assert complete is True
    link_run_data(paths)
    link = paths.run_dir / "data"
    assert link.is_symlink() and os.readlink(link) == os.path.join(
        "..", "..", "data", paths.data_dir.name
    )
    assert (link / "preprocessing_metadata.json").read_text() == "{}"
    link_run_data(paths)  # idempotent
    (tmp_path / "runs" / "b" / "data").mkdir(parents=True)
    b = PipelineConfig(output_root=str(tmp_path), run_id="b")
    with pytest.raises(ValueError, match="a directory where the link to the shared data set"):
        link_run_data(run_paths(b, resolve_run_dir(b)))


def test_a_run_waiting_for_the_shared_data_set_says_for_whom_then_reuses_it(tmp_path, caplog):
    """flock locks of two open files conflict within one process too: a thread stands in for
    the second run."""
    config = PipelineConfig(output_root=str(tmp_path), run_id="a")
    paths = run_paths(config, resolve_run_dir(config))
    seen: list[bool] = []

    def second_run() -> None:
        with data_lock(paths, "run b") as complete:
            seen.append(complete)

    caplog.set_level(logging.INFO, logger="streamguard.locks")
    with data_lock(paths, "run a") as complete:
        assert complete is False
        waiter = threading.Thread(target=second_run)
        waiter.start()
        deadline = time.monotonic() + 30
        while "run b: waiting for the lock" not in caplog.text:
            assert time.monotonic() < deadline, "the second run never said it waits"
            time.sleep(0.02)
        assert "run a" in caplog.text and str(paths.data_lock) in caplog.text
        assert seen == []  # still waiting while the first run builds
        paths.data_dir.mkdir(parents=True)
        (paths.data_dir / "preprocessing_metadata.json").write_text("{}")
    waiter.join(30)
    assert seen == [True]
