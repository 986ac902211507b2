//! Step alignment (opt-in): a range query's start and end are rounded down
//! to its step, so that queries moving with time share cache entries. It
//! changes answers, which is why it is off by default.

use sluice_proto::QueryKind;

use super::{AnswerFuture, Next, Stage};
use crate::request::Request;

/// Rounds range queries to their step; other requests pass untouched.
pub(crate) struct AlignStage {
    next: Next,
}

impl AlignStage {
    pub(crate) fn new(next: Next) -> AlignStage {
        AlignStage { next }
    }
}

impl Stage for AlignStage {
    fn name(&self) -> &'static str {
        "align"
    }

    fn next_stage(&self) -> Option<&Next> {
        Some(&self.next)
    }

    fn handle(&self, mut request: Request) -> AnswerFuture<'_> {
        if let QueryKind::Range(query) = &request.kind {
            request.kind = QueryKind::Range(sluice_plan::align(query));
        }
        self.next.handle(request)
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use sluice_proto::ApiResponse;

    use super::*;
    use crate::stages::testing::{FakeNext, range_request};

    #[tokio::test]
    async fn range_queries_reach_the_next_stage_on_their_step() {
        let next = FakeNext::answering(|_| ApiResponse::default());
        let stage = AlignStage::new(next.clone());
        stage
            .handle(range_request("up", 61_000, 3_599_000, 60_000))
            .await;
        let seen = next.seen();
        let aligned = seen[0].range().expect("a range query");
        assert_eq!((aligned.start_ms, aligned.end_ms), (60_000, 3_540_000));
    }

    #[tokio::test]
    async fn other_requests_pass_untouched() {
        let next = FakeNext::answering(|_| ApiResponse::default());
        let stage = AlignStage::new(next.clone());
        let instant = sluice_proto::InstantQuery {
            query: "up".into(),
            time_ms: 61_001,
            ..Default::default()
        };
        let request = Request::new(
            Arc::from("tenant"),
            QueryKind::Instant(instant.clone()),
            tokio::time::Instant::now(),
        );
        stage.handle(request).await;
        assert_eq!(next.seen()[0].kind, QueryKind::Instant(instant));
    }
}
