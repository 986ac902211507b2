//! The last stage: runs one sub-query through the queue (the frontend's
//! own, or the query-schedulers'), with retries and the deadline.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use sluice_proto::{ApiResponse, ErrorType, Header, QueryRequest, QueryResult};
use sluice_queue::worker_stream::Outcome;
use sluice_queue::{EnqueueError, RequestQueue};
use tokio::sync::oneshot;
use tokio::time::Instant;

use super::{AnswerFuture, Next, Stage};
use crate::clock::SharedClock;
use crate::metrics::FrontendMetrics;
use crate::owner::PendingTask;
use crate::request::{Answer, QueryStats, Request};
use crate::schedulers::{EnqueueAnswer, SchedulerPool};

/// Queues sub-queries and waits for their answers.
pub(crate) struct DispatchStage {
    queue: RequestQueue<PendingTask>,
    /// Set when sub-queries go through query-schedulers.
    schedulers: Option<Arc<SchedulerPool>>,
    metrics: FrontendMetrics,
    clock: SharedClock,
    next_query_id: AtomicU64,
    /// Tries per sub-query (first run included).
    max_retries: usize,
    query_timeout: Duration,
}

impl Stage for DispatchStage {
    fn name(&self) -> &'static str {
        "dispatch"
    }

    fn next_stage(&self) -> Option<&Next> {
        None
    }

    fn handle(&self, request: Request) -> AnswerFuture<'_> {
        Box::pin(async move {
            let mut stats = QueryStats::default();
            let query_request = QueryRequest {
                kind: Some(request.kind),
            };
            let response = self
                .dispatch(
                    &request.tenant,
                    query_request,
                    request.forwarded_headers.clone(),
                    request.deadline,
                    &mut stats,
                )
                .await;
            Answer::whole(response, stats)
        })
    }
}

/// How one attempt at a sub-query ended.
enum Attempt {
    Answered(QueryResult),
    /// Worth running again elsewhere (querier lost, scheduler lost or busy).
    Retry(&'static str, String),
    /// Final: the client gets this answer.
    Final(ApiResponse),
}

impl DispatchStage {
    pub(crate) fn new(
        queue: RequestQueue<PendingTask>,
        schedulers: Option<Arc<SchedulerPool>>,
        metrics: FrontendMetrics,
        clock: SharedClock,
        config: &crate::FrontendConfig,
    ) -> DispatchStage {
        // Ids only need to be unique per frontend process; starting from
        // the clock keeps a restarted frontend from reusing the ids of its
        // previous life while results for them may linger.
        let first_query_id = (clock.now_ms().max(1) as u64).saturating_mul(1_000_000);
        DispatchStage {
            queue,
            schedulers,
            metrics,
            clock,
            next_query_id: AtomicU64::new(first_query_id),
            max_retries: config.max_retries,
            query_timeout: config.query_timeout,
        }
    }

    /// Queues `request` for `tenant` and waits for its answer, retrying on
    /// another querier when it fails for a reason that may not repeat.
    pub(crate) async fn dispatch(
        &self,
        tenant: &str,
        request: QueryRequest,
        forwarded_headers: Option<Arc<[Header]>>,
        deadline: Instant,
        stats: &mut QueryStats,
    ) -> ApiResponse {
        let max_attempts = self.max_retries.max(1) as u32;
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
                        forwarded_headers.as_deref(),
                        deadline,
                        &mut last_scheduler,
                    )
                    .await
                }
                None => {
                    let request = (request.clone(), forwarded_headers.clone());
                    self.attempt_locally(query_id, tenant, request, deadline)
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
        (request, forwarded_headers): (QueryRequest, Option<Arc<[Header]>>),
        deadline: Instant,
    ) -> Attempt {
        let (reply, answer) = oneshot::channel();
        let task = PendingTask {
            query_id,
            request: Some(request),
            forwarded_headers,
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
        forwarded_headers: Option<&[Header]>,
        deadline: Instant,
        last_scheduler: &mut Option<String>,
    ) -> Attempt {
        let pool = self.schedulers.as_ref().expect("scheduler mode");
        let (answer, guard, outcome) = pool
            .enqueue(
                query_id,
                tenant,
                request,
                forwarded_headers,
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
                if self.clock.now() >= deadline {
                    return Attempt::Final(timeout_error(self.query_timeout));
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
                Attempt::Final(timeout_error(self.query_timeout))
            }
            Ok(Err(_unanswered)) => {
                // Dropped unanswered: it expired in the queue or the queue stopped.
                if self.clock.now() >= deadline {
                    return Attempt::Final(timeout_error(self.query_timeout));
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
    sluice_api::params::format_duration(duration)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::clock::ManualClock;
    use sluice_queue::QueueConfig;

    fn stage(max_outstanding_per_tenant: usize) -> DispatchStage {
        let queue = RequestQueue::new(QueueConfig {
            max_outstanding_per_tenant,
            ..QueueConfig::default()
        });
        let metrics = FrontendMetrics::new(&prometheus::Registry::new());
        let config = crate::FrontendConfig::default();
        DispatchStage::new(queue, None, metrics, ManualClock::at(1), &config)
    }

    fn instant_request(deadline: Instant) -> Request {
        let query = sluice_proto::InstantQuery {
            query: "up".into(),
            ..Default::default()
        };
        Request::new(
            Arc::from("tenant"),
            sluice_proto::QueryKind::Instant(query),
            deadline,
        )
    }

    #[tokio::test]
    async fn a_sub_query_nobody_takes_times_out_at_its_deadline() {
        let stage = stage(10);
        let deadline = Instant::now() + Duration::from_millis(20);
        let answer = stage.handle(instant_request(deadline)).await;
        assert_eq!(answer.response().error_type, ErrorType::Timeout as i32);
        assert_eq!(answer.stats.attempts, 1);
    }

    #[tokio::test]
    async fn a_full_tenant_queue_is_told_so_at_once() {
        let stage = stage(1);
        let deadline = Instant::now() + Duration::from_millis(200);
        let (queued, refused) = futures_util::future::join(
            stage.handle(instant_request(deadline)),
            stage.handle(instant_request(deadline)),
        )
        .await;
        assert_eq!(queued.response().error_type, ErrorType::Timeout as i32);
        assert_eq!(
            refused.response().error_type,
            ErrorType::TooManyRequests as i32
        );
    }

    #[test]
    fn durations_read_like_prometheus() {
        assert_eq!(humanize(Duration::from_secs(120)), "2m");
        assert_eq!(humanize(Duration::from_secs(90)), "1m30s");
        assert_eq!(humanize(Duration::from_millis(1500)), "1s500ms");
        assert_eq!(humanize(Duration::from_secs(86400 * 8)), "1w1d");
        assert_eq!(humanize(Duration::ZERO), "0s");
    }
}
