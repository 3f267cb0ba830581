//! L2: the shared level in Redis (one server through `ConnectionManager`, or Redis Cluster).
//!
//! Keys: entries live at `<prefix>e:<key>` with a Redis TTL (`PX`); all tag generations and the
//! epoch live in one hash, `<prefix>gen`, so a snapshot is one `HMGET` that is atomic even on a
//! cluster (one key, one slot). Every call goes through the Redis circuit breaker and a timeout:
//! while Redis is down, calls fail at once and the facade carries on with L1 alone. Invariant:
//! generation values in the hash only grow — every write to it is a bump above the current value
//! or a max-merge.

use std::time::Duration;

use redis::aio::{ConnectionLike, ConnectionManager, ConnectionManagerConfig};
use redis::cluster::ClusterClient;
use redis::cluster_async::ClusterConnection;
use redis::cluster_routing::{RoutingInfo, SingleNodeRoutingInfo};
use redis::{Cmd, FromRedisValue, Pipeline, RedisFuture, RedisResult, Script, Value};
use tokio::sync::OnceCell;

use super::pattern::escape_glob;
use crate::config::{RedisConfig, RedisTarget};
use crate::resilience::{Breaker, CallError};

/// Hash field holding the epoch. Tags may not start with `#`, so no tag can collide with it.
pub const EPOCH_FIELD: &str = "#epoch";
/// Tags per bump script call: Redis runs a script atomically and blocks meanwhile; 500 fields
/// take well under a millisecond.
const BUMP_CHUNK: usize = 500;
/// Keys asked per `SCAN` step: Redis' own guidance for a few hundred keys per round trip.
const SCAN_COUNT: usize = 500;

/// Bumps fields of the generations hash, each to `max(current, given) + 1` (so above both what
/// Redis holds and what the caller last confirmed, even if Redis lost data), and returns the new
/// values: ARGV = epoch field, the epoch floor to bump from or `''` to leave the epoch alone,
/// then tag/confirmed pairs. The first value is the epoch's (-1 if untouched), then the tags'.
const BUMP: &str = r"
local function bump(field, given)
  local cur = tonumber(redis.call('HGET', KEYS[1], field) or '0')
  local new = math.max(cur, given) + 1
  redis.call('HSET', KEYS[1], field, new)
  return new
end
local out = {-1}
if ARGV[2] ~= '' then out[1] = bump(ARGV[1], tonumber(ARGV[2])) end
for i = 3, #ARGV, 2 do out[#out + 1] = bump(ARGV[i], tonumber(ARGV[i + 1])) end
return out";

/// Raises every given field to at least the given value (creating it if missing: the epoch field
/// must exist for snapshots to be trusted) and returns the resulting tag values:
/// ARGV = epoch field, floor, then tag/value pairs.
const PUSH_MAX: &str = r"
local out = {}
local function raise(field, value)
  local raw = redis.call('HGET', KEYS[1], field)
  local cur = tonumber(raw or '0')
  if raw == false or cur < value then redis.call('HSET', KEYS[1], field, math.max(cur, value)); cur = math.max(cur, value) end
  return cur
end
raise(ARGV[1], tonumber(ARGV[2]))
for i = 3, #ARGV, 2 do
  out[#out + 1] = ARGV[i]
  out[#out + 1] = tostring(raise(ARGV[i], tonumber(ARGV[i + 1])))
end
return out";

#[derive(Debug, thiserror::Error)]
pub enum L2Error {
    #[error("redis unavailable: {0}")]
    Unavailable(String),
    #[error("redis: {0}")]
    Redis(#[from] redis::RedisError),
    #[error("redis did not answer within {0:?}")]
    Timeout(Duration),
    #[error("unexpected redis reply: {0}")]
    Reply(#[from] redis::ParsingError),
    #[error("unexpected redis reply: {0}")]
    Malformed(String),
}

impl From<CallError<L2Error>> for L2Error {
    fn from(e: CallError<L2Error>) -> Self {
        match e {
            CallError::Open { .. } => L2Error::Unavailable(e.to_string()),
            CallError::Inner(inner) => inner,
        }
    }
}

#[derive(Clone)]
enum Conn {
    Single(ConnectionManager),
    Cluster(ClusterConnection),
}

impl ConnectionLike for Conn {
    fn req_packed_command<'a>(&'a mut self, cmd: &'a Cmd) -> RedisFuture<'a, Value> {
        match self {
            Conn::Single(c) => c.req_packed_command(cmd),
            Conn::Cluster(c) => c.req_packed_command(cmd),
        }
    }

    fn req_packed_commands<'a>(
        &'a mut self,
        pipeline: &'a Pipeline,
        offset: usize,
        count: usize,
    ) -> RedisFuture<'a, Vec<Value>> {
        match self {
            Conn::Single(c) => c.req_packed_commands(pipeline, offset, count),
            Conn::Cluster(c) => c.req_packed_commands(pipeline, offset, count),
        }
    }

    fn get_db(&self) -> i64 {
        match self {
            Conn::Single(c) => c.get_db(),
            Conn::Cluster(c) => c.get_db(),
        }
    }
}

enum Target {
    Single(ConnectionManager),
    /// Connected on first use: the cluster client has no lazy mode.
    Cluster(Box<(ClusterClient, OnceCell<ClusterConnection>)>),
}

/// The Redis level.
pub struct L2 {
    target: Target,
    prefix: String,
    gen_key: String,
    timeout: Duration,
    breaker: Breaker,
    bump: Script,
    push_max: Script,
}

impl std::fmt::Debug for L2 {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("L2").field("prefix", &self.prefix).finish()
    }
}

impl L2 {
    /// Sets the client up without connecting (the first command connects).
    pub fn new(config: &RedisConfig, breaker: Breaker) -> Result<Self, L2Error> {
        let target = match &config.target {
            RedisTarget::Single(url) => {
                let client = redis::Client::open(url.expose())?;
                let manager_config = ConnectionManagerConfig::new()
                    .set_connection_timeout(Some(config.connect_timeout))
                    .set_response_timeout(Some(config.command_timeout))
                    // Fail fast and let the breaker pace retries, instead of holding requests
                    // through a reconnect loop while Redis is down.
                    .set_number_of_retries(1)
                    .set_min_delay(Duration::from_millis(10))
                    .set_max_delay(Duration::from_millis(100));
                Target::Single(ConnectionManager::new_lazy_with_config(client, manager_config)?)
            }
            RedisTarget::Cluster(nodes) => {
                let client = ClusterClient::builder(nodes.iter().map(|n| n.expose().to_owned()))
                    .connection_timeout(config.connect_timeout)
                    .response_timeout(config.command_timeout)
                    .build()?;
                Target::Cluster(Box::new((client, OnceCell::new())))
            }
        };
        Ok(Self {
            target,
            prefix: config.key_prefix.clone(),
            gen_key: format!("{}gen", config.key_prefix),
            timeout: config.command_timeout,
            breaker,
            bump: Script::new(BUMP),
            push_max: Script::new(PUSH_MAX),
        })
    }

    pub fn breaker(&self) -> &Breaker {
        &self.breaker
    }

    fn entry_key(&self, key: &str) -> String {
        format!("{}e:{key}", self.prefix)
    }

    async fn conn(&self) -> Result<Conn, L2Error> {
        match &self.target {
            Target::Single(m) => Ok(Conn::Single(m.clone())),
            Target::Cluster(cluster) => {
                let (client, cell) = &**cluster;
                let c = cell.get_or_try_init(|| client.get_async_connection()).await?;
                Ok(Conn::Cluster(c.clone()))
            }
        }
    }

    /// Runs `f` on a connection under the breaker and the command timeout.
    async fn guarded<T, F, Fut>(&self, f: F) -> Result<T, L2Error>
    where
        F: FnOnce(Conn) -> Fut,
        Fut: Future<Output = RedisResult<T>>,
    {
        let timeout = self.timeout;
        let call = async {
            let conn = self.conn().await?;
            match tokio::time::timeout(timeout, f(conn)).await {
                Ok(result) => result.map_err(L2Error::from),
                Err(_) => Err(L2Error::Timeout(timeout)),
            }
        };
        Ok(self.breaker.call(call).await?)
    }

    async fn query<T: FromRedisValue + Send>(&self, cmd: Cmd) -> Result<T, L2Error> {
        self.guarded(|mut c| async move { cmd.query_async(&mut c).await }).await
    }

    pub async fn get(&self, key: &str) -> Result<Option<Vec<u8>>, L2Error> {
        self.query(redis::cmd("GET").arg(self.entry_key(key)).clone()).await
    }

    pub async fn set(&self, key: &str, value: &[u8], ttl_ms: u64) -> Result<(), L2Error> {
        let cmd = redis::cmd("SET").arg(self.entry_key(key)).arg(value).arg("PX").arg(ttl_ms.max(1)).clone();
        self.query::<()>(cmd).await
    }

    pub async fn delete(&self, key: &str) -> Result<(), L2Error> {
        self.query::<()>(redis::cmd("UNLINK").arg(self.entry_key(key)).clone()).await
    }

    /// Epoch (None when the hash has none: Redis lost it or was never written) and the
    /// generation of each tag, in order.
    pub async fn generations(&self, tags: &[String]) -> Result<(Option<u64>, Vec<u64>), L2Error> {
        let mut cmd = redis::cmd("HMGET");
        cmd.arg(&self.gen_key).arg(EPOCH_FIELD);
        for tag in tags {
            cmd.arg(tag);
        }
        let values: Vec<Option<u64>> = self.query(cmd).await?;
        let mut values = values.into_iter();
        let epoch = values.next().flatten();
        Ok((epoch, values.map(|v| v.unwrap_or(0)).collect()))
    }

    /// Bumps the epoch (from `epoch_floor`, when given) and each tag (from its confirmed
    /// generation) in one script call per [`BUMP_CHUNK`] tags; returns the new epoch and the tags'
    /// new values in order. Every value returned is above anything Redis held before the call.
    pub async fn bump(
        &self,
        epoch_floor: Option<u64>,
        tags: &[(&str, u64)],
    ) -> Result<(Option<u64>, Vec<u64>), L2Error> {
        let mut epoch = None;
        let mut values = Vec::with_capacity(tags.len());
        let chunks = tags.chunks(BUMP_CHUNK).map(Some).chain(tags.is_empty().then_some(None));
        for (i, chunk) in chunks.enumerate() {
            let script = self.bump.clone();
            let key = self.gen_key.clone();
            let floor = if i == 0 { epoch_floor.map(|f| f.to_string()).unwrap_or_default() } else { String::new() };
            let chunk = chunk.unwrap_or(&[]);
            let reply: Vec<i64> = self
                .guarded(|mut c| async move {
                    let mut inv = script.key(key);
                    inv.arg(EPOCH_FIELD).arg(floor);
                    for (tag, confirmed) in chunk {
                        inv.arg(*tag).arg(*confirmed);
                    }
                    inv.invoke_async(&mut c).await
                })
                .await?;
            // A reply of another shape must not be taken for a confirmation.
            let malformed = || L2Error::Malformed(format!("bump answered {reply:?}"));
            let (first, rest) = reply.split_first().ok_or_else(malformed)?;
            if rest.len() != chunk.len() || rest.iter().any(|v| *v < 1) {
                return Err(malformed());
            }
            if i == 0 {
                epoch = u64::try_from(*first).ok();
            }
            values.extend(rest.iter().map(|v| v.unsigned_abs()));
        }
        Ok((epoch, values))
    }

    /// Raises Redis' epoch and tag generations to at least this process' values; returns Redis'
    /// resulting tag values.
    pub async fn push_generations(&self, floor: u64, tags: &[(String, u64)]) -> Result<Vec<(String, u64)>, L2Error> {
        let mut all = Vec::with_capacity(tags.len());
        // One script call per chunk keeps each call short (Redis runs scripts atomically and
        // blocks meanwhile); 500 fields take well under a millisecond.
        for chunk in tags.chunks(500).map(Some).chain(tags.is_empty().then_some(None)) {
            let script = self.push_max.clone();
            let key = self.gen_key.clone();
            let chunk = chunk.unwrap_or(&[]).to_vec();
            let flat: Vec<String> = self
                .guarded(|mut c| async move {
                    let mut inv = script.key(key);
                    inv.arg(EPOCH_FIELD).arg(floor);
                    for (tag, g) in &chunk {
                        inv.arg(tag).arg(*g);
                    }
                    inv.invoke_async(&mut c).await
                })
                .await?;
            for pair in flat.chunks(2) {
                if let [tag, value] = pair {
                    all.push((tag.clone(), value.parse().unwrap_or(0)));
                }
            }
        }
        Ok(all)
    }

    /// Deletes every entry whose key matches `pattern` (Redis glob), with `SCAN MATCH` on the
    /// prefixed keys (on every primary of a cluster). Returns how many were deleted.
    pub async fn delete_matching(&self, pattern: &str) -> Result<u64, L2Error> {
        let redis_pattern = format!("{}e:{pattern}", escape_glob(&self.prefix));
        let nodes: Vec<Option<(String, u16)>> = match &self.target {
            Target::Single(_) => vec![None],
            Target::Cluster(_) => self.primaries().await?.into_iter().map(Some).collect(),
        };
        let mut deleted = 0;
        for node in nodes {
            let mut cursor: u64 = 0;
            loop {
                let mut scan = redis::cmd("SCAN");
                scan.arg(cursor).arg("MATCH").arg(&redis_pattern).arg("COUNT").arg(SCAN_COUNT);
                let (next, keys): (u64, Vec<String>) = self.on_node(&node, scan).await?;
                if !keys.is_empty() {
                    deleted += keys.len() as u64;
                    for key in keys {
                        // One key per UNLINK: on a cluster the keys of one SCAN page may hash to
                        // different slots.
                        let _: () = self.on_node(&node, redis::cmd("UNLINK").arg(key).clone()).await?;
                    }
                }
                if next == 0 {
                    break;
                }
                cursor = next;
            }
        }
        Ok(deleted)
    }

    async fn on_node<T: FromRedisValue + Send>(&self, node: &Option<(String, u16)>, cmd: Cmd) -> Result<T, L2Error> {
        match node {
            None => self.query(cmd).await,
            Some((host, port)) => {
                let routing =
                    RoutingInfo::SingleNode(SingleNodeRoutingInfo::ByAddress { host: host.clone(), port: *port });
                let value: Value = self
                    .guarded(|c| async move {
                        match c {
                            Conn::Cluster(mut c) => c.route_command(cmd, routing).await,
                            Conn::Single(mut c) => cmd.query_async(&mut c).await,
                        }
                    })
                    .await?;
                Ok(T::from_redis_value(value)?)
            }
        }
    }

    /// Addresses of the cluster's primaries, from `CLUSTER SLOTS`.
    async fn primaries(&self) -> Result<Vec<(String, u16)>, L2Error> {
        let slots: Value = self
            .guarded(|c| async move {
                match c {
                    Conn::Cluster(mut c) => {
                        c.route_command(
                            redis::cmd("CLUSTER").arg("SLOTS").clone(),
                            RoutingInfo::SingleNode(SingleNodeRoutingInfo::Random),
                        )
                        .await
                    }
                    Conn::Single(_) => Ok(Value::Array(Vec::new())),
                }
            })
            .await?;
        let ranges: Vec<Vec<Value>> = FromRedisValue::from_redis_value(slots)?;
        let mut primaries = Vec::new();
        for range in ranges {
            // [start, end, [host, port, id, ...], replicas...]
            if let Some(primary) = range.get(2) {
                let (host, port): (String, u16) = match primary {
                    Value::Array(parts) if parts.len() >= 2 => (
                        FromRedisValue::from_redis_value(parts[0].clone())?,
                        FromRedisValue::from_redis_value(parts[1].clone())?,
                    ),
                    _ => continue,
                };
                if !primaries.contains(&(host.clone(), port)) {
                    primaries.push((host, port));
                }
            }
        }
        Ok(primaries)
    }

    /// `INFO` (of one node, for a cluster), for the monitor.
    pub async fn info(&self) -> Result<String, L2Error> {
        self.query(redis::cmd("INFO")).await
    }

    /// `PING`, for health checks.
    pub async fn ping(&self) -> Result<(), L2Error> {
        let _: String = self.query(redis::cmd("PING")).await?;
        Ok(())
    }
}
