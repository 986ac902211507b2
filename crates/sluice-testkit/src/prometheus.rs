//! A real Prometheus serving the backfilled [`Dataset`].

use std::collections::HashMap;
use std::hash::{Hash, Hasher};
use std::io;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Mutex, OnceLock};
use std::time::{Duration, Instant};

use crate::dataset::Dataset;
use crate::process::{ChildProcess, TempDir, copy_dir, write_file};
use crate::{TestPki, free_port, require_binary};

/// How long Prometheus may take to open the TSDB and report ready. Generous
/// because tests run in parallel on few shared cores.
const READY_TIMEOUT: Duration = Duration::from_secs(60);

/// Backfill input chunk length: a multiple of promtool's 2 h block length,
/// so the blocks are the same as from one file, only built faster.
const BACKFILL_CHUNK_MS: i64 = 6 * 60 * 60 * 1000;
/// promtool processes run at once (the CI machines have 2 cores).
const BACKFILL_PARALLELISM: usize = 2;

const CONFIG: &str = "\
# Written by sluice-testkit. No scrape targets: the server only serves the
# backfilled blocks, so query results never depend on wall-clock time.
global:
  scrape_interval: 1m
  evaluation_interval: 1m
scrape_configs: []
";

/// A Prometheus process serving the [`Dataset`] on a free loopback port,
/// killed (and its data removed) on drop.
#[derive(Debug)]
pub struct PrometheusServer {
    // Field order matters: the process must die before its directory goes.
    process: ChildProcess,
    port: u16,
    dir: TempDir,
}

impl PrometheusServer {
    /// Backfills `dataset` (cached, see below), starts Prometheus on it and
    /// waits until `/-/ready` answers 200; panics with the server log if it
    /// does not within 60 s.
    ///
    /// The backfilled TSDB is built once by `promtool` and cached as a
    /// template directory under `$SLUICE_TESTKIT_CACHE_DIR` (default:
    /// `<tmp>/sluice-testkit-cache`), keyed by the data set's content and the
    /// promtool version; each server gets its own copy.
    pub async fn start(dataset: &Dataset) -> PrometheusServer {
        PrometheusServer::start_with_args(dataset, &[]).await
    }

    /// Like [`PrometheusServer::start`], with extra command-line flags (e.g.
    /// `--query.max-samples=1000`, `--enable-feature=...`).
    pub async fn start_with_args(dataset: &Dataset, extra_args: &[&str]) -> PrometheusServer {
        let template = PrometheusServer::template(dataset).await;
        PrometheusServer::start_configured(Some(&template), |_| CONFIG.to_owned(), extra_args).await
    }

    /// The backfilled blocks of `dataset`, built off the async runtime.
    async fn template(dataset: &Dataset) -> PathBuf {
        let dataset = dataset.clone();
        tokio::task::spawn_blocking(move || backfilled_template(&dataset))
            .await
            .unwrap_or_else(|e| std::panic::resume_unwind(e.into_panic()))
    }

    /// Like [`PrometheusServer::start`], served over HTTPS with `pki`'s
    /// server certificate and requiring basic auth as `username` with
    /// `password`, through Prometheus's own `--web.config.file`. Its address
    /// is `https://localhost:<port>`.
    pub async fn start_secured(
        dataset: &Dataset,
        pki: &TestPki,
        username: &str,
        password: &str,
    ) -> PrometheusServer {
        // The lowest cost bcrypt allows: Prometheus checks it per request.
        let hash = bcrypt::hash(password, 4).expect("bcrypt hash");
        let web_config = pki.dir().join("prometheus-web.yml");
        let text = format!(
            "tls_server_config:\n  cert_file: {}\n  key_file: {}\nbasic_auth_users:\n  {username}: '{hash}'\n",
            pki.path("server.pem"),
            pki.path("server.key")
        );
        write_file(&web_config, text.as_bytes()).expect("writing the web config");
        let flag = format!("--web.config.file={}", web_config.display());
        let template = PrometheusServer::template(dataset).await;
        let mut server =
            PrometheusServer::spawn(Some(&template), |_| CONFIG.to_owned(), &[&flag]).await;
        // Its readiness endpoint wants TLS and a password now: wait for the
        // log line instead.
        let deadline = Instant::now() + READY_TIMEOUT;
        while !server
            .process
            .log_contents()
            .contains("Server is ready to receive web requests")
        {
            assert!(
                Instant::now() < deadline && server.process.try_wait().is_none(),
                "Prometheus with TLS did not become ready:\n{}",
                server.process.log_contents()
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        server
    }

    /// A Prometheus serving a copy of the TSDB directory `data` (blocks, and
    /// a `wal/` if it has one), scraping nothing.
    pub async fn serve_copy_of(data: &Path, extra_args: &[&str]) -> PrometheusServer {
        PrometheusServer::start_configured(Some(data), |_| CONFIG.to_owned(), extra_args).await
    }

    /// A Prometheus with the configuration `config(port)` returns (given the
    /// port it will listen on, so that it can scrape itself), over a copy of
    /// `data` or an empty TSDB; waits until it is ready.
    pub async fn start_configured(
        data: Option<&Path>,
        config: impl FnOnce(u16) -> String,
        extra_args: &[&str],
    ) -> PrometheusServer {
        let mut server = PrometheusServer::spawn(data, config, extra_args).await;
        let url = server.url();
        server
            .process
            .wait_http_ok(&format!("{url}/-/ready"), READY_TIMEOUT)
            .await;
        server
    }

    /// Starts the process as [`PrometheusServer::start_configured`] does,
    /// without waiting for it to be ready.
    async fn spawn(
        data: Option<&Path>,
        config: impl FnOnce(u16) -> String,
        extra_args: &[&str],
    ) -> PrometheusServer {
        let prometheus = require_binary("prometheus");
        let port = free_port();
        let config_text = config(port);
        let data = data.map(Path::to_path_buf);
        let (dir, data_dir, config) = tokio::task::spawn_blocking(move || {
            let dir = TempDir::new("sluice-prometheus").expect("creating Prometheus temp dir");
            let data_dir = dir.path().join("data");
            match &data {
                Some(from) => copy_dir(from, &data_dir).unwrap_or_else(|e| {
                    panic!(
                        "copying TSDB {} to {}: {e}",
                        from.display(),
                        data_dir.display()
                    )
                }),
                None => std::fs::create_dir_all(&data_dir).expect("creating the TSDB directory"),
            }
            let config = dir.path().join("prometheus.yml");
            write_file(&config, config_text.as_bytes()).expect("writing prometheus.yml");
            (dir, data_dir, config)
        })
        .await
        .unwrap_or_else(|e| std::panic::resume_unwind(e.into_panic()));

        let mut args = vec![
            format!("--config.file={}", config.display()),
            format!("--storage.tsdb.path={}", data_dir.display()),
            format!("--web.listen-address=127.0.0.1:{port}"),
            // The data is from January 2026; the default 15d retention would
            // delete it on startup.
            "--storage.tsdb.retention.time=100y".to_owned(),
            // min == max block duration disables compaction, so the server
            // does not rewrite its blocks in the background a minute in
            // (CPU noise for benchmarks, churn under running queries).
            "--storage.tsdb.min-block-duration=2h".to_owned(),
            "--storage.tsdb.max-block-duration=2h".to_owned(),
        ];
        args.extend(extra_args.iter().map(|a| (*a).to_owned()));
        let log = dir.path().join("prometheus.log");
        let mut cmd = Command::new(&prometheus);
        cmd.args(&args).current_dir(dir.path());
        let process = ChildProcess::spawn(cmd, &log)
            .unwrap_or_else(|e| panic!("starting {}: {e}", prometheus.display()));
        PrometheusServer { process, port, dir }
    }

    /// Takes a snapshot of the TSDB, head included, through the admin API
    /// (the server needs `--web.enable-admin-api`), and returns its
    /// directory: blocks only, a data directory another server can open.
    pub async fn snapshot(&self) -> PathBuf {
        let url = format!("{}/api/v1/admin/tsdb/snapshot", self.url());
        let (status, _, body) = crate::http::http_request("POST", &url, &[], Vec::new()).await;
        let body = String::from_utf8_lossy(&body).into_owned();
        assert_eq!(status, 200, "POST {url}: {body}");
        // {"status":"success","data":{"name":"20260105T000000Z-1a2b3c"}}
        let name = body
            .split("\"name\":\"")
            .nth(1)
            .and_then(|rest| rest.split('"').next())
            .unwrap_or_else(|| panic!("no snapshot name in {body}"));
        self.data_dir().join("snapshots").join(name)
    }

    /// `http://127.0.0.1:<port>`, without a trailing slash.
    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    /// The server's own TSDB directory.
    pub fn data_dir(&self) -> PathBuf {
        self.dir.path().join("data")
    }

    pub fn log_path(&self) -> &Path {
        self.process.log_path()
    }

    /// The underlying process, e.g. to `terminate()` it mid-test.
    pub fn process(&mut self) -> &mut ChildProcess {
        &mut self.process
    }
}

/// The directory of TSDB blocks holding `dataset` that servers start from
/// (promtool's output, cached; never write into it). Blocking: promtool may
/// run.
pub fn dataset_blocks(dataset: &Dataset) -> PathBuf {
    backfilled_template(dataset)
}

/// OpenMetrics input for promtool split by time, each part covering a
/// window that is a multiple of promtool's 2 h block length (so the blocks
/// are the same as from one file, only built faster: promtool re-reads its
/// whole input once per block it writes). Parts are made on demand, so a
/// large data set never has to be in memory at once.
pub trait OpenMetricsParts: Sync {
    fn part_count(&self) -> usize;
    /// Part `index`: OpenMetrics text ending in `# EOF`.
    fn part(&self, index: usize) -> String;
}

impl OpenMetricsParts for Vec<String> {
    fn part_count(&self) -> usize {
        self.len()
    }

    fn part(&self, index: usize) -> String {
        self[index].clone()
    }
}

/// Returns a directory of TSDB blocks holding `dataset`, building it with
/// promtool at most once per content (per process, and across processes via
/// the on-disk cache).
fn backfilled_template(dataset: &Dataset) -> PathBuf {
    static BUILT: OnceLock<Mutex<HashMap<Dataset, PathBuf>>> = OnceLock::new();
    // Holding the lock while building makes concurrent tests in one process
    // wait for the first build instead of each running promtool.
    let mut built = BUILT
        .get_or_init(Default::default)
        .lock()
        .unwrap_or_else(|e| e.into_inner());
    if let Some(dir) = built.get(dataset).filter(|d| d.is_dir()) {
        return dir.clone();
    }
    let final_dir = backfilled_blocks(&dataset.openmetrics_chunks(BACKFILL_CHUNK_MS));
    built.insert(dataset.clone(), final_dir.clone());
    final_dir
}

/// A directory of TSDB blocks holding `parts`, built with promtool once per
/// content and promtool version and cached under
/// `$SLUICE_TESTKIT_CACHE_DIR` (default: `<tmp>/sluice-testkit-cache`).
/// Keyed by the content itself, so editing a generator can never pick up a
/// stale template; the parts are made twice on a miss (hashed, then written).
pub fn backfilled_blocks(parts: &dyn OpenMetricsParts) -> PathBuf {
    let promtool = require_binary("promtool");
    let version = Command::new(&promtool)
        .arg("--version")
        .output()
        .map(|o| o.stdout)
        .unwrap_or_default();
    let mut hasher = std::collections::hash_map::DefaultHasher::new();
    parts.part_count().hash(&mut hasher);
    for index in 0..parts.part_count() {
        parts.part(index).hash(&mut hasher);
    }
    version.hash(&mut hasher);
    let key = hasher.finish();

    let cache_root = std::env::var_os("SLUICE_TESTKIT_CACHE_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| std::env::temp_dir().join("sluice-testkit-cache"));
    let final_dir = cache_root.join(format!("tsdb-{key:016x}"));
    if !final_dir.is_dir() {
        build_template(&promtool, parts, &cache_root, &final_dir).unwrap_or_else(|e| {
            panic!("backfilling the data set into {}: {e}", final_dir.display())
        });
    }
    final_dir
}

/// Backfills OpenMetrics `text` (timestamps in seconds, `# EOF` at the end)
/// into 2 h blocks under `out` with `promtool tsdb create-blocks-from
/// openmetrics`; panics with promtool's output when it fails.
pub fn promtool_backfill(text: &str, out: &Path) {
    let promtool = require_binary("promtool");
    let input = TempDir::new("sluice-backfill-input").expect("creating a temp dir");
    let file = input.path().join("input.om");
    write_file(&file, text.as_bytes()).expect("writing the OpenMetrics input");
    run_promtool_backfill(&promtool, &file, out).unwrap_or_else(|e| panic!("{e}"));
}

/// `promtool tsdb analyze <data_dir> <block>`'s report; panics with
/// promtool's errors when it finds the block unreadable.
pub fn promtool_analyze(data_dir: &Path, block: &str) -> String {
    let output = Command::new(require_binary("promtool"))
        .args(["tsdb", "analyze"])
        .arg(data_dir)
        .arg(block)
        .output()
        .expect("running promtool");
    assert!(
        output.status.success(),
        "promtool tsdb analyze {} {block} failed: {}",
        data_dir.display(),
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8_lossy(&output.stdout).into_owned()
}

fn run_promtool_backfill(promtool: &Path, input: &Path, out: &Path) -> io::Result<()> {
    let output = Command::new(promtool)
        .args(["tsdb", "create-blocks-from", "openmetrics", "--quiet"])
        .arg(input)
        .arg(out)
        .output()?;
    if output.status.success() {
        return Ok(());
    }
    Err(io::Error::other(format!(
        "promtool tsdb create-blocks-from openmetrics {} failed ({}):\n{}{}",
        input.display(),
        output.status,
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    )))
}

/// Runs promtool (over each chunk, two at a time) into a staging directory
/// and renames it into place, so a half-built template (crash, concurrent
/// process) is never visible.
fn build_template(
    promtool: &Path,
    parts: &dyn OpenMetricsParts,
    cache_root: &Path,
    final_dir: &Path,
) -> io::Result<()> {
    std::fs::create_dir_all(cache_root)?;
    let staging = TempDir::new("sluice-backfill")?;
    let blocks = cache_root.join(format!(
        "staging-{}",
        staging
            .path()
            .file_name()
            .unwrap_or_default()
            .to_string_lossy()
    ));
    let started = Instant::now();
    let next = AtomicUsize::new(0);
    let result = std::thread::scope(|scope| {
        let workers: Vec<_> = (0..BACKFILL_PARALLELISM)
            .map(|_| {
                scope.spawn(|| -> io::Result<()> {
                    loop {
                        let i = next.fetch_add(1, Ordering::Relaxed);
                        if i >= parts.part_count() {
                            return Ok(());
                        }
                        let input = staging.path().join(format!("chunk-{i:03}.om"));
                        write_file(&input, parts.part(i).as_bytes())?;
                        run_promtool_backfill(promtool, &input, &blocks)?;
                        let _ = std::fs::remove_file(&input);
                    }
                })
            })
            .collect();
        workers
            .into_iter()
            .map(|w| w.join().unwrap_or_else(|e| std::panic::resume_unwind(e)))
            .collect::<io::Result<Vec<()>>>()
    });
    if let Err(e) = result {
        let _ = std::fs::remove_dir_all(&blocks);
        return Err(e);
    }
    eprintln!(
        "sluice-testkit: backfilled the data set with promtool in {:.1?} into {}",
        started.elapsed(),
        final_dir.display()
    );
    if let Err(e) = std::fs::rename(&blocks, final_dir) {
        // Another process won the race; its copy is identical.
        let _ = std::fs::remove_dir_all(&blocks);
        if !final_dir.is_dir() {
            return Err(e);
        }
    }
    Ok(())
}
