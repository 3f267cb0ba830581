//! Predicate statistics from executed plans: `collect` walks the plan of a sampled execution
//! (FFI); what is kept and how is in `stats::quals` (pure).

pub mod collect;
