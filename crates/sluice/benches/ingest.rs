//! Remote-write ingest, sluice against Prometheus's own receiver
//! (`--web.enable-remote-write-receiver`), side by side in one run: the
//! same pre-encoded requests (`SERIES` series, each request holding one
//! sample of `SAMPLES_PER_REQUEST` of them, `SENDERS` senders each owning
//! a share of the series and sending its rounds in order), then samples
//! per second and resident memory per active series of each server.
//!
//! Run with `cargo bench -p sluice --bench ingest`; `SLUICE_INGEST_SERIES`,
//! `SLUICE_INGEST_ROUNDS`, `SLUICE_INGEST_SENDERS` and
//! `SLUICE_INGEST_SAMPLES_PER_REQUEST` change the defaults (100,000
//! series, 10 rounds, 4 senders, 2,000 samples a request).

// Only the steal-time report is used here.
#[allow(dead_code)]
mod support;

use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use http_body_util::Full;
use hyper::body::Bytes;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use sluice_remotewrite::proto::{TimeSeries, WriteRequest};
use sluice_remotewrite::{Label, Sample};
use sluice_testkit::{ChildProcess, TempDir, free_port, require_binary, wait_for_http_ok};
use support::{CpuTimes, steal_report};

type PushClient = Client<hyper_util::client::legacy::connect::HttpConnector, Full<Bytes>>;

fn setting(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|value| value.parse().ok())
        .unwrap_or(default)
}

struct Shape {
    series: usize,
    rounds: usize,
    senders: usize,
    per_request: usize,
}

/// The requests of each sender, in the order it sends them.
fn requests(shape: &Shape) -> Vec<Vec<Bytes>> {
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64;
    let base = now - shape.rounds as i64 * 15_000;
    let per_sender = shape.series / shape.senders;
    (0..shape.senders)
        .map(|sender| {
            let mut bodies = Vec::new();
            for round in 0..shape.rounds {
                let first = sender * per_sender;
                for start in (first..first + per_sender).step_by(shape.per_request) {
                    let end = (start + shape.per_request).min(first + per_sender);
                    let timeseries = (start..end)
                        .map(|series| TimeSeries {
                            labels: vec![
                                Label {
                                    name: "__name__".into(),
                                    value: format!("bench_metric_{}", series % 100),
                                },
                                Label {
                                    name: "instance".into(),
                                    value: format!("host-{}", series / 100),
                                },
                                Label {
                                    name: "job".into(),
                                    value: "ingest-bench".into(),
                                },
                            ],
                            samples: vec![Sample {
                                timestamp: base + round as i64 * 15_000,
                                value: (series * round) as f64,
                            }],
                            ..TimeSeries::default()
                        })
                        .collect();
                    let body = sluice_remotewrite::encode(&WriteRequest {
                        timeseries,
                        metadata: vec![],
                    });
                    bodies.push(Bytes::from(body));
                }
            }
            bodies
        })
        .collect()
}

async fn send_all(client: PushClient, url: String, bodies: Vec<Bytes>) -> usize {
    let mut failed = 0;
    for body in bodies {
        let request = hyper::Request::post(&url)
            .header("Content-Type", "application/x-protobuf")
            .header("Content-Encoding", "snappy")
            .header("X-Prometheus-Remote-Write-Version", "0.1.0")
            .body(Full::new(body))
            .unwrap();
        let response = client.request(request).await.expect("push");
        if !response.status().is_success() {
            failed += 1;
        }
        let _ = http_body_util::BodyExt::collect(response.into_body()).await;
    }
    failed
}

fn rss_bytes(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    status
        .lines()
        .find_map(|line| line.strip_prefix("VmRSS:"))
        .and_then(|value| {
            value
                .trim()
                .trim_end_matches("kB")
                .trim()
                .parse::<u64>()
                .ok()
        })
        .map_or(0, |kib| kib * 1024)
}

/// Sends every request to `url`; returns samples/s, and the server's RSS
/// growth over the run.
async fn run(name: &str, url: &str, pid: u32, shape: &Shape, bodies: &[Vec<Bytes>]) -> (f64, u64) {
    let before = rss_bytes(pid);
    let client: PushClient = Client::builder(TokioExecutor::new()).build_http();
    let started = Instant::now();
    let senders: Vec<_> = bodies
        .iter()
        .map(|own| tokio::spawn(send_all(client.clone(), url.to_owned(), own.clone())))
        .collect();
    let mut failed = 0;
    for sender in senders {
        failed += sender.await.unwrap();
    }
    let elapsed = started.elapsed();
    let samples = (shape.series / shape.senders * shape.senders * shape.rounds) as f64;
    let rate = samples / elapsed.as_secs_f64();
    let after = rss_bytes(pid);
    println!(
        "{name:>10}: {samples} samples in {elapsed:.2?}: {rate:>10.0} samples/s, RSS {} MiB (+{} MiB), {failed} requests refused",
        after >> 20,
        after.saturating_sub(before) >> 20
    );
    (rate, after)
}

#[tokio::main]
async fn main() {
    let shape = Shape {
        series: setting("SLUICE_INGEST_SERIES", 100_000),
        rounds: setting("SLUICE_INGEST_ROUNDS", 10),
        senders: setting("SLUICE_INGEST_SENDERS", 4),
        per_request: setting("SLUICE_INGEST_SAMPLES_PER_REQUEST", 2000),
    };
    let bodies = requests(&shape);
    let dir = TempDir::new("sluice-ingest-bench").unwrap();
    let sluice_port = free_port();
    let sluice_args = [
        "-server.http-listen-address=127.0.0.1".to_owned(),
        format!("-server.http-listen-port={sluice_port}"),
        "-server.grpc-listen-address=127.0.0.1".to_owned(),
        format!("-server.grpc-listen-port={}", free_port()),
        format!(
            "-blocks-storage.tsdb.dir={}",
            dir.path().join("tsdb").display()
        ),
        format!(
            "-blocks-storage.filesystem.dir={}",
            dir.path().join("blocks").display()
        ),
        "-distributor.ingestion-rate-limit=0".to_owned(),
        "-ingester.max-global-series-per-user=0".to_owned(),
        // The Prometheus it is compared with scrapes nothing either.
        "-self-scrape.enabled=false".to_owned(),
        "-log.level=warn".to_owned(),
    ];
    let mut sluice = ChildProcess::start(
        env!("CARGO_BIN_EXE_sluice"),
        &sluice_args,
        &[],
        dir.path().join("sluice.log"),
    )
    .unwrap();
    let sluice_url = format!("http://127.0.0.1:{sluice_port}");
    sluice
        .wait_http_ok(&format!("{sluice_url}/metrics"), Duration::from_secs(30))
        .await;
    let prometheus_port = free_port();
    std::fs::write(dir.path().join("prometheus.yml"), "scrape_configs: []\n").unwrap();
    let prometheus_args = [
        format!(
            "--config.file={}",
            dir.path().join("prometheus.yml").display()
        ),
        format!(
            "--storage.tsdb.path={}",
            dir.path().join("prometheus").display()
        ),
        format!("--web.listen-address=127.0.0.1:{prometheus_port}"),
        "--web.enable-remote-write-receiver".to_owned(),
    ];
    let mut prometheus = ChildProcess::start(
        require_binary("prometheus"),
        &prometheus_args,
        &[],
        dir.path().join("prometheus.log"),
    )
    .unwrap();
    let prometheus_url = format!("http://127.0.0.1:{prometheus_port}");
    wait_for_http_ok(
        &format!("{prometheus_url}/-/ready"),
        Duration::from_secs(60),
    )
    .await
    .unwrap();
    println!(
        "{} series, {} rounds, {} senders, {} samples a request",
        shape.series, shape.rounds, shape.senders, shape.per_request
    );
    let cpu = CpuTimes::now();
    let (sluice_rate, sluice_rss) = run(
        "sluice",
        &format!("{sluice_url}/api/v1/push"),
        sluice.id(),
        &shape,
        &bodies,
    )
    .await;
    let (prometheus_rate, prometheus_rss) = run(
        "prometheus",
        &format!("{prometheus_url}/api/v1/write"),
        prometheus.id(),
        &shape,
        &bodies,
    )
    .await;
    let series = shape.series as f64;
    println!(
        "sluice/prometheus samples/s: {:.2}x; RSS per series: sluice {:.0} B, prometheus {:.0} B ({:.2}x)",
        sluice_rate / prometheus_rate,
        sluice_rss as f64 / series,
        prometheus_rss as f64 / series,
        sluice_rss as f64 / prometheus_rss as f64
    );
    let flush_started = Instant::now();
    let client: PushClient = Client::builder(TokioExecutor::new()).build_http();
    let request = hyper::Request::post(format!("{sluice_url}/ingester/flush"))
        .body(Full::new(Bytes::new()))
        .unwrap();
    let status = client.request(request).await.unwrap().status();
    println!(
        "sluice: cut the head ({} series) into a block in {:.2?} ({status})",
        shape.series,
        flush_started.elapsed()
    );
    println!("{}", steal_report(&cpu));
    sluice.kill();
    prometheus.kill();
}
