use std::path::Path;

use sluice_block::{BlockWriter, Labels, Matcher, Sample};
use sluice_bucket::BucketConfig;
use sluice_testkit::TempDir;

use super::*;

const H: i64 = 3_600_000;

fn runtime() -> &'static tokio::runtime::Runtime {
    static RUNTIME: OnceLock<tokio::runtime::Runtime> = OnceLock::new();
    RUNTIME.get_or_init(sluice_testkit::io_runtime)
}

/// `count` head-like 2h blocks of `series` series, a sample a minute,
/// under `<bucket>/t/`; returns every sample by job.
fn head_blocks(bucket: &Path, count: i64, series: usize) -> BTreeMap<String, Vec<Sample>> {
    let mut all: BTreeMap<String, Vec<Sample>> = BTreeMap::new();
    for k in 0..count {
        let mut writer = BlockWriter::new();
        for s in 0..series {
            let job = format!("job-{s:04}");
            let samples: Vec<Sample> = (0..120)
                .map(|i| Sample {
                    t: k * 2 * H + 30_000 + i * 60_000,
                    v: (k * 1000 + i + s as i64) as f64,
                })
                .collect();
            all.entry(job.clone()).or_default().extend(&samples);
            let labels = Labels::from_pairs(&[("__name__", "up"), ("job", &job)]);
            writer.add_series(labels, samples).unwrap();
        }
        writer.write(&bucket.join("t")).unwrap();
    }
    all
}

fn compactor(dir: &TempDir, retention: Duration) -> Arc<Compactor> {
    let bucket_config = BucketConfig {
        filesystem_dir: dir.path().join("bucket"),
        ..BucketConfig::default()
    };
    let bucket = Bucket::open(&bucket_config, runtime().handle().clone()).unwrap();
    let mut config = CompactorConfig::new(dir.path().join("compactor"));
    config.deletion_delay = Duration::from_secs(3600);
    config.retention = retention;
    Compactor::new(config, bucket, &prometheus::Registry::new())
}

/// Every sample of tenant t's live blocks, by job, merged as a querier
/// reads them.
fn read_live(compactor: &Compactor) -> (Vec<BlockMeta>, BTreeMap<String, Vec<Sample>>) {
    let mut metas = Vec::new();
    let mut all: BTreeMap<String, Vec<Sample>> = BTreeMap::new();
    for location in sluice_bucket::discover(&compactor.bucket).unwrap() {
        if location.tenant != "t" {
            continue;
        }
        let block = Block::open(Arc::new(location.dir(&compactor.bucket))).unwrap();
        let matcher = Matcher::equal("__name__", "up");
        for series in block.select(&[matcher], i64::MIN, i64::MAX, None).unwrap() {
            let job = series.labels.get("job").unwrap().to_owned();
            let samples = block.samples(&series, i64::MIN, i64::MAX);
            all.entry(job)
                .or_default()
                .extend(samples.map(Result::unwrap));
        }
        metas.push(block.meta().clone());
    }
    for samples in all.values_mut() {
        samples.sort_by_key(|sample| sample.t);
    }
    metas.sort_by_key(|meta| meta.min_time);
    (metas, all)
}

fn files_under(path: &Path) -> usize {
    let Ok(entries) = std::fs::read_dir(path) else {
        return 0;
    };
    entries
        .map(|entry| entry.unwrap().path())
        .map(|path| if path.is_dir() { files_under(&path) } else { 1 })
        .sum()
}

#[test]
fn a_window_of_small_blocks_is_merged_then_its_sources_deleted_after_the_delay() {
    let dir = TempDir::new("compactor-run").unwrap();
    let series = 1000;
    let written = head_blocks(&dir.path().join("bucket"), 8, series);
    let compactor = compactor(&dir, Duration::ZERO);
    let changes = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let counted = Arc::clone(&changes);
    compactor.on_change(move || {
        counted.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    });
    let now = 20 * H;

    let started = Instant::now();
    let report = compactor.run_once(now).unwrap();
    println!(
        "compacted 6 blocks of {series} series ({} samples) into one in {:?}",
        6 * 120 * series,
        started.elapsed()
    );
    assert_eq!(
        (report.compactions, report.blocks_merged, report.deleted),
        (1, 6, 0)
    );
    assert!(changes.load(std::sync::atomic::Ordering::Relaxed) >= 1);
    let (metas, read) = read_live(&compactor);
    assert_eq!(read, written, "sample for sample");
    let levels: Vec<u32> = metas.iter().map(|meta| meta.compaction.level).collect();
    assert_eq!(levels, [2, 1, 1]);
    assert_eq!(metas[0].compaction.sources.len(), 6);
    assert!(metas[0].min_time == 30_000 && metas[0].max_time <= 12 * H);
    let analysis =
        sluice_testkit::promtool_analyze(&dir.path().join("bucket/t"), &metas[0].ulid.to_string());
    assert!(
        analysis
            .lines()
            .any(|line| line == format!("Series: {series}")),
        "{analysis}"
    );
    assert_eq!(
        compactor.run_once(now).unwrap(),
        RunReport::default(),
        "nothing more to merge"
    );

    // The sources stay, marked, until the delay has passed.
    let marked = |dir: &TempDir| files_under(&dir.path().join("bucket/t/markers"));
    assert_eq!(marked(&dir), 6);
    assert_eq!(compactor.run_once(now + H - 1000).unwrap().deleted, 0);
    assert_eq!(compactor.run_once(now + H).unwrap().deleted, 6);
    assert_eq!(marked(&dir), 0);
    // index, meta.json, tombstones and one chunk segment a block.
    assert_eq!(files_under(&dir.path().join("bucket/t")), 3 * 4);
    assert_eq!(read_live(&compactor).1, written);
}

#[test]
fn blocks_past_the_retention_period_are_marked_then_deleted() {
    let dir = TempDir::new("compactor-retention").unwrap();
    let written = head_blocks(&dir.path().join("bucket"), 3, 2);
    let compactor = compactor(&dir, Duration::from_secs(24 * 3600));
    // The first block ends just before 2h: at 26h it is past 24h of retention.
    let now = 26 * H;
    let report = compactor.run_once(now).unwrap();
    assert_eq!((report.expired, report.compactions), (1, 0));
    let (metas, read) = read_live(&compactor);
    assert_eq!(metas.len(), 2);
    assert!(metas[0].min_time >= 2 * H);
    for (job, samples) in &written {
        let kept: Vec<Sample> = samples.iter().copied().filter(|s| s.t >= 2 * H).collect();
        assert_eq!(read[job], kept);
    }
    assert_eq!(compactor.run_once(now + H).unwrap().deleted, 1);
    assert!(compactor.run_once(now + H).unwrap() == RunReport::default());
}

#[test]
fn an_abandoned_partial_block_is_marked_then_deleted_but_a_recent_one_kept() {
    let dir = TempDir::new("compactor-partial").unwrap();
    let tenant = dir.path().join("bucket/t");
    let now = 100 * H;
    let old = Ulid::from_parts((now - 25 * H) as u64, 7);
    let recent = Ulid::from_parts((now - H) as u64, 8);
    for ulid in [old, recent] {
        std::fs::create_dir_all(tenant.join(format!("{ulid}/chunks"))).unwrap();
        std::fs::write(tenant.join(format!("{ulid}/chunks/000001")), b"half").unwrap();
    }
    let compactor = compactor(&dir, Duration::ZERO);
    let report = compactor.run_once(now).unwrap();
    assert_eq!((report.partial, report.deleted), (1, 0));
    assert!(tenant.join(format!("{old}/deletion-mark.json")).exists());
    assert_eq!(compactor.run_once(now + H).unwrap().deleted, 1);
    assert_eq!(files_under(&tenant.join(old.to_string())), 0);
    assert_eq!(
        files_under(&tenant.join(recent.to_string())),
        1,
        "an upload may be under way"
    );
}

#[test]
fn a_tenant_with_an_unreadable_block_does_not_stop_the_others() {
    let dir = TempDir::new("compactor-tenants").unwrap();
    let bucket = dir.path().join("bucket");
    head_blocks(&bucket, 8, 2);
    std::fs::rename(bucket.join("t"), bucket.join("broken")).unwrap();
    let written = head_blocks(&bucket, 8, 2);
    // The first block of `broken` loses its index: its merge fails.
    let first = std::fs::read_dir(bucket.join("broken"))
        .unwrap()
        .map(|entry| entry.unwrap().path())
        .min()
        .unwrap();
    std::fs::remove_file(first.join("index")).unwrap();
    let compactor = compactor(&dir, Duration::ZERO);
    let error = compactor.run_once(20 * H).unwrap_err().to_string();
    assert!(error.contains("of tenant broken"), "{error}");
    let (metas, read) = read_live(&compactor);
    let levels: Vec<u32> = metas.iter().map(|meta| meta.compaction.level).collect();
    assert_eq!(levels, [2, 1, 1], "tenant t was compacted");
    assert_eq!(read, written);
}

#[test]
fn ranges_are_validated_as_mimir_does() {
    let mut config = CompactorConfig::new("unused");
    assert_eq!(config.validate(), Ok(()));
    config.block_ranges = vec![Duration::from_secs(7200), Duration::from_secs(3 * 3600)];
    let error = config.validate().unwrap_err();
    assert!(error.contains("not a larger multiple"), "{error}");
    config.block_ranges.clear();
    assert!(config.validate().is_err());
}

#[test]
fn compaction_and_deletion_work_on_s3() {
    let moto = runtime().block_on(sluice_testkit::MotoServer::start());
    runtime().block_on(moto.create_bucket("blocks"));
    let bucket_config = BucketConfig::s3_plain_http(moto.endpoint(), "blocks", "test", "test");
    let bucket = Bucket::open(&bucket_config, runtime().handle().clone()).unwrap();
    let dir = TempDir::new("compactor-s3").unwrap();
    let written = head_blocks(dir.path(), 8, 10);
    for entry in std::fs::read_dir(dir.path().join("t")).unwrap() {
        let local = entry.unwrap().path();
        let name = local.file_name().unwrap().to_string_lossy().into_owned();
        bucket.upload_block(&local, &format!("t/{name}")).unwrap();
    }
    let mut config = CompactorConfig::new(dir.path().join("compactor"));
    config.deletion_delay = Duration::from_secs(60);
    let compactor = Compactor::new(config, bucket.clone(), &prometheus::Registry::new());
    let report = compactor.run_once(20 * H).unwrap();
    assert_eq!((report.compactions, report.blocks_merged), (1, 6));
    let (metas, read) = read_live(&compactor);
    assert_eq!(metas.len(), 3);
    assert_eq!(read, written);
    assert_eq!(compactor.run_once(20 * H + 60_000).unwrap().deleted, 6);
    let left = bucket.list_all(Some("t")).unwrap();
    assert_eq!(left.len(), 3 * 4, "{left:?}");
}
