"""The git fix extractor: (repository, fix commit) -> the changed functions, before and after.

For one :class:`~streamguard_core.collect.records.FixRef` the extractor

1. keeps one bare repository per remote in ``<cache_dir>/<slug>.git`` (``git init --bare`` and a
   remote ``origin``; ``gc.auto=0`` and a ``refs/fixes/<sha>`` ref per fetched commit so that
   nothing fetched is ever pruned);
2. fetches the fix commit and its parent, blobless and shallow:
   ``git fetch --filter=blob:none --depth=2 --no-tags origin <sha>``; a commit already in the
   cache (with its parents) is not fetched again. The blobs of the changed files are fetched
   afterwards in one request (the partial clone's lazy fetch would ask once per blob);
3. rejects merge and root commits, lists the files changed between parent and fix
   (``git diff-tree -r --no-renames``): only modified C/C++ files count, test, fuzzing, example
   and benchmark paths and fuzz harnesses are left out;
4. reads both versions of every file (``git cat-file``; UTF-8, invalid bytes as U+FFFD), extracts
   the function definitions (:mod:`.functions`), pairs them by qualified name (by declarator
   when a name repeats, left out when that stays ambiguous) and keeps the pairs whose texts
   differ once comments and all whitespace are removed;
5. gives two :class:`~streamguard_core.collect.records.CollectedFunction` rows per kept change
   (``target`` 1 before the fix, 0 after it) and a counted
   :class:`~streamguard_core.collect.records.SourceReject` for everything left out.

The transports behave the same for an ``https://`` remote, a ``file://`` URL and a plain local
path (how the tests run). What git (2.39 here) requires of the serving side, found by trying it
(the tests exercise the first point over protocol v2 and both cases of the second):

* fetching a commit by its sha needs no server setting with protocol v2 (git's default since
  2.26): ``upload-pack`` serves any object it has. Only a protocol v0 server refuses an
  unadvertised sha unless ``uploadpack.allowAnySHA1InWant`` (or ``allowReachableSHA1InWant``)
  is set; the extractor then falls back to fetching every branch and tag (blobless, full depth).
* ``--filter=blob:none`` takes effect only when the server sets ``uploadpack.allowFilter``
  (GitHub and GitLab do); otherwise git warns "filtering not recognized by server, ignoring" and
  the fetch is a full one of depth 2, which is correct, only larger. No fallback is needed.
* ``-c protocol.file.allow=always`` is not needed: ``file`` is allowed for commands a user runs
  (git restricts it only for submodules since 2.38.1), including the partial clone's lazy fetch.

Presence checks use ``git rev-list --missing=allow-any --no-walk`` rather than ``git cat-file
-e``: in a partial clone, ``cat-file -e`` of a missing object asks the remote for it (a fetch
that this extractor would neither count nor bound), ``rev-list --missing=...`` does not.

Fetches into one cache repository hold a file lock (``<slug>.lock``), so extractors in several
threads or processes can share a cache. Git runs with a clean environment (no user or system
config, no terminal prompt, ssh in batch mode, ``LC_ALL=C``), each command under a timeout (its
process group is killed on expiry), and its stderr (credentials in URLs redacted) goes into the
detail of the reject it causes.
"""

from __future__ import annotations

import fcntl
import hashlib
import os
import re
import signal
import subprocess
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath

from streamguard_core.collect.commits import FULL_SHA_LENGTH, repo_name
from streamguard_core.collect.functions import (
    FunctionDef,
    choose_language,
    code_tokens,
    extract_functions,
    language_for,
)
from streamguard_core.collect.records import (
    CollectedFunction,
    FixRef,
    SourceReject,
    function_id,
    pair_id,
)
from streamguard_core.config import FixExtractConfig

EXTRACTOR = "git"
DEFAULT_GIT_TIMEOUT_S: float = FixExtractConfig.model_fields["git_timeout_s"].default
"""Seconds one git command may run (``FixExtractConfig.git_timeout_s``)."""

_HEX_RE = re.compile(r"^[0-9a-f]{4,40}$")
_CREDENTIALS_RE = re.compile(r"(?i)\b([a-z][a-z0-9+.-]*://)[^/@\s]+@")
_SCP_LIKE_RE = re.compile(r"^[\w.-]+@[\w.-]+:|^[\w-]+(\.[\w-]+)+:")
_SLUG_RE = re.compile(r"[^A-Za-z0-9._-]+")
_TEMPLATE_ARGS_RE = re.compile(r"<[^<>]*>")
_PARAMS_RE = re.compile(r"(?<!operator)\(.*$")  # a parameter list, not `operator()`
_DETAIL_CHARS = 600

# Paths left out (section 3 step 2 of ../shared/data/README.md): test, fuzzing, example and
# benchmark directories, and fuzz harnesses / test files by name.
_EXCLUDED_DIRS = frozenset(
    [
        "test",
        "tests",
        "testing",
        "testsuite",
        "test-suite",
        "unittest",
        "unittests",
        "example",
        "examples",
        "bench",
        "benches",
        "benchmark",
        "benchmarks",
    ]
)
_ENV_PASSTHROUGH = (
    "PATH",
    "HOME",
    "TMPDIR",
    "SYSTEMROOT",
    "SSH_AUTH_SOCK",
    "SSL_CERT_FILE",
    "SSL_CERT_DIR",
    "HTTP_PROXY",
    "HTTPS_PROXY",
    "ALL_PROXY",
    "NO_PROXY",
    "http_proxy",
    "https_proxy",
    "all_proxy",
    "no_proxy",
)


def redact(text: str) -> str:
    """``text`` with the user-info part of URLs (``https://user:token@host``) replaced."""
    return _CREDENTIALS_RE.sub(r"\1***@", text)


def is_excluded_path(path: str) -> bool:
    """Whether a changed file is test, fuzzing, example or benchmark code (left out)."""
    parts = [p.lower() for p in PurePosixPath(path).parts]
    *dirs, name = parts or [""]
    for part in dirs:
        if part in _EXCLUDED_DIRS or "fuzz" in part or part.startswith(("test_", "tests_")):
            return True
    stem = name.rsplit(".", 1)[0]
    return (
        "fuzz" in name
        or "unittest" in name
        or stem.startswith("test_")
        or stem.endswith(("_test", "_tests", "_unittest"))
    )


def _components(name: str) -> list[str]:
    """A qualified name (or crash frame) without template arguments, split at ``::``."""
    previous = None
    while previous != name:
        previous, name = name, _TEMPLATE_ARGS_RE.sub("", name)
    name = _PARAMS_RE.sub("", name).strip()
    name = name.rsplit(" ", 1)[-1] if " " in name and "operator" not in name else name
    return [part.strip() for part in name.split("::") if part.strip()]


def in_crash_state(function: str, frames: list[str]) -> bool:
    """Whether a qualified name, templates removed, ends one of the frames or the other way round.

    Names are compared by whole ``::`` components, so ``apply`` matches
    ``OT::ChainContextFormat3::apply`` and ``pcpp::Layer::parse`` matches ``Layer::parse``.
    """
    name = _components(function)
    if not name:
        return False
    for frame in frames:
        parts = _components(frame)
        if not parts:
            continue
        n = min(len(parts), len(name))
        if parts[-n:] == name[-n:]:
            return True
    return False


def repo_slug(url: str) -> str:
    """A directory name for a remote: its URL in safe characters plus a short hash."""
    readable = _SLUG_RE.sub("_", re.sub(r"^[a-z][a-z0-9+.-]*://", "", redact(url))).strip("._-")
    digest = hashlib.blake2b(url.encode("utf-8", "surrogatepass"), digest_size=4).hexdigest()
    return f"{readable[-80:].lstrip('._-') or 'repo'}-{digest}"


def _is_local(url: str) -> bool:
    return "://" not in url and not _SCP_LIKE_RE.match(url)


@dataclass(frozen=True, slots=True)
class _Change:
    """One changed function of a commit: both versions."""

    file: str
    language: str
    name: str
    before: FunctionDef
    after: FunctionDef


@dataclass(frozen=True, slots=True)
class _Refusal:
    """Why a commit (or part of it) gives no rows: a reject without the advisory's fields."""

    reason: str
    detail: str
    file: str | None = None
    function: str | None = None


@dataclass(slots=True)
class _CommitResult:
    """What one fix commit gives, whichever advisory names it."""

    fix_commit: str
    parent_commit: str = ""
    changes: list[_Change] = field(default_factory=list)
    refusals: list[_Refusal] = field(default_factory=list)
    n_changed: int = 0


class _GitFailure(Exception):
    """A git command failed; ``reason`` is the reject reason it maps to."""

    def __init__(self, reason: str, detail: str) -> None:
        super().__init__(detail)
        self.reason = reason
        self.detail = detail


class FixExtractor:
    """Turns fix references into labelled function versions through cached git repositories.

    Args:
        config: the extraction settings (repository overrides, limits).
        cache_dir: where the bare repositories are kept (one per remote).
        git: the git executable.
        timeout_s: seconds one git command may run.

    Attributes:
        fetch_count: ``git fetch`` commands run by this extractor (cached commits run none).
    """

    def __init__(
        self,
        config: FixExtractConfig,
        cache_dir: str | Path,
        *,
        git: str = "git",
        timeout_s: float = DEFAULT_GIT_TIMEOUT_S,
    ) -> None:
        self.config = config
        self.cache_dir = Path(cache_dir)
        self.git = git
        self.timeout_s = timeout_s
        self.fetch_count = 0
        self._env = self._clean_env()
        self._git_version: str | None = None
        self._commits: set[tuple[str, str]] = set()  # (remote, sha) counted for max_commits
        self._results: dict[tuple[str, str], _CommitResult | _Refusal] = {}
        self._unavailable: dict[str, _Refusal] = {}  # remote -> why it cannot be fetched
        self._fetched_all: set[str] = set()  # remotes whose branches/tags were fetched

    # ------------------------------------------------------------------ public API

    @property
    def git_version(self) -> str:
        """``git --version`` of the executable used (``unknown`` when it does not run)."""
        if self._git_version is None:
            try:
                out = self._run(["--version"], cwd=None).strip()
                self._git_version = out.removeprefix("git version ").strip() or "unknown"
            except _GitFailure:
                self._git_version = "unknown"
        return self._git_version

    def resolve_repo(self, ref: FixRef) -> str:
        """The remote to fetch for ``ref``: ``config.repos`` by project name or by repository
        URL (with or without a trailing ``/`` or ``.git``), else ``ref.repo``; local paths are
        made absolute."""
        repos = self.config.repos
        url = None
        if ref.project and ref.project in repos:
            url = repos[ref.project]
        else:
            for key in _url_variants(ref.repo):
                if key in repos:
                    url = repos[key]
                    break
        url = url or ref.repo
        if _is_local(url):
            url = str(Path(url).expanduser().resolve())
        return url

    def extract(self, ref: FixRef) -> tuple[list[CollectedFunction], list[SourceReject]]:
        """Both versions of every function ``ref``'s fix commit changed, and the rejects."""
        sha = (ref.fix_commit or "").strip().lower()
        if not _HEX_RE.match(sha):
            return [], [self._reject(ref, _Refusal("invalid_record", f"not a commit id: {sha!r}"))]
        url = self.resolve_repo(ref)
        key = (url, sha)
        limit = self.config.max_commits
        if key not in self._commits and limit is not None and len(self._commits) >= limit:
            refusal = _Refusal("skipped_limit", f"max_commits={limit} commits already extracted")
            return [], [self._reject(ref, refusal)]
        self._commits.add(key)
        result = self._results.get(key)
        if result is None:
            result = self._extract_commit(url, sha)
            self._results[key] = result
        if isinstance(result, _Refusal):
            return [], [self._reject(ref, result)]
        rows = self._rows(ref, url, result)
        return rows, [self._reject(ref, r, result.fix_commit) for r in result.refusals]

    # ------------------------------------------------------------------ rows

    def _rows(self, ref: FixRef, url: str, result: _CommitResult) -> list[CollectedFunction]:
        project = ref.project or repo_name(ref.repo)
        provenance = {
            "source": ref.source,
            "advisory": ref.url,
            "extractor": EXTRACTOR,
            "repo": redact(url),
            "git_version": self.git_version,
        }
        rows: list[CollectedFunction] = []
        for change in result.changes:
            pair = pair_id(ref.repo, result.fix_commit, change.file, change.name, ref.vuln_id)
            crash = in_crash_state(change.name, ref.crash_state) if ref.crash_state else None
            for target, version in ((1, change.before), (0, change.after)):
                rows.append(
                    CollectedFunction(
                        id=function_id(ref.source, ref.vuln_id, pair, target),
                        func=version.text,
                        target=target,
                        source=ref.source,
                        project=project,
                        vuln_id=ref.vuln_id,
                        repo=ref.repo,
                        fix_commit=result.fix_commit,
                        parent_commit=result.parent_commit,
                        file=change.file,
                        function=change.name,
                        pair_id=pair,
                        published=ref.published,
                        crash_type=ref.crash_type,
                        in_crash_state=crash,
                        n_changed_functions=result.n_changed,
                        fix_is_exact=ref.fix_is_exact,
                        cwe=ref.cwe[0] if ref.cwe else None,
                        commit_id=result.fix_commit,
                        provenance={**provenance, "language": change.language},
                    )
                )
        return rows

    def _reject(self, ref: FixRef, refusal: _Refusal, commit: str | None = None) -> SourceReject:
        return SourceReject(
            source=ref.source,
            reason=refusal.reason,
            detail=refusal.detail,
            vuln_id=ref.vuln_id,
            repo=ref.repo,
            commit=commit or ref.fix_commit,
            file=refusal.file,
            function=refusal.function,
            where=ref.url,
        )

    # ------------------------------------------------------------------ one commit

    def _extract_commit(self, url: str, sha: str) -> _CommitResult | _Refusal:
        """Fetch (when needed) and read one commit; a refusal when it gives nothing at all."""
        if url in self._unavailable:
            return self._unavailable[url]
        try:
            repo = self.cache_dir / f"{repo_slug(url)}.git"
            with _locked(repo):
                self._init_repository(repo, url)
                full = self._ensure_commit(repo, url, sha)
            if full is None:
                return _Refusal("commit_not_found", f"{sha} is not in {redact(url)}")
            parents = self._parents(repo, full)
            if not parents:
                return _Refusal("invalid_record", f"root commit {full}: no parent to compare")
            if len(parents) > 1:
                return _Refusal("invalid_record", f"merge commit {full} ({len(parents)} parents)")
            return self._changes(repo, full, parents[0])
        except _GitFailure as exc:
            return _Refusal(exc.reason, exc.detail)
        except OSError as exc:  # the cache directory cannot be written
            return _Refusal("repo_unavailable", f"cache {self.cache_dir}: {exc}")

    def _changes(self, repo: Path, fix: str, parent: str) -> _CommitResult:
        """The changed functions between ``parent`` and ``fix`` and what was left out."""
        result = _CommitResult(fix_commit=fix, parent_commit=parent)
        files = self._changed_files(repo, parent, fix)
        limit = self.config.max_files_per_commit
        if len(files) > limit:
            detail = f"{len(files)} C/C++ files modified (max_files_per_commit={limit})"
            result.refusals.append(_Refusal("too_many_files", detail))
            return result
        if not files:
            result.refusals.append(_Refusal("empty_diff", "no modified C/C++ source file"))
            return result
        with _locked(repo):
            self._prefetch(repo, [oid for _, old, new in files for oid in (old, new)])
        changes: list[_Change] = []
        for path, old, new in files:
            before_text, after_text = self._blob_text(repo, old), self._blob_text(repo, new)
            language = choose_language(path, before_text, after_text) or "c"
            before, before_errors = extract_functions(before_text, language)
            after, after_errors = extract_functions(after_text, language)
            broken = [
                when
                for when, defs, errors in (
                    ("before", before, before_errors),
                    ("after", after, after_errors),
                )
                if errors and not defs
            ]
            if broken:
                detail = f"no function read, parse errors ({language}): {'/'.join(broken)} the fix"
                result.refusals.append(_Refusal("parse_error", detail, file=path))
                continue
            pairs, refusals = _pair(path, before, after)
            result.refusals.extend(refusals)
            for name, b, a in pairs:
                if code_tokens(b.text) != code_tokens(a.text):
                    changes.append(_Change(path, language, name, b, a))
        result.n_changed = len(changes)
        max_chars = self.config.max_func_chars
        for change in changes:
            longest = max(len(change.before.text), len(change.after.text))
            if longest > max_chars:
                detail = f"{longest} characters (max_func_chars={max_chars})"
                result.refusals.append(_Refusal("too_long", detail, change.file, change.name))
            else:
                result.changes.append(change)
        if not changes:
            detail = f"no function changed (beyond comments and whitespace) in {len(files)} file(s)"
            result.refusals.append(_Refusal("empty_diff", detail))
        return result

    # ------------------------------------------------------------------ git

    def _clean_env(self) -> dict[str, str]:
        env = {k: os.environ[k] for k in _ENV_PASSTHROUGH if k in os.environ}
        env.update(
            GIT_TERMINAL_PROMPT="0",
            GIT_CONFIG_GLOBAL=os.devnull,
            GIT_CONFIG_NOSYSTEM="1",
            GIT_SSH_COMMAND="ssh -o BatchMode=yes",
            LC_ALL="C",
        )
        return env

    def _run(self, args: list[str], cwd: Path | None) -> str:
        """Run one git command; its stdout as text (see :meth:`_run_bytes`)."""
        return self._run_bytes(args, cwd).decode("utf-8", "replace")

    def _run_bytes(self, args: list[str], cwd: Path | None) -> bytes:
        """Run one git command in the repository ``cwd``; its stdout.

        Raises:
            _GitFailure: ``timeout`` past :attr:`timeout_s`, else ``repo_unavailable`` with
                git's (redacted) stderr.
        """
        cmd = [self.git, *(["--git-dir", str(cwd)] if cwd is not None else []), *args]
        try:
            proc = subprocess.Popen(
                cmd,
                stdin=subprocess.DEVNULL,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                env=self._env,
                start_new_session=True,  # a timeout kills git and the helpers it started
            )
        except OSError as exc:
            raise _GitFailure("repo_unavailable", f"cannot run {self.git}: {exc}") from exc
        try:
            out, err = proc.communicate(timeout=self.timeout_s)
        except subprocess.TimeoutExpired as exc:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.communicate()
            what = " ".join(args[:2])
            raise _GitFailure("timeout", f"git {what} ran over {self.timeout_s:g} s") from exc
        if proc.returncode != 0:
            message = redact(err.decode("utf-8", "replace").strip())[-_DETAIL_CHARS:]
            raise _GitFailure(
                "repo_unavailable", f"git {args[0]} exited {proc.returncode}: {message}".strip()
            )
        return out

    def _init_repository(self, repo: Path, url: str) -> None:
        """Create the bare repository of a remote on first use; point ``origin`` at ``url``.

        A URL with credentials (``https://user:token@host/...``) is stored without them: git
        rewrites the stored URL back to ``url`` in memory (``url.<url>.insteadOf``, passed in
        the environment of its commands), so no token lands in the cache's config on disk.
        """
        public = redact(url).replace("***@", "", 1)
        rewrite = f"url.{url}.insteadOf"
        if public != url and rewrite not in self._env.values():
            n = int(self._env.get("GIT_CONFIG_COUNT", "0"))
            self._env.update({"GIT_CONFIG_COUNT": str(n + 1), f"GIT_CONFIG_KEY_{n}": rewrite,
                              f"GIT_CONFIG_VALUE_{n}": public})  # fmt: skip
        try:
            if not (repo / "HEAD").exists():
                self._run(["init", "--quiet", "--bare", str(repo)], cwd=None)
            try:
                current = self._run(["config", "--get", "remote.origin.url"], cwd=repo).strip()
            except _GitFailure:  # new (or interrupted right after init)
                self._run(["config", "gc.auto", "0"], cwd=repo)  # never prune fetched commits
                self._run(["remote", "add", "origin", public], cwd=repo)
            else:
                if current != public:
                    self._run(["remote", "set-url", "origin", public], cwd=repo)
        except (_GitFailure, OSError) as exc:
            detail = exc.detail if isinstance(exc, _GitFailure) else str(exc)
            raise _GitFailure("repo_unavailable", f"cache {repo}: {detail}") from exc

    def _has(self, repo: Path, *objects: str) -> bool:
        """Whether every object is in the repository (asks no remote, unlike cat-file -e)."""
        try:
            self._run(["rev-list", "--missing=allow-any", "--no-walk", *objects], cwd=repo)
        except _GitFailure:
            return False
        return True

    def _resolve(self, repo: Path, sha: str) -> str | None:
        """The full id of a (possibly abbreviated) commit present in the repository."""
        if len(sha) == FULL_SHA_LENGTH:
            return sha if self._has(repo, sha) else None
        try:
            out = self._run(["rev-parse", "--verify", "--quiet", f"{sha}^{{commit}}"], cwd=repo)
        except _GitFailure:
            return None
        return out.strip() or None

    def _complete(self, repo: Path, full: str) -> bool:
        """Whether a present commit's parents are present too (not a shallow boundary)."""
        parents = self._parents(repo, full)
        return not parents or self._has(repo, *parents)

    def _ensure_commit(self, repo: Path, url: str, sha: str) -> str | None:
        """The full id of ``sha`` with its parents in the cache, fetching them when missing.

        Returns None when the remote does not have the commit.

        Raises:
            _GitFailure: the remote cannot be fetched (``repo_unavailable``) or timed out.
        """
        full = self._resolve(repo, sha)
        if full is not None and self._complete(repo, full):
            return full
        if len(sha) == FULL_SHA_LENGTH:
            try:
                self._fetch(repo, [sha], depth=2)
            except _GitFailure as exc:
                if exc.reason == "timeout":
                    raise
                if "not our ref" in exc.detail:  # the server has no such object
                    return None
                self._fetch_all(repo, url, exc.detail)
        else:  # an abbreviated id cannot be fetched by itself: fetch the branches and tags
            self._fetch_all(repo, url, "abbreviated commit id")
        full = self._resolve(repo, sha)
        if full is None:
            return None
        self._run(["update-ref", f"refs/fixes/{full}", full], cwd=repo)
        return full

    def _fetch(self, repo: Path, wants: list[str], depth: int | None) -> None:
        args = ["fetch", "--quiet", "--filter=blob:none", "--no-tags", "--no-write-fetch-head"]
        if depth is not None:
            args.append(f"--depth={depth}")
        self.fetch_count += 1
        self._run([*args, "origin", *wants], cwd=repo)

    def _fetch_all(self, repo: Path, url: str, why: str) -> None:
        """Fetch every branch and tag (once per remote and extractor): for servers that refuse
        a commit by id, and for abbreviated ids."""
        if url in self._fetched_all:
            return
        try:
            self._fetch(
                repo,
                ["+refs/heads/*:refs/remotes/origin/*", "+refs/tags/*:refs/tags/*"],
                depth=None,
            )
        except _GitFailure as exc:
            if exc.reason == "timeout":
                raise
            detail = f"{redact(url)}: {why}; {exc.detail}"[-_DETAIL_CHARS:]
            self._unavailable[url] = _Refusal("repo_unavailable", detail)
            raise _GitFailure("repo_unavailable", detail) from exc
        self._fetched_all.add(url)

    def _parents(self, repo: Path, commit: str) -> list[str]:
        """Parent ids read from the commit object itself (a shallow graft does not hide them)."""
        raw = self._run(["cat-file", "commit", commit], cwd=repo)
        header = raw.split("\n\n", 1)[0]
        return [line.split()[1] for line in header.splitlines() if line.startswith("parent ")]

    def _changed_files(self, repo: Path, parent: str, fix: str) -> list[tuple[str, str, str]]:
        """(path, blob before, blob after) of the modified C/C++ files kept for extraction."""
        raw = self._run_bytes(
            ["diff-tree", "-r", "--no-renames", "--raw", "-z", parent, fix], cwd=repo
        ).decode("utf-8", "surrogateescape")
        fields = raw.split("\0")
        files: list[tuple[str, str, str]] = []
        for meta, path in zip(fields[0::2], fields[1::2], strict=False):
            parts = meta.lstrip(":").split()
            if len(parts) != 5 or parts[4] != "M":
                continue
            if not (parts[0].startswith("100") and parts[1].startswith("100")):
                continue  # a symlink or submodule, not a source file
            if language_for(path) is None or is_excluded_path(path):
                continue
            files.append((path, parts[2], parts[3]))
        return files

    def _prefetch(self, repo: Path, blobs: list[str]) -> None:
        """Fetch the missing blobs in one request (best effort: cat-file fetches lazily)."""
        wanted = sorted(set(blobs))
        if not wanted or self._has(repo, *wanted):
            return
        try:
            self._fetch(repo, wanted, depth=None)
        except _GitFailure as exc:
            if exc.reason == "timeout":
                raise

    def _blob_text(self, repo: Path, blob: str) -> str:
        """A blob's text, UTF-8 with invalid bytes as U+FFFD."""
        return self._run_bytes(["cat-file", "blob", blob], cwd=repo).decode("utf-8", "replace")


@contextmanager
def _locked(repo: Path) -> Iterator[None]:
    """Hold ``<repo>.lock`` exclusively: fetches into one cache repository never overlap (git's
    own ``shallow.lock`` would fail a concurrent shallow fetch), across threads and processes."""
    repo.parent.mkdir(parents=True, exist_ok=True)
    with open(repo.with_suffix(".lock"), "a") as handle:
        fcntl.flock(handle.fileno(), fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle.fileno(), fcntl.LOCK_UN)


def _url_variants(url: str) -> list[str]:
    """A repository URL as written, and without / with a trailing ``/`` or ``.git``."""
    base = url.rstrip("/")
    base = base[: -len(".git")] if base.endswith(".git") else base
    return list(dict.fromkeys([url, base, base + ".git", base + "/"]))


def _pair(
    path: str, before: list[FunctionDef], after: list[FunctionDef]
) -> tuple[list[tuple[str, FunctionDef, FunctionDef]], list[_Refusal]]:
    """Pair the definitions of two versions of a file by qualified name (then by declarator).

    Returns the pairs and the refusals: ambiguous same-name definitions (``duplicate``) and
    functions gone after the fix (``function_renamed``, the detail says renamed or removed).
    """
    by_name_before: dict[str, list[FunctionDef]] = {}
    by_name_after: dict[str, list[FunctionDef]] = {}
    for defs, table in ((before, by_name_before), (after, by_name_after)):
        for d in defs:
            table.setdefault(d.name, []).append(d)
    pairs: list[tuple[str, FunctionDef, FunctionDef]] = []
    refusals: list[_Refusal] = []
    for name, olds in by_name_before.items():
        news = by_name_after.get(name)
        if news is None:
            continue
        if len(olds) == 1 and len(news) == 1:
            pairs.append((name, olds[0], news[0]))
            continue
        old_sigs = Counter(d.signature for d in olds)
        new_sigs = Counter(d.signature for d in news)
        left = 0
        for d in olds:
            if old_sigs[d.signature] == 1 and new_sigs[d.signature] == 1:
                match = next(n for n in news if n.signature == d.signature)
                pairs.append((name, d, match))
            else:
                left += 1
        if left:
            detail = (
                f"{left} of {len(olds)} definitions (before; {len(news)} after) not told apart "
                "by their declarator"
            )
            refusals.append(_Refusal("ambiguous_function", detail, path, name))
    added = {name: defs for name, defs in by_name_after.items() if name not in by_name_before}
    added_bodies = {code_tokens(d.body): name for name, defs in added.items() for d in defs}
    for name, olds in by_name_before.items():
        if name in by_name_after:
            continue
        for d in olds:
            new_name = added_bodies.get(code_tokens(d.body))
            detail = f"renamed to {new_name} by the fix" if new_name else "removed by the fix"
            refusals.append(_Refusal("function_renamed", detail, path, name))
    return pairs, refusals
