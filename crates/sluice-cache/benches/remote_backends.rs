//! The Redis client against the memcached client, in one run on the same
//! machine: each backend's own real server, the same keys and values, and
//! the ratio of their times (Redis over memcached) as the result.
//!
//! Run with `cargo bench -p sluice-cache --bench remote_backends`. Each
//! round times every workload on both backends in turn (the order flipped
//! every other round, as the machine is shared) and takes the ratio within
//! the round; the median ratio over the rounds is printed, with the median
//! times for scale. A ratio near 1 means the Redis backend costs what the
//! memcached one does.

use std::time::{Duration, Instant};

use sluice_cache::{Cache, CacheMetrics, MemcachedCache, MemcachedConfig, RedisCache, RedisConfig};
use sluice_testkit::{MemcachedServer, RedisServer};

const ROUNDS: usize = 15;
const CALLS_PER_ROUND: usize = 100;
const PATIENT: Duration = Duration::from_secs(5);

struct Workload {
    name: &'static str,
    keys: usize,
    value_bytes: usize,
    write: bool,
}

const WORKLOADS: [Workload; 3] = [
    Workload {
        name: "get 20 x 4 KiB",
        keys: 20,
        value_bytes: 4 << 10,
        write: false,
    },
    Workload {
        name: "get 4 x 512 KiB",
        keys: 4,
        value_bytes: 512 << 10,
        write: false,
    },
    Workload {
        name: "set 20 x 4 KiB",
        keys: 20,
        value_bytes: 4 << 10,
        write: true,
    },
];

fn entries(workload: &Workload) -> Vec<(String, Vec<u8>)> {
    (0..workload.keys)
        .map(|i| {
            let value = (0..workload.value_bytes)
                .map(|b| (b * 31 + i) as u8)
                .collect();
            (format!("bench:{}:{i}", workload.value_bytes), value)
        })
        .collect()
}

/// Runs the workload `CALLS_PER_ROUND` times on `cache` and returns the
/// mean time of one call.
async fn timed(cache: &dyn Cache, workload: &Workload, data: &[(String, Vec<u8>)]) -> Duration {
    let keys: Vec<String> = data.iter().map(|(key, _)| key.clone()).collect();
    let started = Instant::now();
    for _ in 0..CALLS_PER_ROUND {
        if workload.write {
            cache
                .set_many(data.to_vec(), Duration::from_secs(600))
                .await;
        } else {
            let found = cache.get_many(&keys).await;
            assert_eq!(
                found.len(),
                keys.len(),
                "{}: every key found",
                workload.name
            );
        }
    }
    started.elapsed() / CALLS_PER_ROUND as u32
}

fn median<T: PartialOrd + Copy>(mut values: Vec<T>) -> T {
    values.sort_by(|a, b| a.partial_cmp(b).expect("comparable"));
    values[values.len() / 2]
}

async fn compare(memcached: &dyn Cache, redis: &dyn Cache, workload: &Workload) {
    let data = entries(workload);
    memcached
        .set_many(data.clone(), Duration::from_secs(600))
        .await;
    redis.set_many(data.clone(), Duration::from_secs(600)).await;
    let (mut ratios, mut memcached_times, mut redis_times) = (Vec::new(), Vec::new(), Vec::new());
    for round in 0..ROUNDS {
        let (m, r) = if round % 2 == 0 {
            let m = timed(memcached, workload, &data).await;
            (m, timed(redis, workload, &data).await)
        } else {
            let r = timed(redis, workload, &data).await;
            (timed(memcached, workload, &data).await, r)
        };
        ratios.push(r.as_secs_f64() / m.as_secs_f64());
        memcached_times.push(m);
        redis_times.push(r);
    }
    println!(
        "{:<18} redis/memcached {:.2}  (median per call: redis {:?}, memcached {:?})",
        workload.name,
        median(ratios),
        median(redis_times),
        median(memcached_times)
    );
}

fn main() {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("a runtime");
    runtime.block_on(async {
        let memcached_server = MemcachedServer::start().await;
        let redis_server = RedisServer::start().await;
        let metrics = CacheMetrics::unregistered();
        let mut memcached_config = MemcachedConfig::new(vec![memcached_server.address()]);
        memcached_config.timeout = PATIENT;
        let mut redis_config = RedisConfig::new(vec![redis_server.address()]);
        redis_config.timeout = PATIENT;
        let memcached = MemcachedCache::new(memcached_config, &metrics, "bench").expect("config");
        let redis = RedisCache::new(redis_config, &metrics, "bench").expect("config");
        for workload in &WORKLOADS {
            compare(&memcached, &redis, workload).await;
        }
    });
}
