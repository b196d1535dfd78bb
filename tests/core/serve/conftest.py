"""Serve test fixtures: a tiny real baseline model, and real uvicorn servers on 127.0.0.1."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest

from streamguard_core.config import ServeConfig

START_TIMEOUT_S = 60


@pytest.fixture(autouse=True)
def _no_egress(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HTTPS_PROXY", "http://127.0.0.1:9")
    monkeypatch.setenv("HTTP_PROXY", "http://127.0.0.1:9")
    monkeypatch.setenv("NO_PROXY", "127.0.0.1,localhost")
    monkeypatch.delenv("STREAMGUARD_API_TOKEN", raising=False)
    monkeypatch.delenv("SM_MODEL_DIR", raising=False)
    monkeypatch.delenv("STREAMGUARD_SERVE_CONFIG", raising=False)


@pytest.fixture(scope="session")
def model_dir(baseline_dir: Path) -> Path:
    """The session's baseline detector (``baseline_dir``, tests/conftest.py); read only."""
    return baseline_dir


@contextmanager
def running(
    detector_or_model_dir: Any,
    config: ServeConfig | None = None,
    token: str | None = None,
    **kw: Any,
) -> Iterator[str]:
    """``create_app`` served by a real uvicorn on a free 127.0.0.1 port (a thread); its URL."""
    import uvicorn

    from streamguard_core.serve.app import bind, create_app

    cfg = config or ServeConfig(port=0)
    sock, url = bind("127.0.0.1", 0)
    app = create_app(detector_or_model_dir, cfg, token, **kw)
    server = uvicorn.Server(uvicorn.Config(app, log_level="warning", lifespan="on"))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    deadline = time.monotonic() + START_TIMEOUT_S
    while not server.started:
        assert thread.is_alive() and time.monotonic() < deadline, "uvicorn did not start"
        time.sleep(0.01)
    try:
        yield url
    finally:
        server.should_exit = True
        thread.join(timeout=30)
        sock.close()


@pytest.fixture
def serve() -> Callable[..., Any]:
    """:func:`running`, for tests that start servers of their own."""
    return running
