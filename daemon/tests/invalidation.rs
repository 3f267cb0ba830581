//! The daemon against the real Postgres (with the voxperf extension) and Redis of `make test`:
//! query results cached until a write to what they read, whatever happens meanwhile.

mod common;

use std::sync::Arc;

use axum::http::StatusCode;
use bytes::Bytes;
use common::{
    ProxyMode, RedisProxy, TestApp, body_json, config, database_url, pg, post_json, redis_url, require_watch_table,
    table, unique,
};
use serde_json::json;
use tokio::sync::Barrier;
use tower::ServiceExt;

async fn app_with_prefix(prefix: &str, extra: &[(&str, &str)]) -> TestApp {
    app_with_prefix_on(&redis_url(), prefix, extra).await
}

async fn app_with_prefix_on(redis: &str, prefix: &str, extra: &[(&str, &str)]) -> TestApp {
    let db = database_url();
    let mut vars = vec![("DATABASE_URL", db.as_str()), ("REDIS_URL", redis), ("REDIS_KEY_PREFIX", prefix)];
    vars.extend_from_slice(extra);
    TestApp::start(config(&vars)).await
}

async fn app() -> TestApp {
    app_with_prefix(&format!("{}:", unique("test")), &[]).await
}

fn canonical(name: &str) -> String {
    format!("public.{name}")
}

#[tokio::test]
async fn a_query_result_is_cached_until_a_write_to_its_table() {
    let client = pg().await;
    require_watch_table(&client).await;
    let t = table(&client, "cached").await;
    let app = app().await;
    let sql = format!("SELECT id, v FROM {t} WHERE id = $1");
    let (status, first) = app.query(&sql, json!([1])).await;
    assert_eq!(status, StatusCode::OK, "{first}");
    assert_eq!(first, json!({"rows": [{"id": 1, "v": "a"}], "cache": "MISS", "age_ms": 0}));
    let (_, second) = app.query(&sql, json!([1])).await;
    assert_eq!(second["cache"], "HIT");
    assert_eq!(second["rows"], first["rows"]);
    app.clock.advance(std::time::Duration::from_millis(1500));
    assert_eq!(app.query(&sql, json!([1])).await.1["age_ms"], 1500);

    let g = app.generation(&canonical(&t));
    client.execute(&format!("UPDATE {t} SET v = 'changed' WHERE id = 1"), &[]).await.unwrap();
    app.invalidated(&canonical(&t), g).await;
    let (_, third) = app.query(&sql, json!([1])).await;
    assert_eq!(third["cache"], "MISS");
    assert_eq!(third["rows"], json!([{"id": 1, "v": "changed"}]));
}

#[tokio::test]
async fn every_kind_of_write_invalidates_the_cached_result() {
    let client = pg().await;
    require_watch_table(&client).await;
    let t = table(&client, "writes").await;
    let parent = unique("parent");
    client
        .batch_execute(&format!(
            "CREATE TABLE {parent} (id int PRIMARY KEY);
             INSERT INTO {parent} VALUES (1), (2), (3), (7);
             ALTER TABLE {t} ADD COLUMN parent_id int REFERENCES {parent} (id) ON DELETE CASCADE;
             UPDATE {t} SET parent_id = 1;"
        ))
        .await
        .unwrap();
    let app = app().await;
    let sql = format!("SELECT count(*) AS n, string_agg(v, ',' ORDER BY id) AS vs FROM {t}");
    let writes = [
        ("INSERT", format!("INSERT INTO {t} VALUES (3, 'c', 3)")),
        ("UPDATE", format!("UPDATE {t} SET v = 'z' WHERE id = 3")),
        ("DELETE", format!("DELETE FROM {t} WHERE id = 3")),
        (
            "MERGE",
            format!(
                "MERGE INTO {t} USING (VALUES (2, 'm')) AS s(id, v) ON {t}.id = s.id
                 WHEN MATCHED THEN UPDATE SET v = s.v"
            ),
        ),
        ("COPY", String::new()),
        ("CASCADE", format!("DELETE FROM {parent} WHERE id = 7")),
        ("TRUNCATE", format!("TRUNCATE {t}")),
    ];
    for (kind, statement) in writes {
        let (_, before) = app.query(&sql, json!([])).await;
        let (_, hit) = app.query(&sql, json!([])).await;
        assert_eq!(hit["cache"], "HIT", "{kind}: cached before the write");
        let g = app.generation(&canonical(&t));
        if kind == "COPY" {
            let sink = client.copy_in::<_, Bytes>(&format!("COPY {t} (id, v, parent_id) FROM STDIN")).await.unwrap();
            futures_util::pin_mut!(sink);
            use futures_util::SinkExt;
            sink.send(Bytes::from_static(b"7\tcopied\t7\n")).await.unwrap();
            sink.close().await.unwrap();
        } else if kind == "CASCADE" {
            // Reads only the child; the write names only the parent.
            client.execute(&statement, &[]).await.unwrap();
        } else {
            client.execute(&statement, &[]).await.unwrap();
        }
        app.invalidated(&canonical(&t), g).await;
        let (_, after) = app.query(&sql, json!([])).await;
        assert_eq!(after["cache"], "MISS", "{kind}: invalidated");
        assert_ne!(after["rows"], before["rows"], "{kind}: new data");
    }
}

/// The stale-set race with the real services: the loader has read the old row and is held at a
/// barrier while the write commits and its NOTIFY is processed; its old value must not stay.
#[tokio::test]
async fn a_slow_loader_cannot_leave_a_value_read_before_a_committed_write() {
    let client = pg().await;
    require_watch_table(&client).await;
    let t = table(&client, "race").await;
    client.execute("SELECT voxperf.watch_table($1::text::regclass)", &[&t]).await.unwrap();
    let app = app().await;
    let tag = format!("table:{}", canonical(&t));
    let (read, go) = (Arc::new(Barrier::new(2)), Arc::new(Barrier::new(2)));
    let loader = {
        let (cache, tag, read, go, t) = (app.state.cache.clone(), tag.clone(), read.clone(), go.clone(), t.clone());
        tokio::spawn(async move {
            cache
                .get_or_load("race:row1", None, &[tag], || async move {
                    let reader = pg().await;
                    let row = reader.query_one(&format!("SELECT v FROM {t} WHERE id = 1"), &[]).await.unwrap();
                    let v: String = row.get(0);
                    read.wait().await;
                    go.wait().await;
                    Ok::<_, ()>(Bytes::from(v))
                })
                .await
                .unwrap()
        })
    };
    read.wait().await;
    let g = app.generation(&canonical(&t));
    client.execute(&format!("UPDATE {t} SET v = 'new' WHERE id = 1"), &[]).await.unwrap();
    app.invalidated(&canonical(&t), g).await;
    go.wait().await;
    assert_eq!(loader.await.unwrap().value, "a", "the racing caller gets what it read");
    assert_eq!(app.state.cache.get("race:row1").await.unwrap(), None, "not in L1 nor Redis");
    // A second daemon on the same Redis does not find it either.
    let other = app_with_prefix(&app.state.config.redis.key_prefix, &[]).await;
    assert_eq!(other.state.cache.get("race:row1").await.unwrap(), None);
}

/// Redis hangs (a proxy holds every byte) while tables are written: each write's notification
/// must still take effect in this daemon at once, and no answer after it may be the old rows —
/// neither from L1 nor from the entry still in Redis. When Redis answers again, the burst has
/// cost it at most two increments (one batch in flight, the rest coalesced into the next).
#[tokio::test]
async fn writes_take_effect_here_at_once_while_redis_hangs() {
    let client = pg().await;
    require_watch_table(&client).await;
    let t = table(&client, "hang").await;
    let proxy = RedisProxy::start(&redis_url()).await;
    let prefix = format!("{}:", unique("hang"));
    // Commands wait up to a minute for Redis: far longer than any wait below.
    let app = app_with_prefix_on(&proxy.url(), &prefix, &[("REDIS_COMMAND_TIMEOUT", "60000")]).await;
    let sql = format!("SELECT v FROM {t} WHERE id = $1");
    assert_eq!(app.query(&sql, json!([1])).await.1["cache"], "MISS");
    assert_eq!(app.query(&sql, json!([1])).await.1["cache"], "HIT");
    let mut redis = redis::Client::open(redis_url()).unwrap().get_multiplexed_async_connection().await.unwrap();
    let tag = format!("table:{}", canonical(&t));
    let gen_key = format!("{prefix}gen");
    let before: Option<u64> = redis::cmd("HGET").arg(&gen_key).arg(&tag).query_async(&mut redis).await.unwrap();

    proxy.set_mode(ProxyMode::Stall);
    let g = app.generation(&canonical(&t));
    for i in 0..3 {
        client.execute(&format!("UPDATE {t} SET v = 'w{i}' WHERE id = 1"), &[]).await.unwrap();
    }
    app.invalidated(&canonical(&t), g + 2).await; // all three
    // Asked after the daemon took the writes in, while Redis still hangs.
    let answer = {
        let (router, body) = (app.router.clone(), json!({ "sql": sql, "params": [1] }));
        tokio::spawn(
            async move { body_json(router.oneshot(post_json("/api/cache/query", &body)).await.unwrap()).await },
        )
    };
    proxy.set_mode(ProxyMode::Forward);
    let answer = answer.await.unwrap();
    assert_eq!((&answer["rows"], &answer["cache"]), (&json!([{"v": "w2"}]), &json!("MISS")), "{answer}");

    app.state.cache.sync_redis().await;
    let after: Option<u64> = redis::cmd("HGET").arg(&gen_key).arg(&tag).query_async(&mut redis).await.unwrap();
    let increments = after.unwrap_or(0) - before.unwrap_or(0);
    assert!((1..=2).contains(&increments), "3 writes cost Redis {increments} increments");
    // Caching resumes (the entry stored while Redis hung may be behind the last increment).
    assert_eq!(app.query(&sql, json!([1])).await.1["rows"], json!([{"v": "w2"}]));
    assert_eq!(app.query(&sql, json!([1])).await.1, json!({"rows": [{"v": "w2"}], "cache": "HIT", "age_ms": 0}));
}

#[tokio::test]
async fn killing_the_listen_backend_never_leaves_stale_results_served() {
    let client = pg().await;
    require_watch_table(&client).await;
    let t = table(&client, "killed").await;
    let app = app().await;
    let sql = format!("SELECT v FROM {t} WHERE id = 2");
    app.query(&sql, json!([])).await;
    assert_eq!(app.query(&sql, json!([])).await.1["cache"], "HIT");
    let floor = app.state.cache.stats().epoch_floor;

    let pid = app.state.listener.status().backend_pid.expect("listener connected");
    let killed: bool = client.query_one("SELECT pg_terminate_backend($1)", &[&pid]).await.unwrap().get(0);
    assert!(killed);
    // Written while the listener is down or reconnecting: this NOTIFY may never reach it.
    client.execute(&format!("UPDATE {t} SET v = 'after-kill' WHERE id = 2"), &[]).await.unwrap();
    app.listening(1).await;
    assert!(app.state.cache.stats().epoch_floor > floor, "reconnect bumped the epoch");
    let (_, answer) = app.query(&sql, json!([])).await;
    assert_eq!(answer["rows"], json!([{"v": "after-kill"}]), "{answer}");
    assert_eq!(answer["cache"], "MISS");
}

#[tokio::test]
async fn two_daemons_on_one_redis_are_both_invalidated_by_one_write() {
    let client = pg().await;
    require_watch_table(&client).await;
    let t = table(&client, "shared").await;
    let prefix = format!("{}:", unique("shared"));
    let (a, b) = (app_with_prefix(&prefix, &[]).await, app_with_prefix(&prefix, &[]).await);
    let sql = format!("SELECT v FROM {t} ORDER BY id");
    assert_eq!(a.query(&sql, json!([])).await.1["cache"], "MISS");
    let (_, from_b) = b.query(&sql, json!([])).await;
    assert_eq!(from_b["cache"], "HIT", "B finds A's result in Redis");
    assert_eq!(b.query(&sql, json!([])).await.1["cache"], "HIT");

    let (ga, gb) = (a.generation(&canonical(&t)), b.generation(&canonical(&t)));
    client.execute(&format!("UPDATE {t} SET v = 'both'"), &[]).await.unwrap();
    a.invalidated(&canonical(&t), ga).await;
    b.invalidated(&canonical(&t), gb).await;
    for daemon in [&a, &b] {
        let (_, answer) = daemon.query(&sql, json!([])).await;
        assert_eq!(answer["rows"], json!([{"v": "both"}, {"v": "both"}]));
    }
}

/// The benchmark reads a query's entry directly (`GET /api/cache/entries/{key}`): the answer
/// names the key it was looked up and stored under.
#[tokio::test]
async fn a_query_answer_names_its_cache_key() {
    let client = pg().await;
    require_watch_table(&client).await;
    let t = table(&client, "keyed").await;
    let app = app().await;
    let ask = |sql: String, params: serde_json::Value| {
        let request = post_json("/api/cache/query", &json!({ "sql": sql, "params": params }));
        let router = app.router.clone();
        async move {
            let response = router.oneshot(request).await.unwrap();
            assert_eq!(response.status(), StatusCode::OK);
            let key = response.headers()["x-cache-key"].to_str().unwrap().to_owned();
            (key, body_json(response).await)
        }
    };
    let (key, miss) = ask(format!("SELECT v FROM {t} WHERE id = $1"), json!([1])).await;
    assert!(key.starts_with("query:"), "{key}");
    let entry = app.send(common::get(&format!("/api/cache/entries/{key}"))).await;
    assert_eq!(entry.status(), StatusCode::OK);
    assert_eq!(body_json(entry).await, miss["rows"], "the entry under that key is the answer");
    let (same, hit) = ask(format!("select v\n  from {t}\n where id = $1 -- again"), json!([1])).await;
    assert_eq!((same.as_str(), &hit["cache"]), (key.as_str(), &json!("HIT")), "layout does not change the key");
    let (other, _) = ask(format!("SELECT v FROM {t} WHERE id = $1"), json!([2])).await;
    assert_ne!(other, key);
}

#[tokio::test]
async fn non_read_only_statements_are_refused_and_change_nothing() {
    let client = pg().await;
    let t = table(&client, "guarded").await;
    let writer = unique("writer");
    client
        .batch_execute(&format!(
            "CREATE FUNCTION {writer}() RETURNS int LANGUAGE plpgsql VOLATILE AS
             $$ BEGIN INSERT INTO {t} VALUES (99, 'sneaky'); RETURN 1; END $$;"
        ))
        .await
        .unwrap();
    let app = app().await;
    for sql in [
        format!("INSERT INTO {t} VALUES (50, 'x')"),
        format!("UPDATE {t} SET v = 'x' RETURNING *"),
        format!("WITH d AS (DELETE FROM {t} RETURNING *) SELECT * FROM d"),
        format!("SELECT {writer}()"),
        format!("SELECT * FROM {t} FOR UPDATE"),
    ] {
        let (status, body) = app.query(&sql, json!([])).await;
        assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{sql}: {body}");
        assert_eq!(body["error"]["code"], "not_read_only", "{sql}");
    }
    let rows = client.query(&format!("SELECT id, v FROM {t} ORDER BY id"), &[]).await.unwrap();
    let rows: Vec<(i32, String)> = rows.iter().map(|r| (r.get(0), r.get(1))).collect();
    assert_eq!(rows, vec![(1, "a".into()), (2, "b".into())]);
}

#[tokio::test]
async fn errors_from_postgres_are_400_with_its_message() {
    let client = pg().await;
    let t = table(&client, "errors").await;
    let app = app().await;
    let (status, body) = app.query(&format!("SELECT nosuch FROM {t}"), json!([])).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert_eq!(body["error"]["message"], "column \"nosuch\" does not exist");
    let (status, body) = app.query(&format!("SELECT * FROM {t} WHERE id = $1"), json!(["one"])).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert!(body["error"]["message"].as_str().unwrap().contains("invalid input syntax for type integer"));
    let (status, body) = app.query(&format!("SELECT * FROM {t} WHERE id = $1"), json!([])).await;
    assert_eq!((status, body["error"]["code"].as_str()), (StatusCode::BAD_REQUEST, Some("invalid_params")));
}

#[tokio::test]
async fn parameters_are_bound_with_the_types_postgres_infers() {
    let client = pg().await;
    let t = table(&client, "params").await;
    let app = app().await;
    let (status, body) = app
        .query(
            &format!(
                "SELECT id, $2::timestamptz < now() AS past, $3::numeric * 2 AS twice, $4::jsonb -> 'k' AS k
                   FROM {t} WHERE id = ANY($1) ORDER BY id"
            ),
            json!([[1, 2], "2020-01-01T00:00:00Z", "12.25", {"k": [true]}]),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(
        body["rows"],
        json!([
            {"id": 1, "past": true, "twice": 24.50, "k": [true]},
            {"id": 2, "past": true, "twice": 24.50, "k": [true]}
        ])
    );
}

#[tokio::test]
async fn views_are_invalidated_by_writes_to_their_base_tables() {
    let client = pg().await;
    require_watch_table(&client).await;
    let t = table(&client, "base").await;
    let view = unique("view");
    client.batch_execute(&format!("CREATE VIEW {view} AS SELECT upper(v) AS v FROM {t}")).await.unwrap();
    let app = app().await;
    let sql = format!("SELECT v FROM {view} ORDER BY v");
    app.query(&sql, json!([])).await;
    assert_eq!(app.query(&sql, json!([])).await.1["cache"], "HIT");
    let g = app.generation(&canonical(&t));
    client.execute(&format!("INSERT INTO {t} VALUES (3, 'c')"), &[]).await.unwrap();
    app.invalidated(&canonical(&t), g).await;
    let (_, answer) = app.query(&sql, json!([])).await;
    assert_eq!(answer["rows"], json!([{"v": "A"}, {"v": "B"}, {"v": "C"}]));
}

#[tokio::test]
async fn results_that_cannot_be_invalidated_are_never_cached() {
    let app = app().await;
    for sql in ["SELECT count(*) > 0 AS any FROM pg_class", "SELECT 1 AS one"] {
        app.query(sql, json!([])).await;
        let (_, second) = app.query(sql, json!([])).await;
        let expected = if sql.contains("pg_class") { "MISS" } else { "HIT" };
        assert_eq!(second["cache"], expected, "{sql}");
    }
}

#[tokio::test]
async fn the_row_limit_and_statement_timeout_are_enforced() {
    let client = pg().await;
    let t = table(&client, "limits").await;
    let app = app_with_prefix(
        &format!("{}:", unique("limits")),
        &[("VOXPERF_QUERY_ROW_LIMIT", "1"), ("VOXPERF_QUERY_STATEMENT_TIMEOUT", "50")],
    )
    .await;
    let (status, body) = app.query(&format!("SELECT * FROM {t}"), json!([])).await;
    assert_eq!(
        (status, body["error"]["code"].as_str()),
        (StatusCode::UNPROCESSABLE_ENTITY, Some("row_limit_exceeded"))
    );
    let (status, body) = app.query("SELECT pg_sleep(2)", json!([])).await;
    assert_eq!((status, body["error"]["code"].as_str()), (StatusCode::GATEWAY_TIMEOUT, Some("statement_timeout")));
}

#[tokio::test]
async fn readiness_requires_the_extension() {
    let client = pg().await;
    let installed: bool = client
        .query_one("SELECT EXISTS (SELECT 1 FROM pg_extension WHERE extname = 'voxperf')", &[])
        .await
        .unwrap()
        .get(0);
    let app = app().await;
    let response = app.send(common::get("/readyz")).await;
    let expected = if installed { StatusCode::OK } else { StatusCode::SERVICE_UNAVAILABLE };
    assert_eq!(response.status(), expected);
    let body = common::body_json(response).await;
    assert_eq!(body["extension_installed"], installed);
    assert_eq!(body["postgres"], "ok");
}
