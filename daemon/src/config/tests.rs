use super::*;

fn config(vars: &[(&str, &str)]) -> Result<Config, Error> {
    Config::from_vars(vars.iter().map(|(k, v)| (k.to_string(), v.to_string())))
}

fn rejected(vars: &[(&str, &str)]) -> Vec<InvalidVar> {
    config(vars).expect_err("configuration should be rejected").0
}

#[test]
fn defaults_point_at_the_project_local_services() {
    let c = config(&[]).unwrap();
    assert_eq!(c.http.listen.to_string(), "127.0.0.1:8080");
    assert_eq!(c.redis.target, RedisTarget::Single(Secret::new("redis://127.0.0.1:26379/")));
    assert_eq!(c.cache.default_ttl, Duration::from_secs(3600));
    assert_eq!(c.cache.notify_channel, "voxperf_invalidate");
    assert_eq!(c.breaker.failure_threshold, 5);
    assert_eq!(c.breaker.recovery_timeout, Duration::from_millis(60_000));
    assert_eq!(c.monitoring.metrics_interval, Duration::from_millis(30_000));
    assert!(c.http.admin_token.is_none());
}

#[test]
fn seed_variables_keep_their_names_and_units() {
    let c = config(&[
        ("REDIS_HOST", "cache.internal"),
        ("REDIS_PORT", "6379"),
        ("REDIS_PASSWORD", "p@ss word"),
        ("REDIS_KEY_PREFIX", "voxlink:"),
        ("CACHE_DEFAULT_TTL", "120"),
        ("METRICS_INTERVAL", "15000"),
        ("CIRCUIT_BREAKER_RECOVERY_TIMEOUT", "2500"),
        ("SLOW_QUERY_THRESHOLD", "250"),
        ("ALERT_CPU_THRESHOLD", "70"),
    ])
    .unwrap();
    assert_eq!(c.redis.target, RedisTarget::Single(Secret::new("redis://:p%40ss%20word@cache.internal:6379/")));
    assert_eq!(c.redis.key_prefix, "voxlink:");
    assert_eq!(c.cache.default_ttl, Duration::from_secs(120));
    assert_eq!(c.monitoring.metrics_interval, Duration::from_millis(15_000));
    assert_eq!(c.breaker.recovery_timeout, Duration::from_millis(2500));
    assert_eq!(c.query.slow_query_threshold, Duration::from_millis(250));
    assert_eq!(c.monitoring.alert_cpu_percent, 70.0);
}

#[test]
fn redis_url_takes_precedence_over_host_and_port() {
    let c = config(&[("REDIS_URL", "redis://10.1.2.3:7000/2"), ("REDIS_HOST", "ignored"), ("REDIS_PASSWORD", "pw")])
        .unwrap();
    assert_eq!(c.redis.target, RedisTarget::Single(Secret::new("redis://:pw@10.1.2.3:7000/2")));
    let own = config(&[("REDIS_URL", "redis://:inurl@h:1/"), ("REDIS_PASSWORD", "pw")]).unwrap();
    assert_eq!(own.redis.target, RedisTarget::Single(Secret::new("redis://:inurl@h:1/")));
}

#[test]
fn cluster_nodes_select_the_cluster_client() {
    let c = config(&[("REDIS_CLUSTER_NODES", "n1:7000, redis://n2:7001/")]).unwrap();
    assert_eq!(
        c.redis.target,
        RedisTarget::Cluster(vec![Secret::new("redis://n1:7000/"), Secret::new("redis://n2:7001/")])
    );
}

#[test]
fn a_preset_sets_defaults_and_explicit_variables_override_it() {
    let c = config(&[("PERFORMANCE_PRESET", "development")]).unwrap();
    assert_eq!(c.preset, Some(Preset::Development));
    assert_eq!(c.cache.default_ttl, Duration::from_secs(60));
    assert_eq!(c.breaker.recovery_timeout, Duration::from_millis(5000));
    let c = config(&[("PERFORMANCE_PRESET", "development"), ("CACHE_DEFAULT_TTL", "900")]).unwrap();
    assert_eq!(c.cache.default_ttl, Duration::from_secs(900));
    let c = config(&[("PERFORMANCE_PRESET", "highPerformance")]).unwrap();
    assert_eq!(c.cache.l1_max_bytes, 512 << 20);
}

#[test]
fn errors_name_every_bad_variable_and_its_value() {
    let errors = rejected(&[
        ("REDIS_PORT", "sixty"),
        ("CIRCUIT_BREAKER_FAILURE_RATE_THRESHOLD", "150"),
        ("LOG_FORMAT", "xml"),
        ("VOXPERF_LISTEN", "localhost"),
        ("PERFORMANCE_PRESET", "turbo"),
    ]);
    let named: Vec<_> = errors.iter().map(|e| (e.var, e.value.as_str())).collect();
    assert!(named.contains(&("REDIS_PORT", "sixty")), "{errors:?}");
    assert!(named.contains(&("CIRCUIT_BREAKER_FAILURE_RATE_THRESHOLD", "150")));
    assert!(named.contains(&("LOG_FORMAT", "xml")));
    assert!(named.contains(&("VOXPERF_LISTEN", "localhost")));
    assert!(named.contains(&("PERFORMANCE_PRESET", "turbo")));
    let message = Error(errors).to_string();
    assert!(message.contains("REDIS_PORT=sixty: expected a whole non-negative number"));
}

#[test]
fn secrets_are_never_echoed_in_errors() {
    let errors = rejected(&[("DATABASE_URL", "postgres://u:hunter2@h:notaport/db")]);
    assert_eq!(errors[0].var, "DATABASE_URL");
    assert!(!errors[0].value.contains("hunter2"), "{:?}", errors[0]);
    let c = config(&[("VOXPERF_ADMIN_TOKEN", "hunter2"), ("REDIS_PASSWORD", "hunter3")]).unwrap();
    assert!(!format!("{c:?}").contains("hunter2"));
    assert!(!c.summary().contains("hunter3"));
}

#[test]
fn cdn_needs_provider_and_base_url_when_enabled() {
    let errors = rejected(&[("CDN_ENABLED", "true")]);
    let vars: Vec<_> = errors.iter().map(|e| e.var).collect();
    assert_eq!(vars, ["CDN_PROVIDER", "CDN_BASE_URL"]);
    let c =
        config(&[("CDN_ENABLED", "true"), ("CDN_PROVIDER", "cloudflare"), ("CDN_BASE_URL", "https://cdn.example.com")])
            .unwrap();
    assert_eq!(c.cdn.provider, Some(CdnProvider::Cloudflare));
}

#[test]
fn byte_sizes_accept_binary_suffixes() {
    assert_eq!(parse_bytes("1048576", 0, u64::MAX), Ok(1 << 20));
    assert_eq!(parse_bytes("64MiB", 0, u64::MAX), Ok(64 << 20));
    assert_eq!(parse_bytes("512k", 0, u64::MAX), Ok(512 << 10));
    assert!(parse_bytes("12 parsecs", 0, u64::MAX).is_err());
    let errors = rejected(&[("VOXPERF_BODY_LIMIT", "10")]);
    assert_eq!(errors[0].var, "VOXPERF_BODY_LIMIT");
}

#[test]
fn empty_values_count_as_unset() {
    let c = config(&[("REDIS_URL", ""), ("CACHE_DEFAULT_TTL", " ")]).unwrap();
    assert_eq!(c.cache.default_ttl, Duration::from_secs(3600));
}

#[test]
fn the_help_text_lists_every_variable_and_preset() {
    let help = Config::environment_help();
    for v in vars::VARS {
        assert!(help.contains(v.name), "{} missing from --help", v.name);
    }
    for p in Preset::ALL {
        assert!(help.contains(p.name()));
    }
}

#[test]
fn urls_are_redacted_only_where_they_carry_a_password() {
    assert_eq!(redact_url("redis://:pw@h:1/"), "redis://:***@h:1/");
    assert_eq!(redact_url("postgres://u:pw@h/db"), "postgres://u:***@h/db");
    assert_eq!(redact_url("postgres://u@h/db"), "postgres://u@h/db");
}
