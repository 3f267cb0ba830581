//! Running a client's statement read-only.
//!
//! The statement runs inside `BEGIN READ ONLY` with a `SET LOCAL statement_timeout`, wrapped as
//! `SELECT row_to_json(q)::text FROM (<statement>) AS q LIMIT <limit + 1>` so that Postgres itself
//! turns every column type into JSON and the row limit is enforced by the server. The transaction
//! is always rolled back. Invariant: nothing this function runs can change data — the READ ONLY
//! transaction refuses every write, including writes hidden in functions.

use std::time::Duration;

use serde_json::Value;
use tokio_postgres::types::ToSql;

use super::params::JsonParam;
use super::statement::ReadStatement;
use super::{Db, Error};

/// Result rows as one JSON array text (`[{"col": value}, ...]`), ready to embed in a response.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rows {
    pub json: String,
    pub count: usize,
}

impl Db {
    /// Runs `statement` with `params` bound, at most `row_limit` rows, within `timeout`.
    pub async fn query_read_only(
        &self,
        statement: &ReadStatement,
        params: &[Value],
        row_limit: u32,
        timeout: Duration,
    ) -> Result<Rows, Error> {
        // The newline before `)` ends a trailing `--` comment of the client's statement.
        let sql = format!(
            "SELECT row_to_json(q)::text FROM (\n{}\n) AS q LIMIT {}",
            statement.text,
            u64::from(row_limit) + 1
        );
        let timeout_ms = timeout.as_millis().max(1);
        self.run(|mut client| async move {
            let tx = client.build_transaction().read_only(true).start().await?;
            tx.batch_execute(&format!("SET LOCAL statement_timeout = {timeout_ms}")).await?;
            let prepared = tx.prepare(&sql).await?;
            if prepared.params().len() != params.len() {
                return Err(Error::ParamCount { expected: prepared.params().len(), got: params.len() });
            }
            let bound: Vec<JsonParam<'_>> = params.iter().map(JsonParam).collect();
            let refs: Vec<&(dyn ToSql + Sync)> = bound.iter().map(|p| p as &(dyn ToSql + Sync)).collect();
            let rows = tx.query(&prepared, &refs).await?;
            tx.rollback().await?;
            if rows.len() > row_limit as usize {
                return Err(Error::TooManyRows(row_limit));
            }
            let mut json = String::from("[");
            for (i, row) in rows.iter().enumerate() {
                if i > 0 {
                    json.push(',');
                }
                json.push_str(row.get::<_, &str>(0));
            }
            json.push(']');
            Ok(Rows { json, count: rows.len() })
        })
        .await
    }
}
