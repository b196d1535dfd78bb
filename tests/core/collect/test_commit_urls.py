"""parse_commit_url on the fix-commit URL forms advisories really use."""

from __future__ import annotations

import pytest

from streamguard_core.collect.commits import commit_refs, is_short_sha, parse_commit_url, repo_name

HEARTBLEED = "96db9023b881d7cd9f379b0c154650d6c108e9a3"
SHA = "6a7f9e5c1d2b3a4f5e6d7c8b9a0f1e2d3c4b5a69"


@pytest.mark.parametrize(
    ("url", "repo", "sha"),
    [
        (f"https://github.com/FFmpeg/FFmpeg/commit/{SHA}", "https://github.com/FFmpeg/FFmpeg", SHA),
        (f"http://www.github.com/madler/zlib/commit/{SHA}", "https://github.com/madler/zlib", SHA),
        (f"https://github.com/curl/curl/commit/{SHA}.patch", "https://github.com/curl/curl", SHA),
        (f"https://github.com/curl/curl/commit/{SHA}.diff", "https://github.com/curl/curl", SHA),
        (
            f"https://github.com/libexpat/libexpat/commit/{SHA}#diff-1f0b3c2a9e8d7c6b5a49",
            "https://github.com/libexpat/libexpat",
            SHA,
        ),
        (
            f"https://github.com/ImageMagick/ImageMagick/commit/{SHA}?diff=split",
            "https://github.com/ImageMagick/ImageMagick",
            SHA,
        ),
        (
            f"https://github.com/curl/curl/pull/9541/commits/{SHA}",
            "https://github.com/curl/curl",
            SHA,
        ),
        (
            f"https://github.com/openssl/openssl/commits/{SHA}",
            "https://github.com/openssl/openssl",
            SHA,
        ),
        (
            f"https://github.com/the-tcpdump-group/tcpdump/commit/{SHA.upper()}",
            "https://github.com/the-tcpdump-group/tcpdump",
            SHA,
        ),
        (
            f"https://api.github.com/repos/nginx/nginx/commits/{SHA}",
            "https://github.com/nginx/nginx",
            SHA,
        ),
        (
            f"https://gitlab.com/libtiff/libtiff/-/commit/{SHA}",
            "https://gitlab.com/libtiff/libtiff",
            SHA,
        ),
        (
            f"https://gitlab.gnome.org/GNOME/glib/-/commit/{SHA}#note_123",
            "https://gitlab.gnome.org/GNOME/glib",
            SHA,
        ),
        (
            f"https://gitlab.com/gnutls/devel/gnutls/-/commit/{SHA}.patch",
            "https://gitlab.com/gnutls/devel/gnutls",
            SHA,
        ),
        (
            f"https://gitlab.freedesktop.org/poppler/poppler/commit/{SHA}",
            "https://gitlab.freedesktop.org/poppler/poppler",
            SHA,
        ),
        (
            f"https://bitbucket.org/multicoreware/x265_git/commits/{SHA}",
            "https://bitbucket.org/multicoreware/x265_git",
            SHA,
        ),
        (
            f"https://git.kernel.org/pub/scm/linux/kernel/git/torvalds/linux.git/commit/?id={SHA}",
            "https://git.kernel.org/pub/scm/linux/kernel/git/torvalds/linux.git",
            SHA,
        ),
        (
            f"https://git.kernel.org/cgit/linux/kernel/git/torvalds/linux.git/commit/?h=v5.10&id={SHA}",
            "https://git.kernel.org/cgit/linux/kernel/git/torvalds/linux.git",
            SHA,
        ),
        (
            f"https://git.savannah.gnu.org/cgit/emacs.git/patch/?id={SHA}",
            "https://git.savannah.gnu.org/cgit/emacs.git",
            SHA,
        ),
        (
            f"https://git.kernel.org/linus/{SHA}",
            "https://git.kernel.org/pub/scm/linux/kernel/git/torvalds/linux.git",
            SHA,
        ),
        (
            f"https://git.openssl.org/gitweb/?p=openssl.git;a=commit;h={HEARTBLEED}",
            "https://git.openssl.org/gitweb/openssl.git",
            HEARTBLEED,
        ),
        (
            f"https://sourceware.org/git/?p=glibc.git;a=commitdiff;h={SHA}",
            "https://sourceware.org/git/glibc.git",
            SHA,
        ),
        (
            f"https://sourceware.org/git/gitweb.cgi?p=binutils-gdb.git;h={SHA}",
            "https://sourceware.org/git/binutils-gdb.git",
            SHA,
        ),
        (
            f"http://git.ghostscript.com/?p=ghostpdl.git&a=commit&h={SHA}",
            "http://git.ghostscript.com/ghostpdl.git",
            SHA,
        ),
    ],
)
def test_commit_urls_of_every_forge(url: str, repo: str, sha: str) -> None:
    assert parse_commit_url(url) == (repo, sha)
    assert not is_short_sha(sha)


@pytest.mark.parametrize(
    "url",
    [
        "https://github.com/FFmpeg/FFmpeg",
        "https://github.com/FFmpeg/FFmpeg/releases/tag/n6.1",
        "https://github.com/curl/curl/issues/9541",
        "https://github.com/curl/curl/pull/9541",
        "https://github.com/curl/curl/compare/curl-7_85_0...curl-7_86_0",
        f"https://github.com/curl/curl/blob/{SHA}/lib/url.c",
        "https://github.com/curl/curl/commit/not-a-sha",
        "https://github.com/curl/curl/commit/abc12",  # 5 hex digits: too short
        f"https://github.com/curl/curl/commit/{SHA}a",  # 41 hex digits
        "https://github.com/advisories/GHSA-2x8p-mh9j-jq5f",
        "https://nvd.nist.gov/vuln/detail/CVE-2014-0160",
        "https://bugzilla.redhat.com/show_bug.cgi?id=1234567",
        "https://patchwork.kernel.org/patch/11234567/",
        "https://www.openwall.com/lists/oss-security/2021/01/26/3",
        f"https://sourceware.org/git/?p=glibc.git;a=blob;h={SHA}",
        f"ftp://ftp.example.org/commit/{SHA}",
        "not a url",
        "",
    ],
)
def test_non_commit_urls_are_none(url: str) -> None:
    assert parse_commit_url(url) is None


def test_non_string_is_none() -> None:
    assert parse_commit_url(None) is None  # type: ignore[arg-type]
    assert parse_commit_url(42) is None  # type: ignore[arg-type]


def test_short_sha_is_returned_and_flagged() -> None:
    ref = parse_commit_url("https://github.com/madler/zlib/commit/EE3C3F7")
    assert ref == ("https://github.com/madler/zlib", "ee3c3f7")
    assert is_short_sha(ref[1])


def test_repo_name_is_the_lower_case_project() -> None:
    assert repo_name("https://github.com/FFmpeg/FFmpeg") == "ffmpeg"
    assert repo_name("https://sourceware.org/git/binutils-gdb.git") == "binutils-gdb"
    assert repo_name("https://gitlab.com/gnutls/devel/gnutls/") == "gnutls"


def test_commit_refs_deduplicates_forms_and_abbreviations() -> None:
    urls = [
        "https://github.com/curl/curl/releases/tag/curl-7_86_0",
        f"https://github.com/curl/curl/commit/{SHA}",
        f"https://github.com/curl/curl/commit/{SHA}.patch",
        f"https://github.com/curl/curl/commit/{SHA[:10]}",
        f"https://github.com/other/fork/commit/{SHA[:10]}",
        f"https://gitlab.com/libtiff/libtiff/-/commit/{HEARTBLEED}",
    ]
    assert commit_refs(urls) == [
        ("https://github.com/curl/curl", SHA),
        ("https://github.com/other/fork", SHA[:10]),
        ("https://gitlab.com/libtiff/libtiff", HEARTBLEED),
    ]
