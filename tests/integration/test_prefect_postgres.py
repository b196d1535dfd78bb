"""Prefect on PostgreSQL, the production backend: concurrent flow runs lose nothing.

A real ``prefect server start`` (own PREFECT_HOME, free port) with
``PREFECT_API_DATABASE_CONNECTION_URL`` pointing at a throwaway PostgreSQL on 127.0.0.1
(``scripts/postgres.py``; the ``postgres`` fixture skips without PostgreSQL, and fails under
``CI=true``). Two client processes run 4 flow runs each at once (8 concurrent flow runs), each
flow 3 concurrent tasks and a 4th over their results. Then: every flow run Completed with the
right result, every task run recorded Completed (task runs reach the server as events, written
by its task-run recorder), the rows are in PostgreSQL (not in a SQLite file) and the server
logged no traceback. The bigger, timed comparison with SQLite is ``bench/prefect_load.py``.
Without PostgreSQL, the launcher's error names where it looked and how to install it.
"""

from __future__ import annotations

import json
import sys
import uuid
from collections import Counter
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

if TYPE_CHECKING:  # the fixtures' types (conftest is not imported: pytest owns that module)
    from conftest import PrefectServer

    from scripts.postgres import LocalPostgres

CLIENTS = 2
FLOWS_PER_CLIENT = 4
SQUARES_PER_FLOW = 3  # + one `total` task per flow
RUN_TIMEOUT_S = 300.0
RECORD_TIMEOUT_S = 120.0

# One client process: FLOWS_PER_CLIENT flow runs at once in one event loop; prints one JSON
# line per flow run (its name, id, final state and result).
CLIENT_SCRIPT = """
import asyncio, json, sys
from prefect import flow, tags, task

@task
async def square(x: int) -> int:
    return x * x

@task
async def total(values: list[int]) -> int:
    return sum(values)

@flow
async def small_pipeline(base: int, width: int) -> int:
    squares = await asyncio.gather(*(square(base + k) for k in range(width)))
    return await total(list(squares))

async def main(client: int, flows: int, width: int, tag: str) -> None:
    runs = [(f"pg-load-{client}-{i}", 100 * client + 10 * i) for i in range(flows)]
    with tags(tag):
        states = await asyncio.gather(*(
            small_pipeline.with_options(flow_run_name=name)(base, width, return_state=True)
            for name, base in runs
        ))
    for (name, base), state in zip(runs, states):
        result = await state.result(raise_on_failure=False) if state.is_completed() else None
        print(json.dumps({"name": name, "base": base, "id": str(state.state_details.flow_run_id),
                          "state": state.type.value, "result": result}), flush=True)

asyncio.run(main(int(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3]), sys.argv[4]))
"""


def expected_result(base: int) -> int:
    return sum((base + k) ** 2 for k in range(SQUARES_PER_FLOW))


def run_clients(server: PrefectServer, tag: str, tmp_path: Path) -> list[dict[str, Any]]:
    """Start every client process at once, wait for all; their JSON lines."""
    script = tmp_path / "client.py"
    script.write_text(CLIENT_SCRIPT)
    clients = [
        server.start_process(
            f"client-{c}",
            [
                sys.executable,
                str(script),
                str(c),
                str(FLOWS_PER_CLIENT),
                str(SQUARES_PER_FLOW),
                tag,
            ],
        )
        for c in range(CLIENTS)
    ]
    server.wait_for(
        lambda: not any(c.alive() for c in clients), RUN_TIMEOUT_S, "the client processes"
    )
    lines: list[dict[str, Any]] = []
    for client in clients:
        assert client.popen is not None and client.popen.returncode == 0, (
            f"{client.name} exited {client.popen and client.popen.returncode}:\n{client.tail()}"
        )
        lines += [
            json.loads(line) for line in client.log.read_text().splitlines() if line.startswith("{")
        ]
    return lines


@pytest.mark.integration
@pytest.mark.slow
def test_concurrent_flow_runs_on_postgres(
    prefect_server_postgres: PrefectServer, postgres: LocalPostgres, tmp_path: Path
) -> None:
    from prefect.client.schemas.filters import (
        FlowRunFilter,
        FlowRunFilterTags,
        TaskRunFilter,
        TaskRunFilterFlowRunId,
    )

    server = prefect_server_postgres
    tag = f"pg-load-{uuid.uuid4().hex[:8]}"
    n_flows = CLIENTS * FLOWS_PER_CLIENT
    n_tasks = n_flows * (SQUARES_PER_FLOW + 1)

    # what the clients saw: every flow run Completed with the right sum of squares
    reported = run_clients(server, tag, tmp_path)
    assert len(reported) == n_flows, reported
    for run in reported:
        assert run["state"] == "COMPLETED", run
        assert run["result"] == expected_result(run["base"]), run
    ids = {run["id"] for run in reported}
    assert len(ids) == n_flows

    # what the server recorded: the same flow runs, Completed; every task run, Completed
    with server.client() as client:
        flow_runs = client.read_flow_runs(
            flow_run_filter=FlowRunFilter(tags=FlowRunFilterTags(all_=[tag]))
        )
        assert {str(r.id) for r in flow_runs} == ids
        assert {r.name for r in flow_runs} == {run["name"] for run in reported}
        assert {r.state_type.value for r in flow_runs if r.state_type} == {"COMPLETED"}

        task_filter = TaskRunFilter(flow_run_id=TaskRunFilterFlowRunId(any_=list(ids)))

        def all_task_runs_recorded() -> list[Any] | None:
            runs = client.read_task_runs(task_run_filter=task_filter, limit=200)
            done = [r for r in runs if r.state_type and r.state_type.value == "COMPLETED"]
            return runs if len(done) == n_tasks else None

        task_runs = server.wait_for(
            all_task_runs_recorded,
            RECORD_TIMEOUT_S,
            lambda: f"{n_tasks} Completed task runs of {n_flows} flow runs",
        )
        assert len(task_runs) == n_tasks
        per_flow = Counter((str(r.flow_run_id), r.name.rsplit("-", 1)[0]) for r in task_runs)
        for flow_run_id in ids:
            assert per_flow[(flow_run_id, "square")] == SQUARES_PER_FLOW, per_flow
            assert per_flow[(flow_run_id, "total")] == 1, per_flow

    # the rows live in PostgreSQL, and the server made no SQLite database
    id_list = ", ".join(f"'{i}'" for i in sorted(ids))
    assert postgres.psql(
        f"SELECT count(*) FROM flow_run WHERE id IN ({id_list}) AND state_type = 'COMPLETED'"
    ).strip() == str(n_flows)
    assert postgres.psql(
        f"SELECT count(*) FROM task_run WHERE flow_run_id IN ({id_list})"
        " AND state_type = 'COMPLETED'"
    ).strip() == str(n_tasks)
    assert not (server.home / "prefect.db").exists()

    server_log = server.process.log.read_text(errors="replace")
    assert "Traceback" not in server_log, server.process.tail(80)


def test_missing_postgres_is_one_clear_error(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """No server binaries anywhere: PostgresUnavailable says where it looked and how to install
    (the ``postgres`` fixture turns it into a skip, or a failure under CI=true)."""
    import scripts.postgres as launcher

    monkeypatch.setattr(launcher, "DEBIAN_GLOB", str(tmp_path / "lib/postgresql/*/bin"))
    monkeypatch.setenv("PATH", str(tmp_path))
    monkeypatch.delenv(launcher.PG_BIN_ENV, raising=False)
    with pytest.raises(launcher.PostgresUnavailable, match="apt-get install -y postgresql"):
        launcher.find_bin_dir()
    (tmp_path / "lib/postgresql/15/bin").mkdir(parents=True)
    for name in launcher.SERVER_BINARIES:
        (tmp_path / "lib/postgresql/15/bin" / name).write_text("")
    assert launcher.find_bin_dir() == tmp_path / "lib/postgresql/15/bin"
