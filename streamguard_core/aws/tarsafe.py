"""Extract a ``model.tar.gz`` from S3 without trusting it.

Every member is checked before anything is written: only regular files and directories are
accepted, with relative names that stay inside the destination. Absolute paths, ``..``
components, symbolic and hard links, devices and FIFOs are refused with an error naming the
member. Files are then written by this code (mode 0644 / 0755, no owners, no special bits), not by
``tarfile``'s own extraction.
"""

from __future__ import annotations

import os
import shutil
import tarfile
from pathlib import Path, PurePosixPath
from typing import IO


class UnsafeArchiveError(ValueError):
    """An archive member would escape the destination or is not a plain file or directory."""

    def __init__(self, member: str, reason: str) -> None:
        super().__init__(f"refusing to extract archive member {member!r}: {reason}")
        self.member, self.reason = member, reason


def _check_member(member: tarfile.TarInfo) -> PurePosixPath:
    """The member's relative path, or :class:`UnsafeArchiveError`."""
    name = member.name
    if member.issym() or member.islnk():
        kind = "symbolic link" if member.issym() else "hard link"
        raise UnsafeArchiveError(name, f"{kind} to {member.linkname!r} (links are not allowed)")
    if member.ischr() or member.isblk() or member.isfifo() or member.isdev():
        raise UnsafeArchiveError(name, "device or FIFO (only files and directories are allowed)")
    if not (member.isfile() or member.isdir()):
        raise UnsafeArchiveError(name, "not a regular file or directory")
    if not name or "\x00" in name:
        raise UnsafeArchiveError(name, "empty or NUL in the name")
    if name.startswith(("/", "\\")) or (len(name) > 1 and name[1] == ":"):
        raise UnsafeArchiveError(name, "absolute path")
    path = PurePosixPath(name.replace("\\", "/"))
    if any(part == ".." for part in path.parts):
        raise UnsafeArchiveError(name, "'..' in the path (would escape the destination)")
    return path


def safe_extract(
    archive: str | Path | IO[bytes], dest: str | Path, max_bytes: int | None = None
) -> list[Path]:
    """Extract a (gzipped) tar archive into ``dest`` after checking every member.

    Args:
        archive: a path or a binary file object.
        dest: destination directory (created).
        max_bytes: refuse archives whose files add up to more (None: no limit).

    Returns:
        The extracted files.

    Raises:
        UnsafeArchiveError: a member is unsafe (nothing has been written then).
    """
    dest = Path(dest)
    if isinstance(archive, str | Path):
        opened = tarfile.open(archive, "r:*")  # noqa: SIM115 - closed by the with below
    else:
        opened = tarfile.open(fileobj=archive, mode="r:*")  # noqa: SIM115
    with opened as tar:
        members = tar.getmembers()
        checked = [(m, _check_member(m)) for m in members]
        total = sum(m.size for m, _ in checked if m.isfile())
        if max_bytes is not None and total > max_bytes:
            raise UnsafeArchiveError(
                str(getattr(archive, "name", archive)),
                f"{total} bytes unpacked exceeds the limit of {max_bytes}",
            )
        dest.mkdir(parents=True, exist_ok=True)
        root = dest.resolve()
        written: list[Path] = []
        for member, rel in checked:
            target = root.joinpath(*rel.parts) if rel.parts else root
            # a directory member named like a file path, or an earlier member, cannot redirect
            # this one outside: parents are created here, never followed through links
            if target != root and root not in target.resolve().parents:
                raise UnsafeArchiveError(member.name, "resolves outside the destination")
            if member.isdir():
                target.mkdir(parents=True, exist_ok=True)
                os.chmod(target, 0o755)
                continue
            target.parent.mkdir(parents=True, exist_ok=True)
            source = tar.extractfile(member)
            if source is None:  # pragma: no cover - isfile() members always have data
                raise UnsafeArchiveError(member.name, "no data")
            if target.is_symlink() or target.is_dir():
                raise UnsafeArchiveError(member.name, "would overwrite a link or directory")
            with source, open(target, "wb") as out:
                shutil.copyfileobj(source, out)
            os.chmod(target, 0o644)
            written.append(target)
    return written
