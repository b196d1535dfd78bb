"""``streamguard collect``: the collectors without Prefect (the ``collect`` flow shares these
flags), one source after the other."""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

from streamguard_core.config import SOURCE_CLASSES, SOURCE_KINDS, CollectConfig, load_yaml

DESCRIPTION = """\
Collect real vulnerability fixes into OUTPUT_DIR/<source>/ (fixes.jsonl, functions.jsonl,
rejects.jsonl, cursor.json, raw/) and OUTPUT_DIR/collect_summary.json. A rerun resumes every
source from its cursor; raw responses are cached. Online sources read their token / API key
from the environment (GITHUB_TOKEN, NVD_API_KEY) unless the config names a Prefect Secret block.

  streamguard collect --source file                      # offline: ../shared/data's OSS-Fuzz files
  streamguard collect --source osv --max-items 50        # OSV export of OSS-Fuzz, 50 advisories
  streamguard collect --config my_collect.yaml
"""


def add_collect_args(parser: argparse.ArgumentParser) -> None:
    """The flags shared by ``streamguard collect`` and ``python -m flows.collect``."""
    parser.add_argument(
        "--source", action="append", choices=SOURCE_KINDS, default=[],
        help="a source with its default settings (repeatable); default: the config's sources",
    )  # fmt: skip
    parser.add_argument("--config", default=None, help="a CollectConfig YAML")
    parser.add_argument("--output-dir", default=None, help="default: the config's output_dir")
    parser.add_argument("--max-items", type=int, default=None, help="per source (quick runs)")
    parser.add_argument(
        "--data", default=None,
        help="a ../shared/data-like folder for the file source (its two OSS-Fuzz files)",
    )  # fmt: skip
    parser.add_argument(
        "--dedup-against", action="append", default=[],
        help="data already held (a processed data dir or an input file), repeatable",
    )  # fmt: skip


def config_from_args(args: argparse.Namespace) -> CollectConfig:
    """The :class:`CollectConfig` the flags describe (the config file, then the flags)."""
    config = load_yaml(args.config, CollectConfig) if args.config else CollectConfig()
    raw = config.model_dump()
    if args.source:
        raw["sources"] = [SOURCE_CLASSES[kind]().model_dump() for kind in args.source]
    if args.data:
        for source in raw["sources"]:
            if source["kind"] == "file":
                source["records"] = str(Path(args.data) / "osv_ossfuzz_records.jsonl.gz")
                source["functions"] = str(Path(args.data) / "ossfuzz_fixes.jsonl.gz")
    if args.output_dir:
        raw["output_dir"] = args.output_dir
    if args.max_items:
        raw["max_items"] = args.max_items
    if args.dedup_against:
        raw["dedup_against"] = args.dedup_against
    return CollectConfig.model_validate(raw)


def add_collect_parser(subparsers: Any) -> argparse.ArgumentParser:
    """Register ``streamguard collect``."""
    parser = subparsers.add_parser(
        "collect",
        help="collect vulnerability fixes (OSV, GitHub, NVD, ExploitDB, offline files)",
        description=DESCRIPTION,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    add_collect_args(parser)
    parser.set_defaults(func=cmd_collect)
    return parser


def cmd_collect(args: argparse.Namespace) -> int:
    """``streamguard collect``; 1 when every source failed."""
    from streamguard_core.collect.store import collect_all

    summary = collect_all(config_from_args(args))
    print(json.dumps({"totals": summary["totals"], "output_dir": summary["output_dir"]}))
    for source in summary["sources"]:
        if source["error"]:
            print(f"streamguard: {source['name']}: {source['error']}")
    return 1 if all(s["error"] for s in summary["sources"]) else 0
