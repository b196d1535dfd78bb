"""Data-parallel training of one run on one node: N processes, torch DDP, started by torchrun.

**Launcher side.** :func:`~streamguard_core.training.job.run_job` calls :func:`launch` when
``train.nproc_per_node > 1`` (GNN and transformer; the baseline and fusion kinds train in one
process and ignore it) and this process is not a worker already. It runs::

    python -m torch.distributed.run --standalone --nproc_per_node N \\
        -m streamguard_core.training.job <run_dir>/.ddp_spec.json --device cpu|cuda

waits, hands each epoch's row to ``on_epoch_end`` (read from ``training_metadata.json``, which
rank 0 writes after every epoch), turns ``should_stop`` into a stop file the workers poll, and
returns the ``run_status.json`` rank 0 wrote. torchrun's own output goes to
``<run_dir>/torchrun.log``. The CLI (``streamguard train ... --nproc-per-node N``), the local
backend and the SageMaker entrypoint (one multi-GPU instance) all reach it through ``run_job``;
``torchrun --nproc_per_node N -m streamguard_core.training.job SPEC`` by hand works too.

**Worker side** (:class:`DistContext`; what makes N processes train like one):

* ``batch_size`` is the global batch. Every global batch (the one-process order, a function of
  seed and epoch) is cut into N contiguous shards, one per rank (:func:`shard_batch`). A rank's
  loss is its shard's loss sum divided by the *global* batch size, times N, so DDP's gradient
  average is the one-process mean over the global batch, exactly (a short last batch included).
  A rank whose shard is empty (a last batch smaller than N) runs one example with weight 0, so
  every rank joins every all-reduce.
* Each step's loss is all-reduced together with a stop flag: the collapse checks see the global
  loss on every rank, and one rank's stop request stops all ranks after the same step.
* Rank 0 alone writes (checkpoints, metrics, logs, the model, ``run_status.json``) and scores
  valid at the end of each epoch; the probabilities are broadcast, so every rank takes the same
  threshold, best-epoch, early-stopping and collapse decisions from the same numbers.
* The LR finder and ``auto_batch_size`` run on rank 0 and their results are broadcast; the
  automatic batch size is the global batch one process would use, so each rank holds 1/N of it.
* Dropout: rank 0 keeps the one-process RNG stream, rank r > 0 draws from its own
  (:func:`rank_seed`), and the checkpoint keeps every rank's RNG state, so a resume with the same
  N is exact. With dropout on, N processes are an equally valid but different random draw from
  one process (their masks cover different slices of the batch); with dropout 0 they match it.
* Gloo on CPU, NCCL on CUDA with rank r on ``cuda:<LOCAL_RANK>`` of the visible GPUs.

Preflight's smoke test and the LR finder itself always train in one process.
"""

from __future__ import annotations

import datetime
import json
import logging
import os
import re
import signal
import subprocess
import sys
import time
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import FrameType
from typing import TYPE_CHECKING, Any, TypeVar

import numpy as np

from streamguard_core.training.paths import RunPaths

if TYPE_CHECKING:
    import torch
    from torch.nn.parallel import DistributedDataParallel

    from streamguard_core.config import TrainJobSpec
    from streamguard_core.training.job import RunStatus

log = logging.getLogger("streamguard.distributed")

T = TypeVar("T")

# The launcher's files in the run directory: RunPaths.ddp_spec, .ddp_stop, .torchrun_log
POLL_S = 0.2
# A rank waits this long at a collective for the others (rank 0 scoring valid alone included)
COLLECTIVE_TIMEOUT = datetime.timedelta(minutes=60)
# After a requested stop, how long the workers get to save 'latest' before they are killed
STOP_GRACE_S = 120.0


# --------------------------------------------------------------------------- worker side


@dataclass(frozen=True)
class WorkerEnv:
    """What torchrun tells each worker process (``RANK``, ``WORLD_SIZE``, ``LOCAL_RANK``)."""

    rank: int
    world_size: int
    local_rank: int


def worker_env(env: dict[str, str] | None = None) -> WorkerEnv | None:
    """This process's place in a torchrun group of two or more, else None (one process)."""
    env = dict(os.environ) if env is None else env
    world = int(env.get("WORLD_SIZE") or 1)
    if world <= 1:
        return None
    return WorkerEnv(int(env["RANK"]), world, int(env.get("LOCAL_RANK") or env["RANK"]))


@dataclass(frozen=True)
class DistContext:
    """One worker of a data-parallel run: its rank, the group's size and its device."""

    rank: int
    world_size: int
    local_rank: int
    device: torch.device

    @property
    def is_main(self) -> bool:
        """Rank 0: the one that writes and evaluates."""
        return self.rank == 0

    def barrier(self) -> None:
        """Wait until every rank gets here."""
        import torch.distributed as dist

        if self.device.type == "cuda":
            dist.barrier(device_ids=[self.device.index or 0])
        else:
            dist.barrier()

    def broadcast(self, value: T) -> T:
        """Rank 0's ``value`` on every rank (any picklable value; other ranks pass anything)."""
        import torch.distributed as dist

        box: list[Any] = [value if self.is_main else None]
        dist.broadcast_object_list(box, src=0, device=self._object_device)
        return box[0]

    def gather(self, value: T) -> list[T]:
        """Every rank's ``value``, in rank order, on every rank."""
        import torch.distributed as dist

        out: list[Any] = [None] * self.world_size
        dist.all_gather_object(out, value)
        return out

    def all_reduce_sum(self, values: Sequence[float]) -> list[float]:
        """Element-wise sums over the ranks (float64)."""
        import torch
        import torch.distributed as dist

        tensor = torch.tensor(list(values), dtype=torch.float64, device=self.device)
        dist.all_reduce(tensor)
        return [float(v) for v in tensor.tolist()]

    def wrap(self, model: torch.nn.Module) -> DistributedDataParallel:
        """``model`` (on this rank's device) inside DistributedDataParallel.

        DDP broadcasts rank 0's parameters and buffers at construction, so every rank starts
        from the same weights whatever its own RNG did. Parameters a rank's forward leaves
        unused are allowed (an RGCN layer skips its relation weights for a shard of graphs
        without edges): DDP then averages zeros for them from that rank, and a parameter no rank
        used keeps no gradient, as in one process. The cost, one walk of the autograd graph per
        step, is small next to a step.
        """
        from torch.nn.parallel import DistributedDataParallel

        warnings.filterwarnings("ignore", message=".*find_unused_parameters=True was specified")
        ids = [self.device.index or 0] if self.device.type == "cuda" else None
        return DistributedDataParallel(model, device_ids=ids, find_unused_parameters=True)

    @property
    def _object_device(self) -> torch.device | None:
        return self.device if self.device.type == "cuda" else None


def init_worker(env: WorkerEnv, device: str | None) -> DistContext:
    """Join the process group: NCCL on ``cuda:<LOCAL_RANK>``, gloo on CPU.

    Raises:
        ValueError: CUDA was asked for but this rank has no GPU of its own.
    """
    import torch
    import torch.distributed as dist

    from streamguard_core.models.adapters import resolve_device

    dev = resolve_device(device)
    if dev.type == "cuda":
        if env.local_rank >= torch.cuda.device_count():
            raise ValueError(
                f"rank {env.rank} needs cuda:{env.local_rank} but this process sees "
                f"{torch.cuda.device_count()} GPU(s): nproc_per_node must not exceed the GPUs"
            )
        dev = torch.device("cuda", env.local_rank)
        torch.cuda.set_device(dev)
    if not dist.is_initialized():
        dist.init_process_group(
            "nccl" if dev.type == "cuda" else "gloo",
            timeout=COLLECTIVE_TIMEOUT,
            device_id=dev if dev.type == "cuda" else None,
        )
    return DistContext(env.rank, env.world_size, env.local_rank, dev)


def close_worker() -> None:
    """Leave the process group (when this process joined one)."""
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


def shard_batch(indices: np.ndarray, rank: int, world_size: int) -> tuple[np.ndarray, bool]:
    """This rank's contiguous share of one global batch, and whether it is a stand-in.

    The shards of ranks ``0..world_size-1`` concatenated are ``indices``, in order (sizes
    differ by at most one). A rank left with nothing (fewer examples than ranks) gets the
    batch's first example as a stand-in (True), to be weighted 0: it still has to join the
    gradient all-reduce.

    Shapes:
        indices: [global_batch] -> [local_batch], local_batch >= 1.
    """
    local = np.array_split(np.asarray(indices), world_size)[rank]
    if len(local) == 0:
        return np.asarray(indices)[:1], True
    return local, False


def rank_seed(seed: int, rank: int) -> int:
    """The torch seed of rank ``rank``'s own dropout stream (rank 0: the run's seed)."""
    return seed + 1_000_003 * rank


class WorkerStop:
    """A worker's ``should_stop``: the launcher's stop file exists, or SIGTERM arrived (torchrun
    forwards its own SIGTERM to the workers). The training loop all-reduces the answer."""

    def __init__(self, run_dir: str | Path) -> None:
        self.stop_file = RunPaths(run_dir).ddp_stop
        self.signalled = False

    def install(self) -> None:
        """Handle SIGTERM by asking to stop after the current step."""
        signal.signal(signal.SIGTERM, self._handle)

    def _handle(self, signum: int, frame: FrameType | None) -> None:
        self.signalled = True

    def __call__(self) -> bool:
        return self.signalled or self.stop_file.exists()


# --------------------------------------------------------------------------- launcher side


def torchrun_command(spec_file: Path, nproc: int, device_type: str) -> list[str]:
    """The torchrun command line of one data-parallel job."""
    return [
        sys.executable, "-m", "torch.distributed.run", "--standalone",
        f"--nproc_per_node={nproc}",
        "-m", "streamguard_core.training.job", str(spec_file), "--device", device_type,
    ]  # fmt: skip


def check_devices(nproc: int, device: str | None) -> str:
    """The device type the workers use (``cpu`` or ``cuda``) for ``nproc`` processes.

    Raises:
        ValueError: a single GPU was named, or there are fewer GPUs than processes.
    """
    import torch

    from streamguard_core.models.adapters import resolve_device

    dev = resolve_device(device)
    if dev.type == "cuda":
        if dev.index is not None:
            raise ValueError(
                f"nproc_per_node {nproc} runs rank r on cuda:r of the visible GPUs: pass device "
                f"'cuda' (not {dev}) and choose the GPUs with CUDA_VISIBLE_DEVICES"
            )
        visible = torch.cuda.device_count()
        if visible < nproc:
            raise ValueError(
                f"nproc_per_node {nproc} needs {nproc} GPUs (one per process); this job sees "
                f"{visible}: lower nproc_per_node or pass device 'cpu'"
            )
    elif dev.type != "cpu":
        raise ValueError(f"nproc_per_node > 1 runs on 'cpu' or 'cuda', not {dev}")
    return dev.type


class EpochForwarder:
    """Hands ``on_epoch_end`` the epoch rows rank 0 adds to ``training_metadata.json``."""

    def __init__(
        self,
        paths: RunPaths,
        epochs: int,
        on_epoch_end: Callable[[dict[str, Any]], None] | None,
    ) -> None:
        from streamguard_core.training.checkpoint import is_valid_checkpoint

        self.paths, self.epochs, self.on_epoch_end = paths, epochs, on_epoch_end
        # a resumed run's earlier epochs were reported by the run that trained them
        self.seen = len(self._history()) if is_valid_checkpoint(paths.latest) else 0

    def _history(self) -> list[dict[str, Any]]:
        try:  # written atomically: a read sees the old file or the new one
            return list(json.loads(self.paths.metadata.read_text()).get("history") or [])
        except (OSError, ValueError):
            return []

    def poll(self) -> None:
        """Forward the rows added since the last poll."""
        if self.on_epoch_end is None:
            return
        history = self._history()
        for row in history[self.seen :]:
            self.on_epoch_end(dict(row, epochs=self.epochs))
        self.seen = max(self.seen, len(history))


def _failure_reason(log_path: Path, code: int) -> str:
    """The last exception line torchrun's log shows, else the exit code."""
    try:
        lines = log_path.read_text(errors="replace").splitlines()
    except OSError:
        lines = []
    exception = re.compile(r"^(?:\[rank\d+\]:\s*)?([A-Za-z_][\w.]*(?:Error|Exception)\b.*)$")
    for line in reversed(lines):
        match = exception.match(line.strip())
        if match and "ChildFailedError" not in line:
            return f"{match.group(1)} (see {log_path})"
    return f"torchrun exited with code {code} without a run status (see {log_path})"


def launch(
    spec: TrainJobSpec,
    device: str | None = None,
    on_epoch_end: Callable[[dict[str, Any]], None] | None = None,
    should_stop: Callable[[], bool] | None = None,
    backend: str = "local",
) -> RunStatus:
    """Run ``spec`` as ``spec.train.nproc_per_node`` DDP processes under torchrun; wait for it.

    Returns:
        The run's status (rank 0's ``run_status.json``; a ``failed`` one, written here, when
        the workers ended without one).

    Raises:
        ValueError: the devices cannot hold the processes (see :func:`check_devices`).
        TrainingInterrupted: ``should_stop`` answered True and the workers stopped ('latest'
            is saved; no status is written, since the job is not over).
    """
    from streamguard_core.training.job import RunStatus, read_run_status
    from streamguard_core.training.loop import TrainingInterrupted

    nproc = spec.train.nproc_per_node
    device_type = check_devices(nproc, device)
    paths = RunPaths(spec.run_dir)
    paths.root.mkdir(parents=True, exist_ok=True)
    spec_file, stop_file, log_path = paths.ddp_spec, paths.ddp_stop, paths.torchrun_log
    stop_file.unlink(missing_ok=True)
    spec_file.write_text(spec.model_dump_json())
    env = dict(os.environ)
    # torchrun would set 1 (with a warning); the cores shared out is the better default on CPU
    env.setdefault("OMP_NUM_THREADS", str(max(1, (os.cpu_count() or 1) // nproc)))
    forwarder = EpochForwarder(paths, spec.train.epochs, on_epoch_end)
    stop_sent_at: float | None = None
    t0 = time.perf_counter()
    log.info("%s seed %d: %d DDP processes on %s (log %s)", spec.name, spec.seed, nproc,
             device_type, log_path)  # fmt: skip
    try:
        with open(log_path, "wb") as out:
            proc = subprocess.Popen(
                torchrun_command(spec_file, nproc, device_type),
                env=env, stdout=out, stderr=subprocess.STDOUT,
            )  # fmt: skip
            try:
                while proc.poll() is None:
                    if stop_sent_at is None and should_stop is not None and should_stop():
                        stop_file.touch()
                        stop_sent_at = time.monotonic()
                    elif (
                        stop_sent_at is not None and time.monotonic() - stop_sent_at > STOP_GRACE_S
                    ):
                        proc.terminate()
                    forwarder.poll()
                    time.sleep(POLL_S)
            finally:
                if proc.poll() is None:  # we are being torn down (an exception, Ctrl-C)
                    proc.terminate()
                    try:
                        proc.wait(timeout=30)
                    except subprocess.TimeoutExpired:
                        proc.kill()
                code = proc.wait()
        forwarder.poll()
    finally:
        spec_file.unlink(missing_ok=True)
        stop_file.unlink(missing_ok=True)
    status = read_run_status(paths.root)
    if status is None and stop_sent_at is not None:
        raise TrainingInterrupted(f"stop requested; the {nproc} DDP processes saved 'latest'")
    if status is None:
        status = RunStatus.of_job(
            spec, "failed", error=_failure_reason(log_path, code), device=device_type
        )
    status = status.model_copy(
        update={"backend": backend, "wall_s": round(time.perf_counter() - t0, 2)}
    )
    status.write()
    return status
