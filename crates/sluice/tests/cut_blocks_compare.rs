//! Blocks sluice cuts are Prometheus's blocks: the test data set is
//! remote-written into sluice in time order (its head cutting 2 h blocks as
//! it fills, every second), the rest of the head is flushed with `POST
//! /ingester/flush`, promtool lists and analyzes every block, and a real
//! Prometheus started on a copy of them answers the generated query suite
//! (`common/suite.rs`) exactly as sluice does over the same blocks, and so
//! does a Prometheus over promtool's backfill of the same samples.
//!
//! Over six hours a second backfill's samples (duplicates, samples between
//! the grid's, a series only it has) are pushed out of order, an hour
//! behind the newest, within `-ingester.out-of-order-time-window`.
//!
//! The comparison follows `blocks_compare.rs`: query times off the data
//! set's minute grid and windows well after its first samples, where
//! Debian's Prometheus 2.42 and the engine's Prometheus 3 semantics agree.

mod common;

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use common::suite::{
    ExtraSeries, compare_all, dataset_instants_and_windows, metadata_requests, overlap_families,
    promtool_blocks_with_overlap, query_requests,
};
use common::{SluiceProcess, start_sluice};
use sluice_remotewrite::proto::{TimeSeries, WriteRequest};
use sluice_remotewrite::{Label, Sample};
use sluice_testkit::{Dataset, PrometheusServer, TempDir, require_binary};

const MINUTE_MS: i64 = 60_000;
const HOUR_MS: i64 = 3_600_000;
/// Each push carries this much of every series: well under the head's
/// out-of-bounds limit (half a block range behind the newest sample).
const BATCH_MS: i64 = 30 * MINUTE_MS;

/// One remote-write body of `series` (metric, labels, samples), labels
/// sorted as the protocol requires; series without samples left out.
fn body(series: Vec<ExtraSeries>) -> Vec<u8> {
    let timeseries = series
        .into_iter()
        .filter(|series| !series.samples.is_empty())
        .map(|series| {
            let mut labels: Vec<Label> = series
                .labels
                .into_iter()
                .map(|(name, value)| Label { name, value })
                .collect();
            labels.push(Label {
                name: "__name__".into(),
                value: series.metric,
            });
            labels.sort_by(|a, b| a.name.cmp(&b.name));
            let samples = series.samples.into_iter();
            TimeSeries {
                labels,
                samples: samples
                    .map(|(timestamp, value)| Sample { timestamp, value })
                    .collect(),
                ..TimeSeries::default()
            }
        })
        .collect();
    sluice_remotewrite::encode(&WriteRequest {
        timeseries,
        metadata: vec![],
    })
}

/// The data set's samples in `[from, until)`.
fn dataset_batch(dataset: &Dataset, from: i64, until: i64) -> Vec<ExtraSeries> {
    let series = dataset.series().into_iter().map(|series| ExtraSeries {
        samples: dataset
            .samples(&series)
            .into_iter()
            .filter(|(t, _)| (from..until).contains(t))
            .collect(),
        metric: series.metric.to_owned(),
        labels: series.labels,
    });
    series.collect()
}

/// POSTs a remote-write body; it must be stored whole.
async fn push(sluice: &SluiceProcess, body: Vec<u8>, what: &str) {
    let (status, answer) = sluice.push_to("/api/v1/push", body).await;
    assert_eq!(status, 204, "{what}: {answer}");
}

/// Pushes the whole data set, oldest first, and after each batch inside
/// `overlap` the second backfill's samples of the batch before it: out of
/// order, behind the newest by up to an hour. Returns the pushes.
async fn push_dataset(sluice: &SluiceProcess, dataset: &Dataset, overlap: (i64, i64)) -> usize {
    let mut pushes = 0;
    let mut from = dataset.start_ms();
    while from <= dataset.end_ms() {
        let what = format!("data set from {from}");
        push(
            sluice,
            body(dataset_batch(dataset, from, from + BATCH_MS)),
            &what,
        )
        .await;
        let before = (from - BATCH_MS).max(overlap.0);
        if before < from.min(overlap.1) {
            let families = overlap_families(dataset, before, from.min(overlap.1));
            let series = families.into_iter().flat_map(|family| family.series);
            let what = format!("out of order before {from}");
            push(sluice, body(series.collect()), &what).await;
        }
        from += BATCH_MS;
        pushes += 1;
    }
    pushes
}

/// Runs promtool on the blocks of `dir`: `tsdb list` must show `blocks` of
/// them and `tsdb analyze` must read each one.
fn promtool_accepts(dir: &Path, blocks: usize) {
    let promtool = require_binary("promtool");
    let run = |args: &[&str]| {
        let output = Command::new(&promtool).args(args).output().unwrap();
        let text = format!(
            "{}{}",
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        );
        assert!(output.status.success(), "promtool {args:?}: {text}");
        text
    };
    let dir_text = dir.to_str().unwrap();
    let listed = run(&["tsdb", "list", dir_text]);
    let ulids: Vec<&str> = listed
        .lines()
        .skip(1)
        .filter_map(|line| line.split_whitespace().next())
        .collect();
    assert_eq!(ulids.len(), blocks, "promtool tsdb list:\n{listed}");
    for ulid in ulids {
        let analyzed = run(&["tsdb", "analyze", dir_text, ulid]);
        assert!(
            analyzed.contains(&format!("Block ID: {ulid}")),
            "promtool tsdb analyze {ulid}:\n{analyzed}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn blocks_cut_by_sluice_answer_in_prometheus_as_in_sluice() {
    let dataset = Dataset::new();
    let bucket = TempDir::new("sluice-cut-compare").unwrap();
    let args = [
        format!("-blocks-storage.filesystem.dir={}", bucket.path().display()),
        "-blocks-storage.tsdb.head-compaction-interval=1s".to_owned(),
        "-distributor.ingestion-rate-limit=0".to_owned(),
        "-ingester.out-of-order-time-window=90m".to_owned(),
    ];
    let sluice = start_sluice("cut-compare", &args).await;
    sluice.wait_ready_status(200, Duration::from_secs(20)).await;
    let first = dataset.start_ms();
    let overlap = (first + 24 * HOUR_MS, first + 30 * HOUR_MS);
    let pushes = push_dataset(&sluice, &dataset, overlap).await;
    assert_eq!(
        pushes as i64,
        (dataset.end_ms() - dataset.start_ms()) / BATCH_MS + 1
    );
    // Blocks were cut while the data came in, not only by the flush.
    sluice
        .wait_metric_at_least("sluice_blocks_cut_total", 30.0, Duration::from_secs(60))
        .await;
    sluice.flush().await;
    let blocks = sluice.metric("sluice_blocks_cut_total").await as usize;
    assert_eq!(sluice.metric("sluice_discarded_samples_total").await, 0.0);
    let tenant_dir = bucket.path().join(sluice_frontend::ANONYMOUS);
    let checked = tenant_dir.clone();
    tokio::task::spawn_blocking(move || promtool_accepts(&checked, blocks))
        .await
        .unwrap();
    let prometheus = PrometheusServer::serve_copy_of(&tenant_dir, &[]).await;

    let (times, windows) = dataset_instants_and_windows(&dataset, overlap);
    let vocabulary = common::families::promtool_vocabulary();
    let queries = vocabulary.queries().len();
    let mut requests = query_requests(&vocabulary, &times, &windows);
    requests.extend(metadata_requests(
        &[
            "ephemeral_worker_up",
            "{job=~\"api|web\"}",
            "overlap_only_gauge",
        ],
        &["/api/v1/label/job/values", "/api/v1/label/__name__/values"],
        &[
            (first, dataset.end_ms()),
            (
                first + 6 * HOUR_MS - MINUTE_MS,
                first + 6 * HOUR_MS + MINUTE_MS,
            ),
        ],
    ));
    compare_all(
        "blocks cut by sluice",
        &sluice.url(),
        &prometheus,
        &requests,
        queries,
    )
    .await;
    // The same samples backfilled by promtool: the blocks hold the same data.
    let promtool = promtool_blocks_with_overlap(&dataset, overlap).await;
    let promtool_prometheus = PrometheusServer::serve_copy_of(promtool.path(), &[]).await;
    compare_all(
        "blocks cut by sluice against promtool's",
        &sluice.url(),
        &promtool_prometheus,
        &requests,
        queries,
    )
    .await;
}
