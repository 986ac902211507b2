use prometheus::{HistogramOpts, HistogramVec, IntCounterVec, IntGauge, Opts, Registry};
use sluice_queue::worker_stream::OwnerMetrics;

/// The frontend's metrics. Queue lengths are read from the queue when
/// scraped, so they are never stale and cost nothing per request.
#[derive(Clone)]
pub struct FrontendMetrics {
    pub(crate) discarded: IntCounterVec,
    pub(crate) inflight: IntGauge,
    pub(crate) connected_schedulers: IntGauge,
    pub(crate) request_duration: HistogramVec,
    pub(crate) retries: IntCounterVec,
    pub(crate) sub_queries: prometheus::IntCounter,
    pub(crate) collapsed: prometheus::IntCounter,
    pub(crate) pieces: prometheus::Histogram,
    pub(crate) samples: IntCounterVec,
    pub(crate) results_cache_lookups: IntCounterVec,
    pub(crate) results_cache_hit_bytes: prometheus::IntCounter,
    pub(crate) metadata_cache_hits: prometheus::IntCounter,
    pub(crate) memo_hits: prometheus::IntCounter,
    pub(crate) fragments: IntCounterVec,
    pub(crate) rejected: IntCounterVec,
    /// Results refused because they came without the query's token or for
    /// another tenant: someone answering a query they were not handed.
    pub(crate) refused_results: IntCounterVec,
    /// Queries (or pieces) considered for sharding, those sharded, and
    /// the legs sent for them (Mimir's `query_sharding_rewrites_*` and
    /// `sharded_queries_total`).
    pub(crate) sharding_attempted: prometheus::IntCounter,
    pub(crate) sharding_succeeded: prometheus::IntCounter,
    pub(crate) sharded_queries: prometheus::IntCounter,
    /// Shared with the worker streams that drain the frontend's own queue.
    pub(crate) owner: OwnerMetrics,
}

const LATENCY_BUCKETS: &[f64] = &[
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
    60.0, 120.0,
];

impl FrontendMetrics {
    pub(crate) fn new(registry: &Registry) -> FrontendMetrics {
        let owner = sluice_queue::worker_stream::register_owner_metrics(registry);
        let metrics = FrontendMetrics {
            discarded: owner.discarded.clone(),
            owner,
            inflight: IntGauge::new(
                "sluice_inflight_requests",
                "Client requests being answered now.",
            )
            .expect("valid metric"),
            connected_schedulers: IntGauge::new(
                "sluice_connected_schedulers",
                "Query-schedulers this frontend has a live stream to.",
            )
            .expect("valid metric"),
            request_duration: HistogramVec::new(
                HistogramOpts::new(
                    "sluice_request_duration_seconds",
                    "Time to answer client requests, by route and status code.",
                )
                .buckets(LATENCY_BUCKETS.to_vec()),
                &["route", "status_code"],
            )
            .expect("valid metric"),
            sub_queries: prometheus::IntCounter::new(
                "sluice_subqueries_total",
                "Sub-queries this frontend sent to queriers (retries not counted).",
            )
            .expect("valid metric"),
            collapsed: prometheus::IntCounter::new(
                "sluice_collapsed_subqueries_total",
                "Sub-queries answered by an identical one already in flight.",
            )
            .expect("valid metric"),
            pieces: prometheus::Histogram::with_opts(
                HistogramOpts::new(
                    "sluice_query_pieces",
                    "Pieces a range query was split into.",
                )
                .buckets(vec![1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 64.0]),
            )
            .expect("valid metric"),
            samples: IntCounterVec::new(
                Opts::new(
                    "sluice_samples_total",
                    "Samples of range query answers, by where they came from (computed by queriers, or served from the results cache or the answer memo).",
                ),
                &["source"],
            )
            .expect("valid metric"),
            results_cache_lookups: IntCounterVec::new(
                Opts::new(
                    "sluice_results_cache_lookups_total",
                    "Range query pieces looked up in the results cache, by whether an entry was found (from the backend or its decoded copy in this process).",
                ),
                &["result"],
            )
            .expect("valid metric"),
            results_cache_hit_bytes: prometheus::IntCounter::new(
                "sluice_results_cache_hit_bytes_total",
                "Encoded bytes of the results cache entries found for range query pieces.",
            )
            .expect("valid metric"),
            metadata_cache_hits: prometheus::IntCounter::new(
                "sluice_metadata_cache_hits_total",
                "series, labels and label values answers served from the cache.",
            )
            .expect("valid metric"),
            memo_hits: prometheus::IntCounter::new(
                "sluice_answer_memo_hits_total",
                "Range queries answered with the stored bytes of an identical settled answer.",
            )
            .expect("valid metric"),
            fragments: IntCounterVec::new(
                Opts::new(
                    "sluice_answer_fragments_total",
                    "Pieces of range answers' samples, by whether their encoding was kept from an earlier answer or made for this one.",
                ),
                &["source"],
            )
            .expect("valid metric"),
            rejected: IntCounterVec::new(
                Opts::new(
                    "sluice_query_frontend_rejected_queries_total",
                    "Queries refused by the cluster administrator's per-tenant rules, by tenant and reason.",
                ),
                &["user", "reason"],
            )
            .expect("valid metric"),
            refused_results: IntCounterVec::new(
                Opts::new(
                    "sluice_frontend_refused_results_total",
                    "Results refused because the sender was not handed that query (wrong token) or named another tenant, by reason.",
                ),
                &["reason"],
            )
            .expect("valid metric"),
            sharding_attempted: prometheus::IntCounter::new(
                "sluice_frontend_query_sharding_rewrites_attempted_total",
                "Queries and range query pieces the frontend tried to shard.",
            )
            .expect("valid metric"),
            sharding_succeeded: prometheus::IntCounter::new(
                "sluice_frontend_query_sharding_rewrites_succeeded_total",
                "Queries and range query pieces the frontend sent as shard legs.",
            )
            .expect("valid metric"),
            sharded_queries: prometheus::IntCounter::new(
                "sluice_frontend_sharded_queries_total",
                "Shard legs the frontend sent, each reading one shard of the series.",
            )
            .expect("valid metric"),
            retries: IntCounterVec::new(
                Opts::new(
                    "sluice_retries_total",
                    "Sub-queries run again after a retryable failure, by reason.",
                ),
                &["reason"],
            )
            .expect("valid metric"),
        };
        for collector in [
            Box::new(metrics.inflight.clone()) as Box<dyn prometheus::core::Collector>,
            Box::new(metrics.connected_schedulers.clone()),
            Box::new(metrics.request_duration.clone()),
            Box::new(metrics.retries.clone()),
            Box::new(metrics.sub_queries.clone()),
            Box::new(metrics.collapsed.clone()),
            Box::new(metrics.pieces.clone()),
            Box::new(metrics.samples.clone()),
            Box::new(metrics.results_cache_lookups.clone()),
            Box::new(metrics.results_cache_hit_bytes.clone()),
            Box::new(metrics.metadata_cache_hits.clone()),
            Box::new(metrics.memo_hits.clone()),
            Box::new(metrics.fragments.clone()),
            Box::new(metrics.rejected.clone()),
            Box::new(metrics.refused_results.clone()),
            Box::new(metrics.sharding_attempted.clone()),
            Box::new(metrics.sharding_succeeded.clone()),
            Box::new(metrics.sharded_queries.clone()),
        ] {
            registry
                .register(collector)
                .expect("frontend metrics registered once");
        }
        metrics
    }
}
