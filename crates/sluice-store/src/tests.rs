use sluice_block::Matcher;
use sluice_remotewrite::proto::{Histogram, RequestV2, TimeSeries, TimeSeriesV2, WriteRequest};
use sluice_remotewrite::{Label as WireLabel, Sample};
use sluice_testkit::TempDir;

use super::*;

fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64
}

fn series(name: &str, job: &str, samples: &[(i64, f64)]) -> TimeSeries {
    TimeSeries {
        labels: vec![
            WireLabel {
                name: "__name__".into(),
                value: name.into(),
            },
            WireLabel {
                name: "job".into(),
                value: job.into(),
            },
        ],
        samples: samples
            .iter()
            .map(|(timestamp, value)| Sample {
                timestamp: *timestamp,
                value: *value,
            })
            .collect(),
        ..TimeSeries::default()
    }
}

fn body(timeseries: Vec<TimeSeries>) -> Vec<u8> {
    sluice_remotewrite::encode(&WriteRequest {
        timeseries,
        metadata: vec![],
    })
}

fn open(dir: &TempDir, registry: &prometheus::Registry) -> Arc<Store> {
    Store::open(StoreConfig::new(dir.path()), registry).unwrap()
}

fn stored(store: &Store, name: &str) -> usize {
    store
        .head()
        .select("t", &[Matcher::equal("__name__", name)], i64::MIN, i64::MAX)
        .iter()
        .flat_map(|series| &series.chunks)
        .map(|chunk| usize::from(u16::from_be_bytes([chunk.data[0], chunk.data[1]])))
        .sum()
}

fn discarded(registry: &prometheus::Registry, reason: &str) -> u64 {
    registry
        .gather()
        .iter()
        .filter(|family| family.name() == "sluice_discarded_samples_total")
        .flat_map(|family| family.get_metric())
        .filter(|metric| {
            metric
                .get_label()
                .iter()
                .any(|label| label.value() == reason)
        })
        .map(|metric| metric.get_counter().get_value() as u64)
        .sum()
}

#[test]
fn a_write_is_stored_and_survives_a_restart() {
    let dir = TempDir::new("store").unwrap();
    let now = now_ms();
    let points: Vec<(i64, f64)> = (0..10)
        .map(|i| (now - 10_000 + i * 1000, i as f64))
        .collect();
    {
        let store = open(&dir, &prometheus::Registry::new());
        let reply = store.ingest("t", Protocol::V1, &body(vec![series("up", "a", &points)]));
        assert_eq!(
            (reply.status, reply.written),
            (204, 10),
            "{}",
            reply.message
        );
        assert_eq!(stored(&store, "up"), 10);
        // A retry of the same batch stores nothing twice.
        let retry = store.ingest("t", Protocol::V1, &body(vec![series("up", "a", &points)]));
        assert_eq!((retry.status, retry.written), (204, 0));
        assert_eq!(stored(&store, "up"), 10);
    }
    let reopened = open(&dir, &prometheus::Registry::new());
    assert_eq!(stored(&reopened, "up"), 10);
    let more = reopened.ingest(
        "t",
        Protocol::V1,
        &body(vec![series("up", "a", &[(now, 42.0)])]),
    );
    assert_eq!(more.status, 204);
    assert_eq!(stored(&reopened, "up"), 11);
}

#[test]
fn bad_series_are_refused_and_good_ones_kept() {
    let dir = TempDir::new("store").unwrap();
    let registry = prometheus::Registry::new();
    let store = open(&dir, &registry);
    let now = now_ms();
    let mut histogram = series("latency", "a", &[]);
    histogram.histograms.push(Histogram { timestamp: now });
    let mut nameless = series("", "a", &[(now, 1.0)]);
    nameless.labels.remove(0);
    let batch = vec![
        series("up", "a", &[(now, 1.0), (now - 1000, 2.0)]),
        nameless,
        histogram,
        series("future", "a", &[(now + 3_600_000, 1.0)]),
        series("ok", "b", &[(now, 1.0)]),
    ];
    let reply = store.ingest("t", Protocol::V1, &body(batch));
    assert_eq!(reply.status, 400);
    assert!(
        reply
            .message
            .starts_with("received series has no metric name"),
        "{}",
        reply.message
    );
    assert!(
        reply.message.ends_with("(4 samples refused, 2 stored)"),
        "{}",
        reply.message
    );
    assert_eq!((stored(&store, "up"), stored(&store, "ok")), (1, 1));
    for reason in [
        "missing_metric_name",
        "native_histogram",
        "too_far_in_future",
        "sample_out_of_order",
    ] {
        assert_eq!(discarded(&registry, reason), 1, "{reason}");
    }
}

#[test]
fn broken_and_oversized_bodies_store_nothing() {
    let dir = TempDir::new("store").unwrap();
    let mut config = StoreConfig::new(dir.path());
    config.max_recv_msg_size = 64;
    let store = Store::open(config, &prometheus::Registry::new()).unwrap();
    let now = now_ms();
    let large: Vec<TimeSeries> = (0..20)
        .map(|i| series("up", &format!("job{i}"), &[(now, 1.0)]))
        .collect();
    assert_eq!(store.ingest("t", Protocol::V1, &body(large)).status, 413);
    assert_eq!(
        store.ingest("t", Protocol::V1, b"\x05not snappy").status,
        400
    );
    assert_eq!(store.head().series_count("t"), 0);
}

#[test]
fn the_rate_limit_answers_429_and_stores_nothing() {
    let dir = TempDir::new("store").unwrap();
    let registry = prometheus::Registry::new();
    let mut config = StoreConfig::new(dir.path());
    config.ingestion_rate = 1.0;
    config.ingestion_burst = 5;
    let store = Store::open(config, &registry).unwrap();
    let now = now_ms();
    let points: Vec<(i64, f64)> = (0..6).map(|i| (now - 6000 + i * 1000, 1.0)).collect();
    let reply = store.ingest("t", Protocol::V1, &body(vec![series("up", "a", &points)]));
    assert_eq!(reply.status, 429);
    assert!(
        reply
            .message
            .contains("err-mimir-tenant-max-ingestion-rate")
    );
    assert_eq!(discarded(&registry, "rate_limited"), 6);
    assert_eq!(store.head().series_count("t"), 0);
    let fits = store.ingest(
        "t",
        Protocol::V1,
        &body(vec![series("up", "a", &points[..5])]),
    );
    assert_eq!(fits.status, 204);
}

#[test]
fn runtime_overrides_set_each_tenants_rate_and_series_limit_while_running() {
    let dir = TempDir::new("store").unwrap();
    let registry = prometheus::Registry::new();
    let mut config = StoreConfig::new(dir.path());
    let defaults = sluice_limits::TenantLimits {
        ingestion_rate: 1.0,
        ingestion_burst_size: 5,
        max_global_series_per_user: 2,
        ..sluice_limits::TenantLimits::default()
    };
    let overrides = Arc::new(sluice_limits::Overrides::new(defaults).unwrap());
    config.overrides = Some(Arc::clone(&overrides));
    let store = Store::open(config, &registry).unwrap();
    let now = now_ms();
    let points: Vec<(i64, f64)> = (0..6).map(|i| (now - 6000 + i * 1000, 1.0)).collect();
    let six = || body(vec![series("up", "a", &points)]);
    assert_eq!(store.ingest("a", Protocol::V1, &six()).status, 429);

    let file = "overrides:\n  a:\n    ingestion_rate: 1000\n    ingestion_burst_size: 100\n";
    overrides
        .apply(&sluice_limits::RuntimeConfig::parse(file).unwrap())
        .unwrap();
    // The bucket keeps its tokens (as Mimir's does); at 1000/s it holds
    // the six again within a few milliseconds.
    std::thread::sleep(std::time::Duration::from_millis(20));
    assert_eq!(store.ingest("a", Protocol::V1, &six()).status, 204);
    assert_eq!(
        store.ingest("b", Protocol::V1, &six()).status,
        429,
        "b keeps the defaults"
    );

    let three: Vec<TimeSeries> = ["x", "y", "z"]
        .iter()
        .map(|job| series("up", job, &[(now, 1.0)]))
        .collect();
    let reply = store.ingest("a", Protocol::V1, &body(three.clone()));
    assert_eq!((reply.status, reply.written), (400, 1), "{}", reply.message);
    assert!(
        reply.message.starts_with("per-user series limit of 2 exceeded (err-mimir-max-series-per-user). To adjust the related per-tenant limit, configure -ingester.max-global-series-per-user"),
        "{}",
        reply.message
    );
    assert_eq!(discarded(&registry, "per_user_series_limit"), 2);
    assert_eq!(store.head().series_count("a"), 2);

    let raised = "overrides:\n  a:\n    ingestion_rate: 1000\n    ingestion_burst_size: 100\n    max_global_series_per_user: 0\n";
    overrides
        .apply(&sluice_limits::RuntimeConfig::parse(raised).unwrap())
        .unwrap();
    assert_eq!(store.ingest("a", Protocol::V1, &body(three)).status, 204);
    assert_eq!(store.head().series_count("a"), 4, "0 is no limit");
}

#[test]
fn remote_write_2_is_stored() {
    let dir = TempDir::new("store").unwrap();
    let store = open(&dir, &prometheus::Registry::new());
    let request = RequestV2 {
        symbols: vec![
            "".into(),
            "__name__".into(),
            "up".into(),
            "job".into(),
            "v2".into(),
        ],
        timeseries: vec![TimeSeriesV2 {
            labels_refs: vec![1, 2, 3, 4],
            samples: vec![Sample {
                value: 3.0,
                timestamp: now_ms(),
            }],
            ..TimeSeriesV2::default()
        }],
    };
    let reply = store.ingest("t", Protocol::V2, &sluice_remotewrite::encode(&request));
    assert_eq!((reply.status, reply.written), (204, 1));
    assert_eq!(stored(&store, "up"), 1);
}

fn blocks_in(dir: &std::path::Path) -> Vec<sluice_block::Block> {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return Vec::new();
    };
    entries
        .map(|entry| entry.unwrap().path())
        .filter(|path| path.join("meta.json").exists())
        .map(|path| sluice_block::Block::open_dir(path).unwrap())
        .collect()
}

fn block_samples(block: &sluice_block::Block) -> usize {
    block
        .select(
            &[Matcher::equal("__name__", "up")],
            i64::MIN,
            i64::MAX,
            None,
        )
        .unwrap()
        .iter()
        .map(|series| block.samples(series, i64::MIN, i64::MAX).count())
        .sum()
}

/// Drives the buckets' requests; the tests call the store from their own
/// (blocking) threads, as the store's cutting task does.
fn runtime() -> &'static tokio::runtime::Runtime {
    static RUNTIME: std::sync::OnceLock<tokio::runtime::Runtime> = std::sync::OnceLock::new();
    RUNTIME.get_or_init(sluice_testkit::io_runtime)
}

fn store_over(dir: &TempDir, bucket: &sluice_bucket::BucketConfig) -> Arc<Store> {
    let mut config = StoreConfig::new(dir.path().join("tsdb"));
    config.bucket = Some(sluice_bucket::Bucket::open(bucket, runtime().handle().clone()).unwrap());
    config.ingestion_rate = 0.0;
    Store::open(config, &prometheus::Registry::new()).unwrap()
}

fn cutting_store(dir: &TempDir) -> Arc<Store> {
    let bucket = sluice_bucket::BucketConfig {
        filesystem_dir: dir.path().join("blocks"),
        ..sluice_bucket::BucketConfig::default()
    };
    store_over(dir, &bucket)
}

#[test]
fn a_block_is_uploaded_to_s3_and_a_failed_upload_keeps_the_head() {
    let moto = runtime().block_on(sluice_testkit::MotoServer::start());
    let bucket =
        sluice_bucket::BucketConfig::s3_plain_http(moto.endpoint(), "blocks", "test", "test");
    let dir = TempDir::new("store-s3").unwrap();
    let store = store_over(&dir, &bucket);
    let now = now_ms();
    let points: Vec<(i64, f64)> = (0..300)
        .map(|i| (now - 300_000 + i * 1000, i as f64))
        .collect();
    let batch = vec![series("up", "a", &points), series("up", "b", &points)];
    assert_eq!(store.ingest("t", Protocol::V1, &body(batch)).status, 204);

    // The bucket does not exist yet: the upload fails, the head keeps all.
    let error = store.cut_blocks(true).unwrap_err().to_string();
    assert!(error.starts_with("uploading a block: "), "{error}");
    assert_eq!(stored(&store, "up"), 600, "a failed upload loses nothing");
    assert_eq!(store.metrics.upload_failures.get(), 1);
    assert!(
        !dir.path()
            .join("tsdb/staging/t")
            .read_dir()
            .unwrap()
            .any(|_| true)
    );

    runtime().block_on(moto.create_bucket("blocks"));
    let report = store.cut_blocks(true).unwrap();
    assert_eq!((report.blocks, report.samples), (1, 600));
    assert_eq!(
        stored(&store, "up"),
        0,
        "the head forgot the uploaded block"
    );
    let bucket = store.config().bucket.clone().unwrap();
    let found = sluice_bucket::discover(&bucket).unwrap();
    assert_eq!(found.len(), 1, "{found:?}");
    let files = found[0].files.clone().unwrap();
    assert!(files.contains_key("meta.json") && files.contains_key("chunks/000001"));
    let block = sluice_block::Block::open(Arc::new(found[0].dir(&bucket))).unwrap();
    assert_eq!(block_samples(&block), 600);
}

#[test]
fn a_flush_cuts_the_head_into_a_block_and_the_wal_forgets_it() {
    let dir = TempDir::new("store-flush").unwrap();
    let now = now_ms();
    let points: Vec<(i64, f64)> = (0..600)
        .map(|i| (now - 600_000 + i * 1000, i as f64))
        .collect();
    {
        let store = cutting_store(&dir);
        let notified = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let counter = Arc::clone(&notified);
        store.on_block(move || {
            counter.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        });
        let batch = vec![
            series("up", "a", &points),
            series("up", "b", &points[..300]),
        ];
        assert_eq!(store.ingest("t", Protocol::V1, &body(batch)).status, 204);
        let report = store.cut_blocks(true).unwrap();
        assert_eq!((report.blocks, report.series, report.samples), (1, 2, 900));
        assert_eq!(notified.load(std::sync::atomic::Ordering::Relaxed), 1);
        assert_eq!(
            stored(&store, "up"),
            0,
            "the head forgot what the block holds"
        );
        let blocks = blocks_in(&dir.path().join("blocks/t"));
        assert_eq!(blocks.len(), 1);
        assert_eq!(block_samples(&blocks[0]), 900);
        // Samples inside the cut range are refused now.
        let late = store.ingest(
            "t",
            Protocol::V1,
            &body(vec![series("up", "c", &[(now - 5000, 1.0)])]),
        );
        assert_eq!(late.status, 400);
        let analysis = sluice_testkit::promtool_analyze(
            &dir.path().join("blocks/t"),
            &blocks[0].meta().ulid.to_string(),
        );
        assert!(
            analysis.lines().any(|line| line == "Series: 2"),
            "{analysis}"
        );
    }
    let restarted = cutting_store(&dir);
    assert_eq!(stored(&restarted, "up"), 0, "cut samples are not replayed");
    let later = restarted.ingest(
        "t",
        Protocol::V1,
        &body(vec![series("up", "a", &[(now + 1000, 1.0)])]),
    );
    assert_eq!(later.status, 204);
    assert_eq!(stored(&restarted, "up"), 1);
}

#[test]
fn the_oldest_whole_range_is_cut_once_the_head_spans_one_and_a_half() {
    let dir = TempDir::new("store-cut").unwrap();
    let hour = 3_600_000;
    let now = now_ms();
    let points: Vec<(i64, f64)> = (0..(4 * 60))
        .map(|i| (now - 4 * hour + i * 60_000, i as f64))
        .collect();
    let store = cutting_store(&dir);
    assert_eq!(
        store
            .ingest("t", Protocol::V1, &body(vec![series("up", "a", &points)]))
            .status,
        204
    );
    let report = store.cut_blocks(false).unwrap();
    assert!(report.blocks >= 1, "{report:?}");
    let in_blocks: usize = blocks_in(&dir.path().join("blocks/t"))
        .iter()
        .map(block_samples)
        .sum();
    assert_eq!(
        in_blocks + stored(&store, "up"),
        points.len(),
        "every sample in a block or the head, once"
    );
    let (min_t, max_t) = store.head().time_range("t").unwrap();
    assert!(max_t - min_t <= 3 * hour, "{min_t} {max_t}");
    assert_eq!(store.cut_blocks(false).unwrap(), CutReport::default());
    drop(store);
    let restarted = cutting_store(&dir);
    assert_eq!(
        in_blocks + stored(&restarted, "up"),
        points.len(),
        "after replaying the checkpoint"
    );
}

#[test]
fn every_write_tells_its_tenant_and_oldest_sample() {
    let dir = TempDir::new("sluice-store-written").unwrap();
    let store = open(&dir, &prometheus::Registry::new());
    let heard = Arc::new(Mutex::new(Vec::new()));
    let sink = heard.clone();
    store.on_written(move |tenant, oldest| sink.lock().unwrap().push((tenant.to_owned(), oldest)));
    let now = now_ms();
    let two = body(vec![
        series("a", "x", &[(now - 5_000, 1.0), (now, 2.0)]),
        series("b", "x", &[(now - 9_000, 1.0)]),
    ]);
    assert_eq!(store.ingest("t", Protocol::V1, &two).status, 204);
    // A refused write stores nothing and tells nothing.
    let bad = body(vec![series("1bad", "x", &[(now, 1.0)])]);
    assert_eq!(store.ingest("u", Protocol::V1, &bad).status, 400);
    assert_eq!(*heard.lock().unwrap(), vec![("t".to_owned(), now - 9_000)]);
}
