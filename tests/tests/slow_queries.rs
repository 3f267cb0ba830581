//! The slow-query log: executions over `voxperf.slow_query_threshold` with text and plan.

use voxperf_e2e::{connect, connect_to, marker, url_as};

#[tokio::test]
async fn a_statement_over_the_default_threshold_is_logged_with_its_plan() {
    let c = connect().await;
    let m = marker("slow");
    // The default threshold is 1000 ms, the platform's SLOW_QUERY_THRESHOLD.
    let default: String = c
        .query_one("SELECT boot_val FROM pg_settings WHERE name = 'voxperf.slow_query_threshold'", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(default, "1000");
    c.batch_execute("SET voxperf.slow_query_threshold = 1000").await.unwrap();
    c.simple_query(&format!("SELECT pg_sleep(1.2) AS {m}")).await.unwrap();
    let row = c
        .query_one(
            "SELECT duration, rows, query, plan, plan_json::text, username::text, datname::text, toplevel, pid
             FROM voxperf.slow_queries WHERE query LIKE '%' || $1 || '%'",
            &[&m],
        )
        .await
        .expect("the slow statement is in voxperf.slow_queries");
    let duration: f64 = row.get(0);
    assert!(duration >= 1200.0, "duration in ms: {duration}");
    assert_eq!(row.get::<_, i64>(1), 1);
    assert_eq!(row.get::<_, String>(2), format!("SELECT pg_sleep(1.2) AS {m}"), "the text as sent, literals included");
    assert!(row.get::<_, String>(3).starts_with("Result"), "text plan: {}", row.get::<_, String>(3));
    let json: serde_json::Value = serde_json::from_str(&row.get::<_, String>(4)).unwrap();
    assert_eq!(json["Plan"]["Node Type"], "Result");
    assert_eq!(row.get::<_, String>(5), "postgres");
    assert!(row.get::<_, bool>(7));
    // Fast statements are not logged.
    c.simple_query(&format!("SELECT 1 AS {m}_fast")).await.unwrap();
    let fast: i64 = c
        .query_one(
            "SELECT count(*) FROM voxperf.slow_queries WHERE query LIKE '%' || $1 || '%'",
            &[&format!("{m}_fast")],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(fast, 0);
}

#[tokio::test]
async fn slow_utility_statements_are_logged_without_a_plan() {
    let c = connect().await;
    let m = marker("slowutil");
    c.batch_execute("SET voxperf.slow_query_threshold = 0").await.unwrap();
    c.batch_execute(&format!("CREATE TABLE {m} (id int)")).await.unwrap();
    c.batch_execute("RESET voxperf.slow_query_threshold").await.unwrap();
    let row = c
        .query_one(
            "SELECT plan, plan_json::text FROM voxperf.slow_queries WHERE query = $1",
            &[&format!("CREATE TABLE {m} (id int)")],
        )
        .await
        .unwrap();
    assert_eq!((row.get::<_, Option<String>>(0), row.get::<_, Option<String>>(1)), (None, None));
    c.batch_execute(&format!("DROP TABLE {m}")).await.unwrap();
}

#[tokio::test]
async fn slow_statement_texts_of_other_users_are_hidden() {
    let admin = connect().await;
    let m = marker("slowpriv");
    let role = format!("{m}_role");
    admin.batch_execute(&format!("CREATE ROLE {role} LOGIN")).await.unwrap();
    admin.batch_execute("SET voxperf.slow_query_threshold = 0").await.unwrap();
    admin.simple_query(&format!("SELECT 'secret' AS {m}")).await.unwrap();
    let user = connect_to(&url_as(&role)).await;
    let rows = user
        .query("SELECT query, plan, queryid FROM voxperf.slow_queries WHERE username = 'postgres'", &[])
        .await
        .unwrap();
    assert!(!rows.is_empty());
    for r in rows {
        assert_eq!(r.get::<_, Option<String>>(0).as_deref(), Some("<insufficient privilege>"));
        assert_eq!(r.get::<_, Option<String>>(1), None);
        assert_eq!(r.get::<_, Option<i64>>(2), None);
    }
    drop(user);
    admin.batch_execute(&format!("DROP ROLE {role}")).await.unwrap();
}
