//! What splitting and the results cache buy on the query they exist for: a
//! 7-day `sum by (job) (rate(...[5m]))` at a 60s step over an 8-day data set
//! in a real Prometheus, measured in one run:
//! (a) straight to Prometheus, (b) through sluice cold (split, parallel, no
//! cache: `Cache-Control: no-store`), (c) through sluice warm (the same query
//! again), (d) through sluice moved forward 5 minutes (as a dashboard refresh).
//!
//! Run with `cargo bench -p sluice --bench acceleration`. Each figure is the
//! median of several runs with a keep-alive client; the ratios against (a)
//! are the result.

use std::time::{Duration, Instant};

mod support;

use http_body_util::{BodyExt, Empty};
use sluice_testkit::{Dataset, PrometheusServer, form_urlencode};
use support::{HttpClient, millis, start_sluice};

const QUERY: &str = "sum by (job) (rate(http_requests_total[5m]))";
const DAY_MS: i64 = 86_400_000;
const MINUTE_MS: i64 = 60_000;

/// One request's duration and body.
async fn timed(client: &HttpClient, url: &str, no_store: bool) -> (Duration, Vec<u8>) {
    let mut request = hyper::Request::get(url);
    if no_store {
        request = request.header("Cache-Control", "no-store");
    }
    let request = request.body(Empty::new()).expect("request");
    let started = Instant::now();
    let response = client.request(request).await.expect("response");
    assert_eq!(response.status(), 200, "{url}");
    let body = response
        .into_body()
        .collect()
        .await
        .expect("body")
        .to_bytes();
    (started.elapsed(), body.to_vec())
}

fn range_url(base: &str, start_ms: i64, end_ms: i64) -> String {
    format!(
        "{base}/api/v1/query_range?{}",
        form_urlencode(&[
            ("query", QUERY),
            ("start", &(start_ms / 1000).to_string()),
            ("end", &(end_ms / 1000).to_string()),
            ("step", "60"),
        ])
    )
}

fn median(mut durations: Vec<Duration>) -> Duration {
    durations.sort();
    durations[durations.len() / 2]
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let dataset = Dataset::with_days(8);
    let prometheus = PrometheusServer::start(&dataset).await;
    let mut sluice = start_sluice(&prometheus.url()).await;
    let sluice_url = sluice.url.clone();
    let client = support::client(8);
    let end = dataset.end_ms() - 30 * MINUTE_MS;
    let start = end - 7 * DAY_MS;
    let direct = range_url(&prometheus.url(), start, end);
    let through = range_url(&sluice_url, start, end);

    println!(
        "7-day {QUERY}, step 60s, {} series in an 8-day data set",
        dataset.series().len()
    );
    // Warm both sides' connections and Prometheus's page cache first.
    let (_, expected) = timed(&client, &direct, false).await;
    let (_, answer) = timed(&client, &through, true).await;
    assert_eq!(answer, expected, "sluice must answer exactly as Prometheus");

    let rounds = 5;
    let (mut prometheus_times, mut cold_times) = (Vec::new(), Vec::new());
    for _ in 0..rounds {
        prometheus_times.push(timed(&client, &direct, false).await.0);
        cold_times.push(timed(&client, &through, true).await.0);
    }
    // Populate the cache once, then time repeats.
    let (_, populated) = timed(&client, &through, false).await;
    assert_eq!(populated, expected);
    tokio::time::sleep(Duration::from_millis(200)).await;
    let mut warm_times = Vec::new();
    for _ in 0..25 {
        let (took, body) = timed(&client, &through, false).await;
        assert_eq!(body, expected);
        warm_times.push(took);
    }
    // A dashboard refreshing every 5 minutes: each run is 5 minutes later
    // than the one before it, so only 5 new minutes are missing each time.
    let mut moved_times = Vec::new();
    for shift in 1..=rounds as i64 {
        let url = range_url(
            &sluice_url,
            start + shift * 5 * MINUTE_MS,
            end + shift * 5 * MINUTE_MS,
        );
        let (took, body) = timed(&client, &url, false).await;
        let (_, want) = timed(
            &client,
            &range_url(
                &prometheus.url(),
                start + shift * 5 * MINUTE_MS,
                end + shift * 5 * MINUTE_MS,
            ),
            false,
        )
        .await;
        assert_eq!(body, want, "moved-forward answers match Prometheus");
        moved_times.push(took);
        // Let the asynchronous cache write land before the next refresh.
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let prometheus_time = median(prometheus_times);
    let cold = median(cold_times);
    let warm = median(warm_times);
    let moved = median(moved_times);
    println!(
        "  (a) Prometheus directly:        {:>9.3} ms",
        millis(prometheus_time)
    );
    println!(
        "  (b) sluice cold (split):         {:>9.3} ms  = {:.2}x Prometheus's time (bar: at most 0.5x)",
        millis(cold),
        cold.as_secs_f64() / prometheus_time.as_secs_f64()
    );
    println!(
        "  (c) sluice warm (cached):        {:>9.3} ms  = {:.0}x faster than Prometheus (bar: at least 1000x)",
        millis(warm),
        prometheus_time.as_secs_f64() / warm.as_secs_f64()
    );
    println!(
        "  (d) sluice moved forward 5 min:  {:>9.3} ms  = {:.0}x faster than Prometheus (bar: at least 150x)",
        millis(moved),
        prometheus_time.as_secs_f64() / moved.as_secs_f64()
    );
    let _ = sluice.process.terminate(Duration::from_secs(10)).await;
}
