//! The generic process guard: SIGTERM with SIGKILL fallback, kill on drop,
//! logging, and the loud failure for missing binaries.

use std::os::unix::process::ExitStatusExt as _;
use std::path::Path;
use std::time::{Duration, Instant};

use sluice_testkit::{ChildProcess, TempDir, free_port, require_binary, wait_for_http_ok};

#[tokio::test]
async fn terminate_sends_sigterm_and_logs_output() {
    let dir = TempDir::new("testkit-child").unwrap();
    let mut child = ChildProcess::start(
        "sh",
        &["-c", "echo started as $GREETING; exec sleep 30"],
        &[("GREETING", "hello")],
        dir.path().join("child.log"),
    )
    .unwrap();
    // Wait for the echo so the log check below is not racy.
    let deadline = Instant::now() + Duration::from_secs(10);
    while !child.log_contents().contains("started as hello") {
        assert!(Instant::now() < deadline, "log: {}", child.log_contents());
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let started = Instant::now();
    let status = child.terminate(Duration::from_secs(10)).await;
    assert_eq!(status.signal(), Some(15), "{status}");
    assert!(started.elapsed() < Duration::from_secs(5));
    // Idempotent.
    assert_eq!(child.terminate(Duration::from_secs(1)).await, status);
    assert_eq!(child.kill(), status);
}

#[tokio::test]
async fn terminate_falls_back_to_sigkill() {
    let dir = TempDir::new("testkit-child").unwrap();
    // An ignored signal stays ignored across exec, so `sleep` ignores TERM.
    let mut child = ChildProcess::start(
        "sh",
        &["-c", "trap '' TERM; echo ready; exec sleep 30"],
        &[],
        dir.path().join("child.log"),
    )
    .unwrap();
    while !child.log_contents().contains("ready") {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let status = child.terminate(Duration::from_millis(300)).await;
    assert_eq!(status.signal(), Some(9), "{status}");
}

#[tokio::test]
async fn drop_kills_the_process() {
    let dir = TempDir::new("testkit-child").unwrap();
    let child = ChildProcess::start("sleep", &["30"], &[], dir.path().join("child.log")).unwrap();
    let proc_dir = format!("/proc/{}", child.id());
    assert!(Path::new(&proc_dir).exists());
    drop(child);
    // Killed and reaped, so not even a zombie is left.
    assert!(!Path::new(&proc_dir).exists());
}

#[tokio::test]
async fn wait_for_http_ok_times_out_on_a_closed_port() {
    let url = format!("http://127.0.0.1:{}/", free_port());
    let err = wait_for_http_ok(&url, Duration::from_millis(300))
        .await
        .unwrap_err();
    assert!(err.contains(&url), "{err}");
}

#[test]
fn temp_dir_is_removed_on_drop() {
    let dir = TempDir::new("testkit-tmp").unwrap();
    let path = dir.path().to_path_buf();
    std::fs::write(path.join("f"), b"x").unwrap();
    drop(dir);
    assert!(!path.exists());
}

#[test]
fn require_binary_finds_sh() {
    assert!(require_binary("sh").is_absolute());
}

#[test]
#[should_panic(expected = "scripts/install-test-deps.sh")]
fn require_binary_panics_loudly() {
    require_binary("sluice-definitely-not-installed");
}
