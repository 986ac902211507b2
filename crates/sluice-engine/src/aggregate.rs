//! Aggregation operators (`sum`, `avg`, `topk`, `quantile`, `count_values`, ...).

use std::collections::HashMap;
use std::sync::Arc;

use promql_parser::parser::{AggregateExpr, Expr, LabelModifier};

use crate::EngineError;
use crate::eval::{Evaluator, Sample, Value, exec_err};
use crate::hashing::{FastMap, KeySpec};
use crate::labels::{Labels, METRIC_NAME};

/// Neumaier-compensated addition, as Prometheus sums floats: returns the new
/// sum and compensation.
pub(crate) fn kahan_inc(inc: f64, sum: f64, compensation: f64) -> (f64, f64) {
    let total = sum + inc;
    let new_compensation = if total.is_infinite() {
        0.0
    } else if sum.abs() >= inc.abs() {
        compensation + ((sum - total) + inc)
    } else {
        compensation + ((inc - total) + sum)
    };
    (total, new_compensation)
}

/// Orders NaN first, then ascending, like Prometheus' value heap.
pub(crate) fn nan_first_less(a: f64, b: f64) -> bool {
    a.is_nan() || a < b
}

/// The φ-quantile of `values` by linear interpolation between closest ranks.
pub(crate) fn quantile(q: f64, values: &mut [f64]) -> f64 {
    if values.is_empty() || q.is_nan() {
        return f64::NAN;
    }
    if q < 0.0 {
        return f64::NEG_INFINITY;
    }
    if q > 1.0 {
        return f64::INFINITY;
    }
    values.sort_by(|a, b| {
        if nan_first_less(*a, *b) {
            std::cmp::Ordering::Less
        } else if nan_first_less(*b, *a) {
            std::cmp::Ordering::Greater
        } else {
            std::cmp::Ordering::Equal
        }
    });
    let n = values.len() as f64;
    let rank = q * (n - 1.0);
    let lower = rank.floor().max(0.0);
    let upper = (lower + 1.0).min(n - 1.0);
    let weight = rank - rank.floor();
    values[lower as usize] * (1.0 - weight) + values[upper as usize] * weight
}

/// Go's `strconv.FormatFloat(f, 'f', -1, 64)`.
pub(crate) fn format_float_plain(value: f64) -> String {
    if value.is_nan() {
        "NaN".to_string()
    } else if value.is_infinite() {
        if value > 0.0 {
            "+Inf".to_string()
        } else {
            "-Inf".to_string()
        }
    } else {
        format!("{value}")
    }
}

/// The aggregations that fold a group's values into one.
#[derive(Clone, Copy, PartialEq, Eq)]
pub(crate) enum Fold {
    Sum,
    Avg,
    Max,
    Min,
    Count,
    Group,
    Stddev,
    Stdvar,
    Quantile,
}

impl Fold {
    pub(crate) fn named(op: &str) -> Option<Fold> {
        Some(match op {
            "sum" => Fold::Sum,
            "avg" => Fold::Avg,
            "max" => Fold::Max,
            "min" => Fold::Min,
            "count" => Fold::Count,
            "group" => Fold::Group,
            "stddev" => Fold::Stddev,
            "stdvar" => Fold::Stdvar,
            "quantile" => Fold::Quantile,
            _ => return None,
        })
    }
}

/// One output group of an aggregation at one step, as its members' values
/// arrive in the input's order (the order matters: sums are compensated,
/// not exact).
pub(crate) struct Group {
    pub(crate) labels: Arc<Labels>,
    value: f64,
    compensation: f64,
    mean: f64,
    count: f64,
    incremental_mean: bool,
    pub(crate) drop_name: bool,
    values: Vec<f64>,
}

impl Group {
    /// A group whose first member has value `f`.
    pub(crate) fn new(fold: Fold, f: f64, labels: Arc<Labels>, drop_name: bool) -> Group {
        let mut group = Group {
            labels,
            value: f,
            compensation: 0.0,
            mean: f,
            count: 1.0,
            incremental_mean: false,
            drop_name,
            values: Vec::new(),
        };
        match fold {
            Fold::Stddev | Fold::Stdvar => {
                group.value = if f.is_nan() || f.is_infinite() {
                    f64::NAN
                } else {
                    0.0
                }
            }
            Fold::Quantile => group.values.push(f),
            Fold::Group => group.value = 1.0,
            _ => {}
        }
        group
    }

    /// Adds a further member's value.
    pub(crate) fn add(&mut self, fold: Fold, f: f64) {
        match fold {
            Fold::Sum => {
                (self.value, self.compensation) = kahan_inc(f, self.value, self.compensation);
            }
            Fold::Avg => self.add_to_mean(f),
            Fold::Max => {
                if self.value < f || self.value.is_nan() {
                    self.value = f;
                }
            }
            Fold::Min => {
                if self.value > f || self.value.is_nan() {
                    self.value = f;
                }
            }
            Fold::Count => self.count += 1.0,
            Fold::Group => {}
            Fold::Stddev | Fold::Stdvar => {
                self.count += 1.0;
                let delta = f - self.mean;
                self.mean += delta / self.count;
                self.value += delta * (f - self.mean);
            }
            Fold::Quantile => self.values.push(f),
        }
    }

    fn add_to_mean(&mut self, f: f64) {
        self.count += 1.0;
        if !self.incremental_mean {
            let (sum, compensation) = kahan_inc(f, self.value, self.compensation);
            if !sum.is_infinite() {
                self.value = sum;
                self.compensation = compensation;
                return;
            }
            // The running sum overflowed: switch to an incremental mean.
            self.incremental_mean = true;
            self.mean = self.value / (self.count - 1.0);
            self.compensation /= self.count - 1.0;
        }
        let q_factor = (self.count - 1.0) / self.count;
        (self.mean, self.compensation) = kahan_inc(
            f / self.count,
            q_factor * self.mean,
            q_factor * self.compensation,
        );
    }

    /// The aggregated value; `q` is quantile's parameter.
    pub(crate) fn value(&mut self, fold: Fold, q: f64) -> f64 {
        match fold {
            Fold::Sum => self.value + self.compensation,
            Fold::Avg if self.incremental_mean => self.mean + self.compensation,
            Fold::Avg => self.value / self.count + self.compensation / self.count,
            Fold::Count => self.count,
            Fold::Stdvar => self.value / self.count,
            Fold::Stddev => (self.value / self.count).sqrt(),
            Fold::Quantile => quantile(q, &mut self.values),
            Fold::Max | Fold::Min | Fold::Group => self.value,
        }
    }
}

pub(crate) fn key_spec(modifier: &Option<LabelModifier>) -> KeySpec<'_> {
    match modifier {
        None => KeySpec::Nothing,
        Some(LabelModifier::Include(names)) => KeySpec::Only(&names.labels),
        Some(LabelModifier::Exclude(names)) => KeySpec::AllBut(&names.labels),
    }
}

fn grouping_labels(labels: &Labels, modifier: &Option<LabelModifier>) -> Labels {
    match modifier {
        None => Labels::empty(),
        Some(LabelModifier::Include(names)) => labels.keep_only(&names.labels),
        Some(LabelModifier::Exclude(names)) => {
            let mut without = labels.without(&names.labels);
            without.remove(METRIC_NAME);
            without
        }
    }
}

pub(crate) fn eval_aggregate(
    ev: &mut Evaluator<'_>,
    aggregate: &AggregateExpr,
    ts: i64,
) -> Result<Value, EngineError> {
    let op = aggregate.op.to_string();
    let op = op.as_str();
    if op == "count_values" {
        return count_values(ev, aggregate, ts);
    }
    let param = match (&aggregate.param, op) {
        (Some(param), "topk" | "bottomk" | "limitk" | "limit_ratio" | "quantile") => {
            Some(ev.eval_scalar(param, ts)?)
        }
        _ => None,
    };
    let input = ev.eval_vector(&aggregate.expr, ts)?;
    let param_expr: Option<&Expr> = aggregate.param.as_deref();
    match op {
        "topk" | "bottomk" | "limitk" => {
            let k_param = param.unwrap_or(f64::NAN);
            if k_param.is_nan() {
                return exec_err("Parameter value is NaN");
            }
            if !(i64::MIN as f64..i64::MAX as f64).contains(&k_param) {
                return exec_err(format!("Scalar value {k_param} overflows int64"));
            }
            let k = (k_param as i64).min(input.len() as i64);
            if k < 1 {
                return Ok(Value::Vector(Vec::new()));
            }
            Ok(Value::Vector(select_k(
                op,
                k as usize,
                input,
                &aggregate.modifier,
            )))
        }
        "limit_ratio" => {
            let ratio_param = param.unwrap_or(f64::NAN);
            if ratio_param.is_nan() {
                return exec_err("Ratio value is NaN");
            }
            let ratio = ratio_param.clamp(-1.0, 1.0);
            if ratio != ratio_param
                && let Some(param_expr) = param_expr
            {
                ev.warn(
                    format!(
                        "ratio value should be between -1 and 1, got {}, capping to {}",
                        format_float_plain(ratio_param),
                        format_float_plain(ratio)
                    ),
                    param_expr,
                );
            }
            if ratio == 0.0 {
                return Ok(Value::Vector(Vec::new()));
            }
            let kept = input
                .into_iter()
                .filter(|s| ratio_sample_kept(ratio, &s.labels))
                .collect();
            Ok(Value::Vector(kept))
        }
        _ => {
            if op == "quantile"
                && let Some(q) = param
                && !(0.0..=1.0).contains(&q)
                && let Some(param_expr) = param_expr
            {
                ev.warn(
                    format!(
                        "quantile value should be between 0 and 1, got {}",
                        format_float_plain(q)
                    ),
                    param_expr,
                );
            }
            let node = aggregate as *const AggregateExpr as usize;
            Ok(Value::Vector(simple_aggregate(
                ev,
                node,
                op,
                param.unwrap_or(f64::NAN),
                input,
                &aggregate.modifier,
                ts,
            )?))
        }
    }
}

fn simple_aggregate(
    ev: &mut Evaluator<'_>,
    node: usize,
    op: &str,
    q: f64,
    input: Vec<Sample>,
    modifier: &Option<LabelModifier>,
    ts: i64,
) -> Result<Vec<Sample>, EngineError> {
    let Some(fold) = Fold::named(op) else {
        return exec_err(format!("aggregation {op:?} is not supported"));
    };
    let mut groups: Vec<Group> = Vec::new();
    // Groups are found by a hash of their labels; the labels themselves
    // are only built when a group is first seen.
    let spec = key_spec(modifier);
    let mut index_by_key: FastMap<u64, usize> = FastMap::default();
    for sample in input {
        let key = ev.group_key(node, &sample.labels, |labels| spec.hash(labels));
        match index_by_key.get(&key) {
            Some(index) => {
                let group = &mut groups[*index];
                group.drop_name |= sample.drop_name;
                group.add(fold, sample.v);
            }
            None => {
                let labels = Arc::new(spec.labels(&sample.labels));
                index_by_key.insert(key, groups.len());
                groups.push(Group::new(fold, sample.v, labels, sample.drop_name));
            }
        }
    }
    let mut out = Vec::with_capacity(groups.len());
    for mut group in groups {
        let v = group.value(fold, q);
        out.push(Sample {
            labels: group.labels,
            t: ts,
            v,
            drop_name: group.drop_name,
        });
    }
    Ok(out)
}

/// `topk`, `bottomk` and `limitk` as Prometheus runs them: a Go heap per
/// group, least wanted value on top, replaced only by a strictly better
/// newcomer; `topk` and `bottomk` then Go-sort each heap, best first. Ties
/// (equal values at the edge of the k) are chosen and ordered as
/// Prometheus's heap and sort leave them.
fn select_k(
    op: &str,
    k: usize,
    input: Vec<Sample>,
    modifier: &Option<LabelModifier>,
) -> Vec<Sample> {
    // The heap's order: the value to drop first on top.
    let heap_less: fn(&Sample, &Sample) -> bool = match op {
        "bottomk" => |a, b| reverse_less(a.v, b.v),
        _ => |a, b| nan_first_less(a.v, b.v),
    };
    let mut groups: Vec<Vec<Sample>> = Vec::new();
    let spec = key_spec(modifier);
    let mut index_by_key: FastMap<u64, usize> = FastMap::default();
    for sample in input {
        let key = spec.hash(&sample.labels);
        let index = *index_by_key.entry(key).or_insert_with(|| {
            groups.push(Vec::new());
            groups.len() - 1
        });
        let heap = &mut groups[index];
        if heap.len() < k {
            crate::gosort::heap_push(heap, sample, heap_less);
            continue;
        }
        let top = heap[0].v;
        let better = match op {
            "topk" => top < sample.v,
            "bottomk" => top > sample.v,
            _ => false,
        };
        if better || (op != "limitk" && top.is_nan() && !sample.v.is_nan()) {
            heap[0] = sample;
            if k > 1 {
                crate::gosort::heap_fix(heap, 0, heap_less);
            }
        }
    }
    let mut out = Vec::new();
    for mut heap in groups {
        if op != "limitk" {
            crate::gosort::sort(&mut heap, |a, b| heap_less(b, a));
        }
        out.extend(heap);
    }
    out
}

/// NaN first, then descending: the order of Prometheus' reverse value heap.
fn reverse_less(a: f64, b: f64) -> bool {
    a.is_nan() || a > b
}

/// Whether `limit_ratio` keeps a series: a deterministic position in [0, 1)
/// derived from its labels, compared with the ratio (from the top for a
/// negative ratio, so that `r` and `r - 1` select complementary sets).
fn ratio_sample_kept(ratio: f64, labels: &Labels) -> bool {
    let offset = crate::labels::prometheus_hash(labels) as f64 / u64::MAX as f64;
    (ratio >= 0.0 && offset < ratio) || (ratio < 0.0 && offset >= 1.0 + ratio)
}

fn count_values(
    ev: &mut Evaluator<'_>,
    aggregate: &AggregateExpr,
    ts: i64,
) -> Result<Value, EngineError> {
    let value_label = match aggregate.param.as_deref() {
        Some(Expr::StringLiteral(s)) => s.val.clone(),
        Some(other) => match ev.eval(other, ts)? {
            Value::String(s) => s,
            _ => return exec_err("count_values requires a string parameter"),
        },
        None => return exec_err("count_values requires a string parameter"),
    };
    if ev.is_invalid_label_name(&value_label) {
        return exec_err(format!(
            "invalid label name {}",
            crate::eval::go_quote_bytes(&value_label)
        ));
    }
    let input = ev.eval_vector(&aggregate.expr, ts)?;
    // Prometheus adds the value label to the grouping unless it is a
    // `without` list; with no modifier at all that means `by (value)`.
    let modifier = match &aggregate.modifier {
        Some(LabelModifier::Include(names)) => {
            let mut names = names.clone();
            names.labels.push(value_label.clone());
            Some(LabelModifier::Include(names))
        }
        None => Some(LabelModifier::Include(promql_parser::label::Labels::new(
            vec![value_label.as_str()],
        ))),
        other => other.clone(),
    };
    let mut counts: Vec<(Labels, f64)> = Vec::new();
    let mut index_by_labels: HashMap<Labels, usize> = HashMap::new();
    for sample in input {
        let mut labels = (*sample.labels).clone();
        labels.set(&value_label, &format_float_plain(sample.v));
        let key = grouping_labels(&labels, &modifier);
        match index_by_labels.get(&key) {
            Some(index) => counts[*index].1 += 1.0,
            None => {
                index_by_labels.insert(key.clone(), counts.len());
                counts.push((key, 1.0));
            }
        }
    }
    Ok(Value::Vector(
        counts
            .into_iter()
            .map(|(labels, count)| Sample {
                labels: Arc::new(labels),
                t: ts,
                v: count,
                drop_name: false,
            })
            .collect(),
    ))
}
