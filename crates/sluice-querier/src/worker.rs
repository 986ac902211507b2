//! One worker: one stream to one owner, one sub-query at a time, each under
//! a permit of the querier's concurrency limiter taken before the worker
//! says it is ready.

use std::sync::Arc;
use std::time::{Duration, Instant};

use futures_util::StreamExt;
use sluice_proto::{
    ApiResponse, ErrorType, ExecutionStats, OwnerMessage, QuerierGoodbye, QuerierHello,
    QuerierMessage, QuerierReady, QuerierToOwner, QueryResult, QueryTask,
};
use tokio::sync::{mpsc, watch};

use crate::{
    ConcurrencyLimiter, ConcurrencyPermit, Executor, LocalExecute, LocalReady, OwnerStream,
    QuerierMetrics, Target,
};

pub(crate) struct WorkerSetup<E> {
    pub(crate) target: Target,
    /// For tasks from a scheduler: their results go straight to the frontend.
    pub(crate) delivery: sluice_proto::delivery::ResultDelivery,
    pub(crate) executor: Arc<E>,
    /// Querier-wide: how many workers may be ready or running at once.
    pub(crate) limiter: Arc<ConcurrencyLimiter>,
    pub(crate) querier_id: String,
    pub(crate) max_concurrent: u32,
    pub(crate) owner: String,
    pub(crate) metrics: QuerierMetrics,
}

/// Stops a worker gracefully: it tells its owner, finishes its task, exits.
pub(crate) struct WorkerHandle {
    stop: watch::Sender<bool>,
    task: tokio::task::JoinHandle<()>,
}

impl WorkerHandle {
    pub(crate) async fn stop(self) {
        let _ = self.stop.send(true);
        let _ = self.task.await;
    }
}

pub(crate) fn spawn<E: Executor>(setup: WorkerSetup<E>) -> WorkerHandle {
    let (stop, stop_receiver) = watch::channel(false);
    let task = tokio::spawn(run(setup, stop_receiver));
    WorkerHandle { stop, task }
}

fn message(message: QuerierMessage) -> QuerierToOwner {
    QuerierToOwner {
        message: Some(message),
    }
}

/// Why one connection of a worker ended.
enum SessionEnd {
    /// The worker was asked to stop and has said goodbye.
    Stopped,
    /// The stream broke; connect again.
    Broken,
}

async fn run<E: Executor>(setup: WorkerSetup<E>, mut stop: watch::Receiver<bool>) {
    if let Target::Local(serve) = &setup.target {
        // The queue owner lives in this process: it hands tasks to this
        // worker directly, with no stream in between.
        let serve = serve.clone();
        let querier_id = setup.querier_id.clone();
        let limiter = setup.limiter.clone();
        let owner: Arc<str> = Arc::from(setup.owner.as_str());
        let ready: LocalReady = Arc::new(move || {
            let (limiter, owner) = (limiter.clone(), owner.clone());
            Box::pin(async move { limiter.acquire(&owner).await })
        });
        let setup = Arc::new(setup);
        let execute: LocalExecute = Arc::new(move |task| {
            let setup = setup.clone();
            Box::pin(async move { execute_task(&setup, task).await })
        });
        serve(querier_id, stop, ready, execute).await;
        return;
    }
    let mut backoff = Duration::from_millis(50);
    loop {
        if *stop.borrow() {
            return;
        }
        let connected = tokio::select! {
            connected = setup.target.connect() => connected,
            _ = stop.changed() => return,
        };
        match connected {
            Ok((sender, stream)) => {
                backoff = Duration::from_millis(50);
                match session(&setup, sender, stream, &mut stop).await {
                    SessionEnd::Stopped => return,
                    SessionEnd::Broken => {}
                }
            }
            Err(error) => {
                tracing::debug!(owner = %setup.owner, %error, "cannot reach queue owner");
            }
        }
        // Jitter keeps a restarted owner from being hit by every worker at once.
        let pause = backoff.mul_f64(0.5 + fastrand_f64());
        backoff = (backoff * 2).min(Duration::from_secs(1));
        tokio::select! {
            _ = tokio::time::sleep(pause) => {}
            _ = stop.changed() => return,
        }
    }
}

fn fastrand_f64() -> f64 {
    // Jitter needs no quality randomness: the clock's low bits do.
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|elapsed| elapsed.subsec_nanos())
        .unwrap_or(0);
    f64::from(nanos % 1000) / 1000.0
}

/// One connection to an owner: hello, then for each task a permit, `Ready`
/// (unless the last result already said the worker was ready), the task,
/// its result. A stop is answered with goodbye; the owner then ends the
/// stream once the running task (if any) is answered.
async fn session<E: Executor>(
    setup: &WorkerSetup<E>,
    sender: mpsc::Sender<QuerierToOwner>,
    stream: OwnerStream,
    stop: &mut watch::Receiver<bool>,
) -> SessionEnd {
    let hello = message(QuerierMessage::Hello(QuerierHello {
        querier_id: setup.querier_id.clone(),
        max_concurrency: setup.max_concurrent,
        not_ready: true,
    }));
    if sender.send(hello).await.is_err() {
        return SessionEnd::Broken;
    }
    let mut link = Link {
        sender,
        stream,
        said_goodbye: false,
    };
    match serve_tasks(setup, &mut link, stop).await {
        Ok(never) => match never {},
        Err(end) => end,
    }
}

/// Serves tasks on an open stream until it ends (the error says how).
async fn serve_tasks<E: Executor>(
    setup: &WorkerSetup<E>,
    link: &mut Link,
    stop: &mut watch::Receiver<bool>,
) -> Result<std::convert::Infallible, SessionEnd> {
    let mut permit: Option<ConcurrencyPermit> = None;
    loop {
        let held = match permit.take() {
            Some(held) => held,
            None => {
                let acquired = link
                    .watch(stop, setup.limiter.acquire(&setup.owner))
                    .await?;
                link.send(message(QuerierMessage::Ready(QuerierReady {})))
                    .await?;
                acquired
            }
        };
        let mut task = link.next_task(stop).await?;
        let frontend_address = task.frontend_address.clone();
        let tenant = task.tenant.clone();
        let result_token = std::mem::take(&mut task.result_token);
        let Some(mut result) = run_task(setup, task, &mut link.stream).await else {
            return Err(link.end());
        };
        // Keep the permit only while still under the limit, which may have
        // shrunk meanwhile; otherwise the owner waits for `Ready`.
        drop(held);
        permit = setup.limiter.try_acquire(&setup.owner);
        result.not_ready = permit.is_none();
        if !frontend_address.is_empty() {
            let to = (
                frontend_address.as_str(),
                tenant.as_str(),
                result_token.as_slice(),
            );
            result = deliver_to_frontend(setup, to, result).await;
        }
        link.send(message(QuerierMessage::Result(result))).await?;
    }
}

/// A worker's open stream to its owner.
struct Link {
    sender: mpsc::Sender<QuerierToOwner>,
    stream: OwnerStream,
    said_goodbye: bool,
}

impl Link {
    /// How the session ends when the stream does.
    fn end(&self) -> SessionEnd {
        if self.said_goodbye {
            SessionEnd::Stopped
        } else {
            SessionEnd::Broken
        }
    }

    async fn send(&mut self, message: QuerierToOwner) -> Result<(), SessionEnd> {
        self.sender.send(message).await.map_err(|_| self.end())
    }

    /// Says goodbye (once) when the worker is told to stop.
    async fn goodbye(&mut self) -> Result<(), SessionEnd> {
        self.said_goodbye = true;
        if self
            .sender
            .send(message(QuerierMessage::Goodbye(QuerierGoodbye {})))
            .await
            .is_err()
        {
            return Err(SessionEnd::Stopped);
        }
        Ok(())
    }

    /// Runs `wait` while answering a stop with goodbye and noticing the
    /// stream's end (a stale cancel is all the owner may send meanwhile).
    async fn watch<T>(
        &mut self,
        stop: &mut watch::Receiver<bool>,
        wait: impl std::future::Future<Output = T>,
    ) -> Result<T, SessionEnd> {
        tokio::pin!(wait);
        loop {
            tokio::select! {
                done = &mut wait => return Ok(done),
                _ = stop.changed(), if !self.said_goodbye => self.goodbye().await?,
                next = self.stream.next() => match next {
                    Some(Ok(_)) => {}
                    Some(Err(status)) => {
                        tracing::debug!(%status, "worker stream failed");
                        return Err(self.end());
                    }
                    None => return Err(self.end()),
                },
            }
        }
    }

    /// Waits for the owner's next task.
    async fn next_task(
        &mut self,
        stop: &mut watch::Receiver<bool>,
    ) -> Result<QueryTask, SessionEnd> {
        loop {
            let next = tokio::select! {
                next = self.stream.next() => next,
                _ = stop.changed(), if !self.said_goodbye => {
                    self.goodbye().await?;
                    continue;
                }
            };
            match next {
                Some(Ok(owner_message)) => match owner_message.message {
                    Some(OwnerMessage::Task(task)) => return Ok(task),
                    // A cancel for a task already answered crossed our result.
                    Some(OwnerMessage::Cancel(_)) | None => {}
                },
                Some(Err(status)) => {
                    tracing::debug!(%status, "worker stream failed");
                    return Err(self.end());
                }
                None => return Err(self.end()),
            }
        }
    }
}

/// Sends a scheduler's task's result to the frontend that asked, and returns
/// what the scheduler is told: the same result without its payload, which
/// only says the worker is free (results never travel through a scheduler).
async fn deliver_to_frontend<E: Executor>(
    setup: &WorkerSetup<E>,
    (frontend_address, tenant, result_token): (&str, &str, &[u8]),
    mut result: QueryResult,
) -> QueryResult {
    let canceled = result
        .response
        .as_ref()
        .is_some_and(|response| response.error_type() == ErrorType::Canceled);
    let response = result.response.take();
    if !canceled {
        let report = QueryResult {
            response,
            ..result.clone()
        };
        if let Err(error) = setup
            .delivery
            .deliver(
                frontend_address,
                tenant,
                result_token,
                report,
                Duration::from_secs(10),
            )
            .await
        {
            tracing::warn!(%error, query_id = result.query_id, "result not delivered");
        }
    }
    result
}

/// Runs one task with the executor and builds its result. Dropping the
/// future aborts the execution (and its downstream request).
async fn execute_task<E: Executor>(setup: &WorkerSetup<E>, task: QueryTask) -> QueryResult {
    let started = Instant::now();
    setup.metrics.inflight.inc();
    let _inflight = scopeguard(|| setup.metrics.inflight.dec());
    // The frontend owns the deadline and answers the client when it passes
    // (then cancels us); our own timer is a backstop a little later, so the
    // client sees one consistent timeout error rather than a race between two.
    let timeout =
        Duration::from_millis(task.deadline_remaining_ms.max(1) as u64) + Duration::from_secs(1);
    let request = task.request.unwrap_or_default();
    let execution = setup
        .executor
        .execute_forwarding(&task.tenant, &request, &task.forwarded_headers, timeout)
        .await;
    let outcome = if execution.response.is_error() {
        "error"
    } else {
        "success"
    };
    let elapsed = started.elapsed();
    // Execution time only: queue time says nothing about the backend.
    let running = setup.metrics.inflight.get().max(1) as usize;
    setup.limiter.record(elapsed, running);
    setup.metrics.duration.observe(elapsed.as_secs_f64());
    setup.metrics.requests.with_label_values(&[outcome]).inc();
    let samples = execution.response.sample_count() as u64;
    QueryResult {
        query_id: task.query_id,
        response: Some(execution.response),
        retryable: execution.retryable,
        current_concurrency: setup.metrics.inflight.get().max(0) as u32,
        desired_concurrency: setup.limiter.limit() as u32,
        stats: Some(ExecutionStats {
            execution_ns: elapsed.as_nanos() as i64,
            samples,
        }),
        not_ready: false,
    }
}

/// Runs one task while watching the stream for its cancellation. Returns
/// `None` when the stream broke mid-task (the owner retries elsewhere).
async fn run_task<E: Executor>(
    setup: &WorkerSetup<E>,
    task: QueryTask,
    stream: &mut OwnerStream,
) -> Option<QueryResult> {
    let query_id = task.query_id;
    let execution = execute_task(setup, task);
    tokio::pin!(execution);
    loop {
        tokio::select! {
            result = &mut execution => return Some(result),
            next = stream.next() => match next {
                Some(Ok(owner_message)) => match owner_message.message {
                    Some(OwnerMessage::Cancel(cancel)) if cancel.query_id == query_id => {
                        // Dropping the execution future aborts the downstream request.
                        setup.metrics.requests.with_label_values(&["canceled"]).inc();
                        return Some(QueryResult {
                            query_id,
                            response: Some(ApiResponse::error(
                                ErrorType::Canceled,
                                "query canceled by its client",
                            )),
                            current_concurrency: setup.metrics.inflight.get().max(0) as u32,
                            desired_concurrency: setup.limiter.limit() as u32,
                            ..QueryResult::default()
                        });
                    }
                    _ => {}
                },
                _ => {
                    setup.metrics.requests.with_label_values(&["owner_gone"]).inc();
                    return None;
                }
            }
        }
    }
}

struct ScopeGuard<F: FnMut()>(F);

impl<F: FnMut()> Drop for ScopeGuard<F> {
    fn drop(&mut self) {
        (self.0)();
    }
}

fn scopeguard<F: FnMut()>(on_drop: F) -> ScopeGuard<F> {
    ScopeGuard(on_drop)
}
