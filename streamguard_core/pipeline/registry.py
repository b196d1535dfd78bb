"""A small file-based model registry: numbered versions, one production pointer, a history.

Layout under the registry root::

    models/<version>/                 a copy of the registered model directory
    models/<version>/registration.json  version, model, seed, metrics, source run, data fingerprint
    production.json                   {"version", "promoted_at", "previous", "reason"}
    history.jsonl                     one line per promotion
    .lock                             held while the production pointer moves

Versions are ``v0001``, ``v0002``, ... A version directory is reserved with an atomic ``mkdir``
and only counts once its ``registration.json`` (written last) exists, so two registrations at
once never share a number and a half-copied model is never listed.

Promotions are serialised by an inter-process lock on ``.lock``: reading the pointer, writing it
and appending the history line happen under it, so every history line's ``previous`` is the
version promoted before it. :meth:`ModelRegistry.promote_if_better` also makes the comparison
with production under that lock (a compare-and-set): two runs promoting at once cannot both
beat the old production and leave the worse model in place.
"""

from __future__ import annotations

import json
import math
import os
import re
import shutil
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from streamguard_core.io import atomic_write_json, read_jsonl, to_jsonable
from streamguard_core.locks import file_lock
from streamguard_core.models.registry import MODEL_CARD

REGISTRATION_FILE = "registration.json"
PRODUCTION_FILE = "production.json"
HISTORY_FILE = "history.jsonl"
LOCK_FILE = ".lock"
DEFAULT_LOCK_TIMEOUT_S = 900.0
"""How long a promotion waits for another one (which may be scoring production) to finish."""
_VERSION = re.compile(r"^v(\d{4,})$")


def _now() -> str:
    return datetime.now(UTC).isoformat()


class ModelRegistry:
    """Registered model versions and which one serves production, in plain files under ``root``."""

    def __init__(self, root: str | Path, lock_timeout_s: float | None = DEFAULT_LOCK_TIMEOUT_S):
        self.root = Path(root)
        self.models_dir = self.root / "models"
        self.lock_timeout_s = lock_timeout_s

    @contextmanager
    def locked(self, what: str = "a model registry promotion") -> Iterator[None]:
        """Hold the registry's promotion lock (``<root>/.lock``) for the ``with`` block.

        Raises:
            streamguard_core.locks.LockTimeout: another holder kept it ``lock_timeout_s``.
        """
        with file_lock(self.root / LOCK_FILE, timeout_s=self.lock_timeout_s, what=what):
            yield

    # ----------------------------------------------------------------- versions

    def _version_dir(self, version: str) -> Path:
        """The directory of a registered version; ValueError naming the path when unknown."""
        path = self.models_dir / str(version)
        if not _VERSION.match(str(version)) or not (path / REGISTRATION_FILE).is_file():
            known = ", ".join(self.versions()) or "none"
            raise ValueError(f"{path}: unknown model version {version!r} (registered: {known})")
        return path

    def versions(self) -> list[str]:
        """Registered versions, oldest first."""
        if not self.models_dir.is_dir():
            return []
        found = [
            p.name
            for p in self.models_dir.iterdir()
            if _VERSION.match(p.name) and (p / REGISTRATION_FILE).is_file()
        ]
        return sorted(found, key=lambda name: int(name[1:]))

    def registration(self, version: str) -> dict[str, Any]:
        """A version's ``registration.json`` plus its ``model_dir``.

        Raises:
            ValueError: the version is not registered.
        """
        path = self._version_dir(version)
        record = json.loads((path / REGISTRATION_FILE).read_text(encoding="utf-8"))
        return {**record, "model_dir": str(path)}

    def _reserve_version(self) -> tuple[str, Path]:
        """Claim the next free version number with an atomic mkdir."""
        self.models_dir.mkdir(parents=True, exist_ok=True)
        names = [p.name for p in self.models_dir.iterdir()]
        taken = [int(m.group(1)) for name in names if (m := _VERSION.match(name))]
        number = max(taken, default=0) + 1
        while True:
            version = f"v{number:04d}"
            try:
                (self.models_dir / version).mkdir()
                return version, self.models_dir / version
            except FileExistsError:  # another registration took it meanwhile
                number += 1

    def register(
        self,
        model_dir: str | Path,
        *,
        model: str,
        seed: int,
        metrics: dict[str, Any],
        source_run: str,
        data_fingerprint: dict[str, Any] | None = None,
    ) -> str:
        """Copy a saved detector into the registry as the next version and return the version.

        Args:
            model_dir: a saved detector directory (must hold ``model_card.json``).
            model: model kind (transformer, gnn, baseline).
            seed: the training seed of that run.
            metrics: its evaluation metrics (as ``classification_metrics`` returns them).
            source_run: where it came from (the run directory or a run id).
            data_fingerprint: content hashes of the data it was trained on, if known.

        Raises:
            ValueError: ``model_dir`` is not a model directory.
        """
        source = Path(model_dir)
        if not (source / MODEL_CARD).is_file():
            raise ValueError(f"{source}: not a model directory (no {MODEL_CARD})")
        version, target = self._reserve_version()
        try:
            shutil.copytree(source, target, dirs_exist_ok=True)
            atomic_write_json(
                target / REGISTRATION_FILE,
                {
                    "version": version,
                    "model": model,
                    "seed": seed,
                    "metrics": metrics,
                    "source_run": str(source_run),
                    "source_model_dir": str(source.resolve()),
                    "data_fingerprint": data_fingerprint,
                    "registered_at": _now(),
                },
            )
        except BaseException:
            shutil.rmtree(target, ignore_errors=True)
            raise
        return version

    # ----------------------------------------------------------------- production

    def production(self) -> dict[str, Any] | None:
        """The production version's registration (plus ``model_dir``), or None when unset."""
        pointer = self.root / PRODUCTION_FILE
        if not pointer.is_file():
            return None
        version = json.loads(pointer.read_text(encoding="utf-8"))["version"]
        return self.registration(version)

    def promote(
        self, version: str, reason: str, evaluation: dict[str, Any] | None = None
    ) -> dict[str, Any]:
        """Make ``version`` the production model and record why in the history (under the lock).

        Returns:
            The history entry: ``{"at", "version", "previous", "reason", "evaluation"}``.

        Raises:
            ValueError: the version is not registered.
        """
        self._version_dir(version)
        with self.locked(f"promotion of {version} in {self.root}"):
            return self._promote_locked(version, reason, evaluation, self.production())

    def promote_if_better(
        self,
        version: str,
        candidate_metrics: dict[str, Any],
        production_metrics: Callable[[dict[str, Any]], dict[str, Any] | None],
        *,
        metric: str = "f1",
        min_improvement: float = 0.0,
        evaluation: dict[str, Any] | None = None,
    ) -> dict[str, Any]:
        """Promote ``version`` when it beats the production model: one compare-and-set.

        The production model is read, scored with ``production_metrics(registration)`` (e.g.
        :func:`evaluate_on` on the candidate's validation data) and compared by
        :func:`decide_promotion` while the registry lock is held, so a concurrent promotion is
        either wholly before this one (and is what it is compared with) or wholly after it.

        Args:
            version: a registered version (the candidate).
            candidate_metrics: the candidate's metric dict.
            production_metrics: scores the current production registration on the same data.
            metric: the metric compared.
            min_improvement: the margin the candidate must beat production by.
            evaluation: extra values for the history entry (e.g. the validation data path).

        Returns:
            :func:`decide_promotion`'s decision plus ``version``, ``previous`` (the production
            version it was compared with, or None), ``candidate_metrics`` and
            ``production_metrics``.

        Raises:
            ValueError: the version is not registered.
        """
        self._version_dir(version)
        with self.locked(f"promote-if-better of {version} in {self.root}"):
            current = self.production()
            production_eval = production_metrics(current) if current is not None else None
            decision = decide_promotion(candidate_metrics, production_eval, metric, min_improvement)
            if decision["promote"]:
                evaluated = {"candidate": candidate_metrics, "production": production_eval}
                self._promote_locked(
                    version, decision["reason"], {**(evaluation or {}), **evaluated}, current
                )
        return {
            **decision,
            "version": version,
            "previous": current["version"] if current is not None else None,
            "candidate_metrics": candidate_metrics,
            "production_metrics": production_eval,
        }

    def _promote_locked(
        self,
        version: str,
        reason: str,
        evaluation: dict[str, Any] | None,
        current: dict[str, Any] | None,
    ) -> dict[str, Any]:
        """Move the pointer from ``current`` (the production read under the lock) and append the
        history line; the caller holds :meth:`locked`."""
        entry = {
            "at": _now(),
            "version": version,
            "previous": current["version"] if current else None,
            "reason": reason,
            "evaluation": evaluation,
        }
        # the pointer is the truth, so it moves first; the history line then records it
        atomic_write_json(
            self.root / PRODUCTION_FILE,
            {
                "version": version,
                "promoted_at": entry["at"],
                "previous": entry["previous"],
                "reason": reason,
            },
        )
        # one write of one line under the lock: lines never interleave or tear
        line = json.dumps(to_jsonable(entry)) + "\n"
        with open(self.root / HISTORY_FILE, "a", encoding="utf-8") as fh:
            fh.write(line)
            fh.flush()
            os.fsync(fh.fileno())
        return entry

    def history(self) -> list[dict[str, Any]]:
        """Every promotion, oldest first."""
        path = self.root / HISTORY_FILE
        return list(read_jsonl(path)) if path.is_file() else []


def _metric_value(metrics: dict[str, Any] | None, metric: str) -> float | None:
    value = (metrics or {}).get(metric)
    if value is None:
        return None
    try:
        number = float(value)
    except (TypeError, ValueError):
        return None
    return number if math.isfinite(number) else None


def decide_promotion(
    candidate: dict[str, Any],
    production: dict[str, Any] | None,
    metric: str = "f1",
    min_improvement: float = 0.0,
) -> dict[str, Any]:
    """Whether a candidate's metrics beat production's by more than ``min_improvement``.

    Both are metric dicts (e.g. from :func:`evaluate_on` on the same validation data). A missing
    or non-finite value never wins: a candidate without the metric is not promoted, even when
    there is no production model; a production model without it is beaten by any candidate that
    has it.

    Returns:
        ``{"promote", "reason", "candidate", "production", "metric", "min_improvement"}``.
    """
    cand = _metric_value(candidate, metric)
    prod = _metric_value(production, metric) if production is not None else None
    decision: dict[str, Any] = {
        "candidate": cand,
        "production": prod,
        "metric": metric,
        "min_improvement": min_improvement,
    }
    if cand is None:
        return {**decision, "promote": False, "reason": f"candidate has no {metric} value"}
    if production is None:
        return {**decision, "promote": True, "reason": "no production model yet"}
    if prod is None:
        return {
            **decision,
            "promote": True,
            "reason": f"production model has no {metric} value; candidate {metric} {cand:.4f}",
        }
    if cand > prod + min_improvement:
        reason = (
            f"candidate {metric} {cand:.4f} beats production {prod:.4f} "
            f"by more than {min_improvement:g}"
        )
        return {**decision, "promote": True, "reason": reason}
    reason = (
        f"candidate {metric} {cand:.4f} does not beat production {prod:.4f} "
        f"by more than {min_improvement:g}"
    )
    return {**decision, "promote": False, "reason": reason}


def evaluate_on(model_dir: str | Path, records_path: str | Path) -> dict[str, Any]:
    """Metrics of a saved detector on labelled records, at the detector's own threshold.

    Args:
        model_dir: a saved detector directory (any kind ``load_detector`` knows).
        records_path: a processed split directory or a raw labelled file (see ``load_labelled``).

    Returns:
        :func:`classification_metrics` plus ``n_rejected``, the input records that were refused.
    """
    # imported here: registering and promoting need neither sklearn nor torch
    from streamguard_core.evaluation.metrics import classification_metrics
    from streamguard_core.models.registry import load_detector, load_labelled

    detector = load_detector(model_dir)
    records, rejects = load_labelled(records_path)
    probs = detector.predict_proba([record.func for record in records])
    labels = [record.label for record in records]
    metrics = classification_metrics(labels, probs, float(detector.threshold))
    return {**metrics, "n_rejected": len(rejects)}
