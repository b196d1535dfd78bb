"""The LR finder cache under concurrency: runs needing the same key at once run the range test
once; the others wait for it and read the cache."""

from __future__ import annotations

import json
import math
import os
import time
from pathlib import Path

from streamguard_core.io import atomic_write_json
from streamguard_core.training.lr_finder import find_lr

KEY = {"kind": "gnn", "model": {"hidden_dim": 8}, "data": "abc", "batch_size": 4}
N_RUNS = 4


def _loss(lr: float) -> float:
    """A range-test curve: falls steeply around lr 1e-3, then blows up past 0.1."""
    return 1.0 - 0.8 / (1.0 + math.exp(-3.0 * (math.log10(lr) + 3.0))) + (lr > 0.1) * 50.0


def _run(cache_dir: str, calls_dir: str, out: str, barrier) -> None:
    """One training run asking for its LR: records that it computed, writes what it got."""

    def step(lr: float) -> float:
        Path(calls_dir, str(os.getpid())).touch()
        time.sleep(0.001)  # a training step takes time: the window where runs could overlap
        return _loss(lr)

    barrier.wait()
    result = find_lr("gnn", step, cache_dir, KEY, num_steps=40, min_lr=1e-6, max_lr=1.0)
    atomic_write_json(Path(out) / f"{os.getpid()}.json", result.to_dict())


def test_concurrent_runs_with_one_key_compute_it_once(tmp_path, race_processes):
    cache, calls, out = tmp_path / "lr_cache", tmp_path / "calls", tmp_path / "out"
    calls.mkdir()
    out.mkdir()
    race_processes(_run, [(str(cache), str(calls), str(out))] * N_RUNS, 120)

    computed = [p.name for p in calls.iterdir()]
    assert len(computed) == 1, f"{len(computed)} processes ran the range test"
    results = {p.stem: json.loads(p.read_text()) for p in out.iterdir()}
    assert len(results) == N_RUNS
    first = results.pop(computed[0])
    assert first["source"] in ("finder", "fallback") and len(first["lrs"]) >= 10
    assert [r["source"] for r in results.values()] == ["cache"] * (N_RUNS - 1)
    assert {r["lr"] for r in results.values()} == {first["lr"]}
    # one cache entry, whole, and no lock file left behind
    (entry,) = cache.iterdir()
    assert entry.suffix == ".json" and json.loads(entry.read_text())["lr"] == first["lr"]
