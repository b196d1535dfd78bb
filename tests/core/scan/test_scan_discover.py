"""Which files a scan reads, and why it skips the others (real files, links and git repos)."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

from streamguard_core.scan.discover import (
    ScanError,
    Skipped,
    SourceFile,
    changed_lines,
    iter_diff_sources,
    iter_sources,
)

GOOD_C = "int add(int a, int b)\n{\n    return a + b;\n}\n"
MAX_BYTES = 2000


def git(repo: Path, *args: str) -> str:
    """Run git in ``repo`` with a fixed identity; its stdout."""
    done = subprocess.run(
        ["git", "-c", "user.name=t", "-c", "user.email=t@example.com", "-C", str(repo), *args],
        capture_output=True, text=True, check=True,
    )  # fmt: skip
    return done.stdout


def make_project(root: Path, outside: Path) -> None:
    """A C project holding one of each kind of bad input."""
    (root / "src" / "sub").mkdir(parents=True)
    (root / "src" / "a.c").write_text(GOOD_C)
    (root / "src" / "sub" / "b.cpp").write_text("int twice(int x) { return 2 * x; }\n")
    (root / "src" / "util.h").write_text("static int one(void) { return 1; }\n")
    (root / "README.md").write_text("# not C\n")
    (root / "bin.c").write_bytes(b"int x;\0\x01\x02garbage")
    (root / "big.c").write_text("int big(void) { return 0; }\n" + "// pad\n" * MAX_BYTES)
    (root / "bad.c").write_text("int broken(int y) {\n    return y + ;\n")
    (root / "loop_a.c").symlink_to("loop_b.c")
    (root / "loop_b.c").symlink_to("loop_a.c")
    (root / "src" / "up").symlink_to("..", target_is_directory=True)
    outside.mkdir()
    (outside / "x.c").write_text(GOOD_C)
    (root / "ext.c").symlink_to(outside / "x.c")
    (root / "alias.c").symlink_to(root / "src" / "a.c")
    (root / "locked.c").write_text(GOOD_C)
    (root / "locked.c").chmod(0)


def outcome(items: list[SourceFile | Skipped], base: Path) -> dict[str, str]:
    """path relative to ``base`` -> ``file`` (read) or the skip reason."""
    return {
        os.path.relpath(i.path, base): "file" if isinstance(i, SourceFile) else i.reason
        for i in items
    }


def expected(root_is_git: bool) -> dict[str, str]:
    """What discovery should give for :func:`make_project` (``locked.c``: readable by root)."""
    want = {
        "alias.c": "file",  # read at the link's name first (sorted), ...
        "bad.c": "file",
        "big.c": "too_large",
        "bin.c": "binary",
        "ext.c": "symlink_outside",
        "locked.c": "file" if os.geteuid() == 0 else "unreadable",
        "loop_a.c": "symlink_loop",
        "loop_b.c": "symlink_loop",
        "src/a.c": "duplicate",  # ... so its real path is the duplicate
        "src/sub/b.cpp": "file",
        "src/util.h": "file",
    }
    if not root_is_git:
        want["src/up"] = "symlink_loop"  # git lists a directory link as a blob, never walks it
    return want


def test_plain_directory_walk(tmp_path: Path) -> None:
    root = tmp_path / "proj"
    root.mkdir()
    make_project(root, tmp_path / "outside")
    (root / ".git").mkdir()  # a stray .git/ without a repository is never read
    (root / ".git" / "hooks.c").write_text(GOOD_C)
    items = list(iter_sources([str(root)], max_file_bytes=MAX_BYTES))
    assert outcome(items, root) == expected(root_is_git=False)
    files = [i for i in items if isinstance(i, SourceFile)]
    read = [os.path.relpath(i.path, root) for i in files]
    assert read == sorted(read)
    by_name = {os.path.relpath(i.path, root): i for i in files}
    assert by_name["src/sub/b.cpp"].language == "cpp"
    assert by_name["src/util.h"].language == "c"
    assert by_name["alias.c"].text == GOOD_C
    assert by_name["alias.c"].changed is None
    big = next(i for i in items if isinstance(i, Skipped) and i.reason == "too_large")
    assert str(MAX_BYTES) in big.detail


def test_git_work_tree_respects_gitignore(tmp_path: Path) -> None:
    root = tmp_path / "repo"
    root.mkdir()
    git(root, "init", "-q")
    make_project(root, tmp_path / "outside")
    (root / ".gitignore").write_text("ignored.c\nbuild/\n")
    (root / "ignored.c").write_text(GOOD_C)
    (root / "build").mkdir()
    (root / "build" / "gen.c").write_text(GOOD_C)
    git(root, "add", "src/a.c", ".gitignore")
    git(root, "commit", "-q", "-m", "one tracked file; the rest untracked")
    items = list(iter_sources([str(root)], max_file_bytes=MAX_BYTES))
    assert outcome(items, root) == expected(root_is_git=True)


def test_explicit_files_missing_paths_and_overlap(tmp_path: Path) -> None:
    (tmp_path / "a.c").write_text(GOOD_C)
    (tmp_path / "notes.txt").write_text("int f(void) { return 0; }\n")
    args = [str(tmp_path / "a.c"), str(tmp_path / "notes.txt"), str(tmp_path / "gone.c"),
            str(tmp_path)]  # fmt: skip
    items = list(iter_sources(args))
    assert [(type(i).__name__, getattr(i, "reason", None)) for i in items] == [
        ("SourceFile", None),
        ("Skipped", "not_c_cpp"),
        ("Skipped", "not_found"),
        ("Skipped", "duplicate"),  # the directory holds a.c again; notes.txt is no candidate
    ]


def _commit(repo: Path, message: str) -> None:
    git(repo, "add", "-A")
    git(repo, "commit", "-q", "-m", message)


def test_changed_lines_of_a_range(tmp_path: Path) -> None:
    repo = tmp_path / "repo"
    repo.mkdir()
    git(repo, "init", "-q")
    (repo / "a.c").write_text("".join(f"int v{i};\n" for i in range(1, 11)))
    (repo / "gone.c").write_text(GOOD_C)
    (repo / "notes.md").write_text("x\n")
    _commit(repo, "first")
    lines = (repo / "a.c").read_text().splitlines(keepends=True)
    lines[2] = "int v3 = 3;\n"  # change line 3
    del lines[6]  # delete line 7: new side, a gap after line 6
    lines.append("int v11;\n")  # add line 10 of the new side
    (repo / "a.c").write_text("".join(lines))
    (repo / "gone.c").unlink()
    (repo / "notes.md").write_text("y\n")
    (repo / "new file.c").write_text("int fresh(void)\n{\n    return 7;\n}\n")
    _commit(repo, "second")
    files, new_rev = changed_lines(repo, "HEAD~1..HEAD")
    assert new_rev == "HEAD"
    assert [(f.path, f.ranges) for f in files] == [
        ("a.c", ((3, 3), (7, 6), (10, 10))),
        ("new file.c", ((1, 4),)),
    ]
    items = list(iter_diff_sources(repo, "HEAD~1..HEAD"))
    assert [i.path for i in items] == ["a.c", "new file.c"]
    assert all(isinstance(i, SourceFile) for i in items)
    a = items[0]
    assert isinstance(a, SourceFile)
    assert a.touches(1, 3) and a.touches(6, 7) and not a.touches(1, 2)
    assert not a.touches(7, 9) and not a.touches(4, 6)  # the deletion is between 6 and 7
    # limited to one path
    only, _ = changed_lines(repo, "HEAD~1..HEAD", ["new file.c"])
    assert [f.path for f in only] == ["new file.c"]
    # one revision: against the work tree, read from the work tree
    (repo / "a.c").write_text("int v0;\n" + "".join(lines))
    files, new_rev = changed_lines(repo, "HEAD")
    assert new_rev is None and [(f.path, f.ranges) for f in files] == [("a.c", ((1, 1),))]


@pytest.mark.parametrize("rev_range", ["nope..HEAD", "HEAD..nope", "nope"])
def test_bad_range_is_a_clear_error(tmp_path: Path, rev_range: str) -> None:
    repo = tmp_path / "repo"
    repo.mkdir()
    git(repo, "init", "-q")
    (repo / "a.c").write_text(GOOD_C)
    _commit(repo, "first")
    with pytest.raises(ScanError, match=rf"bad revision range '{rev_range}'.*'nope'"):
        changed_lines(repo, rev_range)


def test_not_a_work_tree(tmp_path: Path) -> None:
    with pytest.raises(ScanError, match="not a git work tree"):
        changed_lines(tmp_path, "HEAD~1..HEAD")
