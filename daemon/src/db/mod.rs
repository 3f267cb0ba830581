//! Postgres access: a connection pool behind the `postgres` circuit breaker.
//!
//! Every use of the pool goes through [`Db::run`], which asks the breaker first and records the
//! outcome. Only outages count as failures (no connection, connection lost, server shutting
//! down, out of resources); an error the server raised about the statement itself — bad SQL, a
//! read-only violation, a timeout the client asked for — is the client's, and never opens the
//! breaker. The LISTEN connection is not from this pool (see `cache::invalidation`).

pub mod activity;
pub mod extension;
pub mod params;
mod readonly;
mod relations;
pub mod statement;

use std::collections::HashSet;
use std::future::Future;
use std::sync::Mutex;
use std::time::Duration;

use deadpool_postgres::{Manager, ManagerConfig, Object, Pool, RecyclingMethod, Runtime};
pub use readonly::Rows;
pub use relations::{Relation, Resolution};
use tokio_postgres::NoTls;
use tokio_postgres::error::SqlState;

use crate::config::Secret;
use crate::resilience::{Breaker, CallError};

/// How long a request waits for a pooled connection, or for a new one to be set up, before the
/// daemon answers 503 instead of queueing without bound.
const POOL_WAIT: Duration = Duration::from_secs(5);

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("postgres unavailable: {0}")]
    Unavailable(String),
    #[error("{}", postgres_message(.0))]
    Postgres(#[from] tokio_postgres::Error),
    #[error("the statement returned more than {0} rows; add a LIMIT or narrow it")]
    TooManyRows(u32),
    #[error("the statement has {expected} parameter(s) but {got} were given")]
    ParamCount { expected: usize, got: usize },
    #[error("invalid DATABASE_URL: {0}")]
    Config(String),
    /// The server answered, but not in the shape the daemon expects (e.g. a newer extension).
    #[error("{0}")]
    Unexpected(String),
}

/// The server's message (with detail and hint) when there is one, else the client error.
fn postgres_message(e: &tokio_postgres::Error) -> String {
    match e.as_db_error() {
        Some(db) => {
            let mut msg = db.message().to_owned();
            if let Some(detail) = db.detail() {
                msg.push_str(&format!(" (detail: {detail})"));
            }
            if let Some(hint) = db.hint() {
                msg.push_str(&format!(" (hint: {hint})"));
            }
            msg
        }
        None => e.to_string(),
    }
}

impl Error {
    /// The SQLSTATE the server raised, if it raised one.
    pub fn sqlstate(&self) -> Option<&SqlState> {
        match self {
            Error::Postgres(e) => e.code(),
            _ => None,
        }
    }

    /// Whether this means Postgres is unwell (what the breaker counts).
    pub fn is_outage(&self) -> bool {
        match self {
            Error::Unavailable(_) | Error::Config(_) => true,
            Error::Postgres(e) => match e.code() {
                None => true, // I/O error, closed connection, protocol error
                Some(code) => {
                    let class = &code.code()[..2];
                    matches!(class, "08" | "53" | "57" | "58" | "XX") && *code != SqlState::QUERY_CANCELED
                }
            },
            Error::TooManyRows(_) | Error::ParamCount { .. } | Error::Unexpected(_) => false,
        }
    }
}

impl From<CallError<Error>> for Error {
    fn from(e: CallError<Error>) -> Self {
        match e {
            CallError::Open { .. } => Error::Unavailable(e.to_string()),
            CallError::Inner(inner) => inner,
        }
    }
}

/// The pool and what the daemon remembers about the database.
#[derive(Debug)]
pub struct Db {
    pool: Pool,
    breaker: Breaker,
    /// Relations already passed to `voxperf.watch_table` by this process (by oid: a table dropped
    /// and created again gets a new oid and is watched again).
    watched: Mutex<HashSet<u32>>,
}

impl Db {
    /// Sets the pool up; connections are opened on first use.
    pub fn new(database_url: &Secret, pool_size: usize, breaker: Breaker) -> Result<Self, Error> {
        let mut config: tokio_postgres::Config =
            database_url.expose().parse().map_err(|e: tokio_postgres::Error| Error::Config(e.to_string()))?;
        config.application_name("voxperfd").connect_timeout(POOL_WAIT);
        let manager = Manager::from_config(config, NoTls, ManagerConfig { recycling_method: RecyclingMethod::Fast });
        let pool = Pool::builder(manager)
            .max_size(pool_size)
            .runtime(Runtime::Tokio1)
            .wait_timeout(Some(POOL_WAIT))
            .create_timeout(Some(POOL_WAIT))
            .build()
            .map_err(|e| Error::Config(e.to_string()))?;
        Ok(Self { pool, breaker, watched: Mutex::new(HashSet::new()) })
    }

    pub fn breaker(&self) -> &Breaker {
        &self.breaker
    }

    /// Runs `f` with a pooled connection, under the breaker.
    pub async fn run<T, F, Fut>(&self, f: F) -> Result<T, Error>
    where
        F: FnOnce(Object) -> Fut,
        Fut: Future<Output = Result<T, Error>>,
    {
        let call = async {
            let client = self.pool.get().await.map_err(|e| Error::Unavailable(e.to_string()))?;
            f(client).await
        };
        Ok(self.breaker.call_classified(call, Error::is_outage).await?)
    }

    /// `SELECT 1`.
    pub async fn ping(&self) -> Result<(), Error> {
        self.run(|c| async move {
            c.simple_query("SELECT 1").await?;
            Ok(())
        })
        .await
    }

    /// Whether `CREATE EXTENSION voxperf` was run in this database.
    pub async fn extension_installed(&self) -> Result<bool, Error> {
        self.run(|c| async move {
            let row = c.query_opt("SELECT 1 FROM pg_extension WHERE extname = 'voxperf'", &[]).await?;
            Ok(row.is_some())
        })
        .await
    }

    /// `NOTIFY channel, payload` for each payload, in one round trip and one transaction.
    pub async fn notify(&self, channel: &str, payloads: Vec<String>) -> Result<(), Error> {
        let channel = channel.to_owned();
        self.run(|c| async move {
            c.execute("SELECT pg_notify($1, p) FROM unnest($2::text[]) AS p", &[&channel, &payloads]).await?;
            Ok(())
        })
        .await
    }
}

/// Sends this daemon's cache invalidations to every daemon through NOTIFY.
#[derive(Debug)]
pub struct PgBroadcast {
    pub db: std::sync::Arc<Db>,
    pub channel: String,
}

#[async_trait::async_trait]
impl crate::cache::Broadcast for PgBroadcast {
    async fn publish(&self, payloads: Vec<String>) -> Result<(), String> {
        self.db.notify(&self.channel, payloads).await.map_err(|e| e.to_string())
    }
}
