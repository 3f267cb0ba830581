#!/usr/bin/env python3
"""Benchmark part `monitoring`: what voxperfd's performance monitoring costs an HTTP request.

Two figures, each against its anchor in the same run (bench/README.md explains them and every
knob):

- overhead: throughput of the daemon's no-op route (`GET /healthz`, through every HTTP layer)
  with monitoring on (request-metrics middleware and collectors) against the same binary with
  PERFORMANCE_MONITORING_ENABLED=false, both loaded at the same time in each round; the median
  of the rounds' ratios is the figure (target: at least 0.95);
- stats latency: p50/p90/p99 of `GET /api/performance/stats` with 50 concurrent clients (wrk).

It builds voxperfd (release) from the work tree, starts its own PostgreSQL (with the installed
voxperf preloaded from a private copy, when there is one) and Redis on free loopback ports, prints the tables,
writes bench/results/monitoring.md, and stops and deletes everything it started (BENCH_KEEP=1
keeps the work directory).
"""

from __future__ import annotations

import os
import re
import shutil
import statistics
import subprocess
import sys
import time
import urllib.request
from pathlib import Path
from typing import Dict, List, Optional

PART_DIR = Path(__file__).resolve().parent
BENCH_DIR = PART_DIR.parent
REPO = BENCH_DIR.parent
sys.path[:0] = [str(BENCH_DIR / "lib")]

# pylint: disable=wrong-import-position
from voxbench import machine  # noqa: E402
from voxbench.cluster import (DEFAULT_PG_CONFIG, LOOPBACK, SUPERUSER, Cluster,  # noqa: E402
                              PgInstall, ServerUser, free_port, stop_quietly)
from voxbench.commands import BenchError, require_program, run, tail  # noqa: E402
from voxbench.extension import LIBRARY, LibraryStatus, private_copy  # noqa: E402
from voxbench.knobs import Knobs  # noqa: E402
from voxbench.part import dispose  # noqa: E402
from voxbench.table import Table  # noqa: E402

REPORT = BENCH_DIR / "results" / "monitoring.md"
TARGET = 0.95
STATS_CLIENTS = 50


class Process:
    """A background program with its output in a log file."""

    def __init__(self, name: str, argv: List[str], log: Path, env: Dict[str, str]) -> None:
        self.name, self.log = name, log
        with log.open("w", encoding="utf-8") as out:
            self.popen = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=out,
                                          stderr=subprocess.STDOUT, env=env)

    def check_alive(self) -> None:
        if self.popen.poll() is not None:
            raise BenchError(f"{self.name} exited ({self.popen.returncode}); its log {self.log}:\n"
                             f"{tail(self.log.read_text(errors='replace'))}")

    def stop(self) -> None:
        if self.popen.poll() is None:
            self.popen.terminate()
            try:
                self.popen.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.popen.kill()
                self.popen.wait()


def cpu_seconds(pid: int) -> float:
    """User plus system CPU time of process `pid` (all its threads), from /proc."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def wait_for_http(url: str, process: Process, seconds: float = 60.0) -> None:
    """Returns once `url` answers 200 (the daemon is up), polling its start-up."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        process.check_alive()
        try:
            with urllib.request.urlopen(url, timeout=2) as response:
                if response.status == 200:
                    return
        except OSError:
            pass
        time.sleep(0.1)
    raise BenchError(f"{url} did not answer within {seconds:.0f} s; log {process.log}")


def build_daemon(workdir: Path) -> Path:
    """`cargo build --release -p voxperfd`, then a private copy of the binary (another session
    rebuilding it meanwhile cannot change what is measured)."""
    log = workdir / "cargo-build.log"
    print(f"building voxperfd (release): cargo build --release -p voxperfd (log: {log})", flush=True)
    started = time.monotonic()
    with log.open("w", encoding="utf-8") as out:
        status = subprocess.run(["cargo", "build", "--release", "-p", "voxperfd", "--bin", "voxperfd"],
                                cwd=REPO, stdin=subprocess.DEVNULL, stdout=out,
                                stderr=subprocess.STDOUT, check=False).returncode
    if status != 0:
        raise BenchError(f"building voxperfd failed (exit {status}); log {log}:\n"
                         f"{tail(log.read_text(errors='replace'))}")
    print(f"voxperfd built in {time.monotonic() - started:.0f} s", flush=True)
    target = Path(os.environ.get("CARGO_TARGET_DIR", REPO / "target"))
    copy = workdir / "voxperfd"
    shutil.copy2(target / "release" / "voxperfd", copy)
    return copy


WRK_RPS = re.compile(r"Requests/sec:\s+([\d.]+)")
WRK_TOTAL = re.compile(r"(\d+) requests in ")
WRK_PERCENTILE = re.compile(r"^\s+(50|75|90|99)%\s+([\d.]+)(us|ms|s)\s*$", re.M)
WRK_NON_2XX = re.compile(r"Non-2xx or 3xx responses:\s+(\d+)")
UNIT_MS = {"us": 0.001, "ms": 1.0, "s": 1000.0}


def wrk_argv(url: str, threads: int, connections: int, seconds: int) -> List[str]:
    return ["wrk", f"-t{threads}", f"-c{connections}", f"-d{seconds}s", "--latency", url]


def parse_wrk(url: str, out: str) -> Dict[str, float]:
    """Requests/s, requests and latency percentiles (ms) from wrk's output; fails on non-2xx."""
    rps = WRK_RPS.search(out)
    if rps is None:
        raise BenchError(f"cannot read wrk's output:\n{out}")
    bad = WRK_NON_2XX.search(out)
    if bad and int(bad.group(1)) > 0:
        raise BenchError(f"{url} answered {bad.group(1)} non-2xx responses under load:\n{out}")
    total = WRK_TOTAL.search(out)
    figures = {"rps": float(rps.group(1)), "requests": float(total.group(1)) if total else 0.0}
    for pct, value, unit in WRK_PERCENTILE.findall(out):
        figures[f"p{pct}"] = float(value) * UNIT_MS[unit]
    return figures


def wrk(url: str, threads: int, connections: int, seconds: int) -> Dict[str, float]:
    """One wrk run."""
    out = run(wrk_argv(url, threads, connections, seconds), what=f"wrk {url}", timeout=seconds + 60)
    return parse_wrk(url, out)


def wrk_together(urls: Dict[str, str], connections: int, seconds: int) -> Dict[str, Dict[str, float]]:
    """One wrk per URL, all at the same time: they share the machine, and whatever else runs on
    it, alike."""
    procs = {label: subprocess.Popen(wrk_argv(url, 1, connections, seconds), stdin=subprocess.DEVNULL,
                                     stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
             for label, url in urls.items()}
    results = {}
    for label, proc in procs.items():
        out, err = proc.communicate(timeout=seconds + 60)
        if proc.returncode != 0:
            raise BenchError(f"wrk {urls[label]} failed ({proc.returncode}): {err}")
        results[label] = parse_wrk(urls[label], out)
    return results


def main() -> int:
    knobs = Knobs()
    rounds = knobs.integer("BENCH_MON_ROUNDS", 7, 1, "wrk rounds for the overhead")
    seconds = knobs.integer("BENCH_MON_SECONDS", 5, 1, "seconds per wrk round")
    connections = knobs.integer("BENCH_MON_CONNECTIONS", 16, 1, "wrk connections for the overhead")
    stats_seconds = knobs.integer("BENCH_MON_STATS_SECONDS", 10, 1, "seconds of the stats run")
    keep = knobs.flag("BENCH_KEEP")
    require_program("wrk", "wrk", "Debian: apt-get install wrk (scripts/deps.sh installs it).")
    redis_server = require_program("redis-server", "Redis", "Debian: apt-get install redis-server.")
    install = PgInstall(os.environ.get("PG_CONFIG", DEFAULT_PG_CONFIG))
    user = ServerUser()
    workdir = user.make_workdir(os.environ.get("BENCH_WORKDIR"))
    facts = machine.facts(REPO, install.program("postgres"))
    print(machine.busy_warning(), end="", flush=True)

    processes: List[Process] = []
    clusters: List[Cluster] = []
    try:
        binary = build_daemon(workdir)
        # The extension is not what this part measures: the installed build (make up / make test)
        # is preloaded when there is one, so that the collectors read real statistics.
        installed = LibraryStatus.of_file(install.library(LIBRARY), "the installed build (not rebuilt: "
                                                                   "this part does not measure it)")
        library = private_copy(installed, workdir / "lib")
        cluster = Cluster(install, user, workdir, "pg", free_port())
        cluster.init({"max_connections": "100", "shared_buffers": "128MB", "jit": "off"})
        preload = {"shared_preload_libraries": str(library.path)} if library.available else {}
        cluster.start(preload)
        clusters.append(cluster)
        if library.available:
            cluster.psql("CREATE EXTENSION IF NOT EXISTS voxperf")
        redis_port = free_port()
        processes.append(Process("redis", [redis_server, "--port", str(redis_port), "--bind", LOOPBACK,
                                           "--save", "", "--appendonly", "no"],
                                 workdir / "redis.log", dict(os.environ)))

        daemons = {}
        for label, monitoring in (("on", "true"), ("off", "false")):
            port = free_port()
            env = {
                "PATH": os.environ.get("PATH", ""),
                "DATABASE_URL": f"postgres://{SUPERUSER}@{LOOPBACK}:{cluster.port}/postgres",
                "REDIS_URL": f"redis://{LOOPBACK}:{redis_port}/",
                "REDIS_KEY_PREFIX": f"bench-{label}:",
                "VOXPERF_LISTEN": f"{LOOPBACK}:{port}",
                "VOXPERF_INSTANCE": f"bench-monitoring-{label}",
                "PERFORMANCE_MONITORING_ENABLED": monitoring,
                # Request logs off in both: they would dominate what is measured.
                "RUST_LOG": "warn",
            }
            daemon = Process(f"voxperfd (monitoring {label})", [str(binary)], workdir / f"voxperfd-{label}.log", env)
            processes.append(daemon)
            wait_for_http(f"http://{LOOPBACK}:{port}/healthz", daemon)
            daemons[label] = (daemon, f"http://{LOOPBACK}:{port}")

        print(f"\noverhead: GET /healthz, both daemons loaded at once by their own wrk -t1 -c{connections} "
              f"-d{seconds}s, {rounds} rounds", flush=True)
        results: Dict[str, List[Dict[str, float]]] = {"on": [], "off": []}
        ratios: List[float] = []
        urls = {label: f"{base}/healthz" for label, (_, base) in daemons.items()}
        for _ in range(rounds):
            cpu_before = {label: cpu_seconds(d.popen.pid) for label, (d, _) in daemons.items()}
            together = wrk_together(urls, connections, seconds)
            for label, (daemon, _) in daemons.items():
                figures = together[label]
                cpu = cpu_seconds(daemon.popen.pid) - cpu_before[label]
                figures["cpu_us"] = cpu * 1e6 / figures["requests"] if figures["requests"] else 0.0
                daemon.check_alive()
                results[label].append(figures)
            ratios.append(together["on"]["rps"] / together["off"]["rps"])
            print(f"  on {together['on']['rps']:>9.0f} req/s ({together['on']['cpu_us']:.2f} us CPU/request)   "
                  f"off {together['off']['rps']:>9.0f} req/s ({together['off']['cpu_us']:.2f} us)   "
                  f"ratio {ratios[-1]:.3f}", flush=True)
        med = {label: statistics.median(r["rps"] for r in results[label]) for label in results}
        cpu_med = {label: statistics.median(r["cpu_us"] for r in results[label]) for label in results}
        ratio = statistics.median(ratios)

        daemon, base = daemons["on"]
        print(f"\nstats latency: GET /api/performance/stats, wrk -t2 -c{STATS_CLIENTS} -d{stats_seconds}s",
              flush=True)
        stats = wrk(f"{base}/api/performance/stats", 2, STATS_CLIENTS, stats_seconds)
        daemon.check_alive()

        overhead = Table(["daemon", "median req/s", "min req/s", "max req/s", "median p99 ms",
                          "daemon CPU us/request"])
        for label in ("off", "on"):
            rps = [r["rps"] for r in results[label]]
            p99 = statistics.median(r.get("p99", 0.0) for r in results[label])
            name = "monitoring off (anchor)" if label == "off" else "monitoring on"
            overhead.add(name, f"{med[label]:.0f}", f"{min(rps):.0f}", f"{max(rps):.0f}", f"{p99:.3f}",
                         f"{cpu_med[label]:.2f}")
        verdict = "meets" if ratio >= TARGET else "MISSES"
        cpu_ratio = cpu_med["off"] / cpu_med["on"] if cpu_med["on"] else 0.0
        ratio_line = (f"throughput ratio on/off = {ratio:.3f}, median of the rounds' ratios "
                      f"({min(ratios):.3f} to {max(ratios):.3f}; {verdict} the target of {TARGET:.2f}); "
                      f"CPU-per-request ratio off/on = {cpu_ratio:.3f}")
        latency = Table(["endpoint", "clients", "req/s", "p50 ms", "p90 ms", "p99 ms"])
        latency.add("GET /api/performance/stats", str(STATS_CLIENTS), f"{stats['rps']:.0f}",
                    f"{stats.get('p50', 0):.3f}", f"{stats.get('p90', 0):.3f}", f"{stats.get('p99', 0):.3f}")
        print("\n" + overhead.text() + "\n" + ratio_line + "\n\n" + latency.text(), flush=True)
        write_report(facts, knobs, library.note, overhead, ratio_line, latency, connections, seconds, rounds,
                     stats_seconds)
        print(f"\nreport: {REPORT.relative_to(REPO)}")
        return 0
    except BenchError as err:
        print(f"bench monitoring: {err}", file=sys.stderr)
        return 1
    finally:
        for p in reversed(processes):
            p.stop()
        stop_quietly(clusters)
        dispose(workdir, keep)


def write_report(facts: Dict[str, str], knobs: Knobs, library_note: str, overhead: Table, ratio_line: str,
                 latency: Table, connections: int, seconds: int, rounds: int, stats_seconds: int) -> None:
    lines = [
        "# Benchmark: monitoring",
        "",
        "What voxperfd's performance monitoring (request-metrics middleware, collectors) costs a",
        "request, and how fast its stats endpoint answers under concurrency. Written by",
        "`bench/run.sh monitoring`; bench/monitoring/README.md explains the method.",
        "",
        "## Overhead on the no-op route",
        "",
        f"`GET /healthz` through every HTTP layer; in each of {rounds} rounds both daemons are loaded at",
        f"the same time, each by its own `wrk -t1 -c{connections} -d{seconds}s`, so that they share the",
        "machine (and whatever else runs on it) alike. Two processes of the same release binary, one",
        "with `PERFORMANCE_MONITORING_ENABLED=true` (default `METRICS_INTERVAL`), the anchor with `false`.",
        "",
        overhead.markdown(),
        "",
        f"**{ratio_line}.**",
        "",
        "## `GET /api/performance/stats` under 50 concurrent clients",
        "",
        f"`wrk -t2 -c{STATS_CLIENTS} -d{stats_seconds}s --latency` against the monitoring daemon.",
        "",
        latency.markdown(),
        "",
        "## Machine and settings",
        "",
    ]
    lines += [f"- {key}: {value}" for key, value in facts.items()]
    lines += [f"- voxperf: {library_note}"]
    lines += [f"- {name}={value}" for name, value in knobs.used.items()]
    lines += ["", "Both wrk processes and both daemons share the machine's cores: absolute figures of a busy",
              "machine are lower and noisier, but load from elsewhere hits both daemons of a round alike, so",
              "the ratio holds up. The daemons' CPU time per request (from /proc) is a second view of the",
              "same cost.", ""]
    REPORT.parent.mkdir(parents=True, exist_ok=True)
    REPORT.write_text("\n".join(lines), encoding="utf-8")


if __name__ == "__main__":
    sys.exit(main())
