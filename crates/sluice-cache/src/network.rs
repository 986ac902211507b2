//! What the networked backends (memcached, Redis) share: keys spread over
//! servers by consistent hashing, a small connection pool per server, a
//! timeout on every operation, and servers that fail skipped for a while.
//! A backend supplies only its wire protocol, as a [`Protocol`].

use std::collections::HashMap;
use std::future::Future;
use std::sync::Mutex;
use std::time::Duration;

use futures_util::future::join_all;
use tokio::io::{AsyncBufReadExt, AsyncReadExt, BufStream};
use tokio::net::TcpStream;
use tokio::sync::{Semaphore, SemaphorePermit};
use tokio::time::Instant;
use xxhash_rust::xxh3::{xxh3_64, xxh3_128};

use crate::ConfigError;
use crate::metrics::{CacheMetrics, Handles};

/// Keys that are hashed get this prefix; raw keys that happen to start with
/// it are hashed too, so a raw key can never equal a hashed one.
pub(crate) const HASHED_PREFIX: &str = "~h:";
/// Points per server on the hash ring: enough for an even spread (within a
/// few percent) over a handful of servers.
const VIRTUAL_NODES: usize = 160;
/// Reply lines other than values are short; anything longer is garbage.
const MAX_REPLY_LINE: u64 = 1024;

pub(crate) type Conn = BufStream<TcpStream>;

/// `~h:` followed by the hex of the 128-bit xxh3 hash of `key`: the key sent
/// for one the server cannot take (or should not store) as it is.
pub(crate) fn hashed_key(key: &str) -> String {
    format!("{HASHED_PREFIX}{:032x}", xxh3_128(key.as_bytes()))
}

#[derive(Debug, thiserror::Error)]
pub(crate) enum OpError {
    #[error("server marked down")]
    Down,
    #[error("connecting: {0}")]
    Connect(std::io::Error),
    #[error("i/o: {0}")]
    Io(std::io::Error),
    #[error("garbage from server: {0}")]
    Garbage(String),
    /// A well-formed error reply to a command every healthy server accepts
    /// (a refused AUTH, NOAUTH, LOADING).
    #[error("server refused: {0}")]
    Refused(String),
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
            OpError::Refused(_) => "refused",
            OpError::Timeout => "timeout",
        }
    }
}

impl From<std::io::Error> for OpError {
    fn from(e: std::io::Error) -> OpError {
        OpError::Io(e)
    }
}

/// What a `set` pipeline did: bytes sent, and entries the server refused
/// while keeping the stream in step (too large, out of memory).
pub(crate) struct SetOutcome {
    pub(crate) written: u64,
    pub(crate) refused: u64,
}

/// One backend's wire protocol. Every method may fail in any way; the
/// [`Cluster`] turns failures into misses and drops the connection.
pub(crate) trait Protocol: Send + Sync + 'static {
    /// The `backend` metric label and the name in log lines.
    const NAME: &'static str;

    /// The key sent to the server for a caller's key.
    fn server_key(key: &str) -> String;

    /// What the server counts against its item size limit for this entry.
    fn item_bytes(server_key: &str, value_len: usize) -> usize;

    /// Runs once on every new connection before it is used (log in, pick a
    /// database).
    fn prepare<'a>(
        &'a self,
        conn: &'a mut Conn,
    ) -> impl Future<Output = Result<(), OpError>> + Send + 'a;

    /// The values of those `keys` present on this server, keyed by the
    /// server key; a value longer than `max_value` is garbage.
    fn get<'a>(
        &'a self,
        conn: &'a mut Conn,
        keys: &'a [String],
        max_value: usize,
    ) -> impl Future<Output = Result<Vec<(String, Vec<u8>)>, OpError>> + Send + 'a;

    /// Stores every entry for `ttl` (never zero).
    fn set<'a>(
        &'a self,
        conn: &'a mut Conn,
        entries: &'a [(String, Vec<u8>)],
        ttl: Duration,
    ) -> impl Future<Output = Result<SetOutcome, OpError>> + Send + 'a;
}

/// The limits a [`Cluster`] works within; each backend's config maps onto
/// these.
#[derive(Debug, Clone)]
pub(crate) struct Settings {
    pub(crate) timeout: Duration,
    pub(crate) connect_timeout: Duration,
    pub(crate) max_connections_per_server: usize,
    pub(crate) max_item_bytes: usize,
    pub(crate) down_backoff: Duration,
}

impl Settings {
    /// The two timeouts, with one connection per server, a 1 MiB item limit
    /// and a 1 s backoff until set otherwise.
    pub(crate) fn new(timeout: Duration, connect_timeout: Duration) -> Settings {
        Settings {
            timeout,
            connect_timeout,
            max_connections_per_server: 1,
            max_item_bytes: 1 << 20,
            down_backoff: Duration::from_secs(1),
        }
    }

    pub(crate) fn with_limits(self, connections_per_server: usize, item_bytes: usize) -> Settings {
        Settings {
            max_connections_per_server: connections_per_server,
            max_item_bytes: item_bytes,
            ..self
        }
    }

    pub(crate) fn with_down_backoff(self, down_backoff: Duration) -> Settings {
        Settings {
            down_backoff,
            ..self
        }
    }
}

/// Servers speaking protocol `P`, with keys spread over them by consistent
/// hashing.
///
/// A server that is down, slow or sends garbage costs at most
/// [`Settings::timeout`] per call and turns its keys into misses and its
/// writes into no-ops; the other servers keep working. Keys of a down server
/// are not moved to the others, so a flapping server cannot leave stale
/// copies behind on them.
#[derive(Debug)]
pub(crate) struct Cluster<P> {
    servers: Vec<Server>,
    /// (point, server index), sorted by point.
    ring: Vec<(u64, usize)>,
    settings: Settings,
    protocol: P,
    metrics: Handles,
}

#[derive(Debug)]
struct Server {
    address: String,
    idle: Mutex<Vec<Conn>>,
    permits: Semaphore,
    down_until: Mutex<Option<Instant>>,
}

/// `servers` trimmed, sorted and deduplicated (so order and duplicates do not
/// change placement), each checked to be `host:port`.
fn normalized_addresses(servers: &[String]) -> Result<Vec<String>, ConfigError> {
    let mut addresses: Vec<String> = servers.iter().map(|s| s.trim().to_owned()).collect();
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
    Ok(addresses)
}

impl<P: Protocol> Cluster<P> {
    pub(crate) fn new(
        servers: &[String],
        settings: Settings,
        protocol: P,
        metrics: &CacheMetrics,
        cache_name: &str,
    ) -> Result<Cluster<P>, ConfigError> {
        let addresses = normalized_addresses(servers)?;
        let mut ring = Vec::with_capacity(addresses.len() * VIRTUAL_NODES);
        for (index, address) in addresses.iter().enumerate() {
            for node in 0..VIRTUAL_NODES {
                ring.push((xxh3_64(format!("{address}#{node}").as_bytes()), index));
            }
        }
        ring.sort_unstable();
        let max_connections = settings.max_connections_per_server.max(1);
        Ok(Cluster {
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
            settings,
            protocol,
            metrics: metrics.handles(cache_name, P::NAME),
        })
    }

    /// The address of the server that holds `key` (a caller's key).
    pub(crate) fn server_for(&self, key: &str) -> &str {
        &self.servers[self.server_index(&P::server_key(key))].address
    }

    fn server_index(&self, server_key: &str) -> usize {
        let hash = xxh3_64(server_key.as_bytes());
        let at = self.ring.partition_point(|(point, _)| *point < hash);
        self.ring[at % self.ring.len()].1
    }

    pub(crate) async fn get_many(&self, keys: &[String]) -> HashMap<String, Vec<u8>> {
        // server key -> caller's key; duplicates asked once.
        let mut originals: HashMap<String, &String> = HashMap::with_capacity(keys.len());
        let mut by_server: HashMap<usize, Vec<String>> = HashMap::new();
        for key in keys {
            let server_key = P::server_key(key);
            if originals.contains_key(&server_key) {
                continue;
            }
            by_server
                .entry(self.server_index(&server_key))
                .or_default()
                .push(server_key.clone());
            originals.insert(server_key, key);
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
            .filter_map(|(server_key, value)| Some(((*originals.get(&server_key)?).clone(), value)))
            .collect()
    }

    pub(crate) async fn set_many(&self, entries: Vec<(String, Vec<u8>)>, ttl: Duration) {
        if ttl.is_zero() {
            self.metrics.skipped("zero_ttl", entries.len() as u64);
            return;
        }
        let mut by_server: HashMap<usize, Vec<(String, Vec<u8>)>> = HashMap::new();
        for (key, value) in entries {
            let server_key = P::server_key(&key);
            if P::item_bytes(&server_key, value.len()) > self.settings.max_item_bytes {
                tracing::debug!(
                    key,
                    len = value.len(),
                    backend = P::NAME,
                    "value over the item size; not stored"
                );
                self.metrics.skipped("too_large", 1);
                continue;
            }
            by_server
                .entry(self.server_index(&server_key))
                .or_default()
                .push((server_key, value));
        }
        join_all(
            by_server
                .into_iter()
                .map(|(server, entries)| self.set_on(&self.servers[server], entries, ttl)),
        )
        .await;
    }

    async fn get_from(&self, server: &Server, keys: Vec<String>) -> Vec<(String, Vec<u8>)> {
        let cap = self.max_value_read();
        let attempt = async {
            let (mut conn, _permit) = self.checkout(server).await?;
            let values = self.protocol.get(&mut conn, &keys, cap).await?;
            server.checkin(conn, self.settings.max_connections_per_server);
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

    async fn set_on(&self, server: &Server, entries: Vec<(String, Vec<u8>)>, ttl: Duration) {
        let attempt = async {
            let (mut conn, _permit) = self.checkout(server).await?;
            let outcome = self.protocol.set(&mut conn, &entries, ttl).await?;
            server.checkin(conn, self.settings.max_connections_per_server);
            Ok(outcome)
        };
        match self.bounded(server, attempt).await {
            Ok(SetOutcome { written, refused }) => {
                self.metrics.bytes_written.inc_by(written);
                if refused > 0 {
                    tracing::debug!(
                        server = server.address,
                        backend = P::NAME,
                        refused,
                        "the server refused some sets"
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
        let result = tokio::time::timeout(self.settings.timeout, attempt)
            .await
            .unwrap_or(Err(OpError::Timeout));
        match &result {
            // The server is unreachable, too slow or will not serve us: stop
            // paying for it on every request for a while.
            Err(OpError::Connect(_) | OpError::Timeout | OpError::Refused(_)) => {
                server.mark_down(self.settings.down_backoff);
                server.drop_idle();
            }
            // An established connection broke (e.g. the server restarted):
            // its idle siblings are most likely broken too.
            Err(OpError::Io(_)) => server.drop_idle(),
            _ => {}
        }
        result
    }

    async fn checkout<'s>(
        &self,
        server: &'s Server,
    ) -> Result<(Conn, SemaphorePermit<'s>), OpError> {
        let permit = server.permits.acquire().await.map_err(|_| OpError::Down)?;
        if let Some(conn) = server.pop_idle() {
            return Ok((conn, permit));
        }
        let stream = tokio::time::timeout(
            self.settings.connect_timeout,
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
        let mut conn = BufStream::new(stream);
        self.protocol.prepare(&mut conn).await?;
        Ok((conn, permit))
    }

    fn failed(&self, server: &Server, op: &str, keys: usize, error: &OpError) {
        tracing::debug!(
            server = server.address,
            backend = P::NAME,
            op,
            keys,
            %error,
            "cache operation failed; its keys are misses"
        );
        self.metrics.error(error.reason());
    }

    fn max_value_read(&self) -> usize {
        // Values are never written above the item limit; allow twice that
        // in case the server allows larger ones, but never allocate without
        // bound because of a garbage length.
        self.settings.max_item_bytes.max(1 << 20).saturating_mul(2)
    }
}

impl Server {
    fn is_down(&self) -> bool {
        let down_until = self.down_until.lock().unwrap_or_else(|e| e.into_inner());
        down_until.is_some_and(|until| Instant::now() < until)
    }

    fn mark_down(&self, backoff: Duration) {
        tracing::debug!(server = self.address, ?backoff, "cache server marked down");
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

/// Implements [`crate::Cache`] for a backend type whose `cluster` field is a
/// [`Cluster`]: the cluster does all the work.
macro_rules! cache_over_cluster {
    ($backend:ty) => {
        impl $crate::Cache for $backend {
            fn get_many<'a>(
                &'a self,
                keys: &'a [String],
            ) -> $crate::BoxFuture<'a, std::collections::HashMap<String, Vec<u8>>> {
                Box::pin(self.cluster.get_many(keys))
            }

            fn set_many(
                &self,
                entries: Vec<(String, Vec<u8>)>,
                ttl: std::time::Duration,
            ) -> $crate::BoxFuture<'_, ()> {
                Box::pin(self.cluster.set_many(entries, ttl))
            }
        }
    };
}
pub(crate) use cache_over_cluster;

/// Reads one CRLF-terminated line of at most [`MAX_REPLY_LINE`] bytes.
pub(crate) async fn read_line(conn: &mut Conn, line: &mut Vec<u8>) -> Result<(), OpError> {
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

/// Reads `len` bytes of value and the CRLF after them.
pub(crate) async fn read_value(conn: &mut Conn, len: usize) -> Result<Vec<u8>, OpError> {
    let mut data = vec![0; len + 2];
    conn.read_exact(&mut data).await?;
    if !data.ends_with(b"\r\n") {
        return Err(garbage("value not followed by CRLF", &data[len..]));
    }
    data.truncate(len);
    Ok(data)
}

pub(crate) fn garbage(what: &str, bytes: &[u8]) -> OpError {
    let shown = &bytes[..bytes.len().min(80)];
    OpError::Garbage(format!("{what}: {:?}", String::from_utf8_lossy(shown)))
}
