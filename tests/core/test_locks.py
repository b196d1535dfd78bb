"""streamguard_core/locks.py: one holder at a time across processes and threads, clear refusals,
and no stale lock after a killed holder."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import threading
from pathlib import Path

import pytest

from streamguard_core.locks import LockBusy, LockTimeout, file_lock, read_holder, try_lock

REPO_ROOT = Path(__file__).resolve().parents[2]


def _count_under_lock(lock: str, counter: str, times: int, barrier=None) -> None:
    """Read-modify-write a counter file ``times`` times, each under the lock (a lost update
    shows as a final count below the total)."""
    if barrier is not None:
        barrier.wait()
    for _ in range(times):
        with file_lock(lock, timeout_s=60, what=f"counter pid {os.getpid()}"):
            value = int(Path(counter).read_text())
            os.sched_yield()  # invite a context switch inside the critical section
            Path(counter).write_text(str(value + 1))


def test_processes_take_turns_and_the_lock_file_goes(tmp_path, race_processes):
    # each release deletes the lock file and each take re-creates it: the count proves that a
    # process that locked a just-deleted file never went on as if it held the lock
    lock, counter = tmp_path / "locks" / "c.lock", tmp_path / "counter"
    counter.write_text("0")
    n, times = 4, 10
    race_processes(_count_under_lock, [(str(lock), str(counter), times)] * n, 120)
    assert int(counter.read_text()) == n * times
    assert not lock.exists()  # released: deleted


def test_threads_of_one_process_take_turns(tmp_path):
    lock, counter = tmp_path / "t.lock", tmp_path / "counter"
    counter.write_text("0")
    threads = [
        threading.Thread(target=_count_under_lock, args=(str(lock), str(counter), 30))
        for _ in range(4)
    ]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert int(counter.read_text()) == 120


def test_a_busy_lock_is_refused_or_times_out_naming_file_and_holder(tmp_path):
    path = tmp_path / "registry" / ".lock"
    with file_lock(path, what="pipeline run 'first'"):
        assert "pipeline run 'first'" in read_holder(path)
        with pytest.raises(LockBusy) as busy:
            try_lock(path, what="pipeline run 'second'")
        message = str(busy.value)
        assert str(path) in message and "pipeline run 'first'" in message
        assert f"pid {os.getpid()} on {socket.gethostname()}" in message
        assert busy.value.path == path
        with pytest.raises(LockTimeout) as timed_out, file_lock(path, timeout_s=0.05, what="x"):
            pass
        message = str(timed_out.value)
        assert "gave up after 0.05 s" in message and str(path) in message
        assert "pipeline run 'first'" in message and message.startswith("x:")
    assert not path.exists() and read_holder(path) == "unknown holder"
    with try_lock(path, what="third") as lock:  # free again
        assert lock.held and "third" in read_holder(path)
    assert not lock.held


def test_a_killed_holder_leaves_no_stale_lock(tmp_path):
    path = tmp_path / "run" / ".run.lock"
    code = (
        "import sys\n"
        "from streamguard_core.locks import try_lock\n"
        f"lock = try_lock({str(path)!r}, what='doomed run')\n"
        "print('held', flush=True)\n"
        "sys.stdin.read()\n"
    )
    proc = subprocess.Popen(
        [sys.executable, "-c", code], cwd=REPO_ROOT, stdin=subprocess.PIPE,
        stdout=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        assert proc.stdout is not None and proc.stdout.readline().strip() == "held"
        with pytest.raises(LockBusy, match=f"doomed run \\(pid {proc.pid} "):
            try_lock(path, what="next run")
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait(30)
    # the kernel dropped the dead process's lock; its file is still there, unlocked
    assert path.exists()
    with try_lock(path, what="next run"):
        assert "next run" in read_holder(path)
