//! A block directory opened whole: `meta.json`, `index`, `chunks/` and
//! `tombstones`. Selecting series by matchers and time range, optionally one
//! shard of them, and iterating each series' samples merged across its
//! chunks with deleted intervals removed.

use std::path::PathBuf;
use std::sync::Arc;

use crate::cache::BlockCaches;
use crate::chunkenc::{Chunk, Sample, XorIterator};
use crate::chunks::{ChunkReader, ChunkRef};
use crate::error::{Error, Result};
use crate::index::{ChunkMeta, IndexReader, SeriesRef};
use crate::labels::Labels;
use crate::matcher::Matcher;
use crate::meta::BlockMeta;
use crate::read::{LocalDir, RangeRead};
use crate::tombstones::{Interval, Tombstones};

/// Shard `index` of `count`: the series whose labels' StableHash modulo
/// `count` is `index`, as Mimir's query sharding splits them.
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

/// A selected series: its labels and the chunks that overlap the query.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BlockSeries {
    pub reference: SeriesRef,
    pub labels: Labels,
    pub chunks: Vec<ChunkMeta>,
}

/// An opened block.
pub struct Block {
    meta: BlockMeta,
    index: IndexReader,
    chunks: ChunkReader,
    tombstones: Tombstones,
}

impl Block {
    /// Opens the block whose files `dir` holds, reading its meta, index
    /// header and tombstones, and checking its chunk segments' headers.
    pub fn open(dir: Arc<dyn RangeRead>) -> Result<Block> {
        Block::open_with_caches(dir, &BlockCaches::default())
    }

    /// Like [`Block::open`], keeping the postings and chunks it reads in
    /// `caches` (shared with other blocks).
    pub fn open_with_caches(dir: Arc<dyn RangeRead>, caches: &BlockCaches) -> Result<Block> {
        let meta = BlockMeta::read(dir.as_ref())?;
        let mut index = IndexReader::open(dir.clone())?;
        let tombstones = Tombstones::read(dir.as_ref())?;
        let mut chunks = ChunkReader::open(dir)?;
        if let Some(cache) = &caches.postings {
            index.cache_postings(cache.clone(), meta.ulid);
        }
        if let Some(cache) = &caches.chunks {
            chunks.cache_chunks(cache.clone(), meta.ulid);
        }
        Ok(Block {
            meta,
            index,
            chunks,
            tombstones,
        })
    }

    /// Opens a block directory on the local file system.
    pub fn open_dir(path: impl Into<PathBuf>) -> Result<Block> {
        Block::open(Arc::new(LocalDir::new(path)))
    }

    pub fn meta(&self) -> &BlockMeta {
        &self.meta
    }

    pub fn index(&self) -> &IndexReader {
        &self.index
    }

    pub fn tombstones(&self) -> &Tombstones {
        &self.tombstones
    }

    /// The chunk `meta` points at, of any encoding.
    pub fn chunk(&self, meta: &ChunkMeta) -> Result<Chunk> {
        self.chunks.chunk(meta.reference)
    }

    /// The chunks `metas` point at, in their order, read a run of nearby
    /// chunks at a time (see [`ChunkReader::chunks`]).
    pub fn chunks(&self, metas: &[ChunkMeta]) -> Result<Vec<Chunk>> {
        let references: Vec<_> = metas.iter().map(|meta| meta.reference).collect();
        self.chunks.chunks(&references)
    }

    /// How many chunk segment files the block has.
    pub fn segment_count(&self) -> usize {
        self.chunks.segment_count()
    }

    /// The series matching all `matchers` with a chunk in `[min_time,
    /// max_time]` (inclusive), in label order, restricted to `shard`; their
    /// chunks are fetched into the chunk cache (if the block has one) with
    /// batched reads, since the caller reads them next.
    pub fn select(
        &self,
        matchers: &[Matcher],
        min_time: i64,
        max_time: i64,
        shard: Option<Shard>,
    ) -> Result<Vec<BlockSeries>> {
        let selected = self.select_series(matchers, min_time, max_time, shard)?;
        let references: Vec<ChunkRef> = selected
            .iter()
            .flat_map(|series| series.chunks.iter().map(|chunk| chunk.reference))
            .collect();
        self.chunks.prefetch(&references)?;
        Ok(selected)
    }

    /// Like [`Block::select`] without fetching chunks: for labels only.
    pub fn select_series(
        &self,
        matchers: &[Matcher],
        min_time: i64,
        max_time: i64,
        shard: Option<Shard>,
    ) -> Result<Vec<BlockSeries>> {
        let references = self.index.select(matchers)?;
        let entries = self.index.series_many(&references)?;
        let mut selected = Vec::new();
        for (reference, entry) in references.into_iter().zip(entries) {
            if shard.is_some_and(|shard| !shard.contains(&entry.labels)) {
                continue;
            }
            let chunks: Vec<ChunkMeta> = entry
                .chunks
                .into_iter()
                .filter(|chunk| chunk.max_time >= min_time && chunk.min_time <= max_time)
                .collect();
            if !chunks.is_empty() {
                selected.push(BlockSeries {
                    reference,
                    labels: entry.labels,
                    chunks,
                });
            }
        }
        Ok(selected)
    }

    /// The samples of `series` in `[min_time, max_time]`, without deleted ones.
    pub fn samples(&self, series: &BlockSeries, min_time: i64, max_time: i64) -> SeriesSamples<'_> {
        let deleted = self
            .tombstones
            .intervals(u64::from(series.reference))
            .to_vec();
        // Skip chunks a tombstone covers whole: no need to fetch them.
        let chunks: Vec<ChunkMeta> = series
            .chunks
            .iter()
            .filter(|chunk| {
                !deleted
                    .iter()
                    .any(|gone| gone.min_time <= chunk.min_time && chunk.max_time <= gone.max_time)
            })
            .copied()
            .collect();
        let overlapping = chunks
            .windows(2)
            .any(|pair| pair[1].min_time <= pair[0].max_time);
        SeriesSamples {
            block: self,
            chunks: chunks.into_iter(),
            current: None,
            buffered: None,
            overlapping,
            min_time,
            max_time,
            deleted,
            deleted_index: 0,
            failed: false,
        }
    }
}

/// Iterates one series' samples in time order. Chunks are fetched one at a
/// time; only when chunks overlap (out-of-order data) are all decoded and
/// merged first, the later chunk winning a duplicate timestamp.
pub struct SeriesSamples<'a> {
    block: &'a Block,
    chunks: std::vec::IntoIter<ChunkMeta>,
    current: Option<XorIterator>,
    buffered: Option<std::vec::IntoIter<Sample>>,
    overlapping: bool,
    min_time: i64,
    max_time: i64,
    deleted: Vec<Interval>,
    deleted_index: usize,
    failed: bool,
}

impl SeriesSamples<'_> {
    fn open_next_chunk(&mut self) -> Option<Result<()>> {
        let meta = self.chunks.next()?;
        let opened = self
            .block
            .chunks
            .chunk(meta.reference)
            .and_then(|chunk| chunk.float_samples());
        Some(opened.map(|iterator| self.current = Some(iterator)))
    }

    /// The next sample from the chunks in order, before range and deletions.
    fn next_raw(&mut self) -> Option<Result<Sample>> {
        loop {
            if let Some(iterator) = self.current.as_mut() {
                if let Some(sample) = iterator.seek(self.min_time) {
                    return Some(sample);
                }
                self.current = None;
            }
            if let Err(error) = self.open_next_chunk()? {
                return Some(Err(error));
            }
        }
    }

    fn merge_all(&mut self) -> Result<std::vec::IntoIter<Sample>> {
        let mut samples = Vec::new();
        while let Some(sample) = self.next_raw() {
            samples.push(sample?);
        }
        samples.sort_by_key(|sample| sample.t);
        // Keep the last of equal timestamps: it came from the later chunk.
        let mut merged: Vec<Sample> = Vec::with_capacity(samples.len());
        for sample in samples {
            match merged.last_mut() {
                Some(last) if last.t == sample.t => *last = sample,
                _ => merged.push(sample),
            }
        }
        Ok(merged.into_iter())
    }

    fn is_deleted(&mut self, t: i64) -> bool {
        while self.deleted_index < self.deleted.len()
            && self.deleted[self.deleted_index].max_time < t
        {
            self.deleted_index += 1;
        }
        self.deleted
            .get(self.deleted_index)
            .is_some_and(|interval| interval.contains(t))
    }

    fn next_in_order(&mut self) -> Option<Result<Sample>> {
        if !self.overlapping {
            return self.next_raw();
        }
        if self.buffered.is_none() {
            match self.merge_all() {
                Ok(merged) => self.buffered = Some(merged),
                Err(error) => return Some(Err(error)),
            }
        }
        self.buffered.as_mut()?.next().map(Ok)
    }
}

impl Iterator for SeriesSamples<'_> {
    type Item = Result<Sample, Error>;

    fn next(&mut self) -> Option<Result<Sample>> {
        while !self.failed {
            let sample = match self.next_in_order()? {
                Ok(sample) => sample,
                Err(error) => {
                    self.failed = true;
                    return Some(Err(error));
                }
            };
            if sample.t > self.max_time {
                return None;
            }
            if sample.t >= self.min_time && !self.is_deleted(sample.t) {
                return Some(Ok(sample));
            }
        }
        None
    }
}
