//! `info()`: enriches series with the data labels of info metrics
//! (`target_info` by default) that share their identifying labels
//! (`instance`, `job`).

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::Arc;

use promql_parser::label::{MatchOp, Matcher};
use promql_parser::parser::{Call, Expr, VectorSelector};

use crate::EngineError;
use crate::eval::{Evaluator, Sample, Value, exec_err, offset_ms};
use crate::labels::{Labels, METRIC_NAME};

const TARGET_INFO: &str = "target_info";
const IDENTIFYING_LABELS: [&str; 2] = ["instance", "job"];

fn regex_matcher(name: &str, pattern: &str) -> Result<Matcher, EngineError> {
    let regex = regex::Regex::new(&format!("^(?s:{pattern})$"))
        .map_err(|e| EngineError::Execution(format!("invalid regular expression: {e}")))?;
    Ok(Matcher {
        op: MatchOp::Re(regex),
        name: name.to_string(),
        value: pattern.to_string(),
    })
}

/// The name matchers that decide which metrics count as info metrics: the
/// given ones if any of them is positive, otherwise `.+_info` narrowed by
/// the negative ones, and `target_info` when none are given.
fn effective_name_matchers(matchers: &[Matcher]) -> Result<Vec<Matcher>, EngineError> {
    if matchers
        .iter()
        .any(|m| matches!(m.op, MatchOp::Equal | MatchOp::Re(_)))
    {
        return Ok(matchers.to_vec());
    }
    if !matchers.is_empty() {
        let mut out = vec![regex_matcher(METRIC_NAME, ".+_info")?];
        out.extend(matchers.iter().cloned());
        return Ok(out);
    }
    Ok(vec![Matcher::new(MatchOp::Equal, METRIC_NAME, TARGET_INFO)])
}

/// The `@` time and offset of the first selector of the base expression,
/// which the info series are read with.
fn base_time_and_offset(ev: &Evaluator<'_>, expr: &Expr, ts: i64) -> (i64, i64) {
    fn first_selector<'e>(expr: &'e Expr, path: &mut Vec<&'e Expr>) -> Option<&'e VectorSelector> {
        match expr {
            Expr::VectorSelector(vs) => Some(vs),
            Expr::MatrixSelector(ms) => Some(&ms.vs),
            Expr::Subquery(sq) => {
                path.push(expr);
                first_selector(&sq.expr, path)
            }
            Expr::Paren(p) => first_selector(&p.expr, path),
            Expr::Unary(u) => first_selector(&u.expr, path),
            Expr::Binary(b) => {
                first_selector(&b.lhs, path).or_else(|| first_selector(&b.rhs, path))
            }
            Expr::Aggregate(a) => first_selector(&a.expr, path),
            Expr::Call(c) => c.args.args.iter().find_map(|a| first_selector(a, path)),
            _ => None,
        }
    }
    let mut subqueries = Vec::new();
    let Some(vs) = first_selector(expr, &mut subqueries) else {
        return (ts, 0);
    };
    let mut at = ev.at_time(&vs.at);
    let mut offset = offset_ms(&vs.offset);
    for enclosing in subqueries.iter().rev() {
        if at.is_some() {
            break;
        }
        if let Expr::Subquery(sq) = enclosing {
            offset += offset_ms(&sq.offset);
            at = ev.at_time(&sq.at);
        }
    }
    (at.unwrap_or(ts), offset)
}

fn signature(name: &str, labels: &Labels) -> (String, String, String) {
    (
        name.to_string(),
        labels.get(IDENTIFYING_LABELS[0]).to_string(),
        labels.get(IDENTIFYING_LABELS[1]).to_string(),
    )
}

fn matches_all(matchers: &[Matcher], value: &str) -> bool {
    matchers.iter().all(|m| m.is_match(value))
}

pub(crate) fn eval_info(
    ev: &mut Evaluator<'_>,
    call: &Call,
    ts: i64,
) -> Result<Value, EngineError> {
    let args: Vec<&Expr> = call.args.args.iter().map(|a| a.as_ref()).collect();
    let base = ev.eval_vector(args[0], ts)?;

    // Matchers of the optional second argument, grouped by label name.
    let mut data_matchers: BTreeMap<String, Vec<Matcher>> = BTreeMap::new();
    let mut name_matchers: Vec<Matcher> = Vec::new();
    match args.get(1) {
        Some(Expr::VectorSelector(selector)) => {
            let mut all = selector.matchers.matchers.clone();
            if let Some(name) = &selector.name {
                all.push(Matcher::new(MatchOp::Equal, METRIC_NAME, name));
            }
            for matcher in all {
                if matcher.name == METRIC_NAME {
                    name_matchers.push(matcher.clone());
                }
                data_matchers
                    .entry(matcher.name.clone())
                    .or_default()
                    .push(matcher);
            }
        }
        Some(_) => return exec_err("info() expects a label selector as its second argument"),
        None => name_matchers.push(Matcher::new(MatchOp::Equal, METRIC_NAME, TARGET_INFO)),
    }
    let info_names = effective_name_matchers(&name_matchers)?;
    // Base series that are themselves info metrics pass through unchanged.
    let ignored: Vec<bool> = base
        .iter()
        .map(|s| matches_all(&info_names, s.labels.metric_name()))
        .collect();

    let mut identifying: BTreeMap<&str, BTreeSet<String>> = BTreeMap::new();
    for (sample, ignore) in base.iter().zip(&ignored) {
        if *ignore {
            continue;
        }
        for name in IDENTIFYING_LABELS {
            let value = sample.labels.get(name);
            if !value.is_empty() {
                identifying
                    .entry(name)
                    .or_default()
                    .insert(value.to_string());
            }
        }
    }
    let data_name_matchers: Vec<Matcher> = data_matchers.remove(METRIC_NAME).unwrap_or_default();

    let mut info_series: Vec<(Arc<Labels>, i64)> = Vec::new();
    if !identifying.is_empty() {
        let mut selector: Vec<Matcher> = Vec::new();
        for (name, values) in &identifying {
            let alternatives: Vec<String> = values.iter().map(|v| regex::escape(v)).collect();
            selector.push(regex_matcher(name, &alternatives.join("|"))?);
        }
        for matchers in data_matchers.values() {
            selector.extend(matchers.iter().cloned());
        }
        selector.extend(effective_name_matchers(&data_name_matchers)?);
        let (at, offset) = base_time_and_offset(ev, args[0], ts);
        info_series = ev.select_latest(&selector, at - offset)?;
    }

    // The latest info series per (name, identifying labels).
    let mut by_signature: HashMap<(String, String, String), (Arc<Labels>, i64)> = HashMap::new();
    let mut info_metric_names: BTreeSet<String> = BTreeSet::new();
    for (labels, sample_time) in info_series {
        let name = labels.metric_name().to_string();
        let key = signature(&name, &labels);
        info_metric_names.insert(name);
        match by_signature.get(&key) {
            Some((existing, existing_time)) if *existing_time == sample_time => {
                return exec_err(format!(
                    "found duplicate series for info metric: existing {existing} @ {existing_time}, new {labels} @ {sample_time}"
                ));
            }
            Some((_, existing_time)) if *existing_time > sample_time => {}
            _ => {
                by_signature.insert(key, (labels, sample_time));
            }
        }
    }

    let empty_accepted = data_matchers.values().flatten().all(|m| m.is_match(""));
    let mut out: Vec<Sample> = Vec::with_capacity(base.len());
    for (sample, ignore) in base.into_iter().zip(ignored) {
        if ignore {
            out.push(sample);
            continue;
        }
        let mut added = Labels::empty();
        let mut seen_any = false;
        for info_name in &info_metric_names {
            let Some((info_labels, _)) = by_signature.get(&signature(info_name, &sample.labels))
            else {
                continue;
            };
            for label in info_labels.iter() {
                if label.name == METRIC_NAME {
                    continue;
                }
                if !data_matchers.is_empty() && !data_matchers.contains_key(&label.name) {
                    continue;
                }
                let already = added.get(&label.name);
                if !already.is_empty() && already != label.value {
                    return exec_err(format!("conflicting label: {}", label.name));
                }
                if sample.labels.has(&label.name) {
                    continue;
                }
                added.set(&label.name, &label.value);
            }
            seen_any = true;
        }
        if !seen_any && !empty_accepted {
            continue;
        }
        if added.is_empty() {
            out.push(sample);
            continue;
        }
        let mut enriched = (*sample.labels).clone();
        for label in added.iter() {
            enriched.set(&label.name, &label.value);
        }
        out.push(Sample {
            labels: Arc::new(enriched),
            ..sample
        });
    }
    Ok(Value::Vector(out))
}
