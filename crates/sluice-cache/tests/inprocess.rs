//! The in-process backend: LRU eviction by bytes, TTL on a paused clock,
//! concurrent use, and the encoding layer on top of it.

use std::sync::Arc;
use std::time::Duration;

use sluice_cache::{
    BackendConfig, Cache, CacheConfig, CacheMetrics, Compression, ENTRY_OVERHEAD_BYTES,
    EncodedCache, InProcessCache, InProcessConfig, build,
};

const DAY: Duration = Duration::from_secs(86_400);

fn keys(names: &[&str]) -> Vec<String> {
    names.iter().map(|s| (*s).to_owned()).collect()
}

fn small_cache(max_bytes: u64) -> InProcessCache {
    InProcessCache::new(
        InProcessConfig::with_max_bytes(max_bytes),
        &CacheMetrics::unregistered(),
        "test",
    )
    .unwrap()
}

#[tokio::test]
async fn evicts_least_recently_used_entries_by_bytes() {
    // Under 1 MiB the cache is a single shard, so the budget is exact.
    let cache = small_cache(10_000);
    let charge = 2 + 1000 + ENTRY_OVERHEAD_BYTES;
    let fit = 10_000 / charge;
    assert_eq!(fit, 9);
    for i in 0..fit {
        cache
            .set_many(vec![(format!("k{i}"), vec![i as u8; 1000])], DAY)
            .await;
    }
    assert_eq!(cache.len(), fit);
    // Reading k0 makes k1 the least recently used.
    assert_eq!(cache.get_many(&keys(&["k0"])).await.len(), 1);
    cache
        .set_many(vec![("k9".to_owned(), vec![9; 1000])], DAY)
        .await;
    let all: Vec<String> = (0..10).map(|i| format!("k{i}")).collect();
    let found = cache.get_many(&all).await;
    assert!(!found.contains_key("k1"), "least recently used evicted");
    for i in [0, 2, 3, 4, 5, 6, 7, 8, 9] {
        assert_eq!(found[&format!("k{i}")], vec![i as u8; 1000], "k{i} kept");
    }
    assert!(cache.size_bytes() <= 10_000);
    assert_eq!(cache.size_bytes(), fit * charge);

    // One entry worth half the cache evicts as many as it needs.
    cache
        .set_many(vec![("big".to_owned(), vec![0; 4000])], DAY)
        .await;
    assert!(cache.size_bytes() <= 10_000);
    assert_eq!(cache.get_many(&keys(&["big"])).await["big"].len(), 4000);
}

#[tokio::test]
async fn rejects_entries_over_half_a_shard_and_forgets_the_old_value() {
    let cache = small_cache(10_000);
    assert_eq!(cache.max_entry_bytes(), 5_000);
    cache
        .set_many(vec![("k".to_owned(), b"old".to_vec())], DAY)
        .await;
    cache
        .set_many(vec![("k".to_owned(), vec![0; 6_000])], DAY)
        .await;
    assert!(cache.get_many(&keys(&["k"])).await.is_empty());
    assert_eq!(cache.size_bytes(), 0);
    assert!(cache.is_empty());
}

#[tokio::test]
async fn overwrites_replace_values_and_their_charge() {
    let cache = small_cache(10_000);
    cache
        .set_many(vec![("k".to_owned(), vec![1; 100])], DAY)
        .await;
    cache
        .set_many(vec![("k".to_owned(), vec![2; 10])], DAY)
        .await;
    assert_eq!(cache.get_many(&keys(&["k"])).await["k"], vec![2; 10]);
    assert_eq!(cache.size_bytes(), 1 + 10 + ENTRY_OVERHEAD_BYTES);
    assert_eq!(cache.len(), 1);
}

#[tokio::test(start_paused = true)]
async fn entries_expire_after_their_ttl() {
    let cache = small_cache(1 << 20);
    cache
        .set_many(
            vec![("short".to_owned(), b"a".to_vec())],
            Duration::from_secs(10),
        )
        .await;
    cache
        .set_many(
            vec![("long".to_owned(), b"b".to_vec())],
            Duration::from_secs(60),
        )
        .await;
    cache
        .set_many(vec![("zero".to_owned(), b"c".to_vec())], Duration::ZERO)
        .await;
    let both = keys(&["short", "long", "zero"]);
    tokio::time::advance(Duration::from_secs(9)).await;
    assert_eq!(
        cache.get_many(&both).await.len(),
        2,
        "zero TTL stores nothing"
    );
    tokio::time::advance(Duration::from_secs(2)).await;
    let found = cache.get_many(&both).await;
    assert_eq!(found.keys().collect::<Vec<_>>(), vec!["long"]);
    assert_eq!(cache.len(), 1, "expired entry dropped on lookup");
    tokio::time::advance(Duration::from_secs(50)).await;
    assert!(cache.get_many(&both).await.is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_readers_and_writers_see_only_correct_values() {
    let max = 4u64 << 20;
    let cache = Arc::new(
        InProcessCache::new(
            InProcessConfig::with_max_bytes(max),
            &CacheMetrics::unregistered(),
            "test",
        )
        .unwrap(),
    );
    let value_of = |i: u32| -> Vec<u8> { format!("value-{i}-").repeat(200).into_bytes() };
    let tasks: Vec<_> = (0..8u32)
        .map(|t| {
            let cache = cache.clone();
            tokio::spawn(async move {
                for round in 0..500u32 {
                    let i = (round * 7 + t * 131) % 3000;
                    cache
                        .set_many(vec![(format!("key-{i}"), value_of(i))], DAY)
                        .await;
                    let ask: Vec<String> = (0..5)
                        .map(|d| format!("key-{}", (i + d * 17) % 3000))
                        .collect();
                    for (key, value) in cache.get_many(&ask).await {
                        let n: u32 = key["key-".len()..].parse().unwrap();
                        assert_eq!(value, value_of(n), "value under {key}");
                    }
                }
            })
        })
        .collect();
    for task in tasks {
        task.await.unwrap();
    }
    assert!(cache.size_bytes() as u64 <= max);
    assert!(cache.len() > 100);
}

#[tokio::test]
async fn metrics_track_size_items_evictions_hits_and_misses() {
    let registry = prometheus::Registry::new();
    let metrics = CacheMetrics::register(&registry).unwrap();
    let cache = build(
        CacheConfig {
            name: "results".to_owned(),
            backend: BackendConfig::InProcess(InProcessConfig::with_max_bytes(10_000)),
            compression: Compression::None,
        },
        &metrics,
    )
    .unwrap();
    for i in 0..20 {
        cache
            .set_many(vec![(format!("k{i}"), vec![0; 1000])], DAY)
            .await;
    }
    cache.get_many(&keys(&["k19", "k0", "nope"])).await;
    let text = prometheus::TextEncoder::new()
        .encode_to_string(&registry.gather())
        .unwrap();
    let value = |series: &str| -> f64 {
        text.lines()
            .find(|l| l.starts_with(series))
            .unwrap_or_else(|| panic!("{series} missing in\n{text}"))
            .rsplit(' ')
            .next()
            .unwrap()
            .parse()
            .unwrap()
    };
    assert_eq!(
        value("sluice_cache_hits_total{backend=\"inprocess\",cache=\"results\"}"),
        1.0
    );
    assert_eq!(
        value("sluice_cache_misses_total{backend=\"inprocess\",cache=\"results\"}"),
        2.0
    );
    assert_eq!(
        value("sluice_cache_requests_total{backend=\"inprocess\",cache=\"results\",op=\"set\"}"),
        20.0
    );
    let items = value("sluice_cache_items{cache=\"results\"}");
    assert_eq!(items, 8.0);
    assert_eq!(
        value("sluice_cache_evictions_total{cache=\"results\"}"),
        12.0
    );
    assert!(value("sluice_cache_size_bytes{cache=\"results\"}") <= 10_000.0);
}

#[tokio::test]
async fn encoded_layer_round_trips_and_turns_foreign_values_into_misses() {
    let metrics = CacheMetrics::unregistered();
    let inner = small_cache(1 << 20);
    let cache = EncodedCache::new(inner, Compression::Lz4, &metrics, "test", "inprocess");
    let compressible = b"{\"metric\":{\"job\":\"api\"}}".repeat(100);
    cache
        .set_many(
            vec![
                ("a".to_owned(), compressible.clone()),
                ("b".to_owned(), Vec::new()),
            ],
            DAY,
        )
        .await;
    let found = cache.get_many(&keys(&["a", "b", "c"])).await;
    assert_eq!(found.len(), 2);
    assert_eq!(found["a"], compressible);
    assert_eq!(found["b"], b"");
    assert!(
        cache.inner().size_bytes() < compressible.len(),
        "stored compressed"
    );

    // Values written without the envelope, or moved under another key.
    let stored_a = cache
        .inner()
        .get_many(&keys(&["a"]))
        .await
        .remove("a")
        .unwrap();
    cache
        .inner()
        .set_many(
            vec![
                ("raw".to_owned(), b"plain bytes".to_vec()),
                ("moved".to_owned(), stored_a.clone()),
                ("cut".to_owned(), stored_a[..stored_a.len() - 1].to_vec()),
            ],
            DAY,
        )
        .await;
    assert!(
        cache
            .get_many(&keys(&["raw", "moved", "cut"]))
            .await
            .is_empty()
    );

    // A reader with another compression setting still decodes everything.
    let plain = EncodedCache::new(
        small_cache(1 << 20),
        Compression::None,
        &metrics,
        "t",
        "inprocess",
    );
    plain
        .inner()
        .set_many(vec![("a".to_owned(), stored_a)], DAY)
        .await;
    assert_eq!(plain.get_many(&keys(&["a"])).await["a"], compressible);
}

#[test]
fn zero_sized_cache_is_a_config_error() {
    assert!(
        InProcessCache::new(
            InProcessConfig::with_max_bytes(0),
            &CacheMetrics::unregistered(),
            "x"
        )
        .is_err()
    );
}
