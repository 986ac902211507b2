//! The status page at `/`, loaded in a real headless browser (Debian's
//! `chromium`) from every kind of process: a query-frontend, a
//! query-scheduler and a querier in front of a real Prometheus, an
//! all-in-one with the store holding blocks and head series of two
//! tenants, and a frontend with no querier whose queue fills up. The DOM
//! the browser built must show what each process is and does; screenshots
//! are kept under `target/test-artifacts/`.

mod common;

use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use common::{SluiceProcess, start_sluice};
use sluice_remotewrite::proto::{TimeSeries, WriteRequest};
use sluice_remotewrite::{Label, Sample};
use sluice_testkit::{
    Dataset, PrometheusServer, TempDir, form_urlencode, http_get, http_get_with_headers,
    http_request, require_binary,
};

/// Runs headless chromium on `url` with `action` (`--dump-dom`,
/// `--screenshot=...`) in a fresh profile; its standard output.
async fn chromium(url: &str, action: &str) -> String {
    let profile = TempDir::new("sluice-chromium").unwrap();
    let mut command = tokio::process::Command::new(require_binary("chromium"));
    command
        .args([
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-quic",
            "--no-first-run",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            "--hide-scrollbars",
            "--window-size=1280,1200",
        ])
        .arg(format!("--user-data-dir={}", profile.path().display()))
        .arg(action)
        .arg(url)
        .kill_on_drop(true);
    let output = tokio::time::timeout(Duration::from_secs(90), command.output())
        .await
        .expect("chromium finished within 90 s")
        .expect("running chromium");
    let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
    assert!(
        output.status.success(),
        "chromium failed: {}\n{stdout}",
        String::from_utf8_lossy(&output.stderr)
    );
    stdout
}

/// The page as the browser built it.
async fn dom(sluice: &SluiceProcess) -> String {
    let dom = chromium(&format!("{}/", sluice.url()), "--dump-dom").await;
    assert!(dom.contains("<title>sluice status</title>"), "{dom}");
    dom
}

/// A screenshot of the page, kept as a test artifact; its path.
async fn screenshot(sluice: &SluiceProcess, name: &str) -> PathBuf {
    // CARGO_TARGET_TMPDIR is <target>/tmp: the artifacts go beside it.
    let target = Path::new(env!("CARGO_TARGET_TMPDIR")).parent().unwrap();
    let dir = target.join("test-artifacts");
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join(format!("status-page-{name}.png"));
    let _ = std::fs::remove_file(&path);
    let action = format!("--screenshot={}", path.display());
    chromium(&format!("{}/", sluice.url()), &action).await;
    let png = std::fs::read(&path).expect("chromium wrote the screenshot");
    assert!(png.len() > 1000, "{} bytes", png.len());
    assert_eq!(&png[..8], b"\x89PNG\r\n\x1a\n", "a PNG");
    eprintln!("status page screenshot: {}", path.display());
    path
}

/// The number shown after `marker` (an attribute of its cell).
fn shown(dom: &str, marker: &str) -> u64 {
    let rest = dom
        .split(&format!("{marker}>"))
        .nth(1)
        .unwrap_or_else(|| panic!("{marker} not on the page:\n{dom}"));
    let digits: String = rest.chars().take_while(char::is_ascii_digit).collect();
    digits
        .parse()
        .unwrap_or_else(|_| panic!("no number after {marker}:\n{dom}"))
}

fn roles(dom: &str) -> Vec<&str> {
    dom.split("<span class=\"role\">")
        .skip(1)
        .filter_map(|rest| rest.split('<').next())
        .collect()
}

const HOUR_MS: i64 = 3_600_000;
const DAY_MS: i64 = 24 * HOUR_MS;

fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64
}

/// Remote-writes `series` series of one sample at `time_ms` for `tenant`.
async fn push(sluice: &SluiceProcess, tenant: &str, series: usize, time_ms: i64) {
    let timeseries = (0..series)
        .map(|index| TimeSeries {
            labels: vec![
                Label {
                    name: "__name__".into(),
                    value: "status_test".into(),
                },
                Label {
                    name: "index".into(),
                    value: index.to_string(),
                },
            ],
            samples: vec![Sample {
                timestamp: time_ms,
                value: index as f64,
            }],
            ..TimeSeries::default()
        })
        .collect();
    let body = sluice_remotewrite::encode(&WriteRequest {
        timeseries,
        metadata: vec![],
    });
    let headers = [
        ("Content-Type", "application/x-protobuf"),
        ("Content-Encoding", "snappy"),
        ("X-Prometheus-Remote-Write-Version", "0.1.0"),
        ("X-Scope-OrgID", tenant),
    ];
    let url = format!("{}/api/v1/push", sluice.url());
    let (status, _, answer) = http_request("POST", &url, &headers, body).await;
    assert_eq!(status, 204, "{}", String::from_utf8_lossy(&answer));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cluster_in_front_of_prometheus_shows_its_peers_and_cache() {
    let dataset = Dataset::new();
    let prometheus = PrometheusServer::start(&dataset).await;
    let scheduler = start_sluice("status-scheduler", &["-target=query-scheduler".into()]).await;
    let frontend = start_sluice(
        "status-frontend",
        &[
            "-target=query-frontend".into(),
            format!(
                "-query-frontend.scheduler-address={}",
                scheduler.grpc_address()
            ),
        ],
    )
    .await;
    let querier = start_sluice(
        "status-querier",
        &[
            "-target=querier".into(),
            format!("-querier.scheduler-address={}", scheduler.grpc_address()),
            format!("-querier.downstream-url={}", prometheus.url()),
            "-querier.id=status-querier".into(),
        ],
    )
    .await;
    scheduler
        .wait_ready_status(200, Duration::from_secs(20))
        .await;
    frontend
        .wait_ready_status(200, Duration::from_secs(20))
        .await;
    // Two days, then the same less its first hour (not the same query,
    // which the answer memo would serve): day pieces missed, then hit.
    let metric = dataset.metric_names()[0];
    for start_ms in [
        dataset.end_ms() - 2 * DAY_MS,
        dataset.end_ms() - 2 * DAY_MS + HOUR_MS,
    ] {
        let query = form_urlencode(&[
            ("query", &format!("sum(rate({metric}[5m]))")),
            ("start", &(start_ms / 1000).to_string()),
            ("end", &(dataset.end_ms() / 1000).to_string()),
            ("step", "60"),
        ]);
        let url = format!("{}/api/v1/query_range?{query}", frontend.url());
        let (status, _, body) = http_get(&url).await;
        assert_eq!(status, 200, "{}", String::from_utf8_lossy(&body));
    }

    let page = dom(&frontend).await;
    assert_eq!(roles(&page), ["query-frontend"]);
    assert_eq!(shown(&page, "data-what=\"query-schedulers\""), 1);
    assert!(page.contains("data-what=\"client requests\""), "{page}");
    assert!(page.contains("<strong id=\"cache-hit-ratio\">"), "{page}");
    let ratio = page
        .split("<strong id=\"cache-hit-ratio\">")
        .nth(1)
        .and_then(|rest| rest.split('%').next())
        .and_then(|number| number.parse::<f64>().ok())
        .unwrap_or_else(|| panic!("no hit ratio:\n{page}"));
    assert!(
        (1.0..100.0).contains(&ratio),
        "{ratio}% after a miss and a hit"
    );

    let page = dom(&scheduler).await;
    assert_eq!(roles(&page), ["query-scheduler"]);
    assert!(shown(&page, "data-what=\"queriers\"") >= 1, "{page}");
    assert_eq!(shown(&page, "data-what=\"query-frontends\""), 1);

    let page = dom(&querier).await;
    assert_eq!(roles(&page), ["querier"]);
    let owners = "data-what=\"frontends or schedulers this querier pulls from\"";
    assert_eq!(shown(&page, owners), 1);
    assert!(
        page.contains("data-what=\"sub-queries on this querier\""),
        "{page}"
    );
    assert!(!page.contains("id=\"head\""), "no store here:\n{page}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_all_in_one_shows_its_blocks_and_head_series() {
    let args = ["-auth.multitenancy-enabled=true".to_owned()];
    let sluice = start_sluice("status-all", &args).await;
    sluice.wait_ready_status(200, Duration::from_secs(20)).await;
    let now = now_ms();
    push(&sluice, "team-a", 3, now - 5 * 60_000).await;
    push(&sluice, "team-b", 2, now - 5 * 60_000).await;
    sluice.flush().await;
    // Into the head once the others are blocks: more series than before,
    // so the counts do not depend on when the head forgets cut series.
    push(&sluice, "team-a", 4, now).await;
    push(&sluice, "team-b", 3, now).await;

    let page = dom(&sluice).await;
    assert_eq!(
        roles(&page),
        ["query-frontend", "querier", "store", "compactor"]
    );
    assert!(shown(&page, "data-what=\"queriers\"") >= 1, "{page}");
    assert_eq!(shown(&page, "data-what=\"client requests\""), 0);
    let head = page.split("<section id=\"head\">").nth(1).expect("head");
    assert_eq!(shown(head, "data-tenant=\"team-a\""), 4, "{page}");
    assert_eq!(shown(head, "data-tenant=\"team-b\""), 3, "{page}");
    let blocks = page
        .split("<section id=\"blocks\">")
        .nth(1)
        .expect("blocks");
    assert!(shown(blocks, "data-tenant=\"team-a\"") >= 1, "{page}");
    assert!(shown(blocks, "data-tenant=\"team-b\"") >= 1, "{page}");
    screenshot(&sluice, "all-in-one").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_frontend_without_queriers_shows_its_queue_per_tenant() {
    let args = [
        "-target=query-frontend".to_owned(),
        "-auth.multitenancy-enabled=true".to_owned(),
    ];
    let frontend = start_sluice("status-queue", &args).await;
    // Nothing pulls from this frontend: the queries wait in its queue
    // (different ones, or identical ones in flight would run once).
    let mut waiting = Vec::new();
    for (tenant, query) in [("team-a", "up"), ("team-a", "up+1"), ("o'brien", "up")] {
        let query = form_urlencode(&[("query", query)]);
        let url = format!("{}/api/v1/query?{query}", frontend.url());
        waiting.push(tokio::spawn(async move {
            http_get_with_headers(&url, &[("X-Scope-OrgID", tenant)]).await
        }));
    }
    frontend
        .wait_metric("sluice_queue_length", 3.0, Duration::from_secs(20))
        .await;

    let page = dom(&frontend).await;
    let queue = page.split("<section id=\"queue\">").nth(1).expect("queue");
    assert_eq!(shown(queue, "data-tenant=\"team-a\""), 2, "{page}");
    assert_eq!(shown(queue, "data-tenant=\"o'brien\""), 1, "{page}");
    assert_eq!(shown(queue, "data-total=\"queue\""), 3, "{page}");
    assert_eq!(shown(&page, "data-what=\"queriers\""), 0);
    assert_eq!(shown(&page, "data-what=\"client requests\""), 3);
    // The tenant id came from a client: escaped in what was sent.
    let (status, headers, raw) = http_get(&format!("{}/", frontend.url())).await;
    let raw = String::from_utf8(raw).unwrap();
    assert_eq!(status, 200);
    assert_eq!(
        sluice_testkit::header(&headers, "content-type"),
        Some("text/html; charset=utf-8")
    );
    assert!(
        raw.contains("o&#39;brien") && !raw.contains("o'brien"),
        "{raw}"
    );
    screenshot(&frontend, "queue").await;
    for query in waiting {
        query.abort();
        let _ = query.await;
    }
}
