"""Method (a): cache-hit GET throughput and latency, against the no-op route and raw Redis.

Rows, each measured with the same client settings in every round, in this order:

- ``/healthz`` on daemon A: a constant answer through the daemon's whole middleware stack — the
  ceiling any route of this server can reach on this machine;
- L1 hit: ``GET /api/cache/entries/<key>`` on daemon A (L1 64 MiB), the entry resident in L1;
- L2 hit: the same GET on daemon B, whose L1 holds 0 bytes (``CACHE_L1_MAX_BYTES=0``), so every
  hit is a Redis ``GET`` of the entry plus a Redis ``HMGET`` of its generations;
- Redis ``GET``: ``redis-benchmark`` reading that very entry's Redis key on the same Redis, with
  the same number of connections — the raw-Redis anchor for L2 hits.

Every run is preceded by a discarded warm-up. For the cache rows the daemon's own counters
(``/api/cache/stats``) are read before and after each measured run: the share of requests served
from the level the row claims is reported, so a row cannot silently measure something else
(e.g. L1 hits on the L1-less daemon). CPU time per request of the serving process (the daemon,
or redis-server) comes from /proc.
"""

from __future__ import annotations

import http.client
import json
import os
import re
import statistics
from dataclasses import dataclass, field
from typing import Dict, List, Optional

from voxbench.commands import BenchError, run

from services import Daemon, Redis, cpu_seconds

KEY = "bench:hit"
NOOP, L1, L2, REDIS = "noop", "l1", "l2", "redis"
LABELS = {
    NOOP: "no-op route (/healthz), daemon A",
    L1: "L1 hit (GET /api/cache/entries), daemon A",
    L2: "L2 hit (same GET), daemon B (L1 0 bytes)",
    REDIS: "Redis GET of the entry's key (redis-benchmark)",
}
ORDER = (NOOP, L1, L2, REDIS)
# redis-benchmark runs a fixed number of requests, not a duration: a first short run measures
# its rate, each warm-up re-measures it, and the measured run is sized to last BENCH_CACHE_SECONDS.
REDIS_CALIBRATION_REQUESTS = 20000

_UNITS = {"us": 0.001, "ms": 1.0, "s": 1000.0, "m": 60000.0}


@dataclass
class Sample:
    """One measured run."""

    rps: float
    p50_ms: float
    p99_ms: float
    requests: int
    cpu_us_per_request: float
    # Share of the requests the daemon counted as hits at the row's level (None: not a cache row).
    level_share: Optional[float] = None
    other_level_hits: int = 0


@dataclass
class HitResults:
    samples: Dict[str, List[Sample]] = field(default_factory=dict)
    round_loads: List[float] = field(default_factory=list)
    value_bytes: int = 0
    l2_entry_bytes: int = 0
    redis_key: str = ""
    wrk_command: str = ""
    redis_command: str = ""

    def median(self, row: str, attr: str) -> float:
        return statistics.median(getattr(s, attr) for s in self.samples[row])

    def ratios(self, row: str, base: str, attr: str) -> List[float]:
        """Per-round ratio row / base of ``attr`` (the two were measured minutes apart)."""
        return [getattr(a, attr) / getattr(b, attr)
                for a, b in zip(self.samples[row], self.samples[base])]


def ms(value: str) -> float:
    match = re.fullmatch(r"([0-9.]+)(us|ms|s|m)", value.strip())
    if not match:
        raise BenchError(f"wrk: cannot read the latency {value!r}")
    return float(match.group(1)) * _UNITS[match.group(2)]


def parse_wrk(output: str) -> Dict[str, float]:
    found: Dict[str, float] = {}
    for line in output.splitlines():
        words = line.split()
        if len(words) == 2 and words[0] in ("50%", "99%"):
            found["p" + words[0][:-1]] = ms(words[1])
        elif line.startswith("Requests/sec:"):
            found["rps"] = float(words[1])
        elif re.match(r"\s*\d+ requests in ", line):
            found["requests"] = float(words[0])
        elif "Non-2xx or 3xx responses" in line:
            found["non2xx"] = float(words[-1])
        elif line.strip().startswith("Socket errors:"):
            found["socket_errors"] = float(sum(int(n) for n in re.findall(r"\d+", line)))
    missing = {"rps", "requests", "p50", "p99"} - found.keys()
    if missing:
        raise BenchError(f"wrk: no {', '.join(sorted(missing))} in its output:\n{output}")
    return found


def wrk_argv(plan, url: str, seconds: int):
    return [plan.wrk, "-t", str(plan.wrk_threads), "-c", str(plan.connections), "-d",
            f"{seconds}s", "--latency", "--timeout", "5s", url]


def run_wrk(plan, url: str, seconds: int) -> Dict[str, float]:
    out = run(wrk_argv(plan, url, seconds), what=f"wrk {url}", timeout=seconds + 60)
    figures = parse_wrk(out)
    if figures.get("non2xx") or figures.get("socket_errors"):
        raise BenchError(f"wrk {url}: {figures.get('non2xx', 0):.0f} non-2xx answers, "
                         f"{figures.get('socket_errors', 0):.0f} socket errors:\n{out}")
    return figures


def redis_argv(plan, redis: Redis, key: str, requests: int):
    return [plan.redis_benchmark, "-h", "127.0.0.1", "-p", str(redis.port), "-c",
            str(plan.connections), "-n", str(requests), "--csv", "GET", key]


def run_redis_benchmark(plan, redis: Redis, key: str, requests: int) -> Dict[str, float]:
    out = run(redis_argv(plan, redis, key, requests), what="redis-benchmark GET", timeout=600)
    lines = [line for line in out.splitlines() if line.startswith('"GET')]
    if not lines:
        raise BenchError(f"redis-benchmark: no GET result in its output:\n{out}")
    cells = [c.strip('"') for c in lines[-1].split('","')]
    # "test","rps","avg_latency_ms","min_latency_ms","p50_latency_ms","p95_latency_ms",
    # "p99_latency_ms","max_latency_ms"
    if len(cells) < 7:
        raise BenchError(f"redis-benchmark: unexpected CSV line {lines[-1]!r} (Redis 7 or later "
                         "prints percentiles)")
    return {"rps": float(cells[1]), "p50": float(cells[4]), "p99": float(cells[6]),
            "requests": float(requests)}


def hits_at(daemon: Daemon) -> Dict[str, int]:
    counters = daemon.stats()["counters"]
    return {"l1": int(counters["l1"]["hits"]), "l2": int(counters["l2"]["hits"])}


def put_value(daemon: Daemon, key: str, value_bytes: int) -> None:
    """Stores a JSON value serialised to exactly ``value_bytes`` bytes under ``key``."""
    filler = max(0, value_bytes - len('{"data":""}'))
    value = {"data": "x" * filler}
    body = json.dumps({"value": value, "ttl": 86400}).encode()
    conn = http.client.HTTPConnection("127.0.0.1", daemon.port, timeout=10)
    try:
        conn.request("PUT", f"/api/cache/entries/{key}", body,
                     {"content-type": "application/json"})
        response = conn.getresponse()
        text = response.read()
    finally:
        conn.close()
    if response.status != 204:
        raise BenchError(f"PUT /api/cache/entries/{key} answered {response.status}: {text[:300]!r}")


def measure(plan, daemon_a: Daemon, daemon_b: Daemon, redis: Redis) -> HitResults:
    results = HitResults(samples={row: [] for row in ORDER}, value_bytes=plan.value_bytes)
    put_value(daemon_a, KEY, plan.value_bytes)
    prefix = daemon_a.env.get("REDIS_KEY_PREFIX", "voxperf:")
    results.redis_key = f"{prefix}e:{KEY}"
    if redis.integer("EXISTS", results.redis_key) != 1:
        raise BenchError(f"the entry's Redis key {results.redis_key} does not exist after the PUT: "
                         "the daemon's key layout changed (see daemon/src/cache/l2.rs)")
    results.l2_entry_bytes = redis.integer("STRLEN", results.redis_key)
    urls = {
        NOOP: (daemon_a, f"{daemon_a.base}/healthz"),
        L1: (daemon_a, f"{daemon_a.base}/api/cache/entries/{KEY}"),
        L2: (daemon_b, f"{daemon_b.base}/api/cache/entries/{KEY}"),
    }
    results.wrk_command = " ".join(["wrk"] + wrk_argv(plan, "<url>", plan.seconds)[1:])
    results.redis_command = " ".join(["redis-benchmark"] + redis_argv(
        plan, redis, results.redis_key, 0)[1:]).replace("-n 0", "-n <rate × seconds>")
    redis_rate = run_redis_benchmark(plan, redis, results.redis_key,
                                     REDIS_CALIBRATION_REQUESTS)["rps"]
    for round_no in range(1, plan.rounds + 1):
        load = os.getloadavg()[0]
        results.round_loads.append(load)
        print(f"  round {round_no}/{plan.rounds} (load average {load:.2f})", flush=True)
        for row in ORDER:
            if row == REDIS:
                if plan.warmup:
                    warm = run_redis_benchmark(plan, redis, results.redis_key,
                                               max(1000, int(redis_rate * plan.warmup)))
                    redis_rate = warm["rps"]
                requests = max(1000, int(redis_rate * plan.seconds))
                before = cpu_seconds(redis.process.pid)
                figures = run_redis_benchmark(plan, redis, results.redis_key, requests)
                cpu = cpu_seconds(redis.process.pid) - before
                redis_rate = figures["rps"]
                sample = Sample(figures["rps"], figures["p50"], figures["p99"], requests,
                                cpu / requests * 1e6)
            else:
                daemon, url = urls[row]
                if plan.warmup:
                    run_wrk(plan, url, plan.warmup)
                counters = hits_at(daemon) if row != NOOP else None
                before = cpu_seconds(daemon.process.pid)
                figures = run_wrk(plan, url, plan.seconds)
                cpu = cpu_seconds(daemon.process.pid) - before
                requests = int(figures["requests"])
                sample = Sample(figures["rps"], figures["p50"], figures["p99"], requests,
                                cpu / requests * 1e6)
                if counters is not None:
                    after = hits_at(daemon)
                    level, other = ("l1", "l2") if row == L1 else ("l2", "l1")
                    sample.level_share = (after[level] - counters[level]) / requests
                    sample.other_level_hits = after[other] - counters[other]
            results.samples[row].append(sample)
            share = "" if sample.level_share is None else \
                f", {sample.level_share * 100:.1f} % served from {row.upper()}"
            print(f"    {LABELS[row]}: {sample.rps:,.0f} req/s, p50 {sample.p50_ms:.3f} ms, "
                  f"p99 {sample.p99_ms:.3f} ms, {sample.cpu_us_per_request:.1f} µs CPU/req{share}",
                  flush=True)
    return results
