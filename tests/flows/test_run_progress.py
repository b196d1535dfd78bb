"""tasks.training.RunProgress: a run's progress artifact, created and updated off the job's path."""

from __future__ import annotations

import pytest


def _progress_artifacts(flow_run_id, key: str) -> list:
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterKey

    with get_client(sync_client=True) as client:
        found = client.read_artifacts(
            artifact_filter=ArtifactFilter(key=ArtifactFilterKey(any_=[key]))
        )
    return [a for a in found if str(a.flow_run_id) == str(flow_run_id)]


def test_progress_belongs_to_the_task_run_and_errors_surface_at_close(prefect_harness):
    from prefect import flow, task
    from prefect.runtime import flow_run

    from tasks.training import RunProgress

    @task
    def report(key: str) -> str:
        progress = RunProgress(key=key, description="epochs done")
        for percent in (50.0, 50.0, 80.0):  # the repeated value is not sent again
            progress.update(percent)
        progress.close(100.0)
        return flow_run.get_id()

    @task
    def report_bad_key() -> None:
        RunProgress(key="Not A Valid Key", description="upper case and spaces").close(100.0)

    @flow
    def runs() -> str:
        run_id = report("run-progress-test")
        with pytest.raises(Exception, match="key"):  # raised by close, not lost in the thread
            report_bad_key()
        return run_id

    run_id = runs()
    (artifact,) = _progress_artifacts(run_id, "run-progress-test")
    assert float(artifact.data) == 100.0 and artifact.task_run_id is not None
