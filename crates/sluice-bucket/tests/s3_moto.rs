//! The S3 backend against a real S3-API server: moto, started by the test on
//! a free loopback port. A block written by `BlockWriter` is uploaded, found
//! by `discover` under a tenant, and read back by ranged GETs.

use std::sync::Arc;

use sluice_block::{Block, BlockWriter, Labels, Matcher, Sample};
use sluice_bucket::{Bucket, BucketConfig, discover};
use sluice_testkit::{MotoServer, TempDir};

fn written_block(parent: &std::path::Path) -> (sluice_block::Ulid, Vec<Sample>) {
    let samples: Vec<Sample> = (0..1000)
        .map(|i| Sample {
            t: i * 15_000,
            v: (i % 17) as f64,
        })
        .collect();
    let mut writer = BlockWriter::new();
    for job in ["api", "db"] {
        writer
            .add_series(
                Labels::from_pairs(&[("__name__", "up"), ("job", job)]),
                samples.clone(),
            )
            .unwrap();
    }
    (writer.write(parent).unwrap().ulid, samples)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_block_round_trips_through_s3() {
    let moto = MotoServer::start().await;
    moto.create_bucket("blocks").await;
    let config = BucketConfig::s3_plain_http(moto.endpoint(), "blocks", "test", "test");
    let bucket = Bucket::open(&config, tokio::runtime::Handle::current()).unwrap();
    let local = TempDir::new("s3-block").unwrap();
    let (ulid, samples) = written_block(local.path());

    // The bucket's calls block their thread: run them off the runtime.
    let read_back = tokio::task::spawn_blocking(move || {
        bucket
            .upload_block(
                &local.path().join(ulid.to_string()),
                &format!("team-a/{ulid}"),
            )
            .unwrap();
        let found = discover(&bucket).unwrap();
        assert_eq!(found.len(), 1, "{found:?}");
        assert_eq!((found[0].tenant.as_str(), found[0].ulid), ("team-a", ulid));
        let dir = found[0].dir(&bucket);
        assert!(dir.size().unwrap() > 0);
        let block = Block::open(Arc::new(dir)).unwrap();
        let series = block
            .select(&[Matcher::equal("job", "db")], 0, i64::MAX, None)
            .unwrap();
        assert_eq!(series.len(), 1);
        let range = (100 * 15_000, 900 * 15_000);
        block
            .samples(&series[0], range.0, range.1)
            .collect::<Result<Vec<Sample>, _>>()
            .unwrap()
    })
    .await
    .unwrap();
    assert_eq!(read_back, samples[100..=900].to_vec());
    moto.stop().await;
}
