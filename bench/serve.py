"""``streamguard serve`` over real HTTP vs the same scoring called directly, as one JSON line.

Served: ``--requests`` POST /scan requests (each ``--functions`` function texts of the synthetic
data set, ``explain`` none) sent by ``--clients`` concurrent httpx clients to
``python -m streamguard_core serve --port 0`` (its own process) on 127.0.0.1, after a warm-up
request.
Bare: the same function lists scored by ``detector.predict_proba`` in one thread, one list at
a time. ``overhead_ms`` is the median served latency minus the median bare scoring time of one
request: what HTTP, JSON, validation and the thread pool add. Alternating rounds share the load
of a busy machine.

    python bench/serve.py [--model-dir DIR] [--requests 200] [--clients 8] [--functions 4]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))


def tiny_baseline(root: Path) -> Path:
    """A baseline detector trained on the synthetic data set (seconds)."""
    from streamguard_core.data.synthetic import generate_synthetic
    from streamguard_core.models.baseline import BaselineDetector

    records = generate_synthetic(pairs_per_cwe=8, seed=3)
    det = BaselineDetector()
    det.fit([r.func for r in records], [r.label for r in records])
    return det.save(root / "baseline")


async def served(url: str, bodies: list[list[str]], clients: int) -> tuple[list[float], float]:
    """Per-request latencies (s) and the wall time of all requests."""
    import httpx

    latencies: list[float] = []
    queue: asyncio.Queue[list[str]] = asyncio.Queue()
    for body in bodies:
        queue.put_nowait(body)

    async def client() -> None:
        async with httpx.AsyncClient(base_url=url, timeout=120) as http:
            while not queue.empty():
                funcs = queue.get_nowait()
                t0 = time.perf_counter()
                response = await http.post("/scan", json={"functions": funcs, "explain": "none"})
                latencies.append(time.perf_counter() - t0)
                assert response.status_code == 200, response.text

    t0 = time.perf_counter()
    await asyncio.gather(*(client() for _ in range(clients)))
    return latencies, time.perf_counter() - t0


def main() -> None:
    from streamguard_core.data.synthetic import generate_synthetic
    from streamguard_core.models.registry import load_detector

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model-dir", default=None, help="default: a tiny baseline trained here")
    parser.add_argument("--requests", type=int, default=200)
    parser.add_argument("--clients", type=int, default=8)
    parser.add_argument("--functions", type=int, default=4, help="functions per request")
    parser.add_argument("--concurrency", type=int, default=4, help="ServeConfig.concurrency")
    parser.add_argument("--rounds", type=int, default=2)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        model_dir = Path(args.model_dir) if args.model_dir else tiny_baseline(Path(tmp))
        texts = [r.func for r in generate_synthetic(pairs_per_cwe=4, seed=11)]
        bodies = [
            [texts[(i * args.functions + j) % len(texts)] for j in range(args.functions)]
            for i in range(args.requests)
        ]
        detector = load_detector(model_dir)
        proc = subprocess.Popen(
            [sys.executable, "-m", "streamguard_core", "serve", "--model-dir", str(model_dir),
             "--port", "0", "--concurrency", str(args.concurrency)],
            cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True,
        )  # fmt: skip
        try:
            assert proc.stdout is not None
            url = proc.stdout.readline().split()[2]  # "streamguard serve: URL (...)"
            asyncio.run(served(url, bodies[:1], 1))  # warm-up
            detector.predict_proba(bodies[0])
            latencies: list[float] = []
            walls: list[float] = []
            bare: list[float] = []
            for _ in range(args.rounds):
                lat, wall = asyncio.run(served(url, bodies, args.clients))
                latencies += lat
                walls.append(wall)
                for funcs in bodies:
                    t0 = time.perf_counter()
                    detector.predict_proba(funcs)
                    bare.append(time.perf_counter() - t0)
        finally:
            proc.send_signal(signal.SIGINT)
            proc.wait(30)
    latencies.sort()
    print(
        json.dumps(
            {
                "bench": "serve",
                "model_kind": json.loads((model_dir / "model_card.json").read_text())["kind"]
                if args.model_dir
                else "baseline",
                "requests": args.requests * args.rounds,
                "functions_per_request": args.functions,
                "clients": args.clients,
                "concurrency": args.concurrency,
                "served_rps": round(args.requests * args.rounds / sum(walls), 1),
                "served_p50_ms": round(1000 * statistics.median(latencies), 2),
                "served_p95_ms": round(1000 * latencies[int(0.95 * (len(latencies) - 1))], 2),
                "bare_p50_ms": round(1000 * statistics.median(bare), 2),
                "bare_rps": round(len(bare) / sum(bare), 1),
                "overhead_ms": round(
                    1000 * (statistics.median(latencies) - statistics.median(bare)), 2
                ),
            }
        )
    )


if __name__ == "__main__":
    main()
