use std::path::Path;
use std::sync::Arc;

use sluice_block::{Block, BlockWriter, Labels, Matcher, Sample};
use sluice_testkit::TempDir;

use super::*;
use crate::BucketConfig;

/// Writes a one-series block of `value`s into `parent` and returns its ULID.
fn write_block(parent: &Path, value: f64) -> Ulid {
    std::fs::create_dir_all(parent).unwrap();
    let mut writer = BlockWriter::new();
    let samples = (0..300)
        .map(|i| Sample {
            t: i * 15_000,
            v: value,
        })
        .collect();
    writer
        .add_series(
            Labels::from_pairs(&[("__name__", "up"), ("job", "a")]),
            samples,
        )
        .unwrap();
    writer.write(parent).unwrap().ulid
}

fn bucket_at(dir: &Path, runtime: &tokio::runtime::Runtime) -> Bucket {
    let config = BucketConfig {
        filesystem_dir: dir.to_owned(),
        ..BucketConfig::default()
    };
    Bucket::open(&config, runtime.handle().clone()).unwrap()
}

#[test]
fn a_prometheus_data_directory_is_the_anonymous_tenant() {
    let runtime = sluice_testkit::io_runtime();
    let dir = TempDir::new("bucket-layout").unwrap();
    let kept = write_block(dir.path(), 1.0);
    let deleted = write_block(dir.path(), 2.0);
    std::fs::write(
        dir.path().join(deleted.to_string()).join(DELETION_MARK),
        "{}",
    )
    .unwrap();
    std::fs::create_dir_all(dir.path().join("wal")).unwrap();
    std::fs::write(dir.path().join("wal/00000000"), "x").unwrap();
    std::fs::create_dir_all(dir.path().join("chunks_head")).unwrap();
    std::fs::write(dir.path().join("chunks_head/000001"), "x").unwrap();
    std::fs::write(dir.path().join("lock"), "").unwrap();

    let bucket = bucket_at(dir.path(), &runtime);
    let found = discover(&bucket).unwrap();
    assert_eq!(found.len(), 1, "{found:?}");
    assert_eq!(found[0].tenant, ANONYMOUS_TENANT);
    assert_eq!(found[0].ulid, kept);

    let block = Block::open(Arc::new(found[0].dir(&bucket))).unwrap();
    let series = block
        .select(&[Matcher::equal("job", "a")], 0, i64::MAX, None)
        .unwrap();
    let values: Vec<f64> = block
        .samples(&series[0], 0, i64::MAX)
        .map(|sample| sample.unwrap().v)
        .collect();
    assert_eq!(values.len(), 300);
    assert!(values.iter().all(|value| *value == 1.0));
}

#[test]
fn tenants_are_listed_or_read_from_their_bucket_index() {
    let runtime = sluice_testkit::io_runtime();
    let dir = TempDir::new("bucket-layout").unwrap();
    let listed = write_block(&dir.path().join("team-a"), 1.0);
    let marked = write_block(&dir.path().join("team-a"), 1.0);
    std::fs::create_dir_all(dir.path().join("team-a/markers")).unwrap();
    std::fs::write(
        dir.path()
            .join(format!("team-a/markers/{marked}-deletion-mark.json")),
        "{}",
    )
    .unwrap();
    let indexed = write_block(&dir.path().join("team-b"), 1.0);
    // Present but not in the index yet: the index, not a listing, decides.
    let _unindexed = write_block(&dir.path().join("team-b"), 1.0);
    let json = format!(
        r#"{{"version":1,"blocks":[{{"block_id":"{indexed}"}}],"block_deletion_marks":[]}}"#
    );
    std::fs::write(
        dir.path().join("team-b").join(BUCKET_INDEX_FILE),
        crate::index::gzip(&json),
    )
    .unwrap();

    let bucket = bucket_at(dir.path(), &runtime);
    let found: Vec<(String, Ulid, bool)> = discover(&bucket)
        .unwrap()
        .into_iter()
        .map(|block| (block.tenant, block.ulid, block.files.is_some()))
        .collect();
    assert_eq!(
        found,
        vec![
            ("team-a".to_owned(), listed, true),
            ("team-b".to_owned(), indexed, false),
        ]
    );
    // A block known from the index lists its own files on first use.
    let location = discover(&bucket).unwrap().pop().unwrap();
    let block_dir = location.dir(&bucket);
    assert!(block_dir.size().unwrap() > 0);
    assert!(Block::open(Arc::new(block_dir)).is_ok());
}
