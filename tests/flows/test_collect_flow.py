"""The ``collect`` flow with online sources under a real ephemeral Prefect server: the GitHub
token read from a Prefect Secret block (sent as Bearer, never in the logs or files), requests
taking slots of the installed ``collect-github`` rate limit, two sources concurrently, one
failing (a dead service) without stopping the other, and a finished source cached."""

from __future__ import annotations

import asyncio
import json
import logging
from pathlib import Path

from streamguard_core.config import (
    CollectConfig,
    FixExtractConfig,
    GitHubSourceConfig,
    HttpConfig,
    NVDSourceConfig,
)
from tests.core.collect.conftest import fault_server, no_egress, sleeps  # noqa: F401 (fixtures)
from tests.core.collect.test_github_collector import PAGES, AdvisoryPages

TOKEN = "ghp_secretvalue0123456789"


def test_collect_flow_uses_the_secret_block_and_the_rate_limit(
    prefect_harness,
    fault_server,  # noqa: F811 (the imported fixture)
    tmp_path: Path,
    caplog,
) -> None:
    from prefect.blocks.system import Secret
    from prefect.client.orchestration import get_client

    from deployments.install import install_rate_limits
    from flows.collect import collect

    Secret(value=TOKEN).save("sg-test-github-token", overwrite=True)

    async def limits() -> None:
        async with get_client() as client:
            await install_rate_limits(client, lambda line: None)

    asyncio.run(limits())
    AdvisoryPages(fault_server)
    config = CollectConfig(
        sources=[
            GitHubSourceConfig(api_url=fault_server.url, token_secret_block="sg-test-github-token",
                               token_env="SG_TEST_NO_SUCH_VAR"),
            NVDSourceConfig(api_url="http://127.0.0.1:9/rest/json/cves/2.0",
                            request_interval_s=0.0),
        ],
        output_dir=str(tmp_path / "collected"),
        http=HttpConfig(timeout_s=1.0, max_retries=0),
        fixes=FixExtractConfig(enabled=False),
    )  # fmt: skip
    caplog.set_level(logging.DEBUG)
    summary = collect(config)
    by_name = {s["name"]: s for s in summary["sources"]}
    github = by_name["github"]
    n_fixes = 6  # PAGES: advisory 3 names two commits, advisory 4 none
    assert github["fixes"] == n_fixes and github["done"] and not github["error"]
    assert github["rejects_by_reason"] == {"no_fix_commit": 1}
    requests = fault_server.calls("GET", "/advisories")
    assert len(requests) == len(PAGES)
    assert {r.headers["authorization"] for r in requests} == {f"Bearer {TOKEN}"}
    # the dead NVD endpoint is a counted reject; the source is not done, the flow goes on
    nvd = by_name["nvd"]
    assert nvd["fixes"] == 0 and not nvd["done"] and nvd["rejects"] == 1
    # the token is nowhere: not in the logs, not in any file the collection wrote
    assert TOKEN not in caplog.text
    for path in (tmp_path / "collected").rglob("*"):
        if path.is_file():
            assert TOKEN.encode() not in path.read_bytes(), path
    # a second run: the finished source is served from the task cache (no request)
    again = collect(config)
    assert len(fault_server.calls("GET", "/advisories")) == len(PAGES)
    assert {s["name"]: s["fixes"] for s in again["sources"]}["github"] == n_fixes
    saved = json.loads((tmp_path / "collected" / "collect_summary.json").read_text())
    assert saved["totals"]["fixes"] == n_fixes
