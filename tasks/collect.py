"""Collection tasks: one retryable task per source, and the summary in the Prefect UI."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

import httpx
from prefect import task
from prefect.artifacts import create_markdown_artifact, create_table_artifact
from prefect.cache_policies import CacheKeyFnPolicy

from streamguard_core.collect.records import CURSOR_FILE
from streamguard_core.collect.store import held_keys, run_source
from streamguard_core.config import (
    CollectConfig,
    GitHubSourceConfig,
    NVDSourceConfig,
    SourceSettings,
)


def _io_error(exc: BaseException | None) -> bool:
    """Retry only I/O: the network, the disk, timeouts (never a data or config error)."""
    from streamguard_core.collect.http import RequestTimeout

    return isinstance(exc, OSError | TimeoutError | httpx.TransportError | RequestTimeout)


def retry_on_io(task: Any, task_run: Any, state: Any) -> bool:
    """``retry_condition_fn``: retry a source only when it failed on I/O."""
    try:
        state.result()
    except Exception as exc:
        return _io_error(exc)
    return False


def _source_key(context: Any, parameters: dict[str, Any]) -> str:
    """A finished source is cached on its settings and what its folder holds: its cursor
    (``done``) and the size of every file; an unfinished one never is."""
    config: CollectConfig = parameters["config"]
    folder = Path(config.output_dir) / parameters["name"]
    cursor = folder / CURSOR_FILE
    h = hashlib.sha256(json.dumps(parameters["settings"].model_dump(mode="json")).encode())
    h.update(json.dumps(config.fixes.model_dump(mode="json"), sort_keys=True).encode())
    if cursor.exists():
        h.update(cursor.read_bytes())
    for path in sorted(folder.glob("*.jsonl")):
        h.update(f"{path.name}:{path.stat().st_size}".encode())
    return h.hexdigest()


SOURCE_CACHE = CacheKeyFnPolicy(cache_key_fn=_source_key)


def _secret(settings: SourceSettings) -> str | None:
    """The GitHub token / NVD API key from its Prefect Secret block, when one is named."""
    block = None
    if isinstance(settings, GitHubSourceConfig):
        block = settings.token_secret_block
    elif isinstance(settings, NVDSourceConfig):
        block = settings.api_key_secret_block
    if not block:
        return None
    from prefect.blocks.system import Secret

    secret: Secret = Secret.load(block)  # type: ignore[assignment]  # sync in a sync task
    return str(secret.get())


def _throttle(kind: str) -> Any:
    """Before every request: a slot of the ``collect-<kind>`` rate limit (a global
    concurrency limit with slot decay, made by ``python -m deployments.install``; none made,
    no wait)."""
    from prefect.concurrency.sync import rate_limit

    def acquire() -> None:
        rate_limit(f"collect-{kind}", strict=False)

    return acquire


@task(
    name="collect-source",
    task_run_name="collect {name}",
    retries=2,
    retry_delay_seconds=10,
    retry_condition_fn=retry_on_io,
    cache_policy=SOURCE_CACHE,
    persist_result=True,
)
def collect_source_task(settings: SourceSettings, name: str, config: CollectConfig) -> dict:
    """Collect one source (resuming from its cursor); returns its counts."""
    held = held_keys(config.dedup_against)
    summary = run_source(
        settings,
        name,
        config,
        held=held,
        secret=_secret(settings),
        throttle=_throttle(settings.kind) if settings.kind != "file" else None,
    )
    print(
        f"{name}: {summary.fixes:,} fixes, {summary.functions:,} functions, "
        f"{summary.deduplicated:,} deduplicated, {summary.rejects:,} rejects "
        f"({summary.new_this_run:,} new)"
    )
    return summary.to_dict()


@task(name="publish-collect-summary")
def publish_collect_summary(summary: dict[str, Any]) -> None:
    """Table of counts per source and a markdown of the rejects by reason."""
    rows = [
        {
            "source": s["name"],
            "fixes": s["fixes"],
            "functions": s["functions"],
            "deduplicated": s["deduplicated"],
            "rejects": s["rejects"],
            "done": s["done"],
            "error": s["error"] or "",
        }
        for s in summary["sources"]
    ]
    create_table_artifact(
        key="collect-counts", table=rows, description="Collected fixes and functions per source"
    )
    lines = [f"# Collection `{summary['output_dir']}`", ""]
    totals = summary["totals"]
    lines.append(
        f"- **{totals.get('functions', 0):,}** functions from {totals.get('fixes', 0):,} fixes; "
        f"{totals.get('deduplicated', 0):,} deduplicated against held data; "
        f"{totals.get('rejects', 0):,} rejects"
    )
    for s in summary["sources"]:
        if s["rejects_by_reason"]:
            reasons = ", ".join(f"{k} {v:,}" for k, v in s["rejects_by_reason"].items())
            lines.append(f"- {s['name']} rejects: {reasons}")
        if s["error"]:
            lines.append(f"- {s['name']} stopped early: {s['error']} (resumes from its cursor)")
    create_markdown_artifact(key="collect-summary", markdown="\n".join(lines))
