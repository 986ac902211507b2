//! Security end to end, with real processes: a downstream Prometheus behind
//! TLS and basic auth (its own `--web.config.file`), credentials and
//! forwarded headers reaching a downstream and never the logs or
//! `/metrics`, and roles talking over mutual TLS, where a querier without a
//! certificate from the cluster's CA cannot join.

mod common;

use std::time::Duration;

use common::{BlackHole, BlackHoleEvent, SluiceProcess, start_sluice};
use sluice_testkit::{
    Dataset, PrometheusServer, TestPki, form_urlencode, http_get, http_get_with_headers,
};

const PASSWORD: &str = "pw-7f3a9c-never-logged";
const HEADER_SECRET: &str = "hdr-51d2e8-never-logged";

/// The queries every test compares, as `path?params`.
fn queries(dataset: &Dataset) -> Vec<String> {
    let end = (dataset.end_ms() / 1000).to_string();
    let start = (dataset.end_ms() / 1000 - 6 * 3600).to_string();
    vec![
        format!(
            "/api/v1/query?{}",
            form_urlencode(&[
                ("query", "sum by (job) (http_requests_total)"),
                ("time", &end)
            ])
        ),
        format!(
            "/api/v1/query_range?{}",
            form_urlencode(&[
                ("query", "count(http_requests_total)"),
                ("start", &start),
                ("end", &end),
                ("step", "300")
            ])
        ),
    ]
}

async fn json(url: &str) -> (u16, serde_json::Value) {
    let (status, _, body) = http_get(url).await;
    let value = serde_json::from_slice(&body)
        .unwrap_or_else(|_| panic!("{url}: not JSON: {}", String::from_utf8_lossy(&body)));
    (status, value)
}

/// Every query answers through `sluice` exactly as `reference` answers it.
async fn answers_like(sluice: &SluiceProcess, reference: &PrometheusServer, dataset: &Dataset) {
    for query in queries(dataset) {
        let (status, got) = json(&format!("{}{query}", sluice.url())).await;
        let (_, want) = json(&format!("{}{query}", reference.url())).await;
        assert_eq!(status, 200, "{query}: {got}");
        assert!(
            !want["data"]["result"].as_array().unwrap().is_empty(),
            "{query}: empty"
        );
        assert_eq!(got["data"], want["data"], "{query}");
    }
}

/// Neither the process's log nor its `/metrics` holds any of `secrets`.
async fn never_shows(sluice: &SluiceProcess, secrets: &[&str]) {
    let (_, _, metrics) = http_get(&format!("{}/metrics", sluice.url())).await;
    let metrics = String::from_utf8_lossy(&metrics).into_owned();
    let log = sluice.process.log_contents();
    for secret in secrets {
        assert!(!metrics.contains(secret), "/metrics shows {secret}");
        assert!(!log.contains(secret), "the log shows {secret}:\n{log}");
    }
}

fn downstream_flags(prometheus: &PrometheusServer, extra: &[String]) -> Vec<String> {
    let mut flags = vec![
        format!(
            "-querier.downstream-url=https://localhost:{}",
            prometheus.port()
        ),
        "-querier.downstream-basic-auth-username=sluice".to_owned(),
        format!("-querier.downstream-header=X-Api-Key: {HEADER_SECRET}"),
        "-log.level=debug".to_owned(),
    ];
    flags.extend_from_slice(extra);
    flags
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_prometheus_behind_tls_and_basic_auth_answers_and_the_password_never_shows() {
    let dataset = Dataset::new();
    let pki = TestPki::generate();
    let secured = PrometheusServer::start_secured(&dataset, &pki, "sluice", PASSWORD).await;
    let reference = PrometheusServer::start(&dataset).await;
    let password_file = pki.dir().join("password");
    std::fs::write(&password_file, format!("{PASSWORD}\n")).unwrap();
    let ca = format!("-querier.downstream-tls-ca-path={}", pki.path("ca.pem"));

    let good = start_sluice(
        "tls-downstream",
        &downstream_flags(
            &secured,
            &[
                ca.clone(),
                format!(
                    "-querier.downstream-basic-auth-password-file={}",
                    password_file.display()
                ),
            ],
        ),
    )
    .await;
    answers_like(&good, &reference, &dataset).await;
    // base64("sluice:" + PASSWORD): what goes on the wire.
    let on_the_wire = "c2x1aWNlOnB3LTdmM2E5Yy1uZXZlci1sb2dnZWQ=";
    never_shows(&good, &[PASSWORD, HEADER_SECRET, on_the_wire]).await;

    // The credentials are what opens the door: a wrong password is refused
    // by Prometheus, and the refusal reaches the client as an envelope.
    let wrong = start_sluice(
        "tls-wrong-password",
        &downstream_flags(
            &secured,
            &[
                ca,
                "-querier.downstream-basic-auth-password=not-the-password".to_owned(),
            ],
        ),
    )
    .await;
    let (status, envelope) = json(&format!("{}{}", wrong.url(), queries(&dataset)[0])).await;
    assert_ne!(status, 200, "{envelope}");
    assert_eq!(envelope["status"], "error", "{envelope}");
    never_shows(&wrong, &["not-the-password", HEADER_SECRET]).await;

    // Without the test CA, the system's roots do not vouch for the server.
    let untrusted = start_sluice(
        "tls-untrusted",
        &downstream_flags(
            &secured,
            &[format!(
                "-querier.downstream-basic-auth-password-file={}",
                password_file.display()
            )],
        ),
    )
    .await;
    let (status, envelope) = json(&format!("{}{}", untrusted.url(), queries(&dataset)[0])).await;
    assert_ne!(status, 200, "{envelope}");
    let error = envelope["error"].as_str().unwrap_or_default();
    assert!(error.to_lowercase().contains("certificate"), "{envelope}");
}

/// The head of the next request the downstream receives, lowercased.
async fn next_request(downstream: &mut BlackHole) -> String {
    match downstream.next_event(Duration::from_secs(10)).await {
        BlackHoleEvent::RequestReceived(head) => head.to_lowercase(),
        other => panic!("expected a request, got {other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bearer_token_extra_and_forwarded_headers_reach_the_downstream() {
    let mut downstream = BlackHole::answering_all(
        "200 OK",
        r#"{"status":"success","data":{"resultType":"vector","result":[]}}"#,
    )
    .await;
    let dir = sluice_testkit::TempDir::new("sluice-token").unwrap();
    let token_file = dir.path().join("token");
    std::fs::write(&token_file, "token-one-4b1e").unwrap();
    let sluice = start_sluice(
        "bearer",
        &[
            format!("-querier.downstream-url={}", downstream.url()),
            format!(
                "-querier.downstream-bearer-token-file={}",
                token_file.display()
            ),
            "-querier.downstream-header=X-Extra: extra-value".to_owned(),
            "-query-frontend.forward-header=X-Grafana-User".to_owned(),
            "-log.level=debug".to_owned(),
        ],
    )
    .await;
    let query = |time: &str| {
        format!(
            "{}/api/v1/query?{}",
            sluice.url(),
            form_urlencode(&[("query", "up"), ("time", time)])
        )
    };
    let headers = [
        ("X-Grafana-User", "alice"),
        ("X-Not-Forwarded", "nope"),
        ("X-Scope-OrgID", "ignored-without-multitenancy"),
    ];
    let (status, _, body) = http_get_with_headers(&query("1000"), &headers).await;
    assert_eq!(status, 200, "{}", String::from_utf8_lossy(&body));
    let head = next_request(&mut downstream).await;
    assert!(
        head.contains("authorization: bearer token-one-4b1e"),
        "{head}"
    );
    assert!(head.contains("x-extra: extra-value"), "{head}");
    assert!(head.contains("x-grafana-user: alice"), "{head}");
    assert!(!head.contains("x-not-forwarded"), "{head}");
    assert!(head.contains("x-scope-orgid: anonymous"), "{head}");

    // A rotated token is picked up without a restart.
    tokio::time::sleep(Duration::from_millis(1100)).await;
    std::fs::write(&token_file, "token-two-8c2d").unwrap();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    let mut time = 2000;
    loop {
        let _ = http_get_with_headers(&query(&time.to_string()), &headers).await;
        let head = next_request(&mut downstream).await;
        if head.contains("authorization: bearer token-two-8c2d") {
            break;
        }
        assert!(tokio::time::Instant::now() < deadline, "still {head}");
        tokio::time::sleep(Duration::from_millis(200)).await;
        time += 1;
    }
    never_shows(
        &sluice,
        &["token-one-4b1e", "token-two-8c2d", "extra-value"],
    )
    .await;
}

/// The flags of a server requiring client certificates from the test CA,
/// and of every gRPC client presenting one.
fn mutual_tls(pki: &TestPki, server: bool, clients: &[&str]) -> Vec<String> {
    let mut flags = Vec::new();
    if server {
        flags.extend([
            format!("-server.grpc-tls-cert-path={}", pki.path("server.pem")),
            format!("-server.grpc-tls-key-path={}", pki.path("server.key")),
            format!("-server.grpc-tls-ca-path={}", pki.path("ca.pem")),
            "-server.grpc-tls-client-auth=RequireAndVerifyClientCert".to_owned(),
        ]);
    }
    for client in clients {
        flags.extend([
            format!("-{client}.tls-enabled"),
            format!("-{client}.tls-cert-path={}", pki.path("client.pem")),
            format!("-{client}.tls-key-path={}", pki.path("client.key")),
            format!("-{client}.tls-ca-path={}", pki.path("ca.pem")),
        ]);
    }
    flags
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cluster_over_mutual_tls_answers_like_prometheus() {
    let dataset = Dataset::new();
    let pki = TestPki::generate();
    let prometheus = PrometheusServer::start(&dataset).await;
    let mut scheduler_args = vec!["-target=query-scheduler".to_owned()];
    scheduler_args.extend(mutual_tls(
        &pki,
        true,
        &["query-scheduler.grpc-client-config"],
    ));
    let scheduler = start_sluice("mtls-scheduler", &scheduler_args).await;
    let mut frontend_args = vec![
        "-target=query-frontend".to_owned(),
        format!(
            "-query-frontend.scheduler-address={}",
            scheduler.grpc_address()
        ),
        "-query-frontend.scheduler-dns-lookup-period=200ms".to_owned(),
    ];
    frontend_args.extend(mutual_tls(
        &pki,
        true,
        &["query-frontend.grpc-client-config"],
    ));
    let frontend = start_sluice("mtls-frontend", &frontend_args).await;
    let mut querier_args = vec![
        "-target=querier".to_owned(),
        format!("-querier.scheduler-address={}", scheduler.grpc_address()),
        format!("-querier.downstream-url={}", prometheus.url()),
        "-querier.id=mtls-querier".to_owned(),
    ];
    querier_args.extend(mutual_tls(&pki, false, &["querier.frontend-client"]));
    let _querier = start_sluice("mtls-querier", &querier_args).await;
    scheduler
        .wait_ready_status(200, Duration::from_secs(20))
        .await;
    frontend
        .wait_ready_status(200, Duration::from_secs(20))
        .await;
    answers_like(&frontend, &prometheus, &dataset).await;
    assert_eq!(
        frontend
            .metric("sluice_frontend_refused_results_total")
            .await,
        0.0
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_querier_without_a_valid_client_certificate_cannot_connect() {
    let pki = TestPki::generate();
    let downstream = BlackHole::start().await;
    let mut frontend_args = vec!["-target=query-frontend".to_owned()];
    frontend_args.extend(mutual_tls(&pki, true, &[]));
    let frontend = start_sluice("mtls-required", &frontend_args).await;
    let querier = |name: &str, tls: Vec<String>| {
        let mut args = vec![
            "-target=querier".to_owned(),
            format!("-querier.frontend-address={}", frontend.grpc_address()),
            format!("-querier.downstream-url={}", downstream.url()),
            format!("-querier.id={name}"),
            "-querier.dns-lookup-period=200ms".to_owned(),
        ];
        args.extend(tls);
        (name.to_owned(), args)
    };
    let ca = format!(
        "-querier.frontend-client.tls-ca-path={}",
        pki.path("ca.pem")
    );
    let refused = [
        querier("plaintext", Vec::new()),
        querier(
            "no-certificate",
            vec![
                "-querier.frontend-client.tls-enabled".to_owned(),
                ca.clone(),
            ],
        ),
        querier(
            "rogue-certificate",
            vec![
                "-querier.frontend-client.tls-enabled".to_owned(),
                ca.clone(),
                format!(
                    "-querier.frontend-client.tls-cert-path={}",
                    pki.path("rogue-client.pem")
                ),
                format!(
                    "-querier.frontend-client.tls-key-path={}",
                    pki.path("rogue-client.key")
                ),
            ],
        ),
    ];
    for (name, args) in refused {
        let mut querier = start_sluice(&name, &args).await;
        // Long enough for several connection attempts (they retry fast).
        tokio::time::sleep(Duration::from_secs(2)).await;
        assert_eq!(
            frontend.metric("sluice_connected_queriers").await,
            0.0,
            "{name} joined"
        );
        assert_eq!(frontend.ready_status().await, 503, "{name} joined");
        querier.process.terminate(Duration::from_secs(5)).await;
    }
    let log = frontend.process.log_contents();
    assert!(log.contains("gRPC TLS handshake failed"), "{log}");

    // The same querier with the cluster's certificate joins.
    let (name, args) = querier(
        "valid-certificate",
        mutual_tls(&pki, false, &["querier.frontend-client"]),
    );
    let _querier = start_sluice(&name, &args).await;
    frontend
        .wait_ready_status(200, Duration::from_secs(20))
        .await;
}
