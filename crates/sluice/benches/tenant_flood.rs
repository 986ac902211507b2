//! A quiet tenant beside a flood, the issue that made sluice charge tenants
//! for querier slots: one tenant sends cheap instant queries one at a time
//! while another keeps many clients of slow, uncacheable 3-day range
//! queries going, through `-target=all` in front of a real Prometheus.
//!
//! Run with `cargo bench -p sluice --bench tenant_flood`. It prints the
//! quiet tenant's median and p99 alone and beside the flood, and the flood's
//! answers per second, for three setups of the same binary: `by count` (no
//! reserved slot, a fixed limit of `-querier.max-concurrent`: any free slot
//! goes to whoever is queued, as before), the reserved slot alone, and the
//! defaults (a reserved slot and the adaptive limit). It also times the
//! quiet query straight to Prometheus during the flood: what the backend
//! alone makes of it, so the rest is sluice's.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

mod support;

use sluice_testkit::{Dataset, PrometheusServer, form_urlencode};
use support::{HttpClient, millis, start_sluice};

const QUIET_QUERY: &str = "node_temperature_celsius{instance=\"node-normal\"}";
/// Every series of a metric over three days, made distinct per request so
/// that neither the results cache nor collapsing can share work.
const FLOOD_QUERY: &str = "sum by (job) (rate(http_requests_total[1h]))";
const FLOOD_CLIENTS: usize = 60;
const QUIET_ALONE_SAMPLES: usize = 200;
const QUIET_BESIDE: Duration = Duration::from_secs(30);
const DIRECT_BESIDE: Duration = Duration::from_secs(10);

/// The status of a GET as `tenant`; `None` once the server is gone.
async fn get(client: &HttpClient, url: &str, tenant: &str) -> Option<u16> {
    let request = hyper::Request::get(url)
        .header("X-Scope-OrgID", tenant)
        .body(http_body_util::Empty::new())
        .expect("request");
    let response = client.request(request).await.ok()?;
    let status = response.status().as_u16();
    support::received(response).await;
    Some(status)
}

/// A gauge from sluice's `/metrics`.
async fn gauge(client: &HttpClient, base: &str, name: &str) -> String {
    let request = hyper::Request::get(format!("{base}/metrics"))
        .body(http_body_util::Empty::new())
        .expect("request");
    let response = client.request(request).await.expect("metrics");
    let body = support::received(response).await.to_bytes();
    String::from_utf8_lossy(&body)
        .lines()
        .find(|line| line.starts_with(name))
        .and_then(|line| line.split_whitespace().nth(1))
        .unwrap_or("absent")
        .to_owned()
}

fn quiet_url(base: &str, time_ms: i64, n: i64) -> String {
    let time_ms = time_ms + n % 86_400_000;
    let time = format!("{}.{:03}", time_ms / 1000, time_ms % 1000);
    format!(
        "{base}/api/v1/query?{}",
        form_urlencode(&[("query", QUIET_QUERY), ("time", &time)])
    )
}

fn flood_url(base: &str, dataset: &Dataset, n: u64) -> String {
    let query = format!("{FLOOD_QUERY} + {n}");
    let start = (dataset.start_ms() / 1000).to_string();
    let end = (dataset.end_ms() / 1000).to_string();
    format!(
        "{base}/api/v1/query_range?{}",
        form_urlencode(&[
            ("query", &query),
            ("start", &start),
            ("end", &end),
            ("step", "60")
        ])
    )
}

/// The quiet tenant's latencies, sequential, until `samples` or `window`.
async fn quiet(
    client: &HttpClient,
    base: &str,
    time_ms: i64,
    samples: usize,
    window: Duration,
) -> Vec<Duration> {
    let started = Instant::now();
    let mut latencies = Vec::new();
    let mut n = 0;
    while latencies.len() < samples && started.elapsed() < window {
        n += 1;
        let sent = Instant::now();
        let status = get(client, &quiet_url(base, time_ms, n), "quiet").await;
        assert_eq!(status, Some(200), "quiet query");
        latencies.push(sent.elapsed());
    }
    latencies.sort();
    latencies
}

fn summary(latencies: &[Duration]) -> String {
    format!(
        "median {:>8.1} ms   p99 {:>8.1} ms   ({} queries)",
        millis(latencies[latencies.len() / 2]),
        millis(latencies[latencies.len() * 99 / 100]),
        latencies.len()
    )
}

/// Starts the flood; returns the count of its 200 answers and a stop flag.
fn flood(client: &HttpClient, base: &str, dataset: &Dataset) -> (Arc<AtomicU64>, Arc<AtomicBool>) {
    let answered = Arc::new(AtomicU64::new(0));
    let stop = Arc::new(AtomicBool::new(false));
    let next = Arc::new(AtomicU64::new(0));
    for _ in 0..FLOOD_CLIENTS {
        let (client, base, dataset) = (client.clone(), base.to_owned(), dataset.clone());
        let (answered, stop, next) = (answered.clone(), stop.clone(), next.clone());
        tokio::spawn(async move {
            while !stop.load(Ordering::Relaxed) {
                let n = next.fetch_add(1, Ordering::Relaxed);
                match get(&client, &flood_url(&base, &dataset, n), "flood").await {
                    Some(200) => {
                        answered.fetch_add(1, Ordering::Relaxed);
                    }
                    // A 429 (queue full): back off as a client would. Retrying
                    // at once makes the flood a storm of rejected requests,
                    // which measures request parsing, not fairness.
                    Some(_) => tokio::time::sleep(Duration::from_secs(1)).await,
                    None => return,
                }
            }
        });
    }
    (answered, stop)
}

async fn run(name: &str, prometheus: &PrometheusServer, dataset: &Dataset, flags: &[&str]) {
    let mut args = vec!["-auth.multitenancy-enabled=true"];
    args.extend_from_slice(flags);
    let mut sluice = start_sluice(&prometheus.url(), &args).await;
    let client = support::client(FLOOD_CLIENTS + 4);
    let time_ms = dataset.start_ms() + 86_400_000;
    let alone = quiet(
        &client,
        &sluice.url,
        time_ms,
        QUIET_ALONE_SAMPLES,
        Duration::from_secs(60),
    )
    .await;
    let (answered, stop) = flood(&client, &sluice.url, dataset);
    tokio::time::sleep(Duration::from_secs(5)).await;
    let before = answered.load(Ordering::Relaxed);
    let beside = quiet(&client, &sluice.url, time_ms, usize::MAX, QUIET_BESIDE).await;
    let flood_rate =
        (answered.load(Ordering::Relaxed) - before) as f64 / QUIET_BESIDE.as_secs_f64();
    // The same query straight to Prometheus, flood still running: what the
    // backend alone makes of it at this load.
    let direct = quiet(
        &client,
        &prometheus.url(),
        time_ms,
        usize::MAX,
        DIRECT_BESIDE,
    )
    .await;
    let limit = gauge(&client, &sluice.url, "sluice_querier_concurrency_limit").await;
    let running = gauge(&client, &sluice.url, "sluice_querier_inflight_requests").await;
    stop.store(true, Ordering::Relaxed);
    println!("{name}");
    println!("  quiet alone         {}", summary(&alone));
    println!("  quiet beside flood  {}", summary(&beside));
    println!("  direct to backend   {}", summary(&direct));
    println!("  flood answers       {flood_rate:.2} /s");
    println!("  querier at the end  limit {limit}, running {running}");
    sluice.process.terminate(Duration::from_secs(10)).await;
}

fn main() {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    runtime.block_on(async {
        let dataset = Dataset::new();
        let prometheus = PrometheusServer::start(&dataset).await;
        let steal = support::CpuTimes::now();
        run(
            "by count (no reserve, fixed limit)",
            &prometheus,
            &dataset,
            &[
                "-query-frontend.reserved-querier-slots=0",
                "-querier.min-concurrent=20",
            ],
        )
        .await;
        run(
            "by cost, fixed limit (reserve only)",
            &prometheus,
            &dataset,
            &["-querier.min-concurrent=20"],
        )
        .await;
        run("by cost (defaults)", &prometheus, &dataset, &[]).await;
        println!("{}", support::steal_report(&steal));
    });
}
