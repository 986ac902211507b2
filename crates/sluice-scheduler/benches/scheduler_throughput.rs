//! How much one query-scheduler carries, and how fair it stays under a flood.
//!
//! `cargo bench -p sluice-scheduler --bench scheduler_throughput` starts, in
//! one process over loopback gRPC, one scheduler, two frontends queueing
//! through it and two queriers pulling from it, and measures:
//! 1. sub-queries per second end to end (frontend → scheduler → querier →
//!    result straight back to the frontend) with an executor that does no
//!    work, in plain text and with every connection over mutual TLS;
//! 2. a quiet tenant's p50/p99 latency alone, then beside a tenant flooding
//!    far past capacity, with an executor that takes 2 ms and then 10 ms a
//!    sub-query on average, varying from half to one and a half times that
//!    (the backend's time, spent off this machine's CPU).

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use sluice_frontend::{Frontend, FrontendConfig};
use sluice_proto::{
    ApiResponse, ErrorType, InstantQuery, QueryData, QueryKind, QueryRequest, ResponseData,
    ResultType,
};
use sluice_querier::{Execution, Executor, QuerierConfig, QuerierMetrics};
use sluice_scheduler::{Scheduler, SchedulerConfig};

// The allocator the sluice binary uses, so the figures are production's.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// An executor whose only cost is an optional fixed delay.
struct BenchExecutor {
    delay_us: Arc<AtomicU64>,
}

impl Executor for BenchExecutor {
    async fn execute(
        &self,
        _tenant: &str,
        _request: &QueryRequest,
        _timeout: Duration,
    ) -> Execution {
        let mean = self.delay_us.load(Ordering::Relaxed);
        if mean > 0 {
            // Spread over 0.5x..1.5x of the mean: a backend's times vary, and
            // a constant one keeps every worker finishing in lockstep, so a
            // request arriving just after a burst waits a whole period.
            let nanos = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|elapsed| elapsed.subsec_nanos())
                .unwrap_or(0);
            let spread = mean / 2 + (u64::from(nanos) * 2654435761 % 1000) * mean / 1000;
            tokio::time::sleep(Duration::from_micros(spread)).await;
        }
        Execution {
            response: ApiResponse::success(ResponseData::Query(QueryData {
                result_type: ResultType::Vector as i32,
                ..QueryData::default()
            })),
            retryable: false,
        }
    }
}

/// Mutual TLS between every role: servers require client certificates
/// from the test CA, and every client presents one.
struct MutualTls {
    server: Arc<rustls::ServerConfig>,
    client: sluice_tls::GrpcChannels,
    _pki: sluice_testkit::TestPki,
}

impl MutualTls {
    fn new() -> MutualTls {
        let pki = sluice_testkit::TestPki::generate();
        let server = sluice_tls::ServerTls {
            cert_path: pki.path("server.pem"),
            key_path: pki.path("server.key"),
            ca_path: pki.path("ca.pem"),
            client_auth: sluice_tls::ClientAuth::RequireAndVerifyClientCert,
        }
        .server_config(&[b"h2"])
        .expect("server TLS");
        let client = sluice_tls::GrpcChannels::new(&sluice_tls::ClientTls {
            enabled: true,
            cert_path: pki.path("client.pem"),
            key_path: pki.path("client.key"),
            ca_path: pki.path("ca.pem"),
            ..sluice_tls::ClientTls::default()
        })
        .expect("client TLS");
        MutualTls {
            server: Arc::new(server),
            client,
            _pki: pki,
        }
    }
}

async fn serve(
    routes: tonic::service::Routes,
    listener: tokio::net::TcpListener,
    tls: Option<&MutualTls>,
) {
    let server = tonic::transport::Server::builder()
        .tcp_nodelay(true)
        .add_routes(routes);
    match tls {
        Some(tls) => {
            let incoming = sluice_tls::tls_incoming(listener, tls.server.clone());
            tokio::spawn(server.serve_with_incoming(incoming));
        }
        None => {
            let incoming = tokio_stream::wrappers::TcpListenerStream::new(listener);
            tokio::spawn(server.serve_with_incoming(incoming));
        }
    }
}

async fn bind() -> (tokio::net::TcpListener, String) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let address = listener.local_addr().expect("address").to_string();
    (listener, address)
}

/// One scheduler, two frontends queueing through it and two queriers
/// pulling from it, in plain text or over mutual TLS; `delay_us` is the
/// queriers' executor time.
async fn start_cluster(
    tls: Option<&MutualTls>,
    delay_us: &Arc<AtomicU64>,
    stopped: &tokio::sync::watch::Receiver<bool>,
) -> (Scheduler, Vec<Frontend>) {
    let grpc_client = tls.map(|tls| tls.client.clone()).unwrap_or_default();
    let scheduler = Scheduler::new(
        SchedulerConfig {
            grpc_client: grpc_client.clone(),
            ..SchedulerConfig::default()
        },
        &prometheus::Registry::new(),
    );
    let mut routes = tonic::service::RoutesBuilder::default();
    routes.add_service(scheduler.frontend_service());
    routes.add_service(scheduler.querier_service());
    let (listener, scheduler_address) = bind().await;
    serve(routes.routes(), listener, tls).await;

    let mut frontends = Vec::new();
    for _ in 0..2 {
        // The frontend must know its own address before it exists, so the
        // listener is bound first and the service attached to it after.
        let (listener, address) = bind().await;
        let frontend = Frontend::new(
            FrontendConfig {
                scheduler_addresses: vec![scheduler_address.clone()],
                advertised_address: address,
                scheduler_dns_refresh: Duration::from_millis(100),
                grpc_client: grpc_client.clone(),
                ..FrontendConfig::default()
            },
            &prometheus::Registry::new(),
        )
        .expect("frontend");
        let mut routes = tonic::service::RoutesBuilder::default();
        routes.add_service(frontend.results_service());
        serve(routes.routes(), listener, tls).await;
        frontends.push(frontend);
    }

    for index in 0..2 {
        let config = QuerierConfig {
            querier_id: format!("querier-{index}"),
            owner_addresses: vec![scheduler_address.clone()],
            max_concurrent: 16,
            // A fixed limit: this measures the scheduler, not adaptation.
            min_concurrent: 16,
            backend_probe_interval: Duration::ZERO,
            dns_refresh: Duration::from_secs(10),
            shutdown_grace: Duration::from_secs(1),
            grpc_client: grpc_client.clone(),
        };
        tokio::spawn(sluice_querier::run(
            config,
            Arc::new(BenchExecutor {
                delay_us: delay_us.clone(),
            }),
            None,
            QuerierMetrics::new(&prometheus::Registry::new()),
            stopped.clone(),
        ));
    }
    let deadline = Instant::now() + Duration::from_secs(10);
    while !(scheduler.is_ready() && frontends.iter().all(Frontend::is_ready)) {
        assert!(
            Instant::now() < deadline,
            "cluster did not come up: scheduler ready {}, frontends ready {:?}",
            scheduler.is_ready(),
            frontends.iter().map(Frontend::is_ready).collect::<Vec<_>>()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    (scheduler, frontends)
}

/// CPU seconds this process has used (user + system), from
/// `/proc/self/stat` in clock ticks of 1/100 s (Linux's USER_HZ).
fn process_cpu_seconds() -> f64 {
    let stat = std::fs::read_to_string("/proc/self/stat").unwrap_or_default();
    // Fields after the command name, which is in parentheses.
    let fields: Vec<&str> = stat
        .rsplit_once(')')
        .map(|(_, rest)| rest.split_whitespace().collect())
        .unwrap_or_default();
    let ticks = |index: usize| {
        fields
            .get(index)
            .and_then(|field| field.parse::<f64>().ok())
    };
    (ticks(11).unwrap_or(0.0) + ticks(12).unwrap_or(0.0)) / 100.0
}

/// What one window measured: sub-queries per second, and the process's CPU
/// time per sub-query (less sensitive than the rate to other processes
/// sharing the cores).
#[derive(Debug)]
struct Rate {
    per_second: f64,
    cpu_us_per_query: f64,
}

/// Sub-queries answered by `frontends` to 64 concurrent clients over
/// `window`, with an executor that does no work.
async fn throughput(frontends: &[Frontend], window: Duration) -> Rate {
    let done = Arc::new(AtomicU64::new(0));
    let stop = Arc::new(AtomicBool::new(false));
    let mut clients = tokio::task::JoinSet::new();
    for client in 0..64u64 {
        let frontend = frontends[(client % 2) as usize].clone();
        let (done, stop) = (done.clone(), stop.clone());
        clients.spawn(async move {
            let mut index = client;
            while !stop.load(Ordering::Relaxed) {
                let tenant = if index % 2 == 0 {
                    "tenant-a"
                } else {
                    "tenant-b"
                };
                let answer = frontend.execute(tenant, request(index)).await;
                assert!(!answer.is_error(), "{}", answer.error);
                done.fetch_add(1, Ordering::Relaxed);
                index += 64;
            }
        });
    }
    let started = Instant::now();
    let cpu_before = process_cpu_seconds();
    tokio::time::sleep(window).await;
    stop.store(true, Ordering::Relaxed);
    let completed = done.load(Ordering::Relaxed);
    let elapsed = started.elapsed();
    let cpu = process_cpu_seconds() - cpu_before;
    while clients.join_next().await.is_some() {}
    Rate {
        per_second: completed as f64 / elapsed.as_secs_f64(),
        cpu_us_per_query: cpu * 1e6 / completed.max(1) as f64,
    }
}

fn request(index: u64) -> QueryRequest {
    QueryRequest {
        kind: Some(QueryKind::Instant(InstantQuery {
            query: "up".to_owned(),
            time_ms: index as i64,
            ..InstantQuery::default()
        })),
    }
}

fn percentile(sorted: &[Duration], fraction: f64) -> Duration {
    sorted[((sorted.len() as f64 * fraction) as usize).min(sorted.len() - 1)]
}

async fn quiet_latencies(frontends: &[Frontend], samples: usize) -> Vec<Duration> {
    let mut latencies = Vec::with_capacity(samples);
    for index in 0..samples {
        let started = Instant::now();
        let answer = frontends[index % frontends.len()]
            .execute("quiet", request(index as u64))
            .await;
        assert!(!answer.is_error(), "quiet tenant failed: {}", answer.error);
        latencies.push(started.elapsed());
    }
    latencies.sort();
    latencies
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    // RUST_LOG=debug shows the cluster's own logs when something is off.
    let _ = tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
        .try_init();
    let delay_us = Arc::new(AtomicU64::new(0));
    let (_stop_queriers, stopped) = tokio::sync::watch::channel(false);
    let (_plain_scheduler, frontends) = start_cluster(None, &delay_us, &stopped).await;
    let tls = MutualTls::new();
    let (_tls_scheduler, tls_frontends) = start_cluster(Some(&tls), &delay_us, &stopped).await;
    println!(
        "one query-scheduler, 2 frontends, 2 queriers x 16 workers, loopback gRPC, 2 cores shared by all"
    );

    // 1. Throughput with an executor that does no work, in plain text and
    //    over mutual TLS, alternating windows so drift in the machine's
    //    load falls on both alike. A 1 s window first warms each up.
    let window = Duration::from_secs(3);
    throughput(&frontends, Duration::from_secs(1)).await;
    throughput(&tls_frontends, Duration::from_secs(1)).await;
    let (mut plain, mut mutual) = (Vec::new(), Vec::new());
    for _ in 0..4 {
        plain.push(throughput(&frontends, window).await);
        mutual.push(throughput(&tls_frontends, window).await);
    }
    let mean = |rates: &[Rate], of: fn(&Rate) -> f64| {
        rates.iter().map(of).sum::<f64>() / rates.len() as f64
    };
    let rate: fn(&Rate) -> f64 = |rate| rate.per_second;
    let cpu: fn(&Rate) -> f64 = |rate| rate.cpu_us_per_query;
    println!(
        "\nthroughput, no-op executor, 64 concurrent clients, 4 alternating {}s windows each (bar: at least 20,000/s):",
        window.as_secs()
    );
    for (label, rates) in [("plain gRPC", &plain), ("mutual TLS", &mutual)] {
        println!(
            "  {label}: {:.0} sub-queries/s {:.0?}, {:.1} µs CPU per sub-query",
            mean(rates, rate),
            rates.iter().map(rate).collect::<Vec<_>>(),
            mean(rates, cpu)
        );
    }
    println!(
        "  mutual TLS: {:.1}% of plain's throughput, {:.1}% of its CPU per sub-query (bar: throughput at least 90%)",
        100.0 * mean(&mutual, rate) / mean(&plain, rate),
        100.0 * mean(&mutual, cpu) / mean(&plain, cpu)
    );
    drop(tls_frontends);

    // 2. Fairness: a quiet tenant alone, then beside a flood.
    // At 2 ms a sub-query the flood's accepted work alone saturates these
    // 2 cores; at 10 ms the queriers are the bottleneck, as with a real
    // backend, and the figure is about the queue's fairness.
    for executor_ms in [2u64, 10] {
        delay_us.store(executor_ms * 1000, Ordering::Relaxed);
        let samples = if executor_ms == 2 { 1500 } else { 500 };
        let solo = quiet_latencies(&frontends, samples).await;
        let millis = |duration: Duration| duration.as_secs_f64() * 1000.0;
        println!(
            "\nquiet tenant, executor taking {executor_ms} ms on average, {samples} sequential requests:"
        );
        println!(
            "  alone:                           p50 {:.2} ms   p99 {:.2} ms",
            millis(percentile(&solo, 0.5)),
            millis(percentile(&solo, 0.99))
        );
        // Two floods of 256 clients against 100 queue slots and 32 workers: one
        // whose clients back off 50 ms when told 429, as HTTP clients do, and an
        // adversarial one retrying after 5 ms, whose rejections alone keep a
        // core busy.
        for (label, backoff) in [
            ("flood backing off 50 ms on 429", Duration::from_millis(50)),
            ("flood retrying 5 ms after 429", Duration::from_millis(5)),
        ] {
            let stop = Arc::new(AtomicBool::new(false));
            let flood_answers = Arc::new(AtomicU64::new(0));
            let flood_rejections = Arc::new(AtomicU64::new(0));
            let mut flood = tokio::task::JoinSet::new();
            for client in 0..256u64 {
                let frontend = frontends[(client % 2) as usize].clone();
                let (stop, answers, rejections) = (
                    stop.clone(),
                    flood_answers.clone(),
                    flood_rejections.clone(),
                );
                flood.spawn(async move {
                    let mut index = client;
                    while !stop.load(Ordering::Relaxed) {
                        let answer = frontend.execute("flood", request(index)).await;
                        if answer.error_type() == ErrorType::TooManyRequests {
                            rejections.fetch_add(1, Ordering::Relaxed);
                            tokio::time::sleep(backoff).await;
                        } else {
                            assert!(!answer.is_error(), "{}", answer.error);
                            answers.fetch_add(1, Ordering::Relaxed);
                        }
                        index += 256;
                    }
                });
            }
            tokio::time::sleep(Duration::from_millis(500)).await;
            let beside = quiet_latencies(&frontends, samples).await;
            stop.store(true, Ordering::Relaxed);
            while flood.join_next().await.is_some() {}
            println!(
                "  beside a {label}: p50 {:.2} ms   p99 {:.2} ms   = {:.2}x p99 alone (bar: within 2x); flood {} answered, {} told 429",
                millis(percentile(&beside, 0.5)),
                millis(percentile(&beside, 0.99)),
                percentile(&beside, 0.99).as_secs_f64() / percentile(&solo, 0.99).as_secs_f64(),
                flood_answers.load(Ordering::Relaxed),
                flood_rejections.load(Ordering::Relaxed)
            );
        }
    }
}
