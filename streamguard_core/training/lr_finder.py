"""Learning-rate range test with a per-kind fallback and an on-disk cache.

The range test (:func:`lr_range_test`) raises the learning rate exponentially from ``min_lr`` to
``max_lr``, one training step per value, and records the loss. :func:`suggest_lr` picks the
steepest descent of the smoothed loss curve, or falls back to :data:`DEFAULT_LR` with a reason
when the curve cannot be trusted. :func:`find_lr` adds a cache keyed by the caller's
configuration so a run (or its resume) never repeats the test; concurrent runs needing the same
key compute it once (a per-key lock file ``<key>.lock``: the second waits, then reads the cache).

This module knows nothing about models. The caller's ``step_fn(lr)`` performs ONE training step
at ``lr`` (set it on every optimizer param group, forward, backward, step) and returns the loss
as a float. The test *changes* the model and optimizer state: the caller must snapshot them
(e.g. ``copy.deepcopy(model.state_dict())`` and ``optimizer.state_dict()``, plus RNG state if
the run must stay reproducible) before the test and restore them afterwards, whatever the
result's ``source``.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
from collections.abc import Callable, Sequence
from contextlib import AbstractContextManager, nullcontext
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np

from streamguard_core.io import atomic_write_json, to_jsonable
from streamguard_core.locks import file_lock

log = logging.getLogger(__name__)

DEFAULT_LR: dict[str, float] = {"transformer": 2.5e-5, "gnn": 5e-4}
"""Learning rates used when the finder cannot be trusted."""

SANE_LR_BAND: dict[str, tuple[float, float]] = {
    "transformer": (1e-6, 1e-3),
    "gnn": (1e-5, 1e-1),
}
"""Suggestions outside these (inclusive) bands are rejected in favour of :data:`DEFAULT_LR`."""

MIN_POINTS = 10
"""Fewest finite curve points a suggestion needs."""
MIN_RELATIVE_DECREASE = 0.01
"""The smoothed loss must fall at least this fraction below its start."""
FINDER_REASON = "steepest descent of the smoothed loss"
DEFAULT_MIN_LR = 1e-7
DEFAULT_MAX_LR = 1.0
DEFAULT_SMOOTH = 0.05

LRSource = Literal["finder", "fallback", "cache"]

LOCK_TIMEOUT_S = 3600.0
"""The longest a run waits for another run's range test of the same key (then a LockTimeout)."""


@dataclass
class LRFinderResult:
    """The chosen learning rate, where it came from and why, and the curve behind it."""

    lr: float
    source: LRSource
    reason: str
    lrs: list[float] = field(default_factory=list)
    losses: list[float] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON values (non-finite losses become ``None``)."""
        data: dict[str, Any] = to_jsonable(asdict(self))
        return data


class _StepFailed(Exception):
    """Wraps an exception raised by the caller's ``step_fn`` (not by bad range settings)."""

    def __init__(self, original: Exception) -> None:
        super().__init__(str(original))
        self.original = original


def _check_kind(kind: str) -> None:
    if kind not in DEFAULT_LR:
        raise ValueError(f"unknown model kind {kind!r}; expected one of {sorted(DEFAULT_LR)}")


def _smooth(losses: Sequence[float], beta: float) -> np.ndarray:
    """EMA ``s_i = beta * loss_i + (1 - beta) * s_{i-1}`` seeded with the first loss."""
    out = np.empty(len(losses), dtype=np.float64)
    avg = math.nan
    for i, loss in enumerate(losses):
        avg = float(loss) if i == 0 else beta * float(loss) + (1.0 - beta) * avg
        out[i] = avg
    return out


def lr_range_test(
    step_fn: Callable[[float], float],
    min_lr: float = DEFAULT_MIN_LR,
    max_lr: float = DEFAULT_MAX_LR,
    num_steps: int = 100,
    smooth: float = DEFAULT_SMOOTH,
    diverge_factor: float = 4.0,
) -> tuple[list[float], list[float]]:
    """Run ``step_fn`` at exponentially increasing learning rates; return ``(lrs, raw losses)``.

    ``smooth`` is the EMA weight of the newest loss. The test stops early, after recording the
    offending point, when the smoothed loss is non-finite or exceeds ``diverge_factor`` times the
    best smoothed loss so far. Exceptions from ``step_fn`` propagate (see :func:`find_lr`).
    """
    if not 0 < min_lr < max_lr:
        raise ValueError(f"need 0 < min_lr < max_lr, got {min_lr} and {max_lr}")
    if num_steps < 2:
        raise ValueError(f"num_steps must be at least 2, got {num_steps}")
    if not 0 < smooth <= 1:
        raise ValueError(f"smooth must be in (0, 1], got {smooth}")
    if diverge_factor <= 1:
        raise ValueError(f"diverge_factor must be above 1, got {diverge_factor}")

    ratio = max_lr / min_lr
    lrs: list[float] = []
    losses: list[float] = []
    avg = math.nan
    best = math.inf
    for i in range(num_steps):
        lr = min_lr * ratio ** (i / (num_steps - 1))
        loss = float(step_fn(lr))
        lrs.append(lr)
        losses.append(loss)
        avg = loss if i == 0 else smooth * loss + (1.0 - smooth) * avg
        if not math.isfinite(avg):
            log.info("LR range test stopped at lr=%.3g: non-finite loss", lr)
            break
        if best > 0 and avg > diverge_factor * best:
            log.info("LR range test stopped at lr=%.3g: loss diverged", lr)
            break
        best = min(best, avg)
    return lrs, losses


def suggest_lr(
    lrs: Sequence[float],
    losses: Sequence[float],
    kind: str,
    *,
    min_lr: float | None = None,
    max_lr: float | None = None,
    smooth: float = DEFAULT_SMOOTH,
) -> LRFinderResult:
    """The steepest descent (most negative d loss / d log lr) of the smoothed loss curve.

    Falls back to ``DEFAULT_LR[kind]``, with the reason, when: no loss is finite; fewer than
    :data:`MIN_POINTS` finite points precede the first non-finite one; the smoothed loss never
    falls 1% below its start; the suggestion lies outside ``[min_lr * 10, max_lr / 10]`` (the
    tested range, by default the curve's first and last learning rates); or it lies outside the
    kind's :data:`SANE_LR_BAND`. The returned result always carries the curve as given.
    """
    _check_kind(kind)
    if len(lrs) != len(losses):
        raise ValueError(f"lrs and losses differ in length: {len(lrs)} vs {len(losses)}")
    curve_lrs = [float(x) for x in lrs]
    curve_losses = [float(x) for x in losses]

    def fallback(reason: str) -> LRFinderResult:
        log.warning("LR finder fallback for %s: %s", kind, reason)
        return LRFinderResult(DEFAULT_LR[kind], "fallback", reason, curve_lrs, curve_losses)

    if not curve_losses or not any(math.isfinite(v) for v in curve_losses):
        return fallback(f"the loss is non-finite everywhere ({len(curve_losses)} points)")
    n = next((i for i, v in enumerate(curve_losses) if not math.isfinite(v)), len(curve_losses))
    if n < MIN_POINTS:
        return fallback(
            f"fewer than {MIN_POINTS} points before the loss became non-finite or the test "
            f"stopped ({n} points)"
        )
    x = np.log10(np.asarray(curve_lrs[:n], dtype=np.float64))
    y = _smooth(curve_losses[:n], smooth)
    start = float(y[0])
    if start - float(y.min()) < MIN_RELATIVE_DECREASE * abs(start) or float(y.min()) >= start:
        return fallback(
            f"the smoothed loss never decreases by at least {MIN_RELATIVE_DECREASE:.0%} from "
            f"its start ({start:.4g} -> min {float(y.min()):.4g})"
        )
    grad = np.gradient(y, x)
    lr = float(curve_lrs[int(np.argmin(grad))])

    lo = (curve_lrs[0] if min_lr is None else min_lr) * 10
    hi = (curve_lrs[-1] if max_lr is None else max_lr) / 10
    if not lo <= lr <= hi:
        return fallback(
            f"suggested lr {lr:.3g} is outside [{lo:.3g}, {hi:.3g}] (a decade inside the "
            f"tested range)"
        )
    band_lo, band_hi = SANE_LR_BAND[kind]
    if not band_lo <= lr <= band_hi:
        return fallback(
            f"suggested lr {lr:.3g} is outside the sane band [{band_lo:g}, {band_hi:g}] for {kind}"
        )
    return LRFinderResult(lr, "finder", FINDER_REASON, curve_lrs, curve_losses)


def cache_key(cache_key_parts: dict[str, Any]) -> str:
    """Hex sha256 of ``json.dumps(cache_key_parts, sort_keys=True)`` (values JSON-sanitised)."""
    text = json.dumps(to_jsonable(cache_key_parts), sort_keys=True)
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def _read_cache(path: Path, kind: str) -> LRFinderResult | None:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
        lr = float(data["lr"])
        if data.get("kind") != kind or not math.isfinite(lr) or lr <= 0:
            raise ValueError(f"kind {data.get('kind')!r} or lr {lr} does not fit {kind!r}")
        origin = f"{data['source']}: {data['reason']}"
    except (OSError, ValueError, KeyError, TypeError) as exc:
        log.warning("ignoring unusable LR finder cache %s: %s", path, exc)
        return None
    return LRFinderResult(lr, "cache", f"cached {origin} ({path.name})")


def find_lr(
    kind: str,
    step_fn: Callable[[float], float],
    cache_dir: str | Path | None,
    cache_key_parts: dict[str, Any],
    **range_kwargs: Any,
) -> LRFinderResult:
    """Cached LR range test + suggestion; never raises because of ``step_fn``.

    ``cache_key_parts`` should identify everything the curve depends on (model config, data
    fingerprint, batch size, range settings); the key is :func:`cache_key` of it. A usable
    ``cache_dir/<key>.json`` gives ``source="cache"`` without calling ``step_fn``. Otherwise the
    range test runs with ``range_kwargs`` (see :func:`lr_range_test`; invalid settings raise);
    any exception raised by ``step_fn`` gives a fallback naming its type and message. Finder
    results and curve-based fallbacks are cached atomically; exception fallbacks are not (the
    error may be transient, e.g. out of memory), so the next run tries again. Concurrent calls
    with one key and ``cache_dir`` (threads or processes) run the test once: the others wait on
    ``cache_dir/<key>.lock`` (at most :data:`LOCK_TIMEOUT_S`), then read the cache.

    The caller owns the model and optimizer: snapshot them before and restore them after this
    call (the range test trains them at ever larger learning rates).
    """
    _check_kind(kind)
    key = cache_key(cache_key_parts)
    path = Path(cache_dir) / f"{key}.json" if cache_dir is not None else None
    cached = _cached(path, kind)
    if cached is not None:
        return cached
    # one range test per key at a time: a concurrent run with the same key waits here and
    # then reads what the first one wrote instead of repeating the test
    with _key_lock(path, kind):
        cached = _cached(path, kind)
        if cached is not None:
            return cached
        return _run_and_cache(kind, step_fn, path, key, cache_key_parts, range_kwargs)


def _cached(path: Path | None, kind: str) -> LRFinderResult | None:
    if path is None or not path.exists():
        return None
    cached = _read_cache(path, kind)
    if cached is not None:
        log.info("LR %.3g for %s from cache %s", cached.lr, kind, path)
    return cached


def _key_lock(path: Path | None, kind: str) -> AbstractContextManager[Any]:
    if path is None:
        return nullcontext()
    what = f"LR range test for {kind} ({path.name})"
    return file_lock(path.with_suffix(".lock"), timeout_s=LOCK_TIMEOUT_S, what=what)


def _run_and_cache(
    kind: str,
    step_fn: Callable[[float], float],
    path: Path | None,
    key: str,
    cache_key_parts: dict[str, Any],
    range_kwargs: dict[str, Any],
) -> LRFinderResult:
    def guarded_step(lr: float) -> float:
        try:
            return float(step_fn(lr))
        except Exception as exc:
            raise _StepFailed(exc) from exc

    try:
        lrs, losses = lr_range_test(guarded_step, **range_kwargs)
    except _StepFailed as failed:
        exc = failed.original
        reason = f"LR range test failed: {type(exc).__name__}: {exc}"
        log.warning("LR finder fallback for %s: %s", kind, reason)
        return LRFinderResult(DEFAULT_LR[kind], "fallback", reason)

    result = suggest_lr(
        lrs,
        losses,
        kind,
        min_lr=range_kwargs.get("min_lr", DEFAULT_MIN_LR),
        max_lr=range_kwargs.get("max_lr", DEFAULT_MAX_LR),
        smooth=range_kwargs.get("smooth", DEFAULT_SMOOTH),
    )
    if path is not None:  # atomic (temp file + rename): a reader sees all of it or nothing
        atomic_write_json(
            path, {**result.to_dict(), "kind": kind, "key": key, "cache_key_parts": cache_key_parts}
        )
    return result
