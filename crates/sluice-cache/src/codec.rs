//! The value envelope: optional compression plus an integrity header, so a
//! truncated, corrupted, foreign or misfiled value is a miss, not garbage.
//!
//! Layout (little endian), 17 bytes then the payload:
//!
//! | bytes | field |
//! |---|---|
//! | 0..3 | magic `SLC` |
//! | 3 | version (1) |
//! | 4 | compression (0 none, 1 lz4 block with its size prepended) |
//! | 5..9 | payload length (u32) |
//! | 9..17 | xxh3-64 of bytes 0..9 and the payload, seeded with the xxh3-64 of the key |
//!
//! Seeding the checksum with the key means a value stored under another key
//! (a hashed-key collision in memcached, a bug) fails the check as well.

use std::collections::HashMap;
use std::time::Duration;

use xxhash_rust::xxh3::{Xxh3, xxh3_64};

use crate::metrics::{CacheMetrics, Handles};
use crate::{BoxFuture, Cache};

const MAGIC: &[u8; 3] = b"SLC";
const VERSION: u8 = 1;
pub(crate) const HEADER_LEN: usize = 17;
const COMPRESSION_NONE: u8 = 0;
const COMPRESSION_LZ4: u8 = 1;
/// A decompressed size beyond this is treated as corruption rather than
/// allocated: no value sluice writes comes anywhere near it.
const MAX_DECOMPRESSED: usize = 1 << 30;

/// How values are compressed before they reach the backend. Every value
/// records its own compression, so values written with any setting decode
/// under any other: the setting can change across restarts and rollouts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Compression {
    #[default]
    None,
    /// LZ4 block compression (pure Rust, `lz4_flex`); a value that does not
    /// shrink is stored uncompressed.
    Lz4,
}

/// Wraps `value` (stored under `key`) in the envelope, compressing it if
/// asked and worthwhile. `None` if the value is too large to describe (over
/// 4 GiB).
pub fn encode_value(key: &str, value: &[u8], compression: Compression) -> Option<Vec<u8>> {
    let compressed;
    let (kind, payload) = match compression {
        Compression::None => (COMPRESSION_NONE, value),
        Compression::Lz4 => {
            compressed = lz4_flex::block::compress_prepend_size(value);
            if compressed.len() < value.len() {
                (COMPRESSION_LZ4, compressed.as_slice())
            } else {
                (COMPRESSION_NONE, value)
            }
        }
    };
    let len = u32::try_from(payload.len()).ok()?;
    let mut out = Vec::with_capacity(HEADER_LEN + payload.len());
    out.extend_from_slice(MAGIC);
    out.push(VERSION);
    out.push(kind);
    out.extend_from_slice(&len.to_le_bytes());
    let checksum = checksum(key, &out, payload);
    out.extend_from_slice(&checksum.to_le_bytes());
    out.extend_from_slice(payload);
    Some(out)
}

/// The value inside an envelope written by [`encode_value`] for `key`, or
/// `None` if `stored` is not exactly such an envelope.
pub fn decode_value(key: &str, stored: &[u8]) -> Option<Vec<u8>> {
    if stored.len() < HEADER_LEN || &stored[0..3] != MAGIC || stored[3] != VERSION {
        return None;
    }
    let kind = stored[4];
    let len = u32::from_le_bytes(stored[5..9].try_into().ok()?) as usize;
    let expected = u64::from_le_bytes(stored[9..17].try_into().ok()?);
    let payload = &stored[HEADER_LEN..];
    if payload.len() != len || checksum(key, &stored[0..9], payload) != expected {
        return None;
    }
    match kind {
        COMPRESSION_NONE => Some(payload.to_vec()),
        COMPRESSION_LZ4 => {
            let size = u32::from_le_bytes(payload.get(0..4)?.try_into().ok()?) as usize;
            if size > MAX_DECOMPRESSED {
                return None;
            }
            lz4_flex::block::decompress_size_prepended(payload).ok()
        }
        _ => None,
    }
}

fn checksum(key: &str, header: &[u8], payload: &[u8]) -> u64 {
    let mut hasher = Xxh3::with_seed(xxh3_64(key.as_bytes()));
    hasher.update(header);
    hasher.update(payload);
    hasher.digest()
}

/// A [`Cache`] layer that envelopes values on the way in and checks them on
/// the way out (see [`encode_value`]), and counts requests, hits and misses.
/// Values in the inner cache that fail the check are misses.
#[derive(Debug)]
pub struct EncodedCache<C> {
    inner: C,
    compression: Compression,
    metrics: Handles,
}

impl<C: Cache> EncodedCache<C> {
    /// `backend` is the label value for the inner cache's kind
    /// (`inprocess`, `memcached`).
    pub fn new(
        inner: C,
        compression: Compression,
        metrics: &CacheMetrics,
        cache_name: &str,
        backend: &str,
    ) -> EncodedCache<C> {
        EncodedCache {
            inner,
            compression,
            metrics: metrics.handles(cache_name, backend),
        }
    }

    pub fn inner(&self) -> &C {
        &self.inner
    }
}

impl<C: Cache> Cache for EncodedCache<C> {
    fn get_many<'a>(&'a self, keys: &'a [String]) -> BoxFuture<'a, HashMap<String, Vec<u8>>> {
        Box::pin(async move {
            self.metrics.get_requests.inc();
            let stored = self.inner.get_many(keys).await;
            let mut found = HashMap::with_capacity(stored.len());
            for (key, bytes) in stored {
                match decode_value(&key, &bytes) {
                    Some(value) => {
                        found.insert(key, value);
                    }
                    None => {
                        tracing::debug!(
                            key,
                            len = bytes.len(),
                            "cache value failed its integrity check; treated as a miss"
                        );
                        self.metrics.error("decode");
                    }
                }
            }
            self.metrics.hits.inc_by(found.len() as u64);
            let asked = keys.iter().collect::<std::collections::HashSet<_>>().len();
            self.metrics
                .misses
                .inc_by(asked.saturating_sub(found.len()) as u64);
            found
        })
    }

    fn set_many(&self, entries: Vec<(String, Vec<u8>)>, ttl: Duration) -> BoxFuture<'_, ()> {
        Box::pin(async move {
            self.metrics.set_requests.inc();
            let encoded = entries
                .into_iter()
                .filter_map(|(key, value)| {
                    let stored = encode_value(&key, &value, self.compression);
                    if stored.is_none() {
                        self.metrics.skipped("too_large", 1);
                    }
                    Some((key, stored?))
                })
                .collect();
            self.inner.set_many(encoded, ttl).await;
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_with_every_compression() {
        let compressible = b"abcabcabcabc".repeat(1000);
        let random: Vec<u8> = (0..5000u32)
            .map(|i| (i.wrapping_mul(2654435761) >> 13) as u8)
            .collect();
        for value in [Vec::new(), b"x".to_vec(), compressible.clone(), random] {
            for compression in [Compression::None, Compression::Lz4] {
                let stored = encode_value("k", &value, compression).unwrap();
                assert_eq!(
                    decode_value("k", &stored).as_deref(),
                    Some(value.as_slice())
                );
            }
        }
        let lz4 = encode_value("k", &compressible, Compression::Lz4).unwrap();
        assert!(lz4.len() < compressible.len() / 4, "lz4 compresses");
        assert_eq!(lz4[4], COMPRESSION_LZ4);
    }

    #[test]
    fn rejects_anything_but_an_intact_envelope_for_the_same_key() {
        let stored = encode_value("key", b"hello world", Compression::None).unwrap();
        assert_eq!(decode_value("other", &stored), None, "other key");
        for cut in 0..stored.len() {
            assert_eq!(
                decode_value("key", &stored[..cut]),
                None,
                "truncated at {cut}"
            );
        }
        for i in 0..stored.len() {
            let mut flipped = stored.clone();
            flipped[i] ^= 0x40;
            assert_eq!(decode_value("key", &flipped), None, "byte {i} flipped");
        }
        let mut longer = stored.clone();
        longer.push(0);
        assert_eq!(decode_value("key", &longer), None);
        assert_eq!(decode_value("key", b"hello world"), None, "raw bytes");
        assert_eq!(decode_value("key", b""), None);
    }
}
