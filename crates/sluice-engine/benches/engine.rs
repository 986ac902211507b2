//! Benchmarks of the engine over a synthetic day of data: 10,000 series
//! (8,000 counters, 2,000 classic-histogram buckets) at a 15s interval.
//!
//! Each query runs as a range query over the last hour of the day at a 60s
//! step (what a dashboard panel asks for) and as an instant query at the end
//! of the day; the samples each query reads are printed once so that time
//! per sample can be derived from the times.

use std::hint::black_box;
use std::time::Duration;

use criterion::{Criterion, criterion_group, criterion_main};
use sluice_engine::{Engine, Labels, MemoryStorage, QueryOptions};

const INTERVAL_MS: i64 = 15_000;
const DAY_MS: i64 = 86_400_000;

/// A small deterministic generator, so every run sees the same data.
struct Lcg(u64);

impl Lcg {
    fn next(&mut self) -> f64 {
        self.0 = self
            .0
            .wrapping_mul(6_364_136_223_846_793_005)
            .wrapping_add(1_442_695_040_888_963_407);
        (self.0 >> 11) as f64 / (1u64 << 53) as f64
    }
}

fn build_storage() -> MemoryStorage {
    let storage = MemoryStorage::new();
    let points = (DAY_MS / INTERVAL_MS) as usize;
    let mut random = Lcg(42);
    let mut samples = Vec::with_capacity(points);
    // 10 jobs x 100 instances x 8 methods = 8,000 counters.
    for job in 0..10 {
        for instance in 0..100 {
            for method in 0..8 {
                let labels = Labels::from_pairs([
                    ("__name__", "requests_total".to_string()),
                    ("job", format!("job-{job}")),
                    ("instance", format!("instance-{instance}")),
                    ("method", format!("method-{method}")),
                ]);
                samples.clear();
                let mut value = 0.0;
                for i in 0..points {
                    value += (random.next() * 10.0).floor();
                    samples.push((i as i64 * INTERVAL_MS, value));
                }
                storage.append(&labels, &samples);
            }
        }
    }
    // 200 instances x 10 buckets = 2,000 bucket series.
    let bounds = [
        "0.005", "0.01", "0.025", "0.05", "0.1", "0.25", "0.5", "1", "2.5", "+Inf",
    ];
    for instance in 0..200 {
        let mut cumulative = vec![0.0; bounds.len()];
        let mut series: Vec<Vec<(i64, f64)>> = vec![Vec::with_capacity(points); bounds.len()];
        for i in 0..points {
            let observations = (random.next() * 20.0).floor();
            let bucket_of_all = (random.next() * bounds.len() as f64) as usize;
            for (b, total) in cumulative.iter_mut().enumerate() {
                if b >= bucket_of_all {
                    *total += observations;
                }
                series[b].push((i as i64 * INTERVAL_MS, *total));
            }
        }
        for (b, bound) in bounds.iter().enumerate() {
            let labels = Labels::from_pairs([
                ("__name__", "duration_seconds_bucket".to_string()),
                ("instance", format!("instance-{instance}")),
                ("le", bound.to_string()),
            ]);
            storage.append(&labels, &series[b]);
        }
    }
    storage
}

const QUERIES: &[(&str, &str)] = &[
    ("selector", "requests_total"),
    ("rate", "rate(requests_total[5m])"),
    ("sum_by_rate", "sum by (job) (rate(requests_total[5m]))"),
    (
        "histogram_quantile",
        "histogram_quantile(0.9, sum by (le) (rate(duration_seconds_bucket[5m])))",
    ),
    ("topk", "topk(10, rate(requests_total[5m]))"),
    ("binary_join", "requests_total - requests_total offset 1h"),
    (
        "subquery",
        "max_over_time(rate(requests_total{job=\"job-1\"}[5m])[30m:1m])",
    ),
];

fn engine_benchmarks(c: &mut Criterion) {
    let storage = build_storage();
    let engine = Engine::new();
    let options = QueryOptions::default();
    let (start, end, step) = (DAY_MS - 3_600_000, DAY_MS - INTERVAL_MS, 60_000);
    let mut group = c.benchmark_group("range_1h_step_60s");
    group.sample_size(10);
    group.measurement_time(Duration::from_secs(5));
    for (name, query) in QUERIES {
        let output = engine
            .range(&storage, query, start, end, step, &options)
            .expect("benchmark query evaluates");
        eprintln!(
            "{name}: {query} reads {} samples per run",
            output.samples_read
        );
        group.bench_function(*name, |b| {
            b.iter(|| {
                black_box(
                    engine
                        .range(&storage, query, start, end, step, &options)
                        .expect("query evaluates"),
                )
            })
        });
    }
    group.finish();

    let mut instant = c.benchmark_group("instant");
    instant.sample_size(10);
    instant.measurement_time(Duration::from_secs(3));
    for (name, query) in QUERIES {
        let output = engine
            .instant(&storage, query, end, &options)
            .expect("benchmark query evaluates");
        eprintln!(
            "instant {name}: reads {} samples per run",
            output.samples_read
        );
        instant.bench_function(*name, |b| {
            b.iter(|| {
                black_box(
                    engine
                        .instant(&storage, query, end, &options)
                        .expect("query evaluates"),
                )
            })
        });
    }
    instant.finish();
}

criterion_group!(benches, engine_benchmarks);
criterion_main!(benches);
