//! Postgres: the connection pool and every statement the API runs, over the demo schema
//! (`sql/schema.sql`). Handlers never write SQL.
//!
//! The workspace builds tokio-postgres without its chrono/serde_json/decimal conversions, so
//! statements hand values over in the form the JSON answers use: `numeric` and `jsonb` as text,
//! timestamps formatted in SQL as RFC 3339 UTC. The statements are the plain queries the demo
//! workload is about (voxperf's index advisor reads them): one predicate shape per statement,
//! no `$n IS NULL OR ...` catch-alls that would hide which index a query needs.

use std::collections::BTreeMap;
use std::time::Duration;

use deadpool_postgres::{Manager, ManagerConfig, Object, Pool, PoolError, RecyclingMethod, Runtime};
use serde::Serialize;
use tokio_postgres::error::SqlState;
use tokio_postgres::{NoTls, Row};

/// Connections the pool keeps at most: enough for the demo's load tests on a two-core machine
/// without starving voxperfd's own pool on the same server.
pub const POOL_SIZE: usize = 8;

/// How long a request waits for a pooled connection, or for a new one, before it fails with 500
/// instead of queueing without bound.
const POOL_WAIT: Duration = Duration::from_secs(5);

/// The columns of a `VirtualNumber` answer, in [`VirtualNumber::from_row`]'s order.
const NUMBER_COLUMNS: &str = r#"id, number, country_code, area_code, status, owner_id, features::text,
    monthly_price::text, to_char(updated_at AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.US"Z"')"#;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("no Postgres connection: {0}")]
    Pool(#[from] PoolError),
    #[error("postgres: {0}")]
    Postgres(#[from] tokio_postgres::Error),
    #[error("invalid Postgres configuration: {0}")]
    Config(String),
    /// The server answered, but not in the shape of the demo schema.
    #[error("unexpected answer from Postgres: {0}")]
    Unexpected(String),
}

#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct VirtualNumber {
    pub id: i64,
    /// E.164, e.g. `+12125550123`.
    pub number: String,
    pub country_code: String,
    pub area_code: String,
    pub status: String,
    pub owner_id: Option<i64>,
    /// The `jsonb` array as stored (`["voice", "sms"]`).
    pub features: serde_json::Value,
    /// `numeric(10, 2)` as text, so no digit is lost to a float.
    pub monthly_price: String,
    /// RFC 3339, UTC, microseconds.
    pub updated_at: String,
}

impl VirtualNumber {
    fn from_row(row: &Row) -> Result<Self, Error> {
        let features: String = row.try_get(6)?;
        let features = serde_json::from_str(&features)
            .map_err(|e| Error::Unexpected(format!("VirtualNumber.features is not JSON: {e}")))?;
        Ok(Self {
            id: row.try_get(0)?,
            number: row.try_get(1)?,
            country_code: row.try_get(2)?,
            area_code: row.try_get(3)?,
            status: row.try_get(4)?,
            owner_id: row.try_get(5)?,
            features,
            monthly_price: row.try_get(7)?,
            updated_at: row.try_get(8)?,
        })
    }
}

#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct User {
    pub id: i64,
    pub email: String,
    pub name: String,
    pub plan: String,
}

/// Usage of one kind (`call_in`, `call_out`, `sms_in`, `sms_out`) over a period.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct KindUsage {
    pub count: i64,
    pub total_duration_seconds: i64,
    /// `numeric` as text (`"1.2345"`).
    pub total_cost: String,
}

/// Usage per kind, sorted by kind; kinds without records are absent.
pub type Usage = BTreeMap<String, KindUsage>;

/// How a reservation went.
#[derive(Debug, Clone, PartialEq)]
pub enum Reservation {
    Reserved(VirtualNumber),
    NoSuchNumber,
    NoSuchUser,
    /// The number's current status, which is not `AVAILABLE`.
    NotAvailable(String),
}

#[derive(Debug)]
pub struct Db {
    pool: Pool,
}

impl Db {
    /// Sets the pool up; connections are opened on first use, so this does not fail when the
    /// server is down.
    pub fn new(mut config: tokio_postgres::Config) -> Result<Self, Error> {
        config.application_name("voxlink-demo").connect_timeout(POOL_WAIT);
        let manager = Manager::from_config(config, NoTls, ManagerConfig { recycling_method: RecyclingMethod::Fast });
        let pool = Pool::builder(manager)
            .max_size(POOL_SIZE)
            .runtime(Runtime::Tokio1)
            .wait_timeout(Some(POOL_WAIT))
            .create_timeout(Some(POOL_WAIT))
            .build()
            .map_err(|e| Error::Config(e.to_string()))?;
        Ok(Self { pool })
    }

    async fn client(&self) -> Result<Object, Error> {
        Ok(self.pool.get().await?)
    }

    /// Numbers of a country (and area, when given) with a status, lowest ids first.
    pub async fn search_numbers(
        &self,
        country: &str,
        area: Option<&str>,
        status: &str,
        limit: i64,
    ) -> Result<Vec<VirtualNumber>, Error> {
        let client = self.client().await?;
        let rows = match area {
            Some(area) => {
                let sql = format!(
                    r#"SELECT {NUMBER_COLUMNS} FROM "VirtualNumber"
                       WHERE country_code = $1 AND area_code = $2 AND status = $3 ORDER BY id LIMIT $4"#
                );
                client.query(&client.prepare_cached(&sql).await?, &[&country, &area, &status, &limit]).await?
            }
            None => {
                let sql = format!(
                    r#"SELECT {NUMBER_COLUMNS} FROM "VirtualNumber"
                       WHERE country_code = $1 AND status = $2 ORDER BY id LIMIT $3"#
                );
                client.query(&client.prepare_cached(&sql).await?, &[&country, &status, &limit]).await?
            }
        };
        rows.iter().map(VirtualNumber::from_row).collect()
    }

    pub async fn number(&self, id: i64) -> Result<Option<VirtualNumber>, Error> {
        let client = self.client().await?;
        let sql = format!(r#"SELECT {NUMBER_COLUMNS} FROM "VirtualNumber" WHERE id = $1"#);
        let row = client.query_opt(&client.prepare_cached(&sql).await?, &[&id]).await?;
        row.as_ref().map(VirtualNumber::from_row).transpose()
    }

    pub async fn numbers_of_owner(&self, owner_id: i64) -> Result<Vec<VirtualNumber>, Error> {
        let client = self.client().await?;
        let sql = format!(r#"SELECT {NUMBER_COLUMNS} FROM "VirtualNumber" WHERE owner_id = $1 ORDER BY id"#);
        let rows = client.query(&client.prepare_cached(&sql).await?, &[&owner_id]).await?;
        rows.iter().map(VirtualNumber::from_row).collect()
    }

    pub async fn count_numbers_of_owner(&self, owner_id: i64) -> Result<i64, Error> {
        let client = self.client().await?;
        let sql = r#"SELECT count(*) FROM "VirtualNumber" WHERE owner_id = $1"#;
        let row = client.query_one(&client.prepare_cached(sql).await?, &[&owner_id]).await?;
        Ok(row.try_get(0)?)
    }

    pub async fn user(&self, id: i64) -> Result<Option<User>, Error> {
        let client = self.client().await?;
        let sql = r#"SELECT id, email, name, plan FROM "User" WHERE id = $1"#;
        let row = client.query_opt(&client.prepare_cached(sql).await?, &[&id]).await?;
        let user = |row: Row| -> Result<User, Error> {
            Ok(User { id: row.try_get(0)?, email: row.try_get(1)?, name: row.try_get(2)?, plan: row.try_get(3)? })
        };
        row.map(user).transpose()
    }

    /// Reserves an `AVAILABLE` number for a user, atomically: one conditional UPDATE, so two
    /// concurrent reservations cannot both succeed. Only when it changes nothing does a second
    /// statement find out why (no such number, or not available).
    pub async fn reserve(&self, number_id: i64, user_id: i64) -> Result<Reservation, Error> {
        let client = self.client().await?;
        let sql = format!(
            r#"UPDATE "VirtualNumber" SET status = 'RESERVED', owner_id = $2, updated_at = now()
               WHERE id = $1 AND status = 'AVAILABLE'
               RETURNING {NUMBER_COLUMNS}"#
        );
        let statement = client.prepare_cached(&sql).await?;
        match client.query_opt(&statement, &[&number_id, &user_id]).await {
            Ok(Some(row)) => return Ok(Reservation::Reserved(VirtualNumber::from_row(&row)?)),
            Ok(None) => {}
            // The owner_id foreign key: the user does not exist.
            Err(e) if e.code() == Some(&SqlState::FOREIGN_KEY_VIOLATION) => return Ok(Reservation::NoSuchUser),
            Err(e) => return Err(e.into()),
        }
        let sql = r#"SELECT status FROM "VirtualNumber" WHERE id = $1"#;
        let row = client.query_opt(&client.prepare_cached(sql).await?, &[&number_id]).await?;
        match row {
            None => Ok(Reservation::NoSuchNumber),
            Some(row) => Ok(Reservation::NotAvailable(row.try_get(0)?)),
        }
    }

    /// Usage per kind over the last `days` days, of all numbers.
    pub async fn usage(&self, days: i32) -> Result<Usage, Error> {
        let client = self.client().await?;
        let sql = r#"SELECT kind, count(*), sum(duration_seconds)::bigint, sum(cost)::text
                     FROM "UsageRecord"
                     WHERE "timestamp" >= now() - make_interval(days => $1)
                     GROUP BY kind ORDER BY kind"#;
        let rows = client.query(&client.prepare_cached(sql).await?, &[&days]).await?;
        usage_from_rows(&rows)
    }

    /// Usage per kind over the last `days` days, of the numbers a user owns.
    pub async fn usage_of_owner(&self, owner_id: i64, days: i32) -> Result<Usage, Error> {
        let client = self.client().await?;
        let sql = r#"SELECT u.kind, count(*), sum(u.duration_seconds)::bigint, sum(u.cost)::text
                     FROM "UsageRecord" u JOIN "VirtualNumber" v ON v.id = u.number_id
                     WHERE v.owner_id = $1 AND u."timestamp" >= now() - make_interval(days => $2)
                     GROUP BY u.kind ORDER BY u.kind"#;
        let rows = client.query(&client.prepare_cached(sql).await?, &[&owner_id, &days]).await?;
        usage_from_rows(&rows)
    }
}

fn usage_from_rows(rows: &[Row]) -> Result<Usage, Error> {
    rows.iter()
        .map(|row| {
            let usage = KindUsage {
                count: row.try_get(1)?,
                total_duration_seconds: row.try_get(2)?,
                total_cost: row.try_get(3)?,
            };
            Ok((row.try_get(0)?, usage))
        })
        .collect()
}
