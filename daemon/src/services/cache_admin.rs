//! Cache administration: warming and invalidation by tags, tables and key pattern.
//!
//! Tables are named by clients as Postgres would read them (`users`, `public."VirtualNumber"`)
//! and resolved to canonical names first, so the tag is the one the extension's triggers use.

use std::sync::Arc;

use crate::cache::{self, Cache};
use crate::db::{self, Db};

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("give at least one of tags, tables or pattern")]
    Nothing,
    #[error("unknown table {0:?}")]
    UnknownTable(String),
    #[error(transparent)]
    Cache(#[from] cache::Error),
    #[error(transparent)]
    Db(#[from] db::Error),
}

/// What `invalidate` did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Invalidated {
    pub tags: Vec<String>,
    pub tables: Vec<String>,
    pub pattern: Option<String>,
    /// Redis entries this daemon deleted for the pattern.
    pub pattern_deleted: u64,
}

#[derive(Debug, Clone)]
pub struct CacheAdmin {
    pub cache: Cache,
    pub db: Arc<Db>,
}

impl CacheAdmin {
    pub async fn invalidate(
        &self,
        tags: Vec<String>,
        tables: Vec<String>,
        pattern: Option<String>,
    ) -> Result<Invalidated, Error> {
        if tags.is_empty() && tables.is_empty() && pattern.is_none() {
            return Err(Error::Nothing);
        }
        let mut canonical = Vec::with_capacity(tables.len());
        for table in &tables {
            match self.db.canonical_name(table).await? {
                Some(name) => canonical.push(name),
                None => return Err(Error::UnknownTable(table.clone())),
            }
        }
        if !tags.is_empty() {
            self.cache.invalidate_tags(&tags).await?;
        }
        if !canonical.is_empty() {
            self.cache.invalidate_tables(&canonical).await?;
        }
        let pattern_deleted = match &pattern {
            Some(p) => self.cache.invalidate_pattern(p).await?,
            None => 0,
        };
        Ok(Invalidated { tags, tables: canonical, pattern, pattern_deleted })
    }
}
