//! End-to-end tests of the query-scheduler: three frontends, two schedulers
//! and four queriers in front of a real Prometheus, as separate processes.

mod common;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::Duration;

use common::{SluiceProcess, start_sluice};
use sluice_testkit::{Dataset, PrometheusServer, form_urlencode, http_get};

struct Cluster {
    frontends: Vec<SluiceProcess>,
    schedulers: Vec<SluiceProcess>,
    queriers: Vec<SluiceProcess>,
}

async fn start_cluster(prometheus: &PrometheusServer, frontend_args: &[&str]) -> Cluster {
    let mut schedulers = Vec::new();
    for index in 0..2 {
        schedulers.push(
            start_sluice(
                &format!("scheduler-{index}"),
                &["-target=query-scheduler".to_owned()],
            )
            .await,
        );
    }
    let scheduler_list = schedulers
        .iter()
        .map(SluiceProcess::grpc_address)
        .collect::<Vec<_>>()
        .join(",");
    let mut frontends = Vec::new();
    for index in 0..3 {
        let mut args = vec![
            "-target=query-frontend".to_owned(),
            format!("-query-frontend.scheduler-address={scheduler_list}"),
            "-query-frontend.scheduler-dns-lookup-period=200ms".to_owned(),
        ];
        args.extend(frontend_args.iter().map(|arg| arg.to_string()));
        frontends.push(start_sluice(&format!("frontend-{index}"), &args).await);
    }
    let mut queriers = Vec::new();
    for index in 0..4 {
        queriers.push(
            start_sluice(
                &format!("querier-{index}"),
                &[
                    "-target=querier".to_owned(),
                    format!("-querier.scheduler-address={scheduler_list}"),
                    format!("-querier.downstream-url={}", prometheus.url()),
                    format!("-querier.id=querier-{index}"),
                    "-querier.max-concurrent=4".to_owned(),
                    "-querier.dns-lookup-period=200ms".to_owned(),
                ],
            )
            .await,
        );
    }
    for scheduler in &schedulers {
        scheduler
            .wait_ready_status(200, Duration::from_secs(20))
            .await;
    }
    for frontend in &frontends {
        frontend
            .wait_ready_status(200, Duration::from_secs(20))
            .await;
    }
    Cluster {
        frontends,
        schedulers,
        queriers,
    }
}

fn seconds(ms: i64) -> String {
    (ms / 1000).to_string()
}

/// The requests the load sends, with Prometheus's own answers to compare.
async fn workload(dataset: &Dataset, prometheus: &PrometheusServer) -> Vec<(String, Vec<u8>)> {
    let time = seconds(dataset.start_ms() + 86_400_000);
    let range = [
        ("start", seconds(dataset.start_ms())),
        ("end", seconds(dataset.end_ms())),
        ("step", "600".to_owned()),
    ];
    let mut requests = Vec::new();
    for query in [
        "sum by (job) (rate(http_requests_total[5m]))",
        "node_temperature_celsius",
        "count(ephemeral_worker_up)",
        "edge_case_labels",
    ] {
        requests.push(format!(
            "/api/v1/query?{}",
            form_urlencode(&[("query", query), ("time", &time)])
        ));
        let mut params = vec![("query", query)];
        params.extend(range.iter().map(|(name, value)| (*name, value.as_str())));
        requests.push(format!("/api/v1/query_range?{}", form_urlencode(&params)));
    }
    requests.push(format!(
        "/api/v1/series?{}",
        form_urlencode(&[("match[]", "http_requests_total{job=\"api\"}")])
    ));
    requests.push("/api/v1/labels".to_owned());
    requests.push("/api/v1/label/job/values".to_owned());
    let mut expected = Vec::new();
    for path in requests {
        let (status, _, body) = http_get(&format!("{}{path}", prometheus.url())).await;
        assert_eq!(status, 200, "{path}");
        expected.push((path, body));
    }
    expected
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_scheduler_cluster_answers_like_prometheus_and_loses_nothing() {
    let dataset = Dataset::new();
    let prometheus = PrometheusServer::start(&dataset).await;
    // The results cache off: every request must cross the schedulers.
    let mut cluster = start_cluster(
        &prometheus,
        &[
            "-querier.timeout=15s",
            "-query-frontend.cache-results=false",
        ],
    )
    .await;
    let expected = Arc::new(workload(&dataset, &prometheus).await);

    // Every frontend answers every request exactly as Prometheus does.
    for frontend in &cluster.frontends {
        for (path, body) in expected.iter() {
            let (status, _, answer) = http_get(&format!("{}{path}", frontend.url())).await;
            assert_eq!(status, 200, "{path}: {}", String::from_utf8_lossy(&answer));
            assert_eq!(&answer, body, "{path}");
        }
    }

    // Load from eight clients while a scheduler, a querier and a frontend go
    // away in turn. A client whose frontend refuses the connection moves to
    // another (a load balancer's job); every request a frontend accepted must
    // get a correct answer or a retryable error envelope, none may hang.
    let urls: Arc<Vec<String>> =
        Arc::new(cluster.frontends.iter().map(SluiceProcess::url).collect());
    let dead_frontends: Arc<Vec<AtomicBool>> =
        Arc::new((0..urls.len()).map(|_| AtomicBool::new(false)).collect());
    let stop = Arc::new(AtomicBool::new(false));
    let (answered, retryable) = (Arc::new(AtomicUsize::new(0)), Arc::new(AtomicUsize::new(0)));
    let mut clients = tokio::task::JoinSet::new();
    for client in 0..8usize {
        let (urls, dead, stop, expected) = (
            urls.clone(),
            dead_frontends.clone(),
            stop.clone(),
            expected.clone(),
        );
        let (answered, retryable) = (answered.clone(), retryable.clone());
        clients.spawn(async move {
            let mut round = client;
            while !stop.load(Ordering::Relaxed) {
                round += 1;
                let (path, body) = &expected[round % expected.len()];
                let frontend = (0..urls.len())
                    .map(|offset| (round + offset) % urls.len())
                    .find(|index| !dead[*index].load(Ordering::Relaxed))
                    .expect("a live frontend");
                let url = format!("{}{path}", urls[frontend]);
                match tokio::time::timeout(Duration::from_secs(30), http_get_or_refused(&url)).await
                {
                    Err(_) => panic!("request hung: {url}"),
                    Ok(None) => continue, // refused: never accepted
                    Ok(Some((status, answer))) => {
                        if status == 200 {
                            assert_eq!(&answer, body, "{url}");
                            answered.fetch_add(1, Ordering::Relaxed);
                        } else {
                            let envelope: serde_json::Value = serde_json::from_slice(&answer)
                                .unwrap_or_else(|_| {
                                    panic!(
                                        "{url}: {status} not an envelope: {}",
                                        String::from_utf8_lossy(&answer)
                                    )
                                });
                            assert_eq!(envelope["status"], "error");
                            assert!(status >= 500, "{url}: non-retryable {status}: {envelope}");
                            retryable.fetch_add(1, Ordering::Relaxed);
                        }
                    }
                }
            }
        });
    }
    let progress = |answered: &AtomicUsize| answered.load(Ordering::Relaxed);
    let wait_for_progress = |from: usize| {
        let answered = answered.clone();
        async move {
            let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
            while progress(&answered) < from + 40 {
                assert!(
                    tokio::time::Instant::now() < deadline,
                    "load made no progress"
                );
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        }
    };
    wait_for_progress(0).await;
    cluster.schedulers[0].process.kill();
    wait_for_progress(progress(&answered)).await;
    cluster.queriers[0].process.kill();
    wait_for_progress(progress(&answered)).await;
    dead_frontends[0].store(true, Ordering::Relaxed);
    let exit = cluster.frontends[0]
        .process
        .terminate(Duration::from_secs(20))
        .await;
    assert!(exit.success(), "frontend exit {exit:?}");
    wait_for_progress(progress(&answered)).await;
    stop.store(true, Ordering::Relaxed);
    while let Some(client) = clients.join_next().await {
        client.expect("client saw only correct answers or retryable errors");
    }
    let retryable = retryable.load(Ordering::Relaxed);
    let answered = answered.load(Ordering::Relaxed);
    println!("load: {answered} correct answers, {retryable} retryable errors across the losses");
    assert!(answered >= 160, "{answered} answers");
    // Losses may cost a retryable error now and then, never most requests.
    assert!(
        retryable * 10 <= answered,
        "{retryable} errors for {answered} answers"
    );

    // A restarted scheduler is picked up without restarting anything else.
    let replacement = start_sluice(
        "scheduler-restarted",
        &[
            "-target=query-scheduler".to_owned(),
            format!(
                "-server.grpc-listen-port={}",
                cluster.schedulers[0].grpc_port
            ),
        ],
    )
    .await;
    replacement
        .wait_ready_status(200, Duration::from_secs(20))
        .await;
    cluster.frontends[1]
        .wait_metric("sluice_connected_schedulers", 2.0, Duration::from_secs(20))
        .await;
}

/// Answers of a fresh connection per request; `None` when the connection is
/// refused (the frontend is gone, so the request was never accepted).
async fn http_get_or_refused(url: &str) -> Option<(u16, Vec<u8>)> {
    let without_scheme = url.strip_prefix("http://").expect("http url");
    let (authority, path) = without_scheme
        .split_once('/')
        .map(|(authority, path)| (authority, format!("/{path}")))
        .expect("url with a path");
    let stream = tokio::net::TcpStream::connect(authority).await.ok()?;
    let request = format!("GET {path} HTTP/1.1\r\nHost: {authority}\r\nConnection: close\r\n\r\n");
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut stream = stream;
    stream.write_all(request.as_bytes()).await.ok()?;
    let mut raw = Vec::new();
    stream
        .read_to_end(&mut raw)
        .await
        .unwrap_or_else(|error| panic!("{url}: accepted request lost: {error}"));
    assert!(!raw.is_empty(), "{url}: accepted request got no answer");
    parse_http_response(&raw, url)
}

/// Parses a `Connection: close` HTTP/1.1 response (chunked or not).
fn parse_http_response(raw: &[u8], url: &str) -> Option<(u16, Vec<u8>)> {
    let split = raw
        .windows(4)
        .position(|window| window == b"\r\n\r\n")
        .unwrap_or_else(|| panic!("{url}: malformed response"));
    let head = String::from_utf8_lossy(&raw[..split]).to_lowercase();
    let status: u16 = head
        .split_whitespace()
        .nth(1)
        .and_then(|code| code.parse().ok())
        .unwrap_or_else(|| panic!("{url}: no status in {head}"));
    let mut body = raw[split + 4..].to_vec();
    if head.contains("transfer-encoding: chunked") {
        let mut decoded = Vec::new();
        let mut rest = &body[..];
        loop {
            let line_end = rest.windows(2).position(|window| window == b"\r\n")?;
            let size =
                usize::from_str_radix(std::str::from_utf8(&rest[..line_end]).ok()?.trim(), 16)
                    .ok()?;
            rest = &rest[line_end + 2..];
            if size == 0 {
                break;
            }
            decoded.extend_from_slice(&rest[..size]);
            rest = &rest[size + 2..];
        }
        body = decoded;
    }
    Some((status, body))
}
