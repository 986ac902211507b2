//! Whether a flooding tenant starves a quiet one. sluice (`-target=all`,
//! multi-tenancy on, default limits: 20 querier slots, 100 outstanding
//! sub-queries per tenant) runs in front of a real Prometheus holding the
//! 8-day data set, and:
//!
//! 1. alone: tenant `quiet` sends a cheap one-series instant query, one at
//!    a time, for 5 s;
//! 2. storm: for 20 s, 200 clients of tenant `flood` each send 3-day range
//!    queries in a loop, while `quiet` goes on as before.
//!
//! Every flood request has its own query text (a matcher on an instance
//! that does not exist, numbered per request), as a script iterating over
//! label values would: the results cache and the collapsing of identical
//! in-flight queries then help nothing. `Cache-Control: no-store` would
//! not do that: it only stops the frontend from writing the cache, and 200
//! identical requests would be collapsed into one.
//!
//! The result is the quiet tenant's p99 during the storm over its p99
//! alone (bar: at most 3x; goal: at most 1.5x), no quiet failures, and
//! every flood request answered with 200, or 429 or 503 and a Prometheus
//! JSON error envelope, before `-querier.timeout` (set to 10 s here to keep
//! the run short) plus a margin, past which it counts as hung. Beside each
//! quiet figure stands the same query sent straight to Prometheus right
//! after it: what Prometheus itself takes under the load sluice lets
//! through. It is printed to read the figures by, not a floor: how much
//! load reaches Prometheus is sluice's choice.
//!
//! Each phase ends with the cores the bench client, sluice, Prometheus and
//! anything else on the machine kept busy, and the host's steal time: on a
//! shared machine of two cores another user's build moves these figures
//! more than sluice does, and the bench says so.
//!
//! Run with `cargo bench -p sluice --bench storm`; `SLUICE_STORM_SECONDS`,
//! `SLUICE_STORM_ALONE_SECONDS`, `SLUICE_STORM_CLIENTS`,
//! `SLUICE_STORM_QUERIER_TIMEOUT_SECONDS`, `SLUICE_STORM_STEP_SECONDS` and
//! `SLUICE_STORM_REFUSED_PAUSE_MS` change the defaults above (and the
//! flood's 30 s step and 100 ms pause after a refusal) for quick runs.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

mod support;

use http_body_util::Empty;
use hyper::body::Bytes;
use sluice_testkit::{Dataset, PrometheusServer, form_urlencode};
use support::{CpuTimes, HttpClient, millis, start_sluice, steal_report};

const QUIET_TENANT: &str = "quiet";
const FLOOD_TENANT: &str = "flood";
const QUIET_QUERY: &str = "node_temperature_celsius{instance=\"node-normal\"}";
const DAY_MS: i64 = 86_400_000;
/// The bar and the goal for the quiet tenant's p99 during the storm over
/// its p99 alone.
const RATIO_BAR: f64 = 3.0;
const RATIO_GOAL: f64 = 1.5;
/// How long past `-querier.timeout` a client waits before it calls a
/// request hung: sluice's deadline covers the whole request, so anything
/// later is not a slow answer but a missing one.
const HUNG_MARGIN: Duration = Duration::from_secs(5);
/// A flood client's pause after a refusal, in milliseconds, unless
/// `SLUICE_STORM_REFUSED_PAUSE_MS` says otherwise. Without it 200 clients
/// would bounce 429s as fast as two cores allow, and the run would measure
/// how fast this machine turns requests away, on the same cores as the
/// quiet tenant's queries, more than sluice's fairness. With it a refused
/// flood still sends up to 2,000 requests a second.
const REFUSED_PAUSE_MS: u64 = 100;
/// Above this many cores busy with other work during the storm (another
/// user's build on a shared machine), the run's figures say as much about
/// that work as about sluice.
const OTHERS_WARNING: f64 = 0.25;
/// Upper bounds on requests, whatever the clock says.
const MAX_QUIET_REQUESTS: usize = 100_000;
const MAX_FLOOD_REQUESTS_PER_CLIENT: usize = 10_000;
/// Cheap queries sent untimed before the run, to open connections and
/// wake both servers.
const WARM_UPS: usize = 50;

/// The run's shape, from the environment or the defaults.
struct Settings {
    alone: Duration,
    storm: Duration,
    clients: usize,
    querier_timeout: Duration,
    step_seconds: u64,
    refused_pause: Duration,
}

fn env_number(name: &str, default: u64) -> u64 {
    match std::env::var(name) {
        Ok(value) => value
            .parse()
            .unwrap_or_else(|_| panic!("{name}={value:?} is not a whole number")),
        Err(_) => default,
    }
}

impl Settings {
    fn from_env() -> Settings {
        Settings {
            alone: Duration::from_secs(env_number("SLUICE_STORM_ALONE_SECONDS", 5)),
            storm: Duration::from_secs(env_number("SLUICE_STORM_SECONDS", 20)),
            clients: env_number("SLUICE_STORM_CLIENTS", 200) as usize,
            querier_timeout: Duration::from_secs(env_number(
                "SLUICE_STORM_QUERIER_TIMEOUT_SECONDS",
                10,
            )),
            step_seconds: env_number("SLUICE_STORM_STEP_SECONDS", 30).max(1),
            refused_pause: Duration::from_millis(env_number(
                "SLUICE_STORM_REFUSED_PAUSE_MS",
                REFUSED_PAUSE_MS,
            )),
        }
    }

    /// When a client gives up on a request and counts it as hung.
    fn client_timeout(&self) -> Duration {
        self.querier_timeout + HUNG_MARGIN
    }
}

/// The flood's query text for request `number`.
fn flood_query(number: &str) -> String {
    format!("sum by (job) (rate(http_requests_total{{instance!=\"storm-{number}\"}}[1h]))")
}

/// The flood's 3-day range query number `number`, against `base`. An
/// hour's rate, not 5 minutes', so that Prometheus alone takes hundreds of
/// milliseconds over it (143-201 ms against 81 ms here); a step of 30 s by
/// default, as Prometheus refuses more than 11,000 points a series, which
/// 15 s over 3 days would be.
fn flood_url(base: &str, end_ms: i64, step_seconds: u64, number: u64) -> String {
    let query = flood_query(&number.to_string());
    format!(
        "{base}/api/v1/query_range?{}",
        form_urlencode(&[
            ("query", &query),
            ("start", &((end_ms - 3 * DAY_MS) / 1000).to_string()),
            ("end", &(end_ms / 1000).to_string()),
            ("step", &step_seconds.to_string()),
        ])
    )
}

/// The quiet query at an evaluation time of its own (a millisecond apart
/// per `number`), so that no answer can be reused.
fn quiet_url(base: &str, first_time_ms: i64, number: usize) -> String {
    let time_ms = first_time_ms + (number as i64 % DAY_MS);
    let time = format!("{}.{:03}", time_ms / 1000, time_ms % 1000);
    format!(
        "{base}/api/v1/query?{}",
        form_urlencode(&[("query", QUIET_QUERY), ("time", &time)])
    )
}

/// What came back for one request, read to its last byte.
enum Answer {
    Status(u16, Bytes),
    /// No response (connection refused or reset).
    Transport(String),
    /// Nothing, or not all of it, within the client's timeout.
    Hung,
}

/// Sends a GET to `url` as `tenant` and reads the whole answer, giving up
/// after `timeout`; returns the answer and how long it took.
async fn send(
    client: &HttpClient,
    url: &str,
    tenant: &str,
    timeout: Duration,
) -> (Answer, Duration) {
    let request = hyper::Request::get(url)
        .header("X-Scope-OrgID", tenant)
        .body(Empty::new())
        .expect("request");
    let started = Instant::now();
    // Not `support::received`, which panics on a body cut short: here
    // that is a finding to count, not a broken bench.
    let exchange = async {
        use http_body_util::BodyExt;
        let response = client.request(request).await.map_err(|e| e.to_string())?;
        let status = response.status().as_u16();
        let body = response.into_body().collect().await;
        Ok::<_, String>((status, body.map_err(|e| e.to_string())?.to_bytes()))
    };
    let answer = match tokio::time::timeout(timeout, exchange).await {
        Ok(Ok((status, body))) => Answer::Status(status, body),
        Ok(Err(error)) => Answer::Transport(error),
        Err(_) => Answer::Hung,
    };
    (answer, started.elapsed())
}

/// The `errorType` of a Prometheus JSON error envelope, or `None` when
/// `body` is not one.
fn envelope_error_type(body: &[u8]) -> Option<String> {
    let value: serde_json::Value = serde_json::from_slice(body).ok()?;
    let error_type = value.get("errorType")?.as_str()?;
    let well_formed = value.get("status")?.as_str()? == "error"
        && value.get("error")?.as_str().is_some()
        && !error_type.is_empty();
    well_formed.then(|| error_type.to_owned())
}

/// The flood's answers by kind.
#[derive(Default)]
struct FloodTally {
    ok: u64,
    too_many: u64,
    unavailable: u64,
    other: u64,
    hung: u64,
    /// Every non-200 answer by status and `errorType` ("no envelope" when
    /// the body is not one), to show what the clients were told.
    errors: BTreeMap<String, u64>,
    /// The first few answers that were neither 200 nor a proper refusal.
    strange: Vec<String>,
    /// How long the 200s took, and the slowest answer of any kind.
    ok_times: Vec<Duration>,
    slowest: Duration,
}

impl FloodTally {
    /// Counts one answer; true when it was a 200.
    fn record(&mut self, answer: &Answer, took: Duration) -> bool {
        if !matches!(answer, Answer::Hung) {
            self.slowest = self.slowest.max(took);
        }
        let (status, body) = match answer {
            Answer::Status(200, _) => {
                self.ok += 1;
                self.ok_times.push(took);
                return true;
            }
            Answer::Status(status, body) => (*status, body),
            Answer::Hung => {
                self.hung += 1;
                return false;
            }
            Answer::Transport(error) => {
                self.note_strange(format!("no response: {error}"));
                return false;
            }
        };
        let error_type = envelope_error_type(body);
        let kind = error_type.as_deref().unwrap_or("no envelope");
        *self.errors.entry(format!("{status} {kind}")).or_default() += 1;
        match (status, &error_type) {
            (429, Some(_)) => self.too_many += 1,
            (503, Some(_)) => self.unavailable += 1,
            _ => {
                let start = String::from_utf8_lossy(&body[..body.len().min(200)]).into_owned();
                self.note_strange(format!("{status}: {start}"));
            }
        }
        false
    }

    fn note_strange(&mut self, example: String) {
        self.other += 1;
        if self.strange.len() < 5 {
            self.strange.push(example);
        }
    }

    fn total(&self) -> u64 {
        self.ok + self.too_many + self.unavailable + self.other + self.hung
    }
}

/// What every flood client shares: where to send, until when, the next
/// request's number and the tally.
struct Flood {
    sluice_url: String,
    end_ms: i64,
    step_seconds: u64,
    timeout: Duration,
    refused_pause: Duration,
    until: Instant,
    next_number: AtomicU64,
    tally: Mutex<FloodTally>,
}

/// One flood client: a request, and as soon as it is answered the next,
/// until the storm ends; a short pause after a refusal
/// ([`REFUSED_PAUSE_MS`]).
async fn flood_client(client: HttpClient, flood: Arc<Flood>) {
    for _ in 0..MAX_FLOOD_REQUESTS_PER_CLIENT {
        if Instant::now() >= flood.until {
            break;
        }
        let number = flood.next_number.fetch_add(1, Ordering::Relaxed);
        let url = flood_url(&flood.sluice_url, flood.end_ms, flood.step_seconds, number);
        let (answer, took) = send(&client, &url, FLOOD_TENANT, flood.timeout).await;
        let ok = flood.tally.lock().expect("tally").record(&answer, took);
        if !ok {
            tokio::time::sleep(flood.refused_pause).await;
        }
    }
}

/// The quiet tenant's requests of one phase: each through sluice and then
/// straight to Prometheus.
#[derive(Default)]
struct QuietSamples {
    through: Vec<Duration>,
    direct: Vec<Duration>,
    /// What went wrong with requests through sluice (their times are in
    /// `through` too: a failure is also a wait).
    failures: Vec<String>,
    direct_failures: usize,
}

/// Where the quiet tenant sends, and how long it waits for an answer.
struct QuietTarget {
    sluice_url: String,
    prometheus_url: String,
    first_time_ms: i64,
    timeout: Duration,
}

/// Why a quiet request failed, or `None` when it was answered 200.
fn failure(answer: &Answer, took: Duration) -> Option<String> {
    match answer {
        Answer::Status(200, _) => None,
        Answer::Status(status, body) => Some(format!(
            "{status} after {:.0} ms: {}",
            millis(took),
            String::from_utf8_lossy(&body[..body.len().min(200)])
        )),
        Answer::Transport(error) => Some(format!("no response: {error}")),
        Answer::Hung => Some(format!("no answer within {:.0} ms", millis(took))),
    }
}

/// The quiet tenant for `duration`: one request at a time, numbered from
/// `first_number` so that no two of the run share an evaluation time.
async fn quiet_phase(
    client: &HttpClient,
    target: &QuietTarget,
    duration: Duration,
    first_number: usize,
) -> QuietSamples {
    let until = Instant::now() + duration;
    let mut samples = QuietSamples::default();
    for number in first_number..first_number + MAX_QUIET_REQUESTS {
        if Instant::now() >= until {
            break;
        }
        let through = quiet_url(&target.sluice_url, target.first_time_ms, number);
        let (answer, took) = send(client, &through, QUIET_TENANT, target.timeout).await;
        samples.failures.extend(failure(&answer, took));
        samples.through.push(took);
        let direct = quiet_url(&target.prometheus_url, target.first_time_ms, number);
        let (answer, took) = send(client, &direct, QUIET_TENANT, target.timeout).await;
        samples.direct_failures += usize::from(failure(&answer, took).is_some());
        samples.direct.push(took);
    }
    samples
}

/// The quiet tenant's two phases.
struct QuietRun {
    alone: QuietSamples,
    storm: QuietSamples,
}

/// Runs the quiet tenant on a thread and runtime of its own, so that its
/// requests never wait behind the flood's tasks in this process: warm-ups,
/// the phase alone, then `alone_done` is told (with that phase's
/// [`Load::report`]), and once `storm_started` says the flood is running, the phase
/// during the storm.
fn spawn_quiet(
    target: QuietTarget,
    settings: &Settings,
    processes: Processes,
    alone_done: tokio::sync::oneshot::Sender<String>,
    storm_started: tokio::sync::oneshot::Receiver<()>,
) -> std::thread::JoinHandle<QuietRun> {
    let (alone, storm) = (settings.alone, settings.storm);
    std::thread::spawn(move || {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("quiet runtime");
        runtime.block_on(async move {
            let client = support::client(2);
            for number in 0..WARM_UPS {
                for base in [&target.sluice_url, &target.prometheus_url] {
                    let url = quiet_url(base, target.first_time_ms, number);
                    send(&client, &url, QUIET_TENANT, target.timeout).await;
                }
            }
            let load = Load::now(&processes);
            let alone = quiet_phase(&client, &target, alone, WARM_UPS).await;
            let _ = alone_done.send(load.report());
            storm_started.await.expect("the flood starts");
            let storm_first = WARM_UPS + MAX_QUIET_REQUESTS;
            let storm = quiet_phase(&client, &target, storm, storm_first).await;
            QuietRun { alone, storm }
        })
    })
}

/// A process's CPU time so far (user and system, all its threads), from
/// `/proc/<pid>/stat`; `None` where that cannot be read.
fn process_cpu(pid: u32) -> Option<Duration> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name may hold spaces: count fields from its closing
    // parenthesis, where utime and stime are the 12th and 13th.
    let fields: Vec<&str> = stat[stat.rfind(')')? + 1..].split_whitespace().collect();
    let ticks = fields.get(11)?.parse::<u64>().ok()? + fields.get(12)?.parse::<u64>().ok()?;
    // In clock ticks of USER_HZ, which Linux fixes at 100 for /proc.
    Some(Duration::from_millis(ticks * 10))
}

/// The CPU time the whole machine has spent busy so far (user, nice,
/// system, irq and softirq of `/proc/stat`'s `cpu` line): beside the
/// processes measured, it shows how much went to anything else, such as
/// another user's build on a shared machine.
fn machine_busy() -> Option<Duration> {
    let stat = std::fs::read_to_string("/proc/stat").ok()?;
    let line = stat.lines().find(|line| line.starts_with("cpu "))?;
    let fields: Vec<u64> = line
        .split_whitespace()
        .skip(1)
        .map(|field| field.parse().ok())
        .collect::<Option<_>>()?;
    let ticks: u64 = [0, 1, 2, 5, 6]
        .iter()
        .map(|index| fields.get(*index).copied())
        .sum::<Option<u64>>()?;
    Some(Duration::from_millis(ticks * 10))
}

/// The run's processes, by name and pid: the bench client, sluice and
/// Prometheus.
type Processes = Vec<(&'static str, u32)>;

/// The CPU counters of the run's processes, of the whole machine and of
/// the hypervisor's steal at one moment, to say afterwards where a phase's
/// CPU time went.
struct Load {
    at: Instant,
    processes: Vec<(&'static str, u32, Option<Duration>)>,
    machine: Option<Duration>,
    steal: Option<CpuTimes>,
}

impl Load {
    fn now(processes: &Processes) -> Load {
        Load {
            at: Instant::now(),
            processes: processes
                .iter()
                .map(|(name, pid)| (*name, *pid, process_cpu(*pid)))
                .collect(),
            machine: machine_busy(),
            steal: CpuTimes::now(),
        }
    }

    /// Since [`Load::now`]: the cores each process kept busy and those
    /// anything else did (with a warning above [`OTHERS_WARNING`]), and the
    /// host's steal time.
    fn report(&self) -> String {
        let wall = self.at.elapsed().as_secs_f64();
        let used: Vec<(&str, Option<Duration>)> = self
            .processes
            .iter()
            .map(|(name, pid, before)| {
                let used = process_cpu(*pid).zip(*before);
                (
                    *name,
                    used.map(|(after, before)| after.saturating_sub(before)),
                )
            })
            .collect();
        let ours: Option<Duration> = used.iter().map(|(_, cpu)| *cpu).sum();
        let others = machine_busy()
            .zip(self.machine)
            .zip(ours)
            .map(|((after, before), ours)| after.saturating_sub(before).saturating_sub(ours));
        let cores = |cpu: Option<Duration>| {
            cpu.map_or("unknown".to_owned(), |cpu| {
                format!("{:.2}", cpu.as_secs_f64() / wall)
            })
        };
        let mut figures: Vec<String> = used
            .iter()
            .map(|(name, cpu)| format!("{name} {}", cores(*cpu)))
            .collect();
        figures.push(format!("anything else {}", cores(others)));
        let mut report = format!("CPU in cores: {}", figures.join(", "));
        if others.is_some_and(|others| others.as_secs_f64() / wall > OTHERS_WARNING) {
            report.push_str(&format!(
                " (more than {OTHERS_WARNING} cores went to other work on this machine, competing with Prometheus and sluice: these figures measure that work as much as sluice; run again when the machine is idle)"
            ));
        }
        format!("{report}; {}", steal_report(&self.steal))
    }
}

/// What the storm left behind.
struct StormRun {
    tally: FloodTally,
    /// From the first flood request to the last answer (or give-up).
    wall: Duration,
    /// Where the CPU time went meanwhile ([`Load::report`]).
    load: String,
}

/// The flood: `settings.clients` clients on this thread's runtime, until
/// the storm ends and each has its last answer; `storm_started` tells the
/// quiet thread to begin its storm phase.
async fn run_storm(
    settings: &Settings,
    sluice_url: &str,
    end_ms: i64,
    processes: &Processes,
    storm_started: tokio::sync::oneshot::Sender<()>,
) -> StormRun {
    let load = Load::now(processes);
    let flood = Arc::new(Flood {
        sluice_url: sluice_url.to_owned(),
        end_ms,
        step_seconds: settings.step_seconds,
        timeout: settings.client_timeout(),
        refused_pause: settings.refused_pause,
        until: load.at + settings.storm,
        next_number: AtomicU64::new(0),
        tally: Mutex::new(FloodTally::default()),
    });
    let client = support::client(settings.clients);
    let mut clients = tokio::task::JoinSet::new();
    for _ in 0..settings.clients {
        clients.spawn(flood_client(client.clone(), Arc::clone(&flood)));
    }
    let _ = storm_started.send(());
    while let Some(joined) = clients.join_next().await {
        joined.expect("flood client");
    }
    let tally = std::mem::take(&mut *flood.tally.lock().expect("tally"));
    StormRun {
        tally,
        wall: load.at.elapsed(),
        load: load.report(),
    }
}

/// Prometheus's own time for one flood query with nothing else running:
/// the median of three, after one to warm it up.
async fn calibrate(prometheus_url: &str, end_ms: i64, step_seconds: u64) -> Duration {
    let client = support::client(1);
    let mut times = Vec::new();
    // Numbers from the top, which the flood never reaches.
    for number in 0..4 {
        let url = flood_url(prometheus_url, end_ms, step_seconds, u64::MAX - number);
        let started = Instant::now();
        let response = client.get(url.parse().expect("uri")).await.expect("query");
        assert_eq!(response.status(), 200, "{url}");
        support::received(response).await;
        times.push(started.elapsed());
    }
    let mut timed = times.split_off(1);
    timed.sort();
    timed[1]
}

/// Nearest-rank percentiles of a phase's request times.
struct Summary {
    count: usize,
    p50: Duration,
    p99: Duration,
    max: Duration,
}

fn summarise(samples: &[Duration]) -> Summary {
    let mut sorted = samples.to_vec();
    sorted.sort();
    let rank = |share: f64| {
        let index = (share * sorted.len() as f64).ceil() as usize;
        sorted
            .get(index.saturating_sub(1))
            .copied()
            .unwrap_or_default()
    };
    Summary {
        count: sorted.len(),
        p50: rank(0.50),
        p99: rank(0.99),
        max: sorted.last().copied().unwrap_or_default(),
    }
}

fn summary_row(label: &str, samples: &[Duration], failures: usize) -> String {
    let summary = summarise(samples);
    format!(
        "  {label:<30} {:>8} {:>10.3} {:>10.3} {:>10.3} {failures:>9}",
        summary.count,
        millis(summary.p50),
        millis(summary.p99),
        millis(summary.max)
    )
}

fn met(met: bool) -> &'static str {
    if met { "met" } else { "MISSED" }
}

/// The quiet tenant's table and its verdicts.
fn report_quiet(quiet: &QuietRun) {
    println!(
        "\nquiet tenant ({QUIET_QUERY}, one at a time), ms:\n  {:<30} {:>8} {:>10} {:>10} {:>10} {:>9}",
        "", "requests", "p50", "p99", "max", "failures"
    );
    for (phase, samples) in [("alone", &quiet.alone), ("during the storm", &quiet.storm)] {
        let label = format!("{phase}, through sluice");
        println!(
            "{}",
            summary_row(&label, &samples.through, samples.failures.len())
        );
        let label = format!("{phase}, Prometheus directly");
        println!(
            "{}",
            summary_row(&label, &samples.direct, samples.direct_failures)
        );
    }
    for failure in quiet
        .storm
        .failures
        .iter()
        .chain(&quiet.alone.failures)
        .take(5)
    {
        println!("  a quiet failure: {failure}");
    }
    let ratio = |alone: &[Duration], storm: &[Duration]| {
        summarise(storm).p99.as_secs_f64() / summarise(alone).p99.as_secs_f64()
    };
    let through = ratio(&quiet.alone.through, &quiet.storm.through);
    let direct = ratio(&quiet.alone.direct, &quiet.storm.direct);
    println!(
        "  p99 during the storm / p99 alone: {through:.1}x through sluice ({direct:.1}x for Prometheus directly)"
    );
    println!(
        "  bar, p99 ratio at most {RATIO_BAR}x: {}",
        met(through <= RATIO_BAR)
    );
    println!(
        "  goal, p99 ratio at most {RATIO_GOAL}x: {}",
        met(through <= RATIO_GOAL)
    );
    let failures = quiet.alone.failures.len() + quiet.storm.failures.len();
    println!(
        "  bar, no quiet failures ({failures}): {}",
        met(failures == 0)
    );
}

/// The flood's counts and its verdict.
fn report_flood(storm: &StormRun, settings: &Settings) {
    let tally = &storm.tally;
    let ok = summarise(&tally.ok_times);
    println!(
        "\nflood tenant: {} requests from {} clients over {:.1} s (storm {} s, then the last answers)",
        tally.total(),
        settings.clients,
        storm.wall.as_secs_f64(),
        settings.storm.as_secs()
    );
    println!(
        "  200: {} (p50 {:.0} ms, max {:.0} ms)   429: {}   503: {}   other: {}   hung: {}   slowest answer: {:.0} ms",
        tally.ok,
        millis(ok.p50),
        millis(ok.max),
        tally.too_many,
        tally.unavailable,
        tally.other,
        tally.hung,
        millis(tally.slowest)
    );
    for (kind, count) in &tally.errors {
        println!("  non-200 by status and errorType: {kind}: {count}");
    }
    for example in &tally.strange {
        println!("  an answer that was neither: {example}");
    }
    let answered = tally.other == 0 && tally.hung == 0;
    println!(
        "  bar, every flood request answered 200, 429 or 503 with an error envelope within {} s: {}",
        settings.client_timeout().as_secs(),
        met(answered)
    );
}

/// What the run is, before its figures.
fn print_header(
    settings: &Settings,
    sluice_flags: &[&str],
    dataset: &Dataset,
    flood_alone: Duration,
) {
    println!(
        "sluice {} in front of Prometheus, {} series over {} days; other limits at their defaults",
        sluice_flags.join(" "),
        dataset.series().len(),
        dataset.days()
    );
    println!(
        "flood: {} clients of tenant {FLOOD_TENANT} for {} s, each in a loop: {}, 3 days at a {} s step (Prometheus alone answers one in {:.0} ms), N new each time; a {} ms pause after a refusal; unanswered after {} s counts as hung",
        settings.clients,
        settings.storm.as_secs(),
        flood_query("N"),
        settings.step_seconds,
        millis(flood_alone),
        settings.refused_pause.as_millis(),
        settings.client_timeout().as_secs()
    );
}

// The flood's clients mostly wait on sockets: one thread carries them, and
// the quiet tenant has a thread of its own (see `spawn_quiet`).
#[tokio::main(flavor = "current_thread")]
async fn main() {
    let began = Instant::now();
    let settings = Settings::from_env();
    let dataset = Dataset::with_days(8);
    let mut prometheus = PrometheusServer::start(&dataset).await;
    let timeout_flag = format!("-querier.timeout={}s", settings.querier_timeout.as_secs());
    let sluice_flags = ["-auth.multitenancy-enabled=true", timeout_flag.as_str()];
    let mut sluice = start_sluice(&prometheus.url(), &sluice_flags).await;
    let end_ms = dataset.end_ms();
    let flood_alone = calibrate(&prometheus.url(), end_ms, settings.step_seconds).await;
    print_header(&settings, &sluice_flags, &dataset, flood_alone);
    let target = QuietTarget {
        sluice_url: sluice.url.clone(),
        prometheus_url: prometheus.url(),
        first_time_ms: dataset.start_ms() + DAY_MS,
        timeout: settings.client_timeout(),
    };
    let (alone_done, alone_finished) = tokio::sync::oneshot::channel();
    let (storm_started, storm_begins) = tokio::sync::oneshot::channel();
    let processes = vec![
        ("bench client", std::process::id()),
        ("sluice", sluice.process.id()),
        ("Prometheus", prometheus.process().id()),
    ];
    let quiet = spawn_quiet(
        target,
        &settings,
        processes.clone(),
        alone_done,
        storm_begins,
    );
    let alone_load = alone_finished.await.expect("the quiet thread ran alone");
    let storm = run_storm(&settings, &sluice.url, end_ms, &processes, storm_started).await;
    let quiet = tokio::task::spawn_blocking(move || quiet.join().expect("quiet thread"))
        .await
        .expect("joining the quiet thread");
    report_quiet(&quiet);
    report_flood(&storm, &settings);
    println!("\nalone: {alone_load}\nduring the storm: {}", storm.load);
    println!("the bench took {:.0} s", began.elapsed().as_secs_f64());
    let _ = sluice.process.terminate(Duration::from_secs(10)).await;
}
