//! Runs one sub-query through the queue, with retries and the deadline.

use std::sync::atomic::Ordering;
use std::time::Duration;

use sluice_proto::{ApiResponse, ErrorType, QueryRequest, QueryResult};
use sluice_queue::EnqueueError;
use sluice_queue::worker_stream::Outcome;
use tokio::sync::oneshot;
use tokio::time::Instant;

use crate::Inner;
use crate::owner::PendingTask;
use crate::schedulers::EnqueueAnswer;

/// What the client's request learned, for its stats line.
#[derive(Default)]
pub(crate) struct DispatchStats {
    pub(crate) attempts: u32,
    pub(crate) samples: u64,
    pub(crate) execution: Duration,
}

/// How one attempt at a sub-query ended.
enum Attempt {
    Answered(QueryResult),
    /// Worth running again elsewhere (querier lost, scheduler lost or busy).
    Retry(&'static str, String),
    /// Final: the client gets this answer.
    Final(ApiResponse),
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
        let max_attempts = self.config.max_retries.max(1) as u32;
        let mut last_scheduler: Option<String> = None;
        loop {
            stats.attempts += 1;
            // A fresh id per attempt: a late answer to an abandoned attempt
            // can then never be mistaken for this one's.
            let query_id = self.next_query_id.fetch_add(1, Ordering::Relaxed);
            let attempt = match &self.schedulers {
                Some(_) => {
                    self.attempt_via_scheduler(
                        query_id,
                        tenant,
                        request.clone(),
                        deadline,
                        &mut last_scheduler,
                    )
                    .await
                }
                None => {
                    self.attempt_locally(query_id, tenant, request.clone(), deadline)
                        .await
                }
            };
            let (reason, error) = match attempt {
                Attempt::Final(response) => return response,
                Attempt::Answered(result) => {
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
                    ("failed", response.error)
                }
                Attempt::Retry(reason, error) => (reason, error),
            };
            if stats.attempts >= max_attempts {
                return ApiResponse::error(
                    ErrorType::Internal,
                    format!("query failed after {} tries: {error}", stats.attempts),
                );
            }
            tracing::debug!(tenant, query_id, reason, %error, "retrying sub-query");
            self.metrics.retries.with_label_values(&[reason]).inc();
        }
    }

    async fn attempt_locally(
        &self,
        query_id: u64,
        tenant: &str,
        request: QueryRequest,
        deadline: Instant,
    ) -> Attempt {
        let (reply, answer) = oneshot::channel();
        let task = PendingTask {
            query_id,
            request: Some(request),
            deadline,
            reply,
        };
        let queued = match self.queue.enqueue(tenant, task, Some(deadline)) {
            Ok(queued) => queued,
            Err(EnqueueError::TooManyRequests) => return self.too_many_requests(tenant),
            Err(EnqueueError::Stopped) => {
                return Attempt::Final(ApiResponse::error(
                    ErrorType::Unavailable,
                    "the query-frontend is shutting down",
                ));
            }
        };
        let outcome = tokio::time::timeout_at(deadline, answer).await;
        // Leaves the queue now if no worker took it (timeout, or our caller
        // dropping this future because its client went away).
        drop(queued);
        self.settle(tenant, outcome, deadline)
    }

    async fn attempt_via_scheduler(
        &self,
        query_id: u64,
        tenant: &str,
        request: QueryRequest,
        deadline: Instant,
        last_scheduler: &mut Option<String>,
    ) -> Attempt {
        let pool = self.schedulers.as_ref().expect("scheduler mode");
        let (answer, guard, outcome) = pool
            .enqueue(
                query_id,
                tenant,
                request,
                deadline,
                last_scheduler.as_deref(),
            )
            .await;
        if let Some(guard) = &guard {
            *last_scheduler = Some(guard.scheduler().to_owned());
        }
        match answer {
            EnqueueAnswer::TooManyRequests => self.too_many_requests(tenant),
            EnqueueAnswer::TryElsewhere(error) => {
                if Instant::now() >= deadline {
                    return Attempt::Final(timeout_error(self.config.query_timeout));
                }
                // Nothing connected at all: wait a moment rather than burn
                // every retry in a microsecond.
                if guard.is_none() {
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
                Attempt::Retry("scheduler", error)
            }
            EnqueueAnswer::Queued => {
                let outcome = tokio::time::timeout_at(
                    deadline,
                    outcome.expect("a queued attempt has an outcome"),
                )
                .await;
                // Dropping the guard cancels the sub-query at the scheduler
                // unless its result arrived.
                drop(guard);
                self.settle(tenant, outcome, deadline)
            }
        }
    }

    fn too_many_requests(&self, tenant: &str) -> Attempt {
        self.metrics
            .discarded
            .with_label_values(&[tenant, "too_many_requests"])
            .inc();
        Attempt::Final(ApiResponse::error(
            ErrorType::TooManyRequests,
            "too many outstanding requests",
        ))
    }

    fn settle(
        &self,
        tenant: &str,
        outcome: Result<Result<Outcome, oneshot::error::RecvError>, tokio::time::error::Elapsed>,
        deadline: Instant,
    ) -> Attempt {
        match outcome {
            Err(_elapsed) => {
                self.metrics
                    .discarded
                    .with_label_values(&[tenant, "timeout"])
                    .inc();
                Attempt::Final(timeout_error(self.config.query_timeout))
            }
            Ok(Err(_unanswered)) => {
                // Dropped unanswered: it expired in the queue or the queue stopped.
                if Instant::now() >= deadline {
                    return Attempt::Final(timeout_error(self.config.query_timeout));
                }
                Attempt::Retry("unanswered", "the sub-query was dropped unanswered".into())
            }
            Ok(Ok(Outcome::Answered(result))) => Attempt::Answered(result),
            Ok(Ok(Outcome::QuerierLost)) => Attempt::Retry(
                "querier_lost",
                "the querier running the query went away".into(),
            ),
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
