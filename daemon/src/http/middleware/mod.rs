//! Middleware written here only where no tower-http layer exists: response timing, ETags on
//! dynamic JSON, the admin token check (a tower-http `ValidateRequest`), and the rewrite of
//! layer-made errors into the API's JSON shape. Compression, request ids, timeouts, body limits,
//! security and cache headers are tower-http layers, assembled in `crate::app`.

pub mod auth;
pub mod errors;
pub mod etag;
pub mod metrics;
pub mod security;
pub mod timing;
