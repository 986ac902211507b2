//! The memcached backend: the text protocol over TCP, on the shared
//! [`Cluster`] (consistent hashing, a small connection pool per server,
//! timeouts on every operation, servers that fail marked down briefly).

use std::collections::HashSet;
use std::future::Future;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use tokio::io::AsyncWriteExt;

use crate::ConfigError;
use crate::metrics::CacheMetrics;
use crate::network::{
    Cluster, Conn, HASHED_PREFIX, OpError, Protocol, SetOutcome, Settings, cache_over_cluster,
    garbage, hashed_key, read_line, read_value,
};

/// memcached's own limit on key length.
const MAX_KEY_LEN: usize = 250;
/// A `get` line is kept under this many bytes; longer key lists are sent as
/// several pipelined `get` commands (memcached bounds command lines).
const MAX_GET_LINE: usize = 2000;
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
        hashed_key(key)
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
    cluster: Cluster<TextProtocol>,
}

impl MemcachedCache {
    pub fn new(
        config: MemcachedConfig,
        metrics: &CacheMetrics,
        cache_name: &str,
    ) -> Result<MemcachedCache, ConfigError> {
        let settings = Settings::new(config.timeout, config.connect_timeout)
            .with_limits(config.max_connections_per_server, config.max_item_bytes)
            .with_down_backoff(config.down_backoff);
        let cluster = Cluster::new(&config.servers, settings, TextProtocol, metrics, cache_name)?;
        Ok(MemcachedCache { cluster })
    }

    /// The address of the server that holds `key` (a caller's key, before
    /// [`memcached_key`]).
    pub fn server_for(&self, key: &str) -> &str {
        self.cluster.server_for(key)
    }
}

/// memcached's text protocol.
#[derive(Debug)]
struct TextProtocol;

impl Protocol for TextProtocol {
    const NAME: &'static str = "memcached";

    fn server_key(key: &str) -> String {
        memcached_key(key)
    }

    fn item_bytes(server_key: &str, value_len: usize) -> usize {
        server_key.len() + value_len + ITEM_OVERHEAD
    }

    async fn prepare(&self, _conn: &mut Conn) -> Result<(), OpError> {
        Ok(())
    }

    fn get<'a>(
        &'a self,
        conn: &'a mut Conn,
        keys: &'a [String],
        max_value: usize,
    ) -> impl Future<Output = Result<Vec<(String, Vec<u8>)>, OpError>> + Send + 'a {
        get_on(conn, keys, max_value)
    }

    fn set<'a>(
        &'a self,
        conn: &'a mut Conn,
        entries: &'a [(String, Vec<u8>)],
        ttl: Duration,
    ) -> impl Future<Output = Result<SetOutcome, OpError>> + Send + 'a {
        set_on(conn, entries, exptime(ttl))
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
        values.push((key, read_value(conn, len).await?));
    }
    Ok(values)
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

cache_over_cluster!(MemcachedCache);
