//! sluice's embedded engine over a Prometheus data directory, against that
//! Prometheus itself: both read the same TSDB blocks (a copy, for sluice),
//! and their answers to a query suite at several times and windows must be
//! the same bytes. Times sit a few seconds off the sample grid and well after
//! the data's first samples, where Prometheus 2.42 (Debian's) and the
//! engine's Prometheus 3 semantics agree (range selectors left-open since 3.0).
//!
//! Sample values are compared to 1e-9 relative, everything else exactly
//! (see `common/compare.rs`); `blocks_compare.rs` runs the large suite.

mod common;

use std::time::Duration;

use common::compare::{answer, assert_agree, copy_blocks, seconds};
use common::start_sluice;
use sluice_testkit::{Dataset, PrometheusServer, TempDir};

const HOUR_MS: i64 = 3_600_000;

const QUERIES: &[&str] = &[
    "http_requests_total",
    "sum by (job) (rate(http_requests_total[5m]))",
    "node_temperature_celsius > 20",
    "avg_over_time(node_temperature_celsius[10m])",
    "histogram_quantile(0.9, sum by (le) (rate(request_duration_seconds_bucket[5m])))",
    "count(edge_case_labels)",
    "max_over_time(http_requests_total[1h]) - min_over_time(http_requests_total[1h])",
    "topk(3, http_requests_total)",
];

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_engine_over_prometheus_blocks_answers_as_prometheus() {
    let dataset = Dataset::new();
    let prometheus = PrometheusServer::start(&dataset).await;
    let blocks = TempDir::new("sluice-blocks-e2e").unwrap();
    let copied = copy_blocks(&prometheus.data_dir(), blocks.path());
    assert!(
        copied > 0,
        "no blocks in {}",
        prometheus.data_dir().display()
    );
    let dir_flag = format!("-blocks-storage.filesystem.dir={}", blocks.path().display());
    let sluice = start_sluice("blocks", &[dir_flag]).await;
    sluice.wait_ready_status(200, Duration::from_secs(20)).await;

    let (first, last) = (dataset.start_ms(), dataset.end_ms());
    let times = [
        first + 6 * HOUR_MS + 7_000,
        (first + last) / 2 + 3_000,
        last - HOUR_MS + 11_000,
    ];
    let mut compared = 0;
    for query in QUERIES {
        for at in times {
            let params = [("query", *query), ("time", &seconds(at))];
            let want = answer(&prometheus.url(), "/api/v1/query", &params).await;
            let got = answer(&sluice.url(), "/api/v1/query", &params).await;
            assert_agree(&got, &want, &format!("instant {query} at {at}"));
            let (start, end) = (seconds(at - 3 * HOUR_MS), seconds(at));
            let params = [
                ("query", *query),
                ("start", &start),
                ("end", &end),
                ("step", "60"),
            ];
            let want = answer(&prometheus.url(), "/api/v1/query_range", &params).await;
            let got = answer(&sluice.url(), "/api/v1/query_range", &params).await;
            assert_agree(&got, &want, &format!("range {query} ending {at}"));
            compared += 2;
        }
    }
    let window = [("start", seconds(first)), ("end", seconds(last))];
    let with = |extra: (&'static str, &'static str)| {
        let mut params: Vec<(&str, String)> = window.iter().map(|(k, v)| (*k, v.clone())).collect();
        params.push((extra.0, extra.1.to_owned()));
        params
    };
    for (path, params) in [
        (
            "/api/v1/series",
            with(("match[]", "node_temperature_celsius")),
        ),
        ("/api/v1/labels", with(("match[]", "http_requests_total"))),
        (
            "/api/v1/label/job/values",
            with(("match[]", "http_requests_total")),
        ),
    ] {
        let params: Vec<(&str, &str)> = params.iter().map(|(k, v)| (*k, v.as_str())).collect();
        let want = answer(&prometheus.url(), path, &params).await;
        assert_eq!(want.0, 200, "{path}: {}", want.1);
        assert_agree(&answer(&sluice.url(), path, &params).await, &want, path);
        compared += 1;
    }
    // Paths a querier forwards to a downstream: the engine answers them as
    // a Prometheus with the same blocks (no metadata, no exemplars) does.
    let (start, end) = (seconds(first), seconds(last));
    for (path, params) in [
        ("/api/v1/metadata", vec![]),
        ("/api/v1/metadata", vec![("metric", "http_requests_total")]),
        (
            "/api/v1/query_exemplars",
            vec![
                ("query", "http_requests_total"),
                ("start", &start),
                ("end", &end),
            ],
        ),
        ("/api/v1/query_exemplars", vec![("query", "rate(")]),
    ] {
        let want = answer(&prometheus.url(), path, &params).await;
        assert_agree(&answer(&sluice.url(), path, &params).await, &want, path);
        compared += 1;
    }
    let (status, info) = answer(&sluice.url(), "/api/v1/status/buildinfo", &[]).await;
    let info: serde_json::Value = serde_json::from_str(&info).unwrap();
    assert_eq!(
        (status, &info["data"]["application"]),
        (200, &"sluice".into())
    );
    println!("{copied} blocks, {compared} answers agree");
}
