"""One training job, whatever launches it: ``run_job(spec) -> RunStatus``.

The CLI, the local backend (one process per job) and the SageMaker entrypoint all call
:func:`run_job`. It trains any model kind, resumes from a complete 'latest' checkpoint, turns
a collapse or an error into a status instead of an exception, and always leaves
``run_status.json`` in the run directory, so the aggregate can count every run.

Run one job in this process (what the local backend's child process does)::

    python -m streamguard_core.training.job job.json [--device cuda:1]
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import time
import traceback
from collections.abc import Callable
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from streamguard_core.config import TrainJobSpec, load_yaml
from streamguard_core.io import atomic_write_json
from streamguard_core.training.paths import RunPaths

log = logging.getLogger("streamguard.job")

RunState = Literal["completed", "collapsed", "failed"]


class RunStatus(BaseModel):
    """How one job ended (``run_status.json``)."""

    model_config = ConfigDict(extra="forbid")

    model: str = Field(description="The model's run name (the folder under the output root).")
    kind: str = Field(description="Model kind.")
    seed: int
    status: RunState
    error: str | None = Field(None, description="Why it collapsed or failed.")
    wall_s: float | None = None
    backend: str = "local"
    device: str | None = None
    run_dir: str
    resumed: bool = False
    cost: dict[str, Any] | None = Field(None, description="SageMaker cost (None locally).")
    job_name: str | None = Field(None, description="SageMaker training job name.")
    secondary_status: list[str] | None = Field(None, description="SageMaker transitions.")

    def write(self, run_dir: str | Path | None = None) -> Path:
        """Write ``run_status.json`` atomically (into ``run_dir``, default ``self.run_dir``)."""
        path = RunPaths(run_dir or self.run_dir).status
        atomic_write_json(path, self.model_dump(mode="json"))
        return path


def read_run_status(run_dir: str | Path) -> RunStatus | None:
    """The run's status, or None when it never wrote one (or wrote an unreadable one)."""
    path = RunPaths(run_dir).status
    if not path.exists():
        return None
    try:
        return RunStatus.model_validate_json(path.read_bytes())
    except ValueError:
        return None


def run_job(
    spec: TrainJobSpec,
    device: str | None = None,
    on_epoch_end: Callable[[dict[str, Any]], None] | None = None,
    should_stop: Callable[[], bool] | None = None,
    backend: str = "local",
) -> RunStatus:
    """Train ``spec`` into ``spec.run_dir``; always writes and returns its :class:`RunStatus`.

    A run dir holding a valid 'latest' checkpoint is resumed (a retried or restarted run picks
    up where it stopped). Collapse and errors do not raise: they are the returned status, with
    the reason, so one bad seed never stops the others.

    Raises:
        TrainingInterrupted: ``should_stop`` answered True ('latest' is saved; no status is
            written, since the job is not over: a restart resumes it).
    """
    from streamguard_core.config import NEURAL_KINDS
    from streamguard_core.models.adapters import resolve_device
    from streamguard_core.training.checkpoint import is_valid_checkpoint
    from streamguard_core.training.collapse import CollapseError
    from streamguard_core.training.loop import TrainingInterrupted
    from streamguard_core.training.run import train_job

    paths = RunPaths(spec.run_dir)
    paths.root.mkdir(parents=True, exist_ok=True)
    paths.status.unlink(missing_ok=True)  # a stale status must not outlive a rerun
    t0 = time.perf_counter()
    neural = spec.model.kind in NEURAL_KINDS
    resumed = neural and is_valid_checkpoint(paths.latest)
    status = RunStatus(
        model=spec.name, kind=spec.model.kind, seed=spec.seed, status="completed",
        backend=backend, device=str(resolve_device(device)) if neural else "cpu",
        run_dir=str(paths.root), resumed=resumed,
    )  # fmt: skip
    try:
        train_job(spec, resume_run=resumed, device=device, on_epoch_end=on_epoch_end,
                  should_stop=should_stop)  # fmt: skip
    except CollapseError as exc:
        status.status, status.error = "collapsed", f"{exc.event.reason}: {exc.event.detail}"
        log.error("%s seed %d collapsed: %s", spec.name, spec.seed, status.error)
    except TrainingInterrupted:
        raise
    except Exception as exc:  # a failed seed is reported, never allowed to stop the others
        log.error("%s seed %d failed:\n%s", spec.name, spec.seed, traceback.format_exc())
        status.status, status.error = "failed", f"{type(exc).__name__}: {exc}"
    status.wall_s = round(time.perf_counter() - t0, 2)
    status.write()
    return status


def load_spec(path: str | Path) -> TrainJobSpec:
    """A job spec from a JSON or YAML file (``exp_config.json`` of an earlier run works too)."""
    raw = json.loads(Path(path).read_text()) if str(path).endswith(".json") else None
    if raw is not None:
        raw.pop("resumed", None)  # exp_config.json records it; it is not a setting
        return TrainJobSpec.model_validate(raw)
    return load_yaml(path, TrainJobSpec)


def main(argv: list[str] | None = None) -> int:
    """``python -m streamguard_core.training.job SPEC``: exit 0 completed, 3 collapsed, 1 failed."""
    from streamguard_core.training.collapse import COLLAPSE_EXIT_CODE

    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("spec", help="a TrainJobSpec as JSON or YAML")
    parser.add_argument("--device", default=None, help="cpu, cuda, cuda:1 (default: best)")
    args = parser.parse_args(argv)
    status = run_job(load_spec(args.spec), device=args.device)
    print(status.model_dump_json())
    return {"completed": 0, "collapsed": COLLAPSE_EXIT_CODE}.get(status.status, 1)


if __name__ == "__main__":
    sys.exit(main())
