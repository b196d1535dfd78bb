"""The cost of the inter-process locks, and a promotion race, printed as one JSON line.

Baseline (bare): ``open + flock + unlink + close`` of one file, the least a lock file can cost.
Measured:

    lock_cycle_us          ``streamguard_core.locks.file_lock`` taken and released, uncontended
                           (it also records its holder and checks the file it locked is current)
    bare_cycle_us          the bare baseline, same loop
    race_processes         processes promoting into one registry at once (--processes)
    race_rounds            promotions per process (--rounds)
    race_exitcodes_ok      whether every process exited 0 (must be true)
    race_promotions_per_s  register + promote_if_better per second over all processes together
    race_lost              registrations missing from the registry (must be 0)
    race_history_lines     promotions recorded in the history
    race_history_broken    history lines whose ``previous`` is not the line before's version,
                           or that did not beat it (must be 0)
    race_best_in_production  whether the best candidate ended in production (must be true)

Each process registers --rounds candidates (a 2-file stand-in model directory, distinct F1s
shuffled across processes) and promotes each if it beats production's registered F1.

    python bench/locks.py [--cycles 2000] [--processes 8] [--rounds 5]
"""

from __future__ import annotations

import argparse
import fcntl
import itertools
import json
import multiprocessing
import os
import random
import tempfile
import time
from pathlib import Path

from streamguard_core.locks import file_lock
from streamguard_core.pipeline.registry import ModelRegistry


def _promote_many(root: str, model_dir: str, f1s: list[float], barrier) -> None:
    registry = ModelRegistry(root)
    barrier.wait()
    for i, f1 in enumerate(f1s):
        version = registry.register(
            model_dir, model="baseline", seed=i, metrics={"f1": f1}, source_run=f"pid-{os.getpid()}"
        )
        registry.promote_if_better(version, {"f1": f1}, lambda current: current["metrics"])


def lock_cycles(path: Path, cycles: int) -> tuple[float, float]:
    """Microseconds per bare cycle and per file_lock cycle."""
    start = time.perf_counter()
    for _ in range(cycles):
        fd = os.open(path, os.O_RDWR | os.O_CREAT)
        fcntl.flock(fd, fcntl.LOCK_EX)
        os.unlink(path)
        os.close(fd)
    bare = (time.perf_counter() - start) / cycles * 1e6
    start = time.perf_counter()
    for _ in range(cycles):
        with file_lock(path, what="bench"):
            pass
    return bare, (time.perf_counter() - start) / cycles * 1e6


def race(work: Path, processes: int, rounds: int) -> dict[str, object]:
    """``processes`` processes x ``rounds`` promotions into one registry; checks the result."""
    model = work / "model"
    model.mkdir()
    (model / "model_card.json").write_text('{"kind": "baseline"}')
    (model / "weights.bin").write_bytes(os.urandom(4096))
    f1s = [round(0.3 + 0.6 * i / (processes * rounds), 6) for i in range(processes * rounds)]
    random.Random(0).shuffle(f1s)
    root = work / "registry"
    ctx = multiprocessing.get_context("spawn")
    barrier = ctx.Barrier(processes + 1)
    procs = [
        ctx.Process(
            target=_promote_many,
            args=(str(root), str(model), f1s[p * rounds : (p + 1) * rounds], barrier),
        )
        for p in range(processes)
    ]
    for p in procs:
        p.start()
    barrier.wait()  # timed from the moment every process is ready
    start = time.perf_counter()
    for p in procs:
        p.join(600)
    elapsed = time.perf_counter() - start
    registry = ModelRegistry(root)
    registered = [registry.registration(v)["metrics"]["f1"] for v in registry.versions()]
    history = registry.history()
    metric = {e["version"]: registry.registration(e["version"])["metrics"]["f1"] for e in history}
    broken = int(bool(history) and history[0]["previous"] is not None)
    for before, entry in itertools.pairwise(history):
        ok = entry["previous"] == before["version"]
        broken += int(not ok or metric[entry["version"]] <= metric[before["version"]])
    production = registry.production()
    return {
        "race_processes": processes,
        "race_rounds": rounds,
        "race_exitcodes_ok": all(p.exitcode == 0 for p in procs),
        "race_promotions_per_s": round(len(f1s) / elapsed, 1),
        "race_lost": len(f1s) - len(registered),
        "race_history_lines": len(history),
        "race_history_broken": broken,
        "race_best_in_production": production is not None
        and production["metrics"]["f1"] == max(f1s),
    }


def main() -> None:
    """Run both measurements and print one JSON line."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cycles", type=int, default=2000)
    parser.add_argument("--processes", type=int, default=8)
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        bare, ours = lock_cycles(Path(tmp) / "x.lock", args.cycles)
        result = {"bare_cycle_us": round(bare, 1), "lock_cycle_us": round(ours, 1)}
        result.update(race(Path(tmp), args.processes, args.rounds))
    print(json.dumps(result))


if __name__ == "__main__":
    main()
