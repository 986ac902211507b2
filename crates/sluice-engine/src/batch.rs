//! Evaluation series by series over many steps at once, for the nodes of a
//! range query (or of a subquery) that allow it: instant selectors, the
//! window functions of [`crate::range_functions`] over a range selector,
//! and the folding aggregations (`sum`, `avg`, `count`, `min`, `max`,
//! `group`, `stddev`, `stdvar`) over either.
//!
//! The step evaluator walks the expression once per step, and for every
//! step visits every series: it finds each series' window again (a search
//! in a different place of memory per series), builds a vector of samples
//! and a fresh aggregation map. Here a node's values for a run of steps
//! (a [`StepBatch`]) are computed one series at a time, the series' windows
//! sliding forward in its own decoded samples, and aggregation groups are
//! found once per series rather than once per sample. The step evaluator
//! then takes each step's vector from the batch, so every rule that is not
//! batched still applies step by step, unchanged.
//!
//! Results are the same bits as stepping: each window sees the same
//! samples, and each group adds its members' values in the same order
//! (the input's series order). The samples a step loads are counted for
//! that step, as stepping counts them.

use std::sync::Arc;

use promql_parser::parser::{AggregateExpr, Call, Expr, MatrixSelector, VectorSelector};

use crate::EngineError;
use crate::aggregate::{Fold, Group, key_spec};
use crate::eval::{Evaluator, Sample, Value, offset_ms};
use crate::hashing::FastMap;
use crate::labels::Labels;
use crate::range_functions::{RangeFunction, range_function};
use crate::storage::is_stale_nan;

/// About how many values (series × steps) one batch holds: a few MiB,
/// whatever the number of series.
const BATCH_VALUES: usize = 1 << 18;
const MIN_BATCH_STEPS: usize = 8;
const MAX_BATCH_STEPS: usize = 1024;

/// The evaluation times of a range query, or of a subquery's inner
/// expression: `origin + k * step` up to `end`.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Grid {
    pub(crate) origin: i64,
    pub(crate) step: i64,
    pub(crate) end: i64,
    /// How far before the latest time asked for later requests may still
    /// reach (the ranges of the subqueries evaluating this grid): batches
    /// older than that are dropped.
    pub(crate) keep_ms: i64,
}

impl Grid {
    /// The steps of a range query.
    pub(crate) fn of_range_query(start: i64, end: i64, step: i64) -> Grid {
        Grid {
            origin: start,
            step,
            end,
            keep_ms: 0,
        }
    }

    fn index(&self, ts: i64) -> Option<usize> {
        let offset = ts - self.origin;
        (ts <= self.end && offset >= 0 && offset % self.step == 0)
            .then(|| (offset / self.step) as usize)
    }

    fn time(&self, index: usize) -> i64 {
        self.origin + index as i64 * self.step
    }
}

/// One node's results for steps `first..first + steps` of a grid, stored
/// series by series.
pub(crate) struct StepBatch {
    first: usize,
    steps: usize,
    /// Each output series' labels and whether its metric name is to go.
    series: Vec<(Arc<Labels>, bool)>,
    values: Vec<f64>,
    present: Vec<bool>,
    /// For a selector's output, each value's own sample time.
    times: Option<Vec<i64>>,
    /// For an aggregation's output, the index of each group's first member
    /// at each step: a step's groups come in that order, as stepping makes
    /// them. Other outputs come in series order.
    order: Option<Vec<u32>>,
    /// Samples loaded at each step.
    loaded: Vec<usize>,
}

impl StepBatch {
    fn new(first: usize, steps: usize, series: Vec<(Arc<Labels>, bool)>) -> StepBatch {
        let cells = series.len() * steps;
        StepBatch {
            first,
            steps,
            series,
            values: vec![0.0; cells],
            present: vec![false; cells],
            times: None,
            order: None,
            loaded: vec![0; steps],
        }
    }

    fn last(&self) -> usize {
        self.first + self.steps - 1
    }

    fn set(&mut self, series: usize, step: usize, value: f64) {
        let cell = series * self.steps + step;
        self.values[cell] = value;
        self.present[cell] = true;
    }

    /// The vector of step `index` (of the grid), at time `ts`.
    fn vector(&self, index: usize, ts: i64) -> Vec<Sample> {
        let step = index - self.first;
        let mut members: Vec<usize> = (0..self.series.len())
            .filter(|series| self.present[series * self.steps + step])
            .collect();
        if let Some(order) = &self.order {
            members.sort_by_key(|series| order[series * self.steps + step]);
        }
        members
            .into_iter()
            .map(|series| {
                let cell = series * self.steps + step;
                let (labels, drop_name) = &self.series[series];
                Sample {
                    labels: Arc::clone(labels),
                    t: self.times.as_ref().map_or(ts, |times| times[cell]),
                    v: self.values[cell],
                    drop_name: *drop_name,
                }
            })
            .collect()
    }
}

fn unwrap_parens(expr: &Expr) -> &Expr {
    match expr {
        Expr::Paren(paren) => unwrap_parens(&paren.expr),
        other => other,
    }
}

/// The range selector a window function reads, if `call` is one of
/// [`range_function`]'s over a plain range selector.
fn function_over_selector(call: &Call) -> Option<(RangeFunction, &MatrixSelector)> {
    let function = range_function(call.func.name)?;
    match call.args.args.as_slice() {
        [arg] => match unwrap_parens(arg) {
            Expr::MatrixSelector(ms) if ms.vs.at.is_none() => Some((function, ms)),
            _ => None,
        },
        _ => None,
    }
}

/// Whether `expr` is evaluated here. Aggregations only over inputs whose
/// series come in the same order at every step, so that their groups add
/// members in the order stepping would.
pub(crate) fn batchable(expr: &Expr) -> bool {
    match expr {
        Expr::VectorSelector(vs) => vs.at.is_none(),
        Expr::Call(call) => function_over_selector(call).is_some(),
        Expr::Aggregate(aggregate) => {
            let op = aggregate.op.to_string();
            let folds = Fold::named(&op).is_some_and(|fold| fold != Fold::Quantile);
            folds
                && aggregate.param.is_none()
                && matches!(
                    unwrap_parens(&aggregate.expr),
                    Expr::VectorSelector(_) | Expr::Call(_)
                )
                && batchable(unwrap_parens(&aggregate.expr))
        }
        _ => false,
    }
}

impl Evaluator<'_> {
    /// `expr`'s vector at `ts` from a batch, computing the batch if none
    /// holds `ts`; `None` when `ts` is not a time of the current grid.
    pub(crate) fn eval_batched(
        &mut self,
        expr: &Expr,
        ts: i64,
    ) -> Result<Option<Value>, EngineError> {
        let Some(grid) = self.grid else {
            return Ok(None);
        };
        let Some(index) = grid.index(ts) else {
            return Ok(None);
        };
        let key = expr as *const Expr as usize;
        let mut batches = self.batches.remove(&key).unwrap_or_default();
        let position = match batches
            .iter()
            .position(|batch| batch.first <= index && index <= batch.last())
        {
            Some(position) => position,
            None => {
                let steps = self.batch_steps(expr)?;
                let steps = steps.min(((grid.end - ts) / grid.step) as usize + 1);
                let batch = self.compute_batch(expr, grid, index, steps)?;
                let oldest_kept = ts - grid.keep_ms;
                batches.retain(|batch| grid.time(batch.last()) >= oldest_kept);
                batches.push(batch);
                batches.len() - 1
            }
        };
        let batch = &batches[position];
        let loaded = batch.loaded[index - batch.first];
        let vector = batch.vector(index, ts);
        self.batches.insert(key, batches);
        self.add_samples(loaded)?;
        Ok(Some(Value::Vector(vector)))
    }

    /// How many steps a batch of `expr` takes: [`BATCH_VALUES`] over the
    /// number of series its selector reads.
    fn batch_steps(&mut self, expr: &Expr) -> Result<usize, EngineError> {
        let vs = match unwrap_parens(expr) {
            Expr::VectorSelector(vs) => vs,
            Expr::Call(call) => match function_over_selector(call) {
                Some((_, ms)) => &ms.vs,
                None => return Ok(MIN_BATCH_STEPS),
            },
            Expr::Aggregate(aggregate) => return self.batch_steps(&aggregate.expr),
            _ => return Ok(MIN_BATCH_STEPS),
        };
        let selected = self.take_selected(vs)?;
        let series = selected.series.len().max(1);
        self.put_back(vs, selected);
        Ok((BATCH_VALUES / series).clamp(MIN_BATCH_STEPS, MAX_BATCH_STEPS))
    }

    fn compute_batch(
        &mut self,
        expr: &Expr,
        grid: Grid,
        first: usize,
        steps: usize,
    ) -> Result<StepBatch, EngineError> {
        match unwrap_parens(expr) {
            Expr::VectorSelector(vs) => self.selector_batch(vs, grid, first, steps),
            Expr::Call(call) => match function_over_selector(call) {
                Some((function, ms)) => {
                    self.function_batch(function, ms, &call.args.args[0], grid, first, steps)
                }
                None => crate::eval::exec_err("internal error: call is not batchable"),
            },
            Expr::Aggregate(aggregate) => self.aggregate_batch(aggregate, grid, first, steps),
            _ => crate::eval::exec_err("internal error: expression is not batchable"),
        }
    }

    fn selector_batch(
        &mut self,
        vs: &VectorSelector,
        grid: Grid,
        first: usize,
        steps: usize,
    ) -> Result<StepBatch, EngineError> {
        let mut selected = self.take_selected(vs)?;
        let labels = selected
            .series
            .iter()
            .map(|series| (Arc::clone(&series.labels), false))
            .collect();
        let mut batch = StepBatch::new(first, steps, labels);
        let mut times = vec![0; batch.values.len()];
        let offset = offset_ms(&vs.offset);
        let lookback = self.lookback_delta();
        for (index, series) in selected.series.iter_mut().enumerate() {
            self.maybe_check_interrupt()?;
            for step in 0..steps {
                let ref_time = grid.time(first + step) - offset;
                if let Some((t, v)) = series.latest(ref_time - lookback, ref_time)? {
                    batch.set(index, step, v);
                    times[index * steps + step] = t;
                    batch.loaded[step] += 1;
                }
            }
        }
        batch.times = Some(times);
        self.put_back(vs, selected);
        Ok(batch)
    }

    fn function_batch(
        &mut self,
        function: RangeFunction,
        ms: &MatrixSelector,
        arg: &Expr,
        grid: Grid,
        first: usize,
        steps: usize,
    ) -> Result<StepBatch, EngineError> {
        let vs = &ms.vs;
        let mut selected = self.take_selected(vs)?;
        let labels = selected
            .series
            .iter()
            .map(|series| (Arc::clone(&series.labels), !function.keeps_name))
            .collect();
        let mut batch = StepBatch::new(first, steps, labels);
        let offset = offset_ms(&vs.offset);
        let range = ms.range.as_millis() as i64;
        let mut kept = Vec::new();
        let mut answered = Vec::new();
        for (index, series) in selected.series.iter_mut().enumerate() {
            self.maybe_check_interrupt()?;
            let mut any = false;
            for step in 0..steps {
                let ref_time = grid.time(first + step) - offset;
                let window_start = ref_time - range;
                let (from, to) = series.window(window_start, ref_time)?;
                if from >= to {
                    continue;
                }
                let mut points = &series.cursor.samples()[from..to];
                if points.iter().any(|(_, v)| is_stale_nan(*v)) {
                    kept.clear();
                    kept.extend(points.iter().filter(|(_, v)| !is_stale_nan(*v)));
                    if kept.is_empty() {
                        continue;
                    }
                    points = &kept;
                }
                batch.loaded[step] += points.len();
                if let Some(value) = (function.apply)(points, window_start, ref_time) {
                    batch.set(index, step, value);
                    any = true;
                }
            }
            if any {
                answered.push(Arc::clone(&series.labels));
            }
        }
        self.put_back(vs, selected);
        if function.reads_counters {
            crate::functions::hint_counters(self, answered.iter(), arg);
        }
        Ok(batch)
    }

    fn aggregate_batch(
        &mut self,
        aggregate: &AggregateExpr,
        grid: Grid,
        first: usize,
        steps: usize,
    ) -> Result<StepBatch, EngineError> {
        let op = aggregate.op.to_string();
        let Some(fold) = Fold::named(&op) else {
            return crate::eval::exec_err(format!("aggregation {op:?} is not supported"));
        };
        let input = self.compute_batch(&aggregate.expr, grid, first, steps)?;
        let (groups, group_of) = self.groups_of(aggregate, &input.series);
        let mut states: Vec<Option<Group>> = (0..groups.len() * steps).map(|_| None).collect();
        let mut order = vec![0u32; groups.len() * steps];
        // Series by series, each group adds its members at every step in
        // series order: the order in which stepping meets them.
        for (member, group) in group_of.iter().enumerate() {
            for step in 0..steps {
                let cell = member * steps + step;
                if !input.present[cell] {
                    continue;
                }
                let value = input.values[cell];
                let state = &mut states[group * steps + step];
                match state {
                    Some(state) => state.add(fold, value),
                    None => {
                        let labels = Arc::clone(&groups[*group].0);
                        *state = Some(Group::new(fold, value, labels, false));
                        order[group * steps + step] = member as u32;
                    }
                }
            }
        }
        let mut batch = StepBatch::new(first, steps, groups);
        for (cell, state) in states.iter_mut().enumerate() {
            if let Some(state) = state {
                let value = state.value(fold, f64::NAN);
                batch.set(cell / steps, cell % steps, value);
            }
        }
        batch.order = Some(order);
        batch.loaded = input.loaded;
        Ok(batch)
    }

    /// The groups `aggregate` makes of `series` (labels, and whether a
    /// member drops its name), and each series' group.
    fn groups_of(
        &mut self,
        aggregate: &AggregateExpr,
        series: &[(Arc<Labels>, bool)],
    ) -> (Vec<(Arc<Labels>, bool)>, Vec<usize>) {
        let node = aggregate as *const AggregateExpr as usize;
        let spec = key_spec(&aggregate.modifier);
        let mut index_by_key: FastMap<u64, usize> = FastMap::default();
        let mut groups: Vec<(Arc<Labels>, bool)> = Vec::new();
        let mut group_of = Vec::with_capacity(series.len());
        for (labels, drop_name) in series {
            let key = self.group_key(node, labels, |labels| spec.hash(labels));
            let group = *index_by_key.entry(key).or_insert_with(|| {
                groups.push((Arc::new(spec.labels(labels)), false));
                groups.len() - 1
            });
            groups[group].1 |= *drop_name;
            group_of.push(group);
        }
        (groups, group_of)
    }
}
