"""Collapse detection: stop a training run that went wrong early, with a clear reason.

A :class:`CollapseDetector` watches every optimisation step (loss and pre-clipping gradient norm)
and every evaluation (predicted classes and vulnerable-class F1). When one symptom persists for
its patience it returns a :class:`CollapseEvent`; the training loop then writes a report with
:func:`write_collapse_report`, raises :class:`CollapseError` and the CLI exits with
:data:`COLLAPSE_EXIT_CODE`.

Symptoms, each counted over *consecutive* observations (a healthy observation resets it):

* ``non_finite_loss``: the loss, or the gradient norm, is NaN/inf (AMP may skip a few steps).
* ``exploding_gradients``: the pre-clipping gradient norm is above ``max_grad_norm_explode``.
* ``constant_predictions``: an evaluation predicts one class for every example.
* ``zero_f1``: an evaluation scores vulnerable-class F1 == 0 (a non-finite F1 counts as 0).

The detector's counters are part of a checkpoint (:meth:`CollapseDetector.state_dict`, plain
Python values only, so ``torch.load(weights_only=True)`` accepts them) and a resumed run
continues counting exactly where the interrupted one stopped.
"""

from __future__ import annotations

import math
from collections import deque
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np
from pydantic import BaseModel, ConfigDict, Field

from streamguard_core.io import atomic_write_json, to_jsonable

COLLAPSE_EXIT_CODE = 3
"""Process exit status of a training run stopped by collapse detection."""

CollapseReason = Literal[
    "non_finite_loss", "exploding_gradients", "constant_predictions", "zero_f1"
]

HISTORY_STEPS = 20
"""Recent step values kept to justify an event."""
HISTORY_EVALS = 10
"""Recent evaluation values kept to justify an event."""


@dataclass
class CollapseEvent:
    """Why a run was stopped, when, and the recent values that justify it."""

    reason: CollapseReason
    detail: str
    epoch: int | None
    step: int | None
    history: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON values (NaN/inf become ``None``)."""
        data: dict[str, Any] = to_jsonable(asdict(self))
        return data


class CollapseConfig(BaseModel):
    """Thresholds and patiences of collapse detection."""

    model_config = ConfigDict(extra="forbid")

    max_grad_norm_explode: float = Field(
        1e4, gt=0, description="A pre-clipping gradient norm above this counts as exploding."
    )
    explode_patience: int = Field(
        3, ge=1, description="Consecutive exploding steps before the run counts as collapsed."
    )
    nonfinite_patience: int = Field(
        3,
        ge=1,
        description="Consecutive non-finite losses (AMP may skip a few) before collapse.",
    )
    constant_patience: int = Field(
        3, ge=1, description="Evaluations in a row predicting a single class before collapse."
    )
    zero_f1_patience: int = Field(
        3, ge=1, description="Evaluations in a row with vulnerable-class F1 == 0 before collapse."
    )
    min_epochs_before_eval_checks: int = Field(
        1,
        ge=0,
        description="Evaluation checks apply only to evaluations with epoch >= this value.",
    )


class CollapseError(RuntimeError):
    """Raised by a training loop that stops on a :class:`CollapseEvent` (kept in ``.event``)."""

    def __init__(self, event: CollapseEvent) -> None:
        where = f"epoch {event.epoch}" + (f", step {event.step}" if event.step is not None else "")
        super().__init__(f"training collapsed ({event.reason}) at {where}: {event.detail}")
        self.event = event


def _as_float(value: Any) -> float:
    """A float, with ``None`` (how JSON stores NaN/inf) read back as NaN."""
    return math.nan if value is None else float(value)


class CollapseDetector:
    """Counts consecutive symptoms over steps and evaluations; see the module docstring.

    ``on_step`` and ``on_eval`` return ``None`` while the run is healthy and a
    :class:`CollapseEvent` once a symptom reached its patience (again on every later call while
    the symptom persists). The latest event is also kept in ``.event``.
    """

    def __init__(self, cfg: CollapseConfig | None = None) -> None:
        self.cfg = cfg or CollapseConfig()
        self.nonfinite_count = 0
        self.explode_count = 0
        self.constant_count = 0
        self.zero_f1_count = 0
        self.event: CollapseEvent | None = None
        self._losses: deque[float] = deque(maxlen=HISTORY_STEPS)
        self._grad_norms: deque[float | None] = deque(maxlen=HISTORY_STEPS)
        self._steps: deque[int] = deque(maxlen=HISTORY_STEPS)
        self._f1s: deque[float] = deque(maxlen=HISTORY_EVALS)
        self._class_counts: deque[dict[str, int]] = deque(maxlen=HISTORY_EVALS)
        self._eval_epochs: deque[int] = deque(maxlen=HISTORY_EVALS)

    # -- steps -----------------------------------------------------------------------------

    def on_step(
        self, loss: float, grad_norm: float | None, epoch: int, step: int
    ) -> CollapseEvent | None:
        """Record one optimisation step; ``grad_norm`` is the norm *before* clipping (or None)."""
        loss = float(loss)
        norm = None if grad_norm is None else float(grad_norm)
        self._losses.append(loss)
        self._grad_norms.append(norm)
        self._steps.append(int(step))

        finite = math.isfinite(loss) and (norm is None or math.isfinite(norm))
        if not finite:
            # neither healthy nor measurable: the explode counter is left as it is
            self.nonfinite_count += 1
        else:
            self.nonfinite_count = 0
            if norm is not None and norm > self.cfg.max_grad_norm_explode:
                self.explode_count += 1
            else:
                self.explode_count = 0

        if self.nonfinite_count >= self.cfg.nonfinite_patience:
            what = "loss" if not math.isfinite(loss) else "gradient norm"
            return self._emit(
                "non_finite_loss",
                f"{self.nonfinite_count} consecutive steps with a non-finite loss or gradient "
                f"norm (patience {self.cfg.nonfinite_patience}); last non-finite value: {what}",
                epoch,
                step,
            )
        if self.explode_count >= self.cfg.explode_patience:
            return self._emit(
                "exploding_gradients",
                f"{self.explode_count} consecutive steps with a pre-clipping gradient norm above "
                f"{self.cfg.max_grad_norm_explode:g} (patience {self.cfg.explode_patience}); "
                f"last norm {norm:.4g}",
                epoch,
                step,
            )
        return None

    # -- evaluations -----------------------------------------------------------------------

    def on_eval(
        self, predictions: Sequence[int] | np.ndarray, f1: float, epoch: int
    ) -> CollapseEvent | None:
        """Record one evaluation: predicted classes (0/1) and vulnerable-class F1.

        Evaluations with ``epoch < min_epochs_before_eval_checks`` are ignored entirely.
        Constant predictions are reported before zero F1 when both reach their patience.
        """
        if epoch < self.cfg.min_epochs_before_eval_checks:
            return None
        preds = np.asarray(predictions).reshape(-1)
        values, counts = np.unique(preds, return_counts=True)
        class_counts = {str(v.item()): int(c) for v, c in zip(values, counts, strict=True)}
        f1_value = float(f1)
        self._f1s.append(f1_value)
        self._class_counts.append(class_counts)
        self._eval_epochs.append(int(epoch))

        if preds.size > 0 and len(values) == 1:
            self.constant_count += 1
        else:
            self.constant_count = 0
        if not math.isfinite(f1_value) or f1_value == 0.0:
            self.zero_f1_count += 1
        else:
            self.zero_f1_count = 0

        if self.constant_count >= self.cfg.constant_patience:
            only = next(iter(class_counts))
            return self._emit(
                "constant_predictions",
                f"{self.constant_count} evaluations in a row predicting only class {only} "
                f"(patience {self.cfg.constant_patience})",
                epoch,
                None,
            )
        if self.zero_f1_count >= self.cfg.zero_f1_patience:
            return self._emit(
                "zero_f1",
                f"{self.zero_f1_count} evaluations in a row with vulnerable-class F1 == 0 "
                f"(patience {self.cfg.zero_f1_patience})",
                epoch,
                None,
            )
        return None

    # -- state -----------------------------------------------------------------------------

    def history(self) -> dict[str, Any]:
        """The recent step and evaluation values."""
        return {
            "steps": list(self._steps),
            "losses": list(self._losses),
            "grad_norms": list(self._grad_norms),
            "eval_epochs": list(self._eval_epochs),
            "eval_f1": list(self._f1s),
            "eval_class_counts": [dict(c) for c in self._class_counts],
        }

    def counters(self) -> dict[str, int]:
        """The consecutive-symptom counters."""
        return {
            "nonfinite_count": self.nonfinite_count,
            "explode_count": self.explode_count,
            "constant_count": self.constant_count,
            "zero_f1_count": self.zero_f1_count,
        }

    def state_dict(self) -> dict[str, Any]:
        """Counters and recent history as plain Python values (checkpoint-safe)."""
        return {"counters": self.counters(), "history": self.history()}

    def load_state_dict(self, d: dict[str, Any]) -> None:
        """Restore what :meth:`state_dict` returned (also after a JSON round trip)."""
        counters = d.get("counters", {})
        self.nonfinite_count = int(counters.get("nonfinite_count", 0))
        self.explode_count = int(counters.get("explode_count", 0))
        self.constant_count = int(counters.get("constant_count", 0))
        self.zero_f1_count = int(counters.get("zero_f1_count", 0))
        hist = d.get("history", {})
        self._steps = deque((int(s) for s in hist.get("steps", [])), maxlen=HISTORY_STEPS)
        self._losses = deque((_as_float(v) for v in hist.get("losses", [])), maxlen=HISTORY_STEPS)
        self._grad_norms = deque(
            (None if v is None else float(v) for v in hist.get("grad_norms", [])),
            maxlen=HISTORY_STEPS,
        )
        self._eval_epochs = deque(
            (int(e) for e in hist.get("eval_epochs", [])), maxlen=HISTORY_EVALS
        )
        self._f1s = deque((_as_float(v) for v in hist.get("eval_f1", [])), maxlen=HISTORY_EVALS)
        self._class_counts = deque(
            ({str(k): int(v) for k, v in c.items()} for c in hist.get("eval_class_counts", [])),
            maxlen=HISTORY_EVALS,
        )
        self.event = None

    def _emit(
        self, reason: CollapseReason, detail: str, epoch: int, step: int | None
    ) -> CollapseEvent:
        self.event = CollapseEvent(
            reason=reason,
            detail=detail,
            epoch=int(epoch),
            step=None if step is None else int(step),
            history={
                **self.history(),
                "counters": self.counters(),
                "config": self.cfg.model_dump(),
            },
        )
        return self.event


def write_collapse_report(
    path: str | Path, event: CollapseEvent, extra: dict[str, Any] | None = None
) -> Path:
    """Write the event, ``extra`` (model kind, seed, last metrics, ...) and ``exit_code`` as JSON.

    The file is written atomically. ``extra`` may not reuse the event's keys or ``exit_code``.
    """
    report = event.to_dict()
    clash = sorted(set(extra or {}) & (set(report) | {"exit_code"}))
    if clash:
        raise ValueError(f"extra keys clash with the collapse report's own keys: {clash}")
    report.update(extra or {})
    report["exit_code"] = COLLAPSE_EXIT_CODE
    return atomic_write_json(path, report)
