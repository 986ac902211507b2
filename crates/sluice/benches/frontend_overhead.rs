//! What sluice costs in front of Prometheus, measured in one run on the same
//! data: the same requests straight to a real Prometheus and through sluice
//! (`-target=all`: a frontend and its in-process querier).
//!
//! Run with `cargo bench -p sluice --bench frontend_overhead`. It prints the
//! median and p99 latency of a cheap one-series instant query from one client,
//! and the throughput of 32 concurrent keep-alive clients for that query and
//! for an aggregation over every series of a metric, each as sluice's figure,
//! Prometheus's, and their ratio. Ratios, not absolute times, are the result:
//! the machine is shared and both sides are measured back to back.
//!
//! Every request is distinct (its own evaluation time, a millisecond apart):
//! identical concurrent requests would be collapsed into one sub-query by
//! sluice, a feature, but not the overhead measured here.

use std::time::{Duration, Instant};

mod support;

use http_body_util::BodyExt;
use sluice_testkit::{Dataset, PrometheusServer, form_urlencode};
use support::{HttpClient, millis, start_sluice};

const CHEAP_QUERY: &str = "node_temperature_celsius{instance=\"node-normal\"}";
const AGGREGATION: &str = "sum by (job) (rate(http_requests_total[5m]))";
const LATENCY_SAMPLES: usize = 1000;
/// Each side is measured this many times, alternating, and the median kept:
/// a burst of unrelated load on the shared machine then hits one round, not
/// one side.
const ROUNDS: usize = 3;
const CONCURRENT_CLIENTS: usize = 32;
const THROUGHPUT_WINDOW: Duration = Duration::from_secs(5);

async fn get(client: &HttpClient, url: &hyper::Uri) -> usize {
    let response = client.get(url.clone()).await.expect("request");
    assert_eq!(response.status(), 200, "{url}");
    let body = response
        .into_body()
        .collect()
        .await
        .expect("body")
        .to_bytes();
    body.len()
}

/// Hands out evaluation times: distinct per request, inside the data set.
static NEXT_OFFSET_MS: std::sync::atomic::AtomicI64 = std::sync::atomic::AtomicI64::new(0);

fn query_uri(base: &str, query: &str, first_time_ms: i64) -> hyper::Uri {
    let offset = NEXT_OFFSET_MS.fetch_add(1, std::sync::atomic::Ordering::Relaxed) % 86_400_000;
    let time_ms = first_time_ms + offset;
    let time = format!("{}.{:03}", time_ms / 1000, time_ms % 1000);
    format!(
        "{base}/api/v1/query?{}",
        form_urlencode(&[("query", query), ("time", &time)])
    )
    .parse()
    .expect("uri")
}

struct Latency {
    median: Duration,
    p99: Duration,
}

async fn latency(client: &HttpClient, base: &str, query: &str, first_time_ms: i64) -> Latency {
    for _ in 0..200 {
        get(client, &query_uri(base, query, first_time_ms)).await;
    }
    let mut samples = Vec::with_capacity(LATENCY_SAMPLES);
    for _ in 0..LATENCY_SAMPLES {
        let started = Instant::now();
        get(client, &query_uri(base, query, first_time_ms)).await;
        samples.push(started.elapsed());
    }
    samples.sort();
    Latency {
        median: samples[samples.len() / 2],
        p99: samples[samples.len() * 99 / 100],
    }
}

async fn throughput(client: &HttpClient, base: &str, query: &str, first_time_ms: i64) -> f64 {
    // Warm the connection pool and both servers first.
    let mut warmup = tokio::task::JoinSet::new();
    for _ in 0..CONCURRENT_CLIENTS {
        let (client, base, query) = (client.clone(), base.to_owned(), query.to_owned());
        warmup.spawn(async move {
            for _ in 0..20 {
                get(&client, &query_uri(&base, &query, first_time_ms)).await;
            }
        });
    }
    while warmup.join_next().await.is_some() {}
    let deadline = Instant::now() + THROUGHPUT_WINDOW;
    let started = Instant::now();
    let mut workers = tokio::task::JoinSet::new();
    for _ in 0..CONCURRENT_CLIENTS {
        let (client, base, query) = (client.clone(), base.to_owned(), query.to_owned());
        workers.spawn(async move {
            let mut done = 0u64;
            while Instant::now() < deadline {
                get(&client, &query_uri(&base, &query, first_time_ms)).await;
                done += 1;
            }
            done
        });
    }
    let mut total = 0;
    while let Some(done) = workers.join_next().await {
        total += done.expect("worker");
    }
    total as f64 / started.elapsed().as_secs_f64()
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    // `cargo bench` passes --bench; other arguments are ignored.
    let dataset = Dataset::new();
    let prometheus = PrometheusServer::start(&dataset).await;
    let mut sluice = start_sluice(&prometheus.url()).await;
    let sluice_url = sluice.url.clone();

    let first_time_ms = dataset.start_ms() + 86_400_000;
    let client = support::client(CONCURRENT_CLIENTS * 2);
    let targets = [
        ("prometheus", prometheus.url()),
        ("sluice", sluice_url.clone()),
    ];

    println!(
        "sluice frontend overhead: Prometheus at {} vs sluice -target=all in front of it",
        prometheus.url()
    );
    println!(
        "data: {} series over 3 days; {CONCURRENT_CLIENTS} keep-alive clients for throughput, {}s windows",
        dataset.series().len(),
        THROUGHPUT_WINDOW.as_secs()
    );

    let mut rounds: Vec<Vec<Latency>> = vec![Vec::new(), Vec::new()];
    for _ in 0..ROUNDS {
        for (index, (_, base)) in targets.iter().enumerate() {
            rounds[index].push(latency(&client, base, CHEAP_QUERY, first_time_ms).await);
        }
    }
    let latencies: Vec<(&str, Latency)> = targets
        .iter()
        .zip(rounds)
        .map(|((name, _), mut measured)| {
            measured.sort_by_key(|round| round.median);
            (*name, measured.swap_remove(ROUNDS / 2))
        })
        .collect();
    println!(
        "\ncheap instant query ({CHEAP_QUERY}), one client, {ROUNDS} alternating rounds of {LATENCY_SAMPLES} requests (median round):"
    );
    for (name, measured) in &latencies {
        println!(
            "  {name:<11} median {:.3} ms   p99 {:.3} ms",
            millis(measured.median),
            millis(measured.p99)
        );
    }
    let added_median = millis(latencies[1].1.median) - millis(latencies[0].1.median);
    let added_p99 = millis(latencies[1].1.p99) - millis(latencies[0].1.p99);
    println!(
        "  sluice adds {added_median:.3} ms to the median, {added_p99:.3} ms to p99 (bar: at most 0.5 ms to the median)"
    );

    for (label, query, bar) in [
        ("cheap instant query", CHEAP_QUERY, 0.50),
        ("aggregation over all series", AGGREGATION, 0.85),
    ] {
        let mut measured: Vec<Vec<f64>> = vec![Vec::new(), Vec::new()];
        for _ in 0..ROUNDS {
            for (index, (_, base)) in targets.iter().enumerate() {
                measured[index].push(throughput(&client, base, query, first_time_ms).await);
            }
        }
        let rates: Vec<(&str, f64)> = targets
            .iter()
            .zip(measured)
            .map(|((name, _), mut rounds)| {
                rounds.sort_by(f64::total_cmp);
                (*name, rounds[ROUNDS / 2])
            })
            .collect();
        println!(
            "\n{label} ({query}), {CONCURRENT_CLIENTS} concurrent clients, median of {ROUNDS} alternating rounds:"
        );
        for (name, rate) in &rates {
            println!("  {name:<11} {rate:>9.0} requests/s");
        }
        let ratio = rates[1].1 / rates[0].1;
        println!(
            "  sluice keeps {:.0}% of Prometheus's throughput (bar: at least {:.0}%)",
            ratio * 100.0,
            bar * 100.0
        );
    }
    let _ = sluice.process.terminate(Duration::from_secs(10)).await;
}
