"""A throwaway PostgreSQL cluster for the server's database tests.

``PostgresCluster().start()`` runs ``initdb`` into a temporary directory and
starts ``postgres`` on 127.0.0.1 at a free port (trust authentication, no
fsync: nothing it holds needs to survive); ``stop()`` ends it at once and
removes the directory; ``stop_server()`` and ``start_server()`` restart it on
the same port and data, as an administrator would (the tests of a job that
trains on through a restart). PostgreSQL refuses to run as root, so when the tests
run as root (CI containers) its programs run as the ``postgres`` system user
that Debian's package creates, with the directory handed to that user.

``make test`` installs Debian's ``postgresql`` package with apt when it is
missing and it can; else the database tests skip naming the command, except
under ``.ci/run`` (FORGEML_REQUIRE_SYSTEM_DEPS=1), where they fail.
"""

from __future__ import annotations

import glob
import os
import pwd
import re
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from pathlib import Path

__all__ = ["PostgresCluster", "find_bin_dir"]

SEARCH = "/usr/lib/postgresql/*/bin"
INSTALL_HINT = (
    "PostgreSQL is not installed: the server's database tests need its initdb, pg_ctl and postgres programs in "
    f"{SEARCH}. CI installs it with apt (.ci/run: apt-get install postgresql); install it the same way locally "
    "(sudo apt-get install postgresql)."
)


def find_bin_dir() -> Path | None:
    """The newest PostgreSQL's bin directory that has initdb, pg_ctl and postgres, or None."""

    def version(path: str) -> tuple[int, ...]:
        return tuple(int(n) for n in re.findall(r"\d+", Path(path).parent.name))

    for candidate in sorted(glob.glob(SEARCH), key=version, reverse=True):
        if all(os.access(Path(candidate) / tool, os.X_OK) for tool in ("initdb", "pg_ctl", "postgres")):
            return Path(candidate)
    return None


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class PostgresCluster:
    """One PostgreSQL server on a temporary directory; ``url(name)`` is a database's SQLAlchemy URL."""

    def __init__(self, bin_dir: Path | None = None) -> None:
        found = bin_dir or find_bin_dir()
        if found is None:
            raise FileNotFoundError(INSTALL_HINT)
        self.bin_dir = Path(found)
        self.port: int | None = None
        self.base: Path | None = None
        self._options = ""  # postgres's options (socket directory, port, no fsync), for a restart
        self._as_postgres = os.geteuid() == 0

    # -- paths and commands -----------------------------------------------------------------
    @property
    def data_dir(self) -> Path:
        return self.base / "data"

    @property
    def socket_dir(self) -> Path:
        return self.base / "sock"

    @property
    def log_path(self) -> Path:
        return self.base / "postgres.log"

    def _run(self, tool: str, *args: str, timeout: float = 60) -> subprocess.CompletedProcess:
        command = [str(self.bin_dir / tool), *args]
        if self._as_postgres:  # initdb and postgres refuse to run as root
            command = ["runuser", "-u", "postgres", "--", *command]
        env = {k: v for k, v in os.environ.items() if not k.startswith("PG")}  # no stray PGDATA, PGPORT, ...
        env.update(LC_ALL="C", LANG="C")
        return subprocess.run(
            command, check=False, capture_output=True, text=True, timeout=timeout, env=env, cwd=self.base
        )

    def _log_tail(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")[-3000:]
        except OSError:
            return "(no server log)"

    # -- lifecycle --------------------------------------------------------------------------
    def start(self, attempts: int = 3) -> PostgresCluster:
        user = None
        if self._as_postgres:
            try:
                user = pwd.getpwnam("postgres")
            except KeyError:
                raise RuntimeError(
                    "the tests run as root, which PostgreSQL refuses, and there is no 'postgres' system user to run "
                    "it as; Debian's postgresql package creates one (.ci/run installs it with apt)"
                ) from None
        # as root, under /tmp: the postgres user must be able to reach the directory (a TMPDIR under /root is not)
        self.base = Path(tempfile.mkdtemp(prefix="forgeml-pg-", dir="/tmp" if user is not None else None))
        try:
            self.socket_dir.mkdir()
            if user is not None:
                for path in (self.base, self.socket_dir):
                    os.chown(path, user.pw_uid, user.pw_gid)
            init = self._run(
                "initdb",
                *("-D", str(self.data_dir), "-U", "postgres", "-A", "trust", "-E", "UTF8", "--locale=C"),
                "--no-sync",
            )
            if init.returncode != 0:
                raise RuntimeError(f"initdb failed ({init.returncode}):\n{init.stdout}\n{init.stderr}")
            for attempt in range(attempts):  # another process may take the free port before postgres binds it
                self.port = _free_port()
                self._options = (
                    f"-k {self.socket_dir} -p {self.port} -c listen_addresses=127.0.0.1 -c fsync=off "
                    "-c synchronous_commit=off -c full_page_writes=off"
                )
                started = self._pg_ctl_start()
                if started.returncode == 0:
                    break
                if attempt == attempts - 1:
                    raise RuntimeError(
                        f"pg_ctl start failed ({started.returncode}):\n{started.stdout}\n{started.stderr}\n"
                        f"server log:\n{self._log_tail()}"
                    )
            self.create_database("forgeml_test")
        except BaseException:
            self.stop()
            raise
        return self

    def _pg_ctl_start(self) -> subprocess.CompletedProcess:
        return self._run(
            "pg_ctl",
            *("-D", str(self.data_dir), "-l", str(self.log_path), "-w", "-t", "30", "-o", self._options),
            "start",
        )

    def stop_server(self, mode: str = "fast") -> None:
        """Stop the server and keep its data, as an administrator's restart does: ``fast`` ends every session
        (their transactions roll back; committed ones are on disk); :meth:`start_server` starts it again."""
        stopped = self._run("pg_ctl", "-D", str(self.data_dir), "-m", mode, "-w", "-t", "30", "stop")
        if stopped.returncode != 0:
            raise RuntimeError(f"pg_ctl stop failed ({stopped.returncode}):\n{stopped.stdout}\n{stopped.stderr}")

    def start_server(self) -> None:
        """Start the server :meth:`stop_server` stopped, on the same port and data."""
        started = self._pg_ctl_start()
        if started.returncode != 0:
            raise RuntimeError(
                f"pg_ctl start failed ({started.returncode}):\n{started.stdout}\n{started.stderr}\n"
                f"server log:\n{self._log_tail()}"
            )

    def stop(self) -> None:
        """Stop the server at once (``-m immediate``) and remove its directory."""
        if self.base is None:
            return
        pid_file = self.data_dir / "postmaster.pid"
        try:
            if pid_file.exists():
                try:
                    self._run("pg_ctl", "-D", str(self.data_dir), "-m", "immediate", "-w", "stop", timeout=30)
                except subprocess.TimeoutExpired:
                    pass
            if pid_file.exists():  # pg_ctl could not stop it: leave no server behind
                try:
                    os.kill(int(pid_file.read_text().split()[0]), signal.SIGKILL)
                except (OSError, ValueError, IndexError):
                    pass
        finally:
            shutil.rmtree(self.base, ignore_errors=True)
            self.base = None

    def __enter__(self) -> PostgresCluster:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()

    # -- databases --------------------------------------------------------------------------
    def url(self, database: str = "forgeml_test") -> str:
        return f"postgresql+psycopg://postgres@127.0.0.1:{self.port}/{database}"

    def connect(self, database: str = "postgres"):
        """A psycopg connection in autocommit mode (CREATE DATABASE runs outside a transaction)."""
        import psycopg

        deadline = time.monotonic() + 10
        while True:
            try:
                return psycopg.connect(
                    host="127.0.0.1", port=self.port, user="postgres", dbname=database, autocommit=True
                )
            except psycopg.OperationalError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.05)

    def create_database(self, name: str) -> str:
        """A new, empty database; returns its URL."""
        if not re.fullmatch(r"[a-z_][a-z0-9_]*", name):
            raise ValueError(f"not a plain database name: {name!r}")
        with self.connect() as conn:
            conn.execute(f"CREATE DATABASE {name}")
        return self.url(name)
