//! The query suites the comparisons with a real Prometheus share: every
//! generated query at several instants and over several windows, the
//! metadata endpoints, and one assertion over all their answers.

use std::time::Instant;

use sluice_testkit::{Dataset, PrometheusServer};

use super::compare::{ApiRequest, compare};
use super::families::Vocabulary;

/// Requests in flight at once, to each server.
const PARALLEL: usize = 4;
const SECOND_MS: i64 = 1_000;
const MINUTE_MS: i64 = 60_000;
const HOUR_MS: i64 = 3_600_000;

/// Instant queries at each of `times`, range queries over each of `windows`
/// (start, end, step), for every generated query.
pub fn query_requests(
    vocabulary: &Vocabulary,
    times: &[i64],
    windows: &[(i64, i64, i64)],
) -> Vec<ApiRequest> {
    let mut requests = Vec::new();
    for generated in vocabulary.queries() {
        for &time in times {
            requests.push(ApiRequest::instant(&generated.query, time));
        }
        if generated.instant_only {
            continue;
        }
        for &(start, end, step) in windows {
            requests.push(ApiRequest::range(&generated.query, start, end, step));
        }
    }
    requests
}

/// `series` for each selector, `labels` and `label/<name>/values` with no
/// selector and with each, over each window.
pub fn metadata_requests(
    selectors: &[&str],
    names: &[&'static str],
    windows: &[(i64, i64)],
) -> Vec<ApiRequest> {
    let mut requests = Vec::new();
    for &(start, end) in windows {
        requests.push(ApiRequest::metadata("/api/v1/labels", &[], start, end));
        requests.push(ApiRequest::metadata(
            "/api/v1/series",
            selectors,
            start,
            end,
        ));
        for &path in names {
            requests.push(ApiRequest::metadata(path, &[], start, end));
        }
        for selector in selectors {
            let one = [*selector];
            requests.push(ApiRequest::metadata("/api/v1/series", &one, start, end));
            requests.push(ApiRequest::metadata("/api/v1/labels", &one, start, end));
            for &path in names {
                requests.push(ApiRequest::metadata(path, &one, start, end));
            }
        }
    }
    requests
}

/// Compares every request, prints what was compared and the annotations
/// only sluice gave, and fails on any mismatch or on answers mostly empty.
pub async fn compare_all(
    what: &str,
    sluice: &str,
    prometheus: &PrometheusServer,
    requests: &[ApiRequest],
    queries: usize,
) {
    let started = Instant::now();
    let comparison = compare(sluice, &prometheus.url(), requests, PARALLEL).await;
    println!(
        "{what}: {queries} queries, {} answers compared ({} errors on both sides, {} empty) in {:.1?}",
        comparison.compared,
        comparison.errors,
        comparison.empty,
        started.elapsed()
    );
    for (annotation, count) in &comparison.added_annotations {
        println!("  only sluice (Prometheus 3 annotation): {count} × {annotation}");
    }
    comparison.assert_no_mismatch(what);
    assert!(queries >= 300, "{what}: only {queries} queries");
    assert!(
        comparison.empty * 4 < comparison.compared,
        "{what}: mostly empty answers"
    );
}

/// The selectors of the test data set (`sluice_testkit::Dataset`, plus
/// the gauge `overlap_only_gauge` some comparisons add to it).
pub fn promtool_vocabulary() -> Vocabulary {
    let strings = |list: &[&str]| list.iter().map(|s| (*s).to_owned()).collect();
    Vocabulary {
        counters: strings(&[
            "http_requests_total{job=\"api\"}",
            "http_requests_total{code!=\"200\",method=~\"G.*\"}",
            "request_duration_seconds_count",
        ]),
        gauges: strings(&[
            "node_temperature_celsius",
            "ephemeral_worker_up",
            "overlap_only_gauge",
        ]),
        buckets: strings(&[
            "request_duration_seconds_bucket",
            "request_duration_seconds_bucket{job=\"web\"}",
        ]),
        any: strings(&[
            "http_requests_total{instance=~\"10\\\\.0\\\\.[01]\\\\..*\",code=\"500\"}",
            "node_temperature_celsius",
            "ephemeral_worker_up",
            "edge_case_labels{value!=\"plain\"}",
        ]),
        group_by: "job",
        range: "5m",
        long_range: "1h",
        offset: "30m",
        subquery_range: "30m",
        subquery_step: "1m",
        // Inner evaluations at 43 s past each minute, samples on the minute
        // and (overlap) the half minute.
        subquery_offset: "17s".to_owned(),
    }
}

/// Instants and windows (start, end, step) over the test data set, off its
/// minute grid: across block boundaries, over the counter reset, the
/// vanishing series leaving the lookback, and in and out of `overlap`.
pub fn dataset_instants_and_windows(
    dataset: &Dataset,
    overlap: (i64, i64),
) -> (Vec<i64>, Vec<(i64, i64, i64)>) {
    let first = dataset.start_ms();
    let vanished = dataset.vanishing_series_end_ms();
    let times = vec![
        // Just past a block boundary: 5m and 1h windows reach into the block before.
        first + 6 * HOUR_MS + 7 * SECOND_MS,
        // The vanishing series' last sample still within the lookback.
        vanished + 2 * MINUTE_MS + 13 * SECOND_MS,
        // In the overlapping blocks, and just after the counter reset.
        overlap.0 + 2 * HOUR_MS + 17 * SECOND_MS,
        dataset.counter_reset_ms() + MINUTE_MS + 11 * SECOND_MS,
    ];
    let windows = vec![
        // Across two block boundaries.
        (
            first + 4 * HOUR_MS + 7 * SECOND_MS,
            first + 7 * HOUR_MS + 7 * SECOND_MS,
            MINUTE_MS,
        ),
        // Into, through and out of the overlapping blocks, over the reset.
        (
            overlap.0 + HOUR_MS + 13 * SECOND_MS,
            overlap.1 + HOUR_MS + 13 * SECOND_MS,
            5 * MINUTE_MS,
        ),
        // The vanishing series leaving the lookback window.
        (
            vanished - 10 * MINUTE_MS + 11 * SECOND_MS,
            vanished + 20 * MINUTE_MS + 11 * SECOND_MS,
            MINUTE_MS,
        ),
    ];
    (times, windows)
}
