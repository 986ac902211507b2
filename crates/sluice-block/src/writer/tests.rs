use super::*;
use crate::block::{Block, Shard};
use crate::chunkenc::STALE_NAN;
use crate::matcher::{MatchOp, Matcher};

pub(crate) fn temp_dir(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!(
        "sluice-block-{name}-{}-{}",
        std::process::id(),
        Ulid::generate()
    ));
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

fn series_samples(seed: i64, count: i64) -> Vec<Sample> {
    (0..count)
        .map(|index| {
            let v = match index % 97 {
                13 => f64::NAN,
                50 => STALE_NAN,
                _ => (seed * 1000 + index) as f64 * 0.25,
            };
            Sample {
                t: 1_700_000_000_000 + index * 15_000 + (index % 3),
                v,
            }
        })
        .collect()
}

fn write_test_block(dir: &Path) -> (BlockMeta, Vec<(Labels, Vec<Sample>)>) {
    let mut writer = BlockWriter::new().segment_size(4096);
    let mut expected = Vec::new();
    for job in ["api", "db", "web"] {
        for instance in 0..4 {
            let labels = Labels::from_pairs(&[
                ("__name__", "up"),
                ("job", job),
                ("instance", &format!("i{instance}")),
            ]);
            let samples = series_samples(instance, 300 + instance * 10);
            writer.add_series(labels.clone(), samples.clone()).unwrap();
            expected.push((labels, samples));
        }
    }
    expected.sort_by(|left, right| left.0.cmp(&right.0));
    (writer.write(dir).unwrap(), expected)
}

fn read_all(
    block: &Block,
    matchers: &[Matcher],
    min_time: i64,
    max_time: i64,
    shard: Option<Shard>,
) -> Vec<(Labels, Vec<Sample>)> {
    block
        .select(matchers, min_time, max_time, shard)
        .unwrap()
        .into_iter()
        .map(|series| {
            let samples = block
                .samples(&series, min_time, max_time)
                .collect::<Result<Vec<_>>>()
                .unwrap();
            (series.labels, samples)
        })
        .collect()
}

#[test]
fn a_written_block_reads_back_sample_for_sample() {
    let dir = temp_dir("roundtrip");
    let (meta, expected) = write_test_block(&dir);
    let block = Block::open_dir(dir.join(meta.ulid.to_string())).unwrap();
    assert_eq!(block.meta(), &meta);
    assert_eq!(meta.stats.num_series, 12);
    assert_eq!(
        meta.stats.num_samples,
        expected
            .iter()
            .map(|(_, samples)| samples.len() as u64)
            .sum::<u64>()
    );
    assert!(meta.stats.num_chunks >= 12 * 3);
    let everything = read_all(&block, &[], i64::MIN, i64::MAX, None);
    assert_eq!(everything, expected);
    let matcher = Matcher::new(MatchOp::Regex, "job", "api|web").unwrap();
    let window = (1_700_000_000_000 + 1_000_000, 1_700_000_000_000 + 2_000_000);
    let some = read_all(&block, &[matcher], window.0, window.1, None);
    assert_eq!(some.len(), 8);
    for (labels, samples) in some {
        let all = &expected
            .iter()
            .find(|(expected_labels, _)| *expected_labels == labels)
            .unwrap()
            .1;
        let inside: Vec<Sample> = all
            .iter()
            .copied()
            .filter(|sample| sample.t >= window.0 && sample.t <= window.1)
            .collect();
        assert_eq!(samples, inside);
    }
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn a_block_written_from_sorted_series_reads_back_and_bad_order_is_refused() {
    let dir = temp_dir("sorted");
    let (_, expected) = write_test_block(&dir.join("reference"));
    let writer = BlockWriter::new().segment_size(4096);
    let meta = writer
        .write_sorted(&dir, expected.iter().cloned().map(Ok))
        .unwrap();
    let block = Block::open_dir(dir.join(meta.ulid.to_string())).unwrap();
    assert_eq!(read_all(&block, &[], i64::MIN, i64::MAX, None), expected);
    assert_eq!(meta.stats.num_series, 12);

    let reversed = expected.iter().rev().cloned().map(Ok);
    let error = BlockWriter::new().write_sorted(&dir, reversed).unwrap_err();
    assert!(error.to_string().contains("in label order"), "{error}");
    let failing = [
        Ok(expected[0].clone()),
        Err(Error::InvalidInput("gone".into())),
    ];
    assert!(BlockWriter::new().write_sorted(&dir, failing).is_err());
    let empty = BlockWriter::new().write_sorted(&dir, std::iter::empty());
    assert!(empty.is_err());
    // The failed writes left nothing behind: only the two blocks.
    let left = std::fs::read_dir(&dir).unwrap().count();
    assert_eq!(left, 2, "the reference folder and the sorted block");
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn shards_partition_the_series() {
    let dir = temp_dir("shards");
    let (meta, expected) = write_test_block(&dir);
    let block = Block::open_dir(dir.join(meta.ulid.to_string())).unwrap();
    let mut union: Vec<(Labels, Vec<Sample>)> = (0..3)
        .flat_map(|index| {
            read_all(
                &block,
                &[],
                i64::MIN,
                i64::MAX,
                Some(Shard { index, count: 3 }),
            )
        })
        .collect();
    union.sort_by(|left, right| left.0.cmp(&right.0));
    assert_eq!(union, expected);
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn tombstones_remove_deleted_samples() {
    let dir = temp_dir("tombstones");
    let labels = Labels::from_pairs(&[("__name__", "x")]);
    let samples: Vec<Sample> = (0..500)
        .map(|index| Sample {
            t: index * 1000,
            v: index as f64,
        })
        .collect();
    let mut writer = BlockWriter::new();
    writer.add_series(labels.clone(), samples.clone()).unwrap();
    writer.delete(
        labels.clone(),
        Interval {
            min_time: 10_000,
            max_time: 20_000,
        },
    );
    // Covers the whole second chunk (samples 120..240) and more.
    writer.delete(
        labels,
        Interval {
            min_time: 100_000,
            max_time: 300_500,
        },
    );
    let meta = writer.write(&dir).unwrap();
    assert_eq!(meta.stats.num_tombstones, 2);
    let block = Block::open_dir(dir.join(meta.ulid.to_string())).unwrap();
    let read = read_all(&block, &[], i64::MIN, i64::MAX, None);
    let kept: Vec<Sample> = samples
        .into_iter()
        .filter(|sample| {
            !(10_000..=20_000).contains(&sample.t) && !(100_000..=300_500).contains(&sample.t)
        })
        .collect();
    assert_eq!(read[0].1, kept);
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn bad_input_is_refused() {
    let mut writer = BlockWriter::new();
    let labels = Labels::from_pairs(&[("a", "b")]);
    let backwards = vec![Sample { t: 2, v: 0.0 }, Sample { t: 2, v: 1.0 }];
    assert!(matches!(
        writer.add_series(labels.clone(), backwards),
        Err(Error::InvalidInput(_))
    ));
    writer
        .add_series(labels.clone(), vec![Sample { t: 1, v: 0.0 }])
        .unwrap();
    assert!(matches!(
        writer.add_series(labels, vec![Sample { t: 1, v: 0.0 }]),
        Err(Error::InvalidInput(_))
    ));
    assert!(matches!(
        BlockWriter::new().write(&std::env::temp_dir()),
        Err(Error::InvalidInput(_))
    ));
}

/// A directory that counts the reads it serves.
struct Counting {
    inner: crate::read::LocalDir,
    reads: std::sync::atomic::AtomicUsize,
}

impl crate::read::RangeRead for Counting {
    fn read_range(&self, file: &str, range: std::ops::Range<u64>) -> Result<bytes::Bytes> {
        self.reads
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        self.inner.read_range(file, range)
    }

    fn read_ranges(
        &self,
        file: &str,
        ranges: &[std::ops::Range<u64>],
    ) -> Result<Vec<bytes::Bytes>> {
        // One batch: one request, as an object store makes it.
        self.reads
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        ranges
            .iter()
            .map(|range| self.inner.read_range(file, range.clone()))
            .collect()
    }

    fn file_len(&self, file: &str) -> Result<u64> {
        self.inner.file_len(file)
    }

    fn exists(&self, file: &str) -> Result<bool> {
        self.inner.exists(file)
    }

    fn list(&self, dir: &str) -> Result<Vec<String>> {
        self.inner.list(dir)
    }
}

#[test]
fn caches_batch_a_selections_reads_and_serve_the_next() {
    let dir = temp_dir("caches");
    let (meta, expected) = write_test_block(&dir);
    let counting = std::sync::Arc::new(Counting {
        inner: crate::read::LocalDir::new(dir.join(meta.ulid.to_string())),
        reads: 0.into(),
    });
    let caches = crate::cache::BlockCaches::with_sizes(1 << 20, 1 << 20);
    let block = Block::open_with_caches(counting.clone(), &caches).unwrap();
    let reads = || counting.reads.load(std::sync::atomic::Ordering::Relaxed);
    let opened = reads();
    assert_eq!(read_all(&block, &[], i64::MIN, i64::MAX, None), expected);
    // Postings, series entries, then the chunks of each of the segments.
    let segments = block.segment_count();
    assert_eq!(reads() - opened, 2 + segments, "{segments} segments");
    let cold = reads();
    assert_eq!(read_all(&block, &[], i64::MIN, i64::MAX, None), expected);
    // Warm: the series entries only.
    assert_eq!(reads() - cold, 1);
    let chunks = caches.chunks.as_ref().unwrap().stats();
    assert_eq!(chunks.requests, 2 * meta.stats.num_chunks);
    assert_eq!(chunks.hits, meta.stats.num_chunks);
    let postings = caches.postings.as_ref().unwrap().stats();
    assert_eq!((postings.requests, postings.hits), (2, 1));
    std::fs::remove_dir_all(&dir).unwrap();
}
