"""What collectors produce: fix references, labelled function versions and counted rejects.

A source yields :class:`FixRef` (an advisory naming a repository and a fix commit) and
:class:`SourceReject`; the fix extractor (or the offline source) turns a fix into
:class:`CollectedFunction` rows: the version before the fix (``target`` 1) and after it
(``target`` 0) of every function the fix changed. A ``CollectedFunction`` row is also a valid
generic JSONL input of the data loaders (``func``, ``target``, ``project``, ``id``, ``cwe``,
``commit_id``, ``weight``).

Output layout of one collection (``CollectConfig.output_dir``)::

    <source>/fixes.jsonl        FixRef rows (appended as pages arrive)
    <source>/functions.jsonl    CollectedFunction rows
    <source>/rejects.jsonl      SourceReject rows (source, id, commit, reason, detail)
    <source>/cursor.json        where a resumed collection continues
    <source>/raw/               the raw-response cache (one file per request)
    <source>/summary.json       that source's counts (written even when it stops early)
    collect_summary.json        counts per source: fixes, functions, rejects by reason, dedup
"""

from __future__ import annotations

import hashlib
from dataclasses import asdict, dataclass, field, fields
from typing import Any

FIXES_FILE = "fixes.jsonl"
FUNCTIONS_FILE = "functions.jsonl"
REJECTS_FILE = "rejects.jsonl"
CURSOR_FILE = "cursor.json"
RAW_DIR = "raw"
SUMMARY_FILE = "collect_summary.json"
SOURCE_SUMMARY_FILE = "summary.json"


@dataclass(slots=True)
class FixRef:
    """One advisory's fix: a repository and the commit that fixed the vulnerability.

    ``crash_state`` holds the frames of an OSS-Fuzz ``Crash state:`` block (empty elsewhere);
    ``url`` is where the advisory was read (API URL or file:line).
    """

    source: str
    vuln_id: str
    repo: str
    fix_commit: str
    project: str | None = None
    published: str | None = None
    aliases: list[str] = field(default_factory=list)
    cwe: list[str] = field(default_factory=list)
    crash_type: str | None = None
    crash_state: list[str] = field(default_factory=list)
    fix_is_exact: bool = True
    url: str | None = None
    meta: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        """Plain-JSON form."""
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> FixRef:
        """Inverse of :meth:`to_dict` (unknown keys go to ``meta``)."""
        names = {f.name for f in fields(cls)}
        ref = cls(**{k: v for k, v in data.items() if k in names})
        extra = {k: v for k, v in data.items() if k not in names}
        if extra:
            ref.meta = {**ref.meta, **extra}
        return ref

    @property
    def key(self) -> str:
        """Identity of the fix within a source (an advisory can name several fixes)."""
        return f"{self.source}:{self.vuln_id}:{self.repo}:{self.fix_commit}"


@dataclass(slots=True)
class CollectedFunction:
    """One version of a function changed by a fix commit, with its provenance.

    ``target`` is 1 for the version before the fix (``parent_commit``) and 0 after it
    (``fix_commit``); both versions of one change share ``pair_id``. ``provenance`` says where
    the row came from (source, advisory URL or file:line, extractor and its version).
    """

    id: str
    func: str
    target: int
    source: str
    project: str
    vuln_id: str
    repo: str
    fix_commit: str
    parent_commit: str
    file: str
    function: str
    pair_id: str
    published: str | None = None
    crash_type: str | None = None
    in_crash_state: bool | None = None
    n_changed_functions: int | None = None
    fix_is_exact: bool | None = None
    cwe: str | None = None
    commit_id: str | None = None
    provenance: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        """Plain-JSON form (a generic JSONL input of the loaders)."""
        row = asdict(self)
        row["commit_id"] = self.commit_id or self.fix_commit
        return row

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> CollectedFunction:
        """Inverse of :meth:`to_dict` (unknown keys are dropped into ``provenance['extra']``)."""
        names = {f.name for f in fields(cls)}
        row = cls(**{k: v for k, v in data.items() if k in names})
        extra = {k: v for k, v in data.items() if k not in names}
        if extra:
            row.provenance = {**row.provenance, "extra": extra}
        return row


@dataclass(slots=True)
class SourceReject:
    """Something a source or the extractor refused, counted with a stable reason code.

    Reasons used: ``malformed_json``, ``invalid_record``, ``http_error``, ``rate_limited``,
    ``timeout``, ``no_fix_commit``, ``commit_not_found``, ``empty_diff``, ``too_many_files``,
    ``parse_error``, ``function_renamed``, ``too_long``, ``repo_unavailable``,
    ``ambiguous_function`` (same-name definitions that cannot be paired), ``skipped_limit``
    (past ``FixExtractConfig.max_commits``).
    """

    source: str
    reason: str
    detail: str
    vuln_id: str | None = None
    repo: str | None = None
    commit: str | None = None
    file: str | None = None
    function: str | None = None
    where: str | None = None

    def to_dict(self) -> dict[str, Any]:
        """Plain-JSON form for ``rejects.jsonl``."""
        return asdict(self)

    def __str__(self) -> str:
        what = " ".join(f"{k}={v}" for k, v in (("id", self.vuln_id), ("commit", self.commit)) if v)
        return f"{self.source}: {self.reason}: {self.detail}" + (f" ({what})" if what else "")


def pair_id(repo: str, fix_commit: str, file: str, function: str, vuln_id: str) -> str:
    """16 hex characters shared by the two versions of one change (per advisory)."""
    text = "\x00".join((repo, fix_commit, file, function, vuln_id))
    return hashlib.blake2b(text.encode("utf-8", "surrogatepass"), digest_size=8).hexdigest()


def function_id(source: str, vuln_id: str, pair: str, target: int) -> str:
    """The row id of one version: ``<source>:<vuln_id>:<pair_id>:<pre|post>``."""
    return f"{source}:{vuln_id}:{pair}:{'pre' if target else 'post'}"
