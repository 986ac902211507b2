//! A real S3-API server for the bucket's S3 backend: moto (`moto[server]` from
//! PyPI), which speaks the S3 REST protocol, including ranged GETs and
//! paginated listings, closely enough to exercise object_store's client.

use std::path::PathBuf;
use std::time::Duration;

use crate::free_port;
use crate::http::http_request;
use crate::process::{ChildProcess, TempDir};

const READY_TIMEOUT: Duration = Duration::from_secs(30);

/// A moto S3 server on a free loopback port, killed on drop.
#[derive(Debug)]
pub struct MotoServer {
    // Field order matters: the process must die before its log dir goes.
    process: ChildProcess,
    port: u16,
    _dir: TempDir,
}

impl MotoServer {
    /// Starts `moto_server` (or `python3 -m moto.server` when only the module
    /// is installed) and waits until it answers; panics with instructions
    /// when moto is missing, and with its log when it does not come up.
    pub async fn start() -> MotoServer {
        let dir = TempDir::new("sluice-moto").expect("creating moto temp dir");
        let port = free_port();
        let (program, mut args) = moto_command();
        args.extend([
            "-H".into(),
            "127.0.0.1".into(),
            "-p".into(),
            port.to_string(),
        ]);
        let mut process = ChildProcess::start(&program, &args, &[], dir.path().join("moto.log"))
            .unwrap_or_else(|e| panic!("starting {}: {e}", program.display()));
        let url = format!("http://127.0.0.1:{port}/");
        process.wait_http_ok(&url, READY_TIMEOUT).await;
        MotoServer {
            process,
            port,
            _dir: dir,
        }
    }

    /// `127.0.0.1:<port>`, as `-blocks-storage.s3.endpoint` takes it.
    pub fn endpoint(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    /// Creates `bucket` (moto does not check signatures, so a bare PUT does).
    pub async fn create_bucket(&self, bucket: &str) {
        let url = format!("http://{}/{bucket}", self.endpoint());
        let (status, _, body) = http_request("PUT", &url, &[], Vec::new()).await;
        assert_eq!(
            status,
            200,
            "creating bucket {bucket} on moto: {}",
            String::from_utf8_lossy(&body)
        );
    }

    /// How many ranged GETs (answered `206 Partial Content`) moto has
    /// served so far, from its request log: what a query costs in requests.
    pub fn ranged_gets(&self) -> usize {
        self.process
            .log_contents()
            .lines()
            .filter(|line| line.contains("\"GET ") && line.contains("\" 206 "))
            .count()
    }

    /// Stops the server (SIGTERM, then SIGKILL after 5 s).
    pub async fn stop(mut self) {
        self.process.terminate(Duration::from_secs(5)).await;
    }
}

/// The command that runs moto's server, or a panic saying how to install it:
/// a missing moto must fail the S3 tests, never skip them.
fn moto_command() -> (PathBuf, Vec<String>) {
    if let Some(path) = crate::find_binary("moto_server") {
        return (path, Vec::new());
    }
    let python = crate::find_binary("python3");
    let has_module = python.as_ref().is_some_and(|python| {
        std::process::Command::new(python)
            .args(["-c", "import moto.server"])
            .status()
            .is_ok_and(|status| status.success())
    });
    match python {
        Some(python) if has_module => (python, vec!["-m".into(), "moto.server".into()]),
        _ => panic!(
            "\nsluice-testkit: moto (`moto[server]` from PyPI) is REQUIRED for the S3 tests \
             and is not installed; run scripts/install-test-deps.sh (as root)\n"
        ),
    }
}
