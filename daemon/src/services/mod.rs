//! The daemon's logic, behind traits where a test may want another implementation.
//!
//! Handlers in `http/` extract, call one service method and return JSON; they hold no SQL, no
//! Redis and no retry logic. Services hold no HTTP types. The performance monitor, being stateful
//! and fed by middleware, lives in `crate::monitor`.

pub mod advisor;
pub mod cache_admin;
pub mod health;
pub mod optimize;
pub mod query_cache;
