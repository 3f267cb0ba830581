"""The index sets compared: none, the seed's hand-written set, pg_qualstats' and voxperf's advice.

Each set is a list of CREATE INDEX statements plus what its source returned verbatim, for the
report. The advisors are asked in one database ("voxlink_advise", a copy of the template) after
one run of the workload there, with both libraries preloaded and observing that same run.

Every set is created with plain CREATE INDEX in a fresh copy of the template: nothing else runs
there, so CONCURRENTLY (which the seed file and voxperf's DDL use, for production) would build
the same index, only slower. It is stripped, and the report says so.
"""

from __future__ import annotations

import json
import re
import time
from dataclasses import dataclass, field
from typing import Any, Dict, List, Optional

from voxbench.commands import BenchError

from demo import SEED_INDEXES, Database, literal, parse_json, sql_statements

_CONCURRENTLY = re.compile(r"^(CREATE\s+(?:UNIQUE\s+)?INDEX)\s+CONCURRENTLY\b", re.IGNORECASE)


@dataclass
class IndexSet:
    """One set of indexes to measure."""

    key: str
    label: str
    # The statements this part runs to create the set (CONCURRENTLY stripped).
    statements: List[str]
    # Where the set comes from and how it was obtained, for the report.
    source: str
    # What the source returned, verbatim (DDL lines or JSON), for the report.
    verbatim: str = ""
    # Notices the source raised while advising (e.g. voxperf's time limit), verbatim.
    notices: List[str] = field(default_factory=list)
    # voxperf.suggest_indexes()'s rows, as returned (empty for the other sets).
    rows: List[Dict[str, Any]] = field(default_factory=list)


@dataclass
class BuiltIndex:
    """An index a set added to its database, measured right after creation."""

    name: str
    table: str
    definition: str
    size_bytes: int
    # Index scans over the set's warm-up and timed runs (pg_stat_user_indexes), filled later.
    scans: Optional[int] = None


@dataclass
class BuiltSet:
    """A set's indexes as they exist in its database."""

    indexes: List[BuiltIndex]
    seconds: float

    @property
    def size_bytes(self) -> int:
        return sum(index.size_bytes for index in self.indexes)


def without_concurrently(ddl: str) -> str:
    """``ddl`` with CREATE INDEX CONCURRENTLY turned into CREATE INDEX."""
    return _CONCURRENTLY.sub(r"\1", ddl.strip().rstrip(";"))


NO_INDEXES = IndexSet("none", "no extra index", [],
                      "sql/schema.sql alone: primary keys and the unique constraint on "
                      "\"VirtualNumber\".number")


def seed_set() -> IndexSet:
    """The seed's hand-written indexes, sql/seed_indexes.sql statement for statement."""
    ddls = sql_statements(SEED_INDEXES)
    if not ddls:
        raise BenchError(f"{SEED_INDEXES} holds no statement")
    return IndexSet("seed", "seed (hand-written)", [without_concurrently(d) for d in ddls],
                    "sql/seed_indexes.sql", verbatim="\n".join(d + ";" for d in ddls))


# The columns of voxperf.suggest_indexes() the report shows, in order.
VOXPERF_COLUMNS = ("relation", "columns", "method", "predicate", "ddl", "cost_before",
                   "cost_after", "improvement", "estimated_size_bytes", "queryids",
                   "write_overhead", "breaks_hot", "estimated_saving_ms", "estimated_upkeep_ms",
                   "rationale")


def second_round(first: IndexSet, db: Database) -> IndexSet:
    """voxperf's first set plus what it advises once the first set is in place and the
    workload has run with it once more, in ``db`` (which holds the first set)."""
    more = voxperf_set(db)
    known = set(first.statements)
    added = [ddl for ddl in more.statements if ddl not in known]
    rows = first.rows + [r for r in more.rows if without_concurrently(str(r.get("ddl", ""))) in added]
    return IndexSet("voxperf2", "voxperf, second round", first.statements + added,
                    f"voxperf's set applied, the workload run once more, then "
                    f"`SELECT * FROM voxperf.suggest_indexes()` again: {len(added)} more "
                    f"index(es) ({more.source.split(', ')[-1]})",
                    verbatim=render_voxperf_rows(more.rows), notices=more.notices, rows=rows)


def voxperf_set(db: Database) -> IndexSet:
    """voxperf.suggest_indexes() with its default arguments, in ``db``."""
    started = time.monotonic()
    sql = "SELECT coalesce(json_agg(s), '[]') FROM voxperf.suggest_indexes() AS s"
    out, notices = db.sql_with_notices(sql)
    took = time.monotonic() - started
    rows = parse_json(out, "voxperf.suggest_indexes()")
    if not isinstance(rows, list):
        raise BenchError(f"voxperf.suggest_indexes() returned {rows!r}, expected rows")
    ddls = []
    for row in rows:
        ddl = row.get("ddl") if isinstance(row, dict) else None
        if not isinstance(ddl, str) or not ddl.upper().startswith("CREATE INDEX"):
            raise BenchError(f"voxperf.suggest_indexes() returned a row without a CREATE INDEX "
                             f"ddl: {row!r}")
        ddls.append(ddl)
    return IndexSet("voxperf", "voxperf", [without_concurrently(d) for d in ddls],
                    f"`SELECT * FROM voxperf.suggest_indexes()` (defaults: min_improvement 0.1, "
                    f"max_indexes 10, min_share 0.01), {took:.1f} s",
                    verbatim=render_voxperf_rows(rows), notices=notices, rows=rows)


def render_voxperf_rows(rows: List[Dict[str, Any]]) -> str:
    """suggest_indexes()'s rows, one block per suggestion, every column."""
    if not rows:
        return "(no rows)"
    blocks = []
    for number, row in enumerate(rows, 1):
        lines = [f"-- suggestion {number}"]
        lines += [f"{column}: {show(row.get(column))}" for column in VOXPERF_COLUMNS]
        lines += [f"{column}: {show(value)}" for column, value in row.items()
                  if column not in VOXPERF_COLUMNS]
        blocks.append("\n".join(lines))
    return "\n\n".join(blocks)


def show(value: Any) -> str:
    """A column value as SQL would print it: text bare, anything else as JSON (null, true)."""
    return value if isinstance(value, str) else json.dumps(value, ensure_ascii=False)


def estimated_bytes(index_set: IndexSet) -> int:
    """The total of voxperf's estimated_size_bytes (0 for the other sets)."""
    return sum(int(row.get("estimated_size_bytes") or 0) for row in index_set.rows)


def pg_qualstats_set(db: Database) -> IndexSet:
    """pg_qualstats_index_advisor() with its default arguments, in ``db``: its "indexes"."""
    started = time.monotonic()
    raw, notices = db.sql_with_notices("SELECT pg_qualstats_index_advisor()")
    took = time.monotonic() - started
    advice = parse_json(raw, "pg_qualstats_index_advisor()")
    if not isinstance(advice, dict) or not isinstance(advice.get("indexes"), list):
        raise BenchError(f"pg_qualstats_index_advisor() returned {advice!r}, expected a JSON "
                         "object with an \"indexes\" array")
    ddls = [str(ddl) for ddl in advice["indexes"]]
    return IndexSet("pg_qualstats", "pg_qualstats", [without_concurrently(d) for d in ddls],
                    "`SELECT pg_qualstats_index_advisor()` (defaults: min_filter 1000, "
                    f"min_selectivity 30, forbidden_am '{{}}'), {took:.1f} s",
                    verbatim=raw, notices=notices)


def public_indexes(db: Database) -> Dict[str, BuiltIndex]:
    """Every index on a table of schema public, by name."""
    rows = db.json(
        "SELECT coalesce(json_agg(json_build_object('name', c.relname, 'table', t.relname, "
        "'definition', pg_get_indexdef(c.oid), 'bytes', pg_relation_size(c.oid))), '[]') "
        "FROM pg_index AS i JOIN pg_class AS c ON c.oid = i.indexrelid "
        "JOIN pg_class AS t ON t.oid = i.indrelid "
        "JOIN pg_namespace AS n ON n.oid = t.relnamespace WHERE n.nspname = 'public'")
    return {row["name"]: BuiltIndex(row["name"], row["table"], row["definition"],
                                    int(row["bytes"])) for row in rows}


def build(db: Database, index_set: IndexSet) -> BuiltSet:
    """Creates the set's indexes in ``db`` and measures what was added."""
    before = public_indexes(db)
    started = time.monotonic()
    for ddl in index_set.statements:
        db.sql(ddl)
    took = time.monotonic() - started
    added = [index for name, index in public_indexes(db).items() if name not in before]
    if len(added) != len(index_set.statements):
        raise BenchError(f"set {index_set.label}: {len(index_set.statements)} CREATE INDEX "
                         f"statements added {len(added)} indexes to {db.name}")
    return BuiltSet(sorted(added, key=lambda index: (index.table, index.name)), took)


def record_scans(db: Database, built: BuiltSet) -> None:
    """Fills in each built index's scan count from pg_stat_user_indexes."""
    names = ", ".join(literal(index.name) for index in built.indexes) or "NULL"
    scans = db.json("SELECT coalesce(json_object_agg(indexrelname, idx_scan), '{}') "
                    f"FROM pg_stat_user_indexes WHERE indexrelname IN ({names})")
    for index in built.indexes:
        index.scans = int(scans.get(index.name, 0))
