//! The routes file (`VOXPERF_ROUTES`, TOML): which upstream serves a path, and how its answers
//! are cached, limited, compressed and guarded. `docs/gateway.md` documents the format with a
//! commented example.
//!
//! [`RouteTable::parse`] validates the whole file at once and reports the first problem as
//! `file:line:column: field: reason`. A table is immutable: a reload builds a new one and swaps
//! it in, so a request sees one table from start to end. Invariant: the label of a route (its
//! pattern) is what metrics and logs carry, never the request's own path, so label cardinality
//! is bounded by the file.

use std::collections::HashMap;
use std::fmt;
use std::ops::Range;
use std::path::{Path, PathBuf};
use std::time::Duration;

use axum::http::{HeaderName, Uri};
use serde::Deserialize;
use toml::Spanned;

use crate::http::response_cache::CacheStrategy;
use crate::resilience::BreakerSettings;

/// Label of requests that no route of the file matched (passed through, uncached).
pub const UNROUTED: &str = "(unrouted)";
/// Name of the upstream given by `VOXPERF_UPSTREAM`.
pub const DEFAULT_UPSTREAM: &str = "default";

const DEFAULT_TIMEOUT: Duration = Duration::from_secs(30);
const DEFAULT_BODY_LIMIT: u64 = 10 << 20;
/// Longest accepted route timeout: a request held longer than this is a hang, not a wait.
const MAX_TIMEOUT: Duration = Duration::from_secs(3600);

/// Paths served by voxperfd itself; a route may not shadow them (they always win).
pub const OWN_PREFIXES: [&str; 10] = [
    "/api/performance/",
    "/api/cache/",
    "/api/admin/",
    "/api/db/",
    "/api/circuit-breakers",
    "/api/openapi.json",
    "/metrics",
    "/healthz",
    "/readyz",
    "/dashboard/",
];

/// A problem in the routes file, located.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{file}:{line}:{column}: {field}: {reason}")]
pub struct RoutesError {
    pub file: String,
    pub line: usize,
    pub column: usize,
    pub field: String,
    pub reason: String,
}

/// One upstream: where requests go and the breaker guarding it.
#[derive(Debug, Clone, PartialEq)]
pub struct Upstream {
    pub name: String,
    /// `scheme://authority`, plus a path prefix when the URL had one (no trailing `/`).
    pub scheme: String,
    pub authority: String,
    pub path_prefix: String,
    pub breaker: BreakerSettings,
}

/// A route's response caching.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CachePolicy {
    pub strategy: CacheStrategy,
    pub stale_while_revalidate: Duration,
}

/// One route of the file (or the pass-through defaults).
#[derive(Debug, Clone, PartialEq)]
pub struct Route {
    /// The pattern as written (`/api/numbers/{id}`): the label of its metrics.
    pub pattern: String,
    /// Index into [`RouteTable::upstreams`].
    pub upstream: usize,
    pub cache: Option<CachePolicy>,
    pub tags: Vec<String>,
    /// Request headers whose values select a different cached answer.
    pub vary: Vec<HeaderName>,
    /// Until the upstream's response headers arrive.
    pub timeout: Duration,
    pub body_limit: u64,
    pub compress: bool,
    /// How long after it was stored the last good answer may stand in for a failing upstream.
    pub stale_if_error: Duration,
}

/// The parsed file.
#[derive(Debug, Clone)]
pub struct RouteTable {
    pub source: Option<PathBuf>,
    pub upstreams: Vec<Upstream>,
    routes: Vec<Route>,
    matcher: matchit::Router<usize>,
    /// How requests that no route matches are proxied (uncached).
    pub unrouted: Route,
}

impl RouteTable {
    /// Reads and validates the file at `path`; `default_upstream` is `VOXPERF_UPSTREAM`.
    pub fn load(path: &Path, default_upstream: Option<&str>, breaker: &BreakerSettings) -> Result<Self, RoutesError> {
        let text = std::fs::read_to_string(path).map_err(|e| RoutesError {
            file: path.display().to_string(),
            line: 0,
            column: 0,
            field: "VOXPERF_ROUTES".into(),
            reason: format!("cannot read the file: {e}"),
        })?;
        let mut table = Self::parse(&path.display().to_string(), &text, default_upstream, breaker)?;
        table.source = Some(path.to_owned());
        Ok(table)
    }

    /// A table without a file: everything goes to `VOXPERF_UPSTREAM`, uncached.
    pub fn passthrough(default_upstream: &str, breaker: &BreakerSettings) -> Result<Self, RoutesError> {
        Self::parse("VOXPERF_UPSTREAM", "", Some(default_upstream), breaker)
    }

    /// Validates `text` (named `file` in errors).
    pub fn parse(
        file: &str,
        text: &str,
        default_upstream: Option<&str>,
        breaker: &BreakerSettings,
    ) -> Result<Self, RoutesError> {
        let at = |span: Range<usize>, field: &str, reason: String| locate(file, text, span, field, reason);
        let raw: RawFile = toml::from_str(text).map_err(|e| {
            let span = e.span().unwrap_or(0..0);
            let field = field_at(text, span.start);
            locate(file, text, span, &field, e.message().trim().to_owned())
        })?;

        let mut upstreams = Vec::new();
        if let Some(url) = default_upstream {
            let upstream = parse_upstream(DEFAULT_UPSTREAM, url, breaker.clone())
                .map_err(|reason| at(0..0, "VOXPERF_UPSTREAM", reason))?;
            upstreams.push(upstream);
        }
        let mut names: Vec<(&String, &RawUpstream)> = raw.upstream.iter().collect();
        names.sort_by_key(|(_, u)| u.url.span().start);
        for (name, u) in names {
            if !valid_name(name) {
                return Err(at(u.url.span(), "upstream", format!("name {name:?} must be letters, digits, - or _")));
            }
            let mut settings = breaker.clone();
            if let Some(b) = &u.breaker {
                b.apply(&mut settings).map_err(|(span, field, reason)| at(span, &field, reason))?;
            }
            let upstream = parse_upstream(name, u.url.get_ref(), settings)
                .map_err(|reason| at(u.url.span(), &format!("upstream.{name}.url"), reason))?;
            if let Some(i) = upstreams.iter().position(|x: &Upstream| x.name == upstream.name) {
                upstreams[i] = upstream;
            } else {
                upstreams.push(upstream);
            }
        }
        let defaults = raw.defaults.unwrap_or_default();
        let default_index =
            match &defaults.upstream {
                Some(name) => Some(upstreams.iter().position(|u| &u.name == name.get_ref()).ok_or_else(|| {
                    at(name.span(), "defaults.upstream", unknown_upstream(name.get_ref(), &upstreams))
                })?),
                None => (!upstreams.is_empty()).then_some(0),
            };
        let base = RawRoute::defaults(&defaults);
        let unrouted_upstream = default_index.unwrap_or(usize::MAX);
        let unrouted = base.build(UNROUTED.into(), unrouted_upstream, &at)?;

        let mut routes = Vec::new();
        let mut matcher = matchit::Router::new();
        for (i, spanned) in raw.route.iter().enumerate() {
            let r = spanned.get_ref();
            let path = r.path.as_ref().ok_or_else(|| at(spanned.span(), "route.path", "missing".into()))?;
            let pattern = path.get_ref();
            check_pattern(pattern).map_err(|reason| at(path.span(), "route.path", reason))?;
            let upstream = match &r.upstream {
                Some(name) => upstreams
                    .iter()
                    .position(|u| &u.name == name.get_ref())
                    .ok_or_else(|| at(name.span(), "route.upstream", unknown_upstream(name.get_ref(), &upstreams)))?,
                None => default_index.ok_or_else(|| {
                    at(
                        path.span(),
                        "route.upstream",
                        "no upstream: set VOXPERF_UPSTREAM, [defaults] upstream, or this route's upstream".into(),
                    )
                })?,
            };
            let route = r.merged(&base).build(pattern.clone(), upstream, &at)?;
            matcher.insert(pattern.as_str(), i).map_err(|e| at(path.span(), "route.path", e.to_string()))?;
            routes.push(route);
        }
        Ok(Self { source: None, upstreams, routes, matcher, unrouted })
    }

    /// The route for `path`: a route of the file, or the pass-through defaults.
    pub fn find(&self, path: &str) -> &Route {
        self.index_of(path).map_or(&self.unrouted, |i| &self.routes[i])
    }

    /// The index (in [`RouteTable::routes`]) of the route for `path`; `None`: no route matches.
    pub fn index_of(&self, path: &str) -> Option<usize> {
        self.matcher.at(path).ok().map(|m| *m.value)
    }

    pub fn routes(&self) -> &[Route] {
        &self.routes
    }

    /// The upstream of `route`; `None` when nothing says where to send it.
    pub fn upstream(&self, route: &Route) -> Option<&Upstream> {
        self.upstreams.get(route.upstream)
    }
}

impl fmt::Display for RouteTable {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for u in &self.upstreams {
            writeln!(f, "  upstream {} = {}://{}{}", u.name, u.scheme, u.authority, u.path_prefix)?;
        }
        for r in &self.routes {
            let cache = match r.cache {
                Some(c) => format!("{} {}s", c.strategy.name(), c.strategy.ttl().as_secs()),
                None => "uncached".into(),
            };
            let upstream = self.upstreams.get(r.upstream).map_or("-", |u| u.name.as_str());
            writeln!(f, "  route {} -> {upstream} ({cache})", r.pattern)?;
        }
        Ok(())
    }
}

fn unknown_upstream(name: &str, upstreams: &[Upstream]) -> String {
    let known: Vec<&str> = upstreams.iter().map(|u| u.name.as_str()).collect();
    format!("unknown upstream {name:?} (known: {})", if known.is_empty() { "none".into() } else { known.join(", ") })
}

fn valid_name(name: &str) -> bool {
    !name.is_empty() && name.len() <= 64 && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
}

fn parse_upstream(name: &str, url: &str, breaker: BreakerSettings) -> Result<Upstream, String> {
    let uri: Uri = url.parse().map_err(|e| format!("{url:?} is not a URL: {e}"))?;
    let scheme = uri.scheme_str().ok_or_else(|| format!("{url:?} has no scheme (http://host:port)"))?;
    if scheme != "http" {
        return Err(format!("{url:?}: only http:// upstreams are supported (TLS ends at the gateway)"));
    }
    let authority = uri.authority().ok_or_else(|| format!("{url:?} has no host"))?.to_string();
    if uri.query().is_some() {
        return Err(format!("{url:?} may not have a query"));
    }
    let path_prefix = uri.path().trim_end_matches('/').to_owned();
    Ok(Upstream { name: name.to_owned(), scheme: scheme.to_owned(), authority, path_prefix, breaker })
}

fn check_pattern(pattern: &str) -> Result<(), String> {
    if !pattern.starts_with('/') {
        return Err(format!("{pattern:?} must start with /"));
    }
    if pattern.chars().any(|c| c.is_control() || c == '?' || c == '#') {
        return Err(format!("{pattern:?} may not contain a query, fragment or control characters"));
    }
    let literal = &pattern[..pattern.find('{').unwrap_or(pattern.len())];
    if pattern == "/" {
        return Err("\"/\" is voxperfd's dashboard; route the application's pages below it".into());
    }
    // A route wholly inside voxperfd's own paths would never be reached. One that merely could
    // match some of them (`/api/{*rest}`) is fine: the daemon's own routes win, the rest goes on.
    for own in OWN_PREFIXES {
        let inside = if own.ends_with('/') {
            literal.starts_with(own) || pattern == own.trim_end_matches('/')
        } else {
            literal == own || literal.starts_with(&format!("{own}/"))
        };
        if inside {
            return Err(format!("{pattern:?} is inside voxperfd's own API ({own}...), which always wins"));
        }
    }
    Ok(())
}

/// `300`, `"300s"`, `"250ms"`, `"5m"`, `"2h"`, `"1d"`: a bare number is seconds.
fn parse_duration(value: &DurationValue) -> Result<Duration, String> {
    match value {
        DurationValue::Seconds(n) if *n >= 0 => Ok(Duration::from_secs(*n as u64)),
        DurationValue::Seconds(_) => Err("may not be negative".into()),
        DurationValue::Text(s) => {
            let s = s.trim();
            let split = s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len());
            let (digits, unit) = s.split_at(split);
            let n: u64 =
                digits.parse().map_err(|_| format!("{s:?}: expected a duration such as 250ms, 5s, 2m or 1h"))?;
            let d = match unit.trim() {
                "ms" => Duration::from_millis(n),
                "" | "s" => Duration::from_secs(n),
                "m" => Duration::from_secs(n.saturating_mul(60)),
                "h" => Duration::from_secs(n.saturating_mul(3600)),
                "d" => Duration::from_secs(n.saturating_mul(86_400)),
                _ => return Err(format!("{s:?}: expected a duration such as 250ms, 5s, 2m, 1h or 1d")),
            };
            Ok(d)
        }
    }
}

/// `1048576`, `"512KiB"`, `"64MiB"`, `"1GiB"`.
fn parse_size(value: &SizeValue) -> Result<u64, String> {
    match value {
        SizeValue::Bytes(n) if *n > 0 => Ok(*n as u64),
        SizeValue::Bytes(_) => Err("must be positive".into()),
        SizeValue::Text(s) => {
            let lower = s.trim().to_ascii_lowercase();
            let split = lower.find(|c: char| !c.is_ascii_digit()).unwrap_or(lower.len());
            let (digits, unit) = lower.split_at(split);
            let multiplier: u64 = match unit.trim() {
                "" | "b" => 1,
                "k" | "kb" | "kib" => 1 << 10,
                "m" | "mb" | "mib" => 1 << 20,
                "g" | "gb" | "gib" => 1 << 30,
                _ => return Err(format!("{s:?}: expected bytes, optionally with KiB, MiB or GiB")),
            };
            let n: u64 =
                digits.parse().map_err(|_| format!("{s:?}: expected bytes, optionally with KiB, MiB or GiB"))?;
            n.checked_mul(multiplier).filter(|n| *n > 0).ok_or_else(|| format!("{s:?}: out of range"))
        }
    }
}

/// `file:line:column` of a byte span.
fn locate(file: &str, text: &str, span: Range<usize>, field: &str, reason: String) -> RoutesError {
    let start = span.start.min(text.len());
    let before = &text[..start];
    let line = before.matches('\n').count() + 1;
    let column = before.len() - before.rfind('\n').map_or(0, |i| i + 1) + 1;
    RoutesError { file: file.to_owned(), line, column, field: field.to_owned(), reason }
}

/// The key written on the line of `offset` (`ttl = "x"` → `ttl`), else the enclosing table.
fn field_at(text: &str, offset: usize) -> String {
    let offset = offset.min(text.len());
    let start = text[..offset].rfind('\n').map_or(0, |i| i + 1);
    let end = text[offset..].find('\n').map_or(text.len(), |i| offset + i);
    let line = text[start..end].trim();
    match line.split_once('=') {
        Some((key, _)) => key.trim().to_owned(),
        None if line.starts_with('[') => line.trim_matches(|c| c == '[' || c == ']').to_owned(),
        None => "(file)".into(),
    }
}

#[derive(Debug, Deserialize)]
#[serde(untagged)]
enum DurationValue {
    Seconds(i64),
    Text(String),
}

#[derive(Debug, Deserialize)]
#[serde(untagged)]
enum SizeValue {
    Bytes(i64),
    Text(String),
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawFile {
    defaults: Option<RawDefaults>,
    #[serde(default)]
    upstream: HashMap<String, RawUpstream>,
    #[serde(default)]
    route: Vec<Spanned<RawRouteFields>>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawDefaults {
    upstream: Option<Spanned<String>>,
    timeout: Option<Spanned<DurationValue>>,
    body_limit: Option<Spanned<SizeValue>>,
    compress: Option<bool>,
    stale_if_error: Option<Spanned<DurationValue>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawUpstream {
    url: Spanned<String>,
    breaker: Option<RawBreaker>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawBreaker {
    enabled: Option<bool>,
    failure_threshold: Option<u32>,
    failure_rate_threshold: Option<Spanned<f64>>,
    minimum_calls: Option<u32>,
    slow_call_duration: Option<Spanned<DurationValue>>,
    slow_call_rate_threshold: Option<Spanned<f64>>,
    window: Option<Spanned<DurationValue>>,
    recovery_timeout: Option<Spanned<DurationValue>>,
    half_open_calls: Option<u32>,
}

type Located = (Range<usize>, String, String);

impl RawBreaker {
    fn apply(&self, s: &mut BreakerSettings) -> Result<(), Located> {
        let duration = |v: &Spanned<DurationValue>, field: &str| {
            parse_duration(v.get_ref()).map_err(|r| (v.span(), format!("breaker.{field}"), r))
        };
        let percent = |v: &Spanned<f64>, field: &str| {
            let p = *v.get_ref();
            if (0.0..=100.0).contains(&p) {
                Ok(p)
            } else {
                Err((v.span(), format!("breaker.{field}"), "expected a percentage between 0 and 100".into()))
            }
        };
        if let Some(v) = self.enabled {
            s.enabled = v;
        }
        if let Some(v) = self.failure_threshold {
            s.failure_threshold = v;
        }
        if let Some(v) = &self.failure_rate_threshold {
            s.failure_rate_threshold = percent(v, "failure_rate_threshold")?;
        }
        if let Some(v) = self.minimum_calls {
            s.minimum_calls = v;
        }
        if let Some(v) = &self.slow_call_duration {
            s.slow_call_duration = duration(v, "slow_call_duration")?;
        }
        if let Some(v) = &self.slow_call_rate_threshold {
            s.slow_call_rate_threshold = percent(v, "slow_call_rate_threshold")?;
        }
        if let Some(v) = &self.window {
            s.window = duration(v, "window")?;
        }
        if let Some(v) = &self.recovery_timeout {
            s.recovery_timeout = duration(v, "recovery_timeout")?;
        }
        if let Some(v) = self.half_open_calls {
            s.half_open_calls = v.max(1);
        }
        Ok(())
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawRouteFields {
    path: Option<Spanned<String>>,
    upstream: Option<Spanned<String>>,
    cache: Option<Spanned<String>>,
    ttl: Option<Spanned<DurationValue>>,
    #[serde(default)]
    tags: Vec<Spanned<String>>,
    #[serde(default)]
    vary: Vec<Spanned<String>>,
    timeout: Option<Spanned<DurationValue>>,
    body_limit: Option<Spanned<SizeValue>>,
    compress: Option<bool>,
    stale_if_error: Option<Spanned<DurationValue>>,
    stale_while_revalidate: Option<Spanned<DurationValue>>,
}

/// A route's fields with the defaults filled in, borrowed from the file.
struct RawRoute<'a> {
    cache: Option<&'a Spanned<String>>,
    ttl: Option<&'a Spanned<DurationValue>>,
    tags: &'a [Spanned<String>],
    vary: &'a [Spanned<String>],
    timeout: Option<&'a Spanned<DurationValue>>,
    body_limit: Option<&'a Spanned<SizeValue>>,
    compress: Option<bool>,
    stale_if_error: Option<&'a Spanned<DurationValue>>,
    stale_while_revalidate: Option<&'a Spanned<DurationValue>>,
}

impl<'a> RawRoute<'a> {
    fn defaults(d: &'a RawDefaults) -> Self {
        Self {
            cache: None,
            ttl: None,
            tags: &[],
            vary: &[],
            timeout: d.timeout.as_ref(),
            body_limit: d.body_limit.as_ref(),
            compress: d.compress,
            stale_if_error: d.stale_if_error.as_ref(),
            stale_while_revalidate: None,
        }
    }

    fn build(
        &self,
        pattern: String,
        upstream: usize,
        at: &impl Fn(Range<usize>, &str, String) -> RoutesError,
    ) -> Result<Route, RoutesError> {
        let duration = |v: Option<&Spanned<DurationValue>>, field: &str, default: Duration| match v {
            Some(v) => parse_duration(v.get_ref()).map_err(|r| at(v.span(), field, r)),
            None => Ok(default),
        };
        let ttl = match self.ttl {
            Some(v) => {
                let d = parse_duration(v.get_ref()).map_err(|r| at(v.span(), "route.ttl", r))?;
                if d < Duration::from_secs(1) || d > crate::cache::MAX_TTL {
                    return Err(at(v.span(), "route.ttl", "must be between 1 second and 1 year".into()));
                }
                Some(d.as_secs())
            }
            None => None,
        };
        let strategy = match self.cache {
            None => None,
            Some(name) => match name.get_ref().as_str() {
                "shortTerm" => Some(CacheStrategy::short_term(ttl.unwrap_or(300))),
                "reports" => Some(CacheStrategy::reports(ttl.unwrap_or(7200))),
                "analytics" => Some(CacheStrategy::analytics(ttl.unwrap_or(1800))),
                "none" => None,
                other => {
                    return Err(at(
                        name.span(),
                        "route.cache",
                        format!("unknown strategy {other:?} (expected shortTerm, reports, analytics or none)"),
                    ));
                }
            },
        };
        if strategy.is_none()
            && let Some(v) = self.ttl
        {
            return Err(at(v.span(), "route.ttl", "a ttl needs a cache strategy (cache = \"shortTerm\", ...)".into()));
        }
        let swr = duration(self.stale_while_revalidate, "route.stale_while_revalidate", Duration::ZERO)?;
        let mut tags = Vec::new();
        for t in self.tags {
            crate::cache::validate_tags(std::slice::from_ref(t.get_ref()))
                .map_err(|e| at(t.span(), "route.tags", e.to_string()))?;
            tags.push(t.get_ref().clone());
        }
        let mut vary = Vec::new();
        for v in self.vary {
            let name = HeaderName::try_from(v.get_ref().trim())
                .map_err(|_| at(v.span(), "route.vary", format!("{:?} is not a header name", v.get_ref())))?;
            vary.push(name);
        }
        vary.sort_unstable_by(|a, b| a.as_str().cmp(b.as_str()));
        vary.dedup();
        let timeout = duration(self.timeout, "route.timeout", DEFAULT_TIMEOUT)?;
        if timeout.is_zero() || timeout > MAX_TIMEOUT {
            let span = self.timeout.map_or(0..0, Spanned::span);
            return Err(at(span, "route.timeout", "must be between 1 ms and 1 hour".into()));
        }
        let body_limit = match self.body_limit {
            Some(v) => parse_size(v.get_ref()).map_err(|r| at(v.span(), "route.body_limit", r))?,
            None => DEFAULT_BODY_LIMIT,
        };
        Ok(Route {
            pattern,
            upstream,
            cache: strategy.map(|strategy| CachePolicy { strategy, stale_while_revalidate: swr }),
            tags,
            vary,
            timeout,
            body_limit,
            compress: self.compress.unwrap_or(true),
            stale_if_error: duration(self.stale_if_error, "route.stale_if_error", Duration::ZERO)?,
        })
    }
}

impl RawRouteFields {
    fn merged<'a>(&'a self, base: &RawRoute<'a>) -> RawRoute<'a> {
        let r = self;
        RawRoute {
            cache: r.cache.as_ref(),
            ttl: r.ttl.as_ref(),
            tags: &r.tags,
            vary: &r.vary,
            timeout: r.timeout.as_ref().or(base.timeout),
            body_limit: r.body_limit.as_ref().or(base.body_limit),
            compress: r.compress.or(base.compress),
            stale_if_error: r.stale_if_error.as_ref().or(base.stale_if_error),
            stale_while_revalidate: r.stale_while_revalidate.as_ref(),
        }
    }
}

#[cfg(test)]
mod tests;
