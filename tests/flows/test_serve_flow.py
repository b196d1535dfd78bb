"""``python -m flows.serve``: the bearer token from a Prefect Secret block (saved in the test's
ephemeral Prefect server), enforced by a real ``streamguard serve`` process on 127.0.0.1."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import httpx
import pytest

from flows.serve import load_token, main

pytestmark = pytest.mark.integration
REPO = Path(__file__).resolve().parents[2]
START_TIMEOUT_S = 180


def test_the_token_comes_from_the_secret_block(
    prefect_harness, baseline_dir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    import prefect.settings
    from prefect.blocks.system import Secret

    Secret(value="block-token-42").save("sg-serve-token", overwrite=True)
    Secret(value="  ").save("sg-serve-empty", overwrite=True)
    assert load_token("sg-serve-token") == "block-token-42"
    assert main(["--model-dir", str(baseline_dir), "--token-block", "sg-no-such-block"]) == 2
    assert "Secret block 'sg-no-such-block' not found" in capsys.readouterr().err
    assert main(["--model-dir", str(baseline_dir), "--token-block", "sg-serve-empty"]) == 2
    assert "is empty" in capsys.readouterr().err
    assert main(["--model-dir", str(baseline_dir)]) == 2
    assert "give --token-block" in capsys.readouterr().err

    env = {**os.environ, "PREFECT_API_URL": prefect.settings.PREFECT_API_URL.value(),
           "PYTHONUNBUFFERED": "1", "NO_PROXY": "127.0.0.1,localhost",
           "STREAMGUARD_API_TOKEN": "env-token-loses"}  # fmt: skip
    proc = subprocess.Popen(
        [sys.executable, "-m", "flows.serve", "--token-block", "sg-serve-token",
         "--model-dir", str(baseline_dir), "--port", "0"],
        cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    first: list[str] = []
    reader = threading.Thread(target=lambda: first.append(proc.stdout.readline()), daemon=True)
    reader.start()
    reader.join(START_TIMEOUT_S)
    try:
        assert first and first[0].startswith("streamguard serve: http://127.0.0.1:"), (
            proc.stderr.read() if proc.poll() is not None else "no URL printed"
        )
        url = first[0].split()[2]
        with httpx.Client(base_url=url) as client:
            assert client.get("/health").status_code == 401
            env_token = {"Authorization": "Bearer env-token-loses"}
            assert client.get("/health", headers=env_token).status_code == 401
            block = {"Authorization": "Bearer block-token-42"}
            assert client.get("/health", headers=block).status_code == 200
    finally:
        proc.send_signal(signal.SIGINT)
        deadline = time.monotonic() + 30
        while proc.poll() is None and time.monotonic() < deadline:
            time.sleep(0.1)
        if proc.poll() is None:
            proc.kill()
