//! The blocks benchmark's data set: big enough that a query over every
//! series is real work for an engine (about 1,700 series, 8 days at a 60 s
//! scrape interval, 19 million samples), yet backfilled by promtool in a few
//! minutes, once (the blocks are cached, see `sluice_testkit::backfilled_blocks`).
//!
//! Values are closed forms of the series and the sample index (counters
//! grow every scrape and never reset), so any
//! part of the range can be written without the parts before it. Samples lie
//! 30 s past each minute, so that queries at whole minutes (subquery steps)
//! and a few seconds past them (the bench's times) never evaluate a range
//! whose edge falls on a sample: Prometheus 2.42's range selectors include
//! their left edge and Prometheus 3's (the engine's) do not.

use std::fmt::Write as _;

use sluice_testkit::{OpenMetricsParts, mix};

/// 2026-01-05T00:00:00Z, the end of the data (inclusive), as the testkit's.
pub(crate) const END_MS: i64 = 1_767_571_200_000;
pub(crate) const DAY_MS: i64 = 86_400_000;
pub(crate) const STEP_MS: i64 = 60_000;
const DAYS: i64 = 8;
/// Where the samples sit within each minute.
const SAMPLE_OFFSET_MS: i64 = 30_000;
/// Each part promtool reads: a multiple of its 2 h blocks.
const PART_MS: i64 = 6 * 3_600_000;

const JOBS: [&str; 4] = ["api", "web", "auth", "billing"];
const INSTANCES: usize = 20;
const HANDLERS: [&str; 3] = ["/query", "/write", "/status"];
const METHODS: [&str; 2] = ["GET", "POST"];
const CODES: [&str; 2] = ["200", "500"];
/// Instances of each job that expose a latency histogram.
const HISTOGRAM_INSTANCES: usize = 10;
const BUCKETS: [&str; 10] = [
    "0.005", "0.01", "0.025", "0.05", "0.1", "0.25", "0.5", "1", "2.5", "+Inf",
];
/// Milliseconds given to each observation in bucket `b`, so `_sum` is exact.
const BUCKET_OBSERVATION_MS: [u64; 10] = [3, 8, 20, 40, 80, 200, 400, 800, 2000, 5000];

pub(crate) struct BlocksData;

impl BlocksData {
    /// The first sample's time.
    pub(crate) fn start_ms(&self) -> i64 {
        self.first_part_ms() + SAMPLE_OFFSET_MS
    }

    /// Where the first part, and the blocks, begin.
    fn first_part_ms(&self) -> i64 {
        END_MS - DAYS * DAY_MS
    }

    pub(crate) fn series_count(&self) -> usize {
        let counters = JOBS.len() * INSTANCES * HANDLERS.len() * METHODS.len() * CODES.len();
        let histograms = JOBS.len() * HISTOGRAM_INSTANCES * (BUCKETS.len() + 2);
        counters + histograms + 3 * JOBS.len() * INSTANCES
    }

    /// `(index, timestamp)` of the samples in `[from, until)`.
    fn samples_in(&self, from: i64, until: i64) -> impl Iterator<Item = (u64, i64)> + use<> {
        let start = self.start_ms();
        let first = (from.max(start) - start + STEP_MS - 1) / STEP_MS;
        let last = (until.min(END_MS + 1) - start + STEP_MS - 1) / STEP_MS;
        (first..last).map(move |index| (index as u64, start + index * STEP_MS))
    }

    fn render(&self, from: i64, until: i64) -> String {
        let mut out = String::with_capacity(64 << 20);
        out.push_str("# TYPE http_requests counter\n");
        let mut seed = 0u64;
        for job in JOBS {
            for instance in 0..INSTANCES {
                for handler in HANDLERS {
                    for method in METHODS {
                        for code in CODES {
                            seed += 1;
                            let prefix = format!(
                                "http_requests_total{{job=\"{job}\",instance=\"{}\",handler=\"{handler}\",method=\"{method}\",code=\"{code}\"}}",
                                instance_name(instance)
                            );
                            let scale = if code == "200" { 1 + seed % 97 } else { 1 };
                            for (index, t) in self.samples_in(from, until) {
                                push(&mut out, &prefix, counter(seed, scale, index) as f64, t);
                            }
                        }
                    }
                }
            }
        }
        self.render_histograms(&mut out, from, until);
        self.render_process(&mut out, from, until);
        out.push_str("# EOF\n");
        out
    }

    /// A classic histogram per job and instance: its buckets, `_sum` and
    /// `_count` at each timestamp together, as OpenMetrics wants them.
    fn render_histograms(&self, out: &mut String, from: i64, until: i64) {
        out.push_str("# TYPE request_duration_seconds histogram\n");
        for (j, job) in JOBS.iter().enumerate() {
            for instance in 0..HISTOGRAM_INSTANCES {
                let labels = format!("job=\"{job}\",instance=\"{}\"", instance_name(instance));
                let seed = 10_000 + (j * 100 + instance) as u64 * 16;
                for (index, t) in self.samples_in(from, until) {
                    let (mut cumulative, mut sum_ms) = (0, 0);
                    for (b, le) in BUCKETS.iter().enumerate() {
                        let observed = counter(seed + b as u64, (BUCKETS.len() - b) as u64, index);
                        cumulative += observed;
                        sum_ms += observed * BUCKET_OBSERVATION_MS[b];
                        let prefix =
                            format!("request_duration_seconds_bucket{{{labels},le=\"{le}\"}}");
                        push(out, &prefix, cumulative as f64, t);
                    }
                    let sum = format!("request_duration_seconds_sum{{{labels}}}");
                    push(out, &sum, sum_ms as f64 / 1000.0, t);
                    let count = format!("request_duration_seconds_count{{{labels}}}");
                    push(out, &count, cumulative as f64, t);
                }
            }
        }
    }

    /// Per instance: CPU seconds (a counter), resident memory and `up`
    /// (gauges), for one-to-one joins.
    fn render_process(&self, out: &mut String, from: i64, until: i64) {
        let families: [(&str, &str, &str); 3] = [
            (
                "process_cpu_seconds",
                "counter",
                "process_cpu_seconds_total",
            ),
            (
                "process_resident_memory_bytes",
                "gauge",
                "process_resident_memory_bytes",
            ),
            ("up", "gauge", "up"),
        ];
        for (family, kind, name) in families {
            let _ = writeln!(out, "# TYPE {family} {kind}");
            for (j, job) in JOBS.iter().enumerate() {
                for instance in 0..INSTANCES {
                    let seed = 50_000 + (j * 100 + instance) as u64;
                    let prefix = format!(
                        "{name}{{job=\"{job}\",instance=\"{}\"}}",
                        instance_name(instance)
                    );
                    for (index, t) in self.samples_in(from, until) {
                        let value = match kind {
                            "counter" => counter(seed, 1, index) as f64 / 1000.0,
                            _ if name == "up" => 1.0,
                            _ => (100_000_000 + mix(&[seed, index]) % 50_000_000) as f64,
                        };
                        push(out, &prefix, value, t);
                    }
                }
            }
        }
    }
}

impl OpenMetricsParts for BlocksData {
    fn part_count(&self) -> usize {
        // The last sample is 30 s before the end: no part starts at it.
        ((END_MS - self.first_part_ms()) / PART_MS) as usize
    }

    fn part(&self, index: usize) -> String {
        let from = self.first_part_ms() + index as i64 * PART_MS;
        self.render(from, from + PART_MS)
    }
}

fn instance_name(instance: usize) -> String {
    format!("10.1.{}.{}:9100", instance / 10, instance % 10)
}

/// A counter that grows by `scale` times 1 to 1999 every sample: monotonic
/// by construction (`1000 i + noise(i)` with noise in 0..1000), and noisy
/// enough that rates of different series rarely tie (`topk` breaks ties
/// in an unspecified order).
fn counter(seed: u64, scale: u64, index: u64) -> u64 {
    let base = mix(&[seed, u64::MAX]) % 10_000;
    base + scale * (1000 * index + mix(&[seed, index]) % 1000)
}

fn push(out: &mut String, prefix: &str, value: f64, t_ms: i64) {
    let _ = writeln!(out, "{prefix} {value} {}", t_ms / 1000);
}
