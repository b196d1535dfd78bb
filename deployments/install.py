"""Install StreamGuard's work pools, webhook block and automations on a Prefect server.

Run it once per server (and again after editing ``deployments/automations.yaml`` or to change
the webhook URL); every step creates what is missing and updates what exists, by name::

    export PREFECT_API_URL=http://127.0.0.1:4200/api
    python -m deployments.install --webhook-url https://hooks.slack.com/services/T0/B0/XXX
    python -m deployments.install                      # URL from $STREAMGUARD_WEBHOOK_URL
    python -m deployments.install --skip-automations   # no automations (pools, and block if URL)

It installs:

- the process work pools ``streamguard-local`` (the deployments in ``prefect.yaml``) and
  ``streamguard-sagemaker`` (for the SageMaker backend);
- the collectors' rate limits ``collect-<source>`` (global concurrency limits with slot decay,
  e.g. NVD's 5 requests per 30 s), which every ``collect`` flow run shares;
- the ``streamguard-alerts`` Custom Webhook notification block, posting Slack-compatible JSON
  ``{"text": "<subject>\\n<body>"}`` to the webhook URL;
- the automations in ``deployments/automations.yaml``, which notify through that block.

Exit codes: 0 done, 1 the server is unreachable or refused a request, 2 usage error.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any
from uuid import UUID

import httpx
import yaml

if TYPE_CHECKING:
    from prefect.client.orchestration import PrefectClient
    from prefect.events.schemas.automations import AutomationCore

WEBHOOK_URL_ENV = "STREAMGUARD_WEBHOOK_URL"
BLOCK_NAME = "streamguard-alerts"
AUTOMATIONS_FILE = Path(__file__).with_name("automations.yaml")
# Slack incoming webhooks (and Mattermost, Rocket.Chat, Discord's /slack endpoint) take this.
SLACK_JSON_DATA: dict[str, Any] = {"text": "{{subject}}\n{{body}}"}
WORK_POOLS: dict[str, str] = {
    "streamguard-local": (
        "StreamGuard process worker on a machine with this checkout (GPU or CPU): runs the "
        "deployments in prefect.yaml. Start it from the repo root: "
        "prefect worker start --pool streamguard-local"
    ),
    "streamguard-sagemaker": (
        "StreamGuard process worker for the SageMaker backend: submits and polls SageMaker "
        "training jobs (needs AWS credentials, no GPU)."
    ),
}

# Rate limits of the collectors (global concurrency limits with slot decay; the collect flow
# takes a slot before every request): (slots, slots freed per second).
RATE_LIMITS: dict[str, tuple[int, float]] = {
    "collect-nvd": (5, 5 / 30),  # NVD without a key: 5 requests per rolling 30 s
    "collect-github": (10, 5000 / 3600),  # GitHub REST with a token: 5,000 requests per hour
    "collect-osv": (10, 10.0),  # OSV publishes no limit; stay polite
    "collect-exploitdb": (1, 1.0),
}

Report = Callable[[str], None]


class InstallError(Exception):
    """A setup step failed; the message tells the user what to do."""


def api_url() -> str:
    """The Prefect API URL to install into (``PREFECT_API_URL``, from the env or profile).

    Raises:
        InstallError: when it is not set (a client would silently start an ephemeral server).
    """
    from prefect.settings import PREFECT_API_URL

    url = PREFECT_API_URL.value()
    if not url:
        raise InstallError(
            "PREFECT_API_URL is not set, so there is no server to install into. Start one "
            "(`prefect server start`) and run e.g. "
            "`PREFECT_API_URL=http://127.0.0.1:4200/api python -m deployments.install ...`."
        )
    return str(url).rstrip("/")


def check_server(url: str, timeout_s: float = 15.0) -> None:
    """Fail fast with a clear message when ``url``'s ``/health`` does not answer OK."""
    try:
        response = httpx.get(f"{url}/health", timeout=timeout_s)
    except httpx.HTTPError as exc:
        raise InstallError(
            f"cannot reach the Prefect server at {url} ({type(exc).__name__}: {exc}). "
            "Is `prefect server start` running, and is PREFECT_API_URL right?"
        ) from exc
    if response.status_code != 200:
        raise InstallError(
            f"the Prefect server at {url} answered /health with HTTP {response.status_code}: "
            f"{response.text[:200]}"
        )


def load_automations(
    block_document_id: UUID, path: Path = AUTOMATIONS_FILE
) -> list[AutomationCore]:
    """Read the automations file; notification actions without a block get ``block_document_id``.

    Raises:
        InstallError: when the file is not a list of valid automations.
    """
    from prefect.events.schemas.automations import AutomationCore
    from pydantic import ValidationError

    spec = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    entries = spec.get("automations") if isinstance(spec, dict) else None
    if not isinstance(entries, list) or not entries:
        raise InstallError(f"{path}: expected a non-empty 'automations:' list")
    automations = []
    names: set[str] = set()
    for entry in entries:
        entry = {"enabled": True, **entry}
        for action in entry.get("actions", []):
            if action.get("type") == "send-notification":
                action.setdefault("block_document_id", str(block_document_id))
        try:
            automation = AutomationCore.model_validate(entry)
        except ValidationError as exc:
            raise InstallError(f"{path}: automation {entry.get('name')!r}: {exc}") from exc
        if automation.name in names:
            raise InstallError(f"{path}: automation name {automation.name!r} appears twice")
        names.add(automation.name)
        automations.append(automation)
    return automations


def notification_block_name(path: Path = AUTOMATIONS_FILE) -> str:
    """The webhook block the automations file sends through (default ``streamguard-alerts``)."""
    spec = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    return str(spec.get("notification_block") or BLOCK_NAME)


async def install_work_pools(client: PrefectClient, report: Report) -> None:
    """Create the process work pools, or update their descriptions (job templates are kept)."""
    from prefect.client.schemas.actions import WorkPoolCreate, WorkPoolUpdate
    from prefect.exceptions import ObjectNotFound
    from prefect.workers.process import ProcessWorker

    for name, description in WORK_POOLS.items():
        try:
            pool = await client.read_work_pool(name)
        except ObjectNotFound:
            await client.create_work_pool(
                WorkPoolCreate(
                    name=name,
                    type="process",
                    description=description,
                    base_job_template=ProcessWorker.get_default_base_job_template(),
                )
            )
            report(f"work pool {name}: created (type process)")
            continue
        await client.update_work_pool(name, WorkPoolUpdate(description=description))
        note = "" if pool.type == "process" else f" (WARNING: its type is {pool.type!r})"
        report(f"work pool {name}: exists, description updated, job template kept{note}")


async def install_rate_limits(client: PrefectClient, report: Report) -> None:
    """Create or update the collectors' rate limits (:data:`RATE_LIMITS`)."""
    from prefect.client.schemas.actions import (
        GlobalConcurrencyLimitCreate,
        GlobalConcurrencyLimitUpdate,
    )
    from prefect.exceptions import ObjectNotFound

    for name, (limit, decay) in RATE_LIMITS.items():
        try:
            await client.read_global_concurrency_limit_by_name(name)
        except ObjectNotFound:
            await client.create_global_concurrency_limit(
                GlobalConcurrencyLimitCreate(name=name, limit=limit, slot_decay_per_second=decay)
            )
            report(f"rate limit {name}: created ({limit} slots, {decay:.3g}/s)")
            continue
        await client.update_global_concurrency_limit(
            name, GlobalConcurrencyLimitUpdate(limit=limit, slot_decay_per_second=decay)
        )
        report(f"rate limit {name}: exists, updated ({limit} slots, {decay:.3g}/s)")


async def find_block(client: PrefectClient, name: str) -> UUID | None:
    """The id of the Custom Webhook block document called ``name``, or None."""
    from prefect.blocks.notifications import CustomWebhookNotificationBlock
    from prefect.exceptions import ObjectNotFound

    try:
        document = await client.read_block_document_by_name(
            name, CustomWebhookNotificationBlock.get_block_type_slug(), include_secrets=False
        )
    except ObjectNotFound:
        return None
    return document.id


async def install_webhook_block(
    client: PrefectClient, name: str, webhook_url: str, report: Report
) -> UUID:
    """Create or overwrite the Slack-compatible webhook block; returns its (stable) id."""
    from prefect.blocks.notifications import CustomWebhookNotificationBlock

    existing = await find_block(client, name)
    block = CustomWebhookNotificationBlock(
        name="StreamGuard",
        url=webhook_url,
        method="POST",
        json_data=SLACK_JSON_DATA,
    )
    block_id = await block.asave(name, overwrite=True, client=client)
    verb = "updated" if existing else "created"
    report(f"block custom-webhook/{name}: {verb} (POST {redact(webhook_url)})")
    return block_id


async def install_automations(
    client: PrefectClient, automations: list[AutomationCore], report: Report
) -> None:
    """Create each automation or update the one with its name (extra copies are deleted)."""
    existing: dict[str, list[UUID]] = {}
    for automation in await client.read_automations():
        existing.setdefault(automation.name, []).append(automation.id)
    for automation in automations:
        ids = existing.pop(automation.name, [])
        if ids:
            await client.update_automation(ids[0], automation)
            for duplicate in ids[1:]:
                await client.delete_automation(duplicate)
            extra = f", {len(ids) - 1} duplicate(s) deleted" if len(ids) > 1 else ""
            report(f"automation {automation.name}: updated{extra}")
        else:
            await client.create_automation(automation)
            report(f"automation {automation.name}: created")
    for name in sorted(existing):
        if name.startswith("streamguard-"):
            report(f"automation {name}: on the server, not in {AUTOMATIONS_FILE.name}; left as is")


def redact(url: str) -> str:
    """The URL with its path cut (Slack webhook paths are secrets)."""
    parsed = httpx.URL(url)
    path = parsed.path if parsed.host in {"127.0.0.1", "localhost"} else "/..."
    return f"{parsed.scheme}://{parsed.netloc.decode()}{path}"


async def install(webhook_url: str | None, skip_automations: bool, report: Report = print) -> None:
    """Install work pools, the webhook block and the automations on the configured server."""
    from prefect.client.orchestration import get_client
    from prefect.exceptions import PrefectHTTPStatusError

    url = api_url()
    check_server(url)
    report(f"Prefect server: {url}")
    block_name = notification_block_name()
    try:
        async with get_client() as client:
            await install_work_pools(client, report)
            await install_rate_limits(client, report)
            block_id: UUID | None = None
            if webhook_url:
                block_id = await install_webhook_block(client, block_name, webhook_url, report)
            elif not skip_automations:
                block_id = await find_block(client, block_name)
                if block_id:
                    report(
                        f"block custom-webhook/{block_name}: exists, URL kept (pass "
                        f"--webhook-url or set {WEBHOOK_URL_ENV} to change it)"
                    )
            if skip_automations:
                report("automations: skipped (--skip-automations)")
            elif block_id is None:
                report(
                    "automations: SKIPPED. They send notifications through a webhook, and no "
                    f"URL was given: pass --webhook-url URL or set {WEBHOOK_URL_ENV} (e.g. a "
                    "Slack incoming-webhook URL) and run this command again."
                )
            else:
                await install_automations(client, load_automations(block_id), report)
    except PrefectHTTPStatusError as exc:
        raise InstallError(
            f"the server refused {exc.request.method} {exc.request.url.path}: "
            f"HTTP {exc.response.status_code} {exc.response.text[:500]}"
        ) from exc
    except httpx.HTTPError as exc:
        raise InstallError(f"lost the Prefect server at {url}: {exc}") from exc


def main(argv: list[str] | None = None) -> int:
    """Command-line entry point; returns the exit code."""
    parser = argparse.ArgumentParser(
        prog="python -m deployments.install",
        description="Install StreamGuard's work pools, webhook block and automations on the "
        "Prefect server in PREFECT_API_URL (idempotent: re-running updates by name).",
    )
    parser.add_argument(
        "--webhook-url",
        default=os.environ.get(WEBHOOK_URL_ENV) or None,
        help=f"Slack-compatible incoming-webhook URL (default: ${WEBHOOK_URL_ENV})",
    )
    parser.add_argument(
        "--skip-automations",
        action="store_true",
        help="Install the work pools (and the block, given a URL) but no automations",
    )
    args = parser.parse_args(argv)
    if args.webhook_url and not args.webhook_url.startswith(("http://", "https://")):
        parser.error(f"--webhook-url must be an http(s) URL, got {args.webhook_url!r}")
    try:
        asyncio.run(install(args.webhook_url, args.skip_automations))
    except InstallError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
