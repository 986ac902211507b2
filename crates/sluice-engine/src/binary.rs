//! Binary operators: arithmetic, comparison (with and without `bool`), the
//! set operators, and vector matching (`on`, `ignoring`, `group_left`,
//! `group_right`).

use std::sync::Arc;

use promql_parser::parser::{BinModifier, BinaryExpr, LabelModifier, VectorMatchCardinality};

use crate::EngineError;
use crate::eval::{Evaluator, Sample, Value, exec_err};
use crate::hashing::{FastMap, FastSet, KeySpec};
use crate::labels::{Labels, METRIC_NAME};

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Op {
    Add,
    Sub,
    Mul,
    Div,
    Mod,
    Pow,
    Atan2,
    Eq,
    Ne,
    Gt,
    Lt,
    Ge,
    Le,
    And,
    Or,
    Unless,
}

impl Op {
    fn parse(text: &str) -> Option<Op> {
        Some(match text {
            "+" => Op::Add,
            "-" => Op::Sub,
            "*" => Op::Mul,
            "/" => Op::Div,
            "%" => Op::Mod,
            "^" => Op::Pow,
            "atan2" => Op::Atan2,
            "==" => Op::Eq,
            "!=" => Op::Ne,
            ">" => Op::Gt,
            "<" => Op::Lt,
            ">=" => Op::Ge,
            "<=" => Op::Le,
            "and" => Op::And,
            "or" => Op::Or,
            "unless" => Op::Unless,
            _ => return None,
        })
    }

    fn is_comparison(self) -> bool {
        matches!(self, Op::Eq | Op::Ne | Op::Gt | Op::Lt | Op::Ge | Op::Le)
    }
}

/// Applies `op`; for comparisons the bool says whether the pair passes and
/// the float is the left value.
fn apply(op: Op, lhs: f64, rhs: f64) -> (f64, bool) {
    match op {
        Op::Add => (lhs + rhs, true),
        Op::Sub => (lhs - rhs, true),
        Op::Mul => (lhs * rhs, true),
        Op::Div => (lhs / rhs, true),
        Op::Mod => (lhs % rhs, true),
        Op::Pow => (lhs.powf(rhs), true),
        Op::Atan2 => (lhs.atan2(rhs), true),
        Op::Eq => (lhs, lhs == rhs),
        Op::Ne => (lhs, lhs != rhs),
        Op::Gt => (lhs, lhs > rhs),
        Op::Lt => (lhs, lhs < rhs),
        Op::Ge => (lhs, lhs >= rhs),
        Op::Le => (lhs, lhs <= rhs),
        Op::And | Op::Or | Op::Unless => (lhs, true),
    }
}

fn bool_to_float(b: bool) -> f64 {
    if b { 1.0 } else { 0.0 }
}

/// How two vectors are matched: the labels that form the join key.
struct Matching<'m> {
    on: bool,
    names: Vec<String>,
    card: &'m VectorMatchCardinality,
}

impl Matching<'_> {
    fn spec(&self) -> KeySpec<'_> {
        if self.on {
            KeySpec::Only(&self.names)
        } else {
            KeySpec::AllBut(&self.names)
        }
    }

    /// The join key of a series, as a hash.
    fn signature(&self, labels: &Labels) -> u64 {
        self.spec().hash(labels)
    }

    /// The join key of a series, as labels (for messages and fill values).
    fn signature_labels(&self, labels: &Labels) -> Labels {
        self.spec().labels(labels)
    }
}

const ONE_TO_ONE: VectorMatchCardinality = VectorMatchCardinality::OneToOne;

pub(crate) fn eval_binary(
    ev: &mut Evaluator<'_>,
    binary: &BinaryExpr,
    ts: i64,
) -> Result<Value, EngineError> {
    let op_text = binary.op.to_string();
    let Some(op) = Op::parse(&op_text) else {
        return exec_err(format!("binary operator {op_text:?} is not supported"));
    };
    let return_bool = binary.modifier.as_ref().is_some_and(|m| m.return_bool);
    let lhs = ev.eval(&binary.lhs, ts)?;
    let rhs = ev.eval(&binary.rhs, ts)?;
    match (lhs, rhs) {
        (Value::Scalar(l), Value::Scalar(r)) => {
            let (value, keep) = apply(op, l, r);
            if op.is_comparison() {
                // The parser only lets scalar comparisons through with `bool`.
                return Ok(Value::Scalar(bool_to_float(keep)));
            }
            Ok(Value::Scalar(value))
        }
        (Value::Vector(vector), Value::Scalar(scalar)) => Ok(Value::Vector(vector_scalar(
            op,
            vector,
            scalar,
            false,
            return_bool,
        ))),
        (Value::Scalar(scalar), Value::Vector(vector)) => Ok(Value::Vector(vector_scalar(
            op,
            vector,
            scalar,
            true,
            return_bool,
        ))),
        (Value::Vector(left), Value::Vector(right)) => {
            let modifier = binary.modifier.clone().unwrap_or_default();
            let matching = matching_of(&modifier);
            match op {
                Op::And => Ok(Value::Vector(set_and(&matching, left, right))),
                Op::Or => Ok(Value::Vector(set_or(&matching, left, right))),
                Op::Unless => Ok(Value::Vector(set_unless(&matching, left, right))),
                _ => Ok(Value::Vector(vector_vector(
                    ev,
                    binary as *const BinaryExpr as usize,
                    op,
                    &matching,
                    &modifier,
                    left,
                    right,
                    return_bool,
                )?)),
            }
        }
        _ => exec_err("binary operands must be scalars or instant vectors"),
    }
}

fn matching_of(modifier: &BinModifier) -> Matching<'_> {
    let (on, names) = match &modifier.matching {
        Some(LabelModifier::Include(labels)) => (true, labels.labels.clone()),
        Some(LabelModifier::Exclude(labels)) => (false, labels.labels.clone()),
        None => (false, Vec::new()),
    };
    Matching {
        on,
        names,
        card: &modifier.card,
    }
}

fn vector_scalar(
    op: Op,
    vector: Vec<Sample>,
    scalar: f64,
    scalar_on_left: bool,
    return_bool: bool,
) -> Vec<Sample> {
    let mut out = Vec::with_capacity(vector.len());
    for mut sample in vector {
        let (l, r) = if scalar_on_left {
            (scalar, sample.v)
        } else {
            (sample.v, scalar)
        };
        let (mut value, mut keep) = apply(op, l, r);
        if op.is_comparison() && scalar_on_left {
            // A comparison keeps the vector's value whichever side it is on.
            value = r;
        }
        if return_bool {
            value = bool_to_float(keep);
            keep = true;
        }
        if keep {
            sample.v = value;
            if !op.is_comparison() || return_bool {
                sample.drop_name = true;
            }
            out.push(sample);
        }
    }
    out
}

fn set_and(matching: &Matching<'_>, left: Vec<Sample>, right: Vec<Sample>) -> Vec<Sample> {
    let right_sigs: FastSet<u64> = right
        .iter()
        .map(|s| matching.signature(&s.labels))
        .collect();
    left.into_iter()
        .filter(|s| right_sigs.contains(&matching.signature(&s.labels)))
        .collect()
}

fn set_or(matching: &Matching<'_>, left: Vec<Sample>, right: Vec<Sample>) -> Vec<Sample> {
    let left_sigs: FastSet<u64> = left.iter().map(|s| matching.signature(&s.labels)).collect();
    let mut out = left;
    out.extend(
        right
            .into_iter()
            .filter(|s| !left_sigs.contains(&matching.signature(&s.labels))),
    );
    out
}

fn set_unless(matching: &Matching<'_>, left: Vec<Sample>, right: Vec<Sample>) -> Vec<Sample> {
    let right_sigs: FastSet<u64> = right
        .iter()
        .map(|s| matching.signature(&s.labels))
        .collect();
    left.into_iter()
        .filter(|s| !right_sigs.contains(&matching.signature(&s.labels)))
        .collect()
}

#[allow(clippy::too_many_arguments)]
fn vector_vector(
    ev: &mut Evaluator<'_>,
    node: usize,
    op: Op,
    matching: &Matching<'_>,
    modifier: &BinModifier,
    left: Vec<Sample>,
    right: Vec<Sample>,
    return_bool: bool,
) -> Result<Vec<Sample>, EngineError> {
    let card = if matches!(matching.card, VectorMatchCardinality::ManyToMany) {
        &ONE_TO_ONE
    } else {
        matching.card
    };
    let fill_right = modifier.fill_values.rhs;
    let fill_left = modifier.fill_values.lhs;
    if (left.is_empty() || right.is_empty()) && fill_left.is_none() && fill_right.is_none() {
        return Ok(Vec::new());
    }
    let one_to_many = matches!(card, VectorMatchCardinality::OneToMany(_));
    let include: &[String] = match card {
        VectorMatchCardinality::ManyToOne(labels) | VectorMatchCardinality::OneToMany(labels) => {
            &labels.labels
        }
        _ => &[],
    };
    // The control flow treats the "one" side as the right; for group_right
    // the sides swap and values are swapped back when applying the operator.
    let (many, one) = if one_to_many {
        (right, left)
    } else {
        (left, right)
    };
    // Prometheus applies `fill_right` to a missing "one" side and
    // `fill_left` to a missing "many" side, whichever way round the
    // grouping goes.
    let fill_for_one = fill_right;
    let fill_for_many = fill_left;

    let mut one_by_sig: FastMap<u64, Sample> = FastMap::default();
    let mut one_order: Vec<u64> = Vec::with_capacity(one.len());
    for sample in &one {
        let sig = ev.group_key(node, &sample.labels, |labels| matching.signature(labels));
        if let Some(existing) = one_by_sig.get(&sig) {
            let side = if one_to_many { "left" } else { "right" };
            let mut first = existing.labels.to_string();
            let mut second = sample.labels.to_string();
            if first > second {
                std::mem::swap(&mut first, &mut second);
            }
            let group = matching.signature_labels(&sample.labels);
            return exec_err(format!(
                "found duplicate series for the match group {group} on the {side} hand-side of the operation: [{first}, {second}];many-to-many matching not allowed: matching labels must be unique on one side"
            ));
        }
        one_order.push(sig);
        one_by_sig.insert(sig, sample.clone());
    }

    let many_sigs: Vec<u64> = many
        .iter()
        .map(|sample| ev.group_key(node, &sample.labels, |labels| matching.signature(labels)))
        .collect();
    let is_one_to_one = matches!(card, VectorMatchCardinality::OneToOne);
    let mut matched_one_to_one: FastSet<u64> = FastSet::default();
    let mut matched_many: FastMap<u64, FastSet<u64>> = FastMap::default();
    let result_cache = &mut ev.result_metric_cache;
    let mut out = Vec::new();

    let mut do_op = |many_sample: &Sample,
                     one_sample: &Sample,
                     sig: u64,
                     out: &mut Vec<Sample>|
     -> Result<(), EngineError> {
        let (l, r) = if one_to_many {
            (one_sample.v, many_sample.v)
        } else {
            (many_sample.v, one_sample.v)
        };
        let (mut value, keep) = apply(op, l, r);
        if return_bool {
            value = bool_to_float(keep);
        }
        // The result labels depend only on the two input label sets, which
        // stay the same Arcs from step to step, so they are built once per
        // query. The cache holds the key Arcs, so their addresses stay unique.
        let key = (
            node,
            Arc::as_ptr(&many_sample.labels) as usize,
            Arc::as_ptr(&one_sample.labels) as usize,
        );
        let metric = match result_cache.get(&key) {
            Some((_, _, found)) => Arc::clone(found),
            None => {
                let built = Arc::new(result_metric(
                    &many_sample.labels,
                    &one_sample.labels,
                    op,
                    matching,
                    card,
                    include,
                ));
                if result_cache.len() >= crate::eval::POINTER_CACHE_LIMIT {
                    result_cache.clear();
                }
                result_cache.insert(
                    key,
                    (
                        Arc::clone(&many_sample.labels),
                        Arc::clone(&one_sample.labels),
                        Arc::clone(&built),
                    ),
                );
                built
            }
        };
        if is_one_to_one {
            if !matched_one_to_one.insert(sig) {
                return exec_err(
                    "multiple matches for labels: many-to-one matching must be explicit (group_left/group_right)",
                );
            }
        } else if !matched_many
            .entry(sig)
            .or_default()
            .insert(crate::hashing::hash_labels(&metric))
        {
            return exec_err(
                "multiple matches for labels: grouping labels must ensure unique matches",
            );
        }
        if !keep && !return_bool {
            return Ok(());
        }
        out.push(Sample {
            labels: metric,
            t: many_sample.t,
            v: value,
            drop_name: return_bool,
        });
        Ok(())
    };

    let mut matched_sigs: FastSet<u64> = FastSet::default();
    for (many_sample, sig) in many.iter().zip(many_sigs) {
        match one_by_sig.get(&sig) {
            Some(one_sample) => {
                matched_sigs.insert(sig);
                do_op(many_sample, one_sample, sig, &mut out)?;
            }
            None => {
                if let Some(fill) = fill_for_one {
                    let filler = Sample {
                        labels: Arc::new(matching.signature_labels(&many_sample.labels)),
                        t: many_sample.t,
                        v: fill,
                        drop_name: false,
                    };
                    do_op(many_sample, &filler, sig, &mut out)?;
                }
            }
        }
    }
    if let Some(fill) = fill_for_many {
        for sig in &one_order {
            if matched_sigs.contains(sig) {
                continue;
            }
            let one_sample = &one_by_sig[sig];
            let filler = Sample {
                labels: Arc::new(matching.signature_labels(&one_sample.labels)),
                t: one_sample.t,
                v: fill,
                drop_name: false,
            };
            do_op(&filler, one_sample, *sig, &mut out)?;
        }
    }
    Ok(out)
}

/// The labels of one result element: the "many" side's labels, minus the
/// metric name for arithmetic, reduced to the matching labels for
/// one-to-one matching, plus any `group_x` labels copied from the "one" side.
fn result_metric(
    many: &Labels,
    one: &Labels,
    op: Op,
    matching: &Matching<'_>,
    card: &VectorMatchCardinality,
    include: &[String],
) -> Labels {
    let mut labels = many.clone();
    if !op.is_comparison() {
        labels.remove(METRIC_NAME);
        labels.remove("__type__");
        labels.remove("__unit__");
    }
    if matches!(card, VectorMatchCardinality::OneToOne) {
        labels = if matching.on {
            labels.keep_only(&matching.names)
        } else {
            labels.without(&matching.names)
        };
    }
    for name in include {
        labels.set(name, one.get(name));
    }
    labels
}
