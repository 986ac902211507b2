//! How much one query-scheduler carries, and how fair it stays under a flood.
//!
//! `cargo bench -p sluice-scheduler --bench scheduler_throughput` starts, in
//! one process over loopback gRPC, one scheduler, two frontends queueing
//! through it and two queriers pulling from it, and measures:
//! 1. sub-queries per second end to end (frontend → scheduler → querier →
//!    result straight back to the frontend) with an executor that does no work;
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

async fn serve(routes: tonic::service::Routes) -> String {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let address = listener.local_addr().expect("address").to_string();
    tokio::spawn(async move {
        tonic::transport::Server::builder()
            .tcp_nodelay(true)
            .add_routes(routes)
            .serve_with_incoming(tokio_stream::wrappers::TcpListenerStream::new(listener))
            .await
    });
    address
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
    let registry = prometheus::Registry::new();
    let scheduler = Scheduler::new(SchedulerConfig::default(), &registry);
    let mut routes = tonic::service::RoutesBuilder::default();
    routes.add_service(scheduler.frontend_service());
    routes.add_service(scheduler.querier_service());
    let scheduler_address = serve(routes.routes()).await;

    let mut frontends = Vec::new();
    for _ in 0..2 {
        // The frontend must know its own address before it exists, so the
        // listener is bound first and the service attached to it after.
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let address = listener.local_addr().expect("address").to_string();
        let frontend = Frontend::new(
            FrontendConfig {
                scheduler_addresses: vec![scheduler_address.clone()],
                advertised_address: address,
                scheduler_dns_refresh: Duration::from_millis(100),
                ..FrontendConfig::default()
            },
            &prometheus::Registry::new(),
        )
        .expect("frontend");
        let results = frontend.results_service();
        tokio::spawn(async move {
            tonic::transport::Server::builder()
                .tcp_nodelay(true)
                .add_service(results)
                .serve_with_incoming(tokio_stream::wrappers::TcpListenerStream::new(listener))
                .await
        });
        frontends.push(frontend);
    }

    let delay_us = Arc::new(AtomicU64::new(0));
    let (_stop_queriers, stopped) = tokio::sync::watch::channel(false);
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
            grpc_client: sluice_tls::GrpcChannels::default(),
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
    println!(
        "one query-scheduler, 2 frontends, 2 queriers x 16 workers, loopback gRPC, 2 cores shared by all"
    );

    // 1. Throughput with an executor that does no work.
    for window in [Duration::from_secs(1), Duration::from_secs(5)] {
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
        tokio::time::sleep(window).await;
        stop.store(true, Ordering::Relaxed);
        let completed = done.load(Ordering::Relaxed);
        let elapsed = started.elapsed();
        while clients.join_next().await.is_some() {}
        if window.as_secs() >= 5 {
            println!(
                "\nthroughput, no-op executor, 64 concurrent clients: {:.0} sub-queries/s ({completed} in {:.1}s; bar: at least 20,000/s)",
                completed as f64 / elapsed.as_secs_f64(),
                elapsed.as_secs_f64()
            );
        }
    }

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
