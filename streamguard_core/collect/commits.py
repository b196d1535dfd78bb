"""Fix-commit URLs: which repository and which commit an advisory reference names.

Advisories (GitHub, NVD, OSV) point at fixes with web URLs of several forges. This module
turns one such URL into ``(repository URL, commit sha)``:

- GitHub: ``https://github.com/<owner>/<repo>/commit/<sha>`` (also ``commits/``,
  ``pull/<n>/commits/<sha>``, ``.patch``/``.diff`` suffixes, ``#diff-...`` anchors, query
  strings) and the API form ``https://api.github.com/repos/<owner>/<repo>/commits/<sha>``;
  the repository is ``https://github.com/<owner>/<repo>``.
- GitLab (gitlab.com or self-hosted, nested groups): ``<base>/<group>/<project>/-/commit/<sha>``
  (and the older form without ``/-``); the repository is ``<base>/<group>/<project>``.
- Bitbucket: ``https://bitbucket.org/<owner>/<repo>/commits/<sha>``.
- cgit (git.kernel.org and others): ``<repo>/commit/?id=<sha>`` (also ``patch/``, ``diff/``);
  the repository is the URL up to the ``/commit`` part.
- gitweb: ``<base>/?p=<project.git>;a=commit;h=<sha>`` (also ``a=commitdiff``, or no ``a``:
  ``<base>/gitweb.cgi?p=<project.git>;h=<sha>``); the
  repository is ``<base>/<project.git>``, which is the clone URL on sourceware.org-style
  hosts and a best guess elsewhere (``FixExtractConfig.repos`` overrides it).
- ``https://git.kernel.org/linus/<sha>``: Linus' tree.

Short shas (7-39 hex digits) are returned as they are; :func:`is_short_sha` tells them apart
so that a caller can flag them (``meta["short_sha"]``).
"""

from __future__ import annotations

import re
from urllib.parse import parse_qs, urlsplit

_SHA_PREFIX = re.compile(r"^([0-9a-fA-F]{7,40})(?:\.(?:patch|diff))?$")
_GITHUB_HOSTS = frozenset({"github.com", "www.github.com"})
_LINUS_TREE = "https://git.kernel.org/pub/scm/linux/kernel/git/torvalds/linux.git"
_CGIT_ACTIONS = frozenset({"commit", "patch", "diff"})
_GITWEB_ACTIONS = frozenset({"commit", "commitdiff", "patch"})

FULL_SHA_LENGTH = 40


def is_short_sha(sha: str) -> bool:
    """True when ``sha`` is an abbreviated commit id (fewer than 40 hex digits)."""
    return len(sha) < FULL_SHA_LENGTH


def repo_name(repo_url: str) -> str:
    """The project name of a repository URL: its last path part, lower-case, without ``.git``.

    ``https://github.com/FFmpeg/FFmpeg`` -> ``ffmpeg`` (OSS-Fuzz project names are lower-case).
    """
    path = urlsplit(repo_url).path.rstrip("/")
    last = path.rsplit("/", 1)[-1] if path else urlsplit(repo_url).netloc
    if last.endswith(".git"):
        last = last[: -len(".git")]
    return last.lower()


def _sha(text: str) -> str | None:
    """The commit id in one path segment (``<sha>``, ``<sha>.patch``), lower-case."""
    match = _SHA_PREFIX.match(text)
    return match.group(1).lower() if match else None


def _strip_git(name: str) -> str:
    return name[: -len(".git")] if name.endswith(".git") else name


def _github(parts: list[str]) -> tuple[str, str] | None:
    # owner/repo/commit/<sha>, owner/repo/commits/<sha>, owner/repo/pull/<n>/commits/<sha>
    if len(parts) < 4:
        return None
    owner, repo = parts[0], _strip_git(parts[1])
    rest = parts[2:]
    if len(rest) >= 2 and rest[0] in ("commit", "commits"):
        sha = _sha(rest[1])
    elif len(rest) >= 4 and rest[0] == "pull" and rest[1].isdigit() and rest[2] == "commits":
        sha = _sha(rest[3])
    else:
        return None
    if sha is None or not owner or not repo:
        return None
    return f"https://github.com/{owner}/{repo}", sha


def _github_api(parts: list[str]) -> tuple[str, str] | None:
    # repos/<owner>/<repo>/commits/<sha>
    if len(parts) >= 5 and parts[0] == "repos" and parts[3] in ("commits", "git"):
        sha = _sha(parts[-1])
        if sha is not None:
            return f"https://github.com/{parts[1]}/{_strip_git(parts[2])}", sha
    return None


def _gitlab_or_bitbucket(base: str, parts: list[str]) -> tuple[str, str] | None:
    # <group...>/<project>/-/commit/<sha>, <group>/<project>/commit/<sha>,
    # bitbucket <owner>/<repo>/commits/<sha>
    for i, part in enumerate(parts):
        if part == "-" and i + 2 < len(parts) and parts[i + 1] == "commit":
            project, sha_part = parts[:i], parts[i + 2]
            break
    else:
        if len(parts) == 4 and parts[2] in ("commit", "commits"):
            project, sha_part = parts[:2], parts[3]
        else:
            return None
    sha = _sha(sha_part)
    if sha is None or len(project) < 2:
        return None
    return f"{base}/{'/'.join(project[:-1])}/{_strip_git(project[-1])}", sha


def _cgit(base: str, path: str, query: dict[str, list[str]]) -> tuple[str, str] | None:
    # <repo path>/commit/?id=<sha> (also /patch/, /diff/), or <repo>/commit/<sha>
    segments = path.rstrip("/").split("/")
    for i in range(len(segments) - 1, 0, -1):
        if segments[i] not in _CGIT_ACTIONS:
            continue
        tail = segments[i + 1 :]
        # the path form (<repo>/commit/<sha>) only for "commit": "patch/<digits>" is patchwork
        path_sha = tail if len(tail) == 1 and segments[i] == "commit" else []
        candidates = query.get("id", []) + path_sha
        for candidate in candidates:
            sha = _sha(candidate)
            if sha is not None:
                repo_path = "/".join(segments[:i]).rstrip("/")
                return (f"{base}{repo_path}", sha) if repo_path else None
        return None
    return None


def _gitweb(base: str, path: str, raw_query: str) -> tuple[str, str] | None:
    # ?p=<project.git>;a=commit;h=<sha> (gitweb separates parameters with ';' or '&')
    params: dict[str, str] = {}
    for item in re.split(r"[;&]", raw_query):
        key, sep, value = item.partition("=")
        if sep:
            params.setdefault(key, value)
    # without ``a``, gitweb shows the object ``h`` names: a commit when ``h`` is a commit id
    if params.get("a", "commit") not in _GITWEB_ACTIONS or not params.get("p"):
        return None
    sha = _sha(params.get("h", ""))
    if sha is None:
        return None
    directory = path if path.endswith("/") else path.rsplit("/", 1)[0] + "/"
    return f"{base}{directory}{params['p'].strip('/')}", sha


def parse_commit_url(url: str) -> tuple[str, str] | None:
    """The repository URL and commit sha a fix-commit web URL names, or None.

    Args:
        url: a reference URL from an advisory (any forge; non-commit URLs are fine).

    Returns:
        ``(repository URL, lower-case sha)``; the sha can be short (7-39 hex digits, see
        :func:`is_short_sha`). None when the URL does not name one commit (a release, an issue,
        a compare range, a pull request without a commit, a bare repository).
    """
    if not isinstance(url, str):
        return None
    text = url.strip()
    try:
        parts = urlsplit(text)
    except ValueError:
        return None
    if parts.scheme not in ("http", "https") or not parts.netloc:
        return None
    host = parts.netloc.lower().split("@")[-1]
    scheme = "https" if host in _GITHUB_HOSTS or host == "api.github.com" else parts.scheme
    base = f"{scheme}://{host}"
    segments = [s for s in parts.path.split("/") if s]

    if host in _GITHUB_HOSTS:
        return _github(segments)
    if host == "api.github.com":
        return _github_api(segments)
    if host in ("git.kernel.org", "kernel.org") and len(segments) == 2 and segments[0] == "linus":
        sha = _sha(segments[1])
        return (_LINUS_TREE, sha) if sha else None
    if "p=" in parts.query:
        found = _gitweb(base, parts.path or "/", parts.query)
        if found is not None:
            return found
    if "-" in segments:
        return _gitlab_or_bitbucket(base, segments)
    return _cgit(base, parts.path, parse_qs(parts.query)) or _gitlab_or_bitbucket(base, segments)


def commit_refs(urls: list[str]) -> list[tuple[str, str]]:
    """Distinct ``(repository, sha)`` of the commit URLs among ``urls``, in first-seen order.

    The same commit named twice (``.../commit/<sha>`` and ``.../commit/<sha>.patch``) counts
    once, and a short sha that abbreviates a full one of the same repository is dropped.
    """
    found: list[tuple[str, str]] = []
    for url in urls:
        ref = parse_commit_url(url)
        if ref is not None and ref not in found:
            found.append(ref)
    return [
        (repo, sha)
        for repo, sha in found
        if not is_short_sha(sha)
        or not any(r == repo and s != sha and s.startswith(sha) for r, s in found)
    ]
