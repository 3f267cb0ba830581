//! End to end: trends survive a daemon restart. The real `voxperfd` binary runs against the
//! project's Postgres and Redis, collects, and is stopped with SIGTERM (which saves the open
//! buckets); a second process with the same `VOXPERF_INSTANCE` serves the first one's history.
//!
//! The test waits for the daemon's own log lines (listening, trends saved, history loaded), never
//! for a fixed time.

mod common;

use std::io::{BufRead, BufReader, Lines};
use std::process::{Child, ChildStdout, Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

use common::{database_url, free_port, http_get, pg, redis_url, unique};
use serde_json::Value;

/// A running daemon and the lines it logs, read on a thread.
struct Daemon {
    child: Child,
    lines: mpsc::Receiver<String>,
    base: String,
}

impl Daemon {
    fn start(instance: &str, prefix: &str) -> Self {
        let port = free_port();
        let mut child = Command::new(env!("CARGO_BIN_EXE_voxperfd"))
            .env_clear()
            .env("PATH", std::env::var("PATH").unwrap_or_default())
            .env("DATABASE_URL", database_url())
            .env("REDIS_URL", redis_url())
            .env("REDIS_KEY_PREFIX", prefix)
            .env("VOXPERF_LISTEN", format!("127.0.0.1:{port}"))
            .env("VOXPERF_INSTANCE", instance)
            .env("METRICS_INTERVAL", "200")
            .env("RUST_LOG", "voxperfd=debug,tower_http=warn")
            .env("NO_COLOR", "1")
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("the voxperfd binary starts");
        let stdout = child.stdout.take().unwrap();
        let (tx, lines) = mpsc::channel();
        std::thread::spawn(move || {
            let reader: Lines<BufReader<ChildStdout>> = BufReader::new(stdout).lines();
            for line in reader.map_while(Result::ok) {
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        let daemon = Self { child, lines, base: format!("http://127.0.0.1:{port}") };
        daemon.wait_for("voxperfd listening");
        daemon
    }

    /// Blocks until a logged line contains `text` (at most a minute); returns it.
    fn wait_for(&self, text: &str) -> String {
        loop {
            match self.lines.recv_timeout(Duration::from_secs(60)) {
                Ok(line) if line.contains(text) => return line,
                Ok(_) => continue,
                Err(e) => panic!("voxperfd never logged {text:?}: {e}"),
            }
        }
    }

    async fn json(&self, path: &str) -> Value {
        let (status, body) = http_get(&format!("{}{path}", self.base)).await;
        assert_eq!(status, 200, "{path}: {body}");
        serde_json::from_str(&body).unwrap()
    }

    /// SIGTERM, then waits for the graceful exit.
    fn stop(mut self) {
        let status = Command::new("kill").args(["-TERM", &self.child.id().to_string()]).status().unwrap();
        assert!(status.success());
        self.wait_for("trends saved at shutdown");
        let exit = self.child.wait().unwrap();
        assert!(exit.success(), "voxperfd exited with {exit}");
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn points(series: &Value) -> Vec<(u64, u64)> {
    series["points"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| (p["t"].as_u64().unwrap(), p["count"].as_u64().unwrap()))
        .collect()
}

#[tokio::test]
async fn trends_survive_a_daemon_restart() {
    let instance = unique("restart-e2e");
    let prefix = format!("{}:", unique("restart"));
    let first = Daemon::start(&instance, &prefix);
    first.wait_for("trend history loaded");
    for _ in 0..5 {
        first.json("/api/performance/stats").await;
    }
    first.wait_for("trends saved");
    let query = "/api/performance/trends?metric=system.memory&window=15m&step=10s";
    let before = points(&first.json(query).await);
    assert!(!before.is_empty(), "the first daemon collected");
    first.stop();

    let stored: i64 = pg()
        .await
        .query_one("SELECT count(*) FROM voxperfd.trend_buckets WHERE instance = $1", &[&instance])
        .await
        .unwrap()
        .get(0);
    assert!(stored > 0, "buckets are in Postgres");

    let second = Daemon::start(&instance, &prefix);
    let loaded = second.wait_for("trend history loaded");
    assert!(!loaded.contains("buckets=0"), "{loaded}");
    let after = points(&second.json(query).await);
    for (t, count) in &before {
        assert!(
            after.iter().any(|(t2, c2)| t2 == t && c2 >= count),
            "the point at {t} ({count} samples) survived the restart: before {before:?}, after {after:?}"
        );
    }
    second.stop();
    pg().await.execute("DELETE FROM voxperfd.trend_buckets WHERE instance = $1", &[&instance]).await.unwrap();
}
