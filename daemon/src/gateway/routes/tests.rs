use super::*;

fn parse(text: &str) -> Result<RouteTable, RoutesError> {
    RouteTable::parse("routes.toml", text, Some("http://127.0.0.1:3000"), &BreakerSettings::default())
}

const EXAMPLE: &str = r#"
[defaults]
timeout = "5s"

[upstream.reports]
url = "http://127.0.0.1:3001/v2/"
breaker = { failure_threshold = 3, recovery_timeout = "10s" }

[[route]]
path = "/api/numbers/search"
cache = "shortTerm"
tags = ['table:public."VirtualNumber"']
vary = ["Accept-Language"]
stale_if_error = "60s"

[[route]]
path = "/api/reports/{*rest}"
upstream = "reports"
cache = "reports"
ttl = 600
timeout = "250ms"
body_limit = "1MiB"
compress = false
"#;

#[test]
fn a_valid_file_maps_patterns_to_upstreams_and_strategies() {
    let t = parse(EXAMPLE).unwrap();
    let search = t.find("/api/numbers/search");
    assert_eq!(search.pattern, "/api/numbers/search");
    assert_eq!(t.upstream(search).unwrap().name, DEFAULT_UPSTREAM);
    let cache = search.cache.unwrap();
    assert_eq!(cache.strategy, CacheStrategy::short_term(300), "the seed's shortTerm(300) is the default ttl");
    assert_eq!(search.tags, vec![r#"table:public."VirtualNumber""#.to_owned()]);
    assert_eq!(search.vary, vec![HeaderName::from_static("accept-language")]);
    assert_eq!(search.timeout, Duration::from_secs(5), "defaults apply to routes");
    assert_eq!(search.stale_if_error, Duration::from_secs(60));

    let report = t.find("/api/reports/usage/2026");
    assert_eq!(report.pattern, "/api/reports/{*rest}");
    let upstream = t.upstream(report).unwrap();
    assert_eq!((upstream.name.as_str(), upstream.path_prefix.as_str()), ("reports", "/v2"));
    assert_eq!(upstream.breaker.failure_threshold, 3);
    assert_eq!(upstream.breaker.recovery_timeout, Duration::from_secs(10));
    assert_eq!(report.cache.unwrap().strategy, CacheStrategy::reports(600));
    assert_eq!((report.timeout, report.body_limit, report.compress), (Duration::from_millis(250), 1 << 20, false));
}

#[test]
fn paths_no_route_matches_pass_through_to_the_default_upstream_uncached() {
    let t = parse(EXAMPLE).unwrap();
    let other = t.find("/api/numbers/42");
    assert_eq!(other.pattern, UNROUTED);
    assert!(other.cache.is_none());
    assert_eq!(t.upstream(other).unwrap().name, DEFAULT_UPSTREAM);
    assert_eq!(other.timeout, Duration::from_secs(5));
}

#[test]
fn errors_name_the_file_line_and_field() {
    let e = parse("[[route]]\npath = \"/a\"\ncache = \"sometimes\"\n").unwrap_err();
    assert_eq!((e.file.as_str(), e.line, e.field.as_str()), ("routes.toml", 3, "route.cache"), "{e}");
    assert!(e.reason.contains("shortTerm"), "{e}");

    let e = parse("[[route]]\npath = \"/a\"\nttll = 5\n").unwrap_err();
    assert_eq!((e.line, e.field.as_str()), (3, "ttll"), "{e}");

    let e = parse("[[route]]\npath = \"/a\"\ncache = \"reports\"\nttl = \"soon\"\n").unwrap_err();
    assert_eq!((e.line, e.field.as_str()), (4, "route.ttl"), "{e}");

    let e = parse("[[route]]\npath = \"/a\"\nupstream = \"nowhere\"\n").unwrap_err();
    assert_eq!((e.line, e.field.as_str()), (3, "route.upstream"), "{e}");
    assert!(e.reason.contains("default"), "the message lists the known upstreams: {e}");

    let e = parse("[[route]]\npath = \"/a\"\n[[route]]\npath = \"/a\"\n").unwrap_err();
    assert_eq!((e.line, e.field.as_str()), (4, "route.path"), "{e}");

    let e = parse("[[route\npath = 1").unwrap_err();
    assert_eq!(e.line, 1, "{e}");
    assert_eq!(e.to_string(), format!("routes.toml:1:{}: {}: {}", e.column, e.field, e.reason));
}

#[test]
fn routes_may_not_shadow_the_daemons_own_api() {
    for path in ["/api/cache/entries/{key}", "/metrics", "/api/performance/x", "/", "/dashboard/app.js"] {
        let e = parse(&format!("[[route]]\npath = \"{path}\"\n")).unwrap_err();
        assert_eq!(e.field, "route.path", "{path}: {e}");
    }
    assert!(parse("[[route]]\npath = \"/api/numbers/{id}\"\n").is_ok());
    // Patterns that could match some own paths are fine: those paths stay the daemon's.
    assert!(parse("[[route]]\npath = \"/api/{*rest}\"\n").is_ok());
    assert!(parse("[[route]]\npath = \"/metricsish\"\n").is_ok());
}

#[test]
fn invalid_values_are_refused() {
    for (text, field) in [
        ("[[route]]\npath = \"/a\"\ntags = [\"\"]\n", "route.tags"),
        ("[[route]]\npath = \"/a\"\nvary = [\"bad header\"]\n", "route.vary"),
        ("[[route]]\npath = \"/a\"\nbody_limit = \"lots\"\n", "route.body_limit"),
        ("[[route]]\npath = \"/a\"\ntimeout = 0\n", "route.timeout"),
        ("[[route]]\npath = \"/a\"\nttl = 5\n", "route.ttl"),
        ("[[route]]\npath = \"a\"\n", "route.path"),
        ("[upstream.x]\nurl = \"https://example.invalid\"\n", "upstream.x.url"),
        (
            "[upstream.x]\nurl = \"http://127.0.0.1:1\"\nbreaker = { failure_rate_threshold = 120.0 }\n",
            "breaker.failure_rate_threshold",
        ),
    ] {
        let e = parse(text).unwrap_err();
        assert_eq!(e.field, field, "{text}: {e}");
    }
}

#[test]
fn without_any_upstream_a_route_is_refused() {
    let e = RouteTable::parse("r.toml", "[[route]]\npath = \"/a\"\n", None, &BreakerSettings::default()).unwrap_err();
    assert_eq!(e.field, "route.upstream");
    assert!(e.reason.contains("VOXPERF_UPSTREAM"), "{e}");
}

#[test]
fn the_documented_example_is_valid() {
    let t = parse(include_str!("../../../../docs/routes.example.toml")).unwrap();
    assert!(t.routes().len() >= 8);
    assert_eq!(t.find("/static/app.3f9a1c2e.js").cache.unwrap().strategy, CacheStrategy::short_term(86_400));
}
