//! Shared harness for sluice's end-to-end tests and benchmark command: it runs
//! REAL servers (Prometheus backfilled with a deterministic multi-day
//! [`Dataset`], memcached, Redis, moto's S3 server, and sluice's own binaries via
//! [`ChildProcess`]) on free loopback ports, and gives tests a raw HTTP client to talk to them.
//! Nothing here is a mock, and a missing binary is a loud failure, never a
//! skipped test: run `scripts/install-test-deps.sh` (as root) to install them.
//!
//! ```no_run
//! use sluice_testkit::{Dataset, PrometheusServer, form_urlencode, http_get};
//!
//! # async fn example() {
//! let dataset = Dataset::new();
//! // Backfilled once per content (cached on disk), then ~1 s per server.
//! let prometheus = PrometheusServer::start(&dataset).await;
//! let query = form_urlencode(&[
//!     ("query", "count(http_requests_total)"),
//!     ("time", &(dataset.end_ms() / 1000).to_string()),
//! ]);
//! let (status, _headers, body) =
//!     http_get(&format!("{}/api/v1/query?{query}", prometheus.url())).await;
//! assert_eq!(status, 200, "{}", String::from_utf8_lossy(&body));
//! # }
//! ```

mod dataset;
mod fake;
mod http;
mod memcached;
mod moto;
mod pki;
mod process;
mod prometheus;
mod redis;

use std::collections::HashSet;
use std::net::{Ipv4Addr, TcpListener};
use std::path::{Path, PathBuf};
use std::sync::Mutex;

pub use dataset::{Dataset, EDGE_CASE_LABEL_VALUES, METRIC_NAMES, Series, mix};
pub use fake::{closed_address, replying_server};
pub use http::{
    HttpResponse, form_urlencode, gunzip, header, http_get, http_get_with_headers, http_post_form,
    http_post_form_with_headers, http_request,
};
pub use memcached::MemcachedServer;
pub use moto::MotoServer;
pub use pki::TestPki;
pub use process::{ChildProcess, TempDir, copy_dir, wait_for_http_ok};
pub use prometheus::{
    OpenMetricsParts, PrometheusServer, backfilled_blocks, dataset_blocks, promtool_analyze,
    promtool_backfill,
};
pub use redis::RedisServer;

/// A one-worker multi-thread runtime for tests whose code under test blocks
/// its own thread while the runtime serves its I/O (the bucket's sync calls).
/// How many cases a fuzzing property runs: `default` (a few hundred, so
/// the suite stays fast) unless `SLUICE_FUZZ_CASES` asks for more.
pub fn fuzz_cases(default: u32) -> u32 {
    std::env::var("SLUICE_FUZZ_CASES")
        .ok()
        .and_then(|cases| cases.parse().ok())
        .unwrap_or(default)
}

pub fn io_runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .unwrap_or_else(|e| panic!("building a test runtime: {e}"))
}

/// A TCP port on 127.0.0.1 that was free a moment ago.
///
/// The OS picks it (bind to port 0); ports already handed out by this process
/// are never returned again, so servers started by parallel tests in one
/// process cannot be given the same port before either has bound it.
pub fn free_port() -> u16 {
    static HANDED_OUT: Mutex<Option<HashSet<u16>>> = Mutex::new(None);
    let mut handed_out = HANDED_OUT.lock().unwrap_or_else(|e| e.into_inner());
    let handed_out = handed_out.get_or_insert_with(HashSet::new);
    for _ in 0..1000 {
        let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0))
            .unwrap_or_else(|e| panic!("binding 127.0.0.1:0 to find a free port: {e}"));
        let port = listener
            .local_addr()
            .expect("local address of a bound listener")
            .port();
        if handed_out.insert(port) {
            return port;
        }
    }
    panic!("no fresh free port on 127.0.0.1 after 1000 attempts");
}

/// The full path of executable `name`, found on `PATH` (or `name` itself if
/// it contains a `/`).
///
/// Panics with instructions if it is missing: end-to-end tests must fail,
/// not silently pass, on a machine without the servers.
pub fn require_binary(name: &str) -> PathBuf {
    if let Some(path) = find_binary(name) {
        return path;
    }
    let bar = "=".repeat(78);
    panic!(
        "\n{bar}\n\
         sluice-testkit: REQUIRED BINARY `{name}` NOT FOUND ON PATH\n\
         \n\
         sluice's end-to-end tests and benchmarks run real Prometheus, promtool,\n\
         memcached and redis-server processes and are never skipped. Install them with\n\
         \n\
         \x20   scripts/install-test-deps.sh      (as root, from the repository root)\n\
         \n\
         PATH={}\n\
         {bar}\n",
        std::env::var("PATH").unwrap_or_default()
    );
}

fn find_binary(name: &str) -> Option<PathBuf> {
    if name.contains('/') {
        let path = Path::new(name);
        return is_executable(path).then(|| path.to_path_buf());
    }
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .map(|dir| dir.join(name))
        .find(|candidate| is_executable(candidate))
}

fn is_executable(path: &Path) -> bool {
    use std::os::unix::fs::PermissionsExt as _;
    std::fs::metadata(path).is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
}
