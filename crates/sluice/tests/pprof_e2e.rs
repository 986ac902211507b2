//! `/debug/pprof/profile` end to end: a sluice with profiling on is kept
//! busy evaluating queries while it profiles itself, and the profile it
//! serves is read by Go's own `go tool pprof` (Debian's `golang-go`), which
//! must find CPU samples in sluice's functions. Without the flag the path
//! does not exist.

mod common;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use common::{SluiceProcess, start_sluice};
use sluice_testkit::{
    TempDir, form_urlencode, header, http_get, http_get_with_headers, require_binary,
};

/// A query the embedded engine spends real CPU on, with no data needed: a
/// subquery of 3,600 points at each of 61 steps. Asked with `no-store`, so
/// neither the results cache nor the answer memo spares the engine.
async fn busy_query(sluice: &SluiceProcess) -> u16 {
    let query = form_urlencode(&[
        ("query", "count_over_time(vector(1)[1h:1s])"),
        ("start", "1700000000"),
        ("end", "1700003600"),
        ("step", "60"),
    ]);
    let url = format!("{}/api/v1/query_range?{query}", sluice.url());
    let (status, _, body) = http_get_with_headers(&url, &[("Cache-Control", "no-store")]).await;
    assert_eq!(status, 200, "{}", String::from_utf8_lossy(&body));
    status
}

/// Runs `go tool pprof` with `args` on the profile at `path`; its output.
fn go_pprof(args: &[&str], path: &std::path::Path, home: &std::path::Path) -> String {
    let go = require_binary("go");
    let output = std::process::Command::new(go)
        .args(["tool", "pprof"])
        .args(args)
        .arg(path)
        // Go wants somewhere to keep its cache; never the user's.
        .env("HOME", home)
        .env("GOCACHE", home.join("gocache"))
        .output()
        .expect("running go tool pprof");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(output.status.success(), "go tool pprof failed:\n{text}");
    text
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_profile_is_off_unless_enabled() {
    let sluice = start_sluice("pprof-off", &[]).await;
    let (status, _, _) = http_get(&format!("{}/debug/pprof/profile?seconds=1", sluice.url())).await;
    assert_eq!(status, 404);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn go_tool_pprof_reads_a_profile_of_a_busy_sluice() {
    let sluice = start_sluice("pprof", &["-server.pprof-enabled=true".to_owned()]).await;
    let profile_url = format!("{}/debug/pprof/profile", sluice.url());
    for bad in ["0", "301", "ten"] {
        let (status, _, body) = http_get(&format!("{profile_url}?seconds={bad}")).await;
        let body = String::from_utf8_lossy(&body);
        assert_eq!(status, 400, "{bad}: {body}");
        assert!(body.contains("\"errorType\":\"bad_data\""), "{body}");
    }
    busy_query(&sluice).await;

    let four_seconds = format!("{profile_url}?seconds=4");
    let profiling = tokio::spawn(async move { http_get(&four_seconds).await });
    // Busy until the profile is in: two clients, as many as the cores.
    let done = Arc::new(AtomicBool::new(false));
    let sluice = Arc::new(sluice);
    let mut clients = Vec::new();
    for _ in 0..2 {
        let (done, sluice) = (Arc::clone(&done), Arc::clone(&sluice));
        clients.push(tokio::spawn(async move {
            let mut answered = 0;
            while !done.load(Ordering::Relaxed) {
                busy_query(&sluice).await;
                answered += 1;
            }
            answered
        }));
    }
    // The profiler is one per process: a second profile meanwhile is refused.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let (status, _, body) = http_get(&format!("{profile_url}?seconds=1")).await;
    assert_eq!(status, 409, "{}", String::from_utf8_lossy(&body));

    let (status, headers, body) = profiling.await.unwrap();
    done.store(true, Ordering::Relaxed);
    let mut answered = 0;
    for client in clients {
        answered += client.await.unwrap();
    }
    assert_eq!(status, 200, "{}", String::from_utf8_lossy(&body));
    assert_eq!(
        header(&headers, "content-type"),
        Some("application/octet-stream")
    );
    assert_eq!(&body[..2], [0x1f, 0x8b], "gzip, as Go serves it");

    let dir = TempDir::new("sluice-pprof").unwrap();
    let path = dir.path().join("cpu.pb.gz");
    std::fs::write(&path, &body).unwrap();
    let top = go_pprof(&["-top", "-nodecount=100000"], &path, dir.path());
    eprintln!("{answered} queries answered while profiling; go tool pprof -top:\n{top}");
    assert!(top.contains("Type: cpu"), "{top}");
    let total = top
        .lines()
        .find_map(|line| line.split("Total samples = ").nth(1))
        .unwrap_or_else(|| panic!("no sample total in:\n{top}"));
    assert!(!total.starts_with("0 "), "no samples:\n{top}");
    assert!(
        top.contains("sluice_engine::"),
        "the engine evaluated every query, so it must be among the samples:\n{top}"
    );
    // The raw dump lists the samples with their stacks: each has one.
    let raw = go_pprof(&["-raw"], &path, dir.path());
    assert!(raw.contains("samples/count cpu/nanoseconds"), "{raw}");
}
