//! Property tests of the whole flow, through the public API only: splitting
//! then merging equals the unsplit answer, and any sequence of cached
//! requests answers exactly what the backend would.

use std::collections::HashMap;

use proptest::prelude::*;
use sluice_plan::{
    CacheOptions, Plan, align, cache_key, decode_entry, encode_entry, grid_points, plan_with_cache,
    split, updated_entry,
};
use sluice_proto::{
    ApiResponse, HistogramBucket, HistogramSample, Label, QueryData, RangeQuery, ResponseData,
    ResultType, Series,
};

const MINUTE: i64 = 60_000;
const HOUR: i64 = 60 * MINUTE;
const DAY: i64 = 24 * HOUR;

fn mix(mut x: u64) -> u64 {
    // splitmix64's finaliser: a cheap, well-spread deterministic "random".
    x = x.wrapping_add(0x9e37_79b9_7f4a_7c15);
    x = (x ^ (x >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    x = (x ^ (x >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    x ^ (x >> 31)
}

/// A synthetic backend: a fixed set of series whose samples at any grid
/// point are a pure function of (seed, series, timestamp), except that points
/// newer than `now - provisional_ms` are provisional (differ from their final
/// value), as data still arriving would.
#[derive(Clone, Debug)]
struct Backend {
    seed: u64,
    labels: Vec<Vec<Label>>,
    provisional_ms: i64,
}

impl Backend {
    fn answer(&self, query: &RangeQuery, now_ms: i64) -> ApiResponse {
        let mut series: Vec<Series> = Vec::new();
        for (index, labels) in self.labels.iter().enumerate() {
            let mut out = Series {
                labels: labels.clone(),
                ..Series::default()
            };
            for t in grid_points(query) {
                let h = mix(self.seed ^ mix(index as u64) ^ mix(t as u64));
                if h.is_multiple_of(5) {
                    continue; // absent at this point
                }
                let mut value = (h >> 20) as f64 / 7.0;
                if t > now_ms - self.provisional_ms {
                    value = -value - 1.0;
                }
                if index % 3 == 2 {
                    out.histograms.push(HistogramSample {
                        timestamp_ms: t,
                        count: value,
                        sum: value * 2.0,
                        buckets: vec![HistogramBucket {
                            boundaries: 0,
                            lower: 0.0,
                            upper: 1.0,
                            count: value,
                        }],
                    });
                } else {
                    out.push(t, value);
                }
            }
            if !out.timestamps_ms.is_empty() || !out.histograms.is_empty() {
                series.push(out);
            }
        }
        // Prometheus sorts a matrix by labels; comparing (name, value) pairs
        // lexicographically, then by length, is exactly labels.Compare.
        series.sort_by(|a, b| {
            let key = |s: &Series| {
                s.labels
                    .iter()
                    .map(|l| (l.name.clone(), l.value.clone()))
                    .collect::<Vec<_>>()
            };
            key(a).cmp(&key(b))
        });
        ApiResponse::success(ResponseData::Query(QueryData {
            result_type: ResultType::Matrix as i32,
            series,
            ..QueryData::default()
        }))
    }
}

fn label_sets() -> impl Strategy<Value = Vec<Vec<Label>>> {
    let name = prop_oneof![Just("job"), Just("instance"), Just("Zone"), Just("a")];
    let value = prop_oneof![Just("a"), Just("B"), Just("b1"), Just(""), Just("x y")];
    let set = prop::collection::btree_map(name, value, 1..4).prop_map(|map| {
        map.into_iter()
            .filter(|(_, value)| !value.is_empty())
            .map(|(name, value)| Label {
                name: name.into(),
                value: value.into(),
            })
            .collect::<Vec<_>>()
    });
    prop::collection::btree_set(
        set.prop_map(|labels| {
            labels
                .into_iter()
                .map(|l| (l.name, l.value))
                .collect::<Vec<_>>()
        }),
        0..7,
    )
    .prop_map(|sets| {
        sets.into_iter()
            .map(|set| {
                set.into_iter()
                    .map(|(name, value)| Label { name, value })
                    .collect()
            })
            .collect()
    })
}

fn step() -> impl Strategy<Value = i64> {
    prop_oneof![
        Just(15_000i64),
        Just(MINUTE),
        Just(7 * MINUTE),
        Just(HOUR),
        1_000..3 * HOUR
    ]
}

fn range_query(start_ms: i64, end_ms: i64, step_ms: i64) -> RangeQuery {
    RangeQuery {
        query: "sum by (job) (rate(x[5m]))".into(),
        start_ms,
        end_ms,
        step_ms,
        ..RangeQuery::default()
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(128))]

    #[test]
    fn split_then_merge_equals_the_whole(
        seed in any::<u64>(),
        labels in label_sets(),
        start in -2 * DAY..5 * DAY,
        length in 0..3 * DAY,
        step in step(),
        interval in prop_oneof![Just(DAY), Just(6 * HOUR)],
    ) {
        let backend = Backend { seed, labels, provisional_ms: 0 };
        let query = range_query(start, start + length, step);
        let pieces = split(&query, interval);
        let plan = Plan::for_pieces(pieces);
        let answers = plan.queries().into_iter().map(|q| backend.answer(q, i64::MAX)).collect();
        let merged = plan.merge(answers);
        prop_assert_eq!(merged, backend.answer(&query, i64::MAX));
    }

    #[test]
    fn cached_answers_always_equal_the_backend(
        seed in any::<u64>(),
        labels in label_sets(),
        step in step(),
        phase_steps in 0i64..1000,
        interval in prop_oneof![Just(DAY), Just(2 * HOUR), Just(0)],
        aligned in any::<bool>(),
        requests in prop::collection::vec((0i64..200, 0i64..150, 0i64..40, any::<bool>()), 1..10),
    ) {
        let options = CacheOptions::default();
        let backend = Backend { seed, labels, provisional_ms: options.max_freshness_ms };
        let phase = phase_steps * 1_000 % step;
        let mut store: HashMap<String, Vec<u8>> = HashMap::new();
        let mut now = 3 * DAY;
        for (start_steps, length_steps, advance_minutes, no_store) in requests {
            now += advance_minutes * MINUTE;
            let start = now - 200 * step + start_steps * step + phase;
            let mut query = range_query(start, start + length_steps * step + phase / 2, step);
            if aligned {
                query = align(&query);
            }
            let mut piece_plans = Vec::new();
            for piece in split(&query, interval) {
                let key = cache_key("tenant", &piece, interval);
                let entry = store.get(&key.storage_key()).and_then(|bytes| decode_entry(bytes, &key));
                let plan = plan_with_cache(&piece, entry.as_ref());
                piece_plans.push((piece, key, entry, plan));
            }
            let plan = Plan::Concat(piece_plans.iter().map(|(_, _, _, plan)| plan.clone()).collect());
            let answers: Vec<ApiResponse> =
                plan.queries().into_iter().map(|q| backend.answer(q, now)).collect();
            let merged = plan.merge(answers.clone());
            prop_assert_eq!(merged, backend.answer(&query, now));

            let options = CacheOptions { no_store, ..options.clone() };
            let mut answers = answers.into_iter();
            for (piece, key, entry, plan) in piece_plans {
                let own: Vec<ApiResponse> = answers.by_ref().take(plan.queries().len()).collect();
                if let Some(updated) = updated_entry(&key, &piece, entry.as_ref(), &plan, &own, now, &options) {
                    prop_assert!(!no_store);
                    prop_assert!(updated.extents.windows(2).all(|w| w[0].end_ms + step < w[1].start_ms));
                    prop_assert!(updated.extents.iter().all(|e| e.end_ms <= now - options.max_freshness_ms));
                    store.insert(key.storage_key(), encode_entry(&updated));
                }
            }
        }
    }

    #[test]
    fn a_repeated_request_is_answered_from_cache_alone(
        seed in any::<u64>(),
        labels in label_sets(),
        step in step(),
        days in 1i64..8,
    ) {
        let options = CacheOptions::default();
        let backend = Backend { seed, labels, provisional_ms: options.max_freshness_ms };
        let now = 20 * DAY + 7 * HOUR;
        // Ends before the freshness horizon, so all of it may be cached.
        let end = now - options.max_freshness_ms - step;
        let query = align(&range_query(end - days * DAY, end, step));
        let mut store: HashMap<String, Vec<u8>> = HashMap::new();
        for round in 0..2 {
            let mut sub_queries = 0;
            for piece in split(&query, DAY) {
                let key = cache_key("tenant", &piece, DAY);
                let entry = store.get(&key.storage_key()).and_then(|bytes| decode_entry(bytes, &key));
                let plan = plan_with_cache(&piece, entry.as_ref());
                let answers: Vec<_> = plan.queries().into_iter().map(|q| backend.answer(q, now)).collect();
                sub_queries += answers.len();
                prop_assert_eq!(plan.merge(answers.clone()), backend.answer(&piece, now));
                if let Some(updated) = updated_entry(&key, &piece, entry.as_ref(), &plan, &answers, now, &options) {
                    store.insert(key.storage_key(), encode_entry(&updated));
                }
            }
            if round == 1 {
                prop_assert_eq!(sub_queries, 0);
            }
        }
    }
}
