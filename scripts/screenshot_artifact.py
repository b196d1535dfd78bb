"""Screenshot the model-comparison artifact in a real Prefect UI (headless Chromium).

Checks by eye that the plots of ``publish_comparison`` (tasks/evaluation.py), embedded in the
markdown as ``data:image/png;base64`` images, render in the Prefect UI and not only on the
worker's disk. It:

1. starts ``prefect server start`` on a free 127.0.0.1 port with its own PREFECT_HOME (in a
   temporary directory; no telemetry, ``PREFECT_SERVER_UI_API_URL`` set to that server);
2. writes synthetic ``predictions.jsonl`` for two models x two seeds and runs a small flow
   calling ``compare_task`` and ``publish_comparison`` against that server;
3. opens the artifact's page (``/artifacts/artifact/<id>``) in headless Chromium, saves a
   screenshot and the rendered DOM, and counts the ``<img>`` elements with a data: PNG source;
4. stops the server by its PID (its process group: nothing is left running).

Run from the repository root (needs Chromium: ``make chromium``)::

    .venv/bin/python scripts/screenshot_artifact.py --out /tmp/comparison_artifact.png

It prints one JSON line: the screenshot, the DOM file, the artifact URL and the image counts;
exit code 0 when the page shows the three plots as images, 1 otherwise.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))  # scripts.loopback, and tasks/ for the flow
N_ITEMS = 500
SERVER_START_TIMEOUT_S = 300.0


def find_chromium() -> str:
    """The Chromium binary (Debian's package), or exit with how to get one."""
    for name in ("chromium", "chromium-browser", "google-chrome"):
        path = shutil.which(name)
        if path:
            return path
    sys.exit("no Chromium found: `make chromium` (apt-get install -y chromium)")


def write_synthetic_runs(root: Path, separations: dict[str, float], seeds: list[int]) -> None:
    """``<root>/<model>/seed_<s>/`` predictions, metrics and status of synthetic models."""
    from streamguard_core.config import seed_dir
    from streamguard_core.io import atomic_write_json, write_jsonl

    labels = (np.random.default_rng(0).random(N_ITEMS) < 0.45).astype(int)
    for index, (model, separation) in enumerate(separations.items()):
        for seed in seeds:
            noise = np.random.default_rng([seed, index]).normal(0, 1, N_ITEMS)
            p = 1 / (1 + np.exp(-(separation * (2 * labels - 1) + noise)))
            run = seed_dir(root, model, seed)
            write_jsonl(
                run / "predictions.jsonl",
                (
                    {
                        "id": f"fn{i}",
                        "label": int(labels[i]),
                        "probability": float(p[i]),
                        "prediction": int(p[i] >= 0.5),
                    }
                    for i in range(N_ITEMS)
                ),
            )
            atomic_write_json(run / "metrics.json", {"valid": {"threshold": 0.5}})
            atomic_write_json(run / "run_status.json", {"status": "completed"})


def wait_healthy(api_url: str, server: subprocess.Popen[bytes], log: Path) -> None:
    """Poll ``/health`` until the server answers (exit when it dies or takes too long)."""
    import httpx

    deadline = time.monotonic() + SERVER_START_TIMEOUT_S
    while time.monotonic() < deadline:
        if server.poll() is not None:
            sys.exit(f"prefect server exited {server.returncode}: see {log}")
        with contextlib.suppress(httpx.HTTPError):
            if httpx.get(f"{api_url}/health", timeout=5).status_code == 200:
                return
        time.sleep(1)
    sys.exit(f"prefect server not healthy after {SERVER_START_TIMEOUT_S:.0f} s: see {log}")


def stop(server: subprocess.Popen[bytes]) -> None:
    """SIGTERM the server, wait, SIGKILL; then SIGKILL what is left of its process group."""
    if server.poll() is None:
        server.terminate()
        try:
            server.wait(timeout=30)
        except subprocess.TimeoutExpired:
            server.kill()
            server.wait(timeout=30)
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(server.pid, signal.SIGKILL)  # the group id is the server's PID


def publish(work: Path) -> str:
    """Run the compare + publish flow against the server in the environment; the artifact id."""
    from prefect import flow
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterKey

    from tasks.evaluation import COMPARISON_KEY, compare_task, publish_comparison

    root = work / "runs"
    write_synthetic_runs(root, {"fusion": 1.6, "baseline": 0.8, "gnn": 0.7}, [42, 43, 44])

    @flow(name="comparison-screenshot")
    def comparison_flow(output_root: str) -> None:
        models = ["fusion", "baseline", "gnn"]
        publish_comparison(compare_task(output_root, models, [42, 43, 44], 0.9))

    state = comparison_flow(str(root), return_state=True)
    if not state.is_completed():
        sys.exit(f"the comparison flow ended {state.type}: {state.message}")
    with get_client(sync_client=True) as client:
        (artifact,) = [
            a
            for a in client.read_artifacts(
                artifact_filter=ArtifactFilter(key=ArtifactFilterKey(any_=[COMPARISON_KEY]))
            )
            if a.flow_run_id == state.state_details.flow_run_id
        ]
    return str(artifact.id)


def browse(chromium: str, url: str, work: Path, size: str, *args: str) -> bytes:
    """Headless Chromium on ``url`` with extra ``args``; its stdout."""
    done = subprocess.run(
        [
            chromium, "--headless=new", "--no-sandbox", "--disable-gpu", "--no-first-run",
            "--disable-extensions", f"--user-data-dir={work / 'chromium-profile'}",
            f"--window-size={size}", "--virtual-time-budget=25000", "--hide-scrollbars",
            *args, url,
        ],
        cwd=work,
        env={**os.environ, "HOME": str(work)},
        stdin=subprocess.DEVNULL,
        capture_output=True,
        timeout=240,
    )  # fmt: skip
    return done.stdout


def main() -> int:
    """Start the server, publish, screenshot, report; always stop the server."""
    from scripts.loopback import free_port, prefect_env

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", default="/tmp/comparison_artifact.png", help="screenshot path")
    parser.add_argument("--window-size", default="1400,4800", help="browser window W,H")
    args = parser.parse_args()

    chromium = find_chromium()
    work = Path(tempfile.mkdtemp(prefix="sg_artifact_"))
    port = free_port()
    api_url = f"http://127.0.0.1:{port}/api"
    home = work / "prefect_home"
    home.mkdir()
    env = prefect_env(home, api_url)
    log = work / "prefect-server.log"
    prefect = Path(sys.executable).parent / "prefect"
    with open(log, "wb") as out:
        server = subprocess.Popen(
            [str(prefect), "server", "start", "--host", "127.0.0.1", "--port", str(port)],
            cwd=REPO, env=env, stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT,
            start_new_session=True,
        )  # fmt: skip
    try:
        wait_healthy(api_url, server, log)
        os.environ.clear()
        os.environ.update(env)  # this process's flow talks to that server
        artifact_id = publish(work)
        url = f"http://127.0.0.1:{port}/artifacts/artifact/{artifact_id}"
        screenshot = Path(args.out).resolve()
        screenshot.parent.mkdir(parents=True, exist_ok=True)
        browse(chromium, url, work, args.window_size, f"--screenshot={screenshot}")
        dom = browse(chromium, url, work, args.window_size, "--dump-dom").decode(errors="replace")
        dom_file = screenshot.with_suffix(".dom.html")
        dom_file.write_text(dom, encoding="utf-8")
    finally:
        stop(server)
    images = dom.count('src="data:image/png;base64,')
    report = {
        "screenshot": str(screenshot),
        "dom": str(dom_file),
        "url": url,
        "png_bytes": screenshot.stat().st_size if screenshot.exists() else 0,
        "img_tags": dom.count("<img"),
        "data_png_images": images,
        "server_log": str(log),
    }
    print(json.dumps(report))
    return 0 if images >= 3 else 1


if __name__ == "__main__":
    raise SystemExit(main())
