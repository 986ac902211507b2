//! What sluice costs in front of Prometheus, measured in one run on the same
//! data: the same requests straight to a real Prometheus and through sluice
//! (`-target=all`: a frontend and its in-process querier).
//!
//! Run with `cargo bench -p sluice --bench frontend_overhead`. It prints the
//! median and p99 latency of a cheap one-series instant query from one client,
//! and the throughput of 32 concurrent keep-alive clients for that query and
//! for an aggregation over every series of a metric, each as sluice's figure,
//! Prometheus's, and their ratio. Ratios, not absolute times, are the result:
//! the machine is shared, so every round measures each target in turn and
//! ratios are taken within a round before the median is taken. Throughput
//! rounds are many and short, and every other round runs the targets in the
//! reverse order: Prometheus's own cost per query drifts by a tenth and more
//! over seconds on this machine (its heap, the neighbours' load), and a few
//! long rounds in one fixed order left the ratio to chance (one run's five
//! rounds spanned 55% to 93%).
//!
//! sluice runs twice, side by side: with its defaults (on a machine of two
//! cores, one runtime thread), and with `-server.worker-threads` set to one
//! thread per core, as on a larger machine, to show what that default is
//! worth here (2 cores for Prometheus, sluice and the load).
//!
//! Every request is distinct (its own evaluation time, a millisecond apart):
//! identical concurrent requests would be collapsed into one sub-query by
//! sluice, a feature, but not the overhead measured here.

use std::time::{Duration, Instant};

mod support;

use sluice_testkit::{Dataset, PrometheusServer, form_urlencode};
use support::{HttpClient, millis, start_sluice};

const CHEAP_QUERY: &str = "node_temperature_celsius{instance=\"node-normal\"}";
const AGGREGATION: &str = "sum by (job) (rate(http_requests_total[5m]))";
const LATENCY_SAMPLES: usize = 1000;
/// Each target's latency is measured this many times, in turn, and the
/// median kept: a burst of unrelated load on the shared machine then hits
/// one round, not one side.
const ROUNDS: usize = 5;
/// Throughput rounds: as many seconds of load per target as five rounds of
/// ten, in short windows, so that drift between two measurements of a
/// round is small and the median has many rounds to choose from.
const THROUGHPUT_ROUNDS: usize = 16;
const CONCURRENT_CLIENTS: usize = 32;
const THROUGHPUT_WINDOW: Duration = Duration::from_secs(3);

async fn get(client: &HttpClient, url: &hyper::Uri) -> usize {
    let response = client.get(url.clone()).await.expect("request");
    assert_eq!(response.status(), 200, "{url}");
    use hyper::body::Buf;
    support::received(response).await.aggregate().remaining()
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

fn median(mut values: Vec<f64>) -> f64 {
    values.sort_by(f64::total_cmp);
    values[values.len() / 2]
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    // `cargo bench` passes --bench; other arguments are ignored.
    let dataset = Dataset::new();
    let prometheus = PrometheusServer::start(&dataset).await;
    // sluice as it comes, and with a runtime thread per core: on a machine
    // this small, shared with Prometheus and the load generator, the
    // default of one thread leaves Prometheus more of the CPU.
    let mut sluice = start_sluice(&prometheus.url(), &[]).await;
    let cores = std::thread::available_parallelism().map_or(1, |cores| cores.get());
    let thread_per_core = format!("-server.worker-threads={cores}");
    let mut sluice_thread_per_core = start_sluice(&prometheus.url(), &[&thread_per_core]).await;

    let first_time_ms = dataset.start_ms() + 86_400_000;
    let client = support::client(CONCURRENT_CLIENTS * 2);
    let targets = [
        ("prometheus".to_owned(), prometheus.url()),
        ("sluice".to_owned(), sluice.url.clone()),
        (
            format!("sluice {thread_per_core}"),
            sluice_thread_per_core.url.clone(),
        ),
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
    println!(
        "each figure: the median of {ROUNDS} latency rounds or {THROUGHPUT_ROUNDS} throughput rounds, each round measuring every target in turn (throughput: in alternating order); ratios and differences are taken within a round"
    );

    let cpu_before = support::CpuTimes::now();
    let mut rounds: Vec<Vec<Latency>> = targets.iter().map(|_| Vec::new()).collect();
    for _ in 0..ROUNDS {
        for (index, (_, base)) in targets.iter().enumerate() {
            rounds[index].push(latency(&client, base, CHEAP_QUERY, first_time_ms).await);
        }
    }
    println!(
        "\ncheap instant query ({CHEAP_QUERY}), one client, {LATENCY_SAMPLES} requests a round:"
    );
    for (index, (name, _)) in targets.iter().enumerate() {
        let medians = rounds[index]
            .iter()
            .map(|round| millis(round.median))
            .collect();
        let p99s = rounds[index]
            .iter()
            .map(|round| millis(round.p99))
            .collect();
        print!(
            "  {name:<32} median {:.3} ms   p99 {:.3} ms",
            median(medians),
            median(p99s)
        );
        if index > 0 {
            let added: Vec<f64> = rounds[index]
                .iter()
                .zip(&rounds[0])
                .map(|(ours, theirs)| millis(ours.median) - millis(theirs.median))
                .collect();
            print!(
                "   adds {:.3} ms to the median (bar: at most 0.5 ms)",
                median(added)
            );
        }
        println!();
    }

    for (label, query, bar) in [
        ("cheap instant query", CHEAP_QUERY, 0.50),
        ("aggregation over all series", AGGREGATION, 0.85),
    ] {
        let mut measured: Vec<Vec<f64>> = targets.iter().map(|_| Vec::new()).collect();
        for round in 0..THROUGHPUT_ROUNDS {
            // Alternate the order, so a steady drift favours no target.
            let mut order: Vec<usize> = (0..targets.len()).collect();
            if round % 2 == 1 {
                order.reverse();
            }
            for index in order {
                let base = &targets[index].1;
                measured[index].push(throughput(&client, base, query, first_time_ms).await);
            }
        }
        println!("\n{label} ({query}), {CONCURRENT_CLIENTS} concurrent clients:");
        for (index, (name, _)) in targets.iter().enumerate() {
            print!(
                "  {name:<32} {:>9.0} requests/s",
                median(measured[index].clone())
            );
            if index > 0 {
                let ratios: Vec<f64> = measured[index]
                    .iter()
                    .zip(&measured[0])
                    .map(|(ours, theirs)| ours / theirs)
                    .collect();
                let listed: Vec<String> = ratios
                    .iter()
                    .map(|ratio| format!("{:.0}%", ratio * 100.0))
                    .collect();
                print!(
                    "   keeps {:.0}% of Prometheus's (rounds: {}; bar: at least {:.0}%)",
                    median(ratios.clone()) * 100.0,
                    listed.join(" "),
                    bar * 100.0
                );
            }
            println!();
        }
    }
    println!("\n{}", support::steal_report(&cpu_before));
    let _ = sluice.process.terminate(Duration::from_secs(10)).await;
    let _ = sluice_thread_per_core
        .process
        .terminate(Duration::from_secs(10))
        .await;
}
