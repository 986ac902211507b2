//! The in-process backend: a sharded LRU bounded by bytes, with per-entry TTL.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Mutex, MutexGuard};
use std::time::Duration;

use tokio::time::Instant;
use xxhash_rust::xxh3::xxh3_64;

use crate::metrics::{CacheMetrics, Handles};
use crate::{BoxFuture, Cache, ConfigError};

/// Bytes charged per entry on top of its key and value: the map slot, the
/// LRU index entry and the key's second copy there. An estimate, but it
/// keeps a cache of many tiny entries from growing far past its budget.
pub const ENTRY_OVERHEAD_BYTES: usize = 96;

/// Below this many bytes per shard, fewer shards are used: tiny shards would
/// reject ordinary values as "too large" and evict far too early.
const MIN_SHARD_BYTES: u64 = 1 << 20;

/// Configuration of an [`InProcessCache`].
#[derive(Debug, Clone)]
pub struct InProcessConfig {
    /// Total budget in bytes: keys, values and [`ENTRY_OVERHEAD_BYTES`] per
    /// entry, across all shards.
    pub max_bytes: u64,
    /// Independent LRU shards (each a mutex and `max_bytes / shards` of the
    /// budget), so concurrent callers rarely contend. Lowered automatically
    /// so that each shard has at least 1 MiB (or to 1 for smaller caches).
    pub shards: usize,
}

impl InProcessConfig {
    /// `max_bytes` with the default 16 shards.
    pub fn with_max_bytes(max_bytes: u64) -> InProcessConfig {
        InProcessConfig {
            max_bytes,
            shards: 16,
        }
    }

    /// The shards a cache of this configuration has, and each one's budget.
    fn shard_layout(&self) -> (usize, usize) {
        let max_shards = (self.max_bytes / MIN_SHARD_BYTES).max(1);
        let shards = (self.shards.max(1) as u64).min(max_shards) as usize;
        let capacity = usize::try_from(self.max_bytes / shards as u64).unwrap_or(usize::MAX);
        (shards, capacity)
    }

    /// The largest value stored under `key_len` bytes of key: larger ones
    /// are not stored.
    pub fn max_value_bytes(&self, key_len: usize) -> usize {
        (self.shard_layout().1 / 2).saturating_sub(key_len + ENTRY_OVERHEAD_BYTES)
    }
}

/// A byte-bounded, sharded LRU cache living in this process.
///
/// Entries are charged `key.len() + value.len() + ENTRY_OVERHEAD_BYTES`; an
/// entry charged more than half of its shard's budget is rejected (so one
/// value cannot flush a whole shard). Expiry follows [`tokio::time::Instant`],
/// so tests can drive it with a paused tokio clock. Expired entries are
/// dropped when looked up and otherwise age out through the LRU order.
#[derive(Debug)]
pub struct InProcessCache {
    shards: Vec<Mutex<Shard>>,
    max_entry_bytes: usize,
    metrics: Handles,
}

#[derive(Debug)]
struct Shard {
    map: HashMap<String, Entry>,
    /// LRU order: the smallest tick is the least recently used key.
    order: BTreeMap<u64, String>,
    next_tick: u64,
    bytes: usize,
    capacity: usize,
}

#[derive(Debug)]
struct Entry {
    value: Vec<u8>,
    expires: Instant,
    tick: u64,
    charge: usize,
}

impl InProcessCache {
    pub fn new(
        config: InProcessConfig,
        metrics: &CacheMetrics,
        cache_name: &str,
    ) -> Result<InProcessCache, ConfigError> {
        if config.max_bytes == 0 {
            return Err(ConfigError::ZeroSize);
        }
        let (shards, capacity) = config.shard_layout();
        Ok(InProcessCache {
            shards: (0..shards)
                .map(|_| {
                    Mutex::new(Shard {
                        map: HashMap::new(),
                        order: BTreeMap::new(),
                        next_tick: 0,
                        bytes: 0,
                        capacity,
                    })
                })
                .collect(),
            max_entry_bytes: capacity / 2,
            metrics: metrics.handles(cache_name, "inprocess"),
        })
    }

    /// The largest entry (key + value + overhead) that is accepted.
    pub fn max_entry_bytes(&self) -> usize {
        self.max_entry_bytes
    }

    /// Bytes currently charged across all shards.
    pub fn size_bytes(&self) -> usize {
        (0..self.shards.len()).map(|i| self.lock(i).bytes).sum()
    }

    /// Entries currently held (expired ones not yet dropped included).
    pub fn len(&self) -> usize {
        (0..self.shards.len()).map(|i| self.lock(i).map.len()).sum()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    fn shard_of(&self, key: &str) -> usize {
        (xxh3_64(key.as_bytes()) % self.shards.len() as u64) as usize
    }

    fn lock(&self, shard: usize) -> MutexGuard<'_, Shard> {
        // A panic while holding the lock cannot leave a shard inconsistent in
        // a way that matters more than losing the cache, so keep serving.
        self.shards[shard]
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    fn get_sync(&self, keys: &[String]) -> HashMap<String, Vec<u8>> {
        let now = Instant::now();
        let mut found = HashMap::with_capacity(keys.len());
        let mut bytes_read = 0u64;
        for key in keys {
            let mut shard = self.lock(self.shard_of(key));
            match shard.map.get(key) {
                None => continue,
                Some(entry) if entry.expires <= now => {
                    shard.remove(key, &self.metrics);
                    continue;
                }
                Some(_) => {}
            }
            let value = shard.touch(key);
            bytes_read += value.len() as u64;
            found.insert(key.clone(), value);
        }
        self.metrics.bytes_read.inc_by(bytes_read);
        found
    }

    fn set_sync(&self, entries: Vec<(String, Vec<u8>)>, ttl: Duration) {
        if ttl.is_zero() {
            self.metrics.skipped("zero_ttl", entries.len() as u64);
            return;
        }
        // A TTL too large to add to "now" means "practically forever".
        let now = Instant::now();
        let expires = now
            .checked_add(ttl)
            .unwrap_or_else(|| now + Duration::from_secs(100 * 365 * 86_400));
        for (key, value) in entries {
            let charge = key.len() + value.len() + ENTRY_OVERHEAD_BYTES;
            let index = self.shard_of(&key);
            let mut shard = self.lock(index);
            // Drop any old value first, even if the new one is rejected: a
            // stale value must not outlive a newer write attempt.
            shard.remove(&key, &self.metrics);
            if charge > self.max_entry_bytes {
                tracing::debug!(key, charge, "in-process cache: entry too large, not stored");
                self.metrics.skipped("too_large", 1);
                continue;
            }
            while shard.bytes + charge > shard.capacity {
                let Some((_, oldest)) = shard.order.pop_first() else {
                    break;
                };
                if let Some(old) = shard.map.remove(&oldest) {
                    shard.bytes -= old.charge;
                    self.metrics.size_bytes.sub(old.charge as i64);
                    self.metrics.items.dec();
                    self.metrics.evictions.inc();
                }
            }
            self.metrics.bytes_written.inc_by(value.len() as u64);
            shard.insert(key, value, expires, charge, &self.metrics);
        }
    }
}

impl Shard {
    fn remove(&mut self, key: &str, metrics: &Handles) {
        if let Some(old) = self.map.remove(key) {
            self.order.remove(&old.tick);
            self.bytes -= old.charge;
            metrics.size_bytes.sub(old.charge as i64);
            metrics.items.dec();
        }
    }

    /// Marks `key` (present) most recently used and returns its value.
    fn touch(&mut self, key: &str) -> Vec<u8> {
        let tick = self.next_tick;
        self.next_tick += 1;
        let entry = self.map.get_mut(key).expect("caller checked presence");
        let old_tick = std::mem::replace(&mut entry.tick, tick);
        let value = entry.value.clone();
        let owned = self.order.remove(&old_tick).expect("LRU index in sync");
        self.order.insert(tick, owned);
        value
    }

    fn insert(
        &mut self,
        key: String,
        value: Vec<u8>,
        expires: Instant,
        charge: usize,
        metrics: &Handles,
    ) {
        let tick = self.next_tick;
        self.next_tick += 1;
        self.order.insert(tick, key.clone());
        self.map.insert(
            key,
            Entry {
                value,
                expires,
                tick,
                charge,
            },
        );
        self.bytes += charge;
        metrics.size_bytes.add(charge as i64);
        metrics.items.inc();
    }
}

impl Cache for InProcessCache {
    fn get_many<'a>(&'a self, keys: &'a [String]) -> BoxFuture<'a, HashMap<String, Vec<u8>>> {
        Box::pin(async move { self.get_sync(keys) })
    }

    fn set_many(&self, entries: Vec<(String, Vec<u8>)>, ttl: Duration) -> BoxFuture<'_, ()> {
        Box::pin(async move { self.set_sync(entries, ttl) })
    }
}
