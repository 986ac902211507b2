//! The queue owner's side of a querier worker stream, shared by the
//! query-frontend (which owns a queue when no scheduler is configured) and the
//! query-scheduler: hand the worker one queued task, wait for its result, its
//! cancellation or the worker's death, repeat.

use std::future::Future;
use std::time::Duration;

use futures_util::{Stream, StreamExt};
use prometheus::{Histogram, IntCounterVec, IntGauge};
use sluice_proto::{
    CancelTask, OwnerMessage, OwnerToQuerier, QuerierMessage, QuerierToOwner, QueryResult,
    QueryTask,
};
use tokio::sync::mpsc;
use tokio::time::Instant;

use crate::RequestQueue;

/// How a handed-out task ended, as seen by the worker stream that ran it.
#[allow(clippy::large_enum_variant)] // moved once, its size does not matter
pub enum Outcome {
    Answered(QueryResult),
    /// The querier went away with the task (died, connection reset).
    QuerierLost,
}

/// A queued unit of work and the way back to whoever waits for it.
pub trait Assignment: Send + 'static {
    fn query_id(&self) -> u64;
    fn deadline(&self) -> Instant;
    /// True once whoever waits for the answer has gone.
    fn is_abandoned(&self) -> bool;
    /// Resolves when whoever waits for the answer goes away; cancel-safe.
    fn abandoned(&mut self) -> impl Future<Output = ()> + Send;
    /// The message handing this work to a querier.
    fn task(&mut self, tenant: &str, queued_for: Duration, now: Instant) -> QueryTask;
    /// Reports how the work ended.
    fn finish(self, outcome: Outcome);
}

/// The metrics every queue owner keeps about its workers.
#[derive(Clone)]
pub struct OwnerMetrics {
    pub queue_duration: Histogram,
    /// By tenant and reason.
    pub discarded: IntCounterVec,
    pub connected_workers: IntGauge,
    /// Tasks running now, by querier.
    pub inflight_per_querier: prometheus::IntGaugeVec,
    /// Times a worker was held back because its querier ran over its limit.
    pub flow_control_backoffs: prometheus::IntCounter,
    /// Queued sub-queries by tenant, read from the queue at scrape time.
    pub queue_length: prometheus::IntGaugeVec,
    pub connected_queriers: IntGauge,
}

impl OwnerMetrics {
    /// Copies the queue's live state into gauges just before a scrape, so
    /// they are never stale and cost nothing per request.
    pub fn refresh_from<A: Send + 'static>(&self, queue: &RequestQueue<A>) {
        self.queue_length.reset();
        for (tenant, length) in queue.tenant_lengths() {
            self.queue_length
                .with_label_values(&[&*tenant])
                .set(length as i64);
        }
        self.connected_queriers
            .set(queue.connected_queriers() as i64);
    }
}

const LATENCY_BUCKETS: &[f64] = &[
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
    60.0, 120.0,
];

/// Registers the metrics of a queue owner (frontend or scheduler) under the
/// same names for both, so one dashboard serves either.
pub fn register_owner_metrics(registry: &prometheus::Registry) -> OwnerMetrics {
    use prometheus::{HistogramOpts, IntGaugeVec, Opts};
    let metrics = OwnerMetrics {
        queue_duration: Histogram::with_opts(
            HistogramOpts::new(
                "sluice_queue_duration_seconds",
                "Time sub-queries waited in the queue before a querier took them.",
            )
            .buckets(LATENCY_BUCKETS.to_vec()),
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
        connected_workers: IntGauge::new(
            "sluice_connected_querier_workers",
            "Querier worker streams connected to this queue owner.",
        )
        .expect("valid metric"),
        inflight_per_querier: IntGaugeVec::new(
            Opts::new(
                "sluice_querier_tasks_inflight",
                "Sub-queries handed to each querier and not yet answered.",
            ),
            &["querier"],
        )
        .expect("valid metric"),
        queue_length: IntGaugeVec::new(
            Opts::new(
                "sluice_queue_length",
                "Sub-queries waiting in the queue, by tenant.",
            ),
            &["tenant"],
        )
        .expect("valid metric"),
        connected_queriers: IntGauge::new(
            "sluice_connected_queriers",
            "Distinct queriers with at least one worker connected.",
        )
        .expect("valid metric"),
        flow_control_backoffs: prometheus::IntCounter::new(
            "sluice_flow_control_backoffs_total",
            "Times a querier worker was held back because its querier reported running more than it wants.",
        )
        .expect("valid metric"),
    };
    for collector in [
        Box::new(metrics.queue_duration.clone()) as Box<dyn prometheus::core::Collector>,
        Box::new(metrics.discarded.clone()),
        Box::new(metrics.connected_workers.clone()),
        Box::new(metrics.inflight_per_querier.clone()),
        Box::new(metrics.flow_control_backoffs.clone()),
        Box::new(metrics.queue_length.clone()),
        Box::new(metrics.connected_queriers.clone()),
    ] {
        registry
            .register(collector)
            .expect("owner metrics registered once");
    }
    metrics
}

fn owner_message(message: OwnerMessage) -> Result<OwnerToQuerier, tonic::Status> {
    Ok(OwnerToQuerier {
        message: Some(message),
    })
}

/// Backoff for a querier that reports running more than it wants: short and
/// jittered, so it sheds load without every worker pausing in step.
fn flow_control_pause() -> Duration {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|elapsed| elapsed.subsec_nanos())
        .unwrap_or(0);
    Duration::from_millis(10 + u64::from(nanos % 40))
}

/// Serves one worker until it says goodbye, its stream ends, or the queue
/// stops and drains. Returning drops `outbound`, which ends the stream on the
/// querier's side.
///
/// A worker is only dequeued for while it is ready: after a hello or result
/// saying `not_ready` it must send `Ready` first (its querier's concurrency
/// limiter admitted it), so a task never waits on a querier for a permit.
pub async fn serve_worker<A, S>(
    queue: RequestQueue<A>,
    metrics: OwnerMetrics,
    mut inbound: S,
    outbound: mpsc::Sender<Result<OwnerToQuerier, tonic::Status>>,
) where
    A: Assignment,
    S: Stream<Item = Result<QuerierToOwner, tonic::Status>> + Unpin + Send + 'static,
{
    let hello = match inbound.next().await {
        Some(Ok(QuerierToOwner {
            message: Some(QuerierMessage::Hello(hello)),
        })) => hello,
        other => {
            tracing::debug!(?other, "worker stream did not start with hello");
            return;
        }
    };
    let querier_id = hello.querier_id;
    let mut ready = !hello.not_ready;
    let querier = queue.register_querier(&querier_id);
    let _connected = ConnectedWorker::new(&metrics.connected_workers);
    let inflight = metrics
        .inflight_per_querier
        .with_label_values(&[querier_id.as_str()]);
    loop {
        if !ready && !wait_until_ready(&mut inbound, &queue, &querier_id).await {
            return;
        }
        ready = true;
        let dequeued = tokio::select! {
            dequeued = queue.dequeue(&querier) => match dequeued {
                Some(dequeued) => dequeued,
                // The queue stopped and is empty, or this querier is leaving.
                None => return,
            },
            message = inbound.next() => match message {
                Some(Ok(QuerierToOwner { message: Some(QuerierMessage::Goodbye(_)) })) => {
                    queue.notify_querier_shutdown(&querier_id);
                    return;
                }
                None | Some(Err(_)) => return,
                Some(Ok(_)) => continue,
            },
        };
        let Some((mut assignment, task, slot)) = hand_out(dequeued, &metrics) else {
            continue;
        };
        let query_id = task.query_id;
        if outbound
            .send(owner_message(OwnerMessage::Task(task)))
            .await
            .is_err()
        {
            querier_lost(&queue, &querier_id, assignment);
            return;
        }
        inflight.inc();
        let end = await_result(
            &mut inbound,
            &outbound,
            &mut assignment,
            query_id,
            &queue,
            &querier_id,
        )
        .await;
        inflight.dec();
        let TaskEnd::Answered {
            result,
            said_goodbye,
        } = end
        else {
            querier_lost(&queue, &querier_id, assignment);
            return;
        };
        ready = !result.not_ready;
        let over_limit = result.current_concurrency > result.desired_concurrency;
        assignment.finish(Outcome::Answered(result));
        // The tenant's slot is free now, not after a pause below.
        drop(slot);
        if said_goodbye {
            return;
        }
        // Flow control for queriers without a limiter (they never say
        // `not_ready`): this querier runs more than it wants; let its other
        // work finish before handing this worker more.
        if ready && over_limit && !flow_control_pause_served(&mut inbound, &metrics).await {
            return;
        }
    }
}

/// Waits for a worker's `Ready`; false if it said goodbye or its stream ended.
async fn wait_until_ready<A, S>(inbound: &mut S, queue: &RequestQueue<A>, querier_id: &str) -> bool
where
    A: Assignment,
    S: Stream<Item = Result<QuerierToOwner, tonic::Status>> + Unpin,
{
    loop {
        match inbound.next().await {
            Some(Ok(QuerierToOwner {
                message: Some(QuerierMessage::Ready(_)),
            })) => return true,
            Some(Ok(QuerierToOwner {
                message: Some(QuerierMessage::Goodbye(_)),
            })) => {
                queue.notify_querier_shutdown(querier_id);
                return false;
            }
            None | Some(Err(_)) => return false,
            Some(Ok(_)) => {}
        }
    }
}

/// How a task handed to a worker stream ended.
#[allow(clippy::large_enum_variant)] // moved once, its size does not matter
enum TaskEnd {
    Answered {
        result: QueryResult,
        said_goodbye: bool,
    },
    /// The stream broke with the task in hand.
    Lost,
}

/// Waits for the worker's result for `query_id`, telling it to cancel if
/// whoever asked goes away meanwhile.
async fn await_result<A, S>(
    inbound: &mut S,
    outbound: &mpsc::Sender<Result<OwnerToQuerier, tonic::Status>>,
    assignment: &mut A,
    query_id: u64,
    queue: &RequestQueue<A>,
    querier_id: &str,
) -> TaskEnd
where
    A: Assignment,
    S: Stream<Item = Result<QuerierToOwner, tonic::Status>> + Unpin,
{
    let mut cancel_sent = false;
    let mut said_goodbye = false;
    loop {
        tokio::select! {
            message = inbound.next() => match message {
                Some(Ok(QuerierToOwner { message: Some(QuerierMessage::Result(result)) }))
                    if result.query_id == query_id => return TaskEnd::Answered { result: result.checked(), said_goodbye },
                Some(Ok(QuerierToOwner { message: Some(QuerierMessage::Goodbye(_)) })) => {
                    said_goodbye = true;
                    queue.notify_querier_shutdown(querier_id);
                }
                Some(Ok(_)) => {}
                None | Some(Err(_)) => return TaskEnd::Lost,
            },
            _ = assignment.abandoned(), if !cancel_sent => {
                // Whoever asked went away: tell the querier to stop, then
                // wait for the worker to be free again.
                cancel_sent = true;
                let cancel = owner_message(OwnerMessage::Cancel(CancelTask { query_id }));
                if outbound.send(cancel).await.is_err() {
                    return TaskEnd::Lost;
                }
            }
        }
    }
}

/// Holds a worker back for a short flow-control pause; false if it said
/// goodbye or its stream ended meanwhile.
async fn flow_control_pause_served<S>(inbound: &mut S, metrics: &OwnerMetrics) -> bool
where
    S: Stream<Item = Result<QuerierToOwner, tonic::Status>> + Unpin,
{
    metrics.flow_control_backoffs.inc();
    tokio::select! {
        _ = tokio::time::sleep(flow_control_pause()) => true,
        message = inbound.next() => !matches!(
            message,
            Some(Ok(QuerierToOwner { message: Some(QuerierMessage::Goodbye(_)) })) | None | Some(Err(_))
        ),
    }
}

/// Serves one in-process worker straight from the queue: the same rules as
/// [`serve_worker`] (skip abandoned and expired work, cancel on abandonment,
/// finish every task taken) with no stream in between. A querier in the same
/// process as its queue owner (`-target=all`) uses this, saving two task
/// hand-offs per sub-query on the hot path. Returns once `stop` is raised
/// (after finishing the running task) or the queue is stopped and drained.
///
/// Before each dequeue the worker waits for `ready` (its querier's
/// concurrency limiter), and holds what that returns until the task ends.
pub async fn serve_inline<A, R, RFut, P, F, Fut>(
    queue: RequestQueue<A>,
    metrics: OwnerMetrics,
    querier_id: String,
    mut stop: tokio::sync::watch::Receiver<bool>,
    ready: R,
    execute: F,
) where
    A: Assignment,
    R: Fn() -> RFut,
    RFut: Future<Output = P>,
    F: Fn(QueryTask) -> Fut,
    Fut: Future<Output = QueryResult>,
{
    let querier = queue.register_querier(&querier_id);
    let _connected = ConnectedWorker::new(&metrics.connected_workers);
    let inflight = metrics
        .inflight_per_querier
        .with_label_values(&[querier_id.as_str()]);
    loop {
        if *stop.borrow() {
            return;
        }
        let _permit = tokio::select! {
            permit = ready() => permit,
            _ = stop.changed() => return,
        };
        let dequeued = tokio::select! {
            dequeued = queue.dequeue(&querier) => match dequeued {
                Some(dequeued) => dequeued,
                None => return,
            },
            _ = stop.changed() => return,
        };
        let Some((mut assignment, task, _slot)) = hand_out(dequeued, &metrics) else {
            continue;
        };
        inflight.inc();
        let result = execute_unless_abandoned(&mut assignment, task, &execute).await;
        inflight.dec();
        assignment.finish(Outcome::Answered(result));
    }
}

/// Runs `task` in process, or answers `canceled` as soon as whoever asked
/// goes away (dropping the execution stops it and its downstream request).
async fn execute_unless_abandoned<A, F, Fut>(
    assignment: &mut A,
    task: QueryTask,
    execute: &F,
) -> QueryResult
where
    A: Assignment,
    F: Fn(QueryTask) -> Fut,
    Fut: Future<Output = QueryResult>,
{
    let query_id = task.query_id;
    tokio::select! {
        result = execute(task) => result,
        _ = assignment.abandoned() => QueryResult {
            query_id,
            response: Some(sluice_proto::ApiResponse::error(
                sluice_proto::ErrorType::Canceled,
                "query canceled by its client",
            )),
            ..QueryResult::default()
        },
    }
}

/// A worker's stream broke with a task in hand: the task goes back for a
/// retry, and the querier is treated as gone until it connects again, so
/// its other (likely dead) workers are not handed the retry one by one.
fn querier_lost<A: Assignment>(queue: &RequestQueue<A>, querier_id: &str, assignment: A) {
    queue.notify_querier_shutdown(querier_id);
    assignment.finish(Outcome::QuerierLost);
}

/// Turns a dequeued item into the task for a worker and the tenant's slot
/// (hold it until the task ends), or `None` when nobody waits for it any
/// more or its deadline passed (counted as discarded; the slot is freed).
fn hand_out<A: Assignment>(
    dequeued: crate::Dequeued<A>,
    metrics: &OwnerMetrics,
) -> Option<(A, QueryTask, crate::InFlightGuard)> {
    let tenant = dequeued.tenant;
    let slot = dequeued.in_flight;
    let mut assignment = dequeued.item;
    let now = Instant::now();
    let discarded = if assignment.is_abandoned() {
        Some("canceled")
    } else if now >= assignment.deadline() {
        Some("expired")
    } else {
        None
    };
    if let Some(reason) = discarded {
        metrics
            .discarded
            .with_label_values(&[&*tenant, reason])
            .inc();
        return None;
    }
    let queued_for = now.saturating_duration_since(dequeued.enqueued_at);
    metrics.queue_duration.observe(queued_for.as_secs_f64());
    let task = assignment.task(&tenant, queued_for, now);
    Some((assignment, task, slot))
}

/// Counts a connected worker for as long as it lives.
struct ConnectedWorker(IntGauge);

impl ConnectedWorker {
    fn new(gauge: &IntGauge) -> ConnectedWorker {
        gauge.inc();
        ConnectedWorker(gauge.clone())
    }
}

impl Drop for ConnectedWorker {
    fn drop(&mut self) {
        self.0.dec();
    }
}

/// Serves one gRPC worker stream from `queue` in a task of its own and
/// returns the stream the owner answers on: the body of every queue owner's
/// `Process` method.
pub fn spawn_worker_stream<A: Assignment>(
    queue: RequestQueue<A>,
    metrics: OwnerMetrics,
    inbound: tonic::Streaming<QuerierToOwner>,
) -> tokio_stream::wrappers::ReceiverStream<Result<OwnerToQuerier, tonic::Status>> {
    let (to_querier, from_owner) = mpsc::channel(4);
    tokio::spawn(serve_worker(queue, metrics, inbound, to_querier));
    tokio_stream::wrappers::ReceiverStream::new(from_owner)
}
