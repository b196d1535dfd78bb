"""Safe extraction of model.tar.gz: plain files in, escapes, links and devices refused."""

from __future__ import annotations

import io
import tarfile
from pathlib import Path

import pytest

from streamguard_core.aws.tarsafe import UnsafeArchiveError, safe_extract


def _archive(path: Path, members: list[tuple[tarfile.TarInfo, bytes | None]]) -> Path:
    with tarfile.open(path, "w:gz") as tar:
        for info, data in members:
            if data is not None:
                info.size = len(data)
            tar.addfile(info, io.BytesIO(data) if data is not None else None)
    return path


def _file(name: str, data: bytes = b"x") -> tuple[tarfile.TarInfo, bytes]:
    return tarfile.TarInfo(name), data


def _special(name: str, kind: bytes, linkname: str = "") -> tuple[tarfile.TarInfo, None]:
    info = tarfile.TarInfo(name)
    info.type, info.linkname = kind, linkname
    return info, None


def test_plain_files_and_directories_are_extracted(tmp_path):
    directory = tarfile.TarInfo("model")
    directory.type = tarfile.DIRTYPE
    setuid = tarfile.TarInfo("model/run.sh")
    setuid.mode = 0o4755
    archive = _archive(
        tmp_path / "ok.tar.gz",
        [
            (directory, None),
            _file("model/model_card.json", b'{"kind": "gnn"}'),
            _file("metrics.json", b"{}"),
            (setuid, b"#!/bin/sh\n"),
        ],
    )
    out = tmp_path / "out"
    written = safe_extract(archive, out)
    assert sorted(p.relative_to(out).as_posix() for p in written) == [
        "metrics.json",
        "model/model_card.json",
        "model/run.sh",
    ]
    assert (out / "model" / "model_card.json").read_text() == '{"kind": "gnn"}'
    assert (out / "model" / "run.sh").stat().st_mode & 0o7777 == 0o644  # no setuid, no exec


@pytest.mark.parametrize(
    ("member", "reason"),
    [
        (_file("../evil.txt"), "'..'"),
        (_file("model/../../evil.txt"), "'..'"),
        (_file("/etc/evil.txt"), "absolute path"),
        (_special("model/link", tarfile.SYMTYPE, "/etc/passwd"), "symbolic link"),
        (_special("model/hard", tarfile.LNKTYPE, "metrics.json"), "hard link"),
        (_special("model/fifo", tarfile.FIFOTYPE), "device or FIFO"),
        (_special("model/tty", tarfile.CHRTYPE), "device or FIFO"),
        (_special("model/sda", tarfile.BLKTYPE), "device or FIFO"),
    ],
)
def test_unsafe_members_are_refused_before_anything_is_written(tmp_path, member, reason):
    archive = _archive(tmp_path / "bad.tar.gz", [_file("metrics.json", b"{}"), member])
    out = tmp_path / "out"
    with pytest.raises(UnsafeArchiveError, match=reason) as info:
        safe_extract(archive, out)
    assert info.value.member == member[0].name
    assert member[0].name in str(info.value)
    assert not (out / "metrics.json").exists()  # all members are checked first
    assert not (tmp_path / "evil.txt").exists()


def test_size_limit(tmp_path):
    archive = _archive(tmp_path / "big.tar.gz", [_file("a", b"x" * 1000)])
    with pytest.raises(UnsafeArchiveError, match="exceeds the limit"):
        safe_extract(archive, tmp_path / "out", max_bytes=10)
    assert len(safe_extract(archive, tmp_path / "out", max_bytes=1000)) == 1


def test_file_objects_are_accepted(tmp_path):
    archive = _archive(tmp_path / "ok.tar.gz", [_file("a.txt", b"hi")])
    with open(archive, "rb") as fh:
        safe_extract(fh, tmp_path / "out")
    assert (tmp_path / "out" / "a.txt").read_text() == "hi"
