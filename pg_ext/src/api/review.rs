//! `voxperf.index_review()`: existing indexes that cost writes, space and cache without earning
//! it, each with the statement that drops it. Plain SQL over the catalogs and the cumulative
//! statistics: it reads nothing of voxperf's own memory and works without the library.
//!
//! What it reports, each index once, in this order of precedence:
//! - `invalid`: left behind by a failed `CREATE INDEX CONCURRENTLY`; it is maintained by every
//!   write and never used by a query;
//! - `duplicate`: the same definition (method, columns, operator classes, collations, order,
//!   expressions, predicate, INCLUDE) as another index of the table; of two, the one that
//!   enforces something (unique, a constraint), else the older, is kept;
//! - `covered`: a btree whose key columns are the leading key columns of another valid btree
//!   with the same operator classes, collations and order, the same predicate, and whose
//!   INCLUDE columns the other holds too: every scan it serves, the other serves (at the price
//!   of a slightly larger index to read);
//! - `unused`: no scan since the statistics were last reset (`stats_since` says when; judge
//!   the window before dropping: a monthly report's index is idle for weeks).
//!
//! Indexes that back a primary key, unique or exclusion constraint, or are unique, are never
//! proposed (except as `invalid`): they enforce something. System schemas are skipped.

use pgrx::prelude::*;

extension_sql!(
    r#"
CREATE FUNCTION index_review()
RETURNS TABLE (
    relation text,
    index text,
    reason text,
    kept_index text,
    size_bytes bigint,
    scans bigint,
    stats_since timestamptz,
    ddl text,
    detail text
)
LANGUAGE sql STABLE
SET search_path = pg_catalog, pg_temp
AS $review$
WITH idx AS (
    SELECT i.indexrelid,
           i.indrelid,
           ic.relam,
           quote_ident(tn.nspname) || '.' || quote_ident(t.relname) AS relation,
           quote_ident(icn.nspname) || '.' || quote_ident(ic.relname) AS index,
           i.indisunique OR i.indisprimary OR i.indisexclusion
               OR EXISTS (SELECT 1 FROM pg_constraint k WHERE k.conindid = i.indexrelid AND k.contype IN ('p', 'u', 'x'))
               AS enforces,
           i.indisvalid AND i.indisready AS valid,
           i.indnkeyatts AS nkeys,
           string_to_array(i.indkey::text, ' ')::int2[] AS cols,
           string_to_array(i.indclass::text, ' ')::oid[] AS classes,
           string_to_array(i.indcollation::text, ' ')::oid[] AS colls,
           string_to_array(i.indoption::text, ' ')::int2[] AS opts,
           pg_get_expr(i.indexprs, i.indrelid) AS exprs,
           pg_get_expr(i.indpred, i.indrelid) AS pred,
           pg_relation_size(i.indexrelid) AS size_bytes,
           coalesce(s.idx_scan, 0) AS scans
    FROM pg_index i
    JOIN pg_class ic ON ic.oid = i.indexrelid
    JOIN pg_namespace icn ON icn.oid = ic.relnamespace
    JOIN pg_class t ON t.oid = i.indrelid
    JOIN pg_namespace tn ON tn.oid = t.relnamespace
    LEFT JOIN pg_stat_all_indexes s ON s.indexrelid = i.indexrelid
    WHERE tn.nspname NOT IN ('pg_catalog', 'information_schema', 'pg_toast')
      AND tn.nspname NOT LIKE 'pg\_toast\_temp\_%'
      AND t.relkind IN ('r', 'm', 'p')
),
btree AS (SELECT oid FROM pg_am WHERE amname = 'btree'),
invalid AS (
    SELECT a.indexrelid, 'invalid'::text AS reason, NULL::text AS kept_index, 1 AS rank,
           'a failed CREATE INDEX CONCURRENTLY left it invalid: every write maintains it, no query can use it' AS detail
    FROM idx a WHERE NOT a.valid
),
duplicate AS (
    SELECT DISTINCT ON (a.indexrelid) a.indexrelid, 'duplicate'::text, b.index, 2,
           'same definition as ' || b.index
    FROM idx a
    JOIN idx b ON b.indrelid = a.indrelid AND b.indexrelid <> a.indexrelid AND b.valid
    WHERE a.valid AND NOT a.enforces
      AND a.relam = b.relam AND a.cols = b.cols AND a.nkeys = b.nkeys
      AND a.classes = b.classes AND a.colls = b.colls AND a.opts = b.opts
      AND a.exprs IS NOT DISTINCT FROM b.exprs AND a.pred IS NOT DISTINCT FROM b.pred
      AND (b.enforces > a.enforces OR (b.enforces = a.enforces AND b.indexrelid < a.indexrelid))
    ORDER BY a.indexrelid, b.enforces DESC, b.indexrelid
),
covered AS (
    SELECT DISTINCT ON (a.indexrelid) a.indexrelid, 'covered'::text, b.index, 3,
           'its key columns lead ' || b.index || ', which serves the same scans'
    FROM idx a
    JOIN idx b ON b.indrelid = a.indrelid AND b.indexrelid <> a.indexrelid AND b.valid
    WHERE a.valid AND NOT a.enforces
      AND a.relam = (SELECT oid FROM btree) AND b.relam = a.relam
      AND a.exprs IS NULL AND b.exprs IS NULL
      AND a.pred IS NOT DISTINCT FROM b.pred
      AND a.nkeys < b.nkeys
      AND a.cols[1:a.nkeys] = b.cols[1:a.nkeys]
      AND a.classes[1:a.nkeys] = b.classes[1:a.nkeys]
      AND a.colls[1:a.nkeys] = b.colls[1:a.nkeys]
      AND a.opts[1:a.nkeys] = b.opts[1:a.nkeys]
      AND a.cols[a.nkeys + 1:] <@ b.cols
    ORDER BY a.indexrelid, b.size_bytes
),
unused AS (
    SELECT a.indexrelid, 'unused'::text, NULL::text, 4,
           'no scan since ' || coalesce(
               to_char((SELECT stats_reset FROM pg_stat_database WHERE datname = current_database()), 'YYYY-MM-DD HH24:MI:SS TZ'),
               'the statistics began')
    FROM idx a
    WHERE a.valid AND NOT a.enforces AND a.scans = 0
),
found AS (
    SELECT DISTINCT ON (indexrelid) *
    FROM (SELECT * FROM invalid UNION ALL SELECT * FROM duplicate UNION ALL SELECT * FROM covered UNION ALL SELECT * FROM unused) f
    ORDER BY indexrelid, rank
)
SELECT a.relation, a.index, f.reason, f.kept_index, a.size_bytes, a.scans,
       (SELECT stats_reset FROM pg_stat_database WHERE datname = current_database()),
       'DROP INDEX CONCURRENTLY ' || a.index,
       f.detail
FROM found f
JOIN idx a ON a.indexrelid = f.indexrelid
ORDER BY a.size_bytes DESC, a.index
$review$;
GRANT EXECUTE ON FUNCTION index_review() TO PUBLIC;
COMMENT ON FUNCTION index_review() IS
    'Existing indexes worth dropping: invalid, duplicate, covered by another btree, or unused since the statistics were reset; each with its DROP INDEX CONCURRENTLY.';
"#,
    name = "index_review",
);
