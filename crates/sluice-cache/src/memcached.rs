//! The memcached backend: the text protocol over TCP, consistent hashing
//! across servers, a small connection pool per server, timeouts on every
//! operation, and servers that fail marked down briefly.

use std::collections::{HashMap, HashSet};
use std::sync::Mutex;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use futures_util::future::join_all;
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufStream};
use tokio::net::TcpStream;
use tokio::sync::Semaphore;
use tokio::time::Instant;
use xxhash_rust::xxh3::{xxh3_64, xxh3_128};

use crate::metrics::{CacheMetrics, Handles};
use crate::{BoxFuture, Cache, ConfigError};

/// memcached's own limit on key length.
const MAX_KEY_LEN: usize = 250;
/// Keys that are hashed get this prefix; raw keys that happen to start with
/// it are hashed too, so a raw key can never equal a hashed one.
const HASHED_PREFIX: &str = "~h:";
/// Points per server on the hash ring: enough for an even spread (within a
/// few percent) over a handful of servers.
const VIRTUAL_NODES: usize = 160;
/// A `get` line is kept under this many bytes; longer key lists are sent as
/// several pipelined `get` commands (memcached bounds command lines).
const MAX_GET_LINE: usize = 2000;
/// Replies are single short lines; anything longer is garbage.
const MAX_REPLY_LINE: u64 = 1024;
/// memcached stores item metadata next to key and value inside its item size
/// limit; this conservative estimate keeps us from sending sets it refuses.
const ITEM_OVERHEAD: usize = 64;
/// memcached reads an expiry above 30 days as an absolute unix time.
const MAX_RELATIVE_EXPIRY: u64 = 30 * 86_400;

/// Configuration of a [`MemcachedCache`].
#[derive(Debug, Clone)]
pub struct MemcachedConfig {
    /// `host:port` of every server. Order and duplicates do not matter: the
    /// same set of addresses always maps a key to the same server.
    pub servers: Vec<String>,
    /// Upper bound on one operation against one server, including waiting
    /// for a pooled connection, connecting, writing and reading. Default
    /// 200 ms.
    pub timeout: Duration,
    /// Upper bound on establishing a TCP connection. Default 100 ms.
    pub connect_timeout: Duration,
    /// Connections per server, in use or idle. Default 8.
    pub max_connections_per_server: usize,
    /// memcached's item size limit (`-I`, 1 MiB by default): larger values
    /// are not sent. Default 1 MiB.
    pub max_item_bytes: usize,
    /// How long a server that failed to connect or timed out is skipped
    /// (its keys are misses, its writes dropped). Default 1 s.
    pub down_backoff: Duration,
}

impl MemcachedConfig {
    /// The largest value sent under `key_len` bytes of key: larger ones
    /// are not stored.
    pub fn max_value_bytes(&self, key_len: usize) -> usize {
        // A longer key is sent hashed, shorter than this.
        let sent_key = key_len.min(MAX_KEY_LEN);
        self.max_item_bytes.saturating_sub(sent_key + ITEM_OVERHEAD)
    }

    /// The given servers with every other setting at its default.
    pub fn new(servers: Vec<String>) -> MemcachedConfig {
        MemcachedConfig {
            servers,
            timeout: Duration::from_millis(200),
            connect_timeout: Duration::from_millis(100),
            max_connections_per_server: 8,
            max_item_bytes: 1 << 20,
            down_backoff: Duration::from_secs(1),
        }
    }
}

/// The key sent to memcached for `key`: `key` itself if memcached accepts it
/// (at most 250 bytes of printable ASCII, no spaces), otherwise `~h:`
/// followed by the hex of its 128-bit xxh3 hash.
pub fn memcached_key(key: &str) -> String {
    let safe = key.len() <= MAX_KEY_LEN
        && !key.is_empty()
        && !key.starts_with(HASHED_PREFIX)
        && key.bytes().all(|b| b.is_ascii_graphic());
    if safe {
        key.to_owned()
    } else {
        format!("{HASHED_PREFIX}{:032x}", xxh3_128(key.as_bytes()))
    }
}

/// A memcached client spreading keys over servers by consistent hashing.
///
/// A server that is down, slow or sends garbage costs at most
/// [`MemcachedConfig::timeout`] per call and turns its keys into misses and
/// its writes into no-ops; the other servers keep working. Keys of a down
/// server are not moved to the others, so a flapping server cannot leave
/// stale copies behind on them.
#[derive(Debug)]
pub struct MemcachedCache {
    servers: Vec<Server>,
    /// (point, server index), sorted by point.
    ring: Vec<(u64, usize)>,
    config: MemcachedConfig,
    metrics: Handles,
}

#[derive(Debug)]
struct Server {
    address: String,
    idle: Mutex<Vec<Conn>>,
    permits: Semaphore,
    down_until: Mutex<Option<Instant>>,
}

type Conn = BufStream<TcpStream>;

#[derive(Debug, thiserror::Error)]
enum OpError {
    #[error("server marked down")]
    Down,
    #[error("connecting: {0}")]
    Connect(std::io::Error),
    #[error("i/o: {0}")]
    Io(std::io::Error),
    #[error("garbage from server: {0}")]
    Garbage(String),
    #[error("timed out")]
    Timeout,
}

impl OpError {
    fn reason(&self) -> &'static str {
        match self {
            OpError::Down => "server_down",
            OpError::Connect(_) => "connect",
            OpError::Io(_) => "io",
            OpError::Garbage(_) => "garbage",
            OpError::Timeout => "timeout",
        }
    }
}

impl From<std::io::Error> for OpError {
    fn from(e: std::io::Error) -> OpError {
        OpError::Io(e)
    }
}

impl MemcachedCache {
    pub fn new(
        config: MemcachedConfig,
        metrics: &CacheMetrics,
        cache_name: &str,
    ) -> Result<MemcachedCache, ConfigError> {
        let mut addresses: Vec<String> =
            config.servers.iter().map(|s| s.trim().to_owned()).collect();
        addresses.sort();
        addresses.dedup();
        if addresses.is_empty() {
            return Err(ConfigError::NoServers);
        }
        for address in &addresses {
            let valid = address
                .rsplit_once(':')
                .is_some_and(|(host, port)| !host.is_empty() && port.parse::<u16>().is_ok());
            if !valid {
                return Err(ConfigError::BadAddress(address.clone()));
            }
        }
        let mut ring = Vec::with_capacity(addresses.len() * VIRTUAL_NODES);
        for (index, address) in addresses.iter().enumerate() {
            for node in 0..VIRTUAL_NODES {
                ring.push((xxh3_64(format!("{address}#{node}").as_bytes()), index));
            }
        }
        ring.sort_unstable();
        let max_connections = config.max_connections_per_server.max(1);
        Ok(MemcachedCache {
            servers: addresses
                .into_iter()
                .map(|address| Server {
                    address,
                    idle: Mutex::new(Vec::new()),
                    permits: Semaphore::new(max_connections),
                    down_until: Mutex::new(None),
                })
                .collect(),
            ring,
            config,
            metrics: metrics.handles(cache_name, "memcached"),
        })
    }

    /// The address of the server that holds `key` (a caller's key, before
    /// [`memcached_key`]).
    pub fn server_for(&self, key: &str) -> &str {
        &self.servers[self.server_index(&memcached_key(key))].address
    }

    fn server_index(&self, memcached_key: &str) -> usize {
        let hash = xxh3_64(memcached_key.as_bytes());
        let at = self.ring.partition_point(|(point, _)| *point < hash);
        self.ring[at % self.ring.len()].1
    }

    async fn get_from(&self, server: &Server, keys: Vec<String>) -> Vec<(String, Vec<u8>)> {
        let cap = self.max_value_read();
        let attempt = async {
            let (mut conn, _permit) = self.checkout(server).await?;
            let values = get_on(&mut conn, &keys, cap).await?;
            server.checkin(conn, self.config.max_connections_per_server);
            Ok(values)
        };
        match self.bounded(server, attempt).await {
            Ok(values) => {
                let bytes: usize = values.iter().map(|(_, v)| v.len()).sum();
                self.metrics.bytes_read.inc_by(bytes as u64);
                values
            }
            Err(e) => {
                self.failed(server, "get", keys.len(), &e);
                Vec::new()
            }
        }
    }

    async fn set_on_server(&self, server: &Server, entries: Vec<(String, Vec<u8>)>, exptime: u64) {
        let attempt = async {
            let (mut conn, _permit) = self.checkout(server).await?;
            let outcome = set_on(&mut conn, &entries, exptime).await?;
            server.checkin(conn, self.config.max_connections_per_server);
            Ok(outcome)
        };
        match self.bounded(server, attempt).await {
            Ok(SetOutcome { written, refused }) => {
                self.metrics.bytes_written.inc_by(written);
                if refused > 0 {
                    tracing::debug!(
                        server = server.address,
                        refused,
                        "memcached refused some sets"
                    );
                    self.metrics.skipped("refused", refused);
                }
            }
            Err(e) => {
                self.failed(server, "set", entries.len(), &e);
                self.metrics.skipped("failed", entries.len() as u64);
            }
        }
    }

    /// Runs `attempt` under the operation timeout and records what a failure
    /// says about the server's health.
    async fn bounded<T>(
        &self,
        server: &Server,
        attempt: impl Future<Output = Result<T, OpError>>,
    ) -> Result<T, OpError> {
        if server.is_down() {
            return Err(OpError::Down);
        }
        let result = tokio::time::timeout(self.config.timeout, attempt)
            .await
            .unwrap_or(Err(OpError::Timeout));
        match &result {
            // The server is unreachable or too slow: stop paying the timeout
            // on every request for a while.
            Err(OpError::Connect(_) | OpError::Timeout) => {
                server.mark_down(self.config.down_backoff);
                server.drop_idle();
            }
            // An established connection broke (e.g. memcached restarted):
            // its idle siblings are most likely broken too.
            Err(OpError::Io(_)) => server.drop_idle(),
            _ => {}
        }
        result
    }

    async fn checkout<'s>(
        &self,
        server: &'s Server,
    ) -> Result<(Conn, tokio::sync::SemaphorePermit<'s>), OpError> {
        let permit = server.permits.acquire().await.map_err(|_| OpError::Down)?;
        if let Some(conn) = server.pop_idle() {
            return Ok((conn, permit));
        }
        let stream = tokio::time::timeout(
            self.config.connect_timeout,
            TcpStream::connect(server.address.as_str()),
        )
        .await
        .map_err(|_| {
            OpError::Connect(std::io::Error::new(
                std::io::ErrorKind::TimedOut,
                "connect timed out",
            ))
        })?
        .map_err(OpError::Connect)?;
        // Requests are written whole; waiting to coalesce them only adds
        // latency.
        let _ = stream.set_nodelay(true);
        Ok((BufStream::new(stream), permit))
    }

    fn failed(&self, server: &Server, op: &str, keys: usize, error: &OpError) {
        tracing::debug!(
            server = server.address,
            op,
            keys,
            %error,
            "memcached operation failed; its keys are misses"
        );
        self.metrics.error(error.reason());
    }

    fn max_value_read(&self) -> usize {
        // Values are never written above the item limit; allow twice that
        // in case the server has a larger `-I`, but never allocate without
        // bound because of a garbage length.
        self.config.max_item_bytes.max(1 << 20).saturating_mul(2)
    }
}

impl Server {
    fn is_down(&self) -> bool {
        let down_until = self.down_until.lock().unwrap_or_else(|e| e.into_inner());
        down_until.is_some_and(|until| Instant::now() < until)
    }

    fn mark_down(&self, backoff: Duration) {
        tracing::debug!(
            server = self.address,
            ?backoff,
            "memcached server marked down"
        );
        *self.down_until.lock().unwrap_or_else(|e| e.into_inner()) = Some(Instant::now() + backoff);
    }

    fn pop_idle(&self) -> Option<Conn> {
        self.idle.lock().unwrap_or_else(|e| e.into_inner()).pop()
    }

    fn checkin(&self, conn: Conn, max_idle: usize) {
        let mut idle = self.idle.lock().unwrap_or_else(|e| e.into_inner());
        if idle.len() < max_idle {
            idle.push(conn);
        }
    }

    fn drop_idle(&self) {
        self.idle.lock().unwrap_or_else(|e| e.into_inner()).clear();
    }
}

/// Sends `get` for `keys` (pipelined in lines of bounded length) and reads
/// every reply. Any reply that is not exactly what was asked for is garbage:
/// the caller then drops the connection, and all these keys are misses.
async fn get_on(
    conn: &mut Conn,
    keys: &[String],
    max_value: usize,
) -> Result<Vec<(String, Vec<u8>)>, OpError> {
    let mut command = Vec::new();
    let mut lines = 0;
    let mut line_len = 0;
    for key in keys {
        if line_len > 0 && line_len + 1 + key.len() > MAX_GET_LINE {
            command.extend_from_slice(b"\r\n");
            lines += 1;
            line_len = 0;
        }
        if line_len == 0 {
            command.extend_from_slice(b"get");
            line_len = 3;
        }
        command.push(b' ');
        command.extend_from_slice(key.as_bytes());
        line_len += 1 + key.len();
    }
    if line_len > 0 {
        command.extend_from_slice(b"\r\n");
        lines += 1;
    }
    conn.write_all(&command).await?;
    conn.flush().await?;

    let asked: HashSet<&str> = keys.iter().map(String::as_str).collect();
    let mut values = Vec::new();
    let mut line = Vec::new();
    let mut ends = 0;
    while ends < lines {
        read_line(conn, &mut line).await?;
        if line == b"END\r\n" {
            ends += 1;
            continue;
        }
        let text = std::str::from_utf8(&line[..line.len() - 2])
            .map_err(|_| garbage("non-UTF-8 reply line", &line))?;
        let mut parts = text.split(' ');
        let (Some("VALUE"), Some(key), Some(_flags), Some(len), None) = (
            parts.next(),
            parts.next(),
            parts.next(),
            parts.next(),
            parts.next(),
        ) else {
            return Err(garbage("unexpected reply", &line));
        };
        let len: usize = len
            .parse()
            .map_err(|_| garbage("bad value length", &line))?;
        if len > max_value {
            return Err(garbage("value length over the limit", &line));
        }
        if !asked.contains(key) {
            return Err(garbage("value for a key not asked for", &line));
        }
        let key = key.to_owned();
        let mut data = vec![0; len + 2];
        conn.read_exact(&mut data).await?;
        if !data.ends_with(b"\r\n") {
            return Err(garbage("value not followed by CRLF", &data[len..]));
        }
        data.truncate(len);
        values.push((key, data));
    }
    Ok(values)
}

struct SetOutcome {
    written: u64,
    refused: u64,
}

/// Sends every `set` at once (pipelined) and reads one reply line per entry.
async fn set_on(
    conn: &mut Conn,
    entries: &[(String, Vec<u8>)],
    exptime: u64,
) -> Result<SetOutcome, OpError> {
    let mut written = 0;
    for (key, value) in entries {
        let header = format!("set {key} 0 {exptime} {}\r\n", value.len());
        conn.write_all(header.as_bytes()).await?;
        conn.write_all(value).await?;
        conn.write_all(b"\r\n").await?;
        written += value.len() as u64;
    }
    conn.flush().await?;
    let mut refused = 0;
    let mut line = Vec::new();
    for _ in entries {
        read_line(conn, &mut line).await?;
        match line.as_slice() {
            b"STORED\r\n" => {}
            // "object too large" and "out of memory" leave the stream in
            // step (memcached swallows the data): a dropped write, not a
            // broken connection.
            l if l.starts_with(b"SERVER_ERROR ") || l == b"NOT_STORED\r\n" => refused += 1,
            _ => return Err(garbage("unexpected reply to set", &line)),
        }
    }
    Ok(SetOutcome { written, refused })
}

/// Reads one CRLF-terminated line of at most [`MAX_REPLY_LINE`] bytes.
async fn read_line(conn: &mut Conn, line: &mut Vec<u8>) -> Result<(), OpError> {
    line.clear();
    let n = (&mut *conn)
        .take(MAX_REPLY_LINE)
        .read_until(b'\n', line)
        .await?;
    if n == 0 {
        return Err(OpError::Io(std::io::ErrorKind::UnexpectedEof.into()));
    }
    if !line.ends_with(b"\r\n") {
        return Err(garbage("reply line too long or not CRLF-terminated", line));
    }
    Ok(())
}

fn garbage(what: &str, bytes: &[u8]) -> OpError {
    let shown = &bytes[..bytes.len().min(80)];
    OpError::Garbage(format!("{what}: {:?}", String::from_utf8_lossy(shown)))
}

/// The `exptime` memcached expects for `ttl`: seconds, rounded up, or an
/// absolute unix time beyond 30 days (where memcached switches meaning).
fn exptime(ttl: Duration) -> u64 {
    let seconds = ttl.as_secs() + u64::from(ttl.subsec_nanos() > 0);
    if seconds <= MAX_RELATIVE_EXPIRY {
        return seconds;
    }
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    now.saturating_add(seconds)
}

impl Cache for MemcachedCache {
    fn get_many<'a>(&'a self, keys: &'a [String]) -> BoxFuture<'a, HashMap<String, Vec<u8>>> {
        Box::pin(async move {
            // memcached key -> caller's key; duplicates asked once.
            let mut originals: HashMap<String, &String> = HashMap::with_capacity(keys.len());
            let mut by_server: HashMap<usize, Vec<String>> = HashMap::new();
            for key in keys {
                let mkey = memcached_key(key);
                if originals.contains_key(&mkey) {
                    continue;
                }
                by_server
                    .entry(self.server_index(&mkey))
                    .or_default()
                    .push(mkey.clone());
                originals.insert(mkey, key);
            }
            let replies = join_all(
                by_server
                    .into_iter()
                    .map(|(server, keys)| self.get_from(&self.servers[server], keys)),
            )
            .await;
            replies
                .into_iter()
                .flatten()
                .filter_map(|(mkey, value)| Some(((*originals.get(&mkey)?).clone(), value)))
                .collect()
        })
    }

    fn set_many(&self, entries: Vec<(String, Vec<u8>)>, ttl: Duration) -> BoxFuture<'_, ()> {
        Box::pin(async move {
            if ttl.is_zero() {
                self.metrics.skipped("zero_ttl", entries.len() as u64);
                return;
            }
            let exptime = exptime(ttl);
            let mut by_server: HashMap<usize, Vec<(String, Vec<u8>)>> = HashMap::new();
            for (key, value) in entries {
                let mkey = memcached_key(&key);
                if mkey.len() + value.len() + ITEM_OVERHEAD > self.config.max_item_bytes {
                    tracing::debug!(
                        key,
                        len = value.len(),
                        "value over memcached's item size; not stored"
                    );
                    self.metrics.skipped("too_large", 1);
                    continue;
                }
                by_server
                    .entry(self.server_index(&mkey))
                    .or_default()
                    .push((mkey, value));
            }
            join_all(by_server.into_iter().map(|(server, entries)| {
                self.set_on_server(&self.servers[server], entries, exptime)
            }))
            .await;
        })
    }
}
