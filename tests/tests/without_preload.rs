//! `CREATE EXTENSION voxperf` in a server that did not preload the library: the objects are
//! created, and every function that needs the shared memory fails with a clear error and a
//! hint naming the setting. Runs its own throwaway cluster.

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::Command;
use voxperf_e2e::connect_to;

const PGBIN: &str = "/usr/lib/postgresql/15/bin";

fn is_root() -> bool {
    Command::new("id").arg("-u").output().map(|o| o.stdout.starts_with(b"0\n")).unwrap_or(false)
}

/// Run a PostgreSQL binary as the user the server must run as (`postgres` when we are root).
fn pg(bin: &str, args: &[&str]) {
    let path = format!("{PGBIN}/{bin}");
    let status = if is_root() {
        Command::new("runuser").args(["-u", "postgres", "--", &path]).args(args).status()
    } else {
        Command::new(&path).args(args).status()
    }
    .unwrap_or_else(|e| panic!("cannot run {path}: {e}"));
    assert!(status.success(), "{bin} {args:?}: {status}");
}

struct TempCluster {
    dir: PathBuf,
    port: u16,
}

impl TempCluster {
    fn start() -> Self {
        let port = TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
        let dir = std::env::temp_dir().join(format!("voxperf-nopreload-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        if is_root() {
            Command::new("chown").args(["postgres", dir.to_str().unwrap()]).status().unwrap();
        }
        let data = dir.join("data");
        pg("initdb", &["-D", data.to_str().unwrap(), "-U", "postgres", "--auth=trust", "-E", "UTF8"]);
        let opts = format!("-p {port} -c listen_addresses=127.0.0.1 -c unix_socket_directories=''");
        pg(
            "pg_ctl",
            &["-D", data.to_str().unwrap(), "-o", &opts, "-l", dir.join("log").to_str().unwrap(), "-w", "start"],
        );
        Self { dir, port }
    }

    fn data(&self) -> PathBuf {
        self.dir.join("data")
    }
}

impl Drop for TempCluster {
    fn drop(&mut self) {
        let data = self.data();
        pg("pg_ctl", &["-D", data.to_str().unwrap(), "-m", "immediate", "-w", "stop"]);
        let _ = std::fs::remove_dir_all(Path::new(&self.dir));
    }
}

#[tokio::test]
async fn functions_fail_with_a_hint_when_the_library_is_not_preloaded() {
    let cluster = TempCluster::start();
    let c = connect_to(&format!("postgres://postgres@127.0.0.1:{}/postgres", cluster.port)).await;
    c.batch_execute("CREATE EXTENSION voxperf").await.expect("the extension installs without preloading");
    for sql in [
        "SELECT * FROM voxperf.query_stats",
        "SELECT * FROM voxperf.query_stats_info",
        "SELECT * FROM voxperf.slow_queries",
        "SELECT voxperf.reset()",
    ] {
        let err = c.simple_query(sql).await.unwrap_err();
        let db = err.as_db_error().unwrap_or_else(|| panic!("{sql}: {err}"));
        assert_eq!(db.code(), &tokio_postgres::error::SqlState::OBJECT_NOT_IN_PREREQUISITE_STATE, "{sql}");
        assert!(db.message().contains("shared_preload_libraries"), "{sql}: {}", db.message());
        assert!(db.hint().unwrap_or_default().contains("shared_preload_libraries"), "{sql}: hint {:?}", db.hint());
    }
    // Ordinary statements are unaffected.
    c.simple_query("SELECT 1").await.unwrap();
}
