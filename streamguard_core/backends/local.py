"""The local backend: every job in its own process, one GPU each when there are several.

A process per job keeps jobs apart: each has its own ``streamguard`` logger (its own
``training.log``), its own global RNG and its own torch thread pool, so seeds that run
concurrently cannot write into each other's log or reseed each other. Processes come from a
``forkserver`` that has imported torch once, so a job starts in milliseconds, not the seconds a
fresh interpreter needs to import torch and transformers. The device is chosen per job:
``cuda:<i>`` becomes ``CUDA_VISIBLE_DEVICES=<i>`` in the child, which then sees one GPU.

A GNN or transformer job with ``train.nproc_per_node = N > 1`` is started the same way; its
process then runs torchrun with N data-parallel workers (``run_job`` does that, see
:mod:`streamguard_core.training.distributed`). On GPUs such a job needs a slot of N devices:
``local_devices(procs_per_job=N)`` groups them (``cuda:0,1``), and the child sees those N.
"""

from __future__ import annotations

import logging
import multiprocessing as mp
import os
from multiprocessing.connection import Connection
from typing import Any

from streamguard_core.backends import EpochCallback, TrainingBackend
from streamguard_core.config import TrainJobSpec
from streamguard_core.training.job import RunStatus, read_run_status

log = logging.getLogger("streamguard.backends.local")

PRELOAD = ["torch", "transformers", "torch_geometric", "streamguard_core.training.run"]


def local_devices(cpu_jobs: int = 1, procs_per_job: int = 1) -> list[str | None]:
    """Device slots, one job each at a time: one per CUDA device (``cuda:<i>``) when there are
    several, one on a single GPU, else ``cpu_jobs`` CPU slots (None: the default device).

    ``procs_per_job`` > 1 (DDP jobs, ``train.nproc_per_node``): on GPUs each slot is that many
    devices (``cuda:0,1``, ``cuda:2,3``; left-over GPUs idle); on CPU the slots are as above.

    Raises:
        ValueError: there are GPUs, but fewer than ``procs_per_job``.
    """
    import torch

    n = torch.cuda.device_count()
    if procs_per_job > 1 and n:
        if n < procs_per_job:
            raise ValueError(
                f"nproc_per_node {procs_per_job} needs {procs_per_job} GPUs per job; this "
                f"machine has {n}"
            )
        return [
            "cuda:" + ",".join(str(g) for g in range(start, start + procs_per_job))
            for start in range(0, n - procs_per_job + 1, procs_per_job)
        ]
    if n > 1:
        return [f"cuda:{i}" for i in range(n)]
    return [None] if n == 1 else [None] * max(1, cpu_jobs)


def cpu_threads_per_job(n_slots: int) -> int | None:
    """torch threads for each of ``n_slots`` concurrent CPU jobs (None: one slot, torch's own)."""
    if n_slots <= 1:
        return None
    return max(1, (os.cpu_count() or 1) // n_slots)


def child_environment(
    device: str | None, parent_visible: str | None = None
) -> tuple[dict[str, str], str | None]:
    """(environment changes, device the child passes to torch) for one job's device slot.

    ``cuda:<i>`` is the parent's i-th visible GPU: when the parent itself was limited by
    ``CUDA_VISIBLE_DEVICES`` (e.g. ``2,3``), ``cuda:1`` maps to that list's entry (``3``).
    ``cuda:<i>,<j>`` (a DDP job's slot) makes both visible to the child, in that order.
    """
    if device and device.startswith("cuda:"):
        indices = [int(i) for i in device.split(":", 1)[1].split(",")]
        if parent_visible is None:
            parent_visible = os.environ.get("CUDA_VISIBLE_DEVICES")
        visible = [v.strip() for v in (parent_visible or "").split(",") if v.strip()]
        physical = [visible[i] if i < len(visible) else str(i) for i in indices]
        return {"CUDA_VISIBLE_DEVICES": ",".join(physical)}, "cuda"
    return {}, device


def _child(spec_json: str, device: str | None, threads: int | None, conn: Connection) -> None:
    """The job process: set the environment, run the job, send epoch rows to the parent."""
    env, torch_device = child_environment(device)
    os.environ.update(env)  # before anything initialises CUDA
    from streamguard_core.training.job import run_job

    try:
        spec = TrainJobSpec.model_validate_json(spec_json)
        if threads:  # the spec's train.num_threads, when set, wins (train_neural applies it)
            import torch

            torch.set_num_threads(threads)
            # a DDP job's torchrun workers share this slot's threads (read when they start)
            os.environ["OMP_NUM_THREADS"] = str(max(1, threads // spec.train.nproc_per_node))
        status = run_job(
            spec,
            device=torch_device,
            on_epoch_end=lambda row: conn.send(("epoch", row)),
        )
        conn.send(("status", status.model_dump(mode="json")))
    finally:
        conn.close()


class LocalBackend:
    """Runs each job in a fresh process on this machine."""

    name = "local"

    def __init__(self, start_method: str = "forkserver") -> None:
        self.context: Any = mp.get_context(start_method)
        if start_method == "forkserver":
            self.context.set_forkserver_preload(PRELOAD)

    def run(
        self,
        spec: TrainJobSpec,
        on_epoch_end: EpochCallback | None = None,
        device: str | None = None,
        threads: int | None = None,
    ) -> RunStatus:
        """Run ``spec`` in a child process on ``device`` (None: the best one) and wait for it;
        ``threads`` sets the child's torch threads (concurrent CPU jobs).

        A child that dies without a status (killed, out of memory) is a ``failed`` status with
        its exit code; this never raises for the job's own outcome.
        """
        receiver, sender = self.context.Pipe(duplex=False)
        process = self.context.Process(
            target=_child,
            args=(spec.model_dump_json(), device, threads, sender),
            name=f"streamguard-{spec.name}-seed-{spec.seed}",
        )
        process.start()
        sender.close()  # the child holds the only writer: EOF when it exits
        status: dict[str, Any] | None = None
        try:
            while True:
                try:
                    what, payload = receiver.recv()
                except EOFError:
                    break
                if what == "epoch" and on_epoch_end is not None:
                    on_epoch_end(payload)
                elif what == "status":
                    status = payload
        finally:
            process.join()
            receiver.close()
        if status is not None:
            return RunStatus.model_validate(status)
        written = read_run_status(spec.run_dir)
        if written is not None:
            return written
        failed = RunStatus(
            model=spec.name, kind=spec.model.kind, seed=spec.seed, status="failed",
            error=f"the job process exited with code {process.exitcode} without a status "
            "(killed, or out of memory?)",
            device=device, run_dir=spec.run_dir,
        )  # fmt: skip
        failed.write()
        return failed


_CONFORMS: type[TrainingBackend] = LocalBackend  # mypy (make lint) checks it is a peer backend
