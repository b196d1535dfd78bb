"""NVDCollector against a local server answering in the CVE API 2.0 shape."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import pytest

from streamguard_core.collect.http import HttpClient, RawCache
from streamguard_core.collect.nvd import (
    NVDCollector,
    date_windows,
    fixrefs_from_cve,
    nvd_headers,
    request_interval,
    resolve_api_key,
)
from streamguard_core.collect.records import FixRef, SourceReject
from streamguard_core.config import HttpConfig, NVDSourceConfig

API_KEY = "0f1e2d3c-4b5a-6978-8796-a5b4c3d2e1f0"
PATH = "/rest/json/cves/2.0"


def sha(n: int) -> str:
    return f"{n:08x}" * 5


def cve(n: int, references: list[dict[str, Any]], *, cwe: str = "CWE-787") -> dict[str, Any]:
    """One ``vulnerabilities[]`` element in the API 2.0 shape."""
    return {
        "cve": {
            "id": f"CVE-2022-{2000 + n}",
            "sourceIdentifier": "cve@mitre.org",
            "published": f"2022-02-{n % 28 + 1:02d}T15:15:08.123",
            "lastModified": "2022-03-01T10:00:00.000",
            "vulnStatus": "Analyzed",
            "descriptions": [{"lang": "en", "value": f"Heap overflow {n} in libbaz."}],
            "metrics": {
                "cvssMetricV31": [
                    {
                        "source": "nvd@nist.gov",
                        "type": "Primary",
                        "cvssData": {"version": "3.1", "baseScore": 7.8},
                    }
                ]
            },
            "weaknesses": [
                {
                    "source": "nvd@nist.gov",
                    "type": "Primary",
                    "description": [{"lang": "en", "value": cwe}],
                }
            ],
            "configurations": [],
            "references": references,
        }
    }


def ref(url: str, *tags: str) -> dict[str, Any]:
    return {"url": url, "source": "cve@mitre.org", "tags": list(tags)}


def commit_cve(n: int) -> dict[str, Any]:
    return cve(
        n,
        [
            ref(f"https://bugs.example.org/show_bug.cgi?id={n}", "Issue Tracking"),
            ref(
                f"https://github.com/libbaz/libbaz/commit/{sha(n)}", "Patch", "Third Party Advisory"
            ),
        ],
    )


ITEMS = [commit_cve(n) for n in range(5)]


def serve(server: Any, items: list[Any], faults: dict[int, list[Any]] | None = None) -> None:
    """Answer by ``startIndex``/``resultsPerPage`` like NVD, with scripted faults per index."""
    faults = faults if faults is not None else {}

    def answer(request: Any) -> Any:
        start = int(request.query["startIndex"][0])
        per_page = int(request.query["resultsPerPage"][0])
        if faults.get(start):
            return faults[start].pop(0)
        page = items[start : start + per_page]
        return server.Reply(
            json={
                "resultsPerPage": len(page),
                "startIndex": start,
                "totalResults": len(items),
                "format": "NVD_CVE",
                "version": "2.0",
                "timestamp": "2024-01-01T00:00:00.000",
                "vulnerabilities": page,
            }
        )

    server.route("GET", PATH, answer)


class FakeTime:
    """A monotonic clock that only moves when slept on (records the waits)."""

    def __init__(self) -> None:
        self.now = 1000.0
        self.calls: list[float] = []

    def clock(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.calls.append(seconds)
        self.now += seconds


def make(
    server: Any,
    time: FakeTime,
    *,
    api_key: str | None = None,
    cache: RawCache | None = None,
    **config: Any,
) -> tuple[NVDCollector, HttpClient]:
    settings = NVDSourceConfig(api_url=server.url + PATH, results_per_page=2, **config)
    client = HttpClient(
        HttpConfig(timeout_s=0.2, max_retries=2, backoff_s=0.5),
        headers=nvd_headers(api_key),
        cache=cache,
        min_interval_s=request_interval(settings, api_key is not None),
        sleep=time.sleep,
        clock=time.clock,
    )
    return NVDCollector(settings, client), client


def fixes_of(items: list[Any]) -> list[FixRef]:
    return [i for i in items if isinstance(i, FixRef)]


def rejects_of(items: list[Any]) -> list[SourceReject]:
    return [i for i in items if isinstance(i, SourceReject)]


def test_pages_by_start_index_until_total_results(fault_server: Any) -> None:
    serve(fault_server, ITEMS)
    time = FakeTime()
    collector, _ = make(fault_server, time, keyword="libbaz", cwe="CWE-787")
    cursor: dict[str, Any] = {}
    items = list(collector.iter_fixes(cursor))

    calls = fault_server.calls("GET", PATH)
    assert [c.query["startIndex"] for c in calls] == [["0"], ["2"], ["4"]]
    assert calls[0].query["resultsPerPage"] == ["2"]
    assert calls[0].query["keywordSearch"] == ["libbaz"] and calls[0].query["cweId"] == ["CWE-787"]
    assert "pubStartDate" not in calls[0].query
    assert cursor == {"window": 1, "start_index": 0, "total_results": 5, "done": True}
    fixes = fixes_of(items)
    assert [f.vuln_id for f in fixes] == [f"CVE-2022-{2000 + n}" for n in range(5)]
    first = fixes[0]
    assert (first.source, first.repo, first.fix_commit, first.project) == (
        "nvd",
        "https://github.com/libbaz/libbaz",
        sha(0),
        "libbaz",
    )
    assert first.cwe == ["CWE-787"] and first.published == "2022-02-01T15:15:08.123"
    assert first.url == "https://nvd.nist.gov/vuln/detail/CVE-2022-2000"
    assert first.meta == {"patch_reference": True}


def test_public_rate_limit_spaces_requests_six_seconds(fault_server: Any) -> None:
    serve(fault_server, ITEMS)
    time = FakeTime()
    collector, _ = make(fault_server, time)
    list(collector.iter_fixes({}))
    assert time.calls == [6.0, 6.0]
    assert "apikey" not in fault_server.calls("GET", PATH)[0].headers


def test_api_key_is_sent_in_its_header_with_the_faster_interval(
    fault_server: Any, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    serve(fault_server, ITEMS, faults={2: [fault_server.Reply(status=500)]})
    time = FakeTime()
    collector, _ = make(fault_server, time, api_key=API_KEY)
    items = list(collector.iter_fixes({}))

    assert len(fixes_of(items)) == 5
    assert {c.headers["apikey"] for c in fault_server.calls("GET", PATH)} == {API_KEY}
    # 0.6 s between requests, unless a longer backoff already spaced them
    assert time.calls[0] == pytest.approx(0.6)
    assert "retry" in caplog.text and API_KEY not in caplog.text


def test_interval_from_the_config_and_the_documented_limits() -> None:
    assert request_interval(NVDSourceConfig(), has_key=False) == pytest.approx(6.0)
    assert request_interval(NVDSourceConfig(), has_key=True) == pytest.approx(0.6)
    assert request_interval(NVDSourceConfig(request_interval_s=1.5), has_key=False) == 1.5


def test_resolve_api_key_prefers_the_secret_block(monkeypatch: pytest.MonkeyPatch) -> None:
    config = NVDSourceConfig(api_key_env="SG_TEST_NVD_KEY")
    monkeypatch.delenv("SG_TEST_NVD_KEY", raising=False)
    assert resolve_api_key(config) is None and nvd_headers(None) == {}
    monkeypatch.setenv("SG_TEST_NVD_KEY", "env-key")
    assert resolve_api_key(config) == "env-key"
    assert resolve_api_key(config, "secret-key") == "secret-key"
    assert nvd_headers("k") == {"apiKey": "k"}


def test_503_then_success(fault_server: Any) -> None:
    unavailable = fault_server.Reply(status=503, body=b"<html>Service Unavailable</html>")
    serve(fault_server, ITEMS, faults={0: [unavailable]})
    time = FakeTime()
    collector, client = make(fault_server, time, request_interval_s=0.0)
    items = list(collector.iter_fixes({}))
    assert len(fixes_of(items)) == 5 and rejects_of(items) == []
    assert len(time.calls) == 1 and 0.25 <= time.calls[0] <= 0.5  # one jittered backoff
    assert client.stats["retries_by_reason"] == {"server_error": 1}


def test_malformed_cve_items_are_rejects_and_the_rest_is_kept(fault_server: Any) -> None:
    broken_refs = cve(7, [])
    broken_refs["cve"]["references"] = "https://github.com/libbaz/libbaz/commit/" + sha(7)
    broken_weakness = commit_cve(8)
    broken_weakness["cve"]["weaknesses"] = [{"description": "CWE-79"}]
    items_served = [
        ITEMS[0],
        {"cve": {"id": 2022}},
        {"item": "not a cve"},
        broken_refs,
        broken_weakness,
        ITEMS[1],
    ]
    serve(fault_server, items_served)
    cursor: dict[str, Any] = {}
    items = list(make(fault_server, FakeTime(), request_interval_s=0.0)[0].iter_fixes(cursor))
    assert [f.vuln_id for f in fixes_of(items)] == ["CVE-2022-2000", "CVE-2022-2001"]
    assert [(r.reason, r.vuln_id) for r in rejects_of(items)] == [
        ("invalid_record", None),
        ("invalid_record", None),
        ("invalid_record", "CVE-2022-2007"),
        ("invalid_record", "CVE-2022-2008"),
    ]
    assert rejects_of(items)[0].where is not None
    assert "startIndex=0" in rejects_of(items)[0].where
    assert cursor["done"] is True


def test_patch_references_first_and_noise_filtered() -> None:
    item = cve(
        9,
        [
            ref(f"https://gitlab.com/baz/tools/-/commit/{sha(90)}", "Third Party Advisory"),
            ref("https://github.com/libbaz/libbaz/releases/tag/v2.0", "Release Notes"),
            ref(f"https://github.com/libbaz/libbaz/commit/{sha(9)}", "Patch"),
            ref("https://github.com/libbaz/libbaz/commit/deadbee"),
        ],
        cwe="NVD-CWE-Other",
    )
    item["cve"]["weaknesses"].append(
        {"source": "cve@mitre.org", "type": "Secondary", "description": [
            {"lang": "en", "value": "CWE-125"}, {"lang": "en", "value": "NVD-CWE-noinfo"}
        ]}
    )  # fmt: skip
    fixes = fixrefs_from_cve(item)
    assert isinstance(fixes, list)
    assert [(f.project, f.fix_commit, f.meta) for f in fixes] == [
        ("libbaz", sha(9), {"patch_reference": True}),
        ("tools", sha(90), {"patch_reference": False}),
        ("libbaz", "deadbee", {"patch_reference": False, "short_sha": True}),
    ]
    assert fixes[0].cwe == ["CWE-125"]


def test_no_commit_and_rejected_cves_are_rejects() -> None:
    no_commit = fixrefs_from_cve(cve(10, [ref("https://www.openwall.com/lists/oss-security/1")]))
    assert isinstance(no_commit, SourceReject) and no_commit.reason == "no_fix_commit"
    assert no_commit.vuln_id == "CVE-2022-2010"
    rejected = commit_cve(11)
    rejected["cve"]["vulnStatus"] = "Rejected"
    result = fixrefs_from_cve(rejected)
    assert isinstance(result, SourceReject) and result.reason == "invalid_record"


def test_published_range_is_cut_into_120_day_windows(fault_server: Any) -> None:
    serve(fault_server, ITEMS[:3])
    collector, _ = make(
        fault_server,
        FakeTime(),
        request_interval_s=0.0,
        pub_start="2023-01-01",
        pub_end="2023-08-28",
    )
    cursor: dict[str, Any] = {}
    items = list(collector.iter_fixes(cursor))
    seen = [
        (c.query["pubStartDate"][0], c.query["pubEndDate"][0], c.query["startIndex"][0])
        for c in fault_server.calls("GET", PATH)
    ]
    assert seen == [
        ("2023-01-01T00:00:00.000", "2023-05-01T00:00:00.000", "0"),
        ("2023-01-01T00:00:00.000", "2023-05-01T00:00:00.000", "2"),
        ("2023-05-01T00:00:00.001", "2023-08-28T23:59:59.999", "0"),
        ("2023-05-01T00:00:00.001", "2023-08-28T23:59:59.999", "2"),
    ]
    assert len(fixes_of(items)) == 6 and cursor["window"] == 2 and cursor["done"] is True


def test_date_windows_checks_its_bounds() -> None:
    assert date_windows(None, None) == [None]
    assert date_windows("2023-01-01T10:00:00Z", "2023-01-02T00:00:00+02:00") == [
        ("2023-01-01T10:00:00.000", "2023-01-01T22:00:00.000")
    ]
    with pytest.raises(ValueError, match="both"):
        date_windows("2023-01-01", None)
    with pytest.raises(ValueError, match="before"):
        date_windows("2023-02-01", "2023-01-01")
    with pytest.raises(ValueError):
        date_windows("yesterday", "2023-01-01")


def test_page_that_stays_truncated_keeps_the_cursor_and_resumes(fault_server: Any) -> None:
    truncated = fault_server.Reply(json={"totalResults": 5, "vulnerabilities": []}, truncate=True)
    faults = {2: [truncated] * 3}
    serve(fault_server, ITEMS, faults=faults)
    collector, _ = make(fault_server, FakeTime(), request_interval_s=0.0)
    cursor: dict[str, Any] = {}
    first = list(collector.iter_fixes(cursor))
    assert len(fixes_of(first)) == 2 and rejects_of(first)[-1].reason == "malformed_json"
    assert cursor == {"start_index": 2, "total_results": 5}

    second = list(collector.iter_fixes(cursor))
    assert [f.vuln_id for f in fixes_of(first + second)] == [
        f"CVE-2022-{2000 + n}" for n in range(5)
    ]
    assert cursor["done"] is True


def test_page_without_total_results_stops_the_run(fault_server: Any) -> None:
    fault_server.route("GET", PATH, [fault_server.Reply(json={"message": "Invalid apiKey"})])
    cursor: dict[str, Any] = {}
    items = list(make(fault_server, FakeTime(), request_interval_s=0.0)[0].iter_fixes(cursor))
    assert [r.reason for r in rejects_of(items)] == ["malformed_json"] and cursor == {}


def test_http_error_stops_the_run(fault_server: Any) -> None:
    serve(fault_server, ITEMS, faults={2: [fault_server.Reply(status=404, body=b"")]})
    cursor: dict[str, Any] = {}
    items = list(make(fault_server, FakeTime(), request_interval_s=0.0)[0].iter_fixes(cursor))
    assert len(fixes_of(items)) == 2
    assert rejects_of(items)[-1].reason == "http_error" and cursor["start_index"] == 2


def test_raw_cache_serves_a_second_run(fault_server: Any, tmp_path: Path) -> None:
    serve(fault_server, ITEMS)
    cache = RawCache(tmp_path / "raw")
    first = list(make(fault_server, FakeTime(), cache=cache)[0].iter_fixes({}))
    time = FakeTime()
    collector, client = make(fault_server, time, cache=cache)
    again = list(collector.iter_fixes({}))
    assert [i.to_dict() for i in again] == [i.to_dict() for i in first]
    assert client.stats["requests"] == 0 and client.stats["cache_hits"] == 3
    assert time.calls == []  # cache hits are not paced
    assert len(fault_server.calls("GET", PATH)) == 3
