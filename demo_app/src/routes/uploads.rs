//! Uploads: the body is hashed as it arrives, frame by frame, never held whole; so there is no
//! size limit on this route, and a gateway test can send more than any buffer would take.

use axum::Json;
use axum::body::Body;
use axum::http::StatusCode;
use http_body_util::BodyExt;
use serde::Serialize;
use sha2::{Digest, Sha256};

use crate::error::AppError;

#[derive(Debug, Serialize)]
pub struct UploadReceipt {
    bytes: u64,
    /// SHA-256 of the body, lower-case hex.
    sha256: String,
}

/// `POST /api/uploads`: `{"bytes": n, "sha256": hex}` of the request body.
pub async fn upload(mut body: Body) -> Result<Json<UploadReceipt>, AppError> {
    let mut hash = Sha256::new();
    let mut bytes = 0u64;
    while let Some(frame) = body.frame().await {
        let frame = frame.map_err(|e| {
            AppError::new(StatusCode::BAD_REQUEST, "body_read_failed", format!("reading the request body: {e}"))
        })?;
        // Trailers, if any, are not content.
        if let Ok(data) = frame.into_data() {
            bytes += data.len() as u64;
            hash.update(&data);
        }
    }
    let sha256 = hash.finalize().iter().map(|b| format!("{b:02x}")).collect();
    Ok(Json(UploadReceipt { bytes, sha256 }))
}
