//! What splitting and the results cache buy on the query they exist for: a
//! 7-day `sum by (job) (rate(...[5m]))` at a 60s step over an 8-day data set
//! in a real Prometheus, measured in one run:
//! (a) straight to Prometheus, (b) through sluice cold (split, parallel, no
//! cache: `Cache-Control: no-store`), (c) through sluice warm (the same query
//! again), (d) through sluice moved forward 5 minutes (as a dashboard refresh).
//!
//! Every step runs twice: once asking for gzip, as Grafana's Go client does
//! on every request (Prometheus then compresses too), and once asking for
//! the identity encoding. Times run until the last byte of the answer has
//! arrived; joining its frames into one buffer and decompressing it, which
//! are the client's work, are not counted.
//!
//! Step (d) is timed in two rhythms. After a pause, as a lone dashboard's
//! refresh arrives: every process on the way is idle, and on this virtual
//! machine waking one costs a few hundred microseconds, in sluice, in
//! Prometheus and in the client alike. Back to back, as requests reach a
//! frontend serving many dashboards: the processes are awake (each timed
//! run, the floor's included, follows untimed requests of its own kind).
//!
//! Further figures say how far the machine lets (b) to (d) go: the day
//! pieces sluice splits (b) into, sent straight to Prometheus all at once;
//! for (c), the warm answer's bytes moved over loopback by a bare TCP
//! server; and for (d), in each rhythm, the 5 new minutes it has to
//! compute, sent straight to Prometheus, plus a round trip to sluice with
//! nothing to compute (`/ready`), the least a frontend adds to them, plus
//! (c)'s bytes moved, since a moved answer is as long as the warm one and
//! can only go out once the new minutes are in. No frontend answers faster
//! than that, so (a) over these is the best ratio reachable here.
//!
//! Run with `cargo bench -p sluice --bench acceleration`. Each figure is the
//! median of several runs with a keep-alive client; the ratios against (a)
//! are the result. Each encoding ends with a line saying which bars the run
//! met, and of those it missed, which were out of reach here: missed by
//! their floor as well; and with the share of CPU time the hypervisor took
//! for other guests meanwhile (steal), with a warning when that was high
//! enough to make the figures the host's more than sluice's.

use std::time::{Duration, Instant};

mod support;

use http_body_util::Empty;
use hyper::body::Bytes;
use sluice_testkit::{Dataset, PrometheusServer, form_urlencode};
use support::{CpuTimes, HttpClient, millis, start_sluice, steal_report};

const QUERY: &str = "sum by (job) (rate(http_requests_total[5m]))";
const DAY_MS: i64 = 86_400_000;
const MINUTE_MS: i64 = 60_000;
/// The bars: cold at most this fraction of Prometheus's time, warm
/// and moved forward at least these many times faster.
const COLD_BAR: f64 = 0.5;
const WARM_BAR: f64 = 1000.0;
const MOVED_BAR: f64 = 150.0;

/// Refreshes timed per pass: each costs a few milliseconds, so more of them
/// than the other steps' rounds steady the median on a noisy machine.
const MOVES: i64 = 11;

/// Requests sent untimed before each timed run of the back-to-back rhythm,
/// so that its figures are of awake processes, as its name says. After a
/// pause Prometheus needs about ten requests to come up to speed: on this
/// machine, 3 s after its last request, the same 5 minutes asked for again
/// and again took 2.1 ms, then 0.8-1.2 ms, and 0.7-1.2 ms from the tenth on.
/// Without these, sluice's refreshes (timed first) paid for waking
/// Prometheus and the floor's requests (timed right after them) did not.
const WARM_UPS: i64 = 10;

/// The 5-minute moves each pass makes: its timed refreshes in both rhythms
/// and the back-to-back rhythm's warm-ups.
const SHIFTS_PER_PASS: i64 = 2 * MOVES + WARM_UPS;

/// One request's duration (to the last byte) and its body as it came,
/// still compressed when the server compressed it.
async fn timed_raw(
    client: &HttpClient,
    url: &str,
    no_store: bool,
    gzip: bool,
) -> (Duration, Bytes) {
    let mut request = hyper::Request::get(url);
    if no_store {
        request = request.header("Cache-Control", "no-store");
    }
    if gzip {
        request = request.header("Accept-Encoding", "gzip");
    }
    let request = request.body(Empty::new()).expect("request");
    let started = Instant::now();
    let response = client.request(request).await.expect("response");
    assert_eq!(response.status(), 200, "{url}");
    let compressed = response
        .headers()
        .get("Content-Encoding")
        .is_some_and(|value| value == "gzip");
    let received = support::received(response).await;
    let took = started.elapsed();
    let body = received.to_bytes();
    assert_eq!(
        compressed, gzip,
        "gzip is used exactly when asked for: {url}"
    );
    (took, body)
}

/// The JSON of a body from [`timed_raw`].
fn decoded(body: &[u8], gzip: bool) -> Vec<u8> {
    if gzip {
        sluice_testkit::gunzip(body)
    } else {
        body.to_vec()
    }
}

/// One request's duration and its decoded body.
async fn timed(client: &HttpClient, url: &str, no_store: bool, gzip: bool) -> (Duration, Vec<u8>) {
    let (took, body) = timed_raw(client, url, no_store, gzip).await;
    (took, decoded(&body, gzip))
}

fn range_url(base: &str, start_ms: i64, end_ms: i64) -> String {
    format!(
        "{base}/api/v1/query_range?{}",
        form_urlencode(&[
            ("query", QUERY),
            ("start", &(start_ms / 1000).to_string()),
            ("end", &(end_ms / 1000).to_string()),
            ("step", "60"),
        ])
    )
}

fn median(mut durations: Vec<Duration>) -> Duration {
    durations.sort();
    durations[durations.len() / 2]
}

struct Figures {
    prometheus: Duration,
    cold: Duration,
    warm: Duration,
    /// The warm answer's bytes moved over loopback with nothing to compute.
    transfer: Duration,
    /// The warm answer's size as sent.
    warm_bytes: usize,
    /// Prometheus alone, answering (b)'s day pieces at once.
    pieces: Duration,
    /// Step (d) in each of [`RHYTHMS`], by its label.
    refreshes: Vec<(&'static str, Refreshes)>,
}

/// The rhythms step (d) is timed in (see the module's comment), and
/// whether each request waits for a week's query to Prometheus and a pause
/// first.
const RHYTHMS: [(&str, bool); 2] = [
    ("after a pause, as a lone refresh", true),
    ("back to back, as a busy frontend", false),
];

/// Step (d) in one rhythm: medians of sluice's refreshes and of the two
/// requests that bound them.
#[derive(Clone, Copy)]
struct Refreshes {
    moved: Duration,
    /// Prometheus alone, answering the minutes a refresh has to compute.
    new_minutes: Duration,
    /// A round trip to sluice with nothing to compute (`/ready`): what
    /// reaching it costs in this rhythm.
    round_trip: Duration,
}

/// The day pieces sluice splits `[start_ms, end_ms]` into, by its own
/// splitting, as URLs straight to `base`.
fn piece_urls(base: &str, start_ms: i64, end_ms: i64) -> Vec<String> {
    let query = sluice_proto::RangeQuery {
        query: QUERY.to_owned(),
        start_ms,
        end_ms,
        step_ms: MINUTE_MS,
        ..Default::default()
    };
    sluice_plan::split(&query, DAY_MS)
        .iter()
        .map(|piece| range_url(base, piece.start_ms, piece.end_ms))
        .collect()
}

/// The time until every one of `urls` has been answered, all sent at once
/// and uncompressed, as sluice's querier sends its pieces.
async fn timed_at_once(client: &HttpClient, urls: &[String]) -> Duration {
    let started = Instant::now();
    futures_util::future::join_all(urls.iter().map(|url| timed_raw(client, url, false, false)))
        .await;
    started.elapsed()
}

/// The least any server could take for step (c): `body`, the warm answer
/// as it came, written at once by a bare TCP server on another thread and
/// read over loopback into a buffer of the client's read size, back to back
/// as (c) is timed. Without compression a week's JSON is a megabyte, and
/// moving it alone took about 0.2 ms on this machine.
async fn timed_transfer(body: Bytes, repeats: usize) -> Duration {
    use std::io::{Read, Write};
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let address = listener.local_addr().expect("address");
    let length = body.len();
    let server = std::thread::spawn(move || {
        let (mut stream, _) = listener.accept().expect("accept");
        stream.set_nodelay(true).expect("nodelay");
        let mut request = [0u8; 1];
        // Each byte the client sends asks for the body once; its closing
        // the connection ends the loop.
        while stream.read_exact(&mut request).is_ok() && stream.write_all(&body).is_ok() {}
    });
    let mut stream = tokio::net::TcpStream::connect(address)
        .await
        .expect("connect");
    stream.set_nodelay(true).expect("nodelay");
    let mut buffer = vec![0u8; support::READ_BUFFER];
    let mut times = Vec::new();
    for _ in 0..repeats {
        let started = Instant::now();
        stream.write_all(b"?").await.expect("ask");
        let mut received = 0;
        while received < length {
            let read = stream.read(&mut buffer).await.expect("read");
            assert!(read > 0, "the bare server closed early");
            received += read;
        }
        times.push(started.elapsed());
    }
    drop(stream);
    server.join().expect("bare server");
    median(times)
}

/// What comes before each timed request of step (d) in the paused rhythm:
/// a week's query to Prometheus (`direct`), then a pause, as between two
/// refreshes.
async fn between_refreshes(client: &HttpClient, direct: &str, gzip: bool) {
    timed_raw(client, direct, false, gzip).await;
    tokio::time::sleep(Duration::from_millis(100)).await;
}

/// The range of step (d) `shift` 5-minute moves after `[start, end]`. The
/// passes and rhythms take consecutive shifts, so each request misses
/// only 5 new minutes, and no two share a range, so none finds another's
/// answers.
fn moved_range(start: i64, end: i64, shift: i64) -> (i64, i64) {
    let moved_by = shift * 5 * MINUTE_MS;
    (start + moved_by, end + moved_by)
}

/// The 5 new minutes of a range ending at `end_ms`, straight to
/// Prometheus, uncompressed as sluice's querier asks for them.
fn new_minutes_url(prometheus_url: &str, end_ms: i64) -> String {
    range_url(prometheus_url, end_ms - 4 * MINUTE_MS, end_ms)
}

/// Step (d) over `ranges`, each request after a week's query to Prometheus
/// (`direct`) and a pause when `paused`, else back to back. Each kind of
/// request runs in a run of its own, after [`WARM_UPS`] untimed ones of the
/// same kind when back to back (the first `WARM_UPS` of `ranges`); the
/// answers are checked afterwards, as the warm repeats are.
async fn refreshes(
    client: &HttpClient,
    prometheus_url: &str,
    sluice_url: &str,
    direct: &str,
    ranges: &[(i64, i64)],
    gzip: bool,
    paused: bool,
) -> Refreshes {
    // The week-long queries before this (the other rhythm's checks, the
    // warm repeats) leave Prometheus collecting garbage for a while: the
    // runs start once that has settled, not in the middle of it.
    tokio::time::sleep(Duration::from_millis(500)).await;
    // The pause also lets the previous refresh's asynchronous cache write
    // land.
    let before = || async move {
        if paused {
            between_refreshes(client, direct, gzip).await;
        }
    };
    let warm_ups = if paused { 0 } else { WARM_UPS as usize };
    // One kind of request, one URL per range: the warm-ups untimed, the
    // rest timed.
    let run = |urls: Vec<String>, gzip: bool| async move {
        let (warm, timed) = urls.split_at(warm_ups);
        for url in warm {
            timed_raw(client, url, false, gzip).await;
        }
        let mut took = Vec::new();
        for url in timed {
            before().await;
            took.push(timed_raw(client, url, false, gzip).await);
        }
        took
    };
    let urls = |url_of: &dyn Fn(i64, i64) -> String| -> Vec<String> {
        ranges
            .iter()
            .map(|(start, end)| url_of(*start, *end))
            .collect()
    };
    let moved = run(urls(&|start, end| range_url(sluice_url, start, end)), gzip).await;
    let new_minutes = run(urls(&|_, end| new_minutes_url(prometheus_url, end)), false).await;
    let ready = format!("{sluice_url}/ready");
    let round_trips = run(urls(&|_, _| ready.clone()), false).await;
    let mut moved_times = Vec::new();
    for ((start, end), (took, body)) in ranges[warm_ups..].iter().zip(moved) {
        let (_, want) = timed(
            client,
            &range_url(prometheus_url, *start, *end),
            false,
            gzip,
        )
        .await;
        assert_eq!(
            decoded(&body, gzip),
            want,
            "moved-forward answers match Prometheus"
        );
        moved_times.push(took);
    }
    let times =
        |run: Vec<(Duration, Bytes)>| median(run.into_iter().map(|(took, _)| took).collect());
    Refreshes {
        moved: median(moved_times),
        new_minutes: times(new_minutes),
        round_trip: times(round_trips),
    }
}

/// Steps (a) to (d) with or without gzip; `pass` keeps each pass's
/// moved-forward ranges apart.
async fn measure(
    client: &HttpClient,
    prometheus_url: &str,
    sluice_url: &str,
    start: i64,
    end: i64,
    gzip: bool,
    pass: i64,
) -> Figures {
    let direct = range_url(prometheus_url, start, end);
    let through = range_url(sluice_url, start, end);
    // Warm both sides' connections and Prometheus's page cache first.
    let (_, expected) = timed(client, &direct, false, gzip).await;
    let (_, answer) = timed(client, &through, true, gzip).await;
    assert_eq!(answer, expected, "sluice must answer exactly as Prometheus");

    let rounds = 5;
    let pieces = piece_urls(prometheus_url, start, end);
    let (mut prometheus_times, mut cold_times) = (Vec::new(), Vec::new());
    let mut pieces_times = Vec::new();
    for _ in 0..rounds {
        prometheus_times.push(timed(client, &direct, false, gzip).await.0);
        cold_times.push(timed(client, &through, true, gzip).await.0);
        pieces_times.push(timed_at_once(client, &pieces).await);
    }
    // Populate the cache once, then time repeats.
    let (_, populated) = timed(client, &through, false, gzip).await;
    assert_eq!(populated, expected);
    tokio::time::sleep(Duration::from_millis(200)).await;
    // Back to back, as a dashboard's panels arrive, and checked afterwards:
    // checking in between (decompressing a megabyte) would leave the server
    // idle between requests and time its wake-up, not its answer.
    let repeats = 25;
    let mut warm = Vec::new();
    for _ in 0..repeats {
        warm.push(timed_raw(client, &through, false, gzip).await);
    }
    let transfer = timed_transfer(warm[0].1.clone(), repeats).await;
    let warm_bytes = warm[0].1.len();
    let mut warm_times = Vec::new();
    for (took, body) in warm {
        assert_eq!(decoded(&body, gzip), expected);
        warm_times.push(took);
    }
    let mut by_rhythm = Vec::new();
    let mut shift = pass * SHIFTS_PER_PASS;
    for (label, paused) in RHYTHMS {
        let moves = if paused { MOVES } else { WARM_UPS + MOVES };
        let ranges: Vec<(i64, i64)> = (shift + 1..=shift + moves)
            .map(|shift| moved_range(start, end, shift))
            .collect();
        shift += moves;
        let refreshes = refreshes(
            client,
            prometheus_url,
            sluice_url,
            &direct,
            &ranges,
            gzip,
            paused,
        )
        .await;
        by_rhythm.push((label, refreshes));
    }
    Figures {
        prometheus: median(prometheus_times),
        cold: median(cold_times),
        warm: median(warm_times),
        transfer,
        warm_bytes,
        pieces: median(pieces_times),
        refreshes: by_rhythm,
    }
}

/// How a step fared against its bar, and, when it missed, whether the
/// machine's floor for it (no frontend answers faster) missed too.
fn verdict(met: bool, floor_met: bool) -> &'static str {
    match (met, floor_met) {
        (true, _) => "met",
        (false, true) => "MISSED",
        (false, false) => "missed, out of reach here (its floor misses too)",
    }
}

// One thread is enough for one client sending one request at a time, and
// spares the wake-ups between threads on every chunk of an answer.
#[tokio::main(flavor = "current_thread")]
async fn main() {
    let dataset = Dataset::with_days(8);
    let prometheus = PrometheusServer::start(&dataset).await;
    let mut sluice = start_sluice(&prometheus.url(), &[]).await;
    let client = support::client(8);
    // Room for two passes of 5-minute moves in two rhythms before the
    // data ends.
    let end = dataset.end_ms() - (2 * SHIFTS_PER_PASS + 2) * 5 * MINUTE_MS;
    let start = end - 7 * DAY_MS;
    println!(
        "7-day {QUERY}, step 60s, {} series in an 8-day data set",
        dataset.series().len()
    );
    for (pass, (gzip, label)) in [
        (true, "asking for gzip, as Grafana does"),
        (false, "asking for no compression"),
    ]
    .into_iter()
    .enumerate()
    {
        let cpu_before = CpuTimes::now();
        let figures = measure(
            &client,
            &prometheus.url(),
            &sluice.url,
            start,
            end,
            gzip,
            pass as i64,
        )
        .await;
        // Each step against (a): a share of its time for (b), how many
        // times faster for (c) and (d); its floor the same way.
        let base = figures.prometheus.as_secs_f64();
        let share = |took: Duration| took.as_secs_f64() / base;
        let faster = |took: Duration| base / took.as_secs_f64();
        println!("\n{label}:");
        println!(
            "  (a) Prometheus directly:        {:>9.3} ms",
            millis(figures.prometheus)
        );
        println!(
            "  (b) sluice cold (split):         {:>9.3} ms  = {:.2}x Prometheus's time (bar: at most {COLD_BAR}x)",
            millis(figures.cold),
            share(figures.cold)
        );
        println!(
            "      Prometheus alone, the same day pieces at once: {:.3} ms = {:.2}x (the floor for (b) here)",
            millis(figures.pieces),
            share(figures.pieces)
        );
        println!(
            "  (c) sluice warm (cached):        {:>9.3} ms  = {:.0}x faster than Prometheus (bar: at least {WARM_BAR}x)",
            millis(figures.warm),
            faster(figures.warm)
        );
        println!(
            "      its {} bytes moved over loopback with nothing to compute: {:.3} ms (so (c) can be at most {:.0}x here)",
            figures.warm_bytes,
            millis(figures.transfer),
            faster(figures.transfer)
        );
        let mut verdicts = vec![
            format!(
                "(b) {}",
                verdict(
                    share(figures.cold) <= COLD_BAR,
                    share(figures.pieces) <= COLD_BAR
                )
            ),
            format!(
                "(c) {}",
                verdict(
                    faster(figures.warm) >= WARM_BAR,
                    faster(figures.transfer) >= WARM_BAR
                )
            ),
        ];
        for (rhythm, refreshes) in &figures.refreshes {
            let Refreshes {
                moved,
                new_minutes,
                round_trip,
            } = *refreshes;
            // A moved range's answer is as long as the warm one: its
            // bytes have to move after the new minutes are in, whatever
            // the frontend (which series come first is known only then).
            let floor = new_minutes + round_trip + figures.transfer;
            println!(
                "  (d) sluice moved forward 5 min, {rhythm}: {:.3} ms = {:.0}x faster than Prometheus (bar: at least {MOVED_BAR}x)",
                millis(moved),
                faster(moved)
            );
            println!(
                "      Prometheus alone, the 5 new minutes: {:.3} ms; sluice's /ready: {:.3} ms; the answer's bytes moved: {:.3} ms (so (d) can be at most {:.0}x here)",
                millis(new_minutes),
                millis(round_trip),
                millis(figures.transfer),
                faster(floor)
            );
            verdicts.push(format!(
                "(d) {rhythm}: {}",
                verdict(faster(moved) >= MOVED_BAR, faster(floor) >= MOVED_BAR)
            ));
        }
        println!("  bars in this run: {}", verdicts.join("; "));
        println!("  {}", steal_report(&cpu_before));
    }
    let _ = sluice.process.terminate(Duration::from_secs(10)).await;
}
