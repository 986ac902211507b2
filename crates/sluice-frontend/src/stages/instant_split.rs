//! Instant split (opt-in): an instant query whose range selector is long,
//! `sum(sum_over_time(x[7d]))`, runs as one sub-query per interval of its
//! window, in parallel, and their answers are merged, wherever that is
//! exact (see [`sluice_plan::split_instant_query`]); any other query, and
//! any answer the merge cannot take, runs whole.

use std::time::Duration;

use futures_util::StreamExt;
use sluice_plan::{InstantSplit, RangeBoundaries};
use sluice_proto::{InstantQuery, QueryKind};

use super::{AnswerFuture, Next, Stage};
use crate::request::{Answer, QueryStats, Request};

/// Splits instant queries over long windows; other requests pass untouched.
pub(crate) struct InstantSplitStage {
    next: Next,
    interval_ms: i64,
    /// Where the queriers' range selectors begin their windows.
    boundaries: RangeBoundaries,
    /// Parts of one query run at once, unless its tenant says otherwise.
    parallelism: usize,
}

impl Stage for InstantSplitStage {
    fn name(&self) -> &'static str {
        "instant split"
    }

    fn next_stage(&self) -> Option<&Next> {
        Some(&self.next)
    }

    fn handle(&self, request: Request) -> AnswerFuture<'_> {
        let QueryKind::Instant(query) = &request.kind else {
            return self.next.handle(request);
        };
        // `limit` and `stats` are about the whole evaluation: run it whole.
        let split = (query.limit == 0 && query.stats.is_empty())
            .then(|| {
                sluice_plan::split_instant_query(&query.query, self.interval_ms, self.boundaries)
            })
            .flatten();
        match split {
            Some(split) => Box::pin(self.run_split(request, split)),
            None => self.next.handle(request),
        }
    }
}

impl InstantSplitStage {
    pub(crate) fn new(
        next: Next,
        interval: Duration,
        boundaries: RangeBoundaries,
        parallelism: usize,
    ) -> InstantSplitStage {
        InstantSplitStage {
            next,
            interval_ms: interval.as_millis() as i64,
            boundaries,
            parallelism: parallelism.max(1),
        }
    }

    /// Runs `split`'s parts and merges them, or the whole query when their
    /// answers cannot be merged.
    async fn run_split(&self, request: Request, split: InstantSplit) -> Answer {
        let QueryKind::Instant(query) = &request.kind else {
            unreachable!("only instant queries are split");
        };
        let part_requests: Vec<Request> = split
            .parts
            .iter()
            .map(|part| {
                let part_query = InstantQuery {
                    query: part.clone(),
                    ..query.clone()
                };
                request.with_kind(QueryKind::Instant(part_query))
            })
            .collect();
        let mut stats = QueryStats {
            pieces: part_requests.len(),
            sub_queries: part_requests.len(),
            ..QueryStats::default()
        };
        let parallelism = request.parallelism(self.parallelism);
        let answers: Vec<Answer> = futures_util::stream::iter(part_requests)
            .map(|part| self.next.handle(part))
            .buffered(parallelism)
            .collect()
            .await;
        let responses = answers
            .into_iter()
            .map(|answer| {
                stats.add_execution(&answer.stats);
                answer.into_response()
            })
            .collect();
        match sluice_plan::merge_instant_parts(responses, split.combine) {
            Some(merged) => Answer::whole(merged, stats),
            None => self.next.handle(request).await,
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use sluice_proto::{ApiResponse, QueryData, ResponseData, ResultType, Series};

    use super::*;
    use crate::stages::testing::FakeNext;

    const DAY: Duration = Duration::from_secs(86_400);

    fn instant(query: &str) -> Request {
        let query = InstantQuery {
            query: query.to_owned(),
            time_ms: 10 * DAY.as_millis() as i64,
            ..InstantQuery::default()
        };
        let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
        Request::new(Arc::from("tenant"), QueryKind::Instant(query), deadline)
    }

    /// A vector of one series whose value is the length of the query text,
    /// so that each part answers differently.
    fn vector_answer(request: &Request) -> ApiResponse {
        let QueryKind::Instant(query) = &request.kind else {
            panic!("an instant query");
        };
        let mut series = Series::default();
        series.push(query.time_ms, query.query.len() as f64);
        ApiResponse::success(ResponseData::Query(QueryData {
            result_type: ResultType::Vector as i32,
            series: vec![series],
            ..QueryData::default()
        }))
    }

    fn value(answer: &Answer) -> f64 {
        let Some(ResponseData::Query(data)) = &answer.response().data else {
            panic!("a query answer");
        };
        data.series[0].values[0]
    }

    #[tokio::test]
    async fn a_long_window_runs_as_parts_whose_answers_are_summed() {
        let next = FakeNext::answering(vector_answer);
        let stage = InstantSplitStage::new(next.clone(), DAY, RangeBoundaries::LeftOpen, 4);
        let answer = stage.handle(instant("sum(sum_over_time(x[3d]))")).await;
        let parts: Vec<String> = next
            .seen()
            .iter()
            .map(|part| match &part.kind {
                QueryKind::Instant(query) => query.query.clone(),
                other => panic!("{other:?}"),
            })
            .collect();
        assert_eq!(
            parts,
            [
                "sum(sum_over_time(x[1d]))",
                "sum(sum_over_time(x[1d] offset 1d))",
                "sum(sum_over_time(x[1d] offset 2d))",
            ]
        );
        let lengths: usize = parts.iter().map(String::len).sum();
        assert_eq!(value(&answer), lengths as f64);
        assert_eq!(answer.stats.sub_queries, 3);
    }

    #[tokio::test]
    async fn inexact_queries_and_other_requests_pass_untouched() {
        let next = FakeNext::answering(vector_answer);
        let stage = InstantSplitStage::new(next.clone(), DAY, RangeBoundaries::LeftOpen, 4);
        stage.handle(instant("sum(rate(x[3d]))")).await;
        let mut with_limit = instant("sum_over_time(x[3d])");
        if let QueryKind::Instant(query) = &mut with_limit.kind {
            query.limit = 5;
        }
        stage.handle(with_limit).await;
        let seen = next.seen();
        assert_eq!(seen.len(), 2, "each ran whole");
    }

    #[tokio::test]
    async fn answers_that_cannot_merge_run_whole() {
        let next = FakeNext::answering(|_| {
            ApiResponse::success(ResponseData::Query(QueryData {
                result_type: ResultType::Scalar as i32,
                ..QueryData::default()
            }))
        });
        let stage = InstantSplitStage::new(next.clone(), DAY, RangeBoundaries::LeftOpen, 4);
        stage.handle(instant("sum_over_time(x[3d])")).await;
        assert_eq!(next.seen().len(), 4, "three parts, then the whole");
    }
}
