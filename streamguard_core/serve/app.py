"""The scoring service: a saved detector behind FastAPI, and SageMaker's serving contract.

Endpoints (JSON in and out)::

    GET  /health       {"status": "ok", "model": {kind, backend, threshold}, "version"}
    GET  /model        the model card (model_card.json, secret-looking keys redacted)
    POST /scan         {"code": "<a C/C++ file>", "filename": "x.c"} or {"functions": [...]},
                       options threshold, explain (flagged|all|none), top_lines
    GET  /ping         SageMaker's health check: 200 with an empty body once the model is loaded
    POST /invocations  SageMaker's inference call: the body and answer of /scan; a text/plain
                       body is taken as the code of one file

A ``code`` body is split into functions with tree-sitter, the way ``streamguard scan`` reads a
file (:func:`~streamguard_core.collect.functions.extract_file_functions`); without a
``filename`` the grammar is chosen as for a ``.h`` file (C, or C++ when it parses better).
Findings come in source (or request) order, with the fields of ``streamguard scan``'s JSON
Lines rows; ``functions`` items are reported as file ``functions[i]`` with lines relative to
the item.

Auth: with a token, every endpoint but ``/ping`` wants ``Authorization: Bearer <token>``
(compared in constant time); in SageMaker mode ``/invocations`` is open too, because SageMaker
authenticates InvokeEndpoint with IAM and its health checks and invocations carry no token of
ours. Limits (:class:`~streamguard_core.config.ServeConfig`): a body over
``max_request_bytes`` is 413 (the Content-Length header and the bytes actually read, so a
chunked body is cut off too), so are more than ``max_functions`` functions or one over
``max_function_chars``; bad JSON is 400, wrong fields or types 422 naming the field, an empty
input 400. Scoring runs in a pool of ``concurrency`` threads; a request not answered within
``timeout_s`` (queueing included) gets 503 and the server carries on.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import ipaddress
import json
import logging
import socket
import threading
from collections.abc import AsyncIterator, Awaitable, Callable
from concurrent.futures import ThreadPoolExecutor
from contextlib import asynccontextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Literal

from fastapi import Depends, FastAPI, Request
from fastapi.responses import JSONResponse, Response
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from streamguard_core import __version__
from streamguard_core.config import ServeConfig
from streamguard_core.data.loaders import LONE_SURROGATE
from streamguard_core.models.registry import MODEL_CARD

log = logging.getLogger("streamguard.serve")

CODE_FILE = "<code>"
"""The ``file`` of findings from a ``code`` body without a ``filename``."""
DETECT_AS = "input.h"
"""Without a filename the grammar is chosen as for a header: C, or C++ when it parses better."""
LOOPBACK_NAMES = ("localhost",)
MAX_ECHO_CHARS = 80


class ServeError(Exception):
    """An error answer: HTTP ``status`` with ``{"detail": message, ...extra}``."""

    def __init__(
        self,
        status: int,
        message: str,
        extra: dict[str, Any] | None = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.status, self.message = status, message
        self.extra, self.headers = extra or {}, headers


class ScanRequest(BaseModel):
    """The body of ``POST /scan`` and ``POST /invocations``."""

    model_config = ConfigDict(extra="forbid", strict=True)

    code: str | None = Field(None, description="The text of one C/C++ source file.")
    filename: str | None = Field(
        None, max_length=4096, description="Its name: the suffix picks C or C++."
    )
    functions: list[str] | None = Field(None, description="Function texts, scored as given.")
    threshold: float | None = Field(
        None, ge=0.0, le=1.0, description="Flag at or above this (default: the model's own)."
    )
    explain: Literal["flagged", "all", "none"] | None = Field(
        None, description="Which findings get their most relevant lines (default: the server's)."
    )
    top_lines: int | None = Field(
        None, ge=1, le=100, description="Lines per explained finding (default: the server's)."
    )


@dataclass
class LoadedModel:
    """The detector the service scores with, loaded once, and what it tells about itself."""

    detector: Any
    model_dir: Path | None
    card: dict[str, Any]

    @property
    def kind(self) -> str:
        return str(self.card.get("kind") or getattr(self.detector, "kind", "unknown"))

    @property
    def backend(self) -> str:
        """What runs the forward pass: onnxruntime, torch or scikit-learn/numpy."""
        declared = getattr(self.detector, "backend", None)
        if isinstance(declared, str):
            return declared
        if "onnx" in type(self.detector).__name__.lower():
            return "onnxruntime"
        return "scikit-learn" if self.kind == "baseline" else "torch"

    def info(self) -> dict[str, Any]:
        """Kind, backend and the model's own threshold."""
        return {
            "kind": self.kind,
            "backend": self.backend,
            "threshold": float(self.detector.threshold),
        }


def load_model(
    detector_or_model_dir: Any, model_dir: str | Path | None = None, use_onnx: bool = True
) -> LoadedModel:
    """A detector from a model directory (any kind ``load_detector`` reads), or one already
    loaded (``model_dir``: where it was saved, for its card and explanations).

    Raises:
        DataError: the directory holds no detector.
    """
    if isinstance(detector_or_model_dir, str | Path):
        from streamguard_core.models.registry import load_detector

        model_dir = Path(detector_or_model_dir)
        detector = load_detector(model_dir, use_onnx=use_onnx)
    else:
        detector = detector_or_model_dir
    root = Path(model_dir) if model_dir is not None else None
    card_path = root / MODEL_CARD if root is not None else None
    if card_path is not None and card_path.exists():
        card = json.loads(card_path.read_text())
    else:
        card = {"kind": getattr(detector, "kind", "unknown"), "threshold": detector.threshold}
    return LoadedModel(detector, root, card)


def is_loopback(host: str) -> bool:
    """True for ``localhost`` and loopback addresses (127.0.0.0/8, ::1)."""
    if host.lower() in LOOPBACK_NAMES:
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False  # another host name: it may resolve to anything


def _echo(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= MAX_ECHO_CHARS else text[: MAX_ECHO_CHARS - 3] + "..."


def validation_errors(exc: ValidationError) -> tuple[str, list[dict[str, str]]]:
    """One message naming every bad field (``functions[2]``), and the same as a list."""
    errors = []
    for err in exc.errors():
        where = "".join(f"[{p}]" if isinstance(p, int) else f".{p}" for p in err["loc"])
        where = where.lstrip(".") or "(body)"
        given = err.get("input")
        shown = "" if isinstance(given, dict | list) else f" (got {_echo(given)})"
        errors.append({"field": where, "message": f"{err['msg']}{shown}"})
    return "invalid request: " + "; ".join(f"{e['field']}: {e['message']}" for e in errors), errors


def parse_request(body: bytes, content_type: str) -> ScanRequest:
    """The request a body holds: JSON (any content type but text/plain), or the code itself.

    Raises:
        ServeError: 400 empty or not JSON / UTF-8, 422 a field of the wrong name or type.
    """
    if not body.strip():
        raise ServeError(400, 'empty request body: send {"code": "..."} or {"functions": [...]}')
    if content_type.split(";")[0].strip().lower() == "text/plain":
        try:
            return ScanRequest(code=body.decode("utf-8"))
        except UnicodeDecodeError as exc:
            raise ServeError(400, f"the text/plain body is not UTF-8: {exc}") from exc
    try:
        data = json.loads(body)
    except json.JSONDecodeError as exc:
        raise ServeError(
            400, f"request body is not valid JSON: {exc.msg} (line {exc.lineno}, column "
            f"{exc.colno})"
        ) from exc  # fmt: skip
    except ValueError as exc:  # bytes that are no UTF-8/16/32
        raise ServeError(400, f"request body is not valid JSON: {exc}") from exc
    if not isinstance(data, dict):
        raise ServeError(
            422, f"invalid request: the body must be a JSON object, got {type(data).__name__}",
            {"errors": [{"field": "(body)", "message": "must be a JSON object"}]},
        )  # fmt: skip
    try:
        request = ScanRequest.model_validate(data)
    except ValidationError as exc:
        message, errors = validation_errors(exc)
        raise ServeError(422, message, {"errors": errors}) from exc
    _refuse_lone_surrogates(request)
    return request


def _refuse_lone_surrogates(request: ScanRequest) -> None:
    """400 when a JSON escape such as ``"\\ud800"`` put a lone UTF-16 surrogate in a text: it
    is valid JSON but no Unicode text (it cannot be encoded, parsed or echoed back)."""
    texts = [("code", request.code), ("filename", request.filename)]
    texts += [(f"functions[{i}]", text) for i, text in enumerate(request.functions or ())]
    for where, text in texts:
        found = LONE_SURROGATE.search(text) if text else None
        if found is not None:
            raise ServeError(
                400,
                f"{where} holds a lone surrogate escape (\\u{ord(found.group()):04x} at "
                f"character {found.start()}): not Unicode text",
                {"errors": [{"field": where, "message": "lone surrogate escape"}]},
            )


@dataclass(frozen=True)
class _Function:
    file: str
    name: str
    start_line: int
    end_line: int
    language: str
    text: str


@dataclass
class Scorer:
    """Turns a :class:`ScanRequest` into the answer (runs in a worker thread)."""

    model: LoadedModel
    config: ServeConfig
    _explainer: Any = None
    _explainer_lock: threading.Lock = field(default_factory=threading.Lock)
    _explain_lock: threading.Lock = field(default_factory=threading.Lock)

    def functions_of(self, request: ScanRequest) -> tuple[list[_Function], bool]:
        """The functions to score and whether the code had parse errors.

        Raises:
            ServeError: 400 empty input, both or neither of code and functions, a filename
                that is not C/C++; 413 too many functions or one too long.
        """
        from streamguard_core.collect.functions import extract_file_functions, language_for

        if (request.code is None) == (request.functions is None):
            raise ServeError(
                400,
                "give either code (one C/C++ file) or functions (a list of function texts)"
                + (", not both" if request.code is not None else ""),
            )
        if request.functions is not None:
            if not request.functions:
                raise ServeError(400, "functions is empty: give at least one function text")
            self._check_count(len(request.functions), "functions")
            out = []
            for i, text in enumerate(request.functions):
                where = f"functions[{i}]"
                if not text.strip():
                    raise ServeError(400, f"{where} is empty")
                self._check_length(len(text), where)
                defs, _, language = extract_file_functions(DETECT_AS, text)
                name = defs[0].name if len(defs) == 1 else where
                last = text.rstrip("\n").count("\n") + 1
                out.append(_Function(where, name, 1, last, language or "", text))
            return out, False
        assert request.code is not None
        if not request.code.strip():
            raise ServeError(400, "code is empty")
        filename = request.filename or DETECT_AS
        if language_for(filename) is None:
            raise ServeError(
                400,
                f"filename {request.filename!r} is not a C/C++ file (suffixes .c .h .cc .cpp "
                ".cxx .c++ .hpp .hh .hxx)",
            )
        defs, had_errors, language = extract_file_functions(filename, request.code)
        self._check_count(len(defs), "code")
        shown = request.filename or CODE_FILE
        for d in defs:
            where = f"function {d.name} (lines {d.start_line}-{d.end_line})"
            self._check_length(len(d.text), where)
        return [
            _Function(shown, d.name, d.start_line, d.end_line, language or "", d.text) for d in defs
        ], had_errors

    def _check_count(self, n: int, where: str) -> None:
        if n > self.config.max_functions:
            raise ServeError(
                413,
                f"{where} holds {n} functions, more than max_functions "
                f"({self.config.max_functions}): split the request",
            )

    def _check_length(self, n: int, where: str) -> None:
        if n > self.config.max_function_chars:
            raise ServeError(
                413,
                f"{where} has {n:,} characters, more than max_function_chars "
                f"({self.config.max_function_chars:,})",
            )

    def probabilities(self, texts: list[str]) -> list[float]:
        """``predict_proba`` in batches of ``batch_size``."""
        size = self.config.batch_size
        out: list[float] = []
        for start in range(0, len(texts), size):
            batch = texts[start : start + size]
            out.extend(float(p) for p in self.model.detector.predict_proba(batch))
        return out

    def explainer(self) -> Any:
        """The model's explainer, loaded on first use.

        Raises:
            ServeError: 501 explanations are unavailable (no model directory, no explainer).
        """
        with self._explainer_lock:
            if self._explainer is None:
                if self.model.model_dir is None:
                    raise ServeError(501, "explanations need the model directory; use explain none")
                try:
                    from streamguard_core.explain import load_explainer
                except ImportError as exc:
                    raise ServeError(
                        501, f"explanations are not available in this installation ({exc}); "
                        "use explain none",
                    ) from exc  # fmt: skip
                from streamguard_core.data.loaders import DataError

                try:
                    self._explainer = load_explainer(
                        self.model.model_dir,
                        detector=self.model.detector,
                        ig_steps=self.config.ig_steps,
                    )
                except DataError as exc:  # a model kind without an explainer
                    raise ServeError(501, f"{exc}; use explain none") from exc
            return self._explainer

    def scan(self, request: ScanRequest) -> dict[str, Any]:
        """Score (and explain) the request's functions; the JSON answer."""
        from streamguard_core.explain import LineScore, file_top_lines
        from streamguard_core.scan.run import Finding

        funcs, had_errors = self.functions_of(request)
        cutoff = float(self.model.detector.threshold if request.threshold is None
                       else request.threshold)  # fmt: skip
        explain = request.explain or self.config.explain
        k = request.top_lines or self.config.top_lines
        probs = self.probabilities([f.text for f in funcs]) if funcs else []
        chosen = [i for i, p in enumerate(probs)
                  if explain == "all" or (explain == "flagged" and p >= cutoff)]  # fmt: skip
        lines: dict[int, tuple[LineScore, ...]] = {}
        explainer = self.explainer() if chosen else None
        if explainer is not None:
            # attributions hook into the shared model (Captum): one request at a time
            with self._explain_lock:
                found = file_top_lines(explainer, [funcs[i].text for i in chosen],
                                       [funcs[i].start_line for i in chosen], k)  # fmt: skip
            lines = dict(zip(chosen, found, strict=True))
        findings = [
            asdict(Finding(f.file, f.name, f.start_line, f.end_line, p, p >= cutoff,
                           f.language, lines.get(i, ())))
            for i, (f, p) in enumerate(zip(funcs, probs, strict=True))
        ]  # fmt: skip
        return {
            "findings": findings,
            "functions": len(findings),
            "flagged": sum(f["flagged"] for f in findings),
            "threshold": cutoff,
            "explain": explain,
            "parse_errors": had_errors,
            "model": self.model.info(),
        }


async def read_body(request: Request, limit: int) -> bytes:
    """The request body, refused (413) as soon as the header or the bytes read pass ``limit``.

    Raises:
        ServeError: 400 a malformed Content-Length, 413 too large.
    """
    declared = request.headers.get("content-length")
    if declared is not None:
        try:
            size = int(declared)
        except ValueError as exc:
            raise ServeError(400, f"invalid Content-Length header {_echo(declared)}") from exc
        if size > limit:
            raise ServeError(
                413, f"request body of {size:,} bytes is over max_request_bytes ({limit:,})"
            )
    chunks: list[bytes] = []
    received = 0
    async for chunk in request.stream():
        received += len(chunk)
        if received > limit:  # a chunked body, or more bytes than the header said
            raise ServeError(
                413, f"request body is over max_request_bytes ({limit:,} bytes); stopped reading"
            )
        chunks.append(chunk)
    return b"".join(chunks)


def _digest(text: str) -> bytes:
    # equal-length digests: compare_digest then leaks nothing about the token's length
    return hashlib.sha256(text.encode()).digest()


def create_app(
    detector_or_model_dir: Any,
    config: ServeConfig | None = None,
    token: str | None = None,
    *,
    model_dir: str | Path | None = None,
    sagemaker: bool = False,
) -> FastAPI:
    """The FastAPI application serving one detector (loaded here, once).

    Args:
        detector_or_model_dir: a model directory, or a loaded detector (then ``model_dir``
            names its directory, for the model card and explanations).
        config: limits, concurrency, timeout and request defaults.
        token: the bearer token every endpoint but /ping wants (None: no auth; the CLI only
            allows that on loopback or in SageMaker mode).
        sagemaker: SageMaker's contract: /invocations needs no token (IAM guards the endpoint).

    Raises:
        DataError: the model directory holds no detector.
    """
    cfg = config or ServeConfig()
    model = load_model(detector_or_model_dir, model_dir, use_onnx=cfg.use_onnx)
    scorer = Scorer(model, cfg)
    expected = _digest(token) if token else None
    pool = ThreadPoolExecutor(max_workers=cfg.concurrency, thread_name_prefix="streamguard-score")

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        yield
        pool.shutdown(wait=False, cancel_futures=True)

    app = FastAPI(
        title="StreamGuard",
        version=__version__,
        lifespan=lifespan,
        docs_url=None,  # no unauthenticated surface beyond /ping
        redoc_url=None,
        openapi_url=None,
    )
    app.state.model = model
    app.state.config = cfg

    @app.exception_handler(ServeError)
    async def serve_error(request: Request, exc: ServeError) -> JSONResponse:
        if exc.status >= 500:
            log.warning("%s %s: %s", request.method, request.url.path, exc.message)
        return JSONResponse({"detail": exc.message, **exc.extra}, exc.status, headers=exc.headers)

    @app.exception_handler(Exception)
    async def internal_error(request: Request, exc: Exception) -> JSONResponse:
        log.exception("%s %s failed", request.method, request.url.path)
        return JSONResponse(
            {"detail": f"internal error while answering: {type(exc).__name__}: {exc}"}, 500
        )

    def bearer(open_in_sagemaker: bool = False) -> Callable[[Request], Awaitable[None]]:
        async def check(request: Request) -> None:
            if expected is None or (open_in_sagemaker and sagemaker):
                return
            scheme, _, given = request.headers.get("authorization", "").partition(" ")
            if scheme.lower() != "bearer" or not hmac.compare_digest(
                _digest(given.strip()), expected
            ):
                raise ServeError(
                    401,
                    "missing or wrong bearer token (send Authorization: Bearer <token>)",
                    headers={"WWW-Authenticate": "Bearer"},
                )

        return check

    async def answer(request: Request) -> JSONResponse:
        body = await read_body(request, cfg.max_request_bytes)
        parsed = parse_request(body, request.headers.get("content-type", ""))
        future = pool.submit(scorer.scan, parsed)
        try:
            result = await asyncio.wait_for(asyncio.wrap_future(future), cfg.timeout_s)
        except TimeoutError as exc:
            future.cancel()  # still queued: never starts; running: its worker stays busy
            raise ServeError(
                503,
                f"scoring did not finish within timeout_s ({cfg.timeout_s:g} s, waiting for a "
                f"free worker included; {cfg.concurrency} requests are scored at once): retry "
                "later or send fewer functions",
                headers={"Retry-After": str(max(1, round(cfg.timeout_s)))},
            ) from exc
        return JSONResponse(result)

    @app.get("/ping", include_in_schema=False)
    async def ping() -> Response:
        return Response(status_code=200)  # the model was loaded before the app existed

    @app.get("/health", dependencies=[Depends(bearer())])
    async def health() -> dict[str, Any]:
        return {"status": "ok", "model": model.info(), "version": __version__}

    @app.get("/model", dependencies=[Depends(bearer())])
    async def model_card() -> dict[str, Any]:
        from streamguard_core.aws.config import redact

        return redact(model.card)

    @app.post("/scan", dependencies=[Depends(bearer())])
    async def scan(request: Request) -> JSONResponse:
        return await answer(request)

    @app.post("/invocations", dependencies=[Depends(bearer(open_in_sagemaker=True))])
    async def invocations(request: Request) -> JSONResponse:
        return await answer(request)

    return app


class ServeUsageError(ValueError):
    """The settings do not describe a safe server (e.g. a public bind without a token)."""


class ServeStartError(RuntimeError):
    """The server could not start: the address or the model (the message says which)."""


def check_auth(host: str, token: str | None, sagemaker: bool = False) -> None:
    """Refuse a non-loopback bind without a token (SageMaker mode: IAM guards the endpoint).

    Raises:
        ServeUsageError: ``host`` is not loopback and there is no token.
    """
    if token is None and not sagemaker and not is_loopback(host):
        raise ServeUsageError(
            f"refusing to serve on {host} without a bearer token: anyone who can reach it could "
            "use the model. Set the token in the environment variable --token-env names "
            "(default STREAMGUARD_API_TOKEN), or a Prefect Secret block (python -m flows.serve "
            "--token-block NAME), or bind to 127.0.0.1"
        )


def bind(host: str, port: int) -> tuple[socket.socket, str]:
    """A listening TCP socket on ``host:port`` (port 0: a free one) and its URL.

    Raises:
        OSError: the address cannot be bound (in use, not local).
    """
    infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
    family, kind, proto, _, address = infos[0]
    sock = socket.socket(family, kind, proto)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind(address)
        sock.listen(2048)
    except OSError:
        sock.close()
        raise
    bound = sock.getsockname()[1]
    shown = f"[{host}]" if ":" in host else host
    return sock, f"http://{shown}:{bound}"


def run_server(
    detector_or_model_dir: Any,
    config: ServeConfig,
    token: str | None,
    *,
    sagemaker: bool = False,
    on_ready: Callable[[str, LoadedModel], None] | None = None,
) -> None:
    """Bind ``config.host:config.port``, load the model and serve until SIGINT/SIGTERM.

    ``on_ready(url, model)`` is called once the socket listens and the model is loaded.

    Raises:
        ServeUsageError: a non-loopback bind without a token (outside SageMaker mode).
        ServeStartError: the address cannot be bound, or the model cannot be loaded.
    """
    import uvicorn

    check_auth(config.host, token, sagemaker)
    try:
        sock, url = bind(config.host, config.port)
    except OSError as exc:
        raise ServeStartError(f"cannot listen on {config.host}:{config.port}: {exc}") from exc
    try:
        try:
            app = create_app(detector_or_model_dir, config, token, sagemaker=sagemaker)
        except Exception as exc:  # a corrupt or missing file of any kind: say which model
            log.debug("loading %s failed", detector_or_model_dir, exc_info=True)
            raise ServeStartError(
                f"cannot load the model from {detector_or_model_dir}: {type(exc).__name__}: {exc}"
            ) from exc
        if on_ready is not None:
            on_ready(url, app.state.model)
        server = uvicorn.Server(
            uvicorn.Config(app, log_level="info", timeout_graceful_shutdown=5, server_header=False)
        )
        server.run(sockets=[sock])
    finally:
        sock.close()
