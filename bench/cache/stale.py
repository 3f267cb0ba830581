"""Method (c): the stale-read checker, run the same way against voxperfd and pgpool-II.

Per target, a fresh table ``bench_stale_<n> (id int PRIMARY KEY, version bigint)`` with
``BENCH_CACHE_ROWS`` rows at version 0, then for ``BENCH_CACHE_STALE_SECONDS`` seconds:

- ``BENCH_CACHE_WRITERS`` writer processes, each on its own connection, committing at random
  moments ``BENCH_CACHE_WRITE_INTERVAL_MS`` ms apart on average (exponential gaps: a Poisson
  process per writer): ``UPDATE … SET version = version + 1 WHERE id = <random> RETURNING
  version`` in autocommit, recording (row, version, ack time);
- ``BENCH_CACHE_READERS`` reader processes, back to back (``BENCH_CACHE_READ_PAUSE_MS`` between
  reads): read the version of a random row through the target, recording (row, version, start
  time).

Processes, not threads, so that one Python interpreter's lock cannot delay a timestamp; all
timestamps are CLOCK_MONOTONIC, which is system-wide. A read is **stale beyond the bound** when the
version it returned is older than the newest version whose commit had been acknowledged more than
the bound before the read started; **stale at all** with a bound of 0 (the window every
change-driven cache has). Then quiescence: the writers stop, the checker waits the bound and reads
every row once more through the target; an answer older than the row's version in PostgreSQL is a
**stale entry after quiescence**.

Targets:

- ``voxperfd`` — ``POST /api/cache/query`` on daemon A (L1 + L2), writers straight to PostgreSQL
  (the daemon is not a proxy: it learns of writes from the extension's NOTIFY, whoever wrote);
- ``voxperfd-l2`` — the same on daemon B (L1 0 bytes: every hit is an L2 hit);
- ``pgpool`` — reads and writes through pgpool-II (its query cache sees the writes it forwards:
  its supported set-up);
- ``pgpool-direct`` — reads through pgpool-II, writes straight to PostgreSQL (any other client,
  another pgpool, a job), the set-up voxperfd is built for.
"""

from __future__ import annotations

import bisect
import http.client
import json
import multiprocessing
import os
import random
import statistics
import threading
import time
import traceback
from dataclasses import dataclass, field
from typing import Dict, List, Optional, Tuple

from voxbench.cluster import LOOPBACK, SUPERUSER
from voxbench.commands import BenchError

import pgwire
from invalidation import percentile
from services import Daemon, Pgpool, QueryClient

TARGETS = ("voxperfd", "voxperfd-l2", "pgpool", "pgpool-direct")
LABELS = {
    "voxperfd": "voxperfd, daemon A (L1 + L2); writes straight to PostgreSQL",
    "voxperfd-l2": "voxperfd, daemon B (L2 only); writes straight to PostgreSQL",
    "pgpool": "pgpool-II query cache; writes through pgpool",
    "pgpool-direct": "pgpool-II query cache; writes straight to PostgreSQL",
}
# Time the workers get to connect before the common start.
START_DELAY_SECONDS = 1.0

# row, version, start, end, hit (None: unknown)
Read = Tuple[int, int, float, float, Optional[bool]]


@dataclass
class Endpoint:
    """Where a worker connects: a daemon's HTTP port or a PostgreSQL-protocol port."""

    kind: str  # "http" or "pg"
    port: int


@dataclass
class StaleResult:
    target: str
    table: str
    seconds: float
    bound_ms: float
    writes: int = 0
    reads: int = 0
    hits: Optional[int] = None
    stale_beyond: int = 0
    stale_any: int = 0
    max_stale_age_ms: float = 0.0
    max_stale_age_beyond_ms: float = 0.0
    # Stale reads beyond the bound that started before / after any later commit to the table
    # (a commit after the one that made them stale) had been acknowledged.
    beyond_before_next_commit: int = 0
    beyond_after_next_commit: int = 0
    read_ms: List[float] = field(default_factory=list)
    commit_ms: List[float] = field(default_factory=list)
    # voxperfd only: commit acknowledged → notification applied, from polling the daemon's
    # counter of applied tag invalidations (see LagProbe); commits not applied by the end.
    lag_ms: List[float] = field(default_factory=list)
    lag_unapplied: int = 0
    quiescent_rows: int = 0
    quiescent_stale: int = 0
    quiescent_detail: List[str] = field(default_factory=list)
    load_start: float = 0.0
    load_end: float = 0.0

    @property
    def hit_ratio(self) -> Optional[float]:
        return None if self.hits is None or not self.reads else self.hits / self.reads


def _writer(endpoint: Endpoint, table: str, rows: int, interval: float, start_at: float,
            deadline: float, seed: int, pipe) -> None:
    try:
        conn = pgwire.Connection(LOOPBACK, endpoint.port, SUPERUSER, "postgres",
                                 application_name="voxperf-bench-writer")
        rng = random.Random(seed)
        acks: List[Tuple[int, int, float, float]] = []
        time.sleep(max(0.0, start_at - time.monotonic()))
        next_at = time.monotonic()
        while True:
            now = time.monotonic()
            if now >= deadline:
                break
            row = rng.randrange(rows)
            t_send = time.monotonic()
            version = int(conn.scalar(f"UPDATE {table} SET version = version + 1 "
                                      f"WHERE id = {row} RETURNING version"))
            t_ack = time.monotonic()
            acks.append((row, version, t_send, t_ack))
            # Poisson arrivals: exponential gaps with the given mean, so that commits of different
            # writers sometimes coincide and sometimes leave long gaps.
            next_at += rng.expovariate(1.0 / interval) if interval > 0 else 0.0
            time.sleep(max(0.0, next_at - time.monotonic()))
        conn.close()
        pipe.send(("ok", acks))
    except Exception:  # pylint: disable=broad-except - reported by the parent
        pipe.send(("error", traceback.format_exc()))


def _reader(endpoint: Endpoint, table: str, rows: int, pause: float, start_at: float,
            deadline: float, seed: int, pipe) -> None:
    try:
        rng = random.Random(seed)
        read = reader_for(endpoint, table)
        reads: List[Read] = []
        time.sleep(max(0.0, start_at - time.monotonic()))
        while time.monotonic() < deadline:
            row = rng.randrange(rows)
            t_start = time.monotonic()
            version, hit = read(row)
            t_end = time.monotonic()
            reads.append((row, version, t_start, t_end, hit))
            if pause:
                time.sleep(pause)
        pipe.send(("ok", reads))
    except Exception:  # pylint: disable=broad-except - reported by the parent
        pipe.send(("error", traceback.format_exc()))


def reader_for(endpoint: Endpoint, table: str):
    """A function row -> (version, hit or None) reading through ``endpoint``."""
    if endpoint.kind == "http":
        client = QueryClient(endpoint.port)
        sql = f"SELECT version FROM {table} WHERE id = $1"

        def read_http(row: int):
            rows, status, _ = client.query(sql, [row])
            return int(rows[0]["version"]), status == "HIT"
        return read_http
    conn = pgwire.Connection(LOOPBACK, endpoint.port, SUPERUSER, "postgres",
                             application_name="voxperf-bench-reader")

    def read_pg(row: int):
        # Simple query protocol with the row as a literal: one pgpool cache entry per row.
        return int(conn.scalar(f"SELECT version FROM {table} WHERE id = {row}")), None
    return read_pg


def run_workers(plan, table: str, reads_via: Endpoint, writes_via: Endpoint, seed: int,
                started=None) -> Tuple[List[Tuple[int, int, float, float]], List[Read], float]:
    """Runs the writers and readers; ``started()`` is called once they are all forked (threads
    must not be running while this process forks) and before they start working."""
    ctx = multiprocessing.get_context("fork")
    start_at = time.monotonic() + START_DELAY_SECONDS
    deadline = start_at + plan.stale_seconds
    procs = []
    for i in range(plan.writers):
        parent, child = ctx.Pipe(duplex=False)
        proc = ctx.Process(target=_writer, args=(writes_via, table, plan.rows,
                                                 plan.write_interval_ms / 1000.0, start_at,
                                                 deadline, seed * 100 + i, child))
        procs.append(("writer", proc, parent))
    for i in range(plan.readers):
        parent, child = ctx.Pipe(duplex=False)
        proc = ctx.Process(target=_reader, args=(reads_via, table, plan.rows,
                                                 plan.read_pause_ms / 1000.0, start_at,
                                                 deadline, seed * 100 + 50 + i, child))
        procs.append(("reader", proc, parent))
    for _, proc, _ in procs:
        proc.start()
    if started is not None:
        started()
    acks: List[Tuple[int, int, float, float]] = []
    reads: List[Read] = []
    errors = []
    for role, proc, pipe in procs:
        if pipe.poll(plan.stale_seconds + 120):
            status, payload = pipe.recv()
        else:
            status, payload = "error", "no answer"
        proc.join(30)
        if proc.is_alive():
            proc.terminate()
        if status != "ok":
            errors.append(f"{role}: {payload}")
        elif role == "writer":
            acks += payload
        else:
            reads += payload
    if errors:
        raise BenchError(f"stale-read checker on {table}: worker failed:\n" + "\n".join(errors))
    return acks, reads, plan.stale_seconds


def evaluate(result: StaleResult, acks, reads, rows: int) -> None:
    """Counts stale reads (see the module doc) into ``result``."""
    bound = result.bound_ms / 1000.0
    per_row: Dict[int, List[Tuple[float, int]]] = {r: [(float("-inf"), 0)] for r in range(rows)}
    ack_of: Dict[Tuple[int, int], float] = {}
    for row, version, _t_send, t_ack in acks:
        per_row[row].append((t_ack, version))
        ack_of[(row, version)] = t_ack
    every_ack = sorted(a[3] for a in acks)
    times: Dict[int, List[float]] = {}
    newest: Dict[int, List[int]] = {}
    for row, events in per_row.items():
        events.sort()
        times[row] = [t for t, _ in events]
        running, out = 0, []
        for _, version in events:
            running = max(running, version)
            out.append(running)
        newest[row] = out
    for row, version, t_start, _t_end, _hit in reads:
        at = bisect.bisect_right(times[row], t_start) - 1
        if version >= newest[row][at]:
            continue
        result.stale_any += 1
        # How long the first version newer than the one read had been acknowledged.
        age = (t_start - ack_of[(row, version + 1)]) * 1000.0
        result.max_stale_age_ms = max(result.max_stale_age_ms, age)
        before = bisect.bisect_right(times[row], t_start - bound) - 1
        if version < newest[row][before]:
            result.stale_beyond += 1
            result.max_stale_age_beyond_ms = max(result.max_stale_age_beyond_ms, age)
            acked = ack_of[(row, version + 1)]
            later = bisect.bisect_left(every_ack, t_start) - bisect.bisect_right(every_ack, acked)
            if later > 0:
                result.beyond_after_next_commit += 1
            else:
                result.beyond_before_next_commit += 1


class LagProbe(threading.Thread):
    """Polls a daemon's count of applied tag invalidations (``GET /api/cache/stats``,
    ``counters.invalidations.tags``) every ``every`` seconds, recording (arrival, count).

    Every commit of the checker is its own transaction writing one watched table, so it sends
    exactly one NOTIFY, and applying it adds exactly one to that counter: the k-th commit
    acknowledged (in ack order, which is commit order up to the ack's own jitter) is applied when
    the counter has moved by k. Taking the arrival of the answer that first shows it makes each
    lag an upper bound, by one poll interval plus one round trip.
    """

    def __init__(self, port: int, every: float) -> None:
        super().__init__(daemon=True)
        self.port = port
        self.every = every
        self.samples: List[Tuple[float, int]] = []
        self.halt = threading.Event()
        self.error: Optional[str] = None

    def run(self) -> None:
        conn = http.client.HTTPConnection(LOOPBACK, self.port, timeout=10)
        try:
            while not self.halt.is_set():
                conn.request("GET", "/api/cache/stats")
                body = conn.getresponse().read()
                arrived = time.monotonic()
                count = int(json.loads(body)["counters"]["invalidations"]["tags"])
                self.samples.append((arrived, count))
                time.sleep(self.every)
        except (OSError, http.client.HTTPException, ValueError, KeyError) as err:
            self.error = str(err)
        finally:
            conn.close()

    def stop(self) -> None:
        self.halt.set()
        self.join(10)

    def lags(self, acks) -> Tuple[List[float], int]:
        """(lag in ms of every commit applied while polling, commits never seen applied)."""
        if not self.samples:
            return [], len(acks)
        base = self.samples[0][1]
        times = [t for t, _ in self.samples]
        counts = [c - base for _, c in self.samples]
        lags: List[float] = []
        unapplied = 0
        for k, acked in enumerate(sorted(a[3] for a in acks), start=1):
            at = bisect.bisect_left(counts, k)
            if at == len(counts):
                unapplied += 1
            else:
                lags.append((times[at] - acked) * 1000.0)
        return lags, unapplied


def check(plan, target: str, number: int, pg_port: int, bound_ms: float,
          daemon: Optional[Daemon] = None, pgpool: Optional[Pgpool] = None) -> StaleResult:
    table = f"bench_stale_{number}"
    direct = Endpoint("pg", pg_port)
    if target.startswith("voxperfd"):
        assert daemon is not None
        reads_via, writes_via = Endpoint("http", daemon.port), direct
    else:
        assert pgpool is not None
        reads_via = Endpoint("pg", pgpool.port)
        writes_via = reads_via if target == "pgpool" else direct
    setup = pgwire.Connection(LOOPBACK, pg_port, SUPERUSER, "postgres",
                              application_name="voxperf-bench-setup")
    try:
        setup.query(f"DROP TABLE IF EXISTS {table}; "
                    f"CREATE TABLE {table} (id int PRIMARY KEY, version bigint NOT NULL); "
                    f"INSERT INTO {table} SELECT g, 0 FROM generate_series(0, {plan.rows - 1}) g")
        setup.query(f"VACUUM ANALYZE {table}")
        # One read per row before the start: the daemon watches the table from its first miss.
        warm = reader_for(reads_via, table)
        for row in range(plan.rows):
            warm(row)
        result = StaleResult(target, table, plan.stale_seconds, bound_ms,
                             load_start=os.getloadavg()[0])
        before = pgpool.cache_counters() if pgpool is not None else None
        probe = None
        if daemon is not None and plan.lag_poll_ms > 0:
            probe = LagProbe(daemon.port, plan.lag_poll_ms / 1000.0)

        def start_probe() -> None:
            if probe is not None:
                probe.start()
                while not probe.samples and probe.is_alive():
                    time.sleep(0.001)
        try:
            acks, reads, _ = run_workers(plan, table, reads_via, writes_via, number,
                                         started=start_probe)
        finally:
            if probe is not None and probe.is_alive():
                time.sleep(max(bound_ms / 1000.0, 0.05))
                probe.stop()
        if probe is not None:
            if probe.error:
                raise BenchError(f"polling {daemon.name}'s /api/cache/stats failed: {probe.error}")
            result.lag_ms, result.lag_unapplied = probe.lags(acks)
        after = pgpool.cache_counters() if pgpool is not None else None
        result.load_end = os.getloadavg()[0]
        result.writes, result.reads = len(acks), len(reads)
        if before is not None and after is not None:
            result.hits = after["hits"] - before["hits"]
        else:
            result.hits = sum(1 for r in reads if r[4])
        result.read_ms = [(r[3] - r[2]) * 1000.0 for r in reads]
        result.commit_ms = [(a[3] - a[2]) * 1000.0 for a in acks]
        evaluate(result, acks, reads, plan.rows)
        # Quiescence: writers stopped; wait the bound (already waited while the probe finished),
        # then read every row once more.
        if probe is None:
            time.sleep(bound_ms / 1000.0)
        truth = {int(r[0]): int(r[1]) for r in setup.query(f"SELECT id, version FROM {table}")}
        final = reader_for(reads_via, table)
        for row in range(plan.rows):
            version, _ = final(row)
            result.quiescent_rows += 1
            if version < truth[row]:
                result.quiescent_stale += 1
                result.quiescent_detail.append(f"row {row}: read {version}, committed {truth[row]}")
    finally:
        setup.close()
    return result


def summary_line(result: StaleResult) -> str:
    ratio = result.hit_ratio
    parts = [f"{result.writes} writes, {result.reads} reads"
             + ("" if ratio is None else f" ({ratio * 100:.1f} % hits)"),
             f"stale beyond {result.bound_ms:.1f} ms: {result.stale_beyond}",
             f"stale at all: {result.stale_any} (oldest {result.max_stale_age_ms:.1f} ms)",
             f"stale after quiescence: {result.quiescent_stale}/{result.quiescent_rows}"]
    if result.lag_ms:
        parts.append(f"applied p50 {statistics.median(result.lag_ms):.2f} / p99 "
                     f"{percentile(result.lag_ms, 0.99):.2f} / max {max(result.lag_ms):.2f} ms "
                     "after the ack")
    parts.append(f"read p50 {statistics.median(result.read_ms):.2f} ms / p99 "
                 f"{percentile(result.read_ms, 0.99):.2f} ms")
    return ", ".join(parts)
