"""The C/C++ source files a scan reads: files, directories or the new side of a git diff.

Every candidate becomes a :class:`SourceFile` or a :class:`Skipped` with one of these reasons
(stable codes): ``not_found``, ``not_c_cpp`` (a file named on the command line that is not
C/C++; inside directories other files are simply not candidates), ``not_regular`` (a FIFO or
device), ``symlink_loop``, ``symlink_outside`` (a link leaving the scanned directory),
``duplicate`` (the same file reached twice), ``unreadable``, ``too_large``, ``binary`` (a NUL
byte in the first 8 KiB). Nothing raises for one bad file.

Inside a git work tree a directory is listed with ``git ls-files --cached --others
--exclude-standard`` (``.gitignore`` respected); elsewhere with a sorted walk that skips
``.git/`` and follows no directory link (a link to a directory inside the scanned one is read
at its real path; a loop or a link leaving it is reported).
"""

from __future__ import annotations

import codecs
import errno
import os
import re
import shutil
import stat
import subprocess
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

from streamguard_core.collect.functions import language_for
from streamguard_core.config import ScanConfig

MAX_FILE_BYTES: int = ScanConfig.model_fields["max_file_bytes"].default
BINARY_PROBE_BYTES = 8192
LineRange = tuple[int, int]
_HUNK_RE = re.compile(r"^@@ -\d+(?:,\d+)? \+(\d+)(?:,(\d+))? @@")


class ScanError(Exception):
    """A scan that cannot start (bad revision range, not a git repository)."""


@dataclass(frozen=True, slots=True)
class SourceFile:
    """A readable C/C++ file: its path as shown to the user, text and grammar.

    ``changed`` (git diff scans only) holds the new side's changed line ranges, inclusive; a
    pure deletion after line ``c`` is the empty range ``(c + 1, c)``, so that a function
    ``[s, e]`` is touched by a range ``(a, b)`` exactly when ``s <= b and a <= e``.
    """

    path: str
    text: str
    language: str
    changed: tuple[LineRange, ...] | None = None

    def touches(self, start_line: int, end_line: int) -> bool:
        """Whether a span of lines overlaps a changed range (always True outside diff scans)."""
        if self.changed is None:
            return True
        return any(start_line <= b and a <= end_line for a, b in self.changed)


@dataclass(frozen=True, slots=True)
class Skipped:
    """A file (or function, ``path:start-end``) left out of the scan, with a reason code."""

    path: str
    reason: str
    detail: str = ""


def _decode(data: bytes, path: str, language: str, max_bytes: int) -> SourceFile | Skipped:
    """A file's bytes checked for size and NUL bytes, then decoded (invalid UTF-8 replaced)."""
    if len(data) > max_bytes:
        return Skipped(path, "too_large", f"{len(data)} bytes > {max_bytes}")
    if b"\0" in data[:BINARY_PROBE_BYTES]:
        return Skipped(path, "binary", f"NUL byte in the first {BINARY_PROBE_BYTES} bytes")
    return SourceFile(path, data.decode("utf-8", errors="replace"), language)


def read_source(
    path: str, real: Path, *, max_file_bytes: int = MAX_FILE_BYTES
) -> SourceFile | Skipped:
    """Read one regular file (``real``, already resolved) shown as ``path``."""
    language = language_for(path)
    if language is None:
        return Skipped(path, "not_c_cpp", "not a C/C++ suffix")
    try:
        info = real.stat()
        if not stat.S_ISREG(info.st_mode):
            return Skipped(path, "not_regular", "not a regular file")
        if info.st_size > max_file_bytes:
            return Skipped(path, "too_large", f"{info.st_size} bytes > {max_file_bytes}")
        with real.open("rb") as fh:
            data = fh.read(max_file_bytes + 1)
    except OSError as exc:
        return Skipped(path, "unreadable", exc.strerror or type(exc).__name__)
    return _decode(data, path, language, max_file_bytes)


def _resolve(path: Path) -> Path | Skipped:
    """The real path of an existing path, or the reason it has none."""
    try:
        return path.resolve(strict=True)
    except (RuntimeError, OSError) as exc:  # a loop: RuntimeError (3.11) or ELOOP (3.13)
        if isinstance(exc, RuntimeError) or getattr(exc, "errno", None) == errno.ELOOP:
            return Skipped(str(path), "symlink_loop", "symbolic link loop")
        if path.is_symlink():
            return Skipped(str(path), "not_found", "dangling symbolic link")
        return Skipped(str(path), "not_found", exc.strerror or str(exc))


def _git(cwd: str | Path, *args: str) -> subprocess.CompletedProcess[bytes]:
    """Run git in ``cwd`` (no pager, no colour, stable output)."""
    return subprocess.run(
        ["git", "-c", "core.quotepath=off", "-C", str(cwd), *args],
        capture_output=True,
        check=False,
    )


def _git_listing(directory: Path) -> list[str] | None:
    """Files of ``directory`` that git does not ignore (relative, sorted); None: not in git."""
    if shutil.which("git") is None:
        return None
    inside = _git(directory, "rev-parse", "--is-inside-work-tree")
    if inside.returncode != 0 or inside.stdout.strip() != b"true":
        return None
    listed = _git(directory, "ls-files", "--cached", "--others", "--exclude-standard", "-z")
    if listed.returncode != 0:
        return None
    names = {n.decode("utf-8", "surrogateescape") for n in listed.stdout.split(b"\0") if n}
    return sorted(names)


def _walk_listing(directory: Path, skipped: list[Skipped]) -> list[str]:
    """Files of ``directory`` by a sorted walk without ``.git/``; dir links are checked, not
    followed (loops and links leaving the directory are added to ``skipped``)."""
    root = directory.resolve()
    names: list[str] = []

    def on_error(exc: OSError) -> None:
        skipped.append(Skipped(str(exc.filename), "unreadable", exc.strerror or str(exc)))

    for current, dirnames, filenames in os.walk(directory, onerror=on_error):
        dirnames[:] = sorted(d for d in dirnames if d != ".git")
        here = Path(current)
        for name in list(dirnames):
            link = here / name
            if not link.is_symlink():
                continue
            dirnames.remove(name)
            target = _resolve(link)
            if isinstance(target, Skipped):
                skipped.append(target)
            elif target == here.resolve() or target in here.resolve().parents:
                skipped.append(Skipped(str(link), "symlink_loop", f"points to {target}"))
            elif not target.is_relative_to(root):
                skipped.append(Skipped(str(link), "symlink_outside", f"points to {target}"))
        names.extend(str((here / f).relative_to(directory).as_posix()) for f in filenames)
    return sorted(names)


def _iter_directory(
    directory: Path, display: str, seen: set[Path], max_file_bytes: int
) -> Iterator[SourceFile | Skipped]:
    """The C/C++ files of one directory, sorted by relative path."""
    skipped: list[Skipped] = []
    listing = _git_listing(directory)
    if listing is None:
        listing = _walk_listing(directory, skipped)
    yield from skipped
    root = directory.resolve()
    for rel in listing:
        if language_for(rel) is None:
            continue
        shown = os.path.join(display, rel)
        candidate = directory / rel
        if not os.path.lexists(candidate):  # tracked but deleted in the work tree
            continue
        target = _resolve(candidate)
        if isinstance(target, Skipped):
            yield Skipped(shown, target.reason, target.detail)
            continue
        if not target.is_relative_to(root):
            yield Skipped(shown, "symlink_outside", f"points to {target}")
            continue
        yield from _read_once(shown, target, seen, max_file_bytes)


def _read_once(
    shown: str, target: Path, seen: set[Path], max_file_bytes: int
) -> Iterator[SourceFile | Skipped]:
    """Read ``target`` unless an earlier path already reached the same file."""
    if target in seen:
        yield Skipped(shown, "duplicate", f"same file as an earlier path ({target})")
        return
    seen.add(target)
    yield read_source(shown, target, max_file_bytes=max_file_bytes)


def iter_sources(
    paths: Sequence[str], *, max_file_bytes: int = MAX_FILE_BYTES
) -> Iterator[SourceFile | Skipped]:
    """Each C/C++ file under ``paths`` (files and directories, in order; directories recursive
    and sorted) as a :class:`SourceFile`, or a :class:`Skipped` with its reason.

    Args:
        paths: files and directories, shown in the output as given.
        max_file_bytes: larger files are skipped (``too_large``).
    """
    seen: set[Path] = set()
    for given in paths:
        path = Path(given)
        if not os.path.lexists(path):
            yield Skipped(given, "not_found", "no such file or directory")
            continue
        target = _resolve(path)
        if isinstance(target, Skipped):
            yield Skipped(given, target.reason, target.detail)
        elif target.is_dir():
            yield from _iter_directory(path, given, seen, max_file_bytes)
        elif language_for(given) is None:
            yield Skipped(given, "not_c_cpp", "not a C/C++ suffix")
        else:
            yield from _read_once(given, target, seen, max_file_bytes)


# --------------------------------------------------------------------------- git diff


@dataclass(frozen=True, slots=True)
class ChangedFile:
    """A C/C++ file of the new side of a diff and its changed line ranges (see SourceFile)."""

    path: str
    ranges: tuple[LineRange, ...]


def _unquote(name: str) -> str:
    """A diff header path as git wrote it (C-quoted when it holds special characters)."""
    if len(name) >= 2 and name[0] == name[-1] == '"':
        raw = codecs.escape_decode(name[1:-1].encode("utf-8"))[0]
        return raw.decode("utf-8", "surrogateescape")
    return name


def _new_side(repo: Path, rev_range: str) -> tuple[list[str], str | None]:
    """The revisions to diff and the new side (None: the work tree); ScanError when unknown."""
    for sep in ("...", ".."):
        if sep in rev_range:
            old, new = rev_range.split(sep, 1)
            revs, new_rev = [old or "HEAD", new or "HEAD"], new or "HEAD"
            break
    else:
        revs, new_rev = [rev_range], None
    for rev in revs:
        found = _git(repo, "rev-parse", "--verify", "--quiet", f"{rev}^{{commit}}")
        if found.returncode != 0:
            raise ScanError(f"bad revision range {rev_range!r}: unknown revision {rev!r} in {repo}")
    return [rev_range], new_rev


def changed_lines(
    repo: str | Path, rev_range: str, pathspecs: Sequence[str] = ()
) -> tuple[list[ChangedFile], str | None]:
    """The C/C++ files a revision range changes, with the new side's changed line ranges.

    Args:
        repo: a directory inside the git work tree.
        rev_range: ``A..B`` or ``A...B`` (new side: ``B``), or one revision (against the work
            tree).
        pathspecs: limit the diff to these paths (absolute or relative to ``repo``).

    Returns:
        The changed files (repository-relative paths, sorted; deleted files left out) and the
        new side's revision (None: the work tree).

    Raises:
        ScanError: git is missing, ``repo`` is not a work tree, or the range is unknown.
    """
    repo = Path(repo)
    if shutil.which("git") is None:
        raise ScanError("--git-diff needs git on PATH")
    top = _git(repo, "rev-parse", "--show-toplevel")
    if top.returncode != 0:
        raise ScanError(
            f"{repo}: not a git work tree ({top.stderr.decode(errors='replace').strip()})"
        )
    revs, new_rev = _new_side(repo, rev_range)
    diff = _git(
        Path(top.stdout.decode().strip()),
        "diff", "--unified=0", "--no-color", "--no-ext-diff", "--diff-filter=d", "-M",
        "--src-prefix=a/", "--dst-prefix=b/", *revs, "--",
        *[str((repo / p).resolve()) for p in pathspecs],
    )  # fmt: skip
    if diff.returncode != 0:
        message = diff.stderr.decode(errors="replace").strip()
        raise ScanError(f"bad revision range {rev_range!r}: {message}")
    changed: dict[str, list[LineRange]] = {}
    current: str | None = None
    for line in diff.stdout.decode("utf-8", "surrogateescape").splitlines():
        if line.startswith("+++ "):
            name = _unquote(line[4:].removesuffix("\t"))  # git ends names with spaces by a tab
            current = name[2:] if name.startswith("b/") else None
            if current is not None and language_for(current) is None:
                current = None
            continue
        match = _HUNK_RE.match(line)
        if match and current is not None:
            start, count = int(match.group(1)), int(match.group(2) or 1)
            hunk = (start, start + count - 1) if count else (start + 1, start)
            changed.setdefault(current, []).append(hunk)
    files = [ChangedFile(path, tuple(ranges)) for path, ranges in sorted(changed.items())]
    return files, new_rev


def iter_diff_sources(
    repo: str | Path,
    rev_range: str,
    pathspecs: Sequence[str] = (),
    *,
    max_file_bytes: int = MAX_FILE_BYTES,
) -> Iterator[SourceFile | Skipped]:
    """The new side of each changed C/C++ file (``changed`` set), or the reason it is skipped.

    Paths are shown relative to the top of the work tree (as git names them).

    Raises:
        ScanError: see :func:`changed_lines`.
    """
    files, new_rev = changed_lines(repo, rev_range, pathspecs)
    top = Path(_git(repo, "rev-parse", "--show-toplevel").stdout.decode().strip())
    for changed in files:
        shown = changed.path
        language = language_for(changed.path) or "c"
        if new_rev is None:
            item = read_source(shown, top / changed.path, max_file_bytes=max_file_bytes)
        else:
            blob = _git(top, "cat-file", "blob", f"{new_rev}:{changed.path}")
            if blob.returncode != 0:
                item = Skipped(shown, "unreadable", blob.stderr.decode(errors="replace").strip())
            else:
                item = _decode(blob.stdout, shown, language, max_file_bytes)
        if isinstance(item, SourceFile):
            item = SourceFile(item.path, item.text, item.language, changed.ranges)
        yield item
