"""The statement kinds of sql/workload.sql, and their execution times from voxperf.query_stats.

voxperf records each kind of request as one normalised statement (constants replaced by $n);
the kinds below name them as sql/workload.sql's comments do, so the report can say which
requests each index set helps. A statement matching no kind is one of the script's own
(the `SELECT format(...)` generators run by \\gexec, the temporary table): they are part of the
workload's execution time too and are reported together as "script".

Invariant: the first matching pattern wins, so a more specific pattern comes before a general
one sharing its prefix.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Dict, List, Pattern, Tuple

from demo import Database


@dataclass(frozen=True)
class Kind:
    key: str
    label: str
    pattern: Pattern[str]


def _kind(key: str, label: str, pattern: str) -> Kind:
    return Kind(key, label, re.compile(pattern, re.DOTALL))


KINDS: Tuple[Kind, ...] = (
    _kind("number_search", "number search (country, area, AVAILABLE, cheapest first)",
          r'^SELECT id, number, monthly_price, features FROM "VirtualNumber" WHERE country_code'),
    _kind("feature_search", "number search by feature",
          r'^SELECT id, number, area_code, monthly_price FROM "VirtualNumber" WHERE status'),
    _kind("feature_country_search", "number search by feature in a country",
          r'^SELECT id, number, area_code, monthly_price FROM "VirtualNumber" '
          r'WHERE country_code'),
    _kind("number_lookup", "number lookup by E.164 text (unique constraint)",
          r'^SELECT id, country_code, status, owner_id, features FROM "VirtualNumber" '
          r'WHERE number'),
    _kind("my_numbers", "a customer's numbers by status, newest first",
          r'^SELECT id, number, status, monthly_price, created_at FROM "VirtualNumber" '
          r'WHERE owner_id'),
    _kind("call_log", "a number's call log in a time window",
          r'^SELECT "timestamp", kind, duration_seconds, cost FROM "UsageRecord" WHERE number_id'),
    _kind("monthly_cost", "monthly cost report for a customer (join)",
          r'^SELECT date_trunc\(.*FROM "UsageRecord" AS u JOIN "VirtualNumber"'),
    _kind("insert_usage", "INSERT of a usage record",
          r'^INSERT INTO "UsageRecord"'),
    _kind("rating_update", "rating correction (UPDATE usage records of a number)",
          r'^UPDATE "UsageRecord"'),
    # Reserving and releasing differ only in constants (NULL is one): one statement.
    _kind("reserve_release", "reserve or release a number (UPDATE by primary key)",
          r'^UPDATE "VirtualNumber" SET status'),
    _kind("number_report", "report: numbers per country and status (full scan)",
          r'^SELECT country_code, status, count\(\*\).*FROM "VirtualNumber" GROUP BY'),
    _kind("usage_report", "report: usage per month and kind (full scan)",
          r'^SELECT date_trunc\(.*FROM "UsageRecord" GROUP BY'),
    _kind("plan_report", "report: users per plan (full scan)",
          r'^SELECT plan, count\(\*\) FROM "User" GROUP BY'),
)
SCRIPT = Kind("script", "script: the \\gexec generators, temporary table", re.compile(""))
ALL_KINDS: Tuple[Kind, ...] = KINDS + (SCRIPT,)


def kind_of(query: str) -> Kind:
    text = " ".join(query.split())
    for kind in KINDS:
        if kind.pattern.search(text):
            return kind
    return SCRIPT


@dataclass
class KindTime:
    """Calls and execution time of one statement kind (summed over runs)."""

    calls: int = 0
    total_ms: float = 0.0

    @property
    def mean_ms(self) -> float:
        return self.total_ms / self.calls if self.calls else 0.0


def read_run(admin: Database, dboid: int) -> Tuple[float, Dict[str, KindTime]]:
    """The total execution time (ms) of the top-level statements voxperf recorded in database
    ``dboid`` since the last voxperf.reset(), and that time per statement kind."""
    rows = admin.json(
        "SELECT coalesce(json_agg(json_build_object('query', query, 'calls', calls, "
        "'total', total_exec_time)), '[]') FROM voxperf.query_stats "
        f"WHERE dbid = {dboid} AND toplevel")
    by_kind: Dict[str, KindTime] = {}
    total = 0.0
    for row in rows:
        kind = kind_of(str(row["query"]))
        entry = by_kind.setdefault(kind.key, KindTime())
        entry.calls += int(row["calls"])
        entry.total_ms += float(row["total"])
        total += float(row["total"])
    return total, by_kind


def unmatched(kinds: Dict[str, KindTime]) -> List[str]:
    """The kinds of KINDS that never ran: a pattern that no longer matches the workload."""
    return [kind.label for kind in KINDS if kinds.get(kind.key, KindTime()).calls == 0]
