"""NVD CVE API 2.0: CVEs whose references name a fix commit.

The API pages by offset: ``startIndex`` and ``resultsPerPage`` in, ``totalResults`` and
``vulnerabilities`` out; the collection cursor keeps the next ``startIndex`` (and the
``totalResults`` last seen). A published-date filter longer than the API's 120-day limit is
cut into consecutive windows, each paged in turn (the cursor keeps the window too). Each
``vulnerabilities[].cve`` gives one :class:`FixRef` per commit URL among its ``references``
(``Patch``-tagged ones first), with its CWE ids from ``weaknesses``.

NVD's documented rate limits are 5 requests per rolling 30 s without an API key and 50 with
one; :func:`request_interval` turns them into the gap the caller gives the client
(``HttpClient(min_interval_s=...)``). The key travels only in the ``apiKey`` header.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from datetime import UTC, date, datetime, timedelta
from typing import Any, ClassVar

from streamguard_core.collect.base import Collector, fixes_or_reject, resolve_secret
from streamguard_core.collect.commits import commit_refs, is_short_sha, repo_name
from streamguard_core.collect.http import HttpClient, HttpError
from streamguard_core.collect.records import FixRef, SourceReject
from streamguard_core.config import NVDSourceConfig

log = logging.getLogger("streamguard.collect")

SOURCE = "nvd"
DETAIL_URL = "https://nvd.nist.gov/vuln/detail/{}"
# NVD's documented limits: requests per rolling window, without and with an API key.
RATE_WINDOW_S = 30.0
REQUESTS_PER_WINDOW_PUBLIC = 5
REQUESTS_PER_WINDOW_WITH_KEY = 50
# The longest published-date range one request may ask for.
MAX_DATE_RANGE = timedelta(days=120)
# CWE placeholders NVD uses when no CWE applies.
PLACEHOLDER_CWES = frozenset({"NVD-CWE-Other", "NVD-CWE-noinfo"})
PATCH_TAG = "Patch"


def nvd_headers(api_key: str | None) -> dict[str, str]:
    """Headers of every NVD request (``apiKey`` only when a key is given)."""
    return {"apiKey": api_key} if api_key else {}


def resolve_api_key(config: NVDSourceConfig, secret_value: str | None = None) -> str | None:
    """The API key (:func:`resolve_secret` over ``config.api_key_env``); None means the public
    rate limit."""
    return resolve_secret(secret_value, config.api_key_env)


def request_interval(config: NVDSourceConfig, has_key: bool) -> float:
    """Seconds between two requests: ``config.request_interval_s``, else NVD's limit
    (30 s / 5 requests = 6 s without a key, 30 s / 50 = 0.6 s with one)."""
    if config.request_interval_s is not None:
        return config.request_interval_s
    per_window = REQUESTS_PER_WINDOW_WITH_KEY if has_key else REQUESTS_PER_WINDOW_PUBLIC
    return RATE_WINDOW_S / per_window


def _parse_when(value: str, *, end: bool) -> datetime:
    """An ISO date or date-time as naive UTC; a bare end date means the end of that day."""
    text = value.strip()
    if len(text) == len("YYYY-MM-DD"):
        day = date.fromisoformat(text)
        moment = datetime(day.year, day.month, day.day)
        return moment + timedelta(days=1, milliseconds=-1) if end else moment
    moment = datetime.fromisoformat(text)
    if moment.tzinfo is not None:
        moment = moment.astimezone(UTC).replace(tzinfo=None)
    return moment


def _nvd_time(moment: datetime) -> str:
    """NVD's extended ISO-8601 form (``2021-08-04T00:00:00.000``, UTC)."""
    return moment.strftime("%Y-%m-%dT%H:%M:%S.") + f"{moment.microsecond // 1000:03d}"


def date_windows(start: str | None, end: str | None) -> list[tuple[str, str] | None]:
    """``pubStartDate``/``pubEndDate`` pairs of at most 120 days covering ``[start, end]``.

    Returns ``[None]`` (one unfiltered window) when neither bound is set.

    Raises:
        ValueError: only one bound set, a bound that is not ISO 8601, or end before start.
    """
    if start is None and end is None:
        return [None]
    if start is None or end is None:
        raise ValueError("NVD needs both pub_start and pub_end (or neither)")
    lo, hi = _parse_when(start, end=False), _parse_when(end, end=True)
    if hi < lo:
        raise ValueError(f"pub_end {end!r} is before pub_start {start!r}")
    windows: list[tuple[str, str] | None] = []
    while True:
        stop = min(lo + MAX_DATE_RANGE, hi)
        windows.append((_nvd_time(lo), _nvd_time(stop)))
        if stop >= hi:
            return windows
        lo = stop + timedelta(milliseconds=1)


def _check_cve(cve: Any) -> str | None:
    """Why a ``cve`` object is not the API 2.0 shape, or None when it is."""
    if not isinstance(cve, dict):
        return "cve must be an object"
    if not isinstance(cve.get("id"), str) or not cve["id"].strip():
        return "cve.id missing"
    if cve.get("published") is not None and not isinstance(cve["published"], str):
        return "cve.published must be a string"
    weaknesses = cve.get("weaknesses") or []
    if not isinstance(weaknesses, list):
        return "cve.weaknesses must be a list"
    for weakness in weaknesses:
        descriptions = weakness.get("description") if isinstance(weakness, dict) else None
        if not isinstance(descriptions, list) or not all(
            isinstance(d, dict) and isinstance(d.get("value"), str) for d in descriptions
        ):
            return "cve.weaknesses[].description must be a list of {value}"
    references = cve.get("references") or []
    if not isinstance(references, list):
        return "cve.references must be a list"
    for ref in references:
        if not isinstance(ref, dict) or not isinstance(ref.get("url"), str):
            return "cve.references[] must be objects with a url"
        if ref.get("tags") is not None and not isinstance(ref["tags"], list):
            return "cve.references[].tags must be a list"
    return None


def fixrefs_from_cve(item: Any, where: str | None = None) -> list[FixRef] | SourceReject:
    """The fixes one ``vulnerabilities[]`` element names, or why it is refused.

    Args:
        item: ``{"cve": {"id", "published", "vulnStatus", "weaknesses", "references"...}}``.
        where: where it was read (request and position), kept on rejects.

    Returns:
        One :class:`FixRef` per distinct fix commit (``meta["patch_reference"]`` says whether
        a ``Patch``-tagged reference named it), or a :class:`SourceReject` (``invalid_record``:
        not the API 2.0 shape, or a rejected CVE; ``no_fix_commit``).
    """
    cve = item.get("cve") if isinstance(item, dict) else None
    problem = _check_cve(cve)
    if problem is not None:
        cve_id = cve.get("id") if isinstance(cve, dict) else None
        vuln_id = cve_id if isinstance(cve_id, str) else None
        return SourceReject(SOURCE, "invalid_record", problem, vuln_id=vuln_id, where=where)
    assert isinstance(cve, dict)
    cve_id = cve["id"]
    if cve.get("vulnStatus") == "Rejected":
        return SourceReject(
            SOURCE, "invalid_record", "CVE rejected by NVD", vuln_id=cve_id, where=where
        )
    cwes: list[str] = []
    for weakness in cve.get("weaknesses") or []:
        for description in weakness["description"]:
            value = description["value"].strip()
            if value.startswith("CWE-") and value not in PLACEHOLDER_CWES and value not in cwes:
                cwes.append(value)
    references = cve.get("references") or []
    patch_urls = [r["url"] for r in references if PATCH_TAG in (r.get("tags") or [])]
    other_urls = [r["url"] for r in references if PATCH_TAG not in (r.get("tags") or [])]
    patched = commit_refs(patch_urls)  # a short sha here may name a full sha in `refs`
    refs = commit_refs(patch_urls + other_urls)
    if not refs:
        detail = f"none of {len(references)} references names a commit"
        return SourceReject(SOURCE, "no_fix_commit", detail, vuln_id=cve_id, where=where)
    fixes = []
    for repo, sha in refs:
        patch = any(r == repo and sha.startswith(p) for r, p in patched)
        meta: dict[str, Any] = {"patch_reference": patch}
        if is_short_sha(sha):
            meta["short_sha"] = True
        fixes.append(
            FixRef(
                source=SOURCE,
                vuln_id=cve_id,
                repo=repo,
                fix_commit=sha,
                project=repo_name(repo),
                published=cve.get("published"),
                cwe=list(cwes),
                url=DETAIL_URL.format(cve_id),
                meta=meta,
            )
        )
    return fixes


class NVDCollector(Collector):
    """CVEs of the NVD CVE API 2.0 with fix-commit references, page by page.

    The cursor holds ``window`` (which published-date window), ``start_index`` (the next
    ``startIndex`` in it), ``total_results`` (as last seen) and ``done``.
    """

    name: ClassVar[str] = SOURCE

    def __init__(self, config: NVDSourceConfig, client: HttpClient):
        """Read CVEs as ``config`` says, through ``client`` (``apiKey`` header from
        :func:`nvd_headers`, ``min_interval_s`` from :func:`request_interval`).

        Raises:
            ValueError: ``pub_start``/``pub_end`` not both set or not ISO 8601 dates.
        """
        self.config = config
        self.client = client
        self.windows = date_windows(config.pub_start, config.pub_end)

    def params(self, window: int, start_index: int) -> dict[str, Any]:
        """Query parameters of one page."""
        params: dict[str, Any] = {
            "startIndex": start_index,
            "resultsPerPage": self.config.results_per_page,
        }
        if self.config.keyword:
            params["keywordSearch"] = self.config.keyword
        if self.config.cwe:
            params["cweId"] = self.config.cwe
        dates = self.windows[window]
        if dates is not None:
            params["pubStartDate"], params["pubEndDate"] = dates
        return params

    def iter_fixes(self, cursor: dict[str, Any]) -> Iterator[FixRef | SourceReject]:
        """Fixes of every CVE from the cursor's page on (see :class:`Collector`)."""
        if cursor.get("done"):
            return
        url = self.config.api_url
        while True:
            window = int(cursor.get("window", 0))
            if window >= len(self.windows):
                cursor["done"] = True
                return
            start = int(cursor.get("start_index", 0))
            params = self.params(window, start)
            where = f"{url} window={window} startIndex={start}"
            try:
                data, _ = self.client.get_json(url, params)
            except HttpError as exc:
                log.warning("nvd: stopping at %s: %s", where, exc)
                yield SourceReject(SOURCE, exc.reason, str(exc), where=where)
                return
            total = data.get("totalResults") if isinstance(data, dict) else None
            items = data.get("vulnerabilities") if isinstance(data, dict) else None
            if isinstance(total, bool) or not isinstance(total, int) or not isinstance(items, list):
                detail = "expected an object with totalResults (int) and vulnerabilities (list)"
                yield SourceReject(SOURCE, "malformed_json", detail, where=where)
                return
            for index, item in enumerate(items):
                yield from fixes_or_reject(fixrefs_from_cve(item, where=f"{where} [{index}]"))
            following = start + len(items)
            if not items or following >= total:
                cursor["window"], cursor["start_index"] = window + 1, 0
            else:
                cursor["start_index"] = following
            cursor["total_results"] = total
