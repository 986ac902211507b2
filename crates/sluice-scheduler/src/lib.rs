//! sluice's query-scheduler: the tenant-fair queue as its own small service
//! between any number of stateless query-frontends and any number of queriers.
//!
//! Frontends hold one pipelined stream each ([`FrontendLoop`]): they enqueue
//! sub-queries and cancel them, and every enqueue is answered OK,
//! too-many-requests, error or shutting-down. Queriers pull from the same
//! queue over the same worker-stream protocol they use with a frontend that
//! owns its queue. A result never passes through the scheduler: the querier
//! sends it straight to the frontend that asked, and the scheduler only hears
//! that the worker is free. When a querier dies mid-query, the scheduler tells
//! that frontend, which retries elsewhere.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures_util::StreamExt;
use prometheus::{IntGauge, Registry};
use sluice_proto::delivery::ResultDelivery;
use sluice_proto::{
    ApiResponse, EnqueueStatus, ErrorType, FrontendMessage, FrontendToScheduler, Header,
    OwnerToQuerier, QuerierToOwner, QueryRequest, QueryResult, QueryTask, SchedulerToFrontend,
};
use sluice_queue::worker_stream::{Assignment, Outcome, OwnerMetrics};
use sluice_queue::{EnqueueError, QueueConfig, QueuedGuard, RequestQueue, TenantLimitsFn};
use tokio::sync::{mpsc, watch};
use tokio::time::Instant;

/// How a scheduler is set up.
#[derive(Clone, Debug)]
pub struct SchedulerConfig {
    pub max_outstanding_per_tenant: usize,
    pub max_queriers_per_tenant: usize,
    pub querier_forget_delay: Duration,
    /// Idle querier slots kept from a tenant that already holds slots (see
    /// [`QueueConfig::reserved_slots`]).
    pub reserved_querier_slots: usize,
    /// Each tenant's own queue limits (runtime overrides), in place of the
    /// two above.
    pub tenant_limits: Option<TenantLimitsFn>,
    /// How lost-querier reports reach frontends: plain or TLS.
    pub grpc_client: sluice_tls::GrpcChannels,
}

impl Default for SchedulerConfig {
    fn default() -> Self {
        SchedulerConfig {
            max_outstanding_per_tenant: 100,
            max_queriers_per_tenant: 0,
            querier_forget_delay: Duration::ZERO,
            reserved_querier_slots: QueueConfig::default().reserved_slots,
            tenant_limits: None,
            grpc_client: sluice_tls::GrpcChannels::default(),
        }
    }
}

/// Sub-queries of one frontend stream that are queued or running, so a
/// cancel (or the frontend's disappearance) can reach them.
type Outstanding = Arc<Mutex<HashMap<u64, (Option<QueuedGuard>, watch::Sender<bool>)>>>;

/// A sub-query in the scheduler's queue.
struct SchedulerTask {
    query_id: u64,
    frontend_address: Arc<str>,
    tenant: String,
    request: Option<QueryRequest>,
    forwarded_headers: Vec<Header>,
    /// Handed to the querier with the task, and sent back with a report.
    result_token: Vec<u8>,
    deadline: Instant,
    canceled: watch::Receiver<bool>,
    outstanding: Outstanding,
    delivery: ResultDelivery,
}

impl Assignment for SchedulerTask {
    fn query_id(&self) -> u64 {
        self.query_id
    }

    fn deadline(&self) -> Instant {
        self.deadline
    }

    fn is_abandoned(&self) -> bool {
        *self.canceled.borrow()
    }

    async fn abandoned(&mut self) {
        // An error means the frontend stream is gone: abandoned as well.
        let _ = self.canceled.wait_for(|canceled| *canceled).await;
    }

    fn task(&mut self, tenant: &str, queued_for: Duration, now: Instant) -> QueryTask {
        QueryTask {
            query_id: self.query_id,
            tenant: tenant.to_owned(),
            request: self.request.take(),
            frontend_address: self.frontend_address.to_string(),
            queued_ns: queued_for.as_nanos() as i64,
            deadline_remaining_ms: self.deadline.saturating_duration_since(now).as_millis() as i64,
            forwarded_headers: std::mem::take(&mut self.forwarded_headers),
            result_token: self.result_token.clone(),
        }
    }

    fn finish(self, outcome: Outcome) {
        self.outstanding
            .lock()
            .expect("outstanding lock")
            .remove(&self.query_id);
        if let Outcome::QuerierLost = outcome {
            if *self.canceled.borrow() {
                return;
            }
            // The querier died with it: tell the frontend, which retries it.
            let report = QueryResult {
                query_id: self.query_id,
                response: Some(ApiResponse::error(
                    ErrorType::Internal,
                    "the querier running this query went away",
                )),
                retryable: true,
                ..QueryResult::default()
            };
            tokio::spawn(async move {
                if let Err(error) = self
                    .delivery
                    .deliver(
                        &self.frontend_address,
                        &self.tenant,
                        &self.result_token,
                        report,
                        Duration::from_secs(5),
                    )
                    .await
                {
                    tracing::debug!(%error, "could not report a lost querier to its frontend");
                }
            });
        }
    }
}

/// The scheduler's metrics beyond the queue owner's.
#[derive(Clone)]
struct SchedulerMetrics {
    owner: OwnerMetrics,
    connected_frontends: IntGauge,
}

struct Inner {
    queue: RequestQueue<SchedulerTask>,
    metrics: SchedulerMetrics,
    shutting_down: AtomicBool,
    delivery: ResultDelivery,
}

/// A query-scheduler. Cheap to clone.
#[derive(Clone)]
pub struct Scheduler {
    inner: Arc<Inner>,
}

impl Scheduler {
    pub fn new(config: SchedulerConfig, registry: &Registry) -> Scheduler {
        let queue = RequestQueue::new(QueueConfig {
            max_outstanding_per_tenant: config.max_outstanding_per_tenant,
            max_queriers_per_tenant: config.max_queriers_per_tenant,
            querier_forget_delay: config.querier_forget_delay,
            reserved_slots: config.reserved_querier_slots,
            tenant_limits: config.tenant_limits.clone(),
        });
        let owner = sluice_queue::worker_stream::register_owner_metrics(registry);
        let metrics = SchedulerMetrics {
            owner,
            connected_frontends: IntGauge::new(
                "sluice_scheduler_connected_frontends",
                "Query-frontend streams connected to this scheduler.",
            )
            .expect("valid metric"),
        };
        registry
            .register(Box::new(metrics.connected_frontends.clone()))
            .expect("scheduler metrics registered once");
        Scheduler {
            inner: Arc::new(Inner {
                queue,
                metrics,
                shutting_down: AtomicBool::new(false),
                delivery: ResultDelivery::new(config.grpc_client),
            }),
        }
    }

    /// The service frontends connect to.
    pub fn frontend_service(
        &self,
    ) -> sluice_proto::scheduler::scheduler_server::SchedulerServer<FrontendLoop> {
        sluice_proto::scheduler::scheduler_server::SchedulerServer::new(FrontendLoop {
            inner: self.inner.clone(),
        })
        .max_decoding_message_size(usize::MAX)
        .max_encoding_message_size(usize::MAX)
    }

    /// The service querier workers connect to.
    pub fn querier_service(
        &self,
    ) -> sluice_proto::queue_owner::queue_owner_server::QueueOwnerServer<QuerierLoop> {
        sluice_proto::queue_owner::queue_owner_server::QueueOwnerServer::new(QuerierLoop {
            inner: self.inner.clone(),
        })
        .max_decoding_message_size(usize::MAX)
        .max_encoding_message_size(usize::MAX)
    }

    /// Ready once a querier is connected, until shutdown begins.
    pub fn is_ready(&self) -> bool {
        !self.inner.shutting_down.load(Ordering::Relaxed)
            && self.inner.queue.connected_queriers() > 0
    }

    /// Copies live queue state into gauges just before a scrape.
    pub fn refresh_metrics(&self) {
        self.inner.metrics.owner.refresh_from(&self.inner.queue);
    }

    /// Refuses new sub-queries (frontends then use another scheduler) while
    /// queued ones are still handed out; queriers see their streams end once
    /// the queue is empty.
    pub fn begin_shutdown(&self) {
        self.inner.shutting_down.store(true, Ordering::Relaxed);
        self.inner.queue.stop();
    }

    /// Sub-queries still queued.
    pub fn queued(&self) -> usize {
        self.inner.queue.len()
    }
}

/// The gRPC service frontends talk to.
pub struct FrontendLoop {
    inner: Arc<Inner>,
}

fn answer(query_id: u64, status: EnqueueStatus, error: &str) -> SchedulerToFrontend {
    SchedulerToFrontend {
        query_id,
        status: status as i32,
        error: error.to_owned(),
    }
}

#[tonic::async_trait]
impl sluice_proto::scheduler::scheduler_server::Scheduler for FrontendLoop {
    type FrontendLoopStream =
        tokio_stream::wrappers::ReceiverStream<Result<SchedulerToFrontend, tonic::Status>>;

    async fn frontend_loop(
        &self,
        request: tonic::Request<tonic::Streaming<FrontendToScheduler>>,
    ) -> Result<tonic::Response<Self::FrontendLoopStream>, tonic::Status> {
        let mut inbound = request.into_inner();
        let frontend_address: Arc<str> = match inbound.next().await {
            Some(Ok(FrontendToScheduler {
                message: Some(FrontendMessage::Hello(hello)),
            })) => hello.frontend_address.into(),
            _ => {
                return Err(tonic::Status::invalid_argument(
                    "a frontend stream starts with hello",
                ));
            }
        };
        let (answers, from_scheduler) = mpsc::channel(1024);
        let inner = self.inner.clone();
        tokio::spawn(async move {
            inner.metrics.connected_frontends.inc();
            let outstanding: Outstanding = Arc::default();
            while let Some(Ok(message)) = inbound.next().await {
                match message.message {
                    Some(FrontendMessage::Enqueue(enqueue)) => {
                        let reply = inner.enqueue(&frontend_address, &outstanding, enqueue);
                        if answers.send(Ok(reply)).await.is_err() {
                            break;
                        }
                    }
                    Some(FrontendMessage::Cancel(cancel)) => {
                        let entry = outstanding
                            .lock()
                            .expect("outstanding lock")
                            .remove(&cancel.query_id);
                        if let Some((guard, canceled)) = entry {
                            drop(guard);
                            let _ = canceled.send(true);
                        }
                    }
                    Some(FrontendMessage::Hello(_)) | None => {}
                }
            }
            // The frontend is gone, and so are the clients waiting on it.
            let abandoned: Vec<_> = outstanding
                .lock()
                .expect("outstanding lock")
                .drain()
                .collect();
            for (_, (guard, canceled)) in abandoned {
                drop(guard);
                let _ = canceled.send(true);
            }
            inner.metrics.connected_frontends.dec();
        });
        Ok(tonic::Response::new(
            tokio_stream::wrappers::ReceiverStream::new(from_scheduler),
        ))
    }
}

impl Inner {
    fn enqueue(
        &self,
        frontend_address: &Arc<str>,
        outstanding: &Outstanding,
        enqueue: sluice_proto::EnqueueRequest,
    ) -> SchedulerToFrontend {
        let query_id = enqueue.query_id;
        if self.shutting_down.load(Ordering::Relaxed) {
            return answer(query_id, EnqueueStatus::ShuttingDown, "");
        }
        let (cancel, canceled) = watch::channel(false);
        let deadline =
            Instant::now() + Duration::from_millis(enqueue.deadline_remaining_ms.max(0) as u64);
        let task = SchedulerTask {
            query_id,
            frontend_address: frontend_address.clone(),
            tenant: enqueue.tenant.clone(),
            request: enqueue.request,
            forwarded_headers: enqueue.forwarded_headers,
            result_token: enqueue.result_token,
            deadline,
            canceled,
            outstanding: outstanding.clone(),
            delivery: self.delivery.clone(),
        };
        // Recorded before it is queued, so a querier finishing it at once
        // cannot race its own bookkeeping.
        outstanding
            .lock()
            .expect("outstanding lock")
            .insert(query_id, (None, cancel));
        match self.queue.enqueue(&enqueue.tenant, task, Some(deadline)) {
            Ok(guard) => {
                if let Some(entry) = outstanding
                    .lock()
                    .expect("outstanding lock")
                    .get_mut(&query_id)
                {
                    entry.0 = Some(guard);
                }
                answer(query_id, EnqueueStatus::Ok, "")
            }
            Err(error) => {
                outstanding
                    .lock()
                    .expect("outstanding lock")
                    .remove(&query_id);
                match error {
                    EnqueueError::TooManyRequests => {
                        self.metrics
                            .owner
                            .discarded
                            .with_label_values(&[enqueue.tenant.as_str(), "too_many_requests"])
                            .inc();
                        answer(
                            query_id,
                            EnqueueStatus::TooManyRequests,
                            "too many outstanding requests",
                        )
                    }
                    EnqueueError::Stopped => answer(query_id, EnqueueStatus::ShuttingDown, ""),
                }
            }
        }
    }
}

/// The gRPC service querier workers pull from.
pub struct QuerierLoop {
    inner: Arc<Inner>,
}

#[tonic::async_trait]
impl sluice_proto::queue_owner::queue_owner_server::QueueOwner for QuerierLoop {
    type ProcessStream =
        tokio_stream::wrappers::ReceiverStream<Result<OwnerToQuerier, tonic::Status>>;

    async fn process(
        &self,
        request: tonic::Request<tonic::Streaming<QuerierToOwner>>,
    ) -> Result<tonic::Response<Self::ProcessStream>, tonic::Status> {
        Ok(tonic::Response::new(
            sluice_queue::worker_stream::spawn_worker_stream(
                self.inner.queue.clone(),
                self.inner.metrics.owner.clone(),
                request.into_inner(),
            ),
        ))
    }
}
