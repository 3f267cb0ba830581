//! `GET /api/circuit-breakers`: every breaker's state, window and settings.
//!
//! Breaker state is per daemon process (not shared through Redis): each daemon judges its own
//! connections.

use axum::Json;
use axum::extract::State;

use crate::resilience::{Breakers, NamedBreakerSnapshot};

/// State of each circuit breaker of this daemon.
#[utoipa::path(get, path = "/api/circuit-breakers", tag = "resilience",
    responses((status = 200, body = Vec<NamedBreakerSnapshot>)))]
pub async fn list(State(breakers): State<Breakers>) -> Json<Vec<NamedBreakerSnapshot>> {
    Json(breakers.all().iter().map(|b| b.snapshot()).collect())
}
