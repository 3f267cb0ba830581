//! Alert notifications reach a webhook: a real HTTP receiver on loopback that fails the first
//! delivery, so the retry is exercised; the payload has Alertmanager's webhook shape.

mod common;

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use axum::Router;
use axum::http::StatusCode;
use axum::routing::post;
use common::config;
use serde_json::Value;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use voxperfd::AppState;
use voxperfd::clock::{Clock as _, ManualClock, SharedClock};
use voxperfd::monitor::alerts::sinks::{AlertSink, LogSink, WebhookSettings, WebhookSink};
use voxperfd::monitor::requests::Finished;
use voxperfd::resilience::{Breaker, BreakerSettings};

/// A receiver answering 500 to the first POST and 200 after, forwarding accepted bodies.
async fn receiver() -> (String, mpsc::UnboundedReceiver<Value>, Arc<AtomicUsize>) {
    let (tx, rx) = mpsc::unbounded_channel();
    let attempts = Arc::new(AtomicUsize::new(0));
    let seen = attempts.clone();
    let app = Router::new().route(
        "/hook",
        post(move |body: String| {
            let (tx, seen) = (tx.clone(), seen.clone());
            async move {
                if seen.fetch_add(1, Ordering::SeqCst) == 0 {
                    return StatusCode::INTERNAL_SERVER_ERROR;
                }
                tx.send(serde_json::from_str::<Value>(&body).unwrap()).unwrap();
                StatusCode::OK
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/hook", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    (url, rx, attempts)
}

async fn next_for(rx: &mut mpsc::UnboundedReceiver<Value>, alertname: &str) -> Value {
    loop {
        let body = tokio::time::timeout(Duration::from_secs(10), rx.recv())
            .await
            .unwrap_or_else(|_| panic!("no webhook for {alertname} within 10 s"))
            .unwrap();
        if body["alerts"][0]["labels"]["alertname"] == alertname {
            return body;
        }
    }
}

#[tokio::test]
async fn firing_and_resolved_alerts_are_posted_to_the_webhook_with_retries() {
    let (url, mut rx, attempts) = receiver().await;
    let clock = Arc::new(ManualClock::new());
    let shared: SharedClock = clock.clone();
    let state = AppState::with_clock(
        config(&[
            ("REDIS_ENABLED", "false"),
            ("DATABASE_URL", "postgres://nobody@127.0.0.1:1/none"),
            ("ALERT_WEBHOOK_URL", &url),
            ("ALERT_RESPONSE_TIME_THRESHOLD", "100"),
            ("ALERT_PENDING_DURATION", "0"),
            ("ALERT_RESOLVE_DURATION", "0"),
            ("VOXPERF_INSTANCE", "webhook-test"),
            // Collections are run by the test, not by a timer.
            ("PERFORMANCE_MONITORING_ENABLED", "false"),
        ]),
        shared.clone(),
    )
    .unwrap();
    let settings = WebhookSettings {
        url: url.clone(),
        timeout: Duration::from_secs(5),
        retries: 2,
        backoff: Duration::ZERO,
        instance: "webhook-test".into(),
    };
    let breaker = Breaker::new("alert_webhook", BreakerSettings::default(), shared);
    let sinks: Vec<Arc<dyn AlertSink>> = vec![Arc::new(LogSink), Arc::new(WebhookSink::new(settings, breaker))];
    state.monitor.set_sinks(sinks);
    let shutdown = CancellationToken::new();
    state.monitor.start(shutdown.clone());

    state.monitor.requests().record(Finished {
        method: "GET",
        route: "/api/numbers",
        path: "/api/numbers",
        status: 200,
        took: Duration::from_millis(400),
        request_id: None,
        at_ms: clock.unix_ms(),
    });
    state.monitor.collect().await;
    let firing = next_for(&mut rx, "high_response_time").await;
    assert_eq!(firing["status"], "firing");
    assert_eq!(firing["receiver"], "voxperfd");
    let alert = &firing["alerts"][0];
    assert_eq!(alert["labels"]["severity"], "warning");
    assert_eq!(alert["labels"]["instance"], "webhook-test");
    assert!(alert["annotations"]["description"].as_str().unwrap().contains("> 100 ms"), "{firing}");
    assert!(alert["startsAt"].as_str().unwrap().ends_with('Z'));
    assert_eq!(alert["endsAt"], Value::Null);
    assert!(attempts.load(Ordering::SeqCst) >= 2, "the first delivery failed and was retried");

    clock.advance(Duration::from_secs(30));
    state.monitor.collect().await; // no traffic: clear
    let resolved = next_for(&mut rx, "high_response_time").await;
    assert_eq!(resolved["status"], "resolved");
    assert_eq!(resolved["alerts"][0]["fingerprint"], alert["fingerprint"], "the same alert resolves");
    assert!(resolved["alerts"][0]["endsAt"].is_string());
    shutdown.cancel();
}
