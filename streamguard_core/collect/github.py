"""GitHub security advisories (REST ``GET /advisories``): fix commits from their references.

The global advisories endpoint pages with cursors: each answer's ``Link`` header names the
``rel="next"`` URL (``...&after=<cursor>``), which is what the collection cursor keeps, so an
interrupted run resumes at the page it was reading. Every commit URL among an advisory's
``references`` (:func:`~.commits.parse_commit_url`) becomes one :class:`FixRef`; an advisory
without one is a ``no_fix_commit`` reject. Rate limits (primary: ``x-ratelimit-remaining: 0``
until ``x-ratelimit-reset``; secondary: 403/429 with ``retry-after``) are waited out by the
:class:`~.http.HttpClient`; one that does not recover ends the run with the cursor kept.

The token (a Prefect Secret block read by the task layer, else ``config.token_env``) travels
only in the ``Authorization`` header, which the client never logs.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Iterator, Mapping
from typing import Any, ClassVar

from streamguard_core.collect.base import Collector, fixes_or_reject, resolve_secret
from streamguard_core.collect.commits import commit_refs, is_short_sha, repo_name
from streamguard_core.collect.http import HttpClient, HttpError
from streamguard_core.collect.records import FixRef, SourceReject
from streamguard_core.config import GitHubSourceConfig

log = logging.getLogger("streamguard.collect")

SOURCE = "github"
API_VERSION = "2022-11-28"
MEDIA_TYPE = "application/vnd.github+json"
_LINK = re.compile(r"<([^>]*)>\s*;\s*rel=\"([^\"]*)\"")


def github_headers(token: str | None) -> dict[str, str]:
    """Headers of every GitHub REST request (``Authorization: Bearer`` only with a token)."""
    headers = {"Accept": MEDIA_TYPE, "X-GitHub-Api-Version": API_VERSION}
    if token:
        headers["Authorization"] = f"Bearer {token}"
    return headers


def resolve_token(config: GitHubSourceConfig, secret_value: str | None = None) -> str | None:
    """The token (:func:`resolve_secret` over ``config.token_env``); None means anonymous (60
    requests/hour)."""
    return resolve_secret(secret_value, config.token_env)


def next_link(headers: Mapping[str, str]) -> str | None:
    """The ``rel="next"`` URL of a ``Link`` header, or None on the last page."""
    for url, rels in _LINK.findall(headers.get("link") or headers.get("Link") or ""):
        if "next" in rels.split():
            return url
    return None


def _published_filter(value: str) -> str:
    """``published`` search syntax: a bare date means "on or after"; a range passes as is."""
    value = value.strip()
    return value if value[:1] in "<>=" or ".." in value else f">={value}"


def _cwe_number(cwe: str) -> str:
    """``CWE-787`` -> ``787`` (the ``cwes`` query parameter takes numbers)."""
    text = cwe.strip()
    return text[4:] if text.upper().startswith("CWE-") else text


def _str_or_none(advisory: dict[str, Any], key: str) -> str | None:
    value = advisory.get(key)
    if value is not None and not isinstance(value, str):
        raise ValueError(f"{key} must be a string or null, got {type(value).__name__}")
    return value


def _list_of(advisory: dict[str, Any], key: str, kinds: tuple[type, ...]) -> list[Any]:
    value = advisory.get(key)
    if value is None:
        return []
    if not isinstance(value, list) or not all(isinstance(v, kinds) for v in value):
        names = "/".join(k.__name__ for k in kinds)
        raise ValueError(f"{key} must be a list of {names} or null")
    return value


def fixrefs_from_advisory(advisory: Any, where: str | None = None) -> list[FixRef] | SourceReject:
    """The fixes one REST advisory object names, or why it is refused.

    Args:
        advisory: one element of ``GET /advisories`` (``ghsa_id``, ``cve_id``, ``html_url``,
            ``published_at``, ``references`` (URL strings), ``cwes`` [{``cwe_id``}],
            ``identifiers`` [{``type``, ``value``}], ``vulnerabilities``...).
        where: where it was read (page URL and position), kept on rejects.

    Returns:
        One :class:`FixRef` per distinct fix commit, or a :class:`SourceReject`
        (``invalid_record``: not the documented shape, or withdrawn; ``no_fix_commit``).
    """
    if not isinstance(advisory, dict):
        detail = f"advisory must be an object, got {type(advisory).__name__}"
        return SourceReject(SOURCE, "invalid_record", detail, where=where)
    ghsa = advisory.get("ghsa_id")
    if not isinstance(ghsa, str) or not ghsa.strip():
        return SourceReject(SOURCE, "invalid_record", "ghsa_id missing", where=where)
    try:
        cve = _str_or_none(advisory, "cve_id")
        html_url = _str_or_none(advisory, "html_url")
        published = _str_or_none(advisory, "published_at")
        withdrawn = _str_or_none(advisory, "withdrawn_at")
        summary = _str_or_none(advisory, "summary")
        severity = _str_or_none(advisory, "severity")
        location = _str_or_none(advisory, "source_code_location")
        references = _list_of(advisory, "references", (str, dict))
        cwes = _list_of(advisory, "cwes", (dict,))
        identifiers = _list_of(advisory, "identifiers", (dict,))
        vulnerabilities = _list_of(advisory, "vulnerabilities", (dict,))
    except ValueError as exc:
        return SourceReject(SOURCE, "invalid_record", str(exc), vuln_id=ghsa, where=where)
    if withdrawn:
        detail = f"withdrawn on {withdrawn}"
        return SourceReject(SOURCE, "invalid_record", detail, vuln_id=ghsa, where=where)
    # REST references are URL strings; the repository-advisory/GraphQL shape has {"url": ...}
    urls = [r if isinstance(r, str) else r.get("url") for r in references]
    refs = commit_refs([u for u in urls if isinstance(u, str)])
    if not refs:
        detail = f"none of {len(urls)} references names a commit"
        return SourceReject(SOURCE, "no_fix_commit", detail, vuln_id=ghsa, where=where)
    aliases = [cve] if cve else []
    for ident in identifiers:
        value = ident.get("value")
        if ident.get("type") == "CVE" and isinstance(value, str) and value not in aliases:
            aliases.append(value)
    cwe_ids = [c["cwe_id"] for c in cwes if isinstance(c.get("cwe_id"), str)]
    packages = [
        f"{v['package'].get('ecosystem')}:{v['package'].get('name')}"
        for v in vulnerabilities
        if isinstance(v.get("package"), dict)
    ]
    meta: dict[str, Any] = {
        key: value
        for key, value in (
            ("summary", summary),
            ("severity", severity),
            ("source_code_location", location),
            ("packages", packages),
        )
        if value
    }
    return [
        FixRef(
            source=SOURCE,
            vuln_id=ghsa,
            repo=repo,
            fix_commit=sha,
            project=repo_name(repo),
            published=published,
            aliases=list(aliases),
            cwe=list(cwe_ids),
            url=html_url,
            meta={**meta, "short_sha": True} if is_short_sha(sha) else dict(meta),
        )
        for repo, sha in refs
    ]


class GitHubAdvisoryCollector(Collector):
    """Global GitHub security advisories with fix-commit references, page by page.

    The cursor holds ``next_url`` (the page to read next; absent on a first run), ``pages``
    (pages finished) and ``done``.
    """

    name: ClassVar[str] = SOURCE

    def __init__(self, config: GitHubSourceConfig, client: HttpClient):
        """Read advisories as ``config`` says, through ``client`` (headers from
        :func:`github_headers`)."""
        self.config = config
        self.client = client

    def first_page(self) -> tuple[str, dict[str, Any]]:
        """URL and query parameters of the first page."""
        params: dict[str, Any] = {
            "type": self.config.advisory_type,
            "per_page": self.config.per_page,
        }
        if self.config.cwes:
            # the API documents bare numbers (cwes=79,284,22); CWE-79 is accepted in the config
            params["cwes"] = ",".join(_cwe_number(c) for c in self.config.cwes)
        if self.config.published_since:
            params["published"] = _published_filter(self.config.published_since)
        return f"{self.config.api_url.rstrip('/')}/advisories", params

    def _page(self, url: str, params: dict[str, Any] | None) -> tuple[Any, str | None]:
        """One page's JSON and its next URL.

        The raw cache keeps a page's ``Link`` header beside its body; the last page (no next
        link) is fetched again when it came from the cache, so new advisories are seen.
        """
        data, response = self.client.get_json(url, params)
        link = next_link(response.headers)
        if response.from_cache and link is None:
            data, response = self.client.get_json(url, params, use_cache=False)
            link = next_link(response.headers)
        return data, link

    def iter_fixes(self, cursor: dict[str, Any]) -> Iterator[FixRef | SourceReject]:
        """Fixes of every advisory from the cursor's page on (see :class:`Collector`)."""
        if cursor.get("done"):
            return
        while True:
            url = cursor.get("next_url")
            params: dict[str, Any] | None = None
            if not url:
                url, params = self.first_page()
            try:
                data, link = self._page(url, params)
            except HttpError as exc:
                log.warning("github: stopping at %s: %s", exc.url, exc)
                yield SourceReject(SOURCE, exc.reason, str(exc), where=exc.url)
                return
            if not isinstance(data, list):
                detail = f"expected a JSON array of advisories, got {type(data).__name__}"
                yield SourceReject(SOURCE, "malformed_json", detail, where=url)
                return
            for index, advisory in enumerate(data):
                parsed = fixrefs_from_advisory(advisory, where=f"{url} [{index}]")
                yield from fixes_or_reject(parsed)
            cursor["pages"] = int(cursor.get("pages", 0)) + 1
            if link is None or not data:
                cursor.pop("next_url", None)
                cursor["done"] = True
                return
            cursor["next_url"] = link
