//! What the advisor needs to know about a table, read from the catalogs and statistics views
//! through SPI: its columns (type class, collation, pg_stats' distinct count, NULL fraction and
//! width), its valid indexes (written as `pg_get_indexdef` writes them, for comparison with
//! candidates), and its write rates from `pg_stat_user_tables`.

use super::model::{ColumnInfo, ExistingIndex, TableInfo, TypeClass};
use pgrx::prelude::*;
use pgrx::spi::SpiResult;

const TABLE: &str = "
SELECT quote_ident(n.nspname) || '.' || quote_ident(c.relname), c.relname::text,
       greatest(c.reltuples, 0)::float8,
       coalesce((SELECT sum(s.avg_width) FROM pg_stats s WHERE s.schemaname = n.nspname AND s.tablename = c.relname), 0)::float8,
       coalesce(st.n_tup_upd, 0)::float8, coalesce(st.n_tup_hot_upd, 0)::float8,
       n.nspname::text
FROM pg_class c
JOIN pg_namespace n ON n.oid = c.relnamespace
LEFT JOIN pg_stat_all_tables st ON st.relid = c.oid
WHERE c.oid = $1";

const COLUMNS: &str = "
SELECT a.attnum, quote_ident(a.attname), t.typname::text, t.typcategory::text,
       coalesce(CASE WHEN coll.collname = 'default' THEN (SELECT datcollate FROM pg_database WHERE datname = current_database())
                     ELSE coll.collname END, '')::text,
       coalesce(s.n_distinct, 0)::float8, coalesce(s.null_frac, 0)::float8, coalesce(s.avg_width, t.typlen)::float8,
       (s.most_common_vals::text::text[])[cardinality(s.most_common_vals::text::text[])]
FROM pg_attribute a
JOIN pg_class c ON c.oid = a.attrelid
JOIN pg_namespace n ON n.oid = c.relnamespace
JOIN pg_type t ON t.oid = a.atttypid
LEFT JOIN pg_collation coll ON coll.oid = a.attcollation
LEFT JOIN pg_stats s ON s.schemaname = n.nspname AND s.tablename = c.relname AND s.attname = a.attname
WHERE a.attrelid = $1 AND a.attnum > 0 AND NOT a.attisdropped
ORDER BY a.attnum";

/// Key columns written as KeySpec::sql writes them: column, non-default operator class, DESC.
const INDEXES: &str = "
SELECT ci.relname::text, am.amname::text, pg_get_expr(i.indpred, i.indrelid),
       array(SELECT pg_get_indexdef(i.indexrelid, k, true)
                    || CASE WHEN oc.opcdefault THEN '' ELSE ' ' || oc.opcname END
                    || CASE WHEN (i.indoption[k - 1] & 1) = 1 THEN ' DESC' ELSE '' END
             FROM generate_series(1, i.indnkeyatts) k
             JOIN pg_opclass oc ON oc.oid = i.indclass[k - 1]
             ORDER BY k)
FROM pg_index i
JOIN pg_class ci ON ci.oid = i.indexrelid
JOIN pg_am am ON am.oid = ci.relam
WHERE i.indrelid = $1 AND i.indisvalid AND i.indisready";

/// Schemas whose tables are never advised on.
pub const SYSTEM_SCHEMAS: [&str; 4] = ["pg_catalog", "information_schema", "pg_toast", "voxperf"];

pub fn load(relid: u32) -> SpiResult<Option<TableInfo>> {
    Spi::connect(|client| {
        let oid = pg_sys::Oid::from(relid);
        let mut rows = client.select(TABLE, Some(1), &[oid.into()])?;
        let Some(row) = rows.next() else { return Ok(None) };
        let schema: String = row.get(7)?.unwrap_or_default();
        if SYSTEM_SCHEMAS.contains(&schema.as_str()) {
            return Ok(None);
        }
        let mut t = TableInfo {
            relid,
            name: row.get(1)?.unwrap_or_default(),
            bare_name: row.get(2)?.unwrap_or_default(),
            rows: row.get(3)?.unwrap_or(0.0),
            row_width: row.get(4)?.unwrap_or(0.0),
            columns: Vec::new(),
            indexes: Vec::new(),
            hot_update_fraction: match (row.get::<f64>(5)?.unwrap_or(0.0), row.get::<f64>(6)?.unwrap_or(0.0)) {
                (updates, hot) if updates > 0.0 => (hot / updates).clamp(0.0, 1.0),
                _ => 0.0,
            },
        };
        for row in client.select(COLUMNS, None, &[oid.into()])? {
            let typname: String = row.get(3)?.unwrap_or_default();
            let category: String = row.get(4)?.unwrap_or_default();
            let collation: String = row.get(5)?.unwrap_or_default();
            let type_class = match (typname.as_str(), category.as_str()) {
                ("jsonb", _) => TypeClass::Jsonb,
                (_, "A") => TypeClass::Array,
                (_, "S") => TypeClass::Text {
                    c_collation: collation == "C" || collation == "POSIX",
                    varchar: typname == "varchar",
                },
                _ => TypeClass::Other,
            };
            t.columns.push(ColumnInfo {
                attnum: row.get(1)?.unwrap_or(0),
                name: row.get(2)?.unwrap_or_default(),
                type_class,
                n_distinct: row.get(6)?.unwrap_or(0.0),
                null_frac: row.get(7)?.unwrap_or(0.0),
                avg_width: row.get(8)?.unwrap_or(0.0),
                rarest_common: row.get(9)?,
            });
        }
        for row in client.select(INDEXES, None, &[oid.into()])? {
            t.indexes.push(ExistingIndex {
                name: row.get(1)?.unwrap_or_default(),
                method: row.get(2)?.unwrap_or_default(),
                predicate: row.get(3)?,
                keys: row.get::<Vec<String>>(4)?.unwrap_or_default(),
            });
        }
        Ok(Some(t))
    })
}
