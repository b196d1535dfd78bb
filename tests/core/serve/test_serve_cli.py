"""``streamguard serve`` as a command: a real process on 127.0.0.1, and SageMaker mode's
settings read from the container's environment."""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import httpx
import pytest

from streamguard_core.serve.cli import SERVE_CONFIG_ENV, add_serve_parser, resolve_serving

REPO = Path(__file__).resolve().parents[3]
START_TIMEOUT_S = 120


def parse(*argv: str) -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    add_serve_parser(parser.add_subparsers(dest="command"))
    return parser.parse_args(["serve", *argv])


def test_help_explains_auth_and_the_endpoints(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        parse("--help")
    text = capsys.readouterr().out
    for needle in ("/scan", "/health", "/model", "/ping", "/invocations", "Authorization: Bearer",
                   "--token-env", "--max-request-bytes", "--timeout-s", "loopback"):  # fmt: skip
        assert needle in text


def test_flags_mirror_the_config(model_dir: Path) -> None:
    model, cfg, sagemaker = resolve_serving(
        parse("--model-dir", str(model_dir), "--port", "0", "--max-functions", "7",
              "--explain", "flagged", "--no-use-onnx")
    )  # fmt: skip
    assert (model, sagemaker) == (str(model_dir), False)
    assert (cfg.port, cfg.max_functions, cfg.explain, cfg.use_onnx) == (0, 7, "flagged", False)
    assert cfg.host == "127.0.0.1" and cfg.timeout_s == 60.0  # the ServeConfig defaults


def test_sagemaker_mode_takes_the_model_and_limits_from_the_environment(
    model_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("SM_MODEL_DIR", str(model_dir))
    monkeypatch.setenv(SERVE_CONFIG_ENV, json.dumps({"max_functions": 2, "timeout_s": 5}))
    model, cfg, sagemaker = resolve_serving(parse())
    assert (model, sagemaker) == (str(model_dir), True)
    assert (cfg.host, cfg.port, cfg.max_functions, cfg.timeout_s) == ("0.0.0.0", 8080, 2, 5.0)
    monkeypatch.setenv("SAGEMAKER_BIND_TO_PORT", "9000")
    _, cfg, _ = resolve_serving(parse("--host", "127.0.0.1", "--max-functions", "9"))
    assert (cfg.host, cfg.port, cfg.max_functions) == ("127.0.0.1", 9000, 9)  # flags win
    monkeypatch.setenv(SERVE_CONFIG_ENV, "{not json")
    with pytest.raises(ValueError, match=SERVE_CONFIG_ENV):
        resolve_serving(parse())
    monkeypatch.setenv(SERVE_CONFIG_ENV, json.dumps({"max_functions": 0}))
    with pytest.raises(ValueError, match="max_functions"):
        resolve_serving(parse())


@pytest.mark.integration
def test_the_command_serves_with_the_token_from_the_environment(model_dir: Path) -> None:
    env = {**os.environ, "STREAMGUARD_API_TOKEN": "tok-123", "PYTHONUNBUFFERED": "1",
           "NO_PROXY": "127.0.0.1,localhost"}  # fmt: skip
    proc = subprocess.Popen(
        [sys.executable, "-m", "streamguard_core", "serve", "--model-dir", str(model_dir),
         "--port", "0"],
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
        assert "baseline model" in first[0] and "bearer token required" in first[0]
        url = first[0].split()[2]
        with httpx.Client(base_url=url) as client:
            assert client.get("/health").status_code == 401
            ok = client.get("/health", headers={"Authorization": "Bearer tok-123"})
            assert ok.status_code == 200 and ok.json()["model"]["kind"] == "baseline"
    finally:
        proc.send_signal(signal.SIGINT)
        deadline = time.monotonic() + 30
        while proc.poll() is None and time.monotonic() < deadline:
            time.sleep(0.1)
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode in (0, 130), proc.stderr.read()
