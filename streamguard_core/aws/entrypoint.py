"""The training container's entrypoint (``streamguard-sagemaker-train``): the SageMaker contract.

SageMaker starts the image as ``docker run IMAGE train``; this command then::

    <base>/input/config/hyperparameters.json   read: {"spec": the TrainJobSpec as JSON}; its
                                               data_dir and run_dir are replaced by the two below
    <base>/input/data/data/                    read: the processed data set (channel 'data')
    <base>/checkpoints/run/                    the run directory; SageMaker syncs
                                               <base>/checkpoints with CheckpointConfig.S3Uri, so
                                               checkpoints/run/checkpoints/latest survives a spot
                                               interruption and is resumed from on restart
    <base>/model/                              written at the end, uploaded as model.tar.gz:
                                               model/, metrics.json, training_metadata.json,
                                               predictions.jsonl, exp_config.json,
                                               collapse_report.json (if any), run_status.json
    <base>/output/failure                      written on error: the FailureReason
    <base>/output/data/                        training.log (uploaded as output.tar.gz)

``<base>`` is ``/opt/ml`` unless ``SM_BASE_DIR`` says otherwise (runs outside a container);
``SM_CHANNEL_DATA``, ``SM_MODEL_DIR``, ``SM_OUTPUT_DATA_DIR`` and ``SM_NUM_GPUS`` are honoured
when set.

The job itself is :func:`streamguard_core.training.job.run_job`, the function a local run calls:
this module only maps the ``/opt/ml`` layout onto the spec, picks the resume point, handles
SIGTERM and publishes the result.

Exit status: 0 completed or collapsed (``run_status.json`` tells which; the aggregate reports
the collapse), 1 failed (``output/failure`` written: the run's error, or why the spec or the
data could not be read), 143 stopped by SIGTERM after saving 'latest' (a spot interruption or
StopTrainingJob; SageMaker restarts interrupted spot jobs, and the restart resumes from the
checkpoint).
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import signal
import sys
import traceback
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from types import FrameType
from typing import TYPE_CHECKING

from streamguard_core.aws.config import spec_from_hyperparameters
from streamguard_core.config import TrainJobSpec
from streamguard_core.io import atomic_write_text
from streamguard_core.preprocess.dataset import METADATA_FILE
from streamguard_core.redact import RedactingFilter
from streamguard_core.training.paths import RunPaths

if TYPE_CHECKING:
    from streamguard_core.training.job import RunStatus

log = logging.getLogger("streamguard.sagemaker")

BASE_DIR_ENV = "SM_BASE_DIR"
DEFAULT_BASE_DIR = "/opt/ml"
DATA_CHANNEL = "data"
EXIT_OK, EXIT_FAILURE = 0, 1
EXIT_INTERRUPTED = 128 + int(signal.SIGTERM)
# the RunPaths files the final model directory receives from the run directory (with model/
# and run_status.json)
PUBLISHED_FILES = (
    "metrics",
    "metadata",
    "predictions",
    "valid_predictions",
    "oof_predictions",
    "exp_config",
    "collapse_report",
)


@dataclass(frozen=True)
class SageMakerPaths:
    """The ``/opt/ml`` layout of one training job (see the module docstring)."""

    base: Path
    data_dir: Path
    model_dir: Path
    output_data_dir: Path
    num_gpus: int | None

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> SageMakerPaths:
        """The layout from ``SM_BASE_DIR`` and the ``SM_*`` variables."""
        env = os.environ if env is None else env
        base = Path(env.get(BASE_DIR_ENV) or DEFAULT_BASE_DIR)
        gpus = env.get("SM_NUM_GPUS")
        return cls(
            base=base,
            data_dir=Path(env.get("SM_CHANNEL_DATA") or base / "input" / "data" / DATA_CHANNEL),
            model_dir=Path(env.get("SM_MODEL_DIR") or base / "model"),
            output_data_dir=Path(env.get("SM_OUTPUT_DATA_DIR") or base / "output" / "data"),
            num_gpus=int(gpus) if gpus not in (None, "") else None,
        )

    @property
    def hyperparameters(self) -> Path:
        return self.base / "input" / "config" / "hyperparameters.json"

    @property
    def failure(self) -> Path:
        return self.base / "output" / "failure"

    @property
    def checkpoints(self) -> Path:
        return self.base / "checkpoints"

    @property
    def run_dir(self) -> Path:
        return self.checkpoints / "run"

    @property
    def device(self) -> str | None:
        """``cpu`` without GPUs, ``cuda`` with them, None (best available) when not told."""
        if self.num_gpus is None:
            return None
        return "cuda" if self.num_gpus > 0 else "cpu"


class StopNow(BaseException):
    """Raised by the SIGTERM handler before training has started: there is nothing to save.

    A ``BaseException`` so that no ``except Exception`` on the way swallows it.
    """


class StopRequest:
    """The SIGTERM handler, and the ``should_stop`` poll the training loop calls.

    Until the loop first polls, a signal stops the process at once (:class:`StopNow`): imports,
    data checks and setup hold nothing worth saving, and the checkpoint being resumed from is
    untouched. From the first poll on, a signal only sets the flag, and the loop saves 'latest'
    after the current step and raises ``TrainingInterrupted``.
    """

    def __init__(self) -> None:
        self.signum: int | None = None
        self.stop_at_once = True

    def handle(self, signum: int, frame: FrameType | None) -> None:
        self.signum = signum
        if self.stop_at_once:
            log.warning("received signal %d before training started: stopping now", signum)
            raise StopNow(signum)
        log.warning("received signal %d: saving 'latest' after the current step", signum)

    def __call__(self) -> bool:
        self.stop_at_once = False
        return self.signum is not None


def load_spec(path: str | Path) -> TrainJobSpec:
    """The job spec in ``hyperparameters.json`` (its ``spec`` value; ``sagemaker_*`` ignored).

    Raises:
        FileNotFoundError: the file is missing.
        ValueError: ``spec`` is missing or invalid, or the file holds another key.
    """
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"{path}: hyperparameters.json not found")
    return spec_from_hyperparameters(json.loads(path.read_text()))


def _meta_step(checkpoint: Path) -> int:
    try:
        return int(json.loads((checkpoint / "meta.json").read_text()).get("global_step", -1))
    except (OSError, ValueError):
        return -1


def find_resume_checkpoint(checkpoints_dir: str | Path) -> Path | None:
    """The newest complete checkpoint among ``latest`` and ``epoch_<k>`` (by global step).

    Incomplete ones (a sync cut short: no ``state.pt`` or no ``meta.json``) are logged and
    ignored; on a tie ``latest`` wins.
    """
    from streamguard_core.training.checkpoint import is_valid_checkpoint

    root = Path(checkpoints_dir)
    if not root.is_dir():
        return None
    candidates = [root / "latest", *sorted(root.glob("epoch_*"))]
    best: tuple[int, Path] | None = None
    for path in candidates:
        if not path.exists():
            continue
        if not is_valid_checkpoint(path):
            log.warning("ignoring incomplete checkpoint %s", path)
            continue
        step = _meta_step(path)
        if best is None or step > best[0]:
            best = (step, path)
    return None if best is None else best[1]


def prepare_resume(run_dir: str | Path) -> Path | None:
    """Make the newest complete checkpoint the run's ``latest``; returns it (None: fresh start).

    When ``latest`` itself is incomplete and an ``epoch_<k>`` is complete, that epoch's
    checkpoint (a full resume point) is copied into place.
    """
    run = RunPaths(run_dir)
    checkpoints, latest = run.checkpoints, run.latest
    chosen = find_resume_checkpoint(checkpoints)
    if chosen is None:
        if latest.exists():
            shutil.rmtree(latest)  # incomplete: a fresh run must not trip over it
        return None
    if chosen != latest:
        staging = checkpoints / ".latest.resume"  # copied aside, then renamed: never half there
        if staging.exists():
            shutil.rmtree(staging)
        shutil.copytree(chosen, staging)
        if latest.exists():
            shutil.rmtree(latest)
        os.replace(staging, latest)
        log.info("resuming from %s (newer than any complete 'latest')", chosen.name)
    return chosen


def _check_data(data_dir: Path) -> None:
    if not (data_dir / METADATA_FILE).exists():
        raise FileNotFoundError(
            f"no processed data set in the '{DATA_CHANNEL}' channel at {data_dir} (no "
            f"{METADATA_FILE}): pass the output of `streamguard data preprocess` as the "
            f"'{DATA_CHANNEL}' input channel"
        )


def train(
    spec: TrainJobSpec, paths: SageMakerPaths, should_stop: Callable[[], bool] | None = None
) -> RunStatus:
    """Run ``spec`` on the ``/opt/ml`` layout (resuming when it can) and publish the result.

    The spec's ``data_dir`` and ``run_dir`` become the data channel and
    ``checkpoints/run``; then :func:`~streamguard_core.training.job.run_job` trains it, exactly
    as a local run does. Returns the run's status (``run_status.json``).

    Raises:
        TrainingInterrupted: ``should_stop`` answered True; 'latest' is saved (neural kinds).
        FileNotFoundError: the data channel holds no processed data set.
    """
    _check_data(paths.data_dir)  # before the slow imports: a wrong channel fails fast
    spec = spec.with_paths(paths.data_dir, paths.run_dir)
    resume_from = prepare_resume(paths.run_dir)
    if resume_from is not None:
        log.info("resuming %s seed %d from %s", spec.name, spec.seed, resume_from)
    from streamguard_core.training.job import run_job

    status = run_job(spec, device=paths.device, should_stop=should_stop, backend="sagemaker")
    status = status.model_copy(update={"job_name": os.environ.get("TRAINING_JOB_NAME")})
    status.write()
    publish(paths, status)
    return status


def publish(paths: SageMakerPaths, status: RunStatus) -> None:
    """Copy the final model and run files into the model directory; write run_status.json."""
    run, published = RunPaths(paths.run_dir), RunPaths(paths.model_dir)
    published.root.mkdir(parents=True, exist_ok=True)
    if published.model.exists():
        shutil.rmtree(published.model)
    if run.model.is_dir():
        shutil.copytree(run.model, published.model)
    for name in PUBLISHED_FILES:
        source, target = getattr(run, name), getattr(published, name)
        target.unlink(missing_ok=True)
        if source.exists():
            shutil.copy2(source, target)
    status.write(published.root)
    if run.log.exists():
        paths.output_data_dir.mkdir(parents=True, exist_ok=True)
        shutil.copy2(run.log, paths.output_data_dir / run.log.name)


def write_failure(paths: SageMakerPaths, reason: str) -> str:
    """Write the FailureReason SageMaker reports (one readable line first); returns it."""
    atomic_write_text(paths.failure, reason + "\n")
    return reason


def _interrupted(exc: BaseException) -> bool:
    """True for the loop's TrainingInterrupted (without importing torch to find out)."""
    loop = sys.modules.get("streamguard_core.training.loop")
    return loop is not None and isinstance(exc, loop.TrainingInterrupted)


def main(argv: list[str] | None = None) -> int:
    """Run the job described by the environment; returns the exit status (see the module)."""
    args = list(sys.argv[1:] if argv is None else argv)
    if args and args[0] == "train":  # SageMaker runs `docker run IMAGE train`
        args = args[1:]
    if args:
        print(
            f"streamguard-sagemaker-train: unexpected arguments {args}; everything comes from "
            "hyperparameters.json ('spec') and SM_* variables",
            file=sys.stderr,
        )
        return 2
    paths = SageMakerPaths.from_env()
    handler = logging.StreamHandler(sys.stdout)
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    handler.addFilter(RedactingFilter())  # stdout becomes CloudWatch Logs: no secrets
    root_logger = logging.getLogger("streamguard")
    root_logger.addHandler(handler)
    root_logger.setLevel(logging.INFO)
    stop = StopRequest()
    previous = signal.signal(signal.SIGTERM, stop.handle)
    try:
        paths.failure.unlink(missing_ok=True)  # a stale one from an earlier direct run
        spec = load_spec(paths.hyperparameters)
        log.info(
            "training %s seed %d in %s (data %s, device %s)",
            spec.name,
            spec.seed,
            paths.run_dir,
            paths.data_dir,
            paths.device or "auto",
        )
        status = train(spec, paths, should_stop=stop)
        log.info("run %s: %s", status.status, paths.model_dir)
        if status.status == "failed":
            write_failure(paths, status.error or "the run failed (see training.log)")
            return EXIT_FAILURE
        return EXIT_OK
    except StopNow:
        log.warning("stopped before training started; exiting %d", EXIT_INTERRUPTED)
        return EXIT_INTERRUPTED
    except Exception as exc:
        if _interrupted(exc):
            log.warning("%s; exiting %d so the job restarts and resumes", exc, EXIT_INTERRUPTED)
            return EXIT_INTERRUPTED
        traceback.print_exc()
        reason = write_failure(paths, f"{type(exc).__name__}: {exc}")
        log.error("training failed: %s", reason)
        return EXIT_FAILURE
    finally:
        root_logger.removeHandler(handler)
        signal.signal(signal.SIGTERM, previous)


if __name__ == "__main__":
    raise SystemExit(main())
