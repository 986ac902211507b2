//! The HTTP server's limits against a real sluice process: long URLs and
//! headers get 414 and 431 envelopes, a client that never finishes its
//! request head is disconnected, and past the connection cap a new
//! connection gets a 503 envelope.

mod common;

use std::time::Duration;

use common::{BlackHole, SluiceProcess, start_sluice};
use sluice_testkit::{http_get, http_get_with_headers};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

async fn start(flags: &[&str]) -> (SluiceProcess, BlackHole) {
    let downstream = BlackHole::answering_all(
        "200 OK",
        r#"{"status":"success","data":{"resultType":"vector","result":[]}}"#,
    )
    .await;
    let mut args = vec![format!("-querier.downstream-url={}", downstream.url())];
    args.extend(flags.iter().map(|flag| flag.to_string()));
    (start_sluice("http-limits", &args).await, downstream)
}

fn envelope(status: u16, body: &[u8], want_status: u16, want_type: &str) {
    assert_eq!(status, want_status, "{}", String::from_utf8_lossy(body));
    let value: serde_json::Value = serde_json::from_slice(body)
        .unwrap_or_else(|_| panic!("not JSON: {}", String::from_utf8_lossy(body)));
    assert_eq!(value["status"], "error", "{value}");
    assert_eq!(value["errorType"], want_type, "{value}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn long_urls_and_headers_get_envelopes() {
    let (sluice, _downstream) = start(&[
        "-server.http-max-url-bytes=1000",
        "-server.http-max-header-bytes=4096",
    ])
    .await;
    let query = |length: usize| {
        format!(
            "{}/api/v1/query?time=1&query=up{}",
            sluice.url(),
            "%2B0".repeat(length / 4)
        )
    };
    let (status, _, body) = http_get(&query(100)).await;
    assert_eq!(status, 200, "{}", String::from_utf8_lossy(&body));
    let (status, _, body) = http_get(&query(2000)).await;
    envelope(status, &body, 414, "bad_data");
    let big = "x".repeat(6000);
    let (status, _, body) = http_get_with_headers(&query(10), &[("X-Big", big.as_str())]).await;
    envelope(status, &body, 431, "bad_data");
    // Far past the limit hyper stops reading: still 431, without a body.
    let huge = "x".repeat(20_000);
    let (status, _, _) = http_get_with_headers(&query(10), &[("X-Huge", huge.as_str())]).await;
    assert_eq!(status, 431);
    let (status, _, _) = http_get(&format!("{}/metrics", sluice.url())).await;
    assert_eq!(status, 200, "the server is still up");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_that_never_finishes_its_headers_is_disconnected() {
    let (sluice, _downstream) = start(&["-server.http-read-header-timeout=500ms"]).await;
    let mut slow = TcpStream::connect(("127.0.0.1", sluice.http_port))
        .await
        .unwrap();
    slow.write_all(b"GET /api/v1/query?query=up HTTP/1.1\r\nHost: x\r\n")
        .await
        .unwrap();
    let started = std::time::Instant::now();
    let mut buffer = [0u8; 1024];
    let read = tokio::time::timeout(Duration::from_secs(5), slow.read(&mut buffer))
        .await
        .expect("disconnected within the timeout");
    // Closed (0 bytes), reset, or a last word before closing: never a hang.
    if let Ok(read) = read
        && read > 0
    {
        let more = tokio::time::timeout(Duration::from_secs(5), slow.read(&mut buffer)).await;
        assert!(matches!(more, Ok(Ok(0)) | Ok(Err(_))), "still open");
    }
    assert!(
        started.elapsed() < Duration::from_secs(3),
        "{:?}",
        started.elapsed()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn past_the_connection_cap_a_new_connection_gets_a_503_envelope() {
    let (sluice, _downstream) = start(&["-server.http-conn-limit=2"]).await;
    let url = format!("{}/api/v1/query?query=up&time=1", sluice.url());
    // Two idle connections hold both slots (the read-header timeout, 10 s,
    // has not passed).
    let first = TcpStream::connect(("127.0.0.1", sluice.http_port))
        .await
        .unwrap();
    let second = TcpStream::connect(("127.0.0.1", sluice.http_port))
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(200)).await;
    let (status, _, body) = http_get(&url).await;
    envelope(status, &body, 503, "unavailable");
    drop(first);
    drop(second);
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    loop {
        let (status, _, body) = http_get(&url).await;
        if status == 200 {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "{status}: {}",
            String::from_utf8_lossy(&body)
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}
