//! End-to-end tests: real sluice processes in front of a real Prometheus
//! (Debian's `prometheus`, installed by `scripts/install-test-deps.sh`)
//! holding a deterministic multi-day data set.

mod common;

use std::time::Duration;

use common::{BlackHole, BlackHoleEvent, DelayProxy, start_frontend, start_querier};
use sluice_testkit::{
    Dataset, PrometheusServer, form_urlencode, http_get, http_get_with_headers,
    http_post_form_with_headers, http_request,
};

const DAY_MS: i64 = 86_400_000;
/// The 429 a tenant over its queue length gets, as Mimir words it.
const TOO_MANY_OUTSTANDING: &str =
    r#"{"status":"error","errorType":"too_many_requests","error":"too many outstanding requests"}"#;

fn seconds(ms: i64) -> String {
    if ms % 1000 == 0 {
        (ms / 1000).to_string()
    } else {
        format!("{}.{:03}", ms / 1000, ms % 1000)
    }
}

/// A range query over `days` days from a non-midnight start, long settled:
/// `days + 1` day pieces.
fn range_path_over_days(days: i64) -> String {
    let start = 10 * DAY_MS + 3_600_000;
    format!(
        "/api/v1/query_range?{}",
        form_urlencode(&[
            ("query", "up"),
            ("start", &seconds(start)),
            ("end", &seconds(start + days * DAY_MS)),
            ("step", "60"),
        ])
    )
}

/// Fails with the first place two answers differ, not two whole bodies.
fn assert_same_answer(got: &(u16, Vec<u8>), want: &(u16, Vec<u8>), what: &str) {
    if got == want {
        return;
    }
    let position = got
        .1
        .iter()
        .zip(&want.1)
        .position(|(left, right)| left != right)
        .unwrap_or(got.1.len().min(want.1.len()));
    let window = |body: &[u8]| {
        let from = position.saturating_sub(80);
        let to = (position + 80).min(body.len());
        String::from_utf8_lossy(&body[from..to]).into_owned()
    };
    panic!(
        "{what}: sluice answered {} ({} bytes), Prometheus {} ({} bytes); first difference at byte {position}:\n sluice:     {}\n prometheus: {}",
        got.0,
        got.1.len(),
        want.0,
        want.1.len(),
        window(&got.1),
        window(&want.1)
    );
}

/// Prometheus's answer and sluice's for the same request must be the same bytes.
async fn assert_identical(prometheus: &str, sluice: &str, path: &str, params: &[(&str, &str)]) {
    let query = form_urlencode(params);
    let (status, _, body) = http_get(&format!("{prometheus}{path}?{query}")).await;
    let want = (status, body);
    let (status, _, body) = http_get(&format!("{sluice}{path}?{query}")).await;
    assert_same_answer(&(status, body), &want, &format!("GET {path} {params:?}"));
    // Prometheus serves label values on GET only; everything else must give
    // the same answer as a POST form.
    if !path.starts_with("/api/v1/label/") {
        let (status, _, body) =
            http_post_form_with_headers(&format!("{sluice}{path}"), params, &[]).await;
        assert_same_answer(&(status, body), &want, &format!("POST {path} {params:?}"));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn answers_are_byte_identical_to_prometheus() {
    let dataset = Dataset::new();
    let prometheus = PrometheusServer::start(&dataset).await;
    let frontend = start_frontend(&[]).await;
    let _querier_a = start_querier("querier-a", &frontend, &prometheus.url(), &[]).await;
    let _querier_b = start_querier("querier-b", &frontend, &prometheus.url(), &[]).await;
    frontend
        .wait_ready_status(200, Duration::from_secs(10))
        .await;
    let (upstream, sluice) = (prometheus.url(), frontend.url());

    let start = dataset.start_ms();
    let end = dataset.end_ms();
    let mid = start + DAY_MS + 30_000;
    let instant_times = [
        seconds(mid),
        seconds(mid + 123),
        seconds(start),
        seconds(end),
        seconds(dataset.vanishing_series_end_ms() + 10 * 60_000),
        "2026-01-03T12:34:56.789Z".to_owned(),
    ];
    let instant_queries = [
        "http_requests_total",
        "http_requests_total{job=\"api\",code=~\"5..\"}",
        "sum by (job) (rate(http_requests_total[5m]))",
        "sum(rate(http_requests_total[5m]))",
        "node_temperature_celsius",
        "node_temperature_celsius * 1e15",
        "node_temperature_celsius / 3",
        "edge_case_labels",
        "histogram_quantile(0.9, sum by (le) (rate(request_duration_seconds_bucket[5m])))",
        "ephemeral_worker_up",
        "count(ephemeral_worker_up)",
        "topk(3, http_requests_total)",
        "1 / 0",
        "-1 / 0",
        "0 / 0",
        "scalar(sum(node_temperature_celsius))",
        "time()",
        "\"a string\"",
        "absent(nothing_here)",
        "nothing_here",
        "rate(http_requests_total[5m]) > 100",
        "label_replace(up, \"x\", \"y\", \"\", \"\")",
    ];
    for time in &instant_times {
        for query in instant_queries {
            assert_identical(
                &upstream,
                &sluice,
                "/api/v1/query",
                &[("query", query), ("time", time)],
            )
            .await;
        }
    }

    let day = seconds(start + DAY_MS);
    let ranges: Vec<(String, String, &str)> = vec![
        (seconds(start), seconds(end), "3600"),
        (day.clone(), seconds(start + DAY_MS + 3_600_000), "15"),
        (day.clone(), seconds(start + 2 * DAY_MS), "5m"),
        (seconds(start + 500), seconds(start + 7_200_500), "60.5"),
        (seconds(end - 3_600_000), seconds(end + 3_600_000), "1m"),
        (
            seconds(dataset.vanishing_series_end_ms() - 1_800_000),
            seconds(dataset.vanishing_series_end_ms() + 1_800_000),
            "30",
        ),
        (
            "2026-01-03T00:00:00Z".to_owned(),
            "2026-01-03T06:00:00.250Z".to_owned(),
            "1h",
        ),
    ];
    let range_queries = [
        "rate(http_requests_total{job=\"api\"}[5m])",
        "sum by (job) (rate(http_requests_total[5m]))",
        "node_temperature_celsius",
        "ephemeral_worker_up",
        "edge_case_labels",
        "vector(1)",
        "time()",
        "nothing_here",
        "histogram_quantile(0.5, sum by (le, job) (rate(request_duration_seconds_bucket[10m])))",
    ];
    for (range_start, range_end, step) in &ranges {
        for query in range_queries {
            assert_identical(
                &upstream,
                &sluice,
                "/api/v1/query_range",
                &[
                    ("query", query),
                    ("start", range_start),
                    ("end", range_end),
                    ("step", step),
                ],
            )
            .await;
        }
    }

    let (first, last) = (seconds(start), seconds(end));
    let metadata: Vec<(&str, Vec<(&str, &str)>)> = vec![
        (
            "/api/v1/series",
            vec![("match[]", "http_requests_total{job=\"api\"}")],
        ),
        (
            "/api/v1/series",
            vec![
                ("match[]", "edge_case_labels"),
                ("match[]", "ephemeral_worker_up"),
                ("start", &first),
                ("end", &last),
            ],
        ),
        ("/api/v1/series", vec![("match[]", "nothing_here")]),
        ("/api/v1/labels", vec![]),
        (
            "/api/v1/labels",
            vec![("match[]", "node_temperature_celsius")],
        ),
        ("/api/v1/label/job/values", vec![]),
        ("/api/v1/label/__name__/values", vec![]),
        ("/api/v1/label/value/values", vec![]),
        (
            "/api/v1/label/instance/values",
            vec![("match[]", "http_requests_total{job=\"api\"}")],
        ),
        ("/api/v1/label/nothing/values", vec![]),
        ("/api/v1/status/buildinfo", vec![]),
        ("/api/v1/metadata", vec![]),
        (
            "/api/v1/query_exemplars",
            vec![
                ("query", "http_requests_total"),
                ("start", &first),
                ("end", &last),
            ],
        ),
    ];
    for (path, params) in &metadata {
        assert_identical(&upstream, &sluice, path, params).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_querier_killed_mid_query_is_retried_on_another() {
    let dataset = Dataset::new();
    let prometheus = PrometheusServer::start(&dataset).await;
    let mut hole = BlackHole::start().await;
    let frontend = start_frontend(&[]).await;
    // The first querier's downstream never answers, so it is certainly
    // running the query when it dies.
    let mut doomed = start_querier("doomed", &frontend, &hole.url(), &[]).await;
    let query = [
        ("query", "sum by (job) (rate(http_requests_total[5m]))"),
        ("time", &seconds(dataset.start_ms() + DAY_MS)),
    ];
    let url = format!("{}/api/v1/query?{}", frontend.url(), form_urlencode(&query));
    let client = tokio::spawn(async move { http_get(&url).await });
    hole.expect_request().await;
    let _survivor = start_querier("survivor", &frontend, &prometheus.url(), &[]).await;
    frontend
        .wait_metric("sluice_connected_queriers", 2.0, Duration::from_secs(10))
        .await;
    doomed.process.kill();

    let (status, _, body) = tokio::time::timeout(Duration::from_secs(30), client)
        .await
        .expect("the client gets an answer")
        .expect("client task");
    let expected = http_get(&format!(
        "{}/api/v1/query?{}",
        prometheus.url(),
        form_urlencode(&query)
    ))
    .await;
    assert_eq!(status, 200, "{}", String::from_utf8_lossy(&body));
    assert_eq!(body, expected.2);
    assert!(frontend.metric("sluice_retries_total").await >= 1.0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_flooding_tenant_gets_429s_while_a_quiet_one_is_served() {
    let dataset = Dataset::new();
    let prometheus = PrometheusServer::start(&dataset).await;
    // Every downstream call takes at least 100 ms, so the flood outruns the
    // queriers whatever the machine's speed.
    let slow = DelayProxy::start(prometheus.port(), Duration::from_millis(100)).await;
    let frontend = start_frontend(&["-auth.multitenancy-enabled=true"]).await;
    let _querier_a = start_querier(
        "querier-a",
        &frontend,
        &slow.url(),
        &["-querier.max-concurrent=2"],
    )
    .await;
    let _querier_b = start_querier(
        "querier-b",
        &frontend,
        &slow.url(),
        &["-querier.max-concurrent=2"],
    )
    .await;
    frontend
        .wait_ready_status(200, Duration::from_secs(10))
        .await;

    let time = seconds(dataset.start_ms() + DAY_MS);
    let query_url = |query: &str| {
        format!(
            "{}/api/v1/query?{}",
            frontend.url(),
            form_urlencode(&[("query", query), ("time", &time)])
        )
    };
    let mut flood = tokio::task::JoinSet::new();
    for index in 0..300 {
        // Distinct queries, so nothing could ever share work between them.
        let url = query_url(&format!("sum(http_requests_total) + {index}"));
        flood
            .spawn(async move { http_get_with_headers(&url, &[("X-Scope-OrgID", "flood")]).await });
    }
    // Let the flood fill its queue before the quiet tenant asks: once the
    // queue is full, most of the 300 are refused at once. (The queue holds
    // exactly 100 only until a querier takes one, too briefly to poll for.)
    frontend
        .wait_metric_at_least(
            "sluice_discarded_requests_total",
            150.0,
            Duration::from_secs(30),
        )
        .await;
    let quiet_query = "count(node_temperature_celsius)";
    let mut quiet = tokio::task::JoinSet::new();
    for _ in 0..10 {
        let url = query_url(quiet_query);
        quiet
            .spawn(async move { http_get_with_headers(&url, &[("X-Scope-OrgID", "quiet")]).await });
    }
    let expected = http_get(&format!(
        "{}/api/v1/query?{}",
        prometheus.url(),
        form_urlencode(&[("query", quiet_query), ("time", &time)])
    ))
    .await;
    while let Some(answer) = quiet.join_next().await {
        let (status, _, body) = answer.expect("quiet client");
        assert_eq!(status, 200, "{}", String::from_utf8_lossy(&body));
        assert_eq!(body, expected.2);
    }
    let (mut served, mut rejected) = (0, 0);
    while let Some(answer) = flood.join_next().await {
        let (status, _, body) = answer.expect("flood client");
        match status {
            200 => served += 1,
            429 => {
                rejected += 1;
                assert_eq!(String::from_utf8_lossy(&body), TOO_MANY_OUTSTANDING);
            }
            other => panic!(
                "unexpected status {other}: {}",
                String::from_utf8_lossy(&body)
            ),
        }
    }
    assert!(
        rejected >= 100,
        "flood got {rejected} rejections, {served} answers"
    );
    assert!(
        served >= 100,
        "flood got {served} answers, {rejected} rejections"
    );
    assert!(frontend.metric("sluice_discarded_requests_total").await >= rejected as f64);
}

/// A request that must fail, the status it must get, and its `errorType`.
struct BadInput {
    method: &'static str,
    path: &'static str,
    params: Vec<(&'static str, String)>,
    headers: Vec<(&'static str, &'static str)>,
    status: u16,
    error_type: &'static str,
    /// Prometheus itself answers the same way (same status and envelope).
    compare_with_prometheus: bool,
}

fn bad(
    path: &'static str,
    params: &[(&'static str, &str)],
    status: u16,
    error_type: &'static str,
) -> BadInput {
    BadInput {
        method: "GET",
        path,
        params: params
            .iter()
            .map(|(name, value)| (*name, value.to_string()))
            .collect(),
        headers: vec![],
        status,
        error_type,
        compare_with_prometheus: true,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_input_gets_prometheus_errors() {
    let dataset = Dataset::new();
    let prometheus = PrometheusServer::start(&dataset).await;
    let frontend = start_frontend(&[]).await;
    let _querier = start_querier("querier", &frontend, &prometheus.url(), &[]).await;
    let tenanted = start_frontend(&[
        "-auth.multitenancy-enabled=true",
        "-query-frontend.max-total-query-length=1d",
        // The data set lies months in the past: all of it is beyond this.
        "-querier.max-query-lookback=1h",
    ])
    .await;
    let _tenanted_querier = start_querier("querier-t", &tenanted, &prometheus.url(), &[]).await;

    let q = "up";
    let cases = vec![
        bad("/api/v1/query", &[], 400, "bad_data"),
        bad("/api/v1/query", &[("query", "sum(")], 400, "bad_data"),
        bad("/api/v1/query", &[("query", "foo{")], 400, "bad_data"),
        bad(
            "/api/v1/query",
            &[("query", q), ("time", "yesterday")],
            400,
            "bad_data",
        ),
        bad(
            "/api/v1/query",
            &[("query", q), ("timeout", "soon")],
            400,
            "bad_data",
        ),
        bad("/api/v1/query_range", &[("query", q)], 400, "bad_data"),
        bad(
            "/api/v1/query_range",
            &[("query", q), ("start", "10"), ("end", "1"), ("step", "1")],
            400,
            "bad_data",
        ),
        bad(
            "/api/v1/query_range",
            &[("query", q), ("start", "1"), ("end", "10"), ("step", "0")],
            400,
            "bad_data",
        ),
        bad(
            "/api/v1/query_range",
            &[("query", q), ("start", "1"), ("end", "10"), ("step", "-5")],
            400,
            "bad_data",
        ),
        bad(
            "/api/v1/query_range",
            &[
                ("query", q),
                ("start", "1"),
                ("end", "10"),
                ("step", "fast"),
            ],
            400,
            "bad_data",
        ),
        bad(
            "/api/v1/query_range",
            &[
                ("query", q),
                ("start", "0"),
                ("end", "11001"),
                ("step", "1"),
            ],
            400,
            "bad_data",
        ),
        bad(
            "/api/v1/query_range",
            &[
                ("query", q),
                ("start", "soon"),
                ("end", "10"),
                ("step", "1"),
            ],
            400,
            "bad_data",
        ),
        bad(
            "/api/v1/query_range",
            &[
                ("query", q),
                ("start", "2026-13-01T00:00:00Z"),
                ("end", "10"),
                ("step", "1"),
            ],
            400,
            "bad_data",
        ),
        bad(
            "/api/v1/query_range",
            &[
                ("query", "rate(x[5m]"),
                ("start", "1"),
                ("end", "10"),
                ("step", "1"),
            ],
            400,
            "bad_data",
        ),
        bad("/api/v1/series", &[], 400, "bad_data"),
        bad("/api/v1/series", &[("match[]", "{")], 400, "bad_data"),
        bad(
            "/api/v1/series",
            &[("match[]", "up"), ("start", "x")],
            400,
            "bad_data",
        ),
        bad("/api/v1/labels", &[("end", "x")], 400, "bad_data"),
        bad(
            "/api/v1/label/job/values",
            &[("match[]", "{")],
            400,
            "bad_data",
        ),
        bad("/api/v1/label/0bad/values", &[], 400, "bad_data"),
        // Prometheus answers this one in plain text; sluice keeps its promise
        // of a JSON envelope for every error.
        BadInput {
            compare_with_prometheus: false,
            ..bad("/api/v1/not_an_endpoint", &[], 404, "not_found")
        },
    ];
    for case in cases {
        let query = form_urlencode(
            &case
                .params
                .iter()
                .map(|(name, value)| (*name, value.as_str()))
                .collect::<Vec<_>>(),
        );
        let (status, headers, body) = http_request(
            case.method,
            &format!("{}{}?{query}", frontend.url(), case.path),
            &case.headers,
            Vec::new(),
        )
        .await;
        let body_text = String::from_utf8_lossy(&body).into_owned();
        let envelope: serde_json::Value = serde_json::from_slice(&body)
            .unwrap_or_else(|_| panic!("{} {:?}: not JSON: {body_text}", case.path, case.params));
        assert_eq!(
            status, case.status,
            "{} {:?}: {body_text}",
            case.path, case.params
        );
        assert_eq!(envelope["status"], "error", "{body_text}");
        assert_eq!(envelope["errorType"], case.error_type, "{body_text}");
        assert!(
            envelope["error"]
                .as_str()
                .is_some_and(|text| !text.is_empty())
        );
        assert_eq!(
            sluice_testkit::header(&headers, "content-type"),
            Some("application/json")
        );
        if case.compare_with_prometheus {
            let (upstream_status, _, upstream_body) = http_request(
                case.method,
                &format!("{}{}?{query}", prometheus.url(), case.path),
                &case.headers,
                Vec::new(),
            )
            .await;
            assert_eq!(upstream_status, status, "{} {:?}", case.path, case.params);
            let upstream: serde_json::Value = serde_json::from_slice(&upstream_body).unwrap();
            assert_eq!(upstream["errorType"], envelope["errorType"]);
            // PromQL parse errors are worded by a different parser; every
            // other message must match Prometheus's word for word.
            let is_parse_error = upstream["error"]
                .as_str()
                .is_some_and(|text| text.contains("parse error"));
            if !is_parse_error {
                // Prometheus 3.5 lowercased this message; sluice follows
                // current Prometheus, while the Debian package is older.
                let upstream_message = upstream["error"]
                    .as_str()
                    .unwrap_or_default()
                    .replace("Invalid time value", "invalid time value");
                assert_eq!(
                    upstream_message,
                    envelope["error"].as_str().unwrap_or_default(),
                    "{} {:?}",
                    case.path,
                    case.params
                );
            }
        }
    }

    // Limits of sluice's own, which Prometheus does not have.
    let oversized = "x".repeat(11 * 1024 * 1024);
    let (status, _, body) = http_request(
        "POST",
        &format!("{}/api/v1/query", frontend.url()),
        &[("Content-Type", "application/x-www-form-urlencoded")],
        format!("query={oversized}").into_bytes(),
    )
    .await;
    assert_eq!(status, 413);
    assert!(
        String::from_utf8_lossy(&body).starts_with(r#"{"status":"error","errorType":"bad_data""#)
    );

    let long_range = [
        ("query", "up"),
        ("start", "0"),
        ("end", "172800"),
        ("step", "3600"),
    ];
    let (status, _, body) = http_get_with_headers(
        &format!(
            "{}/api/v1/query_range?{}",
            tenanted.url(),
            form_urlencode(&long_range)
        ),
        &[("X-Scope-OrgID", "team-a")],
    )
    .await;
    assert_eq!(status, 400);
    assert_eq!(
        String::from_utf8_lossy(&body),
        r#"{"status":"error","errorType":"bad_data","error":"the query time range exceeds the limit (query length: 2d, limit: 1d)"}"#
    );

    // A range entirely older than the lookback limit is answered empty,
    // without reaching the queriers.
    let old_range = [
        ("query", "http_requests_total"),
        ("start", &dataset.start_ms().div_euclid(1000).to_string()),
        ("end", &(dataset.start_ms() / 1000 + 3600).to_string()),
        ("step", "60"),
    ];
    let (status, _, body) = http_get_with_headers(
        &format!(
            "{}/api/v1/query_range?{}",
            tenanted.url(),
            form_urlencode(&old_range)
        ),
        &[("X-Scope-OrgID", "team-a")],
    )
    .await;
    assert_eq!(status, 200);
    assert_eq!(
        String::from_utf8_lossy(&body),
        r#"{"status":"success","data":{"resultType":"matrix","result":[]}}"#
    );
    assert_eq!(tenanted.metric("sluice_subqueries_total").await, 0.0);

    let (status, _, body) = http_get(&format!("{}/api/v1/query?query=up", tenanted.url())).await;
    assert_eq!(status, 401);
    assert_eq!(
        String::from_utf8_lossy(&body),
        r#"{"status":"error","errorType":"unauthorized","error":"no org id"}"#
    );
    let (status, _, body) = http_get_with_headers(
        &format!("{}/api/v1/query?query=up", tenanted.url()),
        &[("X-Scope-OrgID", "../etc")],
    )
    .await;
    assert_eq!(status, 400, "{}", String::from_utf8_lossy(&body));
    let (status, _, _) = http_get_with_headers(
        &format!("{}/api/v1/query?query=up&time=1", tenanted.url()),
        &[("X-Scope-OrgID", "team-a")],
    )
    .await;
    assert_eq!(status, 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ready_follows_querier_connections() {
    let dataset = Dataset::new();
    let prometheus = PrometheusServer::start(&dataset).await;
    let frontend = start_frontend(&[]).await;
    assert_eq!(frontend.ready_status().await, 503);
    let mut querier = start_querier("first", &frontend, &prometheus.url(), &[]).await;
    frontend
        .wait_ready_status(200, Duration::from_secs(10))
        .await;
    querier.process.kill();
    frontend
        .wait_ready_status(503, Duration::from_secs(10))
        .await;
    let mut second = start_querier("second", &frontend, &prometheus.url(), &[]).await;
    frontend
        .wait_ready_status(200, Duration::from_secs(10))
        .await;
    // A querier that stops gracefully is gone for /ready as well.
    let status = second.process.terminate(Duration::from_secs(10)).await;
    assert!(status.success(), "querier exit status {status:?}");
    frontend
        .wait_ready_status(503, Duration::from_secs(10))
        .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cancelling_a_client_request_cancels_the_downstream_request() {
    let mut hole = BlackHole::start().await;
    let frontend = start_frontend(&[]).await;
    let querier = start_querier("querier", &frontend, &hole.url(), &[]).await;
    let url = format!("{}/api/v1/query?query=up&time=1", frontend.url());
    let client = tokio::spawn(async move { http_get(&url).await });
    let head = hole.expect_request().await;
    assert!(head.starts_with("POST /api/v1/query"), "{head}");
    // The client gives up: its connection closes, and with it the
    // downstream request.
    client.abort();
    hole.expect_closed().await;
    // The worker is free again.
    querier.wait_querier_idle().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_request_past_its_timeout_gets_503_and_leaves() {
    let hole = BlackHole::start().await;
    let frontend = start_frontend(&["-querier.timeout=1s"]).await;
    let _querier = start_querier("querier", &frontend, &hole.url(), &[]).await;
    let (status, _, body) =
        http_get(&format!("{}/api/v1/query?query=up&time=1", frontend.url())).await;
    assert_eq!(status, 503);
    assert_eq!(
        String::from_utf8_lossy(&body),
        r#"{"status":"error","errorType":"timeout","error":"query timed out after 1s"}"#
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sub_queries_held_back_by_the_reserved_slot_still_time_out_with_503() {
    let mut hole = BlackHole::start().await;
    let frontend = start_frontend(&["-querier.timeout=1s"]).await;
    // Two slots, one reserved for other tenants: while the first query
    // holds a slot, the same tenant's next ones wait in the queue.
    let querier = start_querier(
        "querier",
        &frontend,
        &hole.url(),
        &["-querier.max-concurrent=2"],
    )
    .await;
    let send = |time: u32| {
        let url = format!("{}/api/v1/query?query=up&time={time}", frontend.url());
        tokio::spawn(async move {
            let sent = tokio::time::Instant::now();
            let (status, _, body) = http_get(&url).await;
            (
                status,
                String::from_utf8_lossy(&body).into_owned(),
                sent.elapsed(),
            )
        })
    };
    let first = send(1);
    hole.expect_request().await;
    let held_back = [send(2), send(3)];
    frontend
        .wait_metric("sluice_queue_length", 2.0, Duration::from_secs(5))
        .await;
    const TIMED_OUT: &str =
        r#"{"status":"error","errorType":"timeout","error":"query timed out after 1s"}"#;
    for client in std::iter::once(first).chain(held_back) {
        let (status, body, took) = client.await.expect("client");
        assert_eq!((status, body.as_str()), (503, TIMED_OUT));
        assert!(took < Duration::from_secs(3), "answered after {took:?}");
    }
    frontend
        .wait_metric("sluice_queue_length", 0.0, Duration::from_secs(5))
        .await;
    querier.wait_querier_idle().await;
}

/// While a sub-query runs, the querier probes its downstream with a
/// trivial query (the adaptive limit's signal); answers stay Prometheus's.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn busy_queriers_probe_the_downstream() {
    let dataset = Dataset::new();
    let prometheus = PrometheusServer::start(&dataset).await;
    let slow = DelayProxy::start(prometheus.port(), Duration::from_millis(300)).await;
    let sluice = common::start_sluice(
        "probing",
        &[
            format!("-querier.downstream-url={}", slow.url()),
            "-querier.backend-probe-interval=20ms".to_owned(),
        ],
    )
    .await;
    let probes = "sluice_querier_backend_probe_duration_seconds_count";
    assert_eq!(
        sluice.metric(probes).await,
        0.0,
        "idle queriers never probe"
    );
    let time = seconds(dataset.start_ms() + DAY_MS);
    let params = [
        ("query", "sum(http_requests_total)"),
        ("time", time.as_str()),
    ];
    assert_identical(&prometheus.url(), &sluice.url(), "/api/v1/query", &params).await;
    sluice
        .wait_metric_at_least(probes, 1.0, Duration::from_secs(10))
        .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_finishes_what_is_running() {
    let dataset = Dataset::new();
    let prometheus = PrometheusServer::start(&dataset).await;
    let mut slow = DelayProxy::start(prometheus.port(), Duration::from_millis(1500)).await;
    let mut frontend = start_frontend(&[]).await;
    let mut querier = start_querier("querier", &frontend, &slow.url(), &[]).await;
    let query = [
        ("query", "count(http_requests_total)"),
        ("time", "1767398400"),
    ];
    let url = format!("{}/api/v1/query?{}", frontend.url(), form_urlencode(&query));
    let first_url = url.clone();
    let client = tokio::spawn(async move { http_get(&first_url).await });
    tokio::time::timeout(Duration::from_secs(10), slow.connections.recv())
        .await
        .expect("the querier reached downstream")
        .expect("proxy alive");

    // The querier is told to stop while it runs the query: it finishes it.
    let querier_exit = tokio::spawn(async move {
        let status = querier.process.terminate(Duration::from_secs(20)).await;
        (status, querier)
    });
    let (status, _, body) = client.await.expect("client");
    assert_eq!(status, 200, "{}", String::from_utf8_lossy(&body));
    let expected = http_get(&format!(
        "{}/api/v1/query?{}",
        prometheus.url(),
        form_urlencode(&query)
    ))
    .await;
    assert_eq!(body, expected.2);
    let (exit, _querier) = querier_exit.await.expect("querier exit");
    assert!(exit.success(), "querier exit status {exit:?}");

    // The frontend, told to stop, exits cleanly and stops listening.
    let exit = frontend.process.terminate(Duration::from_secs(20)).await;
    assert!(exit.success(), "frontend exit status {exit:?}");
    assert!(
        tokio::net::TcpStream::connect(("127.0.0.1", frontend.http_port))
            .await
            .is_err()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cancelling_in_one_process_cancels_the_downstream_request() {
    // `-target=all` hands tasks to its own querier inline, without streams:
    // a client hanging up must still reach the downstream.
    let mut hole = BlackHole::start().await;
    let sluice = common::start_sluice(
        "all",
        &[
            "-target=all".to_owned(),
            format!("-querier.downstream-url={}", hole.url()),
        ],
    )
    .await;
    sluice.wait_ready_status(200, Duration::from_secs(10)).await;
    let url = format!("{}/api/v1/query?query=up&time=1", sluice.url());
    let client = tokio::spawn(async move { http_get(&url).await });
    hole.expect_request().await;
    client.abort();
    hole.expect_closed().await;
    sluice.wait_querier_idle().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failing_piece_fails_the_query_at_once_and_cancels_the_other_pieces() {
    // The first sub-query to arrive fails as Prometheus fails a query,
    // once all three have arrived; the others would never be answered.
    const FAILED: &str = r#"{"status":"error","errorType":"execution","error":"boom"}"#;
    let mut hole = BlackHole::answering_first("422 Unprocessable Entity", FAILED, 3).await;
    let frontend = start_frontend(&[]).await;
    let querier = start_querier("querier", &frontend, &hole.url(), &[]).await;
    // Three day pieces, sent at once.
    let url = format!("{}{}", frontend.url(), range_path_over_days(2));
    let client = tokio::spawn(async move { http_get(&url).await });
    for _ in 0..3 {
        hole.expect_request().await;
    }
    // The client has its answer without waiting for the held pieces (the
    // query timeout is two minutes).
    let (status, _, body) = tokio::time::timeout(Duration::from_secs(10), client)
        .await
        .expect("answered without waiting for the other pieces")
        .expect("client task");
    assert_eq!(status, 422);
    assert_eq!(String::from_utf8_lossy(&body), FAILED);
    // The two held pieces are abandoned downstream.
    for _ in 0..2 {
        hole.expect_closed().await;
    }
    querier.wait_querier_idle().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn at_most_max_query_parallelism_pieces_of_a_query_run_at_once() {
    let mut hole = BlackHole::start().await;
    let frontend = start_frontend(&["-querier.max-query-parallelism=2"]).await;
    // The querier could run all five pieces at once (it runs 20).
    let querier = start_querier("querier", &frontend, &hole.url(), &[]).await;
    let url = format!("{}{}", frontend.url(), range_path_over_days(4));
    let client = tokio::spawn(async move { http_get(&url).await });
    for _ in 0..2 {
        hole.expect_request().await;
    }
    // The other three wait in the frontend for one of these two to end,
    // not in the queue. (Without the limit, the failing-piece test above
    // shows every piece sent at once.)
    assert_eq!(hole.event_within(Duration::from_millis(1500)).await, None);
    assert_eq!(frontend.metric("sluice_queue_length").await, 0.0);
    client.abort();
    for _ in 0..2 {
        hole.expect_closed().await;
    }
    // The waiting pieces were never started.
    assert_eq!(hole.event_within(Duration::from_millis(500)).await, None);
    querier.wait_querier_idle().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_queue_fails_a_split_range_query_with_429_and_drops_its_pieces() {
    let mut hole = BlackHole::start().await;
    // Five pieces sent at once, one can run and two can wait: at least
    // two find the tenant's queue full.
    let frontend = start_frontend(&["-query-frontend.max-outstanding-requests-per-tenant=2"]).await;
    let querier = start_querier(
        "querier",
        &frontend,
        &hole.url(),
        &["-querier.max-concurrent=1"],
    )
    .await;
    let url = format!("{}{}", frontend.url(), range_path_over_days(4));
    let (status, _, body) = tokio::time::timeout(Duration::from_secs(10), http_get(&url))
        .await
        .expect("answered at once, without waiting for the held piece");
    assert_eq!(status, 429);
    assert_eq!(String::from_utf8_lossy(&body), TOO_MANY_OUTSTANDING);
    assert!(frontend.metric("sluice_discarded_requests_total").await >= 1.0);
    // The query's other pieces leave the queue, and a piece the querier
    // had taken is abandoned downstream.
    frontend
        .wait_metric("sluice_queue_length", 0.0, Duration::from_secs(10))
        .await;
    if let Some(event) = hole.event_within(Duration::from_millis(500)).await {
        assert!(
            matches!(event, BlackHoleEvent::RequestReceived(_)),
            "{event:?}"
        );
        hole.expect_closed().await;
    }
    querier.wait_querier_idle().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_follower_outliving_its_leader_runs_the_query_itself() {
    let mut hole = BlackHole::start().await;
    let frontend = start_frontend(&["-querier.timeout=2s"]).await;
    let querier = start_querier("querier", &frontend, &hole.url(), &[]).await;
    let url = format!("{}/api/v1/query?query=up&time=1", frontend.url());
    let leader = tokio::spawn({
        let url = url.clone();
        async move { http_get(&url).await }
    });
    hole.expect_request().await;
    // The same query, a second later: it waits for the leader's answer,
    // and has a second of its own left when the leader times out. Sent at
    // once, it had only milliseconds left then, and on a busy machine its
    // own request could run out of them before reaching the downstream
    // (CI failed once so).
    tokio::time::sleep(Duration::from_secs(1)).await;
    let follower = tokio::spawn(async move { http_get(&url).await });
    const TIMED_OUT: &str =
        r#"{"status":"error","errorType":"timeout","error":"query timed out after 2s"}"#;
    let (status, _, body) = leader.await.expect("leader");
    assert_eq!(
        (status, String::from_utf8_lossy(&body).as_ref()),
        (503, TIMED_OUT)
    );
    // The leader's request is abandoned and the follower sends its own,
    // in either order, instead of taking a timeout it has not reached.
    let mut events = [
        hole.next_event(Duration::from_secs(10)).await,
        hole.next_event(Duration::from_secs(10)).await,
    ];
    events.sort_by_key(|event| matches!(event, BlackHoleEvent::RequestReceived(_)));
    assert_eq!(events[0], BlackHoleEvent::Closed);
    assert!(matches!(events[1], BlackHoleEvent::RequestReceived(_)));
    let (status, _, body) = follower.await.expect("follower");
    assert_eq!(
        (status, String::from_utf8_lossy(&body).as_ref()),
        (503, TIMED_OUT)
    );
    hole.expect_closed().await;
    querier.wait_querier_idle().await;
}
