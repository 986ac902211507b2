//! Property tests for the invariants the frontend relies on: aggregating
//! shard by shard and re-aggregating equals aggregating the whole, and a
//! range query evaluated piece by piece equals evaluating it whole.

use std::collections::BTreeMap;

use proptest::prelude::*;
use sluice_engine::{Engine, Labels, MemoryStorage, QueryOptions, QueryValue, Shard};

const STEP_MS: i64 = 15_000;

/// Builds a store from per-series sample lists: `(group, values)` where a
/// `None` value is a gap.
fn storage_from(series: &[(u8, Vec<Option<f64>>)]) -> MemoryStorage {
    let storage = MemoryStorage::new();
    for (index, (group, values)) in series.iter().enumerate() {
        let labels = Labels::from_pairs([
            ("__name__", "metric".to_string()),
            ("group", format!("g{group}")),
            ("instance", format!("i{index}")),
        ]);
        let samples: Vec<(i64, f64)> = values
            .iter()
            .enumerate()
            .filter_map(|(i, v)| v.map(|v| (i as i64 * STEP_MS, v)))
            .collect();
        storage.append(&labels, &samples);
    }
    storage
}

fn series_strategy() -> impl Strategy<Value = Vec<(u8, Vec<Option<f64>>)>> {
    prop::collection::vec(
        (
            0u8..3,
            prop::collection::vec(prop::option::weighted(0.85, -1000.0f64..1000.0), 1..40),
        ),
        1..24,
    )
}

type Points = BTreeMap<Labels, BTreeMap<i64, f64>>;

/// How partial results of one aggregation combine.
type Combine = fn(f64, f64) -> f64;

fn range_points(
    storage: &MemoryStorage,
    query: &str,
    start: i64,
    end: i64,
    step: i64,
    shard: Option<Shard>,
) -> Points {
    let options = QueryOptions {
        shard,
        ..QueryOptions::default()
    };
    let output = Engine::new()
        .range(storage, query, start, end, step, &options)
        .expect("query evaluates");
    let QueryValue::Matrix(series) = output.value else {
        panic!("range query returns a matrix")
    };
    series
        .into_iter()
        .map(|s| (s.labels, s.points.into_iter().collect()))
        .collect()
}

fn close(a: f64, b: f64) -> bool {
    (a.is_nan() && b.is_nan()) || a == b || (a - b).abs() <= 1e-9 * a.abs().max(b.abs()).max(1.0)
}

fn assert_same(whole: &Points, merged: &Points) -> Result<(), TestCaseError> {
    prop_assert_eq!(
        whole.keys().collect::<Vec<_>>(),
        merged.keys().collect::<Vec<_>>()
    );
    for (labels, points) in whole {
        let other = &merged[labels];
        prop_assert_eq!(
            points.keys().collect::<Vec<_>>(),
            other.keys().collect::<Vec<_>>()
        );
        for (t, v) in points {
            prop_assert!(
                close(*v, other[t]),
                "{} at {}: whole {} vs merged {}",
                labels,
                t,
                v,
                other[t]
            );
        }
    }
    Ok(())
}

/// Merges per-shard partial results of one aggregation into the whole.
fn merge_shards(parts: &[Points], combine: Combine) -> Points {
    let mut merged: Points = BTreeMap::new();
    for part in parts {
        for (labels, points) in part {
            let entry = merged.entry(labels.clone()).or_default();
            for (t, v) in points {
                entry
                    .entry(*t)
                    .and_modify(|existing| *existing = combine(*existing, *v))
                    .or_insert(*v);
            }
        }
    }
    merged
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(48))]

    #[test]
    fn sharded_aggregation_equals_whole(
        series in series_strategy(),
        shard_count in 1u64..5,
        by_group in any::<bool>(),
    ) {
        let storage = storage_from(&series);
        let grouping = if by_group { " by (group)" } else { "" };
        let (start, end, step) = (0, 40 * STEP_MS, 30_000);
        let shards: Vec<Shard> = (0..shard_count).map(|index| Shard { index, count: shard_count }).collect();
        let cases: [(&str, Combine); 5] = [
            ("sum", |a, b| a + b),
            ("count", |a, b| a + b),
            ("min", f64::min),
            ("max", f64::max),
            ("group", |_, _| 1.0),
        ];
        for (op, combine) in cases {
            let query = format!("{op}{grouping} (metric)");
            let whole = range_points(&storage, &query, start, end, step, None);
            let parts: Vec<Points> = shards.iter().map(|s| range_points(&storage, &query, start, end, step, Some(*s))).collect();
            assert_same(&whole, &merge_shards(&parts, combine))?;
        }
        // avg re-aggregates as the sum of the shards' sums over the sum of their counts.
        let avg_whole = range_points(&storage, &format!("avg{grouping} (metric)"), start, end, step, None);
        let sums: Vec<Points> = shards.iter().map(|s| range_points(&storage, &format!("sum{grouping} (metric)"), start, end, step, Some(*s))).collect();
        let counts: Vec<Points> = shards.iter().map(|s| range_points(&storage, &format!("count{grouping} (metric)"), start, end, step, Some(*s))).collect();
        let total_sum = merge_shards(&sums, |a, b| a + b);
        let total_count = merge_shards(&counts, |a, b| a + b);
        let mut avg_merged: Points = BTreeMap::new();
        for (labels, points) in &total_sum {
            let entry = avg_merged.entry(labels.clone()).or_default();
            for (t, sum) in points {
                entry.insert(*t, sum / total_count[labels][t]);
            }
        }
        assert_same(&avg_whole, &avg_merged)?;
    }

    #[test]
    fn piecewise_range_equals_whole(
        series in series_strategy(),
        query_index in 0usize..5,
        split_step in 1i64..12,
    ) {
        let storage = storage_from(&series);
        let queries = [
            "metric",
            "rate(metric[1m])",
            "sum by (group) (rate(metric[2m]))",
            "max_over_time(metric[2m:30s])",
            "metric - ignoring(instance) group_left avg by (group) (metric)",
        ];
        let query = queries[query_index];
        let step = 30_000;
        let (start, end) = (0, 13 * step);
        let whole = range_points(&storage, query, start, end, step, None);
        let split = start + split_step * step;
        let first = range_points(&storage, query, start, split - step, step, None);
        let second = range_points(&storage, query, split, end, step, None);
        let mut pieces: Points = first;
        for (labels, points) in second {
            pieces.entry(labels).or_default().extend(points);
        }
        assert_same(&whole, &pieces)?;
    }
}
