"""Throw-away PostgreSQL clusters for benchmarks, run as an OS user PostgreSQL accepts.

PostgreSQL refuses to run as root, and CI runs as root: then every server-side program (initdb,
pg_ctl, postgres, valgrind around postgres) runs as the ``postgres`` OS user through ``sudo -u``,
in a directory that user owns. As any other user the programs run as that user directly.
Clients (psql, pgbench) connect over TCP to 127.0.0.1 as the database superuser ``postgres``
(initdb ``-U postgres``, trust authentication), so they need no particular OS user.

Invariant: a cluster's settings live in its postgresql.conf, written once by ``init``; the only
settings that differ between the runs of a comparison are passed on the command line
(``start(settings)``, ``single_user_argv(settings)``), so a report can name them exactly.
"""

from __future__ import annotations

import os
import pwd
import shlex
import shutil
import socket
import subprocess
import tempfile
from pathlib import Path
from typing import List, Mapping, Optional, Sequence

from .commands import BenchError, require_file, run

DEFAULT_PG_CONFIG = "/usr/lib/postgresql/15/bin/pg_config"
SUPERUSER = "postgres"
DATABASE = "postgres"
LOOPBACK = "127.0.0.1"
# Ports that other things on a developer's machine use: the system cluster and `make up`'s.
RESERVED_PORTS = frozenset({5432, 28815})
# pg_ctl's own wait limit is 60 s; a cold start after a crash can take a little longer.
START_TIMEOUT_SECONDS = 120


class PgInstall:
    """A PostgreSQL installation, found through its pg_config."""

    def __init__(self, pg_config: str) -> None:
        pg_config_path = require_file(
            Path(pg_config),
            "pg_config",
            "Install PostgreSQL 15 (Debian: apt-get install postgresql-15) or set PG_CONFIG.",
        )
        self.pg_config = str(pg_config_path)
        self.bindir = Path(run([self.pg_config, "--bindir"]).strip())
        self.pkglibdir = Path(run([self.pg_config, "--pkglibdir"]).strip())
        self.version = run([self.pg_config, "--version"]).strip()

    def program(self, name: str) -> str:
        """The path of server program ``name`` (initdb, pg_ctl, pgbench, ...), checked."""
        hint = "It ships with PostgreSQL's server package (Debian: postgresql-15)."
        if name == "pgbench":
            hint = "Debian ships it in postgresql-client-15 / postgresql-15."
        return str(require_file(self.bindir / name, name, hint))

    def library(self, name: str) -> Path:
        """Where the shared library for ``shared_preload_libraries = '<name>'`` would be."""
        return self.pkglibdir / f"{name}.so"


class ServerUser:
    """The OS user that runs PostgreSQL's server programs for this benchmark."""

    def __init__(self) -> None:
        self.via_sudo = os.geteuid() == 0
        if self.via_sudo:
            if shutil.which("sudo") is None:
                raise BenchError(
                    "Running as root: PostgreSQL must run as the 'postgres' OS user through "
                    "sudo, and sudo is not installed (Debian: apt-get install sudo)."
                )
            try:
                entry = pwd.getpwnam("postgres")
            except KeyError as err:
                raise BenchError(
                    "Running as root: there is no 'postgres' OS user to run PostgreSQL as "
                    "(the postgresql-15 package creates it)."
                ) from err
        else:
            entry = pwd.getpwuid(os.geteuid())
        self.name = entry.pw_name
        self.uid = entry.pw_uid
        self.gid = entry.pw_gid

    def argv(self, cmd: Sequence[str]) -> List[str]:
        """``cmd`` as run by this user."""
        if self.via_sudo:
            return ["sudo", "-n", "-u", self.name, "--", *cmd]
        return list(cmd)

    def make_workdir(self, parent: Optional[str]) -> Path:
        """A new empty directory this user owns, under ``parent`` (default: the temp dir)."""
        if parent:
            Path(parent).mkdir(parents=True, exist_ok=True)
        path = Path(tempfile.mkdtemp(prefix="voxperf-bench-", dir=parent or None))
        path.chmod(0o755)
        if self.via_sudo:
            os.chown(path, self.uid, self.gid)
        # The user must reach it: every parent must be traversable by them.
        run(self.argv(["test", "-w", str(path)]), what=f"check that {self.name} can write {path}",
            cwd=path)
        return path


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on now (and not a reserved one)."""
    for _ in range(20):
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
            sock.bind((LOOPBACK, 0))
            port = sock.getsockname()[1]
        if port not in RESERVED_PORTS:
            return port
    raise BenchError("could not find a free TCP port on 127.0.0.1")


class Cluster:
    """One data directory under a work directory, with its server when one is running."""

    def __init__(self, install: PgInstall, user: ServerUser, workdir: Path, name: str,
                 port: Optional[int] = None) -> None:
        self.install = install
        self.user = user
        self.workdir = workdir
        self.name = name
        self.datadir = workdir / name
        self.logfile = workdir / f"{name}.log"
        self.port = port
        self.running = False

    def init(self, settings: Mapping[str, str]) -> None:
        """initdb, then append ``settings`` to postgresql.conf."""
        run(
            self.user.argv([
                self.install.program("initdb"), "-D", str(self.datadir), "-U", SUPERUSER,
                "--auth=trust", "--encoding=UTF8", "--no-locale", "--no-sync",
            ]),
            cwd=self.workdir,
            what=f"initdb {self.datadir}",
        )
        lines = ["", "# voxperf bench: identical for every row of a comparison"]
        lines += [f"{key} = {quote_setting(value)}" for key, value in settings.items()]
        lines += [f"unix_socket_directories = {quote_setting(str(self.workdir))}"]
        if self.port is not None:
            lines += [f"port = {self.port}", f"listen_addresses = '{LOOPBACK}'"]
        conf = self.datadir / "postgresql.conf"
        # As root we may write the user's file; as the user it is ours.
        with conf.open("a", encoding="utf-8") as out:
            out.write("\n".join(lines) + "\n")

    def copy(self, name: str) -> "Cluster":
        """A copy of this stopped cluster's data directory: every run starts from the same bytes."""
        if self.running:
            raise BenchError(f"cannot copy cluster {self.name} while it runs")
        clone = Cluster(self.install, self.user, self.workdir, name, self.port)
        run(self.user.argv(["cp", "-a", str(self.datadir), str(clone.datadir)]),
            cwd=self.workdir, what=f"copy {self.datadir}")
        return clone

    def remove(self) -> None:
        """Deletes the data directory (the server must be stopped)."""
        run(self.user.argv(["rm", "-rf", str(self.datadir)]), cwd=self.workdir,
            what=f"remove {self.datadir}")

    def start(self, settings: Mapping[str, str]) -> None:
        """Starts the server with ``settings`` on its command line and waits until it accepts."""
        options = " ".join(
            f"-c {shlex.quote(f'{key}={value}')}" for key, value in settings.items()
        )
        try:
            run(
                self.user.argv([
                    self.install.program("pg_ctl"), "start", "-w", "-t", str(START_TIMEOUT_SECONDS),
                    "-D", str(self.datadir), "-l", str(self.logfile), "-o", options,
                ]),
                cwd=self.workdir,
                what=f"start PostgreSQL ({self.name}) with {options or 'no extra settings'}",
            )
        except BenchError as err:
            raise BenchError(f"{err}\n  server log {self.logfile}:\n{self.log_tail()}") from err
        self.running = True

    def stop(self) -> None:
        """Stops the server (fast shutdown) if it runs."""
        if not self.running:
            return
        run(
            self.user.argv([self.install.program("pg_ctl"), "stop", "-w", "-m", "fast",
                            "-D", str(self.datadir)]),
            cwd=self.workdir,
            what=f"stop PostgreSQL ({self.name})",
        )
        self.running = False

    def postmaster_pid(self) -> int:
        """The running server's postmaster PID, from postmaster.pid."""
        pid_file = self.datadir / "postmaster.pid"
        try:
            return int(pid_file.read_text().splitlines()[0])
        except (OSError, ValueError, IndexError) as err:
            raise BenchError(f"cannot read {pid_file}: is the server running? ({err})") from err

    def log_tail(self) -> str:
        try:
            text = self.logfile.read_text(errors="replace")
        except OSError:
            return "    (no log)"
        return "\n".join("    " + line for line in text.rstrip().splitlines()[-15:])

    def client_args(self) -> List[str]:
        """Connection options for psql and pgbench."""
        return ["-h", LOOPBACK, "-p", str(self.port), "-U", SUPERUSER]

    def psql(self, sql: str) -> str:
        """Runs ``sql`` and returns its unaligned, tuples-only output."""
        return run(
            [self.install.program("psql"), *self.client_args(), "-X", "-q", "-A", "-t",
             "-v", "ON_ERROR_STOP=1", "-c", sql, DATABASE],
            cwd=self.workdir,
            what=f"psql: {sql}",
        ).strip()

    def single_user_argv(self, settings: Mapping[str, str]) -> List[str]:
        """The command line of a single-user backend (``postgres --single``) on this cluster."""
        argv = [self.install.program("postgres"), "--single", "-D", str(self.datadir)]
        for key, value in settings.items():
            argv += ["-c", f"{key}={value}"]
        return argv + [DATABASE]


def quote_setting(value: str) -> str:
    """A postgresql.conf value, quoted."""
    return "'" + value.replace("'", "''") + "'"


def stop_quietly(clusters: Sequence[Cluster]) -> None:
    """Best-effort stop of every running cluster (used on the way out, after an error)."""
    for cluster in clusters:
        if cluster.running:
            try:
                cluster.stop()
            except BenchError as err:
                print(f"warning: {err}")
            except subprocess.SubprocessError as err:  # pragma: no cover - defensive
                print(f"warning: stopping {cluster.name}: {err}")
