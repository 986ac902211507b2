//! PromQL functions over floats.

use std::sync::Arc;

use promql_parser::label::MatchOp;
use promql_parser::parser::{Call, Expr};

use crate::EngineError;
use crate::aggregate::{format_float_plain, quantile};
use crate::eval::{Evaluator, RangeSeries, Sample, Value, exec_err, offset_ms};
use crate::labels::{Labels, METRIC_NAME};
use crate::range_functions::{RangeFunction, linear_regression, range_function};

/// Go's `math.Max`: NaN wins, unlike `f64::max`.
fn go_max(a: f64, b: f64) -> f64 {
    if a.is_nan() || b.is_nan() {
        f64::NAN
    } else {
        a.max(b)
    }
}

/// Go's `math.Min`: NaN wins, unlike `f64::min`.
fn go_min(a: f64, b: f64) -> f64 {
    if a.is_nan() || b.is_nan() {
        f64::NAN
    } else {
        a.min(b)
    }
}

/// A range-vector argument together with the window it was read over.
struct Window {
    series: Vec<RangeSeries>,
    start: i64,
    end: i64,
}

fn eval_window(ev: &mut Evaluator<'_>, arg: &Expr, ts: i64) -> Result<Window, EngineError> {
    match arg {
        Expr::MatrixSelector(ms) => {
            let end = ev.selector_ref_time(&ms.vs, ts);
            let range = ms.range.as_millis() as i64;
            let series = ev.eval_matrix_selector(&ms.vs, range, ts)?;
            Ok(Window {
                series,
                start: end - range,
                end,
            })
        }
        Expr::Subquery(sq) => {
            let end = ev.at_time(&sq.at).unwrap_or(ts) - offset_ms(&sq.offset);
            let range = sq.range.as_millis() as i64;
            let series = ev.eval_subquery(sq, ts)?;
            Ok(Window {
                series,
                start: end - range,
                end,
            })
        }
        Expr::Paren(paren) => eval_window(ev, &paren.expr, ts),
        other => match ev.eval(other, ts)? {
            Value::Matrix(series) => Ok(Window {
                series,
                start: ts,
                end: ts,
            }),
            _ => exec_err("expected a range vector argument"),
        },
    }
}

fn string_arg(ev: &mut Evaluator<'_>, arg: &Expr, ts: i64) -> Result<String, EngineError> {
    match arg {
        Expr::StringLiteral(s) => Ok(s.val.clone()),
        other => match ev.eval(other, ts)? {
            Value::String(s) => Ok(s),
            _ => exec_err("expected a string argument"),
        },
    }
}

/// Applies `f` to every float of a vector, flagging the name for removal.
fn map_vector(samples: Vec<Sample>, f: impl Fn(f64) -> f64) -> Vec<Sample> {
    samples
        .into_iter()
        .map(|mut sample| {
            sample.v = f(sample.v);
            sample.drop_name = true;
            sample
        })
        .collect()
}

/// Applies a per-window function; `keep_name` is for functions that return
/// one of the input samples unchanged.
fn map_windows(
    window: Window,
    ts: i64,
    keep_name: bool,
    f: impl Fn(&RangeSeries, i64, i64) -> Option<f64>,
) -> Vec<Sample> {
    let mut out = Vec::with_capacity(window.series.len());
    for series in &window.series {
        if let Some(v) = f(series, window.start, window.end) {
            out.push(Sample {
                labels: Arc::clone(&series.labels),
                t: ts,
                v,
                drop_name: series.drop_name || !keep_name,
            });
        }
    }
    out
}

pub(crate) fn eval_call(
    ev: &mut Evaluator<'_>,
    call: &Call,
    call_expr: &Expr,
    ts: i64,
) -> Result<Value, EngineError> {
    let name = call.func.name;
    let args: Vec<&Expr> = call.args.args.iter().map(|a| a.as_ref()).collect();
    let vector = |ev: &mut Evaluator<'_>, index: usize| -> Result<Vec<Sample>, EngineError> {
        ev.eval_vector(args[index], ts)
    };
    let scalar = |ev: &mut Evaluator<'_>, index: usize| -> Result<f64, EngineError> {
        ev.eval_scalar(args[index], ts)
    };

    let simple: Option<fn(f64) -> f64> = match name {
        "abs" => Some(f64::abs),
        "ceil" => Some(f64::ceil),
        "floor" => Some(f64::floor),
        "exp" => Some(f64::exp),
        "sqrt" => Some(f64::sqrt),
        "ln" => Some(f64::ln),
        "log2" => Some(f64::log2),
        "log10" => Some(f64::log10),
        "sin" => Some(f64::sin),
        "cos" => Some(f64::cos),
        "tan" => Some(f64::tan),
        "asin" => Some(f64::asin),
        "acos" => Some(f64::acos),
        "atan" => Some(f64::atan),
        "sinh" => Some(f64::sinh),
        "cosh" => Some(f64::cosh),
        "tanh" => Some(f64::tanh),
        "asinh" => Some(f64::asinh),
        "acosh" => Some(f64::acosh),
        "atanh" => Some(f64::atanh),
        "deg" => Some(|v| v * 180.0 / std::f64::consts::PI),
        "rad" => Some(|v| v * std::f64::consts::PI / 180.0),
        "sgn" => Some(|v: f64| {
            if v < 0.0 {
                -1.0
            } else if v > 0.0 {
                1.0
            } else {
                v
            }
        }),
        _ => None,
    };
    if let Some(f) = simple {
        return Ok(Value::Vector(map_vector(vector(ev, 0)?, f)));
    }

    if let Some(function) = range_function(name) {
        return eval_range_function(ev, function, args[0], ts);
    }

    let value = match name {
        "info" => return crate::info::eval_info(ev, call, ts),
        "time" => Value::Scalar(ts as f64 / 1000.0),
        "pi" => Value::Scalar(std::f64::consts::PI),
        "start" => Value::Scalar(ev.start as f64 / 1000.0),
        "end" => Value::Scalar(ev.end as f64 / 1000.0),
        "range" => Value::Scalar((ev.end - ev.start) as f64 / 1000.0),
        "step" => Value::Scalar(ev.interval as f64 / 1000.0),
        "max_of" => Value::Scalar(go_max(scalar(ev, 0)?, scalar(ev, 1)?)),
        "min_of" => Value::Scalar(go_min(scalar(ev, 0)?, scalar(ev, 1)?)),
        "vector" => {
            let v = scalar(ev, 0)?;
            Value::Vector(vec![Sample {
                labels: Arc::new(Labels::empty()),
                t: ts,
                v,
                drop_name: false,
            }])
        }
        "scalar" => {
            let samples = vector(ev, 0)?;
            Value::Scalar(if samples.len() == 1 {
                samples[0].v
            } else {
                f64::NAN
            })
        }
        "round" => {
            let samples = vector(ev, 0)?;
            let to_nearest = if args.len() > 1 { scalar(ev, 1)? } else { 1.0 };
            let inverse = 1.0 / to_nearest;
            Value::Vector(map_vector(samples, |v| {
                (v * inverse + 0.5).floor() / inverse
            }))
        }
        "clamp" => {
            let samples = vector(ev, 0)?;
            let min = scalar(ev, 1)?;
            let max = scalar(ev, 2)?;
            if max < min {
                Value::Vector(Vec::new())
            } else {
                Value::Vector(map_vector(samples, |v| go_max(min, go_min(max, v))))
            }
        }
        "clamp_min" => {
            let samples = vector(ev, 0)?;
            let min = scalar(ev, 1)?;
            Value::Vector(map_vector(samples, |v| go_max(min, v)))
        }
        "clamp_max" => {
            let samples = vector(ev, 0)?;
            let max = scalar(ev, 1)?;
            Value::Vector(map_vector(samples, |v| go_min(max, v)))
        }
        "timestamp" => {
            // On a bare selector the sample's own time is wanted, which the
            // selector output keeps; anything else yields the evaluation time.
            let is_selector = matches!(unwrap_parens(args[0]), Expr::VectorSelector(_));
            let samples = vector(ev, 0)?;
            Value::Vector(
                samples
                    .into_iter()
                    .map(|mut s| {
                        s.v = if is_selector {
                            s.t as f64 / 1000.0
                        } else {
                            ts as f64 / 1000.0
                        };
                        s.t = ts;
                        s.drop_name = true;
                        s
                    })
                    .collect(),
            )
        }
        "day_of_month" | "day_of_week" | "day_of_year" | "days_in_month" | "hour" | "minute"
        | "month" | "year" => {
            let samples = if args.is_empty() {
                vec![Sample {
                    labels: Arc::new(Labels::empty()),
                    t: ts,
                    v: ts as f64 / 1000.0,
                    drop_name: false,
                }]
            } else {
                vector(ev, 0)?
            };
            let f = date_function(name);
            Value::Vector(map_vector(samples, f))
        }
        "sort" | "sort_desc" | "sort_by_label" | "sort_by_label_desc" => {
            if ev.is_range_query && ev.start != ev.end {
                ev.warn("sort is ineffective for range queries since results are always ordered by labels".into(), call_expr);
            }
            let mut samples = vector(ev, 0)?;
            match name {
                // Go's sort.Sort over Prometheus's reversed value heaps,
                // NaN last: ties come out in Prometheus's order.
                "sort" => crate::gosort::sort(&mut samples, |a, b| b.v.is_nan() || b.v > a.v),
                "sort_desc" => crate::gosort::sort(&mut samples, |a, b| b.v.is_nan() || b.v < a.v),
                _ => {
                    let mut label_names = Vec::new();
                    for arg in &args[1..] {
                        label_names.push(string_arg(ev, arg, ts)?);
                    }
                    let descending = name == "sort_by_label_desc";
                    samples.sort_by(|a, b| {
                        for label in &label_names {
                            let (x, y) = (a.labels.get(label), b.labels.get(label));
                            if x == y {
                                continue;
                            }
                            let ordering = natural_cmp(x, y);
                            return if descending {
                                ordering.reverse()
                            } else {
                                ordering
                            };
                        }
                        if descending {
                            b.labels.cmp(&a.labels)
                        } else {
                            a.labels.cmp(&b.labels)
                        }
                    });
                }
            }
            Value::Vector(samples)
        }
        "label_replace" => {
            let dst = string_arg(ev, args[1], ts)?;
            let replacement = string_arg(ev, args[2], ts)?;
            let src = string_arg(ev, args[3], ts)?;
            let pattern = string_arg(ev, args[4], ts)?;
            let regex = regex::Regex::new(&format!("^(?s:{pattern})$")).map_err(|_| {
                EngineError::Execution(format!(
                    "invalid regular expression in label_replace(): {pattern}"
                ))
            })?;
            if ev.is_invalid_label_name(&dst) {
                return exec_err(format!(
                    "invalid destination label name in label_replace(): {dst}"
                ));
            }
            let samples = vector(ev, 0)?;
            let mut out = Vec::with_capacity(samples.len());
            for mut sample in samples {
                if let Some(captures) = regex.captures(sample.labels.get(&src)) {
                    let mut value = String::new();
                    captures.expand(&replacement, &mut value);
                    let mut labels = (*sample.labels).clone();
                    labels.set(&dst, &value);
                    if dst == METRIC_NAME {
                        // An explicitly written name is no longer one to drop.
                        sample.drop_name = false;
                    }
                    sample.labels = Arc::new(labels);
                }
                out.push(sample);
            }
            Value::Vector(out)
        }
        "label_join" => {
            let dst = string_arg(ev, args[1], ts)?;
            let separator = string_arg(ev, args[2], ts)?;
            let mut sources = Vec::new();
            for arg in &args[3..] {
                sources.push(string_arg(ev, arg, ts)?);
            }
            if ev.is_invalid_label_name(&dst) {
                return exec_err(format!(
                    "invalid destination label name in label_join(): {dst}"
                ));
            }
            let samples = vector(ev, 0)?;
            let mut out = Vec::with_capacity(samples.len());
            for mut sample in samples {
                let joined: Vec<&str> = sources.iter().map(|s| sample.labels.get(s)).collect();
                let value = joined.join(&separator);
                let mut labels = (*sample.labels).clone();
                labels.set(&dst, &value);
                if dst == METRIC_NAME {
                    sample.drop_name = false;
                }
                sample.labels = Arc::new(labels);
                out.push(sample);
            }
            Value::Vector(out)
        }
        "absent" => {
            let samples = vector(ev, 0)?;
            if samples.is_empty() {
                Value::Vector(vec![Sample {
                    labels: Arc::new(absent_labels(args[0])),
                    t: ts,
                    v: 1.0,
                    drop_name: false,
                }])
            } else {
                Value::Vector(Vec::new())
            }
        }
        "absent_over_time" => {
            let window = eval_window(ev, args[0], ts)?;
            if window.series.is_empty() {
                Value::Vector(vec![Sample {
                    labels: Arc::new(absent_labels(args[0])),
                    t: ts,
                    v: 1.0,
                    drop_name: false,
                }])
            } else {
                Value::Vector(Vec::new())
            }
        }
        "predict_linear" => {
            let window = eval_window(ev, args[0], ts)?;
            let duration = scalar(ev, 1)?;
            Value::Vector(map_windows(window, ts, false, |s, _, _| {
                if s.points.len() < 2 {
                    return None;
                }
                let (slope, intercept) = linear_regression(&s.points, ts);
                Some(slope * duration + intercept)
            }))
        }
        "double_exponential_smoothing" | "holt_winters" => {
            let window = eval_window(ev, args[0], ts)?;
            let smoothing = scalar(ev, 1)?;
            let trend = scalar(ev, 2)?;
            if smoothing <= 0.0 || smoothing >= 1.0 {
                return exec_err(format!(
                    "invalid smoothing factor. Expected: 0 < sf < 1, got: {smoothing:.6}"
                ));
            }
            if trend <= 0.0 || trend >= 1.0 {
                return exec_err(format!(
                    "invalid trend factor. Expected: 0 < tf < 1, got: {trend:.6}"
                ));
            }
            Value::Vector(map_windows(window, ts, false, |s, _, _| {
                double_exponential_smoothing(&s.points, smoothing, trend)
            }))
        }
        "quantile_over_time" => {
            let q = scalar(ev, 0)?;
            if q.is_nan() || !(0.0..=1.0).contains(&q) {
                ev.warn(
                    format!(
                        "quantile value should be between 0 and 1, got {}",
                        format_float_plain(q)
                    ),
                    args[0],
                );
            }
            over_time(ev, args[1], ts, false, |points| {
                let mut values: Vec<f64> = points.iter().map(|p| p.1).collect();
                quantile(q, &mut values)
            })?
        }
        "histogram_quantile" => {
            let q = scalar(ev, 0)?;
            if q.is_nan() || !(0.0..=1.0).contains(&q) {
                ev.warn(
                    format!(
                        "quantile value should be between 0 and 1, got {}",
                        format_float_plain(q)
                    ),
                    args[0],
                );
            }
            let samples = vector(ev, 1)?;
            let groups = classic_histograms(ev, samples, args[1]);
            let mut out = Vec::with_capacity(groups.len());
            for (labels, mut buckets) in groups {
                let (value, forced) = bucket_quantile(q, &mut buckets);
                if forced {
                    ev.info(monotonicity_message(&labels), args[1]);
                }
                out.push(Sample {
                    labels: Arc::new(labels),
                    t: ts,
                    v: value,
                    drop_name: true,
                });
            }
            Value::Vector(out)
        }
        "histogram_quantiles" => {
            let samples = vector(ev, 0)?;
            let label = string_arg(ev, args[1], ts)?;
            let mut quantiles = Vec::new();
            for arg in &args[2..] {
                let q = ev.eval_scalar(arg, ts)?;
                if q.is_nan() || !(0.0..=1.0).contains(&q) {
                    ev.warn(
                        format!(
                            "quantile value should be between 0 and 1, got {}",
                            format_float_plain(q)
                        ),
                        arg,
                    );
                }
                quantiles.push(q);
            }
            let groups = classic_histograms(ev, samples, args[0]);
            let mut out = Vec::new();
            for q in quantiles {
                for (labels, buckets) in &groups {
                    let mut buckets = buckets.clone();
                    let (value, forced) = bucket_quantile(q, &mut buckets);
                    if forced {
                        ev.info(monotonicity_message(labels), args[0]);
                    }
                    let mut with_quantile = labels.clone();
                    with_quantile.set(&label, &format_openmetrics_float(q));
                    out.push(Sample {
                        labels: Arc::new(with_quantile),
                        t: ts,
                        v: value,
                        drop_name: true,
                    });
                }
            }
            Value::Vector(out)
        }
        "histogram_fraction" => {
            let lower = scalar(ev, 0)?;
            let upper = scalar(ev, 1)?;
            let samples = vector(ev, 2)?;
            let groups = classic_histograms(ev, samples, args[2]);
            let mut out = Vec::with_capacity(groups.len());
            for (labels, mut buckets) in groups {
                let value = bucket_fraction(lower, upper, &mut buckets);
                out.push(Sample {
                    labels: Arc::new(labels),
                    t: ts,
                    v: value,
                    drop_name: true,
                });
            }
            Value::Vector(out)
        }
        "histogram_count" | "histogram_sum" | "histogram_avg" | "histogram_stddev"
        | "histogram_stdvar" => {
            // These read native histograms only; float samples yield nothing.
            let _ = vector(ev, 0)?;
            Value::Vector(Vec::new())
        }
        other => {
            return exec_err(format!(
                "function {other:?} is not supported by the sluice engine"
            ));
        }
    };
    Ok(value)
}

/// One of [`range_function`]'s functions over its argument's windows.
fn eval_range_function(
    ev: &mut Evaluator<'_>,
    function: RangeFunction,
    arg: &Expr,
    ts: i64,
) -> Result<Value, EngineError> {
    let window = eval_window(ev, arg, ts)?;
    let out = map_windows(window, ts, function.keeps_name, |s, start, end| {
        if s.points.is_empty() {
            None
        } else {
            (function.apply)(&s.points, start, end)
        }
    });
    if function.reads_counters {
        hint_counters(ev, out.iter().map(|sample| &sample.labels), arg);
    }
    Ok(Value::Vector(out))
}

/// Like Prometheus, hints when a counter function reads a metric whose name
/// does not say it is a counter. Each label set is checked once per query,
/// not once per step.
pub(crate) fn hint_counters<'l>(
    ev: &mut Evaluator<'_>,
    labels: impl Iterator<Item = &'l Arc<Labels>>,
    arg: &Expr,
) {
    let mut not_counters = Vec::new();
    for labels in labels {
        if !ev.first_counter_check(labels) {
            continue;
        }
        let metric = labels.metric_name();
        let counter_like = ["_total", "_sum", "_count", "_bucket"]
            .iter()
            .any(|suffix| metric.ends_with(suffix));
        if !metric.is_empty() && !counter_like {
            not_counters.push(metric.to_string());
        }
    }
    for metric in not_counters {
        ev.info(
            format!(
                "metric might not be a counter, name does not end in _total/_sum/_count/_bucket: {metric:?}"
            ),
            arg,
        );
    }
}

fn unwrap_parens(expr: &Expr) -> &Expr {
    match expr {
        Expr::Paren(paren) => unwrap_parens(&paren.expr),
        other => other,
    }
}

fn over_time(
    ev: &mut Evaluator<'_>,
    arg: &Expr,
    ts: i64,
    keep_name: bool,
    f: impl Fn(&[(i64, f64)]) -> f64,
) -> Result<Value, EngineError> {
    let window = eval_window(ev, arg, ts)?;
    Ok(Value::Vector(map_windows(
        window,
        ts,
        keep_name,
        |s, _, _| {
            if s.points.is_empty() {
                None
            } else {
                Some(f(&s.points))
            }
        },
    )))
}

fn double_exponential_smoothing(points: &[(i64, f64)], smoothing: f64, trend: f64) -> Option<f64> {
    if points.len() < 2 {
        return None;
    }
    let mut s0 = 0.0;
    let mut s1 = points[0].1;
    let mut b = points[1].1 - points[0].1;
    for (index, point) in points.iter().enumerate().skip(1) {
        let x = smoothing * point.1;
        if index > 1 {
            b = trend * (s1 - s0) + (1.0 - trend) * b;
        }
        let y = (1.0 - smoothing) * (s1 + b);
        s0 = s1;
        s1 = x + y;
    }
    Some(s1)
}

/// Natural order: runs of digits compare as numbers, the rest as text.
fn natural_cmp(a: &str, b: &str) -> std::cmp::Ordering {
    fn chunks(s: &str) -> Vec<&str> {
        let mut out = Vec::new();
        let mut start = 0;
        let bytes = s.as_bytes();
        for i in 1..=bytes.len() {
            if i == bytes.len() || bytes[i].is_ascii_digit() != bytes[i - 1].is_ascii_digit() {
                out.push(&s[start..i]);
                start = i;
            }
        }
        out
    }
    let (ca, cb) = (chunks(a), chunks(b));
    for (x, y) in ca.iter().zip(cb.iter()) {
        if x == y {
            continue;
        }
        let x_digits = x.bytes().all(|c| c.is_ascii_digit());
        let y_digits = y.bytes().all(|c| c.is_ascii_digit());
        if x_digits && y_digits {
            let xt = x.trim_start_matches('0');
            let yt = y.trim_start_matches('0');
            let ordering = xt.len().cmp(&yt.len()).then_with(|| xt.cmp(yt));
            if ordering != std::cmp::Ordering::Equal {
                return ordering;
            }
            continue;
        }
        return x.cmp(y);
    }
    ca.len().cmp(&cb.len())
}

fn absent_labels(expr: &Expr) -> Labels {
    let matchers = match unwrap_parens(expr) {
        Expr::VectorSelector(vs) => &vs.matchers.matchers,
        Expr::MatrixSelector(ms) => &ms.vs.matchers.matchers,
        _ => return Labels::empty(),
    };
    let mut labels = Labels::empty();
    let mut seen = std::collections::HashSet::new();
    for matcher in matchers {
        if matcher.name == METRIC_NAME {
            continue;
        }
        if matches!(matcher.op, MatchOp::Equal) && !seen.contains(&matcher.name) {
            labels.set(&matcher.name, &matcher.value);
            seen.insert(matcher.name.clone());
        } else {
            labels.remove(&matcher.name);
        }
    }
    labels
}

fn date_function(name: &str) -> fn(f64) -> f64 {
    match name {
        "day_of_month" => |v| civil(v).map_or(f64::NAN, |c| c.day as f64),
        "day_of_week" => |v| civil(v).map_or(f64::NAN, |c| c.weekday as f64),
        "day_of_year" => |v| civil(v).map_or(f64::NAN, |c| c.day_of_year as f64),
        "days_in_month" => |v| civil(v).map_or(f64::NAN, |c| days_in_month(c.year, c.month) as f64),
        "hour" => |v| civil(v).map_or(f64::NAN, |c| c.hour as f64),
        "minute" => |v| civil(v).map_or(f64::NAN, |c| c.minute as f64),
        "month" => |v| civil(v).map_or(f64::NAN, |c| c.month as f64),
        _ => |v| civil(v).map_or(f64::NAN, |c| c.year as f64),
    }
}

struct Civil {
    year: i64,
    month: u32,
    day: u32,
    hour: u32,
    minute: u32,
    weekday: u32,
    day_of_year: u32,
}

fn is_leap(year: i64) -> bool {
    (year % 4 == 0 && year % 100 != 0) || year % 400 == 0
}

fn days_in_month(year: i64, month: u32) -> u32 {
    match month {
        1 | 3 | 5 | 7 | 8 | 10 | 12 => 31,
        4 | 6 | 9 | 11 => 30,
        _ if is_leap(year) => 29,
        _ => 28,
    }
}

/// UTC calendar fields of a Unix time in seconds (Howard Hinnant's algorithm).
fn civil(seconds: f64) -> Option<Civil> {
    if !seconds.is_finite() {
        return None;
    }
    let secs = seconds.floor() as i64;
    let days = secs.div_euclid(86_400);
    let in_day = secs.rem_euclid(86_400);
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let mut year = yoe + era * 400;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let month = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    if month <= 2 {
        year += 1;
    }
    let cumulative = [0, 31, 59, 90, 120, 151, 181, 212, 243, 273, 304, 334];
    let mut day_of_year = cumulative[(month - 1) as usize] + day;
    if month > 2 && is_leap(year) {
        day_of_year += 1;
    }
    Some(Civil {
        year,
        month,
        day,
        hour: (in_day / 3600) as u32,
        minute: ((in_day % 3600) / 60) as u32,
        weekday: (days + 4).rem_euclid(7) as u32,
        day_of_year,
    })
}

/// Go's `ParseFloat` for bucket bounds.
fn parse_go_float(text: &str) -> Option<f64> {
    let lower = text.to_ascii_lowercase();
    match lower.trim_start_matches(['+', '-']) {
        "inf" | "infinity" => {
            return Some(if lower.starts_with('-') {
                f64::NEG_INFINITY
            } else {
                f64::INFINITY
            });
        }
        "nan" => return Some(f64::NAN),
        _ => {}
    }
    if text.is_empty()
        || text
            .contains(|c: char| !(c.is_ascii_digit() || matches!(c, '.' | 'e' | 'E' | '+' | '-')))
    {
        return None;
    }
    text.parse::<f64>().ok()
}

/// Groups classic-histogram bucket series by their labels without `le`;
/// yields the output labels (no `le`, no name) and the buckets.
fn classic_histograms(
    ev: &mut Evaluator<'_>,
    samples: Vec<Sample>,
    arg: &Expr,
) -> Vec<(Labels, Vec<(f64, f64)>)> {
    let mut order: Vec<(Labels, Vec<(f64, f64)>)> = Vec::new();
    let mut index_by_signature: std::collections::HashMap<Labels, usize> =
        std::collections::HashMap::new();
    for sample in samples {
        let le = sample.labels.get("le");
        let Some(upper_bound) = parse_go_float(le) else {
            let message = format!(
                "bucket label \"le\" is missing or has a malformed value of {le:?}{}",
                metric_name_suffix(sample.labels.metric_name())
            );
            ev.warn(message, arg);
            continue;
        };
        let mut signature = (*sample.labels).clone();
        signature.remove("le");
        let index = match index_by_signature.get(&signature) {
            Some(index) => *index,
            None => {
                let mut output = signature.clone();
                output.remove(METRIC_NAME);
                index_by_signature.insert(signature, order.len());
                order.push((output, Vec::new()));
                order.len() - 1
            }
        };
        order[index].1.push((upper_bound, sample.v));
    }
    order
}

fn metric_name_suffix(name: &str) -> String {
    if name.is_empty() {
        String::new()
    } else {
        format!(" for metric name {name:?}")
    }
}

fn monotonicity_message(labels: &Labels) -> String {
    format!(
        "input to histogram_quantile needed to be fixed for monotonicity (see https://prometheus.io/docs/prometheus/latest/querying/functions/#histogram_quantile){}",
        metric_name_suffix(labels.metric_name())
    )
}

fn sort_and_coalesce(buckets: &mut Vec<(f64, f64)>) {
    buckets.sort_by(|a, b| a.0.partial_cmp(&b.0).unwrap_or(std::cmp::Ordering::Equal));
    let mut merged: Vec<(f64, f64)> = Vec::with_capacity(buckets.len());
    for bucket in buckets.iter() {
        match merged.last_mut() {
            Some(last) if last.0 == bucket.0 => last.1 += bucket.1,
            _ => merged.push(*bucket),
        }
    }
    *buckets = merged;
}

fn almost_equal(a: f64, b: f64, epsilon: f64) -> bool {
    const MIN_NORMAL: f64 = 2.2250738585072014e-308;
    if a.is_nan() && b.is_nan() {
        return true;
    }
    if a == b {
        return true;
    }
    let abs_sum = a.abs() + b.abs();
    let diff = (a - b).abs();
    if a == 0.0 || b == 0.0 || abs_sum < MIN_NORMAL {
        return diff < epsilon * MIN_NORMAL;
    }
    diff / abs_sum.min(f64::MAX) < epsilon
}

/// The q-quantile of classic buckets `(upper bound, cumulative count)`, and
/// whether the counts had to be forced monotonic.
fn bucket_quantile(q: f64, buckets: &mut Vec<(f64, f64)>) -> (f64, bool) {
    if q.is_nan() {
        return (f64::NAN, false);
    }
    if q < 0.0 {
        return (f64::NEG_INFINITY, false);
    }
    if q > 1.0 {
        return (f64::INFINITY, false);
    }
    buckets.sort_by(|a, b| a.0.partial_cmp(&b.0).unwrap_or(std::cmp::Ordering::Equal));
    if buckets.last().is_none_or(|b| b.0 != f64::INFINITY) {
        return (f64::NAN, false);
    }
    sort_and_coalesce(buckets);
    let mut forced = false;
    let mut previous = buckets[0].1;
    for bucket in buckets.iter_mut().skip(1) {
        let current = bucket.1;
        if current == previous {
            continue;
        }
        if almost_equal(previous, current, 1e-12) {
            bucket.1 = previous;
            continue;
        }
        if current < previous {
            bucket.1 = previous;
            forced = true;
            continue;
        }
        previous = current;
    }
    if buckets.len() < 2 {
        return (f64::NAN, forced);
    }
    let observations = buckets[buckets.len() - 1].1;
    if observations == 0.0 {
        return (f64::NAN, forced);
    }
    let mut rank = q * observations;
    let searchable = buckets.len() - 1;
    let b = buckets[..searchable].partition_point(|bucket| bucket.1 < rank);
    let value = if b == buckets.len() - 1 {
        buckets[buckets.len() - 2].0
    } else if b == 0 && buckets[0].0 <= 0.0 {
        buckets[0].0
    } else {
        let mut bucket_start = 0.0;
        let bucket_end = buckets[b].0;
        let mut count = buckets[b].1;
        if b > 0 {
            bucket_start = buckets[b - 1].0;
            count -= buckets[b - 1].1;
            rank -= buckets[b - 1].1;
        }
        bucket_start + (bucket_end - bucket_start) * (rank / count)
    };
    (value, forced)
}

fn bucket_fraction(lower: f64, upper: f64, buckets: &mut Vec<(f64, f64)>) -> f64 {
    buckets.sort_by(|a, b| a.0.partial_cmp(&b.0).unwrap_or(std::cmp::Ordering::Equal));
    if buckets.last().is_none_or(|b| b.0 != f64::INFINITY) {
        return f64::NAN;
    }
    sort_and_coalesce(buckets);
    let count = buckets[buckets.len() - 1].1;
    if count == 0.0 || lower.is_nan() || upper.is_nan() {
        return f64::NAN;
    }
    if lower >= upper {
        return 0.0;
    }
    let mut rank = 0.0;
    let (mut lower_rank, mut upper_rank) = (0.0, 0.0);
    let (mut lower_set, mut upper_set) = (false, false);
    let mut lower_bound = if buckets[0].0 <= 0.0 {
        f64::NEG_INFINITY
    } else {
        0.0
    };
    for (index, bucket) in buckets.iter().enumerate() {
        if index > 0 {
            lower_bound = buckets[index - 1].0;
        }
        let upper_bound = bucket.0;
        let interpolate = |v: f64| {
            if lower_bound == f64::NEG_INFINITY {
                return bucket.1;
            }
            rank + (bucket.1 - rank) * (v - lower_bound) / (upper_bound - lower_bound)
        };
        if !lower_set && lower_bound >= lower {
            lower_rank = rank;
            lower_set = true;
        }
        if !upper_set && lower_bound >= upper {
            upper_rank = rank;
            upper_set = true;
        }
        if lower_set && upper_set {
            break;
        }
        if !lower_set && lower_bound < lower && upper_bound > lower {
            lower_rank = interpolate(lower);
            lower_set = true;
        }
        if !upper_set && lower_bound < upper && upper_bound > upper {
            upper_rank = interpolate(upper);
            upper_set = true;
        }
        if lower_set && upper_set {
            break;
        }
        rank = bucket.1;
    }
    if !lower_set || lower_rank > count {
        lower_rank = count;
    }
    if !upper_set || upper_rank > count {
        upper_rank = count;
    }
    (upper_rank - lower_rank) / count
}

/// OpenMetrics float text: integers keep a trailing `.0`.
fn format_openmetrics_float(value: f64) -> String {
    if value.is_finite() && value == value.trunc() && value.abs() < 1e15 {
        format!("{value:.1}")
    } else {
        format_float_plain(value)
    }
}
