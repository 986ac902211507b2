//! The rest of the Prometheus API through sluice: every read-only path a
//! querier passes on answers byte for byte as the real Prometheus behind it
//! (Debian's 2.42, with a rule, a target and an Alertmanager so the answers
//! are not empty), the tenant header travels with it, admin paths never
//! do, and without a downstream sluice answers as a Prometheus with no
//! rules, targets or Alertmanagers.

mod common;

use std::time::Duration;

use common::{BlackHole, start_sluice};
use sluice_testkit::{
    HttpResponse, PrometheusServer, TempDir, form_urlencode, header, http_get,
    http_get_with_headers, http_post_form_with_headers, http_request,
};

const TENANT: (&str, &str) = ("X-Scope-OrgID", "team-a");
const NOT_FOUND: &str = r#"{"status":"error","errorType":"not_found","error":"page not found"}"#;

/// The passed-through requests: each path, with parameters where it takes any.
fn passed_through() -> Vec<(&'static str, Vec<(&'static str, &'static str)>)> {
    vec![
        (
            "/api/v1/format_query",
            vec![("query", "sum(rate(up[5m]))by(job)")],
        ),
        ("/api/v1/format_query", vec![("query", "sum(")]),
        // Not in 2.42: its own plain-text 404 comes back unchanged.
        ("/api/v1/parse_query", vec![("query", "up")]),
        ("/api/v1/rules", vec![]),
        ("/api/v1/rules", vec![("type", "alert")]),
        ("/api/v1/alerts", vec![]),
        ("/api/v1/targets", vec![]),
        ("/api/v1/targets", vec![("state", "dropped")]),
        (
            "/api/v1/targets/metadata",
            vec![("match_target", "{job=\"self\"}")],
        ),
        ("/api/v1/alertmanagers", vec![]),
        ("/api/v1/status/config", vec![]),
        ("/api/v1/status/flags", vec![]),
        ("/api/v1/status/runtimeinfo", vec![]),
        ("/api/v1/status/tsdb", vec![]),
        ("/api/v1/status/walreplay", vec![]),
        ("/api/v1/status/buildinfo", vec![]),
        ("/api/v1/metadata", vec![("limit", "5")]),
        (
            "/api/v1/query_exemplars",
            vec![("query", "up"), ("start", "0"), ("end", "1")],
        ),
    ]
}

/// A Prometheus with one rule group, itself as a target and an Alertmanager
/// that is not there. Scrapes and evaluations are hourly, so two calls a
/// moment apart see the same state.
async fn busy_prometheus(dir: &TempDir) -> PrometheusServer {
    let rules = dir.path().join("rules.yml");
    std::fs::write(
        &rules,
        "groups:\n- name: sluice-test\n  rules:\n  - alert: AlwaysFiring\n    expr: vector(1)\n  - record: job:up:sum\n    expr: sum by (job) (up)\n",
    )
    .expect("writing the rule file");
    let rules = rules.display().to_string();
    PrometheusServer::start_configured(
        None,
        move |port| {
            format!(
                "global:\n  scrape_interval: 1h\n  evaluation_interval: 1h\nrule_files: ['{rules}']\nalerting:\n  alertmanagers:\n  - static_configs:\n    - targets: ['127.0.0.1:9']\nscrape_configs:\n- job_name: self\n  static_configs:\n  - targets: ['127.0.0.1:{port}']\n"
            )
        },
        &["--web.enable-admin-api"],
    )
    .await
}

/// `runtimeinfo`'s goroutine count changes from one call to the next; every
/// other byte must match.
fn without_goroutines(body: &[u8]) -> Vec<u8> {
    let text = String::from_utf8_lossy(body);
    let Some(start) = text.find("\"goroutineCount\":") else {
        return body.to_vec();
    };
    let end = start + text[start..].find(',').unwrap_or(text.len() - start);
    format!("{}{}", &text[..start], &text[end..]).into_bytes()
}

fn comparable(response: &HttpResponse, path: &str) -> (u16, Option<String>, Vec<u8>) {
    let (status, headers, body) = response;
    let content_type = header(headers, "content-type").map(str::to_owned);
    let body = if path.ends_with("/runtimeinfo") {
        without_goroutines(body)
    } else {
        body.clone()
    };
    (*status, content_type, body)
}

/// Prometheus's answer to GET, then sluice's to GET and to a POST form, as
/// tenant `team-a`. A scrape or evaluation between the calls would change
/// a timestamp, so a mismatch is asked again before it fails.
async fn assert_identical(upstream: &str, sluice: &str, path: &str, params: &[(&str, &str)]) {
    let query = form_urlencode(params);
    let mut last = None;
    for _ in 0..3 {
        let want = http_get(&format!("{upstream}{path}?{query}")).await;
        let got_get = http_get_with_headers(&format!("{sluice}{path}?{query}"), &[TENANT]).await;
        let got_post =
            http_post_form_with_headers(&format!("{sluice}{path}"), params, &[TENANT]).await;
        let want = comparable(&want, path);
        let got = (comparable(&got_get, path), comparable(&got_post, path));
        if got.0 == want && got.1 == want {
            return;
        }
        last = Some((want, got));
    }
    let (want, (get, post)) = last.expect("three attempts");
    let show = |answer: &(u16, Option<String>, Vec<u8>)| {
        format!(
            "{} {:?} {}",
            answer.0,
            answer.1,
            String::from_utf8_lossy(&answer.2)
        )
    };
    panic!(
        "{path} {params:?}:\n prometheus: {}\n sluice GET: {}\n sluice POST: {}",
        show(&want),
        show(&get),
        show(&post)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn passed_through_paths_answer_as_prometheus_does() {
    let dir = TempDir::new("sluice-passthrough").expect("temp dir");
    let prometheus = busy_prometheus(&dir).await;
    let downstream = format!("-querier.downstream-url={}", prometheus.url());
    let sluice = start_sluice(
        "passthrough",
        &[downstream, "-auth.multitenancy-enabled=true".to_owned()],
    )
    .await;
    sluice.wait_ready_status(200, Duration::from_secs(30)).await;
    let (upstream, frontend) = (prometheus.url(), sluice.url());
    // The answers compared are not the empty ones sluice gives by itself.
    let (_, _, rules) = http_get(&format!("{upstream}/api/v1/rules")).await;
    assert!(String::from_utf8_lossy(&rules).contains("AlwaysFiring"));
    for (path, params) in passed_through() {
        assert_identical(&upstream, &frontend, path, &params).await;
    }
    // Mimir's prefix reaches the same place.
    let (status, _, body) =
        http_get_with_headers(&format!("{frontend}/prometheus/api/v1/targets"), &[TENANT]).await;
    let (_, _, want) = http_get(&format!("{upstream}/api/v1/targets")).await;
    assert_eq!((status, body), (200, want));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn admin_paths_are_never_passed_through() {
    let dir = TempDir::new("sluice-passthrough-admin").expect("temp dir");
    let prometheus = busy_prometheus(&dir).await;
    let downstream = format!("-querier.downstream-url={}", prometheus.url());
    let sluice = start_sluice("passthrough-admin", &[downstream]).await;
    sluice.wait_ready_status(200, Duration::from_secs(30)).await;
    for path in [
        "/api/v1/admin/tsdb/snapshot",
        "/api/v1/admin/tsdb/delete_series?match[]=up",
        "/api/v1/admin/tsdb/clean_tombstones",
        "/prometheus/api/v1/admin/tsdb/snapshot",
    ] {
        let (status, _, body) =
            http_request("POST", &format!("{}{path}", sluice.url()), &[], Vec::new()).await;
        assert_eq!(
            (status, String::from_utf8_lossy(&body).into_owned()),
            (404, NOT_FOUND.to_owned()),
            "{path}"
        );
    }
    // The admin API is on downstream, so a request passed on would have
    // left a snapshot behind.
    assert!(!prometheus.data_dir().join("snapshots").exists());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_tenant_header_reaches_the_downstream() {
    let mut downstream =
        BlackHole::answering_all("200 OK", r#"{"status":"success","data":{}}"#).await;
    let sluice = start_sluice(
        "passthrough-tenant",
        &[
            format!("-querier.downstream-url={}", downstream.url()),
            "-auth.multitenancy-enabled=true".to_owned(),
        ],
    )
    .await;
    for (path, params) in passed_through() {
        let url = format!("{}{path}?{}", sluice.url(), form_urlencode(&params));
        let (status, _, _) = http_get_with_headers(&url, &[TENANT]).await;
        assert_eq!(status, 200, "{path}");
        let head = downstream.expect_request().await.to_ascii_lowercase();
        assert!(head.starts_with(&format!("get {path}")), "{path}: {head}");
        assert!(head.contains("x-scope-orgid: team-a\r\n"), "{path}: {head}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_a_downstream_sluice_answers_as_an_idle_prometheus() {
    // A Prometheus configured with no rules, targets or Alertmanagers.
    let idle =
        PrometheusServer::start_configured(None, |_| "scrape_configs: []\n".to_owned(), &[]).await;
    let sluice = start_sluice("passthrough-embedded", &["-querier.id=embedded".to_owned()]).await;
    sluice.wait_ready_status(200, Duration::from_secs(30)).await;
    for path in [
        "/api/v1/rules",
        "/api/v1/alerts",
        "/api/v1/targets",
        "/api/v1/targets/metadata",
        "/api/v1/alertmanagers",
    ] {
        let want = http_get(&format!("{}{path}", idle.url())).await;
        let got = http_get(&format!("{}{path}", sluice.url())).await;
        assert_eq!(comparable(&got, path), comparable(&want, path), "{path}");
    }
    let (status, _, body) = http_get(&format!("{}/api/v1/status/flags", sluice.url())).await;
    let flags: serde_json::Value = serde_json::from_slice(&body).expect("flags are JSON");
    assert_eq!(status, 200);
    assert_eq!(flags["data"]["querier.id"], "embedded");
    assert_eq!(flags["data"]["self-scrape.enabled"], "false");
    let (status, _, body) = http_get(&format!("{}/api/v1/status/runtimeinfo", sluice.url())).await;
    let info: serde_json::Value = serde_json::from_slice(&body).expect("runtimeinfo is JSON");
    assert_eq!(status, 200);
    let started = info["data"]["startTime"].as_str().expect("a start time");
    // This year at least, in Go's RFC 3339 form.
    assert!(
        started.starts_with("20") && started.ends_with('Z'),
        "{info}"
    );
    assert!(
        info["data"]["GOMAXPROCS"]
            .as_u64()
            .is_some_and(|workers| workers >= 1)
    );
    for path in [
        "/api/v1/status/config",
        "/api/v1/status/tsdb",
        "/api/v1/status/walreplay",
        "/api/v1/format_query?query=up",
    ] {
        let (status, _, body) = http_get(&format!("{}{path}", sluice.url())).await;
        let refused: serde_json::Value = serde_json::from_slice(&body).expect("an envelope");
        assert_eq!(
            (status, &refused["errorType"]),
            (404, &"not_found".into()),
            "{path}"
        );
        let reason = refused["error"].as_str().unwrap_or_default();
        assert!(
            reason.contains("-querier.downstream-url"),
            "{path}: {reason}"
        );
    }
}
