//! The invalidation listener: a dedicated Postgres connection that LISTENs on the invalidation
//! channel and applies every notification to the cache.
//!
//! Shaped like mini-redis' `Listener`: [`InvalidationListener::run`] loops over sessions until
//! shutdown; each session connects, LISTENs, **then bumps the epoch** and only then tells the
//! cache it is connected. The order is the invariant: NOTIFY is not replayed, so a write
//! committed while no session was listening is covered by the epoch bump, which happens after
//! LISTEN took effect — every entry whose loader started before that point becomes a miss. Any
//! failure (the backend killed, the network gone, a heartbeat unanswered) marks the cache
//! disconnected at once, so entries computed from tables stop being served until the next
//! session's bump. Reconnects back off exponentially with jitter.
//!
//! Notifications are applied in batches, and never wait for Redis: whatever the connection has
//! delivered when the loop looks is drained and handed to [`Cache::receive`] at once, which
//! takes effect in this process before returning; the cache tells Redis in the background, in
//! one round trip per batch. (Awaiting Redis here would hold every write queued behind one slow
//! round trip, and a request meanwhile would be served what the writes changed.)
//!
//! The connection is never in a transaction (a listener inside one holds back the server's
//! notification queue for everyone) and carries no other traffic.

use std::sync::Arc;
use std::time::Duration;

use serde::Serialize;
use tokio::sync::{mpsc, watch};
use tokio_postgres::{AsyncMessage, NoTls};
use tokio_util::sync::CancellationToken;
use utoipa::ToSchema;

use super::Cache;
use super::message::InvalidationMessage;
use crate::config::Secret;

/// First reconnect delay: a backend killed by an administrator is usually back in milliseconds.
const BACKOFF_MIN: Duration = Duration::from_millis(50);
/// Longest reconnect delay: bounds how long after Postgres returns the cache stays bypassed.
const BACKOFF_MAX: Duration = Duration::from_secs(10);
/// A silent connection is probed this often, so a dead peer (no RST) is noticed.
const HEARTBEAT_EVERY: Duration = Duration::from_secs(10);
/// How long a heartbeat or the connection set-up may take.
const PROBE_TIMEOUT: Duration = Duration::from_secs(5);
/// Most notifications applied as one batch: under a flood of writes the loop still gets back to
/// its heartbeat and shutdown between batches (applying one costs microseconds).
const MAX_BATCH: usize = 1024;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("postgres: {0}")]
    Postgres(#[from] tokio_postgres::Error),
    #[error("invalid DATABASE_URL: {0}")]
    Config(String),
    #[error("connection closed")]
    Closed,
    #[error("no answer within {0:?}")]
    Timeout(Duration),
}

/// What the health endpoint shows about the listener.
#[derive(Debug, Clone, Default, Serialize, ToSchema)]
pub struct ListenerStatus {
    pub channel: String,
    pub connected: bool,
    /// Postgres backend pid of the LISTEN connection (for `pg_terminate_backend` in drills).
    pub backend_pid: Option<i32>,
    pub notifications: u64,
    pub last_notification_at_ms: Option<u64>,
    /// Sessions established after the first.
    pub reconnects: u64,
    pub last_error: Option<String>,
}

/// Shared view of the listener's state; callers can also wait for a change (tests wait for a
/// notification to be applied, or for a reconnect, instead of sleeping).
#[derive(Debug, Clone)]
pub struct ListenerHandle {
    status: Arc<watch::Sender<ListenerStatus>>,
}

impl Default for ListenerHandle {
    fn default() -> Self {
        Self { status: Arc::new(watch::Sender::new(ListenerStatus::default())) }
    }
}

impl ListenerHandle {
    pub fn status(&self) -> ListenerStatus {
        self.status.borrow().clone()
    }

    /// A receiver that sees every later change of the status.
    pub fn subscribe(&self) -> watch::Receiver<ListenerStatus> {
        self.status.subscribe()
    }

    fn update(&self, f: impl FnOnce(&mut ListenerStatus)) {
        self.status.send_modify(f);
    }
}

/// The LISTEN loop for one cache.
#[derive(Debug)]
pub struct InvalidationListener {
    database_url: Secret,
    channel: String,
    cache: Cache,
    handle: ListenerHandle,
}

/// Quotes an identifier for SQL (`LISTEN` takes no parameters).
pub fn quote_ident(name: &str) -> String {
    format!("\"{}\"", name.replace('"', "\"\""))
}

impl InvalidationListener {
    pub fn new(database_url: Secret, channel: String, cache: Cache) -> Self {
        let handle = ListenerHandle::default();
        handle.update(|s| s.channel = channel.clone());
        Self { database_url, channel, cache, handle }
    }

    pub fn handle(&self) -> ListenerHandle {
        self.handle.clone()
    }

    /// Listens until `shutdown` is cancelled, reconnecting after every failure.
    pub async fn run(self, shutdown: CancellationToken) {
        let mut failures: u32 = 0;
        let mut sessions: u64 = 0;
        while !shutdown.is_cancelled() {
            let before = sessions;
            let result = self.session(&shutdown, &mut sessions).await;
            if sessions > before {
                failures = 0; // it did connect: start the backoff over
            }
            self.cache.set_feed_connected(false);
            self.handle.update(|s| {
                s.connected = false;
                s.backend_pid = None;
            });
            match result {
                Ok(()) => break,
                Err(e) => {
                    tracing::warn!(error = %e, "invalidation listener disconnected; cached table data is bypassed until it reconnects");
                    self.handle.update(|s| s.last_error = Some(e.to_string()));
                }
            }
            let delay = backoff(failures);
            failures = failures.saturating_add(1);
            tokio::select! {
                () = shutdown.cancelled() => break,
                () = tokio::time::sleep(delay) => {}
            }
        }
        self.cache.set_feed_connected(false);
    }

    /// One connection's life. Returns Ok only on shutdown.
    async fn session(&self, shutdown: &CancellationToken, sessions: &mut u64) -> Result<(), Error> {
        let mut config: tokio_postgres::Config =
            self.database_url.expose().parse().map_err(|e: tokio_postgres::Error| Error::Config(e.to_string()))?;
        config
            .application_name(format!("voxperfd-listener-{}", self.cache.instance()))
            .connect_timeout(PROBE_TIMEOUT)
            .keepalives_idle(Duration::from_secs(30));
        let (client, mut connection) = tokio::time::timeout(PROBE_TIMEOUT, config.connect(NoTls))
            .await
            .map_err(|_| Error::Timeout(PROBE_TIMEOUT))??;

        // The connection half must be polled to receive notifications (they do not arrive on the
        // client half); forward them to this task, and end the channel when it closes.
        let (tx, mut rx) = mpsc::unbounded_channel();
        let driver = tokio::spawn(async move {
            loop {
                match std::future::poll_fn(|cx| connection.poll_message(cx)).await {
                    Some(Ok(AsyncMessage::Notification(n))) => {
                        if tx.send(Ok(n)).is_err() {
                            break;
                        }
                    }
                    Some(Ok(_)) => {}
                    Some(Err(e)) => {
                        let _ = tx.send(Err(e));
                        break;
                    }
                    None => break,
                }
            }
        });
        let _abort_driver = AbortOnDrop(driver);

        client.batch_execute(&format!("LISTEN {}", quote_ident(&self.channel))).await?;
        let pid: i32 = client.query_one("SELECT pg_backend_pid()", &[]).await?.get(0);
        // Only now: whatever was committed while nobody listened becomes a miss (here at once;
        // Redis learns the new epoch from the cache's background sync).
        self.cache.start_epoch();
        self.cache.set_feed_connected(true);
        *sessions += 1;
        let reconnect = *sessions > 1;
        self.handle.update(|s| {
            s.connected = true;
            s.backend_pid = Some(pid);
            s.reconnects += u64::from(reconnect);
        });
        tracing::info!(channel = %self.channel, pid, reconnect, "listening for invalidations");

        let mut heartbeat = tokio::time::interval(HEARTBEAT_EVERY);
        heartbeat.tick().await;
        loop {
            tokio::select! {
                () = shutdown.cancelled() => return Ok(()),
                message = rx.recv() => {
                    // Take whatever else is already queued too: one batch, one Redis round trip.
                    let mut batch = Vec::new();
                    let mut next = message;
                    let ended = loop {
                        match next {
                            Some(Ok(n)) => batch.push(n),
                            Some(Err(e)) => break Some(Error::from(e)),
                            None => break Some(Error::Closed),
                        }
                        if batch.len() == MAX_BATCH {
                            break None;
                        }
                        match rx.try_recv() {
                            Ok(more) => next = Some(more),
                            Err(_) => break None,
                        }
                    };
                    self.handle_notifications(&batch);
                    if let Some(e) = ended {
                        return Err(e);
                    }
                }
                _ = heartbeat.tick() => {
                    tokio::time::timeout(PROBE_TIMEOUT, client.simple_query("SELECT 1"))
                        .await
                        .map_err(|_| Error::Timeout(PROBE_TIMEOUT))??;
                }
            }
        }
    }

    /// Applies a batch of notifications to the cache (no network I/O), then reports them.
    fn handle_notifications(&self, batch: &[tokio_postgres::Notification]) {
        let messages: Vec<InvalidationMessage> = batch
            .iter()
            .filter(|n| n.channel() == self.channel)
            .filter_map(|n| {
                let message = InvalidationMessage::parse(n.payload());
                if message.is_none() {
                    tracing::warn!(payload = n.payload(), "ignoring malformed invalidation payload");
                }
                message
            })
            .collect();
        if messages.is_empty() {
            return;
        }
        tracing::debug!(?messages, "invalidations");
        self.cache.receive(&messages);
        let now = self.cache.clock().unix_ms();
        self.handle.update(|s| {
            s.notifications += messages.len() as u64;
            s.last_notification_at_ms = Some(now);
        });
    }
}

struct AbortOnDrop(tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// Delay before reconnect attempt `failures` (0-based): exponential from [`BACKOFF_MIN`], capped
/// at [`BACKOFF_MAX`], then "equal jitter" (half fixed, half random) so that daemons which lost
/// Postgres together do not reconnect in lockstep.
pub fn backoff(failures: u32) -> Duration {
    let exp = BACKOFF_MIN.saturating_mul(1u32 << failures.min(16));
    let capped = exp.min(BACKOFF_MAX);
    let half = capped / 2;
    half + half.mul_f64(rand::random::<f64>())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_grows_exponentially_within_jitter_and_is_capped() {
        for failures in 0..20 {
            let d = backoff(failures);
            let ceiling = BACKOFF_MIN.saturating_mul(1 << failures.min(16)).min(BACKOFF_MAX);
            assert!(d >= ceiling / 2 && d <= ceiling, "{failures}: {d:?} vs {ceiling:?}");
        }
        assert!(backoff(30) <= BACKOFF_MAX);
    }

    #[test]
    fn channel_names_are_quoted_as_identifiers() {
        assert_eq!(quote_ident("voxperf_invalidate"), "\"voxperf_invalidate\"");
        assert_eq!(quote_ident("a\"b"), "\"a\"\"b\"");
    }
}
