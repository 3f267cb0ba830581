//! Example executions of statements: the text as sent (literals and all) and, for prepared
//! statements, the parameter values. The index advisor plans these instead of the normalized
//! text, so the planner sees real values — which a `$1` can never give it (no partial index can
//! be proved usable for `status = $1`, and range selectivities fall back to defaults).
//!
//! Up to [`VARIANTS`] examples per (database, statement), so that the advisor sees more than one
//! set of values (a search for a rare feature and one for a common feature want different
//! indexes):
//!
//! - the sampled variants (`0..SAMPLED`): the first execution, then executions picked with
//!   probability 2/calls (about 2·ln(calls) over a statement's life: early enough for a young
//!   statement, never on the statement path's budget, and pseudo-random so that they do not
//!   follow a pattern of the workload), and a share of the executions sampled for predicate
//!   statistics (which keeps them current);
//! - [`SLOWEST`]: the execution that set the statement's maximum execution time, the values
//!   behind its tail latency.
//!
//! Every capture, kept or not, also feeds the statement's [`Constancy`]: which of its literal
//! values have never changed. Four examples cannot tell a constant of the application
//! (`status = 'AVAILABLE'`) from a parameter that is usually the same (80% of calls ask for
//! 'ACTIVE'); a few dozen captures over the statement's life can.
//!
//! Slots are placed by hash of (database, statement, variant) with a short probe; when all
//! probed slots are taken the oldest is replaced, so a busy table keeps recent examples.
//! Examples contain literals: only the advisor reads them, inside the server.

use bytemuck::{Pod, Zeroable};

/// Bytes for text and parameters; longer examples are not kept (the advisor then plans the
/// normalized text).
pub const EXAMPLE_BYTES: usize = 2040;
const PROBE: usize = 4;
/// Examples kept per statement.
pub const VARIANTS: u8 = 4;
/// The sampled variants are `0..SAMPLED`.
pub const SAMPLED: u8 = 3;
/// The variant holding the slowest execution.
pub const SLOWEST: u8 = 3;
/// Literal positions whose constancy is tracked; later ones count as changing.
pub const TRACKED_LITERALS: usize = 32;

/// Which literal values of a statement have stayed the same over its captured executions.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Constancy {
    /// Fingerprints of the literal values (text literals, then parameter values) of the first
    /// capture, by position.
    pub fingerprints: Vec<u32>,
    /// Bit i: position i has changed (or the number of literals has).
    pub changed: u32,
    /// Captures folded in.
    pub captures: u16,
}

impl Constancy {
    /// Fold in one execution's literal values.
    pub fn observe(&mut self, fingerprints: &[u32]) {
        if self.captures == 0 {
            self.fingerprints = fingerprints.iter().take(TRACKED_LITERALS).copied().collect();
        } else if fingerprints.len().min(TRACKED_LITERALS) != self.fingerprints.len() {
            self.changed = u32::MAX;
        } else {
            for (i, (a, b)) in self.fingerprints.iter().zip(fingerprints).enumerate() {
                if a != b {
                    self.changed |= 1 << i;
                }
            }
        }
        self.captures = self.captures.saturating_add(1);
    }

    /// Whether position `i` has kept its value over at least `min_captures` captures.
    pub fn constant(&self, i: usize, min_captures: u16) -> bool {
        self.captures >= min_captures && i < self.fingerprints.len() && self.changed & (1 << i) == 0
    }
}

/// Fingerprints of an execution's literal values, in the positions of [`literal_values`].
pub fn literal_fingerprints(e: &Example) -> Vec<u32> {
    let mut v = super::literals::fingerprints(&e.text);
    v.extend(e.params.iter().map(|p| super::literals::fingerprint(p.value.as_deref().unwrap_or_default())));
    v
}

/// The literal values of an execution: its text's literals, then its parameters' values.
pub fn literal_values(e: &Example) -> Vec<String> {
    let mut v = super::literals::values(&e.text);
    v.extend(e.params.iter().map(|p| p.value.clone().unwrap_or_default()));
    v
}

#[repr(C)]
#[derive(Clone, Copy, Debug, Pod, Zeroable)]
pub struct ExampleSlot {
    pub queryid: u64,
    /// Sequence number of the capture, to replace the oldest.
    pub seq: u64,
    pub dbid: u32,
    pub userid: u32,
    pub text_len: u32,
    pub nparams: u16,
    pub in_use: u8,
    pub variant: u8,
    /// The statement's [`Constancy`] as of this capture (every slot of a statement holds the
    /// latest).
    pub lit_fingerprints: [u32; TRACKED_LITERALS],
    pub lit_changed: u32,
    pub lit_count: u16,
    pub lit_captures: u16,
    pub payload: [u8; EXAMPLE_BYTES],
}

impl ExampleSlot {
    fn constancy(&self) -> Constancy {
        Constancy {
            fingerprints: self.lit_fingerprints[..usize::from(self.lit_count).min(TRACKED_LITERALS)].to_vec(),
            changed: self.lit_changed,
            captures: self.lit_captures,
        }
    }

    fn set_constancy(&mut self, c: &Constancy) {
        self.lit_fingerprints = [0; TRACKED_LITERALS];
        self.lit_fingerprints[..c.fingerprints.len()].copy_from_slice(&c.fingerprints);
        self.lit_count = c.fingerprints.len() as u16;
        self.lit_changed = c.changed;
        self.lit_captures = c.captures;
    }
}

/// A parameter value of a prepared statement, in its type's text form.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ExampleParam {
    pub type_oid: u32,
    pub value: Option<String>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Example {
    pub dbid: u32,
    pub queryid: u64,
    pub variant: u8,
    /// The statement's constancy record (filled in by `store` and `lookup`; ignored on input).
    pub constancy: Constancy,
    pub userid: u32,
    pub text: String,
    pub params: Vec<ExampleParam>,
}

/// Lay an example out for a slot; `None` when it does not fit.
fn encode(e: &Example) -> Option<(Vec<u8>, u32)> {
    let mut out = Vec::with_capacity(e.text.len() + e.params.len() * 16);
    out.extend_from_slice(e.text.as_bytes());
    for p in &e.params {
        out.extend_from_slice(&p.type_oid.to_le_bytes());
        match &p.value {
            None => out.push(0),
            Some(v) => {
                out.push(1);
                out.extend_from_slice(&(u32::try_from(v.len()).ok()?).to_le_bytes());
                out.extend_from_slice(v.as_bytes());
            }
        }
    }
    (out.len() <= EXAMPLE_BYTES).then_some((out, e.text.len() as u32))
}

fn decode(s: &ExampleSlot) -> Option<Example> {
    let payload = &s.payload[..];
    let text_len = s.text_len as usize;
    let text = std::str::from_utf8(payload.get(..text_len)?).ok()?.to_string();
    let mut at = text_len;
    let mut params = Vec::with_capacity(usize::from(s.nparams));
    for _ in 0..s.nparams {
        let type_oid = u32::from_le_bytes(payload.get(at..at + 4)?.try_into().ok()?);
        at += 4;
        let value = match *payload.get(at)? {
            0 => {
                at += 1;
                None
            }
            _ => {
                let len = u32::from_le_bytes(payload.get(at + 1..at + 5)?.try_into().ok()?) as usize;
                at += 5;
                let v = std::str::from_utf8(payload.get(at..at + len)?).ok()?.to_string();
                at += len;
                Some(v)
            }
        };
        params.push(ExampleParam { type_oid, value });
    }
    Some(Example {
        dbid: s.dbid,
        queryid: s.queryid,
        variant: s.variant,
        constancy: s.constancy(),
        userid: s.userid,
        text,
        params,
    })
}

fn matches(s: &ExampleSlot, dbid: u32, queryid: u64, variant: u8) -> bool {
    s.in_use != 0 && s.queryid == queryid && s.dbid == dbid && s.variant == variant
}

/// One example of a statement, if kept (shared lock held by the caller).
pub fn lookup(slots: &[ExampleSlot], dbid: u32, queryid: u64, variant: u8) -> Option<Example> {
    let n = slots.len();
    if n == 0 {
        return None;
    }
    let start = home(n, dbid, queryid, variant);
    (0..PROBE.min(n)).map(|i| &slots[(start + i) % n]).find(|s| matches(s, dbid, queryid, variant)).and_then(decode)
}

/// Every example kept, oldest capture first (shared lock held by the caller).
pub fn all(slots: &[ExampleSlot]) -> Vec<Example> {
    let mut used: Vec<&ExampleSlot> = slots.iter().filter(|s| s.in_use != 0).collect();
    used.sort_by_key(|s| s.seq);
    used.into_iter().filter_map(decode).collect()
}

/// Every example kept for a statement, by variant (shared lock held by the caller).
pub fn lookup_all(slots: &[ExampleSlot], dbid: u32, queryid: u64) -> Vec<Example> {
    (0..VARIANTS).filter_map(|v| lookup(slots, dbid, queryid, v)).collect()
}

/// The example slots (exclusive lock held by the caller).
pub struct Examples<'a> {
    pub slots: &'a mut [ExampleSlot],
}

fn home(slots: usize, dbid: u32, queryid: u64, variant: u8) -> usize {
    let mixed = queryid ^ u64::from(dbid).wrapping_mul(0x9E37_79B9_7F4A_7C15);
    (mixed.wrapping_add(u64::from(variant).wrapping_mul(0xC2B2_AE3D_27D4_EB4F)) % slots as u64) as usize
}

impl Examples<'_> {
    fn slot_of(&self, dbid: u32, queryid: u64, variant: u8) -> Option<usize> {
        let n = self.slots.len();
        let start = home(n, dbid, queryid, variant);
        (0..PROBE.min(n)).map(|i| (start + i) % n).find(|&i| matches(&self.slots[i], dbid, queryid, variant))
    }

    /// Fold an execution into its statement's constancy record without keeping it as an
    /// example (when its variant's slot is to stay as it is).
    /// Returns the record after folding (a new record when no slot holds the statement yet).
    pub fn observe(&mut self, e: &Example) -> Constancy {
        if self.slots.is_empty() {
            return Constancy::default();
        }
        let mut held = [None; VARIANTS as usize];
        for (v, h) in held.iter_mut().enumerate() {
            *h = self.slot_of(e.dbid, e.queryid, v as u8);
        }
        // Every slot of a statement holds its latest record; the most captures wins should they
        // ever differ.
        let mut c = held
            .iter()
            .flatten()
            .max_by_key(|&&i| self.slots[i].lit_captures)
            .map(|&i| self.slots[i].constancy())
            .unwrap_or_default();
        c.observe(&literal_fingerprints(e));
        for &i in held.iter().flatten() {
            self.slots[i].set_constancy(&c);
        }
        c
    }

    /// Keep `e` as the example of its statement (its variant), folding it into the statement's
    /// constancy record. False if it is too large to keep (it is still folded in).
    pub fn store(&mut self, e: &Example, seq: u64) -> bool {
        if self.slots.is_empty() {
            return false;
        }
        let constancy = self.observe(e);
        self.put(e, &constancy, seq)
    }

    /// Put back an example read from the statistics file, with its constancy record as saved.
    pub fn restore(&mut self, e: &Example, seq: u64) -> bool {
        !self.slots.is_empty() && self.put(e, &e.constancy, seq)
    }

    fn put(&mut self, e: &Example, constancy: &Constancy, seq: u64) -> bool {
        let n = self.slots.len();
        let Some((payload, text_len)) = encode(e) else { return false };
        let start = home(n, e.dbid, e.queryid, e.variant);
        let probe = (0..PROBE.min(n)).map(|i| (start + i) % n);
        let slot = probe
            .clone()
            .find(|&i| matches(&self.slots[i], e.dbid, e.queryid, e.variant))
            .or_else(|| probe.clone().find(|&i| self.slots[i].in_use == 0))
            .unwrap_or_else(|| probe.min_by_key(|&i| self.slots[i].seq).unwrap());
        let s = &mut self.slots[slot];
        *s = ExampleSlot::zeroed();
        s.queryid = e.queryid;
        s.seq = seq;
        s.dbid = e.dbid;
        s.userid = e.userid;
        s.text_len = text_len;
        s.nparams = e.params.len() as u16;
        s.in_use = 1;
        s.variant = e.variant;
        s.set_constancy(constancy);
        s.payload[..payload.len()].copy_from_slice(&payload);
        true
    }

    pub fn get(&self, dbid: u32, queryid: u64, variant: u8) -> Option<Example> {
        lookup(self.slots, dbid, queryid, variant)
    }

    pub fn has(&self, dbid: u32, queryid: u64, variant: u8) -> bool {
        self.get(dbid, queryid, variant).is_some()
    }

    /// Drop the examples `pred` selects (it sees each slot's user, database and statement).
    pub fn remove_where(&mut self, mut pred: impl FnMut(&ExampleSlot) -> bool) -> usize {
        let mut removed = 0;
        for s in self.slots.iter_mut().filter(|s| s.in_use != 0) {
            if pred(s) {
                *s = ExampleSlot::zeroed();
                removed += 1;
            }
        }
        removed
    }

    pub fn reset(&mut self) {
        self.slots.fill(ExampleSlot::zeroed());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn example(queryid: u64, text: &str, params: Vec<ExampleParam>) -> Example {
        Example { dbid: 5, queryid, variant: 0, constancy: Constancy::default(), userid: 10, text: text.into(), params }
    }

    #[test]
    fn round_trip_with_parameters_including_null() {
        let mut slots = vec![ExampleSlot::zeroed(); 8];
        let mut ex = Examples { slots: &mut slots };
        let e = example(
            42,
            "SELECT * FROM t WHERE a = $1 AND b = $2",
            vec![ExampleParam { type_oid: 23, value: Some("7".into()) }, ExampleParam { type_oid: 25, value: None }],
        );
        assert!(ex.store(&e, 1));
        let back = ex.get(5, 42, 0).unwrap();
        assert_eq!((back.text.as_str(), &back.params), (e.text.as_str(), &e.params));
        assert_eq!(back.constancy.captures, 1);
        assert_eq!(ex.get(6, 42, 0), None, "per database");
    }

    #[test]
    fn a_newer_example_replaces_the_statement_s_old_one_and_full_slots_drop_the_oldest() {
        let mut slots = vec![ExampleSlot::zeroed(); 4];
        let mut ex = Examples { slots: &mut slots };
        ex.store(&example(1, "select 1", vec![]), 1);
        ex.store(&example(1, "select 2", vec![]), 2);
        assert_eq!(ex.get(5, 1, 0).unwrap().text, "select 2");
        for q in 2..20u64 {
            ex.store(&example(q, &format!("select {q}"), vec![]), 10 + q);
        }
        assert!(ex.get(5, 19, 0).is_some(), "the newest is kept");
        assert_eq!(ex.slots.iter().filter(|s| s.in_use != 0).count(), 4);
    }

    #[test]
    fn variants_of_a_statement_are_kept_side_by_side() {
        let mut slots = vec![ExampleSlot::zeroed(); 64];
        let mut ex = Examples { slots: &mut slots };
        for v in 0..VARIANTS {
            let mut e = example(7, &format!("select {v}"), vec![]);
            e.variant = v;
            assert!(ex.store(&e, u64::from(v)));
        }
        let mut e = example(7, "select slow", vec![]);
        e.variant = SLOWEST;
        ex.store(&e, 10);
        let all = lookup_all(ex.slots, 5, 7);
        let texts: Vec<&str> = all.iter().map(|e| e.text.as_str()).collect();
        assert_eq!(texts, ["select 0", "select 1", "select 2", "select slow"]);
        assert!(lookup_all(ex.slots, 5, 8).is_empty());
    }

    #[test]
    fn constancy_tells_constants_from_values_that_change_across_all_captures() {
        let mut slots = vec![ExampleSlot::zeroed(); 64];
        let mut ex = Examples { slots: &mut slots };
        // Ten captures of one statement, rotating over the sampled variants: the owner always
        // changes, the status only once (the 5th, whose slot the 8th reuses), the limit never.
        for i in 0..10u64 {
            let status = if i == 4 { "SUSPENDED" } else { "ACTIVE" };
            let mut e = example(
                9,
                &format!("SELECT * FROM n WHERE owner = {} AND status = '{status}' LIMIT 50", 100 + i),
                vec![],
            );
            e.variant = (i % u64::from(SAMPLED)) as u8;
            ex.store(&e, i + 1);
        }
        let kept = lookup_all(ex.slots, 5, 9);
        // The kept examples alone all say 'ACTIVE' (the 'SUSPENDED' capture was overwritten)...
        assert!(kept.iter().all(|e| e.text.contains("'ACTIVE'")), "{kept:?}");
        // ...but the record saw it change.
        let c = &kept[0].constancy;
        assert_eq!(c.captures, 10);
        assert!(!c.constant(0, 3) && !c.constant(1, 3) && c.constant(2, 3), "{c:?}");
        assert!(!c.constant(2, 11), "too few captures to tell");
        assert!(kept.iter().all(|e| e.constancy == *c), "every slot holds the latest record");
    }

    #[test]
    fn parameters_are_literal_positions_too() {
        let mut c = Constancy::default();
        let e = |v: &str| {
            example(
                1,
                "SELECT * FROM t WHERE a = $1 AND b = 'x'",
                vec![ExampleParam { type_oid: 23, value: Some(v.into()) }],
            )
        };
        for v in ["1", "2", "3"] {
            c.observe(&literal_fingerprints(&e(v)));
        }
        assert!(c.constant(0, 3), "the text's 'x'");
        assert!(!c.constant(1, 3), "the parameter");
    }

    #[test]
    fn oversized_examples_are_not_kept() {
        let mut slots = vec![ExampleSlot::zeroed(); 4];
        let mut ex = Examples { slots: &mut slots };
        assert!(!ex.store(&example(1, &"x".repeat(EXAMPLE_BYTES + 1), vec![]), 1));
        assert!(!ex.has(5, 1, 0));
    }
}
