//! The Redis backend: RESP2 spoken directly over TCP (pipelined `MGET` and
//! `SET key value PX ms`, `AUTH` and `SELECT` on every new connection), on
//! the shared [`Cluster`] (consistent hashing over the endpoints, a small
//! connection pool per server, timeouts on every operation, servers that
//! fail marked down briefly).
//!
//! Four commands are all it needs, so a client crate would bring more than
//! it saves; reading replies ourselves also bounds every length before
//! anything is allocated.

use std::fmt;
use std::time::Duration;

use tokio::io::AsyncWriteExt;

use crate::ConfigError;
use crate::metrics::CacheMetrics;
use crate::network::{
    Cluster, Conn, HASHED_PREFIX, OpError, Protocol, SetOutcome, Settings, cache_over_cluster,
    garbage, hashed_key, read_line, read_value,
};

/// Longer keys are sent hashed: a results-cache key holds the query, up to
/// 256 KiB of it, and Redis would keep every byte of it in memory.
const MAX_KEY_LEN: usize = 1024;
/// Keys per `MGET`; larger lists are sent as several pipelined `MGET`s, so
/// no single reply array grows with the caller's list.
const MAX_MGET_KEYS: usize = 100;

/// Configuration of a [`RedisCache`].
#[derive(Clone)]
pub struct RedisConfig {
    /// `host:port` of every server; keys are spread over them by consistent
    /// hashing (one is the usual case).
    pub endpoints: Vec<String>,
    /// Upper bound on one operation against one server, including waiting
    /// for a pooled connection, connecting, logging in, writing and reading.
    /// Default 500 ms.
    pub timeout: Duration,
    /// Upper bound on establishing a TCP connection. Default 100 ms.
    pub connect_timeout: Duration,
    /// The database selected on every connection (`SELECT`); 0 sends none.
    pub db: u32,
    /// The ACL user for `AUTH`; empty logs in with the password alone.
    pub username: String,
    /// The password for `AUTH`; empty sends no `AUTH`. Never logged.
    pub password: String,
    /// Connections per server, in use or idle. Default 8.
    pub max_connections_per_server: usize,
    /// Largest value stored: larger ones are not sent. Default 16 MiB.
    pub max_item_bytes: usize,
    /// How long a server that failed to connect, timed out or refused us is
    /// skipped (its keys are misses, its writes dropped). Default 1 s.
    pub down_backoff: Duration,
}

impl fmt::Debug for RedisConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RedisConfig")
            .field("endpoints", &self.endpoints)
            .field("timeout", &self.timeout)
            .field("connect_timeout", &self.connect_timeout)
            .field("db", &self.db)
            .field("username", &self.username)
            .field("password", &redacted(&self.password))
            .field(
                "max_connections_per_server",
                &self.max_connections_per_server,
            )
            .field("max_item_bytes", &self.max_item_bytes)
            .field("down_backoff", &self.down_backoff)
            .finish()
    }
}

fn redacted(secret: &str) -> &'static str {
    if secret.is_empty() { "" } else { "<redacted>" }
}

impl Default for RedisConfig {
    /// No endpoints, every other setting at its default.
    fn default() -> RedisConfig {
        RedisConfig::new(Vec::new())
    }
}

impl RedisConfig {
    /// The given endpoints with every other setting at its default.
    pub fn new(endpoints: Vec<String>) -> RedisConfig {
        RedisConfig {
            endpoints,
            timeout: Duration::from_millis(500),
            connect_timeout: Duration::from_millis(100),
            db: 0,
            username: String::new(),
            password: String::new(),
            max_connections_per_server: 8,
            max_item_bytes: 16 << 20,
            down_backoff: Duration::from_secs(1),
        }
    }

    /// The largest value sent: larger ones are not stored. Only the value
    /// counts (Redis bounds values by its own 512 MB, not key and value
    /// together as memcached does).
    pub fn max_value_bytes(&self, _key_len: usize) -> usize {
        self.max_item_bytes
    }
}

/// The key sent to Redis for `key`: `key` itself up to 1 KiB (Redis keys are
/// binary-safe), otherwise `~h:` and the hex of its 128-bit xxh3 hash.
pub fn redis_key(key: &str) -> String {
    if key.len() <= MAX_KEY_LEN && !key.starts_with(HASHED_PREFIX) {
        key.to_owned()
    } else {
        hashed_key(key)
    }
}

/// A Redis client for the results cache.
///
/// A server that is down, slow, refuses our password or sends garbage costs
/// at most [`RedisConfig::timeout`] per call and turns its keys into misses
/// and its writes into no-ops.
#[derive(Debug)]
pub struct RedisCache {
    cluster: Cluster<Resp>,
}

impl RedisCache {
    pub fn new(
        config: RedisConfig,
        metrics: &CacheMetrics,
        cache_name: &str,
    ) -> Result<RedisCache, ConfigError> {
        let settings = Settings::new(config.timeout, config.connect_timeout)
            .with_limits(config.max_connections_per_server, config.max_item_bytes)
            .with_down_backoff(config.down_backoff);
        let protocol = Resp::new(&config);
        let cluster = Cluster::new(&config.endpoints, settings, protocol, metrics, cache_name)?;
        Ok(RedisCache { cluster })
    }

    /// The address of the server that holds `key` (a caller's key).
    pub fn server_for(&self, key: &str) -> &str {
        self.cluster.server_for(key)
    }
}

cache_over_cluster!(RedisCache);

/// RESP2, with the commands a new connection starts with.
struct Resp {
    /// `AUTH` and `SELECT`, encoded once. Holds the password: never logged.
    handshake: Vec<u8>,
    handshake_replies: usize,
}

impl fmt::Debug for Resp {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Resp")
            .field("handshake_replies", &self.handshake_replies)
            .finish_non_exhaustive()
    }
}

impl Resp {
    fn new(config: &RedisConfig) -> Resp {
        let mut handshake = Vec::new();
        let mut handshake_replies = 0;
        if !config.password.is_empty() {
            let mut auth: Vec<&[u8]> = vec![b"AUTH"];
            if !config.username.is_empty() {
                auth.push(config.username.as_bytes());
            }
            auth.push(config.password.as_bytes());
            push_command(&mut handshake, &auth);
            handshake_replies += 1;
        }
        if config.db != 0 {
            let db = config.db.to_string();
            push_command(&mut handshake, &[b"SELECT", db.as_bytes()]);
            handshake_replies += 1;
        }
        Resp {
            handshake,
            handshake_replies,
        }
    }
}

impl Protocol for Resp {
    const NAME: &'static str = "redis";

    fn server_key(key: &str) -> String {
        redis_key(key)
    }

    fn item_bytes(_server_key: &str, value_len: usize) -> usize {
        value_len
    }

    async fn prepare(&self, conn: &mut Conn) -> Result<(), OpError> {
        if self.handshake_replies == 0 {
            return Ok(());
        }
        conn.write_all(&self.handshake).await?;
        conn.flush().await?;
        let mut line = Vec::new();
        for _ in 0..self.handshake_replies {
            if !read_ok(conn, &mut line).await? {
                // Redis's error names the problem, never the password.
                return Err(refused("AUTH or SELECT", &line));
            }
        }
        Ok(())
    }

    async fn get(
        &self,
        conn: &mut Conn,
        keys: &[String],
        max_value: usize,
    ) -> Result<Vec<(String, Vec<u8>)>, OpError> {
        let mut command = Vec::new();
        for chunk in keys.chunks(MAX_MGET_KEYS) {
            push_array_header(&mut command, chunk.len() + 1);
            push_bulk(&mut command, b"MGET");
            for key in chunk {
                push_bulk(&mut command, key.as_bytes());
            }
        }
        conn.write_all(&command).await?;
        conn.flush().await?;
        let mut values = Vec::new();
        let mut line = Vec::new();
        for chunk in keys.chunks(MAX_MGET_KEYS) {
            read_line(conn, &mut line).await?;
            if line.starts_with(b"-") {
                return Err(refused("MGET", &line));
            }
            if parse_length(&line, b'*') != Some(chunk.len() as i64) {
                return Err(garbage(
                    "MGET reply is not an array of the keys asked",
                    &line,
                ));
            }
            for key in chunk {
                if let Some(value) = read_bulk(conn, &mut line, max_value).await? {
                    values.push((key.clone(), value));
                }
            }
        }
        Ok(values)
    }

    async fn set(
        &self,
        conn: &mut Conn,
        entries: &[(String, Vec<u8>)],
        ttl: Duration,
    ) -> Result<SetOutcome, OpError> {
        // PX takes whole milliseconds, at least one.
        let ms = ttl.as_millis().max(1).to_string();
        let mut written = 0;
        let mut header = Vec::new();
        for (key, value) in entries {
            header.clear();
            push_array_header(&mut header, 5);
            push_bulk(&mut header, b"SET");
            push_bulk(&mut header, key.as_bytes());
            header.extend_from_slice(format!("${}\r\n", value.len()).as_bytes());
            conn.write_all(&header).await?;
            // The value goes out as it is, never copied into a command.
            conn.write_all(value).await?;
            header.clear();
            header.extend_from_slice(b"\r\n");
            push_bulk(&mut header, b"PX");
            push_bulk(&mut header, ms.as_bytes());
            conn.write_all(&header).await?;
            written += value.len() as u64;
        }
        conn.flush().await?;
        let mut refused = 0;
        let mut line = Vec::new();
        for _ in entries {
            // An error reply (OOM under maxmemory) is one line: the stream
            // stays in step, so it is a dropped write, not a broken link.
            if !read_ok(conn, &mut line).await? {
                refused += 1;
            }
        }
        Ok(SetOutcome { written, refused })
    }
}

fn push_array_header(out: &mut Vec<u8>, len: usize) {
    out.extend_from_slice(format!("*{len}\r\n").as_bytes());
}

/// A binary-safe bulk string: length first, so any byte may follow.
fn push_bulk(out: &mut Vec<u8>, bytes: &[u8]) {
    out.extend_from_slice(format!("${}\r\n", bytes.len()).as_bytes());
    out.extend_from_slice(bytes);
    out.extend_from_slice(b"\r\n");
}

fn push_command(out: &mut Vec<u8>, args: &[&[u8]]) {
    push_array_header(out, args.len());
    for arg in args {
        push_bulk(out, arg);
    }
}

/// Reads a reply that should be `+OK`: true if it is, false for an error
/// reply (the stream still in step), garbage otherwise.
async fn read_ok(conn: &mut Conn, line: &mut Vec<u8>) -> Result<bool, OpError> {
    read_line(conn, line).await?;
    match line.as_slice() {
        b"+OK\r\n" => Ok(true),
        l if l.starts_with(b"-") => Ok(false),
        _ => Err(garbage("expected +OK", line)),
    }
}

/// Reads one bulk string reply: `None` for a nil (a missing key, or a key
/// holding something other than a string).
async fn read_bulk(
    conn: &mut Conn,
    line: &mut Vec<u8>,
    max_value: usize,
) -> Result<Option<Vec<u8>>, OpError> {
    read_line(conn, line).await?;
    match parse_length(line, b'$') {
        Some(-1) => Ok(None),
        Some(len) if len >= 0 && len as u64 <= max_value as u64 => {
            Ok(Some(read_value(conn, len as usize).await?))
        }
        Some(_) => Err(garbage("bulk length out of bounds", line)),
        None => Err(garbage("expected a bulk string", line)),
    }
}

/// The number after `kind` in a `<kind><number>\r\n` line.
fn parse_length(line: &[u8], kind: u8) -> Option<i64> {
    let digits = line.strip_prefix(&[kind])?.strip_suffix(b"\r\n")?;
    std::str::from_utf8(digits).ok()?.parse().ok()
}

fn refused(command: &str, line: &[u8]) -> OpError {
    let shown = &line[..line.len().min(120)];
    OpError::Refused(format!(
        "{command}: {}",
        String::from_utf8_lossy(shown).trim_end()
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn commands_are_binary_safe_and_lengths_parse_strictly() {
        let mut out = Vec::new();
        push_command(&mut out, &[b"SET", b"a\r\nb", b""]);
        assert_eq!(out, b"*3\r\n$3\r\nSET\r\n$4\r\na\r\nb\r\n$0\r\n\r\n");
        assert_eq!(parse_length(b"*3\r\n", b'*'), Some(3));
        assert_eq!(parse_length(b"$-1\r\n", b'$'), Some(-1));
        assert_eq!(parse_length(b"$3\r\n", b'*'), None);
        assert_eq!(parse_length(b"$3 \r\n", b'$'), None);
        assert_eq!(parse_length(b"$99999999999999999999\r\n", b'$'), None);
        assert_eq!(parse_length(b"$3\n", b'$'), None);
    }

    #[test]
    fn long_and_prefixed_keys_are_hashed_and_stay_distinct() {
        assert_eq!(redis_key("with space\r\n"), "with space\r\n");
        let long = "q".repeat(MAX_KEY_LEN + 1);
        assert!(redis_key(&long).starts_with(HASHED_PREFIX));
        assert_eq!(redis_key(&"q".repeat(MAX_KEY_LEN)), "q".repeat(MAX_KEY_LEN));
        let hashed = redis_key(&long);
        assert_ne!(
            redis_key(&hashed),
            hashed,
            "a raw key never equals a hashed one"
        );
    }

    #[test]
    fn the_password_never_reaches_debug_output() {
        let mut config = RedisConfig::new(vec!["r:6379".to_owned()]);
        config.username = "sluice".to_owned();
        config.password = "hunter2-secret".to_owned();
        let shown = format!("{config:?} {:?}", Resp::new(&config));
        assert!(!shown.contains("hunter2"), "{shown}");
        assert!(
            shown.contains("<redacted>") && shown.contains("sluice"),
            "{shown}"
        );
    }
}
