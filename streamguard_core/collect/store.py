"""Run a source into its output folder: append-only files, a cursor, dedup and counts.

Everything a source produces is appended (and flushed) as it arrives, and the cursor is saved
after every item, so an interrupted collection loses nothing and resumes where it stopped
(:class:`SourceStore`); items seen again after a resume are skipped by key. Every function is
kept (``functions.jsonl``), deduplicated against the data already held (``duplicates.jsonl``)
or rejected (``rejects.jsonl``), and counted. See :mod:`.records` for the layout.
"""

from __future__ import annotations

import json
import logging
import time
from collections import Counter
from collections.abc import Callable, Iterable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import IO, Any

from streamguard_core.collect.records import (
    CURSOR_FILE,
    FIXES_FILE,
    FUNCTIONS_FILE,
    RAW_DIR,
    REJECTS_FILE,
    SOURCE_SUMMARY_FILE,
    SUMMARY_FILE,
    CollectedFunction,
    FixRef,
    SourceReject,
)
from streamguard_core.config import (
    CollectConfig,
    ExploitDBSourceConfig,
    FileSourceConfig,
    GitHubSourceConfig,
    NVDSourceConfig,
    OSVSourceConfig,
    SourceSettings,
)
from streamguard_core.data.normalize import normalized_key
from streamguard_core.io import atomic_write_json, read_jsonl

log = logging.getLogger("streamguard.collect")

DUPLICATES_FILE = "duplicates.jsonl"
EXPLOITS_FILE = "exploits.jsonl"
EXTRACTED_FILE = "extracted.jsonl"
CURSOR_EVERY_S = 1.0
"""How often a moving cursor is saved (see :meth:`SourceStore.checkpoint`)."""


def _reject_key(row: dict[str, Any]) -> str:
    """A reject's identity: all its fields (``where`` tells items of one source apart)."""
    return json.dumps(row, sort_keys=True)


def source_names(sources: list[Any]) -> list[str]:
    """Folder name of each source: its kind, or ``<kind>-<i>`` when a kind repeats."""
    kinds = Counter(s.kind for s in sources)
    return [s.kind if kinds[s.kind] == 1 else f"{s.kind}-{i}" for i, s in enumerate(sources)]


class _Appender:
    """An append-only JSONL file whose rows are keyed; a torn last line is cut on open."""

    def __init__(self, path: Path, key: Callable[[dict[str, Any]], str] | None = None) -> None:
        self.path = path
        self.keys: set[str] = set()
        self.count = 0
        path.parent.mkdir(parents=True, exist_ok=True)
        if path.exists():
            self._recover(key)
        self._fh: IO[str] | None = None  # opened on the first row: no empty files

    def _recover(self, key: Callable[[dict[str, Any]], str] | None) -> None:
        """Read the rows already written; truncate a torn last line (a killed writer)."""
        good = 0
        with open(self.path, "rb") as fh:
            for raw in fh:
                try:
                    row = json.loads(raw)
                except ValueError:
                    break
                if not raw.endswith(b"\n"):
                    break
                good += len(raw)
                self.count += 1
                if key is not None:
                    self.keys.add(key(row))
        if good != self.path.stat().st_size:
            log.warning("%s: cut a torn last line (interrupted writer)", self.path)
            with open(self.path, "r+b") as fh:
                fh.truncate(good)

    def add(self, row: dict[str, Any], key: str | None = None) -> bool:
        """Append ``row`` unless ``key`` was seen; True when written."""
        if key is not None:
            if key in self.keys:
                return False
            self.keys.add(key)
        if self._fh is None:
            self._fh = open(self.path, "a", encoding="utf-8")  # noqa: SIM115
        self._fh.write(json.dumps(row, ensure_ascii=False) + "\n")
        self._fh.flush()
        self.count += 1
        return True

    def close(self) -> None:
        """Close the file."""
        if self._fh is not None:
            self._fh.close()


@dataclass(slots=True)
class SourceSummary:
    """What one source produced (cumulative over resumed runs)."""

    name: str
    kind: str
    fixes: int = 0
    functions: int = 0
    deduplicated: int = 0
    rejects: int = 0
    rejects_by_reason: dict[str, int] = field(default_factory=dict)
    exploits: int = 0
    done: bool = False
    new_this_run: int = 0
    http: dict[str, Any] = field(default_factory=dict)
    error: str | None = None

    def to_dict(self) -> dict[str, Any]:
        """Plain-JSON form."""
        return asdict(self)


class SourceStore:
    """The output folder of one source (see :mod:`.records` for its files)."""

    def __init__(self, root: str | Path, name: str) -> None:
        self.dir = Path(root) / name
        self.dir.mkdir(parents=True, exist_ok=True)
        self.raw_dir = self.dir / RAW_DIR
        self.fixes = _Appender(self.dir / FIXES_FILE, lambda r: FixRef.from_dict(r).key)
        self.functions = _Appender(self.dir / FUNCTIONS_FILE, lambda r: str(r["id"]))
        self.duplicates = _Appender(self.dir / DUPLICATES_FILE, lambda r: str(r["id"]))
        self.rejects = _Appender(self.dir / REJECTS_FILE, _reject_key)
        self.exploits = _Appender(self.dir / EXPLOITS_FILE, lambda r: str(r["edb_id"]))
        self.extracted = _Appender(self.dir / EXTRACTED_FILE, lambda r: str(r["key"]))
        self.reasons: Counter[str] = Counter(
            str(r.get("reason"))
            for r in (read_jsonl(self.rejects.path) if self.rejects.path.exists() else [])
        )
        self.new = 0
        path = self.dir / CURSOR_FILE
        self.cursor: dict[str, Any] = json.loads(path.read_text()) if path.exists() else {}
        self._saved = json.dumps(self.cursor, sort_keys=True)
        self._saved_at = time.monotonic()

    def checkpoint(self, force: bool = False) -> None:
        """Save the cursor when it moved, at most every :data:`CURSOR_EVERY_S` unless forced.

        A cursor that lags behind the files loses nothing: every row is flushed as it comes,
        and the rows a resumed run yields again are skipped by key.
        """
        if not force and time.monotonic() - self._saved_at < CURSOR_EVERY_S:
            return
        text = json.dumps(self.cursor, sort_keys=True)
        if text != self._saved:
            atomic_write_json(self.dir / CURSOR_FILE, self.cursor)
            self._saved = text
        self._saved_at = time.monotonic()

    def add_fix(self, ref: FixRef) -> bool:
        """Append a fix reference (False when already held)."""
        written = self.fixes.add(ref.to_dict(), ref.key)
        self.new += written
        return written

    def add_function(self, fn: CollectedFunction, held: set[str]) -> str:
        """Append a function: ``kept``, ``duplicate`` (of data already held) or ``seen``."""
        if fn.id in self.functions.keys or fn.id in self.duplicates.keys:
            return "seen"
        if held and normalized_key(fn.func) in held:
            self.duplicates.add({**fn.to_dict(), "duplicate_of": "held data"}, fn.id)
            return "duplicate"
        self.functions.add(fn.to_dict(), fn.id)
        self.new += 1
        return "kept"

    def add_reject(self, reject: SourceReject) -> None:
        """Append a reject (once: one re-yielded after a resume is skipped) and count it."""
        row = reject.to_dict()
        if self.rejects.add(row, _reject_key(row)):
            self.reasons[reject.reason] += 1
            log.info("reject %s", reject)

    def summary(self, kind: str, done: bool, **extra: Any) -> SourceSummary:
        """Counts of everything this source holds."""
        return SourceSummary(
            name=self.dir.name,
            kind=kind,
            fixes=self.fixes.count,
            functions=self.functions.count,
            deduplicated=self.duplicates.count,
            rejects=self.rejects.count,
            rejects_by_reason=dict(sorted(self.reasons.items())),
            exploits=self.exploits.count,
            done=done,
            new_this_run=self.new,
            **extra,
        )

    def close(self) -> None:
        """Close every file."""
        for appender in (
            self.fixes, self.functions, self.duplicates, self.rejects, self.exploits,
            self.extracted,
        ):  # fmt: skip
            appender.close()


def held_keys(paths: Iterable[str]) -> set[str]:
    """Normalized keys of the data already held: processed data dirs or input files."""
    from streamguard_core.data.loaders import iter_records
    from streamguard_core.schema import FunctionRecord

    keys: set[str] = set()
    for path in map(Path, paths):
        if path.is_dir():
            files = sorted(path.glob("*/records.jsonl")) or sorted(path.glob("records.jsonl"))
            for file in files:
                keys.update(normalized_key(row["func"]) for row in read_jsonl(file))
        else:
            keys.update(
                normalized_key(item.func)
                for item in iter_records(path)
                if isinstance(item, FunctionRecord)
            )
    return keys


def run_source(
    settings: SourceSettings,
    name: str,
    config: CollectConfig,
    *,
    held: set[str] | None = None,
    secret: str | None = None,
    throttle: Callable[[], None] | None = None,
    sleep: Callable[[float], None] = time.sleep,
) -> SourceSummary:
    """Collect one source into ``<config.output_dir>/<name>`` (resuming from its cursor).

    Args:
        settings: the source's settings (one entry of ``config.sources``).
        name: its folder name (:func:`source_names`).
        config: the whole collection config (HTTP behaviour, fix extraction, limits).
        held: normalized keys of the data already held (:func:`held_keys`).
        secret: the GitHub token or NVD API key read from a Prefect Secret block (wins over
            the environment variable named in the settings); never logged.
        throttle: called before every HTTP request (the flow passes a Prefect rate limit).
        sleep: how waits are slept (tests pass a recorder).

    Returns:
        The source's counts. Failures of single items are rejects; a failure that ends the
        source early leaves ``done`` False and ``error`` set, with everything so far kept.
    """
    held = held or set()
    store = SourceStore(config.output_dir, name)
    cursor = store.cursor
    extra: dict[str, Any] = {}
    try:
        if isinstance(settings, FileSourceConfig):
            from streamguard_core.collect.offline import FileSource

            source = FileSource(settings)
            _drain_fixes(store, source.iter_fixes(cursor), None)
            for item in source.iter_functions(cursor):
                if isinstance(item, SourceReject):
                    store.add_reject(item)
                else:
                    store.add_function(item, held)
                store.checkpoint()
            cursor["done"] = True
        else:
            client = _client(settings, config, store, secret, throttle, sleep)
            try:
                extra["http"] = _run_online(settings, config, store, client, held)
            finally:
                client.close()
    except Exception as exc:  # the source ends; what it produced is kept and counted
        extra["error"] = f"{type(exc).__name__}: {exc}"
        log.error("source %s stopped: %s", name, extra["error"])
        raise
    finally:
        store.checkpoint(force=True)
        summary = store.summary(settings.kind, bool(cursor.get("done")), **extra)
        store.close()
        atomic_write_json(store.dir / SOURCE_SUMMARY_FILE, summary.to_dict())
    return summary


def _drain_fixes(
    store: SourceStore,
    items: Iterable[FixRef | SourceReject],
    max_items: int | None,
) -> None:
    """Append a collector's fixes and rejects, saving the cursor as it moves."""
    for item in items:
        if isinstance(item, SourceReject):
            store.add_reject(item)
        else:
            store.add_fix(item)
        store.checkpoint()
        if max_items is not None and store.fixes.count >= max_items:
            log.info("%s: max_items %d reached", store.dir.name, max_items)
            break


def _client(
    settings: SourceSettings,
    config: CollectConfig,
    store: SourceStore,
    secret: str | None,
    throttle: Callable[[], None] | None,
    sleep: Callable[[float], None],
) -> Any:
    """The HTTP client of an online source (headers, key, request interval, raw cache)."""
    from streamguard_core.collect.http import HttpClient, RawCache

    headers: dict[str, str] = {"User-Agent": config.http.user_agent}
    interval = 0.0
    if isinstance(settings, GitHubSourceConfig):
        from streamguard_core.collect.github import github_headers, resolve_token

        headers.update(github_headers(resolve_token(settings, secret)))
    elif isinstance(settings, NVDSourceConfig):
        from streamguard_core.collect.nvd import nvd_headers, request_interval, resolve_api_key

        key = resolve_api_key(settings, secret)
        headers.update(nvd_headers(key))
        interval = request_interval(settings, key is not None)
    return HttpClient(
        config.http,
        headers=headers,
        cache=RawCache(store.raw_dir),
        throttle=throttle,
        min_interval_s=interval,
        sleep=sleep,
    )


def _run_online(
    settings: SourceSettings,
    config: CollectConfig,
    store: SourceStore,
    client: Any,
    held: set[str],
) -> dict[str, Any]:
    """Collect an online source, then extract the functions of its fix commits."""
    if isinstance(settings, ExploitDBSourceConfig):
        from streamguard_core.collect.exploitdb import ExploitDBCollector

        for item in ExploitDBCollector(settings, client).iter_entries(store.cursor):
            if isinstance(item, SourceReject):
                store.add_reject(item)
            else:
                row = asdict(item)
                store.new += store.exploits.add(row, str(row["edb_id"]))
            store.checkpoint()
        return dict(client.stats)
    collector: Any
    if isinstance(settings, OSVSourceConfig):
        from streamguard_core.collect.osv import OSVCollector

        collector = OSVCollector(settings, client)
    elif isinstance(settings, GitHubSourceConfig):
        from streamguard_core.collect.github import GitHubAdvisoryCollector

        collector = GitHubAdvisoryCollector(settings, client)
    elif isinstance(settings, NVDSourceConfig):
        from streamguard_core.collect.nvd import NVDCollector

        collector = NVDCollector(settings, client)
    else:  # the file source is not an online source
        raise ValueError(f"{settings.kind}: not an online source")
    if not store.cursor.get("done"):
        _drain_fixes(store, collector.iter_fixes(store.cursor), config.max_items)
    if config.fixes.enabled:
        extract_fixes(store, config, held)
    return dict(client.stats)


def extract_fixes(store: SourceStore, config: CollectConfig, held: set[str]) -> int:
    """Extract the functions of every fix of ``store`` not extracted yet; returns how many
    fixes were extracted in this call."""
    from streamguard_core.collect.fixes import FixExtractor

    cache = Path(config.fixes.cache_dir or Path(config.output_dir) / "git")
    extractor = FixExtractor(config.fixes, cache, timeout_s=config.fixes.git_timeout_s)
    done = 0
    rows = list(read_jsonl(store.fixes.path)) if store.fixes.path.exists() else []
    for row in rows:
        ref = FixRef.from_dict(row)
        if ref.key in store.extracted.keys:
            continue
        functions, rejects = extractor.extract(ref)
        for fn in functions:
            store.add_function(fn, held)
        for reject in rejects:
            store.add_reject(reject)
        store.extracted.add({"key": ref.key, "functions": len(functions)}, ref.key)
        done += 1
    return done


def failed_summary(config: CollectConfig, name: str, kind: str, error: str) -> SourceSummary:
    """The counts of a source that stopped with ``error``: what its ``summary.json`` says it
    kept (written even when it fails), else zeros."""
    path = Path(config.output_dir) / name / SOURCE_SUMMARY_FILE
    if path.exists():
        return SourceSummary(**{**json.loads(path.read_text()), "error": error})
    return SourceSummary(name, kind, error=error)


def write_summary(config: CollectConfig, summaries: list[SourceSummary]) -> dict[str, Any]:
    """``collect_summary.json``: per source counts and the totals."""
    totals = Counter[str]()
    for s in summaries:
        totals.update(
            {"fixes": s.fixes, "functions": s.functions, "deduplicated": s.deduplicated,
             "rejects": s.rejects, "exploits": s.exploits}
        )  # fmt: skip
    exploited = fixes_with_public_exploit(config.output_dir)
    if exploited is not None:
        totals["fixes_with_public_exploit"] = exploited
    summary = {
        "output_dir": config.output_dir,
        "sources": [s.to_dict() for s in summaries],
        "totals": dict(totals),
        "accounting": "every function is kept (functions.jsonl), deduplicated against held "
        "data (duplicates.jsonl) or rejected with a reason (rejects.jsonl)",
    }
    atomic_write_json(Path(config.output_dir) / SUMMARY_FILE, summary)
    return summary


def fixes_with_public_exploit(output_dir: str | Path) -> int | None:
    """Fixes of any source whose advisory (id or alias) has a public exploit in a collected
    ExploitDB index; None when no index was collected."""
    from streamguard_core.collect.exploitdb import ExploitEntry, exploit_index, exploits_for_fix

    files = sorted(Path(output_dir).glob(f"*/{EXPLOITS_FILE}"))
    if not files:
        return None
    index = exploit_index(ExploitEntry(**row) for f in files for row in read_jsonl(f))
    return sum(
        1
        for f in Path(output_dir).glob(f"*/{FIXES_FILE}")
        for row in read_jsonl(f)
        if exploits_for_fix(FixRef.from_dict(row), index)
    )


def collect_all(
    config: CollectConfig,
    *,
    secrets: dict[str, str] | None = None,
    sleep: Callable[[float], None] = time.sleep,
) -> dict[str, Any]:
    """Collect every source one after the other (the CLI; the flow runs them concurrently)."""
    held = held_keys(config.dedup_against)
    summaries = []
    for name, settings in zip(source_names(config.sources), config.sources, strict=True):
        secret = (secrets or {}).get(name)
        try:
            summaries.append(run_source(settings, name, config, held=held, secret=secret,
                                        sleep=sleep))  # fmt: skip
        except Exception as exc:  # one source failing leaves the others running
            summaries.append(failed_summary(config, name, settings.kind, str(exc)))
    return write_summary(config, summaries)


def load_collected(output_dir: str | Path) -> list[dict[str, Any]]:
    """Every collected function of every source under ``output_dir`` (sorted by source)."""
    rows: list[dict[str, Any]] = []
    files = sorted(Path(output_dir).glob(f"*/{FUNCTIONS_FILE}"))
    if not files:
        raise FileNotFoundError(
            f"{output_dir}: no collected functions (expected <source>/{FUNCTIONS_FILE}; run the "
            "collect flow or `streamguard collect` first)"
        )
    for path in files:
        rows.extend(read_jsonl(path))
    return rows
