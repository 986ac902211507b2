//! Child process and temporary directory guards.
//!
//! Both clean up on `Drop`, so a panicking test never leaves a server running
//! or a data directory behind.

use std::ffi::OsStr;
use std::fs::{self, File, OpenOptions};
use std::io;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use crate::http::http_client;

/// A directory under the system temp dir, removed (recursively) on drop.
///
/// Set `SLUICE_TESTKIT_KEEP_TMP=1` to keep it for post-mortem debugging.
#[derive(Debug)]
pub struct TempDir {
    path: PathBuf,
}

impl TempDir {
    /// Creates a fresh, uniquely named directory whose name starts with
    /// `prefix`.
    pub fn new(prefix: &str) -> io::Result<TempDir> {
        static COUNTER: AtomicU64 = AtomicU64::new(0);
        let nanos = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.subsec_nanos())
            .unwrap_or(0);
        loop {
            let n = COUNTER.fetch_add(1, Ordering::Relaxed);
            let path =
                std::env::temp_dir().join(format!("{prefix}-{}-{n}-{nanos:x}", std::process::id()));
            // create_dir (not create_dir_all) fails if it exists, so two
            // processes can never share a directory.
            match fs::create_dir(&path) {
                Ok(()) => return Ok(TempDir { path }),
                Err(e) if e.kind() == io::ErrorKind::AlreadyExists => continue,
                Err(e) => return Err(e),
            }
        }
    }

    pub fn path(&self) -> &Path {
        &self.path
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        if std::env::var_os("SLUICE_TESTKIT_KEEP_TMP").is_some_and(|v| v != "0") {
            eprintln!("sluice-testkit: keeping {}", self.path.display());
            return;
        }
        let _ = fs::remove_dir_all(&self.path);
    }
}

/// A spawned child process whose stdout and stderr go to a log file; it is
/// killed (SIGKILL) and reaped on drop.
#[derive(Debug)]
pub struct ChildProcess {
    name: String,
    child: Child,
    log_path: PathBuf,
    /// Set once the child has been reaped, so later calls don't wait on a
    /// pid that may since have been reused.
    status: Option<ExitStatus>,
}

impl ChildProcess {
    /// Spawns `program` with `args` and extra environment `envs` (on top of
    /// the inherited environment), logging to `log_path` (appended to).
    pub fn start<S: AsRef<OsStr>>(
        program: impl AsRef<OsStr>,
        args: &[S],
        envs: &[(&str, &str)],
        log_path: impl Into<PathBuf>,
    ) -> io::Result<ChildProcess> {
        let mut cmd = Command::new(program);
        cmd.args(args);
        for (k, v) in envs {
            cmd.env(k, v);
        }
        ChildProcess::spawn(cmd, log_path)
    }

    /// Spawns a fully configured `cmd`; stdin, stdout and stderr are
    /// overridden (stdin is null, both outputs go to `log_path`).
    pub fn spawn(mut cmd: Command, log_path: impl Into<PathBuf>) -> io::Result<ChildProcess> {
        let log_path = log_path.into();
        let log = OpenOptions::new()
            .create(true)
            .append(true)
            .open(&log_path)?;
        let name = Path::new(cmd.get_program())
            .file_name()
            .unwrap_or(cmd.get_program())
            .to_string_lossy()
            .into_owned();
        cmd.stdin(Stdio::null())
            .stdout(Stdio::from(log.try_clone()?))
            .stderr(Stdio::from(log));
        let child = cmd.spawn().map_err(|e| {
            io::Error::new(e.kind(), format!("spawning {:?}: {e}", cmd.get_program()))
        })?;
        Ok(ChildProcess {
            name,
            child,
            log_path,
            status: None,
        })
    }

    /// The operating system process id.
    pub fn id(&self) -> u32 {
        self.child.id()
    }

    pub fn log_path(&self) -> &Path {
        &self.log_path
    }

    /// Everything the process has written so far (lossy UTF-8).
    pub fn log_contents(&self) -> String {
        fs::read(&self.log_path)
            .map(|b| String::from_utf8_lossy(&b).into_owned())
            .unwrap_or_else(|e| format!("<cannot read {}: {e}>", self.log_path.display()))
    }

    /// The exit status if the process has exited, without blocking.
    pub fn try_wait(&mut self) -> Option<ExitStatus> {
        if self.status.is_none() {
            self.status = self.child.try_wait().ok().flatten();
        }
        self.status
    }

    /// Polls `url` until it answers 200, panicking (with the process log) if
    /// that takes longer than `timeout` or the process exits first.
    pub async fn wait_http_ok(&mut self, url: &str, timeout: Duration) {
        let deadline = Instant::now() + timeout;
        let client = http_client();
        let mut last = String::from("no attempt yet");
        loop {
            if let Some(status) = self.try_wait() {
                panic!(
                    "{} (pid {}) exited with {status} before {url} answered 200 (last: {last})\n{}",
                    self.name,
                    self.id(),
                    self.log_banner()
                );
            }
            match client.get(url).send().await {
                Ok(resp) if resp.status().as_u16() == 200 => return,
                Ok(resp) => last = format!("HTTP {}", resp.status()),
                Err(e) => last = format!("{e}"),
            }
            if Instant::now() >= deadline {
                panic!(
                    "{} (pid {}) did not answer 200 on {url} within {timeout:?} (last: {last})\n{}",
                    self.name,
                    self.id(),
                    self.log_banner()
                );
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Calls `ping` until it succeeds, panicking (with the process log) if
    /// that takes longer than `timeout` or the process exits first; each
    /// call may take at most 2 s.
    pub async fn wait_serving<F, Fut>(&mut self, address: &str, timeout: Duration, ping: F)
    where
        F: Fn() -> Fut,
        Fut: std::future::Future<Output = io::Result<()>>,
    {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(status) = self.try_wait() {
                panic!(
                    "{} exited with {status} before accepting connections on {address}\n{}",
                    self.name,
                    self.log_banner()
                );
            }
            let attempt = tokio::time::timeout(Duration::from_secs(2), ping()).await;
            match attempt.unwrap_or_else(|_| Err(io::Error::other("no reply within 2s"))) {
                Ok(()) => return,
                Err(e) if Instant::now() >= deadline => panic!(
                    "{} did not answer on {address} within {timeout:?} (last: {e})\n{}",
                    self.name,
                    self.log_banner()
                ),
                Err(_) => tokio::time::sleep(Duration::from_millis(20)).await,
            }
        }
    }

    /// Sends SIGTERM, waits up to `grace` for the process to exit, then
    /// SIGKILLs it; returns the exit status. Idempotent.
    pub async fn terminate(&mut self, grace: Duration) -> ExitStatus {
        if let Some(status) = self.try_wait() {
            return status;
        }
        // `kill(1)` rather than libc keeps the crate free of unsafe code and
        // extra dependencies; if it is unavailable we fall through to SIGKILL.
        let sent = Command::new("kill")
            .arg("-TERM")
            .arg(self.id().to_string())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success());
        if sent {
            let deadline = Instant::now() + grace;
            while Instant::now() < deadline {
                if let Some(status) = self.try_wait() {
                    return status;
                }
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        }
        self.kill()
    }

    /// Sends SIGKILL and reaps the process; returns the exit status.
    /// Idempotent.
    pub fn kill(&mut self) -> ExitStatus {
        if let Some(status) = self.try_wait() {
            return status;
        }
        let _ = self.child.kill();
        let status = self
            .child
            .wait()
            .unwrap_or_else(|e| panic!("waiting for {} (pid {}): {e}", self.name, self.id()));
        self.status = Some(status);
        status
    }

    /// The log framed for inclusion in a panic message.
    pub(crate) fn log_banner(&self) -> String {
        format!(
            "----- {} log ({}) -----\n{}\n----- end of {} log -----",
            self.name,
            self.log_path.display(),
            self.log_contents().trim_end(),
            self.name
        )
    }
}

impl Drop for ChildProcess {
    fn drop(&mut self) {
        if self.status.is_none() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// Polls `url` until it answers 200 or `timeout` passes, for servers not
/// started through [`ChildProcess`] (e.g. in-process ones).
pub async fn wait_for_http_ok(url: &str, timeout: Duration) -> Result<(), String> {
    let deadline = Instant::now() + timeout;
    let client = http_client();
    loop {
        let last = match client.get(url).send().await {
            Ok(resp) if resp.status().as_u16() == 200 => return Ok(()),
            Ok(resp) => format!("HTTP {}", resp.status()),
            Err(e) => format!("{e}"),
        };
        if Instant::now() >= deadline {
            return Err(format!(
                "{url} did not answer 200 within {timeout:?} (last: {last})"
            ));
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Copies directory `from` into (new) directory `to`, recursively.
pub fn copy_dir(from: &Path, to: &Path) -> io::Result<()> {
    fs::create_dir_all(to)?;
    for entry in fs::read_dir(from)? {
        let entry = entry?;
        let target = to.join(entry.file_name());
        if entry.file_type()?.is_dir() {
            copy_dir(&entry.path(), &target)?;
        } else {
            fs::copy(entry.path(), &target)?;
        }
    }
    Ok(())
}

/// Creates (truncating) a file, with the path in the error.
pub(crate) fn write_file(path: &Path, contents: &[u8]) -> io::Result<()> {
    use std::io::Write as _;
    let mut f = File::create(path)
        .map_err(|e| io::Error::new(e.kind(), format!("creating {}: {e}", path.display())))?;
    f.write_all(contents)
}
