"""Real processes on 127.0.0.1 for the integration tests: a Prefect server (on SQLite or on a
throwaway PostgreSQL), a webhook receiver.

Every process is started in its own session, its output goes to a log file under the test's tmp
dir, and it is stopped by its PID at teardown (SIGTERM, wait, SIGKILL; then SIGKILL to what is
left of its process group, e.g. a flow run the worker started). When a test fails, the tails of
all the logs are printed with its report.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import TYPE_CHECKING, Any

import httpx
import pytest

from scripts.loopback import RUNNER_ENV, free_port, prefect_env

if TYPE_CHECKING:
    from prefect.client.orchestration import SyncPrefectClient

    from scripts.postgres import LocalPostgres

REPO = Path(__file__).resolve().parents[2]
# `prefect` of the interpreter running the tests (.venv/bin/prefect in a fresh clone).
BIN_DIR = Path(sys.executable).parent
SERVER_START_TIMEOUT_S = 300.0
STOP_TIMEOUT_S = 30.0

_RUNNING: list[ManagedProcess] = []
# on top of prefect_env (scripts/loopback.py) for a server and every process run against it
PROCESS_SETTINGS = {
    **RUNNER_ENV,
    # a worker polls every 2 s instead of 10 (the run starts sooner)
    "PREFECT_WORKER_QUERY_SECONDS": "2",
    "PREFECT_CLI_WRAP_LINES": "false",
}


def tail(path: Path, lines: int = 60) -> str:
    """The last ``lines`` lines of a log file ('' when it does not exist)."""
    if not path.exists():
        return ""
    return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])


def wait_for(
    condition: Callable[[], Any],
    timeout_s: float,
    what: str | Callable[[], str],
    interval_s: float = 1.0,
) -> Any:
    """Poll ``condition`` until it returns something truthy; fail after ``timeout_s``.

    ``what`` (or what it returns, evaluated at the failure) and the tails of the running
    processes' logs make the failure message.
    """
    deadline = time.monotonic() + timeout_s
    while True:
        result = condition()
        if result:
            return result
        if time.monotonic() > deadline:
            description = what() if callable(what) else what
            pytest.fail(
                f"timed out after {timeout_s:.0f} s waiting for {description}\n{log_tails()}"
            )
        time.sleep(interval_s)


@dataclass
class ManagedProcess:
    """A subprocess with a log file, stopped by its PID."""

    name: str
    args: list[str]
    log: Path
    env: dict[str, str]
    cwd: Path
    popen: subprocess.Popen[bytes] | None = None

    def start(self) -> ManagedProcess:
        self.log.parent.mkdir(parents=True, exist_ok=True)
        with open(self.log, "wb") as out:
            self.popen = subprocess.Popen(
                self.args,
                cwd=self.cwd,
                env=self.env,
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,  # its own process group: its children go with it
            )
        _RUNNING.append(self)
        return self

    @property
    def pid(self) -> int:
        assert self.popen is not None
        return self.popen.pid

    def alive(self) -> bool:
        return self.popen is not None and self.popen.poll() is None

    def stop(self) -> None:
        """SIGTERM, wait, SIGKILL; then SIGKILL whatever is left in its process group."""
        if self.popen is None:
            return
        if self.popen.poll() is None:
            self.popen.terminate()
            try:
                self.popen.wait(timeout=STOP_TIMEOUT_S)
            except subprocess.TimeoutExpired:
                self.popen.kill()
                self.popen.wait(timeout=STOP_TIMEOUT_S)
        # the group id is our child's PID (start_new_session): this reaches only its children
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self.pid, signal.SIGKILL)
        if self in _RUNNING:
            _RUNNING.remove(self)

    def tail(self, lines: int = 60) -> str:
        return tail(self.log, lines)


def log_tails(lines: int = 60) -> str:
    """The tails of every running managed process's log, for failure reports."""
    parts = []
    for proc in _RUNNING:
        state = "running" if proc.alive() else f"exited {proc.popen and proc.popen.returncode}"
        parts.append(f"----- {proc.name} (pid {proc.pid}, {state}) {proc.log} -----")
        parts.append(proc.tail(lines))
    return "\n".join(parts)


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Iterator[None]:
    outcome = yield
    report = outcome.get_result()
    if report.when == "call" and report.failed and _RUNNING:
        report.sections.append(("process logs (tails)", log_tails()))


@dataclass
class PrefectServer:
    """A `prefect server start` on a free port with its own PREFECT_HOME."""

    port: int
    home: Path
    env: dict[str, str]
    process: ManagedProcess
    logs: Path

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def api_url(self) -> str:
        return f"{self.url}/api"

    def cli(self, *args: str, timeout_s: float = 300.0, cwd: Path = REPO) -> str:
        """Run `prefect ARGS` against this server; returns its output, fails on non-zero exit."""
        return run_command([str(BIN_DIR / "prefect"), *args], self.env, cwd, timeout_s)

    def python(self, *args: str, timeout_s: float = 300.0, cwd: Path = REPO) -> str:
        """Run `python ARGS` (this interpreter) against this server."""
        return run_command([sys.executable, *args], self.env, cwd, timeout_s)

    @contextlib.contextmanager
    def client(self) -> Iterator[SyncPrefectClient]:
        """A sync Prefect client for this server, whatever settings the test process has."""
        from prefect.client.orchestration import get_client
        from prefect.settings import PREFECT_API_URL, temporary_settings

        with (
            temporary_settings(updates={PREFECT_API_URL: self.api_url}),
            get_client(sync_client=True) as client,
        ):
            yield client

    def wait_for(
        self,
        condition: Callable[[], Any],
        timeout_s: float,
        what: str | Callable[[], str],
        interval_s: float = 1.0,
    ) -> Any:
        """:func:`wait_for` (for test modules, which must not import this conftest)."""
        return wait_for(condition, timeout_s, what, interval_s)

    def log_tails(self, lines: int = 60) -> str:
        """:func:`log_tails` of every running process (the server, workers)."""
        return log_tails(lines)

    def start_process(self, name: str, args: list[str], **env: str) -> ManagedProcess:
        """Start a long-running process with this server's environment (stopped at teardown)."""
        return ManagedProcess(
            name, args, self.logs / f"{name}.log", {**self.env, **env}, REPO
        ).start()


def run_command(args: list[str], env: dict[str, str], cwd: Path, timeout_s: float) -> str:
    """Run a command to completion; its output on success, a failure with the output otherwise."""
    try:
        done = subprocess.run(
            args,
            cwd=cwd,
            env=env,
            stdin=subprocess.DEVNULL,
            capture_output=True,
            text=True,
            timeout=timeout_s,
        )
    except subprocess.TimeoutExpired as exc:
        command = " ".join(args)
        pytest.fail(f"{command} timed out after {timeout_s:.0f} s\n{exc.output}\n{log_tails()}")
    output = done.stdout + done.stderr
    if done.returncode != 0:
        pytest.fail(f"{' '.join(args)} exited {done.returncode}:\n{output}\n{log_tails()}")
    return output


@contextlib.contextmanager
def running_prefect_server(root: Path, **server_env: str) -> Iterator[PrefectServer]:
    """`prefect server start --host 127.0.0.1 --port <free>` with its own PREFECT_HOME under
    ``root`` and ``server_env`` on top of :func:`prefect_env` with :data:`PROCESS_SETTINGS`
    (e.g. its database URL), healthy; at exit it and every process started after it (workers
    first) are stopped."""
    home, logs = root / "prefect_home", root / "logs"
    home.mkdir()
    port = free_port()
    env = prefect_env(home, f"http://127.0.0.1:{port}/api", **PROCESS_SETTINGS)
    process = ManagedProcess(
        "prefect-server",
        [str(BIN_DIR / "prefect"), "server", "start", "--host", "127.0.0.1", "--port", str(port)],
        logs / "prefect-server.log",
        {**env, **server_env},
        REPO,
    )
    server = PrefectServer(port=port, home=home, env=env, process=process, logs=logs)
    running_before = list(_RUNNING)
    process.start()
    try:

        def healthy() -> bool:
            if not process.alive():
                pytest.fail(f"prefect server exited {process.popen.returncode}:\n{process.tail()}")
            try:
                return httpx.get(f"{server.api_url}/health", timeout=5).status_code == 200
            except httpx.HTTPError:
                return False

        wait_for(healthy, SERVER_START_TIMEOUT_S, "the Prefect server's /api/health", 1.0)
        yield server
    finally:
        for proc in reversed(list(_RUNNING)):  # workers first, the server last
            if proc not in running_before:
                proc.stop()


@pytest.fixture(scope="module")
def prefect_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[PrefectServer]:
    """`prefect server start --host 127.0.0.1 --port <free>` (SQLite), healthy, stopped at
    teardown."""
    with running_prefect_server(tmp_path_factory.mktemp("prefect_server")) as server:
        yield server


@pytest.fixture(scope="session")
def postgres() -> Iterator[LocalPostgres]:
    """A fresh PostgreSQL cluster on 127.0.0.1 (scripts/postgres.py) with a ``prefect``
    database, stopped (``pg_ctl stop -m immediate``) and deleted at teardown.

    Without PostgreSQL it skips with the reason, except under ``CI=true``, where it fails: CI
    installs it (``make postgresql``) and must run the tests that need it.
    """
    from scripts.postgres import LocalPostgres, PostgresUnavailable

    try:
        pg = LocalPostgres.start(database="prefect")
    except PostgresUnavailable as exc:
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail(f"CI=true and PostgreSQL is unavailable: {exc}")
        pytest.skip(str(exc))
    with pg:
        yield pg


@pytest.fixture(scope="module")
def prefect_server_postgres(
    tmp_path_factory: pytest.TempPathFactory, postgres: LocalPostgres
) -> Iterator[PrefectServer]:
    """`prefect server start` (own PREFECT_HOME, free port) on the :func:`postgres` database."""
    root = tmp_path_factory.mktemp("prefect_server_postgres")
    with running_prefect_server(
        root,
        PREFECT_API_DATABASE_CONNECTION_URL=postgres.url,
        # log (with a traceback) the database errors Prefect would answer with a bare 503
        PREFECT_SERVER_LOG_RETRYABLE_ERRORS="true",
    ) as server:
        yield server


@dataclass
class WebhookReceiver:
    """A tiny HTTP server on 127.0.0.1 that records the bodies POSTed to it."""

    port: int
    received: list[dict[str, Any]] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/hook"

    def bodies(self) -> list[dict[str, Any]]:
        with self.lock:
            return list(self.received)


@pytest.fixture(scope="module")
def webhook_receiver() -> Iterator[WebhookReceiver]:
    """Records every POST (path, headers, raw body, parsed JSON) in a background thread."""
    receiver = WebhookReceiver(port=0)

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            raw = self.rfile.read(int(self.headers.get("Content-Length") or 0))
            try:
                parsed = json.loads(raw)
            except ValueError:
                parsed = None
            with receiver.lock:
                receiver.received.append(
                    {"path": self.path, "headers": dict(self.headers), "raw": raw, "json": parsed}
                )
            self.send_response(200)
            self.send_header("Content-Type", "text/plain")
            self.end_headers()
            self.wfile.write(b"ok")

        def log_message(self, format: str, *args: Any) -> None:  # keep pytest output clean
            pass

    httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    receiver.port = httpd.server_address[1]
    thread = threading.Thread(target=httpd.serve_forever, name="webhook-receiver", daemon=True)
    thread.start()
    try:
        yield receiver
    finally:
        httpd.shutdown()
        httpd.server_close()
        thread.join(timeout=10)


@pytest.fixture(scope="session")
def chromium() -> str:
    """Path of a Chromium binary (the Makefile installs one on CI); skips when there is none."""
    for name in ("chromium", "chromium-browser", "google-chrome"):
        path = shutil.which(name)
        if path:
            return path
    if Path("/usr/bin/chromium").exists():
        return "/usr/bin/chromium"
    pytest.skip("no Chromium found (apt-get install -y chromium)")
