//! The compactor end to end, over one data directory and three sluice
//! processes in turn, with one-minute blocks (`-compactor.block-ranges=1m,3m,6m`):
//!
//! 1. without a compactor: samples of eight minutes arrive by remote
//!    write, one minute at a time, each minute cut into a block by
//!    `POST /ingester/flush`; the queries' answers are recorded;
//! 2. with the compactor: the six oldest blocks become one level-3 block
//!    (three at a time into 3m blocks, then both into a 6m one), their
//!    sources are deleted after the deletion delay, and every query
//!    answers exactly as before;
//! 3. with a retention period reaching past the merged block only: it is
//!    marked, deleted, and its time answers empty while later time answers
//!    as before.

mod common;

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use common::compare::{answer, seconds};
use common::{SluiceProcess, start_sluice};
use sluice_remotewrite::proto::{TimeSeries, WriteRequest};
use sluice_remotewrite::{Label, Sample};
use sluice_testkit::TempDir;

const MINUTE: i64 = 60_000;
const SERIES: usize = 20;
const STEP: i64 = 5_000;

fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64
}

/// Every series' samples in `[start, start + 1m)`, one every 5 s.
fn minute_of_samples(start: i64) -> Vec<u8> {
    let timeseries = (0..SERIES)
        .map(|s| TimeSeries {
            labels: vec![
                Label {
                    name: "__name__".into(),
                    value: "compactor_e2e".into(),
                },
                Label {
                    name: "series".into(),
                    value: format!("{s:02}"),
                },
            ],
            samples: (0..MINUTE / STEP)
                .map(|i| Sample {
                    timestamp: start + i * STEP,
                    value: (start / STEP + i) as f64 * (s + 1) as f64,
                })
                .collect(),
            ..TimeSeries::default()
        })
        .collect();
    sluice_remotewrite::encode(&WriteRequest {
        timeseries,
        ..WriteRequest::default()
    })
}

async fn post(sluice: &SluiceProcess, path: &str, body: Vec<u8>) {
    let (status, answer) = sluice.push_to(path, body).await;
    assert!(status == 204 || status == 200, "{path}: {status} {answer}");
}

/// The queries compared, over `[start, end]` every 15 s.
const QUERIES: [&str; 4] = [
    "compactor_e2e",
    "sum(rate(compactor_e2e[1m]))",
    "count_over_time(compactor_e2e{series=\"07\"}[2m])",
    "max by (series) (compactor_e2e) - min by (series) (compactor_e2e offset 30s)",
];

async fn answers(sluice: &SluiceProcess, start: i64, end: i64) -> Vec<String> {
    let mut bodies = Vec::new();
    for query in QUERIES {
        let params = [
            ("query", query),
            ("start", &seconds(start)),
            ("end", &seconds(end)),
            ("step", "15"),
        ];
        let (status, body) = answer(&sluice.url(), "/api/v1/query_range", &params).await;
        assert_eq!(status, 200, "{query}: {body}");
        bodies.push(body);
    }
    bodies
}

async fn start(dir: &TempDir, name: &str, extra: &[&str]) -> SluiceProcess {
    let mut args = vec![
        format!(
            "-blocks-storage.tsdb.dir={}",
            dir.path().join("tsdb").display()
        ),
        format!(
            "-blocks-storage.filesystem.dir={}",
            dir.path().join("blocks").display()
        ),
        format!(
            "-compactor.data-dir={}",
            dir.path().join("compactor").display()
        ),
        "-blocks-storage.tsdb.block-ranges-period=1m".to_owned(),
        "-blocks-storage.tsdb.head-compaction-interval=1h".to_owned(),
        "-compactor.block-ranges=1m,3m,6m".to_owned(),
        "-compactor.compaction-interval=1s".to_owned(),
        "-compactor.deletion-delay=1s".to_owned(),
        "-distributor.ingestion-rate-limit=0".to_owned(),
    ];
    args.extend(extra.iter().map(|arg| arg.to_string()));
    let sluice = start_sluice(name, &args).await;
    sluice.wait_ready_status(200, Duration::from_secs(20)).await;
    sluice
}

/// Waits until the six oldest minutes' blocks are merged (3 + 3 into two
/// 3m blocks, those two into a 6m block) and all 8 sources deleted.
async fn wait_all_merged(sluice: &SluiceProcess) {
    let cleaned = "sluice_compactor_blocks_cleaned_total";
    sluice
        .wait_metric(cleaned, 8.0, Duration::from_secs(60))
        .await;
    let merged = sluice.metric("sluice_compactor_blocks_compacted_total");
    assert_eq!(merged.await, 8.0);
}

fn block_levels(dir: &TempDir) -> Vec<u64> {
    let tenant = dir.path().join("blocks/anonymous");
    let mut levels: Vec<u64> = std::fs::read_dir(tenant)
        .unwrap()
        .filter_map(|entry| std::fs::read(entry.unwrap().path().join("meta.json")).ok())
        .map(|bytes| {
            let meta: serde_json::Value = serde_json::from_slice(&bytes).unwrap();
            meta["compaction"]["level"].as_u64().unwrap()
        })
        .collect();
    levels.sort();
    levels
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn compaction_and_retention_keep_answers_as_they_were() {
    let dir = TempDir::new("sluice-compactor-e2e").unwrap();
    // Six minutes aligned to 6m, then two more after a 6-minute gap, so
    // that retention can take the first six with minutes to spare, and the
    // later minutes' answers reach no sample of the first six (5m lookback).
    let base = (now_ms() - 20 * MINUTE).div_euclid(6 * MINUTE) * 6 * MINUTE;
    let minutes: Vec<i64> = (0..6).chain([12, 13]).map(|k| base + k * MINUTE).collect();
    let (start_t, end_t) = (base, base + 14 * MINUTE);

    let mut ingesting = start(&dir, "ingest", &["-target=query-frontend,querier,store"]).await;
    for minute in &minutes {
        post(&ingesting, "/api/v1/push", minute_of_samples(*minute)).await;
        post(&ingesting, "/ingester/flush", Vec::new()).await;
    }
    assert_eq!(ingesting.metric("sluice_blocks_cut_total").await, 8.0);
    let before = answers(&ingesting, start_t, end_t).await;
    // The two minutes after the gap alone: what retention must keep.
    let late = base + 12 * MINUTE;
    let before_late = answers(&ingesting, late, end_t).await;
    for (query, body) in QUERIES.iter().zip(before.iter().chain(&before_late)) {
        assert!(
            body.contains("\"result\":[{"),
            "{query} answers nothing: {body}"
        );
    }
    ingesting.process.terminate(Duration::from_secs(10)).await;
    assert_eq!(block_levels(&dir), [1; 8]);

    let mut compacting = start(&dir, "compact", &[]).await;
    wait_all_merged(&compacting).await;
    assert_eq!(block_levels(&dir), [1, 1, 3]);
    assert_eq!(answers(&compacting, start_t, end_t).await, before);
    compacting.process.terminate(Duration::from_secs(10)).await;

    // The merged block ends before base + 6m; keep what is newer than 8m.
    let retention_s = (now_ms() - (base + 8 * MINUTE)) / 1000;
    let retention = format!("-compactor.blocks-retention-period={retention_s}s");
    let mut expiring = start(&dir, "retention", &[&retention]).await;
    expiring
        .wait_metric(
            "sluice_compactor_blocks_cleaned_total",
            1.0,
            Duration::from_secs(60),
        )
        .await;
    assert_eq!(block_levels(&dir), [1, 1]);
    assert_eq!(answers(&expiring, late, end_t).await, before_late);
    let gone = answers(&expiring, start_t, base + 6 * MINUTE).await;
    for (query, body) in QUERIES.iter().zip(&gone) {
        assert!(
            body.contains("\"result\":[]"),
            "{query} still answers: {body}"
        );
    }
    expiring.process.terminate(Duration::from_secs(10)).await;
}

/// The same over S3 (moto), store and compactor in one process: blocks are
/// uploaded as they are cut and merged while ingest goes on, and whatever
/// the compactor has done when it is asked, answers do not change.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn blocks_are_uploaded_and_compacted_on_s3() {
    let moto = sluice_testkit::MotoServer::start().await;
    moto.create_bucket("blocks").await;
    let dir = TempDir::new("sluice-compactor-s3").unwrap();
    let mut flags = common::moto_flags(&moto);
    // One process answers before and after: nothing may come from a cache.
    flags.extend(
        [
            "-query-frontend.cache-results=false",
            "-query-frontend.answer-memo-size-bytes=0",
            "-query-frontend.fragment-memo-size-bytes=0",
        ]
        .map(str::to_owned),
    );
    let flags: Vec<&str> = flags.iter().map(String::as_str).collect();
    let mut sluice = start(&dir, "s3", &flags).await;
    let base = (now_ms() - 20 * MINUTE).div_euclid(6 * MINUTE) * 6 * MINUTE;
    for k in (0..6).chain([12, 13]) {
        post(
            &sluice,
            "/api/v1/push",
            minute_of_samples(base + k * MINUTE),
        )
        .await;
        post(&sluice, "/ingester/flush", Vec::new()).await;
    }
    assert_eq!(sluice.metric("sluice_blocks_cut_total").await, 8.0);
    assert_eq!(
        sluice.metric("sluice_block_upload_failures_total").await,
        0.0
    );
    let (start_t, end_t) = (base, base + 14 * MINUTE);
    let during = answers(&sluice, start_t, end_t).await;
    for (query, body) in QUERIES.iter().zip(&during) {
        assert!(
            body.contains("\"result\":[{"),
            "{query} answers nothing: {body}"
        );
    }
    wait_all_merged(&sluice).await;
    assert_eq!(answers(&sluice, start_t, end_t).await, during);
    assert!(
        !dir.path().join("blocks").exists(),
        "nothing written to the filesystem bucket"
    );
    sluice.process.terminate(Duration::from_secs(10)).await;
}
