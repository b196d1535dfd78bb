"""OSVCollector against a local server serving OSV's real shapes, with faults; fixrefs_from_osv
on every shared OSV record, checked against counts computed here and against ossfuzz_fixes."""

from __future__ import annotations

import copy
import gzip
import io
import json
import zipfile
from collections import Counter
from pathlib import Path
from typing import Any

import pytest

from streamguard_core.collect.http import HttpClient, RawCache
from streamguard_core.collect.osv import OSVCollector, fixrefs_from_osv, parse_crash
from streamguard_core.collect.records import FixRef, SourceReject
from streamguard_core.config import HttpConfig, OSVSourceConfig

SHARED = Path(__file__).resolve().parents[3].parent / "shared" / "data"
RECORDS_FILE = SHARED / "osv_ossfuzz_records.jsonl.gz"
FIXES_FILE = SHARED / "ossfuzz_fixes.jsonl.gz"
SAMPLE_PROJECTS = ("curl", "lcms", "libarchive", "matio")


def make_record(
    vuln_id: str,
    project: str,
    fixes: list[str],
    *,
    repo: str | None = None,
    fenced: bool = True,
    **extra: Any,
) -> dict[str, Any]:
    """A record in the OSS-Fuzz OSV shape (as the API and the export serve it)."""
    block = "Crash type: Heap-buffer-overflow READ 4\nCrash state:\nparse_a\nparse_b\n"
    details = "OSS-Fuzz report: https://bugs.chromium.org/p/oss-fuzz/issues/detail?id=1\n\n"
    details += f"```\n{block}```\n" if fenced else block
    events = [{"introduced": "0" * 40}] + [{"fixed": sha} for sha in fixes]
    return {
        "id": vuln_id,
        "summary": f"Heap-buffer-overflow in {project}",
        "details": details,
        "modified": "2024-01-01T00:00:00Z",
        "published": "2023-05-01T00:00:00Z",
        "affected": [
            {
                "package": {"name": project, "ecosystem": "OSS-Fuzz"},
                "ranges": [
                    {
                        "type": "GIT",
                        "repo": repo or f"https://github.com/example/{project}",
                        "events": events,
                    }
                ],
                "ecosystem_specific": {"severity": "HIGH"},
            }
        ],
        **extra,
    }


HANDMADE = [
    make_record("OSV-2023-1", "alpha", ["a" * 40]),
    make_record("OSV-2023-2", "alpha", ["b" * 40, "c" * 40], fenced=False),
    make_record("OSV-2023-3", "alpha", []),  # no fix commit
    make_record("OSV-2023-4", "beta", ["d" * 40]),
    make_record("OSV-2023-5", "beta", ["e" * 40], withdrawn="2024-02-01T00:00:00Z"),
    make_record("OSV-2023-6", "gamma", ["f" * 40]),
    make_record("OSV-2023-7", "gamma", ["1" * 40, "2" * 40, "3" * 40]),
    make_record("OSV-2023-8", "gamma", ["4" * 40]),
]


def load_real_records() -> list[dict[str, Any]]:
    """Every shared OSV record (skips when the data is absent)."""
    if not RECORDS_FILE.exists():
        pytest.skip(f"real data not present at {RECORDS_FILE} (see ../shared/data/README.md)")
    with gzip.open(RECORDS_FILE, "rt", encoding="utf-8") as handle:
        return [json.loads(line) for line in handle]


@pytest.fixture(params=["real", "handmade"])
def sample_records(request) -> list[dict[str, Any]]:
    """Real records of a few projects (incl. the withdrawn one and one without ranges), or
    hand-made ones of the same shape."""
    if request.param == "handmade":
        return copy.deepcopy(HANDMADE)
    return [
        r for r in load_real_records() if r["affected"][0]["package"]["name"] in SAMPLE_PROJECTS
    ]


def project_of(record: dict[str, Any]) -> str:
    return record["affected"][0]["package"]["name"]


def identity(item: FixRef | SourceReject) -> tuple:
    """What a driver deduplicates on."""
    if isinstance(item, FixRef):
        return ("ref", item.key)
    return ("reject", item.reason, item.vuln_id, item.where)


def expected_items(records: list[dict[str, Any]], where: Any) -> set[tuple]:
    """Refs and rejects of ``records`` read one by one (``where(record)`` names the place)."""
    out: set[tuple] = set()
    for record in records:
        refs, rejects = fixrefs_from_osv(record, "osv", where(record))
        out.update(identity(x) for x in [*refs, *rejects])
    return out


def drive(
    collector: OSVCollector, cursor: dict[str, Any], stop_after: int | None = None
) -> tuple[list[FixRef | SourceReject], dict[str, Any]]:
    """Iterate like the collect driver: save (a JSON copy of) the cursor after every item."""
    items: list[FixRef | SourceReject] = []
    saved = json.loads(json.dumps(cursor))
    for item in collector.iter_fixes(cursor):
        items.append(item)
        saved = json.loads(json.dumps(cursor))
        if stop_after is not None and len(items) >= stop_after:
            break
    else:  # ran to the end: the cursor's last update (done) is saved too
        saved = json.loads(json.dumps(cursor))
    return items, saved


def place(item: FixRef | SourceReject) -> str | None:
    """The page (zip member or record URL) an item was read from."""
    return item.url if isinstance(item, FixRef) else item.where


def stop_points(full: list[FixRef | SourceReject]) -> list[int]:
    """Where to interrupt: early, middle, late, and inside a page that yields several items."""
    inside = [i for i in range(1, len(full)) if place(full[i - 1]) == place(full[i])]
    assert inside, "the sample needs a page with several items"
    return sorted({1, len(full) // 2, len(full) - 1, inside[0], inside[-1]})


def client_for(sleeps, **kwargs) -> HttpClient:
    config = kwargs.pop("config", None) or HttpConfig(timeout_s=0.2, max_retries=3)
    return HttpClient(config, sleep=sleeps, **kwargs)


# --------------------------------------------------------------------------- fixrefs_from_osv


def test_fixrefs_one_per_fixed_event_with_osv_fields():
    record = make_record(
        "OSV-2023-9",
        "alpha",
        ["a" * 40, "b" * 40, "a" * 40],  # a repeated fixed commit counts once
        aliases=["CVE-2023-1"],
        database_specific={"cwe_ids": ["CWE-787"]},
    )
    record["affected"][0]["ranges"].append(
        {"type": "ECOSYSTEM", "events": [{"introduced": "0"}, {"fixed": "1.2.3"}]}
    )
    record["affected"][0]["ecosystem_specific"]["fixed_range"] = f"{'9' * 40}:{'a' * 40}"
    refs, rejects = fixrefs_from_osv(record, "osv", "here.json")
    assert rejects == []
    assert [r.fix_commit for r in refs] == ["a" * 40, "b" * 40]
    ref = refs[0]
    assert ref.repo == "https://github.com/example/alpha" and ref.project == "alpha"
    assert ref.vuln_id == "OSV-2023-9" and ref.source == "osv" and ref.url == "here.json"
    assert ref.aliases == ["CVE-2023-1"] and ref.cwe == ["CWE-787"]
    assert ref.crash_type == "Heap-buffer-overflow READ 4"
    assert ref.crash_state == ["parse_a", "parse_b"]
    assert ref.fix_is_exact is False
    assert ref.published == "2023-05-01T00:00:00Z"
    assert ref.meta["modified"] == "2024-01-01T00:00:00Z"


def test_crash_state_ends_at_blank_line_or_fence():
    fenced = "x\n\n```\nCrash type: UNKNOWN READ\nCrash state:\nf\ng\nh.c\n```\n"
    plain = "x\n\nCrash type: Segv on unknown address\nCrash state:\nf\ng\n\nmore text\n"
    assert parse_crash(fenced) == ("UNKNOWN READ", ["f", "g", "h.c"])
    assert parse_crash(plain) == ("Segv on unknown address", ["f", "g"])
    assert parse_crash("no crash here") == (None, [])
    assert parse_crash(None) == (None, [])


@pytest.mark.parametrize(
    ("mutate", "reason"),
    [
        (lambda r: r.update(withdrawn="2024-01-01T00:00:00Z"), "invalid_record"),
        (lambda r: r.update(id=17), "invalid_record"),
        (lambda r: r.update(affected={"package": {}}), "invalid_record"),
        (lambda r: r["affected"][0]["ranges"][0].update(events="fixed"), "invalid_record"),
        (lambda r: r["affected"][0]["ranges"][0].pop("repo"), "invalid_record"),
        (lambda r: r["affected"][0]["ranges"][0]["events"].append({"fixed": 3}), "invalid_record"),
        (lambda r: r["affected"][0]["ranges"][0].update(type="SEMVER"), "no_fix_commit"),
        (lambda r: r["affected"][0].pop("ranges"), "no_fix_commit"),
        (lambda r: r.pop("affected"), "no_fix_commit"),
    ],
)
def test_bad_records_give_one_reject(mutate, reason):
    record = make_record("OSV-2023-10", "alpha", ["a" * 40])
    mutate(record)
    refs, rejects = fixrefs_from_osv(record, "osv", "w")
    assert refs == []
    assert [r.reason for r in rejects] == [reason]
    assert rejects[0].source == "osv" and rejects[0].where == "w"


def test_non_object_record_is_invalid():
    refs, rejects = fixrefs_from_osv(["not", "a", "record"], "file", "f:3")  # type: ignore[arg-type]
    assert refs == [] and rejects[0].reason == "invalid_record" and rejects[0].vuln_id is None


def test_fixrefs_on_every_shared_record():
    records = load_real_records()
    want_refs = 0
    want_rejects: Counter[str] = Counter()
    for record in records:  # counted directly from the raw JSON
        if record.get("withdrawn"):
            want_rejects["invalid_record"] += 1
            continue
        fixed = {
            (rng["repo"], event["fixed"])
            for entry in record.get("affected", [])
            for rng in entry.get("ranges", [])
            if rng.get("type") == "GIT"
            for event in rng.get("events", [])
            if "fixed" in event
        }
        if fixed:
            want_refs += len(fixed)
        else:
            want_rejects["no_fix_commit"] += 1
    got_refs: list[FixRef] = []
    got_rejects: Counter[str] = Counter()
    for line, record in enumerate(records, 1):
        refs, rejects = fixrefs_from_osv(record, "file", f"records:{line}")
        assert bool(refs) != bool(rejects)  # a record gives refs or exactly one reason
        got_refs.extend(refs)
        got_rejects.update(r.reason for r in rejects)
    assert len(got_refs) == want_refs and got_rejects == want_rejects
    assert len({r.key for r in got_refs}) == len(got_refs)

    # crash type and fix_is_exact agree with what the shared functions file says per record
    if not FIXES_FILE.exists():
        return
    by_id: dict[str, list[FixRef]] = {}
    for ref in got_refs:
        by_id.setdefault(ref.vuln_id, []).append(ref)
    checked = 0
    with gzip.open(FIXES_FILE, "rt", encoding="utf-8") as handle:
        for line in handle:
            row = json.loads(line)
            refs = by_id[row["osv_id"]]
            assert row["fix_commit"] in {r.fix_commit for r in refs}
            assert refs[0].crash_type == row["crash_type"]
            assert refs[0].fix_is_exact == row["fix_is_exact"]
            assert refs[0].project == row["project"]
            checked += 1
    assert checked > 0


# --------------------------------------------------------------------------- export mode


def build_zip(records: list[dict[str, Any]], extra: dict[str, bytes] | None = None) -> bytes:
    """The bulk export's shape: one ``<ID>.json`` member per record."""
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as archive:
        for record in records:
            archive.writestr(f"{record['id']}.json", json.dumps(record, indent=2))
        for name, data in (extra or {}).items():
            archive.writestr(name, data)
    return buffer.getvalue()


BAD_MEMBER = "OSV-2099-0.json"


def export_collector(server_url: str, sleeps, **config) -> OSVCollector:
    cfg = OSVSourceConfig(mode="export", export_url=server_url, **config)
    return OSVCollector(cfg, client_for(sleeps))


def test_export_zip_with_malformed_member_and_a_503(fault_server, sleeps, sample_records):
    Reply = fault_server.Reply
    payload = build_zip(sample_records, {BAD_MEMBER: b'{"id": "OSV-2099-0", "affec'})
    fault_server.route(
        "GET",
        "/OSS-Fuzz/all.zip",
        [Reply(status=503, headers={"Retry-After": "2"}), Reply(body=payload)],
    )
    collector = export_collector(fault_server.url, sleeps)
    cursor: dict[str, Any] = {}
    items, _ = drive(collector, cursor)
    url = collector.export_zip_url
    want = expected_items(sample_records, lambda r: f"{url}!{r['id']}.json")
    malformed = [i for i in items if isinstance(i, SourceReject) and i.reason == "malformed_json"]
    assert len(malformed) == 1 and BAD_MEMBER in malformed[0].detail
    assert malformed[0].vuln_id == "OSV-2099-0"
    assert {identity(i) for i in items} - {identity(malformed[0])} == want
    assert len(items) == len(want) + 1  # nothing twice
    assert cursor["done"] is True and cursor["next_member"] == len(sample_records) + 1
    assert sleeps.calls == [2.0]
    # the zip came from the network once; a second pass reads nothing new
    assert list(collector.iter_fixes(cursor)) == []
    assert len(fault_server.calls("GET", "/OSS-Fuzz/all.zip")) == 2


def test_export_filters_by_package(fault_server, sleeps, sample_records):
    wanted = project_of(sample_records[-1])
    fault_server.route(
        "GET", "/OSS-Fuzz/all.zip", [fault_server.Reply(body=build_zip(sample_records))]
    )
    collector = export_collector(fault_server.url, sleeps, packages=[wanted])
    items, _ = drive(collector, {})
    chosen = [r for r in sample_records if project_of(r) == wanted]
    url = collector.export_zip_url
    assert {identity(i) for i in items} == expected_items(chosen, lambda r: f"{url}!{r['id']}.json")
    assert {i.project for i in items if isinstance(i, FixRef)} == {wanted}


def test_export_from_a_local_directory(tmp_path, sleeps):
    (tmp_path / "OSS-Fuzz").mkdir()
    (tmp_path / "OSS-Fuzz" / "all.zip").write_bytes(build_zip(HANDMADE))
    for base in (str(tmp_path), tmp_path.as_uri()):
        collector = export_collector(base, sleeps)
        items, _ = drive(collector, {})
        assert sum(isinstance(i, FixRef) for i in items) == 1 + 2 + 1 + 1 + 3 + 1


@pytest.mark.parametrize(
    ("reply", "reason"),
    [
        ({"status": 404, "json": {"error": "no such ecosystem"}}, "http_error"),
        ({"body": b"<html>not a zip</html>"}, "malformed_json"),
        ({"status": 429, "headers": {"Retry-After": "86400"}}, "rate_limited"),
    ],
)
def test_export_failure_is_one_reject_and_resumable(fault_server, sleeps, reply, reason):
    fault_server.route("GET", "/OSS-Fuzz/all.zip", [fault_server.Reply(**reply)])
    collector = export_collector(fault_server.url, sleeps)
    cursor: dict[str, Any] = {}
    items, _ = drive(collector, cursor)
    assert [i.reason for i in items] == [reason]  # type: ignore[union-attr]
    assert "done" not in cursor


def test_export_resume_from_saved_cursor(fault_server, sleeps, sample_records, tmp_path):
    payload = build_zip(sample_records, {BAD_MEMBER: b"{"})
    fault_server.route("GET", "/OSS-Fuzz/all.zip", [fault_server.Reply(body=payload)])
    full, _ = drive(export_collector(fault_server.url, sleeps), {})
    for stop in stop_points(full):
        first, saved = drive(export_collector(fault_server.url, sleeps), {}, stop_after=stop)
        assert len(first) == stop and not saved.get("done")
        # a new process: new client, cursor read back from disk
        (tmp_path / "cursor.json").write_text(json.dumps(saved))
        resumed_cursor = json.loads((tmp_path / "cursor.json").read_text())
        rest, final = drive(export_collector(fault_server.url, sleeps), resumed_cursor)
        assert final["done"] is True
        assert_resumed(full, first, rest)


def assert_resumed(full: list, first: list, rest: list) -> None:
    """The union is the uninterrupted run; only the page being read when interrupted repeats."""
    union = {identity(i) for i in first} | {identity(i) for i in rest}
    assert union == {identity(i) for i in full}
    repeated = Counter(identity(i) for i in [*first, *rest])
    assert all(n <= 2 for n in repeated.values())
    twice = {key for key, n in repeated.items() if n > 1}
    assert len(first) + len(rest) == len(full) + len(twice)
    # the resumed run started at the page being read when interrupted, not earlier
    assert {place(i) for i in first if identity(i) in twice} <= {place(first[-1])}


# --------------------------------------------------------------------------- query mode


class OSVApi:
    """The query API over ``records``: querybatch pages of ``page_size`` ids, vulns/{id}."""

    def __init__(self, server, records: list[dict[str, Any]], page_size: int = 2):
        self.server = server
        self.records = records
        self.page_size = page_size
        self.batch_calls = 0
        self.fail_batch_call: int | None = None
        server.route("POST", "/v1/querybatch", self.querybatch)
        server.route("POST", "/v1/query", self.query)
        for record in records:
            server.route("GET", f"/v1/vulns/{record['id']}", [server.Reply(json=record)])

    def _page(self, query: dict[str, Any], full: bool) -> dict[str, Any]:
        assert query["package"]["ecosystem"] == "OSS-Fuzz"
        hits = [r for r in self.records if project_of(r) == query["package"]["name"]]
        start = int(query.get("page_token", "0"))
        page = hits[start : start + self.page_size]
        result: dict[str, Any] = {}
        if page:  # OSV omits "vulns" when a package has none
            result["vulns"] = (
                page if full else [{"id": r["id"], "modified": r["modified"]} for r in page]
            )
        if start + self.page_size < len(hits):
            result["next_page_token"] = str(start + self.page_size)
        return result

    def querybatch(self, request):
        self.batch_calls += 1
        if self.batch_calls == self.fail_batch_call:
            return self.server.Reply(status=429, headers={"Retry-After": "4"})
        queries = request.json()["queries"]
        return self.server.Reply(json={"results": [self._page(q, False) for q in queries]})

    def query(self, request):
        return self.server.Reply(json=self._page(request.json(), True))


def query_collector(api: OSVApi, sleeps, packages: list[str], **kwargs) -> OSVCollector:
    cfg = OSVSourceConfig(mode="query", api_url=api.server.url, packages=packages, batch_size=2)
    return OSVCollector(cfg, client_for(sleeps, **kwargs))


def vuln_url(server_url: str):
    return lambda r: f"{server_url}/v1/vulns/{r['id']}"


def test_query_mode_paginates_and_survives_faults(fault_server, sleeps, sample_records):
    Reply = fault_server.Reply
    api = OSVApi(fault_server, sample_records)
    api.fail_batch_call = 2  # a 429 in the middle of the pagination
    packages = [*sorted({project_of(r) for r in sample_records}), "no-such-project"]
    first, second = sample_records[0], sample_records[-1]
    fault_server.route("GET", f"/v1/vulns/{first['id']}", [Reply(status=500), Reply(json=first)])
    fault_server.route(
        "GET", f"/v1/vulns/{second['id']}", [Reply(json=second, truncate=True), Reply(json=second)]
    )
    collector = query_collector(api, sleeps, packages)
    cursor: dict[str, Any] = {}
    items, _ = drive(collector, cursor)
    want = expected_items(sample_records, vuln_url(fault_server.url))
    assert {identity(i) for i in items} == want and len(items) == len(want)
    assert cursor["done"] is True and cursor["batch"] == (len(packages) + 1) // 2
    assert 4.0 in sleeps.calls  # the 429's Retry-After was honoured
    batches = [r.json()["queries"] for r in fault_server.calls("POST", "/v1/querybatch")]
    assert all(1 <= len(b) <= 2 for b in batches)
    assert any("page_token" in q for b in batches for q in b)  # next_page_token followed
    for record in sample_records:
        assert fault_server.calls("GET", f"/v1/vulns/{record['id']}")
    assert collector.client.stats["retries_by_reason"] == {
        "rate_limited": 1,
        "server_error": 1,
        "malformed_json": 1,
    }


def test_query_resume_from_saved_cursor(fault_server, sleeps, sample_records, tmp_path):
    api = OSVApi(fault_server, sample_records)
    packages = sorted({project_of(r) for r in sample_records})
    full, _ = drive(query_collector(api, sleeps, packages), {})
    for stop in stop_points(full):
        first, saved = drive(query_collector(api, sleeps, packages), {}, stop_after=stop)
        resumed = json.loads(json.dumps(saved))
        rest, final = drive(query_collector(api, sleeps, packages), resumed)
        assert final["done"] is True
        assert_resumed(full, first, rest)


def test_query_stops_on_a_limit_that_does_not_recover_then_resumes(
    fault_server, sleeps, sample_records, tmp_path
):
    Reply = fault_server.Reply
    api = OSVApi(fault_server, sample_records)
    packages = sorted({project_of(r) for r in sample_records})
    stuck = sample_records[len(sample_records) // 2]
    path = f"/v1/vulns/{stuck['id']}"
    fault_server.route("GET", path, [Reply(status=429, headers={"Retry-After": "9999"})])
    cache = RawCache(tmp_path / "raw")
    cursor: dict[str, Any] = {}
    first, _ = drive(query_collector(api, sleeps, packages, cache=cache), cursor)
    assert isinstance(first[-1], SourceReject) and first[-1].reason == "rate_limited"
    assert first[-1].vuln_id == stuck["id"] and "done" not in cursor
    assert cursor["pending"][0] == stuck["id"]
    fault_server.route("GET", path, [Reply(json=stuck)])  # the limit lifted
    before = len(fault_server.requests)
    rest, _ = drive(
        query_collector(api, sleeps, packages, cache=RawCache(tmp_path / "raw")), cursor
    )
    assert cursor["done"] is True
    union = {identity(i) for i in first[:-1]} | {identity(i) for i in rest}
    assert union == expected_items(sample_records, vuln_url(fault_server.url))
    # the resumed run re-read nothing it had already fetched (cursor + raw cache)
    refetched = {r.path for r in fault_server.requests[before:] if r.method == "GET"}
    done_before = {f"/v1/vulns/{i.vuln_id}" for i in first[:-1]}
    assert not (refetched & done_before)


def test_query_missing_record_is_a_reject_and_the_run_goes_on(fault_server, sleeps):
    records = copy.deepcopy(HANDMADE)
    api = OSVApi(fault_server, records)
    gone = records[0]["id"]
    fault_server.route("GET", f"/v1/vulns/{gone}", [fault_server.Reply(status=404, json={})])
    cursor: dict[str, Any] = {}
    items, _ = drive(query_collector(api, sleeps, ["alpha", "beta", "gamma"]), cursor)
    missing = [i for i in items if isinstance(i, SourceReject) and i.vuln_id == gone]
    assert [m.reason for m in missing] == ["http_error"] and "404" in missing[0].detail
    assert cursor["done"] is True
    assert {identity(i) for i in items} - {identity(missing[0])} == expected_items(
        records[1:], vuln_url(fault_server.url)
    )


def test_query_one_package_follows_page_tokens(fault_server, sleeps, sample_records):
    api = OSVApi(fault_server, sample_records, page_size=2)
    project = max(
        {project_of(r) for r in sample_records},
        key=lambda p: sum(project_of(r) == p for r in sample_records),
    )
    collector = query_collector(api, sleeps, [project])
    got = collector.query(project)
    assert got == [r for r in sample_records if project_of(r) == project]
    calls = fault_server.calls("POST", "/v1/query")
    assert len(calls) == (len(got) + 1) // 2
    assert [c.json().get("page_token") for c in calls][1:] == [
        str(2 * i) for i in range(1, len(calls))
    ]


def test_query_mode_needs_packages(sleeps):
    with pytest.raises(ValueError, match="packages"):
        OSVCollector(OSVSourceConfig(mode="query"), client_for(sleeps))
