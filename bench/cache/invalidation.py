"""Method (b): invalidation delay, from a committed UPDATE to the cached result being gone.

At low load (one writer, one poller, nothing else), repeated ``BENCH_CACHE_INVAL_REPS`` times:

1. ``POST /api/cache/query`` ``SELECT v FROM bench_inval WHERE id = $1`` until daemon A answers
   HIT (the result is cached; the daemon has made the table watched);
2. a writer on its own connection, straight to PostgreSQL, runs ``UPDATE bench_inval SET v = v + 1
   WHERE id = 1 RETURNING v`` in autocommit; *ack* = the moment its answer (ReadyForQuery) is
   read, i.e. when the writer knows the commit happened;
3. the poller asks, back to back, for the query's cache entry itself — ``GET
   /api/cache/entries/<the query's key>``, which runs the same freshness check as a query hit
   but never loads — until it answers 404; *entry gone* = the moment that 404 arrived − ack;
4. then one ``POST /api/cache/query`` must answer MISS with the new value; *new value answered*
   = the moment that answer arrived − ack.

Both are upper bounds (each includes the last request's round trip, whose figures are reported).
The query's cache key (a hash of PostgreSQL's normalized statement, computed by the daemon) is
found once, in Redis: after the first load it is the only ``<prefix>e:query:*`` key.

The daemon also says when it applied the notification: its listener status (in
``/api/performance/health``) carries ``last_notification_at_ms`` (Unix time, 1 ms resolution),
compared with the wall-clock time of the ack (so it can read ≤ 0: PostgreSQL delivers the NOTIFY
at commit, before the writer has read its answer). The listener's notification counter is checked
to have moved by exactly one for each UPDATE.
"""

from __future__ import annotations

import os
import random
import statistics
import time
from dataclasses import dataclass, field
from typing import List

from voxbench.cluster import LOOPBACK, SUPERUSER
from voxbench.commands import BenchError

import pgwire
from services import Daemon, QueryClient, Redis

TABLE = "bench_inval"
SQL = f"SELECT v FROM {TABLE} WHERE id = $1"
UPDATE = f"UPDATE {TABLE} SET v = v + 1 WHERE id = 1 RETURNING v"
# A poll that has not seen the entry gone this long after the ack counts as "never invalidated".
GIVE_UP_SECONDS = 5.0
# Pause between repetitions, drawn uniformly: keeps the load low and desynchronises from any
# periodic work in the daemon.
PAUSE_MS = (5, 25)


@dataclass
class InvalidationResults:
    gone_ms: List[float] = field(default_factory=list)        # ack → 404 received (upper bound)
    fresh_ms: List[float] = field(default_factory=list)       # ack → new value received
    present_polls: List[int] = field(default_factory=list)    # polls still 200 after the ack
    gone_poll_ms: List[float] = field(default_factory=list)   # round trip of the 404 poll
    present_poll_ms: List[float] = field(default_factory=list)
    fresh_poll_ms: List[float] = field(default_factory=list)  # round trip of the confirming POST
    fresh_poll_server_ms: List[float] = field(default_factory=list)
    applied_ms: List[float] = field(default_factory=list)     # daemon's own timestamp − ack
    commit_ms: List[float] = field(default_factory=list)      # UPDATE round trip
    fresh_not_miss: int = 0
    fresh_wrong_value: int = 0
    timeouts: int = 0
    counter_mismatches: int = 0
    key: str = ""
    load_start: float = 0.0
    load_end: float = 0.0

    @property
    def bound_ms(self) -> float:
        """The largest "entry gone" delay measured: the stale-read checker's default bound."""
        return max(self.gone_ms)


def percentile(values: List[float], q: float) -> float:
    """The q-quantile (0..1) by the nearest-rank method: a value that was actually measured."""
    ordered = sorted(values)
    rank = max(1, int(-(-q * len(ordered) // 1)))
    return ordered[min(rank, len(ordered)) - 1]


def find_key(plan, redis: Redis, daemon: Daemon) -> str:
    prefix = daemon.env.get("REDIS_KEY_PREFIX", "voxperf:")
    keys = redis.keys(plan.redis_cli, f"{prefix}e:query:*")
    if len(keys) != 1:
        raise BenchError(f"expected exactly one query entry in Redis after the first load, found "
                         f"{keys!r}: the daemon's key layout changed (daemon/src/cache/l2.rs, "
                         "services/query_cache.rs)")
    return keys[0][len(f"{prefix}e:"):]


def measure(plan, pg_port: int, daemon: Daemon, redis: Redis) -> InvalidationResults:
    results = InvalidationResults(load_start=os.getloadavg()[0])
    writer = pgwire.Connection(LOOPBACK, pg_port, SUPERUSER, "postgres",
                               application_name="voxperf-bench-writer")
    writer.query(f"DROP TABLE IF EXISTS {TABLE}; "
                 f"CREATE TABLE {TABLE} (id int PRIMARY KEY, v bigint NOT NULL); "
                 f"INSERT INTO {TABLE} VALUES (1, 0)")
    client = QueryClient(daemon.port)
    rng = random.Random(4)
    try:
        cache_it(client)
        results.key = find_key(plan, redis, daemon)
        entry = f"/api/cache/entries/{results.key}"
        for rep in range(plan.inval_reps):
            cache_it(client)
            if client.get_status(entry) != 200:
                raise BenchError(f"GET {entry} does not find the cached query result")
            before = daemon.listener()["notifications"]
            t_send = time.monotonic()
            new = int(writer.scalar(UPDATE))
            t_ack = time.monotonic()
            wall_ack_ms = time.time() * 1000.0
            results.commit_ms.append((t_ack - t_send) * 1000.0)
            present = 0
            while True:
                t_req = time.monotonic()
                status = client.get_status(entry)
                t_resp = time.monotonic()
                if status == 404:
                    break
                if status != 200:
                    raise BenchError(f"GET {entry} answered {status}")
                present += 1
                results.present_poll_ms.append((t_resp - t_req) * 1000.0)
                if t_resp - t_ack > GIVE_UP_SECONDS:
                    break
            results.present_polls.append(present)
            if status != 404:
                results.timeouts += 1
                continue
            results.gone_ms.append((t_resp - t_ack) * 1000.0)
            results.gone_poll_ms.append((t_resp - t_req) * 1000.0)
            t_req = time.monotonic()
            rows, cache_status, server_ms = client.query(SQL, [1])
            t_resp = time.monotonic()
            results.fresh_ms.append((t_resp - t_ack) * 1000.0)
            results.fresh_poll_ms.append((t_resp - t_req) * 1000.0)
            results.fresh_poll_server_ms.append(server_ms)
            results.fresh_not_miss += cache_status != "MISS"
            results.fresh_wrong_value += int(rows[0]["v"]) != new
            listener = daemon.listener()
            if listener["notifications"] != before + 1:
                results.counter_mismatches += 1
            elif listener.get("last_notification_at_ms") is not None:
                results.applied_ms.append(listener["last_notification_at_ms"] - wall_ack_ms)
            if (rep + 1) % 50 == 0:
                print(f"  {rep + 1}/{plan.inval_reps}: entry gone p50 "
                      f"{statistics.median(results.gone_ms):.2f} ms, max "
                      f"{max(results.gone_ms):.2f} ms so far", flush=True)
            time.sleep(rng.uniform(*PAUSE_MS) / 1000.0)
    finally:
        client.close()
        writer.close()
    results.load_end = os.getloadavg()[0]
    if not results.gone_ms:
        raise BenchError(f"invalidation: no UPDATE ever removed the cached result within "
                         f"{GIVE_UP_SECONDS:.0f} s ({results.timeouts} timeouts)")
    return results


def cache_it(client: QueryClient) -> int:
    """Reads until the answer is a HIT; returns the cached value."""
    for _ in range(100):
        rows, status, _ = client.query(SQL, [1])
        if status == "HIT":
            return int(rows[0]["v"])
    raise BenchError(f"{SQL}: 100 reads in a row answered MISS; the result is never cached")
