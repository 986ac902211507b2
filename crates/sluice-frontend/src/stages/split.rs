//! Splitting by interval: a long range query becomes pieces of one interval
//! each (a day by default, boundaries at UTC midnight) that run in parallel
//! and are cached apart. The pieces travel down as one batch; whatever
//! comes back unmerged is concatenated by time here.

use std::time::Duration;

use sluice_plan::Plan;

use super::{AnswerFuture, Next, Stage};
use crate::request::{Outcome, Request};

/// Splits range queries; other requests pass untouched.
pub(crate) struct SplitStage {
    next: Next,
    interval_ms: i64,
}

impl SplitStage {
    pub(crate) fn new(next: Next, interval: Duration) -> SplitStage {
        SplitStage {
            next,
            interval_ms: interval.as_millis() as i64,
        }
    }
}

impl Stage for SplitStage {
    fn name(&self) -> &'static str {
        "split"
    }

    fn next_stage(&self) -> Option<&Next> {
        Some(&self.next)
    }

    fn handle(&self, mut request: Request) -> AnswerFuture<'_> {
        let Some(query) = request.range() else {
            return self.next.handle(request);
        };
        let pieces = sluice_plan::split(query, self.interval_ms);
        request.pieces = Some(pieces.clone());
        Box::pin(async move {
            let mut answer = self.next.handle(request).await;
            answer.stats.pieces = pieces.len();
            answer.outcome = match answer.outcome {
                Outcome::Pieces(piece_answers) => match piece_answers.failed {
                    Some(failed) => Outcome::Whole(
                        piece_answers
                            .answers
                            .into_iter()
                            .nth(failed)
                            .unwrap_or_default(),
                    ),
                    None => {
                        Outcome::Whole(Plan::for_pieces(pieces).into_merged(piece_answers.answers))
                    }
                },
                whole => whole,
            };
            answer
        })
    }
}

#[cfg(test)]
mod tests {
    use sluice_proto::{ApiResponse, QueryData, ResponseData, ResultType, Series};

    use super::*;
    use crate::stages::testing::{FakeNext, range_request};

    const DAY_MS: i64 = 86_400_000;

    /// A matrix with one series holding a point at each piece's start.
    fn one_point_per_piece(request: &Request) -> ApiResponse {
        let piece = request.range().expect("a range piece");
        let mut series = Series::default();
        series.push(piece.start_ms, piece.start_ms as f64);
        ApiResponse::success(ResponseData::Query(QueryData {
            result_type: ResultType::Matrix as i32,
            series: vec![series],
            ..QueryData::default()
        }))
    }

    #[tokio::test]
    async fn a_long_range_goes_down_in_day_pieces_and_comes_back_concatenated() {
        let next = FakeNext::answering(one_point_per_piece);
        let stage = SplitStage::new(next.clone(), Duration::from_millis(DAY_MS as u64));
        let start_ms = DAY_MS + 3_600_000;
        let answer = stage
            .handle(range_request("up", start_ms, 3 * DAY_MS, 60_000))
            .await;
        let seen = next.seen();
        let pieces = seen[0].pieces.as_ref().expect("split into a batch");
        assert_eq!(pieces.len(), 3, "two days from 01:00 are three pieces");
        assert_eq!(answer.stats.pieces, 3);
        let response = answer.into_response();
        let Some(ResponseData::Query(data)) = &response.data else {
            panic!("{response:?}");
        };
        let starts: Vec<i64> = pieces.iter().map(|piece| piece.start_ms).collect();
        assert_eq!(data.series[0].timestamps_ms, starts);
    }

    #[tokio::test]
    async fn a_failed_piece_is_the_answer() {
        let next = FakeNext::answering(|request| {
            let piece = request.range().expect("a range piece");
            if piece.start_ms >= 2 * DAY_MS {
                ApiResponse::error(sluice_proto::ErrorType::Execution, "boom")
            } else {
                one_point_per_piece(request)
            }
        });
        let stage = SplitStage::new(next, Duration::from_millis(DAY_MS as u64));
        let answer = stage
            .handle(range_request("up", DAY_MS, 3 * DAY_MS, 60_000))
            .await;
        let response = answer.into_response();
        assert!(response.is_error(), "{response:?}");
    }
}
