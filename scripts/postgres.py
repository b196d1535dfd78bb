"""A throwaway PostgreSQL on 127.0.0.1 for tests and benchmarks: its own data dir, a free port.

Debian's server binaries (``apt-get install postgresql``, or ``make postgresql``) are found in
``/usr/lib/postgresql/<version>/bin`` (the newest), else next to ``initdb`` on ``PATH``, or in
``$STREAMGUARD_PG_BIN``. ``initdb`` and ``postgres`` refuse to run as root, so as root they
run as the ``postgres`` system user, which owns the cluster's directory (a fresh directory under
the system temp dir: pytest's own temp dirs are private to root). The cluster listens on
127.0.0.1 only (a password is required over TCP, scram-sha-256) and on a Unix socket in its
directory (trust: the directory is private to its owner). Stopping it is ``pg_ctl stop -m
immediate`` and removes the directory. Used by ``tests/integration/conftest.py`` (the
``postgres`` fixture) and ``bench/prefect_load.py``. By hand::

    python -m scripts.postgres        # prints the Prefect database URL; Ctrl-C stops and cleans up
"""

from __future__ import annotations

import atexit
import contextlib
import os
import pwd
import re
import secrets
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # also as python scripts/postgres.py
from scripts.loopback import free_port

PG_BIN_ENV = "STREAMGUARD_PG_BIN"
DEBIAN_GLOB = "/usr/lib/postgresql/*/bin"
SERVER_BINARIES = ("initdb", "pg_ctl", "postgres")
START_TIMEOUT_S = 60
# Durability off: a test database lives seconds and is deleted; nothing to recover after a crash.
FAST_SETTINGS = {"fsync": "off", "synchronous_commit": "off", "full_page_writes": "off"}


class PostgresUnavailable(RuntimeError):
    """No usable PostgreSQL server here (binaries missing, or root without a postgres user)."""


def find_bin_dir() -> Path:
    """The directory with ``initdb``, ``pg_ctl`` and ``postgres``.

    Raises:
        PostgresUnavailable: none found (the message says how to install them).
    """
    candidates: list[Path] = []
    if os.environ.get(PG_BIN_ENV):
        candidates.append(Path(os.environ[PG_BIN_ENV]))
    # newest major version first: /usr/lib/postgresql/16/bin before .../15/bin
    debian = sorted(Path("/").glob(DEBIAN_GLOB.lstrip("/")), key=_version_key, reverse=True)
    candidates += debian
    initdb = shutil.which("initdb")
    if initdb:
        candidates.append(Path(initdb).resolve().parent)
    for directory in candidates:
        if all((directory / name).is_file() for name in SERVER_BINARIES):
            return directory
    raise PostgresUnavailable(
        f"PostgreSQL server binaries ({', '.join(SERVER_BINARIES)}) not found in "
        f"${PG_BIN_ENV}, {DEBIAN_GLOB} or on PATH: apt-get install -y postgresql "
        "(or `make postgresql`)"
    )


def _version_key(path: Path) -> tuple[int, ...]:
    return tuple(int(n) for n in re.findall(r"\d+", path.parent.name)) or (0,)


@dataclass
class LocalPostgres:
    """A running PostgreSQL cluster with one database, owned by this process.

    Start it with :meth:`start` (or ``with LocalPostgres.start() as pg:``); :attr:`url` is the
    ``postgresql+asyncpg://`` URL Prefect's ``PREFECT_API_DATABASE_CONNECTION_URL`` takes.
    """

    bin_dir: Path
    root: Path
    port: int
    user: str
    password: str
    database: str
    owner: pwd.struct_passwd | None  # the system user the server runs as; None: this user
    _stopped: bool = field(default=False, repr=False)

    @property
    def data_dir(self) -> Path:
        return self.root / "data"

    @property
    def socket_dir(self) -> Path:
        return self.root / "socket"

    @property
    def log(self) -> Path:
        return self.root / "postgres.log"

    @property
    def url(self) -> str:
        """SQLAlchemy URL with the asyncpg driver (what Prefect's server needs)."""
        return (
            f"postgresql+asyncpg://{self.user}:{self.password}@127.0.0.1:{self.port}/"
            f"{self.database}"
        )

    @classmethod
    def start(
        cls,
        database: str = "prefect",
        user: str = "streamguard",
        durable: bool = False,
        settings: dict[str, str] | None = None,
        port: int | None = None,
    ) -> LocalPostgres:
        """initdb a fresh cluster, start it on 127.0.0.1 and create ``database``.

        Args:
            database: the database to create (owned by ``user``).
            user: the cluster's superuser; its password is random.
            durable: keep PostgreSQL's crash-safety defaults (fsync, synchronous commit);
                False turns them off (:data:`FAST_SETTINGS`), for tests.
            settings: more ``postgresql.conf`` settings (e.g. ``{"max_connections": "300"}``).
            port: a fixed port; default a free one (retried on a bind race).

        Raises:
            PostgresUnavailable: no binaries, or running as root without a ``postgres`` user.
            RuntimeError: initdb, the server start or createdb failed (with the log's tail).
        """
        bin_dir = find_bin_dir()
        owner = _server_owner()
        root = Path(tempfile.mkdtemp(prefix="streamguard-pg-"))
        pg = cls(bin_dir, root, port or 0, user, secrets.token_hex(16), database, owner)
        try:
            pg._init(durable, settings or {})
            for attempt in range(3):
                pg.port = port or free_port()
                if pg._start_server():
                    break
                if port or attempt == 2 or "could not bind" not in pg.log_tail():
                    raise RuntimeError(f"PostgreSQL did not start:\n{pg.log_tail()}")
            pg._run_client("createdb", "--owner", user, database)
        except BaseException:
            pg.stop()
            raise
        atexit.register(pg.stop)  # a crashed test run must not leave a postmaster behind
        return pg

    def _init(self, durable: bool, settings: dict[str, str]) -> None:
        self.socket_dir.mkdir()
        pwfile = self.root / "pwfile"
        pwfile.write_text(self.password + "\n")
        pwfile.chmod(0o600)
        if self.owner is not None:
            for path in (self.root, self.socket_dir, pwfile):
                os.chown(path, self.owner.pw_uid, self.owner.pw_gid)
        self._run_server_binary(
            "initdb", "-D", str(self.data_dir), "-U", self.user, f"--pwfile={pwfile}",
            "--auth-local=trust", "--auth-host=scram-sha-256", "-E", "UTF8", "--locale=C",
            "--no-instructions", *([] if durable else ["--no-sync"]),
        )  # fmt: skip
        pwfile.unlink()
        conf = {
            "listen_addresses": "'127.0.0.1'",
            "unix_socket_directories": f"'{self.socket_dir}'",
            **({} if durable else FAST_SETTINGS),
            **settings,
        }
        # appended settings win over initdb's; the file keeps its owner
        with open(self.data_dir / "postgresql.conf", "a") as out:
            out.write("\n# scripts/postgres.py\n")
            out.writelines(f"{key} = {value}\n" for key, value in conf.items())

    def _start_server(self) -> bool:
        """pg_ctl start on :attr:`port`; False when it did not come up (the log says why)."""
        done = self._run_server_binary(
            "pg_ctl", "-D", str(self.data_dir), "-l", str(self.log), "-w",
            "-t", str(START_TIMEOUT_S), "-o", f"-p {self.port}", "start", check=False,
        )  # fmt: skip
        return done.returncode == 0

    def stop(self) -> None:
        """``pg_ctl stop -m immediate``, then remove the cluster's directory (idempotent)."""
        if self._stopped:
            return
        self._stopped = True
        with contextlib.suppress(Exception):
            atexit.unregister(self.stop)
        if (self.data_dir / "postmaster.pid").exists():
            done = self._run_server_binary(
                "pg_ctl", "-D", str(self.data_dir), "-m", "immediate", "-w", "stop", check=False
            )
            if done.returncode != 0:  # the postmaster we started, by its PID
                with contextlib.suppress(OSError, ValueError, IndexError):
                    pid = int((self.data_dir / "postmaster.pid").read_text().split()[0])
                    os.kill(pid, signal.SIGKILL)
        shutil.rmtree(self.root, ignore_errors=True)

    def psql(self, sql: str) -> str:
        """Run one SQL statement in :attr:`database`; its rows as ``psql -At`` prints them."""
        return self._run_client("psql", "-X", "-At", "-v", "ON_ERROR_STOP=1", "-d",
                                self.database, "-c", sql)  # fmt: skip

    def log_tail(self, lines: int = 40) -> str:
        """The last lines of the server's log ('' before it exists)."""
        if not self.log.exists():
            return ""
        return "\n".join(self.log.read_text(errors="replace").splitlines()[-lines:])

    def __enter__(self) -> LocalPostgres:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def _run_client(self, name: str, *args: str) -> str:
        """A client binary over the cluster's Unix socket (trust) as the server's owner."""
        return self._run_server_binary(
            name, "-h", str(self.socket_dir), "-p", str(self.port), "-U", self.user, *args
        ).stdout

    def _run_server_binary(
        self, name: str, *args: str, check: bool = True
    ) -> subprocess.CompletedProcess[str]:
        """``bin_dir/name args`` as the cluster's owner, in its directory; output captured."""
        env = {k: v for k, v in os.environ.items() if not k.startswith("PG")}
        env.update(LC_ALL="C", TZ="UTC")
        extra: dict[str, Any] = {}
        if self.owner is not None:  # root: drop to the postgres user for this command
            env.update(HOME=self.owner.pw_dir, USER=self.owner.pw_name, LOGNAME=self.owner.pw_name)
            extra = {"user": self.owner.pw_uid, "group": self.owner.pw_gid, "extra_groups": []}
        done = subprocess.run(
            [str(self.bin_dir / name), *args],
            cwd=self.root,  # initdb/postgres need a cwd their user can read
            env=env,
            stdin=subprocess.DEVNULL,
            capture_output=True,
            text=True,
            timeout=START_TIMEOUT_S + 30,
            **extra,
        )
        if check and done.returncode != 0:
            raise RuntimeError(
                f"{name} {' '.join(args)} exited {done.returncode}:\n{done.stdout}{done.stderr}"
                f"\n{self.log_tail()}"
            )
        return done


def _server_owner() -> pwd.struct_passwd | None:
    """The ``postgres`` system user when running as root (the server refuses root), else None."""
    if os.geteuid() != 0:
        return None
    try:
        return pwd.getpwnam("postgres")
    except KeyError:
        raise PostgresUnavailable(
            "running as root and there is no 'postgres' system user to run the server as "
            "(Debian's postgresql package creates it)"
        ) from None


def main(argv: list[str] | None = None) -> int:
    """``python -m scripts.postgres``: start one, print its URL, wait for Ctrl-C, clean up."""
    import argparse

    argparse.ArgumentParser(
        prog="python -m scripts.postgres",
        description="Start a throwaway PostgreSQL on 127.0.0.1 (own data dir under the temp dir, "
        "a free port), print the PREFECT_API_DATABASE_CONNECTION_URL to export, and wait; "
        "Ctrl-C or SIGTERM stops it and deletes its data. Server binaries: "
        f"${PG_BIN_ENV}, else {DEBIAN_GLOB} (the newest), else initdb on PATH.",
    ).parse_args(argv)
    try:
        pg = LocalPostgres.start(durable=True)
    except PostgresUnavailable as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    # Ctrl-C (even where a shell started us with SIGINT ignored) and SIGTERM clean up too
    signal.signal(signal.SIGINT, signal.default_int_handler)
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    with pg:
        print(f"PREFECT_API_DATABASE_CONNECTION_URL={pg.url}", flush=True)
        print(f"data dir {pg.data_dir}; Ctrl-C stops it and deletes the data", flush=True)
        with contextlib.suppress(KeyboardInterrupt):
            while True:
                time.sleep(3600)
    return 0


if __name__ == "__main__":
    sys.exit(main())
