"""OSV (osv.dev): fix commits from the bulk export of an ecosystem or from the query API.

Two modes (``OSVSourceConfig.mode``):

* ``export``: ``GET <export_url>/<ecosystem>/all.zip`` (the GCS bulk export, a zip of
  ``<ID>.json`` records); members are read in sorted order and the cursor keeps the next one.
* ``query``: ``POST <api_url>/v1/querybatch`` per batch of packages (following each result's
  ``next_page_token``), which lists only ``{"id", "modified"}``, then ``GET /v1/vulns/{id}``
  per hit. The cursor keeps the next batch and the ids of the current one still to fetch.

:func:`fixrefs_from_osv` turns one record into :class:`FixRef` rows (one per ``fixed`` event of
every ``GIT`` range) or a reject; the offline file source reuses it.
"""

from __future__ import annotations

import bisect
import io
import json
import zipfile
from collections.abc import Generator, Iterator
from typing import Any
from urllib.parse import quote

from streamguard_core.collect.base import Collector
from streamguard_core.collect.http import (
    HttpClient,
    HttpError,
    MalformedResponse,
    RateLimited,
    RequestTimeout,
)
from streamguard_core.collect.records import FixRef, SourceReject
from streamguard_core.config import OSVSourceConfig

CRASH_TYPE = "Crash type:"
CRASH_STATE = "Crash state:"


def parse_crash(details: str | None) -> tuple[str | None, list[str]]:
    """OSS-Fuzz's ``Crash type:`` value and ``Crash state:`` frames from a record's details.

    The state is the lines after ``Crash state:`` up to a blank line or a code fence.
    """
    crash_type: str | None = None
    state: list[str] = []
    if not isinstance(details, str):
        return None, []
    lines = details.splitlines()
    for i, line in enumerate(lines):
        text = line.strip()
        if crash_type is None and text.startswith(CRASH_TYPE):
            crash_type = text[len(CRASH_TYPE) :].strip() or None
        elif not state and text.startswith(CRASH_STATE):
            first = text[len(CRASH_STATE) :].strip()
            state = [first] if first else []
            for frame in lines[i + 1 :]:
                frame = frame.strip()
                if not frame or frame.startswith("```"):
                    break
                state.append(frame)
    return crash_type, state


def _shape_error(record: Any) -> str | None:
    """Why ``record`` is not an OSV record this module can read, or None."""
    if not isinstance(record, dict):
        return f"record is a {type(record).__name__}, not an object"
    if not isinstance(record.get("id"), str) or not record["id"].strip():
        return "id missing or not a string"
    affected = record.get("affected", [])
    if not isinstance(affected, list):
        return "affected is not a list"
    for i, entry in enumerate(affected):
        if not isinstance(entry, dict):
            return f"affected[{i}] is not an object"
        package = entry.get("package", {})
        if not isinstance(package, dict):
            return f"affected[{i}].package is not an object"
        if package.get("name") is not None and not isinstance(package["name"], str):
            return f"affected[{i}].package.name is not a string"
        ranges = entry.get("ranges", [])
        if not isinstance(ranges, list):
            return f"affected[{i}].ranges is not a list"
        for j, rng in enumerate(ranges):
            where = f"affected[{i}].ranges[{j}]"
            if not isinstance(rng, dict) or not isinstance(rng.get("type"), str):
                return f"{where} is not an object with a type"
            if not isinstance(rng.get("events", []), list):
                return f"{where}.events is not a list"
            if rng["type"] == "GIT" and not isinstance(rng.get("repo"), str):
                return f"{where} is GIT without a repo"
            for event in rng.get("events", []):
                if not isinstance(event, dict):
                    return f"{where}.events holds a non-object"
                if "fixed" in event and not isinstance(event["fixed"], str):
                    return f"{where} has a fixed event that is not a string"
    for key in ("aliases",):
        value = record.get(key, [])
        if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
            return f"{key} is not a list of strings"
    return None


def _cwe_ids(record: dict[str, Any], entry: dict[str, Any]) -> list[str]:
    """CWE ids from the record's and the affected entry's ``database_specific.cwe_ids``."""
    found: list[str] = []
    for holder in (record.get("database_specific"), entry.get("database_specific")):
        ids = holder.get("cwe_ids") if isinstance(holder, dict) else None
        if isinstance(ids, list):
            found.extend(str(i) for i in ids if isinstance(i, str | int) and str(i) not in found)
    return found


def fixrefs_from_osv(
    record: dict[str, Any], source: str, where: str
) -> tuple[list[FixRef], list[SourceReject]]:
    """Fix references of one OSV record, or the reason it gives none.

    One :class:`FixRef` per distinct ``fixed`` commit of every ``GIT`` range (repository from
    the range, project from the affected package). A record gives either refs or exactly one
    reject: ``invalid_record`` (wrong shape, or withdrawn) or ``no_fix_commit``.

    Args:
        record: a record in the OSV schema (API or export JSON).
        source: the ``source`` written on every row (e.g. ``osv``, ``file``).
        where: where the record was read (URL, ``zip!member``, ``file:line``).
    """
    problem = _shape_error(record)
    vuln_id = record.get("id") if isinstance(record, dict) else None
    vuln_id = vuln_id if isinstance(vuln_id, str) else None
    if problem is not None:
        return [], [SourceReject(source, "invalid_record", problem, vuln_id=vuln_id, where=where)]
    if record.get("withdrawn"):
        detail = f"withdrawn {record['withdrawn']}"
        return [], [SourceReject(source, "invalid_record", detail, vuln_id=vuln_id, where=where)]

    crash_type, crash_state = parse_crash(record.get("details"))
    published = record.get("published") if isinstance(record.get("published"), str) else None
    meta = {k: record[k] for k in ("modified", "summary") if isinstance(record.get(k), str)}
    refs: list[FixRef] = []
    seen: set[tuple[str, str]] = set()
    for entry in record.get("affected", []):
        package = entry.get("package") or {}
        specific = entry.get("ecosystem_specific")
        exact = not (isinstance(specific, dict) and "fixed_range" in specific)
        cwe = _cwe_ids(record, entry)
        for rng in entry.get("ranges", []):
            if rng["type"] != "GIT":
                continue
            for event in rng.get("events", []):
                commit = event.get("fixed")
                if not commit or (rng["repo"], commit) in seen:
                    continue
                seen.add((rng["repo"], commit))
                refs.append(
                    FixRef(
                        source=source,
                        vuln_id=record["id"],
                        repo=rng["repo"],
                        fix_commit=commit,
                        project=package.get("name"),
                        published=published,
                        aliases=list(record.get("aliases", [])),
                        cwe=list(cwe),
                        crash_type=crash_type,
                        crash_state=list(crash_state),
                        fix_is_exact=exact,
                        url=where,
                        meta=dict(meta),
                    )
                )
    if not refs:
        detail = "no fixed event in a GIT range"
        return [], [SourceReject(source, "no_fix_commit", detail, vuln_id=vuln_id, where=where)]
    return refs, []


def _affects(record: Any, packages: set[str]) -> bool:
    """Whether ``record`` names one of ``packages`` (by affected package name)."""
    if not isinstance(record, dict) or not isinstance(record.get("affected"), list):
        return True  # let fixrefs_from_osv count the bad shape
    for entry in record["affected"]:
        package = entry.get("package") if isinstance(entry, dict) else None
        if isinstance(package, dict) and package.get("name") in packages:
            return True
    return False


def _ends_source(exc: HttpError) -> bool:
    """Whether the service is unwell (stop, resume later) rather than one record being bad."""
    if isinstance(exc, RateLimited | RequestTimeout):
        return True
    return exc.status is None or exc.status >= 500  # connection errors, 5xx past the retries


class OSVCollector(Collector):
    """Fix references from OSV: the ecosystem's bulk export or the query API (see module)."""

    name = "osv"

    def __init__(self, config: OSVSourceConfig, client: HttpClient):
        """Read with ``client``; query mode needs ``config.packages``.

        Raises:
            ValueError: query mode without packages.
        """
        if config.mode == "query" and not config.packages:
            raise ValueError("OSV query mode needs `packages` (project names to query)")
        self.config = config
        self.client = client

    # ------------------------------------------------------------------ URLs
    @property
    def export_zip_url(self) -> str:
        """``<export_url>/<ecosystem>/all.zip`` (a URL or a local path)."""
        base = self.config.export_url.rstrip("/")
        return f"{base}/{quote(self.config.ecosystem, safe='')}/all.zip"

    def _api(self, path: str) -> str:
        return f"{self.config.api_url.rstrip('/')}{path}"

    def _reject(self, reason: str, detail: str, **kwargs: Any) -> SourceReject:
        return SourceReject(self.name, reason, detail, **kwargs)

    # ------------------------------------------------------------------ contract
    def iter_fixes(self, cursor: dict[str, Any]) -> Iterator[FixRef | SourceReject]:
        """Fix references from ``cursor`` on (export members or query batches)."""
        if cursor.get("done"):
            return
        if self.config.mode == "export":
            yield from self._iter_export(cursor)
        else:
            yield from self._iter_query(cursor)

    # ------------------------------------------------------------------ export
    def _iter_export(self, cursor: dict[str, Any]) -> Iterator[FixRef | SourceReject]:
        url = self.export_zip_url
        try:
            data = self.client.get_bytes(url)
        except HttpError as exc:
            yield self._reject(exc.reason, str(exc), where=exc.url)
            return
        except OSError as exc:
            yield self._reject("http_error", f"cannot read {url}: {exc}", where=url)
            return
        try:
            archive = zipfile.ZipFile(io.BytesIO(data))
        except zipfile.BadZipFile as exc:
            yield self._reject("malformed_json", f"not a zip archive: {exc}", where=url)
            return
        packages = set(self.config.packages)
        with archive:
            names = sorted(n for n in archive.namelist() if n.endswith(".json"))
            start = int(cursor.get("next_member", 0))
            if "last_member" in cursor:  # robust to a newer export with other members
                start = bisect.bisect_right(names, cursor["last_member"])
            for index in range(start, len(names)):
                member = names[index]
                yield from self._export_member(archive, member, url, packages)
                cursor["next_member"] = index + 1
                cursor["last_member"] = member
        cursor["done"] = True

    def _export_member(
        self, archive: zipfile.ZipFile, member: str, url: str, packages: set[str]
    ) -> Iterator[FixRef | SourceReject]:
        where = f"{url}!{member}"
        stem = member.rsplit("/", 1)[-1].removesuffix(".json")
        try:
            record = json.loads(archive.read(member))
        except (ValueError, zipfile.BadZipFile, OSError) as exc:
            detail = f"{member}: {type(exc).__name__}: {exc}"[:300]
            yield self._reject("malformed_json", detail, vuln_id=stem, where=where)
            return
        if packages and not _affects(record, packages):
            return
        refs, rejects = fixrefs_from_osv(record, self.name, where)
        yield from refs
        yield from rejects

    # ------------------------------------------------------------------ query API
    def query(self, package: str) -> list[dict[str, Any]]:
        """Every OSV record of ``package`` in the ecosystem (``POST /v1/query``, all pages).

        Raises:
            HttpError: the service failed (after the client's retries).
        """
        url = self._api("/v1/query")
        body: dict[str, Any] = {"package": {"name": package, "ecosystem": self.config.ecosystem}}
        records: list[dict[str, Any]] = []
        seen_tokens: set[str] = set()
        while True:
            data, _ = self.client.post_json(url, body)
            if not isinstance(data, dict):
                raise MalformedResponse(url, None, "answer is not a JSON object")
            vulns = data.get("vulns", [])
            records.extend(v for v in vulns if isinstance(v, dict))
            token = data.get("next_page_token")
            if not token or token in seen_tokens:
                return records
            seen_tokens.add(token)
            body = {**body, "page_token": token}

    def _iter_query(self, cursor: dict[str, Any]) -> Iterator[FixRef | SourceReject]:
        size = self.config.batch_size
        packages = self.config.packages
        while int(cursor.get("batch", 0)) * size < len(packages):
            batch = int(cursor.get("batch", 0))
            if cursor.get("pending") is None:
                names = packages[batch * size : (batch + 1) * size]
                listing = self._list_batch(names)
                if isinstance(listing, SourceReject):
                    yield listing
                    return
                cursor["pending"] = listing
            while cursor["pending"]:
                vuln_id = cursor["pending"][0]
                stop = yield from self._fetch_vuln(vuln_id)
                if stop:
                    return
                cursor["pending"] = cursor["pending"][1:]
            cursor["batch"] = batch + 1
            cursor["pending"] = None
        cursor["done"] = True

    def _list_batch(self, names: list[str]) -> list[str] | SourceReject:
        """Ids of every vulnerability of ``names`` (querybatch, following page tokens)."""
        url = self._api("/v1/querybatch")
        eco = self.config.ecosystem
        ids: dict[str, None] = {}  # insertion-ordered set
        todo: list[tuple[str, str | None]] = [(name, None) for name in names]
        seen_tokens: set[tuple[str, str]] = set()
        while todo:
            queries = []
            for name, token in todo:
                query: dict[str, Any] = {"package": {"name": name, "ecosystem": eco}}
                if token:
                    query["page_token"] = token
                queries.append(query)
            try:
                data, _ = self.client.post_json(url, {"queries": queries})
            except HttpError as exc:
                return self._reject(exc.reason, str(exc), where=exc.url)
            results = data.get("results") if isinstance(data, dict) else None
            if not isinstance(results, list) or len(results) != len(queries):
                detail = f"querybatch answer without {len(queries)} results"
                return self._reject("invalid_record", detail, where=url)
            next_todo: list[tuple[str, str | None]] = []
            for (name, _token), result in zip(todo, results, strict=True):
                result = result if isinstance(result, dict) else {}
                for vuln in result.get("vulns") or []:
                    vid = vuln.get("id") if isinstance(vuln, dict) else None
                    if isinstance(vid, str):
                        ids.setdefault(vid)
                token = result.get("next_page_token")
                if isinstance(token, str) and token and (name, token) not in seen_tokens:
                    seen_tokens.add((name, token))
                    next_todo.append((name, token))
            todo = next_todo
        return list(ids)

    def _fetch_vuln(self, vuln_id: str) -> Generator[FixRef | SourceReject, None, bool]:
        """Yield the refs of one record; return True when the source must stop here."""
        url = self._api(f"/v1/vulns/{quote(vuln_id, safe='')}")
        try:
            record, _ = self.client.get_json(url)
        except HttpError as exc:
            yield self._reject(exc.reason, str(exc), vuln_id=vuln_id, where=exc.url)
            return _ends_source(exc)
        refs, rejects = fixrefs_from_osv(record, self.name, url)
        yield from refs
        yield from rejects
        return False
