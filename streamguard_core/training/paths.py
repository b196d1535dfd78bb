"""Every file a training run writes, named in one place (no torch import: flows read these)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path


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
