//! Which tables a statement reads, by their canonical names, and making sure they are watched.
//!
//! Names from the parser are resolved by Postgres (`to_regclass`, so the search_path applies
//! exactly as for the statement), views are expanded to the relations their rules read (through
//! `pg_depend`, recursively) and inheritance/partition children are added (a `SELECT` on a parent
//! reads them, and a write to a child notifies under the child's name). Each base table is passed
//! once per process to `voxperf.watch_table`, so its writes send NOTIFY.
//!
//! Invariant: a result is cacheable only if every relation it reads is a watched base table.
//! Anything the daemon cannot be notified about — materialized views, foreign tables, system
//! catalogs, user-defined functions (which may read tables the parser cannot see), a
//! `watch_table` that failed — makes the result uncacheable rather than possibly stale.

use super::statement::ReadStatement;
use super::{Db, Error};

/// A relation the statement reads, after resolution.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Relation {
    pub oid: u32,
    /// `quote_ident(schema) || '.' || quote_ident(name)`: the payload of its NOTIFY.
    pub canonical: String,
    /// `pg_class.relkind`: `r` table, `p` partitioned table, `v` view, `m` materialized view...
    pub kind: String,
    pub schema: String,
}

/// What the cache needs to know about a statement before running it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Resolution {
    /// The base tables read: the result's tags.
    pub tables: Vec<Relation>,
    /// `None` when the result may be cached, else why not.
    pub uncacheable: Option<String>,
}

/// Resolves the names, then follows view rules and inheritance to every relation read.
const RELATIONS_SQL: &str = r"
WITH RECURSIVE rels(oid) AS (
    SELECT to_regclass(n) FROM unnest($1::text[]) AS n WHERE to_regclass(n) IS NOT NULL
  UNION
    SELECT x.oid FROM rels, LATERAL (
        SELECT d.refobjid AS oid
          FROM pg_rewrite r
          JOIN pg_depend d ON d.classid = 'pg_rewrite'::regclass AND d.objid = r.oid
                          AND d.refclassid = 'pg_class'::regclass
         WHERE r.ev_class = rels.oid AND d.refobjid <> rels.oid
      UNION ALL
        SELECT i.inhrelid FROM pg_inherits i WHERE i.inhparent = rels.oid
    ) x
)
SELECT c.oid, quote_ident(n.nspname) || '.' || quote_ident(c.relname), c.relkind::text, n.nspname::text
  FROM rels JOIN pg_class c ON c.oid = rels.oid JOIN pg_namespace n ON n.oid = c.relnamespace
 ORDER BY 2";

/// User-defined functions among the names called (anything outside the system schemas).
const USER_FUNCTIONS_SQL: &str = r"
SELECT DISTINCT quote_ident(n.nspname) || '.' || quote_ident(p.proname)
  FROM unnest($1::text[], $2::text[]) AS f(schema, name)
  JOIN pg_proc p ON p.proname = f.name
  JOIN pg_namespace n ON n.oid = p.pronamespace
 WHERE n.nspname NOT IN ('pg_catalog', 'information_schema')
   AND (f.schema IS NULL OR n.nspname = f.schema)
 ORDER BY 1";

impl Db {
    /// Resolves what `statement` reads and makes sure its tables are watched.
    pub async fn resolve(&self, statement: &ReadStatement) -> Result<Resolution, Error> {
        let names: Vec<String> = statement.relations.iter().map(|r| r.quoted()).collect();
        let fn_schemas: Vec<Option<String>> = statement.functions.iter().map(|f| f.schema.clone()).collect();
        let fn_names: Vec<String> = statement.functions.iter().map(|f| f.name.clone()).collect();
        let (relations, user_functions) = self
            .run(|c| async move {
                let rel_params: [&(dyn tokio_postgres::types::ToSql + Sync); 1] = [&names];
                let fn_params: [&(dyn tokio_postgres::types::ToSql + Sync); 2] = [&fn_schemas, &fn_names];
                let (rels, funcs) =
                    tokio::try_join!(c.query(RELATIONS_SQL, &rel_params), c.query(USER_FUNCTIONS_SQL, &fn_params),)?;
                let rels: Vec<Relation> = rels
                    .iter()
                    .map(|r| Relation { oid: r.get(0), canonical: r.get(1), kind: r.get(2), schema: r.get(3) })
                    .collect();
                let funcs: Vec<String> = funcs.iter().map(|r| r.get(0)).collect();
                Ok((rels, funcs))
            })
            .await?;

        let mut uncacheable = None;
        if let Some(f) = user_functions.first() {
            uncacheable = Some(format!("calls user-defined function {f}, whose reads cannot be tracked"));
        }
        let mut tables = Vec::new();
        for rel in relations {
            match rel.kind.as_str() {
                "v" => {} // expanded above
                "r" | "p" if !is_system_schema(&rel.schema) => tables.push(rel),
                _ => {
                    uncacheable.get_or_insert_with(|| {
                        format!("reads {} ({}), which cannot be watched", rel.canonical, kind_name(&rel.kind))
                    });
                }
            }
        }
        if uncacheable.is_none() {
            for table in &tables {
                if let Err(e) = self.ensure_watched(table).await {
                    tracing::warn!(table = %table.canonical, error = %e, "voxperf.watch_table failed; result not cached");
                    uncacheable = Some(format!("{} could not be watched: {e}", table.canonical));
                    break;
                }
            }
        }
        Ok(Resolution { tables, uncacheable })
    }

    /// Calls `voxperf.watch_table` unless this process already did for this oid.
    async fn ensure_watched(&self, table: &Relation) -> Result<(), Error> {
        let known = self.watched.lock().unwrap_or_else(|e| e.into_inner()).contains(&table.oid);
        if known {
            return Ok(());
        }
        let oid = table.oid;
        self.run(|c| async move {
            c.execute("SELECT voxperf.watch_table($1::oid::regclass)", &[&oid]).await?;
            Ok(())
        })
        .await?;
        self.watched.lock().unwrap_or_else(|e| e.into_inner()).insert(oid);
        Ok(())
    }

    /// The canonical name of a table given as text (`users`, `public."VirtualNumber"`), as the
    /// current search_path resolves it; `None` if there is no such relation.
    pub async fn canonical_name(&self, name: &str) -> Result<Option<String>, Error> {
        let name = name.to_owned();
        self.run(|c| async move {
            let row = c
                .query_opt(
                    "SELECT quote_ident(n.nspname) || '.' || quote_ident(c.relname)
                       FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
                      WHERE c.oid = to_regclass($1)",
                    &[&name],
                )
                .await?;
            Ok(row.map(|r| r.get(0)))
        })
        .await
    }
}

fn is_system_schema(schema: &str) -> bool {
    schema == "pg_catalog" || schema == "information_schema" || schema.starts_with("pg_toast")
}

fn kind_name(kind: &str) -> &'static str {
    match kind {
        "m" => "a materialized view",
        "f" => "a foreign table",
        "S" => "a sequence",
        "r" | "p" => "a system catalog",
        _ => "not a table",
    }
}
