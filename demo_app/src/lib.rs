//! voxlink-demo: a small VoxLink API over the demo schema (`sql/schema.sql`), the upstream that
//! voxperfd fronts as a reverse-proxy gateway.
//!
//! Besides the product endpoints (number search, reservations, usage reports, per-user views) it
//! has a few whose only purpose is to let gateway tests observe what reached the upstream: an
//! echo of the request, a slow endpoint, a streaming upload and a request counter. Where each
//! concept lives:
//!
//! | concept | module |
//! | --- | --- |
//! | Postgres pool and every statement | [`db`] |
//! | the one error type of the handlers, `{"error": {"code", "message"}}` | [`error`] |
//! | query and path parameters, validated with messages naming the parameter | [`params`] |
//! | the demo credential `Authorization: Bearer user-<id>` | [`auth`] |
//! | the per-route request counter behind `/_demo/requests` | [`requests`] |
//! | routes and handlers, one file per API area | [`routes`] |
//!
//! [`app`] builds the router (testable with `oneshot`); [`serve`] serves it until shutdown.

pub mod auth;
pub mod db;
pub mod error;
pub mod params;
pub mod requests;
pub mod routes;

use std::future::Future;
use std::sync::Arc;

use axum::Router;
use tokio::net::TcpListener;

use crate::db::Db;
use crate::requests::RequestCounter;

/// What every handler shares. Cheap to clone: both parts are shared handles.
#[derive(Debug, Clone)]
pub struct AppState {
    pub db: Arc<Db>,
    pub requests: Arc<RequestCounter>,
}

impl AppState {
    pub fn new(db: Db) -> Self {
        Self { db: Arc::new(db), requests: Arc::new(RequestCounter::default()) }
    }
}

/// The whole HTTP application: the routes, counted by the request counter.
pub fn app(state: AppState) -> Router {
    let counter = state.requests.clone();
    // Added with `Router::layer` (not around the router from outside) so that the middleware
    // runs after routing and sees the matched route pattern.
    routes::router(state).layer(axum::middleware::from_fn_with_state(counter, requests::count))
}

/// Serves `app(state)` on `listener` until `shutdown` completes, then stops accepting and lets
/// in-flight requests finish.
pub async fn serve<F>(listener: TcpListener, state: AppState, shutdown: F) -> std::io::Result<()>
where
    F: Future<Output = ()> + Send + 'static,
{
    axum::serve(listener, app(state)).with_graceful_shutdown(shutdown).await
}

#[cfg(test)]
mod tests;
