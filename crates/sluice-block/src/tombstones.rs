//! The `tombstones` file: deleted time ranges per series, `magic 0x0130BA30
//! <4b> | version 1 <1b> | (series ref <uvarint64> | mint <varint64> | maxt
//! <varint64>)* | CRC32C <4b>`, the CRC covering the entries only. Intervals
//! are inclusive at both ends.

use std::collections::BTreeMap;

use crate::encoding::{Decoder, check_crc, crc32c, put_be32, put_uvarint, put_varint};
use crate::error::{Error, Result};
use crate::read::RangeRead;

pub const TOMBSTONES_FILE: &str = "tombstones";
pub const MAGIC_TOMBSTONES: u32 = 0x0130_BA30;
const FORMAT_V1: u8 = 1;

/// A deleted time range, both ends inclusive (ms).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct Interval {
    pub min_time: i64,
    pub max_time: i64,
}

impl Interval {
    pub fn contains(&self, t: i64) -> bool {
        self.min_time <= t && t <= self.max_time
    }
}

/// Deleted intervals by series reference, each list sorted and merged.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Tombstones {
    by_series: BTreeMap<u64, Vec<Interval>>,
}

impl Tombstones {
    /// Adds an interval, merging it with those it overlaps or touches.
    pub fn add(&mut self, series: u64, interval: Interval) {
        let intervals = self.by_series.entry(series).or_default();
        intervals.push(interval);
        intervals.sort();
        let mut merged: Vec<Interval> = Vec::with_capacity(intervals.len());
        for next in intervals.drain(..) {
            match merged.last_mut() {
                Some(last) if next.min_time <= last.max_time.saturating_add(1) => {
                    last.max_time = last.max_time.max(next.max_time);
                }
                _ => merged.push(next),
            }
        }
        *intervals = merged;
    }

    pub fn intervals(&self, series: u64) -> &[Interval] {
        self.by_series
            .get(&series)
            .map(Vec::as_slice)
            .unwrap_or_default()
    }

    /// The number of intervals (`numTombstones` in meta.json).
    pub fn len(&self) -> usize {
        self.by_series.values().map(Vec::len).sum()
    }

    pub fn is_empty(&self) -> bool {
        self.by_series.is_empty()
    }

    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::new();
        put_be32(&mut out, MAGIC_TOMBSTONES);
        out.push(FORMAT_V1);
        let entries_start = out.len();
        for (series, intervals) in &self.by_series {
            for interval in intervals {
                put_uvarint(&mut out, *series);
                put_varint(&mut out, interval.min_time);
                put_varint(&mut out, interval.max_time);
            }
        }
        let crc = crc32c(&out[entries_start..]);
        put_be32(&mut out, crc);
        out
    }

    pub fn decode(bytes: &[u8]) -> Result<Tombstones> {
        if bytes.len() < 9 {
            return Err(Error::corrupt(
                TOMBSTONES_FILE,
                0,
                format_args!("{} bytes is too short", bytes.len()),
            ));
        }
        let (body, stored) = bytes.split_at(bytes.len() - 4);
        let mut decoder = Decoder::new(TOMBSTONES_FILE, body, 0);
        let magic = decoder.be32()?;
        if magic != MAGIC_TOMBSTONES {
            return Err(decoder_error(
                0,
                format_args!("magic {magic:#010x}, want {MAGIC_TOMBSTONES:#010x}"),
            ));
        }
        let version = decoder.byte()?;
        if version != FORMAT_V1 {
            return Err(decoder_error(
                4,
                format_args!("unknown tombstones version {version}"),
            ));
        }
        check_crc(TOMBSTONES_FILE, 5, &body[5..], stored)?;
        let mut tombstones = Tombstones::default();
        while decoder.remaining() > 0 {
            let series = decoder.uvarint()?;
            let min_time = decoder.varint()?;
            let max_time = decoder.varint()?;
            tombstones.add(series, Interval { min_time, max_time });
        }
        Ok(tombstones)
    }

    /// Reads `tombstones`; a block without the file has none.
    pub fn read(dir: &dyn RangeRead) -> Result<Tombstones> {
        if !dir.exists(TOMBSTONES_FILE)? {
            return Ok(Tombstones::default());
        }
        Tombstones::decode(&dir.read_all(TOMBSTONES_FILE)?)
    }
}

fn decoder_error(offset: u64, reason: impl std::fmt::Display) -> Error {
    Error::corrupt(TOMBSTONES_FILE, offset, reason)
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    #[test]
    fn round_trips_and_merges() {
        let mut tombstones = Tombstones::default();
        tombstones.add(
            7,
            Interval {
                min_time: 10,
                max_time: 20,
            },
        );
        tombstones.add(
            7,
            Interval {
                min_time: 21,
                max_time: 30,
            },
        );
        tombstones.add(
            7,
            Interval {
                min_time: -5,
                max_time: 0,
            },
        );
        tombstones.add(
            2,
            Interval {
                min_time: 1,
                max_time: 1,
            },
        );
        assert_eq!(
            tombstones.intervals(7),
            [
                Interval {
                    min_time: -5,
                    max_time: 0
                },
                Interval {
                    min_time: 10,
                    max_time: 30
                }
            ]
        );
        assert_eq!(
            Tombstones::decode(&tombstones.encode()).unwrap(),
            tombstones
        );
    }

    #[test]
    fn reads_the_empty_file_prometheus_writes() {
        let prometheus = [0x01, 0x30, 0xba, 0x30, 0x01, 0, 0, 0, 0];
        assert!(Tombstones::decode(&prometheus).unwrap().is_empty());
        assert_eq!(Tombstones::default().encode(), prometheus);
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(sluice_testkit::fuzz_cases(256)))]

        #[test]
        fn mutated_tombstones_never_panic(bytes in prop::collection::vec(any::<u8>(), 0..64), crc_ok in any::<bool>()) {
            let mut bytes = bytes;
            if crc_ok && bytes.len() >= 9 {
                // Give the random entries a valid header and CRC so decoding runs.
                bytes[..5].copy_from_slice(&[0x01, 0x30, 0xba, 0x30, 0x01]);
                let end = bytes.len() - 4;
                let crc = crc32c(&bytes[5..end]);
                bytes[end..].copy_from_slice(&crc.to_be_bytes());
            }
            let _ = Tombstones::decode(&bytes);
        }
    }
}
