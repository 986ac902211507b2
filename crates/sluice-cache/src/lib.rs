//! Cache backends for sluice's results cache: an in-process LRU bounded by
//! bytes, and memcached and Redis clients with consistent hashing, all behind
//! one object-safe [`Cache`] trait, plus an [`EncodedCache`] layer that adds
//! optional compression and an integrity envelope. The cache is an
//! accelerator only, so nothing here returns an error to its caller: a cache
//! that is down, slow, full or returns garbage becomes a miss (or a dropped
//! write), logged at debug and counted in [`CacheMetrics`].
//!
//! Most callers want [`build`], which turns a [`CacheConfig`] into a
//! [`SharedCache`] (the chosen backend wrapped in an [`EncodedCache`]).
//!
//! ```
//! use std::time::Duration;
//! use sluice_cache::{BackendConfig, CacheConfig, CacheMetrics, Compression, InProcessConfig};
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() {
//! let metrics = CacheMetrics::register(&prometheus::Registry::new()).unwrap();
//! let cache = sluice_cache::build(
//!     CacheConfig {
//!         name: "results".to_owned(),
//!         backend: BackendConfig::InProcess(InProcessConfig::with_max_bytes(1 << 30)),
//!         compression: Compression::Lz4,
//!     },
//!     &metrics,
//! )
//! .unwrap();
//! cache.set_many(vec![("k".to_owned(), b"v".to_vec())], Duration::from_secs(60)).await;
//! let found = cache.get_many(&["k".to_owned(), "absent".to_owned()]).await;
//! assert_eq!(found.len(), 1);
//! # }
//! ```

mod codec;
mod inprocess;
mod memcached;
mod metrics;
mod network;
mod redis;

use std::collections::HashMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

pub use codec::{Compression, EncodedCache, decode_value, encode_value};
pub use inprocess::{ENTRY_OVERHEAD_BYTES, InProcessCache, InProcessConfig};
pub use memcached::{MemcachedCache, MemcachedConfig, memcached_key};
pub use metrics::CacheMetrics;
pub use redis::{RedisCache, RedisConfig, redis_key};

/// A boxed, `Send` future: what [`Cache`] methods return, so the trait stays
/// object-safe and the frontend can hold any backend as a [`SharedCache`].
pub type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// A key-value cache of opaque bytes that never fails: errors become misses
/// or dropped writes.
pub trait Cache: Send + Sync + 'static {
    /// The values of those `keys` that are present, keyed by the caller's
    /// key; missing, expired, failed or undecodable keys are simply absent.
    fn get_many<'a>(&'a self, keys: &'a [String]) -> BoxFuture<'a, HashMap<String, Vec<u8>>>;

    /// Stores `entries`, each for `ttl`, as best it can: entries that are too
    /// large, or a backend that is down, drop the write silently. A zero TTL
    /// stores nothing.
    fn set_many(&self, entries: Vec<(String, Vec<u8>)>, ttl: Duration) -> BoxFuture<'_, ()>;
}

/// The handle the frontend keeps: any backend, shareable across tasks.
pub type SharedCache = Arc<dyn Cache>;

impl<C: Cache + ?Sized> Cache for Arc<C> {
    fn get_many<'a>(&'a self, keys: &'a [String]) -> BoxFuture<'a, HashMap<String, Vec<u8>>> {
        (**self).get_many(keys)
    }

    fn set_many(&self, entries: Vec<(String, Vec<u8>)>, ttl: Duration) -> BoxFuture<'_, ()> {
        (**self).set_many(entries, ttl)
    }
}

/// Which backend a [`CacheConfig`] builds.
#[derive(Debug, Clone)]
pub enum BackendConfig {
    InProcess(InProcessConfig),
    Memcached(MemcachedConfig),
    Redis(RedisConfig),
}

/// Everything [`build`] needs.
#[derive(Debug, Clone)]
pub struct CacheConfig {
    /// The `cache` label on every metric (e.g. `results`, `metadata`), so
    /// two caches in one process are told apart.
    pub name: String,
    pub backend: BackendConfig,
    pub compression: Compression,
}

impl CacheConfig {
    /// The largest value a caller can store under `key_len` bytes of key
    /// (before compression, which may only shrink it): larger ones are
    /// dropped by the backend, so a caller that can trim its values (the
    /// results cache drops an entry's oldest extents) trims them to this.
    pub fn max_value_bytes(&self, key_len: usize) -> usize {
        let backend = match &self.backend {
            BackendConfig::InProcess(config) => config.max_value_bytes(key_len),
            BackendConfig::Memcached(config) => config.max_value_bytes(key_len),
            BackendConfig::Redis(config) => config.max_value_bytes(key_len),
        };
        backend.saturating_sub(codec::HEADER_LEN)
    }
}

/// A configuration that cannot work; reported once at startup, never later.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ConfigError {
    #[error("the cache backend needs at least one server address")]
    NoServers,
    #[error("cache server address {0:?} is not host:port")]
    BadAddress(String),
    #[error("in-process cache size must be more than 0 bytes")]
    ZeroSize,
}

/// Builds the configured backend wrapped in an [`EncodedCache`] (compression
/// and integrity checks), counting into `metrics`.
pub fn build(config: CacheConfig, metrics: &CacheMetrics) -> Result<SharedCache, ConfigError> {
    let name = config.name.as_str();
    let (backend, kind): (SharedCache, &str) = match config.backend {
        BackendConfig::InProcess(c) => (
            Arc::new(InProcessCache::new(c, metrics, name)?),
            "inprocess",
        ),
        BackendConfig::Memcached(c) => (
            Arc::new(MemcachedCache::new(c, metrics, name)?),
            "memcached",
        ),
        BackendConfig::Redis(c) => (Arc::new(RedisCache::new(c, metrics, name)?), "redis"),
    };
    Ok(Arc::new(EncodedCache::new(
        backend,
        config.compression,
        metrics,
        name,
        kind,
    )))
}
