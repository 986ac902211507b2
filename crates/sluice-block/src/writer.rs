//! Writes a complete block directory from series and their samples:
//! `chunks/000001...` (XOR chunks of at most 120 samples, as Prometheus cuts
//! them), `index`, `tombstones` and `meta.json`. The block is written under a
//! temporary name and renamed into place, so a reader never sees half a block.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use crate::chunkenc::{Encoding, Sample, XorEncoder};
use crate::chunks::{ChunkWriter, DEFAULT_SEGMENT_SIZE};
use crate::error::{Error, Result};
use crate::index::{ChunkMeta, SeriesEntry, write_index};
use crate::labels::Labels;
use crate::meta::{BlockMeta, BlockStats, Compaction, ThanosMeta, Ulid};
use crate::tombstones::{Interval, TOMBSTONES_FILE, Tombstones};

/// Prometheus cuts a float chunk at 120 samples: about two hours at a 1m
/// scrape interval, where XOR compression has paid off.
pub const SAMPLES_PER_CHUNK: usize = 120;

/// Collects series, then writes them as one block.
#[derive(Default)]
pub struct BlockWriter {
    series: BTreeMap<Labels, Vec<Sample>>,
    deletions: Vec<(Labels, Interval)>,
    segment_size: Option<u64>,
    external_labels: BTreeMap<String, String>,
}

/// Statistics of the block being written.
struct Written {
    entries: Vec<SeriesEntry>,
    stats: BlockStats,
    min_time: i64,
    max_time: i64,
}

impl BlockWriter {
    pub fn new() -> BlockWriter {
        BlockWriter::default()
    }

    /// Bounds each chunk segment file (default 512 MiB); tests use it to
    /// produce several segments.
    pub fn segment_size(mut self, bytes: u64) -> BlockWriter {
        self.segment_size = Some(bytes);
        self
    }

    /// Records Thanos external labels in meta.json.
    pub fn external_labels(mut self, labels: BTreeMap<String, String>) -> BlockWriter {
        self.external_labels = labels;
        self
    }

    /// Adds a series. Its samples must have strictly increasing timestamps.
    pub fn add_series(&mut self, labels: Labels, samples: Vec<Sample>) -> Result<()> {
        check_series(&labels, &samples)?;
        if self.series.contains_key(&labels) {
            return Err(Error::InvalidInput(format!("series {labels} added twice")));
        }
        self.series.insert(labels, samples);
        Ok(())
    }

    /// Marks `interval` of the series `labels` deleted (a tombstone).
    pub fn delete(&mut self, labels: Labels, interval: Interval) {
        self.deletions.push((labels, interval));
    }

    /// Writes the block of the series added into `parent/<ulid>/` and
    /// returns its meta.
    pub fn write(mut self, parent: &Path) -> Result<BlockMeta> {
        if self.series.is_empty() {
            return Err(Error::InvalidInput(
                "a block needs at least one series".into(),
            ));
        }
        let series = std::mem::take(&mut self.series);
        self.write_sorted(parent, series.into_iter().map(Ok))
    }

    /// Writes a block of `series`, given in label order, into
    /// `parent/<ulid>/` without holding them all: each series' chunks are
    /// written as it comes, so memory holds one series' samples plus the
    /// index entries (a compactor's merge of large blocks). The writer must
    /// have no series of its own.
    pub fn write_sorted(
        self,
        parent: &Path,
        series: impl IntoIterator<Item = Result<(Labels, Vec<Sample>)>>,
    ) -> Result<BlockMeta> {
        if !self.series.is_empty() {
            return Err(Error::InvalidInput(
                "write_sorted takes its series from its argument, not add_series".into(),
            ));
        }
        let ulid = Ulid::generate();
        let temporary_dir = parent.join(format!("{ulid}.tmp-for-creation"));
        std::fs::create_dir_all(&temporary_dir)
            .map_err(|source| Error::io(&path_name(&temporary_dir), "create", source))?;
        let written = self.write_files(ulid, &temporary_dir, series);
        if written.is_err() {
            let _ = std::fs::remove_dir_all(&temporary_dir);
        }
        let meta = written?;
        let final_dir = parent.join(ulid.to_string());
        std::fs::rename(&temporary_dir, &final_dir)
            .map_err(|source| Error::io(&path_name(&final_dir), "rename", source))?;
        Ok(meta)
    }

    fn write_files(
        &self,
        ulid: Ulid,
        dir: &Path,
        series: impl IntoIterator<Item = Result<(Labels, Vec<Sample>)>>,
    ) -> Result<BlockMeta> {
        let written = self.write_chunks(dir, series)?;
        if written.entries.is_empty() {
            return Err(Error::InvalidInput(
                "a block needs at least one series".into(),
            ));
        }
        let (index_bytes, references) = write_index(&written.entries)?;
        write_file(dir, "index", &index_bytes)?;
        let tombstones = self.resolve_deletions(&written.entries, &references);
        write_file(dir, TOMBSTONES_FILE, &tombstones.encode())?;
        let meta = self.meta(ulid, written, tombstones.len() as u64);
        meta.write(dir)?;
        Ok(meta)
    }

    fn write_chunks(
        &self,
        block_dir: &Path,
        series: impl IntoIterator<Item = Result<(Labels, Vec<Sample>)>>,
    ) -> Result<Written> {
        let mut chunk_writer =
            ChunkWriter::new(block_dir, self.segment_size.unwrap_or(DEFAULT_SEGMENT_SIZE))?;
        let mut written = Written {
            entries: Vec::new(),
            stats: BlockStats::default(),
            min_time: i64::MAX,
            max_time: i64::MIN,
        };
        for next in series {
            let (labels, samples) = next?;
            check_series(&labels, &samples)?;
            if let Some(previous) = written.entries.last()
                && previous.labels >= labels
            {
                return Err(Error::InvalidInput(format!(
                    "series {labels} does not follow {} in label order",
                    previous.labels
                )));
            }
            let mut chunks = Vec::with_capacity(samples.len().div_ceil(SAMPLES_PER_CHUNK));
            for batch in samples.chunks(SAMPLES_PER_CHUNK) {
                let mut encoder = XorEncoder::new();
                for sample in batch {
                    encoder.append(sample.t, sample.v)?;
                }
                let reference = chunk_writer.write(Encoding::Xor, encoder.bytes())?;
                let (first, last) = (batch[0].t, batch[batch.len() - 1].t);
                chunks.push(ChunkMeta {
                    min_time: first,
                    max_time: last,
                    reference,
                });
            }
            written.min_time = written.min_time.min(samples[0].t);
            written.max_time = written.max_time.max(samples[samples.len() - 1].t);
            written.stats.num_samples += samples.len() as u64;
            written.stats.num_chunks += chunks.len() as u64;
            written.stats.num_series += 1;
            written.entries.push(SeriesEntry { labels, chunks });
        }
        chunk_writer.finish()?;
        Ok(written)
    }

    fn resolve_deletions(&self, entries: &[SeriesEntry], references: &[u32]) -> Tombstones {
        let mut tombstones = Tombstones::default();
        for (labels, interval) in &self.deletions {
            if let Ok(position) = entries.binary_search_by(|entry| entry.labels.cmp(labels)) {
                tombstones.add(u64::from(references[position]), *interval);
            }
        }
        tombstones
    }

    fn meta(&self, ulid: Ulid, written: Written, num_tombstones: u64) -> BlockMeta {
        let thanos = (!self.external_labels.is_empty()).then(|| ThanosMeta {
            labels: self.external_labels.clone(),
            other: serde_json::Map::new(),
        });
        BlockMeta {
            ulid,
            min_time: written.min_time,
            // meta.json's maxTime is exclusive.
            max_time: written.max_time + 1,
            stats: BlockStats {
                num_tombstones,
                ..written.stats
            },
            compaction: Compaction {
                level: 1,
                sources: vec![ulid],
                ..Compaction::default()
            },
            version: 1,
            thanos,
        }
    }
}

/// A series a block can hold: labels, and samples in strictly increasing
/// time order.
fn check_series(labels: &Labels, samples: &[Sample]) -> Result<()> {
    if labels.is_empty() || samples.is_empty() {
        return Err(Error::InvalidInput(format!(
            "series {labels} has no labels or no samples"
        )));
    }
    if let Some(pair) = samples.windows(2).find(|pair| pair[1].t <= pair[0].t) {
        return Err(Error::InvalidInput(format!(
            "series {labels}: timestamp {} does not follow {}",
            pair[1].t, pair[0].t
        )));
    }
    Ok(())
}

fn path_name(path: &Path) -> String {
    path.display().to_string()
}

fn write_file(dir: &Path, name: &str, bytes: &[u8]) -> Result<()> {
    let path: PathBuf = dir.join(name);
    std::fs::write(&path, bytes).map_err(|source| Error::io(name, "write", source))
}

#[cfg(test)]
mod tests;
