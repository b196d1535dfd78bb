"""Collector test fixtures: a scripted HTTP server on 127.0.0.1 that injects faults, no egress.

``fault_server`` (function scope) is a real ``ThreadingHTTPServer`` on ``127.0.0.1`` (port 0)
serving in a daemon thread, shut down after the test. Its API::

    Reply = fault_server.Reply             # the reply class (no conftest import needed)
    fault_server.url                       # "http://127.0.0.1:<port>" (no trailing slash)
    fault_server.route("GET", "/v1/vulns/OSV-1", [Reply(status=500), Reply(json={...})])
    fault_server.route("POST", "/v1/querybatch", handler)   # handler(req) -> Reply
    fault_server.requests                  # every request, in arrival order (Recorded)
    fault_server.calls("GET", "/v1/vulns/OSV-1")            # the requests of one route

``route(method, path, responses)`` scripts one path (exact match, query string ignored): a
list of :class:`Reply` consumed in order, the last one repeating, or a callable taking the
:class:`Recorded` request (e.g. to answer by the JSON body or a query parameter) and returning
a ``Reply``. Routing again replaces the script. An unrouted path answers 404 ``{"error": ...}``.

``Reply(status=200, json=None, body=None, headers={}, delay_s=0.0, truncate=False)``: ``json``
is serialized (and ``Content-Type: application/json`` set), else ``body`` bytes are sent;
``truncate`` cuts the serialized body in half (``Content-Length`` says the half, so the client
reads a complete but truncated body); ``delay_s`` waits before answering -- set it larger than
the client's timeout (tests use ``HttpConfig(timeout_s=0.2)``) to make a timeout; the wait ends
early when the server shuts down, so a long delay costs nothing at teardown.

``Recorded`` has ``method``, ``path``, ``query`` (``dict[str, list[str]]``), ``headers`` (a
dict with lower-cased names), ``body`` (bytes) and ``json()``.

``SleepRecorder`` (fixture ``sleeps``) is a ``sleep`` callable for clients that records the
waits instead of sleeping; ``sleeps.calls`` lists them.

The autouse ``no_egress`` fixture points ``HTTP(S)_PROXY`` at a dead port and exempts loopback
through ``NO_PROXY``: httpx (``trust_env``) then reaches 127.0.0.1 directly and fails anything
else fast.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlsplit

import pytest


@dataclass
class Reply:
    """One scripted answer (see the module docstring)."""

    status: int = 200
    json: Any = None
    body: bytes | None = None
    headers: dict[str, str] = field(default_factory=dict)
    delay_s: float = 0.0
    truncate: bool = False

    def payload(self) -> bytes:
        """The bytes sent (serialized JSON or ``body``), cut in half when ``truncate``."""
        data = json.dumps(self.json).encode("utf-8") if self.json is not None else self.body
        data = data or b""
        return data[: len(data) // 2] if self.truncate else data


@dataclass
class Recorded:
    """One request the server received."""

    method: str
    path: str
    query: dict[str, list[str]]
    headers: dict[str, str]
    body: bytes

    def json(self) -> Any:
        """The request body parsed as JSON."""
        return json.loads(self.body)


Responder = list[Reply] | Callable[[Recorded], Reply]


class FaultServer:
    """A scripted HTTP server on 127.0.0.1 (see the module docstring)."""

    Reply = Reply

    def __init__(self) -> None:
        self.requests: list[Recorded] = []
        self._routes: dict[tuple[str, str], Responder] = {}
        self._served: dict[tuple[str, str], int] = {}
        self._lock = threading.Lock()
        self._stopping = threading.Event()
        self._httpd = ThreadingHTTPServer(("127.0.0.1", 0), self._handler_class())
        self._httpd.daemon_threads = True
        self._httpd.block_on_close = False
        self._thread = threading.Thread(
            target=self._httpd.serve_forever, kwargs={"poll_interval": 0.02}, daemon=True
        )
        self.url = f"http://127.0.0.1:{self._httpd.server_address[1]}"

    def route(self, method: str, path: str, responses: Responder) -> None:
        """Script ``method path``: replies consumed in order (last repeats) or a callable."""
        if isinstance(responses, list) and not responses:
            raise ValueError("route needs at least one Reply")
        with self._lock:
            self._routes[(method.upper(), path)] = responses
            self._served[(method.upper(), path)] = 0

    def calls(self, method: str, path: str) -> list[Recorded]:
        """Recorded requests of one route."""
        return [r for r in self.requests if r.method == method.upper() and r.path == path]

    def start(self) -> None:
        """Serve in a daemon thread."""
        self._thread.start()

    def stop(self) -> None:
        """End delayed replies, stop serving, close the socket."""
        self._stopping.set()
        self._httpd.shutdown()
        self._httpd.server_close()
        self._thread.join(timeout=5)

    def _next_reply(self, request: Recorded) -> Reply:
        key = (request.method, request.path)
        with self._lock:
            self.requests.append(request)
            responder = self._routes.get(key)
            if responder is None:
                return Reply(status=404, json={"error": f"no route for {key}"})
            if callable(responder):
                return responder(request)
            index = min(self._served[key], len(responder) - 1)
            self._served[key] += 1
            return responder[index]

    def _handler_class(self) -> type[BaseHTTPRequestHandler]:
        server = self

        class Handler(BaseHTTPRequestHandler):
            def _serve(self) -> None:
                parts = urlsplit(self.path)
                length = int(self.headers.get("Content-Length") or 0)
                request = Recorded(
                    method=self.command,
                    path=parts.path,
                    query=parse_qs(parts.query, keep_blank_values=True),
                    headers={k.lower(): v for k, v in self.headers.items()},
                    body=self.rfile.read(length) if length else b"",
                )
                reply = server._next_reply(request)
                if reply.delay_s and server._stopping.wait(reply.delay_s):
                    return
                data = reply.payload()
                try:
                    self.send_response(reply.status)
                    if reply.json is not None:
                        self.send_header("Content-Type", "application/json")
                    for name, value in reply.headers.items():
                        self.send_header(name, value)
                    self.send_header("Content-Length", str(len(data)))
                    self.end_headers()
                    self.wfile.write(data)
                except (BrokenPipeError, ConnectionResetError):
                    pass  # the client timed out and left

            do_GET = _serve
            do_POST = _serve

            def log_message(self, format: str, *args: Any) -> None:
                pass

        return Handler


@pytest.fixture
def fault_server() -> Iterator[FaultServer]:
    """A started :class:`FaultServer`, stopped after the test."""
    server = FaultServer()
    server.start()
    try:
        yield server
    finally:
        server.stop()


class SleepRecorder:
    """A ``sleep`` replacement that records the requested waits."""

    def __init__(self) -> None:
        self.calls: list[float] = []

    def __call__(self, seconds: float) -> None:
        self.calls.append(seconds)


@pytest.fixture
def sleeps() -> SleepRecorder:
    """A fresh :class:`SleepRecorder`."""
    return SleepRecorder()


@pytest.fixture(autouse=True)
def no_egress(monkeypatch: pytest.MonkeyPatch) -> None:
    """Send any non-loopback request to a dead proxy; loopback goes direct."""
    for name in ("HTTPS_PROXY", "https_proxy", "HTTP_PROXY", "http_proxy"):
        monkeypatch.setenv(name, "http://127.0.0.1:9")
    for name in ("ALL_PROXY", "all_proxy"):
        monkeypatch.delenv(name, raising=False)
    for name in ("NO_PROXY", "no_proxy"):
        monkeypatch.setenv(name, "127.0.0.1,localhost")
