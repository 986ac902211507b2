//! sluice's embedded PromQL engine.
//!
//! It evaluates PromQL expressions (parsed with `promql-parser`) with
//! Prometheus 3 semantics over any [`Storage`], so that one sluice process is a
//! complete system with no backend, and so that queriers can execute sharded
//! sub-queries that read only their share of the series ([`Shard`]). The API
//! is synchronous: evaluation is CPU-bound and callers run it on a blocking
//! thread, passing a deadline and a cancellation flag that the engine checks
//! between evaluation steps.
//!
//! Storage hands series over decoded or as their XOR chunks
//! ([`SeriesSamples`]); chunks are decoded as evaluation reaches them, so a
//! query holds the compressed chunks it selected and a window of decoded
//! samples per series, not every sample of its range.
//!
//! Native histograms are out of scope: a query that meets one fails with an
//! execution error rather than returning a wrong answer.
//!
//! Correctness is checked against Prometheus' own PromQL test scripts by
//! `tests/conformance.rs` (see its header for the environment variables),
//! the sharding and splitting invariants by `tests/properties.rs`, and
//! speed by `benches/engine.rs` (`cargo bench -p sluice-engine`) and, over
//! Prometheus blocks against Prometheus itself, by `cargo bench -p sluice
//! --bench blocks`.

mod aggregate;
mod batch;
mod binary;
mod blocking;
mod cursor;
mod eval;
mod functions;
mod gosort;
mod hashing;
mod info;
pub mod labels;
mod range_functions;
pub mod storage;

use std::sync::Arc;
use std::sync::atomic::AtomicBool;
use std::time::{Duration, Instant};

pub use blocking::evaluate_off_runtime;
pub use labels::{Label, Labels};
pub use storage::{
    FloatChunk, FloatChunks, MemoryStorage, SeriesSamples, Shard, Storage, StoredSeries,
};

/// Why a query failed. Each variant maps onto one Prometheus `errorType`.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum EngineError {
    /// The expression does not parse or is not valid for this kind of query (`bad_data`).
    #[error("{0}")]
    BadData(String),
    /// Evaluation failed (`execution`).
    #[error("{0}")]
    Execution(String),
    /// The caller cancelled the query (`canceled`).
    #[error("query was canceled")]
    Canceled,
    /// The query ran past its deadline (`timeout`).
    #[error("query timed out")]
    Timeout,
    /// Reading the stored data failed: the store is unreachable or its bytes
    /// are corrupt (`internal`, as Prometheus answers storage errors).
    #[error("{0}")]
    Storage(String),
}

impl EngineError {
    /// The Prometheus API `errorType` for this error.
    pub fn error_type(&self) -> &'static str {
        match self {
            EngineError::BadData(_) => "bad_data",
            EngineError::Execution(_) => "execution",
            EngineError::Canceled => "canceled",
            EngineError::Timeout => "timeout",
            EngineError::Storage(_) => "internal",
        }
    }
}

/// Per-query settings.
#[derive(Clone, Debug)]
pub struct QueryOptions {
    /// How far back an instant selector looks for a sample; zero or less
    /// means Prometheus' default, 5m.
    pub lookback_delta_ms: i64,
    /// The most samples a query may hold at once before it fails.
    pub max_samples: usize,
    /// When set, the query fails with [`EngineError::Timeout`] after this instant.
    pub deadline: Option<Instant>,
    /// When set and raised, the query fails with [`EngineError::Canceled`].
    pub cancel: Option<Arc<AtomicBool>>,
    /// When set, selectors read only this shard of the series.
    pub shard: Option<Shard>,
    /// The resolution of subqueries written without a step (`x[1h:]`);
    /// Prometheus uses its global evaluation interval, 1m by default.
    pub default_subquery_step_ms: i64,
}

impl Default for QueryOptions {
    fn default() -> Self {
        QueryOptions {
            lookback_delta_ms: 5 * 60 * 1000,
            max_samples: 50_000_000,
            deadline: None,
            cancel: None,
            shard: None,
            default_subquery_step_ms: 60_000,
        }
    }
}

impl QueryOptions {
    pub fn with_timeout(mut self, timeout: Duration) -> Self {
        self.deadline = Some(Instant::now() + timeout);
        self
    }
}

/// One output series: sorted labels and points in time order.
#[derive(Clone, Debug, PartialEq)]
pub struct Series {
    pub labels: Labels,
    /// `(timestamp in ms, value)` pairs, ascending by time.
    pub points: Vec<(i64, f64)>,
}

/// One sample of an instant vector.
#[derive(Clone, Debug, PartialEq)]
pub struct InstantSample {
    pub labels: Labels,
    pub timestamp_ms: i64,
    pub value: f64,
}

/// The value a query returns.
#[derive(Clone, Debug, PartialEq)]
pub enum QueryValue {
    Scalar {
        timestamp_ms: i64,
        value: f64,
    },
    String {
        timestamp_ms: i64,
        value: String,
    },
    /// An instant query's vector, in the order PromQL defines (sorted by
    /// labels unless the expression orders it, e.g. `sort` or `topk`).
    Vector(Vec<InstantSample>),
    /// A range query's result (always sorted by labels), or an instant
    /// query whose expression is a range vector.
    Matrix(Vec<Series>),
}

/// A query's value plus the annotations Prometheus would report with it.
#[derive(Clone, Debug, PartialEq)]
pub struct QueryOutput {
    pub value: QueryValue,
    /// Rendered like Prometheus' API: `PromQL warning: ... (line:col)`.
    pub warnings: Vec<String>,
    /// Rendered like Prometheus' API: `PromQL info: ... (line:col)`.
    pub infos: Vec<String>,
    /// Samples loaded by selectors, summed over evaluation steps: a sample
    /// that several overlapping windows read counts once per window.
    pub samples_read: u64,
}

/// The engine. It holds no per-query state, so one instance serves any
/// number of threads.
#[derive(Clone, Debug, Default)]
pub struct Engine {}

impl Engine {
    pub fn new() -> Self {
        Engine {}
    }

    /// Evaluates `query` at one instant.
    pub fn instant(
        &self,
        storage: &dyn Storage,
        query: &str,
        time_ms: i64,
        options: &QueryOptions,
    ) -> Result<QueryOutput, EngineError> {
        let expr = parse(query)?;
        eval::run_instant(storage, query, &expr, time_ms, options)
    }

    /// Evaluates `query` at every step from `start_ms` to `end_ms` inclusive.
    pub fn range(
        &self,
        storage: &dyn Storage,
        query: &str,
        start_ms: i64,
        end_ms: i64,
        step_ms: i64,
        options: &QueryOptions,
    ) -> Result<QueryOutput, EngineError> {
        let expr = parse(query)?;
        self.range_expr(storage, &expr, query, start_ms, end_ms, step_ms, options)
    }
}

impl Engine {
    /// Like [`Engine::instant`], for an expression the caller has already
    /// parsed; `query` is its text, used to position annotations.
    pub fn instant_expr(
        &self,
        storage: &dyn Storage,
        expr: &promql_parser::parser::Expr,
        query: &str,
        time_ms: i64,
        options: &QueryOptions,
    ) -> Result<QueryOutput, EngineError> {
        eval::run_instant(storage, query, expr, time_ms, options)
    }

    /// Like [`Engine::range`], for an expression the caller has already
    /// parsed; `query` is its text, used to position annotations.
    #[allow(clippy::too_many_arguments)]
    pub fn range_expr(
        &self,
        storage: &dyn Storage,
        expr: &promql_parser::parser::Expr,
        query: &str,
        start_ms: i64,
        end_ms: i64,
        step_ms: i64,
        options: &QueryOptions,
    ) -> Result<QueryOutput, EngineError> {
        if step_ms <= 0 {
            return Err(EngineError::BadData(
                "zero or negative query resolution step widths are not accepted. Try a positive integer".into(),
            ));
        }
        if end_ms < start_ms {
            return Err(EngineError::BadData(
                "end timestamp must not be before start time".into(),
            ));
        }
        eval::run_range(storage, query, expr, start_ms, end_ms, step_ms, options)
    }
}

/// Parses through `sluice-promql`, whose depth bound keeps the recursive
/// evaluator within a thread's stack whatever the query text.
fn parse(query: &str) -> Result<std::sync::Arc<promql_parser::parser::Expr>, EngineError> {
    sluice_promql::parse(query).map_err(EngineError::BadData)
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::Ordering;

    use super::*;

    fn store() -> MemoryStorage {
        let storage = MemoryStorage::new();
        for instance in 0..4 {
            let labels = Labels::from_pairs([
                ("__name__", "up".to_string()),
                ("instance", format!("i{instance}")),
            ]);
            let samples: Vec<(i64, f64)> =
                (0..10).map(|i| (i * 60_000, f64::from(instance))).collect();
            storage.append(&labels, &samples);
        }
        storage
    }

    #[test]
    fn instant_selector_honours_lookback() {
        let storage = store();
        let engine = Engine::new();
        let options = QueryOptions::default();
        let inside = engine
            .instant(&storage, "up", 9 * 60_000 + 299_000, &options)
            .expect("evaluates");
        let QueryValue::Vector(samples) = inside.value else {
            panic!("vector expected")
        };
        assert_eq!(samples.len(), 4);
        let outside = engine
            .instant(&storage, "up", 9 * 60_000 + 300_000, &options)
            .expect("evaluates");
        assert_eq!(outside.value, QueryValue::Vector(Vec::new()));
    }

    #[test]
    fn staleness_marker_hides_series() {
        let storage = store();
        let labels = Labels::from_pairs([("__name__", "up"), ("instance", "i0")]);
        storage.append(&labels, &[(600_000, storage::stale_nan())]);
        let output = Engine::new()
            .instant(&storage, "up", 610_000, &QueryOptions::default())
            .expect("evaluates");
        let QueryValue::Vector(samples) = output.value else {
            panic!("vector expected")
        };
        assert_eq!(samples.len(), 3);
    }

    fn series_names(output: QueryOutput) -> Vec<Labels> {
        let QueryValue::Matrix(series) = output.value else {
            panic!("matrix expected")
        };
        series.into_iter().map(|one| one.labels).collect()
    }

    #[test]
    fn shards_partition_the_series_by_option_or_query_shard_matcher() {
        let storage = store();
        let engine = Engine::new();
        let mut seen = 0;
        for index in 0..3 {
            let options = QueryOptions {
                shard: Some(Shard { index, count: 3 }),
                ..QueryOptions::default()
            };
            let by_option = engine
                .range(&storage, "up", 0, 540_000, 60_000, &options)
                .expect("evaluates");
            let query = format!("up{{__query_shard__=\"{}_of_3\"}}", index + 1);
            let by_matcher = engine
                .range(
                    &storage,
                    &query,
                    0,
                    540_000,
                    60_000,
                    &QueryOptions::default(),
                )
                .expect("evaluates");
            let by_matcher = series_names(by_matcher);
            seen += by_matcher.len();
            assert_eq!(by_matcher, series_names(by_option));
        }
        assert_eq!(seen, 4);
        for bad in ["0_of_3", "4_of_3", "1of3", "x_of_3"] {
            let query = format!("up{{__query_shard__=\"{bad}\"}}");
            let error = engine
                .instant(&storage, &query, 60_000, &QueryOptions::default())
                .expect_err("a bad shard");
            assert_eq!(error.error_type(), "bad_data", "{bad}");
        }
    }

    #[test]
    fn sample_limit_is_an_execution_error() {
        let storage = store();
        let options = QueryOptions {
            max_samples: 10,
            ..QueryOptions::default()
        };
        let error = Engine::new()
            .instant(&storage, "up[10m]", 540_000, &options)
            .expect_err("too many samples");
        assert_eq!(error.error_type(), "execution");
    }

    #[test]
    fn cancellation_and_deadline_are_honoured() {
        let storage = store();
        let engine = Engine::new();
        let cancel = Arc::new(AtomicBool::new(false));
        cancel.store(true, Ordering::Relaxed);
        let options = QueryOptions {
            cancel: Some(cancel),
            ..QueryOptions::default()
        };
        let error = engine
            .range(&storage, "up", 0, 540_000, 60_000, &options)
            .expect_err("cancelled");
        assert_eq!(error, EngineError::Canceled);
        let options = QueryOptions {
            deadline: Some(Instant::now()),
            ..QueryOptions::default()
        };
        let error = engine
            .range(&storage, "up", 0, 540_000, 60_000, &options)
            .expect_err("timed out");
        assert_eq!(error, EngineError::Timeout);
    }

    #[test]
    fn native_histograms_are_refused() {
        let storage = store();
        let labels = Labels::from_pairs([("__name__", "latency")]);
        storage.append_histogram(&labels, 0);
        let error = Engine::new()
            .instant(&storage, "latency", 0, &QueryOptions::default())
            .expect_err("refused");
        assert_eq!(error.error_type(), "execution");
    }

    #[test]
    fn annotations_carry_positions() {
        let storage = store();
        let engine = Engine::new();
        let options = QueryOptions::default();
        let sorted = engine
            .range(&storage, "sort(up)", 0, 120_000, 60_000, &options)
            .expect("evaluates");
        assert_eq!(
            sorted.warnings,
            vec![
                "PromQL warning: sort is ineffective for range queries since results are always ordered by labels (1:1)"
            ]
        );
        let quantile = engine
            .instant(&storage, "quantile(2, up)", 60_000, &options)
            .expect("evaluates");
        assert_eq!(
            quantile.warnings,
            vec!["PromQL warning: quantile value should be between 0 and 1, got 2 (1:10)"]
        );
        let rate = engine
            .instant(&storage, "rate(up[5m])", 300_000, &options)
            .expect("evaluates");
        assert_eq!(
            rate.infos,
            vec![
                "PromQL info: metric might not be a counter, name does not end in _total/_sum/_count/_bucket: \"up\" (1:6)"
            ]
        );
    }

    fn instant_labels(storage: &MemoryStorage, query: &str) -> Vec<Labels> {
        let output = Engine::new()
            .instant(storage, query, 60_000, &QueryOptions::default())
            .expect("evaluates");
        let QueryValue::Vector(samples) = output.value else {
            panic!("vector expected")
        };
        let mut labels: Vec<Labels> = samples.into_iter().map(|s| s.labels).collect();
        labels.sort();
        labels
    }

    fn grouped_store() -> MemoryStorage {
        let storage = MemoryStorage::new();
        for instance in 0..20 {
            let labels = Labels::from_pairs([
                ("__name__", "requests_total".to_string()),
                ("group", format!("g{}", instance % 2)),
                ("instance", format!("i{instance}")),
            ]);
            storage.append(&labels, &[(0, f64::from(instance))]);
        }
        storage
    }

    #[test]
    fn limitk_keeps_k_series_per_group() {
        let storage = grouped_store();
        assert_eq!(
            instant_labels(&storage, "limitk(3, requests_total)").len(),
            3
        );
        let by_group = instant_labels(&storage, "limitk by (group) (2, requests_total)");
        assert_eq!(by_group.len(), 4);
        assert_eq!(
            by_group.iter().filter(|l| l.get("group") == "g0").count(),
            2
        );
        assert!(instant_labels(&storage, "limitk(0, requests_total)").is_empty());
        assert_eq!(
            instant_labels(&storage, "limitk(100, requests_total)").len(),
            20
        );
    }

    #[test]
    fn limit_ratio_splits_series_into_complementary_sets() {
        let storage = grouped_store();
        let all = instant_labels(&storage, "requests_total");
        for ratio in [0.1, 0.25, 0.5, 0.9] {
            let kept = instant_labels(&storage, &format!("limit_ratio({ratio}, requests_total)"));
            let rest = instant_labels(
                &storage,
                &format!("limit_ratio({}, requests_total)", ratio - 1.0),
            );
            assert!(
                kept.iter().all(|l| !rest.contains(l)),
                "ratio {ratio}: sets overlap"
            );
            let mut union: Vec<Labels> = kept.into_iter().chain(rest).collect();
            union.sort();
            assert_eq!(union, all, "ratio {ratio}: sets do not cover all series");
        }
        assert_eq!(
            instant_labels(&storage, "limit_ratio(1, requests_total)"),
            all
        );
        assert!(instant_labels(&storage, "limit_ratio(0, requests_total)").is_empty());
        let capped = Engine::new()
            .instant(
                &storage,
                "limit_ratio(1.1, requests_total)",
                60_000,
                &QueryOptions::default(),
            )
            .expect("evaluates");
        assert_eq!(
            capped.warnings,
            vec![
                "PromQL warning: ratio value should be between -1 and 1, got 1.1, capping to 1 (1:13)"
            ]
        );
    }

    #[test]
    fn range_query_rejects_range_vectors() {
        let storage = store();
        let error = Engine::new()
            .range(
                &storage,
                "up[5m]",
                0,
                60_000,
                60_000,
                &QueryOptions::default(),
            )
            .expect_err("bad data");
        assert_eq!(error.error_type(), "bad_data");
    }

    #[test]
    fn count_values_without_a_modifier_groups_by_the_value() {
        let storage = store();
        let output = Engine::new()
            .instant(
                &storage,
                "count_values(\"v\", round(up / 2))",
                60_000,
                &QueryOptions::default(),
            )
            .expect("evaluates");
        let QueryValue::Vector(mut samples) = output.value else {
            panic!("vector expected")
        };
        samples.sort_by(|a, b| a.labels.cmp(&b.labels));
        let counted: Vec<(String, f64)> = samples
            .iter()
            .map(|sample| (sample.labels.to_string(), sample.value))
            .collect();
        assert_eq!(
            counted,
            vec![
                ("{v=\"0\"}".to_owned(), 1.0),
                ("{v=\"1\"}".to_owned(), 2.0),
                ("{v=\"2\"}".to_owned(), 1.0)
            ]
        );
    }
}
