//! sluice's embedded engine against a real Prometheus over the same TSDB
//! blocks, for hundreds of queries generated from function families ×
//! selectors (`common/families.rs`) at several instants and windows, plus
//! the `series`, `labels` and `label/<name>/values` endpoints. Two sets of
//! blocks, both written by Prometheus itself:
//!
//! 1. promtool's backfill of the test data set (3 days of 2 h blocks), plus
//!    a second backfill over 6 hours of it: duplicate samples, extra samples
//!    between the grid's and series found only there (overlapping blocks).
//! 2. A Prometheus that scrapes itself and a scripted exporter once a second
//!    (series that vanish and come back, a counter reset, a target that goes
//!    down: staleness markers) is snapshotted twice, head included; both
//!    snapshots' blocks (the second contains the first) plus a promtool
//!    backfill over the same seconds make one directory of overlapping blocks.
//!
//! Debian's Prometheus is 2.42 and the engine follows Prometheus 3, whose
//! range selectors and lookback window are open on the left (3.0). Queries
//! are therefore evaluated off the sample grid (a few seconds past it for
//! the backfill; for the scrapes, at the sub-second phase farthest from
//! every sample), subqueries move their inner evaluations off the grid with
//! an offset, and every window starts well after the first samples. The
//! other differences are listed where the queries are generated.

mod common;

use std::collections::BTreeSet;
use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use common::compare::copy_blocks;
use common::families::{Vocabulary, promtool_vocabulary};
use common::start_sluice;
use common::suite::{
    compare_all, dataset_instants_and_windows, metadata_requests, openmetrics_lines,
    promtool_blocks_with_overlap, query_requests,
};
use sluice_testkit::{
    Dataset, PrometheusServer, TempDir, form_urlencode, http_get, promtool_backfill,
};

const SECOND_MS: i64 = 1_000;
const MINUTE_MS: i64 = 60_000;
const HOUR_MS: i64 = 3_600_000;

// ------------------------------------------------------------ promtool

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn promtool_blocks_with_an_overlapping_backfill_answer_as_prometheus() {
    let dataset = Dataset::new();
    let (first, last) = (dataset.start_ms(), dataset.end_ms());
    let overlap = (first + 24 * HOUR_MS, first + 30 * HOUR_MS);
    let data = promtool_blocks_with_overlap(&dataset, overlap).await;
    let prometheus = PrometheusServer::serve_copy_of(data.path(), &[]).await;
    let dir_flag = format!("-blocks-storage.filesystem.dir={}", data.path().display());
    let sluice = start_sluice("compare-promtool", &[dir_flag]).await;
    sluice.wait_ready_status(200, Duration::from_secs(20)).await;

    let vanished = dataset.vanishing_series_end_ms();
    let (times, windows) = dataset_instants_and_windows(&dataset, overlap);
    let vocabulary = promtool_vocabulary();
    let queries = vocabulary.queries().len();
    let mut requests = query_requests(&vocabulary, &times, &windows);
    requests.extend(metadata_requests(
        &[
            "ephemeral_worker_up",
            "ephemeral_worker_up{worker=\"vanishing\"}",
            "http_requests_total{code=\"500\"}",
            "{job=~\"api|web\"}",
            "overlap_only_gauge",
        ],
        &[
            "/api/v1/label/job/values",
            "/api/v1/label/__name__/values",
            "/api/v1/label/worker/values",
        ],
        &[
            (first, last),
            (
                first + 6 * HOUR_MS - MINUTE_MS,
                first + 6 * HOUR_MS + MINUTE_MS,
            ),
            (vanished + HOUR_MS, vanished + 2 * HOUR_MS),
            (overlap.0 + HOUR_MS, overlap.0 + HOUR_MS + 10 * MINUTE_MS),
        ],
    ));
    compare_all(
        "promtool blocks",
        &sluice.url(),
        &prometheus,
        &requests,
        queries,
    )
    .await;
}

// ------------------------------------------------------------ snapshot

/// A scripted exporter: scrape `n` (from 0) gets [`exposition`]`(n)`.
struct Exporter {
    port: u16,
    scrapes: Arc<AtomicU32>,
    task: tokio::task::JoinHandle<()>,
}

/// Scrapes 20 to 22 find the target down (all its series go stale).
fn exposition(n: u32) -> Option<String> {
    if (20..23).contains(&n) {
        return None;
    }
    let total_a: u32 = (0..=n).map(|i| i * 7 % 5 + 1).sum();
    // A restart at scrape 16: the counter starts again.
    let total_b = if n < 16 { n * 3 } else { n - 16 };
    let slow = (0..=n).filter(|i| i % 3 == 0).count();
    let mut text = format!(
        "# TYPE sluice_test_requests_total counter\n\
         sluice_test_requests_total{{path=\"/a\"}} {total_a}\n\
         sluice_test_requests_total{{path=\"/b\"}} {total_b}\n\
         # TYPE sluice_test_gauge gauge\n\
         sluice_test_gauge{{slot=\"x\"}} {}\n\
         sluice_test_gauge{{slot=\"nan\"}} {}\n\
         # TYPE sluice_test_latency_seconds histogram\n\
         sluice_test_latency_seconds_bucket{{le=\"0.1\"}} {n}\n\
         sluice_test_latency_seconds_bucket{{le=\"1\"}} {}\n\
         sluice_test_latency_seconds_bucket{{le=\"+Inf\"}} {}\n\
         sluice_test_latency_seconds_sum {}\n\
         sluice_test_latency_seconds_count {}\n",
        f64::from(n * 37 % 11) - 5.0,
        if n.is_multiple_of(4) {
            "NaN".to_owned()
        } else {
            (f64::from(n) * 0.5).to_string()
        },
        n + slow as u32,
        2 * n + slow as u32,
        f64::from(n) * 0.75 + slow as f64,
        2 * n + slow as u32,
    );
    // Present three scrapes, absent three: a staleness marker each time.
    if (n / 3).is_multiple_of(2) {
        text.push_str(&format!("sluice_test_flapping{{cycle=\"3\"}} {n}\n"));
    }
    if n < 14 {
        text.push_str("sluice_test_vanishing 1\n");
    }
    Some(text)
}

impl Exporter {
    async fn start() -> Exporter {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let scrapes = Arc::new(AtomicU32::new(0));
        let counter = scrapes.clone();
        let task = tokio::spawn(async move {
            while let Ok((mut connection, _)) = listener.accept().await {
                let counter = counter.clone();
                tokio::spawn(async move {
                    let mut request = Vec::new();
                    let mut buffer = [0u8; 1024];
                    while !request.windows(4).any(|w| w == b"\r\n\r\n") {
                        match connection.read(&mut buffer).await {
                            Ok(0) | Err(_) => return,
                            Ok(read) => request.extend_from_slice(&buffer[..read]),
                        }
                    }
                    let n = counter.load(Ordering::SeqCst);
                    let (status, body) = match exposition(n) {
                        Some(body) => ("200 OK", body),
                        None => ("503 Service Unavailable", "down\n".to_owned()),
                    };
                    let answer = format!(
                        "HTTP/1.1 {status}\r\nContent-Type: text/plain; version=0.0.4\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                        body.len()
                    );
                    let _ = connection.write_all(answer.as_bytes()).await;
                    counter.fetch_add(1, Ordering::SeqCst);
                });
            }
        });
        Exporter {
            port,
            scrapes,
            task,
        }
    }

    async fn wait_scrapes(&self, count: u32) {
        let deadline = Instant::now() + Duration::from_secs(60);
        while self.scrapes.load(Ordering::SeqCst) < count {
            assert!(Instant::now() < deadline, "the exporter is not scraped");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
}

impl Drop for Exporter {
    fn drop(&mut self) {
        self.task.abort();
    }
}

fn scrape_config(own_port: u16, exporter_port: u16) -> String {
    format!(
        "global:\n  scrape_interval: 1s\n  scrape_timeout: 1s\n\
         scrape_configs:\n\
         - job_name: prometheus\n  static_configs:\n  - targets: ['127.0.0.1:{own_port}']\n\
         - job_name: exporter\n  static_configs:\n  - targets: ['127.0.0.1:{exporter_port}']\n"
    )
}

/// Every sample time (staleness markers aside) of every series, from
/// Prometheus's raw range selection at `at`.
async fn sample_times(prometheus: &PrometheusServer, at: i64) -> Vec<i64> {
    let query = form_urlencode(&[
        ("query", "{__name__=~\".+\"}[1h]"),
        ("time", &common::compare::seconds(at)),
    ]);
    let (status, _, body) = http_get(&format!("{}/api/v1/query?{query}", prometheus.url())).await;
    assert_eq!(status, 200, "{}", String::from_utf8_lossy(&body));
    let body: serde_json::Value = serde_json::from_slice(&body).unwrap();
    let mut times = Vec::new();
    for series in body["data"]["result"].as_array().unwrap() {
        for point in series["values"].as_array().unwrap() {
            times.push((point[0].as_f64().unwrap() * 1000.0).round() as i64);
        }
    }
    times
}

/// The phase within the second (ms) farthest from every sample's, so that
/// no window edge at that phase lands on a sample.
fn quietest_phase(times: &[i64]) -> i64 {
    let phases: BTreeSet<i64> = times.iter().map(|t| t.rem_euclid(SECOND_MS)).collect();
    let distance = |candidate: i64| {
        phases
            .iter()
            .map(|phase| {
                let gap = (candidate - phase).rem_euclid(SECOND_MS);
                gap.min(SECOND_MS - gap)
            })
            .min()
            .unwrap_or(SECOND_MS)
    };
    (0..SECOND_MS)
        .max_by_key(|&candidate| distance(candidate))
        .unwrap()
}

/// A gauge of the exporter's series again, at the half seconds between its
/// scrapes, and a gauge only the backfill has.
fn snapshot_backfill(exporter_port: u16, from: i64, until: i64) -> String {
    let target = [
        ("instance".to_owned(), format!("127.0.0.1:{exporter_port}")),
        ("job".to_owned(), "exporter".to_owned()),
        ("slot".to_owned(), "x".to_owned()),
    ];
    let halves = (from / SECOND_MS..until / SECOND_MS).map(|s| s * SECOND_MS + 500);
    let mut out = String::from("# TYPE sluice_test_gauge gauge\n");
    openmetrics_lines(
        &mut out,
        "sluice_test_gauge",
        &target,
        halves.clone().map(|t| (t, ((t / SECOND_MS) % 9) as f64)),
    );
    out.push_str("# TYPE sluice_test_backfilled gauge\n");
    let source = [("source".to_owned(), "promtool".to_owned())];
    openmetrics_lines(
        &mut out,
        "sluice_test_backfilled",
        &source,
        halves.map(|t| (t, ((t / SECOND_MS) % 5) as f64 * 1.5)),
    );
    out.push_str("# EOF\n");
    out
}

fn snapshot_vocabulary(phase: i64) -> Vocabulary {
    let strings = |list: &[&str]| list.iter().map(|s| (*s).to_owned()).collect();
    Vocabulary {
        counters: strings(&[
            "sluice_test_requests_total",
            "prometheus_http_requests_total{handler=\"/metrics\"}",
            "process_cpu_seconds_total",
        ]),
        gauges: strings(&[
            "sluice_test_gauge",
            "sluice_test_flapping",
            "up",
            "sluice_test_backfilled",
        ]),
        // Not `slot="x"`: the backfill's half seconds between its scrapes
        // space it unevenly (see `Vocabulary::rate_gauges`).
        rate_gauges: strings(&[
            "sluice_test_gauge{slot=\"nan\"}",
            "sluice_test_flapping",
            "up",
            "sluice_test_backfilled",
        ]),
        buckets: strings(&[
            "sluice_test_latency_seconds_bucket",
            "prometheus_http_request_duration_seconds_bucket{handler=\"/metrics\"}",
        ]),
        any: strings(&[
            "{job=\"exporter\"}",
            "up",
            "sluice_test_flapping",
            "go_goroutines",
        ]),
        group_by: "job",
        range: "3s",
        long_range: "5s",
        offset: "2s",
        subquery_range: "5s",
        subquery_step: "1s",
        // Inner evaluations fall on whole seconds; this moves their
        // selectors to the chosen phase.
        subquery_offset: format!("{}ms", (SECOND_MS - phase) % SECOND_MS),
    }
}

/// Runs a Prometheus that scrapes itself and the exporter every second,
/// snapshots it after 15 and 30 scrapes, and returns a directory with both
/// snapshots' blocks.
async fn scrape_and_snapshot(exporter: &Exporter) -> TempDir {
    let scraper = PrometheusServer::start_configured(
        None,
        |port| scrape_config(port, exporter.port),
        &["--web.enable-admin-api"],
    )
    .await;
    let data = TempDir::new("sluice-compare-snapshot").unwrap();
    for scrapes in [15, 30] {
        exporter.wait_scrapes(scrapes).await;
        let snapshot = scraper.snapshot().await;
        assert!(copy_blocks(&snapshot, data.path()) > 0, "empty snapshot");
    }
    data
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_scraping_prometheus_snapshot_answers_as_prometheus() {
    let exporter = Exporter::start().await;
    let data = scrape_and_snapshot(&exporter).await;
    // The scraped samples' span and phases, from a Prometheus over the
    // snapshots alone.
    let (first, last, phase) = {
        let snapshots = PrometheusServer::serve_copy_of(data.path(), &[]).await;
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_millis() as i64;
        let mut times = sample_times(&snapshots, now).await;
        times.push(500); // the backfill's phase
        let real = times.iter().filter(|t| **t > SECOND_MS);
        let (first, last) = (*real.clone().min().unwrap(), *real.max().unwrap());
        (first, last, quietest_phase(&times))
    };
    let data_dir = data.path().to_path_buf();
    let backfill = snapshot_backfill(exporter.port, first, last);
    tokio::task::spawn_blocking(move || promtool_backfill(&backfill, &data_dir))
        .await
        .unwrap();
    let prometheus = PrometheusServer::serve_copy_of(data.path(), &[]).await;
    let dir_flag = format!("-blocks-storage.filesystem.dir={}", data.path().display());
    let sluice = start_sluice("compare-snapshot", &[dir_flag]).await;
    sluice.wait_ready_status(200, Duration::from_secs(20)).await;

    let at = |ms: i64| ms.div_euclid(SECOND_MS) * SECOND_MS + phase;
    // Windows reach at most 9 s back: the first second of every series
    // stays out of them (see `families.rs` on extrapolation near a first
    // sample).
    let times = [
        at(first + 12 * SECOND_MS),
        at(first + 21 * SECOND_MS),
        at(last),
        at(last + 4 * SECOND_MS),
    ];
    let windows = [
        (
            at(first + 10 * SECOND_MS),
            at(last + 3 * SECOND_MS),
            SECOND_MS,
        ),
        (
            at(first + 11 * SECOND_MS),
            at(last + 9 * SECOND_MS),
            3 * SECOND_MS,
        ),
    ];
    let vocabulary = snapshot_vocabulary(phase);
    let queries = vocabulary.queries().len();
    let mut requests = query_requests(&vocabulary, &times, &windows);
    requests.extend(metadata_requests(
        &[
            "{job=\"exporter\"}",
            "up",
            "sluice_test_vanishing",
            "{__name__=~\"sluice_test_.*\"}",
        ],
        &[
            "/api/v1/label/__name__/values",
            "/api/v1/label/slot/values",
            "/api/v1/label/job/values",
        ],
        &[
            (first, last),
            (first + 16 * SECOND_MS, last),
            (last + SECOND_MS, last + 2 * SECOND_MS),
        ],
    ));
    compare_all(
        "snapshot blocks",
        &sluice.url(),
        &prometheus,
        &requests,
        queries,
    )
    .await;
}
