"""The collectors' HTTP client: retries, rate limits, pacing and a cache of raw responses.

One :class:`HttpClient` per source. It retries what a real service answers when it is busy or
flaky (429/503 with ``Retry-After``, GitHub's primary and secondary rate limits, other 5xx with
jittered exponential backoff, timeouts, connection errors, a JSON body cut short) and gives up
with a typed :class:`HttpError` whose ``reason`` is a :class:`~.records.SourceReject` reason code.
Waits and the clock are injectable so tests never sleep. Secrets (auth headers, ``apiKey``/
``token`` query parameters) never reach a log line, an exception message or a cache key.
"""

from __future__ import annotations

import email.utils
import hashlib
import json
import logging
import random
import re
import time
from collections.abc import Callable, Collection, Mapping
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Any
from urllib.parse import parse_qsl, unquote, urlencode, urlsplit, urlunsplit

import httpx

from streamguard_core.config import HttpConfig
from streamguard_core.io import atomic_write_bytes

log = logging.getLogger("streamguard.collect")

# Query parameters whose values are credentials (compared lower-cased).
SECRET_PARAMS = frozenset(
    {"apikey", "api_key", "token", "access_token", "key", "client_secret", "password", "sig"}
)
REDACTED = "***"
# Added to a rate-limit reset time: the reset epoch is whole seconds and clocks differ.
RESET_MARGIN_S = 1.0
CACHED_HEADERS = frozenset({"link"})
"""Response headers the raw cache keeps beside a body (GitHub paginates through ``Link``)."""
# Backoff jitter: the wait is backoff_s * 2**retry * U(JITTER_LOW, 1).
JITTER_LOW = 0.5


class HttpError(Exception):
    """A request that failed for good; ``reason`` is a ``SourceReject`` reason code."""

    reason = "http_error"

    def __init__(self, url: str, status: int | None, detail: str, reason: str | None = None):
        self.url = redact_url(url)
        self.status = status
        if reason is not None:
            self.reason = reason
        status_text = f" (HTTP {status})" if status is not None else ""
        super().__init__(f"{self.reason}{status_text}: {self.url}: {detail}")


class RateLimited(HttpError):
    """A rate limit that did not recover (retries spent, or a wait over ``max_wait_s``)."""

    reason = "rate_limited"


class RequestTimeout(HttpError):
    """Every attempt timed out."""

    reason = "timeout"


class MalformedResponse(HttpError):
    """The body never parsed as JSON (truncated or not JSON)."""

    reason = "malformed_json"


@dataclass(slots=True)
class Response:
    """One answer: status, case-insensitive headers, raw bytes, final URL, cache origin."""

    status: int
    headers: Mapping[str, str]
    content: bytes
    url: str
    from_cache: bool = False

    def json(self) -> Any:
        """The body parsed as JSON (raises ``ValueError`` when it does not parse)."""
        return json.loads(self.content)


def redact_url(url: str) -> str:
    """``url`` with credentials in its query string or userinfo replaced by ``***``."""
    try:
        parts = urlsplit(url)
    except ValueError:
        return "<unparseable url>"
    netloc = parts.netloc
    if "@" in netloc:
        netloc = f"{REDACTED}@{netloc.rsplit('@', 1)[1]}"
    if not parts.query:
        return urlunsplit(parts._replace(netloc=netloc))
    query = [
        (k, REDACTED if k.lower() in SECRET_PARAMS else v)
        for k, v in parse_qsl(parts.query, keep_blank_values=True)
    ]
    return urlunsplit(parts._replace(netloc=netloc, query=urlencode(query, safe="*")))


def redact_headers(headers: Mapping[str, str], secret: Collection[str]) -> dict[str, str]:
    """A copy of ``headers`` with every header named in ``secret`` (any case) redacted."""
    names = {s.lower() for s in secret}
    return {k: (REDACTED if k.lower() in names else v) for k, v in headers.items()}


def _public_params(params: Mapping[str, Any] | None) -> dict[str, Any]:
    return {k: v for k, v in (params or {}).items() if str(k).lower() not in SECRET_PARAMS}


class _RedactHttpxUrls(logging.Filter):
    """httpx logs every request URL at INFO: keep credentials in query strings out of it."""

    _url = re.compile(r"https?://[^\s\"']+")

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        redacted = self._url.sub(lambda m: redact_url(m.group(0)), message)
        if redacted != message:
            record.msg, record.args = redacted, None
        return True


_httpx_logger = logging.getLogger("httpx")
if not any(isinstance(f, _RedactHttpxUrls) for f in _httpx_logger.filters):
    _httpx_logger.addFilter(_RedactHttpxUrls())


class RawCache:
    """Raw response bodies on disk, one file per request, keyed without credentials."""

    def __init__(self, directory: str | Path):
        self.directory = Path(directory)

    @staticmethod
    def key(method: str, url: str, params: dict[str, Any] | None, body: Any) -> str:
        """sha256 of method, URL, sorted parameters and canonical JSON body (never auth).

        Credentials in the URL's query or in ``params`` (``apiKey``, ``token``...) are left
        out, so a new key or token reuses the cache and the key reveals nothing.
        """
        parts = urlsplit(url)
        query = sorted(
            (k, v)
            for k, v in parse_qsl(parts.query, keep_blank_values=True)
            if k.lower() not in SECRET_PARAMS
        )
        netloc = parts.netloc.rsplit("@", 1)[-1]
        base = urlunsplit(parts._replace(netloc=netloc, query="", fragment=""))
        canonical = json.dumps(
            [
                method.upper(),
                base,
                query,
                sorted((str(k), v) for k, v in _public_params(params).items()),
                body,
            ],
            sort_keys=True,
            separators=(",", ":"),
            ensure_ascii=False,
            default=str,
        )
        return hashlib.sha256(canonical.encode("utf-8")).hexdigest()

    def _path(self, key: str) -> Path:
        if not re.fullmatch(r"[0-9a-f]{64}", key):
            raise ValueError(f"not a cache key: {key!r}")
        return self.directory / key

    def get(self, key: str) -> bytes | None:
        """The cached body of ``key``, or None."""
        path = self._path(key)
        try:
            return path.read_bytes()
        except FileNotFoundError:
            return None

    def get_headers(self, key: str) -> dict[str, str]:
        """The kept headers of ``key``'s response (:data:`CACHED_HEADERS`; {} when none)."""
        try:
            return dict(json.loads(self._path(key).with_suffix(".headers").read_text()))
        except (FileNotFoundError, ValueError):
            return {}

    def put(self, key: str, data: bytes, headers: Mapping[str, str] | None = None) -> None:
        """Store ``data`` under ``key`` atomically (temp file in the same directory + rename),
        with the response headers a client needs again (``Link`` for pagination)."""
        kept = {k.lower(): v for k, v in (headers or {}).items() if k.lower() in CACHED_HEADERS}
        if kept:
            atomic_write_bytes(self._path(key).with_suffix(".headers"), json.dumps(kept).encode())
        atomic_write_bytes(self._path(key), data)


@dataclass(slots=True)
class _Retry:
    """Why an attempt failed and how long the server (or the backoff) says to wait."""

    reason: str  # rate_limited | server_error | timeout | connection | malformed_json
    detail: str
    status: int | None = None
    server_wait_s: float | None = None  # asked by the server: over max_wait_s = give up


def _parse_retry_after(value: str | None, now_epoch: float) -> float | None:
    """Seconds to wait from a ``Retry-After`` header (delta seconds or an HTTP date)."""
    if value is None or not value.strip():
        return None
    value = value.strip()
    try:
        return max(float(value), 0.0)
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(when.timestamp() - now_epoch, 0.0)


class HttpClient:
    """A synchronous JSON/bytes client with retries, rate limits, pacing and a raw cache.

    ``stats`` counts ``requests`` (sent over the network), ``cache_hits``, ``retries`` (total),
    ``retries_by_reason`` and ``wait_s_by_reason`` (seconds slept per reason: ``rate_limited``,
    ``server_error``, ``timeout``, ``connection``, ``malformed_json``, ``interval``).
    """

    def __init__(
        self,
        config: HttpConfig,
        *,
        headers: dict[str, str] | None = None,
        secret_headers: Collection[str] = ("authorization", "apikey", "x-api-key"),
        cache: RawCache | None = None,
        throttle: Callable[[], None] | None = None,
        min_interval_s: float = 0.0,
        sleep: Callable[[float], None] = time.sleep,
        clock: Callable[[], float] = time.monotonic,
        wall_clock: Callable[[], float] = time.time,
        seed: int = 0,
    ):
        """Build the client.

        Args:
            config: timeouts, retries, backoff and the longest wait honoured.
            headers: sent with every request (``User-Agent`` defaults to the config's).
            secret_headers: header names (any case) never logged.
            cache: where 2xx bodies are kept; None = no cache.
            throttle: called before every network request (e.g. a shared rate limiter).
            min_interval_s: at least this many seconds between two network requests.
            sleep: how to wait (tests pass a recorder).
            clock: monotonic seconds, for ``min_interval_s``.
            wall_clock: epoch seconds, for ``Retry-After`` dates and rate-limit resets.
            seed: seed of the backoff jitter.
        """
        self.config = config
        self.cache = cache
        self.throttle = throttle
        self.min_interval_s = min_interval_s
        self.secret_headers = tuple(secret_headers)
        self._sleep = sleep
        self._clock = clock
        self._wall_clock = wall_clock
        self._rng = random.Random(seed)
        self._last_request: float | None = None
        all_headers = {"User-Agent": config.user_agent, **(headers or {})}
        self._headers = all_headers
        # trust_env keeps HTTP(S)_PROXY/NO_PROXY: loopback goes direct, the rest via the proxy.
        self._client = httpx.Client(
            headers=all_headers,
            timeout=httpx.Timeout(config.timeout_s),
            follow_redirects=True,
            trust_env=True,
        )
        self.stats: dict[str, Any] = {
            "requests": 0,
            "cache_hits": 0,
            "retries": 0,
            "retries_by_reason": {},
            "wait_s_by_reason": {},
        }

    # ------------------------------------------------------------------ lifecycle
    def close(self) -> None:
        """Close the connection pool."""
        self._client.close()

    def __enter__(self) -> HttpClient:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    # ------------------------------------------------------------------ public API
    def request(
        self,
        method: str,
        url: str,
        *,
        params: dict[str, Any] | None = None,
        json: Any = None,
        use_cache: bool = True,
    ) -> Response:
        """Send one request with retries; return its 2xx :class:`Response`.

        Raises:
            RateLimited: a limit outlasting ``max_retries`` or asking a wait over ``max_wait_s``.
            RequestTimeout: every attempt timed out.
            HttpError: another 4xx (at once), or 5xx / connection errors past the retries.
        """
        return self._fetch(method, url, params, json, use_cache, parse_json=False)[1]

    def get_json(
        self, url: str, params: dict[str, Any] | None = None, *, use_cache: bool = True
    ) -> tuple[Any, Response]:
        """GET ``url`` and parse JSON (a body that does not parse is retried, then raised).

        Raises:
            MalformedResponse: the body never parsed. Others as :meth:`request`.
        """
        return self._fetch("GET", url, params, None, use_cache, parse_json=True)

    def post_json(self, url: str, body: Any, *, use_cache: bool = True) -> tuple[Any, Response]:
        """POST ``body`` as JSON to ``url`` and parse the JSON answer (as :meth:`get_json`)."""
        return self._fetch("POST", url, None, body, use_cache, parse_json=True)

    def get_bytes(self, url: str, *, use_cache: bool = True) -> bytes:
        """The raw body of ``url``; a local path or ``file://`` URL is read from disk."""
        scheme = urlsplit(url).scheme.lower()
        if scheme == "file":
            return Path(unquote(urlsplit(url).path)).read_bytes()
        if scheme not in ("http", "https"):
            return Path(url).expanduser().read_bytes()
        return self.request("GET", url, use_cache=use_cache).content

    # ------------------------------------------------------------------ internals
    def _fetch(
        self,
        method: str,
        url: str,
        params: dict[str, Any] | None,
        body: Any,
        use_cache: bool,
        *,
        parse_json: bool,
    ) -> tuple[Any, Response]:
        key = self.cache.key(method, url, params, body) if self.cache is not None else None
        if key is not None and use_cache and self.cache is not None:
            cached = self.cache.get(key)
            if cached is not None:
                try:
                    parsed = json.loads(cached) if parse_json else None
                except ValueError:
                    parsed, cached = None, None  # a corrupt entry: fetch again
                if cached is not None:
                    self.stats["cache_hits"] += 1
                    headers = httpx.Headers(self.cache.get_headers(key))
                    return parsed, Response(200, headers, cached, url, from_cache=True)

        retries = 0
        while True:
            outcome = self._attempt(method, url, params, body, parse_json)
            if not isinstance(outcome, _Retry):
                parsed, response = outcome
                if key is not None and self.cache is not None:
                    self.cache.put(key, response.content, response.headers)
                return parsed, response
            wait = self._wait_for(outcome, retries)
            if outcome.server_wait_s is not None and outcome.server_wait_s > self.config.max_wait_s:
                raise RateLimited(
                    url,
                    outcome.status,
                    f"server asks to wait {outcome.server_wait_s:.0f}s > max_wait_s "
                    f"{self.config.max_wait_s:.0f}s ({outcome.detail})",
                )
            if retries >= self.config.max_retries:
                raise self._give_up(url, outcome, retries)
            retries += 1
            self.stats["retries"] += 1
            by_reason = self.stats["retries_by_reason"]
            by_reason[outcome.reason] = by_reason.get(outcome.reason, 0) + 1
            log.warning(
                "retry %d/%d %s %s after %s (%s): waiting %.2fs",
                retries,
                self.config.max_retries,
                method,
                redact_url(url),
                outcome.reason,
                outcome.detail,
                wait,
            )
            log.debug("request headers %s", redact_headers(self._headers, self.secret_headers))
            self._wait(wait, outcome.reason)

    def _attempt(
        self, method: str, url: str, params: dict[str, Any] | None, body: Any, parse_json: bool
    ) -> tuple[Any, Response] | _Retry:
        """Send once; a result, or a :class:`_Retry` saying why and how long to wait."""
        self._pace()
        self.stats["requests"] += 1
        try:
            raw = self._client.request(method, url, params=params, json=body)
        except httpx.TimeoutException as exc:
            return _Retry("timeout", type(exc).__name__)
        except httpx.TransportError as exc:
            return _Retry("connection", type(exc).__name__)
        status = raw.status_code
        if 200 <= status < 300:
            response = Response(status, raw.headers, raw.content, str(raw.url))
            if not parse_json:
                return None, response
            try:
                return json.loads(raw.content), response
            except ValueError as exc:
                return _Retry("malformed_json", f"{type(exc).__name__} at {len(raw.content)} B")
        return self._classify(raw)

    def _classify(self, raw: httpx.Response) -> _Retry:
        """Map a non-2xx answer to a retry, or raise at once when retrying cannot help."""
        status, headers, url = raw.status_code, raw.headers, str(raw.request.url)
        now = self._wall_clock()
        retry_after = _parse_retry_after(headers.get("retry-after"), now)
        remaining = headers.get("x-ratelimit-remaining")
        reset = headers.get("x-ratelimit-reset")
        if status in (403, 429) and remaining is not None and remaining.strip() == "0" and reset:
            try:
                wait = max(float(reset) - now, 0.0) + RESET_MARGIN_S
            except ValueError:
                wait = None
            return _Retry("rate_limited", f"HTTP {status} primary rate limit", status, wait)
        if status in (403, 429) and retry_after is not None:
            return _Retry("rate_limited", f"HTTP {status} Retry-After", status, retry_after)
        if status == 429:
            return _Retry("rate_limited", "HTTP 429", status)
        if status == 403 and b"secondary rate limit" in raw.content.lower():
            # GitHub: a secondary limit without retry-after -> wait at least one minute
            return _Retry("rate_limited", "HTTP 403 secondary rate limit", status, 60.0)
        if status >= 500:
            return _Retry("server_error", f"HTTP {status}", status, retry_after)
        raise HttpError(url, status, f"HTTP {status} {raw.reason_phrase}".strip())

    def _wait_for(self, outcome: _Retry, retries: int) -> float:
        """The server's wait when it gave one, else jittered exponential backoff."""
        if outcome.server_wait_s is not None:
            return outcome.server_wait_s
        base = self.config.backoff_s * (2**retries)
        return min(base * self._rng.uniform(JITTER_LOW, 1.0), self.config.max_wait_s)

    def _give_up(self, url: str, outcome: _Retry, retries: int) -> HttpError:
        detail = f"{outcome.detail} after {retries + 1} attempts"
        if outcome.reason == "rate_limited":
            return RateLimited(url, outcome.status, detail)
        if outcome.reason == "timeout":
            return RequestTimeout(url, None, detail)
        if outcome.reason == "malformed_json":
            return MalformedResponse(url, None, detail)
        return HttpError(url, outcome.status, detail)

    def _wait(self, seconds: float, reason: str) -> None:
        if seconds <= 0:
            return
        waits = self.stats["wait_s_by_reason"]
        waits[reason] = waits.get(reason, 0.0) + seconds
        self._sleep(seconds)

    def _pace(self) -> None:
        """Call the shared throttle, then keep ``min_interval_s`` since the last request."""
        if self.throttle is not None:
            self.throttle()
        if self.min_interval_s > 0 and self._last_request is not None:
            gap = self._clock() - self._last_request
            if gap < self.min_interval_s:
                self._wait(self.min_interval_s - gap, "interval")
        self._last_request = self._clock()
