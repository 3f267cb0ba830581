//! Per-statement statistics as a client sees them: recording, normalization, nesting, errors,
//! privileges, long texts, utility and prepared statements.

use voxperf_e2e::{connect, connect_to, marker, stats_matching, unique_function, url_as};

#[tokio::test]
async fn repeated_statements_aggregate_under_normalized_text_with_ordered_percentiles() {
    let c = connect().await;
    let m = unique_function(&c, "norm").await;
    for i in 0..60 {
        c.simple_query(&format!("SELECT {m}(), 'tag {i}', {i} + 1 AS n, pg_sleep({:.3})", f64::from(i % 4) / 1000.0))
            .await
            .unwrap();
    }
    let stats = stats_matching(&c, &format!("SELECT {m}(),")).await;
    assert_eq!(stats.len(), 1, "one entry for all constants: {stats:?}");
    let s = &stats[0];
    assert_eq!(s.query.as_deref(), Some(format!("SELECT {m}(), $1, $2 + $3 AS n, pg_sleep($4)").as_str()));
    assert_eq!(s.calls, 60);
    assert!(s.toplevel);
    let (p50, p95, p99) = (s.p50.unwrap(), s.p95.unwrap(), s.p99.unwrap());
    assert!(s.min_exec_time <= p50 && p50 <= p95 && p95 <= p99 && p99 <= s.max_exec_time, "{s:?}");
    assert!(s.max_exec_time >= 3.0, "pg_sleep(0.003) was among them: {s:?}");
}

#[tokio::test]
async fn nested_statements_are_recorded_only_when_track_is_all() {
    let c = connect().await;
    let g = unique_function(&c, "nested_g").await;
    let f = format!("{g}_f");
    c.batch_execute(&format!(
        "CREATE FUNCTION {f}() RETURNS bigint LANGUAGE plpgsql AS $$
         BEGIN RETURN (SELECT count(*) FROM pg_class WHERE oid > {g}()); END $$"
    ))
    .await
    .unwrap();
    let nested = |stats: Vec<voxperf_e2e::Stat>| stats.into_iter().filter(|s| !s.toplevel).collect::<Vec<_>>();
    c.simple_query(&format!("SELECT {f}()")).await.unwrap();
    assert!(nested(stats_matching(&c, &format!("{g}()")).await).is_empty(), "track = top records no nested statement");
    let top = stats_matching(&c, &format!("SELECT {f}()")).await;
    assert_eq!(top.len(), 1);
    assert!(top[0].toplevel);

    c.batch_execute("SET voxperf.track = 'all'").await.unwrap();
    c.simple_query(&format!("SELECT {f}()")).await.unwrap();
    let inner = nested(stats_matching(&c, &format!("WHERE oid > {g}()")).await);
    assert_eq!(inner.len(), 1, "a statement inside a function is recorded as not top level: {inner:?}");
    c.batch_execute(&format!("RESET voxperf.track; DROP FUNCTION {f}(); DROP FUNCTION {g}()")).await.unwrap();
}

#[tokio::test]
async fn an_error_in_a_nested_statement_does_not_corrupt_nesting() {
    let c = connect().await;
    let m = marker("errnest");
    c.batch_execute(&format!(
        "CREATE FUNCTION {m}_boom(n int) RETURNS int LANGUAGE plpgsql AS $$
         BEGIN RETURN (SELECT 1 / n); END $$;
         CREATE FUNCTION {m}_caught() RETURNS int LANGUAGE plpgsql AS $$
         BEGIN PERFORM {m}_boom(0); RETURN 1; EXCEPTION WHEN division_by_zero THEN RETURN 2; END $$"
    ))
    .await
    .unwrap();
    // Fails deep inside ExecutorRun of nested statements.
    let err = c.simple_query(&format!("SELECT {m}_boom(0)")).await.unwrap_err();
    assert_eq!(err.code(), Some(&tokio_postgres::error::SqlState::DIVISION_BY_ZERO));
    // Fails inside a subtransaction that PL/pgSQL rolls back, and inside an explicit savepoint.
    c.simple_query(&format!("SELECT {m}_caught()")).await.unwrap();
    c.batch_execute("BEGIN; SAVEPOINT s").await.unwrap();
    assert!(c.simple_query(&format!("SELECT {m}_boom(0)")).await.is_err());
    c.batch_execute("ROLLBACK TO SAVEPOINT s; COMMIT").await.unwrap();

    // If any of these left the nesting level raised, this would not count as top level (and,
    // with track = top, would not be recorded at all).
    let after_fn = unique_function(&c, "after").await;
    c.simple_query(&format!("SELECT {after_fn}()")).await.unwrap();
    let after = stats_matching(&c, &format!("SELECT {after_fn}()")).await;
    assert_eq!(after.len(), 1, "the statement after the errors was recorded: {after:?}");
    assert!(after[0].toplevel);
    let caught = stats_matching(&c, &format!("SELECT {m}_caught()")).await;
    assert_eq!(caught.len(), 1);
    assert!(caught[0].toplevel);
    c.batch_execute(&format!("DROP FUNCTION {m}_caught(); DROP FUNCTION {m}_boom(int); DROP FUNCTION {after_fn}()"))
        .await
        .unwrap();
}

#[tokio::test]
async fn nesting_levels_hold_across_commits_and_caught_errors_inside_procedures() {
    let c = connect().await;
    let m = marker("proccommit");
    // The loop's query calls a function of its own: query ids ignore aliases and constants.
    let g = unique_function(&c, "procloop").await;
    c.batch_execute(&format!(
        "SET voxperf.track = 'all';
         CREATE TABLE {m} (i int);
         CREATE PROCEDURE {m}_p() LANGUAGE plpgsql AS $$
         DECLARE r record;
         BEGIN
           FOR r IN SELECT x + {g}() AS v FROM generate_series(1, 3) x LOOP
             INSERT INTO {m} VALUES (r.v);
             COMMIT;
           END LOOP;
           BEGIN PERFORM 1 / 0; EXCEPTION WHEN division_by_zero THEN NULL; END;
         END $$"
    ))
    .await
    .unwrap();
    // The procedure commits three times (its loop's query is run to completion at the first
    // commit) and catches an error in a subtransaction; each of these must leave the levels as
    // they were.
    for _ in 0..2 {
        c.batch_execute(&format!("CALL {m}_p()")).await.unwrap();
    }
    c.simple_query(&format!("SELECT count(*) FROM {m}")).await.unwrap();
    // The entries whose text starts with `start` (the procedure's own text holds the others).
    let starting = |start: String| {
        let c = &c;
        async move {
            let all = stats_matching(c, &start).await;
            all.into_iter().filter(|s| s.query.as_deref().is_some_and(|q| q.starts_with(&start))).collect::<Vec<_>>()
        }
    };
    let call = starting(format!("CALL {m}_p()")).await;
    assert_eq!((call.len(), call[0].calls, call[0].toplevel), (1, 2, true), "{call:?}");
    let insert = starting(format!("INSERT INTO {m} VALUES")).await;
    assert_eq!((insert.len(), insert[0].calls, insert[0].toplevel), (1, 6, false), "{insert:?}");
    let the_loop = starting(format!("SELECT x + {g}() AS v")).await;
    assert_eq!((the_loop.len(), the_loop[0].calls, the_loop[0].toplevel), (1, 2, false), "{the_loop:?}");
    let after = starting(format!("SELECT count(*) FROM {m}")).await;
    assert_eq!((after.len(), after[0].toplevel), (1, true), "{after:?}");
    c.batch_execute(&format!("RESET voxperf.track; DROP PROCEDURE {m}_p(); DROP TABLE {m}; DROP FUNCTION {g}()"))
        .await
        .unwrap();
}

#[tokio::test]
async fn cursors_failing_inside_rolled_back_savepoints_do_not_stop_the_recording() {
    let c = connect().await;
    let m = marker("curfail");
    c.batch_execute(&format!(
        "SET voxperf.track = 'all';
         CREATE FUNCTION {m}() RETURNS int LANGUAGE plpgsql AS $$
         DECLARE c refcursor; r int;
         BEGIN
           OPEN c FOR SELECT 1 / (3 - x) FROM generate_series(1, 5) x;
           BEGIN
             LOOP FETCH c INTO r; EXIT WHEN NOT FOUND; END LOOP;
           EXCEPTION WHEN division_by_zero THEN RETURN 2;
           END;
           RETURN 1;
         END $$"
    ))
    .await
    .unwrap();
    // A cursor opened before an exception block and failing inside it: its statement started
    // outside the subtransaction that caught the error, and PostgreSQL marks its portal failed.
    // However many of these a session runs (more than the 64 statements a backend times at
    // once), what follows is recorded.
    for _ in 0..70 {
        let rows = c.simple_query(&format!("SELECT {m}()")).await.unwrap();
        let caught =
            rows.iter().any(|m| matches!(m, tokio_postgres::SimpleQueryMessage::Row(r) if r.get(0) == Some("2")));
        assert!(caught, "the division by zero was caught inside the function");
    }
    let after_fn = unique_function(&c, "aftercursors").await;
    for _ in 0..3 {
        c.simple_query(&format!("SELECT {after_fn}()")).await.unwrap();
    }
    let after = stats_matching(&c, &format!("SELECT {after_fn}()")).await;
    assert_eq!(after.len(), 1, "the statement after the failed cursors was recorded: {after:?}");
    assert_eq!(after[0].calls, 3);
    assert!(after[0].toplevel);
    c.batch_execute(&format!("RESET voxperf.track; DROP FUNCTION {after_fn}(); DROP FUNCTION {m}()")).await.unwrap();
}

#[tokio::test]
async fn errors_reach_the_client_exactly_as_postgres_raised_them() {
    let c = connect().await;
    let m = marker("errpass");
    c.batch_execute(&format!(
        "CREATE TABLE {m} (id int CONSTRAINT {m}_pk PRIMARY KEY);
         INSERT INTO {m} VALUES (1);
         CREATE FUNCTION {m}_ins() RETURNS void LANGUAGE plpgsql AS $$ BEGIN INSERT INTO {m} VALUES (1); END $$"
    ))
    .await
    .unwrap();
    for sql in [format!("INSERT INTO {m} VALUES (1)"), format!("SELECT {m}_ins()")] {
        let err = c.simple_query(&sql).await.unwrap_err();
        let db = err.as_db_error().expect("a database error");
        assert_eq!(db.code(), &tokio_postgres::error::SqlState::UNIQUE_VIOLATION, "{sql}");
        // ORMs map these fields to their own exceptions; a hook that re-raised a copy of the
        // error would lose them.
        assert_eq!(db.constraint(), Some(format!("{m}_pk").as_str()), "{sql}");
        assert_eq!(db.table(), Some(m.as_str()), "{sql}");
        assert_eq!(db.schema(), Some("public"), "{sql}");
        assert!(db.detail().unwrap_or_default().contains("already exists"), "{sql}");
        if sql.contains("_ins()") {
            assert!(db.where_().unwrap_or_default().contains("PL/pgSQL function"), "context kept: {db:?}");
        }
    }
    c.batch_execute(&format!("DROP FUNCTION {m}_ins(); DROP TABLE {m}")).await.unwrap();
}

#[tokio::test]
async fn other_users_texts_are_hidden_unless_granted_pg_read_all_stats() {
    let admin = connect().await;
    let m = marker("priv");
    let role = format!("{m}_role");
    admin.batch_execute(&format!("CREATE ROLE {role} LOGIN")).await.unwrap();
    let secret = unique_function(&admin, "secret").await;
    admin.simple_query(&format!("SELECT {secret}()")).await.unwrap();

    let user = connect_to(&url_as(&role)).await;
    user.simple_query(&format!("SELECT '{m}_own', 1")).await.unwrap();
    let rows = user
        .query(
            "SELECT s.query, s.queryid, r.rolname::text FROM voxperf.query_stats s JOIN pg_roles r ON r.oid = s.userid
             WHERE r.rolname IN ('postgres', $1)",
            &[&role],
        )
        .await
        .unwrap();
    let admin_rows: Vec<_> = rows.iter().filter(|r| r.get::<_, String>(2) == "postgres").collect();
    assert!(!admin_rows.is_empty(), "statistics of others stay visible");
    for r in &admin_rows {
        assert_eq!(r.get::<_, Option<String>>(0).as_deref(), Some("<insufficient privilege>"));
        assert_eq!(r.get::<_, Option<i64>>(1), None, "queryids of others are hidden too");
    }
    let own: Vec<_> = rows.iter().filter(|r| r.get::<_, String>(2) == role).collect();
    assert!(
        own.iter().any(|r| r.get::<_, Option<String>>(0).as_deref() == Some("SELECT $1, $2")),
        "own texts are visible"
    );

    admin.batch_execute(&format!("GRANT pg_read_all_stats TO {role}")).await.unwrap();
    let visible = user
        .query("SELECT count(*) FROM voxperf.query_stats WHERE query = $1", &[&format!("SELECT {secret}()")])
        .await
        .unwrap();
    assert!(visible[0].get::<_, i64>(0) >= 1, "pg_read_all_stats sees everyone's texts");
    drop(user);
    admin.batch_execute(&format!("REVOKE pg_read_all_stats FROM {role}")).await.unwrap();
    // Resetting is reserved to superusers unless granted.
    let user = connect_to(&url_as(&role)).await;
    let err = user.simple_query("SELECT voxperf.reset()").await.unwrap_err();
    assert_eq!(err.code(), Some(&tokio_postgres::error::SqlState::INSUFFICIENT_PRIVILEGE));
    drop(user);
    // The role owns statistics entries but no objects, so it can be dropped.
    admin.batch_execute(&format!("DROP ROLE {role}; DROP FUNCTION {secret}()")).await.unwrap();
}

#[tokio::test]
async fn very_long_query_texts_are_recorded_and_clipped_without_error() {
    let c = connect().await;
    let m = unique_function(&c, "long").await;
    // A 1 MB comment is part of the statement text; a 1 MB literal is normalized away.
    let comment = "x".repeat(1 << 20);
    c.simple_query(&format!("SELECT {m}() /* {comment} */")).await.unwrap();
    let literal = "y".repeat(1 << 20);
    c.simple_query(&format!("SELECT {m}(), length('{literal}')")).await.unwrap();

    let long = c
        .query(
            "SELECT length(query) FROM voxperf.query_stats WHERE query LIKE $1",
            &[&format!("SELECT {m}() /* xxxx%")],
        )
        .await
        .unwrap();
    assert!(!long.is_empty(), "the statement with a 1 MB text was recorded");
    for r in long {
        let len: i32 = r.get(0);
        assert!((1000..=64 * 1024).contains(&len), "text clipped to at most 64 kB, got {len}");
    }
    let normalized = stats_matching(&c, &format!("SELECT {m}(), length(")).await;
    assert_eq!(normalized[0].query.as_deref(), Some(format!("SELECT {m}(), length($1)").as_str()));
}

#[tokio::test]
async fn utility_and_prepared_statements_are_recorded_once_under_their_own_text() {
    let c = connect().await;
    let m = marker("util");
    c.batch_execute(&format!("CREATE TABLE {m} (id int, v text)")).await.unwrap();
    c.batch_execute(&format!("COPY {m} (id) FROM PROGRAM 'seq 1 25'")).await.unwrap();
    // Extended protocol: one prepared statement executed many times.
    let stmt = c.prepare(&format!("INSERT INTO {m} (id, v) VALUES ($1, $2)")).await.unwrap();
    for i in 0..30 {
        c.execute(&stmt, &[&i, &"v"]).await.unwrap();
    }
    c.batch_execute(&format!("VACUUM {m}")).await.unwrap();

    let ins = stats_matching(&c, &format!("INSERT INTO {m} (id, v)")).await;
    assert_eq!(ins.len(), 1, "{ins:?}");
    assert_eq!(ins[0].calls, 30);
    assert_eq!(ins[0].rows, 30);
    let vac = stats_matching(&c, &format!("VACUUM {m}")).await;
    assert_eq!(vac.len(), 1, "utility statements are tracked: {vac:?}");
    let create = stats_matching(&c, &format!("CREATE TABLE {m}")).await;
    assert_eq!(create.len(), 1);
    let copy = stats_matching(&c, &format!("COPY {m} (id)")).await;
    assert_eq!(copy[0].rows, 25, "COPY reports the rows it loaded");
    c.batch_execute(&format!("DROP TABLE {m}")).await.unwrap();
}

#[tokio::test]
async fn reset_of_one_queryid_removes_only_that_statement() {
    let c = connect().await;
    let m = unique_function(&c, "reset1").await;
    c.simple_query(&format!("SELECT {m}()")).await.unwrap();
    c.simple_query(&format!("SELECT {m}(), 2")).await.unwrap();
    let a = stats_matching(&c, &format!("SELECT {m}()"))
        .await
        .into_iter()
        .find(|s| s.query.as_deref() == Some(&format!("SELECT {m}()")))
        .unwrap();
    let removed: i64 = c.query_one("SELECT voxperf.reset($1)", &[&a.queryid.unwrap()]).await.unwrap().get(0);
    assert_eq!(removed, 1);
    let left: Vec<_> = stats_matching(&c, &format!("SELECT {m}()")).await.into_iter().filter_map(|s| s.query).collect();
    assert_eq!(left, vec![format!("SELECT {m}(), $1")]);
}

#[tokio::test]
async fn query_stats_has_the_pg_stat_statements_columns() {
    let c = connect().await;
    let cols: Vec<String> = c
        .query(
            "SELECT attname::text FROM pg_attribute WHERE attrelid = 'voxperf.query_stats'::regclass AND attnum > 0 ORDER BY attnum",
            &[],
        )
        .await
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect();
    let pgss_1_10 = [
        "userid",
        "dbid",
        "toplevel",
        "queryid",
        "query",
        "plans",
        "total_plan_time",
        "min_plan_time",
        "max_plan_time",
        "mean_plan_time",
        "stddev_plan_time",
        "calls",
        "total_exec_time",
        "min_exec_time",
        "max_exec_time",
        "mean_exec_time",
        "stddev_exec_time",
        "rows",
        "shared_blks_hit",
        "shared_blks_read",
        "shared_blks_dirtied",
        "shared_blks_written",
        "local_blks_hit",
        "local_blks_read",
        "local_blks_dirtied",
        "local_blks_written",
        "temp_blks_read",
        "temp_blks_written",
        "blk_read_time",
        "blk_write_time",
        "temp_blk_read_time",
        "temp_blk_write_time",
        "wal_records",
        "wal_fpi",
        "wal_bytes",
        "jit_functions",
        "jit_generation_time",
        "jit_inlining_count",
        "jit_inlining_time",
        "jit_optimization_count",
        "jit_optimization_time",
        "jit_emission_count",
        "jit_emission_time",
    ];
    assert_eq!(&cols[..pgss_1_10.len()], &pgss_1_10[..]);
    assert_eq!(
        &cols[pgss_1_10.len()..],
        &["p50_exec_time", "p95_exec_time", "p99_exec_time", "first_seen", "last_seen"]
    );
}

#[tokio::test]
async fn a_portal_fetched_in_batches_counts_as_one_call_with_all_its_rows() {
    let mut c = connect().await;
    let f = unique_function(&c, "portal").await;
    let tx = c.transaction().await.unwrap();
    let stmt = tx.prepare(&format!("SELECT g, {f}() FROM generate_series(1, 100) g")).await.unwrap();
    let portal = tx.bind(&stmt, &[]).await.unwrap();
    let mut fetched = 0;
    loop {
        // Each batch is one ExecutorRun of the same statement.
        let rows = tx.query_portal(&portal, 30).await.unwrap();
        if rows.is_empty() {
            break;
        }
        fetched += rows.len();
    }
    drop(portal);
    tx.commit().await.unwrap();
    assert_eq!(fetched, 100);
    let s = stats_matching(&c, &format!("{f}() FROM generate_series")).await;
    assert_eq!(s.len(), 1, "{s:?}");
    assert_eq!((s[0].calls, s[0].rows), (1, 100));
}

#[tokio::test]
async fn statements_run_by_triggers_are_nested_under_the_statement_that_fired_them() {
    let c = connect().await;
    let m = marker("trig");
    let g = unique_function(&c, "trig_g").await;
    c.batch_execute(&format!(
        "CREATE TABLE {m} (id int);
         CREATE TABLE {m}_log (id int, n int);
         CREATE FUNCTION {m}_fn() RETURNS trigger LANGUAGE plpgsql AS $$
         BEGIN INSERT INTO {m}_log SELECT NEW.id, {g}(); RETURN NEW; END $$;
         CREATE TRIGGER {m}_t AFTER INSERT ON {m} FOR EACH ROW EXECUTE FUNCTION {m}_fn();
         SET voxperf.track = 'all';"
    ))
    .await
    .unwrap();
    c.simple_query(&format!("INSERT INTO {m} VALUES (1), (2)")).await.unwrap();
    let top = stats_matching(&c, &format!("INSERT INTO {m} VALUES")).await;
    assert_eq!(top.len(), 1);
    assert!(top[0].toplevel);
    assert_eq!(top[0].rows, 2);
    // The trigger's INSERT runs during ExecutorFinish of the outer one: one level deeper.
    let inner = stats_matching(&c, &format!("{g}()")).await.into_iter().filter(|s| !s.toplevel).collect::<Vec<_>>();
    assert_eq!(inner.len(), 1, "{inner:?}");
    assert_eq!(inner[0].calls, 2);
    c.batch_execute(&format!(
        "RESET voxperf.track; DROP TABLE {m}, {m}_log; DROP FUNCTION {m}_fn(); DROP FUNCTION {g}()"
    ))
    .await
    .unwrap();
}
