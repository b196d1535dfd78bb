"""N concurrent flow runs against a Prefect server on SQLite and on PostgreSQL, as one JSON line.

For each backend of ``--backends`` (default ``sqlite,postgresql``), one after the other in the
same run: a fresh ``prefect server start`` on 127.0.0.1 (own PREFECT_HOME, free port; SQLite:
the default file in that home; PostgreSQL: a fresh cluster from ``scripts/postgres.py`` with
PostgreSQL's crash-safety defaults (fsync on) and ``PREFECT_API_DATABASE_CONNECTION_URL=
postgresql+asyncpg://...``), then ``--runs`` client processes started at once, each running one
flow run against ``PREFECT_API_URL`` with its own PREFECT_HOME (as N process workers would),
then the server is stopped. Loopback only; bounded by ``--runs`` and ``--timeout-s`` per backend.

Workloads (``--workload``):

- ``pipeline``: ``flows.pipeline.streamguard_pipeline`` with ``--preset`` (default ``quick``),
  each run its own ``output_root``: the real flow as ``flows/`` has it (with ``quick``: one flow
  run, 10 task runs, artifacts, events, log lines) and its training processes, one after
  another per run (the local backend on a CPU).
- ``shaped``: ``load-pipeline``, defined here with the quick pipeline's shape (one flow run, the
  same 10 task runs in the same order, 12 artifacts of the same kinds, a custom event, log
  lines) and ``--task-s`` seconds of sleep per training task instead of training: the server's
  load without the CPU of training.

``flow_runs_per_run`` and ``task_runs_per_run`` in the output show the shape that ran.

Figures per backend (timestamps from the server's records of each run; one machine, one clock):

- ``submitted``: client processes started; ``completed``: top-level flow runs the API holds in
  Completed; ``failed``: in Failed, Crashed or Cancelled (``failures``: their messages);
- ``lost``: submitted runs without a terminal state in the API once every client exited and
  ``--settle-s`` passed; must be 0. ``timed_out``: clients still running at ``--timeout-s``,
  stopped with SIGTERM (Prefect then ends their runs Crashed: failed; a run the API never sees
  end is lost);
- ``flow_runs_recorded``: flow runs with the run's tag in the API (subflows included);
- ``task_runs_expected``: task runs the clients finished (each client journals the task run ids
  of its own ``Finished in state`` log records as they happen: the client's ground truth);
  ``task_runs_recorded``: those the API holds in a terminal state; ``task_runs_lost``: the
  difference (must be 0). Prefect 3 records task runs from the clients' events. The task-run
  figures below are over these task runs (not the task run the server adds for each subflow);
- ``flow_run_wall_s``: top-level flow run ``end_time - start_time`` (Running to terminal);
- ``process_wall_s``: client process start to exit (interpreter, imports, the run, the flush);
- ``flow_start_latency_s``: top-level flow run ``start_time - created`` (its creation through
  the API to Running: the API round trips of its first states);
- ``task_start_latency_s``: task run ``start_time - expected_start_time`` (its Pending state,
  when the flow called it, to Running: client-side orchestration, cache lookup, waiting);
- ``task_duration_s``: task run ``end_time - start_time`` (Running to its terminal state);
- ``task_record_lag_s``: task run ``updated`` (server time the task-run recorder last wrote the
  row) minus ``end_time`` (client time of its terminal state): how far the server's record
  trails the run;
- ``server_errors``: from the server's log: ``answered_503``, requests that hit a retryable
  database error and were answered 503 (the servers run with
  ``PREFECT_SERVER_LOG_RETRYABLE_ERRORS=true``, else Prefect logs nothing for them);
  ``database_locked``, those of them that were SQLite's "database is locked";
  ``other_errors``, every other ERROR entry. ``client_retries``: requests the clients retried
  after a retryable HTTP status (503) or a connection error (each client logs them).

Each latency is ``{"p50", "p95", "max", "n"}`` in seconds. ``server_start_s``: the server's start
on a fresh database, migrations included (PostgreSQL: plus ``cluster_start_s`` for initdb and
start). The clients get ``OMP_NUM_THREADS=1`` unless it is set (N torch processes on few cores).

    python bench/prefect_load.py [--runs 20] [--workload pipeline|shaped] [--preset quick]
        [--backends sqlite,postgresql] [--timeout-s 1800] [--settle-s 60] [--task-s 0.5]
        [--server-env PREFECT_...=VALUE] [--keep]

Exit status 1 when a run or a task run is lost on any backend, 2 on a setup error.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import logging
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

BIN_DIR = Path(sys.executable).parent
SERVER_START_TIMEOUT_S = 300.0
STOP_TIMEOUT_S = 30.0
API_PAGE = 200  # the server's default maximum page size
TERMINAL = {"COMPLETED", "FAILED", "CRASHED", "CANCELLED"}
REPORT_NAME = "report.json"
JOURNAL_NAME = "finished.jsonl"


# ----------------------------------------------------------------------------------------------
# the client process: one flow run, then a report of what it ran
# ----------------------------------------------------------------------------------------------


class FinishedRuns(logging.Handler):
    """Journals, one JSON line each as they happen (a client killed at the deadline still leaves
    them), the task and flow runs this process finished (``Finished in state`` records of the
    ``prefect.task_runs`` / ``prefect.flow_runs`` run loggers) and its HTTP retries."""

    def __init__(self, journal: Path) -> None:
        super().__init__()
        self.journal = journal

    def emit(self, record: logging.LogRecord) -> None:
        message = record.getMessage()
        entry: dict[str, str] | None = None
        if "retryable" in message:  # prefect.client: "Received response with retryable ..."
            entry = {"kind": "retry"}
        elif message.startswith("Finished in state"):
            state = message.removeprefix("Finished in state ").split("(")[0].strip()
            extra = record.__dict__  # the run logger's extras: task_run_id, flow_run_name, ...
            if record.name == "prefect.task_runs" and extra.get("task_run_id"):
                entry = {"kind": "task", "id": str(extra["task_run_id"]),
                         "name": f"{extra.get('task_run_name')}: {state}"}  # fmt: skip
            elif record.name == "prefect.flow_runs" and extra.get("flow_run_id"):
                entry = {"kind": "flow", "id": str(extra["flow_run_id"]),
                         "name": f"{extra.get('flow_run_name')}: {state}"}  # fmt: skip
        if entry is not None:  # appended and closed at once: on disk whatever happens next
            with open(self.journal, "a") as out:
                out.write(json.dumps(entry) + "\n")


def read_client_report(root: Path) -> dict[str, Any]:
    """A client's journal (task and flow runs it finished, retries) and its final report."""
    report: dict[str, Any] = {"task_runs": {}, "flow_runs": {}, "client_retries": 0}
    journal = root / JOURNAL_NAME
    for line in journal.read_text().splitlines() if journal.exists() else []:
        with contextlib.suppress(ValueError):  # a line cut short by a kill
            entry = json.loads(line)
            if entry["kind"] == "retry":
                report["client_retries"] += 1
            else:
                report[f"{entry['kind']}_runs"][entry["id"]] = entry["name"]
    if (root / REPORT_NAME).exists():
        report.update(json.loads((root / REPORT_NAME).read_text()))
    return report


def _retries_only(record: logging.LogRecord) -> bool:
    """prefect.client's filter here: its retry notes (DEBUG) and everything from INFO up."""
    return record.levelno >= logging.INFO or "retryable" in record.getMessage()


def build_shaped_flow(task_s: float) -> Any:
    """The ``load-pipeline`` flow: the quick pipeline's shape with sleeps instead of work."""
    from prefect import flow, get_run_logger, task
    from prefect.artifacts import (
        create_link_artifact,
        create_markdown_artifact,
        create_progress_artifact,
        create_table_artifact,
        update_progress_artifact,
    )
    from prefect.events import emit_event

    @task
    def preprocess(output_root: str) -> str:
        data_dir = Path(output_root) / "data"
        data_dir.mkdir(parents=True, exist_ok=True)
        (data_dir / "preprocessing_metadata.json").write_text('{"functions": 96}')
        return str(data_dir)

    @task
    def publish_data_summary(data_dir: str) -> None:
        create_table_artifact(key="data-summary-table", table=[{"split": "train", "n": 76}])
        create_markdown_artifact(key="data-summary", markdown=f"data in `{data_dir}`")

    @task
    def preflight(data_dir: str) -> dict[str, bool]:
        return {"go": Path(data_dir).is_dir()}

    @task
    def train_job(model: str, seed: int) -> dict[str, Any]:
        progress: Any = None
        if model != "baseline":  # like the real task: a progress artifact per neural run
            progress = create_progress_artifact(0.0, key=f"training-{model}-seed-{seed}")
        get_run_logger().info("%s seed %d: training", model, seed)
        time.sleep(task_s)
        if progress is not None:
            update_progress_artifact(progress, 100.0)
        return {"model": model, "seed": seed, "f1": 0.5}

    @task
    def aggregate(results: list[dict[str, Any]]) -> dict[str, Any]:
        return {"models": [r["model"] for r in results], "passed": True}

    @task
    def publish_results(summary: dict[str, Any]) -> None:
        for key in ("production-summary", "production-models", "production-checks"):
            create_table_artifact(key=key, table=[{"model": m} for m in summary["models"]])
        create_markdown_artifact(key="production-report", markdown="# report\n")
        for key in ("production-report-file", "production-summary-file"):
            create_link_artifact(key=key, link="file:///dev/null")
        emit_event("streamguard.pipeline.completed", resource={"prefect.resource.id": "load"})

    @task
    def compare(summary: dict[str, Any]) -> dict[str, Any]:
        return {"best": summary["models"][0]}

    @task
    def publish_comparison(evaluation: dict[str, Any]) -> None:
        create_markdown_artifact(key="model-comparison", markdown=f"best: {evaluation['best']}")
        create_table_artifact(key="model-comparison-table", table=[evaluation])

    @flow(name="load-pipeline")
    def load_pipeline(output_root: str) -> dict[str, Any]:
        data_dir = preprocess(output_root)
        publish_data_summary(data_dir)
        preflight(data_dir)
        results = [train_job(model, 42) for model in ("baseline", "gnn", "transformer")]
        summary = aggregate(results)
        publish_results(summary)
        publish_comparison(compare(summary))
        return summary

    return load_pipeline


def child_main(args: argparse.Namespace) -> int:
    """One client: run one flow run named ``--child-name``, journal the runs it finishes,
    write its report (name, flow run id, state, error); exit 0."""
    t0 = time.monotonic()
    import prefect.main  # noqa: F401  (sets up Prefect's logging before our handler joins)
    from prefect import tags

    output_root = Path(args.child_output_root)
    finished = FinishedRuns(output_root.parent / JOURNAL_NAME)
    for name in ("prefect.task_runs", "prefect.flow_runs"):
        logging.getLogger(name).addHandler(finished)
    client_logger = logging.getLogger("prefect.client")
    client_logger.setLevel(logging.DEBUG)
    client_logger.addFilter(_retries_only)
    client_logger.addHandler(finished)

    if args.workload == "pipeline":
        from flows.pipeline import streamguard_pipeline
        from flows.presets import load_preset

        config = load_preset(args.preset).model_copy(update={"output_root": str(output_root)})
        run: Any = streamguard_pipeline
        params: dict[str, Any] = {"config": config}
    else:
        run, params = build_shaped_flow(args.task_s), {"output_root": str(output_root)}
    report: dict[str, Any] = {"name": args.child_name}
    try:
        with tags(args.child_tag):
            state = run.with_options(flow_run_name=args.child_name)(**params, return_state=True)
        report.update(
            flow_run_id=str(state.state_details.flow_run_id),
            state=state.type.value,
            message=state.message,
        )
    except BaseException as exc:  # the report says so; the parent counts the run by the API
        report.update(error=f"{type(exc).__name__}: {exc}")
    report["wall_s"] = time.monotonic() - t0
    tmp = output_root.parent / f".{REPORT_NAME}.tmp"
    tmp.write_text(json.dumps(report))
    tmp.replace(output_root.parent / REPORT_NAME)
    return 0


# ----------------------------------------------------------------------------------------------
# the parent: servers, clients, the API's records
# ----------------------------------------------------------------------------------------------


def bench_env(home: Path, api_url: str | None = None, **settings: str) -> dict[str, str]:
    """:func:`scripts.loopback.prefect_env` for the server and the clients, offline, with this
    checkout importable and one torch thread unless ``OMP_NUM_THREADS`` is set (``settings``
    last)."""
    from scripts.loopback import RUNNER_ENV, prefect_env

    pythonpath = os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")]))
    env = prefect_env(home, api_url, **{**RUNNER_ENV, "PYTHONPATH": pythonpath, **settings})
    env.setdefault("OMP_NUM_THREADS", "1")
    return env


def start_logged(
    command: list[str], log: Path, cwd: Path, env: dict[str, str]
) -> subprocess.Popen[bytes]:
    """``command`` in its own session (its process group is its own: :func:`stop_processes`
    reaches its children), stdout and stderr to ``log``."""
    with open(log, "wb") as out:
        return subprocess.Popen(
            command,
            cwd=cwd,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )


def stop_process(popen: subprocess.Popen[bytes]) -> None:
    """SIGTERM, wait, SIGKILL; then SIGKILL what is left of its process group (our child's)."""
    stop_processes([popen])


def stop_processes(popens: list[subprocess.Popen[bytes]]) -> None:
    """:func:`stop_process` for several at once: all get SIGTERM (a Prefect run then ends
    Crashed), then one shared wait of at most ``STOP_TIMEOUT_S``."""
    for popen in popens:
        if popen.poll() is None:
            popen.terminate()
    deadline = time.monotonic() + STOP_TIMEOUT_S
    for popen in popens:
        try:
            popen.wait(timeout=max(0.1, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            popen.kill()
            popen.wait(timeout=STOP_TIMEOUT_S)
        # the group id is our child's PID (start_new_session): this reaches only its children
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(popen.pid, signal.SIGKILL)


@dataclass
class PrefectServer:
    """A ``prefect server start`` on 127.0.0.1 with its own PREFECT_HOME."""

    port: int
    log: Path
    popen: subprocess.Popen[bytes]
    start_s: float = 0.0

    @property
    def api_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/api"

    @classmethod
    def start(
        cls, root: Path, database_url: str | None, extra_env: dict[str, str] | None = None
    ) -> PrefectServer:
        """Start it (``extra_env``: more server settings) and wait for ``/api/health``
        (migrations run on the first start)."""
        import httpx

        from scripts.loopback import free_port

        home = root / "server_home"
        home.mkdir(parents=True)
        port = free_port()
        settings = {"PREFECT_API_DATABASE_CONNECTION_URL": database_url} if database_url else {}
        # log the database errors Prefect answers with a 503 (SQLite's "database is locked")
        settings["PREFECT_SERVER_LOG_RETRYABLE_ERRORS"] = "true"
        settings.update(extra_env or {})
        env = bench_env(home, f"http://127.0.0.1:{port}/api", **settings)
        log = root / "prefect-server.log"
        t0 = time.monotonic()
        command = [str(BIN_DIR / "prefect"), "server", "start", "--host", "127.0.0.1"]
        popen = start_logged([*command, "--port", str(port)], log, root, env)
        server = cls(port, log, popen)
        while True:
            if popen.poll() is not None:
                raise RuntimeError(f"prefect server exited {popen.returncode}:\n{tail(log)}")
            with contextlib.suppress(httpx.HTTPError):
                if httpx.get(f"{server.api_url}/health", timeout=5).status_code == 200:
                    break
            if time.monotonic() - t0 > SERVER_START_TIMEOUT_S:
                stop_process(popen)
                raise RuntimeError(
                    f"prefect server not healthy after {SERVER_START_TIMEOUT_S:.0f} s:\n{tail(log)}"
                )
            time.sleep(0.5)
        server.start_s = time.monotonic() - t0
        return server

    def stop(self) -> None:
        stop_process(self.popen)


def tail(path: Path, lines: int = 40) -> str:
    """The last lines of a log file."""
    if not path.exists():
        return ""
    return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])


@dataclass
class Client:
    """One client process and where its report and log go."""

    name: str
    root: Path
    popen: subprocess.Popen[bytes]
    started: float
    wall_s: float | None = None
    timed_out: bool = False
    report: dict[str, Any] = field(default_factory=dict)


def start_clients(
    args: argparse.Namespace, server: PrefectServer, root: Path, tag: str, clients: list[Client]
) -> None:
    """``--runs`` client processes, started one right after the other, into ``clients``."""
    for i in range(args.runs):
        name = f"{tag}-{i:03d}"
        client_root = root / "clients" / f"{i:03d}"
        (client_root / "home").mkdir(parents=True)
        env = bench_env(
            client_root / "home", PREFECT_API_URL=server.api_url, PREFECT_LOGGING_LEVEL="INFO"
        )
        command = [
            sys.executable,
            str(Path(__file__).resolve()),
            "--child",
            "--workload",
            args.workload,
            "--preset",
            args.preset,
            "--task-s",
            str(args.task_s),
            "--child-name",
            name,
            "--child-tag",
            tag,
            "--child-output-root",
            str(client_root / "output"),
        ]
        popen = start_logged(command, client_root / "client.log", REPO, env)
        clients.append(Client(name, client_root, popen, time.monotonic()))


def wait_clients(clients: list[Client], deadline: float) -> None:
    """Wait for every client until ``deadline``; stop (SIGTERM, then SIGKILL to its process
    group) the ones still running then."""
    while True:
        for client in clients:
            if client.wall_s is None and client.popen.poll() is not None:
                client.wall_s = time.monotonic() - client.started
        running = [c for c in clients if c.wall_s is None]
        if not running:
            break
        if time.monotonic() > deadline:
            for client in running:
                client.timed_out = True
            stop_processes([c.popen for c in running])
            break
        time.sleep(0.5)
    for client in clients:
        client.report = read_client_report(client.root)


def read_all(read: Any, **filters: Any) -> list[Any]:
    """Every page of a client ``read_*`` call."""
    rows: list[Any] = []
    while True:
        page = read(**filters, limit=API_PAGE, offset=len(rows))
        rows += page
        if len(page) < API_PAGE:
            return rows


def api_records(api_url: str, tag: str) -> tuple[list[Any], list[Any]]:
    """(flow runs with ``tag``, subflows included; their task runs) as the API holds them."""
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import (
        FlowRunFilter,
        FlowRunFilterTags,
        TaskRunFilter,
        TaskRunFilterFlowRunId,
    )
    from prefect.settings import PREFECT_API_URL, temporary_settings

    with (
        temporary_settings(updates={PREFECT_API_URL: api_url}),
        get_client(sync_client=True) as client,
    ):
        flow_runs = read_all(
            client.read_flow_runs, flow_run_filter=FlowRunFilter(tags=FlowRunFilterTags(all_=[tag]))
        )
        task_runs: list[Any] = []
        ids = [r.id for r in flow_runs]
        for start in range(0, len(ids), 50):  # a bounded filter per request
            id_filter = TaskRunFilterFlowRunId(any_=ids[start : start + 50])
            task_runs += read_all(
                client.read_task_runs, task_run_filter=TaskRunFilter(flow_run_id=id_filter)
            )
    return flow_runs, task_runs


def state_of(run: Any) -> str | None:
    return run.state_type.value if run.state_type else None


def settle(
    api_url: str, tag: str, clients: list[Client], settle_s: float
) -> tuple[list[Any], list[Any]]:
    """The API's records once every run the clients reported is terminal there (or after
    ``settle_s``): the server records task runs from events, a little after the runs end."""
    expected_tasks = {tid for c in clients for tid in c.report.get("task_runs", {})}
    names = {c.name for c in clients}
    deadline = time.monotonic() + settle_s
    while True:
        flow_runs, task_runs = api_records(api_url, tag)
        top_done = {
            r.name for r in flow_runs if r.parent_task_run_id is None and state_of(r) in TERMINAL
        }
        tasks_done = {str(r.id) for r in task_runs if state_of(r) in TERMINAL}
        if (top_done >= names and tasks_done >= expected_tasks) or time.monotonic() > deadline:
            return flow_runs, task_runs
        time.sleep(2.0)


def percentiles(values: list[float]) -> dict[str, float | int | None]:
    """p50, p95 and max of ``values`` in seconds (None when there are none), and n."""
    import numpy as np

    if not values:
        return {"p50": None, "p95": None, "max": None, "n": 0}
    p50, p95 = np.percentile(values, [50, 95])
    return {
        "p50": round(float(p50), 3),
        "p95": round(float(p95), 3),
        "max": round(max(values), 3),
        "n": len(values),
    }


def seconds(later: Any, earlier: Any) -> float | None:
    return None if later is None or earlier is None else (later - earlier).total_seconds()


def server_errors(log: Path) -> dict[str, int]:
    """The server log's error entries: requests answered 503 (a retryable database error),
    how many of them were SQLite's "database is locked", and every other ERROR entry."""
    text = log.read_text(errors="replace") if log.exists() else ""
    entries = re.split(r"(?m)^(?=\d\d:\d\d:\d\d\.\d{3} \| )", text)  # one per log record
    errors = [e for e in entries if re.match(r"\S+ \|\s*(ERROR|CRITICAL)\s*\|", e)]
    retryable = [e for e in errors if "Encountered retryable exception in request" in e]
    # uvicorn logs the same request again when PREFECT_SERVER_LOG_RETRYABLE_ERRORS is on
    repeated = [e for e in errors if "uvicorn.error" in e and "database is locked" in e]
    return {
        "answered_503": len(retryable),
        "database_locked": sum(1 for e in retryable if "database is locked" in e),
        "other_errors": len(errors) - len(retryable) - len(repeated),
    }


def figures(
    clients: list[Client], flow_runs: list[Any], task_runs: list[Any], server: PrefectServer
) -> dict[str, Any]:
    """The backend's figures (see the module docstring)."""
    top = {r.name: r for r in flow_runs if r.parent_task_run_id is None}
    states = [state_of(top[c.name]) if c.name in top else None for c in clients]
    completed = sum(1 for s in states if s == "COMPLETED")
    failed = sum(1 for s in states if s in TERMINAL - {"COMPLETED"})
    failures: dict[str, int] = {}
    for c in clients:
        run = top.get(c.name)
        if run is not None and state_of(run) in TERMINAL - {"COMPLETED"}:
            message = f"{state_of(run)}: {(run.state.message if run.state else '') or ''}"[:200]
            failures[message] = failures.get(message, 0) + 1
        elif c.report.get("error"):
            failures[c.report["error"][:200]] = failures.get(c.report["error"][:200], 0) + 1
    expected = {tid for c in clients for tid in c.report.get("task_runs", {})}
    # the client-run task runs the API holds in a terminal state (a subflow's task run aside)
    recorded = {
        str(r.id): r for r in task_runs if state_of(r) in TERMINAL and str(r.id) in expected
    }
    top_runs = [top[c.name] for c in clients if c.name in top]
    return {
        "submitted": len(clients),
        "completed": completed,
        "failed": failed,
        "lost": len(clients) - completed - failed,
        "timed_out": sum(1 for c in clients if c.timed_out),
        "failures": failures,
        "flow_runs_recorded": len(flow_runs),
        "flow_runs_per_run": round(len(flow_runs) / len(clients), 2),
        "task_runs_per_run": round(len(expected) / len(clients), 2),
        "task_runs_expected": len(expected),
        "task_runs_recorded": len(recorded),
        "task_runs_lost": len(expected - set(recorded)),
        "server_start_s": round(server.start_s, 2),
        "process_wall_s": percentiles([c.wall_s for c in clients if c.wall_s is not None]),
        "flow_run_wall_s": percentiles(
            [s for r in top_runs if (s := seconds(r.end_time, r.start_time)) is not None]
        ),
        "flow_start_latency_s": percentiles(
            [s for r in top_runs if (s := seconds(r.start_time, r.created)) is not None]
        ),
        "task_start_latency_s": percentiles(
            [
                s
                for r in recorded.values()
                if (s := seconds(r.start_time, r.expected_start_time)) is not None
            ]
        ),
        "task_duration_s": percentiles(
            [s for r in recorded.values() if (s := seconds(r.end_time, r.start_time)) is not None]
        ),
        "task_record_lag_s": percentiles(
            [s for r in recorded.values() if (s := seconds(r.updated, r.end_time)) is not None]
        ),
        "server_errors": server_errors(server.log),
        "client_retries": sum(int(c.report.get("client_retries", 0)) for c in clients),
    }


def run_backend(backend: str, args: argparse.Namespace, root: Path) -> dict[str, Any]:
    """One backend: its server (and PostgreSQL), N concurrent clients, the API's records."""
    pg = None
    out: dict[str, Any] = {}
    if backend == "postgresql":
        from scripts.postgres import LocalPostgres

        t0 = time.monotonic()
        pg = LocalPostgres.start(
            database="prefect", durable=True, settings={"max_connections": "200"}
        )
        out["cluster_start_s"] = round(time.monotonic() - t0, 2)
    clients: list[Client] = []
    try:
        server = PrefectServer.start(root, pg.url if pg else None, args.server_env_dict)
        try:
            tag = f"load-{backend}-{os.getpid()}"
            t0 = time.monotonic()
            start_clients(args, server, root, tag, clients)
            wait_clients(clients, t0 + args.timeout_s)
            phase_s = time.monotonic() - t0
            flow_runs, task_runs = settle(server.api_url, tag, clients, args.settle_s)
            out = {
                **figures(clients, flow_runs, task_runs, server),
                **out,
                "phase_wall_s": round(phase_s, 2),
            }
        finally:
            # an interrupted bench leaves no client behind
            stop_processes([c.popen for c in clients if c.popen.poll() is None])
            server.stop()
    finally:
        if pg is not None:
            pg.stop()
    return out


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--runs", type=int, default=20, help="concurrent flow runs per backend")
    parser.add_argument("--workload", choices=["pipeline", "shaped"], default="pipeline")
    parser.add_argument("--preset", default="quick", help="the pipeline workload's preset")
    parser.add_argument(
        "--task-s",
        type=float,
        default=0.5,
        help="shaped workload: seconds each training task sleeps",
    )
    parser.add_argument(
        "--backends",
        default="sqlite,postgresql",
        help="comma-separated, run in this order: sqlite, postgresql",
    )
    parser.add_argument(
        "--timeout-s",
        type=float,
        default=1800.0,
        help="per backend: clients still running then are killed (lost)",
    )
    parser.add_argument(
        "--settle-s",
        type=float,
        default=60.0,
        help="per backend: how long the API may take to record the runs",
    )
    parser.add_argument(
        "--keep",
        action="store_true",
        help="keep the work dir (logs, outputs); always kept when runs are lost",
    )
    parser.add_argument(
        "--server-env",
        action="append",
        default=[],
        metavar="NAME=VALUE",
        help="a setting for both servers, e.g. "
        "PREFECT_SERVER_SERVICES_TASK_RUN_RECORDER_BATCH_SIZE=50 (repeatable)",
    )
    # the client process (internal)
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--child-name", help=argparse.SUPPRESS)
    parser.add_argument("--child-tag", help=argparse.SUPPRESS)
    parser.add_argument("--child-output-root", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    backends = [b.strip() for b in args.backends.split(",") if b.strip()]
    unknown = sorted(set(backends) - {"sqlite", "postgresql"})
    if unknown or not backends:
        parser.error(f"--backends: unknown {unknown or 'empty'} (choose from sqlite, postgresql)")
    if args.runs < 1:
        parser.error("--runs must be >= 1")
    args.backend_list = backends
    args.server_env_dict = {}
    for item in args.server_env:
        name, sep, value = item.partition("=")
        if not sep or not name.startswith("PREFECT_"):
            parser.error(f"--server-env {item!r}: expected PREFECT_NAME=VALUE")
        args.server_env_dict[name] = value
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.child:
        return child_main(args)
    # SIGTERM unwinds like Ctrl-C: the clients, servers and PostgreSQL are stopped
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    if args.workload == "pipeline":  # a bad preset: one clear line before anything starts
        from flows.presets import load_preset

        try:
            load_preset(args.preset)
        except (FileNotFoundError, ValueError) as exc:
            print(f"error: --preset {args.preset}: {exc}", file=sys.stderr)
            return 2
    work = Path(tempfile.mkdtemp(prefix="bench_prefect_load_"))
    results: dict[str, Any] = {}
    try:
        for backend in args.backend_list:
            results[backend] = run_backend(backend, args, work / backend)
    except Exception as exc:  # PostgreSQL missing, a server that does not start: one line
        print(f"error: {type(exc).__name__}: {exc}\n(work dir kept: {work})", file=sys.stderr)
        return 2
    lost = any(r["lost"] or r["task_runs_lost"] for r in results.values())
    kept = args.keep or lost
    workload = f"pipeline:{args.preset}" if args.workload == "pipeline" else "shaped"
    print(
        json.dumps(
            {
                "bench": "prefect_load",
                "workload": workload,
                "task_s": args.task_s if args.workload == "shaped" else None,
                "runs": args.runs,
                "timeout_s": args.timeout_s,
                "server_env": args.server_env_dict,
                "cpus": os.cpu_count(),
                "backends": results,
                "ok": not lost,
                "work_dir": str(work) if kept else None,
            }
        )
    )
    if not kept:
        shutil.rmtree(work, ignore_errors=True)
    return 1 if lost else 0


if __name__ == "__main__":
    sys.exit(main())
