//! Shared helpers for the daemon's integration tests.
//!
//! Services: `DATABASE_URL` (Postgres with the voxperf extension) and `REDIS_URL`, exported by
//! `make test`. A test that needs one and does not find it fails with a message saying so — it
//! never passes silently. Tests that stop Redis start their own `redis-server` on a free port.

#![allow(dead_code)]

use std::io::{BufRead, BufReader};
use std::net::TcpListener;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::body::Body;
use axum::http::{Request, Response, StatusCode};
use serde_json::Value;
use tokio_postgres::NoTls;
use tokio_util::sync::CancellationToken;
use tower::ServiceExt;
use voxperfd::AppState;
use voxperfd::clock::{ManualClock, SharedClock};
use voxperfd::config::Config;

pub fn database_url() -> String {
    std::env::var("DATABASE_URL").unwrap_or_else(|_| {
        panic!(
            "DATABASE_URL is not set: this test needs Postgres with the voxperf extension. \
             Run it through `make test`, which starts one and exports DATABASE_URL."
        )
    })
}

pub fn redis_url() -> String {
    std::env::var("REDIS_URL").unwrap_or_else(|_| {
        panic!(
            "REDIS_URL is not set: this test needs Redis. Run it through `make test`, which \
             starts one and exports REDIS_URL."
        )
    })
}

/// A configuration from the given variables only (the process environment is ignored, so a
/// developer's shell cannot change a test).
///
/// Unless a test names its own `VOXPERF_INSTANCE`, tests share the instance `voxperfd-tests`, so
/// the trend history they write to Postgres never mixes with a developer's daemon (whose default
/// instance is host:port) and stays bounded by the trend retention.
pub fn config(vars: &[(&str, &str)]) -> Config {
    let mut all: Vec<(String, String)> = vars.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
    if !all.iter().any(|(k, _)| k == "VOXPERF_INSTANCE") {
        all.push(("VOXPERF_INSTANCE".into(), "voxperfd-tests".into()));
    }
    Config::from_vars(all).expect("test configuration is valid")
}

/// A unique prefix per test so tests sharing one Redis never see each other's keys.
pub fn unique(name: &str) -> String {
    format!("{name}_{:08x}", rand::random::<u32>())
}

pub async fn pg() -> tokio_postgres::Client {
    let (client, connection) = tokio_postgres::connect(&database_url(), NoTls)
        .await
        .unwrap_or_else(|e| panic!("cannot connect to DATABASE_URL: {e}"));
    tokio::spawn(connection);
    client
}

/// Fails clearly when the extension's invalidation function is missing.
pub async fn require_watch_table(client: &tokio_postgres::Client) {
    let row =
        client.query_one("SELECT to_regprocedure('voxperf.watch_table(regclass)') IS NOT NULL", &[]).await.unwrap();
    assert!(
        row.get::<_, bool>(0),
        "voxperf.watch_table(regclass) does not exist in DATABASE_URL's database: \
         the voxperf extension (with watch_table) must be installed (`make test` does it)"
    );
}

/// A fresh table `public.<name>(id int primary key, v text)` with rows (1,'a'), (2,'b').
pub async fn table(client: &tokio_postgres::Client, name: &str) -> String {
    let name = unique(name);
    client
        .batch_execute(&format!(
            "CREATE TABLE public.{name} (id int PRIMARY KEY, v text);
             INSERT INTO public.{name} VALUES (1, 'a'), (2, 'b');"
        ))
        .await
        .unwrap();
    name
}

/// An app state with its background tasks running, on a manual clock.
pub struct TestApp {
    pub state: AppState,
    pub clock: Arc<ManualClock>,
    pub router: Router,
    shutdown: CancellationToken,
}

impl TestApp {
    pub async fn start(config: Config) -> Self {
        let clock = Arc::new(ManualClock::new());
        let shared: SharedClock = clock.clone();
        let state = AppState::with_clock(config, shared).expect("state builds");
        let shutdown = CancellationToken::new();
        state.start(shutdown.clone());
        let app = Self { router: voxperfd::app(state.clone()), state, clock, shutdown };
        app.listening(0).await;
        app
    }

    /// Waits until the listener is connected after at least `reconnects` reconnects.
    pub async fn listening(&self, reconnects: u64) {
        let mut rx = self.state.listener.subscribe();
        tokio::time::timeout(Duration::from_secs(20), rx.wait_for(|s| s.connected && s.reconnects >= reconnects))
            .await
            .expect("invalidation listener connects within 20 s")
            .unwrap();
    }

    /// Waits until the listener has applied at least `count` notifications in total.
    pub async fn notified(&self, count: u64) {
        let mut rx = self.state.listener.subscribe();
        tokio::time::timeout(Duration::from_secs(10), rx.wait_for(|s| s.notifications >= count))
            .await
            .unwrap_or_else(|_| panic!("notification {count} not received within 10 s"))
            .unwrap();
    }

    /// Waits until this app has processed an invalidation of `table` (canonical name) after
    /// generation `since` — evaluated at each notification the listener applies, no polling.
    pub async fn invalidated(&self, table: &str, since: u64) {
        let tag = format!("table:{table}");
        let cache = self.state.cache.clone();
        let mut rx = self.state.listener.subscribe();
        tokio::time::timeout(Duration::from_secs(10), rx.wait_for(|_| cache.generation(&tag) > since))
            .await
            .unwrap_or_else(|_| panic!("no invalidation of {table} within 10 s (is it watched?)"))
            .unwrap();
    }

    pub fn generation(&self, table: &str) -> u64 {
        self.state.cache.generation(&format!("table:{table}"))
    }

    pub fn notifications(&self) -> u64 {
        self.state.listener.status().notifications
    }

    pub async fn send(&self, request: Request<Body>) -> Response<Body> {
        self.router.clone().oneshot(request).await.unwrap()
    }

    /// `POST /api/cache/query`; returns (status, body).
    pub async fn query(&self, sql: &str, params: Value) -> (StatusCode, Value) {
        let body = serde_json::json!({ "sql": sql, "params": params });
        let response = self.send(post_json("/api/cache/query", &body)).await;
        let status = response.status();
        (status, body_json(response).await)
    }
}

impl Drop for TestApp {
    fn drop(&mut self) {
        self.shutdown.cancel();
    }
}

pub fn post_json(uri: &str, body: &Value) -> Request<Body> {
    Request::post(uri).header("content-type", "application/json").body(Body::from(body.to_string())).unwrap()
}

pub fn get(uri: &str) -> Request<Body> {
    Request::get(uri).body(Body::empty()).unwrap()
}

pub async fn body_bytes(response: Response<Body>) -> bytes::Bytes {
    axum::body::to_bytes(response.into_body(), usize::MAX).await.unwrap()
}

pub async fn body_json(response: Response<Body>) -> Value {
    let bytes = body_bytes(response).await;
    serde_json::from_slice(&bytes)
        .unwrap_or_else(|e| panic!("body is not JSON ({e}): {}", String::from_utf8_lossy(&bytes)))
}

/// `GET url` over real HTTP (for daemons started as processes): status and body.
pub async fn http_get(url: &str) -> (u16, String) {
    use http_body_util::BodyExt;
    let client = hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
        .build_http::<http_body_util::Empty<bytes::Bytes>>();
    let response = client.get(url.parse().unwrap()).await.unwrap_or_else(|e| panic!("GET {url}: {e}"));
    let status = response.status().as_u16();
    let body = response.into_body().collect().await.unwrap().to_bytes();
    (status, String::from_utf8_lossy(&body).into_owned())
}

/// A free loopback port (bound and released: good enough for a test's own daemon).
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

/// A redis-server of the test's own, on a free loopback port, that the test may stop and start.
pub struct OwnRedis {
    pub port: u16,
    child: Option<Child>,
}

impl OwnRedis {
    pub fn start() -> Self {
        let port = TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
        let mut redis = Self { port, child: None };
        redis.restart();
        redis
    }

    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}/", self.port)
    }

    /// Starts the server and returns once it logs that it accepts connections.
    pub fn restart(&mut self) {
        assert!(self.child.is_none(), "already running");
        let mut child = Command::new("redis-server")
            .args(["--port", &self.port.to_string(), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"])
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("redis-server must be on PATH for this test");
        let stdout = child.stdout.take().unwrap();
        let mut lines = BufReader::new(stdout).lines();
        loop {
            match lines.next() {
                Some(Ok(line)) if line.contains("Ready to accept connections") => break,
                Some(_) => continue,
                None => panic!("redis-server on port {} exited before it was ready", self.port),
            }
        }
        // Keep draining its output so the server never blocks on a full pipe.
        std::thread::spawn(move || for _ in lines {});
        self.child = Some(child);
    }

    /// Kills the server (its data is gone: it saves nothing).
    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

impl Drop for OwnRedis {
    fn drop(&mut self) {
        self.stop();
    }
}

/// What a [`RedisProxy`] does with the bytes it is given.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ProxyMode {
    /// Passes every byte through at once.
    Forward,
    /// Holds every byte (both ways) until the mode changes: Redis seems to hang.
    Stall,
    /// Drops every connection and closes new ones at once: Redis seems unreachable.
    Refuse,
}

/// A loopback TCP proxy in front of a Redis, so that one daemon (or one cache) can find Redis
/// slow or unreachable while the others, and the test itself, still reach it directly.
pub struct RedisProxy {
    port: u16,
    mode: Arc<tokio::sync::watch::Sender<ProxyMode>>,
    accept: tokio::task::JoinHandle<()>,
}

impl RedisProxy {
    /// Starts forwarding to the Redis of `upstream` (a `redis://host:port/` URL).
    pub async fn start(upstream: &str) -> Self {
        let target = upstream.trim_start_matches("redis://").trim_end_matches('/').to_owned();
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let mode = Arc::new(tokio::sync::watch::Sender::new(ProxyMode::Forward));
        let accept = {
            let mode = mode.clone();
            tokio::spawn(async move {
                while let Ok((client, _)) = listener.accept().await {
                    if *mode.borrow() == ProxyMode::Refuse {
                        continue; // dropped: closed at once
                    }
                    let Ok(server) = tokio::net::TcpStream::connect(&target).await else { continue };
                    let (client_read, client_write) = client.into_split();
                    let (server_read, server_write) = server.into_split();
                    let (up, down) = (mode.subscribe(), mode.subscribe());
                    tokio::spawn(async move {
                        // Either direction ending closes both sockets.
                        tokio::select! {
                            () = Self::pipe(client_read, server_write, up) => {}
                            () = Self::pipe(server_read, client_write, down) => {}
                        }
                    });
                }
            })
        };
        Self { port, mode, accept }
    }

    async fn pipe(
        mut from: tokio::net::tcp::OwnedReadHalf,
        mut to: tokio::net::tcp::OwnedWriteHalf,
        mut mode: tokio::sync::watch::Receiver<ProxyMode>,
    ) {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let mut buf = vec![0u8; 16 * 1024];
        loop {
            let n = tokio::select! {
                read = from.read(&mut buf) => match read {
                    Ok(0) | Err(_) => return,
                    Ok(n) => n,
                },
                _ = mode.wait_for(|m| *m == ProxyMode::Refuse) => return,
            };
            match mode.wait_for(|m| *m != ProxyMode::Stall).await {
                Ok(m) if *m == ProxyMode::Forward => {}
                _ => return,
            }
            if to.write_all(&buf[..n]).await.is_err() {
                return;
            }
        }
    }

    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}/", self.port)
    }

    pub fn set_mode(&self, mode: ProxyMode) {
        self.mode.send_replace(mode);
    }
}

impl Drop for RedisProxy {
    fn drop(&mut self) {
        self.accept.abort();
        self.mode.send_replace(ProxyMode::Refuse);
    }
}
