//! Redis readings from `INFO`: memory, clients, keyspace hits and misses.

use std::collections::HashMap;

use serde::Serialize;
use utoipa::ToSchema;

#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct RedisReading {
    pub used_memory_bytes: u64,
    pub connected_clients: u64,
    pub keyspace_hits: u64,
    pub keyspace_misses: u64,
    /// Hits over lookups in the interval (over Redis' life on the first reading); null without
    /// lookups.
    pub hit_rate_percent: Option<f64>,
}

/// The `field:value` lines of an `INFO` answer.
pub fn parse_info(text: &str) -> HashMap<&str, &str> {
    text.lines().filter(|l| !l.starts_with('#')).filter_map(|l| l.trim_end_matches('\r').split_once(':')).collect()
}

/// A reading from `INFO`, given the previous (hits, misses) for the interval's hit rate.
pub fn reading(info: &str, previous: Option<(u64, u64)>) -> Option<RedisReading> {
    let fields = parse_info(info);
    let num = |name: &str| fields.get(name).and_then(|v| v.trim().parse::<u64>().ok());
    let (hits, misses) = (num("keyspace_hits")?, num("keyspace_misses")?);
    let (dh, dm) = match previous {
        Some((h, m)) if h <= hits && m <= misses => (hits - h, misses - m),
        _ => (hits, misses),
    };
    Some(RedisReading {
        used_memory_bytes: num("used_memory")?,
        connected_clients: num("connected_clients").unwrap_or(0),
        keyspace_hits: hits,
        keyspace_misses: misses,
        hit_rate_percent: (dh + dm > 0).then(|| dh as f64 * 100.0 / (dh + dm) as f64),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const INFO: &str = "# Server\r\nredis_version:7.0.15\r\n# Clients\r\nconnected_clients:3\r\n\
        # Memory\r\nused_memory:1048576\r\n# Stats\r\nkeyspace_hits:90\r\nkeyspace_misses:10\r\n";

    #[test]
    fn info_fields_give_memory_clients_and_the_interval_hit_rate() {
        let r = reading(INFO, None).unwrap();
        assert_eq!((r.used_memory_bytes, r.connected_clients), (1_048_576, 3));
        assert_eq!(r.hit_rate_percent, Some(90.0));
        let r = reading(INFO, Some((80, 0))).unwrap();
        assert_eq!(r.hit_rate_percent, Some(50.0), "10 hits and 10 misses since the previous reading");
        assert_eq!(reading(INFO, Some((90, 10))).unwrap().hit_rate_percent, None);
        assert!(reading("garbage", None).is_none());
    }
}
