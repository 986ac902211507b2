//! One series in the head: closed XOR chunks, the chunk being appended to,
//! and out-of-order samples (inside the window) kept apart until read.

use std::collections::BTreeMap;
use std::sync::Mutex;

use bytes::Bytes;
use sluice_block::{Labels, SAMPLES_PER_CHUNK, XorEncoder, XorIterator};

/// A chunk of one series as the head hands it out: XOR data exactly as a
/// block stores it (sample count header included), decoded by the reader.
#[derive(Clone, Debug, PartialEq)]
pub struct HeadChunk {
    pub min_time: i64,
    pub max_time: i64,
    pub data: Bytes,
}

impl HeadChunk {
    fn from_encoder(encoder: &XorEncoder, min_time: i64, max_time: i64) -> HeadChunk {
        HeadChunk {
            min_time,
            max_time,
            data: Bytes::copy_from_slice(encoder.bytes()),
        }
    }

    /// The value bits stored at exactly `t`, if any.
    fn bits_at(&self, t: i64) -> Option<u64> {
        if t < self.min_time || t > self.max_time {
            return None;
        }
        let mut samples = XorIterator::new(self.data.clone()).ok()?;
        match samples.seek(t)? {
            Ok(sample) if sample.t == t => Some(sample.v.to_bits()),
            _ => None,
        }
    }
}

/// A series' samples.
pub(crate) struct SeriesData {
    closed: Vec<HeadChunk>,
    open: XorEncoder,
    open_min: i64,
    /// Newest in-order sample; `i64::MIN` while there is none.
    pub(crate) max_t: i64,
    pub(crate) last_bits: u64,
    /// Oldest sample, in order or not.
    pub(crate) min_t: i64,
    /// Out-of-order samples: timestamp to value bits.
    out_of_order: BTreeMap<i64, u64>,
}

impl SeriesData {
    fn new() -> SeriesData {
        SeriesData {
            closed: Vec::new(),
            open: XorEncoder::new(),
            open_min: i64::MAX,
            max_t: i64::MIN,
            last_bits: 0,
            min_t: i64::MAX,
            out_of_order: BTreeMap::new(),
        }
    }

    /// The value bits stored at `t` (a retry's duplicate check).
    pub(crate) fn bits_at(&self, t: i64) -> Option<u64> {
        if let Some(bits) = self.out_of_order.get(&t) {
            return Some(*bits);
        }
        if t > self.max_t || t < self.min_t {
            return None;
        }
        let index = self.closed.partition_point(|chunk| chunk.max_time < t);
        if let Some(bits) = self.closed.get(index).and_then(|chunk| chunk.bits_at(t)) {
            return Some(bits);
        }
        if self.open.num_samples() > 0 && t >= self.open_min {
            return HeadChunk::from_encoder(&self.open, self.open_min, self.max_t).bits_at(t);
        }
        None
    }

    /// Appends a sample newer than every in-order one. A chunk is closed at
    /// 120 samples, as Prometheus does, and at block boundaries, so that
    /// cutting a block never splits a chunk.
    pub(crate) fn push(&mut self, t: i64, bits: u64, block_range: i64) {
        let count = usize::from(self.open.num_samples());
        let crosses =
            count > 0 && t.div_euclid(block_range) != self.open_min.div_euclid(block_range);
        if count >= SAMPLES_PER_CHUNK || crosses {
            let full = std::mem::take(&mut self.open);
            self.closed
                .push(HeadChunk::from_encoder(&full, self.open_min, self.max_t));
        }
        if self.open.num_samples() == 0 {
            self.open_min = t;
        }
        // Fewer than 65535 samples: appending cannot fail.
        let _ = self.open.append(t, f64::from_bits(bits));
        self.max_t = t;
        self.last_bits = bits;
        self.min_t = self.min_t.min(t);
    }

    pub(crate) fn push_out_of_order(&mut self, t: i64, bits: u64) {
        self.out_of_order.insert(t, bits);
        self.min_t = self.min_t.min(t);
    }

    /// The chunks overlapping `[start, end]`, in time order except for one
    /// chunk of out-of-order samples, which may overlap the others.
    pub(crate) fn chunks(&self, start: i64, end: i64) -> Vec<HeadChunk> {
        let overlaps = |chunk: &HeadChunk| chunk.min_time <= end && chunk.max_time >= start;
        let mut chunks: Vec<HeadChunk> = self
            .closed
            .iter()
            .filter(|c| overlaps(c))
            .cloned()
            .collect();
        if self.open.num_samples() > 0 && self.open_min <= end && self.max_t >= start {
            chunks.push(HeadChunk::from_encoder(
                &self.open,
                self.open_min,
                self.max_t,
            ));
        }
        let mut encoder = XorEncoder::new();
        let mut range = (i64::MAX, i64::MIN);
        for (t, bits) in self.out_of_order.range(start..=end) {
            if usize::from(encoder.num_samples()) == SAMPLES_PER_CHUNK {
                chunks.push(HeadChunk::from_encoder(&encoder, range.0, range.1));
                encoder = XorEncoder::new();
                range = (i64::MAX, i64::MIN);
            }
            let _ = encoder.append(*t, f64::from_bits(*bits));
            range = (range.0.min(*t), range.1.max(*t));
        }
        if encoder.num_samples() > 0 {
            chunks.push(HeadChunk::from_encoder(&encoder, range.0, range.1));
        }
        chunks
    }
}

/// A series: its labels, its WAL reference and its samples.
pub struct MemSeries {
    pub labels: Labels,
    pub(crate) reference: u64,
    pub(crate) data: Mutex<SeriesData>,
}

impl MemSeries {
    pub(crate) fn new(labels: Labels, reference: u64) -> MemSeries {
        MemSeries {
            labels,
            reference,
            data: Mutex::new(SeriesData::new()),
        }
    }

    pub(crate) fn data(&self) -> std::sync::MutexGuard<'_, SeriesData> {
        self.data
            .lock()
            .unwrap_or_else(|poison| poison.into_inner())
    }
}

fn decode(chunk: &HeadChunk) -> impl Iterator<Item = (i64, u64)> {
    XorIterator::new(chunk.data.clone())
        .into_iter()
        .flatten()
        .map_while(Result::ok)
        .map(|sample| (sample.t, sample.v.to_bits()))
}

fn encode(samples: &[(i64, u64)]) -> Option<HeadChunk> {
    let mut encoder = XorEncoder::new();
    for (t, bits) in samples {
        let _ = encoder.append(*t, f64::from_bits(*bits));
    }
    let (first, last) = (samples.first()?.0, samples.last()?.0);
    Some(HeadChunk::from_encoder(&encoder, first, last))
}

impl SeriesData {
    /// Every sample before `end`, in time order (value bits).
    pub(crate) fn samples_before(&self, end: i64) -> Vec<(i64, u64)> {
        let mut samples: Vec<(i64, u64)> = self
            .chunks(i64::MIN, end - 1)
            .iter()
            .flat_map(decode)
            .filter(|(t, _)| *t < end)
            .collect();
        samples.sort_by_key(|(t, _)| *t);
        samples.dedup_by_key(|(t, _)| *t);
        samples
    }

    /// Forgets every sample before `end` (now in a block). The newest
    /// sample's time and value stay: order is still checked against them.
    pub(crate) fn drop_before(&mut self, end: i64) {
        let mut kept = Vec::with_capacity(self.closed.len());
        for chunk in self.closed.drain(..) {
            if chunk.min_time >= end {
                kept.push(chunk);
            } else if chunk.max_time >= end {
                let later: Vec<(i64, u64)> = decode(&chunk).filter(|(t, _)| *t >= end).collect();
                kept.extend(encode(&later));
            }
        }
        self.closed = kept;
        if self.open.num_samples() > 0 && self.open_min < end {
            let open = HeadChunk::from_encoder(&self.open, self.open_min, self.max_t);
            self.open = XorEncoder::new();
            self.open_min = i64::MAX;
            for (t, bits) in decode(&open).filter(|(t, _)| *t >= end) {
                if self.open.num_samples() == 0 {
                    self.open_min = t;
                }
                let _ = self.open.append(t, f64::from_bits(bits));
            }
        }
        self.out_of_order = self.out_of_order.split_off(&end);
        let oldest_closed = self.closed.first().map_or(i64::MAX, |chunk| chunk.min_time);
        let oldest_late = self.out_of_order.keys().next().copied().unwrap_or(i64::MAX);
        let oldest_open = match self.open.num_samples() {
            0 => i64::MAX,
            _ => self.open_min,
        };
        self.min_t = oldest_closed.min(oldest_late).min(oldest_open);
    }
}
