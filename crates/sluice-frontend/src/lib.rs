//! sluice's query-frontend.
//!
//! The life of a query, in the order a reader meets it here: [`http`]
//! parses and validates a Prometheus API request into a typed
//! [`request::Request`] and hands it to the chain of [`stages`]:
//!
//! ```text
//! answers (memo, encoded fragments)   settled repeats as stored bytes
//!  ▶ align (opt-in)                    start and end onto the step
//!  ▶ split                             range queries into day pieces, one batch
//!  ▶ instant split (opt-in)            long windows of instant queries, by interval
//!  ▶ results cache                     only what the cache lacks runs
//!  ▶ shard                             aggregations as legs, one shard of the series each
//!  ▶ collapse                          identical work in flight runs once; pieces fan out
//!  ▶ dispatch                          own queue or schedulers, retries
//! ```
//!
//! [`owner`] is the other end of the queue: every querier worker holds a
//! stream to it and takes one queued sub-query at a time. The answer comes
//! back up the chain and is encoded as Prometheus JSON once, at the edge.

mod buffers;
mod chunks;
pub mod clock;
mod compression;
mod fragments;
mod http;
mod late;
mod metrics;
mod oldest_first;
mod owner;
mod request;
mod schedulers;
mod server;
mod stages;
mod tenant;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use futures_util::StreamExt;
use sluice_limits::{Overrides, TenantLimits};
use sluice_proto::{ResultAck, ResultReport};
use sluice_queue::{QueueConfig, RequestQueue, TenantLimitsFn, TenantQueueLimits};
use tokio::sync::mpsc;

pub use clock::{Clock, ManualClock, SharedClock, SystemClock};
use late::LateWrites;
pub use metrics::FrontendMetrics;
use owner::PendingTask;
use schedulers::SchedulerPool;
pub use server::{HttpLimits, serve_http};
pub use sluice_plan::RangeBoundaries;
use stages::dispatch::DispatchStage;
use stages::results_cache::ResultsCache;
pub use stages::results_cache::ResultsCacheConfig;
pub use tenant::{ANONYMOUS, query_tenant_of, tenant_of};

/// How a frontend is set up.
#[derive(Clone, Debug)]
pub struct FrontendConfig {
    /// When false every request belongs to tenant `anonymous`.
    pub multitenancy_enabled: bool,
    /// `-tenant-federation.enabled`: `X-Scope-OrgID: a|b` queries both
    /// tenants, each series labelled `__tenant_id__`.
    pub tenant_federation_enabled: bool,
    /// Sub-queries queued per tenant before clients get 429.
    pub max_outstanding_per_tenant: usize,
    /// A tenant's share of queriers (0 = all): shuffle sharding.
    pub max_queriers_per_tenant: usize,
    /// Idle querier slots kept from a tenant that already holds slots (see
    /// [`QueueConfig::reserved_slots`]).
    pub reserved_querier_slots: usize,
    /// Tries per sub-query (first run included) on 5xx or transport errors.
    pub max_retries: usize,
    /// The whole request's budget, queue time included.
    pub query_timeout: Duration,
    /// Longest `end - start` of a range query (0 = no limit).
    pub max_query_length: Duration,
    /// Oldest data a query may read, as an age (0 = no limit): older starts
    /// are clamped, ranges entirely older get an empty answer.
    pub max_query_lookback: Duration,
    /// Largest request body accepted (413 beyond).
    pub max_body_bytes: usize,
    /// Log a stats line for every request (otherwise only for slow ones).
    pub log_queries_longer_than: Duration,
    /// Longest query text a log line carries; longer ones are cut and say
    /// by how much.
    pub log_query_max_bytes: usize,
    /// Longest query expression (or `match[]` selector) accepted, in bytes
    /// (0 = no limit): 400 beyond, before any parsing.
    pub max_query_expression_bytes: usize,
    /// Query-schedulers to queue through (`host:port`, DNS names allowed);
    /// empty means this frontend owns its queue and queriers pull from it.
    pub scheduler_addresses: Vec<String>,
    /// This frontend's gRPC `host:port` as queriers reach it, sent to
    /// schedulers so results come straight back here.
    pub advertised_address: String,
    /// How often scheduler names are resolved again.
    pub scheduler_dns_refresh: Duration,
    /// Range queries are split at this interval, boundaries at UTC midnight
    /// for a day (0 = off).
    pub split_interval: Duration,
    /// Instant queries whose range selector is longer are split into one
    /// sub-query per interval of it, where that is exact (0 = off).
    pub split_instant_queries_by_interval: Duration,
    /// Where the queriers' range selectors begin their windows, which the
    /// instant split must match to cover each sample once.
    pub range_selector_boundaries: RangeBoundaries,
    /// Pieces of one query run at once.
    pub max_query_parallelism: usize,
    /// Shard aggregations into legs reading one shard of the series each;
    /// only for queriers that honour `__query_shard__` (sluice's engine, Mimir).
    pub query_sharding_enabled: bool,
    /// Shards per sharded aggregation.
    pub query_sharding_total_shards: usize,
    /// Legs one query may send over all its pieces.
    pub query_sharding_max_sharded_queries: usize,
    /// Accepted as Mimir's flag; not yet applied (no series estimates).
    pub query_sharding_target_series_per_shard: u64,
    /// Round start and end down to the step: better cache hits, different answers.
    pub align_queries_with_step: bool,
    /// The results cache; `None` turns it off.
    pub results_cache: Option<ResultsCacheConfig>,
    /// The newest data is never cached: it may still change.
    pub max_cache_freshness: Duration,
    pub results_cache_ttl: Duration,
    /// How long `series`, `labels` and label values answers are cached (0 = off).
    pub metadata_cache_ttl: Duration,
    /// Range queries use the results cache (it may exist for metadata alone).
    pub cache_range_results: bool,
    /// Bytes of encoded answers kept for exact repeats of settled range queries.
    pub answer_memo_bytes: usize,
    /// Bytes of encoded pieces of range answers kept for answers that
    /// contain the same samples (a range moved forward).
    pub fragment_memo_bytes: usize,
    /// Per-tenant limits with runtime overrides, shared with the rest of
    /// the process; `None` gives every tenant the limits above.
    pub overrides: Option<Arc<Overrides>>,
    /// Client headers handed on to the downstream with every sub-query
    /// (lowercase names), as Thanos's `--query-frontend.forward-header`.
    pub forward_headers: Vec<String>,
    /// How this frontend dials query-schedulers: plain or TLS.
    pub grpc_client: sluice_tls::GrpcChannels,
}

impl FrontendConfig {
    /// The per-tenant limits this configuration sets for every tenant.
    pub fn tenant_defaults(&self) -> TenantLimits {
        TenantLimits {
            max_query_length: self.max_query_length,
            max_query_lookback: self.max_query_lookback,
            max_query_parallelism: self.max_query_parallelism,
            max_queriers_per_tenant: self.max_queriers_per_tenant,
            max_outstanding_requests_per_tenant: self.max_outstanding_per_tenant,
            results_cache_ttl: self.results_cache_ttl,
            ..TenantLimits::default()
        }
    }
}

impl Default for FrontendConfig {
    fn default() -> Self {
        FrontendConfig {
            multitenancy_enabled: false,
            tenant_federation_enabled: false,
            max_outstanding_per_tenant: 100,
            max_queriers_per_tenant: 0,
            reserved_querier_slots: QueueConfig::default().reserved_slots,
            max_retries: 5,
            query_timeout: Duration::from_secs(120),
            max_query_length: Duration::ZERO,
            max_query_lookback: Duration::ZERO,
            max_body_bytes: 10 * 1024 * 1024,
            log_queries_longer_than: Duration::ZERO,
            log_query_max_bytes: 4096,
            max_query_expression_bytes: 256 * 1024,
            scheduler_addresses: Vec::new(),
            advertised_address: String::new(),
            scheduler_dns_refresh: Duration::from_secs(10),
            split_interval: Duration::from_secs(24 * 3600),
            split_instant_queries_by_interval: Duration::ZERO,
            range_selector_boundaries: RangeBoundaries::LeftOpen,
            max_query_parallelism: 14,
            query_sharding_enabled: false,
            query_sharding_total_shards: 16,
            query_sharding_max_sharded_queries: 128,
            query_sharding_target_series_per_shard: 0,
            align_queries_with_step: false,
            results_cache: Some(stages::results_cache::default_config()),
            max_cache_freshness: Duration::from_secs(600),
            results_cache_ttl: Duration::from_secs(7 * 24 * 3600),
            metadata_cache_ttl: Duration::ZERO,
            cache_range_results: true,
            answer_memo_bytes: 64 * 1024 * 1024,
            fragment_memo_bytes: 64 * 1024 * 1024,
            overrides: None,
            forward_headers: Vec::new(),
            grpc_client: sluice_tls::GrpcChannels::default(),
        }
    }
}

pub(crate) struct Inner {
    pub(crate) config: FrontendConfig,
    pub(crate) queue: RequestQueue<PendingTask>,
    pub(crate) metrics: FrontendMetrics,
    pub(crate) shutting_down: AtomicBool,
    /// Set when sub-queries go through query-schedulers.
    pub(crate) schedulers: Option<Arc<SchedulerPool>>,
    /// The first stage of the query path.
    pub(crate) chain: stages::Next,
    /// The last stage, for [`Frontend::execute`].
    pub(crate) dispatch: Arc<DispatchStage>,
    pub(crate) clock: SharedClock,
    /// Every tenant's limits, defaults and runtime overrides.
    pub(crate) overrides: Arc<Overrides>,
    /// Samples the store in this process accepted late.
    pub(crate) late: Arc<LateWrites>,
}

/// The queue reads each tenant's limits from the overrides in force.
pub fn queue_limits(overrides: Arc<Overrides>) -> TenantLimitsFn {
    TenantLimitsFn(Arc::new(move |tenant: &str| {
        let limits = &overrides.tenant(tenant).limits;
        TenantQueueLimits {
            max_outstanding: limits.max_outstanding_requests_per_tenant,
            max_queriers: limits.max_queriers_per_tenant,
        }
    }))
}

impl Inner {
    fn is_ready(&self) -> bool {
        if self.shutting_down.load(Ordering::Relaxed) {
            return false;
        }
        match &self.schedulers {
            Some(pool) => pool.any_connected(),
            None => self.queue.connected_queriers() > 0,
        }
    }
}

/// A query-frontend. Cheap to clone; all clones are the same frontend.
#[derive(Clone)]
pub struct Frontend {
    inner: Arc<Inner>,
}

impl Frontend {
    /// A frontend; with scheduler addresses configured it starts connecting
    /// to them, so it must be called inside a Tokio runtime. Fails only on a
    /// cache configuration that cannot work.
    pub fn new(
        config: FrontendConfig,
        registry: &prometheus::Registry,
    ) -> Result<Frontend, String> {
        Frontend::with_clock(config, registry, Arc::new(SystemClock))
    }

    /// [`Frontend::new`] reading the time from `clock`.
    pub fn with_clock(
        config: FrontendConfig,
        registry: &prometheus::Registry,
        clock: SharedClock,
    ) -> Result<Frontend, String> {
        let overrides = match &config.overrides {
            Some(overrides) => overrides.clone(),
            None => Arc::new(Overrides::new(config.tenant_defaults()).map_err(|e| e.to_string())?),
        };
        let queue = RequestQueue::new(QueueConfig {
            max_outstanding_per_tenant: config.max_outstanding_per_tenant,
            max_queriers_per_tenant: config.max_queriers_per_tenant,
            reserved_slots: config.reserved_querier_slots,
            tenant_limits: Some(queue_limits(overrides.clone())),
            ..QueueConfig::default()
        });
        let metrics = FrontendMetrics::new(registry);
        let late = Arc::new(LateWrites::new(config.max_cache_freshness, clock.clone()));
        let results_cache =
            ResultsCache::from_config(&config, registry, clock.clone(), late.clone())?;
        let schedulers = (!config.scheduler_addresses.is_empty()).then(|| {
            SchedulerPool::start(
                config.scheduler_addresses.clone(),
                config.advertised_address.clone(),
                config.scheduler_dns_refresh,
                metrics.connected_schedulers.clone(),
                metrics.refused_results.clone(),
                config.grpc_client.clone(),
                clock.clone(),
            )
        });
        let dispatch = Arc::new(DispatchStage::new(
            queue.clone(),
            schedulers.clone(),
            metrics.clone(),
            clock.clone(),
            &config,
        ));
        let chain = stages::build(
            &config,
            stages::ChainParts {
                metrics: metrics.clone(),
                clock: clock.clone(),
                dispatch: dispatch.clone(),
                results_cache,
                late: late.clone(),
            },
        );
        // Says at start-up which stages this configuration turned on.
        tracing::info!(stages = %stages::names(&chain).join(" > "), "query-frontend chain");
        Ok(Frontend {
            inner: Arc::new(Inner {
                config,
                queue,
                metrics,
                shutting_down: AtomicBool::new(false),
                schedulers,
                chain,
                dispatch,
                clock,
                overrides,
                late,
            }),
        })
    }

    /// Tells the results cache that the store accepted samples of `tenant`
    /// as old as `oldest_ms`: if that is older than the freshness window,
    /// cached answers that may lack them are recomputed when next asked.
    pub fn samples_written(&self, tenant: &str, oldest_ms: i64) {
        self.inner.late.note(tenant, oldest_ms);
    }

    /// Brings the gauges read on demand (queue lengths, connected
    /// queriers) up to date, as `/metrics` does before it answers.
    pub fn refresh_metrics(&self) {
        self.inner.metrics.owner.refresh_from(&self.inner.queue);
    }

    /// The HTTP API: Prometheus's query endpoints, `/ready` and `/metrics`.
    pub fn router(&self, registry: prometheus::Registry) -> axum::Router {
        http::router(self.inner.clone(), registry)
    }

    /// The gRPC service queriers and schedulers send results of sub-queries
    /// queued through a scheduler to.
    pub fn results_service(
        &self,
    ) -> sluice_proto::frontend_results::frontend_results_server::FrontendResultsServer<
        ResultsService,
    > {
        sluice_proto::frontend_results::frontend_results_server::FrontendResultsServer::new(
            ResultsService {
                inner: self.inner.clone(),
            },
        )
        .max_decoding_message_size(usize::MAX)
    }

    /// The gRPC service querier workers connect to.
    pub fn grpc_service(
        &self,
    ) -> sluice_proto::queue_owner::queue_owner_server::QueueOwnerServer<owner::OwnerService> {
        sluice_proto::queue_owner::queue_owner_server::QueueOwnerServer::new(owner::OwnerService {
            inner: self.inner.clone(),
        })
        .max_decoding_message_size(usize::MAX)
        .max_encoding_message_size(usize::MAX)
    }

    /// Serves one worker of a querier in this same process straight from
    /// the queue (see [`sluice_queue::worker_stream::serve_inline`]) until
    /// `stop` is raised or the queue is stopped and drained. Before each
    /// task the worker waits for `ready` and holds its output until the
    /// task ends.
    pub async fn serve_local_worker<R, RFut, P, F, Fut>(
        &self,
        querier_id: String,
        stop: tokio::sync::watch::Receiver<bool>,
        ready: R,
        execute: F,
    ) where
        R: Fn() -> RFut,
        RFut: std::future::Future<Output = P>,
        F: Fn(sluice_proto::QueryTask) -> Fut,
        Fut: std::future::Future<Output = sluice_proto::QueryResult>,
    {
        sluice_queue::worker_stream::serve_inline(
            self.inner.queue.clone(),
            self.inner.metrics.owner.clone(),
            querier_id,
            stop,
            ready,
            execute,
        )
        .await;
    }

    /// True while at least one querier serves this frontend and it is not
    /// shutting down: a load balancer must not route to a frontend nobody serves.
    /// With a scheduler: while at least one scheduler stream is up.
    pub fn is_ready(&self) -> bool {
        self.inner.is_ready()
    }

    /// Runs one request for `tenant` the way an HTTP request is run (queue,
    /// retries, deadline), without HTTP: for embedding and benchmarks.
    pub async fn execute(
        &self,
        tenant: &str,
        request: sluice_proto::QueryRequest,
    ) -> sluice_proto::ApiResponse {
        let deadline = self.inner.clock.now() + self.inner.config.query_timeout;
        let mut stats = request::QueryStats::default();
        self.inner
            .dispatch
            .dispatch(tenant, request, None, deadline, &mut stats)
            .await
    }

    /// Marks the frontend as going away: `/ready` fails from now on so load
    /// balancers stop sending, while queued work is still served.
    pub fn begin_shutdown(&self) {
        self.inner.shutting_down.store(true, Ordering::Relaxed);
    }

    /// Stops the queue: new sub-queries are refused, workers drain what is
    /// queued and then their streams end.
    pub fn stop_queue(&self) {
        self.inner.queue.stop();
    }
}

/// Receives results of sub-queries queued through a scheduler.
pub struct ResultsService {
    inner: Arc<Inner>,
}

#[tonic::async_trait]
impl sluice_proto::frontend_results::frontend_results_server::FrontendResults for ResultsService {
    async fn query_result(
        &self,
        request: tonic::Request<ResultReport>,
    ) -> Result<tonic::Response<ResultAck>, tonic::Status> {
        let report = request.into_inner();
        let Some(result) = report.result else {
            return Err(tonic::Status::invalid_argument("report without a result"));
        };
        match &self.inner.schedulers {
            Some(pool) => pool.deliver(&report.tenant, &report.result_token, result)?,
            None => {
                return Err(tonic::Status::failed_precondition(
                    "this query-frontend does not use a query-scheduler",
                ));
            }
        }
        Ok(tonic::Response::new(ResultAck::default()))
    }

    type ResultStreamStream =
        tokio_stream::wrappers::ReceiverStream<Result<ResultAck, tonic::Status>>;

    async fn result_stream(
        &self,
        request: tonic::Request<tonic::Streaming<ResultReport>>,
    ) -> Result<tonic::Response<Self::ResultStreamStream>, tonic::Status> {
        let Some(pool) = self.inner.schedulers.clone() else {
            return Err(tonic::Status::failed_precondition(
                "this query-frontend does not use a query-scheduler",
            ));
        };
        let mut reports = request.into_inner();
        let (acks, stream) = mpsc::channel(1024);
        tokio::spawn(async move {
            while let Some(Ok(report)) = reports.next().await {
                let Some(result) = report.result else {
                    continue;
                };
                let query_id = result.query_id;
                let error = match pool.deliver(&report.tenant, &report.result_token, result) {
                    Ok(()) => String::new(),
                    Err(status) => status.message().to_owned(),
                };
                if acks.send(Ok(ResultAck { query_id, error })).await.is_err() {
                    return;
                }
            }
        });
        Ok(tonic::Response::new(
            tokio_stream::wrappers::ReceiverStream::new(stream),
        ))
    }
}
