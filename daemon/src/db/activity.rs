//! Postgres' own statistics for the monitor: `pg_stat_database` of the daemon's database.

use super::{Db, Error};

/// Cumulative counters and current gauges of the database (counters only grow until a
/// `pg_stat_reset`).
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct DatabaseActivity {
    /// Backends connected to this database.
    pub connections: i64,
    /// Backends connected to the whole server, and its `max_connections`.
    pub server_connections: i64,
    pub max_connections: i64,
    pub xact_commit: i64,
    pub xact_rollback: i64,
    pub blks_hit: i64,
    pub blks_read: i64,
    pub deadlocks: i64,
}

impl Db {
    pub async fn database_activity(&self) -> Result<DatabaseActivity, Error> {
        self.run(|c| async move {
            let r = c
                .query_one(
                    "SELECT numbackends::int8, (SELECT count(*) FROM pg_stat_activity WHERE backend_type = 'client backend'),
                            current_setting('max_connections')::int8, xact_commit, xact_rollback, blks_hit,
                            blks_read, deadlocks
                     FROM pg_stat_database WHERE datname = current_database()",
                    &[],
                )
                .await?;
            Ok(DatabaseActivity {
                connections: r.get(0),
                server_connections: r.get(1),
                max_connections: r.get(2),
                xact_commit: r.get(3),
                xact_rollback: r.get(4),
                blks_hit: r.get(5),
                blks_read: r.get(6),
                deadlocks: r.get(7),
            })
        })
        .await
    }
}
