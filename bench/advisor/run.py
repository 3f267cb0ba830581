#!/usr/bin/env python3
"""Benchmark part `advisor`: voxperf's index advice against the seed's hand-written indexes and
pg_qualstats' advice, on the VoxLink demo at a realistic volume.

One throw-away cluster (bench/README.md, "Part `advisor`", explains the method and every knob):

1. load sql/schema.sql + sql/data.sql at VOXPERF_BENCH_ADVISOR_SCALE into a template database;
2. advise: with voxperf and pg_qualstats (sample_rate 1) preloaded, run sql/workload.sql once
   in a copy of the template, then ask voxperf.suggest_indexes() and
   pg_qualstats_index_advisor(), both with their default arguments;
3. measure: restart with voxperf alone preloaded (its statistics time the statements); one copy
   of the template per set (none, seed, pg_qualstats, voxperf) with the set's indexes, warm-up
   runs, timed runs in rotated rounds, then pgbench single-row inserts.

Prints the tables and verdicts, writes bench/results/advisor.md, and throws the cluster away
(BENCH_KEEP=1 keeps it). The verdicts are reported, not turned into the exit status: the part
exits non-zero only when it could not measure.
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
from voxbench.commands import BenchError, run  # noqa: E402
from voxbench.extension import LibraryStatus, install_voxperf, private_copy  # noqa: E402
from voxbench.knobs import Knobs  # noqa: E402
from voxbench.part import dispose, publish  # noqa: E402

import demo  # noqa: E402
import indexsets  # noqa: E402
import measure  # noqa: E402
import report  # noqa: E402

# postgresql.conf of the bench cluster, the same for every set. Each line says why.
SERVER_SETTINGS: Dict[str, str] = {
    # Holds the four measured databases (about 200 MB each at scale 5 with their indexes), so
    # runs compare plans, not the page cache's luck.
    "shared_buffers": "1GB",
    # A commit would otherwise wait for an fsync on a shared virtual disk: that latency, not
    # index maintenance, would set the insert throughput.
    "synchronous_commit": "off",
    # No checkpoint inside a measurement: the part checkpoints before the inserts itself.
    "max_wal_size": "8GB",
    "checkpoint_timeout": "1h",
    # JIT would compile the full-scan reports in some runs and not others: variance, no signal.
    "jit": "off",
    # Each database is vacuumed and analyzed once its indexes exist; a background vacuum landing
    # in one set's timed run would be noise.
    "autovacuum": "off",
}
# The advising start: both advisors watch the same run of the workload. pg_qualstats samples
# 1/max_connections of the statements by default; at 1 it sees every one, as voxperf's
# statistics do. It keeps each constant's predicate apart (track_constants) in at most
# pg_qualstats.max entries, 1000 by default, which one run of the workload fills (at scale 1
# already 970): raised so that it forgets nothing it saw. (The report warns if it still fills.)
PG_QUALSTATS_MAX = "10000"
PG_QUALSTATS = "pg_qualstats"
PG_QUALSTATS_PACKAGE = "postgresql-15-pg-qualstats"
ADVISE_DATABASE = "voxlink_advise"

RESULTS = BENCH_DIR / "results" / "advisor.md"
INSTALL_LOG = REPO / "target" / "bench" / "voxperf-install.log"
# The issue asks for at least a million usage records: scale 5.
MIN_DEFAULT_SCALE = 5


@dataclass
class Plan:
    """The knobs of this run (bench/README.md documents each)."""

    knobs: Knobs
    scale: int
    runs: int
    warmup: int
    insert_seconds: int
    insert_rounds: int
    insert_clients: int
    port: int
    skip_install: bool
    keep: bool
    workdir_parent: Optional[str]
    pg_config: str


def read_plan() -> Plan:
    knobs = Knobs()
    prefix = "VOXPERF_BENCH_ADVISOR_"
    return Plan(
        knobs=knobs,
        scale=knobs.integer(prefix + "SCALE", MIN_DEFAULT_SCALE, 1,
                            "sql/data.sql scale; 5 = 1,000,000 usage records"),
        runs=knobs.integer(prefix + "RUNS", 3, 1, "timed workload runs per set"),
        warmup=knobs.integer(prefix + "WARMUP", 1, 0, "discarded workload runs per set"),
        insert_seconds=knobs.integer(prefix + "INSERT_SECONDS", 10, 1,
                                     "seconds of the pgbench insert run per set"),
        insert_rounds=knobs.integer(prefix + "INSERT_ROUNDS", 3, 1,
                                    "pgbench insert runs per set"),
        insert_clients=knobs.integer(prefix + "INSERT_CLIENTS", 2, 1,
                                     "pgbench clients (and threads) for the inserts"),
        port=knobs.integer("BENCH_PGPORT", 0, 0, "TCP port of the bench server; 0 = a free one"),
        skip_install=knobs.flag("BENCH_SKIP_INSTALL"),
        keep=knobs.flag("BENCH_KEEP"),
        workdir_parent=knobs.text("BENCH_WORKDIR", None),
        pg_config=os.environ.get("PG_CONFIG") or DEFAULT_PG_CONFIG,
    )


@dataclass
class Tools:
    install: PgInstall
    user: ServerUser


def check_tools(plan: Plan) -> Tools:
    install = PgInstall(plan.pg_config)
    user = ServerUser()
    for program in ("initdb", "pg_ctl", "postgres", "psql", "pgbench"):
        install.program(program)
    demo.check_sql_files()
    ensure_pg_qualstats(install)
    return Tools(install, user)


def ensure_pg_qualstats(install: PgInstall) -> None:
    """Installs Debian's pg_qualstats package when its library is missing (as root)."""
    library = install.library(PG_QUALSTATS)
    if library.exists():
        return
    if os.geteuid() != 0:
        raise BenchError(f"pg_qualstats, the anchor, is not installed ({library} does not "
                         f"exist). Install it: sudo apt-get install -y {PG_QUALSTATS_PACKAGE}")
    print(f"installing {PG_QUALSTATS_PACKAGE} (apt-get)", flush=True)
    try:
        run(["apt-get", "install", "-y", PG_QUALSTATS_PACKAGE], what="apt-get install",
            env={"DEBIAN_FRONTEND": "noninteractive"}, timeout=900)
    except BenchError:
        # A fresh machine may have no package lists yet.
        run(["apt-get", "update"], what="apt-get update", timeout=900)
        run(["apt-get", "install", "-y", PG_QUALSTATS_PACKAGE],
            what=f"apt-get install {PG_QUALSTATS_PACKAGE}",
            env={"DEBIAN_FRONTEND": "noninteractive"}, timeout=900)
    if not library.exists():
        raise BenchError(f"{PG_QUALSTATS_PACKAGE} is installed but {library} does not exist: "
                         "is PG_CONFIG the PostgreSQL 15 the package is built for?")


def package_version(package: str) -> str:
    return machine.program_version(["dpkg-query", "-W", "-f", "${Version}\n", package])


def advisor() -> int:
    started = time.monotonic()
    plan = read_plan()
    tools = check_tools(plan)

    step = time.monotonic()
    voxperf = install_voxperf(REPO, tools.install, INSTALL_LOG, plan.skip_install)
    durations = {"install voxperf": time.monotonic() - step}
    if not voxperf.available:
        raise BenchError(f"voxperf is needed by every set of this part (its advice, and its "
                         f"statistics time the workload): {voxperf.note}; build log: "
                         f"{INSTALL_LOG.relative_to(REPO)}")

    workdir = tools.user.make_workdir(plan.workdir_parent)
    clusters: List[Cluster] = []
    try:
        result = measure_sets(plan, tools, voxperf, workdir, clusters, durations)
    finally:
        stop_quietly(clusters)
        dispose(workdir, plan.keep)

    durations["total"] = time.monotonic() - started
    result.facts["load average at end (1/5/15 min)"] = machine.load_average()
    publish(report.text(result), report.markdown(result), RESULTS, REPO)
    return 0


def measure_sets(plan: Plan, tools: Tools, voxperf: LibraryStatus, workdir: Path,
                 clusters: List[Cluster], durations: Dict[str, float]) -> report.AdvisorRun:
    """Load, advise, measure, in ``workdir``; the cluster is appended to ``clusters``."""
    voxperf = private_copy(voxperf, workdir / "lib")
    if voxperf.path is None:
        raise BenchError(f"voxperf has no library file to preload: {voxperf.note}")
    library = voxperf.path
    facts = machine.facts(REPO, tools.install.program("postgres"))
    facts["pgbench"] = machine.program_version([tools.install.program("pgbench"), "--version"])
    facts["pg_qualstats"] = f"{PG_QUALSTATS_PACKAGE} {package_version(PG_QUALSTATS_PACKAGE)}"
    advise_settings = {"shared_preload_libraries": f"{library},{PG_QUALSTATS}",
                       "pg_qualstats.sample_rate": "1", "pg_qualstats.max": PG_QUALSTATS_MAX}
    timed_settings = {"shared_preload_libraries": str(library)}
    result = report.AdvisorRun(facts=facts, knobs=plan.knobs.used,
                               server_settings=SERVER_SETTINGS, advise_settings=advise_settings,
                               timed_settings=timed_settings, voxperf_note=voxperf.note,
                               scale=plan.scale, durations=durations)
    busy = machine.busy_warning()
    if busy:
        print(f"warning: {busy}", flush=True)
        result.warnings.append(busy)

    cluster = Cluster(tools.install, tools.user, workdir, "advisor", plan.port or free_port())
    clusters.append(cluster)
    cluster.init(SERVER_SETTINGS)
    cluster.start(advise_settings)
    admin = demo.Database(cluster, "postgres")
    demo.create_voxperf(admin, library)

    step = time.monotonic()
    print(f"loading the demo data at scale {plan.scale} (workdir {workdir})", flush=True)
    template = demo.load_template(cluster, plan.scale, library)
    result.row_counts = demo.row_counts(template)
    result.table_sizes = demo.table_sizes(template)
    durations["load data"] = time.monotonic() - step

    step = time.monotonic()
    sets = advise(cluster, admin, result)
    durations["advise (one workload run, both advisors)"] = time.monotonic() - step

    cluster.stop()
    cluster.start(timed_settings)
    result.sets = measure_each(plan, cluster, admin, sets, result)
    cluster.stop()
    return result


def measure_each(plan: Plan, cluster: Cluster, admin: demo.Database,
                 sets: List[indexsets.IndexSet], result: report.AdvisorRun) -> List[measure.SetRun]:
    """Each set's database and indexes, the warm-up, the timed rounds and the inserts."""
    durations = result.durations
    step = time.monotonic()
    set_runs = [build_set(cluster, index_set) for index_set in sets]
    admin.sql("CHECKPOINT")
    durations["create the sets' databases and indexes"] = time.monotonic() - step

    step = time.monotonic()
    print(f"warm-up: {plan.warmup} workload run(s) per set", flush=True)
    measure.warm_up(set_runs, plan.warmup)
    durations["warm-up"] = time.monotonic() - step
    step = time.monotonic()
    print(f"timed: {plan.runs} round(s), each runs the workload once per set", flush=True)
    result.round_loads = measure.timed_rounds(admin, set_runs, plan.runs)
    durations["timed runs"] = time.monotonic() - step

    step = time.monotonic()
    print(f"inserts: {plan.insert_rounds} round(s) of pgbench, {plan.insert_clients} clients x "
          f"{plan.insert_seconds} s per set", flush=True)
    script = measure.insert_script(cluster.workdir, result.row_counts["VirtualNumber"])
    result.insert_script = script.read_text(encoding="utf-8")
    measure.insert_rounds(admin, set_runs, script, plan.insert_rounds, plan.insert_clients,
                          plan.insert_seconds)
    durations["inserts"] = time.monotonic() - step
    return set_runs


def advise(cluster: Cluster, admin: demo.Database,
           result: report.AdvisorRun) -> List[indexsets.IndexSet]:
    """One workload run watched by both advisors, then their advice; the sets in report order."""
    db = demo.create_database(cluster, ADVISE_DATABASE, demo.TEMPLATE)
    db.sql(f"CREATE EXTENSION {PG_QUALSTATS}")
    db.sql("SELECT pg_qualstats_reset()")
    admin.sql("SELECT voxperf.reset()")
    print("advise: one workload run with voxperf and pg_qualstats watching", flush=True)
    result.advise_wall = demo.run_workload(db)
    # voxperf first: pg_qualstats' advisor runs queries that voxperf would record as workload.
    vox = indexsets.voxperf_set(db)
    quals = indexsets.pg_qualstats_set(db)
    result.qualstats_entries = int(db.sql("SELECT count(*) FROM pg_qualstats()"))
    result.qualstats_max = int(db.sql("SHOW pg_qualstats.max"))
    # Advice is meant to be applied and asked again: the second round sees the workload run
    # with the first round's indexes (what the planner misjudged shows up as measured time).
    print("advise: voxperf's set applied, one more workload run, voxperf asked again", flush=True)
    again = demo.create_database(cluster, ADVISE_DATABASE + "_2", demo.TEMPLATE)
    indexsets.build(again, vox)
    again.sql("VACUUM ANALYZE")
    again.sql("SELECT voxperf.reset(0, (SELECT oid FROM pg_database WHERE datname = current_database()), 0)")
    demo.run_workload(again)
    vox2 = indexsets.second_round(vox, again)
    for index_set in (vox, quals, vox2):
        print(f"  {index_set.label}: {len(index_set.statements)} index(es)", flush=True)
        for ddl in index_set.statements:
            print(f"    {ddl}", flush=True)
        for notice in index_set.notices:
            print(f"    {notice}", flush=True)
    return [indexsets.NO_INDEXES, indexsets.seed_set(), quals, vox, vox2]


def build_set(cluster: Cluster, index_set: indexsets.IndexSet) -> measure.SetRun:
    db = demo.create_database(cluster, f"voxlink_{index_set.key}", demo.TEMPLATE)
    built = indexsets.build(db, index_set)
    db.sql("VACUUM ANALYZE")
    print(f"  {index_set.label}: {len(built.indexes)} index(es), "
          f"{built.size_bytes / 2**20:.1f} MiB, built in {built.seconds:.1f} s", flush=True)
    return measure.SetRun(index_set, db, db.oid(), built)


def main() -> int:
    # A `kill` (or make's own interruption) must still stop the server and remove the cluster.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    try:
        return advisor()
    except (BenchError, OSError) as err:
        print(f"\nbench advisor: FAILED: {err}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("\nbench advisor: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
