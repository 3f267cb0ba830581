//! `PERFORMANCE_PRESET`: named sets of defaults, the seed's `performancePresets`.
//!
//! A preset only replaces defaults: a variable set in the environment always wins. Each value is a
//! string parsed exactly like the environment's, so a preset cannot hold what the variable could
//! not. Invariant: every name in a preset is a documented variable (checked by a test).

use std::fmt;

/// The presets the seed names.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Preset {
    /// Production with memory to spare: big L1, short metric interval, compression only for
    /// large values (it costs CPU on every miss), more Postgres connections, faster recovery.
    HighPerformance,
    /// Budget deployments: small L1, longer TTLs (fewer loads), compress almost everything (Redis
    /// memory and network are what cost), fewer connections, slower metrics.
    CostOptimized,
    /// A developer's machine: short TTLs so changes show quickly, quick breaker recovery, verbose
    /// logs, low slow-query threshold to surface problems early.
    Development,
}

impl Preset {
    pub const ALL: [Preset; 3] = [Preset::HighPerformance, Preset::CostOptimized, Preset::Development];

    pub fn name(self) -> &'static str {
        match self {
            Preset::HighPerformance => "highPerformance",
            Preset::CostOptimized => "costOptimized",
            Preset::Development => "development",
        }
    }

    /// Accepts the seed's spelling, case-insensitively.
    pub fn parse(s: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|p| p.name().eq_ignore_ascii_case(s.trim()))
    }

    /// The defaults this preset sets.
    pub fn values(self) -> &'static [(&'static str, &'static str)] {
        match self {
            Preset::HighPerformance => &[
                ("CACHE_DEFAULT_TTL", "3600"),
                ("CACHE_L1_MAX_BYTES", "512MiB"),
                ("CACHE_COMPRESSION_THRESHOLD", "8192"),
                ("VOXPERF_DB_POOL_SIZE", "32"),
                ("METRICS_INTERVAL", "10000"),
                ("SLOW_QUERY_THRESHOLD", "500"),
                ("AUTO_SCALING_ENABLED", "true"),
                ("CIRCUIT_BREAKER_RECOVERY_TIMEOUT", "30000"),
            ],
            Preset::CostOptimized => &[
                ("CACHE_DEFAULT_TTL", "7200"),
                ("CACHE_L1_MAX_BYTES", "32MiB"),
                ("CACHE_COMPRESSION_THRESHOLD", "256"),
                ("VOXPERF_DB_POOL_SIZE", "4"),
                ("METRICS_INTERVAL", "60000"),
                ("SCALING_MONITORING_INTERVAL", "300000"),
                ("AUTO_SCALING_ENABLED", "true"),
            ],
            Preset::Development => &[
                ("CACHE_DEFAULT_TTL", "60"),
                ("CACHE_L1_MAX_BYTES", "16MiB"),
                ("VOXPERF_DB_POOL_SIZE", "4"),
                ("METRICS_INTERVAL", "5000"),
                ("SLOW_QUERY_THRESHOLD", "200"),
                ("AUTO_SCALING_ENABLED", "false"),
                ("CIRCUIT_BREAKER_RECOVERY_TIMEOUT", "5000"),
                ("RUST_LOG", "voxperfd=debug,tower_http=debug"),
            ],
        }
    }

    pub fn value(self, name: &str) -> Option<&'static str> {
        self.values().iter().find(|(n, _)| *n == name).map(|(_, v)| *v)
    }
}

impl fmt::Display for Preset {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::vars;

    #[test]
    fn preset_names_parse_in_the_seeds_spelling_and_any_case() {
        assert_eq!(Preset::parse("highPerformance"), Some(Preset::HighPerformance));
        assert_eq!(Preset::parse("COSTOPTIMIZED"), Some(Preset::CostOptimized));
        assert_eq!(Preset::parse("development"), Some(Preset::Development));
        assert_eq!(Preset::parse("fast"), None);
    }

    #[test]
    fn presets_only_set_documented_variables() {
        for preset in Preset::ALL {
            for (name, _) in preset.values() {
                vars::lookup(name);
            }
        }
    }
}
