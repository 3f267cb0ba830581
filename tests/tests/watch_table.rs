//! `voxperf.watch_table`: one NOTIFY per writing statement, with the table's canonical name, for
//! every kind of write; clear errors for what cannot be watched. (The daemon's tests cover the
//! cache side; this is the extension's contract.)

use tokio::sync::mpsc::UnboundedReceiver;
use tokio_postgres::Client;
use voxperf_e2e::{connect, connect_listening, marker};

const SENTINEL: &str = "-- end of test step --";

/// The notifications that arrived for the writes so far. Notifications reach listeners in
/// commit order, so everything before a sentinel notification committed after the writes has
/// arrived once the sentinel has: no waiting on timeouts.
async fn drain(writer: &Client, rx: &mut UnboundedReceiver<(String, String)>) -> Vec<(String, String)> {
    writer.batch_execute(&format!("NOTIFY voxperf_invalidate, '{SENTINEL}'")).await.unwrap();
    let mut got = Vec::new();
    while let Some(n) = rx.recv().await {
        if n.1 == SENTINEL {
            return got;
        }
        got.push(n);
    }
    panic!("the listening connection closed");
}

#[tokio::test]
async fn each_writing_statement_notifies_once_with_the_quoted_table_name() {
    let writer = connect().await;
    let (listener, mut rx) = connect_listening().await;
    let m = marker("Watch");
    // A mixed-case name must come out quoted, exactly as quote_ident gives it.
    let table = format!("\"{m}\"");
    let child = format!("\"{m}_child\"");
    writer
        .batch_execute(&format!(
            "CREATE TABLE {table} (id int PRIMARY KEY, v text);
             CREATE TABLE {child} (id int REFERENCES {table} (id) ON DELETE CASCADE);
             SELECT voxperf.watch_table('{table}');
             SELECT voxperf.watch_table('{table}');  -- idempotent
             SELECT voxperf.watch_table('{child}');"
        ))
        .await
        .unwrap();
    listener.batch_execute("LISTEN voxperf_invalidate").await.unwrap();
    let payload = format!("public.\"{m}\"");
    let child_payload = format!("public.\"{m}_child\"");

    let writes = [
        format!("INSERT INTO {table} SELECT g, 'x' FROM generate_series(1, 50) g"),
        format!("UPDATE {table} SET v = 'y' WHERE id < 10"),
        format!("UPDATE {table} SET v = 'z' WHERE false"),
        format!("COPY {table} (id, v) FROM PROGRAM 'seq 100 110 | sed s/$/,c/' WITH (FORMAT csv)"),
        format!(
            "MERGE INTO {table} t USING (VALUES (1), (500)) s(id) ON t.id = s.id WHEN MATCHED THEN UPDATE SET v = 'm' WHEN NOT MATCHED THEN INSERT VALUES (s.id, 'n')"
        ),
        format!("DELETE FROM {table} WHERE id > 100"),
    ];
    for sql in &writes {
        writer.batch_execute(sql).await.unwrap_or_else(|e| panic!("{sql}: {e}"));
        let got = drain(&writer, &mut rx).await;
        assert_eq!(got.iter().filter(|n| n.1 == payload).count(), 1, "exactly one for the table: {sql}: {got:?}");
        // A DELETE also runs the (empty) cascade on the referencing table: telling its
        // listeners too is harmless.
        assert!(got.iter().all(|n| n.0 == "voxperf_invalidate" && (n.1 == payload || n.1 == child_payload)), "{got:?}");
    }

    // A cascade notifies for the table it reaches too.
    writer.batch_execute(&format!("INSERT INTO {child} VALUES (1), (2)")).await.unwrap();
    drain(&writer, &mut rx).await;
    writer.batch_execute(&format!("DELETE FROM {table} WHERE id = 1")).await.unwrap();
    let mut got = drain(&writer, &mut rx).await;
    got.sort();
    assert_eq!(
        got,
        vec![("voxperf_invalidate".into(), payload.clone()), ("voxperf_invalidate".into(), child_payload.clone())]
    );

    // Many writes in one transaction: one notification per table.
    writer
        .batch_execute(&format!(
            "BEGIN; INSERT INTO {table} VALUES (900, 'a'); INSERT INTO {table} VALUES (901, 'b'); COMMIT"
        ))
        .await
        .unwrap();
    assert_eq!(drain(&writer, &mut rx).await.len(), 1);

    // TRUNCATE (of both, as the foreign key requires).
    writer.batch_execute(&format!("TRUNCATE {table}, {child}")).await.unwrap();
    assert_eq!(drain(&writer, &mut rx).await.len(), 2);

    // A rolled-back write announces nothing; reads announce nothing.
    writer.batch_execute(&format!("BEGIN; INSERT INTO {table} VALUES (7, 'r'); ROLLBACK")).await.unwrap();
    writer.batch_execute(&format!("SELECT * FROM {table}")).await.unwrap();
    assert!(drain(&writer, &mut rx).await.is_empty());

    let listed: Vec<String> = writer
        .query("SELECT payload FROM voxperf.watched_tables() WHERE table_name LIKE $1", &[&format!("{m}%")])
        .await
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect();
    assert_eq!(listed, vec![payload.clone(), child_payload.clone()]);

    writer
        .batch_execute(&format!("SELECT voxperf.unwatch_table('{table}'); SELECT voxperf.unwatch_table('{table}')"))
        .await
        .unwrap();
    writer.batch_execute(&format!("INSERT INTO {table} VALUES (8, 'u')")).await.unwrap();
    assert!(drain(&writer, &mut rx).await.is_empty(), "unwatched tables are silent");
    writer.batch_execute(&format!("DROP TABLE {child}, {table}")).await.unwrap();
}

#[tokio::test]
async fn what_cannot_be_watched_is_refused_with_a_clear_error() {
    let c = connect().await;
    let m = marker("watchbad");
    c.batch_execute(&format!("CREATE VIEW {m} AS SELECT 1 AS one")).await.unwrap();
    let err = c.simple_query(&format!("SELECT voxperf.watch_table('{m}')")).await.unwrap_err();
    let db = err.as_db_error().unwrap();
    assert_eq!(db.code(), &tokio_postgres::error::SqlState::WRONG_OBJECT_TYPE);
    assert!(db.message().contains("is not a table"), "{}", db.message());
    let err = c.simple_query("SELECT voxperf.watch_table('no_such_table_here')").await.unwrap_err();
    assert_eq!(err.code(), Some(&tokio_postgres::error::SqlState::UNDEFINED_TABLE));
    c.batch_execute(&format!("DROP VIEW {m}")).await.unwrap();
}
