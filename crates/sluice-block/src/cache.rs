//! In-process caches of what queries read again and again from blocks:
//! postings lists and chunks. One cache of each kind is shared by all
//! blocks, keyed by block and byte offset (both immutable), bounded by the
//! bytes it holds and evicting the least recently used entry first.
//!
//! A query over blocks in a bucket pays a ranged GET for every postings
//! list and chunk it misses; over a local directory a read. Repeated
//! dashboards ask the same series over and over, so a cache turns most of
//! those into a hash lookup. The counters ([`CacheStats`]) follow Mimir's
//! index cache (requests, hits, evictions, items, bytes); the metastore
//! exports them.
//!
//! The cache is split into shards, each under its own lock and bounded by
//! its share of the bytes, so that concurrent queries rarely wait on each
//! other; an entry larger than a shard is not cached at all.

use std::collections::{BTreeMap, HashMap};
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};

use bytes::Bytes;

use crate::chunkenc::Chunk;
use crate::meta::Ulid;

const SHARDS: usize = 8;
/// Bookkeeping per entry (key, order, map slots), counted with its bytes.
const ENTRY_OVERHEAD: u64 = 64;

/// What a cache holds and how many bytes each value weighs.
pub trait Weigh: Clone {
    fn weight(&self) -> u64;
}

impl Weigh for Bytes {
    fn weight(&self) -> u64 {
        self.len() as u64
    }
}

impl Weigh for Chunk {
    fn weight(&self) -> u64 {
        self.data().len() as u64
    }
}

/// A cached item: its block and its byte offset in the block's file.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct CacheKey {
    pub block: Ulid,
    pub offset: u64,
}

/// The counters of one cache, for metrics.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct CacheStats {
    pub requests: u64,
    pub hits: u64,
    pub evictions: u64,
    pub items: u64,
    pub bytes: u64,
    pub max_bytes: u64,
}

/// A cached value, when it was last used, and whether it was fetched
/// ahead of its first use (then that use counts as the miss it was).
struct Entry<V> {
    value: V,
    used: u64,
    prefetched: bool,
}

struct Shard<V> {
    entries: HashMap<CacheKey, Entry<V>>,
    /// Last use → key: the first entry is the least recently used.
    order: BTreeMap<u64, CacheKey>,
    bytes: u64,
    tick: u64,
}

impl<V: Weigh> Shard<V> {
    /// The value of `key`, now the most recently used, and whether this is
    /// the first use of a prefetched value.
    fn touch(&mut self, key: CacheKey) -> Option<(V, bool)> {
        self.tick += 1;
        let tick = self.tick;
        let entry = self.entries.get_mut(&key)?;
        self.order.remove(&entry.used);
        entry.used = tick;
        self.order.insert(tick, key);
        let first_use = std::mem::take(&mut entry.prefetched);
        Some((entry.value.clone(), first_use))
    }

    /// Adds `value`, evicting the least recently used entries until it
    /// fits in `max_bytes`; returns how many were evicted.
    fn insert(&mut self, key: CacheKey, entry: Entry<V>, max_bytes: u64) -> u64 {
        let weight = entry.value.weight() + ENTRY_OVERHEAD;
        if let Some(old) = self.entries.remove(&key) {
            self.order.remove(&old.used);
            self.bytes -= old.value.weight() + ENTRY_OVERHEAD;
        }
        let mut evicted = 0;
        while self.bytes + weight > max_bytes {
            let Some((_, oldest)) = self.order.pop_first() else {
                break;
            };
            if let Some(gone) = self.entries.remove(&oldest) {
                self.bytes -= gone.value.weight() + ENTRY_OVERHEAD;
                evicted += 1;
            }
        }
        self.tick += 1;
        self.order.insert(self.tick, key);
        let used = self.tick;
        self.entries.insert(key, Entry { used, ..entry });
        self.bytes += weight;
        evicted
    }
}

/// A least-recently-used cache bounded by bytes, safe to share.
pub struct BlockCache<V> {
    shards: Vec<Mutex<Shard<V>>>,
    shard_bytes: u64,
    requests: AtomicU64,
    hits: AtomicU64,
    evictions: AtomicU64,
}

impl<V: Weigh> BlockCache<V> {
    /// A cache holding at most `max_bytes` (values plus bookkeeping).
    pub fn new(max_bytes: u64) -> BlockCache<V> {
        let shards = (0..SHARDS)
            .map(|_| {
                Mutex::new(Shard {
                    entries: HashMap::new(),
                    order: BTreeMap::new(),
                    bytes: 0,
                    tick: 0,
                })
            })
            .collect();
        BlockCache {
            shards,
            shard_bytes: max_bytes / SHARDS as u64,
            requests: AtomicU64::new(0),
            hits: AtomicU64::new(0),
            evictions: AtomicU64::new(0),
        }
    }

    fn shard_index(key: &CacheKey) -> usize {
        // Offsets of neighbouring items differ in their low bits; the
        // block's random bits spread blocks. Both are already well mixed.
        let mixed = key.offset ^ (key.offset >> 17) ^ (key.block.0 as u64);
        (mixed % SHARDS as u64) as usize
    }

    fn shard(&self, key: &CacheKey) -> std::sync::MutexGuard<'_, Shard<V>> {
        self.shards[Self::shard_index(key)]
            .lock()
            .unwrap_or_else(|poison| poison.into_inner())
    }

    /// The value of `key`. A prefetched value's first use is counted as
    /// a miss: the query needed it and it was not cached before.
    pub fn get(&self, key: CacheKey) -> Option<V> {
        self.requests.fetch_add(1, Ordering::Relaxed);
        let (value, first_use) = self.shard(&key).touch(key)?;
        if !first_use {
            self.hits.fetch_add(1, Ordering::Relaxed);
        }
        Some(value)
    }

    /// Whether `key` is cached, without counting a request or using it.
    pub fn contains(&self, key: CacheKey) -> bool {
        self.shard(&key).entries.contains_key(&key)
    }

    /// Caches `value` unless it alone would fill more than a shard.
    pub fn insert(&self, key: CacheKey, value: V) {
        self.add(key, value, false);
    }

    /// Caches `value` fetched ahead of its use (see [`BlockCache::get`]).
    pub fn insert_prefetched(&self, key: CacheKey, value: V) {
        self.add(key, value, true);
    }

    fn add(&self, key: CacheKey, value: V, prefetched: bool) {
        if value.weight() + ENTRY_OVERHEAD > self.shard_bytes {
            return;
        }
        let entry = Entry {
            value,
            used: 0,
            prefetched,
        };
        let evicted = self.shard(&key).insert(key, entry, self.shard_bytes);
        self.evictions.fetch_add(evicted, Ordering::Relaxed);
    }

    pub fn stats(&self) -> CacheStats {
        let mut stats = CacheStats {
            requests: self.requests.load(Ordering::Relaxed),
            hits: self.hits.load(Ordering::Relaxed),
            evictions: self.evictions.load(Ordering::Relaxed),
            max_bytes: self.shard_bytes * SHARDS as u64,
            ..CacheStats::default()
        };
        for shard in &self.shards {
            let shard = shard.lock().unwrap_or_else(|poison| poison.into_inner());
            stats.items += shard.entries.len() as u64;
            stats.bytes += shard.bytes;
        }
        stats
    }
}

/// The caches blocks are opened with; `None` turns one off.
#[derive(Clone, Default)]
pub struct BlockCaches {
    pub postings: Option<std::sync::Arc<BlockCache<Bytes>>>,
    pub chunks: Option<std::sync::Arc<BlockCache<Chunk>>>,
}

impl BlockCaches {
    /// Caches of `postings_bytes` and `chunks_bytes`; 0 turns one off.
    pub fn with_sizes(postings_bytes: u64, chunks_bytes: u64) -> BlockCaches {
        BlockCaches {
            postings: (postings_bytes > 0)
                .then(|| std::sync::Arc::new(BlockCache::new(postings_bytes))),
            chunks: (chunks_bytes > 0).then(|| std::sync::Arc::new(BlockCache::new(chunks_bytes))),
        }
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    fn key(offset: u64) -> CacheKey {
        CacheKey {
            block: Ulid(7),
            offset,
        }
    }

    #[test]
    fn evicts_the_least_recently_used_first() {
        // One shard's worth: 8 shards of 1000 bytes.
        let cache: BlockCache<Bytes> = BlockCache::new(8 * 1000);
        // Offsets that land in one shard, found by trying.
        let same_shard: Vec<u64> = (0..10_000u64)
            .filter(|offset| {
                BlockCache::<Bytes>::shard_index(&key(*offset))
                    == BlockCache::<Bytes>::shard_index(&key(0))
            })
            .take(4)
            .collect();
        let value = Bytes::from(vec![0u8; 400 - ENTRY_OVERHEAD as usize]);
        cache.insert(key(same_shard[0]), value.clone());
        cache.insert(key(same_shard[1]), value.clone());
        assert!(cache.get(key(same_shard[0])).is_some());
        // A third does not fit: the least recently used (the second) goes.
        cache.insert(key(same_shard[2]), value.clone());
        assert!(cache.get(key(same_shard[1])).is_none());
        assert!(cache.get(key(same_shard[0])).is_some());
        assert!(cache.get(key(same_shard[2])).is_some());
        let stats = cache.stats();
        assert_eq!((stats.items, stats.bytes, stats.evictions), (2, 800, 1));
        assert_eq!((stats.requests, stats.hits), (4, 3));
        // Too big for a shard: not cached.
        cache.insert(key(99), Bytes::from(vec![0u8; 2000]));
        assert!(cache.get(key(99)).is_none());
    }

    #[test]
    fn a_prefetched_value_counts_as_a_miss_once() {
        let cache: BlockCache<Bytes> = BlockCache::new(1 << 20);
        cache.insert_prefetched(key(1), Bytes::from_static(b"chunk"));
        assert!(cache.contains(key(1)));
        assert_eq!(cache.stats().requests, 0);
        assert!(cache.get(key(1)).is_some());
        assert!(cache.get(key(1)).is_some());
        let stats = cache.stats();
        assert_eq!((stats.requests, stats.hits), (2, 1));
    }

    proptest! {
        #[test]
        fn never_holds_more_than_its_bound(
            operations in prop::collection::vec((0u64..64, 0usize..700, any::<bool>()), 1..400),
        ) {
            let cache: BlockCache<Bytes> = BlockCache::new(8 * 1024);
            let mut last = HashMap::new();
            for (offset, size, read) in operations {
                if read {
                    if let Some(found) = cache.get(key(offset)) {
                        prop_assert_eq!(Some(&found.len()), last.get(&offset));
                    }
                } else {
                    cache.insert(key(offset), Bytes::from(vec![offset as u8; size]));
                    last.insert(offset, size);
                }
                prop_assert!(cache.stats().bytes <= 8 * 1024);
            }
        }
    }
}
