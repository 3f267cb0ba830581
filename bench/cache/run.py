#!/usr/bin/env python3
"""Benchmark part `cache`: voxperfd's two-level cache against its anchors, in one run.

Three methods (bench/README.md explains them and every knob):

- hits: HTTP cache-hit GET throughput and latency with wrk — L1 hits and L2 hits against the
  daemon's no-op route (/healthz, the ceiling), L2 hits against redis-benchmark GET on the same
  Redis;
- invalidation: delay from a committed UPDATE to the cached query result being gone;
- stale: a stale-read checker (concurrent writers and readers, then quiescence), run against
  voxperfd and against pgpool-II's in-memory query cache.

It installs voxperf and builds voxperfd from the work tree, starts its own PostgreSQL (voxperf
preloaded from a private copy), Redis, two daemons and pgpool-II on free loopback ports, prints
the tables, writes bench/results/cache.md, and stops and deletes everything it started
(BENCH_KEEP=1 keeps the work directory).
"""

from __future__ import annotations

import hashlib
import os
import shutil
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Dict, List, Optional

PART_DIR = Path(__file__).resolve().parent
BENCH_DIR = PART_DIR.parent
REPO = BENCH_DIR.parent
sys.path[:0] = [str(BENCH_DIR / "lib"), str(PART_DIR)]

# pylint: disable=wrong-import-position
from voxbench import machine  # noqa: E402
from voxbench.cluster import (DEFAULT_PG_CONFIG, LOOPBACK, SUPERUSER, Cluster,  # noqa: E402
                              PgInstall, ServerUser, free_port, stop_quietly)
from voxbench.commands import BenchError, require_program  # noqa: E402
from voxbench.extension import install_voxperf, private_copy  # noqa: E402
from voxbench.knobs import Knobs  # noqa: E402
from voxbench.part import dispose, publish  # noqa: E402

import hits  # noqa: E402
import invalidation  # noqa: E402
import report  # noqa: E402
import stale  # noqa: E402
from pgwire import PgError  # noqa: E402
from services import Daemon, Pgpool, Redis, stop_all  # noqa: E402

# postgresql.conf of the bench cluster. Each line says why.
SERVER_SETTINGS: Dict[str, str] = {
    # A commit would otherwise wait for an fsync on a shared virtual disk: its latency would swamp
    # the figures of interest (the NOTIFY is sent at commit either way; visibility is unchanged).
    "synchronous_commit": "off",
    # Room for both daemons' pools (8 each) and listeners, pgpool's children and the workers.
    "max_connections": "200",
    "shared_buffers": "128MB",
    "jit": "off",
}
METHODS = ("hits", "invalidation", "stale")
RESULTS = BENCH_DIR / "results" / "cache.md"
INSTALL_LOG = REPO / "target" / "bench" / "voxperf-install-cache.log"
BUILD_LOG = REPO / "target" / "bench" / "voxperfd-build.log"
# The L1 budget of daemon A (the daemon's own default, set explicitly so the report can say it).
L1_BYTES_A = "64MiB"


@dataclass
class Plan:
    """The knobs of this run (bench/README.md documents each)."""

    knobs: Knobs
    methods: List[str]
    rounds: int
    seconds: int
    warmup: int
    connections: int
    wrk_threads: int
    value_bytes: int
    inval_reps: int
    stale_seconds: int
    writers: int
    readers: int
    write_interval_ms: int
    read_pause_ms: int
    rows: int
    lag_poll_ms: int
    bound_ms: Optional[float]
    targets: List[str]
    rust_log: str
    pg_port: int
    skip_install: bool
    skip_build: bool
    keep: bool
    workdir_parent: Optional[str]
    pg_config: str
    wrk: str = ""
    redis_server: str = ""
    redis_benchmark: str = ""
    redis_cli: str = ""
    pgpool: str = ""


def read_list(knobs: Knobs, name: str, allowed, meaning: str) -> List[str]:
    raw = knobs.text(name, ",".join(allowed)) or ""
    chosen = [m.strip() for m in raw.replace(" ", ",").split(",") if m.strip()]
    unknown = [m for m in chosen if m not in allowed]
    if unknown or not chosen:
        raise BenchError(f"{name}={raw!r}: expected a comma-separated subset of "
                         f"{', '.join(allowed)} ({meaning})")
    return [m for m in allowed if m in chosen]


def read_bound(knobs: Knobs) -> Optional[float]:
    raw = knobs.text("BENCH_CACHE_BOUND_MS", None)
    if raw is None:
        knobs.used["BENCH_CACHE_BOUND_MS"] = "(the invalidation maximum)"
        return None
    try:
        value = float(raw)
    except ValueError as err:
        raise BenchError(f"BENCH_CACHE_BOUND_MS={raw!r}: expected milliseconds") from err
    if value < 0:
        raise BenchError(f"BENCH_CACHE_BOUND_MS={raw!r}: must not be negative")
    return value


def read_plan() -> Plan:
    knobs = Knobs()
    return Plan(
        knobs=knobs,
        methods=read_list(knobs, "BENCH_CACHE_METHODS", METHODS, "which methods to run"),
        rounds=knobs.integer("BENCH_CACHE_ROUNDS", 5, 1, "rounds of the hit measurements"),
        seconds=knobs.integer("BENCH_CACHE_SECONDS", 5, 1, "seconds per measured wrk run"),
        warmup=knobs.integer("BENCH_CACHE_WARMUP", 2, 0, "seconds of discarded warm-up"),
        connections=knobs.integer("BENCH_CACHE_CONNECTIONS", 32, 1,
                                  "wrk and redis-benchmark connections"),
        wrk_threads=knobs.integer("BENCH_CACHE_WRK_THREADS", 2, 1, "wrk threads"),
        value_bytes=knobs.integer("BENCH_CACHE_VALUE_BYTES", 512, 16,
                                  "size of the cached JSON value"),
        inval_reps=knobs.integer("BENCH_CACHE_INVAL_REPS", 200, 1,
                                 "invalidation delay repetitions"),
        stale_seconds=knobs.integer("BENCH_CACHE_STALE_SECONDS", 20, 1,
                                    "seconds of each stale-read checker run"),
        writers=knobs.integer("BENCH_CACHE_WRITERS", 2, 1, "writer processes"),
        readers=knobs.integer("BENCH_CACHE_READERS", 4, 1, "reader processes"),
        write_interval_ms=knobs.integer("BENCH_CACHE_WRITE_INTERVAL_MS", 20, 0,
                                        "milliseconds between one writer's commits"),
        read_pause_ms=knobs.integer("BENCH_CACHE_READ_PAUSE_MS", 1, 0,
                                    "milliseconds between one reader's reads"),
        rows=knobs.integer("BENCH_CACHE_ROWS", 8, 1, "rows of the checker's table"),
        lag_poll_ms=knobs.integer("BENCH_CACHE_LAG_POLL_MS", 2, 0,
                                  "milliseconds between polls of the daemon's invalidation "
                                  "counter during the checker (0: off)"),
        bound_ms=read_bound(knobs),
        targets=read_list(knobs, "BENCH_CACHE_TARGETS", stale.TARGETS,
                          "stale-read checker targets"),
        rust_log=knobs.text("BENCH_CACHE_RUST_LOG", "warn") or "warn",
        pg_port=knobs.integer("BENCH_PGPORT", 0, 0, "TCP port of the bench server; 0 = free"),
        skip_install=knobs.flag("BENCH_SKIP_INSTALL"),
        skip_build=knobs.flag("BENCH_CACHE_SKIP_BUILD"),
        keep=knobs.flag("BENCH_KEEP"),
        workdir_parent=knobs.text("BENCH_WORKDIR", None),
        pg_config=os.environ.get("PG_CONFIG") or DEFAULT_PG_CONFIG,
    )


def check_tools(plan: Plan) -> tuple:
    install = PgInstall(plan.pg_config)
    user = ServerUser()
    for program in ("initdb", "pg_ctl", "postgres", "psql"):
        install.program(program)
    plan.redis_server = require_program("redis-server", "Redis",
                                        "Debian: apt-get install redis-server")
    plan.redis_cli = require_program("redis-cli", "redis-cli",
                                     "Debian: apt-get install redis-tools")
    plan.redis_benchmark = require_program("redis-benchmark", "redis-benchmark, the anchor of "
                                           "L2 hits,", "Debian: apt-get install redis-tools")
    if "hits" in plan.methods:
        plan.wrk = require_program("wrk", "wrk, the HTTP load generator,",
                                   "Debian: apt-get install wrk")
    if any(t.startswith("pgpool") for t in plan.targets) and "stale" in plan.methods:
        plan.pgpool = shutil.which("pgpool") or ("/usr/sbin/pgpool" if
                                                 Path("/usr/sbin/pgpool").exists() else "")
        if not plan.pgpool:
            raise BenchError("pgpool-II (pgpool), the stale-read checker's anchor, is not "
                             "installed. Debian: apt-get install pgpool2 (or leave the pgpool "
                             "targets out of BENCH_CACHE_TARGETS).")
    return install, user


def build_daemon(plan: Plan) -> Path:
    """Builds voxperfd from the work tree (cargo build --release -p voxperfd); its path."""
    binary = REPO / "target" / "release" / "voxperfd"
    if plan.skip_build:
        if not binary.exists():
            raise BenchError(f"BENCH_CACHE_SKIP_BUILD=1 but {binary} does not exist")
        return binary
    if shutil.which("cargo") is None:
        raise BenchError("cargo is not on PATH: cannot build voxperfd (install Rust)")
    BUILD_LOG.parent.mkdir(parents=True, exist_ok=True)
    print(f"building voxperfd: cargo build --release -p voxperfd (log: {BUILD_LOG})", flush=True)
    started = time.monotonic()
    with BUILD_LOG.open("w", encoding="utf-8") as out:
        status = subprocess.run(["cargo", "build", "--release", "-p", "voxperfd"], cwd=REPO,
                                stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT,
                                check=False).returncode
    if status != 0:
        text = BUILD_LOG.read_text(errors="replace")
        errors = [line for line in text.splitlines() if line.startswith("error")][:10]
        raise BenchError(f"cargo build --release -p voxperfd failed (exit {status}); full log "
                         f"{BUILD_LOG}:\n    " + "\n    ".join(errors or text.splitlines()[-20:]))
    print(f"voxperfd built in {time.monotonic() - started:.0f} s", flush=True)
    return binary


def describe_binary(path: Path) -> str:
    digest = hashlib.sha256(path.read_bytes()).hexdigest()[:12]
    stamp = time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime(path.stat().st_mtime))
    dirty = machine.git(REPO, "status", "--porcelain", "--", "daemon")
    commit = machine.git(REPO, "rev-parse", "--short=12", "HEAD") or "?"
    tree = f"{commit} + uncommitted changes in daemon/" if dirty else commit
    return f"built {stamp} from {tree}, sha256 {digest}"


def cache() -> int:
    started = time.monotonic()
    plan = read_plan()
    install, user = check_tools(plan)
    durations: Dict[str, float] = {}

    step = time.monotonic()
    voxperf = install_voxperf(REPO, install, INSTALL_LOG, plan.skip_install)
    durations["install voxperf"] = time.monotonic() - step
    step = time.monotonic()
    daemon_binary: Optional[Path] = None
    daemon_note = ""
    try:
        daemon_binary = build_daemon(plan)
    except BenchError as err:
        daemon_note = f"not built: {err}"
        print(f"warning: voxperfd rows not measured: {err}", flush=True)
    durations["build voxperfd"] = time.monotonic() - step
    if not voxperf.available:
        print("warning: voxperfd rows not measured: the voxperf extension is not installed",
              flush=True)

    workdir = user.make_workdir(plan.workdir_parent)
    services: List = []
    clusters: List[Cluster] = []
    try:
        result = measure(plan, install, user, voxperf, daemon_binary, daemon_note, workdir,
                         services, clusters, durations)
    finally:
        stop_all(services)
        stop_quietly(clusters)
        dispose(workdir, plan.keep)
    durations["total"] = time.monotonic() - started
    result.facts["load average at end (1/5/15 min)"] = machine.load_average()
    publish(report.text(result), report.markdown(result), RESULTS, REPO)
    return 0


def measure(plan: Plan, install: PgInstall, user: ServerUser, voxperf, daemon_binary,
            daemon_note: str, workdir: Path, services: List, clusters: List[Cluster],
            durations: Dict[str, float]) -> report.CacheRun:
    facts = machine.facts(REPO, install.program("postgres"))
    for name, argv in (("Redis", [plan.redis_server, "--version"]),
                       ("wrk", [plan.wrk or "wrk", "--version"]),
                       ("pgpool-II", [plan.pgpool or "pgpool", "--version"])):
        facts[name] = version_line(argv)
    run = report.CacheRun(facts=facts, knobs=plan.knobs.used, server_settings=SERVER_SETTINGS,
                          durations=durations, methods=plan.methods)
    load, cpus = os.getloadavg()[0], machine.usable_cpus()
    if cpus and load > machine.BUSY_LOAD_PER_CPU * cpus:
        busy = (f"the machine is busy before the benchmark starts (1-minute load average "
                f"{load:.2f} on {cpus} CPUs): throughput and latency figures will be noisy, and "
                "a stall of the machine shows up in the delays' maxima")
        print(f"warning: {busy}", flush=True)
        run.warnings.append(busy)

    step = time.monotonic()
    voxperf = private_copy(voxperf, workdir / "lib")
    run.voxperf_note = voxperf.note
    cluster = Cluster(install, user, workdir, "pg", plan.pg_port or free_port())
    clusters.append(cluster)
    cluster.init(SERVER_SETTINGS)
    preload = {"shared_preload_libraries": str(voxperf.path)} if voxperf.path else {}
    cluster.start(preload)
    if voxperf.path:
        cluster.psql("CREATE EXTENSION voxperf")
    redis = Redis(plan.redis_server, workdir)
    services.append(redis)
    database_url = f"postgres://{SUPERUSER}@{LOOPBACK}:{cluster.port}/postgres"
    daemons: Dict[str, Daemon] = {}
    if daemon_binary is not None and voxperf.available:
        private = workdir / "bin" / "voxperfd"
        private.parent.mkdir(exist_ok=True)
        shutil.copy2(daemon_binary, private)
        run.daemon_note = describe_binary(private) + "; run from a private copy"
        common = {"RUST_LOG": plan.rust_log}
        for name, l1 in (("A", L1_BYTES_A), ("B", "0")):
            daemon = Daemon(f"voxperfd-{name}", private, workdir, database_url, redis.url,
                            {**common, "CACHE_L1_MAX_BYTES": l1})
            services.append(daemon)
            daemons[name] = daemon
        run.daemon_env = {name: {k: v for k, v in d.env.items()} for name, d in daemons.items()}
    else:
        run.daemon_note = daemon_note or (
            f"the voxperf extension is not installed ({voxperf.note}); build log: "
            f"{INSTALL_LOG.relative_to(REPO)}")
    durations["start services"] = time.monotonic() - step

    bound = plan.bound_ms
    run.bound_source = "BENCH_CACHE_BOUND_MS" if bound is not None else ""
    if "invalidation" in plan.methods and daemons:
        step = time.monotonic()
        print(f"invalidation: {plan.inval_reps} commits, delay until daemon A's entry is gone",
              flush=True)
        run.invalidation = invalidation.measure(plan, cluster.port, daemons["A"], redis)
        durations["invalidation delay"] = time.monotonic() - step
        if bound is None:
            bound = round(run.invalidation.bound_ms + 0.05, 1)
            run.bound_source = ("the largest \"entry gone\" delay measured above, rounded up to "
                                "0.1 ms")
    if bound is None:
        bound = report.FALLBACK_BOUND_MS
        run.bound_source = (f"no invalidation delay was measured in this run: the target "
                            f"({report.FALLBACK_BOUND_MS:.0f} ms) is used")
    run.bound_ms = bound

    if "stale" in plan.methods:
        step = time.monotonic()
        pgpool: Optional[Pgpool] = None
        if any(t.startswith("pgpool") for t in plan.targets):
            pgpool = Pgpool(plan.pgpool, user, workdir, cluster.port,
                            children=plan.readers + plan.writers + 4)
            services.append(pgpool)
            run.pgpool_note = f"pgpool on port {pgpool.port}; {report.pgpool_settings()}"
        print(f"stale: {plan.writers} writers (every {plan.write_interval_ms} ms), "
              f"{plan.readers} readers, {plan.stale_seconds} s per target, bound {bound:.1f} ms",
              flush=True)
        for number, target in enumerate(plan.targets, start=1):
            if target.startswith("voxperfd"):
                daemon = daemons.get("A" if target == "voxperfd" else "B")
                if daemon is None:
                    run.stale_skipped[target] = run.daemon_note
                    continue
                result = stale.check(plan, target, number, cluster.port, bound, daemon=daemon)
            else:
                result = stale.check(plan, target, number, cluster.port, bound, pgpool=pgpool)
            run.stale.append(result)
            print(f"  {stale.LABELS[target]}: {stale.summary_line(result)}", flush=True)
        durations["stale-read checker"] = time.monotonic() - step
    # Last: its wrk runs load both CPUs fully, which the next minute's load average would
    # still show while (b) measures "at low load".
    if "hits" in plan.methods:
        step = time.monotonic()
        if daemons:
            print(f"hits: wrk -c {plan.connections} -t {plan.wrk_threads}, {plan.rounds} rounds "
                  f"x {plan.seconds} s (+{plan.warmup} s warm-up), value {plan.value_bytes} "
                  "bytes", flush=True)
            run.hits = hits.measure(plan, daemons["A"], daemons["B"], redis)
        durations["hits (wrk, redis-benchmark)"] = time.monotonic() - step

    for name, daemon in daemons.items():
        run.daemon_stats[name] = daemon.stats()
        daemon.process.check_alive()
    return run


def version_line(argv) -> str:
    try:
        done = subprocess.run(argv, stdin=subprocess.DEVNULL, capture_output=True, text=True,
                              check=False)
    except FileNotFoundError:
        return "not installed"
    text = (done.stdout or done.stderr).strip()
    return text.splitlines()[0] if text else "?"


def main() -> int:
    # A `kill` (or make's own interruption) must still stop the services and remove the cluster.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    try:
        return cache()
    except (BenchError, PgError, OSError) as err:
        print(f"\nbench cache: FAILED: {err}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("\nbench cache: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
