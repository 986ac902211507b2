use prometheus::{Histogram, HistogramOpts, IntCounterVec, IntGauge, Opts, Registry};

/// The querier's own metrics, registered once per process.
#[derive(Clone)]
pub struct QuerierMetrics {
    pub inflight: IntGauge,
    pub connected_targets: IntGauge,
    pub requests: IntCounterVec,
    pub duration: Histogram,
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
        };
        for collector in [
            Box::new(metrics.inflight.clone()) as Box<dyn prometheus::core::Collector>,
            Box::new(metrics.connected_targets.clone()),
            Box::new(metrics.requests.clone()),
            Box::new(metrics.duration.clone()),
        ] {
            registry
                .register(collector)
                .expect("querier metrics registered once");
        }
        metrics
    }
}
