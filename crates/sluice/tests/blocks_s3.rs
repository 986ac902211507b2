//! The engine over blocks in S3 (moto): what a query costs in ranged GETs,
//! cold and with the in-process postings and chunks caches warm. A cold
//! query fetches each block's postings, series entries and chunks in a few
//! coalesced GETs; the same query again needs only the series entries.

mod common;

use std::time::Duration;

use common::compare::seconds;
use common::start_sluice;
use sluice_testkit::{Dataset, MotoServer, dataset_blocks, form_urlencode, http_get};

const HOUR_MS: i64 = 3_600_000;

async fn upload_dataset(moto: &MotoServer) -> usize {
    let config = common::moto_bucket_config(moto);
    let bucket = sluice_bucket::Bucket::open(&config, tokio::runtime::Handle::current()).unwrap();
    tokio::task::spawn_blocking(move || {
        let template = dataset_blocks(&Dataset::new());
        let mut uploaded = 0;
        for entry in std::fs::read_dir(&template).unwrap() {
            let entry = entry.unwrap();
            let name = entry.file_name().to_string_lossy().into_owned();
            if entry.path().join("meta.json").exists() {
                bucket
                    .upload_block(&entry.path(), &format!("anonymous/{name}"))
                    .unwrap();
                uploaded += 1;
            }
        }
        uploaded
    })
    .await
    .unwrap()
}

async fn query_range(sluice: &str, query: &str, start: i64, end: i64) -> String {
    let params = form_urlencode(&[
        ("query", query),
        ("start", &seconds(start)),
        ("end", &seconds(end)),
        ("step", "60"),
    ]);
    let (status, _, body) = http_get(&format!("{sluice}/api/v1/query_range?{params}")).await;
    let body = String::from_utf8_lossy(&body).into_owned();
    assert_eq!(status, 200, "{body}");
    body
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cached_queries_over_s3_need_few_gets() {
    let moto = MotoServer::start().await;
    moto.create_bucket("blocks").await;
    let blocks = upload_dataset(&moto).await;
    let mut flags = common::moto_flags(&moto);
    // Every answer from the engine, so that the second run reads blocks.
    flags.push("-query-frontend.cache-results=false".to_owned());
    // One evaluation per query: 16 shard legs each read the series
    // entries of every block again (238 GETs cold, not 20).
    flags.push("-query-frontend.parallelize-shardable-queries=false".to_owned());
    let sluice = start_sluice("s3-gets", &flags).await;
    sluice.wait_ready_status(200, Duration::from_secs(30)).await;

    let first = Dataset::new().start_ms();
    let (start, end) = (first + 6 * HOUR_MS + 7_000, first + 12 * HOUR_MS + 7_000);
    let query = "sum by (job) (rate(http_requests_total{code=\"200\"}[5m]))";
    let before = moto.ranged_gets();
    let cold = query_range(&sluice.url(), query, start, end).await;
    let cold_gets = moto.ranged_gets() - before;
    let warm = query_range(&sluice.url(), query, start, end).await;
    let warm_gets = moto.ranged_gets() - before - cold_gets;
    assert_eq!(warm, cold);

    let metric = |name: &'static str| sluice.metric(name);
    let chunk_requests = metric("sluice_bucket_store_cache_requests_total").await;
    let chunk_hits = metric("sluice_bucket_store_cache_hits_total").await;
    let counted = metric("sluice_objstore_bucket_operations_total").await;
    println!(
        "{blocks} blocks in S3; {query} over 6 h: {cold_gets} ranged GETs cold, {warm_gets} warm; \
         cache hits {chunk_hits} of {chunk_requests} lookups; {counted} bucket operations in all"
    );
    // Blocks touched: 06:00 minus 5 m to 12:00, 2 h blocks: 5. Cold,
    // each needs its postings, its series entries and its chunks: a few
    // GETs each, not one per series or per chunk (24 series, 3 chunks each).
    assert!(cold_gets <= 5 * 4, "{cold_gets} GETs cold");
    // Warm, only the series entries are read again.
    assert!(warm_gets <= 5, "{warm_gets} GETs warm");
    assert!(
        chunk_hits * 2.0 >= chunk_requests,
        "{chunk_hits} of {chunk_requests}"
    );
    moto.stop().await;
}
