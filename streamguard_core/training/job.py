"""One training job, whatever launches it: ``run_job(spec) -> RunStatus``.

The CLI, the local backend (one process per job) and the SageMaker entrypoint all call
:func:`run_job`. It trains any model kind, resumes from a complete 'latest' checkpoint, turns
a collapse or an error into a status instead of an exception, and always leaves
``run_status.json`` in the run directory, so the aggregate can count every run.

Run one job in this process (what the local backend's child process does)::

    python -m streamguard_core.training.job job.json [--device cuda:1]

or one of ``train.nproc_per_node`` data-parallel workers (what ``run_job`` starts for it)::

    python -m torch.distributed.run --standalone --nproc_per_node 2 \\
        -m streamguard_core.training.job job.json --device cpu
"""

from __future__ import annotations

import argparse
import json
import logging
import signal
import sys
import time
import traceback
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from streamguard_core.config import TrainJobSpec, load_yaml
from streamguard_core.io import atomic_write_json
from streamguard_core.redact import redact_text
from streamguard_core.training.paths import RunPaths

if TYPE_CHECKING:
    from streamguard_core.training.distributed import DistContext

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
    world_size: int = Field(1, ge=1, description="DDP processes that trained the run.")

    @classmethod
    def of_job(cls, spec: TrainJobSpec, status: RunState, **fields: Any) -> RunStatus:
        """``spec``'s status: its name, kind, seed and run dir, then ``fields`` (``error`` ...)."""
        return cls(model=spec.name, kind=spec.model.kind, seed=spec.seed, status=status,
                   run_dir=str(RunPaths(spec.run_dir).root), **fields)  # fmt: skip

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

    A GNN or transformer with ``train.nproc_per_node > 1`` is handed to torchrun
    (:func:`streamguard_core.training.distributed.launch`) unless this process is one of its
    workers already; then it joins the group and only rank 0 writes ``run_status.json`` (the
    other ranks return theirs unwritten). The baseline and fusion kinds train in one process
    whatever ``nproc_per_node`` says (under torchrun, rank 0 trains and the others skip).

    Raises:
        TrainingInterrupted: ``should_stop`` answered True ('latest' is saved; no status is
            written, since the job is not over: a restart resumes it).
    """
    from streamguard_core.config import NEURAL_KINDS
    from streamguard_core.training import distributed

    paths = RunPaths(spec.run_dir)
    neural = spec.model.kind in NEURAL_KINDS
    worker = distributed.worker_env()

    def failed(exc: Exception, world_size: int = 1) -> RunStatus:
        return RunStatus.of_job(spec, "failed", error=str(exc), backend=backend, device=device,
                                world_size=world_size)  # fmt: skip

    nproc = spec.train.nproc_per_node
    if not neural and (nproc > 1 or worker is not None):
        log.warning(
            "%s: nproc_per_node %d ignored: the %s kind trains in one process",
            spec.name,
            max(nproc, worker.world_size if worker else 1),
            spec.model.kind,
        )
        if worker is not None and worker.rank > 0:
            return RunStatus.of_job(spec, "completed", backend=backend, device="cpu")
        worker = None
    if worker is None and neural and nproc > 1:
        paths.root.mkdir(parents=True, exist_ok=True)
        paths.status.unlink(missing_ok=True)
        try:
            return distributed.launch(spec, device, on_epoch_end, should_stop, backend)
        except (ValueError, OSError) as exc:  # e.g. fewer GPUs than processes: the job fails
            status = failed(exc)
            status.write()
            return status
    if worker is None:
        return _run_here(spec, device, on_epoch_end, should_stop, backend, None)
    try:
        ctx = distributed.init_worker(worker, device)
    except ValueError as exc:  # e.g. more processes than GPUs
        status = failed(exc, worker.world_size)
        if worker.rank == 0:
            status.write()
        return status
    try:
        return _run_here(spec, str(ctx.device), on_epoch_end, should_stop, backend, ctx)
    finally:
        distributed.close_worker()


def _run_here(
    spec: TrainJobSpec,
    device: str | None,
    on_epoch_end: Callable[[dict[str, Any]], None] | None,
    should_stop: Callable[[], bool] | None,
    backend: str,
    dist: DistContext | None,
) -> RunStatus:
    """:func:`run_job` in this process (one rank of a group when ``dist`` is given)."""
    from streamguard_core.config import NEURAL_KINDS
    from streamguard_core.models.adapters import resolve_device
    from streamguard_core.training.checkpoint import is_valid_checkpoint
    from streamguard_core.training.collapse import CollapseError
    from streamguard_core.training.loop import TrainingInterrupted
    from streamguard_core.training.run import train_job

    main = dist is None or dist.is_main
    paths = RunPaths(spec.run_dir)
    if main:
        paths.root.mkdir(parents=True, exist_ok=True)
        paths.status.unlink(missing_ok=True)  # a stale status must not outlive a rerun
    t0 = time.perf_counter()
    neural = spec.model.kind in NEURAL_KINDS
    resumed = neural and is_valid_checkpoint(paths.latest)
    if dist is not None:  # every rank must take rank 0's view of the run directory
        resumed = dist.broadcast(resumed)
    status = RunStatus.of_job(
        spec, "completed", backend=backend,
        device=str(resolve_device(device)) if neural else "cpu", resumed=resumed,
        world_size=dist.world_size if dist is not None else 1,
    )  # fmt: skip
    try:
        train_job(spec, resume_run=resumed, device=device, on_epoch_end=on_epoch_end,
                  should_stop=should_stop, dist=dist)  # fmt: skip
    except CollapseError as exc:
        status.status, status.error = "collapsed", f"{exc.event.reason}: {exc.event.detail}"
        if main:
            log.error("%s seed %d collapsed: %s", spec.name, spec.seed, status.error)
    except TrainingInterrupted:
        raise
    except Exception as exc:  # a failed seed is reported, never allowed to stop the others
        rank = f" (rank {dist.rank})" if dist is not None else ""
        # the console and Prefect's log have no redacting filter: a traceback can quote a URL
        # or a token (run_status.json's error is redacted by atomic_write_json)
        trace = redact_text(traceback.format_exc())
        log.error("%s seed %d failed%s:\n%s", spec.name, spec.seed, rank, trace)
        status.status, status.error = "failed", f"{type(exc).__name__}: {exc}"
    status.wall_s = round(time.perf_counter() - t0, 2)
    if main:
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
    """``python -m streamguard_core.training.job SPEC``: exit 0 completed, 3 collapsed, 1 failed.

    Under torchrun (a DDP worker) the exit status is 0 for completed and collapsed alike, 1
    for failed and 143 when stopped: a non-zero exit makes torchrun stop the other ranks, which
    must not happen while rank 0 still writes; ``run_status.json`` tells the outcome.
    """
    from streamguard_core.training.collapse import COLLAPSE_EXIT_CODE
    from streamguard_core.training.distributed import WorkerStop, worker_env
    from streamguard_core.training.loop import TrainingInterrupted

    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("spec", help="a TrainJobSpec as JSON or YAML")
    parser.add_argument("--device", default=None, help="cpu, cuda, cuda:1 (default: best)")
    args = parser.parse_args(argv)
    spec = load_spec(args.spec)
    worker = worker_env()
    if worker is None:
        status = run_job(spec, device=args.device)
        print(status.model_dump_json())
        return {"completed": 0, "collapsed": COLLAPSE_EXIT_CODE}.get(status.status, 1)
    stop = WorkerStop(spec.run_dir)
    stop.install()
    try:
        status = run_job(spec, device=args.device, should_stop=stop)
    except TrainingInterrupted as exc:
        log.warning("rank %d: %s", worker.rank, exc)
        return 128 + int(signal.SIGTERM)
    if worker.rank == 0:
        print(status.model_dump_json())
    return 1 if status.status == "failed" else 0


if __name__ == "__main__":
    sys.exit(main())
