use prometheus::{Histogram, HistogramOpts, IntCounterVec, IntGauge, Opts, Registry};

/// The querier's own metrics, registered once per process.
#[derive(Clone)]
pub struct QuerierMetrics {
    pub inflight: IntGauge,
    pub connected_targets: IntGauge,
    pub requests: IntCounterVec,
    pub duration: Histogram,
    /// The adaptive concurrency limit now.
    pub concurrency_limit: IntGauge,
    /// Workers admitted by the limit: running a sub-query or ready for one.
    pub concurrency_permits_in_use: IntGauge,
    /// Latency of the trivial queries that probe the downstream.
    pub backend_probe_duration: Histogram,
}

impl QuerierMetrics {
    pub fn new(registry: &Registry) -> QuerierMetrics {
        let metrics = QuerierMetrics {
            inflight: IntGauge::new(
                "sluice_querier_inflight_requests",
                "Sub-queries this querier is running now.",
            )
            .expect("valid metric"),
            connected_targets: IntGauge::new(
                "sluice_querier_connected_owners",
                "Queue owners (frontends or schedulers) this querier pulls from.",
            )
            .expect("valid metric"),
            requests: IntCounterVec::new(
                Opts::new(
                    "sluice_querier_requests_total",
                    "Sub-queries run, by outcome.",
                ),
                &["outcome"],
            )
            .expect("valid metric"),
            duration: Histogram::with_opts(HistogramOpts::new(
                "sluice_querier_request_duration_seconds",
                "Time to run one sub-query.",
            ))
            .expect("valid metric"),
            concurrency_limit: IntGauge::new(
                "sluice_querier_concurrency_limit",
                "Workers this querier lets run or wait for a sub-query at once, adapted to the downstream's latency.",
            )
            .expect("valid metric"),
            concurrency_permits_in_use: IntGauge::new(
                "sluice_querier_concurrency_permits_in_use",
                "Workers admitted under the concurrency limit: running a sub-query or ready for one.",
            )
            .expect("valid metric"),
            backend_probe_duration: Histogram::with_opts(
                HistogramOpts::new(
                    "sluice_querier_backend_probe_duration_seconds",
                    "Latency of the trivial query (query=1) sent to the downstream while sub-queries run, which steers the concurrency limit.",
                )
                .buckets(vec![0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.0]),
            )
            .expect("valid metric"),
        };
        for collector in [
            Box::new(metrics.inflight.clone()) as Box<dyn prometheus::core::Collector>,
            Box::new(metrics.connected_targets.clone()),
            Box::new(metrics.requests.clone()),
            Box::new(metrics.duration.clone()),
            Box::new(metrics.concurrency_limit.clone()),
            Box::new(metrics.concurrency_permits_in_use.clone()),
            Box::new(metrics.backend_probe_duration.clone()),
        ] {
            registry
                .register(collector)
                .expect("querier metrics registered once");
        }
        metrics
    }
}
