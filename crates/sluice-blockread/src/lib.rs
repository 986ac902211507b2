//! Reading the metastore's blocks for the embedded engine: [`BlockStorage`]
//! implements the engine's `Storage` over the blocks of one tenant, and
//! [`series`], [`label_names`] and [`label_values`] answer the metadata
//! endpoints over the same blocks.
//!
//! Overlapping blocks (a vertical compaction not yet done, a backfill) are
//! merged as Prometheus merges them: series with equal labels become one, and
//! of samples with equal timestamps one is kept. Tombstones are honoured.
//! Native-histogram chunks are not decoded: the engine refuses histograms
//! with an `execution` error, and needs only their timestamps to notice
//! them (see [`histogram_times`]).
//!
//! The engine's `Storage` trait hands back fully decoded sample vectors
//! (`StoredSeries`), not iterators; streaming chunks into it would mean
//! rewriting the evaluator's cursors, so series are decoded per query, only
//! over the chunks that overlap the selected range.

mod metadata;
mod skipped;

use std::collections::BTreeMap;
use std::sync::Arc;

use promql_parser::label::{MatchOp as EngineOp, Matcher as EngineMatcher};
use sluice_block::{
    Block, BlockSeries, Chunk, ChunkMeta, Encoding, Interval, Labels, MatchOp, Matcher,
};
use sluice_engine::{EngineError, Shard, Storage, StoredSeries};
use sluice_metastore::{LoadedBlock, Metastore};

pub use metadata::{label_names, label_values, selector_matchers, series};
pub use skipped::WatchSkipped;

/// The blocks of one tenant that a query may read, fixed when it starts so
/// that a sync during the query does not change what it sees.
pub struct BlockStorage {
    blocks: Vec<Arc<LoadedBlock>>,
}

impl BlockStorage {
    /// The blocks of `tenant` overlapping `[min_time, max_time]` (ms).
    pub fn new(metastore: &Metastore, tenant: &str, min_time: i64, max_time: i64) -> BlockStorage {
        BlockStorage {
            blocks: metastore.blocks(tenant, min_time, max_time),
        }
    }

    pub fn from_blocks(blocks: Vec<Arc<LoadedBlock>>) -> BlockStorage {
        BlockStorage { blocks }
    }

    pub(crate) fn overlapping(&self, min_time: i64, max_time: i64) -> impl Iterator<Item = &Block> {
        self.blocks
            .iter()
            .filter(move |loaded| {
                loaded.info.min_time <= max_time && loaded.info.max_time > min_time
            })
            .map(|loaded| &loaded.block)
    }
}

pub(crate) fn execution(error: impl std::fmt::Display) -> EngineError {
    EngineError::Storage(format!("reading blocks: {error}"))
}

/// The block crate's matchers for the engine's (the same semantics:
/// anchored regular expressions, an empty value matching a missing label).
pub(crate) fn block_matchers(matchers: &[EngineMatcher]) -> Result<Vec<Matcher>, EngineError> {
    matchers
        .iter()
        .map(|matcher| {
            let op = match matcher.op {
                EngineOp::Equal => MatchOp::Equal,
                EngineOp::NotEqual => MatchOp::NotEqual,
                EngineOp::Re(_) => MatchOp::Regex,
                EngineOp::NotRe(_) => MatchOp::NotRegex,
            };
            Matcher::new(op, matcher.name.clone(), matcher.value.clone())
                .map_err(|error| EngineError::BadData(error.to_string()))
        })
        .collect()
}

pub(crate) fn engine_labels(labels: &Labels) -> sluice_engine::Labels {
    sluice_engine::Labels::from_pairs(
        labels
            .iter()
            .map(|label| (label.name.clone(), label.value.clone())),
    )
}

/// A series being gathered from several blocks.
#[derive(Default)]
struct Gathered {
    samples: Vec<(i64, f64)>,
    histogram_times: Vec<i64>,
}

fn is_deleted(deleted: &[Interval], t: i64) -> bool {
    deleted.iter().any(|interval| interval.contains(t))
}

/// Times for the samples of a histogram chunk, which sluice does not decode:
/// its sample count spread evenly over its time range, first and last exact.
/// Scrapes are regular, so these fall close to the real times, and any
/// evaluation inside or just after the chunk meets one within the lookback.
pub fn histogram_times(chunk: &Chunk, meta: &ChunkMeta) -> Vec<i64> {
    let count = i64::from(chunk.num_samples().max(1));
    if count == 1 || meta.max_time <= meta.min_time {
        return vec![meta.min_time];
    }
    let span = meta.max_time - meta.min_time;
    (0..count)
        .map(|index| meta.min_time + (span as i128 * index as i128 / (count - 1) as i128) as i64)
        .collect()
}

fn read_chunk(
    chunk: &Chunk,
    meta: &ChunkMeta,
    range: (i64, i64),
    deleted: &[Interval],
    into: &mut Gathered,
) -> sluice_block::Result<()> {
    if chunk.encoding() != Encoding::Xor {
        let times = histogram_times(chunk, meta);
        into.histogram_times
            .extend(times.into_iter().filter(|t| !is_deleted(deleted, *t)));
        return Ok(());
    }
    let mut samples = chunk.float_samples()?;
    while let Some(sample) = samples.seek(range.0) {
        let sample = sample?;
        if sample.t > range.1 {
            break;
        }
        if !is_deleted(deleted, sample.t) {
            into.samples.push((sample.t, sample.v));
        }
    }
    Ok(())
}

fn read_series(
    block: &Block,
    series: &BlockSeries,
    range: (i64, i64),
    into: &mut Gathered,
) -> sluice_block::Result<()> {
    let deleted = block.tombstones().intervals(u64::from(series.reference));
    for meta in &series.chunks {
        let covered = deleted
            .iter()
            .any(|gone| gone.min_time <= meta.min_time && meta.max_time <= gone.max_time);
        if !covered {
            read_chunk(&block.chunk(meta)?, meta, range, deleted, into)?;
        }
    }
    Ok(())
}

/// Sorts a merged series' samples and drops duplicate timestamps, keeping
/// the first block's sample (blocks are read oldest first).
fn finish(labels: sluice_engine::Labels, mut gathered: Gathered) -> StoredSeries {
    gathered.samples.sort_by_key(|(t, _)| *t);
    gathered.samples.dedup_by_key(|(t, _)| *t);
    gathered.histogram_times.sort_unstable();
    gathered.histogram_times.dedup();
    StoredSeries {
        labels: Arc::new(labels),
        samples: gathered.samples,
        histogram_times: gathered.histogram_times,
    }
}

impl Storage for BlockStorage {
    fn select(
        &self,
        matchers: &[EngineMatcher],
        start_ms: i64,
        end_ms: i64,
        shard: Option<Shard>,
    ) -> Result<Vec<Arc<StoredSeries>>, EngineError> {
        let matchers = block_matchers(matchers)?;
        let mut merged: BTreeMap<Labels, (sluice_engine::Labels, Gathered)> = BTreeMap::new();
        for block in self.overlapping(start_ms, end_ms) {
            for series in block
                .select(&matchers, start_ms, end_ms, None)
                .map_err(execution)?
            {
                if !merged.contains_key(&series.labels) {
                    let labels = engine_labels(&series.labels);
                    // The engine's shard hash, so block-backed and in-memory
                    // storage split series alike.
                    if shard.is_some_and(|shard| !shard.contains(&labels)) {
                        continue;
                    }
                    merged.insert(series.labels.clone(), (labels, Gathered::default()));
                }
                let Some((_, gathered)) = merged.get_mut(&series.labels) else {
                    continue;
                };
                read_series(block, &series, (start_ms, end_ms), gathered).map_err(execution)?;
            }
        }
        Ok(merged
            .into_values()
            .map(|(labels, gathered)| Arc::new(finish(labels, gathered)))
            .filter(|series| !series.samples.is_empty() || !series.histogram_times.is_empty())
            .collect())
    }
}

#[cfg(test)]
mod tests;
