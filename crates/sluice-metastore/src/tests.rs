use std::path::Path;

use sluice_block::{BlockWriter, Labels, Sample};
use sluice_bucket::BucketConfig;
use sluice_testkit::TempDir;

use super::*;

/// A block of one series sampled every 15 s over `[start, end)` (ms).
fn write_block(parent: &Path, start: i64, end: i64) -> std::path::PathBuf {
    std::fs::create_dir_all(parent).unwrap();
    let mut writer = BlockWriter::new();
    let samples = (start..end)
        .step_by(15_000)
        .map(|t| Sample { t, v: 1.0 })
        .collect();
    writer
        .add_series(Labels::from_pairs(&[("__name__", "up")]), samples)
        .unwrap();
    let meta = writer.write(parent).unwrap();
    parent.join(meta.ulid.to_string())
}

fn metastore_over(dir: &Path, runtime: &tokio::runtime::Runtime) -> Arc<Metastore> {
    let config = BucketConfig {
        filesystem_dir: dir.to_owned(),
        ..BucketConfig::default()
    };
    let bucket = Bucket::open(&config, runtime.handle().clone()).unwrap();
    Metastore::new(bucket, &prometheus::Registry::new())
}

const HOUR: i64 = 3_600_000;

#[test]
fn answers_which_blocks_overlap_a_range() {
    let runtime = sluice_testkit::io_runtime();
    let dir = TempDir::new("metastore").unwrap();
    for window in 0..4 {
        write_block(
            &dir.path().join("t"),
            window * 2 * HOUR,
            (window + 1) * 2 * HOUR,
        );
    }
    let metastore = metastore_over(dir.path(), &runtime);
    let report = metastore.sync().unwrap();
    assert_eq!((report.blocks, report.loaded, report.failed), (4, 4, 0));
    let starts = |from, to| -> Vec<i64> {
        metastore
            .blocks("t", from, to)
            .iter()
            .map(|loaded| loaded.info.min_time)
            .collect()
    };
    assert_eq!(starts(3 * HOUR, 5 * HOUR), vec![2 * HOUR, 4 * HOUR]);
    // maxTime is exclusive: a range starting at a block's end misses it.
    let first_end = metastore.blocks("t", 0, 0)[0].info.max_time;
    assert_eq!(starts(first_end - 1, first_end - 1), vec![0]);
    assert!(starts(first_end, first_end).is_empty());
    assert!(metastore.blocks("other", 0, i64::MAX).is_empty());
    let info = &metastore.blocks("t", 0, 0)[0].info;
    assert_eq!((info.level, info.num_series, info.num_samples), (1, 1, 480));
    assert!(info.size_bytes > 0 && info.num_chunks == 4);

    let lookups = 100_000;
    let started = Instant::now();
    for i in 0..lookups {
        assert!(metastore.blocks("t", i, i + HOUR).len() == 1);
    }
    let per_lookup = started.elapsed() / lookups as u32;
    println!("metastore lookup: {per_lookup:?}");
    assert!(per_lookup < Duration::from_micros(50), "{per_lookup:?}");
}

/// Damages a copy of a good block in one of the ways a bucket can hold.
fn damage(block: &Path, how: &str) {
    let index = block.join("index");
    match how {
        "garbage meta" => std::fs::write(block.join("meta.json"), "{not json").unwrap(),
        "unknown version" => {
            let meta = std::fs::read_to_string(block.join("meta.json")).unwrap();
            std::fs::write(
                block.join("meta.json"),
                meta.replace("\"version\": 1", "\"version\": 7"),
            )
            .unwrap()
        }
        "truncated index" => {
            let bytes = std::fs::read(&index).unwrap();
            std::fs::write(&index, &bytes[..bytes.len() / 2]).unwrap()
        }
        "bad crc" => {
            let mut bytes = std::fs::read(&index).unwrap();
            // Inside the symbol table, which opening checks.
            bytes[12] ^= 0xff;
            std::fs::write(&index, bytes).unwrap()
        }
        "missing chunks" => std::fs::remove_file(block.join("chunks/000001")).unwrap(),
        other => panic!("unknown damage {other}"),
    }
}

#[test]
fn bad_blocks_are_skipped_logged_and_counted_once() {
    let runtime = sluice_testkit::io_runtime();
    let dir = TempDir::new("metastore").unwrap();
    let tenant = dir.path().join("t");
    let good = write_block(&tenant, 0, 2 * HOUR);
    let damages = [
        "garbage meta",
        "unknown version",
        "truncated index",
        "bad crc",
        "missing chunks",
    ];
    for how in damages {
        damage(&write_block(&tenant, 0, 2 * HOUR), how);
    }
    let metastore = metastore_over(dir.path(), &runtime);
    let report = metastore.sync().unwrap();
    assert_eq!(
        (report.loaded, report.failed),
        (1, damages.len()),
        "{report:?}"
    );
    assert_eq!(metastore.load_failures(), damages.len() as u64);
    // Each is remembered for queries to warn about, with meta.json's range
    // when it still reads; an unreadable one overlaps any range.
    let skipped = metastore.skipped("t", 0, i64::MAX);
    assert_eq!(skipped.len(), damages.len());
    let ranged = skipped.iter().filter(|block| block.range.is_some()).count();
    assert_eq!(ranged, 3, "{skipped:?}");
    assert_eq!(metastore.skipped("t", 5 * HOUR, 6 * HOUR).len(), 2);
    assert!(metastore.skipped("other", 0, i64::MAX).is_empty());
    assert!(skipped[0].warning().contains("was skipped"), "{skipped:?}");
    let found = metastore.blocks("t", 0, i64::MAX);
    assert_eq!(found.len(), 1);
    assert_eq!(
        found[0].info.ulid.to_string(),
        good.file_name().unwrap().to_str().unwrap()
    );
    // The next sync neither reloads nor recounts them.
    let again = metastore.sync().unwrap();
    assert_eq!(
        (again.blocks, again.loaded, again.failed),
        (1, 0, damages.len())
    );
    assert_eq!(metastore.load_failures(), damages.len() as u64);
    // A block that leaves the bucket leaves the metastore.
    std::fs::remove_dir_all(&good).unwrap();
    let after = metastore.sync().unwrap();
    assert_eq!((after.blocks, after.dropped), (0, 1));
    assert!(metastore.blocks("t", 0, i64::MAX).is_empty());
    assert_eq!(metastore.skipped("t", 0, i64::MAX).len(), damages.len());
}
