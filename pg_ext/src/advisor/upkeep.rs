//! What an index costs the workload's writes, in the same unit as what it saves its reads:
//! milliseconds of execution over the statistics window. Pure arithmetic over the workload's
//! own write statements (their calls, rows and mean time) and the table's HOT-update share.
//!
//! The model, per statement that writes the candidate's table:
//! - the time to maintain one index for one row is the statement's time per row divided by
//!   the number of structures it already maintains (the heap and each existing index): the
//!   measured cost of a row write, shared out evenly;
//! - an INSERT maintains every index;
//! - an UPDATE maintains every index unless it is HOT; an index on a column the update sets
//!   makes every such update non-HOT, so it also costs the updates that used to be HOT their
//!   entries in the existing indexes;
//! - a DELETE costs nothing now (VACUUM removes index entries later);
//! - a partial index maintains only its share of the rows.

use super::model::{Candidate, Statement, TableInfo, Write};

/// The maintenance the candidate would add.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct Upkeep {
    /// Milliseconds of extra write work over the window.
    pub ms: f64,
    /// Rows written to the table by the workload over the window.
    pub rows_written: f64,
    /// Some update of the workload sets a column the index depends on.
    pub breaks_hot: bool,
}

/// `statements` with their weights in calls; `predicate_fraction`: the share of the table's
/// rows a partial index holds (1 for a full index).
pub fn upkeep(c: &Candidate, t: &TableInfo, statements: &[Statement], predicate_fraction: f64) -> Upkeep {
    let structures = 1.0 + t.indexes.len() as f64;
    let mut out = Upkeep::default();
    for s in statements {
        let Some(write) = s.tables.iter().find(|u| u.relid == c.relid).and_then(|u| u.write.as_ref()) else { continue };
        let rows = s.calls * s.rows_per_call.max(0.0);
        let per_row_ms = if s.rows_per_call > 0.0 { s.mean_ms / s.rows_per_call } else { 0.0 };
        let per_index_ms = per_row_ms / structures;
        out.rows_written += rows;
        let ms = match write {
            Write::Insert => rows * per_index_ms,
            Write::Delete => 0.0,
            Write::Update(_) => {
                let breaks = c.columns().iter().any(|col| match col {
                    Some(a) => write.sets(*a),
                    // An expression's columns are unknown: only an update of unknown columns
                    // is assumed to touch it.
                    None => matches!(write, Write::Update(cols) if cols.is_empty()),
                });
                if breaks {
                    out.breaks_hot = true;
                    rows * per_index_ms * (1.0 + t.indexes.len() as f64 * t.hot_update_fraction)
                } else {
                    rows * per_index_ms * (1.0 - t.hot_update_fraction)
                }
            }
        };
        out.ms += ms * predicate_fraction.clamp(0.0, 1.0);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::advisor::model::{Column, ExistingIndex, KeySpec, Method, TableUse};

    fn table(indexes: usize, hot: f64) -> TableInfo {
        TableInfo {
            relid: 1,
            name: "public.t".into(),
            bare_name: "t".into(),
            rows: 1000.0,
            row_width: 40.0,
            columns: Vec::new(),
            indexes: (0..indexes)
                .map(|i| ExistingIndex {
                    name: format!("i{i}"),
                    method: "btree".into(),
                    keys: vec!["id".into()],
                    predicate: None,
                })
                .collect(),
            hot_update_fraction: hot,
        }
    }

    fn on(attnum: i16) -> Candidate {
        Candidate {
            relid: 1,
            method: Method::Btree,
            keys: vec![KeySpec::plain(Column::Attr { attnum, name: format!("c{attnum}") })],
            predicate: None,
            predicate_columns: Vec::new(),
        }
    }

    fn writer(write: Write, calls: f64, rows_per_call: f64, mean_ms: f64) -> Statement {
        Statement {
            queryid: 1,
            calls,
            mean_ms,
            rows_per_call,
            tables: vec![TableUse { relid: 1, write: Some(write), ..TableUse::default() }],
            constants: Vec::new(),
        }
    }

    #[test]
    fn inserts_pay_a_share_of_their_measured_row_time() {
        // 100 single-row inserts of 0.2 ms into a table with one index: heap + index = 2
        // structures, 0.1 ms each: a new index costs 100 × 0.1 ms.
        let u = upkeep(&on(2), &table(1, 0.0), &[writer(Write::Insert, 100.0, 1.0, 0.2)], 1.0);
        assert!((u.ms - 10.0).abs() < 1e-9, "{u:?}");
        assert_eq!(u.rows_written, 100.0);
        assert!(!u.breaks_hot);
    }

    #[test]
    fn an_index_on_an_updated_column_breaks_hot_and_costs_the_existing_indexes_too() {
        let t = table(2, 0.9);
        let updates = [writer(Write::Update(vec![3]), 100.0, 1.0, 0.3)];
        let unrelated = upkeep(&on(2), &t, &updates, 1.0);
        let on_updated = upkeep(&on(3), &t, &updates, 1.0);
        assert!(!unrelated.breaks_hot && on_updated.breaks_hot);
        // 0.1 ms per structure; unrelated: only the 10% non-HOT updates; on the updated column:
        // every update, plus the 90% that were HOT now touch the 2 existing indexes.
        assert!((unrelated.ms - 100.0 * 0.1 * 0.1).abs() < 1e-9, "{unrelated:?}");
        assert!((on_updated.ms - 100.0 * 0.1 * (1.0 + 2.0 * 0.9)).abs() < 1e-9, "{on_updated:?}");
    }

    #[test]
    fn a_predicate_column_counts_like_a_key_and_partial_indexes_pay_their_share() {
        let mut c = on(2);
        c.predicate = Some("c3 = 'x'".into());
        c.predicate_columns = vec![3];
        let u = upkeep(&c, &table(0, 0.0), &[writer(Write::Update(vec![3]), 10.0, 1.0, 1.0)], 0.25);
        assert!(u.breaks_hot);
        // No existing index: the heap is the only structure, 1 ms per row.
        assert!((u.ms - 10.0 * 1.0 * 0.25).abs() < 1e-9, "{u:?}");
    }

    #[test]
    fn deletes_and_reads_cost_nothing() {
        let mut read = writer(Write::Delete, 10.0, 1.0, 1.0);
        let u = upkeep(&on(2), &table(0, 0.0), std::slice::from_ref(&read), 1.0);
        assert_eq!(u.ms, 0.0);
        read.tables[0].write = None;
        assert_eq!(upkeep(&on(2), &table(0, 0.0), &[read], 1.0), Upkeep::default());
    }
}
