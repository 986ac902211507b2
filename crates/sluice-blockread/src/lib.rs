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
//! Series reach the engine as their XOR chunks (those overlapping the
//! selected range), which it decodes as its windows reach them; only a
//! series whose chunks overlap in time (overlapping blocks, out-of-order
//! chunks) is decoded and merged here first.

mod federated;
mod fetch;
mod head;
mod metadata;
mod skipped;

use std::sync::Arc;

use promql_parser::label::{MatchOp as EngineOp, Matcher as EngineMatcher};
use sluice_block::{
    Block, BlockSeries, Chunk, ChunkMeta, Encoding, Interval, Labels, MatchOp, Matcher,
};
use sluice_engine::{
    EngineError, FloatChunk, FloatChunks, SeriesSamples, Shard, Storage, StoredSeries,
};
use sluice_metastore::{LoadedBlock, Metastore};

pub use federated::{
    Federated, ORIGINAL_TENANT_LABEL, TENANT_LABEL, split_tenant_matchers, with_tenant,
};
pub use fetch::{chunk_bytes_message, series_message};
pub use metadata::{label_names, label_values, selector_matchers, series};
pub use skipped::WatchSkipped;

/// The blocks of one tenant that a query may read, fixed when it starts so
/// that a sync during the query does not change what it sees, and the
/// tenant's head when this process runs the store.
pub struct BlockStorage {
    blocks: Vec<Arc<LoadedBlock>>,
    head: Option<head::HeadView>,
    /// The query's fetch limits; none, nothing is counted.
    budget: Option<fetch::FetchBudget>,
}

impl BlockStorage {
    /// The blocks of `tenant` overlapping `[min_time, max_time]` (ms).
    pub fn new(metastore: &Metastore, tenant: &str, min_time: i64, max_time: i64) -> BlockStorage {
        BlockStorage::from_blocks(metastore.blocks(tenant, min_time, max_time))
    }

    pub fn from_blocks(blocks: Vec<Arc<LoadedBlock>>) -> BlockStorage {
        BlockStorage {
            blocks,
            head: None,
            budget: None,
        }
    }

    /// Fails the query once its selections have fetched more than
    /// `max_series` distinct series or `max_chunk_bytes` bytes of chunks
    /// (0: no limit), with Mimir's messages.
    pub fn with_fetch_limits(mut self, max_series: usize, max_chunk_bytes: usize) -> BlockStorage {
        if max_series > 0 || max_chunk_bytes > 0 {
            self.budget = Some(fetch::FetchBudget::new(max_series, max_chunk_bytes));
        }
        self
    }

    /// Reads `tenant`'s series in `head` too, merged with the blocks'.
    pub fn with_head(mut self, head: Arc<sluice_head::Head>, tenant: &str) -> BlockStorage {
        self.head = Some(head::HeadView {
            head,
            tenant: tenant.to_owned(),
        });
        self
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

/// A series being gathered from several blocks: its float chunks, each
/// with the intervals its block deleted, and its histogram samples' times.
#[derive(Default)]
struct Gathered {
    chunks: Vec<(FloatChunk, Vec<(i64, i64)>)>,
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

/// The chunks of `series` a query reads: those no tombstone covers whole.
fn wanted_chunks<'a>(
    block: &'a Block,
    series: &'a BlockSeries,
) -> impl Iterator<Item = &'a ChunkMeta> {
    let deleted = block.tombstones().intervals(u64::from(series.reference));
    series.chunks.iter().filter(move |meta| {
        !deleted
            .iter()
            .any(|gone| gone.min_time <= meta.min_time && meta.max_time <= gone.max_time)
    })
}

/// Adds the chunks of `series` (its [`wanted_chunks`], read already) to
/// what is gathered for it.
fn gather_series(
    block: &Block,
    series: &BlockSeries,
    chunks: impl Iterator<Item = Chunk>,
    into: &mut Gathered,
) {
    let deleted = block.tombstones().intervals(u64::from(series.reference));
    for (meta, chunk) in wanted_chunks(block, series).zip(chunks) {
        if chunk.encoding() != Encoding::Xor {
            let times = histogram_times(&chunk, meta);
            into.histogram_times
                .extend(times.into_iter().filter(|t| !is_deleted(deleted, *t)));
            continue;
        }
        let chunk_deleted = deleted
            .iter()
            .filter(|gone| gone.min_time <= meta.max_time && gone.max_time >= meta.min_time)
            .map(|gone| (gone.min_time, gone.max_time))
            .collect();
        let float_chunk = FloatChunk {
            min_time: meta.min_time,
            max_time: meta.max_time,
            chunk,
        };
        into.chunks.push((float_chunk, chunk_deleted));
    }
}

/// The engine's view of a gathered series: its chunks as they are when
/// they follow one another in time, else decoded and merged, of samples
/// with equal timestamps the first block's kept (blocks are read oldest
/// first).
fn finish(
    labels: sluice_engine::Labels,
    mut gathered: Gathered,
) -> Result<StoredSeries, EngineError> {
    gathered.histogram_times.sort_unstable();
    gathered.histogram_times.dedup();
    let in_order = gathered
        .chunks
        .windows(2)
        .all(|pair| pair[0].0.max_time < pair[1].0.min_time);
    let samples = if in_order {
        let mut deleted = Vec::new();
        for (chunk, intervals) in &gathered.chunks {
            // Clamped to the chunk, so no block's deletions reach another's samples.
            deleted.extend(
                intervals
                    .iter()
                    .map(|(min, max)| ((*min).max(chunk.min_time), (*max).min(chunk.max_time))),
            );
        }
        deleted.sort_unstable();
        let chunks = gathered
            .chunks
            .into_iter()
            .map(|(chunk, _)| chunk)
            .collect();
        SeriesSamples::Chunks(Arc::new(FloatChunks { chunks, deleted }))
    } else {
        let mut samples = Vec::new();
        for (chunk, intervals) in &gathered.chunks {
            chunk.decode_into(intervals, &mut samples)?;
        }
        samples.sort_by_key(|(t, _)| *t);
        samples.dedup_by_key(|(t, _)| *t);
        SeriesSamples::Decoded(Arc::new(samples))
    };
    Ok(StoredSeries {
        labels: Arc::new(labels),
        samples,
        histogram_times: gathered.histogram_times,
    })
}

/// A series gathered from several blocks: its labels as the blocks have
/// them, as the engine has them (none when outside the query's shard), and
/// what was gathered.
struct Merged {
    labels: Labels,
    engine_labels: Option<sluice_engine::Labels>,
    gathered: Gathered,
}

/// Where `labels` is in `merged` (sorted by labels), looked for from
/// `from` on, inserted there when new. Blocks list their series in label
/// order, mostly the same ones as the block before, so a walk alongside
/// them compares each series about once.
fn merged_position(
    merged: &mut Vec<Merged>,
    from: usize,
    labels: &Labels,
    shard: Option<Shard>,
) -> usize {
    // A block out of label order (none that Prometheus writes) is merged
    // all the same, by searching from the start.
    let mut position = match from.checked_sub(1).map(|last| &merged[last].labels) {
        Some(previous) if previous >= labels => 0,
        _ => from,
    };
    while let Some(existing) = merged.get(position) {
        match existing.labels.cmp(labels) {
            std::cmp::Ordering::Less => position += 1,
            std::cmp::Ordering::Equal => return position,
            std::cmp::Ordering::Greater => break,
        }
    }
    let converted = engine_labels(labels);
    // The engine's shard hash, so block-backed and in-memory storage split
    // series alike.
    let in_shard = shard.is_none_or(|shard| shard.contains(&converted));
    merged.insert(
        position,
        Merged {
            labels: labels.clone(),
            engine_labels: in_shard.then_some(converted),
            gathered: Gathered::default(),
        },
    );
    position
}

/// Gathers the series of `block` that `matchers` select into `merged`,
/// reading all their chunks at once.
fn gather_block(
    block: &Block,
    matchers: &[Matcher],
    range: (i64, i64),
    shard: Option<Shard>,
    merged: &mut Vec<Merged>,
) -> sluice_block::Result<()> {
    let mut selected = Vec::new();
    let mut position = 0;
    for series in block.select(matchers, range.0, range.1, None)? {
        position = merged_position(merged, position, &series.labels, shard);
        if merged[position].engine_labels.is_some() {
            // Later insertions come after `position`: it stays valid.
            selected.push((position, series));
        }
        position += 1;
    }
    let metas: Vec<ChunkMeta> = selected
        .iter()
        .flat_map(|(_, series)| wanted_chunks(block, series).copied())
        .collect();
    let mut chunks = block.chunks(&metas)?.into_iter();
    for (position, series) in &selected {
        let count = wanted_chunks(block, series).count();
        let gathered = &mut merged[*position].gathered;
        gather_series(block, series, chunks.by_ref().take(count), gathered);
    }
    Ok(())
}

/// A gathered series' labels and chunk bytes, if the query reads it.
fn fetched(series: &Merged) -> Option<(&sluice_engine::Labels, usize)> {
    let labels = series.engine_labels.as_ref()?;
    let gathered = &series.gathered;
    if gathered.chunks.is_empty() && gathered.histogram_times.is_empty() {
        return None;
    }
    let bytes = gathered
        .chunks
        .iter()
        .map(|(chunk, _)| chunk.chunk.data().len())
        .sum();
    Some((labels, bytes))
}

impl Storage for BlockStorage {
    fn select(
        &self,
        matchers: &[EngineMatcher],
        start_ms: i64,
        end_ms: i64,
        shard: Option<Shard>,
    ) -> Result<Vec<StoredSeries>, EngineError> {
        let matchers = block_matchers(matchers)?;
        let mut merged = Vec::new();
        for block in self.overlapping(start_ms, end_ms) {
            gather_block(block, &matchers, (start_ms, end_ms), shard, &mut merged)
                .map_err(execution)?;
        }
        if let Some(head) = &self.head {
            head.gather(&matchers, (start_ms, end_ms), shard, &mut merged);
        }
        if let Some(budget) = &self.budget {
            budget.charge(merged.iter().filter_map(fetched))?;
        }
        let mut out = Vec::with_capacity(merged.len());
        for series in merged {
            let Some(labels) = series.engine_labels else {
                continue;
            };
            let gathered = series.gathered;
            if gathered.chunks.is_empty() && gathered.histogram_times.is_empty() {
                continue;
            }
            out.push(finish(labels, gathered)?);
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests;
