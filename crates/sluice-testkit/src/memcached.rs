//! A real memcached for the results cache.

use std::time::Duration;

use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpStream;

use crate::process::{ChildProcess, TempDir};
use crate::{free_port, require_binary};

const READY_TIMEOUT: Duration = Duration::from_secs(20);

/// A memcached process on a free loopback port, killed on drop.
#[derive(Debug)]
pub struct MemcachedServer {
    // Field order matters: the process must die before its log dir goes.
    process: ChildProcess,
    port: u16,
    _dir: TempDir,
}

impl MemcachedServer {
    /// Starts memcached (64 MiB, TCP only) and waits until it answers
    /// `version`; panics with its log if that takes over 20 s.
    pub async fn start() -> MemcachedServer {
        MemcachedServer::start_with_args(&[]).await
    }

    /// Like [`MemcachedServer::start`], with extra flags (e.g. `-I 2m` for a
    /// larger item size limit).
    pub async fn start_with_args(extra_args: &[&str]) -> MemcachedServer {
        let memcached = require_binary("memcached");
        let dir = TempDir::new("sluice-memcached").expect("creating memcached temp dir");
        let port = free_port();
        let mut args = vec![
            "-l".to_owned(),
            "127.0.0.1".to_owned(),
            "-p".to_owned(),
            port.to_string(),
            // UDP off: nothing uses it and it would need a second free port.
            "-U".to_owned(),
            "0".to_owned(),
            "-m".to_owned(),
            "64".to_owned(),
            // memcached refuses to run as root without -u; as non-root the
            // flag is ignored.
            "-u".to_owned(),
            "root".to_owned(),
            "-v".to_owned(),
        ];
        args.extend(extra_args.iter().map(|a| (*a).to_owned()));
        let mut process =
            ChildProcess::start(&memcached, &args, &[], dir.path().join("memcached.log"))
                .unwrap_or_else(|e| panic!("starting {}: {e}", memcached.display()));
        let address = format!("127.0.0.1:{port}");
        process
            .wait_serving(&address, READY_TIMEOUT, || ping(&address))
            .await;
        MemcachedServer {
            process,
            port,
            _dir: dir,
        }
    }

    /// `127.0.0.1:<port>`.
    pub fn address(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    /// The underlying process, e.g. to `kill()` it to test cache outages.
    pub fn process(&mut self) -> &mut ChildProcess {
        &mut self.process
    }
}

/// Accepting a TCP connection only proves the listener exists; a `version`
/// round trip proves the worker threads are serving.
async fn ping(address: &str) -> std::io::Result<()> {
    let stream = TcpStream::connect(address).await?;
    let mut stream = BufReader::new(stream);
    stream.get_mut().write_all(b"version\r\n").await?;
    let mut line = String::new();
    stream.read_line(&mut line).await?;
    if line.starts_with("VERSION ") {
        Ok(())
    } else {
        Err(std::io::Error::other(format!("unexpected reply {line:?}")))
    }
}
