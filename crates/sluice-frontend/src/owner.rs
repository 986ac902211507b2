//! The queue owner's end of a querier worker stream: hand the worker one
//! queued task, wait for its result (or its death), repeat.

use std::sync::Arc;

use futures_util::{Stream, StreamExt};
use sluice_proto::{
    CancelTask, OwnerMessage, OwnerToQuerier, QuerierMessage, QuerierToOwner, QueryTask,
};
use tokio::sync::mpsc;
use tokio::time::Instant;

use crate::Inner;
use crate::dispatch::TaskOutcome;

/// The gRPC face of [`serve_worker`].
pub struct OwnerService {
    pub(crate) inner: Arc<Inner>,
}

#[tonic::async_trait]
impl sluice_proto::queue_owner::queue_owner_server::QueueOwner for OwnerService {
    type ProcessStream =
        tokio_stream::wrappers::ReceiverStream<Result<OwnerToQuerier, tonic::Status>>;

    async fn process(
        &self,
        request: tonic::Request<tonic::Streaming<QuerierToOwner>>,
    ) -> Result<tonic::Response<Self::ProcessStream>, tonic::Status> {
        let (to_querier, from_owner) = mpsc::channel(4);
        tokio::spawn(serve_worker(
            self.inner.clone(),
            request.into_inner(),
            to_querier,
        ));
        Ok(tonic::Response::new(
            tokio_stream::wrappers::ReceiverStream::new(from_owner),
        ))
    }
}

fn task_message(message: OwnerMessage) -> Result<OwnerToQuerier, tonic::Status> {
    Ok(OwnerToQuerier {
        message: Some(message),
    })
}

/// Serves one worker until it says goodbye, its stream ends, or the queue stops.
/// Returning drops `outbound`, which ends the stream on the querier's side.
pub(crate) async fn serve_worker<S>(
    inner: Arc<Inner>,
    mut inbound: S,
    outbound: mpsc::Sender<Result<OwnerToQuerier, tonic::Status>>,
) where
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
    let querier = inner.queue.register_querier(&hello.querier_id);
    inner.metrics.connected_workers.inc();
    let _connected = DecrementOnDrop(&inner.metrics.connected_workers);
    loop {
        let dequeued = tokio::select! {
            dequeued = inner.queue.dequeue(&querier) => match dequeued {
                Some(dequeued) => dequeued,
                // The queue stopped and is empty: we are shutting down.
                None => return,
            },
            message = inbound.next() => match message {
                Some(Ok(QuerierToOwner { message: Some(QuerierMessage::Goodbye(_)) })) | None | Some(Err(_)) => return,
                Some(Ok(_)) => continue,
            },
        };
        let task = dequeued.item;
        if task.reply.is_closed() {
            // The client left after its task was handed to us; nothing to run.
            inner
                .metrics
                .discarded
                .with_label_values(&[&*dequeued.tenant, "canceled"])
                .inc();
            continue;
        }
        let now = Instant::now();
        if now >= task.deadline {
            inner
                .metrics
                .discarded
                .with_label_values(&[&*dequeued.tenant, "expired"])
                .inc();
            continue;
        }
        let queued_for = dequeued.enqueued_at.elapsed();
        inner
            .metrics
            .queue_duration
            .observe(queued_for.as_secs_f64());
        let query_id = task.query_id;
        let mut reply = task.reply;
        let sent = outbound
            .send(task_message(OwnerMessage::Task(QueryTask {
                query_id,
                tenant: dequeued.tenant.to_string(),
                request: Some(task.request),
                frontend_address: String::new(),
                queued_ns: queued_for.as_nanos() as i64,
                deadline_remaining_ms: (task.deadline - now).as_millis() as i64,
            })))
            .await;
        if sent.is_err() {
            let _ = reply.send(TaskOutcome::QuerierLost);
            return;
        }
        let mut cancel_sent = false;
        let mut said_goodbye = false;
        let result = loop {
            tokio::select! {
                message = inbound.next() => match message {
                    Some(Ok(QuerierToOwner { message: Some(QuerierMessage::Result(result)) })) if result.query_id == query_id => break Some(result),
                    Some(Ok(QuerierToOwner { message: Some(QuerierMessage::Goodbye(_)) })) => said_goodbye = true,
                    Some(Ok(_)) => {}
                    None | Some(Err(_)) => break None,
                },
                _ = reply.closed(), if !cancel_sent => {
                    // The client went away: tell the querier to stop, then wait
                    // for the worker to be free again.
                    cancel_sent = true;
                    if outbound.send(task_message(OwnerMessage::Cancel(CancelTask { query_id }))).await.is_err() {
                        return;
                    }
                }
            }
        };
        match result {
            Some(result) => {
                let _ = reply.send(TaskOutcome::Answered(result));
            }
            None => {
                let _ = reply.send(TaskOutcome::QuerierLost);
                return;
            }
        }
        if said_goodbye {
            return;
        }
    }
}

struct DecrementOnDrop<'a>(&'a prometheus::IntGauge);

impl Drop for DecrementOnDrop<'_> {
    fn drop(&mut self) {
        self.0.dec();
    }
}
