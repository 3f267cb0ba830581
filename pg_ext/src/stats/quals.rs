//! Predicate statistics: which predicates sampled executions applied to which tables, how often,
//! and how much they filtered — the runtime evidence behind `voxperf.qual_stats` and the index
//! advisor (in the spirit of pg_qualstats).
//!
//! A predicate is identified by (database, relation, shape hash); its shape is the columns (or an
//! expression), the operator and its role (a filter applied after a scan, an index condition, a
//! join key, a sort key). Entries live in a fixed table in shared memory guarded by one LWLock:
//! only sampled executions write here (`voxperf.qual_sample_rate`), so contention is low and
//! the lock is taken exclusively for the whole update. When full, the least used 5 % go.

use bytemuck::{Pod, Zeroable};

pub const MAX_COLUMNS: usize = 4;
pub const MAX_EXPR_TEXT: usize = 120;
pub const MAX_CONSTANTS: usize = 3;
pub const MAX_CONSTANT_TEXT: usize = 48;
pub const MAX_QUERYIDS: usize = 8;

/// Where in the plan the predicate was applied.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u8)]
pub enum Role {
    /// Evaluated on each row a scan produced (rows it rejected are what an index would skip).
    Filter = 0,
    /// Already served by an index.
    IndexCond = 1,
    /// A join key on this relation's side.
    JoinKey = 2,
    /// A sort key (ORDER BY) on this relation's columns, with or without LIMIT.
    SortKey = 3,
}

impl Role {
    pub fn from_u8(v: u8) -> Self {
        match v {
            1 => Role::IndexCond,
            2 => Role::JoinKey,
            3 => Role::SortKey,
            _ => Role::Filter,
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            Role::Filter => "filter",
            Role::IndexCond => "index condition",
            Role::JoinKey => "join key",
            Role::SortKey => "sort key",
        }
    }
}

/// What kind of predicate it is, which decides the index that can serve it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u8)]
pub enum Kind {
    Equality = 0,
    Range = 1,
    /// LIKE/ILIKE/regular expressions.
    Pattern = 2,
    /// Array or jsonb containment and key existence (`@>`, `<@`, `&&`, `?`).
    Containment = 3,
    IsNull = 4,
    IsNotNull = 5,
    /// `= ANY(array)` / `IN (...)`.
    InList = 6,
    Other = 7,
    /// Sort keys carry no operator.
    Ordering = 8,
}

impl Kind {
    pub fn from_u8(v: u8) -> Self {
        match v {
            0 => Kind::Equality,
            1 => Kind::Range,
            2 => Kind::Pattern,
            3 => Kind::Containment,
            4 => Kind::IsNull,
            5 => Kind::IsNotNull,
            6 => Kind::InList,
            8 => Kind::Ordering,
            _ => Kind::Other,
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            Kind::Equality => "equality",
            Kind::Range => "range",
            Kind::Pattern => "pattern",
            Kind::Containment => "containment",
            Kind::IsNull => "is null",
            Kind::IsNotNull => "is not null",
            Kind::InList => "in list",
            Kind::Other => "other",
            Kind::Ordering => "ordering",
        }
    }
}

/// One predicate as the collector hands it over.
#[derive(Clone, Debug, PartialEq)]
pub struct Observed {
    pub dbid: u32,
    pub relid: u32,
    pub role: Role,
    pub kind: Kind,
    /// Table columns (1-based), empty for an expression.
    pub columns: Vec<i16>,
    /// Per column, for sort keys: descending.
    pub descending: Vec<bool>,
    /// The expression, deparsed, when the predicate is on an expression.
    pub expr: Option<String>,
    pub opno: u32,
    pub opfamily: u32,
    pub strategy: i16,
    /// A sort key under a LIMIT.
    pub limited: bool,
    /// Rows the node returned and the rows its filter removed, over all loops.
    pub rows_out: f64,
    pub rows_removed: f64,
    pub constant: Option<String>,
    pub queryid: u64,
    pub userid: u32,
}

impl Observed {
    /// Identity of the predicate's shape (not its constant, not the query).
    pub fn shape_hash(&self) -> u64 {
        let mut h = 0xcbf2_9ce4_8422_2325u64;
        let mut eat = |bytes: &[u8]| {
            for &b in bytes {
                h ^= u64::from(b);
                h = h.wrapping_mul(0x0100_0000_01b3);
            }
        };
        eat(&[self.role as u8, self.kind as u8, u8::from(self.limited)]);
        eat(&self.opno.to_le_bytes());
        for (c, d) in self.columns.iter().zip(self.descending.iter().chain(std::iter::repeat(&false))) {
            eat(&c.to_le_bytes());
            eat(&[u8::from(*d)]);
        }
        if let Some(e) = &self.expr {
            eat(e.as_bytes());
        }
        h.max(1)
    }
}

/// Fields ordered by alignment so that the struct has no padding (it is plain shared data).
#[repr(C)]
#[derive(Clone, Copy, Debug, Pod, Zeroable)]
pub struct QualEntry {
    pub hash: u64,
    pub queryids: [u64; MAX_QUERYIDS],
    pub executions: u64,
    pub rows_out: f64,
    pub rows_removed: f64,
    pub dbid: u32,
    pub relid: u32,
    pub opno: u32,
    pub opfamily: u32,
    /// Owner of each sample constant: constants come from statements and are shown only to
    /// those allowed to see the statement.
    pub constant_owner: [u32; MAX_CONSTANTS],
    pub _pad4: u32,
    pub strategy: i16,
    pub attnums: [i16; MAX_COLUMNS],
    pub ncolumns: u8,
    pub role: u8,
    pub kind: u8,
    /// Bit i: column i descending (sort keys); bit 7: under a LIMIT.
    pub flags: u8,
    pub expr_len: u8,
    pub nconstants: u8,
    pub nqueryids: u8,
    pub in_use: u8,
    pub expr: [u8; MAX_EXPR_TEXT],
    pub constant_len: [u8; MAX_CONSTANTS],
    pub constants: [[u8; MAX_CONSTANT_TEXT]; MAX_CONSTANTS],
    pub _pad1: [u8; 3],
}

pub const LIMITED_FLAG: u8 = 0x80;

impl QualEntry {
    pub fn columns(&self) -> &[i16] {
        &self.attnums[..usize::from(self.ncolumns).min(MAX_COLUMNS)]
    }

    pub fn expr_text(&self) -> Option<&[u8]> {
        (self.expr_len > 0).then(|| &self.expr[..usize::from(self.expr_len)])
    }

    pub fn constants(&self) -> impl Iterator<Item = (&[u8], u32)> {
        (0..usize::from(self.nconstants))
            .map(move |i| (&self.constants[i][..usize::from(self.constant_len[i])], self.constant_owner[i]))
    }

    pub fn queryids(&self) -> &[u64] {
        &self.queryids[..usize::from(self.nqueryids)]
    }

    /// Observed selectivity: the fraction of rows the predicate's node let through.
    pub fn selectivity(&self) -> Option<f64> {
        let seen = self.rows_out + self.rows_removed;
        (seen > 0.0 && self.role == Role::Filter as u8).then(|| self.rows_out / seen)
    }

    fn fold(&mut self, o: &Observed) {
        self.executions += 1;
        self.rows_out += o.rows_out;
        self.rows_removed += o.rows_removed;
        if let Some(c) = &o.constant {
            let bytes = c.as_bytes();
            let bytes = &bytes[..clip_utf8(bytes, MAX_CONSTANT_TEXT)];
            let known = (0..usize::from(self.nconstants))
                .any(|i| &self.constants[i][..usize::from(self.constant_len[i])] == bytes);
            if !known {
                // Keep the first few distinct constants, then rotate through the slots.
                let slot = if usize::from(self.nconstants) < MAX_CONSTANTS {
                    self.nconstants += 1;
                    usize::from(self.nconstants) - 1
                } else {
                    (self.executions as usize) % MAX_CONSTANTS
                };
                self.constants[slot] = [0; MAX_CONSTANT_TEXT];
                self.constants[slot][..bytes.len()].copy_from_slice(bytes);
                self.constant_len[slot] = bytes.len() as u8;
                self.constant_owner[slot] = o.userid;
            }
        }
        if !self.queryids().contains(&o.queryid) {
            if usize::from(self.nqueryids) < MAX_QUERYIDS {
                self.queryids[usize::from(self.nqueryids)] = o.queryid;
                self.nqueryids += 1;
            } else {
                self.queryids[(self.executions as usize) % MAX_QUERYIDS] = o.queryid;
            }
        }
    }

    fn new_for(o: &Observed, hash: u64) -> Self {
        let mut e = QualEntry::zeroed();
        e.hash = hash;
        e.dbid = o.dbid;
        e.relid = o.relid;
        e.opno = o.opno;
        e.opfamily = o.opfamily;
        e.strategy = o.strategy;
        e.ncolumns = o.columns.len().min(MAX_COLUMNS) as u8;
        for (i, c) in o.columns.iter().take(MAX_COLUMNS).enumerate() {
            e.attnums[i] = *c;
            if o.descending.get(i).copied().unwrap_or(false) {
                e.flags |= 1 << i;
            }
        }
        if o.limited {
            e.flags |= LIMITED_FLAG;
        }
        e.role = o.role as u8;
        e.kind = o.kind as u8;
        if let Some(x) = &o.expr {
            let n = clip_utf8(x.as_bytes(), MAX_EXPR_TEXT);
            e.expr[..n].copy_from_slice(&x.as_bytes()[..n]);
            e.expr_len = n as u8;
        }
        e.in_use = 1;
        e
    }
}

/// Longest prefix of `b` within `max` bytes that does not split a UTF-8 character. (Constants
/// and expressions are converted to UTF-8 text before they get here.)
pub fn clip_utf8(b: &[u8], max: usize) -> usize {
    if b.len() <= max {
        return b.len();
    }
    let mut n = max;
    while n > 0 && (b[n] & 0xC0) == 0x80 {
        n -= 1;
    }
    n
}

/// The table of predicates (exclusive lock held by the caller for any write).
pub struct QualTable<'a> {
    pub entries: &'a mut [QualEntry],
}

impl QualTable<'_> {
    fn find(&self, dbid: u32, relid: u32, hash: u64) -> Option<usize> {
        let n = self.entries.len();
        if n == 0 {
            return None;
        }
        let mut slot = (hash as usize) % n;
        for _ in 0..n {
            let e = &self.entries[slot];
            if e.in_use == 0 {
                return None;
            }
            if e.hash == hash && e.dbid == dbid && e.relid == relid {
                return Some(slot);
            }
            slot = (slot + 1) % n;
        }
        None
    }

    /// Fold an observation in, making room when needed. Returns false when it was dropped.
    pub fn record(&mut self, o: &Observed) -> bool {
        let hash = o.shape_hash();
        if let Some(i) = self.find(o.dbid, o.relid, hash) {
            self.entries[i].fold(o);
            return true;
        }
        // Open addressing over a table we only ever fill to 3/4 (evicting beyond).
        let capacity = self.entries.len();
        if capacity == 0 {
            return false;
        }
        if self.len() * 4 >= capacity * 3 {
            self.evict();
        }
        let mut slot = (hash as usize) % capacity;
        while self.entries[slot].in_use != 0 {
            slot = (slot + 1) % capacity;
        }
        self.entries[slot] = QualEntry::new_for(o, hash);
        self.entries[slot].fold(o);
        true
    }

    pub fn len(&self) -> usize {
        self.entries.iter().filter(|e| e.in_use != 0).count()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    pub fn iter(&self) -> impl Iterator<Item = &QualEntry> {
        self.entries.iter().filter(|e| e.in_use != 0)
    }

    /// Drop the least executed fifth of the entries, then rebuild the probe sequences.
    fn evict(&mut self) {
        let mut live: Vec<QualEntry> = self.iter().copied().collect();
        live.sort_unstable_by_key(|e| std::cmp::Reverse(e.executions));
        live.truncate(live.len() * 4 / 5);
        self.reset();
        for e in live {
            let n = self.entries.len();
            let mut slot = (e.hash as usize) % n;
            while self.entries[slot].in_use != 0 {
                slot = (slot + 1) % n;
            }
            self.entries[slot] = e;
        }
    }

    pub fn reset(&mut self) {
        self.entries.fill(QualEntry::zeroed());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn obs(col: i16, kind: Kind, constant: &str, queryid: u64) -> Observed {
        Observed {
            dbid: 5,
            relid: 100,
            role: Role::Filter,
            kind,
            columns: vec![col],
            descending: vec![],
            expr: None,
            opno: 96,
            opfamily: 1976,
            strategy: 3,
            limited: false,
            rows_out: 10.0,
            rows_removed: 990.0,
            constant: Some(constant.into()),
            queryid,
            userid: 10,
        }
    }

    #[test]
    fn same_shape_aggregates_and_keeps_distinct_constants_and_queryids() {
        let mut entries = vec![QualEntry::zeroed(); 16];
        let mut t = QualTable { entries: &mut entries };
        for (i, c) in ["'AVAILABLE'", "'AVAILABLE'", "'ACTIVE'"].iter().enumerate() {
            t.record(&obs(3, Kind::Equality, c, 1 + (i as u64 % 2)));
        }
        assert_eq!(t.len(), 1);
        let e = t.iter().next().unwrap();
        assert_eq!(e.executions, 3);
        assert_eq!(
            e.constants().map(|(c, _)| c.to_vec()).collect::<Vec<_>>(),
            vec![b"'AVAILABLE'".to_vec(), b"'ACTIVE'".to_vec()]
        );
        assert_eq!(e.queryids(), &[1, 2]);
        assert!((e.selectivity().unwrap() - 0.01).abs() < 1e-12);
    }

    #[test]
    fn different_columns_kinds_or_roles_are_different_predicates() {
        let mut entries = vec![QualEntry::zeroed(); 16];
        let mut t = QualTable { entries: &mut entries };
        t.record(&obs(3, Kind::Equality, "1", 1));
        t.record(&obs(4, Kind::Equality, "1", 1));
        t.record(&obs(3, Kind::Range, "1", 1));
        let mut join = obs(3, Kind::Equality, "1", 1);
        join.role = Role::JoinKey;
        t.record(&join);
        assert_eq!(t.len(), 4);
    }

    #[test]
    fn a_full_table_evicts_the_least_executed_and_stays_consistent() {
        let mut entries = vec![QualEntry::zeroed(); 40];
        let mut t = QualTable { entries: &mut entries };
        for _ in 0..50 {
            t.record(&obs(1, Kind::Equality, "x", 1)); // the busy predicate
        }
        for col in 2..200 {
            t.record(&obs(col, Kind::Equality, "x", 1));
        }
        assert!(t.len() <= 30);
        let busy = t.iter().find(|e| e.columns() == [1]).expect("the busy predicate survives");
        assert_eq!(busy.executions, 50);
        for e in t.iter().copied().collect::<Vec<_>>() {
            assert!(t.find(e.dbid, e.relid, e.hash).is_some(), "reachable after eviction");
        }
    }

    #[test]
    fn long_constants_are_clipped_at_character_boundaries() {
        let mut entries = vec![QualEntry::zeroed(); 4];
        let mut t = QualTable { entries: &mut entries };
        t.record(&obs(1, Kind::Equality, &"é".repeat(100), 1));
        let (c, _) = t.iter().next().unwrap().constants().next().unwrap();
        assert!(c.len() <= MAX_CONSTANT_TEXT && std::str::from_utf8(c).is_ok());
    }
}
