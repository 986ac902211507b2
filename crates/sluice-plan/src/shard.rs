//! Query sharding by rewriting the syntax tree, after the rules of Mimir's
//! query-frontend (`querymiddleware/astmapper`): an aggregation that can be
//! computed per shard of the series and combined (`sum`, `count`, `min`,
//! `max`, `group`, and `avg` as a sum over a count) is sent as `n` legs,
//! each reading one shard through a `__query_shard__="i_of_n"` matcher on
//! every selector, and re-aggregated above them. Everything else stays
//! above the legs and is evaluated over their answers.
//!
//! The query above the legs (the *outer* expression) is the original tree
//! with each sharded aggregation replaced by its re-aggregation over a
//! selector of that aggregation's legs. [`ShardedQuery::merge`] fills an
//! in-memory storage with the legs' answers (each series tagged with its
//! leg, so equal label sets from two legs stay apart) and evaluates the
//! outer expression there with the embedded engine, as Mimir evaluates its
//! `__embedded_queries__`. The legs are plain PromQL, so a downstream Mimir
//! runs them as well as sluice's own queriers.
//!
//! A query is sharded only when every selector ends up inside a leg: an
//! outer expression that still read stored series would need them at the
//! frontend. Subqueries are never looked into (their steps are their own,
//! not the query's), and neither are aggregations whose inner expression
//! pairs series that different shards may hold.

use std::collections::HashSet;
use std::time::Instant;

use promql_parser::label::{MatchOp, Matcher, Matchers};
use promql_parser::parser::token::{T_COUNT, T_SUM, TokenType};
use promql_parser::parser::value::ValueType;
use promql_parser::parser::{self, AggregateExpr, Expr, LabelModifier};
use sluice_engine::storage::QUERY_SHARD_LABEL;
use sluice_engine::{Engine, EngineError, Labels, MemoryStorage, QueryOptions, QueryValue};
use sluice_proto::{ApiResponse, ErrorType, Label, QueryData, ResponseData, ResultType, Series};

use crate::promql::{normalized, walk_mut};

/// The label that tells the outer expression which sharded aggregation a
/// leg's series answer.
const GROUP_LABEL: &str = "__sluice_shard_group__";
/// The label that keeps the series of one aggregation's legs apart.
const LEG_LABEL: &str = "__sluice_shard_leg__";

/// A query rewritten into legs and the expression that combines them.
#[derive(Clone, Debug)]
pub struct ShardedQuery {
    outer: Expr,
    /// Per sharded aggregation, its legs' PromQL in shard order.
    groups: Vec<Vec<String>>,
    shards: usize,
}

/// When the outer expression is evaluated: the query's own time(s).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Evaluation {
    Instant {
        time_ms: i64,
    },
    Range {
        start_ms: i64,
        end_ms: i64,
        step_ms: i64,
    },
}

/// How many aggregations of `query` would each be sent as one leg per
/// shard (`avg` counts twice); 0 when the query would not be sharded.
pub fn sharded_aggregations(query: &str) -> usize {
    shard_query(query, 1).map_or(0, |sharded| sharded.groups.len())
}

/// `query` rewritten into `shards` legs per shardable aggregation, or
/// `None` when it has none, when no shard is asked for, or when some part
/// of it cannot be evaluated over legs. One shard is allowed (a leg
/// reading all series) so the rewrite itself can be checked.
pub fn shard_query(query: &str, shards: u64) -> Option<ShardedQuery> {
    if shards == 0 {
        return None;
    }
    let parsed = sluice_promql::parse(query).ok()?;
    if reads_reserved_labels(&parsed) {
        return None;
    }
    let mut outer = Expr::clone(&parsed);
    let mut rewriter = Rewriter {
        shards,
        groups: Vec::new(),
        failed: false,
    };
    rewriter.rewrite(&mut outer);
    if rewriter.failed || rewriter.groups.is_empty() || reads_stored_series(&outer) {
        return None;
    }
    Some(ShardedQuery {
        outer,
        groups: rewriter.groups,
        shards: shards as usize,
    })
}

impl ShardedQuery {
    /// Every leg's PromQL, aggregation by aggregation, shard by shard: the
    /// order [`ShardedQuery::merge`] takes their answers in.
    pub fn legs(&self) -> impl Iterator<Item = &str> {
        self.groups.iter().flatten().map(String::as_str)
    }

    /// The shards each sharded aggregation was split into.
    pub fn shards(&self) -> usize {
        self.shards
    }

    pub fn leg_count(&self) -> usize {
        self.groups.iter().map(Vec::len).sum()
    }

    /// The expression evaluated over the legs' answers, printed (for logs
    /// and tests; it reads the legs through reserved labels).
    pub fn outer(&self) -> String {
        self.outer.to_string()
    }

    /// The query's answer from its legs' `answers` (in [`ShardedQuery::legs`]
    /// order): the first failed leg's answer, or the outer expression
    /// evaluated over them at `evaluation`, carrying every leg's warnings
    /// and infos. `query` is the original text, for the engine's messages;
    /// the evaluation gives up at `deadline`.
    pub fn merge(
        &self,
        query: &str,
        answers: Vec<ApiResponse>,
        evaluation: Evaluation,
        deadline: Option<Instant>,
    ) -> ApiResponse {
        if answers.len() != self.leg_count() {
            return ApiResponse::error(
                ErrorType::Internal,
                format!(
                    "{} shard answers for {} legs",
                    answers.len(),
                    self.leg_count()
                ),
            );
        }
        if let Some(failed) = answers.iter().find(|answer| answer.is_error()) {
            return failed.clone();
        }
        let storage = MemoryStorage::new();
        let mut warnings = Annotations::default();
        let mut infos = Annotations::default();
        let legs_per_group = self.groups.first().map_or(1, Vec::len).max(1);
        for (index, answer) in answers.into_iter().enumerate() {
            let (group, leg) = (index / legs_per_group, index % legs_per_group);
            warnings.extend(answer.warnings);
            infos.extend(answer.infos);
            if let Some(ResponseData::Query(data)) = answer.data {
                store_leg(&storage, data, group, leg);
            }
        }
        // Legs answer at the query's steps exactly: a lookback of 1 ms reads
        // the sample of that step only, never an earlier step's for a gap.
        let options = QueryOptions {
            lookback_delta_ms: 1,
            deadline,
            ..QueryOptions::default()
        };
        let outcome = match evaluation {
            Evaluation::Instant { time_ms } => {
                Engine::new().instant_expr(&storage, &self.outer, query, time_ms, &options)
            }
            Evaluation::Range {
                start_ms,
                end_ms,
                step_ms,
            } => Engine::new().range_expr(
                &storage,
                &self.outer,
                query,
                start_ms,
                end_ms,
                step_ms,
                &options,
            ),
        };
        match outcome {
            Ok(output) => {
                warnings.extend(output.warnings);
                infos.extend(output.infos);
                let mut response =
                    ApiResponse::success(ResponseData::Query(query_data(output.value)));
                response.warnings = warnings.kept;
                response.infos = infos.kept;
                response
            }
            Err(error) => engine_error(&error),
        }
    }
}

/// Annotations in the order first seen, each once: every leg of a query
/// tends to raise the same ones.
#[derive(Default)]
struct Annotations {
    seen: HashSet<String>,
    kept: Vec<String>,
}

impl Annotations {
    fn extend(&mut self, more: impl IntoIterator<Item = String>) {
        for annotation in more {
            if self.seen.insert(annotation.clone()) {
                self.kept.push(annotation);
            }
        }
    }
}

/// The Prometheus error for an engine failure.
pub fn engine_error(error: &EngineError) -> ApiResponse {
    ApiResponse::error(
        ErrorType::from_prometheus(error.error_type()),
        error.to_string(),
    )
}

fn store_leg(storage: &MemoryStorage, data: QueryData, group: usize, leg: usize) {
    let (group, leg) = (group.to_string(), leg.to_string());
    for series in data.series {
        let pairs = series
            .labels
            .iter()
            .map(|label| (label.name.as_str(), label.value.as_str()))
            .chain([(GROUP_LABEL, group.as_str()), (LEG_LABEL, leg.as_str())]);
        let labels = Labels::from_pairs(pairs);
        let samples: Vec<(i64, f64)> = series.samples().collect();
        storage.append(&labels, &samples);
    }
}

struct Rewriter {
    shards: u64,
    groups: Vec<Vec<String>>,
    /// A leg did not print back to its own tree: the query runs unsharded.
    failed: bool,
}

impl Rewriter {
    /// Replaces, top down, each shardable aggregation in `expr` by its
    /// re-aggregation over legs; looks into the children of the others.
    fn rewrite(&mut self, expr: &mut Expr) {
        match expr {
            Expr::Aggregate(aggregate) => match self.shard_aggregate(aggregate) {
                Some(outer) => *expr = outer,
                None => self.rewrite(&mut aggregate.expr),
            },
            Expr::Binary(binary) => {
                self.rewrite(&mut binary.lhs);
                self.rewrite(&mut binary.rhs);
            }
            Expr::Paren(paren) => self.rewrite(&mut paren.expr),
            Expr::Unary(unary) => self.rewrite(&mut unary.expr),
            Expr::Call(call) => call.args.args.iter_mut().for_each(|arg| self.rewrite(arg)),
            Expr::Subquery(_)
            | Expr::NumberLiteral(_)
            | Expr::StringLiteral(_)
            | Expr::VectorSelector(_)
            | Expr::MatrixSelector(_)
            | Expr::Extension(_) => {}
        }
    }

    /// The outer expression for `aggregate` when it can be sharded, its
    /// legs recorded.
    fn shard_aggregate(&mut self, aggregate: &AggregateExpr) -> Option<Expr> {
        let op = aggregate.op.to_string();
        let shardable = matches!(
            op.as_str(),
            "sum" | "count" | "min" | "max" | "group" | "avg"
        );
        if !shardable
            || aggregate.param.is_some()
            || !reads_series(&aggregate.expr)
            || !series_local(&aggregate.expr)
        {
            return None;
        }
        if op == "avg" {
            // avg = sum / count, each summed over the legs: the division
            // matches the two sides on the same grouping labels.
            let sum = self.leg_group(aggregate, T_SUM, T_SUM)?;
            let count = self.leg_group(aggregate, T_COUNT, T_SUM)?;
            let mut division = parser::parse("a / b").ok()?;
            if let Expr::Binary(binary) = &mut division {
                *binary.lhs = sum;
                *binary.rhs = count;
            }
            return Some(Expr::Paren(parser::ParenExpr {
                expr: Box::new(division),
            }));
        }
        let outer_op = if op == "count" {
            TokenType::new(T_SUM)
        } else {
            aggregate.op
        };
        self.leg_group(aggregate, aggregate.op.id(), outer_op.id())
    }

    /// Records the legs of `aggregate` computed with `leg_op`, and returns
    /// their re-aggregation with `outer_op`.
    fn leg_group(
        &mut self,
        aggregate: &AggregateExpr,
        leg_op: parser::token::TokenId,
        outer_op: parser::token::TokenId,
    ) -> Option<Expr> {
        let group = self.groups.len();
        let mut legs = Vec::with_capacity(self.shards as usize);
        for shard in 1..=self.shards {
            let mut leg = aggregate.clone();
            leg.op = TokenType::new(leg_op);
            add_shard_matcher(&mut leg.expr, shard, self.shards);
            let leg = Expr::Aggregate(leg);
            let printed = leg.to_string();
            let faithful = parser::parse(&printed)
                .is_ok_and(|reparsed| normalized(reparsed) == normalized(leg));
            if !faithful {
                self.failed = true;
                return None;
            }
            legs.push(printed);
        }
        self.groups.push(legs);
        let selector = parser::parse(&format!("{{{GROUP_LABEL}=\"{group}\"}}")).ok()?;
        Some(Expr::Aggregate(AggregateExpr {
            op: TokenType::new(outer_op),
            expr: Box::new(selector),
            param: None,
            modifier: outer_modifier(aggregate.modifier.as_ref()),
        }))
    }
}

/// The re-aggregation's grouping: `by` keeps only its labels anyway;
/// `without` must drop the leg labels too.
fn outer_modifier(modifier: Option<&LabelModifier>) -> Option<LabelModifier> {
    match modifier {
        Some(LabelModifier::Exclude(labels)) => {
            let mut labels = labels.clone();
            labels.labels.push(GROUP_LABEL.to_owned());
            labels.labels.push(LEG_LABEL.to_owned());
            Some(LabelModifier::Exclude(labels))
        }
        other => other.cloned(),
    }
}

fn add_shard_matcher(expr: &mut Expr, shard: u64, shards: u64) {
    let matcher = Matcher::new(
        MatchOp::Equal,
        QUERY_SHARD_LABEL,
        &format!("{shard}_of_{shards}"),
    );
    let add = |matchers: &mut Matchers| {
        matchers.matchers.push(matcher.clone());
        for alternative in &mut matchers.or_matchers {
            alternative.push(matcher.clone());
        }
    };
    walk_mut(expr, &mut |node| match node {
        Expr::VectorSelector(selector) => add(&mut selector.matchers),
        Expr::MatrixSelector(matrix) => add(&mut matrix.vs.matchers),
        _ => {}
    });
}

/// Whether `expr` reads stored series anywhere.
fn reads_series(expr: &Expr) -> bool {
    let mut found = false;
    crate::promql::walk(expr, &mut |node| {
        found |= matches!(node, Expr::VectorSelector(_) | Expr::MatrixSelector(_));
    });
    found
}

fn selector_matchers(node: &Expr) -> Option<&Matchers> {
    match node {
        Expr::VectorSelector(selector) => Some(&selector.matchers),
        Expr::MatrixSelector(matrix) => Some(&matrix.vs.matchers),
        _ => None,
    }
}

fn names_label(matchers: &Matchers, name: &str) -> bool {
    let mut all = matchers
        .matchers
        .iter()
        .chain(matchers.or_matchers.iter().flatten());
    all.any(|matcher| matcher.name == name)
}

/// Whether the outer expression still has a selector of stored series
/// (rather than of legs).
fn reads_stored_series(outer: &Expr) -> bool {
    let mut found = false;
    crate::promql::walk(outer, &mut |node| {
        if let Some(matchers) = selector_matchers(node) {
            found |= !names_label(matchers, GROUP_LABEL);
        }
    });
    found
}

/// Whether a selector of the query already names the shard or leg labels:
/// a query sharded by someone else, or one reaching into ours.
fn reads_reserved_labels(expr: &Expr) -> bool {
    let mut found = false;
    crate::promql::walk(expr, &mut |node| {
        if let Some(matchers) = selector_matchers(node) {
            found |= [QUERY_SHARD_LABEL, GROUP_LABEL, LEG_LABEL]
                .iter()
                .any(|label| names_label(matchers, label));
        }
    });
    found
}

/// Whether every output series of `expr` depends on one input series
/// alone, so that evaluating it over each shard and taking the union
/// gives its answer over all series.
fn series_local(expr: &Expr) -> bool {
    match expr {
        Expr::VectorSelector(_)
        | Expr::MatrixSelector(_)
        | Expr::NumberLiteral(_)
        | Expr::StringLiteral(_) => true,
        Expr::Paren(paren) => series_local(&paren.expr),
        Expr::Unary(unary) => series_local(&unary.expr),
        Expr::Subquery(subquery) => series_local(&subquery.expr),
        Expr::Binary(binary) => {
            let (left, right) = (reads_series(&binary.lhs), reads_series(&binary.rhs));
            // Two sides reading series pair them across shards; a side
            // reading none must be a scalar, or every leg would add its
            // series (`vector(1)`) again.
            let constant_is_scalar = match (left, right) {
                (true, true) => false,
                (true, false) => binary.rhs.value_type() == ValueType::Scalar,
                (false, true) => binary.lhs.value_type() == ValueType::Scalar,
                (false, false) => true,
            };
            constant_is_scalar && series_local(&binary.lhs) && series_local(&binary.rhs)
        }
        Expr::Call(call) => {
            series_local_function(call.func.name, call.args.args.len())
                && call.args.args.iter().all(|arg| series_local(arg))
        }
        Expr::Aggregate(_) | Expr::Extension(_) => false,
    }
}

/// Functions whose output series each come from one input series (or
/// that return a scalar of no series). `absent`, `scalar`, `vector`,
/// `sort`, `histogram_quantile` and friends look across series; the date
/// functions without an argument make a series of their own.
fn series_local_function(name: &str, arguments: usize) -> bool {
    const DATE: [&str; 8] = [
        "day_of_month",
        "day_of_week",
        "day_of_year",
        "days_in_month",
        "hour",
        "minute",
        "month",
        "year",
    ];
    const PER_SERIES: [&str; 50] = [
        "abs",
        "acos",
        "acosh",
        "asin",
        "asinh",
        "atan",
        "atanh",
        "avg_over_time",
        "ceil",
        "changes",
        "clamp",
        "clamp_max",
        "clamp_min",
        "cos",
        "cosh",
        "count_over_time",
        "deg",
        "delta",
        "deriv",
        "double_exponential_smoothing",
        "exp",
        "floor",
        "holt_winters",
        "idelta",
        "increase",
        "irate",
        "label_join",
        "label_replace",
        "last_over_time",
        "ln",
        "log10",
        "log2",
        "mad_over_time",
        "max_over_time",
        "min_over_time",
        "predict_linear",
        "present_over_time",
        "quantile_over_time",
        "rad",
        "rate",
        "resets",
        "round",
        "sgn",
        "sin",
        "sinh",
        "sqrt",
        "stddev_over_time",
        "stdvar_over_time",
        "sum_over_time",
        "tan",
    ];
    const MORE_PER_SERIES: [&str; 4] = ["tanh", "timestamp", "time", "pi"];
    if DATE.contains(&name) {
        return arguments > 0;
    }
    PER_SERIES.contains(&name) || MORE_PER_SERIES.contains(&name)
}

/// The engine's labels as the protocol carries them.
pub fn proto_labels(labels: &Labels) -> Vec<Label> {
    labels
        .iter()
        .map(|label| Label {
            name: label.name.clone(),
            value: label.value.clone(),
        })
        .collect()
}

fn point_series(labels: Vec<Label>, points: impl ExactSizeIterator<Item = (i64, f64)>) -> Series {
    // Sized once: a week's answer is millions of points, and growing the
    // vectors by doubling copied them and touched fresh pages again.
    let (timestamps_ms, values) = points.unzip();
    Series {
        labels,
        timestamps_ms,
        values,
        ..Series::default()
    }
}

/// The engine's answer as the typed result the frontend encodes.
pub fn query_data(value: QueryValue) -> QueryData {
    let mut data = QueryData::default();
    let (result_type, series) = match value {
        QueryValue::Vector(samples) => (
            ResultType::Vector,
            samples
                .iter()
                .map(|sample| {
                    let point = std::iter::once((sample.timestamp_ms, sample.value));
                    point_series(proto_labels(&sample.labels), point)
                })
                .collect(),
        ),
        QueryValue::Matrix(matrix) => (
            ResultType::Matrix,
            // Each engine series is dropped once converted, so the answer
            // is not held twice over.
            matrix
                .into_iter()
                .map(|one| point_series(proto_labels(&one.labels), one.points.into_iter()))
                .collect(),
        ),
        QueryValue::Scalar {
            timestamp_ms,
            value,
        } => (
            ResultType::Scalar,
            vec![point_series(
                Vec::new(),
                std::iter::once((timestamp_ms, value)),
            )],
        ),
        QueryValue::String {
            timestamp_ms,
            value,
        } => {
            data.string_timestamp_ms = timestamp_ms;
            data.string_value = value;
            (ResultType::String, Vec::new())
        }
    };
    data.result_type = result_type as i32;
    data.series = series;
    data
}

#[cfg(test)]
mod tests;
