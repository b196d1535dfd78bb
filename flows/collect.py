"""``collect``: fix data from every configured source, concurrently, into one folder.

Each source is one task (``collect <source>``) that resumes from its cursor, retries on I/O
only, keeps a cache of raw responses (``<source>/raw``) and is cached itself once finished (a
rerun of a finished collection does nothing). A source that fails leaves the others running;
what it collected is kept. The counts per source and the rejects by reason are artifacts.
Run it with the embedded, ephemeral Prefect::

    python -m flows.collect --source file            # the offline source (../shared/data)
    python -m flows.collect --source osv --source nvd --output-dir runs/collected
    python -m flows.collect --config my_collect.yaml
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from prefect import flow, get_run_logger

from streamguard_core.collect.cli import add_collect_args
from streamguard_core.collect.cli import config_from_args as collect_config
from streamguard_core.collect.records import SOURCE_SUMMARY_FILE
from streamguard_core.collect.store import (
    SourceSummary,
    failed_summary,
    source_names,
    write_summary,
)
from streamguard_core.config import CollectConfig
from tasks.collect import collect_source_task, publish_collect_summary


class CollectionFailed(RuntimeError):
    """No source collected anything."""


@flow(name="collect", log_prints=True)
def collect(config: CollectConfig = CollectConfig(), refresh: bool = False) -> dict[str, Any]:  # noqa: B008
    """Collect every source of ``config`` concurrently; returns ``collect_summary.json``.

    Raises:
        CollectionFailed: every source failed (the flow run ends Failed, naming them).
    """
    logger = get_run_logger()
    names = source_names(config.sources)
    futures = []
    for name, settings in zip(names, config.sources, strict=True):
        done = (Path(config.output_dir) / name / SOURCE_SUMMARY_FILE).exists()
        task = collect_source_task.with_options(refresh_cache=refresh or not done)
        futures.append(task.submit(settings, name, config))
    summaries = []
    for name, settings, future in zip(names, config.sources, futures, strict=True):
        future.wait()
        if future.state.is_completed():
            summaries.append(SourceSummary(**future.result()))
        else:
            error = str(future.state.message or future.state.name)
            logger.error("source %s failed: %s", name, error)
            summaries.append(failed_summary(config, name, settings.kind, error))
    summary = write_summary(config, summaries)
    publish_collect_summary(summary)
    if all(s.error for s in summaries):
        raise CollectionFailed(
            "every source failed: " + "; ".join(f"{s.name}: {s.error}" for s in summaries)
        )
    return summary


def config_from_args(argv: list[str] | None = None) -> tuple[CollectConfig, bool]:
    """The :class:`CollectConfig` a command line describes, and ``--refresh``."""
    parser = argparse.ArgumentParser(
        prog="python -m flows.collect",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    add_collect_args(parser)
    parser.add_argument("--refresh", action="store_true", help="ignore cached finished sources")
    args = parser.parse_args(argv)
    return collect_config(args), args.refresh


def main(argv: list[str] | None = None) -> int:
    """``python -m flows.collect``; 1 when the flow run fails."""
    from flows.presets import exit_status

    config, refresh = config_from_args(argv)
    state = collect(config, refresh, return_state=True)
    if exit_status(state, "collect"):
        return 1
    print(json.dumps(state.result()["totals"]))
    return 0


if __name__ == "__main__":
    sys.exit(main())
