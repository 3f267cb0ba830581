"""The overhead part's tables (printed) and its Markdown report (bench/results/overhead.md).

Every figure here is computed from measurements of the same run; a row that could not be
measured says why instead of showing a number.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Dict, List, Optional, Sequence, Tuple

from voxbench.table import Table, durations_table

from configs import JUMBLING, NONE, PGSS, VOXPERF, Availability, Config
from instructions import InstructionResult
from tps import WORKLOADS, Measurement

# Issue 2's acceptance target: voxperf's own cost above the core's jumbling at most half of
# pg_stat_statements' own cost above jumbling.
TARGET_SHARE_RATIO = 0.5
DASH = "—"
# What a row shows instead of figures when its library could not be installed (the reason is
# under "Settings" in the report).
NOT_INSTALLED = "not installed"


@dataclass
class OverheadRun:
    """Everything the report needs; filled in by run.py as the run goes."""

    facts: Dict[str, str]
    knobs: Dict[str, str]
    server_settings: Dict[str, str]
    availability: Dict[str, Availability]
    instruction_rows: Sequence[Config]
    tps_rows: Sequence[Config]
    statements: int
    instruction_scale: int
    layouts: int
    tps_scale: int
    instructions: Optional[Dict[str, InstructionResult]] = None
    instructions_skipped: str = ""
    tps: Optional[Dict[Tuple[str, str], Measurement]] = None
    tps_skipped: str = ""
    round_loads: List[float] = field(default_factory=list)
    durations: Dict[str, float] = field(default_factory=dict)
    warnings: List[str] = field(default_factory=list)


def count(value: float) -> str:
    return f"{value:,.0f}"


def signed_count(value: float) -> str:
    return f"{value:+,.0f}"


def percent(value: float, base: float) -> str:
    return f"{value / base * 100:+.2f} %"


def instruction_table(run: OverheadRun) -> Table:
    table = Table(["row", "instr/stmt", "layouts (min–max)", "Δ vs none", "Δ %", "above jumbling",
                   "above jumbling %", "in library code", "in JumbleQuery"])
    results = run.instructions or {}
    base = results[NONE.key].per_statement
    floor = results[JUMBLING.key].per_statement
    for config in run.instruction_rows:
        result = results.get(config.key)
        if result is None:
            table.add(config.label, NOT_INSTALLED, *[DASH] * 7)
            continue
        value = result.per_statement
        is_base = config.key == NONE.key
        above = config.library is not None
        table.add(
            config.label,
            count(value),
            f"{count(min(result.per_layout))}–{count(max(result.per_layout))}",
            DASH if is_base else signed_count(value - base),
            DASH if is_base else percent(value - base, base),
            signed_count(value - floor) if above else DASH,
            percent(value - floor, base) if above else DASH,
            count(result.library_per_statement) if config.library else DASH,
            count(result.jumbling_per_statement),
        )
    return table


def share_ratio(run: OverheadRun) -> str:
    """voxperf's share above jumbling as a fraction of pg_stat_statements' share."""
    results = run.instructions or {}
    if VOXPERF.key not in results:
        return (f"voxperf share / pg_stat_statements share above jumbling: not measured "
                f"({run.availability[VOXPERF.key].note})")
    floor = results[JUMBLING.key].per_statement
    pgss_share = results[PGSS.key].per_statement - floor
    vox_share = results[VOXPERF.key].per_statement - floor
    if pgss_share <= 0:
        return ("voxperf share / pg_stat_statements share above jumbling: undefined "
                f"(pg_stat_statements measured {pgss_share:+,.0f} instructions above jumbling)")
    ratio = vox_share / pgss_share
    verdict = "meets" if ratio <= TARGET_SHARE_RATIO else "MISSES"
    return (f"voxperf share / pg_stat_statements share above jumbling: "
            f"{vox_share:,.0f} / {pgss_share:,.0f} = {ratio:.2f} "
            f"({verdict} the target ≤ {TARGET_SHARE_RATIO})")


def tps_table(run: OverheadRun) -> Table:
    table = Table(["row", "workload", "median TPS", "min–max TPS", "TPS spread", "TPS vs none",
                   "CPU µs/txn", "CPU spread", "CPU vs none"], text_columns=2)
    results = run.tps or {}
    for workload in WORKLOADS:
        base = results[(NONE.key, workload.name)]
        for config in run.tps_rows:
            measured = results.get((config.key, workload.name))
            if measured is None:
                table.add(config.label, workload.name, NOT_INSTALLED, *[DASH] * 6)
                continue
            tps, cpu = measured.tps, measured.cpu_us_per_txn
            is_base = config.key == NONE.key
            table.add(
                config.label,
                workload.name,
                count(tps.median),
                f"{count(tps.low)}–{count(tps.high)}",
                f"{tps.spread_percent:.1f} %",
                DASH if is_base else f"{tps.median / base.tps.median:.3f}",
                f"{cpu.median:.1f}",
                f"{cpu.spread_percent:.1f} %",
                DASH if is_base else f"{cpu.median / base.cpu_us_per_txn.median:.3f}",
            )
    return table


def rounds_table(run: OverheadRun) -> Table:
    results = run.tps or {}
    rounds = max((len(m.tps.samples) for m in results.values()), default=0)
    table = Table(["workload", "row"] + [f"round {i}" for i in range(1, rounds + 1)],
                  text_columns=2)
    for workload in WORKLOADS:
        for config in run.tps_rows:
            measured = results.get((config.key, workload.name))
            if measured is not None:
                cells = [f"{count(tps)} / {cpu:.1f}" for tps, cpu in
                         zip(measured.tps.samples, measured.cpu_us_per_txn.samples)]
                table.add(workload.name, config.label, *cells)
    if run.round_loads:
        table.add("load average (1 min)", "at round start",
                  *[f"{load:.2f}" for load in run.round_loads])
    return table


def text(run: OverheadRun) -> str:
    """The summary printed at the end of the part."""
    out = ["", "Instructions per statement (callgrind, point select):"]
    if run.instructions is not None:
        out += [instruction_table(run).text(), "", share_ratio(run)]
    else:
        out.append(f"  not run: {run.instructions_skipped}")
    out += ["", f"pgbench (median of {run.knobs.get('BENCH_ROUNDS', '?')} rounds; CPU = server "
                "CPU time per transaction):"]
    if run.tps is not None:
        out.append(tps_table(run).text())
    else:
        out.append(f"  not run: {run.tps_skipped}")
    out += ["", durations_table(run.durations).text()]
    for warning in run.warnings:
        out.append(f"warning: {warning}")
    return "\n".join(out)


INSTRUCTIONS_METHOD = """\
Each row opens a fresh copy of the same data directory (pgbench tables at scale {scale},
vacuumed, frozen and checkpointed) with a single-user backend, `postgres --single`, under
`valgrind --tool=callgrind`, and feeds it {statements} pgbench-style point selects
(`SELECT abalance FROM pgbench_accounts WHERE aid = <k>`, keys drawn with a fixed seed, the same
for every row) on standard input; then again with only the first statement. Instructions per
statement = (instructions of the long run − instructions of the one-statement run) / {gap}, so
start-up and shutdown cancel out. Instruction counts do not depend on the machine's load, but
they do depend on the memory layout (libc's vectorized strcmp/memcmp take different paths for
different alignments, and anything a library allocates at start shifts the layout): each row is
run under {layouts} layouts (an `application_name` of a different length each time) and the table
gives the median, with the range over the layouts.
*Δ* is the cost above no library; *above jumbling* is the cost above `compute_query_id = on` alone
(the core's query jumbling, which every statistics library pays), in instructions and as a
percentage of the no-library cost. *In library code* counts instructions executed inside the
library's own `.so` (its calls into the core are not included); *in JumbleQuery* counts the core's
query-id computation, and checks that each row runs as it claims."""

TPS_METHOD = """\
One cluster with pgbench tables at scale {scale}. Each round visits the rows in turn
({order}), restarting the server with that row's `shared_preload_libraries` (and checking that
the library is mapped into the postmaster) and loading the tables into shared buffers with
`pg_prewarm`; then, for each workload, a {warmup} s warm-up that is discarded, pgbench's own
housekeeping (vacuum of the small tables, `TRUNCATE pgbench_history`), a `CHECKPOINT`, and a
measured `pgbench -n -c {clients} -j {clients} -T {seconds}` (select-only: `-S`; TPC-B-like: the
default script; simple query protocol). {rounds} rounds.
Reported per row: the median TPS, the lowest and highest round, the spread (max − min) / median,
and the ratio of the row's median to the no-library median; and the server's CPU time (user +
system of the postmaster and all its children, from /proc) per transaction, whose median is far
less disturbed by other load on the machine than TPS (a ratio above 1 means more CPU per
transaction). On a shared 2-core machine TPS rounds differ by about ±10 %, so TPS differences
smaller than the spread are noise; the instruction counts above are the precise figure."""


def markdown(run: OverheadRun) -> str:
    """The report written to bench/results/overhead.md."""
    facts = Table(["", ""], text_columns=2)
    for key, value in run.facts.items():
        facts.add(key, value)
    knobs = ", ".join(f"`{k}={v}`" for k, v in run.knobs.items())
    conf = ", ".join(f"`{k} = {v}`" for k, v in run.server_settings.items())
    rows = "\n".join(f"  - {c.label}: `{c.describe()}`" for c in run.instruction_rows)
    builds = "\n".join(f"  - {c.label}: {run.availability[c.key].note}"
                       for c in run.instruction_rows if c.library)
    out = [
        "# Overhead: what voxperf costs per statement",
        "",
        "Written by `bench/run.sh overhead` (`make bench`); rerun it rather than edit this file.",
        "",
        "## Machine",
        "",
        facts.markdown(),
        "",
        "## Settings",
        "",
        f"- Knobs: {knobs}",
        f"- postgresql.conf, the same for every row: {conf}",
        "- Rows differ only by these command-line settings:",
        rows,
        "- Libraries:",
        builds,
        "",
        "## Instructions per statement (callgrind)",
        "",
    ]
    if run.instructions is not None:
        out += [
            INSTRUCTIONS_METHOD.format(scale=run.instruction_scale, statements=run.statements,
                                       gap=run.statements - 1, layouts=run.layouts),
            "",
            instruction_table(run).markdown(),
            "",
            f"**{share_ratio(run)}**",
        ]
    else:
        out.append(f"Not run: {run.instructions_skipped}")
    out += ["", "## pgbench TPS", ""]
    if run.tps is not None:
        order = " → ".join(c.label for c in run.tps_rows) + " → …"
        out += [
            TPS_METHOD.format(scale=run.tps_scale, order=order, warmup=run.knobs["BENCH_WARMUP"],
                              clients=run.knobs["BENCH_CLIENTS"],
                              seconds=run.knobs["BENCH_SECONDS"],
                              rounds=run.knobs["BENCH_ROUNDS"]),
            "",
            tps_table(run).markdown(),
            "",
            "Every round (TPS / server CPU µs per transaction):",
            "",
            rounds_table(run).markdown(),
        ]
    else:
        out.append(f"Not run: {run.tps_skipped}")
    out += ["", "## Duration", "", durations_table(run.durations).markdown()]
    if run.warnings:
        out += ["", "## Warnings", ""] + [f"- {w}" for w in run.warnings]
    return "\n".join(out) + "\n"
