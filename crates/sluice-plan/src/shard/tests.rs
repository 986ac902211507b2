use super::*;

fn sharded(query: &str) -> ShardedQuery {
    shard_query(query, 3).unwrap_or_else(|| panic!("{query} should be sharded"))
}

fn unsharded(query: &str) {
    assert!(
        shard_query(query, 3).is_none(),
        "{query} must not be sharded"
    );
}

#[test]
fn summable_aggregations_become_legs_reaggregated_above() {
    let query = sharded("sum by (job) (rate(http_requests_total[5m]))");
    assert_eq!(
        query.legs().collect::<Vec<_>>(),
        [1, 2, 3].map(|shard| format!(
            "sum by (job) (rate(http_requests_total{{__query_shard__=\"{shard}_of_3\"}}[5m]))"
        ))
    );
    assert_eq!(
        query.outer(),
        "sum by (job) ({__sluice_shard_group__=\"0\"})"
    );
    assert_eq!(
        sharded("count by (code) (up)").outer(),
        "sum by (code) ({__sluice_shard_group__=\"0\"})"
    );
    for op in ["min", "max", "group"] {
        let outer = sharded(&format!("{op}(up)")).outer();
        assert_eq!(outer, format!("{op}({{__sluice_shard_group__=\"0\"}})"));
    }
}

#[test]
fn avg_is_a_sum_over_a_count() {
    let query = sharded("avg by (job) (up)");
    assert_eq!(query.leg_count(), 6);
    assert!(
        query
            .legs()
            .take(3)
            .all(|leg| leg.starts_with("sum by (job)"))
    );
    assert!(
        query
            .legs()
            .skip(3)
            .all(|leg| leg.starts_with("count by (job)"))
    );
    assert_eq!(
        query.outer(),
        "(sum by (job) ({__sluice_shard_group__=\"0\"}) / sum by (job) ({__sluice_shard_group__=\"1\"}))"
    );
}

#[test]
fn without_drops_the_leg_labels_too() {
    let outer = sharded("sum without (instance) (up)").outer();
    assert_eq!(
        outer,
        "sum without (instance, __sluice_shard_group__, __sluice_shard_leg__) ({__sluice_shard_group__=\"0\"})"
    );
}

/// Mimir's and Cortex's known sharding bugs: each of these must keep its
/// non-shardable part above the legs, or not shard at all.
#[test]
fn non_shardable_parts_stay_above_the_legs() {
    for (query, groups, outer_has) in [
        ("absent(sum(up))", 1, "absent("),
        ("scalar(sum(up))", 1, "scalar("),
        ("sum(up) or vector(0)", 1, "or vector(0)"),
        ("count by (job) (up) > 0", 1, "> 0"),
        ("sum(sum by (job) (up))", 1, "sum(sum by (job)"),
        (
            "histogram_quantile(0.9, sum by (le) (rate(h_bucket[5m])))",
            1,
            "histogram_quantile(0.9, sum by (le)",
        ),
        ("sum(rate(a[5m])) / sum(rate(b[5m]))", 2, " / "),
        ("topk(5, sum by (job) (up))", 1, "topk(5, "),
        ("sort_desc(sum by (job) (up))", 1, "sort_desc("),
        ("sum(up) * time()", 1, "time()"),
        ("quantile(0.5, max by (job) (up))", 1, "quantile(0.5,"),
    ] {
        let sharded = sharded(query);
        assert_eq!(sharded.groups.len(), groups, "{query}");
        assert!(
            sharded.outer().contains(outer_has),
            "{query}: {}",
            sharded.outer()
        );
    }
}

#[test]
fn offsets_and_at_stay_on_the_legs() {
    let legs: Vec<String> = sharded("sum(rate(up[5m] offset 1h)) + sum(up @ 1000)")
        .legs()
        .map(str::to_owned)
        .collect();
    assert!(legs[0].contains("offset 1h"), "{}", legs[0]);
    assert!(legs[3].contains("@ 1000"), "{}", legs[3]);
}

#[test]
fn queries_that_would_read_series_above_the_legs_run_whole() {
    for query in [
        "absent(up)",
        "scalar(up)",
        "vector(1)",
        "sort(up)",
        "topk(5, up)",
        "limitk(2, up)",
        "stddev(up)",
        "count_values(\"v\", up)",
        "histogram_quantile(0.9, rate(h_bucket[5m]))",
        "sum(a / b)",
        "sum(a) / b",
        "sum(up + vector(1))",
        "sum(up * scalar(other))",
        "sum(minute())",
        "max_over_time(sum(up)[1h:1m])",
        "sum(absent(up))",
        "sum(up{__query_shard__=\"1_of_2\"})",
        "time()",
        "up",
    ] {
        unsharded(query);
    }
    assert!(shard_query("sum(up)", 0).is_none());
    assert_eq!(sharded_aggregations("avg(up) + sum(up)"), 3);
    assert_eq!(sharded_aggregations("up"), 0);
}

#[test]
fn subqueries_and_label_functions_inside_an_aggregation_shard() {
    sharded("sum(max_over_time(rate(up[5m])[1h:1m]))");
    sharded("sum by (dst) (label_replace(up, \"dst\", \"$1\", \"job\", \"(.*)\"))");
    sharded("sum(up > bool 0.5)");
    sharded("sum(2 * -up)");
}

mod equivalence {
    //! Sharded equals unsharded over a model storage: every leg run by the
    //! engine, merged, and compared with the whole query run by the engine.

    use super::*;

    fn storage() -> MemoryStorage {
        let storage = MemoryStorage::new();
        for index in 0..40_i64 {
            let labels = Labels::from_pairs([
                (
                    "__name__",
                    if index % 5 == 0 {
                        "other"
                    } else {
                        "requests_total"
                    },
                ),
                ("job", ["api", "db", "web"][(index % 3) as usize]),
                ("le", ["0.1", "1", "+Inf"][(index % 3) as usize]),
                ("instance", &format!("i{index}")),
            ]);
            let samples: Vec<(i64, f64)> = (0..120)
                .filter(|step| (step + index) % 17 != 0)
                .map(|step| {
                    (
                        step * 15_000,
                        (step * (index + 1)) as f64 * 0.37 + index as f64,
                    )
                })
                .collect();
            storage.append(&labels, &samples);
        }
        storage
    }

    fn run(storage: &MemoryStorage, query: &str, evaluation: Evaluation) -> ApiResponse {
        let options = QueryOptions::default();
        let outcome = match evaluation {
            Evaluation::Instant { time_ms } => {
                Engine::new().instant(storage, query, time_ms, &options)
            }
            Evaluation::Range {
                start_ms,
                end_ms,
                step_ms,
            } => Engine::new().range(storage, query, start_ms, end_ms, step_ms, &options),
        };
        match outcome {
            Ok(output) => {
                let mut response =
                    ApiResponse::success(ResponseData::Query(query_data(output.value)));
                response.warnings = output.warnings;
                response.infos = output.infos;
                response
            }
            Err(error) => engine_error(&error),
        }
    }

    fn close(a: f64, b: f64) -> bool {
        a.to_bits() == b.to_bits()
            || (a.is_nan() && b.is_nan())
            || (a - b).abs() <= 1e-9 * a.abs().max(b.abs())
    }

    fn assert_equivalent(whole: &ApiResponse, merged: &ApiResponse, context: &str) {
        let (Some(ResponseData::Query(whole)), Some(ResponseData::Query(merged))) =
            (&whole.data, &merged.data)
        else {
            panic!("{context}: answers {whole:?} and {merged:?}");
        };
        assert_eq!(whole.result_type, merged.result_type, "{context}");
        assert_eq!(whole.series.len(), merged.series.len(), "{context}");
        // An instant vector's order is the engine's grouping order, which
        // the legs' answers change; only `sort` promises one.
        let (mut whole, mut merged) = (whole.series.clone(), merged.series.clone());
        if !context.starts_with("sort") {
            whole.sort_by(|a, b| crate::compare_labels(&a.labels, &b.labels));
            merged.sort_by(|a, b| crate::compare_labels(&a.labels, &b.labels));
        }
        for (one, other) in whole.iter().zip(&merged) {
            assert_eq!(one.labels, other.labels, "{context}");
            assert_eq!(one.timestamps_ms, other.timestamps_ms, "{context}");
            for (a, b) in one.values.iter().zip(&other.values) {
                assert!(close(*a, *b), "{context}: {a} vs {b}");
            }
        }
    }

    const QUERIES: [&str; 16] = [
        "sum by (job) (rate(requests_total[5m]))",
        "sum(requests_total)",
        "count by (job) (requests_total) > 4",
        "avg by (job) (requests_total)",
        "min without (instance) (requests_total)",
        "max by (le) (requests_total offset 2m)",
        "group by (job) (requests_total)",
        "histogram_quantile(0.9, sum by (le) (rate(requests_total[5m])))",
        "sum(rate(requests_total[5m])) / sum(rate(other[5m]))",
        "topk(2, sum by (job) (requests_total))",
        "sum(requests_total) or vector(0)",
        "sum(nothing_here) or vector(0)",
        "absent(sum(nothing_here))",
        "scalar(sum(requests_total))",
        "sum(sum by (job) (requests_total))",
        "sum(requests_total @ 600)",
    ];

    /// Also through the legs with one shard, `1_of_1`: the rewrite and the
    /// merge alone.
    #[test]
    fn sharded_equals_unsharded_for_1_2_3_and_16_shards() {
        let storage = storage();
        let evaluations = [
            Evaluation::Range {
                start_ms: 0,
                end_ms: 1_800_000,
                step_ms: 30_000,
            },
            Evaluation::Range {
                start_ms: 7_000,
                end_ms: 1_700_000,
                step_ms: 45_000,
            },
            Evaluation::Instant { time_ms: 1_200_000 },
        ];
        for query in QUERIES {
            for shards in [1, 2, 3, 16] {
                let sharded = sharded_or_panic(query, shards);
                for evaluation in evaluations {
                    let whole = run(&storage, query, evaluation);
                    let legs = sharded
                        .legs()
                        .map(|leg| run(&storage, leg, evaluation))
                        .collect();
                    let merged = sharded.merge(query, legs, evaluation, None);
                    let context = format!("{query} in {shards} shards at {evaluation:?}");
                    assert_equivalent(&whole, &merged, &context);
                }
            }
        }
    }

    fn sharded_or_panic(query: &str, shards: u64) -> ShardedQuery {
        shard_query(query, shards).unwrap_or_else(|| panic!("{query} should be sharded"))
    }

    #[test]
    fn legs_warnings_reach_the_answer_once_and_a_failed_leg_is_the_answer() {
        let query = sharded_or_panic("sum(rate(up[5m]))", 2);
        let evaluation = Evaluation::Instant { time_ms: 0 };
        let mut warned = ApiResponse::success(ResponseData::Query(QueryData::default()));
        warned.warnings = vec!["block 01X skipped".into()];
        warned.infos = vec!["PromQL info: metric might not be a counter".into()];
        let legs = vec![warned.clone(), warned];
        let merged = query.merge("sum(rate(up[5m]))", legs, evaluation, None);
        assert!(!merged.is_error());
        assert_eq!(merged.warnings, ["block 01X skipped"]);
        assert_eq!(merged.infos, ["PromQL info: metric might not be a counter"]);

        let failed = ApiResponse::error(ErrorType::Timeout, "query timed out");
        let ok = ApiResponse::success(ResponseData::Query(QueryData::default()));
        let merged = query.merge("q", vec![ok, failed.clone()], evaluation, None);
        assert_eq!(merged, failed);
        let merged = query.merge("q", vec![failed], evaluation, None);
        assert_eq!(merged.error_type(), ErrorType::Internal);
    }
}
