"""Inter-process file locks: one writer at a time on the registry, the LR cache, the shared data
cache, and one pipeline run per run directory.

A lock is an ``fcntl.flock`` on a small file. The holder writes its pid, host, start time and
purpose into the file, so a refused or timed-out waiter can say who holds it, and deletes the
file when it lets go (a taker checks that the file it locked is still the one at the path, so a
waiter that locked a file just deleted tries again instead of holding a lock nobody else sees).
The kernel drops the lock when the holding process ends, however it ends, so a crashed run
leaves at most an unlocked file behind, never a stale lock.

``flock`` excludes other processes on the machine and other threads of the same process (each
acquisition opens its own file description). Locks are not re-entrant: a thread that takes a
lock it already holds waits for itself. On NFS, Linux emulates ``flock`` with byte-range locks
(NFSv4: across clients); on other network file systems it may hold on one machine only.
POSIX only (Linux, macOS).
"""

from __future__ import annotations

import fcntl
import json
import logging
import os
import socket
import time
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from types import TracebackType

log = logging.getLogger("streamguard.locks")

# Polling (instead of a blocking flock) keeps a waiting thread responsive to cancellation and
# lets it time out; the interval grows so that a long wait costs next to nothing.
_POLL_FIRST_S = 0.005
_POLL_MAX_S = 0.1


class LockError(RuntimeError):
    """A lock could not be taken (base of :class:`LockBusy` and :class:`LockTimeout`): ``path``
    is the lock file, ``holder`` who holds it."""

    def __init__(self, message: str, path: Path, holder: str) -> None:
        super().__init__(message)
        self.path = path
        self.holder = holder


class LockBusy(LockError):
    """A non-blocking :func:`try_lock` found the lock held by someone else."""


class LockTimeout(LockError, TimeoutError):
    """:func:`file_lock` waited ``timeout_s`` without getting the lock."""


def read_holder(path: str | Path) -> str:
    """Who holds the lock at ``path``, as one phrase (``"unknown holder"`` when not recorded)."""
    try:
        info = json.loads(Path(path).read_text(encoding="utf-8"))
        return f"{info['what']} (pid {info['pid']} on {info['host']}, since {info['since']})"
    except (OSError, ValueError, KeyError, TypeError):
        # no file, or the holder is between taking the lock and writing its line
        return "unknown holder"


class FileLock:
    """An exclusive ``flock`` on ``path``; ``what`` says what the holder does (for messages)."""

    def __init__(self, path: str | Path, what: str) -> None:
        self.path = Path(path)
        self.what = what
        self._fd: int | None = None

    @property
    def held(self) -> bool:
        """Whether this object holds the lock now."""
        return self._fd is not None

    def try_acquire(self) -> bool:
        """Take the lock if it is free; never waits."""
        if self._fd is not None:
            message = f"{self.path}: this lock object already holds the lock"
            raise LockError(message, self.path, self.what)
        while True:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o666)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                os.close(fd)
                return False
            except BaseException:
                os.close(fd)
                raise
            if self._still_at_path(fd):
                break
            os.close(fd)  # the holder deleted it between our open and our flock: again
        info = {
            "what": self.what,
            "pid": os.getpid(),
            "host": socket.gethostname(),
            "since": datetime.now(UTC).isoformat(timespec="seconds"),
        }
        os.ftruncate(fd, 0)
        os.pwrite(fd, (json.dumps(info) + "\n").encode("utf-8"), 0)
        self._fd = fd
        return True

    def _still_at_path(self, fd: int) -> bool:
        try:
            at_path = os.stat(self.path)
        except FileNotFoundError:
            return False
        mine = os.fstat(fd)
        return (mine.st_dev, mine.st_ino) == (at_path.st_dev, at_path.st_ino)

    def acquire(self, timeout_s: float | None = None) -> None:
        """Wait for the lock (``timeout_s`` None: as long as it takes); a wait is logged once
        (INFO, ``streamguard.locks``), naming the lock file and its holder.

        Raises:
            LockTimeout: ``timeout_s`` passed; the message names the lock file and its holder.
        """
        deadline = None if timeout_s is None else time.monotonic() + timeout_s
        pause = _POLL_FIRST_S
        said = False
        while not self.try_acquire():
            if not said:
                log.info("%s: waiting for the lock %s, held by %s",
                         self.what, self.path, read_holder(self.path))  # fmt: skip
                said = True
            if deadline is not None and time.monotonic() >= deadline:
                holder = read_holder(self.path)
                raise LockTimeout(
                    f"{self.what}: gave up after {timeout_s:g} s waiting for the lock "
                    f"{self.path}, held by {holder}",
                    self.path,
                    holder,
                )
            wait = pause if deadline is None else min(pause, max(0.0, deadline - time.monotonic()))
            time.sleep(wait)
            pause = min(pause * 2, _POLL_MAX_S)

    def release(self) -> None:
        """Delete the lock file and drop the lock (no-op when not held)."""
        fd, self._fd = self._fd, None
        if fd is None:
            return
        try:
            # emptied first: freeing a data block at the last close costs ms here (ext4 with
            # discard); deleted while still held: nobody can take this file after we let go
            os.ftruncate(fd, 0)
            self.path.unlink(missing_ok=True)
            fcntl.flock(fd, fcntl.LOCK_UN)
        finally:
            os.close(fd)

    def __enter__(self) -> FileLock:
        if not self.held:
            self.acquire()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.release()


@contextmanager
def file_lock(
    path: str | Path, *, timeout_s: float | None = None, what: str = "a StreamGuard process"
) -> Iterator[FileLock]:
    """Hold the exclusive lock at ``path`` for the ``with`` block, waiting for it first.

    Args:
        path: the lock file (created with its parent directories when missing).
        timeout_s: the longest wait; None waits as long as it takes.
        what: what the holder does, written into the lock file for other waiters' messages.

    Raises:
        LockTimeout: the lock stayed held for ``timeout_s``; names the lock file and the holder.
    """
    lock = FileLock(path, what)
    lock.acquire(timeout_s)
    try:
        yield lock
    finally:
        lock.release()


def try_lock(path: str | Path, *, what: str) -> FileLock:
    """The lock at ``path``, held, or :class:`LockBusy` at once when someone else holds it.

    The caller releases it (``with try_lock(...):`` or ``.release()``).
    """
    lock = FileLock(path, what)
    if not lock.try_acquire():
        holder = read_holder(path)
        raise LockBusy(f"{path}: held by {holder}", Path(path), holder)
    return lock
