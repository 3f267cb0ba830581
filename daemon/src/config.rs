//! The daemon's configuration: `Config::from_env()`, presets, validation.
//!
//! Every value comes from an environment variable documented in [`vars::VARS`] (which also feeds
//! `voxperfd --help`), else from the `PERFORMANCE_PRESET`, else from the table's default. The
//! whole configuration is validated once, at start-up; every problem is reported together, each
//! naming its variable and the rejected value (secrets are never echoed). After that the typed
//! [`Config`] is passed around in the application state — nothing reads the environment later.

mod presets;
pub mod vars;

use std::collections::HashMap;
use std::fmt::{self, Write as _};
use std::net::SocketAddr;
use std::time::Duration;

pub use presets::Preset;

use crate::resilience::BreakerSettings;

/// One rejected variable.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{var}={value}: {reason}")]
pub struct InvalidVar {
    pub var: &'static str,
    /// The value as given, or `<redacted>` for secrets.
    pub value: String,
    pub reason: String,
}

/// Everything wrong with the environment, reported at once.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid configuration:\n  {}", .0.iter().map(ToString::to_string).collect::<Vec<_>>().join("\n  "))]
pub struct Error(pub Vec<InvalidVar>);

/// A value that must not appear in logs or error messages.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    pub fn new(value: impl Into<String>) -> Self {
        Self(value.into())
    }

    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("<redacted>")
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogFormat {
    Text,
    Json,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CdnProvider {
    Cloudflare,
    Aws,
    Azure,
    Gcp,
}

/// Where Redis is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RedisTarget {
    /// One server (URL with the password applied).
    Single(Secret),
    /// Redis Cluster seed nodes (URLs with the password applied).
    Cluster(Vec<Secret>),
}

#[derive(Debug, Clone, PartialEq)]
pub struct RedisConfig {
    pub enabled: bool,
    pub target: RedisTarget,
    pub key_prefix: String,
    pub command_timeout: Duration,
    pub connect_timeout: Duration,
}

#[derive(Debug, Clone, PartialEq)]
pub struct CacheConfig {
    pub default_ttl: Duration,
    pub warm_file: Option<std::path::PathBuf>,
    pub l1_max_bytes: u64,
    pub compression_threshold: usize,
    pub notify_channel: String,
}

#[derive(Debug, Clone, PartialEq)]
pub struct QueryConfig {
    pub row_limit: u32,
    pub statement_timeout: Duration,
    pub optimization_enabled: bool,
    pub slow_query_threshold: Duration,
    pub auto_index_suggestions: bool,
    pub index_suggestions_ttl: Duration,
    pub migrations_dir: std::path::PathBuf,
}

#[derive(Debug, Clone, PartialEq)]
pub struct CdnConfig {
    pub enabled: bool,
    pub provider: Option<CdnProvider>,
    pub base_url: Option<String>,
    pub api_key: Option<Secret>,
    pub zone_id: Option<String>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct MonitoringConfig {
    pub enabled: bool,
    pub metrics_interval: Duration,
    pub alert_response_time: Duration,
    pub alert_error_rate_percent: f64,
    pub alert_cpu_percent: f64,
    pub alert_memory_percent: f64,
    pub alert_cache_hit_rate_percent: f64,
    pub alert_slow_query_burst: u64,
    pub alert_pending: Duration,
    pub alert_resolve: Duration,
    pub webhook_url: Option<String>,
    pub webhook_timeout: Duration,
    pub webhook_retries: u32,
    pub slow_request_log_size: usize,
    /// `VOXPERF_INSTANCE`, or host name and listen port.
    pub instance: String,
}

#[derive(Debug, Clone, PartialEq)]
pub struct ScalingConfig {
    pub enabled: bool,
    pub monitoring_interval: Duration,
    pub default_rules: bool,
}

#[derive(Debug, Clone, PartialEq)]
pub struct HttpConfig {
    pub listen: SocketAddr,
    pub admin_token: Option<Secret>,
    pub body_limit: usize,
    pub request_timeout: Duration,
}

/// The gateway in front of the application (`docs/gateway.md`).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct GatewayConfig {
    /// `VOXPERF_UPSTREAM`: the default upstream's URL.
    pub upstream: Option<String>,
    /// `VOXPERF_ROUTES`: the routes file.
    pub routes_file: Option<std::path::PathBuf>,
}

impl GatewayConfig {
    pub fn enabled(&self) -> bool {
        self.upstream.is_some() || self.routes_file.is_some()
    }
}

/// The validated configuration.
#[derive(Debug, Clone, PartialEq)]
pub struct Config {
    pub preset: Option<Preset>,
    pub database_url: Secret,
    pub db_pool_size: usize,
    pub log_filter: String,
    pub log_format: LogFormat,
    pub http: HttpConfig,
    pub gateway: GatewayConfig,
    pub redis: RedisConfig,
    pub cache: CacheConfig,
    pub query: QueryConfig,
    pub cdn: CdnConfig,
    pub monitoring: MonitoringConfig,
    pub scaling: ScalingConfig,
    pub breaker: BreakerSettings,
}

/// Reads variables: environment first, then the preset, then the documented default.
struct Source<'a> {
    env: &'a HashMap<String, String>,
    preset: Option<Preset>,
    errors: Vec<InvalidVar>,
}

impl Source<'_> {
    /// The raw value, or `None` when it is unset (or set to the empty string) everywhere.
    fn raw(&self, name: &'static str) -> Option<String> {
        let doc = vars::lookup(name);
        self.env
            .get(name)
            .map(|v| v.trim().to_owned())
            .filter(|v| !v.is_empty())
            .or_else(|| self.preset.and_then(|p| p.value(name)).map(str::to_owned))
            .or_else(|| (!doc.default.is_empty()).then(|| doc.default.to_owned()))
    }

    fn reject(&mut self, name: &'static str, value: &str, reason: impl Into<String>) {
        let value = if vars::lookup(name).secret { "<redacted>".to_owned() } else { value.to_owned() };
        self.errors.push(InvalidVar { var: name, value, reason: reason.into() });
    }

    /// Parses a value that has a default; on error records it and returns `fallback`.
    fn parse<T>(&mut self, name: &'static str, fallback: T, parse: impl FnOnce(&str) -> Result<T, String>) -> T {
        match self.raw(name) {
            None => fallback,
            Some(raw) => parse(&raw).unwrap_or_else(|reason| {
                self.reject(name, &raw, reason);
                fallback
            }),
        }
    }

    fn string(&mut self, name: &'static str) -> String {
        self.raw(name).unwrap_or_default()
    }

    fn optional(&mut self, name: &'static str) -> Option<String> {
        self.raw(name)
    }

    fn bool(&mut self, name: &'static str) -> bool {
        self.parse(name, false, parse_bool)
    }

    fn int(&mut self, name: &'static str, min: u64, max: u64) -> u64 {
        self.parse(name, min, |s| parse_int(s, min, max))
    }

    fn millis(&mut self, name: &'static str, min: u64, max: u64) -> Duration {
        Duration::from_millis(self.int(name, min, max))
    }

    fn percent(&mut self, name: &'static str) -> f64 {
        self.parse(name, 0.0, parse_percent)
    }

    fn bytes(&mut self, name: &'static str, min: u64, max: u64) -> u64 {
        self.parse(name, min, |s| parse_bytes(s, min, max))
    }
}

fn parse_bool(s: &str) -> Result<bool, String> {
    match s.to_ascii_lowercase().as_str() {
        "true" | "1" | "yes" | "on" => Ok(true),
        "false" | "0" | "no" | "off" => Ok(false),
        _ => Err("expected true or false".into()),
    }
}

fn parse_int(s: &str, min: u64, max: u64) -> Result<u64, String> {
    let n: u64 = s.parse().map_err(|_| "expected a whole non-negative number".to_owned())?;
    if n < min || n > max {
        return Err(format!("must be between {min} and {max}"));
    }
    Ok(n)
}

fn parse_percent(s: &str) -> Result<f64, String> {
    match s.parse::<f64>() {
        Ok(p) if (0.0..=100.0).contains(&p) => Ok(p),
        _ => Err("expected a percentage between 0 and 100".into()),
    }
}

/// Bytes, with an optional binary suffix: `1048576`, `512KiB`, `64MiB`, `1GiB`.
fn parse_bytes(s: &str, min: u64, max: u64) -> Result<u64, String> {
    let lower = s.to_ascii_lowercase();
    let (digits, unit) = match lower.find(|c: char| !c.is_ascii_digit()) {
        Some(i) => lower.split_at(i),
        None => (lower.as_str(), ""),
    };
    let multiplier: u64 = match unit.trim() {
        "" | "b" => 1,
        "k" | "kb" | "kib" => 1 << 10,
        "m" | "mb" | "mib" => 1 << 20,
        "g" | "gb" | "gib" => 1 << 30,
        _ => return Err("expected bytes, optionally with KiB, MiB or GiB".into()),
    };
    let n: u64 = digits.parse().map_err(|_| "expected bytes, optionally with KiB, MiB or GiB".to_owned())?;
    let bytes = n.checked_mul(multiplier).ok_or_else(|| "too large".to_owned())?;
    if bytes < min || bytes > max {
        return Err(format!("must be between {min} and {max} bytes"));
    }
    Ok(bytes)
}

/// Puts `password` into a `redis://` URL that has no credentials of its own.
fn with_password(url: &str, password: Option<&str>) -> String {
    let Some(password) = password else {
        return url.to_owned();
    };
    let Some(scheme_end) = url.find("://").map(|i| i + 3) else {
        return url.to_owned();
    };
    let authority_end = url[scheme_end..].find('/').map_or(url.len(), |i| scheme_end + i);
    if url[scheme_end..authority_end].contains('@') {
        return url.to_owned();
    }
    let mut encoded = String::new();
    for b in password.bytes() {
        if b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
            encoded.push(char::from(b));
        } else {
            let _ = write!(encoded, "%{b:02X}");
        }
    }
    format!("{}:{}@{}", &url[..scheme_end], encoded, &url[scheme_end..])
}

impl Config {
    /// Reads the process environment.
    pub fn from_env() -> Result<Self, Error> {
        Self::from_vars(std::env::vars())
    }

    /// Reads the given variables (tests pass their own).
    pub fn from_vars<I, K, V>(vars: I) -> Result<Self, Error>
    where
        I: IntoIterator<Item = (K, V)>,
        K: Into<String>,
        V: Into<String>,
    {
        let env: HashMap<String, String> = vars.into_iter().map(|(k, v)| (k.into(), v.into())).collect();
        let mut src = Source { env: &env, preset: None, errors: Vec::new() };
        src.preset = src.parse("PERFORMANCE_PRESET", None, |s| {
            Preset::parse(s).map(Some).ok_or_else(|| "expected highPerformance, costOptimized or development".into())
        });

        let database_url = src.string("DATABASE_URL");
        if let Err(e) = database_url.parse::<tokio_postgres::Config>() {
            src.reject("DATABASE_URL", &redact_url(&database_url), e.to_string());
        }
        let http = HttpConfig {
            listen: src.parse("VOXPERF_LISTEN", SocketAddr::from(([127, 0, 0, 1], 8080)), |s| {
                s.parse().map_err(|_| "expected host:port, e.g. 127.0.0.1:8080".into())
            }),
            admin_token: src.optional("VOXPERF_ADMIN_TOKEN").map(Secret),
            body_limit: src.bytes("VOXPERF_BODY_LIMIT", 1024, 1 << 30) as usize,
            request_timeout: src.millis("VOXPERF_REQUEST_TIMEOUT", 100, 3_600_000),
        };
        let gateway = GatewayConfig {
            upstream: src.optional("VOXPERF_UPSTREAM").map(|u| u.trim_end_matches('/').to_owned()),
            routes_file: src.optional("VOXPERF_ROUTES").map(std::path::PathBuf::from),
        };
        if let Some(url) = &gateway.upstream
            && !url.starts_with("http://")
        {
            src.reject("VOXPERF_UPSTREAM", url, "expected an http:// URL, e.g. http://127.0.0.1:3000");
        }
        let db_pool_size = src.int("VOXPERF_DB_POOL_SIZE", 1, 1000) as usize;
        let log_filter = src.string("RUST_LOG");
        if let Err(e) = tracing_subscriber::EnvFilter::try_new(&log_filter) {
            src.reject("RUST_LOG", &log_filter, e.to_string());
        }
        let log_format = src.parse("LOG_FORMAT", LogFormat::Text, |s| match s.to_ascii_lowercase().as_str() {
            "text" => Ok(LogFormat::Text),
            "json" => Ok(LogFormat::Json),
            _ => Err("expected text or json".into()),
        });

        let redis = Self::redis(&mut src);
        let cache = CacheConfig {
            default_ttl: Duration::from_secs(src.int("CACHE_DEFAULT_TTL", 1, 31_536_000)),
            warm_file: src.optional("CACHE_WARM_FILE").map(std::path::PathBuf::from),
            l1_max_bytes: src.bytes("CACHE_L1_MAX_BYTES", 0, 1 << 40),
            compression_threshold: src.bytes("CACHE_COMPRESSION_THRESHOLD", 0, 1 << 30) as usize,
            notify_channel: src.parse("VOXPERF_NOTIFY_CHANNEL", String::new(), |s| {
                if s.len() <= 63 && s.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_') {
                    Ok(s.to_owned())
                } else {
                    Err("expected a Postgres identifier (letters, digits, _; at most 63)".into())
                }
            }),
        };
        let query = QueryConfig {
            row_limit: src.int("VOXPERF_QUERY_ROW_LIMIT", 1, 10_000_000) as u32,
            statement_timeout: src.millis("VOXPERF_QUERY_STATEMENT_TIMEOUT", 1, 3_600_000),
            optimization_enabled: src.bool("QUERY_OPTIMIZATION_ENABLED"),
            slow_query_threshold: src.millis("SLOW_QUERY_THRESHOLD", 0, 86_400_000),
            auto_index_suggestions: src.bool("AUTO_INDEX_SUGGESTIONS"),
            index_suggestions_ttl: Duration::from_secs(src.int("VOXPERF_INDEX_SUGGESTIONS_TTL", 1, 86_400)),
            migrations_dir: std::path::PathBuf::from(src.string("VOXPERF_MIGRATIONS_DIR")),
        };
        let cdn = Self::cdn(&mut src);
        let monitoring = MonitoringConfig {
            enabled: src.bool("PERFORMANCE_MONITORING_ENABLED"),
            metrics_interval: src.millis("METRICS_INTERVAL", 100, 86_400_000),
            alert_response_time: src.millis("ALERT_RESPONSE_TIME_THRESHOLD", 1, 3_600_000),
            alert_error_rate_percent: src.percent("ALERT_ERROR_RATE_THRESHOLD"),
            alert_cpu_percent: src.percent("ALERT_CPU_THRESHOLD"),
            alert_memory_percent: src.percent("ALERT_MEMORY_THRESHOLD"),
            alert_cache_hit_rate_percent: src.percent("ALERT_CACHE_HIT_RATE_THRESHOLD"),
            alert_slow_query_burst: src.int("ALERT_SLOW_QUERY_BURST", 0, 1_000_000),
            alert_pending: src.millis("ALERT_PENDING_DURATION", 0, 86_400_000),
            alert_resolve: src.millis("ALERT_RESOLVE_DURATION", 0, 86_400_000),
            webhook_url: src.optional("ALERT_WEBHOOK_URL"),
            webhook_timeout: src.millis("ALERT_WEBHOOK_TIMEOUT", 1, 600_000),
            webhook_retries: src.int("ALERT_WEBHOOK_RETRIES", 0, 100) as u32,
            slow_request_log_size: src.int("VOXPERF_SLOW_REQUEST_LOG_SIZE", 0, 100_000) as usize,
            instance: src.optional("VOXPERF_INSTANCE").unwrap_or_else(|| {
                let host = sysinfo::System::host_name().unwrap_or_else(|| "localhost".into());
                format!("{host}:{}", http.listen.port())
            }),
        };
        if let Some(url) = &monitoring.webhook_url
            && !url.starts_with("http://")
        {
            src.reject(
                "ALERT_WEBHOOK_URL",
                url,
                "expected an http:// URL (no TLS client: relay HTTPS through a local proxy)",
            );
        }
        if monitoring.instance.len() > 200 {
            src.reject("VOXPERF_INSTANCE", &monitoring.instance, "at most 200 bytes");
        }
        let scaling = ScalingConfig {
            enabled: src.bool("AUTO_SCALING_ENABLED"),
            monitoring_interval: src.millis("SCALING_MONITORING_INTERVAL", 1000, 86_400_000),
            default_rules: src.bool("AUTO_SCALING_DEFAULT_RULES"),
        };
        let breaker = BreakerSettings {
            enabled: src.bool("CIRCUIT_BREAKER_ENABLED"),
            failure_threshold: src.int("CIRCUIT_BREAKER_FAILURE_THRESHOLD", 0, 1_000_000) as u32,
            recovery_timeout: src.millis("CIRCUIT_BREAKER_RECOVERY_TIMEOUT", 1, 86_400_000),
            window: src.millis("CIRCUIT_BREAKER_MONITORING_PERIOD", 10, 86_400_000),
            failure_rate_threshold: src.percent("CIRCUIT_BREAKER_FAILURE_RATE_THRESHOLD"),
            minimum_calls: src.int("CIRCUIT_BREAKER_MINIMUM_CALLS", 1, 1_000_000) as u32,
            slow_call_duration: src.millis("CIRCUIT_BREAKER_SLOW_CALL_THRESHOLD", 1, 3_600_000),
            slow_call_rate_threshold: src.percent("CIRCUIT_BREAKER_SLOW_CALL_RATE_THRESHOLD"),
            half_open_calls: src.int("CIRCUIT_BREAKER_HALF_OPEN_CALLS", 1, 10_000) as u32,
        };

        if !src.errors.is_empty() {
            return Err(Error(src.errors));
        }
        Ok(Config {
            preset: src.preset,
            database_url: Secret(database_url),
            db_pool_size,
            log_filter,
            log_format,
            http,
            gateway,
            redis,
            cache,
            query,
            cdn,
            monitoring,
            scaling,
            breaker,
        })
    }

    fn redis(src: &mut Source<'_>) -> RedisConfig {
        let password = src.optional("REDIS_PASSWORD");
        let single = match src.optional("REDIS_URL") {
            Some(url) => {
                if let Err(e) = redis::Client::open(url.as_str()) {
                    src.reject("REDIS_URL", &redact_url(&url), e.to_string());
                }
                with_password(&url, password.as_deref())
            }
            None => {
                let host = src.string("REDIS_HOST");
                let port = src.int("REDIS_PORT", 1, 65535);
                let host = if host.contains(':') && !host.starts_with('[') {
                    format!("[{host}]") // IPv6 literal
                } else {
                    host
                };
                with_password(&format!("redis://{host}:{port}/"), password.as_deref())
            }
        };
        let target = match src.optional("REDIS_CLUSTER_NODES") {
            Some(list) => {
                let mut nodes = Vec::new();
                for node in list.split(',').map(str::trim).filter(|n| !n.is_empty()) {
                    let url = if node.contains("://") { node.to_owned() } else { format!("redis://{node}/") };
                    if let Err(e) = redis::Client::open(url.as_str()) {
                        src.reject("REDIS_CLUSTER_NODES", &redact_url(node), e.to_string());
                    }
                    nodes.push(Secret(with_password(&url, password.as_deref())));
                }
                if nodes.is_empty() {
                    src.reject("REDIS_CLUSTER_NODES", &list, "no node given");
                }
                RedisTarget::Cluster(nodes)
            }
            None => RedisTarget::Single(Secret(single)),
        };
        let key_prefix = src.string("REDIS_KEY_PREFIX");
        if key_prefix.len() > 128 {
            src.reject("REDIS_KEY_PREFIX", &key_prefix, "at most 128 bytes");
        }
        RedisConfig {
            enabled: src.bool("REDIS_ENABLED"),
            target,
            key_prefix,
            command_timeout: src.millis("REDIS_COMMAND_TIMEOUT", 1, 60_000),
            connect_timeout: src.millis("REDIS_CONNECT_TIMEOUT", 1, 60_000),
        }
    }

    fn cdn(src: &mut Source<'_>) -> CdnConfig {
        let enabled = src.bool("CDN_ENABLED");
        let provider = src.parse("CDN_PROVIDER", None, |s| match s.to_ascii_lowercase().as_str() {
            "cloudflare" => Ok(Some(CdnProvider::Cloudflare)),
            "aws" | "cloudfront" => Ok(Some(CdnProvider::Aws)),
            "azure" => Ok(Some(CdnProvider::Azure)),
            "gcp" | "google" => Ok(Some(CdnProvider::Gcp)),
            _ => Err("expected cloudflare, aws, azure or gcp".into()),
        });
        let base_url = src.optional("CDN_BASE_URL");
        if let Some(url) = &base_url
            && !(url.starts_with("https://") || url.starts_with("http://"))
        {
            src.reject("CDN_BASE_URL", url, "expected an http(s):// URL");
        }
        if enabled && provider.is_none() {
            src.reject("CDN_PROVIDER", "", "required when CDN_ENABLED=true");
        }
        if enabled && base_url.is_none() {
            src.reject("CDN_BASE_URL", "", "required when CDN_ENABLED=true");
        }
        CdnConfig {
            enabled,
            provider,
            base_url,
            api_key: src.optional("CDN_API_KEY").map(Secret),
            zone_id: src.optional("CDN_ZONE_ID"),
        }
    }

    /// The text `voxperfd --help` prints after the options: every variable with its default.
    pub fn environment_help() -> String {
        let mut out = String::from("Configuration is read from the environment:\n");
        for group in vars::Group::ALL {
            let _ = writeln!(out, "\n{}:", group.title());
            for v in vars::VARS.iter().filter(|v| v.group == group) {
                let default = if v.default.is_empty() { "unset".to_owned() } else { v.default.to_owned() };
                let _ = writeln!(out, "  {:<42} [default: {default}]\n      {}", v.name, v.help);
            }
        }
        out.push_str("\nPresets (PERFORMANCE_PRESET):\n");
        for preset in Preset::ALL {
            let values: Vec<String> = preset.values().iter().map(|(n, v)| format!("{n}={v}")).collect();
            let _ = writeln!(out, "  {}: {}", preset.name(), values.join(" "));
        }
        out
    }

    /// A one-line-per-setting summary with secrets hidden, for `--check-config` and start-up logs.
    pub fn summary(&self) -> String {
        let redis = match &self.redis.target {
            _ if !self.redis.enabled => "disabled".to_owned(),
            RedisTarget::Single(url) => redact_url(url.expose()),
            RedisTarget::Cluster(nodes) => {
                format!("cluster [{}]", nodes.iter().map(|n| redact_url(n.expose())).collect::<Vec<_>>().join(", "))
            }
        };
        format!(
            "preset: {}\nlisten: {}\ndatabase: {}\nredis: {} (prefix {:?})\nadmin token: {}\n\
             cache: default ttl {}s, L1 {} bytes, compression above {} bytes, channel {}\n\
             circuit breakers: {}\nmonitoring: {} every {} ms, instance {:?}, alerts after {} ms, webhook {}",
            self.preset.map_or("none".to_owned(), |p| p.to_string()),
            self.http.listen,
            redact_url(self.database_url.expose()),
            redis,
            self.redis.key_prefix,
            if self.http.admin_token.is_some() { "set" } else { "unset (admin API answers 403)" },
            self.cache.default_ttl.as_secs(),
            self.cache.l1_max_bytes,
            self.cache.compression_threshold,
            self.cache.notify_channel,
            if self.breaker.enabled { "enabled" } else { "disabled" },
            if self.monitoring.enabled { "enabled" } else { "disabled" },
            self.monitoring.metrics_interval.as_millis(),
            self.monitoring.instance,
            self.monitoring.alert_pending.as_millis(),
            self.monitoring.webhook_url.as_deref().unwrap_or("unset"),
        )
    }
}

/// Hides the password of a URL (`scheme://user:pw@host` → `scheme://user:***@host`).
pub fn redact_url(url: &str) -> String {
    let Some(start) = url.find("://").map(|i| i + 3) else {
        return url.to_owned();
    };
    let end = url[start..].find('/').map_or(url.len(), |i| start + i);
    match url[start..end].rfind('@') {
        Some(at) if url[start..start + at].contains(':') => {
            let user = url[start..start + at].split(':').next().unwrap_or("");
            format!("{}{}:***{}", &url[..start], user, &url[start + at..])
        }
        _ => url.to_owned(),
    }
}

#[cfg(test)]
mod tests;
