//! The Redis backend against real redis-server processes (and fake servers
//! that misbehave on purpose).

use std::collections::HashSet;
use std::time::{Duration, Instant};

use sluice_cache::{
    BackendConfig, Cache, CacheConfig, CacheMetrics, Compression, RedisCache, RedisConfig,
    SharedCache, build, encode_value, redis_key,
};
use sluice_testkit::{RedisServer, closed_address, replying_server};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpStream;

const DAY: Duration = Duration::from_secs(86_400);

/// The operation timeout of the tests that are not about timeouts: Redis
/// answers in well under a millisecond, but a machine short of CPU can take
/// longer than the 500 ms default to move many megabytes.
const PATIENT: Duration = Duration::from_secs(5);

fn patient(endpoints: &[String]) -> RedisConfig {
    let mut config = RedisConfig::new(endpoints.to_vec());
    config.timeout = PATIENT;
    config.connect_timeout = PATIENT;
    config
}

fn raw(endpoints: &[String]) -> RedisCache {
    RedisCache::new(patient(endpoints), &CacheMetrics::unregistered(), "test").unwrap()
}

fn encoded(config: RedisConfig, compression: Compression) -> SharedCache {
    build(
        CacheConfig {
            name: "test".to_owned(),
            backend: BackendConfig::Redis(config),
            compression,
        },
        &CacheMetrics::unregistered(),
    )
    .unwrap()
}

/// Values with every byte, CR and LF included, so framing must be by length.
fn value_of(key: &str) -> Vec<u8> {
    let mut value = format!("<{key}>\r\n").repeat(20).into_bytes();
    value.extend(0..=255u8);
    value
}

fn entries(keys: &[String]) -> Vec<(String, Vec<u8>)> {
    keys.iter().map(|k| (k.clone(), value_of(k))).collect()
}

fn many_keys(n: usize) -> Vec<String> {
    (0..n).map(|i| format!("tenant-1:query-{i}")).collect()
}

/// Sends `commands` pipelined with a plain RESP client, bypassing sluice's,
/// and returns the first line of each reply.
async fn raw_commands(address: &str, commands: &[&[&[u8]]]) -> Vec<String> {
    let mut stream = BufReader::new(TcpStream::connect(address).await.unwrap());
    let mut bytes = Vec::new();
    for args in commands {
        bytes.extend_from_slice(format!("*{}\r\n", args.len()).as_bytes());
        for arg in *args {
            bytes.extend_from_slice(format!("${}\r\n", arg.len()).as_bytes());
            bytes.extend_from_slice(arg);
            bytes.extend_from_slice(b"\r\n");
        }
    }
    stream.get_mut().write_all(&bytes).await.unwrap();
    let mut replies = Vec::new();
    for _ in commands {
        let mut line = String::new();
        stream.read_line(&mut line).await.unwrap();
        replies.push(line);
    }
    replies
}

async fn raw_command(address: &str, args: &[&[u8]]) -> String {
    raw_commands(address, &[args]).await.remove(0)
}

#[tokio::test]
async fn sets_and_gets_many_binary_values_in_pipelined_batches() {
    let server = RedisServer::start().await;
    for compression in [Compression::None, Compression::Lz4] {
        let cache = encoded(patient(&[server.address()]), compression);
        // More keys than one MGET carries, so several are pipelined.
        let keys: Vec<String> = many_keys(350)
            .into_iter()
            .map(|k| format!("{k}:{compression:?}"))
            .collect();
        cache.set_many(entries(&keys), DAY).await;
        let mut asked = keys.clone();
        asked.insert(100, "never-written".to_owned());
        asked.push(keys[0].clone());
        let found = cache.get_many(&asked).await;
        assert_eq!(found.len(), keys.len());
        for key in &keys {
            assert_eq!(found[key], value_of(key), "{key}");
        }
    }
    let cache = raw(&[server.address()]);
    assert!(cache.get_many(&[]).await.is_empty());
    cache.set_many(Vec::new(), DAY).await;
}

#[tokio::test]
async fn odd_and_long_keys_round_trip_and_stay_distinct() {
    let server = RedisServer::start().await;
    let keys: Vec<String> = vec![
        "plain:key".to_owned(),
        "with space".to_owned(),
        "with\r\nnewline".to_owned(),
        "ünïcödé".to_owned(),
        String::new(),
        "x".repeat(1024),
        "x".repeat(1025),
        "y".repeat(300_000),
        "~h:looks-hashed".to_owned(),
        "*1\r\n$8\r\nFLUSHALL\r\n".to_owned(),
    ];
    let sent: HashSet<String> = keys.iter().map(|k| redis_key(k)).collect();
    assert_eq!(sent.len(), keys.len(), "distinct keys stay distinct");
    assert!(sent.iter().all(|k| k.len() <= 1024));
    let cache = encoded(patient(&[server.address()]), Compression::None);
    cache.set_many(entries(&keys), DAY).await;
    let found = cache.get_many(&keys).await;
    assert_eq!(found.len(), keys.len());
    for key in &keys {
        assert_eq!(found[key], value_of(key), "{key:?}");
    }
}

#[tokio::test]
async fn keys_spread_over_several_endpoints_and_each_holds_its_share() {
    let servers = [RedisServer::start().await, RedisServer::start().await];
    let addresses: Vec<String> = servers.iter().map(RedisServer::address).collect();
    let cache = raw(&addresses);
    let keys = many_keys(200);
    cache.set_many(entries(&keys), DAY).await;
    assert_eq!(cache.get_many(&keys).await.len(), 200);
    for address in &addresses {
        let here: Vec<String> = keys
            .iter()
            .filter(|k| cache.server_for(k) == address)
            .cloned()
            .collect();
        assert!(here.len() > 50, "{address} holds {} of 200", here.len());
        let only_here = raw(std::slice::from_ref(address));
        assert_eq!(only_here.get_many(&keys).await.len(), here.len());
    }
}

#[tokio::test]
async fn entries_expire_with_their_ttl_in_milliseconds() {
    let server = RedisServer::start().await;
    let cache = raw(&[server.address()]);
    cache
        .set_many(
            vec![("short".to_owned(), b"v".to_vec())],
            Duration::from_millis(300),
        )
        .await;
    cache
        .set_many(vec![("zero".to_owned(), b"v".to_vec())], Duration::ZERO)
        .await;
    cache
        .set_many(vec![("long".to_owned(), b"v".to_vec())], 40 * DAY)
        .await;
    let asked = vec!["short".to_owned(), "zero".to_owned(), "long".to_owned()];
    let found = cache.get_many(&asked).await;
    assert_eq!(
        found.keys().collect::<HashSet<_>>(),
        HashSet::from([&asked[0], &asked[2]]),
        "zero TTL stores nothing"
    );
    // Redis keeps the TTL it was given, to the millisecond.
    let pttl = raw_command(&server.address(), &[b"PTTL", b"short"]).await;
    let left: i64 = pttl.trim_start_matches(':').trim_end().parse().unwrap();
    assert!((1..=300).contains(&left), "{pttl:?}");
    tokio::time::sleep(Duration::from_millis(600)).await;
    let found = cache.get_many(&asked).await;
    assert_eq!(found.keys().collect::<Vec<_>>(), vec!["long"]);
}

#[tokio::test]
async fn large_values_round_trip_and_those_over_the_item_size_are_skipped() {
    let server = RedisServer::start().await;
    let mut config = patient(&[server.address()]);
    config.max_item_bytes = 12 << 20;
    let cache_config = CacheConfig {
        name: "test".to_owned(),
        backend: BackendConfig::Redis(config),
        compression: Compression::None,
    };
    let largest = cache_config.max_value_bytes(40);
    assert!(largest > 11 << 20, "{largest}");
    let cache = build(cache_config, &CacheMetrics::unregistered()).unwrap();
    let big: Vec<u8> = (0..largest).map(|i| (i % 251) as u8).collect();
    cache
        .set_many(
            vec![
                ("largest".to_owned(), big.clone()),
                ("one-more".to_owned(), vec![1; largest + 1]),
                ("small".to_owned(), b"s".to_vec()),
            ],
            DAY,
        )
        .await;
    let asked: Vec<String> = ["largest", "one-more", "small"]
        .iter()
        .map(|s| (*s).to_owned())
        .collect();
    let found = cache.get_many(&asked).await;
    assert_eq!(
        found.keys().collect::<HashSet<_>>(),
        HashSet::from([&asked[0], &asked[2]])
    );
    assert!(found["largest"] == big, "the 12 MiB value came back intact");
}

#[tokio::test]
async fn a_killed_server_is_a_quick_miss_and_used_again_once_restarted() {
    let mut server = RedisServer::start().await;
    let mut config = patient(&[server.address()]);
    config.down_backoff = Duration::from_millis(200);
    let registry = prometheus::Registry::new();
    let metrics = CacheMetrics::register(&registry).unwrap();
    let cache = RedisCache::new(config, &metrics, "t").unwrap();
    let keys = many_keys(20);
    cache.set_many(entries(&keys), DAY).await;
    // Warm the pool so the kill hits idle pooled connections too.
    assert_eq!(cache.get_many(&keys).await.len(), 20);

    server.kill();
    for round in 0..5 {
        let started = Instant::now();
        assert!(cache.get_many(&keys).await.is_empty(), "round {round}");
        cache.set_many(entries(&keys), DAY).await;
        // A dead server refuses at once: nothing waits out the timeout.
        assert!(started.elapsed() < PATIENT, "round {round}");
    }

    server.restart().await;
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        cache.set_many(entries(&keys), DAY).await;
        if cache.get_many(&keys).await.len() == 20 {
            break;
        }
        assert!(Instant::now() < deadline, "never reconnected");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let text = prometheus::TextEncoder::new()
        .encode_to_string(&registry.gather())
        .unwrap();
    assert!(
        text.contains(r#"sluice_cache_errors_total{backend="redis",cache="t",reason="io"}"#)
            || text.contains(
                r#"sluice_cache_errors_total{backend="redis",cache="t",reason="connect"}"#
            ),
        "{text}"
    );
}

#[tokio::test]
async fn passwords_users_and_databases_are_honoured() {
    let server = RedisServer::start_with_args(&["--requirepass", "s3cret"]).await;
    let address = server.address();
    let keys = many_keys(5);

    let anonymous = raw(std::slice::from_ref(&address));
    anonymous.set_many(entries(&keys), DAY).await;
    assert!(
        anonymous.get_many(&keys).await.is_empty(),
        "NOAUTH is a miss"
    );

    let mut wrong = patient(std::slice::from_ref(&address));
    wrong.password = "guess".to_owned();
    let wrong = RedisCache::new(wrong, &CacheMetrics::unregistered(), "t").unwrap();
    wrong.set_many(entries(&keys), DAY).await;
    assert!(
        wrong.get_many(&keys).await.is_empty(),
        "a refused AUTH is a miss"
    );

    let mut db3 = patient(std::slice::from_ref(&address));
    db3.password = "s3cret".to_owned();
    db3.db = 3;
    let mut db0 = db3.clone();
    db0.db = 0;
    let db3 = RedisCache::new(db3, &CacheMetrics::unregistered(), "t").unwrap();
    let db0 = RedisCache::new(db0, &CacheMetrics::unregistered(), "t").unwrap();
    db3.set_many(entries(&keys), DAY).await;
    assert_eq!(db3.get_many(&keys).await.len(), 5);
    assert!(
        db0.get_many(&keys).await.is_empty(),
        "database 0 is another"
    );

    // An ACL user, logged in with AUTH user password.
    let replies = raw_commands(
        &address,
        &[
            &[b"AUTH", b"s3cret"],
            &[
                b"ACL", b"SETUSER", b"sluice", b"on", b">pass", b"+@all", b"~*",
            ],
        ],
    )
    .await;
    assert_eq!(replies, ["+OK\r\n", "+OK\r\n"]);
    let mut user = patient(std::slice::from_ref(&address));
    user.username = "sluice".to_owned();
    user.password = "pass".to_owned();
    let user = RedisCache::new(user, &CacheMetrics::unregistered(), "t").unwrap();
    user.set_many(entries(&keys), DAY).await;
    assert_eq!(user.get_many(&keys).await.len(), 5);
}

#[tokio::test]
async fn foreign_truncated_and_misfiled_values_are_misses() {
    let server = RedisServer::start().await;
    let address = server.address();
    let cache = encoded(patient(std::slice::from_ref(&address)), Compression::Lz4);
    cache
        .set_many(vec![("good".to_owned(), b"fine".to_vec())], DAY)
        .await;
    let envelope = encode_value("elsewhere", &value_of("x"), Compression::None).unwrap();
    let cut = &envelope[..envelope.len() - 3];
    for (key, value) in [
        (&b"foreign"[..], &b"not sluice's"[..]),
        (b"empty", b""),
        (b"misfiled", &envelope),
        (b"cut", cut),
    ] {
        assert_eq!(
            raw_command(&address, &[b"SET", key, value]).await,
            "+OK\r\n"
        );
    }
    // A key holding a list, not a string: MGET answers nil for it.
    assert_eq!(
        raw_command(&address, &[b"RPUSH", b"list", b"a"]).await,
        ":1\r\n"
    );
    let asked: Vec<String> = ["good", "foreign", "empty", "misfiled", "cut", "list"]
        .iter()
        .map(|s| (*s).to_owned())
        .collect();
    let found = cache.get_many(&asked).await;
    assert_eq!(found.len(), 1, "{:?}", found.keys());
    assert_eq!(found["good"], b"fine");
}

#[tokio::test]
async fn garbage_and_silent_servers_become_misses_within_the_timeout() {
    let replies: [Option<&'static [u8]>; 8] = [
        Some(b"HELLO THERE\r\n"),
        Some(b"*2\r\n$3\r\nabc\r\n$3\r\nabc\r\n"),
        Some(b"*1\r\n$99999999999\r\n"),
        Some(b"*1\r\n$-7\r\n"),
        Some(b"*1\r\n$3\r\nabcdef\r\n"),
        Some(b"*1\r\n:5\r\n"),
        Some(b"-ERR unknown command\r\n"),
        None,
    ];
    let registry = prometheus::Registry::new();
    let metrics = CacheMetrics::register(&registry).unwrap();
    for reply in replies {
        let address = replying_server(reply).await;
        // The raw backend, so the protocol parser (not the envelope check)
        // is what must reject these replies.
        let cache = RedisCache::new(RedisConfig::new(vec![address]), &metrics, "fake").unwrap();
        let started = Instant::now();
        let found = cache.get_many(&["k".to_owned()]).await;
        cache
            .set_many(vec![("k".to_owned(), b"v".to_vec())], DAY)
            .await;
        assert!(found.is_empty(), "{reply:?}");
        // Within the 500 ms timeout (a set after a failed get is skipped as
        // down or times out too), with a margin for a loaded machine: a
        // client without a timeout waits for ever.
        assert!(
            started.elapsed() < Duration::from_secs(3),
            "{reply:?}: {:?}",
            started.elapsed()
        );
    }
    let text = prometheus::TextEncoder::new()
        .encode_to_string(&registry.gather())
        .unwrap();
    for reason in ["garbage", "timeout", "refused", "server_down"] {
        let series = format!(
            "sluice_cache_errors_total{{backend=\"redis\",cache=\"fake\",reason=\"{reason}\"}}"
        );
        assert!(text.contains(&series), "{series} missing in\n{text}");
    }
    // A well-formed reply from the same kind of fake server is accepted,
    // so the cases above failed for the right reason.
    let address = replying_server(Some(b"*1\r\n$5\r\na\r\nbc\r\n")).await;
    let cache = raw(&[address]);
    assert_eq!(cache.get_many(&["k".to_owned()]).await["k"], b"a\r\nbc");

    // Nothing listening at all: refused at once, not after a timeout.
    let closed = closed_address().await;
    let cache = encoded(patient(&[closed]), Compression::None);
    let started = Instant::now();
    assert!(cache.get_many(&["k".to_owned()]).await.is_empty());
    assert!(started.elapsed() < PATIENT);
}

#[tokio::test]
async fn a_server_that_stalls_mid_value_is_a_miss_after_the_timeout_and_no_sooner() {
    // Promises 1000 bytes, sends 3, then nothing.
    let address = replying_server(Some(b"*1\r\n$1000\r\nabc")).await;
    let mut config = RedisConfig::new(vec![address]);
    config.timeout = Duration::from_millis(300);
    let cache = RedisCache::new(config, &CacheMetrics::unregistered(), "t").unwrap();
    let started = Instant::now();
    assert!(cache.get_many(&["k".to_owned()]).await.is_empty());
    let took = started.elapsed();
    assert!(
        took >= Duration::from_millis(300) && took < Duration::from_secs(3),
        "{took:?}"
    );
}

#[tokio::test]
async fn bad_configurations_are_refused_at_startup() {
    let metrics = CacheMetrics::unregistered();
    for endpoints in [vec![], vec!["no-port".to_owned()], vec![":6379".to_owned()]] {
        assert!(RedisCache::new(RedisConfig::new(endpoints.clone()), &metrics, "t").is_err());
    }
}
