"""The cache part's tables (printed) and its Markdown report (bench/results/cache.md).

Every figure is computed from measurements of the same run; a method that could not run says why
instead of showing a number.
"""

from __future__ import annotations

import statistics
from dataclasses import dataclass, field
from typing import Dict, List, Optional

from voxbench.table import Table, durations_table

import hits as hits_method
import stale as stale_method
from hits import HitResults
from invalidation import (GIVE_UP_SECONDS, PAUSE_MS, SQL, UPDATE, InvalidationResults,
                          percentile)
from services import PGPOOL_SETTINGS_DOC

# Issue 4's targets.
TARGET_L1_SHARE = 0.5          # L1-hit throughput ≥ 50 % of the no-op route's
TARGET_INVALIDATION_P99_MS = 20.0
# The checker's bound when no invalidation delay was measured in the run (the delay target).
FALLBACK_BOUND_MS = TARGET_INVALIDATION_P99_MS
DASH = "—"


def pgpool_settings() -> str:
    return PGPOOL_SETTINGS_DOC


@dataclass
class CacheRun:
    """Everything the report needs; filled in by run.py as the run goes."""

    facts: Dict[str, str]
    knobs: Dict[str, str]
    server_settings: Dict[str, str]
    durations: Dict[str, float]
    methods: List[str]
    warnings: List[str] = field(default_factory=list)
    voxperf_note: str = ""
    daemon_note: str = ""
    daemon_env: Dict[str, Dict[str, str]] = field(default_factory=dict)
    pgpool_note: str = ""
    hits: Optional[HitResults] = None
    invalidation: Optional[InvalidationResults] = None
    bound_ms: float = 0.0
    bound_source: str = ""
    stale: List[stale_method.StaleResult] = field(default_factory=list)
    stale_skipped: Dict[str, str] = field(default_factory=dict)
    daemon_stats: Dict[str, dict] = field(default_factory=dict)


def verdict(ok: bool) -> str:
    return "meets" if ok else "MISSES"


def spread(values: List[float], fmt: str = "{:.2f}") -> str:
    return f"{fmt.format(min(values))}–{fmt.format(max(values))}"


# --- hits ---------------------------------------------------------------------------------------

def hits_table(h: HitResults) -> Table:
    table = Table(["row", "median req/s", "min–max req/s", "p50 ms", "p99 ms",
                   "CPU µs/req", "served from the row's level"])
    for row in hits_method.ORDER:
        samples = h.samples[row]
        if not samples:
            continue
        shares = [s.level_share for s in samples if s.level_share is not None]
        if shares:
            others = sum(s.other_level_hits for s in samples)
            level = f"{min(shares) * 100:.1f} % (min over rounds)"
            if others:
                level += f"; {others} hits at the other level"
        else:
            level = DASH
        cpu_who = "redis-server" if row == hits_method.REDIS else "daemon"
        table.add(hits_method.LABELS[row],
                  f"{h.median(row, 'rps'):,.0f}",
                  f"{min(s.rps for s in samples):,.0f}–{max(s.rps for s in samples):,.0f}",
                  f"{h.median(row, 'p50_ms'):.3f}",
                  f"{h.median(row, 'p99_ms'):.3f}",
                  f"{h.median(row, 'cpu_us_per_request'):.1f} ({cpu_who})",
                  level)
    return table


def ratio_rows(h: HitResults):
    """(label, per-round ratios of throughput, of p99 and of CPU per request, target or None)."""
    out = []
    for row, base, label, target in (
        (hits_method.L1, hits_method.NOOP, "L1 hit / no-op route", TARGET_L1_SHARE),
        (hits_method.L2, hits_method.NOOP, "L2 hit / no-op route", None),
        (hits_method.L2, hits_method.REDIS, "L2 hit / Redis GET (redis-benchmark)", None),
    ):
        if h.samples[row] and h.samples[base]:
            # CPU per request compares one process' work: the daemon's with itself; against
            # redis-server it would compare different processes, so it is left out.
            cpu = h.ratios(row, base, "cpu_us_per_request") if base == hits_method.NOOP else None
            out.append((label, h.ratios(row, base, "rps"), h.ratios(row, base, "p99_ms"), cpu,
                        target))
    return out


def ratios_table(h: HitResults) -> Table:
    table = Table(["comparison", "throughput ratio (median of rounds)", "min–max",
                   "p99 ratio (median)", "CPU/req ratio (median)", "target (throughput)"])
    for label, rps, p99, cpu, target in ratio_rows(h):
        median = statistics.median(rps)
        goal = DASH if target is None else (
            f"≥ {target:.2f}: {verdict(median >= target)}")
        table.add(label, f"{median:.3f}", spread(rps, "{:.3f}"),
                  f"{statistics.median(p99):.2f}",
                  DASH if cpu is None else f"{statistics.median(cpu):.2f}", goal)
    return table


def hits_rounds_table(h: HitResults) -> Table:
    rounds = len(h.round_loads)
    table = Table(["row"] + [f"round {i} req/s / p99 ms" for i in range(1, rounds + 1)])
    for row in hits_method.ORDER:
        table.add(hits_method.LABELS[row],
                  *[f"{s.rps:,.0f} / {s.p99_ms:.3f}" for s in h.samples[row]])
    table.add("load average (1 min) at round start", *[f"{x:.2f}" for x in h.round_loads])
    return table


# --- invalidation -------------------------------------------------------------------------------

def invalidation_table(inv: InvalidationResults) -> Table:
    table = Table(["measure (ms)", "n", "p50", "p99", "max"])

    def add(label: str, values: List[float], fmt: str = "{:.2f}") -> None:
        if values:
            table.add(label, str(len(values)), fmt.format(statistics.median(values)),
                      fmt.format(percentile(values, 0.99)), fmt.format(max(values)))
    add("commit ack → entry gone (GET entry answers 404; upper bound)", inv.gone_ms)
    add("commit ack → new value answered by POST /api/cache/query (upper bound)", inv.fresh_ms)
    add("commit ack → daemon applied the NOTIFY (its timestamp, 1 ms resolution)",
        inv.applied_ms, "{:.1f}")
    add("round trip of the GET that answered 404", inv.gone_poll_ms, "{:.3f}")
    add("round trip of the GETs still answering 200 after the ack", inv.present_poll_ms,
        "{:.3f}")
    add("round trip of the POST answering the new value (a MISS)", inv.fresh_poll_ms)
    add("  of which server time (X-Response-Time)", inv.fresh_poll_server_ms, "{:.3f}")
    add("UPDATE round trip (send → ack)", inv.commit_ms, "{:.3f}")
    return table


def invalidation_verdict(inv: InvalidationResults) -> str:
    p99 = percentile(inv.gone_ms, 0.99)
    return (f"commit → entry gone: p50 {statistics.median(inv.gone_ms):.2f} ms, p99 {p99:.2f} "
            f"ms, max {max(inv.gone_ms):.2f} ms (upper bounds; target p99 < "
            f"{TARGET_INVALIDATION_P99_MS:.0f} ms: {verdict(p99 < TARGET_INVALIDATION_P99_MS)})")


def invalidation_notes(inv: InvalidationResults) -> List[str]:
    polls = sum(inv.present_polls)
    return [
        f"{len(inv.gone_ms)} commits measured; {inv.timeouts} whose entry was still served "
        f"{GIVE_UP_SECONDS:.0f} s after the ack; {inv.counter_mismatches} where the listener's "
        "notification counter did not move by exactly one.",
        f"GETs that still found the entry after the ack: {polls} in total, in "
        f"{sum(1 for n in inv.present_polls if n)} of {len(inv.present_polls)} commits (at most "
        f"{max(inv.present_polls)} in one).",
        f"The POST after the entry was gone: {inv.fresh_not_miss} answers were not a MISS, "
        f"{inv.fresh_wrong_value} did not carry the committed value (both should be 0).",
        f"The query's cache key: `{inv.key}`.",
        f"Load average (1 min): {inv.load_start:.2f} at the start, {inv.load_end:.2f} at the end.",
    ]


# --- stale-read checker -------------------------------------------------------------------------

def stale_table(run: CacheRun) -> Table:
    table = Table(["target", "writes/s", "reads/s", "hit ratio", "read p50 / p99 ms",
                   "stale reads beyond bound", "stale reads (any age)", "oldest stale read ms",
                   "stale after quiescence", "target 0 / 0"])
    for r in run.stale:
        ratio = r.hit_ratio
        ok = r.stale_beyond == 0 and r.quiescent_stale == 0
        table.add(
            stale_method.LABELS[r.target],
            f"{r.writes / r.seconds:,.0f}",
            f"{r.reads / r.seconds:,.0f}",
            DASH if ratio is None else f"{ratio * 100:.1f} %",
            f"{statistics.median(r.read_ms):.2f} / {percentile(r.read_ms, 0.99):.2f}",
            f"{r.stale_beyond} of {r.reads}",
            f"{r.stale_any}",
            f"{r.max_stale_age_ms:.1f}" if r.stale_any else DASH,
            f"{r.quiescent_stale} of {r.quiescent_rows}",
            verdict(ok),
        )
    return table


def skipped_lines(run: CacheRun) -> List[str]:
    return [f"{stale_method.LABELS[t]}: not run ({why})" for t, why in run.stale_skipped.items()]


def lag_table(run: CacheRun) -> Optional[Table]:
    rows = [r for r in run.stale if r.lag_ms or r.lag_unapplied]
    if not rows:
        return None
    table = Table(["target", "commits", "p50 ms", "p99 ms", "max ms", "not seen applied"])
    for r in rows:
        if r.lag_ms:
            table.add(stale_method.LABELS[r.target], str(len(r.lag_ms) + r.lag_unapplied),
                      f"{statistics.median(r.lag_ms):.2f}", f"{percentile(r.lag_ms, 0.99):.2f}",
                      f"{max(r.lag_ms):.2f}", str(r.lag_unapplied))
        else:
            table.add(stale_method.LABELS[r.target], str(r.lag_unapplied), DASH, DASH, DASH,
                      str(r.lag_unapplied))
    return table


def stale_loads(run: CacheRun) -> str:
    return "; ".join(f"{r.target} {r.load_start:.2f} → {r.load_end:.2f}" for r in run.stale)


# --- output -------------------------------------------------------------------------------------

def text(run: CacheRun) -> str:
    out = [""]
    if run.hits is not None:
        out += [f"Cache-hit GETs (wrk, {run.knobs.get('BENCH_CACHE_CONNECTIONS')} connections, "
                f"median of {run.knobs.get('BENCH_CACHE_ROUNDS')} rounds):",
                hits_table(run.hits).text(),
                "load average (1 min) at each round's start: "
                + ", ".join(f"{x:.2f}" for x in run.hits.round_loads), "",
                ratios_table(run.hits).text(), ""]
    elif "hits" in run.methods:
        out += [f"Cache-hit GETs: not run ({run.daemon_note})", ""]
    if run.invalidation is not None:
        out += ["Invalidation delay (daemon A, low load):",
                invalidation_table(run.invalidation).text(),
                f"load average (1 min): {run.invalidation.load_start:.2f} at the start, "
                f"{run.invalidation.load_end:.2f} at the end", "",
                invalidation_verdict(run.invalidation), ""]
    elif "invalidation" in run.methods:
        out += [f"Invalidation delay: not run ({run.daemon_note})", ""]
    if run.stale or run.stale_skipped:
        out += [f"Stale-read checker (bound {run.bound_ms:.1f} ms: {run.bound_source}):",
                stale_table(run).text(), *skipped_lines(run),
                f"load average (1 min) start → end: {stale_loads(run)}", ""]
        lags = lag_table(run)
        if lags is not None:
            out += ["Commit acknowledged → notification applied by the daemon, during the "
                    "checker (upper bounds):", lags.text(), ""]
    out.append(durations_table(run.durations).text())
    for warning in run.warnings:
        out.append(f"warning: {warning}")
    return "\n".join(out)


HITS_METHOD = """\
Two daemons from the same binary share one PostgreSQL and one Redis: **A** with a 64 MiB L1
(`CACHE_L1_MAX_BYTES=64MiB`), **B** with `CACHE_L1_MAX_BYTES=0`, so that every hit on B is an L2
hit (a Redis `GET` of the entry and a Redis `HMGET` of its tag generations). One entry, a JSON
value of {value} bytes (`PUT /api/cache/entries/bench:hit`, stored in Redis as {l2} bytes under
`{key}`), is read with `GET /api/cache/entries/bench:hit`. Each round runs, in this order: the
no-op route `GET /healthz` on A (a constant answer through the same middleware stack: the
ceiling), L1 hits on A, L2 hits on B, and `redis-benchmark` `GET {key}` on the same Redis (the
raw-Redis anchor). Each run is preceded by a discarded {warmup} s warm-up; wrk runs
`{wrk}`; redis-benchmark runs `{redis}` (its warm-up measures its rate, and the measured run
is sized to last {seconds} s). The daemons' own hit counters are read around every measured run:
the last column is the share of requests the daemon counted as hits at the row's level (hits
counted by the daemon / requests completed by wrk; it can exceed 100 % by the requests still in
flight when wrk stopped). CPU µs/req is the serving process' user + system time (all threads,
from /proc) per request: the daemon's for the HTTP rows (for L2 hits, Redis' own work is not in
it), redis-server's for redis-benchmark. Ratios are taken within each round (rows measured
seconds apart) and their median over the rounds is reported. wrk, the daemons and Redis share
the machine's CPUs, so throughput is that of a 2-core machine that also runs its load generator;
the CPU-per-request ratio (daemon vs itself on the no-op route) is the figure least disturbed by
that and by other load."""

INVALIDATION_METHOD = """\
At low load — one writer, one poller, {pause_lo}–{pause_hi} ms pauses between repetitions —
repeated {reps} times on daemon A: the statement `{sql}` (params `[1]`) is read through `POST
/api/cache/query` until it answers HIT; a writer, straight to PostgreSQL, commits `{update}`
(autocommit; *ack* = when its answer arrives); the poller then asks back to back for the query's
cache entry itself, `GET /api/cache/entries/<key>` (the same freshness check a query hit runs,
without ever loading), until it answers 404: *entry gone* = arrival of that 404 − ack. Then one
`POST /api/cache/query` must answer MISS with the new value (*new value answered*). Both delays
are upper bounds: each includes its last request's round trip (in the table). The daemon's
listener status (`/api/performance/health`, `components.cache.details.listener`) also records
when it applied the notification (`last_notification_at_ms`, Unix ms): compared with the
wall-clock time of the ack it can read ≤ 0, since PostgreSQL delivers the NOTIFY at commit,
before the writer has read its answer."""

STALE_METHOD = """\
For each target a fresh table `bench_stale_<n> (id int PRIMARY KEY, version bigint)` with
{rows} rows at version 0 (one read per row through the target first). For {seconds} s, {writers}
writer processes, each on its own connection, commit `UPDATE … SET version = version + 1 WHERE
id = <random row> RETURNING version` (autocommit) at random moments, {interval} ms apart on
average (exponential gaps: a Poisson process per writer), and record the
version and the moment the commit was acknowledged; {readers} reader processes read the version
of a random row through the target back to back ({pause} ms pause) and record the moment each
read started. A read is **stale beyond the bound** when it returned a version older than the
newest version acknowledged more than **{bound:.1f} ms** ({bound_source}) before the read
started; the *any age* column counts reads older than the newest version acknowledged before
the read started, with no bound (the window every change-driven cache has: commit → NOTIFY →
applied). Then quiescence: the writers stop, the checker waits the bound and reads every row once
more through the target, comparing with the row's version in PostgreSQL. Readers use `POST
/api/cache/query` with `SELECT version FROM bench_stale_<n> WHERE id = $1` for voxperfd, and the
simple query protocol with the row number as a literal for pgpool (one cache entry per row).
Processes rather than threads, and CLOCK_MONOTONIC (system-wide) for every timestamp. pgpool's
hit ratio is the change of `SHOW POOL_CACHE` (num_cache_hits / num_selects) over the run;
voxperfd's is the share of answers that said HIT."""


LAG_METHOD = """\
**Invalidation delay under the checker's load (voxperfd).** While a voxperfd target runs, the
checker polls that daemon's count of applied tag invalidations (`GET /api/cache/stats`,
`counters.invalidations.tags`) every {every} ms. Each commit of the checker is one transaction
writing one watched table, so it sends exactly one NOTIFY and moves that counter by exactly one:
the k-th acknowledged commit counts as applied at the arrival of the first answer showing the
counter moved by k. Each figure is therefore an upper bound (by one poll interval and one round
trip), and the polling itself adds a little load to the daemon."""


def not_run(run: CacheRun, method: str) -> str:
    return run.daemon_note if method in run.methods else "BENCH_CACHE_METHODS leaves it out"


def markdown(run: CacheRun) -> str:
    facts = Table(["", ""], text_columns=2)
    for key, value in run.facts.items():
        facts.add(key, value)
    knobs = ", ".join(f"`{k}={v}`" for k, v in run.knobs.items())
    conf = ", ".join(f"`{k} = {v}`" for k, v in run.server_settings.items())
    out = [
        "# Cache: voxperfd's two-level cache against its anchors",
        "",
        "Written by `bench/run.sh cache` (`make bench`); rerun it rather than edit this file.",
        "Method and knobs: bench/README.md, part `cache`.",
        "",
        "## Machine",
        "",
        facts.markdown(),
        "",
        "## Settings",
        "",
        f"- Knobs: {knobs}",
        f"- PostgreSQL (throw-away cluster, `postgresql.conf`): {conf}; voxperf preloaded: "
        f"{run.voxperf_note or 'not installed'}",
        f"- voxperfd: {run.daemon_note}",
    ]
    for name, env in run.daemon_env.items():
        shown = " ".join(f"`{k}={v}`" for k, v in env.items())
        out.append(f"  - daemon {name}: {shown} (everything else at its default)")
    if run.pgpool_note:
        out.append(f"- pgpool-II: {run.pgpool_note}")
    out += ["", "## Cache-hit GET throughput and latency", ""]
    if run.hits is not None:
        h = run.hits
        out += [
            HITS_METHOD.format(value=h.value_bytes, l2=h.l2_entry_bytes, key=h.redis_key,
                               warmup=run.knobs.get("BENCH_CACHE_WARMUP"), wrk=h.wrk_command,
                               redis=h.redis_command, seconds=run.knobs.get("BENCH_CACHE_SECONDS")),
            "",
            hits_table(h).markdown(),
            "",
            ratios_table(h).markdown(),
            "",
            "Every round:",
            "",
            hits_rounds_table(h).markdown(),
        ]
    else:
        out.append(f"Not run: {not_run(run, 'hits')}")
    out += ["", "## Invalidation delay: commit → entry gone", ""]
    if run.invalidation is not None:
        inv = run.invalidation
        out += [
            INVALIDATION_METHOD.format(pause_lo=PAUSE_MS[0], pause_hi=PAUSE_MS[1],
                                       reps=run.knobs.get("BENCH_CACHE_INVAL_REPS"), sql=SQL,
                                       update=UPDATE),
            "",
            invalidation_table(inv).markdown(),
            "",
            f"**{invalidation_verdict(inv)}**",
            "",
        ] + [f"- {note}" for note in invalidation_notes(inv)]
    else:
        out.append(f"Not run: {not_run(run, 'invalidation')}")
    out += ["", "## Stale-read checker: voxperfd and pgpool-II side by side", ""]
    if run.stale or run.stale_skipped:
        out += [
            STALE_METHOD.format(rows=run.knobs.get("BENCH_CACHE_ROWS"),
                                seconds=run.knobs.get("BENCH_CACHE_STALE_SECONDS"),
                                writers=run.knobs.get("BENCH_CACHE_WRITERS"),
                                interval=run.knobs.get("BENCH_CACHE_WRITE_INTERVAL_MS"),
                                readers=run.knobs.get("BENCH_CACHE_READERS"),
                                pause=run.knobs.get("BENCH_CACHE_READ_PAUSE_MS"),
                                bound=run.bound_ms, bound_source=run.bound_source),
            "",
            stale_table(run).markdown(),
            "",
            *[f"- {line}" for line in skipped_lines(run)] + ([""] if run.stale_skipped else []),
            f"Load average (1 min) at the start → end of each target: {stale_loads(run)}.",
        ]
        lags = lag_table(run)
        if lags is not None:
            out += ["", LAG_METHOD.format(every=run.knobs.get("BENCH_CACHE_LAG_POLL_MS")), "",
                    lags.markdown()]
        details = [f"- {r.target}: " + "; ".join(r.quiescent_detail)
                   for r in run.stale if r.quiescent_detail]
        if details:
            out += ["", "Stale entries after quiescence:", ""] + details
        beyond = [r for r in run.stale if r.stale_beyond]
        if beyond:
            out += ["", "Reads stale beyond the bound: the oldest (how long the newer version "
                        "had been acknowledged when the read started), and how many started "
                        "before / after a *later* commit to the same table had been acknowledged "
                        "(after one: that commit did not clear the entry either):", ""]
            out += [f"- {r.target}: oldest {r.max_stale_age_beyond_ms:.1f} ms; "
                    f"{r.beyond_before_next_commit} before a later commit, "
                    f"{r.beyond_after_next_commit} after one" for r in beyond]
    else:
        out.append("Not run: BENCH_CACHE_METHODS leaves it out")
    if run.daemon_stats:
        out += ["", "## Daemon counters at the end", ""]
        table = Table(["daemon", "L1 hits", "L1 misses", "L2 hits", "L2 misses", "L2 stale",
                       "loads", "stores skipped", "tag invalidations", "epochs"])
        for name, stats in run.daemon_stats.items():
            c = stats["counters"]
            table.add(name, str(c["l1"]["hits"]), str(c["l1"]["misses"]), str(c["l2"]["hits"]),
                      str(c["l2"]["misses"]), str(c["l2"]["stale"]), str(c["loads"]),
                      str(c["stores_skipped"]), str(c["invalidations"]["tags"]),
                      str(c["invalidations"]["epochs"]))
        out.append(table.markdown())
    out += ["", "## Duration", "", durations_table(run.durations).markdown()]
    if run.warnings:
        out += ["", "## Warnings", ""] + [f"- {w}" for w in run.warnings]
    return "\n".join(out) + "\n"
