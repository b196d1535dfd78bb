"""GitHubAdvisoryCollector against a local server answering in the REST /advisories shape."""

from __future__ import annotations

import copy
import json
import logging
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from streamguard_core.collect.github import (
    GitHubAdvisoryCollector,
    fixrefs_from_advisory,
    github_headers,
    next_link,
    resolve_token,
)
from streamguard_core.collect.http import HttpClient, RawCache
from streamguard_core.collect.records import FixRef, SourceReject
from streamguard_core.config import GitHubSourceConfig, HttpConfig

NOW = 1_700_000_000.0
TOKEN = "ghp_Zx8TestTokenNeverLogged0123456789ab"
GHSA_CHARS = "23456789cfghjmpqrvwx"


def ghsa(n: int) -> str:
    """A well-formed GHSA id (its alphabet) derived from ``n``."""
    chars = [GHSA_CHARS[(n * 7 + i * 3) % len(GHSA_CHARS)] for i in range(12)]
    return "GHSA-" + "-".join("".join(chars[i : i + 4]) for i in (0, 4, 8))


def sha(n: int) -> str:
    """A 40-hex commit id derived from ``n``."""
    return f"{n:08x}" * 5


def advisory(n: int, commits: list[str], *, repo: str = "https://github.com/libfoo/libfoo"):
    """One global advisory in the REST shape; ``commits`` are extra reference URLs."""
    gid, cve = ghsa(n), f"CVE-2023-{1000 + n}"
    return {
        "ghsa_id": gid,
        "cve_id": cve,
        "url": f"https://api.github.com/advisories/{gid}",
        "html_url": f"https://github.com/advisories/{gid}",
        "repository_advisory_url": None,
        "summary": f"Heap buffer overflow in libfoo parser {n}",
        "description": "A crafted file triggers an out-of-bounds write.",
        "type": "reviewed",
        "severity": "high",
        "source_code_location": repo,
        "identifiers": [{"value": gid, "type": "GHSA"}, {"value": cve, "type": "CVE"}],
        "references": [
            f"https://nvd.nist.gov/vuln/detail/{cve}",
            *commits,
            f"{repo}/releases/tag/v1.{n}",
            f"https://github.com/advisories/{gid}",
        ],
        "published_at": f"2023-03-{n % 28 + 1:02d}T12:00:00Z",
        "updated_at": "2023-04-01T00:00:00Z",
        "github_reviewed_at": "2023-03-02T00:00:00Z",
        "nvd_published_at": "2023-03-01T00:00:00Z",
        "withdrawn_at": None,
        "vulnerabilities": [
            {
                "package": {"ecosystem": "other", "name": "libfoo"},
                "vulnerable_version_range": f"< 1.{n}",
                "first_patched_version": f"1.{n}",
                "vulnerable_functions": [],
            }
        ],
        "cvss": {"vector_string": "CVSS:3.1/AV:N/AC:L/PR:N/UI:N/S:U/C:H/I:H/A:H", "score": 9.8},
        "cwes": [{"cwe_id": "CWE-787", "name": "Out-of-bounds Write"}],
        "credits": [],
    }


# Three pages of two advisories: 5 fixes (advisory 3 names two commits, 4 names none).
PAGES = [
    [
        advisory(1, [f"https://github.com/libfoo/libfoo/commit/{sha(1)}"]),
        advisory(2, [f"https://github.com/libfoo/libfoo/commit/{sha(2)}.patch"]),
    ],
    [
        advisory(
            3,
            [
                f"https://github.com/libfoo/libfoo/pull/77/commits/{sha(3)}",
                f"https://gitlab.com/bar/libbar/-/commit/{sha(33)}",
            ],
        ),
        advisory(4, []),
    ],
    [
        advisory(5, ["https://github.com/libfoo/libfoo/commit/abc1234"]),
        advisory(6, [f"https://github.com/libfoo/libfoo/commit/{sha(6)}#diff-0a1b2c"]),
    ],
]
CURSORS = ["", "Y3Vyc29yOnYyOpK5MjAyMy0wMy0wMw", "Y3Vyc29yOnYyOpK5MjAyMy0wMy0wNQ"]


class AdvisoryPages:
    """Serves PAGES at /advisories by the ``after`` cursor, with scripted faults per page."""

    def __init__(self, server: Any, pages: list[list[Any]] = PAGES) -> None:
        self.server = server
        self.pages = pages
        self.faults: dict[int, list[Any]] = {}
        server.route("GET", "/advisories", self.answer)

    def link(self, page: int) -> str:
        nxt = f"{self.server.url}/advisories?type=reviewed&per_page=2&after={CURSORS[page + 1]}"
        first = f"{self.server.url}/advisories?type=reviewed&per_page=2"
        return f'<{nxt}>; rel="next", <{first}>; rel="first"'

    def answer(self, request: Any) -> Any:
        page = CURSORS.index(request.query.get("after", [""])[0])
        if self.faults.get(page):
            return self.faults[page].pop(0)
        headers = {"x-ratelimit-remaining": "4999", "x-ratelimit-reset": str(int(NOW) + 3600)}
        if page + 1 < len(self.pages):
            headers["Link"] = self.link(page)
        return self.server.Reply(json=self.pages[page], headers=headers)


def make_client(
    sleeps: Callable[[float], None],
    token: str | None = None,
    cache: RawCache | None = None,
    **http: Any,
) -> HttpClient:
    settings = {"timeout_s": 0.2, "max_retries": 2, "backoff_s": 0.5, "max_wait_s": 120.0}
    return HttpClient(
        HttpConfig(**{**settings, **http}),
        headers=github_headers(token),
        cache=cache,
        sleep=sleeps,
        wall_clock=lambda: NOW,
    )


def make_collector(server: Any, client: HttpClient, **config: Any) -> GitHubAdvisoryCollector:
    return GitHubAdvisoryCollector(
        GitHubSourceConfig(api_url=server.url, per_page=2, **config), client
    )


def drain(collector: GitHubAdvisoryCollector, cursor: dict[str, Any]) -> list[Any]:
    return list(collector.iter_fixes(cursor))


def fixes_of(items: list[Any]) -> list[FixRef]:
    return [i for i in items if isinstance(i, FixRef)]


def rejects_of(items: list[Any]) -> list[SourceReject]:
    return [i for i in items if isinstance(i, SourceReject)]


def test_three_pages_follow_link_headers(fault_server: Any, sleeps: Any) -> None:
    AdvisoryPages(fault_server)
    collector = make_collector(
        fault_server,
        make_client(sleeps),
        cwes=["CWE-787", "cwe-125", "22"],
        published_since="2023-01-01",
    )
    cursor: dict[str, Any] = {}
    items = drain(collector, cursor)

    calls = fault_server.calls("GET", "/advisories")
    assert [c.query.get("after", [""])[0] for c in calls] == CURSORS
    first = calls[0].query
    assert first["type"] == ["reviewed"] and first["per_page"] == ["2"]
    assert first["cwes"] == ["787,125,22"] and first["published"] == [">=2023-01-01"]
    assert calls[0].headers["accept"] == "application/vnd.github+json"
    assert calls[0].headers["x-github-api-version"] == "2022-11-28"
    assert "authorization" not in calls[0].headers
    assert cursor == {"pages": 3, "done": True}

    fixes = fixes_of(items)
    assert [(f.vuln_id, f.repo, f.fix_commit) for f in fixes] == [
        (ghsa(1), "https://github.com/libfoo/libfoo", sha(1)),
        (ghsa(2), "https://github.com/libfoo/libfoo", sha(2)),
        (ghsa(3), "https://github.com/libfoo/libfoo", sha(3)),
        (ghsa(3), "https://gitlab.com/bar/libbar", sha(33)),
        (ghsa(5), "https://github.com/libfoo/libfoo", "abc1234"),
        (ghsa(6), "https://github.com/libfoo/libfoo", sha(6)),
    ]
    first_fix = fixes[0]
    assert first_fix.source == "github" and first_fix.project == "libfoo"
    assert first_fix.aliases == ["CVE-2023-1001"] and first_fix.cwe == ["CWE-787"]
    assert first_fix.url == f"https://github.com/advisories/{ghsa(1)}"
    assert first_fix.published == "2023-03-02T12:00:00Z"
    assert first_fix.fix_is_exact and "short_sha" not in first_fix.meta
    assert fixes[3].project == "libbar"
    assert fixes[4].meta["short_sha"] is True and fixes[4].fix_is_exact
    assert [(r.reason, r.vuln_id) for r in rejects_of(items)] == [("no_fix_commit", ghsa(4))]
    assert sleeps.calls == []


def test_primary_rate_limit_mid_run_waits_for_the_reset(fault_server: Any, sleeps: Any) -> None:
    pages = AdvisoryPages(fault_server)
    reset = {"x-ratelimit-remaining": "0", "x-ratelimit-reset": str(int(NOW) + 30)}
    pages.faults[1] = [
        fault_server.Reply(
            status=403,
            json={"message": "API rate limit exceeded for user ID 1."},
            headers={**reset, "x-ratelimit-limit": "5000"},
        )
    ]
    items = drain(make_collector(fault_server, make_client(sleeps)), {})
    assert len(fixes_of(items)) == 6 and len(rejects_of(items)) == 1
    assert sleeps.calls == [pytest.approx(31.0)]  # until the reset, plus the margin
    assert len(fault_server.calls("GET", "/advisories")) == 4


def test_secondary_rate_limit_honours_retry_after(fault_server: Any, sleeps: Any) -> None:
    pages = AdvisoryPages(fault_server)
    pages.faults[2] = [
        fault_server.Reply(
            status=403,
            json={"message": "You have exceeded a secondary rate limit."},
            headers={"retry-after": "60"},
        )
    ]
    items = drain(make_collector(fault_server, make_client(sleeps)), {})
    assert len(fixes_of(items)) == 6
    assert sleeps.calls == [60.0]


def test_rate_limit_that_does_not_recover_stops_with_the_cursor_kept(
    fault_server: Any, sleeps: Any
) -> None:
    pages = AdvisoryPages(fault_server)
    limited = fault_server.Reply(
        status=403,
        json={"message": "API rate limit exceeded"},
        headers={"x-ratelimit-remaining": "0", "x-ratelimit-reset": str(int(NOW) + 3000)},
    )
    pages.faults[1] = [limited]
    collector = make_collector(fault_server, make_client(sleeps))
    cursor: dict[str, Any] = {}
    items = drain(collector, cursor)

    assert [f.vuln_id for f in fixes_of(items)] == [ghsa(1), ghsa(2)]
    assert rejects_of(items)[-1].reason == "rate_limited"
    assert not cursor.get("done") and cursor["pages"] == 1
    assert cursor["next_url"].endswith(f"after={CURSORS[1]}")
    assert sleeps.calls == []  # a 3000 s reset is over max_wait_s: no wait at all

    # The next run resumes at page 2 and finishes.
    resumed = drain(collector, cursor)
    assert [c.query.get("after", [""])[0] for c in fault_server.calls("GET", "/advisories")] == [
        "",
        CURSORS[1],
        CURSORS[1],
        CURSORS[2],
    ]
    assert cursor["done"] is True
    assert len(fixes_of(items) + fixes_of(resumed)) == 6


def test_truncated_page_is_retried(fault_server: Any, sleeps: Any) -> None:
    pages = AdvisoryPages(fault_server)
    pages.faults[1] = [fault_server.Reply(json=PAGES[1], truncate=True)]
    items = drain(make_collector(fault_server, make_client(sleeps)), {})
    assert len(fixes_of(items)) == 6
    assert len(sleeps.calls) == 1


def test_page_that_stays_truncated_is_a_reject_and_keeps_the_cursor(
    fault_server: Any, sleeps: Any
) -> None:
    pages = AdvisoryPages(fault_server)
    pages.faults[2] = [fault_server.Reply(json=PAGES[2], truncate=True)] * 3
    cursor: dict[str, Any] = {}
    items = drain(make_collector(fault_server, make_client(sleeps)), cursor)
    assert len(fixes_of(items)) == 4
    assert rejects_of(items)[-1].reason == "malformed_json"
    assert cursor["next_url"].endswith(f"after={CURSORS[2]}") and not cursor.get("done")


def test_resume_after_interruption_equals_an_uninterrupted_run(
    fault_server: Any, sleeps: Any
) -> None:
    AdvisoryPages(fault_server)
    full = drain(make_collector(fault_server, make_client(sleeps)), {})

    # A driver that saves the cursor after every item, killed after the 4th item.
    collector = make_collector(fault_server, make_client(sleeps))
    cursor: dict[str, Any] = {}
    saved: dict[str, Any] = {}
    first_run: list[Any] = []
    for item in collector.iter_fixes(cursor):
        first_run.append(item)
        saved = json.loads(json.dumps(cursor))
        if len(first_run) == 4:
            break
    second_run = drain(collector, copy.deepcopy(saved))

    def key(item: Any) -> str:
        return item.key if isinstance(item, FixRef) else f"reject:{item.vuln_id}:{item.reason}"

    union: dict[str, Any] = {}
    for item in first_run + second_run:
        union.setdefault(key(item), item)
    assert list(union) == [key(i) for i in full]
    # Only the page being read when the run stopped is read again.
    assert len(first_run) + len(second_run) - len(union) <= 3


def test_token_is_sent_as_bearer_and_never_logged(
    fault_server: Any, sleeps: Any, caplog: pytest.LogCaptureFixture, tmp_path: Path
) -> None:
    caplog.set_level(logging.DEBUG)
    pages = AdvisoryPages(fault_server)
    pages.faults[1] = [fault_server.Reply(status=502, json={"message": "Server Error"})]
    pages.faults[2] = [fault_server.Reply(status=404, json={"message": "Not Found"})]
    client = make_client(sleeps, token=TOKEN, cache=RawCache(tmp_path / "raw"))
    items = drain(make_collector(fault_server, client), {})

    sent = {c.headers.get("authorization") for c in fault_server.calls("GET", "/advisories")}
    assert sent == {f"Bearer {TOKEN}"}
    assert "retry" in caplog.text and "github: stopping" in caplog.text
    assert TOKEN not in caplog.text
    assert rejects_of(items)[-1].reason == "http_error"
    assert all(TOKEN not in str(r) and TOKEN not in (r.where or "") for r in rejects_of(items))
    stored = b"".join(p.read_bytes() for p in (tmp_path / "raw").iterdir())
    assert TOKEN.encode() not in stored
    assert all(TOKEN not in p.name for p in (tmp_path / "raw").iterdir())


def test_resolve_token_prefers_the_secret_block(monkeypatch: pytest.MonkeyPatch) -> None:
    config = GitHubSourceConfig(token_env="SG_TEST_GH_TOKEN")
    monkeypatch.delenv("SG_TEST_GH_TOKEN", raising=False)
    assert resolve_token(config) is None
    assert "Authorization" not in github_headers(resolve_token(config))
    monkeypatch.setenv("SG_TEST_GH_TOKEN", " from-env \n")
    assert resolve_token(config) == "from-env"
    assert resolve_token(config, "from-secret") == "from-secret"
    assert resolve_token(config, "   ") == "from-env"
    assert github_headers("t")["Authorization"] == "Bearer t"


def test_raw_cache_keeps_every_page_and_pagination_still_works(
    fault_server: Any, sleeps: Any, tmp_path: Path
) -> None:
    AdvisoryPages(fault_server)
    cache = RawCache(tmp_path / "raw")
    first = drain(make_collector(fault_server, make_client(sleeps, cache=cache)), {})
    bodies = sorted(p.read_bytes() for p in (tmp_path / "raw").iterdir() if not p.suffix)
    assert bodies == sorted(json.dumps(page).encode() for page in PAGES)

    # A fresh run through the same cache: the Link headers were cached with the bodies, so
    # only the last page (no next link: new advisories may have arrived) is fetched again.
    client = make_client(sleeps, cache=cache)
    again = drain(make_collector(fault_server, client), {})
    assert [i.to_dict() for i in again] == [i.to_dict() for i in first]
    assert client.stats["cache_hits"] == 3 and client.stats["requests"] == 1


def test_timeout_becomes_a_reject(fault_server: Any, sleeps: Any) -> None:
    pages = AdvisoryPages(fault_server)
    pages.faults[0] = [fault_server.Reply(json=PAGES[0], delay_s=5.0)] * 2
    cursor: dict[str, Any] = {}
    items = drain(make_collector(fault_server, make_client(sleeps, max_retries=1)), cursor)
    assert [r.reason for r in rejects_of(items)] == ["timeout"]
    assert fixes_of(items) == [] and cursor == {}


def test_error_object_instead_of_a_list_stops_the_run(fault_server: Any, sleeps: Any) -> None:
    fault_server.route(
        "GET", "/advisories", [fault_server.Reply(json={"message": "Bad credentials"})]
    )
    cursor: dict[str, Any] = {}
    items = drain(make_collector(fault_server, make_client(sleeps)), cursor)
    assert [r.reason for r in rejects_of(items)] == ["malformed_json"]
    assert cursor == {}


def test_malformed_advisories_are_rejects_and_the_rest_is_kept(
    fault_server: Any, sleeps: Any
) -> None:
    good = advisory(8, [f"https://github.com/libfoo/libfoo/commit/{sha(8)}"])
    no_id = {**advisory(9, [f"https://github.com/x/y/commit/{sha(9)}"]), "ghsa_id": None}
    bad_refs = {**advisory(10, []), "references": "https://github.com/x/y/commit/abcdef0"}
    bad_cwes = {**advisory(11, []), "cwes": ["CWE-79"]}
    withdrawn = {
        **advisory(12, [f"https://github.com/x/y/commit/{sha(12)}"]),
        "withdrawn_at": "2023-05-01T00:00:00Z",
    }
    page = [good, "GHSA-not-an-object", no_id, bad_refs, bad_cwes, withdrawn]
    AdvisoryPages(fault_server, pages=[page])
    cursor: dict[str, Any] = {}
    items = drain(make_collector(fault_server, make_client(sleeps)), cursor)

    assert [f.vuln_id for f in fixes_of(items)] == [ghsa(8)]
    rejects = rejects_of(items)
    assert [(r.reason, r.vuln_id) for r in rejects] == [
        ("invalid_record", None),
        ("invalid_record", None),
        ("invalid_record", ghsa(10)),
        ("invalid_record", ghsa(11)),
        ("invalid_record", ghsa(12)),
    ]
    assert rejects[0].where is not None and rejects[0].where.endswith("[1]")
    assert cursor == {"pages": 1, "done": True}


def test_reference_objects_and_duplicate_commit_urls() -> None:
    item = advisory(13, [])
    item["references"] = [
        {"url": f"https://github.com/libfoo/libfoo/commit/{sha(13)}"},
        f"https://github.com/libfoo/libfoo/commit/{sha(13)}.patch",
        f"https://github.com/libfoo/libfoo/commit/{sha(13)[:9]}",
    ]
    fixes = fixrefs_from_advisory(item)
    assert isinstance(fixes, list)
    assert [(f.repo, f.fix_commit) for f in fixes] == [
        ("https://github.com/libfoo/libfoo", sha(13))
    ]
    assert fixes[0].meta["packages"] == ["other:libfoo"]


def test_next_link_parses_the_link_header() -> None:
    header = (
        '<https://api.github.com/advisories?per_page=100&before=X>; rel="prev", '
        '<https://api.github.com/advisories?per_page=100&after=Y3Vy>; rel="next"'
    )
    assert (
        next_link({"link": header}) == "https://api.github.com/advisories?per_page=100&after=Y3Vy"
    )
    assert next_link({"link": header.split(", ")[0]}) is None
    assert next_link({}) is None


def test_published_range_passes_through(fault_server: Any, sleeps: Any) -> None:
    collector = make_collector(
        fault_server, make_client(sleeps), published_since="2023-01-01..2023-06-30"
    )
    assert collector.first_page()[1]["published"] == "2023-01-01..2023-06-30"
    assert "cwes" not in collector.first_page()[1]
