//! Property tests for the invariants the frontend relies on: aggregating
//! shard by shard and re-aggregating equals aggregating the whole, and a
//! range query evaluated piece by piece equals evaluating it whole; and for
//! one the storage relies on: series handed over as XOR chunks answer
//! exactly as the same samples handed over decoded (the evaluator decodes
//! chunks as its windows reach them, drops those it has passed, and starts
//! again where a subquery's windows move back). And every step of a range
//! query equals an instant query at that time: range queries evaluate
//! selectors, window functions and aggregations series by series over
//! many steps, instant queries step by step, and both must give the same
//! bits.

use std::collections::BTreeMap;
use std::sync::Arc;

use promql_parser::label::Matcher;
use proptest::prelude::*;
use sluice_block::{Chunk, Encoding, Origin, XorEncoder};
use sluice_engine::{
    Engine, EngineError, FloatChunk, FloatChunks, Labels, MemoryStorage, QueryOptions, QueryValue,
    SeriesSamples, Shard, Storage, StoredSeries,
};

const STEP_MS: i64 = 15_000;

/// Builds a store from per-series sample lists: `(group, values)` where a
/// `None` value is a gap, less the samples in `deleted` intervals.
fn storage_from(series: &[(u8, Vec<Option<f64>>)], deleted: &[(i64, i64)]) -> MemoryStorage {
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
            .filter(|(t, _)| !deleted.iter().any(|(min, max)| min <= t && t <= max))
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

/// Values with the awkward ones among them: NaN, infinities and
/// staleness markers.
fn awkward_series_strategy() -> impl Strategy<Value = Vec<(u8, Vec<Option<f64>>)>> {
    let value = prop_oneof![
        20 => -1000.0f64..1000.0,
        1 => Just(f64::NAN),
        1 => Just(f64::INFINITY),
        1 => Just(f64::from_bits(sluice_engine::storage::STALE_NAN_BITS)),
    ];
    prop::collection::vec(
        (
            0u8..3,
            prop::collection::vec(prop::option::weighted(0.85, value), 1..40),
        ),
        1..12,
    )
}

/// Each step of a range query's answer as the instant vector it stands
/// for: labels and value bits, by time.
fn steps_of(value: QueryValue) -> BTreeMap<i64, BTreeMap<Labels, u64>> {
    let QueryValue::Matrix(series) = value else {
        panic!("range query returns a matrix")
    };
    let mut steps: BTreeMap<i64, BTreeMap<Labels, u64>> = BTreeMap::new();
    for one in series {
        for (t, v) in one.points {
            steps
                .entry(t)
                .or_default()
                .insert(one.labels.clone(), v.to_bits());
        }
    }
    steps
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

/// A store handing out `inner`'s series re-encoded as chunks of
/// `chunk_len` samples, with `deleted` applied as tombstones.
struct ChunkedStorage {
    inner: MemoryStorage,
    chunk_len: usize,
    deleted: Vec<(i64, i64)>,
}

fn encode(samples: &[(i64, f64)]) -> FloatChunk {
    let mut encoder = XorEncoder::new();
    for (t, v) in samples {
        encoder.append(*t, *v).expect("appends");
    }
    let origin = Origin {
        file: Arc::from("test"),
        offset: 0,
    };
    FloatChunk {
        min_time: samples[0].0,
        max_time: samples[samples.len() - 1].0,
        chunk: Chunk::new(Encoding::Xor, encoder.into_bytes().into(), origin),
    }
}

impl Storage for ChunkedStorage {
    fn select(
        &self,
        matchers: &[Matcher],
        start_ms: i64,
        end_ms: i64,
        shard: Option<Shard>,
    ) -> Result<Vec<StoredSeries>, EngineError> {
        let mut out = self.inner.select(matchers, start_ms, end_ms, shard)?;
        for series in &mut out {
            let SeriesSamples::Decoded(samples) = &series.samples else {
                panic!("memory storage hands out decoded samples");
            };
            let chunks = samples.chunks(self.chunk_len).map(encode).collect();
            series.samples = SeriesSamples::Chunks(Arc::new(FloatChunks {
                chunks,
                deleted: self.deleted.clone(),
            }));
        }
        Ok(out)
    }
}

const CHUNKED_QUERIES: &[&str] = &[
    "metric",
    "rate(metric[1m])",
    "sum by (group) (rate(metric[45s]))",
    "max_over_time(metric[2m])",
    "metric offset 1m",
    "metric @ 150",
    "max_over_time(sum by (group) (rate(metric[1m]))[2m:15s])",
    "last_over_time(metric[1m:20s] offset 30s)",
    "metric - metric offset 45s",
    "count_over_time(metric[5m])",
];

fn answers(storage: &dyn Storage, end: i64) -> Vec<Result<String, EngineError>> {
    let engine = Engine::new();
    let options = QueryOptions::default();
    let mut out = Vec::new();
    for query in CHUNKED_QUERIES {
        let range = engine.range(storage, query, 0, end, STEP_MS, &options);
        out.push(range.map(|output| format!("{:?}", bits(output.value))));
        for at in [end / 3, end] {
            let instant = engine.instant(storage, query, at, &options);
            out.push(instant.map(|output| format!("{:?}", bits(output.value))));
        }
    }
    out
}

/// The value with every float as its bits, so NaNs compare too.
fn bits(value: QueryValue) -> Vec<(Labels, Vec<(i64, u64)>)> {
    match value {
        QueryValue::Matrix(series) => series
            .into_iter()
            .map(|one| {
                let points = one.points.iter().map(|(t, v)| (*t, v.to_bits())).collect();
                (one.labels, points)
            })
            .collect(),
        QueryValue::Vector(samples) => samples
            .into_iter()
            .map(|sample| {
                (
                    sample.labels,
                    vec![(sample.timestamp_ms, sample.value.to_bits())],
                )
            })
            .collect(),
        other => vec![(
            Labels::empty(),
            vec![(0, format!("{other:?}").len() as u64)],
        )],
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(48))]

    #[test]
    fn sharded_aggregation_equals_whole(
        series in series_strategy(),
        shard_count in 1u64..5,
        by_group in any::<bool>(),
    ) {
        let storage = storage_from(&series, &[]);
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
        let storage = storage_from(&series, &[]);
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

    #[test]
    fn chunked_series_answer_as_decoded_ones(
        series in series_strategy(),
        chunk_len in 1usize..9,
        deleted in prop::collection::vec((0i64..40, 0i64..8), 0..3),
    ) {
        let deleted: Vec<(i64, i64)> = deleted
            .into_iter()
            .map(|(start, length)| (start * STEP_MS, (start + length) * STEP_MS))
            .collect();
        let end = 40 * STEP_MS;
        let decoded = storage_from(&series, &deleted);
        let chunked = ChunkedStorage {
            inner: storage_from(&series, &[]),
            chunk_len,
            deleted: {
                let mut sorted = deleted.clone();
                sorted.sort_unstable();
                sorted
            },
        };
        prop_assert_eq!(answers(&chunked, end), answers(&decoded, end));
    }

    #[test]
    fn range_steps_equal_instant_queries(
        series in awkward_series_strategy(),
        query_index in 0usize..14,
        step_index in 0usize..3,
    ) {
        let storage = storage_from(&series, &[]);
        let queries = [
            "metric",
            "timestamp(metric)",
            "rate(metric[1m])",
            "last_over_time(metric[45s] offset 15s)",
            "sum by (group) (rate(metric[1m]))",
            "avg without (instance) (metric)",
            "count(metric offset 30s)",
            "min by (group) (changes(metric[2m]))",
            "max(irate(metric[1m]))",
            "stddev by (group) (delta(metric[90s]))",
            "group by (group) (metric)",
            "sum(sum by (group) (metric))",
            "topk(2, sum by (instance) (increase(metric[1m])))",
            "max_over_time(sum by (group) (rate(metric[1m]))[2m:15s])",
        ];
        let query = queries[query_index];
        let step = [15_000, 30_000, 45_000][step_index];
        let (start, end) = (STEP_MS, 38 * STEP_MS);
        let engine = Engine::new();
        let options = QueryOptions::default();
        let range = engine.range(&storage, query, start, end, step, &options).expect("evaluates");
        let steps = steps_of(range.value);
        let mut t = start;
        while t <= end {
            let instant = engine.instant(&storage, query, t, &options).expect("evaluates");
            let QueryValue::Vector(samples) = instant.value else {
                panic!("instant query returns a vector")
            };
            let expected: BTreeMap<Labels, u64> = samples
                .into_iter()
                .map(|sample| (sample.labels, sample.value.to_bits()))
                .collect();
            let got = steps.get(&t).cloned().unwrap_or_default();
            prop_assert_eq!(got, expected, "{} at {}", query, t);
            t += step;
        }
    }
}
