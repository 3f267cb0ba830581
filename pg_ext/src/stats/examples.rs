//! Example executions of statements: the text as sent (literals and all) and, for prepared
//! statements, the parameter values. The index advisor plans these instead of the normalized
//! text, so the planner sees real values — which a `$1` can never give it (no partial index can
//! be proved usable for `status = $1`, and range selectivities fall back to defaults).
//!
//! One example per (database, statement), captured when the statement's entry is created and
//! refreshed at sampled executions. Slots are placed by hash with a short probe; when all
//! probed slots are taken the oldest is replaced, so a busy table keeps recent examples.
//! Examples contain literals: only the advisor reads them, inside the server.

use bytemuck::{Pod, Zeroable};

/// Bytes for text and parameters; longer examples are not kept (the advisor then plans the
/// normalized text).
pub const EXAMPLE_BYTES: usize = 2040;
const PROBE: usize = 4;

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
    pub _pad: u8,
    pub payload: [u8; EXAMPLE_BYTES],
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
    Some(Example { dbid: s.dbid, queryid: s.queryid, userid: s.userid, text, params })
}

/// The example of a statement, if one is kept (shared lock held by the caller).
pub fn lookup(slots: &[ExampleSlot], dbid: u32, queryid: u64) -> Option<Example> {
    let n = slots.len();
    if n == 0 {
        return None;
    }
    let start = home(n, dbid, queryid);
    (0..PROBE.min(n))
        .map(|i| &slots[(start + i) % n])
        .find(|s| s.in_use != 0 && s.queryid == queryid && s.dbid == dbid)
        .and_then(decode)
}

/// The example slots (exclusive lock held by the caller).
pub struct Examples<'a> {
    pub slots: &'a mut [ExampleSlot],
}

fn home(slots: usize, dbid: u32, queryid: u64) -> usize {
    ((queryid ^ u64::from(dbid).wrapping_mul(0x9E37_79B9_7F4A_7C15)) % slots as u64) as usize
}

impl Examples<'_> {
    /// Keep `e` as the example of its statement. False if it is too large to keep.
    pub fn store(&mut self, e: &Example, seq: u64) -> bool {
        let n = self.slots.len();
        if n == 0 {
            return false;
        }
        let Some((payload, text_len)) = encode(e) else { return false };
        let start = home(n, e.dbid, e.queryid);
        let probe = (0..PROBE.min(n)).map(|i| (start + i) % n);
        let slot = probe
            .clone()
            .find(|&i| self.slots[i].in_use != 0 && self.slots[i].queryid == e.queryid && self.slots[i].dbid == e.dbid)
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
        s.payload[..payload.len()].copy_from_slice(&payload);
        true
    }

    pub fn get(&self, dbid: u32, queryid: u64) -> Option<Example> {
        lookup(self.slots, dbid, queryid)
    }

    pub fn has(&self, dbid: u32, queryid: u64) -> bool {
        self.get(dbid, queryid).is_some()
    }

    pub fn reset(&mut self) {
        self.slots.fill(ExampleSlot::zeroed());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn example(queryid: u64, text: &str, params: Vec<ExampleParam>) -> Example {
        Example { dbid: 5, queryid, userid: 10, text: text.into(), params }
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
        assert_eq!(ex.get(5, 42), Some(e));
        assert_eq!(ex.get(6, 42), None, "per database");
    }

    #[test]
    fn a_newer_example_replaces_the_statement_s_old_one_and_full_slots_drop_the_oldest() {
        let mut slots = vec![ExampleSlot::zeroed(); 4];
        let mut ex = Examples { slots: &mut slots };
        ex.store(&example(1, "select 1", vec![]), 1);
        ex.store(&example(1, "select 2", vec![]), 2);
        assert_eq!(ex.get(5, 1).unwrap().text, "select 2");
        for q in 2..20u64 {
            ex.store(&example(q, &format!("select {q}"), vec![]), 10 + q);
        }
        assert!(ex.get(5, 19).is_some(), "the newest is kept");
        assert_eq!(ex.slots.iter().filter(|s| s.in_use != 0).count(), 4);
    }

    #[test]
    fn oversized_examples_are_not_kept() {
        let mut slots = vec![ExampleSlot::zeroed(); 4];
        let mut ex = Examples { slots: &mut slots };
        assert!(!ex.store(&example(1, &"x".repeat(EXAMPLE_BYTES + 1), vec![]), 1));
        assert!(!ex.has(5, 1));
    }
}
