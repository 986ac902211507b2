//! Splitting an instant query whose range selector is long (Mimir's
//! `-query-frontend.split-instant-queries-by-interval`): `sum(sum_over_time(
//! x[7d]))` becomes seven one-day sub-queries, each with its own offset,
//! whose answers are merged series by series.
//!
//! Only where the split is exact: `sum_over_time`, `count_over_time`,
//! `min_over_time` and `max_over_time`, alone or under the aggregation that
//! combines their parts the same way (`sum` over sums or counts, `min` over
//! minimums, `max` over maximums). `rate` and `increase` extrapolate to
//! the edges of their window, so their parts do not add up to the whole;
//! every other query runs whole.
//!
//! The parts must cover the window exactly once, and where a range
//! selector's window begins depends on the engine: Prometheus 2 includes
//! its start (`[t - r, t]`), Prometheus 3 and sluice's own engine do not
//! (`(t - r, t]`). With a closed window, every part but the newest is cut
//! one millisecond short, so no sample at a boundary is counted twice.

use std::collections::HashMap;
use std::time::Duration;

use promql_parser::parser::{self, Expr, Offset};
use sluice_proto::{ApiResponse, Label, QueryData, ResponseData, ResultType, Series};

use crate::promql::{normalized, walk_mut};

/// At most this many parts: a longer split costs more than it saves.
pub const MAX_INSTANT_PARTS: i64 = 64;

/// Where a range selector's window begins.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum RangeBoundaries {
    /// `(t - r, t]`: Prometheus 3, and sluice's own engine.
    #[default]
    LeftOpen,
    /// `[t - r, t]`: Prometheus 2.
    Closed,
}

/// How the parts' values for one series become the whole's.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Combine {
    Sum,
    Min,
    Max,
}

impl Combine {
    /// `whole` and `part` combined as Prometheus combines samples: a NaN
    /// minimum or maximum gives way to any number.
    fn apply(self, whole: f64, part: f64) -> f64 {
        match self {
            Combine::Sum => whole + part,
            Combine::Min if part < whole || whole.is_nan() => part,
            Combine::Max if part > whole || whole.is_nan() => part,
            Combine::Min | Combine::Max => whole,
        }
    }
}

/// An instant query split into parts of its range selector's window.
#[derive(Clone, Debug, PartialEq)]
pub struct InstantSplit {
    /// The parts' query texts, newest window first.
    pub parts: Vec<String>,
    pub combine: Combine,
}

/// How a range function's values over parts of its window combine.
fn range_function_combine(name: &str) -> Option<Combine> {
    match name {
        "sum_over_time" | "count_over_time" => Some(Combine::Sum),
        "min_over_time" => Some(Combine::Min),
        "max_over_time" => Some(Combine::Max),
        _ => None,
    }
}

fn without_parens(expr: &Expr) -> &Expr {
    match expr {
        Expr::Paren(paren) => without_parens(&paren.expr),
        other => other,
    }
}

/// The combine of a splittable range function call over a plain range
/// selector, with the selector's window in ms.
fn splittable_call(expr: &Expr) -> Option<(Combine, i64)> {
    let Expr::Call(call) = without_parens(expr) else {
        return None;
    };
    let combine = range_function_combine(call.func.name)?;
    let [argument] = call.args.args.as_slice() else {
        return None;
    };
    let Expr::MatrixSelector(matrix) = argument.as_ref() else {
        return None;
    };
    Some((combine, i64::try_from(matrix.range.as_millis()).ok()?))
}

/// The combine and window of `expr` when it splits exactly.
fn splittable(expr: &Expr) -> Option<(Combine, i64)> {
    let Expr::Aggregate(aggregate) = without_parens(expr) else {
        return splittable_call(expr);
    };
    if aggregate.param.is_some() {
        return None;
    }
    let (combine, window_ms) = splittable_call(&aggregate.expr)?;
    let aggregate_combine = match aggregate.op.to_string().as_str() {
        "sum" => Combine::Sum,
        "min" => Combine::Min,
        "max" => Combine::Max,
        _ => return None,
    };
    (aggregate_combine == combine).then_some((combine, window_ms))
}

/// The parts of a window of `window_ms` at `interval_ms`, newest first, as
/// (range, extra offset) in ms.
fn part_windows(window_ms: i64, interval_ms: i64, boundaries: RangeBoundaries) -> Vec<(i64, i64)> {
    let mut windows = Vec::new();
    let mut covered_ms = 0;
    while covered_ms < window_ms {
        let range_ms = interval_ms.min(window_ms - covered_ms);
        // A closed window's start is the next part's end: cut it off.
        let cut_ms = i64::from(covered_ms > 0 && boundaries == RangeBoundaries::Closed);
        windows.push((range_ms - cut_ms, covered_ms + cut_ms));
        covered_ms += range_ms;
    }
    windows
}

fn signed_offset_ms(offset: Option<&Offset>) -> Option<i64> {
    Some(match offset {
        None => 0,
        Some(Offset::Pos(duration)) => i64::try_from(duration.as_millis()).ok()?,
        Some(Offset::Neg(duration)) => -i64::try_from(duration.as_millis()).ok()?,
    })
}

fn offset_of(ms: i64) -> Option<Offset> {
    let magnitude = Duration::from_millis(ms.unsigned_abs());
    match ms {
        0 => None,
        positive if positive > 0 => Some(Offset::Pos(magnitude)),
        _ => Some(Offset::Neg(magnitude)),
    }
}

/// `expr` with its range selector reading `range_ms` further back by
/// `extra_offset_ms`, printed; `None` when the printed text does not parse
/// back to the same tree (the printer is not faithful for every input).
fn part_query(expr: &Expr, range_ms: i64, extra_offset_ms: i64) -> Option<String> {
    let mut part = expr.clone();
    let mut rewritten = Some(());
    walk_mut(&mut part, &mut |node| {
        if let Expr::MatrixSelector(matrix) = node {
            let offset_ms = signed_offset_ms(matrix.vs.offset.as_ref())
                .and_then(|offset_ms| offset_ms.checked_add(extra_offset_ms));
            match offset_ms {
                Some(offset_ms) => matrix.vs.offset = offset_of(offset_ms),
                None => rewritten = None,
            }
            matrix.range = Duration::from_millis(range_ms.max(0) as u64);
        }
    });
    rewritten?;
    let printed = part.to_string();
    let reparsed = parser::parse(&printed).ok()?;
    (normalized(reparsed) == normalized(part)).then_some(printed)
}

/// `query` split at `interval_ms`, when that is exact and worth it.
pub fn split_instant_query(
    query: &str,
    interval_ms: i64,
    boundaries: RangeBoundaries,
) -> Option<InstantSplit> {
    if interval_ms <= 1 {
        return None;
    }
    let expr = sluice_promql::parse(query).ok()?;
    let (combine, window_ms) = splittable(&expr)?;
    if window_ms <= interval_ms || window_ms / interval_ms >= MAX_INSTANT_PARTS {
        return None;
    }
    let windows = part_windows(window_ms, interval_ms, boundaries);
    if windows.iter().any(|&(range_ms, _)| range_ms <= 0) {
        return None;
    }
    let parts = windows
        .into_iter()
        .map(|(range_ms, offset_ms)| part_query(&expr, range_ms, offset_ms))
        .collect::<Option<Vec<String>>>()?;
    Some(InstantSplit { parts, combine })
}

/// The whole query's answer from its parts' `answers`: the first error if
/// any failed; `None` when a part holds what cannot be merged here (a
/// histogram, a result that is not a vector), and the query must run whole.
pub fn merge_instant_parts(answers: Vec<ApiResponse>, combine: Combine) -> Option<ApiResponse> {
    if let Some(failed) = answers.iter().position(ApiResponse::is_error) {
        return answers.into_iter().nth(failed);
    }
    let mut merged: HashMap<Vec<Label>, (i64, f64)> = HashMap::new();
    let mut warnings: Vec<String> = Vec::new();
    let mut infos: Vec<String> = Vec::new();
    for answer in answers {
        let Some(ResponseData::Query(data)) = answer.data else {
            return None;
        };
        if data.result_type != ResultType::Vector as i32 {
            return None;
        }
        for series in data.series {
            if !series.histograms.is_empty() || series.values.len() != 1 {
                return None;
            }
            let sample = (series.timestamps_ms[0], series.values[0]);
            merged
                .entry(series.labels)
                .and_modify(|whole| whole.1 = combine.apply(whole.1, sample.1))
                .or_insert(sample);
        }
        push_new(&mut warnings, answer.warnings);
        push_new(&mut infos, answer.infos);
    }
    Some(vector_answer(merged, warnings, infos))
}

fn push_new(kept: &mut Vec<String>, more: Vec<String>) {
    for message in more {
        if !kept.contains(&message) {
            kept.push(message);
        }
    }
}

fn vector_answer(
    merged: HashMap<Vec<Label>, (i64, f64)>,
    warnings: Vec<String>,
    infos: Vec<String>,
) -> ApiResponse {
    let mut series: Vec<Series> = merged
        .into_iter()
        .map(|(labels, (timestamp_ms, value))| Series {
            labels,
            timestamps_ms: vec![timestamp_ms],
            values: vec![value],
            ..Series::default()
        })
        .collect();
    series.sort_by(|a, b| crate::merge::compare_labels(&a.labels, &b.labels));
    let mut response = ApiResponse::success(ResponseData::Query(QueryData {
        result_type: ResultType::Vector as i32,
        series,
        ..QueryData::default()
    }));
    response.warnings = warnings;
    response.infos = infos;
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    const HOUR_MS: i64 = 3_600_000;
    const DAY_MS: i64 = 24 * HOUR_MS;

    fn split(query: &str, boundaries: RangeBoundaries) -> Option<InstantSplit> {
        split_instant_query(query, DAY_MS, boundaries)
    }

    #[test]
    fn exact_shapes_split_and_others_run_whole() {
        for query in [
            "sum_over_time(x[3d])",
            "sum(count_over_time(x{job=\"a\"}[3d]))",
            "sum by (job) (sum_over_time(x[3d] offset 1h))",
            "min without (instance) (min_over_time(x[3d]))",
            "max((max_over_time(x[3d] @ 1700000000)))",
        ] {
            let split = split(query, RangeBoundaries::LeftOpen).expect(query);
            assert_eq!(split.parts.len(), 3, "{query}");
        }
        for query in [
            "sum(rate(x[3d]))",
            "increase(x[3d])",
            "sum(max_over_time(x[3d]))",
            "count(count_over_time(x[3d]))",
            "topk(1, sum_over_time(x[3d]))",
            "sum_over_time(x[1d])",
            "sum_over_time(x[3d]) + 1",
            "avg_over_time(x[3d])",
            "sum_over_time(rate(x[5m])[3d:1h])",
        ] {
            assert_eq!(split(query, RangeBoundaries::LeftOpen), None, "{query}");
        }
    }

    #[test]
    fn parts_tile_the_window_with_the_engines_boundaries() {
        let open = split(
            "sum_over_time(x[2d12h] offset 1h)",
            RangeBoundaries::LeftOpen,
        )
        .expect("splits");
        assert_eq!(
            open.parts,
            [
                "sum_over_time(x[1d] offset 1h)",
                "sum_over_time(x[1d] offset 1d1h)",
                "sum_over_time(x[12h] offset 2d1h)",
            ]
        );
        let closed = split("sum_over_time(x[2d12h])", RangeBoundaries::Closed).expect("splits");
        assert_eq!(
            closed.parts,
            [
                "sum_over_time(x[1d])",
                "sum_over_time(x[23h59m59s999ms] offset 1d1ms)",
                "sum_over_time(x[11h59m59s999ms] offset 2d1ms)",
            ]
        );
    }

    #[test]
    fn combining_follows_prometheus_with_nan() {
        assert_eq!(Combine::Min.apply(f64::NAN, 2.0), 2.0);
        assert_eq!(Combine::Min.apply(2.0, f64::NAN), 2.0);
        assert_eq!(Combine::Max.apply(1.0, 2.0), 2.0);
        assert!(Combine::Sum.apply(1.0, f64::NAN).is_nan());
    }

    /// A series without a metric name: its labels and (timestamp, value)s.
    type ModelSeries = (Vec<Label>, Vec<(i64, f64)>);

    /// A model of the engine, enough for the shapes that split.
    struct Model {
        series: Vec<ModelSeries>,
        boundaries: RangeBoundaries,
    }

    impl Model {
        /// Evaluates `query` (a splittable shape) at `time_ms`.
        fn eval(&self, query: &str, time_ms: i64) -> ApiResponse {
            let expr = parser::parse(query).expect("a valid part");
            let (grouping, call) = match without_parens(&expr) {
                Expr::Aggregate(aggregate) => {
                    let labels = match &aggregate.modifier {
                        Some(parser::LabelModifier::Include(labels)) => labels.labels.clone(),
                        _ => Vec::new(),
                    };
                    (Some(labels), aggregate.expr.as_ref().clone())
                }
                other => (None, other.clone()),
            };
            let Expr::Call(call) = without_parens(&call) else {
                panic!("a range function call: {query}");
            };
            let Expr::MatrixSelector(matrix) = call.args.args[0].as_ref() else {
                panic!("a range selector: {query}");
            };
            let combine = range_function_combine(call.func.name).expect("splittable");
            let range_ms = matrix.range.as_millis() as i64;
            let offset_ms = signed_offset_ms(matrix.vs.offset.as_ref()).expect("offset");
            let end_ms = time_ms - offset_ms;
            let in_window = |timestamp_ms: i64| match self.boundaries {
                RangeBoundaries::LeftOpen => timestamp_ms > end_ms - range_ms,
                RangeBoundaries::Closed => timestamp_ms >= end_ms - range_ms,
            } && timestamp_ms <= end_ms;
            let mut merged: HashMap<Vec<Label>, (i64, f64)> = HashMap::new();
            for (labels, samples) in &self.series {
                let values: Vec<f64> = samples
                    .iter()
                    .filter(|(timestamp_ms, _)| in_window(*timestamp_ms))
                    .map(|(_, value)| *value)
                    .collect();
                let Some(&first) = values.first() else {
                    continue;
                };
                let value = match call.func.name {
                    "count_over_time" => values.len() as f64,
                    _ => values[1..]
                        .iter()
                        .fold(first, |whole, &part| combine.apply(whole, part)),
                };
                let group: Vec<Label> = match &grouping {
                    Some(by) => labels
                        .iter()
                        .filter(|label| by.contains(&label.name))
                        .cloned()
                        .collect(),
                    None => labels.clone(),
                };
                merged
                    .entry(group)
                    .and_modify(|whole| whole.1 = combine.apply(whole.1, value))
                    .or_insert((time_ms, value));
            }
            vector_answer(merged, Vec::new(), Vec::new())
        }
    }

    fn close(a: f64, b: f64) -> bool {
        (a.is_nan() && b.is_nan()) || (a - b).abs() <= 1e-9 * a.abs().max(b.abs()).max(1.0)
    }

    fn series_strategy() -> impl Strategy<Value = Vec<ModelSeries>> {
        // Timestamps on a coarse grid, so that part boundaries hold samples.
        let samples =
            proptest::collection::btree_map(0i64..200, 0.0f64..1000.0, 0..40).prop_map(|samples| {
                samples
                    .into_iter()
                    .map(|(slot, value)| (slot * HOUR_MS, value))
                    .collect::<Vec<_>>()
            });
        proptest::collection::vec(samples, 1..6).prop_map(|all| {
            all.into_iter()
                .enumerate()
                .map(|(index, samples)| {
                    let labels = vec![
                        Label {
                            name: "instance".into(),
                            value: format!("i{index}"),
                        },
                        Label {
                            name: "job".into(),
                            value: format!("j{}", index % 2),
                        },
                    ];
                    (labels, samples)
                })
                .collect()
        })
    }

    use proptest::prelude::*;

    proptest! {
        #[test]
        fn split_then_merged_equals_unsplit(
            series in series_strategy(),
            shape in 0usize..6,
            window_hours in 2i64..120,
            interval_hours in 1i64..30,
            offset_hours in -5i64..20,
            time_slot in 0i64..200,
            closed in any::<bool>(),
        ) {
            let selector = match offset_hours {
                0 => format!("x[{window_hours}h]"),
                offset if offset > 0 => format!("x[{window_hours}h] offset {offset}h"),
                offset => format!("x[{window_hours}h] offset -{}h", -offset),
            };
            let query = match shape {
                0 => format!("sum_over_time({selector})"),
                1 => format!("count_over_time({selector})"),
                2 => format!("min_over_time({selector})"),
                3 => format!("max by (job) (max_over_time({selector}))"),
                4 => format!("sum by (job) (count_over_time({selector}))"),
                _ => format!("sum(sum_over_time({selector}))"),
            };
            let boundaries = if closed { RangeBoundaries::Closed } else { RangeBoundaries::LeftOpen };
            let model = Model { series, boundaries };
            let time_ms = time_slot * HOUR_MS;
            let Some(split) = split_instant_query(&query, interval_hours * HOUR_MS, boundaries) else {
                let too_many = window_hours / interval_hours >= MAX_INSTANT_PARTS;
                prop_assert!(window_hours <= interval_hours || too_many, "{query} did not split");
                return Ok(());
            };
            let parts = split.parts.iter().map(|part| model.eval(part, time_ms)).collect();
            let merged = merge_instant_parts(parts, split.combine).expect("vectors merge");
            let whole = model.eval(&query, time_ms);
            let (Some(ResponseData::Query(merged)), Some(ResponseData::Query(whole))) =
                (merged.data, whole.data) else {
                panic!("query answers");
            };
            prop_assert_eq!(merged.series.len(), whole.series.len(), "{:?}", split.parts);
            for (merged, whole) in merged.series.iter().zip(&whole.series) {
                prop_assert_eq!(&merged.labels, &whole.labels);
                prop_assert!(close(merged.values[0], whole.values[0]),
                    "{} vs {} for {:?}", merged.values[0], whole.values[0], split.parts);
            }
        }
    }
}
