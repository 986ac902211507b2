use prometheus::{
    Histogram, HistogramOpts, HistogramVec, IntCounterVec, IntGauge, IntGaugeVec, Opts, Registry,
};
use sluice_queue::RequestQueue;

use crate::PendingTask;

/// The frontend's metrics. Queue lengths are read from the queue when
/// scraped, so they are never stale and cost nothing per request.
#[derive(Clone)]
pub struct FrontendMetrics {
    pub(crate) queue: RequestQueue<PendingTask>,
    pub(crate) queue_length: IntGaugeVec,
    pub(crate) discarded: IntCounterVec,
    pub(crate) queue_duration: Histogram,
    pub(crate) inflight: IntGauge,
    pub(crate) connected_queriers: IntGauge,
    pub(crate) connected_workers: IntGauge,
    pub(crate) request_duration: HistogramVec,
    pub(crate) retries: IntCounterVec,
}

const LATENCY_BUCKETS: &[f64] = &[
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
    60.0, 120.0,
];

impl FrontendMetrics {
    pub(crate) fn new(registry: &Registry, queue: RequestQueue<PendingTask>) -> FrontendMetrics {
        let metrics = FrontendMetrics {
            queue,
            queue_length: IntGaugeVec::new(
                Opts::new(
                    "sluice_queue_length",
                    "Sub-queries waiting in the queue, by tenant.",
                ),
                &["tenant"],
            )
            .expect("valid metric"),
            discarded: IntCounterVec::new(
                Opts::new(
                    "sluice_discarded_requests_total",
                    "Requests that were never run, by tenant and reason.",
                ),
                &["tenant", "reason"],
            )
            .expect("valid metric"),
            queue_duration: Histogram::with_opts(
                HistogramOpts::new(
                    "sluice_queue_duration_seconds",
                    "Time sub-queries waited in the queue before a querier took them.",
                )
                .buckets(LATENCY_BUCKETS.to_vec()),
            )
            .expect("valid metric"),
            inflight: IntGauge::new(
                "sluice_inflight_requests",
                "Client requests being answered now.",
            )
            .expect("valid metric"),
            connected_queriers: IntGauge::new(
                "sluice_connected_queriers",
                "Distinct queriers with at least one worker connected.",
            )
            .expect("valid metric"),
            connected_workers: IntGauge::new(
                "sluice_connected_querier_workers",
                "Querier worker streams connected to this frontend.",
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
            Box::new(metrics.queue_length.clone()) as Box<dyn prometheus::core::Collector>,
            Box::new(metrics.discarded.clone()),
            Box::new(metrics.queue_duration.clone()),
            Box::new(metrics.inflight.clone()),
            Box::new(metrics.connected_queriers.clone()),
            Box::new(metrics.connected_workers.clone()),
            Box::new(metrics.request_duration.clone()),
            Box::new(metrics.retries.clone()),
        ] {
            registry
                .register(collector)
                .expect("frontend metrics registered once");
        }
        metrics
    }

    /// Copies the queue's live state into gauges just before a scrape.
    pub(crate) fn refresh_from_queue(&self) {
        self.queue_length.reset();
        for (tenant, length) in self.queue.tenant_lengths() {
            self.queue_length
                .with_label_values(&[&*tenant])
                .set(length as i64);
        }
        self.connected_queriers
            .set(self.queue.connected_queriers() as i64);
    }
}
