"""HttpClient against a real HTTP server on 127.0.0.1 that injects each fault a service shows."""

from __future__ import annotations

import email.utils
import logging

import pytest

from streamguard_core.collect.http import (
    JITTER_LOW,
    RESET_MARGIN_S,
    HttpClient,
    HttpError,
    MalformedResponse,
    RateLimited,
    RawCache,
    RequestTimeout,
)
from streamguard_core.config import HttpConfig

NOW = 1_700_000_000.0  # a fixed wall clock (epoch seconds)
PATH = "/v1/thing"
GOOD = {"vulns": [{"id": "OSV-2020-1", "modified": "2022-01-01T00:00:00Z"}], "note": "x" * 200}


def make_client(sleeps, **kwargs) -> HttpClient:
    """A client with tiny timeouts, a recorder for sleeps and a fixed wall clock."""
    config = kwargs.pop("config", None) or HttpConfig(timeout_s=0.2, max_retries=3)
    kwargs.setdefault("wall_clock", lambda: NOW)
    return HttpClient(config, sleep=sleeps, **kwargs)


def test_429_retry_after_seconds_then_success(fault_server, sleeps):
    Reply = fault_server.Reply
    fault_server.route(
        "GET", PATH, [Reply(status=429, headers={"Retry-After": "7"}), Reply(json=GOOD)]
    )
    with make_client(sleeps) as client:
        data, response = client.get_json(fault_server.url + PATH)
    assert data == GOOD and response.status == 200 and not response.from_cache
    assert sleeps.calls == [7.0]
    assert len(fault_server.calls("GET", PATH)) == 2
    assert client.stats["retries_by_reason"] == {"rate_limited": 1}
    assert client.stats["wait_s_by_reason"] == {"rate_limited": 7.0}


def test_retry_after_http_date(fault_server, sleeps):
    Reply = fault_server.Reply
    when = email.utils.formatdate(NOW + 30, usegmt=True)
    fault_server.route(
        "GET", PATH, [Reply(status=503, headers={"Retry-After": when}), Reply(json=GOOD)]
    )
    with make_client(sleeps) as client:
        data, _ = client.get_json(fault_server.url + PATH)
    assert data == GOOD
    assert sleeps.calls == [pytest.approx(30.0)]


@pytest.mark.parametrize("statuses", [(503, 500), (502,), (500, 500, 504)])
def test_5xx_backs_off_exponentially_then_succeeds(fault_server, sleeps, statuses):
    Reply = fault_server.Reply
    fault_server.route("GET", PATH, [*(Reply(status=s) for s in statuses), Reply(json=GOOD)])
    config = HttpConfig(timeout_s=0.2, max_retries=3, backoff_s=2.0)
    with make_client(sleeps, config=config) as client:
        data, _ = client.get_json(fault_server.url + PATH)
    assert data == GOOD
    assert len(sleeps.calls) == len(statuses)
    for retry, wait in enumerate(sleeps.calls):
        full = config.backoff_s * 2**retry
        assert JITTER_LOW * full <= wait <= full
    assert client.stats["retries_by_reason"] == {"server_error": len(statuses)}


def test_backoff_jitter_is_seeded(fault_server):
    Reply = fault_server.Reply
    waits = []
    for _ in range(2):
        fault_server.route("GET", PATH, [Reply(status=500), Reply(status=500), Reply(json=GOOD)])
        recorded: list[float] = []
        with make_client(recorded.append, seed=3) as client:
            client.get_json(fault_server.url + PATH)
        waits.append(recorded)
    assert waits[0] == waits[1] and len(waits[0]) == 2


def test_5xx_forever_raises_http_error_after_all_retries(fault_server, sleeps):
    fault_server.route("GET", PATH, [fault_server.Reply(status=500)])
    config = HttpConfig(timeout_s=0.2, max_retries=2)
    with make_client(sleeps, config=config) as client, pytest.raises(HttpError) as info:
        client.get_json(fault_server.url + PATH)
    assert type(info.value) is HttpError
    assert info.value.status == 500 and info.value.reason == "http_error"
    assert len(fault_server.calls("GET", PATH)) == config.max_retries + 1
    assert len(sleeps.calls) == config.max_retries
    assert fault_server.url + PATH in str(info.value)


def test_timeout_then_success(fault_server, sleeps):
    Reply = fault_server.Reply
    fault_server.route("GET", PATH, [Reply(json=GOOD, delay_s=30), Reply(json=GOOD)])
    with make_client(sleeps) as client:
        data, _ = client.get_json(fault_server.url + PATH)
    assert data == GOOD
    assert len(sleeps.calls) == 1
    assert client.stats["retries_by_reason"] == {"timeout": 1}


def test_timeout_forever_raises_request_timeout(fault_server, sleeps):
    fault_server.route("GET", PATH, [fault_server.Reply(json=GOOD, delay_s=30)])
    config = HttpConfig(timeout_s=0.2, max_retries=1)
    with make_client(sleeps, config=config) as client, pytest.raises(RequestTimeout) as info:
        client.get_json(fault_server.url + PATH)
    assert info.value.reason == "timeout" and info.value.status is None
    assert len(fault_server.calls("GET", PATH)) == config.max_retries + 1


def test_truncated_json_then_good_json(fault_server, sleeps, tmp_path):
    Reply = fault_server.Reply
    fault_server.route("GET", PATH, [Reply(json=GOOD, truncate=True), Reply(json=GOOD)])
    cache = RawCache(tmp_path / "raw")
    with make_client(sleeps, cache=cache) as client:
        data, response = client.get_json(fault_server.url + PATH)
    assert data == GOOD
    assert client.stats["retries_by_reason"] == {"malformed_json": 1}
    # only the body that parsed is cached
    assert [p.read_bytes() for p in (tmp_path / "raw").iterdir()] == [response.content]


def test_truncated_forever_raises_malformed_and_caches_nothing(fault_server, sleeps, tmp_path):
    fault_server.route("POST", PATH, [fault_server.Reply(json=GOOD, truncate=True)])
    config = HttpConfig(timeout_s=0.2, max_retries=2)
    cache = RawCache(tmp_path / "raw")
    client = make_client(sleeps, config=config, cache=cache)
    with client, pytest.raises(MalformedResponse) as info:
        client.post_json(fault_server.url + PATH, {"queries": []})
    assert info.value.reason == "malformed_json"
    assert len(fault_server.calls("POST", PATH)) == config.max_retries + 1
    assert not (tmp_path / "raw").exists() or not list((tmp_path / "raw").iterdir())


@pytest.mark.parametrize("status", [403, 429])
def test_github_primary_rate_limit_waits_until_reset(fault_server, sleeps, status):
    Reply = fault_server.Reply
    limited = Reply(
        status=status,
        json={"message": "API rate limit exceeded"},
        headers={"x-ratelimit-remaining": "0", "x-ratelimit-reset": str(int(NOW + 40))},
    )
    fault_server.route("GET", PATH, [limited, Reply(json=GOOD)])
    with make_client(sleeps) as client:
        data, _ = client.get_json(fault_server.url + PATH)
    assert data == GOOD
    assert sleeps.calls == [pytest.approx(int(NOW + 40) - NOW + RESET_MARGIN_S)]


def test_github_secondary_rate_limit_honours_retry_after(fault_server, sleeps):
    Reply = fault_server.Reply
    secondary = Reply(
        status=403,
        json={"message": "You have exceeded a secondary rate limit."},
        headers={"retry-after": "60"},
    )
    fault_server.route("GET", PATH, [secondary, Reply(json=GOOD)])
    with make_client(sleeps) as client:
        data, _ = client.get_json(fault_server.url + PATH)
    assert data == GOOD and sleeps.calls == [60.0]


def test_github_secondary_rate_limit_without_headers_waits_a_minute(fault_server, sleeps):
    """GitHub's docs: a secondary-limit 403 without retry-after -> wait at least one minute."""
    Reply = fault_server.Reply
    secondary = Reply(
        status=403, json={"message": "You have exceeded a secondary rate limit. Please wait."}
    )
    fault_server.route("GET", PATH, [secondary, Reply(json=GOOD)])
    with make_client(sleeps) as client:
        data, _ = client.get_json(fault_server.url + PATH)
    assert data == GOOD and sleeps.calls == [60.0]
    # any other 403 (bad credentials, no access) is not retried
    fault_server.route("GET", PATH, [Reply(status=403, json={"message": "Bad credentials"})])
    with make_client(sleeps) as client, pytest.raises(HttpError) as info:
        client.get_json(fault_server.url + PATH)
    assert info.value.status == 403 and len(sleeps.calls) == 1


def test_rate_limit_that_does_not_recover(fault_server, sleeps):
    fault_server.route("GET", PATH, [fault_server.Reply(status=429)])
    config = HttpConfig(timeout_s=0.2, max_retries=2, backoff_s=0.5)
    with make_client(sleeps, config=config) as client, pytest.raises(RateLimited) as info:
        client.get_json(fault_server.url + PATH)
    assert info.value.reason == "rate_limited" and info.value.status == 429
    assert len(fault_server.calls("GET", PATH)) == config.max_retries + 1


@pytest.mark.parametrize(
    "headers",
    [
        {"Retry-After": "3600"},
        {"x-ratelimit-remaining": "0", "x-ratelimit-reset": str(int(NOW + 3600))},
    ],
)
def test_wait_over_max_wait_raises_rate_limited_without_sleeping(fault_server, sleeps, headers):
    Reply = fault_server.Reply
    fault_server.route("GET", PATH, [Reply(status=429, headers=headers), Reply(json=GOOD)])
    config = HttpConfig(timeout_s=0.2, max_retries=5, max_wait_s=120)
    with make_client(sleeps, config=config) as client, pytest.raises(RateLimited) as info:
        client.get_json(fault_server.url + PATH)
    assert sleeps.calls == []
    assert len(fault_server.calls("GET", PATH)) == 1
    assert "max_wait_s" in str(info.value)


def test_404_is_not_retried(fault_server, sleeps):
    fault_server.route("GET", PATH, [fault_server.Reply(status=404, json={"message": "nope"})])
    with make_client(sleeps) as client, pytest.raises(HttpError) as info:
        client.get_json(fault_server.url + PATH)
    assert info.value.status == 404 and info.value.reason == "http_error"
    assert len(fault_server.calls("GET", PATH)) == 1 and sleeps.calls == []


def test_cache_hit_makes_no_request(fault_server, sleeps, tmp_path):
    fault_server.route("GET", PATH, [fault_server.Reply(json=GOOD)])
    url = fault_server.url + PATH
    throttled: list[int] = []
    cache = RawCache(tmp_path / "raw")
    with make_client(sleeps, cache=cache, throttle=lambda: throttled.append(1)) as client:
        first, r1 = client.get_json(url, {"page": 2, "q": "x"})
        second, r2 = client.get_json(url, {"q": "x", "page": 2})  # same params, other order
        assert first == second == GOOD and not r1.from_cache and r2.from_cache
        assert len(fault_server.calls("GET", PATH)) == 1
        assert client.stats["cache_hits"] == 1 and len(throttled) == 1
        # use_cache=False reads the network again
        _, r3 = client.get_json(url, {"page": 2, "q": "x"}, use_cache=False)
        assert not r3.from_cache and len(fault_server.calls("GET", PATH)) == 2
        # other params are another request
        client.get_json(url, {"page": 3, "q": "x"})
        assert len(fault_server.calls("GET", PATH)) == 3
    # a new client over the same cache directory (a resumed run) reads it too
    with make_client(sleeps, cache=RawCache(tmp_path / "raw")) as client:
        data, response = client.get_json(url, {"page": 2, "q": "x"})
    assert data == GOOD and response.from_cache
    assert len(fault_server.calls("GET", PATH)) == 3


def test_cache_key_canonical_and_without_credentials():
    key = RawCache.key
    assert key("POST", "http://h/q", None, {"a": 1, "b": [2]}) == key(
        "post", "http://h/q", None, {"b": [2], "a": 1}
    )
    assert key("POST", "http://h/q", None, {"a": 1}) != key("POST", "http://h/q", None, {"a": 2})
    assert key("GET", "http://h/q", {"apiKey": "s3cr3t", "x": 1}, None) == key(
        "GET", "http://h/q", {"x": 1}, None
    )
    assert key("GET", "http://h/q?token=abc&x=1", None, None) == key(
        "GET", "http://h/q?x=1", None, None
    )
    assert key("GET", "http://h/q", {"x": 1}, None) != key("GET", "http://h/q", {"x": 2}, None)


def test_secrets_never_in_logs_exceptions_or_cache(fault_server, sleeps, tmp_path, caplog):
    Reply = fault_server.Reply
    secret, api_key = "ghp_SECRETTOKEN123", "NVDKEY987"
    fault_server.route("GET", PATH, [Reply(status=500), Reply(status=429), Reply(status=404)])
    cache = RawCache(tmp_path / "raw")
    client = make_client(
        sleeps, headers={"Authorization": f"Bearer {secret}", "apiKey": api_key}, cache=cache
    )
    caplog.set_level(logging.DEBUG)
    with client, pytest.raises(HttpError) as info:
        client.get_json(fault_server.url + PATH, {"apiKey": api_key, "q": "curl"})
    received = fault_server.calls("GET", PATH)
    assert received[0].headers["authorization"] == f"Bearer {secret}"  # it was sent
    assert received[0].query["apiKey"] == [api_key]
    logged = "\n".join(r.getMessage() for r in caplog.records)
    assert "retry 1/3" in logged and "retry 2/3" in logged  # the retries were logged
    for text in (logged, str(info.value), repr(info.value), info.value.url):
        assert secret not in text and api_key not in text
    assert "apiKey=***" in info.value.url
    assert cache.key("GET", fault_server.url + PATH, {"apiKey": api_key, "q": "curl"}, None) == (
        cache.key("GET", fault_server.url + PATH, {"q": "curl"}, None)
    )


class FakeClock:
    """A monotonic clock that only moves when told or when slept on."""

    def __init__(self) -> None:
        self.now = 100.0
        self.sleeps: list[float] = []

    def __call__(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        self.now += seconds


def test_min_interval_spaces_requests(fault_server):
    fault_server.route("GET", PATH, [fault_server.Reply(json=GOOD)])
    clock = FakeClock()
    config = HttpConfig(timeout_s=0.2)
    with HttpClient(config, min_interval_s=6.0, clock=clock, sleep=clock.sleep) as client:
        client.get_json(fault_server.url + PATH)
        client.get_json(fault_server.url + PATH, {"p": 1})
        clock.now += 2.5
        client.get_json(fault_server.url + PATH, {"p": 2})
        clock.now += 10.0
        client.get_json(fault_server.url + PATH, {"p": 3})
    assert clock.sleeps == [pytest.approx(6.0), pytest.approx(3.5)]
    assert client.stats["wait_s_by_reason"] == {"interval": pytest.approx(9.5)}
    assert len(fault_server.calls("GET", PATH)) == 4


def test_get_bytes_network_local_path_and_file_url(fault_server, sleeps, tmp_path):
    payload = bytes(range(256)) * 4
    fault_server.route("GET", "/all.zip", [fault_server.Reply(body=payload)])
    local = tmp_path / "all.zip"
    local.write_bytes(payload)
    with make_client(sleeps) as client:
        assert client.get_bytes(fault_server.url + "/all.zip") == payload
        assert client.get_bytes(str(local)) == payload
        assert client.get_bytes(local.as_uri()) == payload
    assert client.stats["requests"] == 1


def test_non_loopback_egress_hits_the_dead_proxy(sleeps):
    config = HttpConfig(timeout_s=0.2, max_retries=1)
    with make_client(sleeps, config=config) as client, pytest.raises(HttpError) as info:
        client.get_json("https://api.osv.dev/v1/vulns/OSV-2020-1")
    assert info.value.status is None and info.value.reason == "http_error"
    assert client.stats["retries_by_reason"] == {"connection": 1}
