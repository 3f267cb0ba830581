//! The slow-query log: a fixed ring of slots in shared memory, each holding one execution that
//! exceeded `voxperf.slow_query_threshold` with its statement text and plan.
//!
//! Writers hold the ring's LWLock exclusively, readers shared. The newest entry overwrites the
//! oldest. Each slot has a fixed payload of [`SLOT_BYTES`]: the statement text gets at most a
//! quarter of it, the rest holds the plan as text and JSON. A JSON plan is stored only whole
//! (a clipped JSON document is useless); a text plan that does not fit is clipped and the slot
//! is flagged `plan_truncated`.

use bytemuck::{Pod, Zeroable};

/// Payload bytes per slot: room for a statement and a plan of a few dozen nodes in both formats.
pub const SLOT_BYTES: usize = 16 * 1024;
const QUERY_SHARE: usize = SLOT_BYTES / 4;

pub const FLAG_TOPLEVEL: u32 = 1;
pub const FLAG_QUERY_TRUNCATED: u32 = 2;
pub const FLAG_PLAN_TRUNCATED: u32 = 4;

#[repr(C)]
#[derive(Clone, Copy, Debug, Default, Pod, Zeroable)]
pub struct RingHeader {
    pub capacity: u32,
    pub _pad: u32,
    /// Sequence number of the next slow query; slot = seq % capacity; 0 marks an empty slot.
    pub next_seq: u64,
}

#[repr(C)]
#[derive(Clone, Copy, Debug, Default, Pod, Zeroable)]
pub struct SlowSlot {
    pub seq: u64,
    /// `TimestampTz` at which the execution finished.
    pub finished_at: i64,
    pub queryid: u64,
    pub duration_ms: f64,
    pub rows: u64,
    pub pid: i32,
    pub userid: u32,
    pub dbid: u32,
    pub encoding: i32,
    pub query_len: u32,
    pub plan_text_len: u32,
    pub plan_json_len: u32,
    pub flags: u32,
}

/// One slow execution as the executor hook hands it over.
pub struct SlowQuery<'a> {
    pub finished_at: i64,
    pub pid: i32,
    pub userid: u32,
    pub dbid: u32,
    pub queryid: u64,
    pub toplevel: bool,
    pub duration_ms: f64,
    pub rows: u64,
    pub encoding: i32,
    pub query: &'a [u8],
    pub plan_text: Option<&'a [u8]>,
    pub plan_json: Option<&'a [u8]>,
}

/// A slot's contents as read back.
pub struct SlowRecord<'a> {
    pub slot: SlowSlot,
    pub query: &'a [u8],
    pub plan_text: Option<&'a [u8]>,
    pub plan_json: Option<&'a [u8]>,
}

/// A slow query laid out for a slot, prepared before taking the ring's lock (clipping calls
/// into Postgres for the server encoding and must not run under it).
pub struct Packed {
    slot: SlowSlot,
    payload: Vec<u8>,
}

/// Lay `q` out for a slot. `clip(bytes, max)` returns how many leading bytes of `bytes` can be
/// kept within `max` without splitting a character of the server encoding.
pub fn pack(q: &SlowQuery<'_>, clip: impl Fn(&[u8], usize) -> usize) -> Packed {
    let mut flags = if q.toplevel { FLAG_TOPLEVEL } else { 0 };
    let query_len = if q.query.len() <= QUERY_SHARE {
        q.query.len()
    } else {
        flags |= FLAG_QUERY_TRUNCATED;
        clip(q.query, QUERY_SHARE)
    };
    let room = SLOT_BYTES - query_len;
    let text = q.plan_text.unwrap_or_default();
    let json = q.plan_json.unwrap_or_default();
    let (text_len, json_len) = if text.len() + json.len() <= room {
        (text.len(), json.len())
    } else if text.len() <= room {
        flags |= FLAG_PLAN_TRUNCATED;
        (text.len(), 0)
    } else {
        flags |= FLAG_PLAN_TRUNCATED;
        (clip(text, room), 0)
    };
    let mut payload = Vec::with_capacity(query_len + text_len + json_len);
    payload.extend_from_slice(&q.query[..query_len]);
    payload.extend_from_slice(&text[..text_len]);
    payload.extend_from_slice(&json[..json_len]);
    let json_kept = q.plan_json.is_some() && (json_len > 0 || json.is_empty());
    Packed {
        slot: SlowSlot {
            seq: 0,
            finished_at: q.finished_at,
            queryid: q.queryid,
            duration_ms: q.duration_ms,
            rows: q.rows,
            pid: q.pid,
            userid: q.userid,
            dbid: q.dbid,
            encoding: q.encoding,
            query_len: query_len as u32,
            plan_text_len: if q.plan_text.is_some() { text_len as u32 } else { u32::MAX },
            plan_json_len: if json_kept { json_len as u32 } else { u32::MAX },
            flags,
        },
        payload,
    }
}

pub struct RingMut<'a> {
    pub header: &'a mut RingHeader,
    pub slots: &'a mut [SlowSlot],
    pub payload: &'a mut [u8],
}

pub struct RingRef<'a> {
    pub header: &'a RingHeader,
    pub slots: &'a [SlowSlot],
    pub payload: &'a [u8],
}

impl RingMut<'_> {
    pub fn init(&mut self) {
        *self.header = RingHeader { capacity: self.slots.len() as u32, _pad: 0, next_seq: 1 };
        self.slots.fill(SlowSlot::zeroed());
    }

    /// Store a packed slow query, overwriting the oldest slot.
    pub fn store(&mut self, packed: &Packed) {
        if self.slots.is_empty() {
            return;
        }
        let seq = self.header.next_seq.max(1);
        self.header.next_seq = seq + 1;
        let i = (seq % self.slots.len() as u64) as usize;
        self.payload[i * SLOT_BYTES..i * SLOT_BYTES + packed.payload.len()].copy_from_slice(&packed.payload);
        self.slots[i] = SlowSlot { seq, ..packed.slot };
    }

    pub fn clear(&mut self) {
        self.init();
    }
}

impl<'a> RingRef<'a> {
    /// Every stored slow query, newest first.
    pub fn newest_first(&self) -> Vec<SlowRecord<'a>> {
        let mut slots: Vec<(usize, SlowSlot)> =
            self.slots.iter().copied().enumerate().filter(|(_, s)| s.seq != 0).collect();
        slots.sort_unstable_by_key(|s| std::cmp::Reverse(s.1.seq));
        slots
            .into_iter()
            .map(|(i, slot)| {
                let buf = &self.payload[i * SLOT_BYTES..(i + 1) * SLOT_BYTES];
                let q = slot.query_len as usize;
                let t = if slot.plan_text_len == u32::MAX { 0 } else { slot.plan_text_len as usize };
                let j = if slot.plan_json_len == u32::MAX { 0 } else { slot.plan_json_len as usize };
                SlowRecord {
                    slot,
                    query: &buf[..q],
                    plan_text: (slot.plan_text_len != u32::MAX).then(|| &buf[q..q + t]),
                    plan_json: (slot.plan_json_len != u32::MAX).then(|| &buf[q + t..q + t + j]),
                }
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    struct OwnedRing {
        header: RingHeader,
        slots: Vec<SlowSlot>,
        payload: Vec<u8>,
    }

    impl OwnedRing {
        fn new(n: usize) -> Self {
            let mut r = Self {
                header: RingHeader::default(),
                slots: vec![SlowSlot::zeroed(); n],
                payload: vec![0; n * SLOT_BYTES],
            };
            r.view_mut().init();
            r
        }
        fn view_mut(&mut self) -> RingMut<'_> {
            RingMut { header: &mut self.header, slots: &mut self.slots, payload: &mut self.payload }
        }
        fn view(&self) -> RingRef<'_> {
            RingRef { header: &self.header, slots: &self.slots, payload: &self.payload }
        }
    }

    fn utf8_clip(b: &[u8], max: usize) -> usize {
        let mut n = max.min(b.len());
        while n > 0 && (b[n] & 0xC0) == 0x80 {
            n -= 1;
        }
        n
    }

    fn slow<'a>(id: u64, query: &'a [u8], text: Option<&'a [u8]>, json: Option<&'a [u8]>) -> SlowQuery<'a> {
        SlowQuery {
            finished_at: id as i64,
            pid: 1,
            userid: 10,
            dbid: 5,
            queryid: id,
            toplevel: true,
            duration_ms: 1200.0,
            rows: 1,
            encoding: 6,
            query,
            plan_text: text,
            plan_json: json,
        }
    }

    #[test]
    fn keeps_the_newest_and_lists_them_newest_first() {
        let mut r = OwnedRing::new(3);
        for id in 1..=5u64 {
            r.view_mut().store(&pack(&slow(id, b"select pg_sleep(1.2)", Some(b"Result"), Some(b"[]")), utf8_clip));
        }
        let got: Vec<u64> = r.view().newest_first().iter().map(|s| s.slot.queryid).collect();
        assert_eq!(got, vec![5, 4, 3]);
        let first = &r.view().newest_first()[0];
        assert_eq!(first.query, b"select pg_sleep(1.2)");
        assert_eq!(first.plan_text, Some(&b"Result"[..]));
        assert_eq!(first.plan_json, Some(&b"[]"[..]));
    }

    #[test]
    fn long_texts_are_clipped_on_character_boundaries_and_json_kept_only_whole() {
        let mut r = OwnedRing::new(2);
        let query = "é".repeat(SLOT_BYTES); // 2 bytes per character
        let plan = "x".repeat(SLOT_BYTES);
        let json = "{}".repeat(10);
        r.view_mut().store(&pack(&slow(1, query.as_bytes(), Some(plan.as_bytes()), Some(json.as_bytes())), utf8_clip));
        let rec = &r.view().newest_first()[0];
        assert!(std::str::from_utf8(rec.query).is_ok());
        assert!(rec.query.len() <= QUERY_SHARE);
        assert!(rec.slot.flags & FLAG_QUERY_TRUNCATED != 0);
        assert!(rec.slot.flags & FLAG_PLAN_TRUNCATED != 0);
        assert_eq!(rec.plan_json, None, "a clipped JSON plan is never stored");
        assert_eq!(rec.query.len() + rec.plan_text.unwrap().len(), SLOT_BYTES);
    }

    #[test]
    fn missing_plans_read_back_as_none() {
        let mut r = OwnedRing::new(1);
        r.view_mut().store(&pack(&slow(1, b"vacuum", None, None), utf8_clip));
        let rec = &r.view().newest_first()[0];
        assert_eq!((rec.plan_text, rec.plan_json), (None, None));
    }
}
