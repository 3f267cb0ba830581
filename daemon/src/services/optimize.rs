//! `POST /api/admin/optimize`: the seed's "run performance optimization", made concrete.
//!
//! Two steps, each reported with what it did: refresh the index suggestions (drop the cached
//! ones and ask the extension again, when it offers the advisor), and warm the cache from the
//! warm list (`CACHE_WARM_FILE`): entries with a `value` are stored as they are, entries with a
//! `sql` are run read-only through the query cache (so they are invalidated by writes like any
//! other). A failing step or entry does not stop the others.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use utoipa::ToSchema;

use super::advisor::{AdviceParams, Advisor, Error as AdvisorError};
use super::query_cache::{QueryCacheService, QueryRequest};
use crate::cache::{Cache, WarmEntry};

/// One entry of the warm list.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WarmItem {
    pub key: Option<String>,
    pub value: Option<Value>,
    pub sql: Option<String>,
    #[serde(default)]
    pub params: Vec<Value>,
    pub ttl: Option<u64>,
    #[serde(default)]
    pub tags: Vec<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum StepStatus {
    Done,
    Skipped,
    Failed,
}

#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct Step {
    pub status: StepStatus,
    pub detail: String,
    /// Suggestions found, or entries warmed.
    pub count: usize,
    /// Entries that failed, with why.
    pub failures: Vec<String>,
}

#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct OptimizeReport {
    pub index_suggestions: Step,
    pub cache_warm: Step,
    pub duration_ms: f64,
}

#[derive(Debug, Clone)]
pub struct Optimizer {
    pub advisor: Advisor,
    pub cache: Cache,
    pub queries: Arc<QueryCacheService>,
    pub warm_file: Option<PathBuf>,
}

impl Optimizer {
    pub async fn run(&self) -> OptimizeReport {
        let started = Instant::now();
        let index_suggestions = self.refresh_suggestions().await;
        let cache_warm = self.warm().await;
        OptimizeReport { index_suggestions, cache_warm, duration_ms: started.elapsed().as_secs_f64() * 1000.0 }
    }

    async fn refresh_suggestions(&self) -> Step {
        let step = |status, detail: String, count| Step { status, detail, count, failures: Vec::new() };
        if let Err(e) = self.advisor.forget().await {
            return step(StepStatus::Failed, format!("cached suggestions not dropped: {e}"), 0);
        }
        match self.advisor.suggestions(AdviceParams::default()).await {
            Ok(s) => step(StepStatus::Done, "recomputed by voxperf.suggest_indexes()".into(), s.suggestions.len()),
            Err(e @ AdvisorError::Missing(_)) => step(StepStatus::Skipped, e.to_string(), 0),
            Err(e) => step(StepStatus::Failed, e.to_string(), 0),
        }
    }

    async fn warm(&self) -> Step {
        let Some(path) = &self.warm_file else {
            return Step {
                status: StepStatus::Skipped,
                detail: "no warm list configured (CACHE_WARM_FILE)".into(),
                count: 0,
                failures: Vec::new(),
            };
        };
        let failed = |detail: String| Step { status: StepStatus::Failed, detail, count: 0, failures: Vec::new() };
        let file = path.clone();
        let read = tokio::task::spawn_blocking(move || std::fs::read_to_string(file)).await;
        let text = match read.unwrap_or_else(|e| Err(std::io::Error::other(e))) {
            Ok(t) => t,
            Err(e) => return failed(format!("cannot read {}: {e}", path.display())),
        };
        let items: Vec<WarmItem> = match serde_json::from_str(&text) {
            Ok(items) => items,
            Err(e) => return failed(format!("{} is not a JSON list of warm entries: {e}", path.display())),
        };
        let (mut count, mut failures) = (0, Vec::new());
        for (i, item) in items.into_iter().enumerate() {
            match self.warm_one(item).await {
                Ok(()) => count += 1,
                Err(e) => failures.push(format!("entry {i}: {e}")),
            }
        }
        Step {
            status: if failures.is_empty() { StepStatus::Done } else { StepStatus::Failed },
            detail: format!("warm list {}", path.display()),
            count,
            failures,
        }
    }

    async fn warm_one(&self, item: WarmItem) -> Result<(), String> {
        let ttl = item.ttl.map(Duration::from_secs);
        match (item.key, item.value, item.sql) {
            (Some(key), Some(value), None) => {
                let value = Bytes::from(serde_json::to_vec(&value).map_err(|e| e.to_string())?);
                let entry = WarmEntry { key, value, ttl, tags: item.tags };
                self.cache.warm(vec![entry]).await.map(|_| ()).map_err(|e| e.to_string())
            }
            (None, None, Some(sql)) => {
                let request = QueryRequest { sql, params: item.params, ttl };
                self.queries.query(request).await.map(|_| ()).map_err(|e| e.to_string())
            }
            _ => Err("give either `key` and `value`, or `sql` (with `params`)".into()),
        }
    }
}
