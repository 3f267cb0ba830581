"""Instructions per statement, counted by callgrind on a single-user backend.

Method: for each row, a fresh copy of the same data directory is opened by ``postgres --single``
under ``valgrind --tool=callgrind`` and fed point selects on standard input, once with ``count``
statements and once with only the first of them. Start-up and shutdown cost the same in both
runs, so ``(total(count) - total(1)) / (count - 1)`` is what one statement costs. Instruction
counts do not depend on the machine's load: two runs of a row differ by a few dozen instructions
out of hundreds of millions (clock reads and the like), far below one statement's cost.

Memory layout: the same work costs a different number of instructions depending on where the
heap puts things (libc's vectorized strcmp and memcmp take different paths for different
alignments; the core compares column names with strcmp while parsing every statement). Any
change in what a library allocates at start, even an unrelated setting's value, shifts that
layout and moves the per-statement count by up to about a hundred instructions, which is a good
part of what is being measured. So each row is profiled under several layouts, made by giving
``application_name`` values of different lengths (allocated before anything per statement),
and its figures are the medians over them; the report gives the spread.

The profile also says how many of those instructions ran in the preloaded library's own code
(the rest of its cost is in core functions it calls: locks, memory contexts, the clock), and how
many in ``JumbleQuery`` (the core's query-id computation), which checks that each row really
runs the way it claims: no jumbling without a library, jumbling with one.
"""

from __future__ import annotations

import random
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Dict, List, Optional, Tuple

from voxbench.cluster import Cluster
from voxbench.commands import BenchError, run, tail

from configs import Config

# Any fixed seed: the literals only need to vary and to be the same for every row.
STATEMENT_SEED = 15
# The function the core calls to compute a query id (src/backend/utils/misc/queryjumble.c in 15).
JUMBLE_FUNCTION = "JumbleQuery"
STATEMENT = "SELECT abalance FROM pgbench_accounts WHERE aid = {};"
# Each result row printed by a single-user backend contains this for our statement's column.
RESULT_MARKER = 'abalance = "'


def write_statements(path: Path, count: int, accounts: int) -> None:
    """``count`` pgbench-style point selects with varying keys, one per line."""
    rng = random.Random(STATEMENT_SEED)
    lines = [STATEMENT.format(rng.randint(1, accounts)) for _ in range(count)]
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")


@dataclass
class Profile:
    """What one callgrind run counted."""

    total: int
    library_self: int  # instructions whose code lies in the preloaded library's object
    jumble_inclusive: int  # instructions in JumbleQuery and everything it called
    objects: List[str]


# Lengths of the application_name values that make the layouts (see the module comment).
LAYOUT_PADDINGS = (0, 97, 389, 1021, 3011, 61, 2039)


@dataclass
class InstructionResult:
    """Per-statement figures for one row: for each layout, a run of ``count`` statements and a
    run of one; the figures are medians over the layouts."""

    count: int
    runs: List[Tuple[Profile, Profile]]

    @property
    def many(self) -> Profile:
        return self.runs[0][0]

    @property
    def one(self) -> Profile:
        return self.runs[0][1]

    def _median(self, field: str) -> float:
        values = sorted((getattr(m, field) - getattr(o, field)) / (self.count - 1) for m, o in self.runs)
        mid = len(values) // 2
        return values[mid] if len(values) % 2 else (values[mid - 1] + values[mid]) / 2

    @property
    def per_statement(self) -> float:
        return self._median("total")

    @property
    def per_layout(self) -> List[float]:
        return [(m.total - o.total) / (self.count - 1) for m, o in self.runs]

    @property
    def library_per_statement(self) -> float:
        return self._median("library_self")

    @property
    def jumbling_per_statement(self) -> float:
        return self._median("jumble_inclusive")


_NAMED = re.compile(r"^\((\d+)\)(?: (.*))?$")


def _resolve(names: Dict[str, str], spec: str) -> str:
    """Callgrind's name compression: ``(7) name`` defines id 7, a later ``(7)`` refers to it."""
    match = _NAMED.match(spec.strip())
    if match is None:
        return spec.strip()
    ident, name = match.groups()
    if name is not None:
        names[ident] = name
        return name
    return names.get(ident, "")


def parse_callgrind(path: Path, library_file: Optional[str]) -> Profile:
    """Reads a callgrind output file (one part, one event: Ir).

    Self cost is a cost line that does not follow a ``calls=`` line; the cost line after
    ``calls=`` is the inclusive cost of that call, charged to the callee named by ``cfn=``.
    """
    objects: Dict[str, str] = {}
    functions: Dict[str, str] = {}
    positions = 1
    total: Optional[int] = None
    current_object = ""
    callee = ""
    after_call = False
    library_self = 0
    jumble = 0
    seen_objects = set()
    with path.open(encoding="utf-8", errors="replace") as profile:
        for line in profile:
            if not line or line == "\n":
                continue
            head = line[0]
            if head.isdigit() or head in "+-*":
                fields = line.split()
                cost = int(fields[positions]) if len(fields) > positions else 0
                if after_call:
                    if callee == JUMBLE_FUNCTION:
                        jumble += cost
                    after_call = False
                elif library_file and current_object.endswith("/" + library_file):
                    library_self += cost
                continue
            key, _, value = line.rstrip("\n").partition("=")
            if key == "ob":
                current_object = _resolve(objects, value)
                seen_objects.add(current_object)
            elif key == "cob":
                seen_objects.add(_resolve(objects, value))
            elif key in ("fn", "cfn"):
                name = _resolve(functions, value)
                if key == "cfn":
                    callee = name
            elif key == "calls":
                after_call = True
            elif line.startswith("positions:"):
                positions = len(line.split(":", 1)[1].split())
            elif line.startswith("summary:") or line.startswith("totals:"):
                total = int(line.split(":", 1)[1].split()[0])
    if total is None:
        raise BenchError(f"{path}: no 'summary:' or 'totals:' line; is it a callgrind profile?")
    return Profile(total, library_self, jumble, sorted(o for o in seen_objects if o))


def profile_run(template: Cluster, config: Config, statements: Path, count: int,
                valgrind: str, padding: int = 0) -> Profile:
    """One callgrind run of ``count`` statements on a fresh copy of ``template``, in the
    layout made by an application_name of ``padding`` characters."""
    run_name = f"callgrind-{config.key}-{count}-{padding}"
    cluster = template.copy(run_name)
    workdir = template.workdir
    out_file = workdir / f"{run_name}.out"
    profile_file = workdir / f"{run_name}.callgrind"
    settings = dict(config.settings())
    if padding:
        settings["application_name"] = "l" * padding
    argv = cluster.user.argv([
        valgrind, "--tool=callgrind", f"--callgrind-out-file={profile_file}",
        *cluster.single_user_argv(settings),
    ])
    try:
        with statements.open("rb") as stdin, out_file.open("wb") as stdout:
            run(argv, cwd=workdir, stdin=stdin, stdout=stdout,
                what=f"callgrind, {config.label}, {count} statement(s)")
    finally:
        cluster.remove()
    output = out_file.read_text(errors="replace")
    results = output.count(RESULT_MARKER)
    if results != count:
        raise BenchError(
            f"callgrind run '{config.label}': {results} result rows for {count} statements; the "
            f"single-user backend did not run them all. Its output ends with:\n{tail(output)}"
        )
    return parse_callgrind(profile_file, f"{config.library}.so" if config.library else None)


def check_row(config: Config, result: InstructionResult) -> List[str]:
    """Raises when a row did not run as it claims; returns warnings worth reporting."""
    warnings: List[str] = []
    if config.library:
        library_file = f"/{config.library}.so"
        if not any(o.endswith(library_file) for o in result.many.objects):
            raise BenchError(f"row '{config.label}': {config.library}.so never appears in the "
                             "profile, so the library was not loaded")
        if result.many.library_self <= result.one.library_self:
            raise BenchError(f"row '{config.label}': no instruction ran in {config.library}.so "
                             "per statement; its hooks are not installed")
    if config.compute_query_id == "auto" and not config.library:
        if result.many.jumble_inclusive != 0:
            raise BenchError(f"row '{config.label}': {JUMBLE_FUNCTION} ran although nothing "
                             "should compute query ids")
    elif result.jumbling_per_statement <= 0:
        if not config.library:
            raise BenchError(f"row '{config.label}': {JUMBLE_FUNCTION} never ran")
        warnings.append(f"{config.label}: the core computed no query id ({JUMBLE_FUNCTION} never "
                        "ran); a statistics library is expected to enable compute_query_id")
    return warnings


def measure(template: Cluster, configs: List[Config], count: int, accounts: int,
            valgrind: str, layouts: int = 1) -> Tuple[Dict[str, InstructionResult], List[str]]:
    """Profiles every row; returns results by row key and warnings for the report."""
    many_file = template.workdir / "statements-many.sql"
    one_file = template.workdir / "statements-one.sql"
    write_statements(many_file, count, accounts)
    first = many_file.read_text(encoding="utf-8").splitlines()[0]
    one_file.write_text(first + "\n", encoding="utf-8")

    results: Dict[str, InstructionResult] = {}
    warnings: List[str] = []
    paddings = LAYOUT_PADDINGS[:max(1, min(layouts, len(LAYOUT_PADDINGS)))]
    for config in configs:
        runs = [(profile_run(template, config, many_file, count, valgrind, pad),
                 profile_run(template, config, one_file, 1, valgrind, pad)) for pad in paddings]
        result = InstructionResult(count, runs)
        warnings += check_row(config, result)
        results[config.key] = result
        spread = result.per_layout
        print(f"  {config.label:<24} {result.per_statement:>10,.0f} instructions/statement "
              f"(median of {len(spread)} layouts: {min(spread):,.0f} to {max(spread):,.0f})",
              flush=True)
    return results, warnings
