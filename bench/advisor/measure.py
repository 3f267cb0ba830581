"""Timing the workload and single-row inserts for every index set, in one cluster.

Each set has its own database (a copy of the template plus the set's indexes). Warm-up runs
come first, for every set; then the timed runs go in rounds, each round running the workload
once per set in a rotated order (round 1: A B C D, round 2: B C D A, ...), so that a slow
minute of a shared machine is spread over the sets instead of landing on one of them. Before
each timed run voxperf's statistics are reset; after it the run's total execution time and
its time per statement kind are read from voxperf.query_stats (server-side, psql excluded).

Inserts come last (they grow "UsageRecord", which would change later workload runs), in rotated
rounds too: per set and round, a CHECKPOINT, then ``pgbench -n -c C -j C -T T`` with one INSERT
like the workload's, with the server's CPU time per insert (voxbench.servercpu), which a busy
neighbour disturbs far less than the TPS.
"""

from __future__ import annotations

import os
import re
import statistics
from dataclasses import dataclass, field
from pathlib import Path
from typing import Dict, List, Sequence, Tuple

from voxbench import servercpu
from voxbench.cluster import LOOPBACK
from voxbench.commands import BenchError, run

from demo import Database, run_workload
from indexsets import BuiltSet, IndexSet, record_scans
from statements import KindTime, read_run


@dataclass
class SetRun:
    """One index set in its database, and everything measured on it."""

    index_set: IndexSet
    db: Database
    dboid: int
    built: BuiltSet
    wall_seconds: List[float] = field(default_factory=list)
    exec_ms: List[float] = field(default_factory=list)
    kinds: Dict[str, KindTime] = field(default_factory=dict)
    # One figure per insert round, in round order.
    insert_tps: List[float] = field(default_factory=list)
    insert_cpu_us: List[float] = field(default_factory=list)

    @property
    def key(self) -> str:
        return self.index_set.key

    @property
    def median_wall(self) -> float:
        return statistics.median(self.wall_seconds)

    @property
    def median_exec_ms(self) -> float:
        return statistics.median(self.exec_ms)

    @property
    def median_insert_tps(self) -> float:
        return statistics.median(self.insert_tps)

    @property
    def median_insert_cpu_us(self) -> float:
        return statistics.median(self.insert_cpu_us)

    def add_kinds(self, kinds: Dict[str, KindTime]) -> None:
        for key, time_of_kind in kinds.items():
            total = self.kinds.setdefault(key, KindTime())
            total.calls += time_of_kind.calls
            total.total_ms += time_of_kind.total_ms


def warm_up(sets: Sequence[SetRun], runs: int) -> None:
    for set_run in sets:
        for number in range(1, runs + 1):
            took = run_workload(set_run.db)
            print(f"  warm-up {number}/{runs}  {set_run.index_set.label:<22} {took:7.1f} s",
                  flush=True)


def timed_rounds(admin: Database, sets: Sequence[SetRun], rounds: int) -> List[float]:
    """The timed runs; returns the 1-minute load average at the start of each round."""
    loads: List[float] = []
    for round_no in range(rounds):
        loads.append(load_average())
        shift = round_no % len(sets)
        for set_run in list(sets[shift:]) + list(sets[:shift]):
            admin.sql("SELECT voxperf.reset()")
            wall = run_workload(set_run.db)
            exec_ms, kinds = read_run(admin, set_run.dboid)
            set_run.wall_seconds.append(wall)
            set_run.exec_ms.append(exec_ms)
            set_run.add_kinds(kinds)
            print(f"  round {round_no + 1}/{rounds}  {set_run.index_set.label:<22} "
                  f"wall {wall:7.1f} s   execution {exec_ms / 1000:7.1f} s", flush=True)
    for set_run in sets:
        record_scans(set_run.db, set_run.built)
    return loads


def load_average() -> float:
    try:
        return os.getloadavg()[0]
    except OSError:
        return float("nan")


# One usage record like the workload's INSERT: a random existing number (ids are 1..numbers,
# dense: bigserial, nothing deleted), a kind, a duration, its cost, stamped with the clock
# (records are appended at "now", as the application's are).
INSERT_SCRIPT = """\
\\set number_id random(1, {numbers})
\\set kind random(1, 4)
\\set seconds random(0, 600)
INSERT INTO "UsageRecord" (number_id, "timestamp", kind, duration_seconds, cost) \
VALUES (:number_id, clock_timestamp(), \
(ARRAY['call_in', 'call_out', 'sms_in', 'sms_out'])[:kind], :seconds, \
round(:seconds * 0.02 / 60, 4));
"""

# A client backend's process title contains its client's address, e.g. "127.0.0.1(53210)".
CLIENT_TITLE = f"{LOOPBACK}("
_TPS = re.compile(r"^tps = ([0-9.]+) \(without initial connection time\)", re.MULTILINE)
_DONE = re.compile(r"^number of transactions actually processed: (\d+)", re.MULTILINE)
_FAILED = re.compile(r"^number of failed transactions: (\d+)", re.MULTILINE)


def insert_script(workdir: Path, numbers: int) -> Path:
    path = workdir / "insert_usage_record.sql"
    path.write_text(INSERT_SCRIPT.format(numbers=numbers), encoding="utf-8")
    path.chmod(0o644)
    return path


def insert_rounds(admin: Database, sets: Sequence[SetRun], script: Path, rounds: int,
                  clients: int, seconds: int) -> None:
    """``rounds`` pgbench insert runs per set, in rotated order like the workload's rounds."""
    for round_no in range(rounds):
        shift = round_no % len(sets)
        for set_run in list(sets[shift:]) + list(sets[:shift]):
            tps, cpu_us = insert_run(admin, set_run, script, clients, seconds)
            set_run.insert_tps.append(tps)
            set_run.insert_cpu_us.append(cpu_us)
            print(f"  inserts {round_no + 1}/{rounds}  {set_run.index_set.label:<22} "
                  f"{tps:9,.0f} TPS {cpu_us:7.1f} µs server CPU/insert", flush=True)


def insert_run(admin: Database, set_run: SetRun, script: Path, clients: int,
               seconds: int) -> Tuple[float, float]:
    """CHECKPOINT, then one pgbench run: (TPS, server CPU µs per insert)."""
    admin.sql("CHECKPOINT")
    cluster = set_run.db.cluster
    label = f"pgbench inserts ({set_run.index_set.label})"
    postmaster = cluster.postmaster_pid()
    servercpu.wait_for_no_clients(postmaster, CLIENT_TITLE)
    cpu_before = servercpu.cpu_seconds(postmaster)
    out = run([cluster.install.program("pgbench"), *cluster.client_args(), "-n",
               "-c", str(clients), "-j", str(clients), "-T", str(seconds),
               "-f", str(script), set_run.db.name],
              cwd=cluster.workdir, what=label, timeout=seconds * 3 + 60)
    servercpu.wait_for_no_clients(postmaster, CLIENT_TITLE)
    cpu = servercpu.cpu_seconds(postmaster) - cpu_before
    tps, done = _TPS.search(out), _DONE.search(out)
    if tps is None or done is None:
        raise BenchError(f"{label}: no 'tps =' line in its output:\n{out}")
    failed = _FAILED.search(out)
    if failed is not None and int(failed.group(1)) != 0:
        raise BenchError(f"{label}: {failed.group(1)} failed transactions")
    return float(tps.group(1)), cpu / max(int(done.group(1)), 1) * 1e6
