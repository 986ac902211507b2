//! Runs one sub-query through the queue, with retries and the deadline.

use std::sync::atomic::Ordering;
use std::time::Duration;

use sluice_proto::{ApiResponse, ErrorType, QueryRequest, QueryResult};
use sluice_queue::EnqueueError;
use tokio::sync::oneshot;
use tokio::time::Instant;

use crate::{Inner, PendingTask};

/// How a handed-out task ended, as seen by the worker stream that ran it.
/// Moved once through a oneshot, so its size does not matter.
#[allow(clippy::large_enum_variant)]
pub(crate) enum TaskOutcome {
    Answered(QueryResult),
    /// The querier went away with the task (died, connection reset).
    QuerierLost,
}

/// What the client's request learned, for its stats line.
#[derive(Default)]
pub(crate) struct DispatchStats {
    pub(crate) attempts: u32,
    pub(crate) samples: u64,
    pub(crate) execution: Duration,
}

impl Inner {
    /// Queues `request` for `tenant` and waits for its answer, retrying on
    /// another querier when it fails for a reason that may not repeat.
    pub(crate) async fn dispatch(
        &self,
        tenant: &str,
        request: QueryRequest,
        deadline: Instant,
        stats: &mut DispatchStats,
    ) -> ApiResponse {
        let query_id = self.next_query_id.fetch_add(1, Ordering::Relaxed);
        let max_attempts = self.config.max_retries.max(1) as u32;
        loop {
            stats.attempts += 1;
            let (reply, answer) = oneshot::channel();
            let task = PendingTask {
                query_id,
                request: request.clone(),
                deadline,
                reply,
            };
            let queued = match self.queue.enqueue(tenant, task, Some(deadline)) {
                Ok(queued) => queued,
                Err(EnqueueError::TooManyRequests) => {
                    self.metrics
                        .discarded
                        .with_label_values(&[tenant, "too_many_requests"])
                        .inc();
                    return ApiResponse::error(
                        ErrorType::TooManyRequests,
                        "too many outstanding requests",
                    );
                }
                Err(EnqueueError::Stopped) => {
                    return ApiResponse::error(
                        ErrorType::Unavailable,
                        "the query-frontend is shutting down",
                    );
                }
            };
            let outcome = tokio::time::timeout_at(deadline, answer).await;
            // Leaves the queue now if no worker took it (timeout, or our
            // caller dropping this future because its client went away).
            drop(queued);
            let retry_reason = match outcome {
                Err(_elapsed) => {
                    self.metrics
                        .discarded
                        .with_label_values(&[tenant, "timeout"])
                        .inc();
                    return timeout_error(self.config.query_timeout);
                }
                Ok(Err(_unanswered)) => {
                    // The task was dropped unanswered: it expired in the queue
                    // or the queue stopped.
                    if Instant::now() >= deadline {
                        return timeout_error(self.config.query_timeout);
                    }
                    "unanswered"
                }
                Ok(Ok(TaskOutcome::Answered(result))) => {
                    if let Some(execution) = &result.stats {
                        stats.samples = execution.samples;
                        stats.execution =
                            Duration::from_nanos(execution.execution_ns.max(0) as u64);
                    }
                    let response = result.response.unwrap_or_else(|| {
                        ApiResponse::error(ErrorType::Internal, "querier sent an empty result")
                    });
                    if !result.retryable || stats.attempts >= max_attempts {
                        return response;
                    }
                    tracing::debug!(tenant, query_id, error = %response.error, "retrying failed sub-query");
                    "failed"
                }
                Ok(Ok(TaskOutcome::QuerierLost)) => {
                    if stats.attempts >= max_attempts {
                        return ApiResponse::error(
                            ErrorType::Internal,
                            "the querier running this query went away, and so did every retry",
                        );
                    }
                    "querier_lost"
                }
            };
            if stats.attempts >= max_attempts {
                return ApiResponse::error(ErrorType::Internal, "query failed on every retry");
            }
            self.metrics
                .retries
                .with_label_values(&[retry_reason])
                .inc();
        }
    }
}

fn timeout_error(timeout: Duration) -> ApiResponse {
    ApiResponse::error(
        ErrorType::Timeout,
        format!("query timed out after {}", humanize(timeout)),
    )
}

/// Durations the way Prometheus prints them (`2m`, `1m30s`, `500ms`).
pub(crate) fn humanize(duration: Duration) -> String {
    let total_ms = duration.as_millis() as u64;
    if total_ms == 0 {
        return "0s".into();
    }
    let mut remaining = total_ms;
    let mut text = String::new();
    for (unit, size) in [
        ("y", 365 * 24 * 3_600_000),
        ("w", 7 * 24 * 3_600_000),
        ("d", 24 * 3_600_000),
        ("h", 3_600_000),
        ("m", 60_000),
        ("s", 1000),
        ("ms", 1),
    ] {
        if remaining >= size {
            text.push_str(&format!("{}{unit}", remaining / size));
            remaining %= size;
        }
    }
    text
}

#[cfg(test)]
mod tests {
    use super::humanize;
    use std::time::Duration;

    #[test]
    fn durations_read_like_prometheus() {
        assert_eq!(humanize(Duration::from_secs(120)), "2m");
        assert_eq!(humanize(Duration::from_secs(90)), "1m30s");
        assert_eq!(humanize(Duration::from_millis(1500)), "1s500ms");
        assert_eq!(humanize(Duration::from_secs(86400 * 8)), "1w1d");
        assert_eq!(humanize(Duration::ZERO), "0s");
    }
}
