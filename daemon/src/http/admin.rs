//! `POST /api/admin/optimize`: refresh index suggestions and warm the cache; says what it did.

use axum::Json;
use axum::extract::State;

use super::error::ErrorBody;
use crate::services::optimize::OptimizeReport;
use crate::state::AppState;

/// Refresh the index suggestions (when the extension offers them) and warm the cache from CACHE_WARM_FILE.
#[utoipa::path(post, path = "/api/admin/optimize", tag = "admin", security(("bearer" = [])),
    responses((status = 200, body = OptimizeReport), (status = 401, body = ErrorBody), (status = 403, body = ErrorBody)))]
pub async fn optimize(State(state): State<AppState>) -> Json<OptimizeReport> {
    Json(state.optimizer.run().await)
}
