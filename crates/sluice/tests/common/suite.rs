//! The query suites the comparisons with a real Prometheus share: every
//! generated query at several instants and over several windows, the
//! metadata endpoints, and one assertion over all their answers.

use std::time::Instant;

use sluice_testkit::{
    Dataset, PrometheusServer, TempDir, copy_dir, dataset_blocks, promtool_backfill,
};

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

/// Extra samples of one series, beside the data set's.
pub struct ExtraSeries {
    pub metric: String,
    pub labels: Vec<(String, String)>,
    pub samples: Vec<(i64, f64)>,
}

/// Extra series of one metric family, with its OpenMetrics `# TYPE` line.
pub struct ExtraFamily {
    pub type_line: &'static str,
    pub series: Vec<ExtraSeries>,
}

/// A second backfill over `[from, until)`: the api job's counters again
/// (the same samples: duplicates), `node-normal`'s temperature at the
/// half-minutes between its samples, and a gauge only this backfill has.
pub fn overlap_families(dataset: &Dataset, from: i64, until: i64) -> Vec<ExtraFamily> {
    let mut counters = Vec::new();
    for series in dataset.series() {
        if series.metric == "http_requests_total" && series.label("job") == Some("api") {
            let samples = dataset.samples(&series).into_iter();
            counters.push(ExtraSeries {
                metric: series.metric.to_owned(),
                labels: series.labels.clone(),
                samples: samples.filter(|(t, _)| (from..until).contains(t)).collect(),
            });
        }
    }
    let minutes = || (from..until).step_by(MINUTE_MS as usize);
    let between = ExtraSeries {
        metric: "node_temperature_celsius".to_owned(),
        labels: vec![("instance".to_owned(), "node-normal".to_owned())],
        samples: minutes()
            .map(|t| (t + 30 * SECOND_MS, ((t / MINUTE_MS) % 17) as f64 + 15.5))
            .collect(),
    };
    let only_here = ["a", "b"].map(|zone| ExtraSeries {
        metric: "overlap_only_gauge".to_owned(),
        labels: vec![("zone".to_owned(), zone.to_owned())],
        samples: minutes()
            .map(|t| (t, ((t / MINUTE_MS) % 23) as f64 - 4.0))
            .collect(),
    });
    vec![
        ExtraFamily {
            type_line: "# TYPE http_requests counter\n",
            series: counters,
        },
        ExtraFamily {
            type_line: "# TYPE node_temperature_celsius gauge\n",
            series: vec![between],
        },
        ExtraFamily {
            type_line: "# TYPE overlap_only_gauge gauge\n",
            series: only_here.into(),
        },
    ]
}

/// `name{labels} value seconds` lines for the samples of `series` in `[from, until)`.
pub fn openmetrics_lines(
    out: &mut String,
    name: &str,
    labels: &[(String, String)],
    samples: impl Iterator<Item = (i64, f64)>,
) {
    let labels: Vec<String> = labels
        .iter()
        .map(|(key, value)| format!("{key}=\"{value}\""))
        .collect();
    for (t, v) in samples {
        out.push_str(&format!(
            "{name}{{{}}} {v} {}\n",
            labels.join(","),
            super::compare::seconds(t)
        ));
    }
}

/// The second backfill over `[from, until)` (see [`overlap_families`]) as
/// OpenMetrics text.
pub fn overlapping_backfill(dataset: &Dataset, from: i64, until: i64) -> String {
    let mut out = String::new();
    for family in overlap_families(dataset, from, until) {
        out.push_str(family.type_line);
        for series in family.series {
            let samples = series.samples.into_iter();
            openmetrics_lines(&mut out, &series.metric, &series.labels, samples);
        }
    }
    out.push_str("# EOF\n");
    out
}

/// A directory of promtool's blocks of `dataset` plus, over `overlap`,
/// [`overlapping_backfill`]'s (overlapping blocks).
pub async fn promtool_blocks_with_overlap(dataset: &Dataset, overlap: (i64, i64)) -> TempDir {
    let data = TempDir::new("sluice-compare-promtool").unwrap();
    let data_dir = data.path().to_path_buf();
    let backfill = overlapping_backfill(dataset, overlap.0, overlap.1);
    let days = dataset.days();
    tokio::task::spawn_blocking(move || {
        copy_dir(&dataset_blocks(&Dataset::with_days(days)), &data_dir).unwrap();
        promtool_backfill(&backfill, &data_dir);
    })
    .await
    .unwrap();
    data
}
