"""Shared fixtures of the core tests: processes racing for one resource."""

from __future__ import annotations

import multiprocessing
from collections.abc import Callable, Sequence
from typing import Any

import pytest


@pytest.fixture
def race_processes() -> Callable[..., None]:
    """``race_processes(target, args_list, timeout_s)``: one process per ``args`` in
    ``args_list``, each calling ``target(*args, barrier)``, where the barrier lets them all start
    the contended part at once; waits for them, then asserts that every one exited 0.

    The processes come from a forkserver (forked from a clean server, not from this test
    process), so ``target`` must be a module-level function.
    """

    def run(target: Callable[..., None], args_list: Sequence[tuple[Any, ...]], timeout_s: float):
        ctx = multiprocessing.get_context("forkserver")
        barrier = ctx.Barrier(len(args_list))
        procs = [ctx.Process(target=target, args=(*args, barrier)) for args in args_list]
        for p in procs:
            p.start()
        for p in procs:
            p.join(timeout_s)
        assert [p.exitcode for p in procs] == [0] * len(procs)

    return run
