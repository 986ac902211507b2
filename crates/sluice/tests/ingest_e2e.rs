//! The store end to end: a real Prometheus (Debian's 2.42) scrapes itself
//! and sluice every second and remote-writes every sample to sluice; sluice
//! must then answer a query suite as that Prometheus does. Evaluation times
//! sit well away from the scrape timestamps (modulo the 1 s interval), where
//! Prometheus 2.42's closed range selectors and the engine's Prometheus 3
//! left-open ones select the same samples.
//!
//! And a crash: senders push without pause, sluice is killed with SIGKILL
//! in the middle, restarted on the same WAL, the senders retry the one
//! request each had in flight (as remote-write senders do): every
//! acknowledged sample is there, none twice.

mod common;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use common::compare::{answer, assert_agree, seconds};
use common::{SluiceProcess, start_sluice};
use http_body_util::Full;
use hyper::body::Bytes;
use sluice_remotewrite::proto::{TimeSeries, WriteRequest};
use sluice_remotewrite::{Label, Sample};
use sluice_testkit::{ChildProcess, TempDir, free_port, require_binary, wait_for_http_ok};

type Client = hyper_util::client::legacy::Client<
    hyper_util::client::legacy::connect::HttpConnector,
    Full<Bytes>,
>;

fn client() -> Client {
    hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new()).build_http()
}

/// POSTs a remote-write body; a transport error (the server died) is Err.
async fn push(client: &Client, url: &str, body: Vec<u8>) -> Result<u16, String> {
    push_with(client, url, &[], body)
        .await
        .map(|(status, _)| status)
}

/// POSTs a remote-write 1.0 body with extra (or overriding) headers;
/// returns the status and the answer's text.
async fn push_with(
    client: &Client,
    url: &str,
    headers: &[(&str, &str)],
    body: Vec<u8>,
) -> Result<(u16, String), String> {
    let mut request = hyper::Request::post(url);
    let defaults = [
        ("Content-Type", "application/x-protobuf"),
        ("Content-Encoding", "snappy"),
        ("X-Prometheus-Remote-Write-Version", "0.1.0"),
    ];
    for (name, value) in defaults {
        if !headers
            .iter()
            .any(|(given, _)| given.eq_ignore_ascii_case(name))
        {
            request = request.header(name, value);
        }
    }
    for (name, value) in headers {
        request = request.header(*name, *value);
    }
    let request = request
        .body(Full::new(Bytes::from(body)))
        .map_err(|error| error.to_string())?;
    let response = client
        .request(request)
        .await
        .map_err(|error| error.to_string())?;
    let status = response.status().as_u16();
    let body = http_body_util::BodyExt::collect(response.into_body())
        .await
        .map_err(|error| error.to_string())?
        .to_bytes();
    Ok((status, String::from_utf8_lossy(&body).into_owned()))
}

fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64
}

async fn query_value(base: &str, query: &str, at_ms: i64) -> Option<f64> {
    let (status, body) = answer(
        base,
        "/api/v1/query",
        &[("query", query), ("time", &seconds(at_ms))],
    )
    .await;
    assert_eq!(status, 200, "{query}: {body}");
    let json: serde_json::Value = serde_json::from_str(&body).unwrap();
    let result = json["data"]["result"].as_array()?.first()?.clone();
    result["value"][1].as_str()?.parse().ok()
}

fn prometheus_config(own_port: u16, sluice_port: u16) -> String {
    format!(
        "global:\n  scrape_interval: 1s\n  evaluation_interval: 1s\n\
         scrape_configs:\n\
         \x20 - job_name: prometheus\n    static_configs: [{{targets: ['127.0.0.1:{own_port}']}}]\n\
         \x20 - job_name: sluice\n    static_configs: [{{targets: ['127.0.0.1:{sluice_port}']}}]\n\
         remote_write:\n\
         \x20 - url: http://127.0.0.1:{sluice_port}/api/v1/push\n\
         \x20   queue_config: {{min_shards: 1, max_shards: 1, batch_send_deadline: 1s}}\n"
    )
}

async fn start_prometheus(dir: &TempDir, sluice: &SluiceProcess) -> (ChildProcess, String) {
    let port = free_port();
    let config = dir.path().join("prometheus.yml");
    std::fs::write(&config, prometheus_config(port, sluice.http_port)).unwrap();
    let args = [
        format!("--config.file={}", config.display()),
        format!("--storage.tsdb.path={}", dir.path().join("data").display()),
        format!("--web.listen-address=127.0.0.1:{port}"),
    ];
    let process = ChildProcess::start(
        require_binary("prometheus"),
        &args,
        &[],
        dir.path().join("prometheus.log"),
    )
    .unwrap();
    let url = format!("http://127.0.0.1:{port}");
    wait_for_http_ok(&format!("{url}/-/ready"), Duration::from_secs(60))
        .await
        .unwrap();
    (process, url)
}

const QUERIES: &[&str] = &[
    "up",
    "sum by (job) (rate(prometheus_http_requests_total[10s]))",
    "count by (job) ({__name__=~\".+\"})",
    "max_over_time(prometheus_tsdb_head_series[15s])",
    "count_over_time(up[20s])",
    "histogram_quantile(0.9, sum by (le) (rate(prometheus_http_request_duration_seconds_bucket[10s])))",
    "sum(scrape_samples_scraped)",
    "topk(5, scrape_duration_seconds)",
    "deriv(process_resident_memory_bytes[10s])",
];

/// A millisecond phase (time modulo the 1 s scrape interval) at least 200
/// ms from every target's scrape phase.
async fn safe_phase(prometheus: &str, at_ms: i64) -> i64 {
    let (_, body) = answer(
        prometheus,
        "/api/v1/query",
        &[("query", "timestamp(up)"), ("time", &seconds(at_ms))],
    )
    .await;
    let json: serde_json::Value = serde_json::from_str(&body).unwrap();
    let phases: Vec<i64> = json["data"]["result"]
        .as_array()
        .unwrap()
        .iter()
        .map(|series| {
            (series["value"][1].as_str().unwrap().parse::<f64>().unwrap() * 1000.0).round() as i64
                % 1000
        })
        .collect();
    assert_eq!(phases.len(), 2, "both targets scraped: {body}");
    let distance = |a: i64, b: i64| (a - b).rem_euclid(1000).min((b - a).rem_euclid(1000));
    (0..1000)
        .step_by(10)
        .max_by_key(|phase| phases.iter().map(|p| distance(*phase, *p)).min().unwrap())
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn prometheus_remote_write_lands_and_sluice_answers_as_prometheus() {
    let sluice = start_sluice(
        "ingest",
        &["-distributor.ingestion-rate-limit=0".to_owned()],
    )
    .await;
    sluice.wait_ready_status(200, Duration::from_secs(20)).await;
    let dir = TempDir::new("sluice-ingest-prometheus").unwrap();
    let (mut prometheus, prometheus_url) = start_prometheus(&dir, &sluice).await;
    let started = now_ms();
    tokio::time::sleep(Duration::from_secs(40)).await;
    let sent_query = "max(prometheus_remote_storage_queue_highest_sent_timestamp_seconds)";
    let sent_ms = (query_value(&prometheus_url, sent_query, now_ms())
        .await
        .unwrap()
        * 1000.0) as i64;
    assert!(
        sent_ms > started + 20_000,
        "remote write lags: sent up to {sent_ms}, started {started}"
    );
    let phase = safe_phase(&prometheus_url, sent_ms).await;
    let end = (sent_ms - 3_000).div_euclid(1000) * 1000 + phase;
    let compared = compare_suite(&prometheus_url, &sluice.url(), end).await;
    assert_eq!(compared, QUERIES.len() * 3);
    assert_eq!(sluice.metric("sluice_discarded_samples_total").await, 0.0);
    // Cut the head into a block: the metastore knows it at once and the
    // head forgets it, so the same answers now come from the block.
    sluice.flush().await;
    assert_eq!(sluice.metric("sluice_blocks_cut_total").await, 1.0);
    assert_eq!(
        compare_suite(&prometheus_url, &sluice.url(), end).await,
        compared
    );
    let ingested = sluice.metric("sluice_ingested_samples_total").await;
    assert!(ingested > 1000.0, "{ingested} samples ingested");
    prometheus.terminate(Duration::from_secs(10)).await;
}

/// Compares the query suite's answers at `end` and `end - 4 s` (instant)
/// and over the 10 s before `end` (range); returns how many were compared.
async fn compare_suite(prometheus_url: &str, sluice_url: &str, end: i64) -> usize {
    let mut compared = 0;
    for query in QUERIES {
        for at in [end, end - 4_000] {
            let params = [("query", *query), ("time", &seconds(at))];
            let want = answer(prometheus_url, "/api/v1/query", &params).await;
            let got = answer(sluice_url, "/api/v1/query", &params).await;
            assert!(
                want.1.contains("\"result\":[{"),
                "{query}: Prometheus has no answer: {want:?}"
            );
            assert_agree(&got, &want, &format!("instant {query} at {at}"));
            compared += 1;
        }
        let (start, stop) = (seconds(end - 10_000), seconds(end));
        let params = [
            ("query", *query),
            ("start", &start),
            ("end", &stop),
            ("step", "1"),
        ];
        let want = answer(prometheus_url, "/api/v1/query_range", &params).await;
        let got = answer(sluice_url, "/api/v1/query_range", &params).await;
        assert_agree(&got, &want, &format!("range {query} ending {end}"));
        compared += 1;
    }
    compared
}

const SENDERS: usize = 4;
const SERIES_PER_SENDER: usize = 50;

fn crash_batch(sender: usize, step: i64, base_ms: i64) -> Vec<u8> {
    let timeseries = (0..SERIES_PER_SENDER)
        .map(|series| TimeSeries {
            labels: vec![
                Label {
                    name: "__name__".into(),
                    value: "crash_test".into(),
                },
                Label {
                    name: "sender".into(),
                    value: sender.to_string(),
                },
                Label {
                    name: "series".into(),
                    value: series.to_string(),
                },
            ],
            samples: vec![Sample {
                timestamp: base_ms + step * 100,
                value: step as f64,
            }],
            ..TimeSeries::default()
        })
        .collect();
    sluice_remotewrite::encode(&WriteRequest {
        timeseries,
        metadata: vec![],
    })
}

/// Sends batches one after another until a request fails (the server is
/// gone) or `stop`; returns the step of the first batch not acknowledged.
async fn send_until_failure(
    url: String,
    sender: usize,
    base_ms: i64,
    acknowledged: Arc<AtomicU64>,
    stop: Arc<AtomicBool>,
) -> i64 {
    let client = client();
    for step in 0.. {
        if stop.load(Ordering::Relaxed) {
            return step;
        }
        match push(&client, &url, crash_batch(sender, step, base_ms)).await {
            Ok(204) => acknowledged.fetch_add(SERIES_PER_SENDER as u64, Ordering::Relaxed),
            Ok(status) => panic!("sender {sender}: push answered {status}"),
            Err(_) => return step,
        };
    }
    unreachable!()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_acknowledged_sample_is_lost_to_sigkill() {
    let data = TempDir::new("sluice-crash").unwrap();
    let args = vec![
        format!(
            "-blocks-storage.tsdb.dir={}",
            data.path().join("tsdb").display()
        ),
        "-distributor.ingestion-rate-limit=0".to_owned(),
    ];
    let mut sluice = start_sluice("crash", &args).await;
    let base_ms = now_ms() - 20 * 60_000;
    let acknowledged = Arc::new(AtomicU64::new(0));
    let stop = Arc::new(AtomicBool::new(false));
    let url = format!("{}/api/v1/push", sluice.url());
    let senders: Vec<_> = (0..SENDERS)
        .map(|sender| {
            tokio::spawn(send_until_failure(
                url.clone(),
                sender,
                base_ms,
                Arc::clone(&acknowledged),
                Arc::clone(&stop),
            ))
        })
        .collect();
    // Kill once a good number of writes went through, senders still going.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    while acknowledged.load(Ordering::Relaxed) < 200_000 && tokio::time::Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    sluice.process.kill();
    stop.store(true, Ordering::Relaxed);
    let mut unacknowledged = Vec::new();
    for sender in senders {
        unacknowledged.push(sender.await.unwrap());
    }
    let acknowledged_before = acknowledged.load(Ordering::Relaxed);
    assert!(
        acknowledged_before >= 10_000,
        "only {acknowledged_before} acknowledged before the kill"
    );

    let restarted = start_sluice("crash-restarted", &args).await;
    restarted
        .wait_ready_status(200, Duration::from_secs(60))
        .await;
    let end = base_ms + unacknowledged.iter().max().unwrap() * 100;
    // Before any retry: every acknowledged sample survived.
    let survived = query_value(
        &restarted.url(),
        "sum(count_over_time(crash_test[1h]))",
        end,
    )
    .await
    .unwrap();
    assert!(
        survived as u64 >= acknowledged_before,
        "{survived} samples after restart, {acknowledged_before} acknowledged"
    );
    eprintln!(
        "{acknowledged_before} samples acknowledged before SIGKILL, {survived} there after restart"
    );
    // Each sender retries the request it had in flight; what was stored of
    // it is not stored again.
    let client = client();
    let url = format!("{}/api/v1/push", restarted.url());
    for (sender, step) in unacknowledged.iter().enumerate() {
        assert_eq!(
            push(&client, &url, crash_batch(sender, *step, base_ms)).await,
            Ok(204)
        );
    }
    let expected = acknowledged_before + (SENDERS * SERIES_PER_SENDER) as u64;
    let total = query_value(
        &restarted.url(),
        "sum(count_over_time(crash_test[1h]))",
        end,
    )
    .await
    .unwrap();
    assert_eq!(
        total as u64, expected,
        "{} acknowledged before the kill",
        acknowledged_before
    );
    let per_step: u64 = unacknowledged
        .iter()
        .map(|step| (*step as u64 + 1) * SERIES_PER_SENDER as u64)
        .sum();
    assert_eq!(
        per_step, expected,
        "every sender's steps 0..=its last are there"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn push_endpoints_answer_as_prometheus_and_mimir_do() {
    let args = [
        "-auth.multitenancy-enabled=true".to_owned(),
        "-distributor.max-recv-msg-size=100000".to_owned(),
    ];
    let sluice = start_sluice("push-http", &args).await;
    let client = client();
    let now = now_ms();
    let one = |name: &str| {
        let series = TimeSeries {
            labels: vec![Label {
                name: "__name__".into(),
                value: name.into(),
            }],
            samples: vec![Sample {
                timestamp: now,
                value: 1.0,
            }],
            ..TimeSeries::default()
        };
        sluice_remotewrite::encode(&WriteRequest {
            timeseries: vec![series],
            metadata: vec![],
        })
    };
    let push_url = format!("{}/api/v1/push", sluice.url());
    let write_url = format!("{}/api/v1/write", sluice.url());
    let tenant_a = [("X-Scope-OrgID", "a")];
    assert_eq!(
        push_with(&client, &push_url, &tenant_a, one("m_a"))
            .await
            .unwrap()
            .0,
        204
    );
    let tenant_b = [("X-Scope-OrgID", "b")];
    assert_eq!(
        push_with(&client, &write_url, &tenant_b, one("m_b"))
            .await
            .unwrap()
            .0,
        204
    );
    // No tenant: 401, as for queries.
    assert_eq!(
        push_with(&client, &push_url, &[], one("m"))
            .await
            .unwrap()
            .0,
        401
    );
    let json = [("X-Scope-OrgID", "a"), ("Content-Type", "application/json")];
    let (status, text) = push_with(&client, &push_url, &json, one("m"))
        .await
        .unwrap();
    assert_eq!(status, 415, "{text}");
    let huge: Vec<u8> = (0..200_000u32)
        .map(|index| (index * 7919 % 251) as u8)
        .collect();
    let (status, text) = push_with(&client, &push_url, &tenant_a, huge)
        .await
        .unwrap();
    assert_eq!(status, 413, "{text}");
    let (status, text) = push_with(&client, &push_url, &tenant_a, b"garbage".to_vec())
        .await
        .unwrap();
    assert_eq!(status, 400, "{text}");
    let (status, text) = push_with(&client, &push_url, &tenant_a, one("1bad"))
        .await
        .unwrap();
    assert_eq!(status, 400);
    assert!(text.contains("err-mimir-metric-name-invalid"), "{text}");
    // Each tenant sees its own samples, at once.
    let query = |tenant: &'static str, metric: &'static str| {
        let url = format!(
            "{}/api/v1/query?{}",
            sluice.url(),
            sluice_testkit::form_urlencode(&[("query", metric), ("time", &seconds(now))])
        );
        async move {
            let (status, _, body) =
                sluice_testkit::http_get_with_headers(&url, &[("X-Scope-OrgID", tenant)]).await;
            assert_eq!(status, 200);
            String::from_utf8_lossy(&body).contains("\"value\":[")
        }
    };
    assert!(query("a", "m_a").await);
    assert!(!query("b", "m_a").await);
    assert!(query("b", "m_b").await);
    assert_eq!(sluice.metric("sluice_discarded_samples_total").await, 1.0);
}

/// A remote-write body of one sample (at `at_ms`) for each of `jobs`.
fn up_of(jobs: &[&str], at_ms: i64) -> Vec<u8> {
    let timeseries = jobs
        .iter()
        .map(|job| up_series(&[("job", job)], at_ms))
        .collect();
    sluice_remotewrite::encode(&WriteRequest {
        timeseries,
        metadata: vec![],
    })
}

/// `query` of `tenant` at `at_ms`: status and body.
async fn tenant_query(base: &str, tenant: &str, query: &str, at_ms: i64) -> (u16, String) {
    let params = sluice_testkit::form_urlencode(&[("query", query), ("time", &seconds(at_ms))]);
    let (status, _, body) = sluice_testkit::http_get_with_headers(
        &format!("{base}/api/v1/query?{params}"),
        &[("X-Scope-OrgID", tenant)],
    )
    .await;
    (status, String::from_utf8_lossy(&body).into_owned())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn per_tenant_ingest_and_fetch_limits_change_while_sluice_runs() {
    let dir = TempDir::new("sluice-ingest-limits").unwrap();
    let file = dir.path().join("runtime.yaml");
    std::fs::write(&file, "overrides:\n").unwrap();
    let args = [
        "-auth.multitenancy-enabled=true".to_owned(),
        "-ingester.max-global-series-per-user=2".to_owned(),
        format!("-runtime-config.file={}", file.display()),
        "-runtime-config.reload-period=100ms".to_owned(),
    ];
    let sluice = start_sluice("ingest-limits", &args).await;
    let client = client();
    let url = format!("{}/api/v1/push", sluice.url());
    let as_a = [("X-Scope-OrgID", "a")];
    let now = now_ms();
    let (status, text) = push_with(&client, &url, &as_a, up_of(&["x", "y", "z"], now))
        .await
        .unwrap();
    assert_eq!(status, 400, "{text}");
    assert!(
        text.contains("per-user series limit of 2 exceeded (err-mimir-max-series-per-user)"),
        "{text}"
    );
    assert_eq!(
        sluice
            .metric("sluice_discarded_samples_total{reason=\"per_user_series_limit\"}")
            .await,
        1.0
    );
    let (status, body) = tenant_query(&sluice.url(), "a", "count(up)", now).await;
    assert_eq!(status, 200, "{body}");
    assert!(
        body.contains("\"2\""),
        "the two series under the limit: {body}"
    );
    let (status, body) = tenant_query(&sluice.url(), "a|b", "up", now).await;
    assert_eq!(status, 400, "no federation without its flag: {body}");

    std::fs::write(
        &file,
        "overrides:\n  a:\n    max_global_series_per_user: 10\n    max_fetched_series_per_query: 2\n  b:\n    ingestion_rate: 1\n    ingestion_burst_size: 2\n",
    )
    .unwrap();
    let mut accepted = None;
    for _ in 0..50 {
        let answer = push_with(&client, &url, &as_a, up_of(&["z"], now + 1))
            .await
            .unwrap();
        if answer.0 == 204 {
            accepted = Some(answer);
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(accepted.is_some(), "the raised series limit never applied");
    let (status, body) = tenant_query(&sluice.url(), "a", "count(up)", now + 1).await;
    assert_eq!(status, 422, "{body}");
    assert_eq!(
        body,
        format!(
            "{{\"status\":\"error\",\"errorType\":\"execution\",\"error\":\"{}\"}}",
            sluice_blockread::series_message(2)
        )
    );
    let (status, body) = tenant_query(&sluice.url(), "a", "up{job!=\"x\"}", now + 1).await;
    assert_eq!(status, 200, "under the fetch limit: {body}");
    let series = |selector: &str| {
        let path = format!("/api/v1/series?match[]={selector}");
        let url = format!("{}{path}", sluice.url());
        async move {
            let (status, _, body) =
                sluice_testkit::http_get_with_headers(&url, &[("X-Scope-OrgID", "a")]).await;
            (status, String::from_utf8(body).unwrap())
        }
    };
    let (status, body) = series("up").await;
    assert_eq!(status, 422, "series is held to the fetch limit: {body}");
    assert!(body.contains("err-mimir-max-series-per-query"), "{body}");
    let (status, body) = series("up%7Bjob!%3D%22x%22%7D").await;
    assert_eq!(status, 200, "under the fetch limit: {body}");

    let as_b = [("X-Scope-OrgID", "b")];
    let (status, text) = push_with(&client, &url, &as_b, up_of(&["x", "y", "z"], now))
        .await
        .unwrap();
    assert_eq!(status, 429, "b's burst is 2: {text}");
    assert!(
        text.contains("ingestion rate limit, set to 1 items/s with a maximum allowed burst of 2"),
        "{text}"
    );
    let (status, text) = push_with(&client, &url, &as_b, up_of(&["x", "y"], now))
        .await
        .unwrap();
    assert_eq!(status, 204, "{text}");
}

/// One sample (at `at_ms`) of `up` with `labels` besides its name.
fn up_series(labels: &[(&str, &str)], at_ms: i64) -> TimeSeries {
    let mut all = vec![Label {
        name: "__name__".into(),
        value: "up".into(),
    }];
    all.extend(labels.iter().map(|(name, value)| Label {
        name: (*name).into(),
        value: (*value).into(),
    }));
    all.sort_by(|a, b| a.name.cmp(&b.name));
    TimeSeries {
        labels: all,
        samples: vec![Sample {
            timestamp: at_ms,
            value: 1.0,
        }],
        ..TimeSeries::default()
    }
}

/// A remote-write body of one `up` series with `labels` (besides its name).
fn up_with(labels: &[(&str, &str)], at_ms: i64) -> Vec<u8> {
    sluice_remotewrite::encode(&WriteRequest {
        timeseries: vec![up_series(labels, at_ms)],
        metadata: vec![],
    })
}

/// `path` of tenants a and b federated: a 200 answer's JSON.
async fn federated_get(base: &str, path: &str) -> serde_json::Value {
    let (status, _, body) = sluice_testkit::http_get_with_headers(
        &format!("{base}{path}"),
        &[("X-Scope-OrgID", "a|b")],
    )
    .await;
    assert_eq!(status, 200, "{path}");
    serde_json::from_slice(&body).unwrap()
}

/// The label sets of a query answer's `result`, as compact JSON.
fn result_labels(body: &str) -> Vec<String> {
    let json: serde_json::Value = serde_json::from_str(body).unwrap();
    let mut found: Vec<String> = json["data"]["result"]
        .as_array()
        .unwrap_or_else(|| panic!("a result: {body}"))
        .iter()
        .map(|series| series["metric"].to_string())
        .collect();
    found.sort();
    found
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_federated_query_reads_every_tenant_and_labels_each_series() {
    let args = [
        "-auth.multitenancy-enabled=true".to_owned(),
        "-tenant-federation.enabled=true".to_owned(),
    ];
    let sluice = start_sluice("federation", &args).await;
    let client = client();
    let url = format!("{}/api/v1/push", sluice.url());
    let now = now_ms();
    let pushes = [
        ("a", up_with(&[("job", "x")], now)),
        ("b", up_with(&[("job", "x")], now)),
        ("b", up_with(&[("job", "y"), ("__tenant_id__", "old")], now)),
        ("c", up_with(&[("job", "z")], now)),
    ];
    for (tenant, body) in pushes {
        let answer = push_with(&client, &url, &[("X-Scope-OrgID", tenant)], body)
            .await
            .unwrap();
        assert_eq!(answer.0, 204, "{tenant}: {}", answer.1);
    }
    let base = sluice.url();
    let (status, body) = tenant_query(&base, "b|a", "up", now).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(
        result_labels(&body),
        vec![
            r#"{"__name__":"up","__tenant_id__":"a","job":"x"}"#,
            r#"{"__name__":"up","__tenant_id__":"b","job":"x"}"#,
            r#"{"__name__":"up","__tenant_id__":"b","job":"y","original___tenant_id__":"old"}"#,
        ]
    );
    let (_, body) = tenant_query(&base, "a|b", "count by (__tenant_id__) (up)", now).await;
    assert_eq!(
        result_labels(&body),
        vec![r#"{"__tenant_id__":"a"}"#, r#"{"__tenant_id__":"b"}"#]
    );
    let (_, body) = tenant_query(&base, "a|b|c", r#"up{__tenant_id__=~"a|c"}"#, now).await;
    assert_eq!(
        result_labels(&body),
        vec![
            r#"{"__name__":"up","__tenant_id__":"a","job":"x"}"#,
            r#"{"__name__":"up","__tenant_id__":"c","job":"z"}"#,
        ]
    );
    let (_, body) = tenant_query(&base, "a", "up", now).await;
    assert_eq!(
        result_labels(&body),
        vec![r#"{"__name__":"up","job":"x"}"#],
        "one tenant: no label added"
    );
    let values = federated_get(&base, "/api/v1/label/__tenant_id__/values").await;
    assert_eq!(values["data"], serde_json::json!(["a", "b"]));
    let series = federated_get(&base, "/api/v1/series?match[]=up%7Bjob%3D%22x%22%7D").await;
    assert_eq!(
        series["data"],
        serde_json::json!([
            {"__name__": "up", "__tenant_id__": "a", "job": "x"},
            {"__name__": "up", "__tenant_id__": "b", "job": "x"},
        ])
    );
    let chosen = federated_get(
        &base,
        "/api/v1/series?match[]=up%7B__tenant_id__%3D%22b%22%7D",
    )
    .await;
    let tenants: Vec<&str> = chosen["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|series| series["__tenant_id__"].as_str().unwrap())
        .collect();
    assert_eq!(
        tenants,
        vec!["b", "b"],
        "a matcher on __tenant_id__ chooses"
    );
    let (status, body) = tenant_query(&base, "a|b/c", "up", now).await;
    assert_eq!(status, 400, "every tenant is checked: {body}");
    federated_range_answers_share_the_sorted_key(&sluice, &client, now).await;
}

/// Samples two hours old (past the cache's freshness window) for two new
/// tenants: a range query of `d|e` is cached under the sorted set, so
/// `e|d` is answered from it, and `d` alone is not.
async fn federated_range_answers_share_the_sorted_key(
    sluice: &SluiceProcess,
    client: &Client,
    now: i64,
) {
    let url = format!("{}/api/v1/push", sluice.url());
    let old = now - 2 * 3_600_000;
    for tenant in ["d", "e"] {
        let body = up_with(&[("job", tenant)], old);
        let answer = push_with(client, &url, &[("X-Scope-OrgID", tenant)], body)
            .await
            .unwrap();
        assert_eq!(answer.0, 204, "{}", answer.1);
    }
    let range = |tenant: &'static str| async move {
        let params = sluice_testkit::form_urlencode(&[
            ("query", "count by (__tenant_id__) (up)"),
            ("start", &seconds(old - 600_000)),
            ("end", &seconds(old + 60_000)),
            ("step", "60"),
        ]);
        let (status, _, body) = sluice_testkit::http_get_with_headers(
            &format!("{}/api/v1/query_range?{params}", sluice.url()),
            &[("X-Scope-OrgID", tenant)],
        )
        .await;
        assert_eq!(status, 200, "{tenant}");
        String::from_utf8(body).unwrap()
    };
    let reused = || async {
        sluice.metric("sluice_answer_memo_hits_total").await
            + sluice.metric("sluice_results_cache_hit_bytes_total").await
    };
    let first = range("d|e").await;
    assert_eq!(result_labels(&first).len(), 2, "{first}");
    let before = reused().await;
    assert_eq!(range("e|d").await, first);
    assert!(reused().await > before, "e|d was computed again");
    let alone = range("d").await;
    assert_eq!(result_labels(&alone), vec!["{}"], "{alone}");
}
