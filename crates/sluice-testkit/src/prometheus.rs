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
use crate::{free_port, require_binary};

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
        let dataset = dataset.clone();
        let template = tokio::task::spawn_blocking(move || backfilled_template(&dataset))
            .await
            .unwrap_or_else(|e| std::panic::resume_unwind(e.into_panic()));
        PrometheusServer::start_on_blocks(&template, extra_args).await
    }

    /// Starts Prometheus on a copy of the TSDB blocks in `blocks` (e.g. from
    /// [`backfilled_blocks`]), with extra flags, and waits until it is ready.
    pub async fn start_on_blocks(blocks: &Path, extra_args: &[&str]) -> PrometheusServer {
        let prometheus = require_binary("prometheus");
        let template = blocks.to_path_buf();
        let (dir, data_dir, config) = tokio::task::spawn_blocking(move || {
            let dir = TempDir::new("sluice-prometheus").expect("creating Prometheus temp dir");
            let data_dir = dir.path().join("data");
            copy_dir(&template, &data_dir).unwrap_or_else(|e| {
                panic!(
                    "copying TSDB template {} to {}: {e}",
                    template.display(),
                    data_dir.display()
                )
            });
            let config = dir.path().join("prometheus.yml");
            write_file(&config, CONFIG.as_bytes()).expect("writing prometheus.yml");
            (dir, data_dir, config)
        })
        .await
        .unwrap_or_else(|e| std::panic::resume_unwind(e.into_panic()));

        let port = free_port();
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
        let mut process = ChildProcess::spawn(cmd, &log)
            .unwrap_or_else(|e| panic!("starting {}: {e}", prometheus.display()));
        let url = format!("http://127.0.0.1:{port}");
        process
            .wait_http_ok(&format!("{url}/-/ready"), READY_TIMEOUT)
            .await;
        PrometheusServer { process, port, dir }
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
                        let output = Command::new(promtool)
                            .args(["tsdb", "create-blocks-from", "openmetrics", "--quiet"])
                            .arg(&input)
                            .arg(&blocks)
                            .output()?;
                        if !output.status.success() {
                            return Err(io::Error::other(format!(
                                "promtool tsdb create-blocks-from openmetrics {} failed ({}):\n{}{}",
                                input.display(),
                                output.status,
                                String::from_utf8_lossy(&output.stdout),
                                String::from_utf8_lossy(&output.stderr)
                            )));
                        }
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
