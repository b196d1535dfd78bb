"""Online collection end to end through the store: OSV (query API) and NVD served by the local
fault server, fix commits of a git repository made in the test (file:// URL for OSV, a
``fixes.repos`` override for the GitHub URL NVD names), functions extracted, a rate limit and a
5xx on the way, a missing commit rejected, and a rerun that fetches and writes nothing new."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from streamguard_core.collect.store import collect_all, load_collected
from streamguard_core.config import (
    CollectConfig,
    ExploitDBSourceConfig,
    FixExtractConfig,
    HttpConfig,
    NVDSourceConfig,
    OSVSourceConfig,
)
from streamguard_core.io import read_jsonl
from tests.core.collect.test_exploitdb_collector import HEADER
from tests.core.collect.test_fix_extractor import Upstream, build_upstream
from tests.core.collect.test_nvd_collector import cve, ref
from tests.core.collect.test_osv_collector import make_record

GITHUB_URL = "https://github.com/demo/demo"


def _serve(fault_server: Any, up: Upstream) -> None:
    Reply = fault_server.Reply
    records = {
        "OSV-2024-1": make_record("OSV-2024-1", "demo", [up.commits["fix"]], repo=up.path.as_uri()),
        "OSV-2024-2": make_record("OSV-2024-2", "demo", ["f" * 40], repo=up.path.as_uri()),
    }
    batch = {"results": [{"vulns": [{"id": i, "modified": "2024-01-01T00:00:00Z"}
                                    for i in records]}]}  # fmt: skip
    limited = Reply(status=429, headers={"Retry-After": "2"})
    fault_server.route("POST", "/v1/querybatch", [limited, Reply(json=batch)])
    for vuln_id, record in records.items():
        fault_server.route("GET", f"/v1/vulns/{vuln_id}", [Reply(status=502), Reply(json=record)])
    item = cve(1, [ref(f"{GITHUB_URL}/commit/{up.commits['fix']}", "Patch")])
    page = {"resultsPerPage": 1, "startIndex": 0, "totalResults": 1, "format": "NVD_CVE",
            "version": "2.0", "vulnerabilities": [item]}  # fmt: skip
    fault_server.route("GET", "/rest/json/cves/2.0", [Reply(json=page)])
    exploit = (  # an ExploitDB index row naming the NVD CVE above
        "50001,exploits/linux/dos/50001.c,demo - Heap Overflow,2022-03-01,anon,dos,linux,,"
        f"2022-03-01,2022-03-01,1,{item['cve']['id']},,,,,"
    )
    fault_server.route(
        "GET", "/files_exploits.csv", [Reply(body=f"{HEADER}\n{exploit}\n".encode())]
    )


def test_online_sources_extract_functions_and_resume(fault_server, sleeps, tmp_path: Path):
    up = build_upstream(tmp_path / "upstream", allow_filter=True)
    _serve(fault_server, up)
    config = CollectConfig(
        sources=[
            OSVSourceConfig(mode="query", packages=["demo"], api_url=fault_server.url),
            NVDSourceConfig(
                api_url=f"{fault_server.url}/rest/json/cves/2.0", request_interval_s=0.0
            ),
            ExploitDBSourceConfig(index_url=f"{fault_server.url}/files_exploits.csv"),
        ],
        output_dir=str(tmp_path / "collected"),
        http=HttpConfig(timeout_s=2.0, max_retries=3, backoff_s=0.01),
        fixes=FixExtractConfig(repos={GITHUB_URL: str(up.path)}),
    )
    summary = collect_all(config, sleep=sleeps)
    by_name = {s["name"]: s for s in summary["sources"]}
    assert 2.0 in sleeps.calls  # the 429's Retry-After was honoured
    # the NVD fix's CVE has a public exploit in the collected ExploitDB index
    assert by_name["exploitdb"]["exploits"] == 1
    assert summary["totals"]["fixes_with_public_exploit"] == 1
    osv, nvd = by_name["osv"], by_name["nvd"]
    assert osv["fixes"] == 2 and nvd["fixes"] == 1 and osv["done"] and nvd["done"]
    assert osv["rejects_by_reason"].get("commit_not_found") == 1  # OSV-2024-2's sha
    rows = load_collected(tmp_path / "collected")
    assert {r["source"] for r in rows} == {"osv", "nvd"}
    osv_rows = [r for r in rows if r["source"] == "osv"]
    # the two versions of each changed function, labelled by side of the fix
    pairs: dict[str, set[int]] = {}
    for r in osv_rows:
        pairs.setdefault(r["pair_id"], set()).add(r["target"])
        assert r["fix_commit"] == up.commits["fix"] and r["vuln_id"] == "OSV-2024-1"
        assert r["provenance"]["extractor"] == "git"
    assert pairs and all(labels == {0, 1} for labels in pairs.values())
    assert {r["function"] for r in osv_rows} == {
        r["function"] for r in rows if r["source"] == "nvd"
    }
    assert all(r["cwe"] == "CWE-787" for r in rows if r["source"] == "nvd")

    # a rerun: cursors done, raw responses cached, fixes extracted -> nothing new, no request
    before = len(fault_server.requests)
    again = {s["name"]: s for s in collect_all(config, sleep=sleeps)["sources"]}
    assert all(s["new_this_run"] == 0 for s in again.values())
    assert len(fault_server.requests) == before
    assert len(load_collected(tmp_path / "collected")) == len(rows)
    cursor = json.loads((tmp_path / "collected" / "osv" / "cursor.json").read_text())
    assert cursor["done"] is True
    extracted = list(read_jsonl(tmp_path / "collected" / "osv" / "extracted.jsonl"))
    assert len(extracted) == 2
