//! The table of every environment variable the daemon reads: name, default, meaning.
//!
//! This table is the single source of truth: `Config::from_env` takes defaults from it and
//! `voxperfd --help` prints it, so a variable cannot be read without being documented. Names and
//! meanings of the seed's variables are kept (times in milliseconds where the seed used them,
//! `CACHE_DEFAULT_TTL` in seconds); the `VOXPERF_*`, `CACHE_L1_*`, `REDIS_URL`, `REDIS_CLUSTER_*`
//! and extra `CIRCUIT_BREAKER_*` variables are the daemon's own.

/// Section of `--help` a variable belongs to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Group {
    Daemon,
    Cache,
    Query,
    Cdn,
    Monitoring,
    Scaling,
    CircuitBreaker,
}

impl Group {
    pub const ALL: [Group; 7] = [
        Group::Daemon,
        Group::Cache,
        Group::Query,
        Group::Cdn,
        Group::Monitoring,
        Group::Scaling,
        Group::CircuitBreaker,
    ];

    pub fn title(self) -> &'static str {
        match self {
            Group::Daemon => "Daemon",
            Group::Cache => "Cache (L1 in process, L2 Redis)",
            Group::Query => "Query cache and query optimisation",
            Group::Cdn => "CDN",
            Group::Monitoring => "Performance monitoring and alerts",
            Group::Scaling => "Auto-scaling",
            Group::CircuitBreaker => "Circuit breakers (one for Redis, one for Postgres)",
        }
    }
}

/// One documented variable.
#[derive(Debug, Clone, Copy)]
pub struct Var {
    pub name: &'static str,
    /// Default when neither the environment nor the preset sets it; "" means unset.
    pub default: &'static str,
    pub group: Group,
    pub help: &'static str,
    /// Never echoed back (error messages, `--check-config`).
    pub secret: bool,
}

const fn var(name: &'static str, default: &'static str, group: Group, help: &'static str) -> Var {
    Var { name, default, group, help, secret: false }
}

const fn secret(name: &'static str, group: Group, help: &'static str) -> Var {
    Var { name, default: "", group, help, secret: true }
}

use Group::*;

/// Every variable, in `--help` order.
pub const VARS: &[Var] = &[
    var(
        "PERFORMANCE_PRESET",
        "",
        Daemon,
        "Preset of defaults: highPerformance, costOptimized or development (see below). Variables set explicitly override the preset.",
    ),
    var(
        "DATABASE_URL",
        "postgres://postgres@127.0.0.1:28815/voxperf",
        Daemon,
        "Postgres connection string (the database with the voxperf extension). TLS is not supported: use a local or tunnelled connection.",
    ),
    var("VOXPERF_LISTEN", "127.0.0.1:8080", Daemon, "Address the HTTP API listens on (host:port)."),
    var(
        "VOXPERF_UPSTREAM",
        "",
        Daemon,
        "Gateway: the application's base URL (http://host:port). Every path that is not voxperfd's own API is proxied to it; routes of VOXPERF_ROUTES add caching and limits. Unset (and no routes file): the gateway is off and unknown paths answer 404.",
    ),
    var(
        "VOXPERF_ROUTES",
        "",
        Daemon,
        "Gateway: path of the routes file (TOML; see docs/gateway.md): upstreams, caching strategy, tags, vary, timeouts, body limits, compression, breakers, stale windows per path pattern. Reloaded on SIGHUP.",
    ),
    secret("VOXPERF_ADMIN_TOKEN", Daemon, "Bearer token required by /api/admin/*. Unset: admin routes answer 403."),
    var(
        "VOXPERF_BODY_LIMIT",
        "1MiB",
        Daemon,
        "Largest request body accepted (bytes; KiB/MiB/GiB suffixes allowed); larger bodies get 413.",
    ),
    var("VOXPERF_REQUEST_TIMEOUT", "30000", Daemon, "Milliseconds a request may take before the daemon answers 503."),
    var("VOXPERF_DB_POOL_SIZE", "8", Daemon, "Postgres connections in the pool (the LISTEN connection is extra)."),
    var("RUST_LOG", "voxperfd=info,tower_http=info", Daemon, "Log filter (tracing EnvFilter syntax)."),
    var("LOG_FORMAT", "text", Daemon, "Log format: text or json."),
    var("REDIS_ENABLED", "true", Cache, "Use Redis as the shared second cache level. false: L1 only."),
    var(
        "REDIS_URL",
        "",
        Cache,
        "Redis URL (redis://[:password@]host:port/db). Takes precedence over REDIS_HOST and REDIS_PORT.",
    ),
    var("REDIS_HOST", "127.0.0.1", Cache, "Redis host, when REDIS_URL is unset."),
    var("REDIS_PORT", "26379", Cache, "Redis port, when REDIS_URL is unset."),
    secret("REDIS_PASSWORD", Cache, "Redis password (used unless REDIS_URL carries one)."),
    var(
        "REDIS_CLUSTER_NODES",
        "",
        Cache,
        "Comma-separated Redis Cluster seed nodes (host:port or redis:// URLs). Set: the cluster client is used instead of REDIS_URL/HOST/PORT.",
    ),
    var("REDIS_KEY_PREFIX", "voxperf:", Cache, "Prefix of every Redis key the daemon writes."),
    var(
        "REDIS_COMMAND_TIMEOUT",
        "500",
        Cache,
        "Milliseconds before a Redis command counts as failed (the cache then falls back to L1).",
    ),
    var("REDIS_CONNECT_TIMEOUT", "1000", Cache, "Milliseconds allowed to connect to Redis."),
    var("CACHE_DEFAULT_TTL", "3600", Cache, "Seconds an entry lives when the caller gives no TTL."),
    var(
        "CACHE_L1_MAX_BYTES",
        "64MiB",
        Cache,
        "Bytes the in-process cache may hold (keys, values and tags); least valuable entries are evicted beyond it.",
    ),
    var(
        "CACHE_COMPRESSION_THRESHOLD",
        "1024",
        Cache,
        "Values larger than this many bytes are stored zstd-compressed in Redis.",
    ),
    var(
        "CACHE_WARM_FILE",
        "",
        Cache,
        "JSON file of entries POST /api/admin/optimize warms the cache with: [{\"key\", \"value\", \"ttl\", \"tags\"}] and/or [{\"sql\", \"params\", \"ttl\"}].",
    ),
    var(
        "VOXPERF_NOTIFY_CHANNEL",
        "voxperf_invalidate",
        Cache,
        "LISTEN channel for invalidations; must equal the extension's voxperf.notify_channel.",
    ),
    var(
        "VOXPERF_QUERY_ROW_LIMIT",
        "10000",
        Query,
        "Most rows POST /api/cache/query returns; a statement returning more is refused (422).",
    ),
    var(
        "VOXPERF_QUERY_STATEMENT_TIMEOUT",
        "5000",
        Query,
        "statement_timeout (milliseconds) for POST /api/cache/query.",
    ),
    var(
        "QUERY_OPTIMIZATION_ENABLED",
        "true",
        Query,
        "Enable the query optimiser (slow-query capture and index advice).",
    ),
    var("SLOW_QUERY_THRESHOLD", "1000", Query, "Milliseconds above which a query counts as slow."),
    var("AUTO_INDEX_SUGGESTIONS", "true", Query, "Compute index suggestions automatically."),
    var(
        "VOXPERF_INDEX_SUGGESTIONS_TTL",
        "60",
        Query,
        "Seconds /api/db/index-suggestions answers are cached (they cost one hypothetical plan per candidate).",
    ),
    var(
        "VOXPERF_MIGRATIONS_DIR",
        "migrations",
        Query,
        "Folder POST /api/db/migrations writes migration files into (created if missing; files are never overwritten).",
    ),
    var("CDN_ENABLED", "false", Cdn, "Enable CDN integration."),
    var("CDN_PROVIDER", "", Cdn, "CDN provider: cloudflare, aws, azure or gcp (required when CDN_ENABLED)."),
    var("CDN_BASE_URL", "", Cdn, "Public base URL of the CDN (required when CDN_ENABLED)."),
    secret("CDN_API_KEY", Cdn, "CDN provider API key."),
    var("CDN_ZONE_ID", "", Cdn, "CDN zone or distribution identifier."),
    var("PERFORMANCE_MONITORING_ENABLED", "true", Monitoring, "Collect performance metrics."),
    var("METRICS_INTERVAL", "30000", Monitoring, "Milliseconds between metric collections."),
    var(
        "ALERT_RESPONSE_TIME_THRESHOLD",
        "2000",
        Monitoring,
        "Alert when response time exceeds this many milliseconds.",
    ),
    var("ALERT_ERROR_RATE_THRESHOLD", "5", Monitoring, "Alert when the error rate exceeds this percentage."),
    var("ALERT_CPU_THRESHOLD", "80", Monitoring, "Alert when CPU use exceeds this percentage."),
    var("ALERT_MEMORY_THRESHOLD", "85", Monitoring, "Alert when memory use exceeds this percentage."),
    var(
        "ALERT_CACHE_HIT_RATE_THRESHOLD",
        "50",
        Monitoring,
        "Alert when the cache hit rate falls below this percentage (judged only with at least 20 lookups in the interval).",
    ),
    var(
        "ALERT_SLOW_QUERY_BURST",
        "10",
        Monitoring,
        "Alert when at least this many new slow queries (voxperf.slow_queries) appear within a minute (0 = rule off).",
    ),
    var(
        "ALERT_PENDING_DURATION",
        "60000",
        Monitoring,
        "Milliseconds a condition must hold, at every collection, before its alert fires (no alerts on blips).",
    ),
    var(
        "ALERT_RESOLVE_DURATION",
        "60000",
        Monitoring,
        "Milliseconds a firing alert's condition must stay clear before it resolves (no flapping).",
    ),
    var(
        "ALERT_WEBHOOK_URL",
        "",
        Monitoring,
        "http:// URL that receives alert notifications as JSON POSTs (Alertmanager's webhook shape). Unset: log only.",
    ),
    var("ALERT_WEBHOOK_TIMEOUT", "5000", Monitoring, "Milliseconds one webhook delivery attempt may take."),
    var(
        "ALERT_WEBHOOK_RETRIES",
        "3",
        Monitoring,
        "Retries of a failed webhook delivery (exponential backoff from 500 ms).",
    ),
    var(
        "VOXPERF_SLOW_REQUEST_LOG_SIZE",
        "200",
        Monitoring,
        "Requests slower than ALERT_RESPONSE_TIME_THRESHOLD kept for /api/performance/slow-requests.",
    ),
    var(
        "VOXPERF_INSTANCE",
        "",
        Monitoring,
        "This daemon's name in the trend history kept in Postgres (voxperfd.trend_buckets). Unset: host name and VOXPERF_LISTEN's port.",
    ),
    var("AUTO_SCALING_ENABLED", "false", Scaling, "Enable auto-scaling decisions."),
    var("SCALING_MONITORING_INTERVAL", "60000", Scaling, "Milliseconds between scaling evaluations."),
    var(
        "AUTO_SCALING_DEFAULT_RULES",
        "true",
        Scaling,
        "Install the default scaling rules (CPU, memory, response time).",
    ),
    var("CIRCUIT_BREAKER_ENABLED", "true", CircuitBreaker, "Enable circuit breakers."),
    var(
        "CIRCUIT_BREAKER_FAILURE_THRESHOLD",
        "5",
        CircuitBreaker,
        "Failures within the monitoring period that open a breaker (0 = rule off).",
    ),
    var(
        "CIRCUIT_BREAKER_RECOVERY_TIMEOUT",
        "60000",
        CircuitBreaker,
        "Milliseconds a breaker stays open before letting trial calls through.",
    ),
    var(
        "CIRCUIT_BREAKER_MONITORING_PERIOD",
        "60000",
        CircuitBreaker,
        "Milliseconds of the sliding window outcomes are counted in.",
    ),
    var(
        "CIRCUIT_BREAKER_FAILURE_RATE_THRESHOLD",
        "50",
        CircuitBreaker,
        "Failure percentage (over at least CIRCUIT_BREAKER_MINIMUM_CALLS calls) that opens a breaker (0 = rule off).",
    ),
    var("CIRCUIT_BREAKER_MINIMUM_CALLS", "10", CircuitBreaker, "Calls needed in the window before rates are judged."),
    var(
        "CIRCUIT_BREAKER_SLOW_CALL_THRESHOLD",
        "2000",
        CircuitBreaker,
        "Milliseconds after which a successful call counts as slow.",
    ),
    var(
        "CIRCUIT_BREAKER_SLOW_CALL_RATE_THRESHOLD",
        "100",
        CircuitBreaker,
        "Slow-call percentage that opens a breaker (0 = rule off).",
    ),
    var(
        "CIRCUIT_BREAKER_HALF_OPEN_CALLS",
        "3",
        CircuitBreaker,
        "Trial calls let through while half-open; it closes if they stay under the thresholds.",
    ),
];

/// The documented entry for `name`. Panics on an undocumented name: reading one is a bug.
pub fn lookup(name: &str) -> &'static Var {
    VARS.iter()
        .find(|v| v.name == name)
        .unwrap_or_else(|| panic!("environment variable {name} is not in config::vars::VARS"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_variable_is_documented_once() {
        let mut names: Vec<_> = VARS.iter().map(|v| v.name).collect();
        names.sort_unstable();
        let before = names.len();
        names.dedup();
        assert_eq!(before, names.len(), "duplicate variable in VARS");
        assert!(VARS.iter().all(|v| !v.help.is_empty()));
    }

    #[test]
    fn the_seeds_variables_are_all_present() {
        for name in [
            "REDIS_ENABLED",
            "REDIS_HOST",
            "REDIS_PORT",
            "REDIS_PASSWORD",
            "REDIS_KEY_PREFIX",
            "CACHE_DEFAULT_TTL",
            "CDN_ENABLED",
            "CDN_PROVIDER",
            "CDN_BASE_URL",
            "CDN_API_KEY",
            "CDN_ZONE_ID",
            "PERFORMANCE_MONITORING_ENABLED",
            "METRICS_INTERVAL",
            "ALERT_RESPONSE_TIME_THRESHOLD",
            "ALERT_ERROR_RATE_THRESHOLD",
            "ALERT_CPU_THRESHOLD",
            "ALERT_MEMORY_THRESHOLD",
            "AUTO_SCALING_ENABLED",
            "SCALING_MONITORING_INTERVAL",
            "AUTO_SCALING_DEFAULT_RULES",
            "CIRCUIT_BREAKER_ENABLED",
            "CIRCUIT_BREAKER_FAILURE_THRESHOLD",
            "CIRCUIT_BREAKER_RECOVERY_TIMEOUT",
            "CIRCUIT_BREAKER_MONITORING_PERIOD",
            "QUERY_OPTIMIZATION_ENABLED",
            "SLOW_QUERY_THRESHOLD",
            "AUTO_INDEX_SUGGESTIONS",
        ] {
            lookup(name);
        }
    }
}
