"""The services part `cache` starts for itself, and stops: Redis, voxperfd instances, pgpool-II.

All run on free loopback ports under the part's work directory and are stopped (by the process
this module started, never by name) on the way out. PostgreSQL itself is a
``voxbench.cluster.Cluster``. Invariant: nothing here talks to the project's own services (the
cluster on 28815, Redis on 26379): every address is one this module chose, and the daemons get a
minimal environment built here, so a ``DATABASE_URL`` or ``REDIS_URL`` exported in the caller's
shell (scripts/env.sh exports both) can never point them at the project's services.
"""

from __future__ import annotations

import http.client
import json
import os
import signal
import socket
import subprocess
import time
from pathlib import Path
from typing import Dict, List, Optional, Sequence

from voxbench.cluster import LOOPBACK, SUPERUSER, ServerUser, free_port
from voxbench.commands import BenchError, run, tail

import pgwire

READY_TIMEOUT_SECONDS = 60.0
STOP_TIMEOUT_SECONDS = 20.0


class Process:
    """A background program this part started, with its log."""

    def __init__(self, name: str, argv: Sequence[str], log: Path,
                 env: Optional[Dict[str, str]] = None, cwd: Optional[Path] = None,
                 stop_signal: int = signal.SIGTERM) -> None:
        self.name = name
        self.stop_signal = stop_signal
        self.log = log
        self.argv = list(argv)
        self._out = log.open("wb")
        try:
            self.popen = subprocess.Popen(self.argv, stdin=subprocess.DEVNULL, stdout=self._out,
                                          stderr=subprocess.STDOUT, env=env, cwd=cwd,
                                          start_new_session=True)
        except FileNotFoundError as err:
            self._out.close()
            raise BenchError(f"{name}: cannot run {argv[0]}: {err.strerror}") from err

    @property
    def pid(self) -> int:
        return self.popen.pid

    def alive(self) -> bool:
        return self.popen.poll() is None

    def check_alive(self) -> None:
        if not self.alive():
            raise BenchError(f"{self.name} exited (status {self.popen.returncode}); its log "
                             f"{self.log}:\n{self.log_tail()}")

    def log_tail(self) -> str:
        try:
            return tail(self.log.read_text(errors="replace"), 15)
        except OSError:
            return "    (no log)"

    def stop(self) -> None:
        """Its stop signal to this process only (sudo relays it to its command), then SIGKILL."""
        if self.alive():
            self.popen.send_signal(self.stop_signal)
            try:
                self.popen.wait(STOP_TIMEOUT_SECONDS)
            except subprocess.TimeoutExpired:
                self.popen.kill()
                self.popen.wait()
        self._out.close()


def cpu_seconds(pid: int) -> float:
    """User + system CPU seconds of process ``pid`` (all its threads), from /proc."""
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
    except OSError as err:
        raise BenchError(f"cannot read the CPU time of process {pid}: {err}") from err
    fields = text[text.rindex(")") + 2:].split()
    # utime and stime are fields 14 and 15 of proc(5); fields[0] here is field 3.
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def wait_until(what: str, check, process: Optional[Process] = None,
               timeout: float = READY_TIMEOUT_SECONDS) -> None:
    deadline = time.monotonic() + timeout
    last = ""
    while time.monotonic() < deadline:
        if process is not None:
            process.check_alive()
        try:
            if check():
                return
        except (OSError, http.client.HTTPException, pgwire.PgError, ValueError) as err:
            last = f" (last error: {err})"
        time.sleep(0.05)
    log = f"; log {process.log}:\n{process.log_tail()}" if process else ""
    raise BenchError(f"{what} not ready within {timeout:.0f} s{last}{log}")


class Redis:
    """A redis-server with no persistence, on a free port."""

    def __init__(self, server: str, workdir: Path) -> None:
        self.port = free_port()
        directory = workdir / "redis"
        directory.mkdir(exist_ok=True)
        self.process = Process("redis-server", [
            server, "--port", str(self.port), "--bind", LOOPBACK, "--save", "",
            "--appendonly", "no", "--dir", str(directory), "--protected-mode", "yes",
        ], workdir / "redis.log")
        wait_until(f"redis-server on port {self.port}", self.ping, self.process)

    @property
    def url(self) -> str:
        return f"redis://{LOOPBACK}:{self.port}/"

    def command(self, *args: str) -> bytes:
        """One command, RESP-encoded; returns the raw reply (enough for PING, STRLEN, EXISTS)."""
        payload = f"*{len(args)}\r\n".encode()
        for arg in args:
            data = arg.encode()
            payload += f"${len(data)}\r\n".encode() + data + b"\r\n"
        with socket.create_connection((LOOPBACK, self.port), timeout=5) as sock:
            sock.sendall(payload)
            reply = b""
            while not reply.endswith(b"\r\n"):
                chunk = sock.recv(4096)
                if not chunk:
                    break
                reply += chunk
        return reply

    def ping(self) -> bool:
        return self.command("PING").startswith(b"+PONG")

    def integer(self, *args: str) -> int:
        reply = self.command(*args)
        if not reply.startswith(b":"):
            raise BenchError(f"redis {' '.join(args)}: unexpected reply {reply!r}")
        return int(reply[1:].strip())

    def keys(self, cli: str, pattern: str) -> List[str]:
        """KEYS ``pattern`` (a throw-away Redis: KEYS is fine), through redis-cli."""
        out = run([cli, "-h", LOOPBACK, "-p", str(self.port), "--raw", "KEYS", pattern],
                  what=f"redis-cli KEYS {pattern}")
        return [line for line in out.splitlines() if line]

    def stop(self) -> None:
        self.process.stop()


class Daemon:
    """One voxperfd on a free port, configured only through the environment built here."""

    def __init__(self, name: str, binary: Path, workdir: Path, database_url: str, redis_url: str,
                 settings: Dict[str, str]) -> None:
        self.name = name
        self.port = free_port()
        self.env = {
            "DATABASE_URL": database_url,
            "REDIS_URL": redis_url,
            "VOXPERF_LISTEN": f"{LOOPBACK}:{self.port}",
            **settings,
        }
        full_env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), **self.env}
        self.process = Process(name, [str(binary)], workdir / f"{name}.log", env=full_env)
        wait_until(f"{name} (voxperfd on port {self.port})", self.listening, self.process)

    @property
    def base(self) -> str:
        return f"http://{LOOPBACK}:{self.port}"

    def get_json(self, path: str) -> dict:
        conn = http.client.HTTPConnection(LOOPBACK, self.port, timeout=10)
        try:
            conn.request("GET", path)
            response = conn.getresponse()
            body = response.read()
        finally:
            conn.close()
        if response.status >= 500 and path != "/api/performance/health":
            raise BenchError(f"{self.name}: GET {path} answered {response.status}: {body[:300]!r}")
        return json.loads(body)

    def listener(self) -> dict:
        """The invalidation listener's status (from /api/performance/health)."""
        health = self.get_json("/api/performance/health")
        return health["components"]["cache"]["details"]["listener"]

    def listening(self) -> bool:
        """Up, ready (Postgres with the extension) and its LISTEN connection established."""
        conn = http.client.HTTPConnection(LOOPBACK, self.port, timeout=5)
        try:
            conn.request("GET", "/readyz")
            response = conn.getresponse()
            response.read()
        finally:
            conn.close()
        return response.status == 200 and bool(self.listener().get("connected"))

    def stats(self) -> dict:
        return self.get_json("/api/cache/stats")

    def stop(self) -> None:
        self.process.stop()


PGPOOL_SETTINGS_DOC = (
    "backend_clustering_mode = 'raw' (one backend, no replication), "
    "memory_cache_enabled = on, memqcache_method = 'shmem'; every memqcache_* setting at its "
    "default (memqcache_auto_cache_invalidation = on, memqcache_expire = 0, "
    "memqcache_total_size = 64MB); enable_pool_hba = off (the backend trusts 127.0.0.1), "
    "health and streaming-replication checks off"
)


class Pgpool:
    """A throw-away pgpool-II in front of the bench cluster, with its in-memory query cache."""

    def __init__(self, program: str, user: ServerUser, workdir: Path, backend_port: int,
                 children: int) -> None:
        self.port = free_port()
        pcp_port = free_port()
        directory = workdir / "pgpool"
        directory.mkdir(exist_ok=True)
        (directory / "oiddir").mkdir(exist_ok=True)
        conf = directory / "pgpool.conf"
        settings = {
            "backend_clustering_mode": "'raw'",
            "listen_addresses": f"'{LOOPBACK}'",
            "port": str(self.port),
            "unix_socket_directories": f"'{directory}'",
            "pcp_listen_addresses": "''",
            "pcp_port": str(pcp_port),
            "pcp_socket_dir": f"'{directory}'",
            "backend_hostname0": f"'{LOOPBACK}'",
            "backend_port0": str(backend_port),
            "backend_weight0": "1",
            "backend_flag0": "'DISALLOW_TO_FAILOVER'",
            "enable_pool_hba": "off",
            "num_init_children": str(children),
            "max_pool": "1",
            "pid_file_name": f"'{directory / 'pgpool.pid'}'",
            "logdir": f"'{directory}'",
            "health_check_period": "0",
            "sr_check_period": "0",
            "failover_on_backend_error": "off",
            "memory_cache_enabled": "on",
            "memqcache_method": "'shmem'",
            "memqcache_oiddir": f"'{directory / 'oiddir'}'",
        }
        conf.write_text("".join(f"{k} = {v}\n" for k, v in settings.items()), encoding="utf-8")
        (directory / "pcp.conf").write_text("", encoding="utf-8")
        (directory / "pool_hba.conf").write_text("", encoding="utf-8")
        if user.via_sudo:
            for path in [directory, directory / "oiddir", conf, directory / "pcp.conf",
                         directory / "pool_hba.conf"]:
                os.chown(path, user.uid, user.gid)
        self.process = Process("pgpool", user.argv([
            program, "-n", "-D", "-f", str(conf), "-F", str(directory / "pcp.conf"),
            "-a", str(directory / "pool_hba.conf"),
        ]), workdir / "pgpool.log", stop_signal=signal.SIGINT)  # SIGINT: fast shutdown
        wait_until(f"pgpool on port {self.port}", self.answers, self.process)

    def connect(self) -> pgwire.Connection:
        return pgwire.Connection(LOOPBACK, self.port, SUPERUSER, "postgres",
                                 application_name="voxperf-bench-pgpool")

    def answers(self) -> bool:
        conn = self.connect()
        try:
            return conn.scalar("SELECT 1") == "1"
        finally:
            conn.close()

    def cache_counters(self) -> Dict[str, int]:
        """num_cache_hits and num_selects from SHOW POOL_CACHE."""
        conn = self.connect()
        try:
            rows = conn.query("SHOW POOL_CACHE")
        finally:
            conn.close()
        if not rows or len(rows[0]) < 2:
            raise BenchError(f"pgpool: unexpected SHOW POOL_CACHE answer {rows!r}")
        return {"hits": int(rows[0][0]), "selects": int(rows[0][1])}

    def stop(self) -> None:
        self.process.stop()


def stop_all(services: List) -> None:
    """Stops every started service, newest first; reports but does not raise."""
    for service in reversed(services):
        try:
            service.stop()
        except (BenchError, OSError) as err:
            print(f"warning: stopping {type(service).__name__}: {err}")


class QueryClient:
    """``POST /api/cache/query`` over one keep-alive HTTP connection."""

    def __init__(self, port: int) -> None:
        self.port = port
        self.conn = http.client.HTTPConnection(LOOPBACK, port, timeout=30)

    def query(self, sql: str, params: Sequence = (), ttl: int = 3600):
        """(rows, "HIT" | "MISS", server milliseconds from X-Response-Time)."""
        body = json.dumps({"sql": sql, "params": list(params), "ttl": ttl})
        try:
            self.conn.request("POST", "/api/cache/query", body,
                              {"content-type": "application/json"})
            response = self.conn.getresponse()
            data = response.read()
        except (http.client.HTTPException, OSError):
            # A closed keep-alive connection: one retry on a new one.
            self.conn.close()
            self.conn = http.client.HTTPConnection(LOOPBACK, self.port, timeout=30)
            self.conn.request("POST", "/api/cache/query", body,
                              {"content-type": "application/json"})
            response = self.conn.getresponse()
            data = response.read()
        if response.status != 200:
            raise BenchError(f"POST /api/cache/query ({sql}) answered {response.status}: "
                             f"{data[:300]!r}")
        answer = json.loads(data)
        server = response.getheader("x-response-time", "")
        server_ms = float(server[:-2]) if server.endswith("ms") else float("nan")
        return answer["rows"], answer["cache"], server_ms

    def get_status(self, path: str) -> int:
        """GET ``path``; the status code (the body is read and dropped)."""
        try:
            self.conn.request("GET", path)
            response = self.conn.getresponse()
        except (http.client.HTTPException, OSError):
            self.conn.close()
            self.conn = http.client.HTTPConnection(LOOPBACK, self.port, timeout=30)
            self.conn.request("GET", path)
            response = self.conn.getresponse()
        response.read()
        return response.status

    def close(self) -> None:
        self.conn.close()
