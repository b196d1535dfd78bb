"""Every file a training run writes, named in one place (no torch import: flows read these),
and the guard that keeps directories built from config values inside their output root."""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

# one folder name: starts with a letter or digit, then letters, digits, '.', '_', '-'
SAFE_COMPONENT = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,127}")


class UnsafePathError(ValueError):
    """A directory built from a config value would leave its output root."""


def check_component(value: str, what: str) -> str:
    """``value`` when it is one safe folder name (see :data:`SAFE_COMPONENT`), for messages
    ``what`` names the setting.

    Raises:
        UnsafePathError: a separator, ``..``, an absolute path, an empty or over-long name.
    """
    if not isinstance(value, str) or not SAFE_COMPONENT.fullmatch(value) or ".." in value:
        raise UnsafePathError(
            f"{what} {value!r}: not a safe folder name (1-128 letters, digits, '.', '_' or "
            "'-', starting with a letter or digit; no '/', no '..'), so it cannot leave the "
            "output root"
        )
    return value


def confined(root: str | Path, *parts: str) -> Path:
    """``root/parts...``, checked to stay inside ``root``: every part a plain component, and
    the result (symbolic links resolved) under ``root`` (itself resolved, so a root that is a
    link is fine).

    Raises:
        UnsafePathError: a part is not a plain component, or a link under ``root`` points out.
    """
    base = Path(root)
    for part in parts:
        if not part or part in (".", "..") or Path(part).name != part or "\\" in part:
            raise UnsafePathError(f"{part!r}: not a single folder name under {base}")
    path = base.joinpath(*parts)
    real_root, real = base.resolve(), path.resolve()
    if not real.is_relative_to(real_root):
        raise UnsafePathError(
            f"{path}: resolves to {real}, outside the output root {real_root} (a symbolic "
            "link under the root points out); refused"
        )
    return path


@dataclass(frozen=True)
class RunPaths:
    """The files of one run directory (``<output_root>/<model>/seed_<n>/`` in a pipeline).

    ::

        exp_config.json          the job spec, resolved (reproduces the run)
        run_status.json          completed | collapsed | failed, with the reason (RunStatus)
        training_metadata.json   per-epoch curves, timings, best epoch, LR and its source
        training.log             human-readable log
        checkpoints/latest/      resume point (weights, optimizer, schedule, RNG, position)
        checkpoints/best/        best weights on validation F1
        checkpoints/epoch_<k>/   end of every epoch
        model/                   the final detector + model_card.json
        metrics.json             validation (and test) metrics of the best model
        predictions.jsonl        per-function probabilities on test (else valid)
        valid_predictions.jsonl  per-function probabilities on valid (fusion's valid inputs)
        oof_predictions.jsonl    a fold job's predictions on its held-out train fold
        collapse_report.json     only when the run collapsed
        torchrun.log             a DDP run's torchrun and worker output (nproc_per_node > 1)
        .ddp_spec.json           the job spec torchrun's workers read (removed afterwards)
        .ddp_stop                a stop request to the DDP workers (removed afterwards)
    """

    root: Path

    def __init__(self, root: str | Path) -> None:
        object.__setattr__(self, "root", Path(root))

    @property
    def exp_config(self) -> Path:
        return self.root / "exp_config.json"

    @property
    def status(self) -> Path:
        return self.root / "run_status.json"

    @property
    def metadata(self) -> Path:
        return self.root / "training_metadata.json"

    @property
    def log(self) -> Path:
        return self.root / "training.log"

    @property
    def checkpoints(self) -> Path:
        return self.root / "checkpoints"

    @property
    def latest(self) -> Path:
        return self.checkpoints / "latest"

    @property
    def best(self) -> Path:
        return self.checkpoints / "best"

    def epoch(self, k: int) -> Path:
        return self.checkpoints / f"epoch_{k}"

    @property
    def model(self) -> Path:
        return self.root / "model"

    @property
    def metrics(self) -> Path:
        return self.root / "metrics.json"

    @property
    def predictions(self) -> Path:
        return self.root / "predictions.jsonl"

    @property
    def valid_predictions(self) -> Path:
        return self.root / "valid_predictions.jsonl"

    @property
    def oof_predictions(self) -> Path:
        return self.root / "oof_predictions.jsonl"

    @property
    def collapse_report(self) -> Path:
        return self.root / "collapse_report.json"

    @property
    def torchrun_log(self) -> Path:
        return self.root / "torchrun.log"

    @property
    def ddp_spec(self) -> Path:
        return self.root / ".ddp_spec.json"

    @property
    def ddp_stop(self) -> Path:
        return self.root / ".ddp_stop"
