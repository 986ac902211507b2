//! The query path as a chain of named stages. Each stage is a struct that
//! owns its state and has one entry, [`Stage::handle`]: it takes the
//! request, does its part, calls the next stage (or answers itself) and
//! hands the answer back up. Requests a stage has nothing to do with pass
//! through it untouched.
//!
//! [`build`] assembles the chain from the configuration, in one place; a
//! feature turned off is a stage left out.

pub(crate) mod align;
pub(crate) mod answers;
pub(crate) mod collapse;
pub(crate) mod dispatch;
pub(crate) mod instant_split;
pub(crate) mod results_cache;
pub(crate) mod shard;
pub(crate) mod split;

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

use crate::FrontendConfig;
use crate::clock::SharedClock;
use crate::metrics::FrontendMetrics;
use crate::request::{Answer, Request};

/// What [`Stage::handle`] returns: boxed, so stages chain behind `dyn`.
pub(crate) type AnswerFuture<'a> = Pin<Box<dyn Future<Output = Answer> + Send + 'a>>;

/// One step of the query path.
pub(crate) trait Stage: Send + Sync {
    /// Takes `request`, does this stage's part and hands back the answer.
    fn handle(&self, request: Request) -> AnswerFuture<'_>;
    /// The stage's name, as the chain is described.
    fn name(&self) -> &'static str;
    /// The stage this one hands requests to; none for the last.
    fn next_stage(&self) -> Option<&Next>;
}

/// The names of the stages from `first` on, in order: the chain as built.
pub(crate) fn names(first: &Next) -> Vec<&'static str> {
    let mut names = vec![first.name()];
    let mut stage = first;
    while let Some(next) = stage.next_stage() {
        names.push(next.name());
        stage = next;
    }
    names
}

/// The stage a stage hands its requests to.
pub(crate) type Next = Arc<dyn Stage>;

/// What the stages are built from, besides the configuration.
pub(crate) struct ChainParts {
    pub(crate) metrics: FrontendMetrics,
    pub(crate) clock: SharedClock,
    pub(crate) dispatch: Arc<dispatch::DispatchStage>,
    pub(crate) results_cache: Option<results_cache::ResultsCache>,
    pub(crate) late: Arc<crate::late::LateWrites>,
}

/// The chain, first stage first:
/// answers ▶ align ▶ split ▶ instant split ▶ results cache ▶ shard ▶
/// collapse ▶ dispatch.
/// The shard stage sends legs on as sub-queries; a physical plan of blocks
/// and merges on queriers would take its place.
pub(crate) fn build(config: &FrontendConfig, parts: ChainParts) -> Next {
    let ChainParts {
        metrics,
        clock,
        dispatch,
        results_cache,
        late,
    } = parts;
    let mut next: Next = dispatch;
    next = Arc::new(collapse::CollapseStage::new(
        next,
        metrics.clone(),
        clock.clone(),
        config.max_query_parallelism,
        config.query_timeout,
    ));
    if config.query_sharding_enabled && config.query_sharding_total_shards >= 2 {
        let limits = shard::ShardLimits {
            total_shards: config.query_sharding_total_shards,
            max_sharded_queries: config.query_sharding_max_sharded_queries,
            parallelism: config.max_query_parallelism,
        };
        next = Arc::new(shard::ShardStage::new(next, limits, metrics.clone()));
    }
    let fragments = answers::fragment_memo(config, results_cache.is_some());
    if let Some(results_cache) = results_cache {
        next = Arc::new(results_cache::ResultsCacheStage::new(
            next,
            results_cache,
            fragments.clone(),
            metrics.clone(),
        ));
    }
    if !config.split_instant_queries_by_interval.is_zero() {
        next = Arc::new(instant_split::InstantSplitStage::new(
            next,
            config.split_instant_queries_by_interval,
            config.range_selector_boundaries,
            config.max_query_parallelism,
        ));
    }
    if !config.split_interval.is_zero() {
        next = Arc::new(split::SplitStage::new(next, config.split_interval));
    }
    if config.align_queries_with_step {
        next = Arc::new(align::AlignStage::new(next));
    }
    match answers::AnswersStage::from_config(next.clone(), config, fragments, metrics, clock, late)
    {
        Some(answers) => Arc::new(answers),
        None => next,
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::clock::SystemClock;

    fn chain_of(config: FrontendConfig) -> Vec<&'static str> {
        let registry = prometheus::Registry::new();
        let metrics = FrontendMetrics::new(&registry);
        let clock: SharedClock = Arc::new(SystemClock);
        let queue = sluice_queue::RequestQueue::new(sluice_queue::QueueConfig::default());
        let dispatch = Arc::new(dispatch::DispatchStage::new(
            queue,
            None,
            metrics.clone(),
            clock.clone(),
            &config,
        ));
        let late = Arc::new(crate::late::LateWrites::new(
            config.max_cache_freshness,
            clock.clone(),
        ));
        let results_cache = results_cache::ResultsCache::from_config(
            &config,
            &registry,
            clock.clone(),
            late.clone(),
        )
        .expect("a valid configuration");
        let parts = ChainParts {
            metrics,
            clock,
            dispatch,
            results_cache,
            late,
        };
        names(&build(&config, parts))
    }

    #[test]
    fn the_chain_follows_the_configuration() {
        assert_eq!(
            chain_of(FrontendConfig::default()),
            ["answers", "split", "results cache", "collapse", "dispatch"]
        );
        let everything = FrontendConfig {
            align_queries_with_step: true,
            split_instant_queries_by_interval: Duration::from_secs(3600),
            query_sharding_enabled: true,
            ..FrontendConfig::default()
        };
        assert_eq!(
            chain_of(everything),
            [
                "answers",
                "align",
                "split",
                "instant split",
                "results cache",
                "shard",
                "collapse",
                "dispatch"
            ]
        );
        let bare = FrontendConfig {
            results_cache: None,
            split_interval: Duration::ZERO,
            ..FrontendConfig::default()
        };
        assert_eq!(chain_of(bare), ["collapse", "dispatch"]);
    }
}

#[cfg(test)]
pub(crate) mod testing {
    //! A fake next stage for the stages' unit tests.

    use std::sync::Mutex;

    use sluice_proto::{ApiResponse, QueryKind, RangeQuery};
    use tokio::time::Instant;

    use super::*;
    use crate::request::{Outcome, PieceAnswers, QueryStats};

    /// Records what it was asked and answers with `answer(request)`.
    pub(crate) struct FakeNext {
        pub(crate) seen: Mutex<Vec<Request>>,
        answer: Box<dyn Fn(&Request) -> ApiResponse + Send + Sync>,
    }

    impl FakeNext {
        pub(crate) fn answering(
            answer: impl Fn(&Request) -> ApiResponse + Send + Sync + 'static,
        ) -> Arc<FakeNext> {
            Arc::new(FakeNext {
                seen: Mutex::new(Vec::new()),
                answer: Box::new(answer),
            })
        }

        pub(crate) fn seen(&self) -> Vec<Request> {
            self.seen.lock().unwrap().clone()
        }
    }

    impl Stage for FakeNext {
        fn name(&self) -> &'static str {
            "fake"
        }

        fn next_stage(&self) -> Option<&Next> {
            None
        }

        fn handle(&self, request: Request) -> AnswerFuture<'_> {
            let outcome = match &request.pieces {
                Some(pieces) => {
                    let answers: Vec<ApiResponse> = pieces
                        .iter()
                        .map(|piece| {
                            (self.answer)(&request.with_kind(QueryKind::Range(piece.clone())))
                        })
                        .collect();
                    let failed = answers.iter().position(ApiResponse::is_error);
                    Outcome::Pieces(PieceAnswers { answers, failed })
                }
                None => Outcome::Whole((self.answer)(&request)),
            };
            self.seen.lock().unwrap().push(request);
            Box::pin(async move {
                Answer {
                    outcome,
                    stats: QueryStats::default(),
                    prefixes: None,
                    encoded: None,
                }
            })
        }
    }

    /// A matrix answer to a range request: one series with a point at each
    /// step of its range, valued at its timestamp in seconds.
    pub(crate) fn grid_answer(request: &Request) -> ApiResponse {
        let query = request.range().expect("a range query");
        let mut series = sluice_proto::Series::default();
        for time_ms in sluice_plan::grid_points(query) {
            series.push(time_ms, time_ms as f64 / 1000.0);
        }
        ApiResponse::success(sluice_proto::ResponseData::Query(sluice_proto::QueryData {
            result_type: sluice_proto::ResultType::Matrix as i32,
            series: vec![series],
            ..sluice_proto::QueryData::default()
        }))
    }

    /// When the tests' manual clocks start: 2026-01-01 12:00 UTC.
    pub(crate) const NOW_MS: i64 = 1_767_268_800_000;

    /// A range request for `query` over [`start_ms`, `end_ms`] at `step_ms`.
    pub(crate) fn range_request(query: &str, start_ms: i64, end_ms: i64, step_ms: i64) -> Request {
        Request::new(
            Arc::from("tenant"),
            QueryKind::Range(RangeQuery {
                query: query.to_owned(),
                start_ms,
                end_ms,
                step_ms,
                ..RangeQuery::default()
            }),
            Instant::now() + std::time::Duration::from_secs(60),
        )
    }
}
