//! Statistics across restarts: kept over a clean restart, kept up to the last save over a
//! crash, and never loaded from a corrupt file. (Its own test binary, run serially: it restarts
//! the server.)

use std::time::Duration;
use voxperf_e2e::{connect, pg_script, stats_matching, unique_function};

async fn run(sql: &str, times: usize) {
    let c = connect().await;
    for _ in 0..times {
        c.simple_query(sql).await.unwrap();
    }
}

async fn calls_of(needle: &str) -> Option<i64> {
    let c = connect().await;
    stats_matching(&c, needle).await.first().map(|s| s.calls)
}

async fn data_directory() -> String {
    connect().await.query_one("SHOW data_directory", &[]).await.unwrap().get(0)
}

/// After a backend crash the postmaster first drops every connection, then recovers: wait until
/// a connection sees a server that started after the crash.
async fn wait_for_recovery() {
    let before = std::time::SystemTime::now();
    for _ in 0..300 {
        if let Ok((c, conn)) = tokio_postgres::connect(&voxperf_e2e::database_url(), tokio_postgres::NoTls).await {
            tokio::spawn(conn);
            // The checkpointer is restarted by the recovery: once it is younger than the crash,
            // shared memory has been rebuilt.
            let age = c
                .query_one(
                    "SELECT extract(epoch FROM now() - backend_start)::float8 FROM pg_stat_activity WHERE backend_type = 'checkpointer'",
                    &[],
                )
                .await;
            if let Ok(row) = age
                && row.get::<_, f64>(0) <= before.elapsed().unwrap().as_secs_f64()
            {
                return;
            }
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("the server did not recover from the crash");
}

async fn wait_for_server() {
    for _ in 0..100 {
        if tokio_postgres::connect(&voxperf_e2e::database_url(), tokio_postgres::NoTls).await.is_ok() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("server did not come back");
}

#[tokio::test]
async fn statistics_survive_restarts_and_crashes_and_ignore_corrupt_files() {
    // 1. A clean restart keeps everything, percentiles included.
    let clean = unique_function(&connect().await, "clean").await;
    run(&format!("SELECT {clean}()"), 7).await;
    let clean_sql = format!("SELECT {clean}()");
    let before = stats_matching(&connect().await, &clean_sql).await;
    pg_script(&["restart", "fast"]);
    wait_for_server().await;
    let after = stats_matching(&connect().await, &clean_sql).await;
    assert_eq!(after.len(), 1, "kept over a clean restart");
    assert_eq!(after[0].calls, 7);
    assert_eq!(after[0].p99, before[0].p99);
    assert_eq!(after[0].queryid, before[0].queryid);

    // 2. A crash (a backend killed: the postmaster resets shared memory and recovers) loses only
    //    what was recorded after the last save. (An immediate shutdown is not a crash: shared
    //    memory is intact and is saved on the way down, as pg_stat_statements does.)
    let saved = unique_function(&connect().await, "saved").await;
    let unsaved = unique_function(&connect().await, "unsaved").await;
    run(&format!("SELECT {saved}()"), 5).await;
    let n: i64 = connect().await.query_one("SELECT voxperf.save_stats()", &[]).await.unwrap().get(0);
    assert!(n > 0);
    run(&format!("SELECT {unsaved}()"), 3).await;
    let victim: i32 = connect().await.query_one("SELECT pg_backend_pid()", &[]).await.unwrap().get(0);
    let killed = std::process::Command::new("kill").args(["-KILL", &victim.to_string()]).status().unwrap();
    assert!(killed.success());
    wait_for_recovery().await;
    assert_eq!(calls_of(&format!("SELECT {saved}()")).await, Some(5), "saved statistics come back after a crash");
    assert_eq!(calls_of(&format!("SELECT {unsaved}()")).await, None, "what was not saved is lost, nothing else");
    assert_eq!(calls_of(&clean_sql).await, Some(7));

    // 3. A corrupt file is ignored as a whole: the server starts with empty statistics.
    let dir = data_directory().await;
    pg_script(&["stop", "fast"]);
    let file = format!("{dir}/pg_stat/voxperf.stat");
    let mut bytes = std::fs::read(&file).expect("the stats file was written at shutdown");
    let mid = bytes.len() / 2;
    bytes[mid] ^= 0xFF;
    std::fs::write(&file, &bytes).unwrap();
    pg_script(&["start"]);
    wait_for_server().await;
    assert_eq!(calls_of(&clean_sql).await, None, "nothing loaded from a corrupt file");
    let c = connect().await;
    c.simple_query(&format!("SELECT {clean}(), 2")).await.unwrap();
    assert_eq!(calls_of(&format!("SELECT {clean}(), $1")).await, Some(1), "recording works after ignoring the file");
}
