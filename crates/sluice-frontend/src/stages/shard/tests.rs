use std::sync::Arc;

use sluice_engine::{Engine, Labels, MemoryStorage, QueryOptions};
use sluice_proto::{QueryData, ResponseData};

use super::*;
use crate::stages::testing::{FakeNext, range_request};

const HOUR_MS: i64 = 3_600_000;

/// 30 series of `requests_total` over three jobs, a sample every 15 s.
fn storage() -> Arc<MemoryStorage> {
    let storage = MemoryStorage::new();
    for index in 0..30_i64 {
        let labels = Labels::from_pairs([
            ("__name__", "requests_total"),
            ("job", ["api", "db", "web"][(index % 3) as usize]),
            ("instance", &format!("i{index}")),
        ]);
        let samples: Vec<(i64, f64)> = (0..4 * 240)
            .map(|step| (step * 15_000, (step * (index + 1)) as f64 * 0.25))
            .collect();
        storage.append(&labels, &samples);
    }
    Arc::new(storage)
}

/// What a querier with the embedded engine answers over `storage`.
fn engine_answer(storage: &MemoryStorage, request: &Request) -> ApiResponse {
    let options = QueryOptions::default();
    let outcome = match &request.kind {
        QueryKind::Range(query) => Engine::new().range(
            storage,
            &query.query,
            query.start_ms,
            query.end_ms,
            query.step_ms,
            &options,
        ),
        QueryKind::Instant(query) => {
            Engine::new().instant(storage, &query.query, query.time_ms, &options)
        }
        QueryKind::Metadata(_) | QueryKind::Forwarded(_) => panic!("a query"),
    };
    match outcome {
        Ok(output) => ApiResponse::success(ResponseData::Query(sluice_plan::shard::query_data(
            output.value,
        ))),
        Err(error) => sluice_plan::shard::engine_error(&error),
    }
}

fn stage(next: Arc<FakeNext>, max_sharded_queries: usize) -> (ShardStage, prometheus::Registry) {
    let registry = prometheus::Registry::new();
    let limits = ShardLimits {
        total_shards: 16,
        max_sharded_queries,
        parallelism: 4,
    };
    let metrics = FrontendMetrics::new(&registry);
    (ShardStage::new(next, limits, metrics), registry)
}

fn engine_next() -> (Arc<FakeNext>, Arc<MemoryStorage>) {
    let storage = storage();
    let answering = Arc::clone(&storage);
    let next = FakeNext::answering(move |request| engine_answer(&answering, request));
    (next, storage)
}

fn series_of(response: &ApiResponse) -> Vec<sluice_proto::Series> {
    match &response.data {
        Some(ResponseData::Query(QueryData { series, .. })) => series.clone(),
        other => panic!("a query answer, not {other:?}"),
    }
}

fn assert_close(whole: &ApiResponse, sharded: &ApiResponse) {
    let (whole, sharded) = (series_of(whole), series_of(sharded));
    assert_eq!(whole.len(), sharded.len());
    for (one, other) in whole.iter().zip(&sharded) {
        assert_eq!(one.labels, other.labels);
        assert_eq!(one.timestamps_ms, other.timestamps_ms);
        for (a, b) in one.values.iter().zip(&other.values) {
            assert!((a - b).abs() <= 1e-9 * a.abs().max(b.abs()), "{a} vs {b}");
        }
    }
}

#[tokio::test]
async fn a_batch_of_pieces_runs_as_legs_and_comes_back_per_piece() {
    let (next, storage) = engine_next();
    let (stage, _registry) = stage(next.clone(), 128);
    let query = "sum by (job) (rate(requests_total[5m]))";
    let mut request = range_request(query, 0, 3 * HOUR_MS, 60_000);
    let pieces: Vec<RangeQuery> = (0..3)
        .map(|hour| RangeQuery {
            query: query.to_owned(),
            start_ms: hour * HOUR_MS,
            end_ms: (hour + 1) * HOUR_MS - 60_000,
            step_ms: 60_000,
            ..RangeQuery::default()
        })
        .collect();
    request.pieces = Some(pieces.clone());
    let answer = stage.handle(request.clone()).await;
    // 128 legs over 3 pieces leaves 42 a piece: the 16 configured shards.
    assert_eq!((answer.stats.shards, answer.stats.shard_legs), (16, 48));
    let seen = next.seen();
    assert_eq!(seen.len(), 1, "one batch");
    let legs = seen[0].pieces.as_ref().expect("a batch");
    assert_eq!(legs.len(), 48);
    assert!(legs[15].query.contains("__query_shard__=\"16_of_16\""));
    let Outcome::Pieces(answers) = answer.outcome else {
        panic!("pieces back");
    };
    assert_eq!(answers.failed, None);
    for (piece, sharded) in pieces.iter().zip(&answers.answers) {
        let whole = engine_answer(
            &storage,
            &request.with_kind(QueryKind::Range(piece.clone())),
        );
        assert_close(&whole, sharded);
    }
}

#[tokio::test]
async fn an_unsplit_range_query_is_answered_whole() {
    let (next, storage) = engine_next();
    let (stage, registry) = stage(next.clone(), 128);
    let request = range_request("avg(requests_total)", 0, HOUR_MS, 30_000);
    let answer = stage.handle(request.clone()).await;
    assert_eq!((answer.stats.shards, answer.stats.shard_legs), (16, 32));
    assert_close(&engine_answer(&storage, &request), answer.response());
    let text = prometheus::TextEncoder::new()
        .encode_to_string(&registry.gather())
        .expect("metrics encode");
    assert!(
        text.contains("sluice_frontend_sharded_queries_total 32"),
        "{text}"
    );
}

#[tokio::test]
async fn instant_queries_shard_and_the_budget_lowers_the_shard_count() {
    let (next, storage) = engine_next();
    let (stage, _registry) = stage(next.clone(), 10);
    let query = InstantQuery {
        query: "count by (job) (requests_total) > 5".into(),
        time_ms: HOUR_MS,
        ..InstantQuery::default()
    };
    let request = range_request("unused", 0, 0, 1).with_kind(QueryKind::Instant(query));
    let answer = stage.handle(request.clone()).await;
    assert_eq!((answer.stats.shards, answer.stats.shard_legs), (10, 10));
    assert_eq!(next.seen().len(), 10);
    let mut whole = series_of(&engine_answer(&storage, &request));
    let mut sharded = series_of(answer.response());
    whole.sort_by(|a, b| sluice_plan::compare_labels(&a.labels, &b.labels));
    sharded.sort_by(|a, b| sluice_plan::compare_labels(&a.labels, &b.labels));
    assert_eq!(whole, sharded);
}

#[tokio::test]
async fn what_cannot_be_sharded_passes_untouched() {
    let (next, _storage) = engine_next();
    let (stage, _registry) = stage(next.clone(), 128);
    let mut request = range_request("absent(requests_total)", 0, HOUR_MS, 60_000);
    let piece = request.range().cloned().expect("a range");
    request.pieces = Some(vec![piece.clone(), piece]);
    let answer = stage.handle(request).await;
    assert_eq!(answer.stats.shards, 0);
    let seen = next.seen();
    assert_eq!(seen[0].pieces.as_ref().map(Vec::len), Some(2));
    assert_eq!(
        seen[0].pieces.as_ref().expect("pieces")[0].query,
        "absent(requests_total)"
    );
    // Too many pieces for 2 shards each: unsharded too.
    let mut request = range_request("sum(requests_total)", 0, HOUR_MS, 60_000);
    let piece = request.range().cloned().expect("a range");
    request.pieces = Some(vec![piece; 65]);
    stage.handle(request).await;
    assert_eq!(next.seen()[1].pieces.as_ref().map(Vec::len), Some(65));
}

#[tokio::test]
async fn a_failed_leg_fails_its_piece() {
    let next = FakeNext::answering(|request| {
        let query = &request.range().expect("a range").query;
        if query.contains("3_of_16") && query.contains("other") {
            ApiResponse::error(ErrorType::Execution, "leg failed")
        } else {
            ApiResponse::success(ResponseData::Query(QueryData::default()))
        }
    });
    let (stage, _registry) = stage(next, 128);
    let mut request = range_request("sum(requests_total)", 0, HOUR_MS, 60_000);
    let piece = request.range().cloned().expect("a range");
    let other = RangeQuery {
        query: "sum(other)".into(),
        ..piece.clone()
    };
    request.pieces = Some(vec![piece, other]);
    let answer = stage.handle(request).await;
    let Outcome::Pieces(answers) = answer.outcome else {
        panic!("pieces back");
    };
    assert_eq!(answers.failed, Some(1));
    assert_eq!(answers.answers[1].error, "leg failed");
    assert!(!answers.answers[0].is_error());
}
