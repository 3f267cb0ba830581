"""The VoxLink demo this part measures: its SQL files, its databases and its workload.

The data (sql/schema.sql + sql/data.sql) is loaded once, into a template database; every index
set then gets its own database created from that template, so all sets start from the same
bytes. ``Database`` is psql against one database of the bench cluster (voxbench's
``Cluster.psql`` only talks to ``postgres``).

Invariant: the workload is run exactly as a user runs it (``psql -f sql/workload.sql``), so its
statements reach the server one by one at top level, where voxperf records them.
"""

from __future__ import annotations

import json
import re
import subprocess
import time
from pathlib import Path
from typing import Any, Dict, List, Mapping, Optional, Tuple

from voxbench.cluster import Cluster
from voxbench.commands import BenchError, require_file, run, tail

REPO = Path(__file__).resolve().parents[2]
SQL_DIR = REPO / "sql"
SCHEMA = SQL_DIR / "schema.sql"
DATA = SQL_DIR / "data.sql"
WORKLOAD = SQL_DIR / "workload.sql"
SEED_INDEXES = SQL_DIR / "seed_indexes.sql"

# sql/data.sql: usage records per unit of scale (scale 5 = 1,000,000).
USAGE_RECORDS_PER_SCALE = 200_000
# The workload at scale 5 with no secondary index runs for a minute or two on a busy 2-core
# machine; this is the limit past which a run is treated as hung.
WORKLOAD_TIMEOUT_SECONDS = 3600
# The template every set's database is copied from.
TEMPLATE = "voxlink_template"


def check_sql_files() -> None:
    """Raises unless the demo's SQL files are where this part expects them."""
    for path in (SCHEMA, DATA, WORKLOAD, SEED_INDEXES):
        require_file(path, f"the demo's {path.name}", "It belongs to the work tree (sql/).")


class Database:
    """One database of the bench cluster, reached with psql over TCP."""

    def __init__(self, cluster: Cluster, name: str) -> None:
        self.cluster = cluster
        self.name = name

    def _psql(self) -> List[str]:
        return [self.cluster.install.program("psql"), *self.cluster.client_args(), "-X", "-q",
                "-v", "ON_ERROR_STOP=1", "-d", self.name]

    def sql(self, sql: str) -> str:
        """Runs ``sql`` (one or more statements) and returns its unaligned, tuples-only output."""
        return run([*self._psql(), "-A", "-t", "-c", sql], cwd=self.cluster.workdir,
                   what=f"psql ({self.name}): {shorten(sql)}").strip()

    def json(self, sql: str) -> Any:
        """The value of a query returning one json (or jsonb) value; ``None`` for SQL NULL."""
        return parse_json(self.sql(sql), f"psql ({self.name}): {shorten(sql)}")

    def sql_with_notices(self, sql: str) -> Tuple[str, List[str]]:
        """Like ``sql``, and the NOTICE/WARNING lines the server sent (psql prints them on
        standard error, which ``voxbench.commands.run`` drops on success)."""
        cmd = [*self._psql(), "-A", "-t", "-c", sql]
        try:
            done = subprocess.run(cmd, cwd=self.cluster.workdir, stdin=subprocess.DEVNULL,
                                  capture_output=True, text=True, check=False)
        except OSError as err:
            raise BenchError(f"psql ({self.name}): cannot run {cmd[0]}: {err}") from err
        if done.returncode != 0:
            raise BenchError(f"psql ({self.name}): {shorten(sql)}: exit status "
                             f"{done.returncode}\n{tail(done.stderr + done.stdout)}")
        notices = [line for line in done.stderr.splitlines()
                   if line.startswith(("NOTICE:", "WARNING:", "INFO:"))]
        return done.stdout.strip(), notices

    def run_file(self, path: Path, variables: Optional[Mapping[str, str]] = None) -> float:
        """Runs the SQL file ``path`` with psql -f; returns its wall-clock time in seconds."""
        args = [f"--set={key}={value}" for key, value in (variables or {}).items()]
        started = time.monotonic()
        run([*self._psql(), *args, "-f", str(path)], cwd=self.cluster.workdir,
            what=f"psql ({self.name}) -f {path.relative_to(REPO)}",
            timeout=WORKLOAD_TIMEOUT_SECONDS)
        return time.monotonic() - started

    def oid(self) -> int:
        return int(Database(self.cluster, "postgres").sql(
            f"SELECT oid FROM pg_database WHERE datname = {literal(self.name)}"))


def parse_json(text: str, what: str) -> Any:
    """``text`` (psql's output of one json value) parsed; ``None`` for SQL NULL (no output)."""
    if text == "":
        return None
    try:
        return json.loads(text)
    except json.JSONDecodeError as err:
        raise BenchError(f"{what}: not JSON: {text[:200]!r}") from err


def shorten(sql: str, limit: int = 160) -> str:
    flat = " ".join(sql.split())
    return flat if len(flat) <= limit else flat[:limit] + " …"


def literal(text: str) -> str:
    """``text`` as an SQL string literal."""
    return "'" + text.replace("'", "''") + "'"


def create_database(cluster: Cluster, name: str, template: Optional[str] = None) -> Database:
    admin = Database(cluster, "postgres")
    suffix = f" TEMPLATE {template}" if template else ""
    admin.sql(f"CREATE DATABASE {name}{suffix}")
    return Database(cluster, name)


def create_voxperf(db: Database, library: Path) -> None:
    """CREATE EXTENSION voxperf, its C functions bound to the preloaded private copy.

    The extension's SQL functions name ``$libdir/voxperf``, the installed file. The server
    preloads a private copy by its path (voxbench.extension.private_copy), and PostgreSQL
    would load the installed file a second time for those functions: a second copy whose shared
    memory is not set up ("voxperf must be loaded via shared_preload_libraries"), and possibly
    another build. In this throw-away cluster the functions are pointed at the private copy, so
    every call runs the build that is preloaded and measured.
    """
    db.sql("CREATE EXTENSION voxperf")
    db.sql(f"UPDATE pg_catalog.pg_proc SET probin = {literal(str(library))} "
           "WHERE probin = '$libdir/voxperf'")
    db.sql("SELECT count(*) FROM voxperf.query_stats_info")


def load_template(cluster: Cluster, scale: int, library: Path) -> Database:
    """The template database: schema, data at ``scale``, voxperf's objects; vacuumed (frozen)
    and analyzed, then checkpointed, so every copy starts with hint bits and statistics set."""
    db = create_database(cluster, TEMPLATE)
    db.run_file(SCHEMA)
    db.run_file(DATA, {"scale": str(scale)})
    create_voxperf(db, library)
    db.sql("VACUUM (FREEZE, ANALYZE)")
    records = int(db.sql('SELECT count(*) FROM "UsageRecord"'))
    if records != scale * USAGE_RECORDS_PER_SCALE:
        raise BenchError(f"sql/data.sql at scale {scale} loaded {records:,} usage records; "
                         f"expected {scale * USAGE_RECORDS_PER_SCALE:,}")
    Database(cluster, "postgres").sql("CHECKPOINT")
    return db


def row_counts(db: Database) -> Dict[str, int]:
    """Rows per demo table, for the report."""
    counts = db.json('SELECT json_build_object(\'User\', (SELECT count(*) FROM "User"), '
                     '\'VirtualNumber\', (SELECT count(*) FROM "VirtualNumber"), '
                     '\'UsageRecord\', (SELECT count(*) FROM "UsageRecord"))')
    return {table: int(count) for table, count in counts.items()}


def run_workload(db: Database) -> float:
    """One run of sql/workload.sql in ``db``: its wall-clock seconds (psql included)."""
    return db.run_file(WORKLOAD)


_COMMENT = re.compile(r"--[^\n]*")


def sql_statements(path: Path) -> List[str]:
    """The statements of a plain SQL file without psql meta-commands or dollar quoting (such as
    sql/seed_indexes.sql), comments removed, one per element, whitespace collapsed."""
    text = _COMMENT.sub("", path.read_text(encoding="utf-8"))
    return [" ".join(part.split()) for part in text.split(";") if part.strip()]


def table_sizes(db: Database) -> str:
    """The demo tables' heap sizes, for the report (e.g. 'UsageRecord 73 MB, ...')."""
    return db.sql("SELECT string_agg(format('%s %s', relname, "
                  "pg_size_pretty(pg_relation_size(oid))), ', ' ORDER BY relname) "
                  "FROM pg_class WHERE relname IN ('User', 'VirtualNumber', 'UsageRecord')")
