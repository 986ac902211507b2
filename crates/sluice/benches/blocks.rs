//! sluice's embedded engine over Prometheus TSDB blocks against Prometheus
//! itself over the same blocks, in one run, side by side.
//!
//! The blocks are made by a real Prometheus's promtool from the data set in
//! `blocks_data` (about 1,700 series, 8 days at a 60 s scrape; backfilled
//! once, then cached). Prometheus (Debian's 2.42) serves them; two sluice
//! processes serve a copy of them with no downstream, so their querier
//! evaluates with the embedded engine:
//! - "sluice": range queries neither split (`-query-frontend.split-queries-by-interval=0`)
//!   nor sharded, so one engine evaluation answers each query, as one
//!   Prometheus does;
//! - "split": sluice's defaults, range queries split by day and their
//!   aggregations sharded 16 ways, the pieces and legs evaluated in
//!   parallel (range queries only). The bar for the sharded 7-day
//!   `sum by (job) (rate(...))` (issue 27): at most 0.5 of Prometheus's time.
//!
//! Every query goes through both HTTP APIs, the results cache bypassed
//! (`Cache-Control: no-store`), uncompressed; a request's time runs until
//! its last byte has arrived. Each figure is the median of several runs,
//! taken in turns so that both servers see the same machine. Answers are
//! compared once per query (values to 1e-9 relative; vectors in label
//! order): queries run a few seconds past whole minutes over samples 30 s
//! past them, where Prometheus 2.42's closed range selectors and the
//! engine's Prometheus 3 left-open ones agree.
//!
//! Then each 7-day query's peak resident memory: every process is started
//! fresh, the peak (`VmHWM`) reset to the current resident set before each
//! query by writing 5 to `/proc/PID/clear_refs`, and read after it.
//!
//! Run with `cargo bench -p sluice --bench blocks`. The bar (issue 25): a
//! median ratio of at most 0.75 of Prometheus's time, and a peak resident
//! set no larger than Prometheus's; the goal, 0.25.

mod blocks_data;
mod support;

use std::time::{Duration, Instant};

use blocks_data::{BlocksData, DAY_MS, END_MS};
use http_body_util::Empty;
use hyper::body::Bytes;
use sluice_testkit::{
    OpenMetricsParts, PrometheusServer, TempDir, backfilled_blocks, copy_dir, form_urlencode,
};
use support::{CpuTimes, HttpClient, Sluice, millis, start_sluice_with, steal_report};

const HOUR_MS: i64 = 3_600_000;
/// Instant queries' time and range queries' end: 2 h before the data ends,
/// 7 s past a whole minute (so 37 s past a sample).
const AT_MS: i64 = END_MS - 2 * HOUR_MS + 7_000;
const STEP_SECONDS: i64 = 60;
/// Timed runs per query (the median is reported); fewer for the long ones.
const RUNS: usize = 5;
const LONG_RUNS: usize = 3;
const RATIO_BAR: f64 = 0.75;
const RATIO_GOAL: f64 = 0.25;

#[derive(Clone, Copy, PartialEq)]
enum Span {
    Instant,
    /// A range query over this many hours ending at [`AT_MS`], at a 60 s step.
    Hours(i64),
}

const WEEK: Span = Span::Hours(7 * 24);

struct Case {
    query: &'static str,
    span: Span,
}

const fn case(query: &'static str, span: Span) -> Case {
    Case { query, span }
}

const SUM_RATE: &str = "sum by (job) (rate(http_requests_total[5m]))";
const QUANTILE: &str =
    "histogram_quantile(0.9, sum by (le) (rate(request_duration_seconds_bucket[5m])))";
const JOIN: &str =
    "rate(process_cpu_seconds_total[5m]) / on (job, instance) process_resident_memory_bytes";

const CASES: &[Case] = &[
    case("http_requests_total", Span::Instant),
    case("rate(http_requests_total[5m])", Span::Instant),
    case(SUM_RATE, Span::Instant),
    case(QUANTILE, Span::Instant),
    case("topk(5, rate(http_requests_total[5m]))", Span::Instant),
    case(JOIN, Span::Instant),
    case(
        "max_over_time(sum by (job) (rate(http_requests_total[5m]))[1h:1m])",
        Span::Instant,
    ),
    case("count by (code) (http_requests_total)", Span::Instant),
    case(
        "sum by (job) (increase(http_requests_total[1h]))",
        Span::Instant,
    ),
    case(
        "avg_over_time(process_resident_memory_bytes[1h])",
        Span::Instant,
    ),
    case(r#"http_requests_total{job="api"}"#, Span::Hours(6)),
    case("rate(http_requests_total[5m])", Span::Hours(6)),
    case(SUM_RATE, Span::Hours(24)),
    case(
        "histogram_quantile(0.99, sum by (le) (rate(request_duration_seconds_bucket[5m])))",
        Span::Hours(24),
    ),
    case(
        "topk(3, sum by (job, instance) (rate(http_requests_total[5m])))",
        Span::Hours(24),
    ),
    case(JOIN, Span::Hours(24)),
    case(
        "max_over_time(sum by (job) (rate(http_requests_total[5m]))[30m:1m])",
        Span::Hours(24),
    ),
    case("count by (job) (up == 1)", Span::Hours(24)),
    case(
        "sum by (job, code) (rate(http_requests_total[5m])) / ignoring (code) group_left sum by (job) (rate(http_requests_total[5m]))",
        Span::Hours(24),
    ),
    case(SUM_RATE, WEEK),
    case(QUANTILE, WEEK),
    case("count by (job) (http_requests_total)", WEEK),
    case("sum(rate(process_cpu_seconds_total[5m]))", WEEK),
];

fn seconds(ms: i64) -> String {
    format!("{}.{:03}", ms.div_euclid(1000), ms.rem_euclid(1000))
}

fn url(base: &str, case: &Case) -> String {
    match case.span {
        Span::Instant => format!(
            "{base}/api/v1/query?{}",
            form_urlencode(&[("query", case.query), ("time", &seconds(AT_MS))])
        ),
        Span::Hours(hours) => format!(
            "{base}/api/v1/query_range?{}",
            form_urlencode(&[
                ("query", case.query),
                ("start", &seconds(AT_MS - hours * HOUR_MS)),
                ("end", &seconds(AT_MS)),
                ("step", &STEP_SECONDS.to_string()),
            ])
        ),
    }
}

fn span_name(span: Span) -> String {
    match span {
        Span::Instant => "instant".to_owned(),
        Span::Hours(hours) if hours % 24 == 0 => format!("{}d range", hours / 24),
        Span::Hours(hours) => format!("{hours}h range"),
    }
}

/// One request's time (to its last byte) and body.
async fn timed(client: &HttpClient, url: &str) -> (Duration, Bytes) {
    let request = hyper::Request::get(url)
        .header("Cache-Control", "no-store")
        .body(Empty::new())
        .expect("request");
    let started = Instant::now();
    let response = client.request(request).await.expect("response");
    let status = response.status();
    let received = support::received(response).await;
    let took = started.elapsed();
    let body = received.to_bytes();
    assert_eq!(status, 200, "{url}: {}", String::from_utf8_lossy(&body));
    (took, body)
}

fn median(mut durations: Vec<Duration>) -> Duration {
    durations.sort();
    durations[durations.len() / 2]
}

/// An answer with its vector sorted by labels, so that answers that
/// differ only in the order of an instant vector compare equal.
fn normalized(body: &[u8]) -> serde_json::Value {
    let mut value: serde_json::Value = serde_json::from_slice(body).expect("JSON answer");
    if value["data"]["resultType"] == "vector"
        && let Some(result) = value["data"]["result"].as_array_mut()
    {
        result.sort_by_key(|sample| sample["metric"].to_string());
    }
    value
}

/// Where two answers first differ (sample values to 1e-9 relative), if
/// they do.
fn first_difference(
    got: &serde_json::Value,
    want: &serde_json::Value,
    path: &str,
) -> Option<String> {
    use serde_json::Value;
    match (got, want) {
        (Value::String(a), Value::String(b)) if a != b => {
            let close = match (a.parse::<f64>(), b.parse::<f64>()) {
                (Ok(x), Ok(y)) => (x - y).abs() <= 1e-9 * x.abs().max(y.abs()),
                _ => false,
            };
            (!close).then(|| format!("{path}: {a} vs {b}"))
        }
        (Value::Array(a), Value::Array(b)) if a.len() == b.len() => a
            .iter()
            .zip(b)
            .enumerate()
            .find_map(|(index, (x, y))| first_difference(x, y, &format!("{path}[{index}]"))),
        (Value::Object(a), Value::Object(b)) if a.len() == b.len() => {
            a.iter().find_map(|(key, x)| match b.get(key) {
                Some(y) => first_difference(x, y, &format!("{path}.{key}")),
                None => Some(format!("{path}.{key}: missing in Prometheus's")),
            })
        }
        (Value::Array(a), Value::Array(b)) => {
            Some(format!("{path}: {} elements vs {}", a.len(), b.len()))
        }
        _ => (got != want).then(|| format!("{path}: {got} vs {want}")),
    }
}

/// The servers measured, Prometheus first.
struct Servers {
    prometheus: PrometheusServer,
    sluice: Sluice,
    split: Sluice,
}

async fn start_servers(blocks: &std::path::Path, copy: &std::path::Path) -> Servers {
    let dir_flag = format!("-blocks-storage.filesystem.dir={}", copy.display());
    let prometheus = PrometheusServer::serve_copy_of(blocks, &[]).await;
    let sluice = start_sluice_with(&[
        &dir_flag,
        "-query-frontend.split-queries-by-interval=0",
        "-query-frontend.parallelize-shardable-queries=false",
    ])
    .await;
    let split = start_sluice_with(&[&dir_flag]).await;
    Servers {
        prometheus,
        sluice,
        split,
    }
}

struct Row {
    prometheus: Duration,
    sluice: Duration,
    split: Option<Duration>,
    answers: String,
}

/// Times `case` on every server, after an untimed request to each whose
/// answers are compared.
async fn measure(client: &HttpClient, servers: &Servers, case: &Case) -> Row {
    let prometheus_url = url(&servers.prometheus.url(), case);
    let sluice_url = url(&servers.sluice.url, case);
    let split_url = (case.span != Span::Instant).then(|| url(&servers.split.url, case));
    let want = normalized(&timed(client, &prometheus_url).await.1);
    let got = normalized(&timed(client, &sluice_url).await.1);
    let mut answers = match first_difference(&got, &want, "") {
        None => "agree".to_owned(),
        Some(difference) => format!("DIFFER {difference}"),
    };
    if let Some(split_url) = &split_url {
        let split = normalized(&timed(client, split_url).await.1);
        if let Some(difference) = first_difference(&split, &want, "") {
            answers.push_str(&format!("; split DIFFERS {difference}"));
        }
    }
    let runs = if case.span == WEEK { LONG_RUNS } else { RUNS };
    let (mut prometheus, mut sluice, mut split) = (Vec::new(), Vec::new(), Vec::new());
    for run in 0..runs {
        // Alternate who goes first, so neither always meets a colder cache.
        if run % 2 == 1 {
            sluice.push(timed(client, &sluice_url).await.0);
        }
        prometheus.push(timed(client, &prometheus_url).await.0);
        if run % 2 == 0 {
            sluice.push(timed(client, &sluice_url).await.0);
        }
        if let Some(split_url) = &split_url {
            split.push(timed(client, split_url).await.0);
        }
    }
    Row {
        prometheus: median(prometheus),
        sluice: median(sluice),
        split: (!split.is_empty()).then(|| median(split)),
        answers,
    }
}

fn ratio(took: Duration, base: Duration) -> f64 {
    took.as_secs_f64() / base.as_secs_f64()
}

fn median_ratio(mut ratios: Vec<f64>) -> f64 {
    ratios.sort_by(f64::total_cmp);
    let middle = ratios.len() / 2;
    if ratios.len().is_multiple_of(2) {
        (ratios[middle - 1] + ratios[middle]) / 2.0
    } else {
        ratios[middle]
    }
}

fn print_table(rows: &[(&Case, Row)]) -> f64 {
    println!(
        "| # | query | span | Prometheus ms | sluice ms | ratio | split ms | ratio | answers |"
    );
    println!("|---|---|---|---:|---:|---:|---:|---:|---|");
    for (index, (case, row)) in rows.iter().enumerate() {
        let split = match row.split {
            Some(split) => format!("{:.1} | {:.2}", millis(split), ratio(split, row.prometheus)),
            None => " | ".to_owned(),
        };
        println!(
            "| {} | `{}` | {} | {:.1} | {:.1} | {:.2} | {split} | {} |",
            index + 1,
            case.query,
            span_name(case.span),
            millis(row.prometheus),
            millis(row.sluice),
            ratio(row.sluice, row.prometheus),
            row.answers
        );
    }
    let ratios = rows
        .iter()
        .map(|(_, row)| ratio(row.sluice, row.prometheus))
        .collect();
    median_ratio(ratios)
}

/// A process's peak and current resident set (`VmHWM`, `VmRSS`), in MiB.
fn resident_mib(pid: u32) -> (f64, f64) {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    let field = |name: &str| {
        status
            .lines()
            .find_map(|line| line.strip_prefix(name))
            .and_then(|rest| {
                rest.trim()
                    .trim_end_matches("kB")
                    .trim()
                    .parse::<f64>()
                    .ok()
            })
            .map_or(f64::NAN, |kib| kib / 1024.0)
    };
    (field("VmHWM:"), field("VmRSS:"))
}

/// Resets a process's peak resident set to its current one.
fn reset_peak(pid: u32) -> bool {
    std::fs::write(format!("/proc/{pid}/clear_refs"), "5").is_ok()
}

/// Each 7-day query once on fresh processes, with each process's resident
/// set before it and its peak during it.
async fn measure_memory(client: &HttpClient, blocks: &std::path::Path, copy: &std::path::Path) {
    let mut servers = start_servers(blocks, copy).await;
    let prometheus_pid = servers.prometheus.process().id();
    let processes: [(&str, u32, String); 3] = [
        ("Prometheus", prometheus_pid, servers.prometheus.url()),
        (
            "sluice",
            servers.sluice.process.id(),
            servers.sluice.url.clone(),
        ),
        (
            "split",
            servers.split.process.id(),
            servers.split.url.clone(),
        ),
    ];
    println!(
        "\npeak resident set (VmHWM) of fresh processes, MiB (before → peak during the query):"
    );
    println!("| query | Prometheus | sluice | split | sluice / Prometheus |");
    println!("|---|---:|---:|---:|---:|");
    for case in CASES.iter().filter(|case| case.span == WEEK) {
        let mut cells = Vec::new();
        let mut peaks = Vec::new();
        for (name, pid, base) in &processes {
            let reset = reset_peak(*pid);
            let (_, before) = resident_mib(*pid);
            timed(client, &url(base, case)).await;
            let (peak, _) = resident_mib(*pid);
            assert!(reset, "could not reset {name}'s peak resident set");
            cells.push(format!("{before:.0} → {peak:.0}"));
            peaks.push(peak);
        }
        println!(
            "| `{}` | {} | {:.2} |",
            case.query,
            cells.join(" | "),
            peaks[1] / peaks[0]
        );
    }
}

// One thread is enough for one client sending one request at a time.
#[tokio::main(flavor = "current_thread")]
async fn main() {
    let data = BlocksData;
    let started = Instant::now();
    let blocks = tokio::task::spawn_blocking(move || backfilled_blocks(&data))
        .await
        .expect("backfill");
    let copy = TempDir::new("sluice-bench-blocks").expect("temp dir");
    copy_dir(&blocks, copy.path()).expect("copying the blocks");
    println!(
        "{} series, {} parts of OpenMetrics, 60 s scrape from {} to {} (ms); blocks ready in {:.1?}",
        BlocksData.series_count(),
        BlocksData.part_count(),
        BlocksData.start_ms(),
        END_MS,
        started.elapsed()
    );
    let client = support::client(4);
    let servers = start_servers(&blocks, copy.path()).await;
    let cpu_before = CpuTimes::now();
    let mut rows = Vec::new();
    for case in CASES {
        let row = measure(&client, &servers, case).await;
        rows.push((case, row));
    }
    println!(
        "\ntimes are medians of {RUNS} runs ({LONG_RUNS} for 7 days), at {}:\n",
        seconds(AT_MS)
    );
    let median = print_table(&rows);
    println!(
        "\nmedian ratio sluice / Prometheus: {median:.3} (bar: at most {RATIO_BAR}, goal {RATIO_GOAL}): {}",
        if median <= RATIO_GOAL {
            "goal met"
        } else if median <= RATIO_BAR {
            "bar met"
        } else {
            "MISSED"
        }
    );
    let splits: Vec<f64> = rows
        .iter()
        .filter_map(|(_, row)| Some(ratio(row.split?, row.prometheus)))
        .collect();
    println!(
        "median ratio split / Prometheus (range queries): {:.3}",
        median_ratio(splits)
    );
    println!("{}", steal_report(&cpu_before));
    drop(servers);
    let days = (AT_MS - BlocksData.start_ms()) / DAY_MS;
    assert!(days >= 7, "the data must cover the 7-day queries");
    measure_memory(&client, &blocks, copy.path()).await;
}
