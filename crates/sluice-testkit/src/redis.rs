//! A real Redis for the results cache.

use std::time::Duration;

use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpStream;

use crate::process::{ChildProcess, TempDir};
use crate::{free_port, require_binary};

const READY_TIMEOUT: Duration = Duration::from_secs(20);

/// A redis-server process on a free loopback port, with persistence off,
/// killed on drop.
#[derive(Debug)]
pub struct RedisServer {
    // Field order matters: the process must die before its dir goes.
    process: ChildProcess,
    port: u16,
    extra_args: Vec<String>,
    starts: usize,
    dir: TempDir,
}

impl RedisServer {
    /// Starts redis-server and waits until it answers `PING`; panics with
    /// its log if that takes over 20 s.
    pub async fn start() -> RedisServer {
        RedisServer::start_with_args(&[]).await
    }

    /// Like [`RedisServer::start`], with extra flags (e.g.
    /// `--requirepass secret`).
    pub async fn start_with_args(extra_args: &[&str]) -> RedisServer {
        let dir = TempDir::new("sluice-redis").expect("creating redis temp dir");
        let port = free_port();
        let extra_args: Vec<String> = extra_args.iter().map(|a| (*a).to_owned()).collect();
        let process = spawn(&dir, port, &extra_args, 0).await;
        RedisServer {
            process,
            port,
            extra_args,
            starts: 1,
            dir,
        }
    }

    /// Kills the server (SIGKILL: no goodbye to its clients) and waits for
    /// it to be gone; its data is lost.
    pub fn kill(&mut self) {
        self.process.kill();
    }

    /// Starts a fresh, empty server on the same port and flags, killing the
    /// old one first if it still runs.
    pub async fn restart(&mut self) {
        self.process.kill();
        self.process = spawn(&self.dir, self.port, &self.extra_args, self.starts).await;
        self.starts += 1;
    }

    /// `127.0.0.1:<port>`.
    pub fn address(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    /// The underlying process.
    pub fn process(&mut self) -> &mut ChildProcess {
        &mut self.process
    }
}

async fn spawn(dir: &TempDir, port: u16, extra_args: &[String], start: usize) -> ChildProcess {
    let redis = require_binary("redis-server");
    let mut args = vec![
        "--bind".to_owned(),
        "127.0.0.1".to_owned(),
        "--port".to_owned(),
        port.to_string(),
        // A test server keeps nothing: no snapshots, no append-only file.
        "--save".to_owned(),
        String::new(),
        "--appendonly".to_owned(),
        "no".to_owned(),
        "--dir".to_owned(),
        dir.path().display().to_string(),
    ];
    args.extend(extra_args.iter().cloned());
    let log = dir.path().join(format!("redis-{start}.log"));
    let mut process = ChildProcess::start(&redis, &args, &[], log)
        .unwrap_or_else(|e| panic!("starting {}: {e}", redis.display()));
    let address = format!("127.0.0.1:{port}");
    process
        .wait_serving(&address, READY_TIMEOUT, || ping(&address))
        .await;
    process
}

/// A `PING` round trip proves the server is serving; a server that wants a
/// password answers `NOAUTH`, which proves it too.
async fn ping(address: &str) -> std::io::Result<()> {
    let stream = TcpStream::connect(address).await?;
    let mut stream = BufReader::new(stream);
    stream.get_mut().write_all(b"*1\r\n$4\r\nPING\r\n").await?;
    let mut line = String::new();
    stream.read_line(&mut line).await?;
    if line == "+PONG\r\n" || line.starts_with("-NOAUTH") {
        Ok(())
    } else {
        Err(std::io::Error::other(format!("unexpected reply {line:?}")))
    }
}
