"""Processes on 127.0.0.1 for tests, benchmarks and scripts: a free port, a Prefect environment.

The one place for what ``scripts/postgres.py``, ``scripts/screenshot_artifact.py``,
``bench/prefect_load.py``, ``tests/integration/conftest.py`` and the test helpers of
``tests/aws`` and ``tests/core/training`` share. Standard library only; importable as
``scripts.loopback`` wherever the repository root is on ``sys.path`` (pytest's ``pythonpath``,
``python -m scripts...``, the scripts and benchmarks, which put it there).
"""

from __future__ import annotations

import os
import socket
from pathlib import Path

# For processes that run StreamGuard code (workers, flow-run clients): no Hugging Face hub
# calls (a lookup hangs without egress) and unbuffered output (its log shows it as it happens).
RUNNER_ENV = {"HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", "PYTHONUNBUFFERED": "1"}


def free_port() -> int:
    """A TCP port on 127.0.0.1 that is free right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def prefect_env(
    home: Path | None = None, api_url: str | None = None, **settings: str
) -> dict[str, str]:
    """This process's environment for a Prefect server or client on 127.0.0.1: none of this
    process's ``PREFECT_*`` settings, no telemetry, no proxy for loopback.

    Args:
        home: its ``PREFECT_HOME`` (a private one: no profile or database of the user's).
        api_url: the server's API, as ``PREFECT_API_URL`` and ``PREFECT_SERVER_UI_API_URL``
            (where the UI of a server started with it calls its API).
        settings: more variables, set last (e.g. ``PREFECT_API_DATABASE_CONNECTION_URL``).
    """
    env = {k: v for k, v in os.environ.items() if not k.startswith("PREFECT_")}
    env.update(
        PREFECT_SERVER_ANALYTICS_ENABLED="false",
        DO_NOT_TRACK="1",
        # the server's own notifications (httpx) must not go through a proxy to 127.0.0.1 either
        NO_PROXY="127.0.0.1,localhost",
        no_proxy="127.0.0.1,localhost",
    )
    if home is not None:
        env["PREFECT_HOME"] = str(home)
    if api_url is not None:
        env.update(PREFECT_API_URL=api_url, PREFECT_SERVER_UI_API_URL=api_url)
    env.update(settings)
    return env
