//! The storage the engine reads from, and an in-memory implementation of it.

use std::collections::BTreeMap;
use std::sync::{Arc, RwLock};

use promql_parser::label::Matcher;

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

/// One stored series: float samples sorted by time (staleness markers
/// included), plus the times of any native-histogram samples, which this
/// engine refuses to evaluate but must notice.
#[derive(Clone, Debug, Default)]
pub struct StoredSeries {
    /// Shared, so that the engine hands the same label set to every step
    /// without copying it.
    pub labels: Arc<Labels>,
    pub samples: Vec<(i64, f64)>,
    pub histogram_times: Vec<i64>,
}

/// Where series come from. `select` returns every series matching all
/// matchers that may have samples in `[start_ms, end_ms]`; returned series
/// may hold samples outside that range (the engine bounds its reads itself),
/// which lets an in-memory store hand out shared data without copying.
pub trait Storage: Sync {
    fn select(
        &self,
        matchers: &[Matcher],
        start_ms: i64,
        end_ms: i64,
        shard: Option<Shard>,
    ) -> Result<Vec<Arc<StoredSeries>>, EngineError>;
}

/// A simple in-memory store, keyed by label set.
#[derive(Default)]
pub struct MemoryStorage {
    series: RwLock<BTreeMap<Labels, Arc<StoredSeries>>>,
}

impl MemoryStorage {
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds float samples (any order) to a series, creating it when new. A
    /// later sample at an existing timestamp replaces the earlier one.
    pub fn append(&self, labels: &Labels, samples: &[(i64, f64)]) {
        let mut guard = self
            .series
            .write()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        let entry = guard.entry(labels.clone()).or_insert_with(|| {
            Arc::new(StoredSeries {
                labels: Arc::new(labels.clone()),
                ..StoredSeries::default()
            })
        });
        let series = Arc::make_mut(entry);
        series.samples.extend_from_slice(samples);
        series.samples.sort_by_key(|(t, _)| *t);
        dedup_keep_last(&mut series.samples);
    }

    /// Records that a series holds a native-histogram sample at `t`.
    pub fn append_histogram(&self, labels: &Labels, t: i64) {
        let mut guard = self
            .series
            .write()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        let entry = guard.entry(labels.clone()).or_insert_with(|| {
            Arc::new(StoredSeries {
                labels: Arc::new(labels.clone()),
                ..StoredSeries::default()
            })
        });
        let series = Arc::make_mut(entry);
        series.histogram_times.push(t);
        series.histogram_times.sort_unstable();
        series.histogram_times.dedup();
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
    ) -> Result<Vec<Arc<StoredSeries>>, EngineError> {
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
            let overlaps_floats = series.samples.first().is_some_and(|first| {
                first.0 <= end_ms && series.samples.last().is_some_and(|last| last.0 >= start_ms)
            });
            let overlaps_histograms = series
                .histogram_times
                .iter()
                .any(|t| *t >= start_ms && *t <= end_ms);
            if overlaps_floats || overlaps_histograms {
                out.push(Arc::clone(series));
            }
        }
        Ok(out)
    }
}
