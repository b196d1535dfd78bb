"""The git fix extractor on real git repositories written by the test, fetched through a file://
URL and through a plain local path, blobless where the serving repository allows filters."""

from __future__ import annotations

import os
import stat
import subprocess
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from streamguard_core.collect.fixes import (
    FixExtractor,
    in_crash_state,
    is_excluded_path,
    redact,
    repo_slug,
)
from streamguard_core.collect.records import FixRef, function_id, pair_id
from streamguard_core.config import FixExtractConfig

# ------------------------------------------------------------------ source versions

PARSE_V1 = """int parse_header(const unsigned char *buf, size_t len, struct header *out)
{
    out->kind = buf[0];
    out->size = buf[1] | (buf[2] << 8);
    memcpy(out->tag, buf + 3, out->size);
    return 0;
}"""
PARSE_V2 = """int parse_header(const unsigned char *buf, size_t len, struct header *out)
{
    if (len < 3)
        return -1;
    out->kind = buf[0];
    out->size = buf[1] | (buf[2] << 8);
    if (out->size > sizeof(out->tag) || out->size > len - 3)
        return -1;
    memcpy(out->tag, buf + 3, out->size);
    return 0;
}"""
CHECKSUM_V1 = """static unsigned checksum(const unsigned char *buf, size_t len)
{
    unsigned sum = 0;
    for (size_t i = 0; i < len; i++)
        sum += buf[i];
    return sum;
}"""
CHECKSUM_V2 = """static unsigned checksum(const unsigned char *buf, size_t len)
{
    unsigned sum = 0x5a;
    for (size_t i = 0; i < len; i++)
        sum = (sum << 1) ^ buf[i];
    return sum;
}"""
CHECKSUM_V3 = CHECKSUM_V2.replace("0x5a", "0xa5")
FORMAT_V1 = """static void format_value(char *dst, int value)
{
    sprintf(dst, "%d", value);
}"""
FORMAT_COSMETIC = """static void format_value(char *dst, int value)
{
    /* print the value in decimal */
    sprintf(dst,   "%d",
            value);  // no change in behaviour
}"""
OLD_NAME = """int old_name(int x)
{
    return x * 3 + 1;
}"""
NEW_NAME = """int new_name(int x)
{
    return x * 3 + 1;
}"""
LEGACY = """void legacy_reset(struct header *h)
{
    h->kind = 0;
}"""
UNCHANGED = """int version(void)
{
    return 2;
}"""
BUF_LEN_V1 = "static inline size_t buf_len(const struct buf *b) { return b->len; }"
BUF_LEN_V2 = "static inline size_t buf_len(const struct buf *b) { return b ? b->len : 0; }"
DECODE_V1 = """int Decoder::decode(const uint8_t* data, size_t size)
{
    m_Frame.assign(data, data + size);
    return m_Frame[0];
}"""
DECODE_V2 = """int Decoder::decode(const uint8_t* data, size_t size)
{
    if (size == 0)
        return -1;
    m_Frame.assign(data, data + size);
    return m_Frame[0];
}"""
RESET_CPP = """void Decoder::reset()
{
    m_Frame.clear();
}"""
PLAT_V1 = ("int plat(void) { return 1; }", "int plat(void) { return 2; }")
PLAT_V2 = ("int plat(void) { return 10; }", "int plat(void) { return 20; }")
BIG_V1 = "int big_table(int i)\n{\n    static const int t[] = {1, 2, 3};\n    return t[i];\n}"
BIG_V2 = (
    "int big_table(int i)\n{\n    static const int t[] = {"
    + ", ".join(str(n) for n in range(200))
    + "};\n    return t[i];\n}"
)
SIDE_V2 = "int side(void) { return 7; }"


def parser_c(*funcs: str) -> str:
    """src/parser.c made of the given definitions."""
    return '#include "buf.h"\n#include <string.h>\n\n' + "\n\n".join(funcs) + "\n"


def buf_h(buf_len: str) -> str:
    return f"#ifndef BUF_H\n#define BUF_H\nstruct buf {{ size_t len; }};\n{buf_len}\n#endif\n"


def codec_cpp(decode: str) -> str:
    return (
        '#include "codec.hpp"\n\nnamespace media {\n\n'
        + decode
        + "\n\n"
        + RESET_CPP
        + "\n\n}  // namespace media\n"
    )


def plat_c(variants: tuple[str, str]) -> str:
    return f"#ifdef HAVE_X\n{variants[0]}\n#else\n{variants[1]}\n#endif\n"


def misc_c(n: int, value: int) -> str:
    return f"int misc{n}(void) {{ return {value}; }}\n"


BROKEN_V1 = "@@ ((( this is not C at all {{ %%\n"
BROKEN_V2 = "@@ ((( still not C {{ %% !!\n"

# ------------------------------------------------------------------ the upstream repository

GIT_ENV = {
    "GIT_CONFIG_GLOBAL": os.devnull,
    "GIT_CONFIG_NOSYSTEM": "1",
    "GIT_TERMINAL_PROMPT": "0",
    "GIT_AUTHOR_NAME": "Test",
    "GIT_AUTHOR_EMAIL": "test@example.invalid",
    "GIT_COMMITTER_NAME": "Test",
    "GIT_COMMITTER_EMAIL": "test@example.invalid",
    "GIT_AUTHOR_DATE": "2024-01-01T00:00:00Z",
    "GIT_COMMITTER_DATE": "2024-01-01T00:00:00Z",
}


def git(repo: Path, *args: str) -> str:
    env = {"PATH": os.environ["PATH"], **GIT_ENV}
    out = subprocess.run(
        ["git", "-C", str(repo), *args], env=env, capture_output=True, text=True, check=True
    )
    return out.stdout.strip()


@dataclass(frozen=True)
class Symlink:
    """A symbolic link committed as such (mode 120000)."""

    target: str


@dataclass
class Upstream:
    """A repository with one commit per case, by name."""

    path: Path
    commits: dict[str, str] = field(default_factory=dict)

    def commit(self, name: str, files: dict[str, str | Symlink | None]) -> str:
        for rel, text in files.items():
            target = self.path / rel
            if text is None:
                git(self.path, "rm", "-q", rel)
                continue
            target.parent.mkdir(parents=True, exist_ok=True)
            if isinstance(text, Symlink):
                target.unlink(missing_ok=True)
                target.symlink_to(text.target)
            else:
                target.write_text(text, encoding="utf-8")
            git(self.path, "add", rel)
        git(self.path, "commit", "-q", "-m", name)
        self.commits[name] = git(self.path, "rev-parse", "HEAD")
        return self.commits[name]


FIX_FILES: dict[str, str | Symlink | None] = {
    "include/alias.h": Symlink("codec.hpp"),  # a symlink's target changed: not a source file
    "src/parser.c": parser_c(PARSE_V2, CHECKSUM_V2, FORMAT_COSMETIC, NEW_NAME, UNCHANGED),
    "include/buf.h": buf_h(BUF_LEN_V2),
    "src/codec.cpp": codec_cpp(DECODE_V2),
    "tests/test_parser.c": "int test_parse(void) { return parse_header(0, 0, 0) + 1; }\n",
    "fuzz/fuzz_parser.c": "int LLVMFuzzerTestOneInput(void) { return 1; }\n",
    "src/parser_fuzzer.c": "int fuzz_entry(void) { return 1; }\n",
}


def build_upstream(path: Path, allow_filter: bool) -> Upstream:
    path.mkdir(parents=True)
    git(path, "init", "-q", "-b", "main")
    if allow_filter:
        git(path, "config", "uploadpack.allowFilter", "true")
    up = Upstream(path)
    up.commit(
        "root",
        {
            "README.md": "# demo\n" + "padding line\n" * 50,
            "src/parser.c": parser_c(PARSE_V1, CHECKSUM_V1, FORMAT_V1, OLD_NAME, LEGACY, UNCHANGED),
            "include/buf.h": buf_h(BUF_LEN_V1),
            "include/alias.h": Symlink("buf.h"),
            "src/codec.cpp": codec_cpp(DECODE_V1),
            "src/plat.c": plat_c(PLAT_V1),
            "src/big.c": BIG_V1 + "\n",
            "src/broken.c": BROKEN_V1,
            "tests/test_parser.c": "int test_parse(void) { return parse_header(0, 0, 0); }\n",
            "fuzz/fuzz_parser.c": "int LLVMFuzzerTestOneInput(void) { return 0; }\n",
            "src/parser_fuzzer.c": "int fuzz_entry(void) { return 0; }\n",
            **{f"src/misc{n}.c": misc_c(n, 0) for n in range(4)},
        },
    )
    up.commit("fix", FIX_FILES)
    up.commit(
        "cosmetic",
        {"src/parser.c": parser_c(PARSE_V2, CHECKSUM_V2, FORMAT_V1, NEW_NAME, UNCHANGED)},
    )
    up.commit("tests_only", {"tests/test_parser.c": "int test_parse(void) { return 2; }\n"})
    up.commit("too_many", {f"src/misc{n}.c": misc_c(n, 1) for n in range(4)})
    up.commit(
        "broken",
        {
            "src/broken.c": BROKEN_V2,
            "src/parser.c": parser_c(PARSE_V2, CHECKSUM_V3, FORMAT_V1, NEW_NAME, UNCHANGED),
        },
    )
    up.commit("ambiguous", {"src/plat.c": plat_c(PLAT_V2)})
    up.commit("too_long", {"src/big.c": BIG_V2 + "\n"})
    base = up.commits["too_long"]
    git(path, "checkout", "-q", "-b", "side")
    up.commit("side", {"src/side.c": SIDE_V2 + "\n"})
    git(path, "checkout", "-q", "main")
    up.commit("main_after_side", {"src/misc0.c": misc_c(0, 2)})
    git(path, "merge", "-q", "--no-ff", "-m", "merge side", "side")
    up.commits["merge"] = git(path, "rev-parse", "HEAD")
    assert git(path, "rev-parse", "HEAD^1") == up.commits["main_after_side"]
    assert up.commits["side"] != base
    return up


@pytest.fixture(scope="module")
def upstream(tmp_path_factory: pytest.TempPathFactory) -> Upstream:
    """The upstream repository, serving partial clones (uploadpack.allowFilter)."""
    return build_upstream(tmp_path_factory.mktemp("up") / "demo", allow_filter=True)


@pytest.fixture(scope="module")
def upstream_nofilter(tmp_path_factory: pytest.TempPathFactory) -> Upstream:
    """The same history in a repository that does not allow filters."""
    return build_upstream(tmp_path_factory.mktemp("upnf") / "demo", allow_filter=False)


@pytest.fixture(autouse=True)
def clean_git_env(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """A user's git config never reaches the extractor (it runs git with its own clean env)."""
    monkeypatch.setenv("GIT_CONFIG_GLOBAL", "/nonexistent/should-not-be-read")
    yield


CONFIG = FixExtractConfig(max_files_per_commit=3, max_func_chars=400)
CRASH_STATE = ["parse_header", "Decoder::decode", "LLVMFuzzerTestOneInput"]


def url_of(up: Upstream, transport: str) -> str:
    return up.path.as_uri() if transport == "file" else str(up.path)


def make_ref(up: Upstream, transport: str, commit: str, **kw: object) -> FixRef:
    values: dict[str, object] = {
        "source": "osv",
        "vuln_id": "OSV-2024-1",
        "repo": url_of(up, transport),
        "fix_commit": up.commits.get(commit, commit),
        "project": "demo",
        "published": "2024-01-02",
        "cwe": ["CWE-787", "CWE-125"],
        "crash_type": "Heap-buffer-overflow READ 4",
        "crash_state": CRASH_STATE,
        "url": "https://osv.example.invalid/OSV-2024-1",
    }
    values.update(kw)
    return FixRef(**values)  # type: ignore[arg-type]


def cache_repo(cache: Path) -> Path:
    (repo,) = cache.glob("*.git")
    return repo


# ------------------------------------------------------------------ the fix commit


@pytest.mark.parametrize("transport", ["file", "path"])
@pytest.mark.parametrize("allow_filter", [True, False], ids=["blobless", "filter_ignored"])
def test_fix_commit_rows(
    request: pytest.FixtureRequest, tmp_path: Path, transport: str, allow_filter: bool
) -> None:
    up: Upstream = request.getfixturevalue("upstream" if allow_filter else "upstream_nofilter")
    extractor = FixExtractor(CONFIG, tmp_path / "cache")
    ref = make_ref(up, transport, "fix")
    rows, rejects = extractor.extract(ref)

    fix, root = up.commits["fix"], up.commits["root"]
    expected = {
        ("src/parser.c", "parse_header"): (PARSE_V1, PARSE_V2, True),
        ("src/parser.c", "checksum"): (CHECKSUM_V1, CHECKSUM_V2, False),
        ("include/buf.h", "buf_len"): (BUF_LEN_V1, BUF_LEN_V2, False),
        ("src/codec.cpp", "media::Decoder::decode"): (DECODE_V1, DECODE_V2, True),
    }
    got = {(r.file, r.function, r.target): r for r in rows}
    assert len(rows) == 2 * len(expected) == len(got)
    for (file, name), (before, after, crash) in expected.items():
        pre, post = got[(file, name, 1)], got[(file, name, 0)]
        assert (pre.func, post.func) == (before, after)
        assert pre.pair_id == post.pair_id == pair_id(ref.repo, fix, file, name, ref.vuln_id)
        for row, target in ((pre, 1), (post, 0)):
            assert row.id == function_id("osv", "OSV-2024-1", row.pair_id, target)
            assert row.in_crash_state is crash
            assert row.n_changed_functions == 4
            assert (row.fix_commit, row.parent_commit, row.commit_id) == (fix, root, fix)
            assert (row.project, row.vuln_id, row.repo, row.source) == (
                "demo",
                "OSV-2024-1",
                ref.repo,
                "osv",
            )
            assert (row.cwe, row.published, row.crash_type, row.fix_is_exact) == (
                "CWE-787",
                "2024-01-02",
                "Heap-buffer-overflow READ 4",
                True,
            )
            prov = row.provenance
            assert prov["source"] == "osv" and prov["extractor"] == "git"
            assert prov["advisory"] == ref.url
            assert prov["repo"] == (str(up.path) if transport == "path" else up.path.as_uri())
            assert prov["git_version"] == git(up.path, "--version").removeprefix("git version ")
            assert prov["language"] == ("cpp" if file.endswith(".cpp") else "c")
    # the renamed and the removed function are counted, nothing else (cosmetic edits, unchanged
    # functions, the test file and the fuzz harnesses are silently out)
    assert sorted((r.reason, r.function, r.detail) for r in rejects) == [
        ("function_renamed", "legacy_reset", "removed by the fix"),
        ("function_renamed", "old_name", "renamed to new_name by the fix"),
    ]
    assert {(r.file, r.commit, r.vuln_id, r.where) for r in rejects} == {
        ("src/parser.c", fix, "OSV-2024-1", ref.url)
    }

    # blobless where the server allows it: the cache lacks blobs the fix never touched
    repo = cache_repo(tmp_path / "cache")
    missing = git(repo, "rev-list", "--objects", "--missing=print", fix).splitlines()
    missing = [line for line in missing if line.startswith("?")]
    readme = git(up.path, "rev-parse", f"{fix}:README.md")
    assert (f"?{readme}" in missing) is allow_filter
    assert git(repo, "config", "remote.origin.promisor") == "true"
    # one fetch for the commits, and with a blobless fetch one more for all the changed blobs
    assert extractor.fetch_count == (2 if allow_filter else 1)
    assert (repo / "shallow").read_text().split() == [root]


def test_second_extraction_does_not_fetch(upstream: Upstream, tmp_path: Path) -> None:
    cache = tmp_path / "cache"
    first = FixExtractor(CONFIG, cache)
    rows, rejects = first.extract(make_ref(upstream, "file", "fix"))
    assert rows and first.fetch_count >= 1
    packs = sorted(p.name for p in (cache_repo(cache) / "objects" / "pack").iterdir())

    # the same extractor: the commit's result is reused
    fetches = first.fetch_count
    again, again_rejects = first.extract(make_ref(upstream, "file", "fix", vuln_id="OSV-2024-9"))
    assert [r.reason for r in again_rejects] == [r.reason for r in rejects]
    assert first.fetch_count == fetches
    assert [r.func for r in again] == [r.func for r in rows]
    assert {r.vuln_id for r in again} == {"OSV-2024-9"}
    assert {r.pair_id for r in again}.isdisjoint({r.pair_id for r in rows})  # per advisory

    # a new extractor on the same cache: everything is on disk, nothing is fetched
    second = FixExtractor(CONFIG, cache)
    rows2, rejects2 = second.extract(make_ref(upstream, "file", "fix"))
    assert second.fetch_count == 0
    assert [r.to_dict() for r in rows2] == [r.to_dict() for r in rows]
    assert [r.to_dict() for r in rejects2] == [r.to_dict() for r in rejects]
    assert sorted(p.name for p in (cache_repo(cache) / "objects" / "pack").iterdir()) == packs


def test_shallow_boundary_commit_is_deepened(upstream: Upstream, tmp_path: Path) -> None:
    extractor = FixExtractor(CONFIG, tmp_path / "cache")
    # the cosmetic commit's fetch brings the fix commit in as its (shallow) parent
    rows, rejects = extractor.extract(make_ref(upstream, "path", "cosmetic"))
    assert rows == []
    assert [r.reason for r in rejects] == ["empty_diff"]
    assert "comments and whitespace" in rejects[0].detail
    shallow = cache_repo(tmp_path / "cache") / "shallow"
    assert shallow.read_text().split() == [upstream.commits["fix"]]
    rows, _ = extractor.extract(make_ref(upstream, "path", "fix"))
    # the fix commit was there but not its parent: fetched again with depth 2 (not left to the
    # partial clone's lazy fetch of single objects, which would keep it a shallow boundary)
    assert shallow.read_text().split() == [upstream.commits["root"]]
    assert {r.function for r in rows} == {
        "parse_header",
        "checksum",
        "buf_len",
        "media::Decoder::decode",
    }


def test_extractors_share_a_cache_concurrently(upstream: Upstream, tmp_path: Path) -> None:
    cache = tmp_path / "cache"
    names = ["fix", "broken", "too_long", "cosmetic"]

    def run(name: str) -> list[str]:
        rows, rejects = FixExtractor(CONFIG, cache).extract(make_ref(upstream, "file", name))
        return sorted({r.function for r in rows}) + sorted(r.reason for r in rejects)

    with ThreadPoolExecutor(max_workers=4) as pool:
        results = dict(zip(names, pool.map(run, names), strict=True))
    assert results == {
        "fix": [
            "buf_len",
            "checksum",
            "media::Decoder::decode",
            "parse_header",
            "function_renamed",
            "function_renamed",
        ],
        "broken": ["checksum", "parse_error"],
        "too_long": ["too_long"],
        "cosmetic": ["empty_diff"],
    }


# ------------------------------------------------------------------ rejects


@pytest.mark.parametrize("transport", ["file", "path"])
def test_commit_level_rejects(upstream: Upstream, tmp_path: Path, transport: str) -> None:
    extractor = FixExtractor(CONFIG, tmp_path / "cache")

    def reasons(commit: str) -> list[str]:
        rows, rejects = extractor.extract(make_ref(upstream, transport, commit))
        assert rows == []
        return [r.reason for r in rejects]

    assert reasons("root") == ["invalid_record"]
    assert reasons("merge") == ["invalid_record"]
    assert reasons("tests_only") == ["empty_diff"]
    assert reasons("too_many") == ["too_many_files"]
    fetches = extractor.fetch_count
    assert reasons("0" * 40) == ["commit_not_found"]
    # the server said it has no such object: no fallback fetch of every branch
    assert extractor.fetch_count == fetches + 1
    assert git(cache_repo(tmp_path / "cache"), "for-each-ref", "refs/remotes", "refs/tags") == ""
    assert reasons("not-a-sha") == ["invalid_record"]
    _, rejects = extractor.extract(make_ref(upstream, transport, "merge"))
    assert "merge commit" in rejects[0].detail and "2 parents" in rejects[0].detail
    _, rejects = extractor.extract(make_ref(upstream, transport, "root"))
    assert "root commit" in rejects[0].detail
    _, rejects = extractor.extract(make_ref(upstream, transport, "too_many"))
    assert rejects[0].detail.startswith("4 C/C++ files")


def test_parse_error_ambiguous_and_too_long(upstream: Upstream, tmp_path: Path) -> None:
    extractor = FixExtractor(CONFIG, tmp_path / "cache")

    rows, rejects = extractor.extract(make_ref(upstream, "file", "broken"))
    assert [(r.reason, r.file) for r in rejects] == [("parse_error", "src/broken.c")]
    assert [(r.function, r.target, r.func) for r in rows] == [
        ("checksum", 1, CHECKSUM_V2),
        ("checksum", 0, CHECKSUM_V3),
    ]
    assert {r.n_changed_functions for r in rows} == {1}
    assert {r.in_crash_state for r in rows} == {False}

    rows, rejects = extractor.extract(make_ref(upstream, "file", "ambiguous"))
    assert rows == []
    assert sorted((r.reason, r.function) for r in rejects) == [
        ("ambiguous_function", "plat"),
        ("empty_diff", None),
    ]

    rows, rejects = extractor.extract(make_ref(upstream, "file", "too_long"))
    assert rows == []
    assert [(r.reason, r.function) for r in rejects] == [("too_long", "big_table")]
    assert str(len(BIG_V2)) in rejects[0].detail


def test_no_crash_state_gives_none(upstream: Upstream, tmp_path: Path) -> None:
    extractor = FixExtractor(CONFIG, tmp_path / "cache")
    rows, _ = extractor.extract(make_ref(upstream, "path", "fix", crash_state=[], cwe=[]))
    assert rows and {r.in_crash_state for r in rows} == {None}
    assert {r.cwe for r in rows} == {None}


def test_unavailable_repository_and_redacted_credentials(tmp_path: Path) -> None:
    extractor = FixExtractor(CONFIG, tmp_path / "cache")
    ref = FixRef(
        source="nvd",
        vuln_id="CVE-2024-1",
        repo=str(tmp_path / "does-not-exist"),
        fix_commit="a" * 40,
    )
    rows, rejects = extractor.extract(ref)
    assert rows == [] and [r.reason for r in rejects] == ["repo_unavailable"]
    assert "does not appear to be a git repository" in rejects[0].detail
    fetches = extractor.fetch_count
    rows, rejects = extractor.extract(FixRef.from_dict({**ref.to_dict(), "fix_commit": "b" * 40}))
    assert [r.reason for r in rejects] == ["repo_unavailable"]
    assert extractor.fetch_count == fetches  # an unavailable remote is not asked again

    secret = FixRef(
        source="github",
        vuln_id="GHSA-1",
        repo="http://user:s3cr3t-token@127.0.0.1:9/x/y.git",
        fix_commit="c" * 40,
    )
    rows, rejects = extractor.extract(secret)
    assert [r.reason for r in rejects] == ["repo_unavailable"]
    assert "s3cr3t" not in rejects[0].detail
    assert all("s3cr3t" not in p.name for p in (tmp_path / "cache").iterdir())


def test_git_timeout_is_a_reject(upstream: Upstream, tmp_path: Path) -> None:
    # a git whose fetch hangs: the extractor kills it after timeout_s
    slow_git = tmp_path / "slow-git"
    slow_git.write_text(
        '#!/bin/sh\nfor a; do [ "$a" = fetch ] && exec sleep 60; done\nexec git "$@"\n'
    )
    slow_git.chmod(slow_git.stat().st_mode | stat.S_IEXEC)
    extractor = FixExtractor(CONFIG, tmp_path / "cache", git=str(slow_git), timeout_s=0.3)
    rows, rejects = extractor.extract(make_ref(upstream, "path", "fix"))
    assert rows == [] and [r.reason for r in rejects] == ["timeout"]
    assert "fetch" in rejects[0].detail


# ------------------------------------------------------------------ repositories and limits


def test_repo_overrides_by_project_and_by_url(upstream: Upstream, tmp_path: Path) -> None:
    by_project = FixExtractConfig(repos={"demo": upstream.path.as_uri()})
    ref = make_ref(upstream, "file", "fix", repo="https://github.com/example/demo")
    extractor = FixExtractor(by_project, tmp_path / "a")
    assert extractor.resolve_repo(ref) == upstream.path.as_uri()
    rows, _ = extractor.extract(ref)
    assert len(rows) == 8
    assert {r.repo for r in rows} == {"https://github.com/example/demo"}
    assert {r.provenance["repo"] for r in rows} == {upstream.path.as_uri()}
    assert {r.project for r in rows} == {"demo"}

    by_url = FixExtractConfig(repos={"https://github.com/example/Demo.git": str(upstream.path)})
    ref = make_ref(upstream, "file", "fix", repo="https://github.com/example/Demo", project=None)
    extractor = FixExtractor(by_url, tmp_path / "b")
    assert extractor.resolve_repo(ref) == str(upstream.path)
    rows, _ = extractor.extract(ref)
    assert len(rows) == 8 and {r.project for r in rows} == {"demo"}  # from the repository name
    assert FixExtractor(FixExtractConfig(), tmp_path / "c").resolve_repo(ref) == ref.repo


def test_abbreviated_commit_is_resolved(upstream: Upstream, tmp_path: Path) -> None:
    extractor = FixExtractor(CONFIG, tmp_path / "cache")
    rows, rejects = extractor.extract(make_ref(upstream, "file", upstream.commits["fix"][:10]))
    assert len(rows) == 8
    assert {r.fix_commit for r in rows} == {upstream.commits["fix"]}
    assert {r.commit for r in rejects} == {upstream.commits["fix"]}


def test_max_commits_bounds_distinct_commits(upstream: Upstream, tmp_path: Path) -> None:
    config = FixExtractConfig(max_files_per_commit=3, max_func_chars=400, max_commits=2)
    extractor = FixExtractor(config, tmp_path / "cache")
    assert extractor.extract(make_ref(upstream, "path", "fix"))[0]
    assert extractor.extract(make_ref(upstream, "path", "broken"))[0]
    rows, rejects = extractor.extract(make_ref(upstream, "path", "too_long"))
    assert rows == [] and [r.reason for r in rejects] == ["skipped_limit"]
    # an advisory naming a commit already counted is still served
    rows, _ = extractor.extract(make_ref(upstream, "path", "fix", vuln_id="OSV-2024-2"))
    assert len(rows) == 8


# ------------------------------------------------------------------ helpers


def test_excluded_paths() -> None:
    for path in (
        "tests/test_parser.c",
        "test/util.c",
        "src/Tests/x.cpp",
        "fuzz/fuzz_parser.c",
        "oss-fuzz/build.c",
        "src/parser_fuzzer.c",
        "src/test_utils.c",
        "src/parser_test.cc",
        "src/parser_unittest.cpp",
        "examples/demo.c",
        "benchmark/bench.c",
    ):
        assert is_excluded_path(path), path
    for path in ("src/parser.c", "lib/latest.c", "include/contest.h", "src/testing_mode.c"):
        assert not is_excluded_path(path), path


def test_in_crash_state_matches_whole_components() -> None:
    assert in_crash_state("apply", ["OT::ChainContextFormat3::apply"])
    assert in_crash_state("pcpp::Layer::parse", ["Layer::parse"])
    assert in_crash_state("OT::Context<T>::apply", ["OT::Context<OT::Layout>::apply"])
    assert in_crash_state("is_any_of::operator()", ["is_any_of::operator()"])
    assert not in_crash_state("reapply", ["OT::apply"])
    assert not in_crash_state("parse", ["fuzz_parse.c", "LLVMFuzzerTestOneInput"])
    assert not in_crash_state("Layer::parse", ["Other::parse"])


def test_redact_and_slug() -> None:
    assert redact("fatal: https://x:tok@github.com/a/b") == "fatal: https://***@github.com/a/b"
    slug = repo_slug("https://github.com/curl/curl")
    assert slug.startswith("github.com_curl_curl-") and "/" not in slug
    assert repo_slug("https://github.com/curl/curl") != repo_slug("https://github.com/curl/curl2")
