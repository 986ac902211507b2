//! Per-tenant limits from a runtime configuration file, changed while
//! sluice runs in front of a real Prometheus: a new limit applies within a
//! reload period, a broken file changes nothing, `/runtime_config` shows
//! what is in force.

mod common;

use std::time::Duration;

use common::start_sluice;
use sluice_testkit::{
    Dataset, PrometheusServer, TempDir, form_urlencode, http_get, http_get_with_headers,
};

const PERIOD: Duration = Duration::from_millis(100);

/// A 3-hour range query of `tenant`: its status and body.
async fn query(url: &str, tenant: &str, query: &str, end_ms: i64) -> (u16, String) {
    let end = end_ms / 1000;
    let params = form_urlencode(&[
        ("query", query),
        ("start", &(end - 3 * 3600).to_string()),
        ("end", &end.to_string()),
        ("step", "60"),
    ]);
    let (status, _, body) = http_get_with_headers(
        &format!("{url}/api/v1/query_range?{params}"),
        &[("X-Scope-OrgID", tenant)],
    )
    .await;
    (status, String::from_utf8_lossy(&body).into_owned())
}

/// Polls until `tenant`'s query gets `status`, for at most 20 periods.
async fn wait_status(url: &str, tenant: &str, text: &str, end_ms: i64, status: u16) -> String {
    let mut last = (0, String::new());
    for _ in 0..20 {
        last = query(url, tenant, text, end_ms).await;
        if last.0 == status {
            return last.1;
        }
        tokio::time::sleep(PERIOD).await;
    }
    panic!("{tenant}: expected {status} within 20 reload periods, last {last:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn overrides_change_while_sluice_runs_and_a_broken_file_changes_nothing() {
    let dataset = Dataset::new();
    let prometheus = PrometheusServer::start(&dataset).await;
    let dir = TempDir::new("sluice-overrides").unwrap();
    let file = dir.path().join("runtime.yaml");
    std::fs::write(&file, "overrides:\n").unwrap();
    let sluice = start_sluice(
        "overrides",
        &[
            format!("-querier.downstream-url={}", prometheus.url()),
            "-auth.multitenancy-enabled=true".to_owned(),
            format!("-runtime-config.file={}", file.display()),
            format!("-runtime-config.reload-period={}ms", PERIOD.as_millis()),
        ],
    )
    .await;
    let url = sluice.url();
    let end = dataset.end_ms();
    let up = "sum(up)";
    assert_eq!(query(&url, "a", up, end).await.0, 200);

    std::fs::write(
        &file,
        "overrides:\n  a:\n    max_query_length: 1h\n  b:\n    blocked_queries:\n      - pattern: 'sum\\(up.*'\n        regex: true\n",
    )
    .unwrap();
    let refused = wait_status(&url, "a", up, end, 400).await;
    assert!(
        refused.contains("the query time range exceeds the limit (query length: 3h, limit: 1h)"),
        "{refused}"
    );
    let blocked = wait_status(&url, "b", up, end, 400).await;
    assert!(
        blocked.contains("the request has been blocked by the cluster administrator"),
        "{blocked}"
    );
    assert_eq!(
        query(&url, "b", "count(up)", end).await.0,
        200,
        "only the pattern is blocked"
    );
    assert_eq!(
        query(&url, "c", up, end).await.0,
        200,
        "other tenants keep the defaults"
    );
    assert_eq!(
        sluice
            .metric("sluice_query_frontend_rejected_queries_total")
            .await,
        1.0
    );

    let (_, _, shown) = http_get(&format!("{url}/runtime_config?mode=diff")).await;
    let shown = String::from_utf8(shown).unwrap();
    assert!(shown.contains("a:\n    max_query_length: 1h\n"), "{shown}");
    assert!(
        !shown.contains("max_query_parallelism"),
        "a diff shows only changes: {shown}"
    );

    std::fs::write(&file, "overrides:\n  a:\n    max_query_length: [\n").unwrap();
    sluice
        .wait_metric(
            "sluice_runtime_config_last_reload_successful",
            0.0,
            Duration::from_secs(5),
        )
        .await;
    assert_eq!(
        query(&url, "a", up, end).await.0,
        400,
        "the limit in force stays"
    );
    assert_eq!(
        query(&url, "b", up, end).await.0,
        400,
        "the block in force stays"
    );

    std::fs::write(&file, "overrides:\n").unwrap();
    wait_status(&url, "a", up, end, 200).await;
    sluice
        .wait_metric(
            "sluice_runtime_config_last_reload_successful",
            1.0,
            Duration::from_secs(5),
        )
        .await;
}

#[tokio::test]
async fn a_broken_runtime_file_stops_start_up_with_its_reason() {
    let dir = TempDir::new("sluice-overrides-broken").unwrap();
    let file = dir.path().join("runtime.yaml");
    std::fs::write(&file, "overrides:\n  a:\n    max_query_lenght: 1h\n").unwrap();
    let output = std::process::Command::new(env!("CARGO_BIN_EXE_sluice"))
        .arg("-querier.downstream-url=http://127.0.0.1:1")
        .arg(format!("-runtime-config.file={}", file.display()))
        .arg("-server.http-listen-port=0")
        .arg("-server.grpc-listen-port=0")
        .output()
        .unwrap();
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("max_query_lenght"), "{stderr}");
}
