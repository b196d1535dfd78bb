"""The training container's entrypoint (``streamguard-sagemaker-train``): the SageMaker contract.

SageMaker starts the image as ``docker run IMAGE train``; this command then::

    <base>/input/config/hyperparameters.json   read: TrainHyperparameters, every value a string
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

Exit status: 0 completed or collapsed (``run_status.json`` tells which; the aggregate reports
the collapse), 1 failed (``output/failure`` written), 143 stopped by SIGTERM after saving
'latest' (a spot interruption or StopTrainingJob; SageMaker restarts interrupted spot jobs, and
the restart resumes from the checkpoint).
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import signal
import sys
import time
import traceback
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from types import FrameType
from typing import Any

from streamguard_core.aws.config import TrainHyperparameters
from streamguard_core.io import atomic_write_json, atomic_write_text

log = logging.getLogger("streamguard.sagemaker")

BASE_DIR_ENV = "SM_BASE_DIR"
DEFAULT_BASE_DIR = "/opt/ml"
DATA_CHANNEL = "data"
EXIT_OK, EXIT_FAILURE = 0, 1
EXIT_INTERRUPTED = 128 + int(signal.SIGTERM)
# what the final model directory receives from the run directory
PUBLISHED_FILES = (
    "metrics.json",
    "training_metadata.json",
    "predictions.jsonl",
    "exp_config.json",
    "collapse_report.json",
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


def load_hyperparameters(path: str | Path) -> TrainHyperparameters:
    """Read and validate ``hyperparameters.json``.

    Raises:
        FileNotFoundError: the file is missing.
        ValueError: a value is invalid or a key unknown.
    """
    from pydantic import ValidationError

    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"{path}: hyperparameters.json not found")
    raw = json.loads(path.read_text())
    try:
        return TrainHyperparameters.from_sagemaker(raw)
    except ValidationError as exc:
        problems = "; ".join(
            f"{'.'.join(str(p) for p in e['loc'])}: {e['msg']} (got {e.get('input')!r})"
            for e in exc.errors()
        )
        raise ValueError(f"invalid hyperparameters: {problems}") from exc


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
    checkpoints = Path(run_dir) / "checkpoints"
    chosen = find_resume_checkpoint(checkpoints)
    latest = checkpoints / "latest"
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


def _train_baseline(hp: TrainHyperparameters, data_dir: Path, run_dir: Path) -> dict[str, Any]:
    """Fit the TF-IDF baseline and write the run files a neural run writes."""
    from streamguard_core.evaluation.metrics import classification_metrics
    from streamguard_core.io import write_jsonl
    from streamguard_core.models.baseline import BaselineConfig, BaselineDetector
    from streamguard_core.models.registry import load_labelled

    train, _ = load_labelled(data_dir / "train")
    valid, _ = load_labelled(data_dir / "valid")
    det = BaselineDetector(BaselineConfig(seed=hp.seed))
    results: dict[str, Any] = {
        "valid": det.fit(
            [r.func for r in train],
            [r.label for r in train],
            [r.func for r in valid],
            [r.label for r in valid],
        )
    }
    scored = valid
    if (data_dir / "test" / "records.jsonl").exists():
        test, _ = load_labelled(data_dir / "test")
        if test:
            results["test"] = classification_metrics(
                [r.label for r in test], det.predict_proba([r.func for r in test]), det.threshold
            )
            scored = test
    probs = det.predict_proba([r.func for r in scored])
    write_jsonl(
        run_dir / "predictions.jsonl",
        (
            {
                "id": r.id,
                "label": int(r.label),
                "probability": float(p),
                "prediction": int(p >= det.threshold),
            }
            for r, p in zip(scored, probs, strict=True)
        ),
    )
    if (run_dir / "model").exists():
        shutil.rmtree(run_dir / "model")
    det.save(run_dir / "model", extra_card={"metrics": results})
    atomic_write_json(run_dir / "metrics.json", results)
    atomic_write_json(
        run_dir / "training_metadata.json",
        {"kind": "baseline", "history": [], "device": "cpu", **det.metadata},
    )
    atomic_write_json(
        run_dir / "exp_config.json",
        {
            "kind": "baseline",
            "model": det.config.model_dump(mode="json"),
            "data_dir": str(data_dir),
            "resumed": False,
        },
    )
    return results


def _check_data(data_dir: Path) -> None:
    if not (data_dir / "preprocessing_metadata.json").exists():
        raise FileNotFoundError(
            f"no processed data set in the '{DATA_CHANNEL}' channel at {data_dir} (no "
            "preprocessing_metadata.json): pass the output of `streamguard data preprocess` "
            f"as the '{DATA_CHANNEL}' input channel"
        )


def run_job(
    hp: TrainHyperparameters, paths: SageMakerPaths, should_stop: Callable[[], bool] | None = None
) -> dict[str, Any]:
    """Train ``hp.model`` into ``paths.run_dir`` (resuming when it can) and publish the result.

    Returns the ``run_status.json`` content.

    Raises:
        TrainingInterrupted: ``should_stop`` answered True; 'latest' is saved (neural kinds).
        FileNotFoundError: the data channel holds no processed data set.
    """
    start = time.monotonic()
    _check_data(paths.data_dir)  # before the slow imports: a wrong channel fails fast
    paths.run_dir.mkdir(parents=True, exist_ok=True)
    status: dict[str, Any] = {
        "model": hp.model,
        "seed": hp.seed,
        "status": "completed",
        "error": None,
        "backend": "sagemaker",
        "resumed": False,
    }
    if hp.model == "baseline":
        # seconds of work and no checkpoint: a SIGTERM stops it at once (StopRequest)
        _train_baseline(hp, paths.data_dir, paths.run_dir)
    else:
        from streamguard_core.training.collapse import CollapseError
        from streamguard_core.training.run import train_neural

        resume_from = prepare_resume(paths.run_dir)
        status["resumed"] = resume_from is not None
        if resume_from is not None:
            log.info("resuming %s seed %d from %s", hp.model, hp.seed, resume_from)
        model_cfg, train_cfg = hp.model_and_train_configs()
        try:
            train_neural(
                hp.model,
                model_cfg,
                train_cfg,
                paths.data_dir,
                paths.run_dir,
                resume_run=resume_from is not None,
                device=paths.device,
                should_stop=should_stop,
            )
        except CollapseError as exc:
            status["status"] = "collapsed"
            status["error"] = f"{exc.event.reason}: {exc.event.detail}"
            log.error("training collapsed: %s", status["error"])
    metadata = paths.run_dir / "training_metadata.json"
    device = json.loads(metadata.read_text()).get("device") if metadata.exists() else None
    status.update(
        wall_s=round(time.monotonic() - start, 2),
        device=device or paths.device or "cpu",
        run_dir=str(paths.run_dir),
        training_job_name=os.environ.get("TRAINING_JOB_NAME"),
    )
    publish(paths, status)
    return status


def publish(paths: SageMakerPaths, status: dict[str, Any]) -> None:
    """Copy the final model and run files into the model directory; write run_status.json."""
    paths.model_dir.mkdir(parents=True, exist_ok=True)
    run_model = paths.run_dir / "model"
    if (paths.model_dir / "model").exists():
        shutil.rmtree(paths.model_dir / "model")
    if run_model.is_dir():
        shutil.copytree(run_model, paths.model_dir / "model")
    for name in PUBLISHED_FILES:
        (paths.model_dir / name).unlink(missing_ok=True)
        if (paths.run_dir / name).exists():
            shutil.copy2(paths.run_dir / name, paths.model_dir / name)
    atomic_write_json(paths.model_dir / "run_status.json", status)
    if (paths.run_dir / "training.log").exists():
        paths.output_data_dir.mkdir(parents=True, exist_ok=True)
        shutil.copy2(paths.run_dir / "training.log", paths.output_data_dir / "training.log")


def write_failure(paths: SageMakerPaths, exc: BaseException) -> str:
    """Write the FailureReason SageMaker reports (one readable line first); returns it."""
    reason = f"{type(exc).__name__}: {exc}"
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
            "hyperparameters.json and SM_* variables",
            file=sys.stderr,
        )
        return 2
    paths = SageMakerPaths.from_env()
    handler = logging.StreamHandler(sys.stdout)
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    root_logger = logging.getLogger("streamguard")
    root_logger.addHandler(handler)
    root_logger.setLevel(logging.INFO)
    stop = StopRequest()
    previous = signal.signal(signal.SIGTERM, stop.handle)
    try:
        paths.failure.unlink(missing_ok=True)  # a stale one from an earlier direct run
        hp = load_hyperparameters(paths.hyperparameters)
        log.info(
            "training %s seed %d in %s (data %s, device %s)",
            hp.model,
            hp.seed,
            paths.run_dir,
            paths.data_dir,
            paths.device or "auto",
        )
        status = run_job(hp, paths, should_stop=stop)
        log.info("run %s: %s", status["status"], paths.model_dir)
        return EXIT_OK
    except StopNow:
        log.warning("stopped before training started; exiting %d", EXIT_INTERRUPTED)
        return EXIT_INTERRUPTED
    except Exception as exc:
        if _interrupted(exc):
            log.warning("%s; exiting %d so the job restarts and resumes", exc, EXIT_INTERRUPTED)
            return EXIT_INTERRUPTED
        traceback.print_exc()
        reason = write_failure(paths, exc)
        log.error("training failed: %s", reason)
        return EXIT_FAILURE
    finally:
        root_logger.removeHandler(handler)
        signal.signal(signal.SIGTERM, previous)


if __name__ == "__main__":
    raise SystemExit(main())
