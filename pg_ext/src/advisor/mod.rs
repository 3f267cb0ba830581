//! The index advisor: hypothetical indexes the planner can see (`hypo`), `CREATE INDEX` text
//! turned into them (`ddl`), and planning statements with and without them (`plan`). The SQL
//! functions built on these live in `api/advisor.rs`.

pub mod analyze;
pub mod candidates;
pub mod catalog;
pub mod ddl;
pub mod early_stop;
pub mod hypo;
pub mod migration;
pub mod model;
pub mod plan;
pub mod select;
pub mod suggest;
pub mod upkeep;

use pgrx::pg_sys::panic::ErrorReport;
use pgrx::prelude::*;

#[derive(Debug, thiserror::Error)]
pub enum AdvisorError {
    #[error("{0} is not a CREATE INDEX statement")]
    NotCreateIndex(String),
    #[error("the query must be exactly one statement, got {0}")]
    NotOneStatement(usize),
    #[error("only SELECT, INSERT, UPDATE, DELETE and MERGE statements can be planned")]
    NotPlannable,
    #[error("hypothetical indexes can be defined on tables and materialized views only, and {0} is neither")]
    UnsupportedRelation(String),
    #[error("column \"{0}\" of relation {1} does not exist")]
    UnknownColumn(String, String),
    #[error("{0}")]
    Unsupported(String),
    #[error("text contains a NUL byte")]
    NulInText,
    #[error("{0}")]
    Nested(&'static str),
}

impl From<AdvisorError> for ErrorReport {
    fn from(e: AdvisorError) -> Self {
        use PgSqlErrorCode::*;
        let code = match &e {
            AdvisorError::NotCreateIndex(_) | AdvisorError::NotOneStatement(_) | AdvisorError::NotPlannable => {
                ERRCODE_INVALID_PARAMETER_VALUE
            }
            AdvisorError::UnsupportedRelation(_) => ERRCODE_WRONG_OBJECT_TYPE,
            AdvisorError::UnknownColumn(..) => ERRCODE_UNDEFINED_COLUMN,
            AdvisorError::Unsupported(_) => ERRCODE_FEATURE_NOT_SUPPORTED,
            AdvisorError::NulInText => ERRCODE_CHARACTER_NOT_IN_REPERTOIRE,
            AdvisorError::Nested(_) => ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE,
        };
        let report = ErrorReport::new(code, e.to_string(), "voxperf advisor");
        match e {
            AdvisorError::NotCreateIndex(_) => {
                report.set_hint("Pass index definitions such as 'CREATE INDEX ON t (a, b)'.")
            }
            _ => report,
        }
    }
}

/// Shorten a statement for an error message.
pub fn abbreviate(text: &str) -> String {
    const MAX: usize = 120;
    let one_line: String = text.split_whitespace().collect::<Vec<_>>().join(" ");
    if one_line.chars().count() <= MAX {
        format!("\"{one_line}\"")
    } else {
        format!("\"{}...\"", one_line.chars().take(MAX).collect::<String>())
    }
}
