//! The errors voxperf's SQL functions raise, each with the SQLSTATE a client can act on and,
//! where the user can fix it, a hint.

use crate::gucs;
use pgrx::pg_sys::panic::ErrorReport;
use pgrx::prelude::*;

#[derive(Debug, thiserror::Error)]
pub enum VoxperfError {
    #[error("voxperf must be loaded via shared_preload_libraries")]
    NotPreloaded,
    #[error("could not write \"{path}\": {source}")]
    SaveFailed { path: &'static str, source: std::io::Error },
}

impl VoxperfError {
    fn sqlstate(&self) -> PgSqlErrorCode {
        match self {
            Self::NotPreloaded => PgSqlErrorCode::ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE,
            Self::SaveFailed { .. } => PgSqlErrorCode::ERRCODE_IO_ERROR,
        }
    }
}

impl From<VoxperfError> for ErrorReport {
    fn from(e: VoxperfError) -> Self {
        let report = ErrorReport::new(e.sqlstate(), e.to_string(), "voxperf");
        match e {
            VoxperfError::NotPreloaded => report.set_hint(gucs::PRELOAD_HINT.to_string_lossy()),
            VoxperfError::SaveFailed { .. } => report,
        }
    }
}

pub type VoxperfResult<T> = Result<T, ErrorReport>;

/// Fail with [`VoxperfError::NotPreloaded`] unless the shared memory exists.
pub fn require_preload() -> VoxperfResult<()> {
    if crate::shmem::is_ready() { Ok(()) } else { Err(VoxperfError::NotPreloaded.into()) }
}
