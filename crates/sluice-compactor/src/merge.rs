//! Merging blocks into one, as Prometheus's compactor does: every series of
//! every source, its samples in time order with deleted ones (tombstones)
//! left out and a timestamp present in several sources kept once (the
//! source that starts first wins, as the querier's merge of overlapping
//! blocks chooses, so answers do not change). The new block's meta.json
//! records its lineage: level one above its highest source, the union of
//! their `sources`, and the sources themselves as `parents`; its range is
//! the union of theirs.
//!
//! Series are merged and written one at a time, in label order: memory
//! holds the sources' series lists and one series' samples, never whole
//! blocks (24h of 100,000 series is billions of samples).

use std::collections::BTreeMap;
use std::path::Path;

use sluice_block::meta::BlockDesc;
use sluice_block::{Block, BlockMeta, BlockSeries, BlockWriter, Compaction, Labels, Sample};

/// Each series of `blocks`, with where it is in which block.
type SeriesIndex = BTreeMap<Labels, Vec<(usize, BlockSeries)>>;

fn series_index(blocks: &[&Block]) -> sluice_block::Result<SeriesIndex> {
    let mut index: SeriesIndex = BTreeMap::new();
    for (position, block) in blocks.iter().enumerate() {
        for series in block.select_series(&[], i64::MIN, i64::MAX, None)? {
            index
                .entry(series.labels.clone())
                .or_default()
                .push((position, series));
        }
    }
    Ok(index)
}

/// One series' samples from every block that has it (blocks ordered by
/// their start), merged.
fn merged_samples(
    blocks: &[&Block],
    parts: &[(usize, BlockSeries)],
) -> sluice_block::Result<Vec<Sample>> {
    let mut samples = Vec::new();
    for (position, series) in parts {
        for sample in blocks[*position].samples(series, i64::MIN, i64::MAX) {
            samples.push(sample?);
        }
    }
    // Stable: among equal timestamps the earlier block's sample is first.
    samples.sort_by_key(|sample| sample.t);
    samples.dedup_by_key(|sample| sample.t);
    Ok(samples)
}

/// The lineage of a block made of `parents`.
pub fn lineage(parents: &[&BlockMeta]) -> Compaction {
    let mut sources: Vec<_> = parents
        .iter()
        .flat_map(|meta| meta.compaction.sources.iter().copied())
        .collect();
    sources.sort();
    sources.dedup();
    Compaction {
        level: parents
            .iter()
            .map(|meta| meta.compaction.level)
            .max()
            .unwrap_or(0)
            + 1,
        sources,
        parents: parents
            .iter()
            .map(|meta| BlockDesc {
                ulid: meta.ulid,
                min_time: meta.min_time,
                max_time: meta.max_time,
            })
            .collect(),
        ..Compaction::default()
    }
}

/// Writes the merge of `blocks` (ordered by their start) as a new block
/// under `parent`; `None` when tombstones left no sample at all.
pub fn write_merged(blocks: &[&Block], parent: &Path) -> sluice_block::Result<Option<BlockMeta>> {
    let metas: Vec<&BlockMeta> = blocks.iter().map(|block| block.meta()).collect();
    let index = series_index(blocks)?;
    let mut writer = BlockWriter::new();
    if let Some(labels) = shared_external_labels(&metas) {
        writer = writer.external_labels(labels);
    }
    let (mut kept, mut failed) = (0usize, false);
    let series = index.into_iter().filter_map(|(labels, parts)| {
        match merged_samples(blocks, &parts) {
            // Every sample deleted: the series goes.
            Ok(samples) if samples.is_empty() => None,
            Ok(samples) => {
                kept += 1;
                Some(Ok((labels, samples)))
            }
            Err(error) => {
                failed = true;
                Some(Err(error))
            }
        }
    });
    let written = writer.write_sorted(parent, series);
    // No series left and nothing failed to read: tombstones took it all.
    // (A read error must never pass for that: the sources get deleted.)
    if kept == 0 && !failed && written.is_err() {
        return Ok(None);
    }
    let mut meta = written?;
    meta.min_time = metas
        .iter()
        .map(|meta| meta.min_time)
        .min()
        .unwrap_or(meta.min_time);
    meta.max_time = metas
        .iter()
        .map(|meta| meta.max_time)
        .max()
        .unwrap_or(meta.max_time);
    meta.compaction = lineage(&metas);
    meta.write(&parent.join(meta.ulid.to_string()))?;
    Ok(Some(meta))
}

/// Thanos external labels, kept when every source has the same.
fn shared_external_labels(metas: &[&BlockMeta]) -> Option<BTreeMap<String, String>> {
    let first = metas.first()?.thanos.as_ref()?.labels.clone();
    metas
        .iter()
        .all(|meta| meta.thanos.as_ref().map(|thanos| &thanos.labels) == Some(&first))
        .then_some(first)
}

#[cfg(test)]
mod tests {
    use super::*;
    use sluice_block::{Interval, Matcher};
    use sluice_testkit::TempDir;

    fn samples(times: impl IntoIterator<Item = i64>, value: f64) -> Vec<Sample> {
        times
            .into_iter()
            .map(|t| Sample {
                t,
                v: value + t as f64,
            })
            .collect()
    }

    fn write(
        dir: &Path,
        series: &[(&str, Vec<Sample>)],
        deleted: Option<(&str, Interval)>,
    ) -> Block {
        let mut writer = BlockWriter::new();
        for (job, samples) in series {
            writer
                .add_series(
                    Labels::from_pairs(&[("__name__", "up"), ("job", job)]),
                    samples.clone(),
                )
                .unwrap();
        }
        if let Some((job, interval)) = deleted {
            writer.delete(
                Labels::from_pairs(&[("__name__", "up"), ("job", job)]),
                interval,
            );
        }
        let meta = writer.write(dir).unwrap();
        Block::open_dir(dir.join(meta.ulid.to_string())).unwrap()
    }

    fn read_all(block: &Block, job: &str) -> Vec<Sample> {
        let selected = block
            .select(&[Matcher::equal("job", job)], i64::MIN, i64::MAX, None)
            .unwrap();
        assert_eq!(selected.len(), 1);
        block
            .samples(&selected[0], i64::MIN, i64::MAX)
            .map(Result::unwrap)
            .collect()
    }

    #[test]
    fn overlapping_blocks_merge_with_duplicates_once_and_tombstones_applied() {
        let dir = TempDir::new("compactor-merge").unwrap();
        // a: 0..=200 step 10 in the first, 100..=300 step 10 (other values)
        // in the second: 100..=200 are in both, the first block's kept.
        let first = write(
            dir.path(),
            &[
                ("a", samples((0..=200).step_by(10), 0.0)),
                ("b", samples([5, 15], 0.0)),
            ],
            Some((
                "b",
                Interval {
                    min_time: 10,
                    max_time: 20,
                },
            )),
        );
        let second = write(
            dir.path(),
            &[("a", samples((100..=300).step_by(10), 1000.0))],
            None,
        );
        let out = dir.path().join("out");
        let meta = write_merged(&[&first, &second], &out).unwrap().unwrap();
        let merged = Block::open_dir(out.join(meta.ulid.to_string())).unwrap();

        let mut expected = samples((0..=200).step_by(10), 0.0);
        expected.extend(samples((210..=300).step_by(10), 1000.0));
        assert_eq!(read_all(&merged, "a"), expected);
        assert_eq!(
            read_all(&merged, "b"),
            samples([5], 0.0),
            "the tombstone applied"
        );
        assert!(merged.tombstones().is_empty());
        assert_eq!(meta.stats.num_samples, expected.len() as u64 + 1);
        assert_eq!(meta.stats.num_series, 2);
        assert_eq!((meta.min_time, meta.max_time), (0, 301));
        assert_eq!(meta.compaction.level, 2);
        let mut sources = vec![first.meta().ulid, second.meta().ulid];
        sources.sort();
        assert_eq!(meta.compaction.sources, sources);
        assert_eq!(meta.compaction.parents.len(), 2);
        assert_eq!(meta.compaction.parents[1].ulid, second.meta().ulid);
        assert_eq!(*merged.meta(), meta, "meta.json on disk has the lineage");
    }

    #[test]
    fn a_merge_of_merged_blocks_goes_up_a_level_and_keeps_all_sources() {
        let dir = TempDir::new("compactor-lineage").unwrap();
        let blocks: Vec<Block> = (0..4)
            .map(|k| {
                write(
                    dir.path(),
                    &[("a", samples([k * 100, k * 100 + 50], 0.0))],
                    None,
                )
            })
            .collect();
        let out = dir.path().join("out");
        let left = write_merged(&[&blocks[0], &blocks[1]], &out)
            .unwrap()
            .unwrap();
        let right = write_merged(&[&blocks[2], &blocks[3]], &out)
            .unwrap()
            .unwrap();
        let left = Block::open_dir(out.join(left.ulid.to_string())).unwrap();
        let right = Block::open_dir(out.join(right.ulid.to_string())).unwrap();
        let top_meta = write_merged(&[&left, &right], &out).unwrap().unwrap();
        assert_eq!(top_meta.compaction.level, 3);
        assert_eq!(top_meta.compaction.sources.len(), 4);
        let parents: Vec<_> = top_meta
            .compaction
            .parents
            .iter()
            .map(|parent| parent.ulid)
            .collect();
        assert_eq!(parents, [left.meta().ulid, right.meta().ulid]);
        let top = Block::open_dir(out.join(top_meta.ulid.to_string())).unwrap();
        assert_eq!(read_all(&top, "a").len(), 8);
    }

    #[test]
    fn a_source_that_does_not_read_fails_the_merge() {
        let dir = TempDir::new("compactor-corrupt").unwrap();
        let good = write(dir.path(), &[("a", samples(0..50, 0.0))], None);
        let meta = write(dir.path(), &[("a", samples(100..150, 0.0))], None)
            .meta()
            .clone();
        let segment = dir.path().join(meta.ulid.to_string()).join("chunks/000001");
        let mut bytes = std::fs::read(&segment).unwrap();
        let middle = bytes.len() / 2;
        bytes[middle] ^= 0xFF;
        std::fs::write(&segment, bytes).unwrap();
        let broken = Block::open_dir(dir.path().join(meta.ulid.to_string())).unwrap();
        let out = dir.path().join("out");
        assert!(write_merged(&[&good, &broken], &out).is_err());
        assert!(
            write_merged(&[&broken], &out).is_err(),
            "never taken for empty"
        );
    }

    #[test]
    fn a_merge_whose_samples_are_all_deleted_writes_nothing() {
        let dir = TempDir::new("compactor-empty").unwrap();
        let gone = Interval {
            min_time: 0,
            max_time: 100,
        };
        let only = write(
            dir.path(),
            &[("a", samples([1, 2], 0.0))],
            Some(("a", gone)),
        );
        assert!(
            write_merged(&[&only], &dir.path().join("out"))
                .unwrap()
                .is_none()
        );
    }
}
