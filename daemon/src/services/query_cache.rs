//! `POST /api/cache/query`: read-only SQL whose results are cached and invalidated by writes.
//!
//! Order of work, which is what keeps results fresh: parse (pg_query; refuse anything that is not
//! a plain SELECT) → look the key up (a hit needs no database round trip) → on a miss, resolve
//! the tables read and make sure each is watched (*before* the snapshot, so that any write after
//! it sends a NOTIFY) → `get_or_load`, which reads the tag generations and only then runs the
//! statement. The key is a hash of Postgres' normalized rendering of the statement and of its
//! parameters, so layout and comments do not split the cache but constants do.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use serde_json::Value;
use sha2::{Digest, Sha256};

use crate::cache::{self, Cache, LoadError, table_tag};
use crate::db::statement::{ReadStatement, StatementError};
use crate::db::{self, Db, Resolution, Rows};

/// Where statements run; the real one is Postgres ([`PgQueryBackend`]).
#[async_trait::async_trait]
pub trait QueryBackend: Send + Sync + std::fmt::Debug {
    /// The tables the statement reads, watched; or why its result cannot be cached.
    async fn resolve(&self, statement: &ReadStatement) -> Result<Resolution, db::Error>;
    /// Runs the statement read-only.
    async fn execute(&self, statement: &ReadStatement, params: &[Value]) -> Result<Rows, db::Error>;
}

/// Postgres with the daemon's limits.
#[derive(Debug)]
pub struct PgQueryBackend {
    pub db: Arc<Db>,
    pub row_limit: u32,
    pub statement_timeout: Duration,
}

#[async_trait::async_trait]
impl QueryBackend for PgQueryBackend {
    async fn resolve(&self, statement: &ReadStatement) -> Result<Resolution, db::Error> {
        self.db.resolve(statement).await
    }

    async fn execute(&self, statement: &ReadStatement, params: &[Value]) -> Result<Rows, db::Error> {
        self.db.query_read_only(statement, params, self.row_limit, self.statement_timeout).await
    }
}

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error(transparent)]
    Statement(#[from] StatementError),
    #[error(transparent)]
    Db(#[from] db::Error),
    #[error(transparent)]
    Cache(#[from] cache::Error),
}

impl From<LoadError<db::Error>> for Error {
    fn from(e: LoadError<db::Error>) -> Self {
        match e {
            LoadError::Cache(e) => Error::Cache(e),
            LoadError::Loader(e) => Error::Db(e),
        }
    }
}

/// A statement to run.
#[derive(Debug, Clone)]
pub struct QueryRequest {
    pub sql: String,
    pub params: Vec<Value>,
    pub ttl: Option<Duration>,
}

/// Its result.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct QueryOutcome {
    /// The rows as a JSON array text.
    pub rows: String,
    pub hit: bool,
    /// Milliseconds since the rows were read from Postgres (0 on a miss).
    pub age_ms: u64,
    /// Canonical names of the tables the result depends on (known on a miss).
    pub tables: Vec<String>,
    /// The cache key the result was looked up (and, when cacheable, stored) under.
    pub key: String,
}

#[derive(Debug)]
pub struct QueryCacheService {
    cache: Cache,
    backend: Arc<dyn QueryBackend>,
}

/// The cache key of a statement with its parameters.
pub fn cache_key(statement: &ReadStatement, params: &[Value]) -> String {
    let mut hash = Sha256::new();
    hash.update(statement.normalized.as_bytes());
    hash.update([0]);
    hash.update(Value::Array(params.to_vec()).to_string().as_bytes());
    let digest = hash.finalize();
    let mut key = String::from("query:");
    for b in &digest[..16] {
        key.push_str(&format!("{b:02x}"));
    }
    key
}

impl QueryCacheService {
    pub fn new(cache: Cache, backend: Arc<dyn QueryBackend>) -> Self {
        Self { cache, backend }
    }

    pub async fn query(&self, request: QueryRequest) -> Result<QueryOutcome, Error> {
        let statement = ReadStatement::parse(&request.sql)?;
        let ttl = self.cache.ttl(request.ttl)?;
        let key = cache_key(&statement, &request.params);
        let now = || self.cache.clock().unix_ms();
        if let Some(hit) = self.cache.get(&key).await? {
            return Ok(QueryOutcome {
                rows: String::from_utf8_lossy(&hit.value).into_owned(),
                hit: true,
                age_ms: now().saturating_sub(hit.created_ms),
                tables: Vec::new(),
                key,
            });
        }
        let resolution = self.backend.resolve(&statement).await?;
        let tables: Vec<String> = resolution.tables.iter().map(|t| t.canonical.clone()).collect();
        if let Some(reason) = &resolution.uncacheable {
            tracing::debug!(%reason, "query result not cacheable");
            let rows = self.backend.execute(&statement, &request.params).await?;
            return Ok(QueryOutcome { rows: rows.json, hit: false, age_ms: 0, tables, key });
        }
        let tags: Vec<String> = tables.iter().map(|t| table_tag(t)).collect();
        let backend = self.backend.clone();
        let params = request.params;
        let cached = self
            .cache
            .get_or_load(&key, Some(ttl), &tags, || async move {
                backend.execute(&statement, &params).await.map(|rows| Bytes::from(rows.json))
            })
            .await?;
        Ok(QueryOutcome {
            rows: String::from_utf8_lossy(&cached.value).into_owned(),
            hit: cached.is_hit(),
            age_ms: if cached.is_hit() { now().saturating_sub(cached.created_ms) } else { 0 },
            tables,
            key,
        })
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn the_key_ignores_layout_but_not_constants_or_parameters() {
        let a = ReadStatement::parse("select * from t where id = $1").unwrap();
        let b = ReadStatement::parse("SELECT *\n  FROM t\n WHERE id = $1 -- by id").unwrap();
        let c = ReadStatement::parse("SELECT * FROM t WHERE id = $1 AND true").unwrap();
        assert_eq!(cache_key(&a, &[json!(1)]), cache_key(&b, &[json!(1)]));
        assert_ne!(cache_key(&a, &[json!(1)]), cache_key(&a, &[json!(2)]));
        assert_ne!(cache_key(&a, &[json!(1)]), cache_key(&a, &[json!("1")]));
        assert_ne!(cache_key(&a, &[json!(1)]), cache_key(&c, &[json!(1)]));
    }
}
