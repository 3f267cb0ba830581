//! Query and path parameters: parsing and range checks, each failure a 400 naming the
//! parameter. Handlers take parameters as strings (`Option<String>` in their query structs) and
//! convert them here, so that a bad value never produces axum's plain-text rejection.

use std::ops::RangeInclusive;
use std::str::FromStr;

use crate::error::AppError;

/// A row id in a path (`/api/numbers/{id}`): a positive integer.
pub fn id(name: &str, raw: &str) -> Result<i64, AppError> {
    match raw.parse::<i64>() {
        Ok(id) if id > 0 => Ok(id),
        _ => Err(AppError::invalid_parameter(name, format!("expected a positive integer, got {raw:?}"))),
    }
}

/// An optional integer in `range`, `default` when absent.
pub fn integer_in<T>(name: &str, raw: Option<&str>, range: RangeInclusive<T>, default: T) -> Result<T, AppError>
where
    T: FromStr + PartialOrd + std::fmt::Display + Copy,
{
    let Some(raw) = raw else { return Ok(default) };
    match raw.parse::<T>() {
        Ok(value) if range.contains(&value) => Ok(value),
        _ => Err(AppError::invalid_parameter(
            name,
            format!("expected an integer from {} to {}, got {raw:?}", range.start(), range.end()),
        )),
    }
}

/// A required parameter that was not given.
pub fn required<'a>(name: &str, raw: Option<&'a str>) -> Result<&'a str, AppError> {
    raw.ok_or_else(|| AppError::invalid_parameter(name, "required"))
}

/// An ISO 3166-1 alpha-2 country code, any case; returned upper-case as the schema stores it.
pub fn country(name: &str, raw: &str) -> Result<String, AppError> {
    if raw.len() == 2 && raw.bytes().all(|b| b.is_ascii_alphabetic()) {
        Ok(raw.to_ascii_uppercase())
    } else {
        Err(AppError::invalid_parameter(name, format!("expected a two-letter country code, got {raw:?}")))
    }
}

/// A telephone area code: 1 to 6 digits (NANP codes have 3, others up to 5 or so).
pub fn area_code(name: &str, raw: &str) -> Result<String, AppError> {
    if (1..=6).contains(&raw.len()) && raw.bytes().all(|b| b.is_ascii_digit()) {
        Ok(raw.to_owned())
    } else {
        Err(AppError::invalid_parameter(name, format!("expected 1 to 6 digits, got {raw:?}")))
    }
}

/// The `status` values the schema's CHECK constraint allows.
pub const NUMBER_STATUSES: [&str; 4] = ["AVAILABLE", "RESERVED", "ACTIVE", "SUSPENDED"];

/// A `VirtualNumber.status`, any case; returned upper-case.
pub fn number_status(name: &str, raw: &str) -> Result<&'static str, AppError> {
    NUMBER_STATUSES.into_iter().find(|s| s.eq_ignore_ascii_case(raw)).ok_or_else(|| {
        AppError::invalid_parameter(name, format!("expected one of {}, got {raw:?}", NUMBER_STATUSES.join(", ")))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_are_positive_integers() {
        assert_eq!(id("id", "42").unwrap(), 42);
        for bad in ["0", "-1", "x", "", "1.5", "99999999999999999999"] {
            let e = id("id", bad).unwrap_err();
            assert!(e.message.starts_with("`id`"), "{bad}: {}", e.message);
        }
    }

    #[test]
    fn integers_default_when_absent_and_are_range_checked() {
        assert_eq!(integer_in("limit", None, 1..=100, 20).unwrap(), 20);
        assert_eq!(integer_in("limit", Some("100"), 1..=100, 20).unwrap(), 100);
        assert!(integer_in("limit", Some("101"), 1..=100, 20).is_err());
        assert!(integer_in("limit", Some("0"), 1..=100, 20).is_err());
    }

    #[test]
    fn statuses_and_countries_are_normalised_to_upper_case() {
        assert_eq!(number_status("status", "reserved").unwrap(), "RESERVED");
        assert!(number_status("status", "GONE").is_err());
        assert_eq!(country("country", "us").unwrap(), "US");
        assert!(country("country", "USA").is_err());
        assert!(area_code("area", "21a").is_err());
    }
}
