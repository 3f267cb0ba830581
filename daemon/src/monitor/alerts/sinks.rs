//! Where alert notifications go: the log, and an optional webhook.
//!
//! The webhook receives a JSON POST shaped like Alertmanager's webhook payload (`status`,
//! `alerts[]` with `labels`, `annotations`, `startsAt`, `endsAt`), so existing receivers can read
//! it. Delivery is retried with exponential backoff and runs behind its own circuit breaker, so a
//! dead receiver costs one rejected call per notification instead of a timeout each. Invariant:
//! notifications are delivered by one task, in the order the engine produced them; the engine
//! never waits for a sink (a full queue drops the notification and logs it).

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use serde_json::{Value, json};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use super::{AlertStatus, Notification};
use crate::resilience::{Breaker, CallError};

/// Notifications waiting for the sinks; beyond this they are dropped (and logged).
const QUEUE: usize = 256;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("webhook answered {0}")]
    Status(u16),
    #[error("webhook request failed: {0}")]
    Request(String),
    #[error("webhook timed out after {0:?}")]
    Timeout(Duration),
    #[error("{0}")]
    Open(String),
}

/// One destination.
#[async_trait::async_trait]
pub trait AlertSink: Send + Sync + std::fmt::Debug {
    fn name(&self) -> &'static str;
    async fn send(&self, notification: &Notification) -> Result<(), Error>;
}

/// Writes each notification to the log: firing as a warning, resolved as information.
#[derive(Debug)]
pub struct LogSink;

#[async_trait::async_trait]
impl AlertSink for LogSink {
    fn name(&self) -> &'static str {
        "log"
    }

    async fn send(&self, n: &Notification) -> Result<(), Error> {
        let a = &n.alert;
        match n.status {
            AlertStatus::Firing => {
                tracing::warn!(alert = %a.rule, severity = ?a.severity, id = a.id, "alert firing: {}", a.message)
            }
            AlertStatus::Resolved => tracing::info!(alert = %a.rule, id = a.id, "alert resolved: {}", a.message),
        }
        Ok(())
    }
}

/// How the webhook is called.
#[derive(Debug, Clone)]
pub struct WebhookSettings {
    /// An `http://` URL (the daemon has no TLS client; put a relay next to it for HTTPS).
    pub url: String,
    pub timeout: Duration,
    /// Attempts after the first.
    pub retries: u32,
    /// Delay before the first retry; doubled at each.
    pub backoff: Duration,
    /// This daemon, in the payload's labels.
    pub instance: String,
}

#[derive(Debug)]
pub struct WebhookSink {
    settings: WebhookSettings,
    client: Client<HttpConnector, Full<Bytes>>,
    breaker: Breaker,
}

pub fn rfc3339(ms: u64) -> String {
    let secs = (ms / 1000) as i64;
    let (days, rem) = (secs.div_euclid(86_400), secs.rem_euclid(86_400));
    // Civil date from days since 1970-01-01 (Howard Hinnant's algorithm).
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!("{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}.{:03}Z", rem / 3600, rem % 3600 / 60, rem % 60, ms % 1000)
}

/// The JSON a webhook receives.
pub fn payload(n: &Notification, instance: &str) -> Value {
    let a = &n.alert;
    let status = match n.status {
        AlertStatus::Firing => "firing",
        AlertStatus::Resolved => "resolved",
    };
    json!({
        "version": "4",
        "receiver": "voxperfd",
        "status": status,
        "groupLabels": { "alertname": a.rule },
        "commonLabels": { "alertname": a.rule, "instance": instance },
        "alerts": [{
            "status": status,
            "labels": { "alertname": a.rule, "severity": a.severity, "instance": instance },
            "annotations": { "summary": a.summary, "description": a.message },
            "startsAt": rfc3339(a.fired_ms),
            "endsAt": a.resolved_ms.map(rfc3339),
            "fingerprint": format!("{}-{}", a.rule, a.id),
            "value": a.value,
            "threshold": a.threshold,
        }],
    })
}

impl WebhookSink {
    pub fn new(settings: WebhookSettings, breaker: Breaker) -> Self {
        let client = Client::builder(TokioExecutor::new()).build_http();
        Self { settings, client, breaker }
    }

    async fn post_once(&self, body: Bytes) -> Result<(), Error> {
        let request = axum::http::Request::post(&self.settings.url)
            .header("content-type", "application/json")
            .header("user-agent", "voxperfd")
            .body(Full::new(body))
            .map_err(|e| Error::Request(e.to_string()))?;
        let call = async {
            let response = self.client.request(request).await.map_err(|e| Error::Request(e.to_string()))?;
            let status = response.status();
            // Read the body so the connection can be reused.
            let _ = response.into_body().collect().await;
            if status.is_success() { Ok(()) } else { Err(Error::Status(status.as_u16())) }
        };
        let guarded = self.breaker.call(async {
            tokio::time::timeout(self.settings.timeout, call)
                .await
                .unwrap_or(Err(Error::Timeout(self.settings.timeout)))
        });
        match guarded.await {
            Ok(()) => Ok(()),
            Err(CallError::Inner(e)) => Err(e),
            Err(open @ CallError::Open { .. }) => Err(Error::Open(open.to_string())),
        }
    }
}

#[async_trait::async_trait]
impl AlertSink for WebhookSink {
    fn name(&self) -> &'static str {
        "webhook"
    }

    async fn send(&self, n: &Notification) -> Result<(), Error> {
        let body = Bytes::from(payload(n, &self.settings.instance).to_string());
        let mut delay = self.settings.backoff;
        let mut attempt = 0;
        loop {
            match self.post_once(body.clone()).await {
                Ok(()) => return Ok(()),
                // An open breaker will not close within our backoff: give up at once.
                Err(e @ Error::Open(_)) => return Err(e),
                Err(e) if attempt >= self.settings.retries => return Err(e),
                Err(e) => {
                    tracing::debug!(error = %e, attempt, "webhook delivery failed; retrying");
                    attempt += 1;
                    tokio::time::sleep(delay).await;
                    delay = delay.saturating_mul(2);
                }
            }
        }
    }
}

/// The engine's side of the queue.
#[derive(Debug, Clone)]
pub struct Dispatcher {
    tx: mpsc::Sender<Notification>,
}

impl Dispatcher {
    /// The queue: the engine keeps the sender, [`spawn`](Self::spawn) empties the receiver.
    pub fn channel() -> (Self, mpsc::Receiver<Notification>) {
        let (tx, rx) = mpsc::channel::<Notification>(QUEUE);
        (Self { tx }, rx)
    }

    /// The task that delivers queued notifications to every sink, in order, until `shutdown`.
    pub fn spawn(
        sinks: Vec<Arc<dyn AlertSink>>,
        mut rx: mpsc::Receiver<Notification>,
        shutdown: CancellationToken,
    ) -> tokio::task::JoinHandle<()> {
        tokio::spawn(async move {
            loop {
                let next = tokio::select! {
                    n = rx.recv() => n,
                    () = shutdown.cancelled() => None,
                };
                let Some(notification) = next else { break };
                for sink in &sinks {
                    if let Err(e) = sink.send(&notification).await {
                        tracing::warn!(sink = sink.name(), alert = %notification.alert.rule, error = %e,
                            "alert notification not delivered");
                    }
                }
            }
        })
    }

    pub fn send(&self, notification: Notification) {
        if let Err(e) = self.tx.try_send(notification) {
            tracing::warn!(error = %e, "alert notification queue full or closed; notification dropped");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timestamps_are_rfc3339_in_utc() {
        assert_eq!(rfc3339(0), "1970-01-01T00:00:00.000Z");
        assert_eq!(rfc3339(1_700_000_000_123), "2023-11-14T22:13:20.123Z");
        assert_eq!(rfc3339(951_782_400_000), "2000-02-29T00:00:00.000Z");
    }
}
