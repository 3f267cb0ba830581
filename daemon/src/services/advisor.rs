//! Index advice from the extension: suggestions (cached briefly) and migration files.
//!
//! The extension's advisor functions may be missing (an older `voxperf`); the daemon checks the
//! catalog for them (by name and the parameters it passes, since it calls with named arguments)
//! and answers [`Error::Missing`] naming the function, never a made-up result. Suggestions are cached for `VOXPERF_INDEX_SUGGESTIONS_TTL` under one tag, so
//! `refresh` (and `POST /api/admin/optimize`) drops every cached variant at once. Migration
//! files are created, never overwritten: a name already taken gets a numeric suffix.

use std::io::Write as _;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use serde::Serialize;
use utoipa::ToSchema;

use crate::cache::{self, Cache, LoadError};
use crate::db::extension::{Function, INDEX_MIGRATION, IndexSuggestion, SUGGEST_INDEXES};
use crate::db::{self, Db};
use crate::monitor::alerts::sinks::rfc3339;

/// The cache tag of every cached suggestion list.
pub const SUGGESTIONS_TAG: &str = "voxperf:index-suggestions";
/// Files tried with suffixes `_2`, `_3`, ... before giving up.
const MAX_SUFFIX: u32 = 1000;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("{0} does not exist in the database: install or upgrade the voxperf extension that provides it")]
    Missing(Function),
    #[error("{0}")]
    Invalid(String),
    #[error("voxperf.index_migration() returned no migration (no suggestion passed the thresholds)")]
    Nothing,
    #[error("cannot write {path}: {source}")]
    Io { path: String, source: std::io::Error },
    #[error(transparent)]
    Db(#[from] db::Error),
    #[error(transparent)]
    Cache(#[from] cache::Error),
}

/// The advisor functions' arguments.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct AdviceParams {
    /// Smallest improvement (fraction of the cost saved) worth suggesting, 0–1.
    pub min_improvement: f64,
    pub max_indexes: i32,
}

impl Default for AdviceParams {
    /// The extension's own defaults.
    fn default() -> Self {
        Self { min_improvement: 0.1, max_indexes: 10 }
    }
}

impl AdviceParams {
    pub fn validate(self) -> Result<Self, Error> {
        if !(0.0..=1.0).contains(&self.min_improvement) {
            return Err(Error::Invalid("min_improvement must be between 0 and 1".into()));
        }
        if !(1..=1000).contains(&self.max_indexes) {
            return Err(Error::Invalid("max_indexes must be between 1 and 1000".into()));
        }
        Ok(self)
    }
}

#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct Suggestions {
    pub suggestions: Vec<IndexSuggestion>,
    /// Whether this answer came from the cache.
    pub cached: bool,
    /// When the extension computed it (Unix ms).
    pub computed_at_ms: u64,
    pub min_improvement: f64,
    pub max_indexes: i32,
}

#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct Migration {
    pub path: String,
    pub text: String,
    pub bytes: usize,
}

#[derive(Debug, Clone)]
pub struct Advisor {
    pub db: Arc<Db>,
    pub cache: Cache,
    pub ttl: Duration,
    pub migrations_dir: PathBuf,
}

impl Advisor {
    async fn require(&self, function: Function) -> Result<(), Error> {
        if self.db.function_exists(function).await? { Ok(()) } else { Err(Error::Missing(function)) }
    }

    /// Whether the extension offers suggestions (for the dashboard and optimize).
    pub async fn available(&self) -> Result<bool, Error> {
        Ok(self.db.function_exists(SUGGEST_INDEXES).await?)
    }

    /// The suggestions for `params`, from the cache when fresh.
    pub async fn suggestions(&self, params: AdviceParams) -> Result<Suggestions, Error> {
        let params = params.validate()?;
        let key = format!("voxperfd:index-suggestions:{}:{}", params.min_improvement, params.max_indexes);
        let tags = [SUGGESTIONS_TAG.to_owned()];
        let this = self.clone();
        let loaded = self
            .cache
            .get_or_load(&key, Some(self.ttl), &tags, || async move {
                this.require(SUGGEST_INDEXES).await?;
                let list = this.db.suggest_indexes(params.min_improvement, params.max_indexes).await?;
                serde_json::to_vec(&list).map(Bytes::from).map_err(|e| Error::Invalid(e.to_string()))
            })
            .await
            .map_err(|e| match e {
                LoadError::Cache(e) => Error::Cache(e),
                LoadError::Loader(e) => e,
            })?;
        let suggestions = serde_json::from_slice(&loaded.value)
            .map_err(|e| Error::Invalid(format!("cached suggestions unreadable: {e}")))?;
        Ok(Suggestions {
            suggestions,
            cached: loaded.is_hit(),
            computed_at_ms: loaded.created_ms,
            min_improvement: params.min_improvement,
            max_indexes: params.max_indexes,
        })
    }

    /// Drops every cached suggestion list.
    pub async fn forget(&self) -> Result<(), Error> {
        self.cache.invalidate_tags(&[SUGGESTIONS_TAG.to_owned()]).await?;
        Ok(())
    }

    /// Writes `voxperf.index_migration(params)` into a new file of the migrations folder.
    pub async fn write_migration(&self, params: AdviceParams, now_ms: u64) -> Result<Migration, Error> {
        let params = params.validate()?;
        self.require(INDEX_MIGRATION).await?;
        let text = self.db.index_migration(params.min_improvement, params.max_indexes).await?;
        let text = text.filter(|t| !t.trim().is_empty()).ok_or(Error::Nothing)?;
        let stamp: String = rfc3339(now_ms).chars().filter(char::is_ascii_digit).take(14).collect();
        let dir = self.migrations_dir.clone();
        let body = text.clone();
        let path = tokio::task::spawn_blocking(move || create_new(&dir, &stamp, &body))
            .await
            .map_err(|e| Error::Io { path: String::new(), source: std::io::Error::other(e) })??;
        Ok(Migration { bytes: text.len(), path: path.display().to_string(), text })
    }
}

/// Creates `<dir>/<stamp>_voxperf_indexes[_N].sql` with `text`, never replacing a file.
fn create_new(dir: &std::path::Path, stamp: &str, text: &str) -> Result<PathBuf, Error> {
    let io = |path: &std::path::Path, source| Error::Io { path: path.display().to_string(), source };
    std::fs::create_dir_all(dir).map_err(|e| io(dir, e))?;
    for n in 1..=MAX_SUFFIX {
        let name =
            if n == 1 { format!("{stamp}_voxperf_indexes.sql") } else { format!("{stamp}_voxperf_indexes_{n}.sql") };
        let path = dir.join(name);
        match std::fs::OpenOptions::new().write(true).create_new(true).open(&path) {
            Ok(mut file) => {
                file.write_all(text.as_bytes()).and_then(|()| file.sync_all()).map_err(|e| io(&path, e))?;
                return Ok(path);
            }
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => continue,
            Err(e) => return Err(io(&path, e)),
        }
    }
    Err(io(dir, std::io::Error::other("too many migration files with this timestamp")))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_migration_file_never_replaces_an_existing_one() {
        let dir = std::env::temp_dir().join(format!("voxperfd-migrations-{:08x}", rand::random::<u32>()));
        let first = create_new(&dir, "20260101000000", "-- up 1").unwrap();
        let second = create_new(&dir, "20260101000000", "-- up 2").unwrap();
        assert_ne!(first, second);
        assert!(second.ends_with("20260101000000_voxperf_indexes_2.sql"));
        assert_eq!(std::fs::read_to_string(&first).unwrap(), "-- up 1");
        assert_eq!(std::fs::read_to_string(&second).unwrap(), "-- up 2");
        std::fs::remove_dir_all(dir).unwrap();
    }

    #[test]
    fn advice_parameters_are_bounded() {
        assert!(AdviceParams::default().validate().is_ok());
        assert!(AdviceParams { min_improvement: 1.5, max_indexes: 3 }.validate().is_err());
        assert!(AdviceParams { min_improvement: 0.2, max_indexes: 0 }.validate().is_err());
    }
}
