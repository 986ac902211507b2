//! The functions that map each series' window of a range vector to one
//! value, with no other argument: `rate`, `increase`, `delta`, `irate`,
//! `idelta`, `changes`, `resets`, `deriv` and the `*_over_time` family.
//! One table serves both evaluators: step by step over a window per series
//! ([`crate::functions`]), and series by series over many steps
//! ([`crate::batch`]).

use crate::aggregate::{kahan_inc, quantile};

/// A window's points (never empty), in time order; the window's start and
/// end (the range is `(start, end]`).
type Apply = fn(&[(i64, f64)], i64, i64) -> Option<f64>;

#[derive(Clone, Copy)]
pub(crate) struct RangeFunction {
    pub(crate) apply: Apply,
    /// Returns one of its input values unchanged, so keeps the metric name.
    pub(crate) keeps_name: bool,
    /// Reads counters: hints when a metric's name does not say it is one.
    pub(crate) reads_counters: bool,
}

const fn plain(apply: Apply) -> RangeFunction {
    RangeFunction {
        apply,
        keeps_name: false,
        reads_counters: false,
    }
}

/// The function called `name`, if it is one of this module's.
pub(crate) fn range_function(name: &str) -> Option<RangeFunction> {
    let counter = |apply: Apply| RangeFunction {
        reads_counters: true,
        ..plain(apply)
    };
    let keeping = |apply: Apply| RangeFunction {
        keeps_name: true,
        ..plain(apply)
    };
    Some(match name {
        "rate" => counter(|points, start, end| extrapolated_rate(points, start, end, true, true)),
        "increase" => {
            counter(|points, start, end| extrapolated_rate(points, start, end, true, false))
        }
        "delta" => plain(|points, start, end| extrapolated_rate(points, start, end, false, false)),
        "irate" => plain(|points, _, _| instant_value(points, true)),
        "idelta" => plain(|points, _, _| instant_value(points, false)),
        "changes" => plain(|points, _, _| Some(changes(points))),
        "resets" => {
            plain(|points, _, _| Some(points.windows(2).filter(|w| w[1].1 < w[0].1).count() as f64))
        }
        "deriv" => plain(|points, _, _| {
            (points.len() >= 2).then(|| linear_regression(points, points[0].0).0)
        }),
        "present_over_time" => plain(|_, _, _| Some(1.0)),
        "avg_over_time" => plain(|points, _, _| Some(average(points))),
        "sum_over_time" => plain(|points, _, _| {
            let (sum, c) = points
                .iter()
                .fold((0.0, 0.0), |(sum, c), p| kahan_inc(p.1, sum, c));
            Some(sum + c)
        }),
        "count_over_time" => plain(|points, _, _| Some(points.len() as f64)),
        "max_over_time" => plain(|points, _, _| {
            Some(compare_over_time(points, |cur, best| cur > best || best.is_nan()).1)
        }),
        "min_over_time" => plain(|points, _, _| {
            Some(compare_over_time(points, |cur, best| cur < best || best.is_nan()).1)
        }),
        "ts_of_max_over_time" => plain(|points, _, _| {
            let (t, _) = compare_over_time(points, |cur, best| cur >= best || best.is_nan());
            Some(t as f64 / 1000.0)
        }),
        "ts_of_min_over_time" => plain(|points, _, _| {
            let (t, _) = compare_over_time(points, |cur, best| cur <= best || best.is_nan());
            Some(t as f64 / 1000.0)
        }),
        "last_over_time" => keeping(|points, _, _| Some(points[points.len() - 1].1)),
        "first_over_time" => keeping(|points, _, _| Some(points[0].1)),
        "ts_of_last_over_time" => {
            plain(|points, _, _| Some(points[points.len() - 1].0 as f64 / 1000.0))
        }
        "ts_of_first_over_time" => plain(|points, _, _| Some(points[0].0 as f64 / 1000.0)),
        "stddev_over_time" => plain(|points, _, _| Some(variance(points).sqrt())),
        "stdvar_over_time" => plain(|points, _, _| Some(variance(points))),
        "mad_over_time" => plain(|points, _, _| Some(median_absolute_deviation(points))),
        _ => return None,
    })
}

fn changes(points: &[(i64, f64)]) -> f64 {
    points
        .windows(2)
        .filter(|w| w[0].1 != w[1].1 && !(w[0].1.is_nan() && w[1].1.is_nan()))
        .count() as f64
}

/// The mean, summed with compensation until the sum overflows, then by an
/// incremental mean, as Prometheus 3.
fn average(points: &[(i64, f64)]) -> f64 {
    let mut sum = points[0].1;
    let mut count = 1.0;
    let mut mean = 0.0;
    let mut compensation = 0.0;
    let mut incremental = false;
    for (index, point) in points.iter().enumerate().skip(1) {
        count = (index + 1) as f64;
        if !incremental {
            let (new_sum, new_c) = kahan_inc(point.1, sum, compensation);
            if !new_sum.is_infinite() {
                sum = new_sum;
                compensation = new_c;
                continue;
            }
            incremental = true;
            mean = sum / (count - 1.0);
            compensation /= count - 1.0;
        }
        let q = (count - 1.0) / count;
        (mean, compensation) = kahan_inc(point.1 / count, q * mean, q * compensation);
    }
    if incremental {
        mean + compensation
    } else {
        sum / count + compensation / count
    }
}

fn median_absolute_deviation(points: &[(i64, f64)]) -> f64 {
    if points.iter().any(|p| p.1.is_nan()) {
        return f64::NAN;
    }
    let mut values: Vec<f64> = points.iter().map(|p| p.1).collect();
    let median = quantile(0.5, &mut values);
    for value in &mut values {
        *value = (*value - median).abs();
    }
    quantile(0.5, &mut values)
}

fn compare_over_time(points: &[(i64, f64)], better: impl Fn(f64, f64) -> bool) -> (i64, f64) {
    let mut best = points[0].1;
    let mut best_time = points[0].0;
    for point in points {
        if better(point.1, best) {
            best = point.1;
            best_time = point.0;
        }
    }
    (best_time, best)
}

fn variance(points: &[(i64, f64)]) -> f64 {
    let mut count = 0.0;
    let (mut mean, mut mean_c) = (0.0, 0.0);
    let (mut aux, mut aux_c) = (0.0, 0.0);
    for point in points {
        count += 1.0;
        let delta = point.1 - (mean + mean_c);
        (mean, mean_c) = kahan_inc(delta / count, mean, mean_c);
        (aux, aux_c) = kahan_inc(delta * (point.1 - (mean + mean_c)), aux, aux_c);
    }
    (aux + aux_c) / count
}

/// `rate`, `increase` and `delta`: the change over the window, extrapolated
/// towards the window's edges when the samples come close enough to them.
fn extrapolated_rate(
    points: &[(i64, f64)],
    range_start: i64,
    range_end: i64,
    is_counter: bool,
    is_rate: bool,
) -> Option<f64> {
    if points.len() < 2 {
        return None;
    }
    let first = points[0];
    let last = points[points.len() - 1];
    let mut result = last.1 - first.1;
    if is_counter {
        for pair in points.windows(2) {
            if pair[1].1 < pair[0].1 {
                result += pair[0].1;
            }
        }
    }
    let mut duration_to_start = (first.0 - range_start) as f64 / 1000.0;
    let mut duration_to_end = (range_end - last.0) as f64 / 1000.0;
    let sampled_interval = (last.0 - first.0) as f64 / 1000.0;
    let average_between = sampled_interval / (points.len() - 1) as f64;
    let threshold = average_between * 1.1;
    if duration_to_start >= threshold {
        duration_to_start = average_between / 2.0;
    }
    if is_counter {
        // A counter cannot go below zero, so do not extrapolate past the
        // point where it would have been zero.
        let mut duration_to_zero = duration_to_start;
        if result > 0.0 && first.1 >= 0.0 {
            duration_to_zero = sampled_interval * (first.1 / result);
        }
        if duration_to_zero < duration_to_start {
            duration_to_start = duration_to_zero;
        }
    }
    if duration_to_end >= threshold {
        duration_to_end = average_between / 2.0;
    }
    let factor = if sampled_interval != 0.0 {
        (sampled_interval + duration_to_start + duration_to_end) / sampled_interval
    } else {
        1.0
    };
    let mut value = result * factor;
    if is_rate {
        value /= (range_end - range_start) as f64 / 1000.0;
    }
    Some(value)
}

fn instant_value(points: &[(i64, f64)], is_rate: bool) -> Option<f64> {
    if points.len() < 2 {
        return None;
    }
    let last = points[points.len() - 1];
    let previous = points[points.len() - 2];
    let mut result = if is_rate && last.1 < previous.1 {
        last.1
    } else {
        last.1 - previous.1
    };
    let interval = last.0 - previous.0;
    if interval == 0 {
        return None;
    }
    if is_rate {
        result /= interval as f64 / 1000.0;
    }
    Some(result)
}

pub(crate) fn linear_regression(points: &[(i64, f64)], intercept_time: i64) -> (f64, f64) {
    let mut n = 0.0;
    let (mut sum_x, mut c_x) = (0.0, 0.0);
    let (mut sum_y, mut c_y) = (0.0, 0.0);
    let (mut sum_xy, mut c_xy) = (0.0, 0.0);
    let (mut sum_x2, mut c_x2) = (0.0, 0.0);
    let init_y = points[0].1;
    let mut const_y = true;
    for (index, point) in points.iter().enumerate() {
        if const_y && index > 0 && point.1 != init_y {
            const_y = false;
        }
        n += 1.0;
        let x = (point.0 - intercept_time) as f64 / 1e3;
        (sum_x, c_x) = kahan_inc(x, sum_x, c_x);
        (sum_y, c_y) = kahan_inc(point.1, sum_y, c_y);
        (sum_xy, c_xy) = kahan_inc(x * point.1, sum_xy, c_xy);
        (sum_x2, c_x2) = kahan_inc(x * x, sum_x2, c_x2);
    }
    if const_y {
        if init_y.is_infinite() {
            return (f64::NAN, f64::NAN);
        }
        return (0.0, init_y);
    }
    sum_x += c_x;
    sum_y += c_y;
    sum_xy += c_xy;
    sum_x2 += c_x2;
    let cov_xy = sum_xy - sum_x * sum_y / n;
    let var_x = sum_x2 - sum_x * sum_x / n;
    let slope = cov_xy / var_x;
    let intercept = sum_y / n - slope * sum_x / n;
    (slope, intercept)
}
