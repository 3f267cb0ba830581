#!/usr/bin/env python3
"""Benchmark part `overhead`: what voxperf costs per statement, against anchors in the same run.

Two methods (bench/README.md explains them and every knob):

- instructions per point select, counted by callgrind on a single-user backend, for: no library,
  compute_query_id = on alone (the core's jumbling), pg_stat_statements, voxperf;
- pgbench TPS (select-only and TPC-B-like, 2 clients) on a normal server, alternating rounds
  between no library, pg_stat_statements and voxperf.

It installs voxperf from the work tree first; if that is impossible the voxperf row says "not
installed" and the other rows are still measured. Prints the tables, writes
bench/results/overhead.md, and throws away its clusters (BENCH_KEEP=1 keeps them).
"""

from __future__ import annotations

import os
import signal
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
from voxbench.cluster import (DEFAULT_PG_CONFIG, Cluster, PgInstall, ServerUser,  # noqa: E402
                              free_port, stop_quietly)
from voxbench.commands import BenchError, require_file, require_program  # noqa: E402
from voxbench.extension import (LibraryStatus, describe_file, install_voxperf,  # noqa: E402
                                private_copy)
from voxbench.knobs import Knobs  # noqa: E402
from voxbench.part import dispose, publish  # noqa: E402

import instructions  # noqa: E402
import report  # noqa: E402
import tps  # noqa: E402
from configs import JUMBLING, NONE, PGSS, VOXPERF, Availability  # noqa: E402
from dataset import ACCOUNTS_PER_SCALE, load_pgbench_tables  # noqa: E402

# postgresql.conf of every cluster of this part, identical for every row. Each line says why.
SERVER_SETTINGS: Dict[str, str] = {
    # Holds the whole TPS data set at the default scale (10: about 160 MB), so rounds measure
    # the executor and the hooks, not the page cache.
    "shared_buffers": "256MB",
    # A commit would otherwise wait for an fsync on a shared virtual disk, whose latency swamps
    # a per-statement CPU cost. WAL is still written; only the wait for the flush goes.
    "synchronous_commit": "off",
    # No checkpoint inside a measurement: the part runs CHECKPOINT itself before each one.
    "max_wal_size": "8GB",
    "checkpoint_timeout": "1h",
    # JIT never pays off for these statements; keeping it out removes a source of variance.
    "jit": "off",
}

METHODS = ("instructions", "tps")
RESULTS = BENCH_DIR / "results" / "overhead.md"
INSTALL_LOG = REPO / "target" / "bench" / "voxperf-install.log"


@dataclass
class Plan:
    """The knobs of this run (bench/README.md documents each)."""

    knobs: Knobs
    statements: int
    layouts: int
    instruction_scale: int
    scale: int
    rounds: int
    seconds: int
    warmup: int
    clients: int
    port: int
    methods: List[str]
    skip_install: bool
    keep: bool
    workdir_parent: Optional[str]
    pg_config: str


def read_plan() -> Plan:
    knobs = Knobs()
    return Plan(
        knobs=knobs,
        statements=knobs.integer("BENCH_STATEMENTS", 3000, 2, "point selects per callgrind run"),
        layouts=knobs.integer("BENCH_INSTR_LAYOUTS", 5, 1, "memory layouts per callgrind row (median)"),
        instruction_scale=knobs.integer("BENCH_INSTR_SCALE", 1, 1, "callgrind data set scale"),
        scale=knobs.integer("BENCH_SCALE", 10, 1, "pgbench scale of the TPS data set"),
        rounds=knobs.integer("BENCH_ROUNDS", 7, 1, "TPS rounds per row"),
        seconds=knobs.integer("BENCH_SECONDS", 10, 1, "seconds per measured pgbench run"),
        warmup=knobs.integer("BENCH_WARMUP", 3, 0, "seconds of discarded pgbench warm-up"),
        clients=knobs.integer("BENCH_CLIENTS", 2, 1, "pgbench clients (and threads)"),
        port=knobs.integer("BENCH_PGPORT", 0, 0, "TCP port of the bench server; 0 = a free one"),
        methods=read_methods(knobs),
        skip_install=knobs.flag("BENCH_SKIP_INSTALL"),
        keep=knobs.flag("BENCH_KEEP"),
        workdir_parent=knobs.text("BENCH_WORKDIR", None),
        pg_config=os.environ.get("PG_CONFIG") or DEFAULT_PG_CONFIG,
    )


def read_methods(knobs: Knobs) -> List[str]:
    raw = knobs.text("BENCH_OVERHEAD_METHODS", ",".join(METHODS)) or ""
    chosen = [m.strip() for m in raw.replace(" ", ",").split(",") if m.strip()]
    unknown = [m for m in chosen if m not in METHODS]
    if unknown or not chosen:
        raise BenchError(f"BENCH_OVERHEAD_METHODS={raw!r}: expected a comma-separated subset "
                         f"of {', '.join(METHODS)}")
    return chosen


@dataclass
class Tools:
    """What the run needs from the machine, all checked before anything slow starts."""

    install: PgInstall
    user: ServerUser
    valgrind: str
    pgss_file: Path


def check_tools(plan: Plan) -> Tools:
    install = PgInstall(plan.pg_config)
    user = ServerUser()
    for program in ("initdb", "pg_ctl", "postgres", "psql", "pgbench"):
        install.program(program)
    valgrind = ""
    if "instructions" in plan.methods:
        valgrind = require_program("valgrind", "valgrind",
                                   "Debian: apt-get install valgrind (or set "
                                   "BENCH_OVERHEAD_METHODS=tps to skip the instruction counts).")
    contrib = "It ships with PostgreSQL's server package (Debian: postgresql-15)."
    pgss_file = require_file(install.library(PGSS.preload), "pg_stat_statements, the anchor,",
                             contrib)
    if "tps" in plan.methods:
        require_file(install.library("pg_prewarm"), "pg_prewarm", contrib)
    return Tools(install, user, valgrind, pgss_file)


def overhead() -> int:
    started = time.monotonic()
    plan = read_plan()
    tools = check_tools(plan)

    step = time.monotonic()
    voxperf = install_voxperf(REPO, tools.install, INSTALL_LOG, plan.skip_install)
    durations = {"install voxperf": time.monotonic() - step}
    if not voxperf.available:
        print(f"warning: voxperf row not measured: {voxperf.note}", flush=True)

    workdir = tools.user.make_workdir(plan.workdir_parent)
    clusters: List[Cluster] = []
    try:
        run = measure(plan, tools, voxperf, workdir, clusters, durations)
    finally:
        stop_quietly(clusters)
        dispose(workdir, plan.keep)

    durations["total"] = time.monotonic() - started
    run.facts["load average at end (1/5/15 min)"] = machine.load_average()
    publish(report.text(run), report.markdown(run), RESULTS, REPO)
    return 0


def measure(plan: Plan, tools: Tools, voxperf: LibraryStatus, workdir: Path,
            clusters: List[Cluster], durations: Dict[str, float]) -> report.OverheadRun:
    """Both methods in ``workdir``; every cluster started is appended to ``clusters``."""
    voxperf = private_copy(voxperf, workdir / "lib")
    voxperf_row = VOXPERF.preloading(str(voxperf.path)) if voxperf.path else VOXPERF
    availability = {
        NONE.key: Availability(True, "nothing preloaded"),
        PGSS.key: Availability(True, f"contrib, defaults; {describe_file(tools.pgss_file)}"),
        VOXPERF.key: Availability(voxperf.available, voxperf.note),
    }
    facts = machine.facts(REPO, tools.install.program("postgres"))
    facts["pgbench"] = machine.program_version([tools.install.program("pgbench"), "--version"])
    if tools.valgrind:
        facts["valgrind"] = machine.program_version([tools.valgrind, "--version"])
    run = report.OverheadRun(
        facts=facts, knobs=plan.knobs.used, server_settings=SERVER_SETTINGS,
        availability=availability, instruction_rows=(NONE, JUMBLING, PGSS, voxperf_row),
        tps_rows=(NONE, PGSS, voxperf_row), statements=plan.statements,
        instruction_scale=plan.instruction_scale, layouts=plan.layouts, tps_scale=plan.scale,
        durations=durations,
    )
    busy = machine.busy_warning()
    if busy:
        print(f"warning: {busy}", flush=True)
        run.warnings.append(busy)

    def measurable(rows):
        return [c for c in rows if c.key not in availability or availability[c.key].available]

    port = plan.port or free_port()
    if "instructions" in plan.methods:
        step = time.monotonic()
        print(f"instructions: callgrind, {plan.statements} point selects, scale "
              f"{plan.instruction_scale} (workdir {workdir})", flush=True)
        template = Cluster(tools.install, tools.user, workdir, "instructions", port)
        clusters.append(template)
        template.init(SERVER_SETTINGS)
        template.start(NONE.settings())
        load_pgbench_tables(template, plan.instruction_scale)
        template.stop()
        run.instructions, warnings = instructions.measure(
            template, measurable(run.instruction_rows), plan.statements,
            plan.instruction_scale * ACCOUNTS_PER_SCALE, tools.valgrind, plan.layouts)
        run.warnings += warnings
        template.remove()
        durations["instructions (callgrind)"] = time.monotonic() - step
    else:
        run.instructions_skipped = "BENCH_OVERHEAD_METHODS leaves it out"

    if "tps" in plan.methods:
        step = time.monotonic()
        print(f"tps: pgbench scale {plan.scale}, {plan.rounds} rounds x {plan.seconds} s "
              f"(+{plan.warmup} s warm-up), {plan.clients} clients, port {port}", flush=True)
        cluster = Cluster(tools.install, tools.user, workdir, "tps", port)
        clusters.append(cluster)
        cluster.init(SERVER_SETTINGS)
        cluster.start(NONE.settings())
        load_pgbench_tables(cluster, plan.scale)
        run.tps, run.round_loads = tps.measure(cluster, measurable(run.tps_rows), plan.rounds,
                                               plan.seconds, plan.warmup, plan.clients)
        durations["TPS (pgbench)"] = time.monotonic() - step
    else:
        run.tps_skipped = "BENCH_OVERHEAD_METHODS leaves it out"
    return run


def main() -> int:
    # A `kill` (or make's own interruption) must still stop the servers and remove the clusters.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    try:
        return overhead()
    except (BenchError, OSError) as err:
        print(f"\nbench overhead: FAILED: {err}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("\nbench overhead: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
