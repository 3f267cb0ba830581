//! Custom metrics: the seed's `recordMetric(name, value, unit, tags)` and `measureAsync`.
//!
//! A series is a name plus its tags; each keeps count, sum, min, max and the last value, and
//! every sample also goes into the trend `custom.<name>` (all tags together). Names, units and
//! tags are checked so that they stay readable and bounded: at most [`MAX_SERIES`] series, and
//! [`MAX_TAGS`] tags per sample. Invariant: a rejected sample changes nothing.

use std::collections::BTreeMap;
use std::sync::Mutex;

use serde::Serialize;
use utoipa::ToSchema;

/// Name and tags combinations kept.
pub const MAX_SERIES: usize = 1000;
pub const MAX_TAGS: usize = 8;
const MAX_NAME: usize = 128;
const MAX_TAG_VALUE: usize = 128;

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum Error {
    #[error("invalid metric name {0:?}: letters, digits, '.', '_', '-' and ':', starting with a letter, at most 128")]
    Name(String),
    #[error("invalid unit {0:?}: at most 16 letters, digits, '%' or '/'")]
    Unit(String),
    #[error("invalid tag {0:?}: at most {MAX_TAGS} tags; names like metric names, values at most 128 characters")]
    Tag(String),
    #[error("the value must be a finite number")]
    Value,
    #[error("too many custom metric series (at most {MAX_SERIES}); use fewer tag values")]
    TooManySeries,
}

/// One series' aggregates.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct CustomSeries {
    pub name: String,
    pub unit: String,
    pub tags: BTreeMap<String, String>,
    pub count: u64,
    pub sum: f64,
    pub min: f64,
    pub max: f64,
    pub last: f64,
    pub mean: f64,
    pub last_at_ms: u64,
}

/// A series' identity: its name and tags.
type SeriesKey = (String, BTreeMap<String, String>);

#[derive(Debug, Default)]
pub struct CustomMetrics {
    series: Mutex<BTreeMap<SeriesKey, CustomSeries>>,
}

fn valid_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= MAX_NAME
        && name.starts_with(|c: char| c.is_ascii_alphabetic())
        && name.chars().all(|c| c.is_ascii_alphanumeric() || "._-:".contains(c))
}

/// Checks a sample without recording it.
pub fn validate(name: &str, value: f64, unit: &str, tags: &BTreeMap<String, String>) -> Result<(), Error> {
    if !valid_name(name) {
        return Err(Error::Name(name.chars().take(64).collect()));
    }
    if unit.is_empty() || unit.len() > 16 || !unit.chars().all(|c| c.is_ascii_alphanumeric() || c == '%' || c == '/') {
        return Err(Error::Unit(unit.chars().take(32).collect()));
    }
    if tags.len() > MAX_TAGS {
        return Err(Error::Tag(format!("{} tags", tags.len())));
    }
    if let Some((k, _)) =
        tags.iter().find(|(k, v)| !valid_name(k) || v.len() > MAX_TAG_VALUE || v.chars().any(char::is_control))
    {
        return Err(Error::Tag(k.chars().take(64).collect()));
    }
    if !value.is_finite() {
        return Err(Error::Value);
    }
    Ok(())
}

impl CustomMetrics {
    fn lock(&self) -> std::sync::MutexGuard<'_, BTreeMap<SeriesKey, CustomSeries>> {
        self.series.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Records a checked sample (see [`validate`]).
    pub fn record(
        &self,
        name: &str,
        value: f64,
        unit: &str,
        tags: BTreeMap<String, String>,
        at_ms: u64,
    ) -> Result<(), Error> {
        validate(name, value, unit, &tags)?;
        let mut series = self.lock();
        let key = (name.to_owned(), tags);
        if !series.contains_key(&key) && series.len() >= MAX_SERIES {
            return Err(Error::TooManySeries);
        }
        let s = series.entry(key.clone()).or_insert_with(|| CustomSeries {
            name: key.0.clone(),
            unit: unit.to_owned(),
            tags: key.1.clone(),
            count: 0,
            sum: 0.0,
            min: value,
            max: value,
            last: value,
            mean: 0.0,
            last_at_ms: at_ms,
        });
        s.count += 1;
        s.sum += value;
        s.min = s.min.min(value);
        s.max = s.max.max(value);
        s.last = value;
        s.mean = s.sum / s.count as f64;
        s.last_at_ms = at_ms;
        s.unit = unit.to_owned();
        Ok(())
    }

    pub fn all(&self) -> Vec<CustomSeries> {
        self.lock().values().cloned().collect()
    }

    pub fn reset(&self) {
        self.lock().clear();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tags(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect()
    }

    #[test]
    fn samples_aggregate_per_name_and_tags() {
        let m = CustomMetrics::default();
        let numbers = tags(&[("endpoint", "/api/numbers")]);
        m.record("api.response_time", 250.0, "ms", numbers.clone(), 1).unwrap();
        m.record("api.response_time", 150.0, "ms", numbers, 2).unwrap();
        m.record("api.response_time", 10.0, "ms", tags(&[("endpoint", "/api/users")]), 3).unwrap();
        let all = m.all();
        assert_eq!(all.len(), 2);
        let s = all.iter().find(|s| s.tags["endpoint"] == "/api/numbers").unwrap();
        assert_eq!((s.count, s.min, s.max, s.mean, s.last), (2, 150.0, 250.0, 200.0, 150.0));
    }

    #[test]
    fn bad_names_units_tags_and_values_are_refused() {
        let none = BTreeMap::new();
        assert!(matches!(validate("", 1.0, "ms", &none), Err(Error::Name(_))));
        assert!(matches!(validate("9lives", 1.0, "ms", &none), Err(Error::Name(_))));
        assert!(matches!(validate("a b", 1.0, "ms", &none), Err(Error::Name(_))));
        assert!(matches!(validate("ok", 1.0, "", &none), Err(Error::Unit(_))));
        assert!(matches!(validate("ok", f64::NAN, "ms", &none), Err(Error::Value)));
        assert!(matches!(validate("ok", 1.0, "ms", &tags(&[("bad tag", "x")])), Err(Error::Tag(_))));
        assert_eq!(validate("database.query", -1.5, "ms", &tags(&[("db", "main")])), Ok(()));
    }
}
