"""The advisor part's tables, verdicts (printed) and its report (bench/results/advisor.md).

Every ratio is against the set with no extra index measured in the same run. The verdicts are
the issue's criteria; they are reported, never turned into the exit status.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Dict, List, Tuple

from voxbench.table import Table, durations_table

from indexsets import estimated_bytes
from measure import INSERT_SCRIPT, SetRun
from statements import ALL_KINDS, KindTime, unmatched

DASH = "—"
# A statement kind counts as slower under voxperf's set than under another set when its mean
# time is above the other's by more than this factor and by more than SLOWER_MIN_MS: between
# runs of the same set on a shared 2-core machine means move by several per cent.
SLOWER_FACTOR = 1.10
SLOWER_MIN_MS = 0.05


@dataclass
class AdvisorRun:
    """Everything the report needs; filled in by run.py as the run goes."""

    facts: Dict[str, str]
    knobs: Dict[str, str]
    server_settings: Dict[str, str]
    advise_settings: Dict[str, str]
    timed_settings: Dict[str, str]
    voxperf_note: str
    scale: int
    durations: Dict[str, float]
    row_counts: Dict[str, int] = field(default_factory=dict)
    table_sizes: str = ""
    advise_wall: float = 0.0
    qualstats_entries: int = 0
    qualstats_max: int = 0
    sets: List[SetRun] = field(default_factory=list)
    round_loads: List[float] = field(default_factory=list)
    insert_script: str = INSERT_SCRIPT
    warnings: List[str] = field(default_factory=list)

    def set_of(self, key: str) -> SetRun:
        for set_run in self.sets:
            if set_run.key == key:
                return set_run
        raise KeyError(key)


def mib(size_bytes: float) -> str:
    return f"{size_bytes / 2**20:,.1f} MiB"


def spread(values: List[float], unit_scale: float = 1.0) -> str:
    return f"{min(values) * unit_scale:,.1f}–{max(values) * unit_scale:,.1f}"


def summary_table(run: AdvisorRun) -> Table:
    """Per set: its indexes, the workload's time and speedup, the inserts' rate."""
    base = run.set_of("none")
    table = Table(["set", "indexes", "index size", "wall s", "wall min–max", "speedup (wall)",
                   "execution s", "execution min–max", "speedup (execution)",
                   "insert TPS", "insert TPS vs none"])
    for set_run in run.sets:
        is_base = set_run is base
        table.add(
            set_run.index_set.label,
            str(len(set_run.built.indexes)),
            mib(set_run.built.size_bytes) if set_run.built.indexes else "0",
            f"{set_run.median_wall:,.1f}",
            spread(set_run.wall_seconds),
            DASH if is_base else f"{base.median_wall / set_run.median_wall:.2f}×",
            f"{set_run.median_exec_ms / 1000:,.1f}",
            spread(set_run.exec_ms, 1 / 1000),
            DASH if is_base else f"{base.median_exec_ms / set_run.median_exec_ms:.2f}×",
            f"{set_run.median_insert_tps:,.0f}",
            DASH if is_base else f"{set_run.median_insert_tps / base.median_insert_tps:.3f}",
        )
    return table


def bytes_table(run: AdvisorRun) -> Table:
    """Per set: index bytes added on each demo table."""
    tables = sorted({index.table for s in run.sets for index in s.built.indexes})
    table = Table(["set"] + tables + ["total"])
    for set_run in run.sets:
        sizes = [sum(i.size_bytes for i in set_run.built.indexes if i.table == name)
                 for name in tables]
        table.add(set_run.index_set.label, *[mib(size) for size in sizes],
                  mib(set_run.built.size_bytes))
    return table


def inserts_table(run: AdvisorRun) -> Table:
    """Per set: insert rate over the rounds and the server's CPU time per insert."""
    base = run.set_of("none")
    table = Table(["set", "insert TPS", "TPS min–max", "TPS vs none", "server CPU µs/insert",
                   "CPU min–max", "CPU vs none"])
    for set_run in run.sets:
        is_base = set_run is base
        table.add(
            set_run.index_set.label,
            f"{set_run.median_insert_tps:,.0f}",
            f"{min(set_run.insert_tps):,.0f}–{max(set_run.insert_tps):,.0f}",
            DASH if is_base else f"{set_run.median_insert_tps / base.median_insert_tps:.3f}",
            f"{set_run.median_insert_cpu_us:.1f}",
            spread(set_run.insert_cpu_us),
            DASH if is_base else
            f"{set_run.median_insert_cpu_us / base.median_insert_cpu_us:.3f}",
        )
    return table


def kinds_table(run: AdvisorRun) -> Table:
    """Mean execution time per call of each statement kind, per set (over the timed runs)."""
    base = run.set_of("none")
    runs = len(base.exec_ms)
    base_total = sum(kind.total_ms for kind in base.kinds.values())
    headers = ["statement kind", "calls/run", "share of none's time"]
    headers += [f"{s.index_set.label} ms/call" for s in run.sets]
    table = Table(headers)
    for kind in ALL_KINDS:
        cells = [kind.label]
        base_kind = base.kinds.get(kind.key, KindTime())
        cells.append(f"{base_kind.calls / runs:,.0f}")
        cells.append(f"{base_kind.total_ms / base_total * 100:.1f} %" if base_total else DASH)
        for set_run in run.sets:
            entry = set_run.kinds.get(kind.key)
            cells.append(format_ms(entry.mean_ms) if entry and entry.calls else DASH)
        table.add(*cells)
    return table


def format_ms(value: float) -> str:
    if value >= 100:
        return f"{value:,.0f}"
    if value >= 1:
        return f"{value:.2f}"
    return f"{value:.3f}"


def slower_statements(run: AdvisorRun) -> List[str]:
    """Statement kinds whose mean time under voxperf's set exceeds another advised set's."""
    vox = run.set_of("voxperf")
    found = []
    for other_key in ("seed", "pg_qualstats"):
        other = run.set_of(other_key)
        for kind in ALL_KINDS:
            mine, theirs = vox.kinds.get(kind.key), other.kinds.get(kind.key)
            if not mine or not theirs or not mine.calls or not theirs.calls:
                continue
            if (mine.mean_ms > theirs.mean_ms * SLOWER_FACTOR
                    and mine.mean_ms - theirs.mean_ms > SLOWER_MIN_MS):
                calls_per_run = mine.calls / len(vox.exec_ms)
                extra_s = (mine.mean_ms - theirs.mean_ms) * calls_per_run / 1000
                found.append(
                    f"{kind.label}: voxperf {format_ms(mine.mean_ms)} ms/call vs "
                    f"{other.index_set.label} {format_ms(theirs.mean_ms)} ms/call "
                    f"(×{mine.mean_ms / theirs.mean_ms:.1f}; {calls_per_run:,.0f} calls/run, "
                    f"{extra_s:+.2f} s/run)")
    return found


def verdicts(run: AdvisorRun) -> List[Tuple[str, str, bool]]:
    """(criterion, figures, met) for each of the issue's criteria."""
    base, seed = run.set_of("none"), run.set_of("seed")
    quals, vox = run.set_of("pg_qualstats"), run.set_of("voxperf")
    out = []
    for metric, value in (("execution", lambda s: s.median_exec_ms),
                          ("wall", lambda s: s.median_wall)):
        vs_seed = (value(base) / value(vox), value(base) / value(seed))
        out.append((f"voxperf's speedup ≥ the seed's ({metric} time)",
                    f"{vs_seed[0]:.2f}× vs {vs_seed[1]:.2f}×", vs_seed[0] >= vs_seed[1]))
    out.append(("voxperf's index bytes ≤ the seed's",
                f"{mib(vox.built.size_bytes)} vs {mib(seed.built.size_bytes)}",
                vox.built.size_bytes <= seed.built.size_bytes))
    for metric, value in (("execution", lambda s: s.median_exec_ms),
                          ("wall", lambda s: s.median_wall)):
        vs_quals = (value(base) / value(vox), value(base) / value(quals))
        out.append((f"voxperf's speedup > pg_qualstats' ({metric} time)",
                    f"{vs_quals[0]:.2f}× vs {vs_quals[1]:.2f}×", vs_quals[0] > vs_quals[1]))
    second = next((s for s in run.sets if s.index_set.key == "voxperf2"), None)
    if second is not None:
        for metric, value in (("execution", lambda s: s.median_exec_ms),
                              ("wall", lambda s: s.median_wall)):
            vs_seed = (value(base) / value(second), value(base) / value(seed))
            out.append((f"voxperf's second round: speedup ≥ the seed's ({metric} time)",
                        f"{vs_seed[0]:.2f}× vs {vs_seed[1]:.2f}×", vs_seed[0] >= vs_seed[1]))
        out.append(("voxperf's second round: index bytes ≤ the seed's",
                    f"{mib(second.built.size_bytes)} vs {mib(seed.built.size_bytes)}",
                    second.built.size_bytes <= seed.built.size_bytes))
    return out


def verdict_lines(run: AdvisorRun) -> List[str]:
    return [f"{'met' if met else 'NOT MET'}: {criterion}: {figures}"
            for criterion, figures, met in verdicts(run)]


def indexes_table(set_run: SetRun) -> Table:
    table = Table(["index", "table", "definition", "size", "scans"], text_columns=3)
    for index in set_run.built.indexes:
        table.add(index.name, index.table, index.definition, mib(index.size_bytes),
                  DASH if index.scans is None else f"{index.scans:,}")
    return table


def rounds_table(run: AdvisorRun) -> Table:
    rounds = len(run.round_loads)
    table = Table(["set"] + [f"run {i}" for i in range(1, rounds + 1)])
    for set_run in run.sets:
        table.add(set_run.index_set.label,
                  *[f"{wall:,.1f} s / {exec_ms / 1000:,.1f} s"
                    for wall, exec_ms in zip(set_run.wall_seconds, set_run.exec_ms)])
    table.add("load average (1 min) at round start", *[f"{load:.2f}" for load in run.round_loads])
    return table


def insert_runs_table(run: AdvisorRun) -> Table:
    rounds = max(len(set_run.insert_tps) for set_run in run.sets)
    table = Table(["set"] + [f"round {i}" for i in range(1, rounds + 1)])
    for set_run in run.sets:
        table.add(set_run.index_set.label,
                  *[f"{tps:,.0f} TPS / {cpu:.1f} µs"
                    for tps, cpu in zip(set_run.insert_tps, set_run.insert_cpu_us)])
    return table


def coverage_warnings(run: AdvisorRun) -> List[str]:
    out = []
    missing = unmatched(run.set_of("none").kinds)
    if missing:
        out.append("statement kinds not found in voxperf.query_stats (sql/workload.sql changed? "
                   "update bench/advisor/statements.py): " + "; ".join(missing))
    if run.qualstats_max and run.qualstats_entries >= run.qualstats_max:
        out.append(f"pg_qualstats held {run.qualstats_entries} entries, its maximum "
                   f"(pg_qualstats.max = {run.qualstats_max}): it evicted predicates during the "
                   "advising run")
    return out


def text(run: AdvisorRun) -> str:
    """The summary printed at the end of the part."""
    runs = len(run.round_loads)
    out = ["", f"Workload and inserts per index set (scale {run.scale}; medians of {runs} "
               "timed runs; execution = voxperf.query_stats total_exec_time):",
           summary_table(run).text(), "",
           "Single-row inserts (pgbench; medians over the insert rounds):",
           inserts_table(run).text(), "",
           "Index bytes added, by table:", bytes_table(run).text(), "",
           "Mean execution time per call, by statement kind (all timed runs):",
           kinds_table(run).text(), "",
           f"pg_qualstats held {run.qualstats_entries} predicate entries after the advising run "
           f"(pg_qualstats.max = {run.qualstats_max}).", "", "Verdicts:"]
    out += ["  " + line for line in verdict_lines(run)]
    slower = slower_statements(run)
    out += ["", "Statement kinds slower under voxperf's set than under another set:"]
    out += ["  " + line for line in slower] if slower else ["  none"]
    out += ["", durations_table(run.durations).text()]
    for warning in run.warnings + coverage_warnings(run):
        out.append(f"warning: {warning}")
    return "\n".join(out)


METHOD = """\
One throw-away cluster (PostgreSQL 15 from Debian, `initdb` into a temporary directory, a free
loopback port). The demo's schema and data (`sql/schema.sql`, `sql/data.sql -v scale={scale}`)
are loaded once into a template database, vacuumed (`FREEZE, ANALYZE`) and checkpointed.

**Advising.** The server runs with `{advise}`. A copy of the template gets
`CREATE EXTENSION pg_qualstats`; both libraries' statistics are reset; `psql -f sql/workload.sql`
runs once there ({advise_wall:.1f} s), watched by both; then `voxperf.suggest_indexes()` and
`pg_qualstats_index_advisor()` are called there with their default arguments.

**Measuring.** The server is restarted with `{timed}` (voxperf's statistics give the execution
times; pg_qualstats is not loaded, so its sampling costs no set anything). Each set gets its own
`CREATE DATABASE … TEMPLATE` copy, so every set starts from the same data; its indexes are
created with plain `CREATE INDEX` (`CONCURRENTLY` stripped from the seed's and voxperf's DDL:
nothing else runs in the fresh database, and the index built is the same), then `VACUUM
ANALYZE`, then one `CHECKPOINT` for all. Index size = `pg_relation_size` of the indexes the set
added, right after creation. Then {warmup} warm-up run(s) of the workload per set (discarded) and
{runs} timed rounds; each round runs the workload once per set in a rotated order (round 1 none,
seed, pg_qualstats, voxperf; round 2 seed, pg_qualstats, voxperf, none; …), after
`voxperf.reset()`. *Wall* is `psql -f sql/workload.sql`'s elapsed time; *execution* is the sum of
`total_exec_time` of the top-level statements voxperf recorded in that database during the run
(server-side: no psql, no network). Speedup = the no-index set's median / the set's median.
The workload writes (200 inserts, a rating update, reservations released again), identically
in every set. Last, {insert_rounds} insert rounds (rotated the same way); per set and round:
`CHECKPOINT`, then `pgbench -n -c {clients} -j {clients} -T {seconds}` with the single-row insert
below (a random existing number; the workload's INSERT with varying values); its TPS and the
server's
CPU time per insert are reported with their ratios to the no-index set."""


def markdown(run: AdvisorRun) -> str:
    """The report written to bench/results/advisor.md."""
    facts = Table(["", ""], text_columns=2)
    for key, value in run.facts.items():
        facts.add(key, value)
    knobs = ", ".join(f"`{k}={v}`" for k, v in run.knobs.items())
    conf = ", ".join(f"`{k} = {v}`" for k, v in run.server_settings.items())
    counts = ", ".join(f"{count:,} {table}" for table, count in run.row_counts.items())

    def settings(values: Dict[str, str]) -> str:
        return ", ".join(f"{k} = '{v}'" for k, v in values.items())

    out = [
        "# Advisor: voxperf's index advice against the hand-written set and pg_qualstats",
        "",
        "Written by `bench/run.sh advisor` (`make bench`); rerun it rather than edit this file.",
        "",
        "## Machine",
        "",
        facts.markdown(),
        "",
        "## Settings",
        "",
        f"- Knobs: {knobs}",
        f"- Data: scale {run.scale}: {counts} (heap sizes: {run.table_sizes})",
        f"- postgresql.conf: {conf}",
        f"- voxperf: {run.voxperf_note}",
        "",
        "## Method",
        "",
        METHOD.format(scale=run.scale, advise=settings(run.advise_settings),
                      advise_wall=run.advise_wall, timed=settings(run.timed_settings),
                      warmup=run.knobs.get("VOXPERF_BENCH_ADVISOR_WARMUP", "?"),
                      runs=run.knobs.get("VOXPERF_BENCH_ADVISOR_RUNS", "?"),
                      clients=run.knobs.get("VOXPERF_BENCH_ADVISOR_INSERT_CLIENTS", "?"),
                      insert_rounds=run.knobs.get("VOXPERF_BENCH_ADVISOR_INSERT_ROUNDS", "?"),
                      seconds=run.knobs.get("VOXPERF_BENCH_ADVISOR_INSERT_SECONDS", "?")),
        "",
        "```",
        run.insert_script.rstrip(),
        "```",
        "",
        "## Results",
        "",
        summary_table(run).markdown(),
        "",
        "### Verdicts",
        "",
    ]
    out += [f"- **{'met' if met else 'NOT MET'}**: {criterion}: {figures}"
            for criterion, figures, met in verdicts(run)]
    out += ["", "### Index bytes by table", "", bytes_table(run).markdown(),
            "", "### Inserts", "",
            "Medians over the insert rounds; server CPU = user + system time of the postmaster "
            "and all its children per insert (from /proc), less disturbed by other load than "
            "TPS.", "", inserts_table(run).markdown(), "",
            "### Per statement kind", "",
            "Mean execution time per call (ms) over all timed runs; *share* is the kind's part of "
            "the no-index set's execution time. *Script* is the workload file's own statements "
            "(the `SELECT format(...)` generators that `\\gexec` runs, the temporary table).",
            "", kinds_table(run).markdown(), "",
            f"Kinds slower under voxperf's set than under another set (by more than "
            f"{(SLOWER_FACTOR - 1) * 100:.0f} % and {SLOWER_MIN_MS} ms per call):", ""]
    slower = slower_statements(run)
    out += [f"- {line}" for line in slower] if slower else ["- none"]
    out += ["", "### Every run", "", "Wall / execution time of each timed run:", "",
            rounds_table(run).markdown(), "", "Each insert run (TPS / server CPU per insert):",
            "", insert_runs_table(run).markdown(), "", "## The index sets", ""]
    for set_run in run.sets:
        out += index_set_section(set_run, run)
    out += ["## Duration", "", durations_table(run.durations).markdown()]
    warnings = run.warnings + coverage_warnings(run)
    if warnings:
        out += ["", "## Warnings", ""] + [f"- {w}" for w in warnings]
    return "\n".join(out) + "\n"


def index_set_section(set_run: SetRun, run: AdvisorRun) -> List[str]:
    index_set = set_run.index_set
    out = [f"### {index_set.label}", "", f"Source: {index_set.source}.", ""]
    if index_set.key == "pg_qualstats":
        out += [f"pg_qualstats held {run.qualstats_entries} predicate entries after the advising "
                f"run (pg_qualstats.max = {run.qualstats_max}). Returned, verbatim:", "",
                "```json", index_set.verbatim, "```", ""]
    elif index_set.key in ("voxperf", "voxperf2"):
        out += ["Returned, verbatim (every column of every row):", "", "```",
                index_set.verbatim, "```", "",
                f"Estimated size of the set (sum of `estimated_size_bytes`): "
                f"{mib(estimated_bytes(index_set))}; built: {mib(set_run.built.size_bytes)}.", ""]
    elif index_set.verbatim:
        out += ["```sql", index_set.verbatim, "```", ""]
    for notice in index_set.notices:
        out += [f"Server message while advising: `{notice}`", ""]
    if index_set.statements:
        out += ["Created as:", "", "```sql"] + [s + ";" for s in index_set.statements]
        out += ["```", "", f"Built in {set_run.built.seconds:.1f} s; scans are over the set's "
                "warm-up and timed runs:", "", indexes_table(set_run).markdown(), ""]
    else:
        out += ["No index created.", ""]
    return out
