//! Many clients and more distinct statements than `voxperf.max_queries`: no error, no crash,
//! cheap statements evicted, the expensive one kept. (Its own test binary: it evicts what other
//! tests would look for.)

use voxperf_e2e::{connect, stats_matching, unique_function};

/// A statement with a distinct query id for each (columns, list length) pair: both change the
/// parse tree, while the constants themselves are normalized away.
fn distinct_statement(columns: usize, list: usize) -> String {
    let cols = vec!["1"; columns].join(", ");
    let items: Vec<String> = (0..list).map(|i| i.to_string()).collect();
    format!("SELECT {cols} WHERE 1 IN ({})", items.join(", "))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn twenty_clients_past_capacity_keep_the_expensive_rare_statement() {
    let c = connect().await;
    let capacity: i64 = c.query_one("SELECT capacity FROM voxperf.query_stats_info", &[]).await.unwrap().get(0);
    let m = unique_function(&c, "rare").await;
    c.simple_query(&format!("SELECT pg_sleep(0.3), {m}()")).await.unwrap();
    let dealloc_before: i64 = c.query_one("SELECT dealloc FROM voxperf.query_stats_info", &[]).await.unwrap().get(0);

    const CLIENTS: usize = 20;
    let per_client = (capacity as usize * 3 / 2).div_ceil(CLIENTS);
    let mut tasks = Vec::new();
    for client in 0..CLIENTS {
        tasks.push(tokio::spawn(async move {
            let c = connect().await;
            for i in 0..per_client {
                let n = client * per_client + i;
                // Each statement run three times so that cheap entries have calls > 1.
                let sql = distinct_statement(1 + n % 100, 1 + n / 100);
                for _ in 0..3 {
                    c.simple_query(&sql).await.unwrap_or_else(|e| panic!("{sql}: {e}"));
                }
            }
        }));
    }
    for t in tasks {
        t.await.expect("a client failed");
    }

    let info =
        c.query_one("SELECT entries, dealloc, samples_dropped FROM voxperf.query_stats_info", &[]).await.unwrap();
    let (entries, dealloc, dropped): (i64, i64, i64) = (info.get(0), info.get(1), info.get(2));
    assert!(entries <= capacity, "{entries} entries in a table of {capacity}");
    assert!(dealloc > dealloc_before, "evictions happened");
    assert_eq!(dropped, 0, "no sample was lost to an internal error");
    let rare = stats_matching(&c, &format!("SELECT pg_sleep($1), {m}()")).await;
    assert_eq!(rare.len(), 1, "the rare but expensive statement survived eviction");
    assert!(rare[0].total_exec_time >= 300.0);
    // The server is fine: a new connection works and statistics keep flowing.
    let again = connect().await;
    again.simple_query(&format!("SELECT {m}(), 2")).await.unwrap();
    assert_eq!(stats_matching(&again, &format!("SELECT {m}(), $1")).await.len(), 1);
}
