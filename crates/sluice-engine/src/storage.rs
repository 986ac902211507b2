//! The storage the engine reads from, and an in-memory implementation of it.

use std::collections::BTreeMap;
use std::sync::{Arc, RwLock};

use promql_parser::label::Matcher;
use sluice_block::{Chunk, XorDecoder};

use crate::EngineError;
use crate::labels::Labels;

/// The bit pattern Prometheus uses for a staleness marker: a NaN that no
/// arithmetic produces, so it can be told apart from an ordinary NaN sample.
pub const STALE_NAN_BITS: u64 = 0x7ff0_0000_0000_0002;

pub fn stale_nan() -> f64 {
    f64::from_bits(STALE_NAN_BITS)
}

pub fn is_stale_nan(value: f64) -> bool {
    value.to_bits() == STALE_NAN_BITS
}

/// Select only the series whose stable label hash falls in shard `index` of `count`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Shard {
    pub index: u64,
    pub count: u64,
}

impl Shard {
    pub fn contains(&self, labels: &Labels) -> bool {
        self.count <= 1 || labels.stable_hash() % self.count == self.index
    }
}

/// The label of Mimir's shard selector, `__query_shard__="i_of_n"`
/// (1-based): a frontend that shards a query sends each leg with it.
pub const QUERY_SHARD_LABEL: &str = "__query_shard__";

/// The shard a `__query_shard__` matcher among `matchers` names, 0-based,
/// with the other matchers; `None` when there is no such matcher.
pub fn query_shard(matchers: &[Matcher]) -> Result<Option<(Shard, Vec<Matcher>)>, EngineError> {
    let Some(found) = matchers.iter().find(|m| m.name == QUERY_SHARD_LABEL) else {
        return Ok(None);
    };
    let invalid = || {
        EngineError::BadData(format!(
            "invalid query sharding label value: {:?} (expected {QUERY_SHARD_LABEL}=\"<index>_of_<count>\")",
            found.value
        ))
    };
    if found.op != promql_parser::label::MatchOp::Equal {
        return Err(invalid());
    }
    let (index, count) = found.value.split_once("_of_").ok_or_else(invalid)?;
    let index: u64 = index.parse().map_err(|_| invalid())?;
    let count: u64 = count.parse().map_err(|_| invalid())?;
    if index == 0 || index > count {
        return Err(invalid());
    }
    let rest = matchers
        .iter()
        .filter(|m| m.name != QUERY_SHARD_LABEL)
        .cloned()
        .collect();
    let shard = Shard {
        index: index - 1,
        count,
    };
    Ok(Some((shard, rest)))
}

/// One stored series, as [`Storage::select`] hands it to the engine.
#[derive(Clone, Debug, Default)]
pub struct StoredSeries {
    /// Shared, so that the engine hands the same label set to every step
    /// without copying it.
    pub labels: Arc<Labels>,
    /// The float samples (staleness markers included).
    pub samples: SeriesSamples,
    /// The times of any native-histogram samples, sorted: this engine
    /// refuses to evaluate them but must notice them.
    pub histogram_times: Vec<i64>,
}

/// A series' float samples: decoded already, or still in XOR chunks that
/// the engine decodes as evaluation reaches them, so that a query holds the
/// compressed chunks and a window of decoded samples per selector instead of
/// every sample of its range decoded at once (16 bytes a sample against
/// the chunks' one or two).
#[derive(Clone, Debug)]
pub enum SeriesSamples {
    /// Sorted by time, without duplicate times; shared with the store
    /// (the engine reads windows of it in place).
    Decoded(Arc<Vec<(i64, f64)>>),
    /// Chunks in time order, not overlapping.
    Chunks(Arc<FloatChunks>),
}

impl Default for SeriesSamples {
    fn default() -> SeriesSamples {
        SeriesSamples::Decoded(Arc::default())
    }
}

impl SeriesSamples {
    /// Whether the series holds no float sample at all.
    pub fn is_empty(&self) -> bool {
        match self {
            SeriesSamples::Decoded(samples) => samples.is_empty(),
            SeriesSamples::Chunks(chunks) => chunks.chunks.is_empty(),
        }
    }
}

/// A series' XOR chunks. Each chunk's samples come after the previous
/// chunk's (`max_time` before the next `min_time`); samples in a deleted
/// interval are skipped as they are decoded. A store whose chunks overlap
/// (overlapping blocks) merges them and hands the samples over decoded. A
/// chunk still being appended to (a head's) is handed over as the bytes
/// written so far (`XorEncoder::bytes`), which are a valid chunk.
#[derive(Clone, Debug, Default)]
pub struct FloatChunks {
    pub chunks: Vec<FloatChunk>,
    /// Closed `[min, max]` intervals of deleted samples (tombstones),
    /// sorted by start; usually empty.
    pub deleted: Vec<(i64, i64)>,
}

/// One XOR chunk and the times of its first and last samples.
#[derive(Clone, Debug)]
pub struct FloatChunk {
    pub min_time: i64,
    pub max_time: i64,
    /// An XOR-encoded chunk (`sluice_block`'s encoder writes them, as
    /// Prometheus's does).
    pub chunk: Chunk,
}

impl FloatChunk {
    /// Appends the chunk's samples, less deleted ones, to `out`.
    pub fn decode_into(
        &self,
        deleted: &[(i64, i64)],
        out: &mut Vec<(i64, f64)>,
    ) -> Result<(), EngineError> {
        let mut decoder = self.decoder()?;
        self.decode_until(&mut decoder, deleted, i64::MAX, out)
    }

    /// A decoder at the chunk's start, for [`FloatChunk::decode_until`].
    pub(crate) fn decoder(&self) -> Result<XorDecoder, EngineError> {
        self.chunk.xor_decoder().map_err(chunk_error)
    }

    /// Appends the chunk's next samples, less deleted ones, to `out` until
    /// one later than `until` (see [`XorDecoder::decode_until`]).
    pub(crate) fn decode_until(
        &self,
        decoder: &mut XorDecoder,
        deleted: &[(i64, i64)],
        until: i64,
        out: &mut Vec<(i64, f64)>,
    ) -> Result<(), EngineError> {
        let start = out.len();
        self.chunk
            .decode_floats_until(decoder, until, out)
            .map_err(chunk_error)?;
        let overlaps = |(min, max): &(i64, i64)| *min <= self.max_time && *max >= self.min_time;
        if deleted.iter().any(overlaps) {
            let mut kept = start;
            for index in start..out.len() {
                let t = out[index].0;
                if !deleted.iter().any(|(min, max)| *min <= t && t <= *max) {
                    out[kept] = out[index];
                    kept += 1;
                }
            }
            out.truncate(kept);
        }
        Ok(())
    }
}

fn chunk_error(error: sluice_block::Error) -> EngineError {
    EngineError::Execution(format!("reading a chunk: {error}"))
}

/// Where series come from. `select` returns every series matching all
/// matchers that may have samples in `[start_ms, end_ms]`, in any order;
/// returned series may hold samples outside that range (the engine bounds
/// its reads itself), which lets a store hand out shared data or whole
/// chunks without copying or trimming them.
pub trait Storage: Sync {
    fn select(
        &self,
        matchers: &[Matcher],
        start_ms: i64,
        end_ms: i64,
        shard: Option<Shard>,
    ) -> Result<Vec<StoredSeries>, EngineError>;
}

/// A simple in-memory store, keyed by label set.
#[derive(Default)]
pub struct MemoryStorage {
    series: RwLock<BTreeMap<Labels, MemorySeries>>,
}

/// A series of a [`MemoryStorage`]: its samples decoded, shared with the
/// queries reading them (appending copies them only while one does).
#[derive(Default)]
struct MemorySeries {
    labels: Arc<Labels>,
    samples: Arc<Vec<(i64, f64)>>,
    histogram_times: Vec<i64>,
}

impl MemoryStorage {
    pub fn new() -> Self {
        Self::default()
    }

    fn with_series(&self, labels: &Labels, change: impl FnOnce(&mut MemorySeries)) {
        let mut guard = self
            .series
            .write()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        let entry = guard.entry(labels.clone()).or_insert_with(|| MemorySeries {
            labels: Arc::new(labels.clone()),
            ..MemorySeries::default()
        });
        change(entry);
    }

    /// Adds float samples (any order) to a series, creating it when new. A
    /// later sample at an existing timestamp replaces the earlier one.
    pub fn append(&self, labels: &Labels, samples: &[(i64, f64)]) {
        self.with_series(labels, |series| {
            let stored = Arc::make_mut(&mut series.samples);
            stored.extend_from_slice(samples);
            stored.sort_by_key(|(t, _)| *t);
            dedup_keep_last(stored);
        });
    }

    /// Records that a series holds a native-histogram sample at `t`.
    pub fn append_histogram(&self, labels: &Labels, t: i64) {
        self.with_series(labels, |series| {
            series.histogram_times.push(t);
            series.histogram_times.sort_unstable();
            series.histogram_times.dedup();
        });
    }

    pub fn clear(&self) {
        self.series
            .write()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .clear();
    }

    pub fn series_count(&self) -> usize {
        self.series
            .read()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .len()
    }
}

fn dedup_keep_last(samples: &mut Vec<(i64, f64)>) {
    let mut write = 0;
    for read in 0..samples.len() {
        if write > 0 && samples[write - 1].0 == samples[read].0 {
            samples[write - 1] = samples[read];
        } else {
            samples[write] = samples[read];
            write += 1;
        }
    }
    samples.truncate(write);
}

impl Storage for MemoryStorage {
    fn select(
        &self,
        matchers: &[Matcher],
        start_ms: i64,
        end_ms: i64,
        shard: Option<Shard>,
    ) -> Result<Vec<StoredSeries>, EngineError> {
        let guard = self
            .series
            .read()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        let mut out = Vec::new();
        for series in guard.values() {
            let all_match = matchers
                .iter()
                .all(|m| m.is_match(series.labels.get(&m.name)));
            if !all_match {
                continue;
            }
            if let Some(shard) = shard
                && !shard.contains(&series.labels)
            {
                continue;
            }
            let samples = &series.samples;
            let overlaps_floats = samples.first().is_some_and(|first| {
                first.0 <= end_ms && samples.last().is_some_and(|last| last.0 >= start_ms)
            });
            let overlaps_histograms = series
                .histogram_times
                .iter()
                .any(|t| *t >= start_ms && *t <= end_ms);
            if overlaps_floats || overlaps_histograms {
                out.push(StoredSeries {
                    labels: Arc::clone(&series.labels),
                    samples: SeriesSamples::Decoded(Arc::clone(samples)),
                    histogram_times: series.histogram_times.clone(),
                });
            }
        }
        Ok(out)
    }
}
