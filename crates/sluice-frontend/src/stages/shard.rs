//! Query sharding (`-query-frontend.parallelize-shardable-queries`): each
//! piece of a query the results cache does not cover, and each instant
//! query, whose aggregations can be sharded (see [`sluice_plan::shard`])
//! runs as legs that each read one shard of the series, sent down the
//! rest of the chain as sub-queries of their own; their answers are
//! merged here by evaluating the part of the query above them.
//!
//! Only for queriers that honour `__query_shard__` matchers: sluice's own
//! engine, or a Mimir downstream. A plain Prometheus would take the matcher
//! for a label and answer nothing.
//!
//! The shard count is `-query-frontend.query-sharding-total-shards`,
//! lowered so that no query sends more than
//! `-query-frontend.query-sharding-max-sharded-queries` legs over all its
//! pieces; under 2 shards a query runs unsharded.

use futures_util::StreamExt;
use sluice_plan::{Evaluation, ShardedQuery};
use sluice_proto::{ApiResponse, ErrorType, InstantQuery, QueryKind, RangeQuery};

use super::{AnswerFuture, Next, Stage};
use crate::metrics::FrontendMetrics;
use crate::request::{Answer, Outcome, PieceAnswers, QueryStats, Request};

/// What sharding is configured with.
#[derive(Clone, Copy, Debug)]
pub(crate) struct ShardLimits {
    /// Shards per sharded aggregation.
    pub(crate) total_shards: usize,
    /// Legs one query may send over all its pieces.
    pub(crate) max_sharded_queries: usize,
    /// Legs of an instant query run at once, unless its tenant says otherwise.
    pub(crate) parallelism: usize,
}

/// Shards what it can; other requests pass untouched.
pub(crate) struct ShardStage {
    next: Next,
    limits: ShardLimits,
    metrics: FrontendMetrics,
}

impl Stage for ShardStage {
    fn name(&self) -> &'static str {
        "shard"
    }

    fn next_stage(&self) -> Option<&Next> {
        Some(&self.next)
    }

    fn handle(&self, request: Request) -> AnswerFuture<'_> {
        match &request.kind {
            // `limit` and `stats` are about the whole evaluation: run it whole.
            QueryKind::Range(query) if query.limit == 0 && query.stats.is_empty() => {
                Box::pin(self.range(request))
            }
            QueryKind::Instant(query) if query.limit == 0 && query.stats.is_empty() => {
                Box::pin(self.instant(request))
            }
            _ => self.next.handle(request),
        }
    }
}

/// One piece of a batch: run as it is, or as the legs of a sharded query.
struct PiecePlan {
    piece: RangeQuery,
    sharded: Option<ShardedQuery>,
}

impl ShardStage {
    pub(crate) fn new(next: Next, limits: ShardLimits, metrics: FrontendMetrics) -> ShardStage {
        ShardStage {
            next,
            limits,
            metrics,
        }
    }

    /// `query` sharded for a request of `pieces` pieces, when it can be.
    fn shard(&self, query: &str, pieces: usize) -> Option<ShardedQuery> {
        self.metrics.sharding_attempted.inc();
        let aggregations = sluice_plan::sharded_aggregations(query);
        if aggregations == 0 {
            return None;
        }
        let budget = self.limits.max_sharded_queries / (pieces.max(1) * aggregations);
        let shards = self.limits.total_shards.min(budget);
        if shards < 2 {
            return None;
        }
        let sharded = sluice_plan::shard_query(query, shards as u64)?;
        self.metrics.sharding_succeeded.inc();
        self.metrics
            .sharded_queries
            .inc_by(sharded.leg_count() as u64);
        Some(sharded)
    }

    /// A range query, or a batch of its pieces: the sharded pieces' legs go
    /// down in one batch with the others, so the fan-out below bounds them
    /// all together.
    async fn range(&self, mut request: Request) -> Answer {
        let whole = request.pieces.is_none();
        let pieces = match request.pieces.take() {
            Some(pieces) => pieces,
            None => vec![request.range().expect("a range query").clone()],
        };
        let plans: Vec<PiecePlan> = pieces
            .iter()
            .map(|piece| PiecePlan {
                sharded: self.shard(&piece.query, pieces.len()),
                piece: piece.clone(),
            })
            .collect();
        if plans.iter().all(|plan| plan.sharded.is_none()) {
            request.pieces = (!whole).then_some(pieces);
            return self.next.handle(request).await;
        }
        let mut batch = request.with_kind(request.kind.clone());
        batch.pieces = Some(plans.iter().flat_map(piece_queries).collect());
        let answer = self.next.handle(batch).await;
        let mut stats = QueryStats::default();
        stats.add_execution(&answer.stats);
        note_shards(
            &mut stats,
            plans.iter().filter_map(|plan| plan.sharded.as_ref()),
        );
        let (answers, batch_failed) = match answer.outcome {
            Outcome::Pieces(pieces) => (pieces.answers, pieces.failed),
            Outcome::Whole(response) => (vec![response], None),
        };
        let merged = merge_pieces(&plans, answers, &request).await;
        // The sub-query that failed first, not the ones dropped after it,
        // names the failure.
        let failed = batch_failed
            .and_then(|index| piece_of(&plans, index))
            .or_else(|| merged.iter().position(ApiResponse::is_error));
        if whole {
            let response = merged.into_iter().next().unwrap_or_else(missing_answer);
            return Answer::whole(response, stats);
        }
        Answer {
            outcome: Outcome::Pieces(PieceAnswers {
                answers: merged,
                failed,
            }),
            stats,
            prefixes: None,
            encoded: None,
        }
    }

    /// An instant query: its legs run at once, up to the parallelism.
    async fn instant(&self, request: Request) -> Answer {
        let QueryKind::Instant(query) = &request.kind else {
            return self.next.handle(request).await;
        };
        let Some(sharded) = self.shard(&query.query, 1) else {
            return self.next.handle(request).await;
        };
        let legs: Vec<Request> = sharded
            .legs()
            .map(|leg| {
                request.with_kind(QueryKind::Instant(InstantQuery {
                    query: leg.to_owned(),
                    ..query.clone()
                }))
            })
            .collect();
        let parallelism = request.parallelism(self.limits.parallelism);
        let answers: Vec<Answer> = futures_util::stream::iter(legs)
            .map(|leg| self.next.handle(leg))
            .buffered(parallelism)
            .collect()
            .await;
        let mut stats = QueryStats::default();
        let responses = answers
            .into_iter()
            .map(|answer| {
                stats.add_execution(&answer.stats);
                answer.into_response()
            })
            .collect();
        note_shards(&mut stats, std::iter::once(&sharded));
        let evaluation = Evaluation::Instant {
            time_ms: query.time_ms,
        };
        let text = query.query.clone();
        let response = merge_off_runtime(sharded, text, responses, evaluation, &request).await;
        Answer::whole(response, stats)
    }
}

/// What a piece sends down: itself, or its legs over its range.
fn piece_queries(plan: &PiecePlan) -> Vec<RangeQuery> {
    match &plan.sharded {
        None => vec![plan.piece.clone()],
        Some(sharded) => sharded
            .legs()
            .map(|leg| RangeQuery {
                query: leg.to_owned(),
                ..plan.piece.clone()
            })
            .collect(),
    }
}

/// The piece whose sub-queries hold the batch's `index`th.
fn piece_of(plans: &[PiecePlan], index: usize) -> Option<usize> {
    let mut end = 0;
    plans.iter().position(|plan| {
        end += plan.sharded.as_ref().map_or(1, ShardedQuery::leg_count);
        index < end
    })
}

/// Records in `stats` how many shards the query ran as, and its legs.
fn note_shards<'a>(stats: &mut QueryStats, sharded: impl Iterator<Item = &'a ShardedQuery>) {
    for query in sharded {
        stats.shards = stats.shards.max(query.shards());
        stats.shard_legs += query.leg_count();
    }
}

/// Each piece's answer from the batch's `answers`, in the order of `plans`.
async fn merge_pieces(
    plans: &[PiecePlan],
    answers: Vec<ApiResponse>,
    request: &Request,
) -> Vec<ApiResponse> {
    let mut answers = answers.into_iter();
    let mut merged = Vec::with_capacity(plans.len());
    for plan in plans {
        let Some(sharded) = &plan.sharded else {
            merged.push(answers.next().unwrap_or_else(missing_answer));
            continue;
        };
        let legs: Vec<ApiResponse> = answers.by_ref().take(sharded.leg_count()).collect();
        let evaluation = Evaluation::Range {
            start_ms: plan.piece.start_ms,
            end_ms: plan.piece.end_ms,
            step_ms: plan.piece.step_ms,
        };
        let text = plan.piece.query.clone();
        let response = merge_off_runtime(sharded.clone(), text, legs, evaluation, request).await;
        merged.push(response);
    }
    merged
}

/// Evaluates the part above the legs on the blocking pool: it is the
/// engine's work, and a long range takes milliseconds.
async fn merge_off_runtime(
    sharded: ShardedQuery,
    query: String,
    legs: Vec<ApiResponse>,
    evaluation: Evaluation,
    request: &Request,
) -> ApiResponse {
    let deadline = Some(request.deadline.into_std());
    let merging =
        tokio::task::spawn_blocking(move || sharded.merge(&query, legs, evaluation, deadline));
    merging.await.unwrap_or_else(|error| {
        ApiResponse::error(
            ErrorType::Internal,
            format!("merging shard answers failed: {error}"),
        )
    })
}

fn missing_answer() -> ApiResponse {
    ApiResponse::error(ErrorType::Internal, "a sub-query got no answer")
}

#[cfg(test)]
mod tests;
