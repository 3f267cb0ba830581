//! A cached entry and its byte format in Redis.
//!
//! Layout (big-endian): magic `b'V'`, format version, **format marker** (0 = payload stored as
//! is, 1 = payload zstd-compressed), created and expiry times (Unix ms), the generation vector
//! (epoch, then each tag with its generation), then the payload to the end. The header is never
//! compressed, so a reader can validate an entry before paying for decompression. Invariant: a
//! value read back is byte-for-byte the value stored, whichever marker was chosen.

use bytes::{Buf, BufMut, Bytes};

use super::generations::GenerationVector;

const MAGIC: u8 = b'V';
const VERSION: u8 = 1;
const FORMAT_RAW: u8 = 0;
const FORMAT_ZSTD: u8 = 1;
/// zstd's default level: about 300 MB/s to compress on one core with a useful ratio on JSON; the
/// cache compresses on every miss, so higher levels would cost more than they save.
const ZSTD_LEVEL: i32 = 3;
/// Fixed bytes before the tags: magic, version, marker, created, expires, epoch, tag count.
const HEADER_LEN: usize = 3 + 8 + 8 + 8 + 2;
/// Bookkeeping charged to every L1 entry on top of its bytes (map node, `Arc`, timestamps), so
/// that millions of tiny entries cannot exceed the byte budget by their overhead alone.
const L1_OVERHEAD_BYTES: usize = 96;

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum DecodeError {
    #[error("not a voxperf cache entry")]
    NotAnEntry,
    #[error("entry format version {0} is not supported")]
    Version(u8),
    #[error("unknown payload format marker {0}")]
    Marker(u8),
    #[error("entry truncated")]
    Truncated,
    #[error("payload does not decompress: {0}")]
    Decompress(String),
}

/// One cached value with what is needed to judge it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    /// When the loader's result was stored (Unix ms): the age clients see.
    pub created_ms: u64,
    /// When it stops being served (Unix ms).
    pub expires_ms: u64,
    /// Tag generations read before the loader ran.
    pub vector: GenerationVector,
    pub value: Bytes,
}

impl Entry {
    pub fn is_expired(&self, now_ms: u64) -> bool {
        now_ms >= self.expires_ms
    }

    pub fn remaining_ms(&self, now_ms: u64) -> u64 {
        self.expires_ms.saturating_sub(now_ms)
    }

    /// What the entry costs in L1, in bytes.
    pub fn l1_weight(&self, key: &str) -> u32 {
        let tags: usize = self.vector.tags.iter().map(|(t, _)| t.len() + 8).sum();
        let total = key.len() + self.value.len() + tags + L1_OVERHEAD_BYTES;
        u32::try_from(total).unwrap_or(u32::MAX)
    }

    /// Serialises for Redis, compressing the payload when it is larger than `threshold` bytes and
    /// compression actually makes it smaller.
    pub fn encode(&self, threshold: usize) -> Vec<u8> {
        let compressed = (self.value.len() > threshold)
            .then(|| zstd::bulk::compress(&self.value, ZSTD_LEVEL).ok())
            .flatten()
            .filter(|c| c.len() < self.value.len());
        let (marker, payload): (u8, &[u8]) = match &compressed {
            Some(c) => (FORMAT_ZSTD, c),
            None => (FORMAT_RAW, &self.value),
        };
        let tags_len: usize = self.vector.tags.iter().map(|(t, _)| 2 + t.len() + 8).sum();
        let mut out = Vec::with_capacity(HEADER_LEN + tags_len + payload.len());
        out.put_u8(MAGIC);
        out.put_u8(VERSION);
        out.put_u8(marker);
        out.put_u64(self.created_ms);
        out.put_u64(self.expires_ms);
        out.put_u64(self.vector.epoch);
        out.put_u16(u16::try_from(self.vector.tags.len()).unwrap_or(u16::MAX));
        for (tag, generation) in self.vector.tags.iter().take(usize::from(u16::MAX)) {
            let tag = &tag.as_bytes()[..tag.len().min(usize::from(u16::MAX))];
            out.put_u16(tag.len() as u16);
            out.put_slice(tag);
            out.put_u64(*generation);
        }
        out.put_slice(payload);
        out
    }

    pub fn decode(bytes: &[u8]) -> Result<Entry, DecodeError> {
        let mut buf = bytes;
        if buf.len() < HEADER_LEN {
            return Err(DecodeError::Truncated);
        }
        if buf.get_u8() != MAGIC {
            return Err(DecodeError::NotAnEntry);
        }
        let version = buf.get_u8();
        if version != VERSION {
            return Err(DecodeError::Version(version));
        }
        let marker = buf.get_u8();
        let created_ms = buf.get_u64();
        let expires_ms = buf.get_u64();
        let epoch = buf.get_u64();
        let count = buf.get_u16();
        let mut tags = Vec::with_capacity(usize::from(count));
        for _ in 0..count {
            if buf.remaining() < 2 {
                return Err(DecodeError::Truncated);
            }
            let len = usize::from(buf.get_u16());
            if buf.remaining() < len + 8 {
                return Err(DecodeError::Truncated);
            }
            let tag = String::from_utf8_lossy(&buf[..len]).into_owned();
            buf.advance(len);
            tags.push((tag, buf.get_u64()));
        }
        let value = match marker {
            FORMAT_RAW => Bytes::copy_from_slice(buf),
            FORMAT_ZSTD => {
                zstd::stream::decode_all(buf).map(Bytes::from).map_err(|e| DecodeError::Decompress(e.to_string()))?
            }
            other => return Err(DecodeError::Marker(other)),
        };
        // `applied` is local to the process that took the vector: unknown here.
        Ok(Entry { created_ms, expires_ms, vector: GenerationVector { epoch, tags, applied: 0 }, value })
    }

    /// The format marker of an encoded entry (for tests and diagnostics).
    pub fn marker_of(encoded: &[u8]) -> Option<u8> {
        encoded.get(2).copied()
    }
}

/// Marker value meaning "zstd-compressed payload".
pub const MARKER_ZSTD: u8 = FORMAT_ZSTD;
/// Marker value meaning "payload stored as is".
pub const MARKER_RAW: u8 = FORMAT_RAW;

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(value: impl Into<Bytes>) -> Entry {
        Entry {
            created_ms: 1_700_000_000_000,
            expires_ms: 1_700_000_060_000,
            vector: GenerationVector {
                epoch: 7,
                tags: vec![("table:public.\"VirtualNumber\"".into(), 42), ("user".into(), 1)],
                applied: 0,
            },
            value: value.into(),
        }
    }

    #[test]
    fn small_values_round_trip_uncompressed() {
        let e = entry(&b"{\"a\":1}"[..]);
        let bytes = e.encode(1024);
        assert_eq!(Entry::marker_of(&bytes), Some(MARKER_RAW));
        assert_eq!(Entry::decode(&bytes).unwrap(), e);
    }

    #[test]
    fn large_values_round_trip_compressed() {
        let json = serde_json::to_vec(&vec![serde_json::json!({"number": "+15551234567", "status": "AVAILABLE"}); 200])
            .unwrap();
        let e = entry(json.clone());
        let bytes = e.encode(1024);
        assert_eq!(Entry::marker_of(&bytes), Some(MARKER_ZSTD));
        assert!(bytes.len() < json.len() / 4, "{} vs {}", bytes.len(), json.len());
        assert_eq!(Entry::decode(&bytes).unwrap(), e);
    }

    #[test]
    fn incompressible_values_are_stored_raw_even_above_the_threshold() {
        let mut x: u64 = 0x9E37_79B9_7F4A_7C15;
        let noise: Vec<u8> = (0..4096)
            .map(|_| {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                (x >> 56) as u8
            })
            .collect();
        let bytes = entry(noise).encode(16);
        assert_eq!(Entry::marker_of(&bytes), Some(MARKER_RAW));
    }

    #[test]
    fn foreign_or_damaged_bytes_are_rejected() {
        assert_eq!(Entry::decode(b"hello world, this is not ours!"), Err(DecodeError::NotAnEntry));
        let mut bytes = entry(&b"x"[..]).encode(1024);
        bytes.truncate(HEADER_LEN + 3);
        assert_eq!(Entry::decode(&bytes), Err(DecodeError::Truncated));
        let mut bytes = entry(&b"x"[..]).encode(1024);
        bytes[2] = 9;
        assert_eq!(Entry::decode(&bytes), Err(DecodeError::Marker(9)));
    }
}
