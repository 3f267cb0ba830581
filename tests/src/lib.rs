//! Support for the end-to-end tests in `tests/`: connections to the project-local PostgreSQL
//! that `make test` starts (with voxperf preloaded), control of that server through the
//! project's scripts, and small helpers to read voxperf's views.
//!
//! The tests run against real services. When `DATABASE_URL` is missing they fail with a message
//! saying how to run them, never pass silently.

use std::path::PathBuf;
use std::process::Command;
use tokio_postgres::{Client, NoTls};

pub fn database_url() -> String {
    std::env::var("DATABASE_URL").expect(
        "DATABASE_URL is not set: these tests need the project's PostgreSQL with voxperf preloaded; run them with `make test`",
    )
}

/// A connection to the test database; the connection task runs in the background.
pub async fn connect() -> Client {
    connect_to(&database_url()).await
}

/// A connection whose NOTIFY messages arrive on the returned channel as (channel, payload).
pub async fn connect_listening() -> (Client, tokio::sync::mpsc::UnboundedReceiver<(String, String)>) {
    let url = database_url();
    let (client, mut conn) =
        tokio_postgres::connect(&url, NoTls).await.unwrap_or_else(|e| panic!("cannot connect to {url}: {e}"));
    let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
    tokio::spawn(async move {
        while let Some(message) = std::future::poll_fn(|cx| conn.poll_message(cx)).await {
            match message {
                Ok(tokio_postgres::AsyncMessage::Notification(n)) => {
                    let _ = tx.send((n.channel().to_string(), n.payload().to_string()));
                }
                Ok(_) => {}
                Err(_) => break,
            }
        }
    });
    (client, rx)
}

pub async fn connect_to(url: &str) -> Client {
    let (client, conn) =
        tokio_postgres::connect(url, NoTls).await.unwrap_or_else(|e| panic!("cannot connect to {url}: {e}"));
    tokio::spawn(async move {
        let _ = conn.await;
    });
    client
}

/// The URL of the same server as another user.
pub fn url_as(user: &str) -> String {
    let url = database_url();
    match url.split_once("://").and_then(|(scheme, rest)| rest.split_once('@').map(|(_, host)| (scheme, host))) {
        Some((scheme, host)) => format!("{scheme}://{user}@{host}"),
        None => panic!("DATABASE_URL must look like postgres://user@host:port/db, got {url}"),
    }
}

pub fn scripts_dir() -> PathBuf {
    std::env::var_os("VOXPERF_SCRIPTS")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../scripts"))
}

/// Run `scripts/pg.sh <args>` (start, stop, restart [fast|immediate], ...) and fail the test if
/// it fails.
pub fn pg_script(args: &[&str]) {
    let script = scripts_dir().join("pg.sh");
    let status =
        Command::new(&script).args(args).status().unwrap_or_else(|e| panic!("cannot run {}: {e}", script.display()));
    assert!(status.success(), "{} {args:?} failed: {status}", script.display());
}

/// A unique marker to embed in statements, so that tests sharing the server find their own.
pub fn marker(name: &str) -> String {
    let nanos = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_nanos();
    format!("{name}_{}_{nanos}", std::process::id())
}

/// Create a function named after a fresh marker and return its name. Statements that call it
/// get a query id of their own: query ids are computed from the parse tree (which holds the
/// function's OID), not from names, aliases or constants, so a marker in a constant or a column
/// alias would share its entry with every other statement of the same shape.
pub async fn unique_function(client: &Client, name: &str) -> String {
    let m = marker(name);
    client.batch_execute(&format!("CREATE FUNCTION {m}() RETURNS int LANGUAGE sql AS 'SELECT 1'")).await.unwrap();
    m
}

/// One row of `voxperf.query_stats`, the columns the tests look at.
#[derive(Debug, Clone)]
pub struct Stat {
    pub query: Option<String>,
    pub queryid: Option<i64>,
    pub toplevel: bool,
    pub calls: i64,
    pub rows: i64,
    pub total_exec_time: f64,
    pub min_exec_time: f64,
    pub max_exec_time: f64,
    pub p50: Option<f64>,
    pub p95: Option<f64>,
    pub p99: Option<f64>,
    pub username: String,
}

/// Entries whose text contains `needle`.
pub async fn stats_matching(client: &Client, needle: &str) -> Vec<Stat> {
    client
        .query(
            "SELECT s.query, s.queryid, s.toplevel, s.calls, s.rows, s.total_exec_time, s.min_exec_time,
                    s.max_exec_time, s.p50_exec_time, s.p95_exec_time, s.p99_exec_time, r.rolname::text
             FROM voxperf.query_stats s JOIN pg_roles r ON r.oid = s.userid
             WHERE s.query LIKE '%' || $1 || '%'",
            &[&needle],
        )
        .await
        .expect("voxperf.query_stats")
        .iter()
        .map(|r| Stat {
            query: r.get(0),
            queryid: r.get(1),
            toplevel: r.get(2),
            calls: r.get(3),
            rows: r.get(4),
            total_exec_time: r.get(5),
            min_exec_time: r.get(6),
            max_exec_time: r.get(7),
            p50: r.get(8),
            p95: r.get(9),
            p99: r.get(10),
            username: r.get(11),
        })
        .collect()
}

/// The URL of database `db` on the test server, as the same user.
pub fn url_for_database(db: &str) -> String {
    let url = database_url();
    let without_query = url.split('?').next().unwrap_or(&url);
    match without_query.rsplit_once('/') {
        Some((server, _)) if server.contains("://") && !server.ends_with('/') => format!("{server}/{db}"),
        _ => panic!("DATABASE_URL must look like postgres://user@host:port/db, got {url}"),
    }
}

/// A new, empty database named after a fresh marker, with the voxperf extension created;
/// returns its name and a connection to it. The statistics are kept per database, so a test
/// that needs a workload of its own (the index advisor's) gets one here.
pub async fn fresh_database(name: &str) -> (String, Client) {
    let db = marker(name);
    connect().await.batch_execute(&format!("CREATE DATABASE {db}")).await.unwrap();
    let client = connect_to(&url_for_database(&db)).await;
    client.batch_execute("CREATE EXTENSION voxperf").await.unwrap();
    (db, client)
}

/// The repository's root (where `sql/` is).
pub fn repo_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..")
}

/// Run a psql script of the repository (`sql/...`) against database `db`, with `-v` variables;
/// fail the test if psql fails. Statements run one by one at top level, as a client sends them.
pub fn psql_file(db: &str, file: &str, vars: &[(&str, &str)]) {
    let path = repo_dir().join(file);
    let mut cmd = Command::new("psql");
    cmd.arg("--no-psqlrc").arg("-q").arg("-v").arg("ON_ERROR_STOP=1").arg("-d").arg(url_for_database(db));
    for (k, v) in vars {
        cmd.arg("-v").arg(format!("{k}={v}"));
    }
    let out = cmd.arg("-f").arg(&path).output().unwrap_or_else(|e| panic!("cannot run psql: {e}"));
    assert!(
        out.status.success(),
        "psql -f {} failed: {}\n{}",
        path.display(),
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
}
