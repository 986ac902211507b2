//! The deterministic multi-day data set every end-to-end test and benchmark
//! loads into a real Prometheus.
//!
//! Everything is a pure function of the series identity and the sample index
//! (no clocks, no RNG state, no transcendental maths), so the same bytes come
//! out on every machine and tests can compute expected answers from
//! [`Dataset::samples`] instead of hard-coding them.

use std::fmt::Write as _;

/// 2026-01-05T00:00:00Z in milliseconds: the (inclusive) end of the data,
/// whatever its length.
const END_MS: i64 = 1_767_571_200_000;
const DAY_MS: i64 = 24 * 60 * 60 * 1000;
const HOUR_MS: i64 = 60 * 60 * 1000;
/// Length of [`Dataset::new`]: three days give query splitting by day several
/// full days plus partial edges to work on.
const DEFAULT_DAYS: u32 = 3;
/// The shortest data set that still contains every special time below.
const MIN_DAYS: u32 = 2;
/// 60 s keeps the file (~100 series × 4321 points for 3 days) small enough
/// that promtool backfills it in a few seconds.
const STEP_MS: i64 = 60_000;
/// Last sample of `ephemeral_worker_up{worker="vanishing"}`:
/// 2026-01-03T12:00:00Z, the middle of the default 3-day range. An absolute
/// time, so it is the same for every length.
const VANISHING_SERIES_END_MS: i64 = END_MS - 36 * HOUR_MS;
/// First sample after the reset of the counter-reset series:
/// 2026-01-03T06:00:00Z (a day and 6 h into the default 3-day range). An
/// absolute time, so it is the same for every length.
const COUNTER_RESET_MS: i64 = END_MS - 42 * HOUR_MS;

const JOBS: [&str; 4] = ["api", "web", "auth", "billing"];
const INSTANCES_PER_JOB: usize = 3;
const METHODS: [&str; 2] = ["GET", "POST"];
const CODES: [&str; 2] = ["200", "500"];

/// Seed of the counter that resets: the first `http_requests_total` series.
const RESET_SEED: u64 = 1;

/// Histogram bucket bounds as they appear in the `le` label.
const BUCKETS: [&str; 8] = ["0.005", "0.01", "0.05", "0.1", "0.5", "1", "5", "+Inf"];
/// The duration (in ms) every observation falling into bucket `b` is given,
/// so `_sum` is an exact integer number of milliseconds.
const BUCKET_OBSERVATION_MS: [u64; 8] = [3, 8, 30, 75, 300, 750, 3000, 8000];

/// Temperature instances, each exercising a different float formatting edge.
const TEMPERATURE_INSTANCES: [&str; 5] = [
    "node-normal",
    "node-tiny",
    "node-huge",
    "node-negative",
    "node-exact",
];
/// Values `node-exact` cycles through: ones whose decimal and binary forms
/// agree, plus 0.1, which is the classic one that does not.
const EXACT_VALUES: [f64; 8] = [0.0, 1.0, -1.0, 0.5, 0.1, 100.0, 42.25, -0.0];

/// Label values that stress escaping in the exposition format, in PromQL
/// string literals and in JSON output.
pub const EDGE_CASE_LABEL_VALUES: [&str; 9] = [
    "plain",
    "with space",
    "ünïcødé 日本語 🚀",
    "double \"quote\"",
    "back\\slash",
    "<&>",
    "new\nline",
    "tab\there",
    "'single' and `back`",
];

/// Metric names (as used in PromQL selectors) present in the data set.
pub const METRIC_NAMES: [&str; 7] = [
    "http_requests_total",
    "node_temperature_celsius",
    "request_duration_seconds_bucket",
    "request_duration_seconds_sum",
    "request_duration_seconds_count",
    "edge_case_labels",
    "ephemeral_worker_up",
];

/// One time series of the data set: its metric name and labels (without
/// `__name__`), in the order they are written.
#[derive(Debug, Clone, PartialEq)]
pub struct Series {
    pub metric: &'static str,
    pub labels: Vec<(String, String)>,
    generator: Generator,
}

impl Series {
    /// The value of label `name`, if present.
    pub fn label(&self, name: &str) -> Option<&str> {
        self.labels
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }
}

#[derive(Debug, Clone, Copy, PartialEq)]
enum Generator {
    Counter {
        seed: u64,
        max_increment: u64,
    },
    Temperature {
        instance: usize,
    },
    HistogramBucket {
        job: usize,
        bucket: usize,
    },
    HistogramSum {
        job: usize,
    },
    HistogramCount {
        job: usize,
    },
    Constant {
        value: f64,
    },
    /// Value 1 from the start until (inclusive) `last_ms`, then nothing.
    UpUntil {
        last_ms: i64,
    },
}

/// The standard data set: 3 days ending 2026-01-05T00:00:00Z, one sample
/// every 60 s for every series ([`Dataset::new`]); [`Dataset::with_days`]
/// gives the same series over a longer range with the same end.
///
/// Contents (see [`Dataset::series`] for the exact list):
/// - `http_requests_total{job,instance,method,code}`: 4 jobs × 3 instances ×
///   2 methods × 2 codes = 48 counters; the one selected by
///   [`Dataset::counter_reset_series`] resets once, at
///   [`Dataset::counter_reset_ms`].
/// - `node_temperature_celsius{instance}`: 5 gauges with ordinary, tiny
///   (1e-7..9e-6), huge (1e20..9e21), negative and exactly-representable
///   values (incl. 0.1 and -0).
/// - `request_duration_seconds_{bucket,sum,count}{job[,le]}`: a classic
///   histogram per job (8 buckets incl. `+Inf`).
/// - `edge_case_labels{value}`: one constant gauge per entry of
///   [`EDGE_CASE_LABEL_VALUES`] (value = index + 1).
/// - `ephemeral_worker_up{worker}`: `worker="steady"` spans the whole range,
///   `worker="vanishing"` stops at [`Dataset::vanishing_series_end_ms`].
///
/// Values are a function of the series and the sample index counted from
/// [`Dataset::start_ms`], so a longer data set is not a superset of the
/// 3-day one: only its special times ([`Dataset::counter_reset_ms`],
/// [`Dataset::vanishing_series_end_ms`]) and end are the same.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Dataset {
    /// Length in days: the first sample is at `END_MS - days * DAY_MS`.
    days: u32,
}

impl Default for Dataset {
    fn default() -> Dataset {
        Dataset::new()
    }
}

impl Dataset {
    /// The standard 3-day data set (2026-01-02T00:00:00Z to
    /// 2026-01-05T00:00:00Z).
    pub fn new() -> Dataset {
        Dataset::with_days(DEFAULT_DAYS)
    }

    /// The same series over `days` days ending at the same
    /// 2026-01-05T00:00:00Z (so starting `days` days before it), e.g. for
    /// benchmarks that need more data. `with_days(3) == new()`.
    ///
    /// The counter reset and the vanishing series keep their absolute times,
    /// which lie within the last 2 days; panics if `days < 2`.
    pub fn with_days(days: u32) -> Dataset {
        assert!(
            days >= MIN_DAYS,
            "Dataset::with_days({days}): the data set needs at least {MIN_DAYS} days"
        );
        Dataset { days }
    }

    /// Length of the data set in days.
    pub fn days(&self) -> u32 {
        self.days
    }

    /// Timestamp of the first sample of every series: `days()` days before
    /// [`Dataset::end_ms`] (2026-01-02T00:00:00Z for [`Dataset::new`]).
    pub fn start_ms(&self) -> i64 {
        END_MS - i64::from(self.days) * DAY_MS
    }

    /// Timestamp of the last sample (2026-01-05T00:00:00Z, inclusive).
    pub fn end_ms(&self) -> i64 {
        END_MS
    }

    /// Scrape interval: the distance between consecutive samples.
    pub fn step_ms(&self) -> i64 {
        STEP_MS
    }

    /// All sample timestamps of a full-range series, in order.
    pub fn timestamps(&self) -> impl Iterator<Item = i64> + use<> {
        (self.start_ms()..=END_MS).step_by(STEP_MS as usize)
    }

    /// Number of samples of a full-range series.
    pub fn points_per_series(&self) -> usize {
        ((END_MS - self.start_ms()) / STEP_MS + 1) as usize
    }

    /// Metric names present, as used in PromQL selectors.
    pub fn metric_names(&self) -> &'static [&'static str] {
        &METRIC_NAMES
    }

    /// Label values of `edge_case_labels{value=...}`.
    pub fn edge_case_label_values(&self) -> &'static [&'static str] {
        &EDGE_CASE_LABEL_VALUES
    }

    /// Timestamp of the last sample of `ephemeral_worker_up{worker="vanishing"}`
    /// (2026-01-03T12:00:00Z, the middle of the 3-day range; the same for
    /// every length).
    pub fn vanishing_series_end_ms(&self) -> i64 {
        VANISHING_SERIES_END_MS
    }

    /// The `http_requests_total` series that resets to a small value once.
    pub fn counter_reset_series(&self) -> Series {
        self.series()
            .into_iter()
            .find(|s| s.metric == "http_requests_total")
            .expect("data set has http_requests_total")
    }

    /// Timestamp of the first sample after the reset of
    /// [`Dataset::counter_reset_series`] (2026-01-03T06:00:00Z, the same for
    /// every length).
    pub fn counter_reset_ms(&self) -> i64 {
        COUNTER_RESET_MS
    }

    /// Every series, grouped by metric family in the order they are written.
    pub fn series(&self) -> Vec<Series> {
        let mut out = Vec::new();
        for (j, job) in JOBS.iter().enumerate() {
            for i in 0..INSTANCES_PER_JOB {
                for (m, method) in METHODS.iter().enumerate() {
                    for (c, code) in CODES.iter().enumerate() {
                        let seed = ((j * 100 + i * 10 + m * 2 + c) as u64) + 1;
                        // Errors are rarer than successes, POSTs rarer than GETs.
                        let max_increment = if *code == "200" { 40 } else { 3 } * (2 - m as u64);
                        out.push(Series {
                            metric: "http_requests_total",
                            labels: vec![
                                ("job".into(), (*job).into()),
                                ("instance".into(), format!("10.0.{j}.{i}:8080")),
                                ("method".into(), (*method).into()),
                                ("code".into(), (*code).into()),
                            ],
                            generator: Generator::Counter {
                                seed,
                                max_increment,
                            },
                        });
                    }
                }
            }
        }
        for (n, instance) in TEMPERATURE_INSTANCES.iter().enumerate() {
            out.push(Series {
                metric: "node_temperature_celsius",
                labels: vec![("instance".into(), (*instance).into())],
                generator: Generator::Temperature { instance: n },
            });
        }
        for (j, job) in JOBS.iter().enumerate() {
            for (b, le) in BUCKETS.iter().enumerate() {
                out.push(Series {
                    metric: "request_duration_seconds_bucket",
                    labels: vec![("job".into(), (*job).into()), ("le".into(), (*le).into())],
                    generator: Generator::HistogramBucket { job: j, bucket: b },
                });
            }
            out.push(Series {
                metric: "request_duration_seconds_sum",
                labels: vec![("job".into(), (*job).into())],
                generator: Generator::HistogramSum { job: j },
            });
            out.push(Series {
                metric: "request_duration_seconds_count",
                labels: vec![("job".into(), (*job).into())],
                generator: Generator::HistogramCount { job: j },
            });
        }
        for (n, value) in EDGE_CASE_LABEL_VALUES.iter().enumerate() {
            out.push(Series {
                metric: "edge_case_labels",
                labels: vec![("value".into(), (*value).into())],
                generator: Generator::Constant {
                    value: (n + 1) as f64,
                },
            });
        }
        out.push(Series {
            metric: "ephemeral_worker_up",
            labels: vec![("worker".into(), "steady".into())],
            generator: Generator::UpUntil { last_ms: END_MS },
        });
        out.push(Series {
            metric: "ephemeral_worker_up",
            labels: vec![("worker".into(), "vanishing".into())],
            generator: Generator::UpUntil {
                last_ms: self.vanishing_series_end_ms(),
            },
        });
        out
    }

    /// Number of series whose metric name is `metric`.
    pub fn series_count(&self, metric: &str) -> usize {
        self.series().iter().filter(|s| s.metric == metric).count()
    }

    /// The samples `(timestamp_ms, value)` of `series`, in time order; exactly
    /// what the OpenMetrics text (and hence Prometheus) holds.
    pub fn samples(&self, series: &Series) -> Vec<(i64, f64)> {
        let reset_index = ((self.counter_reset_ms() - self.start_ms()) / STEP_MS) as u64;
        match series.generator {
            Generator::Counter {
                seed,
                max_increment,
            } => {
                let mut value = mix(&[seed, 0xC0]) % 1000;
                self.indexed()
                    .map(|(i, t)| {
                        if i > 0 {
                            value += mix(&[seed, i]) % (max_increment + 1);
                        }
                        if seed == RESET_SEED && i == reset_index {
                            // A process restart: the counter starts again from a
                            // small value, which rate() must treat as a reset.
                            value = 2;
                        }
                        (t, value as f64)
                    })
                    .collect()
            }
            Generator::Temperature { instance } => self
                .indexed()
                .map(|(i, t)| {
                    let h = mix(&[0x7E, instance as u64, i]);
                    let v = match instance {
                        0 => 20.0 + (h % 6000) as f64 / 100.0,
                        // Prometheus (jsoniter) switches to exponent notation
                        // below 1e-6 and from 1e21 up, so both sides of each
                        // threshold occur.
                        1 => (1 + h % 9) as f64 * if h & 0x100 == 0 { 1e-7 } else { 1e-6 },
                        2 => (1 + h % 9) as f64 * if h & 0x100 == 0 { 1e21 } else { 1e20 },
                        3 => -((h % 5000) as f64 / 100.0) - 0.5,
                        _ => EXACT_VALUES[i as usize % EXACT_VALUES.len()],
                    };
                    (t, v)
                })
                .collect(),
            Generator::HistogramBucket { job, bucket } => self
                .histogram(job)
                .into_iter()
                .map(|(t, point)| (t, point.buckets[bucket] as f64))
                .collect(),
            Generator::HistogramSum { job } => self
                .histogram(job)
                .into_iter()
                .map(|(t, point)| (t, point.sum_ms as f64 / 1000.0))
                .collect(),
            Generator::HistogramCount { job } => self
                .histogram(job)
                .into_iter()
                .map(|(t, point)| (t, point.buckets[BUCKETS.len() - 1] as f64))
                .collect(),
            Generator::Constant { value } => self.timestamps().map(|t| (t, value)).collect(),
            Generator::UpUntil { last_ms } => self
                .timestamps()
                .take_while(|t| *t <= last_ms)
                .map(|t| (t, 1.0))
                .collect(),
        }
    }

    /// The whole data set as OpenMetrics text, as `promtool tsdb
    /// create-blocks-from openmetrics` reads it: one `# TYPE` per family, all
    /// of a family's lines together, each series' samples in time order,
    /// timestamps in seconds, terminated by `# EOF`.
    pub fn openmetrics(&self) -> String {
        let all = self.all_samples();
        self.render(&all, i64::MIN, i64::MAX)
    }

    /// The data set split by time into OpenMetrics texts (same format as
    /// [`Dataset::openmetrics`]), the i-th covering samples in
    /// `[w_i, w_i + chunk_ms)` with `w_i` a multiple of `chunk_ms` since the
    /// epoch.
    ///
    /// promtool re-reads its whole input once per 2 h block it writes, so
    /// feeding it 6 h chunks (a multiple of 2 h keeps block boundaries
    /// unchanged) makes backfilling several times faster.
    pub fn openmetrics_chunks(&self, chunk_ms: i64) -> Vec<String> {
        assert!(chunk_ms > 0, "chunk_ms must be positive");
        let all = self.all_samples();
        let mut out = Vec::new();
        let mut from = self.start_ms().div_euclid(chunk_ms) * chunk_ms;
        while from <= END_MS {
            let until = from.saturating_add(chunk_ms);
            out.push(self.render(&all, from, until));
            from = until;
        }
        out
    }

    /// Every series with its OpenMetrics prefix and samples, computed once.
    fn all_samples(&self) -> Vec<Rendered> {
        self.series()
            .into_iter()
            .map(|s| {
                let prefix = series_prefix(&s);
                let samples = self.samples(&s);
                (s, prefix, samples)
            })
            .collect()
    }

    /// OpenMetrics text of the samples with `from <= t < until`.
    fn render(&self, all: &[Rendered], from: i64, until: i64) -> String {
        let window = |samples: &[(i64, f64)]| -> std::ops::Range<usize> {
            samples.partition_point(|(t, _)| *t < from)
                ..samples.partition_point(|(t, _)| *t < until)
        };
        // ~100 series × 4321 points × ~70 bytes for the whole 3-day range.
        let mut out = String::with_capacity(1 << 20);
        let write_family = |out: &mut String, metric: &str| {
            for (_, prefix, samples) in all.iter().filter(|(s, _, _)| s.metric == metric) {
                for (t, v) in &samples[window(samples)] {
                    push_sample(out, prefix, *v, *t);
                }
            }
        };

        out.push_str("# TYPE http_requests counter\n");
        out.push_str("# HELP http_requests Requests served.\n");
        write_family(&mut out, "http_requests_total");

        out.push_str("# TYPE node_temperature_celsius gauge\n");
        out.push_str("# UNIT node_temperature_celsius celsius\n");
        write_family(&mut out, "node_temperature_celsius");

        // A histogram's MetricPoint is all its buckets plus _sum and _count at
        // one timestamp, so these are interleaved per timestamp (per job)
        // rather than written series by series. All of them share the same
        // timestamps.
        out.push_str("# TYPE request_duration_seconds histogram\n");
        for job in JOBS {
            let members: Vec<&Rendered> = all
                .iter()
                .filter(|(s, _, _)| {
                    s.metric.starts_with("request_duration_seconds") && s.label("job") == Some(job)
                })
                .collect();
            let range = window(&members[0].2);
            for i in range {
                for (_, prefix, samples) in &members {
                    let (t, v) = samples[i];
                    push_sample(&mut out, prefix, v, t);
                }
            }
        }

        out.push_str("# TYPE edge_case_labels gauge\n");
        write_family(&mut out, "edge_case_labels");

        out.push_str("# TYPE ephemeral_worker_up gauge\n");
        write_family(&mut out, "ephemeral_worker_up");

        out.push_str("# EOF\n");
        out
    }

    /// `(sample index, timestamp)` pairs of a full-range series.
    fn indexed(&self) -> impl Iterator<Item = (u64, i64)> + use<> {
        self.timestamps().enumerate().map(|(i, t)| (i as u64, t))
    }

    /// Cumulative histogram state of `job` at every timestamp.
    fn histogram(&self, job: usize) -> Vec<(i64, HistogramPoint)> {
        let mut per_bucket = [0u64; BUCKETS.len()];
        let mut sum_ms = 0u64;
        self.indexed()
            .map(|(i, t)| {
                if i > 0 {
                    for (b, count) in per_bucket.iter_mut().enumerate() {
                        // Most requests are fast: fewer observations in the
                        // slower buckets. Job 0 never observes anything over
                        // 5 s, so its `+Inf` bucket equals its `5` bucket
                        // (histogram_quantile's top-bucket edge case).
                        let max = [6, 9, 7, 5, 3, 2, 1, if job == 0 { 0 } else { 1 }][b];
                        let n = mix(&[0x415, job as u64, b as u64, i]) % (max + 1);
                        *count += n;
                        sum_ms += n * BUCKET_OBSERVATION_MS[b];
                    }
                }
                let mut cumulative = [0u64; BUCKETS.len()];
                let mut running = 0;
                for (b, count) in per_bucket.iter().enumerate() {
                    running += count;
                    cumulative[b] = running;
                }
                (
                    t,
                    HistogramPoint {
                        buckets: cumulative,
                        sum_ms,
                    },
                )
            })
            .collect()
    }
}

/// A series, its OpenMetrics line prefix and all its samples.
type Rendered = (Series, String, Vec<(i64, f64)>);

struct HistogramPoint {
    buckets: [u64; BUCKETS.len()],
    sum_ms: u64,
}

/// `name{l="v",...}` with OpenMetrics label value escaping.
fn series_prefix(s: &Series) -> String {
    let mut out = String::from(s.metric);
    out.push('{');
    for (n, (k, v)) in s.labels.iter().enumerate() {
        if n > 0 {
            out.push(',');
        }
        out.push_str(k);
        out.push_str("=\"");
        for ch in v.chars() {
            match ch {
                '\\' => out.push_str("\\\\"),
                '"' => out.push_str("\\\""),
                '\n' => out.push_str("\\n"),
                _ => out.push(ch),
            }
        }
        out.push('"');
    }
    out.push('}');
    out
}

fn push_sample(out: &mut String, prefix: &str, value: f64, t_ms: i64) {
    // Rust's `Display` for f64 is the shortest string that round-trips, so the
    // value Prometheus parses is bit-identical to what `samples` returns.
    let secs = t_ms.div_euclid(1000);
    let millis = t_ms.rem_euclid(1000);
    if millis == 0 {
        let _ = writeln!(out, "{prefix} {value} {secs}");
    } else {
        let _ = writeln!(out, "{prefix} {value} {secs}.{millis:03}");
    }
}

/// SplitMix64 over a few words: cheap, well-distributed and platform
/// independent, which is all the "randomness" of a generated data set needs.
pub fn mix(words: &[u64]) -> u64 {
    let mut x: u64 = 0x9E37_79B9_7F4A_7C15;
    for w in words {
        x = x.wrapping_add(*w).wrapping_add(0x9E37_79B9_7F4A_7C15);
        x = (x ^ (x >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        x = (x ^ (x >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        x ^= x >> 31;
    }
    x
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shape() {
        let d = Dataset::new();
        assert_eq!(d.points_per_series(), 3 * 24 * 60 + 1);
        assert_eq!(d.series_count("http_requests_total"), 48);
        assert_eq!(d.series_count("request_duration_seconds_bucket"), 32);
        for name in d.metric_names() {
            assert!(d.series_count(name) > 0, "{name}");
        }
        let text = d.openmetrics();
        assert!(text.ends_with("# EOF\n"));
        assert!(text.contains(r#"edge_case_labels{value="double \"quote\""} 4 1767312000"#));
        assert!(text.contains(r#"edge_case_labels{value="new\nline"} 7 1767312000"#));
    }

    #[test]
    fn chunks_partition_the_samples() {
        let d = Dataset::new();
        let count = |text: &str| text.lines().filter(|l| !l.starts_with('#')).count();
        let whole = count(&d.openmetrics());
        let chunks = d.openmetrics_chunks(6 * 60 * 60 * 1000);
        assert_eq!(chunks.len(), 13);
        assert_eq!(chunks.iter().map(|c| count(c)).sum::<usize>(), whole);
    }

    #[test]
    fn counters_are_monotonic_except_for_the_one_reset() {
        let d = Dataset::new();
        let reset = d.counter_reset_series();
        for s in d
            .series()
            .iter()
            .filter(|s| s.metric == "http_requests_total")
        {
            let resets: Vec<i64> = d
                .samples(s)
                .windows(2)
                .filter(|w| w[1].1 < w[0].1)
                .map(|w| w[1].0)
                .collect();
            if *s == reset {
                assert_eq!(resets, vec![d.counter_reset_ms()]);
            } else {
                assert!(resets.is_empty(), "{s:?}");
            }
        }
    }

    #[test]
    fn histogram_buckets_are_cumulative_and_count_matches_inf() {
        let d = Dataset::new();
        let series = d.series();
        for job in JOBS {
            let buckets: Vec<Vec<(i64, f64)>> = series
                .iter()
                .filter(|s| {
                    s.metric == "request_duration_seconds_bucket" && s.label("job") == Some(job)
                })
                .map(|s| d.samples(s))
                .collect();
            let count = series
                .iter()
                .find(|s| {
                    s.metric == "request_duration_seconds_count" && s.label("job") == Some(job)
                })
                .map(|s| d.samples(s))
                .unwrap();
            for i in 0..d.points_per_series() {
                for b in 1..buckets.len() {
                    assert!(buckets[b][i].1 >= buckets[b - 1][i].1);
                }
                assert_eq!(buckets[buckets.len() - 1][i], count[i]);
            }
        }
    }

    #[test]
    fn vanishing_series_stops_mid_range() {
        let d = Dataset::new();
        let s = d
            .series()
            .into_iter()
            .find(|s| s.label("worker") == Some("vanishing"))
            .unwrap();
        assert_eq!(d.samples(&s).last().unwrap().0, d.vanishing_series_end_ms());
    }

    #[test]
    fn with_days_3_is_new() {
        let (a, b) = (Dataset::with_days(3), Dataset::new());
        assert_eq!(a, b);
        assert_eq!(Dataset::default(), b);
        let hash = |d: &Dataset| {
            use std::hash::{Hash, Hasher};
            let mut h = std::collections::hash_map::DefaultHasher::new();
            d.hash(&mut h);
            h.finish()
        };
        assert_eq!(hash(&a), hash(&b));
        assert_eq!(a.days(), 3);
        assert_eq!(a.start_ms(), 1_767_312_000_000); // 2026-01-02T00:00:00Z
        assert_eq!(a.end_ms(), 1_767_571_200_000); // 2026-01-05T00:00:00Z
        assert_eq!(a.vanishing_series_end_ms(), 1_767_441_600_000); // 2026-01-03T12:00Z
        assert_eq!(a.counter_reset_ms(), 1_767_420_000_000); // 2026-01-03T06:00Z
        assert_eq!(a.openmetrics(), b.openmetrics());
        assert_ne!(Dataset::with_days(8), b);
    }

    #[test]
    fn with_days_8_has_8_days_of_points() {
        let d = Dataset::with_days(8);
        let d3 = Dataset::new();
        assert_eq!(d.days(), 8);
        assert_eq!(d.end_ms(), d3.end_ms());
        assert_eq!(d.start_ms(), d3.end_ms() - 8 * DAY_MS);
        assert_eq!(d.points_per_series(), 8 * 24 * 60 + 1);
        assert_eq!(d.timestamps().count(), d.points_per_series());
        assert_eq!(d.series(), d3.series());
        for s in d.series() {
            let samples = d.samples(&s);
            assert_eq!(samples[0].0, d.start_ms(), "{s:?}");
            if s.label("worker") == Some("vanishing") {
                assert_eq!(samples.last().unwrap().0, d3.vanishing_series_end_ms());
            } else {
                assert_eq!(samples.len(), d.points_per_series(), "{s:?}");
                assert_eq!(samples.last().unwrap().0, d.end_ms(), "{s:?}");
            }
        }
        // The counter still resets exactly once, at the same absolute time.
        let reset = d.counter_reset_series();
        let resets: Vec<i64> = d
            .samples(&reset)
            .windows(2)
            .filter(|w| w[1].1 < w[0].1)
            .map(|w| w[1].0)
            .collect();
        assert_eq!(resets, vec![d3.counter_reset_ms()]);
        // 8 days of 6 h chunks plus the one holding the end sample.
        assert_eq!(d.openmetrics_chunks(6 * 60 * 60 * 1000).len(), 33);
    }

    #[test]
    #[should_panic(expected = "at least 2 days")]
    fn with_days_rejects_data_sets_missing_the_special_times() {
        Dataset::with_days(1);
    }

    /// Backfills the 8-day data set (cached like the 3-day one, under its own
    /// key) and checks the first day, which the 3-day one does not cover, is
    /// queryable with exactly the generated values.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn prometheus_serves_the_first_day_of_an_8_day_data_set() {
        let d = Dataset::with_days(8);
        let started = std::time::Instant::now();
        let prom = crate::PrometheusServer::start(&d).await;
        eprintln!("8-day prometheus ready in {:.1?}", started.elapsed());

        let series = d
            .series()
            .into_iter()
            .find(|s| s.label("instance") == Some("node-normal"))
            .unwrap();
        let (from, until) = (d.start_ms(), d.start_ms() + DAY_MS);
        let url = format!(
            "{}/api/v1/query_range?{}",
            prom.url(),
            crate::form_urlencode(&[
                (
                    "query",
                    r#"node_temperature_celsius{instance="node-normal"}"#
                ),
                ("start", &(from / 1000).to_string()),
                ("end", &(until / 1000).to_string()),
                ("step", "3600"),
            ])
        );
        let (status, _, body) = crate::http_get(&url).await;
        let body: serde_json::Value = serde_json::from_slice(&body).unwrap();
        assert_eq!(status, 200, "{body}");
        let result = body["data"]["result"].as_array().unwrap();
        assert_eq!(result.len(), 1, "{body}");
        let got: Vec<(i64, f64)> = result[0]["values"]
            .as_array()
            .unwrap()
            .iter()
            .map(|v| {
                (
                    (v[0].as_f64().unwrap() * 1000.0) as i64,
                    v[1].as_str().unwrap().parse().unwrap(),
                )
            })
            .collect();
        let expected: Vec<(i64, f64)> = d
            .samples(&series)
            .into_iter()
            .filter(|(t, _)| *t <= until && (t - from) % (60 * 60 * 1000) == 0)
            .collect();
        assert_eq!(expected.len(), 25);
        assert_eq!(got, expected);
    }
}
