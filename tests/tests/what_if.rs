//! `voxperf.what_if`: plans with hypothetical indexes, changes nothing, leaves nothing behind,
//! and fails with the right SQLSTATE.

use tokio_postgres::error::SqlState;
use voxperf_e2e::{connect, marker};

async fn table(c: &tokio_postgres::Client) -> String {
    let t = marker("whatif");
    c.batch_execute(&format!(
        "CREATE TABLE {t} (id int PRIMARY KEY, a int, b text, doc jsonb);
         INSERT INTO {t} SELECT g, g % 500, 'name' || g, jsonb_build_object('tags', jsonb_build_array('t' || (g % 50)))
         FROM generate_series(1, 50000) g;
         ANALYZE {t};"
    ))
    .await
    .unwrap();
    t
}

#[tokio::test]
async fn hypothetical_indexes_lower_the_cost_and_are_reported_when_used() {
    let c = connect().await;
    let t = table(&c).await;
    let cases = [
        (format!("SELECT * FROM {t} WHERE a = 7"), format!("CREATE INDEX ON {t} (a)")),
        (
            format!("SELECT * FROM {t} WHERE a = 7 ORDER BY id DESC LIMIT 5"),
            format!("CREATE INDEX ON {t} (a, id DESC)"),
        ),
        (
            format!("SELECT count(*) FROM {t} WHERE doc @> '{{\"tags\": [\"t3\"]}}'"),
            format!("CREATE INDEX ON {t} USING gin (doc jsonb_path_ops)"),
        ),
        (format!("SELECT * FROM {t} WHERE lower(b) = 'name42'"), format!("CREATE INDEX ON {t} (lower(b))")),
        (
            format!("SELECT * FROM {t} WHERE a = 7 AND b > 'name4'"),
            format!("CREATE INDEX ON {t} (a) WHERE b > 'name3'"),
        ),
    ];
    for (query, ddl) in &cases {
        let row = c
            .query_one("SELECT cost_before, cost_after, improvement, indexes_used, plan_after FROM voxperf.what_if($1, ARRAY[$2])", &[query, ddl])
            .await
            .unwrap_or_else(|e| panic!("{query}: {e}"));
        let (before, after, improvement): (f64, f64, f64) = (row.get(0), row.get(1), row.get(2));
        let used: Vec<String> = row.get(3);
        assert!(after < before, "{query}: {before} -> {after}");
        assert!(improvement > 0.0 && (improvement - (before - after) / before).abs() < 1e-9);
        assert_eq!(used, vec![ddl.clone()], "{query}: {}", row.get::<_, String>(4));
    }
    // An index the query cannot use changes nothing and is not reported.
    let row = c
        .query_one(
            "SELECT cost_before, cost_after, indexes_used FROM voxperf.what_if($1, ARRAY[$2])",
            &[
                &format!("SELECT * FROM {t} WHERE a = 7 AND id < 100"),
                &format!("CREATE INDEX ON {t} (a) WHERE id > 1000"),
            ],
        )
        .await
        .unwrap();
    assert_eq!(row.get::<_, f64>(0), row.get::<_, f64>(1));
    assert!(row.get::<_, Vec<String>>(2).is_empty());
}

#[tokio::test]
async fn writing_statements_are_planned_but_never_executed() {
    let c = connect().await;
    let t = table(&c).await;
    let before: i64 = c.query_one(&format!("SELECT count(*) + sum(a) FROM {t}"), &[]).await.unwrap().get(0);
    for query in [
        format!("DELETE FROM {t} WHERE a = 3"),
        format!("UPDATE {t} SET b = 'changed' WHERE a = 4"),
        format!("INSERT INTO {t} SELECT g + 100000, 1, 'x', NULL FROM generate_series(1, 10) g"),
        format!("MERGE INTO {t} USING (VALUES (1)) v(id) ON {t}.id = v.id WHEN MATCHED THEN DELETE"),
    ] {
        let row = c
            .query_one(
                "SELECT cost_before, plan_before FROM voxperf.what_if($1, ARRAY[$2])",
                &[&query, &format!("CREATE INDEX ON {t} (a)")],
            )
            .await
            .unwrap_or_else(|e| panic!("{query}: {e}"));
        assert!(row.get::<_, f64>(0) > 0.0);
    }
    let after: i64 = c.query_one(&format!("SELECT count(*) + sum(a) FROM {t}"), &[]).await.unwrap().get(0);
    assert_eq!(before, after, "no data changed");
    let changed: i64 = c.query_one(&format!("SELECT count(*) FROM {t} WHERE b = 'changed'"), &[]).await.unwrap().get(0);
    assert_eq!(changed, 0);
}

#[tokio::test]
async fn bad_input_fails_with_the_right_sqlstate_and_leaves_the_session_clean() {
    let c = connect().await;
    let t = table(&c).await;
    let cases: Vec<(String, Vec<String>, SqlState, &str)> = vec![
        ("SELEC * FROM x".into(), vec![], SqlState::SYNTAX_ERROR, "syntax error at or near \"SELEC\""),
        (
            format!("SELECT 1 FROM {t}"),
            vec![format!("DROP TABLE {t}")],
            SqlState::INVALID_PARAMETER_VALUE,
            "is not a CREATE INDEX statement",
        ),
        (format!("SELECT 1 FROM {t}"), vec![format!("CREATE INDEX ON {t} (a")], SqlState::SYNTAX_ERROR, "syntax error"),
        ("SELECT * FROM no_such_table_at_all".into(), vec![], SqlState::UNDEFINED_TABLE, "does not exist"),
        (
            format!("SELECT 1 FROM {t}"),
            vec!["CREATE INDEX ON no_such_table_at_all (a)".into()],
            SqlState::UNDEFINED_TABLE,
            "does not exist",
        ),
        (
            format!("SELECT 1 FROM {t}"),
            vec![format!("CREATE INDEX ON {t} (no_such_column)")],
            SqlState::UNDEFINED_COLUMN,
            "no_such_column",
        ),
        ("SELECT 1; SELECT 2".to_string(), vec![], SqlState::INVALID_PARAMETER_VALUE, "exactly one statement"),
        (format!("VACUUM {t}"), vec![], SqlState::INVALID_PARAMETER_VALUE, "can be planned"),
    ];
    for (query, ddls, code, message) in cases {
        let err = c.query("SELECT * FROM voxperf.what_if($1, $2)", &[&query, &ddls]).await.unwrap_err();
        let db = err.as_db_error().unwrap_or_else(|| panic!("{query}: {err}"));
        assert_eq!(db.code(), &code, "{query} {ddls:?}: {}", db.message());
        assert!(db.message().contains(message), "{query} {ddls:?}: {}", db.message());
        // After the error the session plans normally: no hypothetical index is left.
        let plan: Vec<String> = c
            .query(&format!("EXPLAIN SELECT * FROM {t} WHERE a = 7"), &[])
            .await
            .unwrap()
            .iter()
            .map(|r| r.get(0))
            .collect();
        assert!(plan[0].starts_with("Seq Scan"), "{plan:?}");
        assert!(!plan.concat().contains("hypothetical"));
    }
    // Statistics recording still works in this session after the advisor failed.
    let f = voxperf_e2e::unique_function(&c, "after_whatif").await;
    c.simple_query(&format!("SELECT {f}()")).await.unwrap();
    assert_eq!(voxperf_e2e::stats_matching(&c, &format!("SELECT {f}()")).await.len(), 1);
}

#[tokio::test]
async fn the_advisor_s_own_planning_is_not_recorded_as_workload() {
    let c = connect().await;
    let t = table(&c).await;
    c.query("SELECT * FROM voxperf.what_if($1)", &[&format!("SELECT b FROM {t} WHERE a = 99 AND b <> 'zz'")])
        .await
        .unwrap();
    let recorded = voxperf_e2e::stats_matching(&c, &format!("SELECT b FROM {t} WHERE a = $1")).await;
    assert!(recorded.is_empty(), "{recorded:?}");
}
