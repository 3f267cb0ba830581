//! Pure statistics logic with no Postgres calls, so plain `#[test]`s cover it: what an entry
//! accumulates, the latency histogram, the fixed-capacity table with cost-based eviction, the
//! slow-query ring, query-text normalization and the stats file format. `shmem.rs` places these
//! structures in shared memory; `hooks.rs` feeds them.

pub mod counters;
pub mod examples;
pub mod histogram;
pub mod literals;
pub mod normalize;
pub mod persist;
pub mod quals;
pub mod sampler;
pub mod slow_ring;
pub mod spin;
pub mod table;
pub mod timing;
