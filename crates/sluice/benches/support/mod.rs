//! What the sluice benchmarks share: a keep-alive HTTP client and a sluice
//! `-target=all` process in front of a downstream.

use std::time::Duration;

use http_body_util::Empty;
use hyper::body::Bytes;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use sluice_testkit::{ChildProcess, TempDir, free_port};

pub(crate) type HttpClient =
    Client<hyper_util::client::legacy::connect::HttpConnector, Empty<Bytes>>;

/// How much a benchmark client reads from a connection at once. hyper's
/// default starts every response at 8 KiB reads and doubles them while
/// they fill; on a week's gzip answer (295 KB), warm, that read 0.21-0.25
/// ms against 0.08 ms with fixed 256 KiB reads from the same server (runs
/// of the acceleration bench minutes apart), and the difference was the
/// client's own work, counted as the server's time. The reads only take
/// what has arrived, so small answers are not delayed.
pub(crate) const READ_BUFFER: usize = 256 * 1024;

/// A keep-alive client with Nagle off and fixed-size reads
/// ([`READ_BUFFER`]), pooling up to `idle_per_host`.
pub(crate) fn client(idle_per_host: usize) -> HttpClient {
    let mut connector = hyper_util::client::legacy::connect::HttpConnector::new();
    connector.set_nodelay(true);
    Client::builder(TokioExecutor::new())
        .pool_max_idle_per_host(idle_per_host)
        .http1_read_buf_exact_size(READ_BUFFER)
        .build(connector)
}

/// The whole body of a response, in the frames it came in, not yet joined
/// into one buffer. A timed request stops its clock here: joining a
/// megabyte into fresh memory faults in its pages, which cost this client
/// more (about 0.8 ms for a week's JSON) than receiving the megabyte did,
/// and that is neither server's time.
pub(crate) async fn received(
    response: hyper::Response<hyper::body::Incoming>,
) -> http_body_util::Collected<Bytes> {
    use http_body_util::BodyExt;
    response.into_body().collect().await.expect("body")
}

pub(crate) fn millis(duration: Duration) -> f64 {
    duration.as_secs_f64() * 1000.0
}

/// A running `sluice -target=all` and the URL of its HTTP API.
pub(crate) struct Sluice {
    pub(crate) process: ChildProcess,
    pub(crate) url: String,
    _logs: TempDir,
}

/// Starts the benchmarked sluice binary in front of `downstream_url`, with
/// `extra` flags, and waits until it is ready. Only slow requests are
/// logged, as in production.
// The blocks bench, whose sluice has no downstream, does not call it.
#[allow(dead_code)]
pub(crate) async fn start_sluice(downstream_url: &str, extra: &[&str]) -> Sluice {
    let downstream = format!("-querier.downstream-url={downstream_url}");
    let mut flags = vec![downstream.as_str()];
    flags.extend_from_slice(extra);
    start_sluice_with(&flags).await
}

/// Starts the benchmarked sluice binary with `flags` (and its listen
/// addresses) and waits until it is ready: with no downstream, as the
/// blocks bench starts it, its querier evaluates with the embedded engine.
pub(crate) async fn start_sluice_with(flags: &[&str]) -> Sluice {
    let logs = TempDir::new("sluice-bench").expect("temp dir");
    let port = free_port();
    let mut args = vec![
        "-server.http-listen-address=127.0.0.1".to_owned(),
        format!("-server.http-listen-port={port}"),
        "-server.grpc-listen-address=127.0.0.1".to_owned(),
        format!("-server.grpc-listen-port={}", free_port()),
        "-query-frontend.log-queries-longer-than=1m".to_owned(),
        // A scrape every 15 s would be noise in what is timed.
        "-self-scrape.enabled=false".to_owned(),
    ];
    args.extend(flags.iter().map(|flag| (*flag).to_owned()));
    let mut process = ChildProcess::start(
        env!("CARGO_BIN_EXE_sluice"),
        &args,
        &[],
        logs.path().join("sluice.log"),
    )
    .expect("start sluice");
    let url = format!("http://127.0.0.1:{port}");
    process
        .wait_http_ok(&format!("{url}/ready"), Duration::from_secs(30))
        .await;
    Sluice {
        process,
        url,
        _logs: logs,
    }
}

/// Above this share of CPU time taken by the hypervisor, a run's figures
/// say more about the host than about the servers measured.
const STEAL_WARNING: f64 = 0.05;

/// The CPU time counters of the whole machine (`/proc/stat`'s `cpu` line),
/// to tell afterwards how much of a run's CPU time the hypervisor gave to
/// other guests (steal). On these shared virtual machines steal came and
/// went within minutes: from 0-2% to 10-38% on an idle machine, and in one
/// run Prometheus's time for the same week-long query went from 281 ms to
/// 2952 ms. A run's ratios mean little then, and the bench says so.
pub(crate) struct CpuTimes {
    steal: u64,
    total: u64,
}

impl CpuTimes {
    /// The counters now, or `None` where `/proc/stat` cannot be read.
    pub(crate) fn now() -> Option<CpuTimes> {
        let stat = std::fs::read_to_string("/proc/stat").ok()?;
        let line = stat.lines().find(|line| line.starts_with("cpu "))?;
        // user nice system idle iowait irq softirq steal (guest and
        // guest_nice are already counted in user and nice).
        let fields: Vec<u64> = line
            .split_whitespace()
            .skip(1)
            .take(8)
            .map(|field| field.parse().ok())
            .collect::<Option<_>>()?;
        (fields.len() == 8).then(|| CpuTimes {
            steal: fields[7],
            total: fields.iter().sum(),
        })
    }
}

/// The share of the machine's CPU time stolen since `since`, as a line for
/// the report: with a warning when it is above [`STEAL_WARNING`].
pub(crate) fn steal_report(since: &Option<CpuTimes>) -> String {
    let share = since
        .as_ref()
        .zip(CpuTimes::now())
        .and_then(|(before, after)| {
            let total = after.total.checked_sub(before.total)?;
            let steal = after.steal.checked_sub(before.steal)?;
            (total > 0).then(|| steal as f64 / total as f64)
        });
    match share {
        None => "host steal time: unknown (no /proc/stat)".to_owned(),
        Some(share) if share > STEAL_WARNING => format!(
            "host steal time: {:.1}% of CPU time, above {:.0}%: other guests had this machine's cores, so these figures measure the host as much as the servers; run again",
            share * 100.0,
            STEAL_WARNING * 100.0
        ),
        Some(share) => format!("host steal time: {:.1}% of CPU time", share * 100.0),
    }
}
