//! PromQL queries generated from function families × selectors, so that a
//! comparison covers every family on every kind of series without a list of
//! hundreds of queries written by hand.
//!
//! A template holds placeholders filled from a [`Vocabulary`]: `{v}` a
//! selector of the family's kind, `{r}` a range, `{by}` a label to group by,
//! `{off}` an offset, and for subqueries `{sq}` its range, `{s}` its step
//! and `{o}` an offset inside it that moves the inner evaluations off the
//! sample grid (subquery steps are aligned to multiples of the step since
//! the epoch, so they fall on the grid otherwise).
//!
//! Left out, with the Prometheus change that makes 2.42 answer differently
//! from the Prometheus 3 semantics the engine follows:
//! - `holt_winters`: renamed `double_exponential_smoothing` and put behind
//!   `--enable-feature=promql-experimental-functions` in 3.0 (#14930).
//! - `sort_by_label`, `limitk`, `limit_ratio`, `mad_over_time`, `info`,
//!   `ts_of_*_over_time`, `first_over_time`: added after 2.42 (2.49 to 3.5),
//!   unknown to 2.42.
//! - regular expressions whose `.` must match a newline: since 3.0 `.`
//!   matches any character, `\n` included (#14505); 2.42's does not. The
//!   data set's `new\nline` label value tells them apart, so the edge case
//!   selectors use explicit alternatives.
//! - `sort`/`sort_desc` in range queries: identical data, but only 3.x
//!   warns that they are ineffective there; compared as instant queries.
//!
//! Kept, with a comparison that allows for the difference:
//! - `topk`/`bottomk` choose and order equal values differently since 2.44
//!   (#12190: the heap's top is overwritten and fixed instead of popped);
//!   answers are compared without regard to which of the tied series at
//!   the edge were kept (`compare.rs`).
//! - `rate`/`increase` extrapolate to a counter's zero point after, not
//!   before, deciding whether a series starts inside the window since 2.51
//!   (#13725): where a window's first sample lies more than 1.1 sample
//!   intervals after its start and a reset puts the zero point 0.5 to 1.1
//!   intervals before that sample, 2.42 extrapolates to the zero point and
//!   3.x half an interval. Windows start well after every series' first
//!   sample, and `rate` on gauges (which go down) reads only evenly spaced
//!   ones ([`Vocabulary::rate_gauges`]).

/// What kind of series a template needs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    /// Counters: `rate`, `increase`, ...
    Counter,
    /// Gauges: `delta`, `deriv`, `*_over_time`, ...
    Gauge,
    /// Gauges read by `rate`, for 3.x's annotation on a non-counter name.
    RateGauge,
    /// Any instant vector (counters and gauges alike).
    Any,
    /// Classic histogram buckets (`le`).
    Bucket,
    /// No selector at all (`vector(1)`, `time()`).
    None,
}

/// One query template; `instant_only` ones return range vectors or warn in
/// range queries.
pub struct Family {
    pub kind: Kind,
    pub template: &'static str,
    pub instant_only: bool,
}

const fn family(kind: Kind, template: &'static str) -> Family {
    Family {
        kind,
        template,
        instant_only: false,
    }
}

const fn instant(kind: Kind, template: &'static str) -> Family {
    Family {
        kind,
        template,
        instant_only: true,
    }
}

/// The selectors and durations one data set fills templates with.
pub struct Vocabulary {
    pub counters: Vec<String>,
    pub gauges: Vec<String>,
    /// The gauges `rate` reads: evenly spaced ones, on which 2.42 and 3.x
    /// extrapolate alike (see the crate documentation on #13725).
    pub rate_gauges: Vec<String>,
    pub buckets: Vec<String>,
    /// Selectors for `Kind::Any` templates: a few of the counters and gauges.
    pub any: Vec<String>,
    pub group_by: &'static str,
    pub range: &'static str,
    pub long_range: &'static str,
    pub offset: &'static str,
    pub subquery_range: &'static str,
    pub subquery_step: &'static str,
    pub subquery_offset: String,
}

/// A generated query and whether it may run as a range query.
pub struct Generated {
    pub query: String,
    pub instant_only: bool,
}

pub const FAMILIES: &[Family] = &[
    // Selectors, modifiers and raw samples.
    family(Kind::Any, "{v}"),
    family(Kind::Any, "{v} offset {off}"),
    family(Kind::Any, "{v} @ start()"),
    instant(Kind::Any, "{v}[{r}]"),
    instant(Kind::Any, "{v}[{r}] offset {off}"),
    // Counters.
    family(Kind::Counter, "rate({v}[{r}])"),
    family(Kind::Counter, "rate({v}[{long}])"),
    family(Kind::Counter, "increase({v}[{r}])"),
    family(Kind::Counter, "irate({v}[{r}])"),
    family(Kind::Counter, "resets({v}[{long}])"),
    family(Kind::Counter, "sum by ({by}) (rate({v}[{r}]))"),
    family(
        Kind::Counter,
        "sum without (instance) (increase({v}[{long}]))",
    ),
    family(Kind::Counter, "rate({v}[{r}] offset {off})"),
    family(Kind::Counter, "rate({v}[{r}] @ end())"),
    family(Kind::Counter, "topk(3, rate({v}[{r}]))"),
    family(
        Kind::Counter,
        "rate({v}[{r}]) / on() group_left sum(rate({v}[{r}]))",
    ),
    family(Kind::Counter, "{v} - {v} offset {off}"),
    family(
        Kind::Counter,
        "max_over_time(rate({v}[{r}] offset {o})[{sq}:{s}])",
    ),
    family(
        Kind::Counter,
        "avg_over_time(sum by ({by}) (irate({v}[{r}] offset {o}))[{sq}:{s}])",
    ),
    // Gauges and the *_over_time family.
    // A gauge under rate: 3.x adds an info annotation 2.42 does not know.
    family(Kind::RateGauge, "rate({v}[{r}])"),
    family(Kind::Gauge, "delta({v}[{r}])"),
    family(Kind::Gauge, "idelta({v}[{r}])"),
    family(Kind::Gauge, "deriv({v}[{long}])"),
    family(Kind::Gauge, "predict_linear({v}[{long}], 600)"),
    family(Kind::Gauge, "changes({v}[{long}])"),
    family(Kind::Gauge, "avg_over_time({v}[{r}])"),
    family(Kind::Gauge, "sum_over_time({v}[{r}])"),
    family(Kind::Gauge, "count_over_time({v}[{long}])"),
    family(Kind::Gauge, "min_over_time({v}[{r}])"),
    family(Kind::Gauge, "max_over_time({v}[{long}])"),
    family(Kind::Gauge, "last_over_time({v}[{r}])"),
    family(Kind::Gauge, "stddev_over_time({v}[{long}])"),
    family(Kind::Gauge, "stdvar_over_time({v}[{r}])"),
    family(Kind::Gauge, "quantile_over_time(0.75, {v}[{long}])"),
    family(Kind::Gauge, "present_over_time({v}[{r}])"),
    family(Kind::Gauge, "absent_over_time({v}[{r}])"),
    family(Kind::Gauge, "min_over_time(({v} offset {o})[{sq}:{s}])"),
    // Elementwise functions.
    family(Kind::Any, "abs({v})"),
    family(Kind::Any, "ceil({v})"),
    family(Kind::Any, "floor({v})"),
    family(Kind::Any, "round({v})"),
    family(Kind::Any, "round({v}, 0.25)"),
    family(Kind::Any, "sqrt(abs({v}))"),
    family(Kind::Any, "exp({v} / 1000)"),
    family(Kind::Any, "ln(abs({v}))"),
    family(Kind::Any, "log2({v})"),
    family(Kind::Any, "log10(abs({v}) + 1)"),
    family(Kind::Any, "clamp({v}, 0, 50)"),
    family(Kind::Any, "clamp_min({v}, 10)"),
    family(Kind::Any, "clamp_max({v}, 10)"),
    family(Kind::Any, "sgn({v})"),
    family(Kind::Any, "sin({v}) + cos({v})"),
    family(Kind::Any, "atan({v})"),
    family(Kind::Any, "deg({v}) - rad({v})"),
    family(Kind::Any, "timestamp({v})"),
    family(Kind::Any, "hour(timestamp({v}))"),
    family(
        Kind::Any,
        "minute(timestamp({v})) + day_of_week(timestamp({v}))",
    ),
    family(
        Kind::Any,
        "month(timestamp({v})) + day_of_month(timestamp({v}))",
    ),
    family(
        Kind::Any,
        "label_replace({v}, \"copy\", \"x-$1\", \"{by}\", \"(.+)\")",
    ),
    family(
        Kind::Any,
        "label_join({v}, \"joined\", \"/\", \"__name__\", \"{by}\")",
    ),
    // Arithmetic and comparisons.
    family(Kind::Any, "-{v}"),
    family(Kind::Any, "{v} * 2 + 1"),
    family(Kind::Any, "{v} / 3"),
    family(Kind::Any, "{v} % 7"),
    family(Kind::Any, "{v} ^ 0.5"),
    family(Kind::Any, "{v} > 20"),
    family(Kind::Any, "{v} <= bool 20"),
    family(Kind::Any, "{v} == {v}"),
    family(Kind::Any, "{v} != 3"),
    family(Kind::Any, "{v} / {v} offset {off}"),
    // Set operators and vector matching.
    family(Kind::Any, "{v} and {v} > 10"),
    family(Kind::Any, "{v} or vector(1)"),
    family(Kind::Any, "{v} unless {v} > 20"),
    family(Kind::Any, "{v} / on({by}) group_left sum by ({by}) ({v})"),
    family(
        Kind::Any,
        "sum by ({by}) ({v}) * on({by}) group_right count by ({by}) ({v})",
    ),
    family(Kind::Any, "{v} * ignoring(__name__) {v}"),
    family(Kind::Any, "{v} * scalar(count({v}))"),
    // Aggregations.
    family(Kind::Any, "sum({v})"),
    family(Kind::Any, "sum by ({by}) ({v})"),
    family(Kind::Any, "avg without ({by}) ({v})"),
    family(Kind::Any, "min by ({by}) ({v})"),
    family(Kind::Any, "max({v})"),
    family(Kind::Any, "count({v})"),
    family(Kind::Any, "group by ({by}) ({v})"),
    family(Kind::Any, "stddev({v})"),
    family(Kind::Any, "stdvar by ({by}) ({v})"),
    family(Kind::Any, "topk(3, {v})"),
    family(Kind::Any, "bottomk(2, {v})"),
    family(Kind::Any, "topk by ({by}) (1, {v})"),
    family(Kind::Any, "quantile(0.9, {v})"),
    family(Kind::Any, "quantile by ({by}) (0.25, {v})"),
    family(Kind::Any, "count_values(\"value\", {v})"),
    instant(Kind::Any, "sort({v})"),
    instant(Kind::Any, "sort_desc({v})"),
    family(Kind::Any, "absent({v})"),
    family(Kind::Any, "scalar(sum({v}))"),
    family(
        Kind::Any,
        "max_over_time(({v} offset {o})[{sq}:{s}] offset {off})",
    ),
    // Classic histograms.
    family(
        Kind::Bucket,
        "histogram_quantile(0.9, sum by (le) (rate({v}[{r}])))",
    ),
    family(Kind::Bucket, "histogram_quantile(0.5, rate({v}[{long}]))"),
    family(
        Kind::Bucket,
        "histogram_quantile(0.99, sum by ({by}, le) (increase({v}[{r}])))",
    ),
    family(Kind::Bucket, "histogram_quantile(0.2, {v})"),
    family(Kind::Bucket, "sum by (le) ({v})"),
    // No selector.
    family(Kind::None, "vector(1)"),
    family(Kind::None, "time()"),
    family(Kind::None, "absent(nonexistent_metric{job=\"x\"})"),
    family(Kind::None, "vector(time()) - 3"),
    family(Kind::None, "pi() * 2"),
    family(Kind::None, "day_of_month() + days_in_month() + year()"),
];

impl Vocabulary {
    fn selectors(&self, kind: Kind) -> Vec<&str> {
        let list: &[String] = match kind {
            Kind::Counter => &self.counters,
            Kind::Gauge => &self.gauges,
            Kind::RateGauge => &self.rate_gauges,
            Kind::Any => &self.any,
            Kind::Bucket => &self.buckets,
            Kind::None => return vec![""],
        };
        list.iter().map(String::as_str).collect()
    }

    fn fill(&self, template: &str, selector: &str) -> String {
        template
            .replace("{v}", selector)
            .replace("{long}", self.long_range)
            .replace("{r}", self.range)
            .replace("{by}", self.group_by)
            .replace("{off}", self.offset)
            .replace("{sq}", self.subquery_range)
            .replace("{s}", self.subquery_step)
            .replace("{o}", &self.subquery_offset)
    }

    /// Every family applied to every selector of its kind.
    pub fn queries(&self) -> Vec<Generated> {
        let mut out = Vec::new();
        for family in FAMILIES {
            for selector in self.selectors(family.kind) {
                out.push(Generated {
                    query: self.fill(family.template, selector),
                    instant_only: family.instant_only,
                });
            }
        }
        out
    }
}

/// Selectors of the test data set (`sluice_testkit::Dataset`) as
/// promtool backfills it, plus the gauge `overlap_only_gauge` some
/// comparisons add to it, for the generated queries.
pub fn promtool_vocabulary() -> Vocabulary {
    let strings = |list: &[&str]| list.iter().map(|s| (*s).to_owned()).collect();
    // The data set is fixed, so `rate` agreeing with 2.42 on all three
    // gauges is settled once, not left to scrape timing.
    let gauges: Vec<String> = strings(&[
        "node_temperature_celsius",
        "ephemeral_worker_up",
        "overlap_only_gauge",
    ]);
    Vocabulary {
        counters: strings(&[
            "http_requests_total{job=\"api\"}",
            "http_requests_total{code!=\"200\",method=~\"G.*\"}",
            "request_duration_seconds_count",
        ]),
        rate_gauges: gauges.clone(),
        gauges,
        buckets: strings(&[
            "request_duration_seconds_bucket",
            "request_duration_seconds_bucket{job=\"web\"}",
        ]),
        any: strings(&[
            "http_requests_total{instance=~\"10\\\\.0\\\\.[01]\\\\..*\",code=\"500\"}",
            "node_temperature_celsius",
            "ephemeral_worker_up",
            "edge_case_labels{value!=\"plain\"}",
        ]),
        group_by: "job",
        range: "5m",
        long_range: "1h",
        offset: "30m",
        subquery_range: "30m",
        subquery_step: "1m",
        // Inner evaluations at 43 s past each minute, samples on the minute
        // and (overlap) the half minute.
        subquery_offset: "17s".to_owned(),
    }
}
