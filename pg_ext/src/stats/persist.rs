//! The on-disk format of saved statistics (`pg_stat/voxperf.stat` in the data directory).
//!
//! Layout: a fixed header (magic, format version, PostgreSQL major version, the size of
//! [`Counters`] as a layout check, entry count, global counters), then each entry (key,
//! encoding, counters, text length, text), then (since version 3) the index advisor's example
//! executions, then a CRC-32 of everything before it. Version 2 files (no examples) still
//! load. A file whose
//! checksum, version or layout does not match is rejected as a whole, so a torn or corrupt file
//! can never load wrong numbers: the caller starts empty and logs why.
//!
//! The file is written to a temporary name, synced and renamed into place by the caller, so a
//! crash during a save leaves the previous file intact.

use super::counters::Counters;
use super::examples::{Constancy, Example, ExampleParam, TRACKED_LITERALS};
use super::table::EntryKey;

pub const MAGIC: [u8; 8] = *b"VOXPERF\0";
/// Bump when the meaning or layout of anything in the file changes.
pub const FORMAT_VERSION: u32 = 3;
/// The oldest version this code still reads.
const OLDEST_VERSION: u32 = 2;

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SavedGlobals {
    pub dealloc: u64,
    pub evicted_entries: u64,
    pub stats_reset: i64,
}

#[derive(Clone, Debug)]
pub struct SavedEntry {
    pub key: EntryKey,
    pub encoding: i32,
    pub counters: Counters,
    pub text: Vec<u8>,
}

#[derive(Debug, PartialEq, Eq)]
pub enum LoadError {
    TooShort,
    BadMagic,
    Version { found: u32 },
    PgMajor { found: u32, expected: u32 },
    Layout { found: u32, expected: u32 },
    Checksum,
    Truncated,
}

impl std::fmt::Display for LoadError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::TooShort => write!(f, "file is too short to hold a header"),
            Self::BadMagic => write!(f, "not a voxperf statistics file"),
            Self::Version { found } => write!(f, "format version {found}, expected {FORMAT_VERSION}"),
            Self::PgMajor { found, expected } => write!(f, "written by PostgreSQL {found}, this is {expected}"),
            Self::Layout { found, expected } => write!(f, "entry layout of {found} bytes, expected {expected}"),
            Self::Checksum => write!(f, "checksum mismatch (torn or corrupt file)"),
            Self::Truncated => write!(f, "entries end before the declared count"),
        }
    }
}

const HEADER_LEN: usize = 8 + 4 + 4 + 4 + 4 + 8 + 8 + 8;

fn put_bytes(out: &mut Vec<u8>, b: &[u8]) {
    out.extend_from_slice(&(b.len() as u32).to_le_bytes());
    out.extend_from_slice(b);
}

pub fn encode(pg_major: u32, globals: SavedGlobals, entries: &[SavedEntry], examples: &[Example]) -> Vec<u8> {
    let counters_len = std::mem::size_of::<Counters>();
    let mut out = Vec::with_capacity(HEADER_LEN + entries.len() * (counters_len + 64) + 4);
    out.extend_from_slice(&MAGIC);
    out.extend_from_slice(&FORMAT_VERSION.to_le_bytes());
    out.extend_from_slice(&pg_major.to_le_bytes());
    out.extend_from_slice(&(counters_len as u32).to_le_bytes());
    out.extend_from_slice(&(entries.len() as u32).to_le_bytes());
    out.extend_from_slice(&globals.dealloc.to_le_bytes());
    out.extend_from_slice(&globals.evicted_entries.to_le_bytes());
    out.extend_from_slice(&globals.stats_reset.to_le_bytes());
    for e in entries {
        out.extend_from_slice(bytemuck::bytes_of(&e.key));
        out.extend_from_slice(&e.encoding.to_le_bytes());
        out.extend_from_slice(bytemuck::bytes_of(&e.counters));
        out.extend_from_slice(&(e.text.len() as u32).to_le_bytes());
        out.extend_from_slice(&e.text);
    }
    out.extend_from_slice(&(examples.len() as u32).to_le_bytes());
    for x in examples {
        out.extend_from_slice(&x.dbid.to_le_bytes());
        out.extend_from_slice(&x.queryid.to_le_bytes());
        out.extend_from_slice(&x.userid.to_le_bytes());
        out.extend_from_slice(&u32::from(x.variant).to_le_bytes());
        out.extend_from_slice(&(x.constancy.fingerprints.len() as u32).to_le_bytes());
        for f in &x.constancy.fingerprints {
            out.extend_from_slice(&f.to_le_bytes());
        }
        out.extend_from_slice(&x.constancy.changed.to_le_bytes());
        out.extend_from_slice(&u32::from(x.constancy.captures).to_le_bytes());
        put_bytes(&mut out, x.text.as_bytes());
        out.extend_from_slice(&(x.params.len() as u32).to_le_bytes());
        for p in &x.params {
            out.extend_from_slice(&p.type_oid.to_le_bytes());
            match &p.value {
                None => out.extend_from_slice(&u32::MAX.to_le_bytes()),
                Some(v) => put_bytes(&mut out, v.as_bytes()),
            }
        }
    }
    let crc = crc32fast::hash(&out);
    out.extend_from_slice(&crc.to_le_bytes());
    out
}

struct Reader<'a> {
    buf: &'a [u8],
    at: usize,
}

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8], LoadError> {
        let end = self.at.checked_add(n).ok_or(LoadError::Truncated)?;
        let s = self.buf.get(self.at..end).ok_or(LoadError::Truncated)?;
        self.at = end;
        Ok(s)
    }
    fn u32(&mut self) -> Result<u32, LoadError> {
        Ok(u32::from_le_bytes(self.take(4)?.try_into().unwrap()))
    }
    fn u64(&mut self) -> Result<u64, LoadError> {
        Ok(u64::from_le_bytes(self.take(8)?.try_into().unwrap()))
    }
    fn string(&mut self, len: usize) -> Result<String, LoadError> {
        String::from_utf8(self.take(len)?.to_vec()).map_err(|_| LoadError::Truncated)
    }
}

/// What a statistics file holds.
#[derive(Debug)]
pub struct Saved {
    pub globals: SavedGlobals,
    pub entries: Vec<SavedEntry>,
    pub examples: Vec<Example>,
}

pub fn decode(bytes: &[u8], pg_major: u32) -> Result<Saved, LoadError> {
    if bytes.len() < HEADER_LEN + 4 {
        return Err(LoadError::TooShort);
    }
    let (body, crc) = bytes.split_at(bytes.len() - 4);
    if bytes[..8] != MAGIC {
        return Err(LoadError::BadMagic);
    }
    if crc32fast::hash(body) != u32::from_le_bytes(crc.try_into().unwrap()) {
        return Err(LoadError::Checksum);
    }
    let mut r = Reader { buf: body, at: 8 };
    let version = r.u32()?;
    if !(OLDEST_VERSION..=FORMAT_VERSION).contains(&version) {
        return Err(LoadError::Version { found: version });
    }
    let found_major = r.u32()?;
    if found_major != pg_major {
        return Err(LoadError::PgMajor { found: found_major, expected: pg_major });
    }
    let counters_len = std::mem::size_of::<Counters>();
    let layout = r.u32()?;
    if layout as usize != counters_len {
        return Err(LoadError::Layout { found: layout, expected: counters_len as u32 });
    }
    let count = r.u32()? as usize;
    let globals = SavedGlobals { dealloc: r.u64()?, evicted_entries: r.u64()?, stats_reset: r.u64()? as i64 };
    let mut entries = Vec::with_capacity(count.min(1 << 20));
    for _ in 0..count {
        let key: EntryKey = bytemuck::pod_read_unaligned(r.take(std::mem::size_of::<EntryKey>())?);
        let encoding = r.u32()? as i32;
        let counters: Counters = bytemuck::pod_read_unaligned(r.take(counters_len)?);
        let len = r.u32()? as usize;
        let text = r.take(len)?.to_vec();
        entries.push(SavedEntry { key, encoding, counters, text });
    }
    let mut examples = Vec::new();
    if version >= 3 {
        let count = r.u32()? as usize;
        for _ in 0..count {
            let (dbid, queryid, userid, variant) = (r.u32()?, r.u64()?, r.u32()?, r.u32()? as u8);
            let nprints = r.u32()? as usize;
            let mut fingerprints = Vec::with_capacity(nprints.min(TRACKED_LITERALS));
            for _ in 0..nprints {
                fingerprints.push(r.u32()?);
            }
            fingerprints.truncate(TRACKED_LITERALS);
            let constancy =
                Constancy { fingerprints, changed: r.u32()?, captures: r.u32()?.min(u32::from(u16::MAX)) as u16 };
            let len = r.u32()? as usize;
            let text = r.string(len)?;
            let nparams = r.u32()? as usize;
            let mut params = Vec::with_capacity(nparams.min(1 << 16));
            for _ in 0..nparams {
                let type_oid = r.u32()?;
                let value = match r.u32()? {
                    u32::MAX => None,
                    len => Some(r.string(len as usize)?),
                };
                params.push(ExampleParam { type_oid, value });
            }
            examples.push(Example { dbid, queryid, variant, constancy, userid, text, params });
        }
    }
    if r.at != body.len() {
        return Err(LoadError::Truncated);
    }
    Ok(Saved { globals, entries, examples })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::stats::counters::{BufferCounters, Phase, Sample, WalCounters};

    fn entries() -> Vec<SavedEntry> {
        (0..50u64)
            .map(|q| {
                let mut counters = Counters::default();
                counters.accumulate(
                    &Sample {
                        phase: Phase::Exec,
                        duration_ms: q as f64,
                        duration_ns: q * 1_000_000,
                        rows: q,
                        buffers: BufferCounters::default(),
                        wal: WalCounters::default(),
                        jit: None,
                    },
                    q as i64,
                );
                SavedEntry {
                    key: EntryKey::new(10, 5, q, q % 2 == 0),
                    encoding: 6,
                    counters,
                    text: format!("select {q}").into_bytes(),
                }
            })
            .collect()
    }

    #[test]
    fn round_trip_preserves_everything() {
        let globals = SavedGlobals { dealloc: 3, evicted_entries: 70, stats_reset: 12345 };
        let examples = vec![Example {
            dbid: 5,
            queryid: 7,
            variant: 3,
            constancy: Constancy { fingerprints: vec![1, 2, 3], changed: 0b10, captures: 17 },
            userid: 10,
            text: "select $1, 'é'".into(),
            params: vec![
                ExampleParam { type_oid: 23, value: Some("42".into()) },
                ExampleParam { type_oid: 25, value: None },
            ],
        }];
        let bytes = encode(15, globals, &entries(), &examples);
        let saved = decode(&bytes, 15).unwrap();
        assert_eq!(saved.globals, globals);
        assert_eq!(saved.examples, examples);
        let back = saved.entries;
        assert_eq!(back.len(), 50);
        for (a, b) in entries().iter().zip(&back) {
            assert_eq!(a.key, b.key);
            assert_eq!(a.text, b.text);
            assert_eq!(bytemuck::bytes_of(&a.counters), bytemuck::bytes_of(&b.counters));
        }
    }

    #[test]
    fn a_version_2_file_without_examples_still_loads() {
        let v3 = encode(15, SavedGlobals::default(), &entries(), &[]);
        // Version 2: the same without the examples section (a zero count before the CRC).
        let mut v2 = v3[..v3.len() - 8].to_vec();
        v2[8..12].copy_from_slice(&2u32.to_le_bytes());
        let crc = crc32fast::hash(&v2);
        v2.extend_from_slice(&crc.to_le_bytes());
        let saved = decode(&v2, 15).unwrap();
        assert_eq!(saved.entries.len(), 50);
        assert!(saved.examples.is_empty());
    }

    #[test]
    fn any_corruption_or_truncation_is_rejected() {
        let bytes = encode(15, SavedGlobals::default(), &entries(), &[]);
        for cut in [0, 10, HEADER_LEN, bytes.len() / 2, bytes.len() - 1] {
            assert!(decode(&bytes[..cut], 15).is_err(), "truncated at {cut}");
        }
        for flip in [9, HEADER_LEN + 3, bytes.len() / 2, bytes.len() - 5] {
            let mut bad = bytes.clone();
            bad[flip] ^= 0x40;
            assert!(decode(&bad, 15).is_err(), "bit flipped at {flip}");
        }
        assert_eq!(decode(&bytes, 16).unwrap_err(), LoadError::PgMajor { found: 15, expected: 16 });
        assert_eq!(decode(&[b'g'; 200], 15).unwrap_err(), LoadError::BadMagic);
    }
}
