"""pgbench throughput, alternating the preloaded library round by round.

One cluster, one data set. Each round visits every row in turn (none -> pg_stat_statements ->
voxperf -> none -> ...): restart the server with that row's shared_preload_libraries, check
that the library is really mapped into the postmaster, load the tables into shared buffers
(pg_prewarm), then for each workload a warm-up run that is thrown away, the housekeeping pgbench
would do itself (vacuum the small tables, truncate the history), a CHECKPOINT so that no
checkpoint lands inside the measurement, and the measured run.

Alternating spreads the machine's slow minutes over all rows instead of one; on a shared
2-core machine rounds still differ by about ±10 % (far more while a neighbour compiles), hence
medians and spreads, not single runs. Each measured run also records the server's CPU time per
transaction (``voxbench.servercpu``), which a busy neighbour disturbs much less than TPS.
"""

from __future__ import annotations

import os
import re
import statistics
from dataclasses import dataclass, field
from pathlib import Path
from typing import Dict, List, Sequence, Tuple

from voxbench import servercpu
from voxbench.cluster import DATABASE, LOOPBACK, Cluster
from voxbench.commands import BenchError, run

from configs import Config


@dataclass(frozen=True)
class Workload:
    name: str
    args: Tuple[str, ...]


WORKLOADS = (
    Workload("select-only", ("-S",)),
    Workload("TPC-B-like", ()),
)

# The relations pg_prewarm loads after each restart: the whole pgbench data set and its indexes.
PREWARMED = ("pgbench_accounts", "pgbench_accounts_pkey", "pgbench_branches",
             "pgbench_branches_pkey", "pgbench_tellers", "pgbench_tellers_pkey")

_TPS = re.compile(r"^tps = ([0-9.]+) \(without initial connection time\)", re.MULTILINE)
_DONE = re.compile(r"^number of transactions actually processed: (\d+)", re.MULTILINE)
_FAILED = re.compile(r"^number of failed transactions: (\d+)", re.MULTILINE)
# A client backend's process title contains its client's address, e.g. "127.0.0.1(53210)".
_CLIENT_TITLE = f"{LOOPBACK}("


@dataclass
class Spread:
    """One figure over the rounds, in round order."""

    samples: List[float] = field(default_factory=list)

    @property
    def median(self) -> float:
        return statistics.median(self.samples)

    @property
    def low(self) -> float:
        return min(self.samples)

    @property
    def high(self) -> float:
        return max(self.samples)

    @property
    def spread_percent(self) -> float:
        """(max - min) / median: how far apart the rounds were."""
        return (self.high - self.low) / self.median * 100


@dataclass
class Measurement:
    """One row's rounds for one workload."""

    tps: Spread = field(default_factory=Spread)
    cpu_us_per_txn: Spread = field(default_factory=Spread)


def prepare(cluster: Cluster) -> None:
    """Creates pg_prewarm's function (once; it is the same catalog for every row)."""
    cluster.psql("CREATE EXTENSION IF NOT EXISTS pg_prewarm")


def check_loaded(cluster: Cluster, config: Config) -> None:
    """Raises unless the server runs with exactly this row's preload and its library mapped."""
    preload = cluster.psql("SHOW shared_preload_libraries")
    if preload != config.preload:
        raise BenchError(f"row '{config.label}': server reports shared_preload_libraries = "
                         f"'{preload}', expected '{config.preload}'")
    try:
        maps = Path(f"/proc/{cluster.postmaster_pid()}/maps").read_text()
    except OSError as err:
        raise BenchError(f"cannot read the postmaster's memory map: {err}") from err
    for library in ("pg_stat_statements", "voxperf"):
        mapped = f"/{library}.so" in maps
        if mapped != (library == config.library):
            state = "is" if mapped else "is not"
            raise BenchError(f"row '{config.label}': {library}.so {state} loaded in the server")


def pgbench(cluster: Cluster, workload: Workload, clients: int, seconds: int) -> Tuple[float, int]:
    """One pgbench run without its own vacuum (``-n``); its TPS and transaction count."""
    out = run(
        [cluster.install.program("pgbench"), *cluster.client_args(), *workload.args, "-n",
         "-c", str(clients), "-j", str(clients), "-T", str(seconds), DATABASE],
        cwd=cluster.workdir,
        what=f"pgbench {workload.name}",
        timeout=seconds * 3 + 60,
    )
    tps, done = _TPS.search(out), _DONE.search(out)
    if tps is None or done is None:
        raise BenchError(f"pgbench {workload.name}: no 'tps =' line in its output:\n{out}")
    failed = _FAILED.search(out)
    if failed is not None and int(failed.group(1)) != 0:
        raise BenchError(f"pgbench {workload.name}: {failed.group(1)} failed transactions")
    return float(tps.group(1)), int(done.group(1))


def measured_run(cluster: Cluster, workload: Workload, clients: int,
                 seconds: int) -> Tuple[float, float]:
    """Housekeeping, CHECKPOINT, then one measured run: (TPS, server CPU µs per transaction)."""
    # What pgbench does before a run unless -n, done here so it is not in the CPU figure.
    cluster.psql("VACUUM pgbench_branches, pgbench_tellers")
    cluster.psql("TRUNCATE pgbench_history")
    cluster.psql("CHECKPOINT")
    postmaster = cluster.postmaster_pid()
    servercpu.wait_for_no_clients(postmaster, _CLIENT_TITLE)
    cpu_before = servercpu.cpu_seconds(postmaster)
    tps, transactions = pgbench(cluster, workload, clients, seconds)
    servercpu.wait_for_no_clients(postmaster, _CLIENT_TITLE)
    cpu = servercpu.cpu_seconds(postmaster) - cpu_before
    return tps, cpu / max(transactions, 1) * 1e6


def measure(cluster: Cluster, configs: Sequence[Config], rounds: int, seconds: int,
            warmup: int, clients: int) -> Tuple[Dict[Tuple[str, str], Measurement], List[float]]:
    """All rounds: results keyed by (row key, workload name), and the machine's 1-minute load
    average as each round started (to tell a noisy round from a real difference)."""
    results = {(c.key, w.name): Measurement() for c in configs for w in WORKLOADS}
    loads: List[float] = []
    prepare(cluster)
    for round_no in range(1, rounds + 1):
        loads.append(os.getloadavg()[0])
        for config in configs:
            cluster.stop()
            cluster.start(config.settings())
            check_loaded(cluster, config)
            cluster.psql("SELECT " + ", ".join(f"pg_prewarm('{r}')" for r in PREWARMED))
            figures = []
            for workload in WORKLOADS:
                if warmup > 0:
                    pgbench(cluster, workload, clients, warmup)
                tps, cpu_us = measured_run(cluster, workload, clients, seconds)
                result = results[(config.key, workload.name)]
                result.tps.samples.append(tps)
                result.cpu_us_per_txn.samples.append(cpu_us)
                figures.append(f"{workload.name} {tps:>7,.0f} TPS {cpu_us:>6.1f} µs/txn")
            print(f"  round {round_no}/{rounds}  {config.label:<20} " + "   ".join(figures),
                  flush=True)
    cluster.stop()
    return results, loads
