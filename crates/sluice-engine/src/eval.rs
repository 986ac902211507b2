//! The evaluator: walks the expression tree once per output step.
//!
//! Evaluating step by step (rather than node by node over all steps) keeps
//! every PromQL rule local to one timestamp, which is how the language is
//! specified; series are selected from storage once per selector and read
//! through a cursor each ([`crate::cursor`]), so the per-step work is a
//! short search per series. The costly nodes of range queries and
//! subqueries (selectors, window functions, folding aggregations) are
//! computed series by series for many steps at once ([`crate::batch`]) and
//! handed to this walk a step at a time.

use std::collections::{BTreeSet, HashMap};
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Instant, SystemTime, UNIX_EPOCH};

use promql_parser::label::{MatchOp, Matcher};
use promql_parser::parser::value::ValueType;
use promql_parser::parser::{AtModifier, Expr, Offset, SubqueryExpr, VectorSelector};

use crate::batch::{Grid, StepBatch};
use crate::cursor::SeriesCursor;
use crate::hashing::FastMap;
use crate::labels::{Labels, METRIC_NAME};
use crate::storage::StoredSeries;
use crate::storage::{Storage, is_stale_nan};
use crate::{EngineError, InstantSample, QueryOptions, QueryOutput, QueryValue, Series};

/// One element of an instant vector during evaluation.
#[derive(Clone, Debug)]
pub(crate) struct Sample {
    pub(crate) labels: Arc<Labels>,
    /// The sample's own timestamp for raw selector output (needed by
    /// `timestamp()`), otherwise the evaluation time.
    pub(crate) t: i64,
    pub(crate) v: f64,
    /// Prometheus 3 removes `__name__` lazily: functions flag it for removal
    /// and the name is only dropped at the end, so `label_replace` can still
    /// read it.
    pub(crate) drop_name: bool,
}

/// One element of a range vector during evaluation.
#[derive(Clone, Debug)]
pub(crate) struct RangeSeries {
    pub(crate) labels: Arc<Labels>,
    pub(crate) points: Points,
    pub(crate) drop_name: bool,
}

/// The points of a range-vector element: usually a window straight into
/// stored data (no copy per step), or owned when they had to be built
/// (subqueries) or filtered (staleness markers).
#[derive(Clone, Debug)]
pub(crate) enum Points {
    Owned(Vec<(i64, f64)>),
    Shared {
        samples: Arc<Vec<(i64, f64)>>,
        from: usize,
        to: usize,
    },
}

impl Points {
    pub(crate) fn push(&mut self, point: (i64, f64)) {
        if let Points::Shared { .. } = self {
            *self = Points::Owned(self.to_vec());
        }
        if let Points::Owned(points) = self {
            points.push(point);
        }
    }

    pub(crate) fn into_vec(self) -> Vec<(i64, f64)> {
        match self {
            Points::Owned(points) => points,
            shared => shared.to_vec(),
        }
    }
}

impl std::ops::Deref for Points {
    type Target = [(i64, f64)];

    fn deref(&self) -> &[(i64, f64)] {
        match self {
            Points::Owned(points) => points,
            Points::Shared { samples, from, to } => &samples[*from..*to],
        }
    }
}

#[derive(Clone, Debug)]
pub(crate) enum Value {
    Scalar(f64),
    String(String),
    Vector(Vec<Sample>),
    Matrix(Vec<RangeSeries>),
}

/// The most entries a cache keyed by label-set address may hold. Such
/// caches keep their Arcs alive; expressions that build new label sets at
/// every step (e.g. `label_replace`) would otherwise grow them without
/// bound. Clearing only costs recomputation.
pub(crate) const POINTER_CACHE_LIMIT: usize = 1 << 18;

pub(crate) fn exec_err<T>(message: impl Into<String>) -> Result<T, EngineError> {
    Err(EngineError::Execution(message.into()))
}

/// The series one selector node reads, each with its cursor.
pub(crate) struct Selected {
    pub(crate) series: Vec<SelectedSeries>,
}

pub(crate) struct SelectedSeries {
    pub(crate) labels: Arc<Labels>,
    pub(crate) cursor: SeriesCursor,
    histogram_times: Vec<i64>,
}

impl SelectedSeries {
    /// The latest sample in `(lookback_start, ref_time]` unless it is a
    /// staleness marker: what an instant selector reads at `ref_time`.
    pub(crate) fn latest(
        &mut self,
        lookback_start: i64,
        ref_time: i64,
    ) -> Result<Option<(i64, f64)>, EngineError> {
        self.cursor.load(lookback_start, ref_time)?;
        let index = self.cursor.count_through(ref_time);
        let latest_float = index.checked_sub(1).map(|last| self.cursor.samples()[last]);
        if let Some(h_time) = latest_histogram(&self.histogram_times, ref_time)
            && h_time > lookback_start
            && latest_float.is_none_or(|(t, _)| t < h_time)
        {
            return native_histogram_error();
        }
        Ok(latest_float.filter(|(t, v)| *t > lookback_start && !is_stale_nan(*v)))
    }

    /// Where the samples in `(window_start, ref_time]` lie in
    /// `cursor.samples()` (empty when `from >= to`), staleness markers
    /// included.
    pub(crate) fn window(
        &mut self,
        window_start: i64,
        ref_time: i64,
    ) -> Result<(usize, usize), EngineError> {
        if self
            .histogram_times
            .iter()
            .any(|t| *t > window_start && *t <= ref_time)
        {
            return native_histogram_error();
        }
        self.cursor.load(window_start, ref_time)?;
        let from = self.cursor.count_through_start(window_start);
        let to = self.cursor.count_through(ref_time);
        Ok((from, to))
    }
}

/// What a selector may read, computed before evaluation: its time range
/// (so storage is asked for no more than needed) and how far before a
/// window's start its cursors keep samples (the span of the subqueries
/// around it, which evaluate it again from earlier times).
#[derive(Clone, Copy)]
struct SelectorPlan {
    min_time: i64,
    max_time: i64,
    keep_ms: i64,
}

/// `matchers` plus the metric name written before the braces, if any.
fn with_name(mut matchers: Vec<Matcher>, name: &Option<String>) -> Vec<Matcher> {
    if let Some(name) = name
        && !matchers.iter().any(|m| m.name == METRIC_NAME)
    {
        matchers.push(Matcher::new(MatchOp::Equal, METRIC_NAME, name));
    }
    matchers
}

/// The time of the latest histogram sample at or before `ref_time`.
fn latest_histogram(histogram_times: &[i64], ref_time: i64) -> Option<i64> {
    let index = histogram_times.partition_point(|t| *t <= ref_time);
    index.checked_sub(1).map(|last| histogram_times[last])
}

/// Result labels of one vector-matching pair, with the two input label
/// sets whose addresses form the cache key.
pub(crate) type CachedResultMetric = (Arc<Labels>, Arc<Labels>, Arc<Labels>);

pub(crate) struct Evaluator<'a> {
    storage: &'a dyn Storage,
    query: &'a str,
    options: &'a QueryOptions,
    pub(crate) start: i64,
    pub(crate) end: i64,
    pub(crate) interval: i64,
    pub(crate) is_range_query: bool,
    /// Selected series by selector node address.
    selected: HashMap<usize, Selected>,
    selector_plans: FastMap<usize, SelectorPlan>,
    /// The grid of the steps being evaluated: the range query's, or a
    /// subquery's while its inner expression runs; none for an instant
    /// query's own step.
    pub(crate) grid: Option<Grid>,
    /// Recent batches of each batched node, by node address.
    pub(crate) batches: FastMap<usize, Vec<StepBatch>>,
    /// Whether each node (by address) is batched.
    batchable: FastMap<usize, bool>,
    /// Result labels of vector matching, keyed by (node, lhs labels, rhs
    /// labels) pointers; the value keeps the key Arcs alive.
    pub(crate) result_metric_cache: FastMap<(usize, usize, usize), CachedResultMetric>,
    /// Label sets already checked for counter-like names, by address; the
    /// value keeps the Arc alive so the address is not reused.
    counter_checked: FastMap<usize, Arc<Labels>>,
    /// Aggregation group keys by (aggregation node, input labels address);
    /// the value keeps the Arc alive so the address is not reused.
    group_keys: FastMap<(usize, usize), (Arc<Labels>, u64)>,
    warnings: BTreeSet<String>,
    infos: BTreeSet<String>,
    current_samples: usize,
    samples_read: u64,
    steps_since_check: u32,
}

pub(crate) fn time_to_ms(time: &SystemTime) -> i64 {
    match time.duration_since(UNIX_EPOCH) {
        Ok(after) => after.as_millis() as i64,
        Err(before) => -(before.duration().as_millis() as i64),
    }
}

pub(crate) fn offset_ms(offset: &Option<Offset>) -> i64 {
    match offset {
        None => 0,
        Some(Offset::Pos(d)) => d.as_millis() as i64,
        Some(Offset::Neg(d)) => -(d.as_millis() as i64),
    }
}

impl<'a> Evaluator<'a> {
    fn new(
        storage: &'a dyn Storage,
        query: &'a str,
        options: &'a QueryOptions,
        start: i64,
        end: i64,
        interval: i64,
        is_range_query: bool,
    ) -> Self {
        Evaluator {
            storage,
            query,
            options,
            start,
            end,
            interval,
            is_range_query,
            selected: HashMap::new(),
            selector_plans: FastMap::default(),
            grid: None,
            batches: FastMap::default(),
            batchable: FastMap::default(),
            result_metric_cache: FastMap::default(),
            counter_checked: FastMap::default(),
            group_keys: FastMap::default(),
            warnings: BTreeSet::new(),
            infos: BTreeSet::new(),
            current_samples: 0,
            samples_read: 0,
            steps_since_check: 0,
        }
    }

    /// Records a warning about `about`, rendered with its position like
    /// Prometheus' API does.
    pub(crate) fn warn(&mut self, message: String, about: &Expr) {
        let rendered = format!("PromQL warning: {message} ({})", self.position_of(about));
        self.warnings.insert(rendered);
    }

    pub(crate) fn info(&mut self, message: String, about: &Expr) {
        let rendered = format!("PromQL info: {message} ({})", self.position_of(about));
        self.infos.insert(rendered);
    }

    /// The `line:column` where `expr` starts in the query text. The parser
    /// keeps no positions, so this finds the first occurrence of the node's
    /// leading token, which is exact for the common case of a node whose
    /// leading token appears once.
    fn position_of(&self, expr: &Expr) -> String {
        let needle = leading_token(expr);
        let offset = needle
            .and_then(|n| self.query.find(n.as_str()))
            .unwrap_or(0);
        let before = &self.query[..offset];
        let line = before.matches('\n').count() + 1;
        let column = before.rsplit('\n').next().map_or(0, |l| l.chars().count()) + 1;
        format!("{line}:{column}")
    }

    /// Whether `name` is not a valid label name. Names may be any UTF-8,
    /// but PromQL strings are byte strings: a `\xHH` escape that does not
    /// form valid UTF-8 gives an invalid name. The parser decodes such an
    /// escape to the code point U+00HH, so that case is recognised by
    /// looking for invalid `\x` escapes in the query text.
    pub(crate) fn is_invalid_label_name(&self, name: &str) -> bool {
        if name.is_empty() {
            return true;
        }
        name.chars().any(|c| ('\u{80}'..='\u{ff}').contains(&c))
            && has_invalid_utf8_escape(self.query)
    }

    pub(crate) fn check_interrupt(&mut self) -> Result<(), EngineError> {
        if let Some(cancel) = &self.options.cancel
            && cancel.load(Ordering::Relaxed)
        {
            return Err(EngineError::Canceled);
        }
        if let Some(deadline) = self.options.deadline
            && Instant::now() >= deadline
        {
            return Err(EngineError::Timeout);
        }
        Ok(())
    }

    pub(crate) fn add_samples(&mut self, count: usize) -> Result<(), EngineError> {
        self.current_samples += count;
        self.samples_read += count as u64;
        if self.current_samples > self.options.max_samples {
            return exec_err(
                "query processing would load too many samples into memory in query execution",
            );
        }
        Ok(())
    }

    /// The group key of `labels` in the aggregation `node`, computed once
    /// per query: selector output keeps the same Arcs from step to step.
    pub(crate) fn group_key(
        &mut self,
        node: usize,
        labels: &Arc<Labels>,
        compute: impl Fn(&Labels) -> u64,
    ) -> u64 {
        let key = (node, Arc::as_ptr(labels) as usize);
        if let Some((_, hash)) = self.group_keys.get(&key) {
            return *hash;
        }
        let hash = compute(labels);
        if self.group_keys.len() >= POINTER_CACHE_LIMIT {
            self.group_keys.clear();
        }
        self.group_keys.insert(key, (Arc::clone(labels), hash));
        hash
    }

    /// Whether this is the first time `labels` is checked for a counter-like
    /// name in this query.
    pub(crate) fn first_counter_check(&mut self, labels: &Arc<Labels>) -> bool {
        let key = Arc::as_ptr(labels) as usize;
        if self.counter_checked.contains_key(&key) {
            return false;
        }
        if self.counter_checked.len() >= POINTER_CACHE_LIMIT {
            self.counter_checked.clear();
        }
        self.counter_checked.insert(key, Arc::clone(labels));
        true
    }

    /// The lookback delta in effect; like Prometheus, zero (or less) means
    /// the 5m default.
    pub(crate) fn lookback_delta(&self) -> i64 {
        if self.options.lookback_delta_ms > 0 {
            self.options.lookback_delta_ms
        } else {
            5 * 60 * 1000
        }
    }

    pub(crate) fn at_time(&self, at: &Option<AtModifier>) -> Option<i64> {
        match at {
            None => None,
            Some(AtModifier::Start) => Some(self.start),
            Some(AtModifier::End) => Some(self.end),
            Some(AtModifier::At(time)) => Some(time_to_ms(time)),
        }
    }

    /// The reference time a selector reads at for evaluation time `ts`.
    pub(crate) fn selector_ref_time(&self, vs: &VectorSelector, ts: i64) -> i64 {
        self.at_time(&vs.at).unwrap_or(ts) - offset_ms(&vs.offset)
    }

    /// The series `vs` selects, taken out of the evaluator while a step
    /// reads them (see [`Evaluator::put_back`]): selected from storage on
    /// the selector's first use, then kept for every later step.
    pub(crate) fn take_selected(&mut self, vs: &VectorSelector) -> Result<Selected, EngineError> {
        let key = vs as *const VectorSelector as usize;
        if let Some(found) = self.selected.remove(&key) {
            return Ok(found);
        }
        let plan = self
            .selector_plans
            .get(&key)
            .copied()
            .unwrap_or(SelectorPlan {
                min_time: i64::MIN,
                max_time: i64::MAX,
                keep_ms: 0,
            });
        let mut stored = Vec::new();
        if vs.matchers.or_matchers.is_empty() {
            let matchers = with_name(vs.matchers.matchers.clone(), &vs.name);
            stored = self.select(&matchers, plan.min_time, plan.max_time)?;
        } else {
            let mut seen = BTreeSet::new();
            for alternative in &vs.matchers.or_matchers {
                let mut alt: Vec<Matcher> = alternative.clone();
                if let Some(name) = &vs.name {
                    alt.push(Matcher::new(MatchOp::Equal, METRIC_NAME, name));
                }
                for found in self.select(&alt, plan.min_time, plan.max_time)? {
                    if seen.insert(Arc::clone(&found.labels)) {
                        stored.push(found);
                    }
                }
            }
        }
        // Storage usually returns series in label order already.
        if !stored.is_sorted_by(|a, b| a.labels <= b.labels) {
            stored.sort_by(|a, b| a.labels.cmp(&b.labels));
        }
        let series = stored
            .into_iter()
            .map(|found| SelectedSeries {
                labels: found.labels,
                cursor: SeriesCursor::new(found.samples, plan.keep_ms),
                histogram_times: found.histogram_times,
            })
            .collect();
        Ok(Selected { series })
    }

    /// The storage's series for `matchers`, of the shard a
    /// `__query_shard__` matcher among them names (taken out of the
    /// matchers, so no series label is ever compared with it), else of the
    /// query's own shard.
    fn select(
        &self,
        matchers: &[Matcher],
        min_time: i64,
        max_time: i64,
    ) -> Result<Vec<StoredSeries>, EngineError> {
        match crate::storage::query_shard(matchers)? {
            Some((shard, rest)) => self.storage.select(&rest, min_time, max_time, Some(shard)),
            None => self
                .storage
                .select(matchers, min_time, max_time, self.options.shard),
        }
    }

    pub(crate) fn put_back(&mut self, vs: &VectorSelector, selected: Selected) {
        self.selected
            .insert(vs as *const VectorSelector as usize, selected);
    }

    /// The series matching `matchers` that have a sample in the lookback
    /// window ending at `ref_time`, each with that sample's timestamp. Used
    /// by `info()`, whose selector is built at evaluation time.
    pub(crate) fn select_latest(
        &mut self,
        matchers: &[Matcher],
        ref_time: i64,
    ) -> Result<Vec<(Arc<Labels>, i64)>, EngineError> {
        let lookback_start = ref_time - self.lookback_delta();
        let found = self.select(matchers, lookback_start, ref_time)?;
        let mut out = Vec::new();
        for series in found {
            if series
                .histogram_times
                .iter()
                .any(|t| *t > lookback_start && *t <= ref_time)
            {
                return native_histogram_error();
            }
            let mut cursor = SeriesCursor::new(series.samples, 0);
            cursor.load(lookback_start, ref_time)?;
            let index = cursor.count_through(ref_time);
            if index == 0 {
                continue;
            }
            let (t, v) = cursor.samples()[index - 1];
            if t <= lookback_start || is_stale_nan(v) {
                continue;
            }
            out.push((series.labels, t));
        }
        self.add_samples(out.len())?;
        Ok(out)
    }

    fn eval_vector_selector(
        &mut self,
        vs: &VectorSelector,
        ts: i64,
    ) -> Result<Vec<Sample>, EngineError> {
        let mut selected = self.take_selected(vs)?;
        let ref_time = self.selector_ref_time(vs, ts);
        let lookback_start = ref_time - self.lookback_delta();
        let mut out = Vec::with_capacity(selected.series.len());
        for series in &mut selected.series {
            let Some((t, v)) = series.latest(lookback_start, ref_time)? else {
                continue;
            };
            out.push(Sample {
                labels: Arc::clone(&series.labels),
                t,
                v,
                drop_name: false,
            });
        }
        self.put_back(vs, selected);
        self.add_samples(out.len())?;
        Ok(out)
    }

    /// The float samples of every selected series in `(ref - range, ref]`.
    pub(crate) fn eval_matrix_selector(
        &mut self,
        vs: &VectorSelector,
        range_ms: i64,
        ts: i64,
    ) -> Result<Vec<RangeSeries>, EngineError> {
        let mut selected = self.take_selected(vs)?;
        let ref_time = self.selector_ref_time(vs, ts);
        let window_start = ref_time - range_ms;
        let mut out = Vec::with_capacity(selected.series.len());
        let mut loaded = 0;
        for series in &mut selected.series {
            let (from, to) = series.window(window_start, ref_time)?;
            if from >= to {
                continue;
            }
            let window = &series.cursor.samples()[from..to];
            let points = if window.iter().any(|(_, v)| is_stale_nan(*v)) {
                let kept: Vec<(i64, f64)> = window
                    .iter()
                    .copied()
                    .filter(|(_, v)| !is_stale_nan(*v))
                    .collect();
                if kept.is_empty() {
                    continue;
                }
                Points::Owned(kept)
            } else {
                Points::Shared {
                    samples: Arc::clone(series.cursor.shared()),
                    from,
                    to,
                }
            };
            loaded += points.len();
            out.push(RangeSeries {
                labels: Arc::clone(&series.labels),
                points,
                drop_name: false,
            });
        }
        self.put_back(vs, selected);
        self.add_samples(loaded)?;
        Ok(out)
    }

    /// Evaluates a subquery at `ts`: the inner expression at every multiple of
    /// the step in `(ref - range, ref]`.
    pub(crate) fn eval_subquery(
        &mut self,
        sq: &SubqueryExpr,
        ts: i64,
    ) -> Result<Vec<RangeSeries>, EngineError> {
        let ref_time = self.at_time(&sq.at).unwrap_or(ts) - offset_ms(&sq.offset);
        let range = sq.range.as_millis() as i64;
        let step = sq
            .step
            .map(|s| s.as_millis() as i64)
            .filter(|s| *s > 0)
            .unwrap_or(self.options.default_subquery_step_ms.max(1));
        let window_start = ref_time - range;
        let mut first = window_start.div_euclid(step) * step;
        if first <= window_start {
            first += step;
        }
        // The inner expression runs on its own grid (multiples of the
        // step), up to the latest time any outer step will ask for, and
        // every outer step asks again for up to `range` before its own.
        let enclosing = self.grid;
        let latest = match self.at_time(&sq.at) {
            Some(at) => at,
            None => enclosing.map_or(ts, |grid| grid.end),
        };
        self.grid = Some(Grid {
            origin: 0,
            step,
            end: latest - offset_ms(&sq.offset),
            keep_ms: enclosing.map_or(0, |grid| grid.keep_ms) + range,
        });
        let inner = self.subquery_steps(&sq.expr, first, ref_time, step);
        self.grid = enclosing;
        inner
    }

    /// The inner expression of a subquery at `first, first + step, ...`
    /// up to `last`, gathered into series.
    fn subquery_steps(
        &mut self,
        expr: &Expr,
        first: i64,
        last: i64,
        step: i64,
    ) -> Result<Vec<RangeSeries>, EngineError> {
        let mut out = SeriesAccumulator::default();
        let mut inner_ts = first;
        while inner_ts <= last {
            self.maybe_check_interrupt()?;
            match self.eval(expr, inner_ts)? {
                Value::Scalar(v) => out.push_scalar(inner_ts, v),
                Value::Vector(samples) => {
                    for sample in &samples {
                        out.push(sample, inner_ts);
                    }
                }
                _ => {
                    return exec_err(
                        "subquery expression must evaluate to an instant vector or scalar",
                    );
                }
            }
            inner_ts += step;
        }
        Ok(out.series)
    }

    pub(crate) fn maybe_check_interrupt(&mut self) -> Result<(), EngineError> {
        self.steps_since_check += 1;
        if self.steps_since_check >= 64 {
            self.steps_since_check = 0;
            self.check_interrupt()?;
        }
        Ok(())
    }

    pub(crate) fn eval(&mut self, expr: &Expr, ts: i64) -> Result<Value, EngineError> {
        if self.grid.is_some()
            && self.is_batchable(expr)
            && let Some(value) = self.eval_batched(expr, ts)?
        {
            return Ok(value);
        }
        match expr {
            Expr::NumberLiteral(number) => Ok(Value::Scalar(number.val)),
            Expr::StringLiteral(string) => Ok(Value::String(string.val.clone())),
            Expr::Paren(paren) => self.eval(&paren.expr, ts),
            Expr::Unary(unary) => match self.eval(&unary.expr, ts)? {
                Value::Scalar(v) => Ok(Value::Scalar(-v)),
                Value::Vector(mut samples) => {
                    for sample in &mut samples {
                        sample.v = -sample.v;
                        sample.drop_name = true;
                    }
                    Ok(Value::Vector(samples))
                }
                _ => exec_err(
                    "unary expression only allowed on expressions of type scalar or instant vector",
                ),
            },
            Expr::VectorSelector(vs) => Ok(Value::Vector(self.eval_vector_selector(vs, ts)?)),
            Expr::MatrixSelector(ms) => Ok(Value::Matrix(self.eval_matrix_selector(
                &ms.vs,
                ms.range.as_millis() as i64,
                ts,
            )?)),
            Expr::Subquery(sq) => Ok(Value::Matrix(self.eval_subquery(sq, ts)?)),
            Expr::Call(call) => crate::functions::eval_call(self, call, expr, ts),
            Expr::Aggregate(aggregate) => crate::aggregate::eval_aggregate(self, aggregate, ts),
            Expr::Binary(binary) => crate::binary::eval_binary(self, binary, ts),
            Expr::Extension(_) => exec_err("extension expressions are not supported"),
        }
    }

    /// Whether `expr` is evaluated in batches ([`crate::batch`]), decided
    /// once per node.
    fn is_batchable(&mut self, expr: &Expr) -> bool {
        let key = expr as *const Expr as usize;
        if let Some(known) = self.batchable.get(&key) {
            return *known;
        }
        let answer = crate::batch::batchable(expr);
        self.batchable.insert(key, answer);
        answer
    }

    pub(crate) fn eval_vector(&mut self, expr: &Expr, ts: i64) -> Result<Vec<Sample>, EngineError> {
        match self.eval(expr, ts)? {
            Value::Vector(samples) => Ok(samples),
            _ => exec_err("expected an instant vector"),
        }
    }

    pub(crate) fn eval_scalar(&mut self, expr: &Expr, ts: i64) -> Result<f64, EngineError> {
        match self.eval(expr, ts)? {
            Value::Scalar(v) => Ok(v),
            _ => exec_err("expected a scalar"),
        }
    }

    fn into_output(self, value: QueryValue) -> QueryOutput {
        QueryOutput {
            value,
            warnings: self.warnings.into_iter().collect(),
            infos: self.infos.into_iter().collect(),
            samples_read: self.samples_read,
        }
    }
}

fn has_invalid_utf8_escape(query: &str) -> bool {
    let bytes = query.as_bytes();
    let mut index = 0;
    while index + 3 < bytes.len() {
        if bytes[index] == b'\\' && bytes[index + 1] == b'x' {
            let mut run = Vec::new();
            let mut cursor = index;
            while cursor + 3 < bytes.len() && bytes[cursor] == b'\\' && bytes[cursor + 1] == b'x' {
                let Ok(hex) = std::str::from_utf8(&bytes[cursor + 2..cursor + 4]) else {
                    break;
                };
                let Ok(byte) = u8::from_str_radix(hex, 16) else {
                    break;
                };
                run.push(byte);
                cursor += 4;
            }
            if std::str::from_utf8(&run).is_err() {
                return true;
            }
            index = cursor.max(index + 1);
        } else {
            index += 1;
        }
    }
    false
}

/// A string quoted like Go's `%q`, with code points U+0080..U+00FF shown as
/// the raw bytes they stood for in the query.
pub(crate) fn go_quote_bytes(text: &str) -> String {
    let mut out = String::from("\"");
    for c in text.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\u{80}'..='\u{ff}' => out.push_str(&format!("\\x{:02x}", c as u32)),
            other => out.push(other),
        }
    }
    out.push('"');
    out
}

/// Every `@` time in the expression.
fn collect_at_times(evaluator: &Evaluator<'_>, expr: &Expr, out: &mut Vec<i64>) {
    let mut note = |at: &Option<AtModifier>| {
        if let Some(time) = evaluator.at_time(at) {
            out.push(time);
        }
    };
    match expr {
        Expr::VectorSelector(vs) => note(&vs.at),
        Expr::MatrixSelector(ms) => note(&ms.vs.at),
        Expr::Subquery(sq) => {
            note(&sq.at);
            collect_at_times(evaluator, &sq.expr, out);
        }
        Expr::Paren(paren) => collect_at_times(evaluator, &paren.expr, out),
        Expr::Unary(unary) => collect_at_times(evaluator, &unary.expr, out),
        Expr::Binary(binary) => {
            collect_at_times(evaluator, &binary.lhs, out);
            collect_at_times(evaluator, &binary.rhs, out);
        }
        Expr::Aggregate(aggregate) => {
            collect_at_times(evaluator, &aggregate.expr, out);
            if let Some(param) = &aggregate.param {
                collect_at_times(evaluator, param, out);
            }
        }
        Expr::Call(call) => {
            for arg in &call.args.args {
                collect_at_times(evaluator, arg, out);
            }
        }
        Expr::NumberLiteral(_) | Expr::StringLiteral(_) | Expr::Extension(_) => {}
    }
}

/// Computes a conservative `[min, max]` read range for every selector:
/// the query's span widened to any `@` time, minus the look-back of the
/// selector itself and of every enclosing subquery, plus negative offsets.
fn compute_selector_ranges(
    expr: &Expr,
    base: (i64, i64),
    back: i64,
    forward: i64,
    lookback: i64,
    out: &mut FastMap<usize, SelectorPlan>,
) {
    let recurse = |child: &Expr, out: &mut FastMap<usize, SelectorPlan>| {
        compute_selector_ranges(child, base, back, forward, lookback, out)
    };
    match expr {
        Expr::VectorSelector(vs) => {
            let offset = offset_ms(&vs.offset);
            let plan = SelectorPlan {
                min_time: base.0 - back - lookback - offset.max(0),
                max_time: base.1 + forward + (-offset).max(0),
                keep_ms: back,
            };
            out.insert(vs as *const VectorSelector as usize, plan);
        }
        Expr::MatrixSelector(ms) => {
            let offset = offset_ms(&ms.vs.offset);
            let own_range = ms.range.as_millis() as i64;
            let plan = SelectorPlan {
                min_time: base.0 - back - own_range - offset.max(0),
                max_time: base.1 + forward + (-offset).max(0),
                keep_ms: back,
            };
            out.insert(&ms.vs as *const VectorSelector as usize, plan);
        }
        Expr::Subquery(sq) => {
            let offset = offset_ms(&sq.offset);
            // Inner steps lie in (ref - range, ref], so no alignment slack is needed.
            let inner_back = back + sq.range.as_millis() as i64 + offset.max(0);
            let inner_forward = forward + (-offset).max(0);
            compute_selector_ranges(&sq.expr, base, inner_back, inner_forward, lookback, out);
        }
        Expr::Paren(paren) => recurse(&paren.expr, out),
        Expr::Unary(unary) => recurse(&unary.expr, out),
        Expr::Binary(binary) => {
            recurse(&binary.lhs, out);
            recurse(&binary.rhs, out);
        }
        Expr::Aggregate(aggregate) => {
            recurse(&aggregate.expr, out);
            if let Some(param) = &aggregate.param {
                recurse(param, out);
            }
        }
        Expr::Call(call) => {
            for arg in &call.args.args {
                recurse(arg, out);
            }
        }
        Expr::NumberLiteral(_) | Expr::StringLiteral(_) | Expr::Extension(_) => {}
    }
}

impl Evaluator<'_> {
    fn plan_selector_ranges(&mut self, expr: &Expr) {
        let mut at_times = vec![self.start, self.end];
        collect_at_times(self, expr, &mut at_times);
        let base = (
            at_times.iter().copied().min().unwrap_or(self.start),
            at_times.iter().copied().max().unwrap_or(self.end),
        );
        let mut ranges = FastMap::default();
        compute_selector_ranges(expr, base, 0, 0, self.lookback_delta(), &mut ranges);
        self.selector_plans = ranges;
    }
}

/// Collects per-step samples into series. Most steps hand back the very
/// same label Arcs (selector output is shared between steps), so series are
/// found by pointer first and by label value only on a miss. Every Arc
/// whose address is a key is kept alive here, so an address cannot be
/// reused by a different label set while the map exists.
#[derive(Default)]
struct SeriesAccumulator {
    by_pointer: FastMap<usize, usize>,
    by_labels: FastMap<Arc<Labels>, usize>,
    kept_alive: Vec<Arc<Labels>>,
    series: Vec<RangeSeries>,
}

impl SeriesAccumulator {
    fn index_of(&mut self, labels: &Arc<Labels>) -> usize {
        let pointer = Arc::as_ptr(labels) as usize;
        if let Some(index) = self.by_pointer.get(&pointer) {
            return *index;
        }
        let index = match self.by_labels.get(labels) {
            Some(index) => *index,
            None => {
                self.series.push(RangeSeries {
                    labels: Arc::clone(labels),
                    points: Points::Owned(Vec::new()),
                    drop_name: false,
                });
                self.by_labels
                    .insert(Arc::clone(labels), self.series.len() - 1);
                self.series.len() - 1
            }
        };
        if self.kept_alive.len() >= POINTER_CACHE_LIMIT {
            self.by_pointer.clear();
            self.kept_alive.clear();
        }
        self.by_pointer.insert(pointer, index);
        self.kept_alive.push(Arc::clone(labels));
        index
    }

    fn push(&mut self, sample: &Sample, t: i64) {
        let index = self.index_of(&sample.labels);
        let series = &mut self.series[index];
        series.drop_name |= sample.drop_name;
        series.points.push((t, sample.v));
    }

    fn push_scalar(&mut self, t: i64, v: f64) {
        if self.series.is_empty() {
            self.series.push(RangeSeries {
                labels: Arc::new(Labels::empty()),
                points: Points::Owned(Vec::new()),
                drop_name: false,
            });
        }
        self.series[0].points.push((t, v));
    }
}

pub(crate) fn native_histogram_error<T>() -> Result<T, EngineError> {
    exec_err("native histograms are not supported by the sluice engine")
}

/// The text a node's source starts with, for locating it in the query.
fn leading_token(expr: &Expr) -> Option<String> {
    match expr {
        Expr::VectorSelector(vs) => Some(vs.name.clone().unwrap_or_else(|| "{".to_string())),
        Expr::MatrixSelector(ms) => ms.vs.name.clone().or_else(|| Some("{".to_string())),
        Expr::Call(call) => Some(format!("{}(", call.func.name)),
        Expr::Aggregate(aggregate) => Some(aggregate.op.to_string()),
        Expr::Paren(_) => Some("(".to_string()),
        Expr::Subquery(sq) => leading_token(&sq.expr),
        Expr::Binary(binary) => leading_token(&binary.lhs),
        Expr::Unary(_) => Some("-".to_string()),
        Expr::NumberLiteral(number) => Some(format!("{}", number.val)),
        Expr::StringLiteral(_) | Expr::Extension(_) => None,
    }
}

/// Removes flagged metric names and rejects label-set collisions, the last
/// step of every evaluation in Prometheus 3.
fn finish_vector(samples: Vec<Sample>, ts: i64) -> Result<Vec<InstantSample>, EngineError> {
    let mut out: Vec<InstantSample> = Vec::with_capacity(samples.len());
    // Collisions are found by hash; only a shared hash is checked exactly.
    let mut seen: FastMap<u64, Vec<usize>> = FastMap::default();
    for sample in samples {
        let labels = if sample.drop_name {
            sample.labels.without_metric_name()
        } else {
            (*sample.labels).clone()
        };
        let same_hash = seen
            .entry(crate::hashing::hash_labels(&labels))
            .or_default();
        if same_hash.iter().any(|index| out[*index].labels == labels) {
            return exec_err("vector cannot contain metrics with the same labelset");
        }
        same_hash.push(out.len());
        out.push(InstantSample {
            labels,
            timestamp_ms: ts,
            value: sample.v,
        });
    }
    Ok(out)
}

fn finish_matrix(series: Vec<RangeSeries>) -> Result<Vec<Series>, EngineError> {
    let mut merged: HashMap<Labels, usize> = HashMap::new();
    let mut out: Vec<Series> = Vec::new();
    for one in series {
        let labels = if one.drop_name {
            one.labels.without_metric_name()
        } else {
            (*one.labels).clone()
        };
        match merged.get(&labels) {
            Some(index) => {
                // Both point lists are in time order; a shared timestamp
                // means two series collided after losing their names.
                let existing = &mut out[*index];
                let mut combined = Vec::with_capacity(existing.points.len() + one.points.len());
                let (left, right) = (&existing.points, &one.points);
                let (mut i, mut j) = (0, 0);
                while i < left.len() || j < right.len() {
                    if i < left.len() && j < right.len() && left[i].0 == right[j].0 {
                        return exec_err("vector cannot contain metrics with the same labelset");
                    }
                    if j >= right.len() || (i < left.len() && left[i].0 < right[j].0) {
                        combined.push(left[i]);
                        i += 1;
                    } else {
                        combined.push(right[j]);
                        j += 1;
                    }
                }
                existing.points = combined;
            }
            None => {
                merged.insert(labels.clone(), out.len());
                out.push(Series {
                    labels,
                    points: one.points.into_vec(),
                });
            }
        }
    }
    out.sort_by(|a, b| a.labels.cmp(&b.labels));
    Ok(out)
}

pub(crate) fn run_instant(
    storage: &dyn Storage,
    query: &str,
    expr: &Expr,
    time_ms: i64,
    options: &QueryOptions,
) -> Result<QueryOutput, EngineError> {
    let mut evaluator = Evaluator::new(storage, query, options, time_ms, time_ms, 0, false);
    evaluator.plan_selector_ranges(expr);
    evaluator.check_interrupt()?;
    let value = evaluator.eval(expr, time_ms)?;
    let value = match value {
        Value::Scalar(v) => QueryValue::Scalar {
            timestamp_ms: time_ms,
            value: v,
        },
        Value::String(s) => QueryValue::String {
            timestamp_ms: time_ms,
            value: s,
        },
        Value::Vector(samples) => QueryValue::Vector(finish_vector(samples, time_ms)?),
        Value::Matrix(series) => QueryValue::Matrix(finish_matrix(series)?),
    };
    Ok(evaluator.into_output(value))
}

pub(crate) fn run_range(
    storage: &dyn Storage,
    query: &str,
    expr: &Expr,
    start_ms: i64,
    end_ms: i64,
    step_ms: i64,
    options: &QueryOptions,
) -> Result<QueryOutput, EngineError> {
    match expr.value_type() {
        ValueType::Vector | ValueType::Scalar => {}
        other => {
            return Err(EngineError::BadData(format!(
                "invalid expression type \"{}\" for range query, must be Scalar or instant Vector",
                type_name(other)
            )));
        }
    }
    let mut evaluator = Evaluator::new(storage, query, options, start_ms, end_ms, step_ms, true);
    evaluator.plan_selector_ranges(expr);
    evaluator.grid = Some(Grid::of_range_query(start_ms, end_ms, step_ms));
    let mut out = SeriesAccumulator::default();
    let mut result_points = 0usize;
    let mut ts = start_ms;
    while ts <= end_ms {
        evaluator.check_interrupt()?;
        evaluator.current_samples = result_points;
        match evaluator.eval(expr, ts)? {
            Value::Scalar(v) => {
                out.push_scalar(ts, v);
                result_points += 1;
            }
            Value::Vector(samples) => {
                // Label-set collisions after name removal are caught when the
                // series are merged at the end (they share a timestamp).
                result_points += samples.len();
                for sample in &samples {
                    out.push(sample, ts);
                }
            }
            _ => {
                return exec_err(
                    "range query expression must evaluate to a scalar or instant vector",
                );
            }
        }
        if result_points > options.max_samples {
            return exec_err(
                "query processing would load too many samples into memory in query execution",
            );
        }
        ts += step_ms;
    }
    let series = finish_matrix(out.series)?;
    Ok(evaluator.into_output(QueryValue::Matrix(series)))
}

pub(crate) fn type_name(value_type: ValueType) -> &'static str {
    match value_type {
        ValueType::Vector => "instant vector",
        ValueType::Scalar => "scalar",
        ValueType::Matrix => "range vector",
        ValueType::String => "string",
    }
}
