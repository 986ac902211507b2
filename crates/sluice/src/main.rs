//! The `sluice` binary: one process, the roles chosen with `-target`.
//!
//! `all` (the default) runs a query-frontend, a querier that serves it
//! in-process, the store (remote write into a WAL and a head the querier
//! reads) and the compactor (merging and expiring the bucket's blocks);
//! `query-frontend`, `querier`, `store` and `compactor` run one role each so
//! they can be scaled apart. See `sluice -help` and `sluice.example.yaml`.

mod config;
mod limits;
mod security;
mod status;

use std::net::SocketAddr;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use config::{Config, Loaded, Role};
use sluice_bucket::Bucket;
use sluice_compactor::Compactor;
use sluice_frontend::{Frontend, FrontendConfig};
use sluice_metastore::Metastore;
use sluice_querier::{
    EngineExecutor, LocalConnect, PrometheusExecutor, QuerierConfig, QuerierMetrics,
};
use sluice_store::Store;
use tokio::sync::watch;

// Answering a query allocates many small buffers (headers, labels, JSON);
// mimalloc serves those markedly faster than glibc's allocator.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let config = match config::load(&args, &|name| std::env::var(name).ok()) {
        Ok(Loaded::Run(config)) => config,
        Ok(Loaded::Help(text)) => {
            print!("{text}");
            return ExitCode::SUCCESS;
        }
        Err(error) => {
            eprintln!("sluice: {error}");
            return ExitCode::from(2);
        }
    };
    init_logging(&config);
    let mut builder = tokio::runtime::Builder::new_multi_thread();
    // Parsing and evaluating walk a query's tree recursively, on the
    // workers and the blocking pool; their stacks hold the deepest tree
    // the parser accepts.
    builder.thread_stack_size(sluice_promql::STACK_BYTES);
    builder.worker_threads(worker_threads(
        config.worker_threads,
        std::thread::available_parallelism().map_or(1, |cores| cores.get()),
    ));
    let runtime = match builder.enable_all().build() {
        Ok(runtime) => runtime,
        Err(error) => {
            eprintln!("sluice: cannot start the runtime: {error}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(run(*config)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            tracing::error!("{error:#}");
            eprintln!("sluice: {error:#}");
            ExitCode::FAILURE
        }
    }
}

fn init_logging(config: &Config) {
    let filter = tracing_subscriber::EnvFilter::try_new(&config.log_level)
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(false);
    if config.log_format == "json" {
        builder.json().init();
    } else {
        builder.init();
    }
}

/// The runtime's threads: as configured, or for `0` one per core, except on
/// machines of two cores or fewer, where one.
///
/// These threads only move bytes: parse, route, queue, decode and encode
/// answers. The CPU-heavy work (compression, the embedded engine) runs on
/// the blocking pool either way. On two cores, usually shared with the
/// backend and the clients, a second thread mostly wakes the first and is
/// woken by it: forwarding an aggregation to Prometheus measured 2.7
/// context switches and about 180 µs of sluice's CPU per query with two
/// threads, against 1.4 and about 140 µs with one, with no loss on cheap
/// queries (see the `frontend_overhead` bench).
fn worker_threads(configured: usize, cores: usize) -> usize {
    match configured {
        0 if cores <= 2 => 1,
        0 => cores,
        threads => threads,
    }
}

/// Waits for SIGTERM or Ctrl-C.
async fn termination_signal() {
    let mut terminate = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        .expect("installing the SIGTERM handler");
    tokio::select! {
        _ = terminate.recv() => {}
        _ = tokio::signal::ctrl_c() => {}
    }
}

fn listen_address(address: &str, port: u16) -> anyhow::Result<SocketAddr> {
    let host = if address.is_empty() {
        "0.0.0.0"
    } else {
        address
    };
    format!("{host}:{port}")
        .parse()
        .or_else(|_| format!("[{host}]:{port}").parse())
        .with_context(|| format!("invalid listen address {host}:{port}"))
}

/// What the querier runs sub-queries with.
enum QuerierExecutor {
    // Boxed: the HTTP client is large, and the value lives only until spawn.
    Downstream(Box<PrometheusExecutor>),
    /// The embedded engine, and the blocks it reads (for the status page).
    Engine(EngineExecutor, Arc<Metastore>),
}

/// What the rest of the process keeps of a started querier.
struct StartedQuerier {
    /// Frontends or schedulers it pulls from, read by a querier alone's `/ready`.
    owners: prometheus::IntGauge,
    /// The blocks its embedded engine reads, if it runs one.
    metastore: Option<Arc<Metastore>>,
    task: tokio::task::JoinHandle<()>,
}

/// The `prometheus` executor when a downstream is configured, else the
/// embedded engine over the bucket's blocks, synced once before the querier
/// starts (so its first queries see the blocks) and then every
/// `-blocks-storage.bucket-store.sync-interval` until `stop`.
async fn querier_executor(
    config: &Config,
    registry: &prometheus::Registry,
    stop: watch::Receiver<bool>,
    store: Option<&Arc<Store>>,
    compactor: Option<&Arc<Compactor>>,
) -> anyhow::Result<QuerierExecutor> {
    if !config.querier_downstream_url.is_empty() {
        let executor = PrometheusExecutor::with_options(
            &config.querier_downstream_url,
            config.querier_max_concurrent,
            &config.security.downstream,
        )
        .map_err(anyhow::Error::msg)?;
        return Ok(QuerierExecutor::Downstream(Box::new(executor)));
    }
    let bucket = Bucket::open(&config.blocks_storage, tokio::runtime::Handle::current())?;
    let caches = sluice_block::BlockCaches::with_sizes(
        config.postings_cache_bytes,
        config.chunks_cache_bytes,
    );
    let metastore = Metastore::with_caches(bucket, registry, caches);
    let first = Arc::clone(&metastore);
    let report = tokio::task::spawn_blocking(move || first.sync())
        .await
        .context("the first bucket sync did not finish")?
        .context("the first bucket sync failed")?;
    tracing::info!(bucket = metastore.bucket().name(), blocks = report.blocks, failed = report.failed, tenants = ?metastore.tenants(), "blocks loaded");
    tokio::spawn(Arc::clone(&metastore).run(config.bucket_sync_interval, stop));
    // Blocks the store cuts or the compactor merges or marks are seen
    // (or left) at once, not a sync later.
    let sync_now = |synced: Arc<Metastore>| {
        move || {
            if let Err(error) = synced.sync() {
                tracing::warn!(%error, "bucket sync after a change of its blocks failed");
            }
        }
    };
    if let Some(store) = store {
        store.on_block(sync_now(Arc::clone(&metastore)));
    }
    if let Some(compactor) = compactor {
        compactor.on_change(sync_now(Arc::clone(&metastore)));
    }
    let executor = EngineExecutor::new(Arc::clone(&metastore), config.querier_max_samples);
    let executor = match &config.frontend.overrides {
        Some(overrides) => executor.with_limits(Arc::clone(overrides)),
        None => executor,
    };
    let executor = match store {
        Some(store) => executor.with_head(Arc::clone(store.head())),
        None => executor,
    };
    Ok(QuerierExecutor::Engine(executor, metastore))
}

/// Starts the querier role: its executor, its in-process hook into this
/// process's frontend (if any) and its workers.
async fn start_querier(
    config: &Config,
    registry: &prometheus::Registry,
    frontend: Option<&Frontend>,
    stores: (Option<&Arc<Store>>, Option<&Arc<Compactor>>),
    querier_stopped: watch::Receiver<bool>,
) -> anyhow::Result<StartedQuerier> {
    let (store, compactor) = stores;
    let executor =
        querier_executor(config, registry, querier_stopped.clone(), store, compactor).await?;
    let local: Option<LocalConnect> = frontend.map(|frontend| {
        let frontend = frontend.clone();
        Arc::new(
            move |querier_id,
                  stop,
                  ready: sluice_querier::LocalReady,
                  execute: sluice_querier::LocalExecute| {
                let frontend = frontend.clone();
                Box::pin(async move {
                    frontend
                        .serve_local_worker(
                            querier_id,
                            stop,
                            move || ready(),
                            move |task| execute(task),
                        )
                        .await
                }) as futures_util::future::BoxFuture<'static, ()>
            },
        ) as LocalConnect
    });
    let metrics = QuerierMetrics::new(registry);
    let querier_config = QuerierConfig {
        querier_id: config.querier_id.clone(),
        owner_addresses: config
            .querier_frontend_addresses
            .iter()
            .chain(&config.querier_scheduler_addresses)
            .cloned()
            .collect(),
        max_concurrent: config.querier_max_concurrent,
        min_concurrent: config.querier_min_concurrent,
        backend_probe_interval: config.querier_backend_probe_interval,
        dns_refresh: config.querier_dns_lookup_period,
        shutdown_grace: config.graceful_shutdown_timeout,
        grpc_client: config.security.querier_channels.clone(),
    };
    tracing::info!(
        querier_id = %querier_config.querier_id,
        downstream = %config.querier_downstream_url,
        max_concurrent = querier_config.max_concurrent,
        "querier starting"
    );
    let owners = metrics.connected_targets.clone();
    let (task, metastore) = match executor {
        QuerierExecutor::Downstream(executor) => (
            tokio::spawn(sluice_querier::run(
                querier_config,
                Arc::new(*executor),
                local,
                metrics,
                querier_stopped,
            )),
            None,
        ),
        QuerierExecutor::Engine(executor, metastore) => (
            tokio::spawn(sluice_querier::run(
                querier_config,
                Arc::new(executor),
                local,
                metrics,
                querier_stopped,
            )),
            Some(metastore),
        ),
    };
    Ok(StartedQuerier {
        owners,
        metastore,
        task,
    })
}

async fn run(mut config: Config) -> anyhow::Result<()> {
    let registry = prometheus::Registry::new();
    let overrides = limits::start(&mut config, &registry)?;
    let runs_querier = config.targets.contains(&Role::Querier);

    let http_address = listen_address(&config.http_listen_address, config.http_listen_port)?;
    let http_listener = tokio::net::TcpListener::bind(http_address)
        .await
        .with_context(|| format!("binding the HTTP server to {http_address}"))?;

    let (frontend, scheduler) = queue_owners(&config, &registry)?;

    // The gRPC server exists for queriers, schedulers and frontends in other processes.
    let (grpc_stop, grpc_stopped) = watch::channel(false);
    let grpc_task = match frontend.is_some() || scheduler.is_some() {
        true => Some(
            start_grpc(
                &config,
                frontend.as_ref(),
                scheduler.as_ref(),
                grpc_stopped.clone(),
            )
            .await?,
        ),
        false => None,
    };

    let (store, compactor) =
        open_storage(&config, &registry, frontend.as_ref(), &grpc_stopped).await?;

    let (querier_stop, querier_stopped) = watch::channel(false);
    let querier = match runs_querier {
        true => {
            let storage = (store.as_ref(), compactor.as_ref());
            let started = start_querier(
                &config,
                &registry,
                frontend.as_ref(),
                storage,
                querier_stopped,
            )
            .await?;
            Some(started)
        }
        false => None,
    };
    // Started once the querier listens for its changes.
    if let Some(compactor) = &compactor {
        tokio::spawn(Arc::clone(compactor).run(grpc_stopped.clone()));
    }

    let router = http_router(
        &config,
        &registry,
        (frontend.as_ref(), scheduler.as_ref(), store.as_ref()),
        querier.as_ref().map(|querier| querier.owners.clone()),
    )
    .merge(limits::router(overrides))
    .merge(status::router(
        &config,
        &registry,
        status::Running {
            frontend: frontend.as_ref(),
            scheduler: scheduler.as_ref(),
            store: store.as_ref(),
            metastore: querier
                .as_ref()
                .and_then(|querier| querier.metastore.as_ref()),
        },
    ));
    // Off unless asked for: a profile costs CPU and shows the code's insides.
    let router = match config.pprof_enabled {
        true => router.merge(sluice_pprof::router()),
        false => router,
    };
    let querier_task = querier.map(|querier| querier.task);
    tracing::info!(address = %http_address, targets = ?config.targets, "sluice HTTP server listening");
    if let Some(store) = &store {
        let bound = http_listener.local_addr().unwrap_or(http_address);
        start_self_scrape(&config, store, bound, grpc_stopped.clone());
    }

    let (http_stop, http_stopped) = watch::channel(false);
    let http_task = tokio::spawn(sluice_frontend::serve_http(
        http_listener,
        router,
        config.security.http_limits.clone(),
        config.security.http_server_config.clone(),
        http_stopped,
    ));

    termination_signal().await;
    tracing::info!("shutting down");
    let grace = config.graceful_shutdown_timeout;

    shut_down(
        grace,
        frontend.as_ref(),
        scheduler.as_ref(),
        (http_stop, http_task),
        (querier_stop, querier_task),
        (grpc_stop, grpc_task),
    )
    .await;
    tracing::info!("sluice stopped");
    Ok(())
}

type Stoppable<T> = (watch::Sender<bool>, T);

/// The frontend and the scheduler, for the roles that run them.
fn queue_owners(
    config: &Config,
    registry: &prometheus::Registry,
) -> anyhow::Result<(Option<Frontend>, Option<sluice_scheduler::Scheduler>)> {
    let frontend = match config.targets.contains(&Role::QueryFrontend) {
        true => {
            let mut frontend_config: FrontendConfig = config.frontend.clone();
            frontend_config.advertised_address = advertised_address(config);
            Some(Frontend::new(frontend_config, registry).map_err(anyhow::Error::msg)?)
        }
        false => None,
    };
    let scheduler = config
        .targets
        .contains(&Role::QueryScheduler)
        .then(|| sluice_scheduler::Scheduler::new(config.scheduler.clone(), registry));
    Ok((frontend, scheduler))
}

/// The HTTP API of the roles this process runs: a frontend's when it has
/// one, else a scheduler's, querier's or store's own small one; the
/// store's ingest paths beside any of them.
fn http_router(
    config: &Config,
    registry: &prometheus::Registry,
    (frontend, scheduler, store): (
        Option<&Frontend>,
        Option<&sluice_scheduler::Scheduler>,
        Option<&Arc<Store>>,
    ),
    querier_owners: Option<prometheus::IntGauge>,
) -> axum::Router {
    let runs_querier = config.targets.contains(&Role::Querier);
    let router = match (frontend, scheduler) {
        (Some(frontend), _) => frontend.router(registry.clone()),
        (None, Some(scheduler)) => scheduler_router(registry.clone(), scheduler.clone()),
        (None, None) if runs_querier => querier_router(registry.clone(), querier_owners),
        (None, None) => store_router(registry.clone()),
    };
    match store {
        Some(store) => router.merge(sluice_store::router(
            Arc::clone(store),
            tenant_resolver(config.frontend.multitenancy_enabled),
        )),
        None => router,
    }
}

/// Serves the gRPC services of the frontend and/or scheduler until `stopped`.
async fn start_grpc(
    config: &Config,
    frontend: Option<&Frontend>,
    scheduler: Option<&sluice_scheduler::Scheduler>,
    mut stopped: watch::Receiver<bool>,
) -> anyhow::Result<tokio::task::JoinHandle<Result<(), tonic::transport::Error>>> {
    let grpc_address = listen_address(&config.grpc_listen_address, config.grpc_listen_port)?;
    let grpc_listener = tokio::net::TcpListener::bind(grpc_address)
        .await
        .with_context(|| format!("binding the gRPC server to {grpc_address}"))?;
    tracing::info!(address = %grpc_address, "gRPC server listening");
    let mut routes = tonic::service::RoutesBuilder::default();
    if let Some(frontend) = frontend {
        routes.add_service(frontend.grpc_service());
        routes.add_service(frontend.results_service());
    }
    if let Some(scheduler) = scheduler {
        routes.add_service(scheduler.frontend_service());
        routes.add_service(scheduler.querier_service());
    }
    let routes = routes.routes();
    let tls = config.security.grpc_server_config.clone();
    Ok(tokio::spawn(async move {
        let server = tonic::transport::Server::builder()
            .tcp_nodelay(true)
            .http2_keepalive_interval(Some(Duration::from_secs(10)))
            .http2_keepalive_timeout(Some(Duration::from_secs(10)))
            .add_routes(routes);
        let stop = async move {
            let _ = stopped.wait_for(|stop| *stop).await;
        };
        match tls {
            Some(tls) => {
                let incoming = sluice_tls::tls_incoming(grpc_listener, tls);
                server.serve_with_incoming_shutdown(incoming, stop).await
            }
            None => {
                let incoming = tokio_stream::wrappers::TcpListenerStream::new(grpc_listener);
                server.serve_with_incoming_shutdown(incoming, stop).await
            }
        }
    }))
}

/// The store (WAL replayed, cutting blocks in the background) and the
/// compactor, for the roles that run them.
async fn open_storage(
    config: &Config,
    registry: &prometheus::Registry,
    frontend: Option<&Frontend>,
    stopped: &watch::Receiver<bool>,
) -> anyhow::Result<(Option<Arc<Store>>, Option<Arc<Compactor>>)> {
    let store = match config.targets.contains(&Role::Store) {
        true => Some(open_store(config, registry).await?),
        false => None,
    };
    if let (Some(store), Some(frontend)) = (&store, frontend) {
        // Late samples reach the results cache; a frontend in another
        // process cannot hear of them (see the README).
        let frontend = frontend.clone();
        store.on_written(move |tenant, oldest_ms| frontend.samples_written(tenant, oldest_ms));
    }
    if let Some(store) = &store {
        let interval = config.head_compaction_interval;
        tokio::spawn(Arc::clone(store).run_cutting(interval, stopped.clone()));
    }
    let compactor = match config.targets.contains(&Role::Compactor) {
        true => {
            let bucket = Bucket::open(&config.blocks_storage, tokio::runtime::Handle::current())?;
            Some(Compactor::new(config.compactor.clone(), bucket, registry))
        }
        false => None,
    };
    Ok((store, compactor))
}

/// Stops in order: HTTP and /ready first, then the queue, the scheduler's
/// queue, the querier, and the gRPC server last.
async fn shut_down(
    grace: Duration,
    frontend: Option<&Frontend>,
    scheduler: Option<&sluice_scheduler::Scheduler>,
    (http_stop, http_task): Stoppable<tokio::task::JoinHandle<()>>,
    (querier_stop, querier_task): Stoppable<Option<tokio::task::JoinHandle<()>>>,
    (grpc_stop, grpc_task): Stoppable<
        Option<tokio::task::JoinHandle<Result<(), tonic::transport::Error>>>,
    >,
) {
    // 1. Fail /ready and stop accepting; requests already in flight finish,
    //    served by queriers that are still connected.
    if let Some(frontend) = frontend {
        frontend.begin_shutdown();
    }
    let _ = http_stop.send(true);
    if tokio::time::timeout(grace, http_task).await.is_err() {
        tracing::warn!(
            ?grace,
            "in-flight HTTP requests did not finish within the grace period"
        );
    }
    // 2. Nothing new can arrive: stop the queue so workers drain and end.
    if let Some(frontend) = frontend {
        frontend.stop_queue();
    }
    // A scheduler refuses new work (frontends go to another scheduler) and
    // hands out what it holds before it goes.
    if let Some(scheduler) = scheduler {
        scheduler.begin_shutdown();
        let drained = tokio::time::timeout(grace, async {
            while scheduler.queued() > 0 {
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        })
        .await;
        if drained.is_err() {
            tracing::warn!(
                queued = scheduler.queued(),
                "query-scheduler stopped with sub-queries still queued"
            );
        }
    }
    // 3. The querier says goodbye to every owner and finishes what it runs.
    let _ = querier_stop.send(true);
    if let Some(task) = querier_task {
        let _ = tokio::time::timeout(grace, task).await;
    }
    let _ = grpc_stop.send(true);
    if let Some(task) = grpc_task {
        match tokio::time::timeout(Duration::from_secs(5), task).await {
            Ok(Ok(Err(error))) => tracing::warn!(%error, "gRPC server ended with an error"),
            Err(_) => tracing::warn!("gRPC server did not stop in time"),
            _ => {}
        }
    }
}

/// Opens the store (replaying its WAL, which may take a while) before any
/// query can run, so the first queries see every acknowledged sample.
async fn open_store(
    config: &Config,
    registry: &prometheus::Registry,
) -> anyhow::Result<Arc<Store>> {
    let mut store_config = config.store.clone();
    if config.has_bucket() {
        let bucket = Bucket::open(&config.blocks_storage, tokio::runtime::Handle::current())?;
        store_config.bucket = Some(bucket);
    }
    let registry = registry.clone();
    tokio::task::spawn_blocking(move || Store::open(store_config, &registry))
        .await
        .context("opening the store did not finish")?
        .context("opening the store")
}

/// Scrapes this process's `/metrics` into `store` for the default tenant,
/// unless turned off or the HTTP server speaks only TLS (the scrape is
/// plain HTTP).
fn start_self_scrape(
    config: &Config,
    store: &Arc<Store>,
    http_address: SocketAddr,
    stop: watch::Receiver<bool>,
) {
    if !config.self_scrape_enabled {
        return;
    }
    if config.security.http_server_config.is_some() {
        tracing::warn!("self-scrape is off: the HTTP server serves TLS only");
        return;
    }
    // Listening everywhere: the scrape goes to the loopback address.
    let instance = match http_address.ip() {
        ip if ip.is_unspecified() && ip.is_ipv4() => format!("127.0.0.1:{}", http_address.port()),
        ip if ip.is_unspecified() => format!("[::1]:{}", http_address.port()),
        _ => http_address.to_string(),
    };
    let scrape = sluice_selfscrape::SelfScrapeConfig {
        interval: config.self_scrape_interval,
        instance,
        job: "sluice".to_owned(),
    };
    tracing::info!(instance = %scrape.instance, interval = ?scrape.interval, "self-scrape starting");
    let store = Arc::clone(store);
    let sink: sluice_selfscrape::Sink = Arc::new(move |body| {
        let tenant = sluice_frontend::ANONYMOUS;
        let reply = store.ingest(tenant, sluice_remotewrite::Protocol::V1, &body);
        match reply.status {
            204 => Ok(()),
            _ => Err(reply.message),
        }
    });
    tokio::spawn(sluice_selfscrape::run(scrape, sink, stop));
}

/// The tenant of a write, by the same rules as a query's.
fn tenant_resolver(multitenancy_enabled: bool) -> sluice_store::TenantOf {
    Arc::new(move |headers: &axum::http::HeaderMap| {
        sluice_frontend::tenant_of(headers, multitenancy_enabled)
            .map_err(|error| (error.http_status(), error.message))
    })
}

/// The address queriers reach this frontend's gRPC server at.
fn advertised_address(config: &Config) -> String {
    let port = config.grpc_listen_port;
    let configured = config.frontend_instance_address.trim();
    if !configured.is_empty() {
        return if configured.contains(':')
            && !configured.starts_with('[')
            && configured.matches(':').count() == 1
        {
            configured.to_owned()
        } else {
            format!("{configured}:{port}")
        };
    }
    let listen = config.grpc_listen_address.trim();
    if !listen.is_empty() && listen != "0.0.0.0" && listen != "::" {
        return format!("{listen}:{port}");
    }
    // Listening everywhere: the host name's first non-loopback address is
    // what other machines most likely reach us by.
    let host = std::env::var("HOSTNAME").unwrap_or_default();
    if !host.is_empty()
        && let Ok(addresses) = std::net::ToSocketAddrs::to_socket_addrs(&(host.as_str(), port))
        && let Some(address) = addresses
            .into_iter()
            .find(|address| !address.ip().is_loopback())
    {
        return address.to_string();
    }
    format!("127.0.0.1:{port}")
}

/// A scheduler serves `/ready` (a querier is connected) and `/metrics`.
fn scheduler_router(
    registry: prometheus::Registry,
    scheduler: sluice_scheduler::Scheduler,
) -> axum::Router {
    use axum::http::StatusCode;
    let ready_scheduler = scheduler.clone();
    axum::Router::new()
        .route(
            "/ready",
            axum::routing::get(move || {
                let scheduler = ready_scheduler.clone();
                async move {
                    if scheduler.is_ready() {
                        (StatusCode::OK, "ready\n")
                    } else {
                        (
                            StatusCode::SERVICE_UNAVAILABLE,
                            "not ready: no querier is connected\n",
                        )
                    }
                }
            }),
        )
        .route(
            "/metrics",
            axum::routing::get(move || {
                let registry = registry.clone();
                let scheduler = scheduler.clone();
                async move {
                    scheduler.refresh_metrics();
                    let mut body = String::new();
                    let _ =
                        prometheus::TextEncoder::new().encode_utf8(&registry.gather(), &mut body);
                    body
                }
            }),
        )
}

/// A store on its own serves remote write (merged in by the caller),
/// `/ready` (once its WAL is replayed, which is before it listens) and
/// `/metrics`.
fn store_router(registry: prometheus::Registry) -> axum::Router {
    axum::Router::new()
        .route("/ready", axum::routing::get(|| async { "ready\n" }))
        .route(
            "/metrics",
            axum::routing::get(move || metrics_text(registry.clone())),
        )
}

async fn metrics_text(registry: prometheus::Registry) -> String {
    let mut body = String::new();
    let _ = prometheus::TextEncoder::new().encode_utf8(&registry.gather(), &mut body);
    body
}

/// A querier on its own serves only `/ready` and `/metrics`.
fn querier_router(
    registry: prometheus::Registry,
    owners: Option<prometheus::IntGauge>,
) -> axum::Router {
    use axum::http::StatusCode;
    axum::Router::new()
        .route(
            "/ready",
            axum::routing::get(move || {
                // Ready once it pulls from some owner: read when asked, so
                // nothing polls while the process is idle.
                let connected = owners.as_ref().is_some_and(|owners| owners.get() > 0);
                async move {
                    if connected {
                        (StatusCode::OK, "ready\n")
                    } else {
                        (
                            StatusCode::SERVICE_UNAVAILABLE,
                            "not ready: not connected to any query-frontend\n",
                        )
                    }
                }
            }),
        )
        .route(
            "/metrics",
            axum::routing::get(move || {
                let registry = registry.clone();
                async move {
                    let mut body = String::new();
                    let _ =
                        prometheus::TextEncoder::new().encode_utf8(&registry.gather(), &mut body);
                    body
                }
            }),
        )
}

#[cfg(test)]
mod tests {
    use super::worker_threads;

    #[test]
    fn small_machines_get_one_runtime_thread_unless_configured() {
        assert_eq!(worker_threads(0, 1), 1);
        assert_eq!(worker_threads(0, 2), 1);
        assert_eq!(worker_threads(0, 8), 8);
        assert_eq!(worker_threads(2, 2), 2);
        assert_eq!(worker_threads(3, 16), 3);
    }
}
