//! A whole block with damaged bytes, read the way a query reads it: open
//! (meta.json, index header, tombstones, chunk segment headers), select
//! with every kind of matcher, shard, and iterate every selected series'
//! samples. Any file may be cut short or have bytes flipped; the reader
//! must return errors, never panic. The per-decoder property tests sit
//! next to each decoder; this one checks the decoders together, where one
//! file's bad bytes (an index's chunk reference, a tombstone's series)
//! steer the reading of another.

use std::collections::BTreeMap;
use std::sync::{Arc, OnceLock};

use proptest::prelude::*;
use sluice_block::{
    Block, BlockCaches, BlockWriter, Interval, Labels, MatchOp, Matcher, MemDir, STALE_NAN, Sample,
    Shard,
};

/// The files of a small written block: a few series over two chunk
/// segments, staleness markers and NaNs, one tombstone.
fn pristine() -> &'static BTreeMap<String, Vec<u8>> {
    static FILES: OnceLock<BTreeMap<String, Vec<u8>>> = OnceLock::new();
    FILES.get_or_init(|| {
        let parent = std::env::temp_dir().join(format!("sluice-mutated-{}", std::process::id()));
        let mut writer = BlockWriter::new().segment_size(2048);
        for (job, count) in [("api", 400), ("db", 130), ("web", 7)] {
            let labels = Labels::from_pairs(&[("__name__", "up"), ("job", job)]);
            let samples: Vec<Sample> = (0..count)
                .map(|i| Sample {
                    t: 1_700_000_000_000 + i * 15_000,
                    v: match i % 50 {
                        7 => f64::NAN,
                        9 => STALE_NAN,
                        _ => i as f64 * 1.5,
                    },
                })
                .collect();
            writer.add_series(labels, samples).unwrap();
        }
        let deleted = Interval {
            min_time: 1_700_000_000_000 + 30 * 15_000,
            max_time: 1_700_000_000_000 + 60 * 15_000,
        };
        writer.delete(
            Labels::from_pairs(&[("__name__", "up"), ("job", "api")]),
            deleted,
        );
        let meta = writer.write(&parent).unwrap();
        let dir = parent.join(meta.ulid.to_string());
        let mut files = BTreeMap::new();
        for name in ["meta.json", "index", "tombstones"] {
            files.insert(name.to_owned(), std::fs::read(dir.join(name)).unwrap());
        }
        for entry in std::fs::read_dir(dir.join("chunks")).unwrap() {
            let entry = entry.unwrap();
            let name = format!("chunks/{}", entry.file_name().to_string_lossy());
            files.insert(name, std::fs::read(entry.path()).unwrap());
        }
        std::fs::remove_dir_all(&parent).unwrap();
        assert!(files.len() >= 5, "{:?}", files.keys());
        files
    })
}

/// Reads everything a query could: every error is fine, a panic is not.
fn read_everything(dir: MemDir) -> usize {
    // With caches, so that batched prefetches meet the damage too.
    let caches = BlockCaches::with_sizes(1 << 16, 1 << 16);
    let Ok(block) = Block::open_with_caches(Arc::new(dir), &caches) else {
        return 0;
    };
    let selections = [
        vec![Matcher::equal("__name__", "up")],
        vec![Matcher::new(MatchOp::Regex, "job", "a.*|w.+").unwrap()],
        vec![Matcher::new(MatchOp::NotEqual, "job", "db").unwrap()],
        vec![Matcher::new(MatchOp::NotRegex, "missing", ".+").unwrap()],
    ];
    let mut read = 0;
    for (index, matchers) in selections.iter().enumerate() {
        let shard = (index == 3).then_some(Shard { index: 1, count: 2 });
        let Ok(series) = block.select(matchers, i64::MIN, i64::MAX, shard) else {
            continue;
        };
        for one in &series {
            read += block.samples(one, i64::MIN, i64::MAX).take(10_000).count();
            for chunk in &one.chunks {
                let _ = block.chunk(chunk).and_then(|chunk| chunk.float_samples());
            }
        }
    }
    let _ = block.index().label_values("job");
    read
}

#[test]
fn the_pristine_block_reads_whole() {
    let mut dir = MemDir::new();
    for (name, bytes) in pristine() {
        dir.insert(name.clone(), bytes.clone());
    }
    // All four selections over 3 + 3 + 2 + (shard of 3) series.
    assert!(read_everything(dir) > 1000);
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(sluice_testkit::fuzz_cases(512)))]

    #[test]
    fn damaged_blocks_never_panic(
        file in 0usize..8,
        flips in prop::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 0..8),
        cut in prop::option::of(any::<prop::sample::Index>()),
        drop_file in any::<bool>(),
    ) {
        let files = pristine();
        let damaged = files.keys().nth(file % files.len()).unwrap().clone();
        let mut dir = MemDir::new();
        for (name, bytes) in files {
            let mut bytes = bytes.clone();
            if *name == damaged {
                if drop_file && file >= files.len() {
                    continue;
                }
                for (index, byte) in &flips {
                    let position = index.index(bytes.len().max(1));
                    if let Some(target) = bytes.get_mut(position) {
                        *target ^= byte;
                    }
                }
                if let Some(cut) = cut {
                    bytes.truncate(cut.index(bytes.len() + 1));
                }
            }
            dir.insert(name.clone(), bytes);
        }
        read_everything(dir);
    }
}
