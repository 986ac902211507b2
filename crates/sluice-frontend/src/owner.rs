//! The frontend as a queue owner: querier workers connect here (over gRPC or
//! in-process) and drain the frontend's own queue.

use std::sync::Arc;
use std::time::Duration;

use sluice_proto::{Header, OwnerToQuerier, QueryRequest, QueryTask};
use sluice_queue::worker_stream::{Assignment, Outcome};
use tokio::sync::oneshot;
use tokio::time::Instant;

use crate::Inner;

/// A sub-query waiting in the frontend's own queue, with the way back to the
/// client request waiting for it.
pub(crate) struct PendingTask {
    pub(crate) query_id: u64,
    pub(crate) request: Option<QueryRequest>,
    pub(crate) forwarded_headers: Option<Arc<[Header]>>,
    pub(crate) deadline: Instant,
    pub(crate) reply: oneshot::Sender<Outcome>,
}

impl Assignment for PendingTask {
    fn query_id(&self) -> u64 {
        self.query_id
    }

    fn deadline(&self) -> Instant {
        self.deadline
    }

    fn is_abandoned(&self) -> bool {
        self.reply.is_closed()
    }

    async fn abandoned(&mut self) {
        self.reply.closed().await;
    }

    fn task(&mut self, tenant: &str, queued_for: Duration, now: Instant) -> QueryTask {
        QueryTask {
            query_id: self.query_id,
            tenant: tenant.to_owned(),
            request: self.request.take(),
            frontend_address: String::new(),
            queued_ns: queued_for.as_nanos() as i64,
            deadline_remaining_ms: self.deadline.saturating_duration_since(now).as_millis() as i64,
            forwarded_headers: self
                .forwarded_headers
                .as_deref()
                .map(<[Header]>::to_vec)
                .unwrap_or_default(),
            // Answered on the stream it was handed out on: no token needed.
            result_token: Vec::new(),
        }
    }

    fn finish(self, outcome: Outcome) {
        let _ = self.reply.send(outcome);
    }
}

/// The gRPC face of the frontend's queue.
pub struct OwnerService {
    pub(crate) inner: Arc<Inner>,
}

#[tonic::async_trait]
impl sluice_proto::queue_owner::queue_owner_server::QueueOwner for OwnerService {
    type ProcessStream =
        tokio_stream::wrappers::ReceiverStream<Result<OwnerToQuerier, tonic::Status>>;

    async fn process(
        &self,
        request: tonic::Request<tonic::Streaming<sluice_proto::QuerierToOwner>>,
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
