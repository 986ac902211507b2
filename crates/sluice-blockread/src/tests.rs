use std::path::Path;

use sluice_block::{BlockWriter, Sample};
use sluice_bucket::{Bucket, BucketConfig};
use sluice_engine::{Engine, MemoryStorage, QueryOptions, QueryValue};
use sluice_testkit::TempDir;

use super::*;

type Data = Vec<(Labels, Vec<Sample>)>;

fn samples(from: i64, to: i64, value: impl Fn(i64) -> f64) -> Vec<Sample> {
    (from..to)
        .step_by(15_000)
        .map(|t| Sample { t, v: value(t) })
        .collect()
}

fn write(parent: &Path, data: &Data, deletions: &[(Labels, Interval)]) {
    let mut writer = BlockWriter::new();
    for (labels, samples) in data {
        writer.add_series(labels.clone(), samples.clone()).unwrap();
    }
    for (labels, interval) in deletions {
        writer.delete(labels.clone(), *interval);
    }
    writer.write(parent).unwrap();
}

fn storage_over(dir: &Path, runtime: &tokio::runtime::Runtime) -> BlockStorage {
    let config = BucketConfig {
        filesystem_dir: dir.to_owned(),
        ..BucketConfig::default()
    };
    let bucket = Bucket::open(&config, runtime.handle().clone()).unwrap();
    let metastore = Metastore::new(bucket, &prometheus::Registry::new());
    metastore.sync().unwrap();
    BlockStorage::new(&metastore, "anonymous", i64::MIN, i64::MAX)
}

fn evaluate(storage: &dyn Storage, query: &str, at: i64) -> QueryValue {
    Engine::new()
        .instant(storage, query, at, &QueryOptions::default())
        .unwrap()
        .value
}

const HOUR: i64 = 3_600_000;

#[test]
fn overlapping_blocks_and_tombstones_read_like_one_store() {
    let runtime = sluice_testkit::io_runtime();
    let dir = TempDir::new("blockread").unwrap();
    let a = Labels::from_pairs(&[("__name__", "x"), ("job", "a")]);
    let b = Labels::from_pairs(&[("__name__", "x"), ("job", "b")]);
    let counter = |t: i64| (t / 15_000) as f64;
    // Two blocks overlapping by an hour, with identical samples there.
    write(
        dir.path(),
        &vec![(a.clone(), samples(0, 3 * HOUR, counter))],
        &[],
    );
    let deleted = Interval {
        min_time: 4 * HOUR,
        max_time: 4 * HOUR + 600_000,
    };
    write(
        dir.path(),
        &vec![
            (a.clone(), samples(2 * HOUR, 6 * HOUR, counter)),
            (b.clone(), samples(0, 6 * HOUR, |_| 1.0)),
        ],
        &[(b.clone(), deleted)],
    );
    let storage = storage_over(dir.path(), &runtime);

    let memory = MemoryStorage::new();
    let to_pairs =
        |samples: Vec<Sample>| -> Vec<(i64, f64)> { samples.iter().map(|s| (s.t, s.v)).collect() };
    memory.append(&engine_labels(&a), &to_pairs(samples(0, 6 * HOUR, counter)));
    let kept: Vec<Sample> = samples(0, 6 * HOUR, |_| 1.0)
        .into_iter()
        .filter(|s| !deleted.contains(s.t))
        .collect();
    memory.append(&engine_labels(&b), &to_pairs(kept));

    for query in ["count_over_time(x[1h])", "rate(x[5m])", "x", "sum(x)"] {
        for at in [
            HOUR + 7_000,
            2 * HOUR + 30_000,
            4 * HOUR + 300_000,
            5 * HOUR + 1_000,
        ] {
            assert_eq!(
                evaluate(&storage, query, at),
                evaluate(&memory, query, at),
                "{query} at {at}"
            );
        }
    }
    // 240 samples an hour, each once, though two blocks hold 2h..3h.
    let QueryValue::Vector(counts) =
        evaluate(&storage, "count_over_time(x{job=\"a\"}[1h])", 3 * HOUR - 1)
    else {
        panic!("not a vector");
    };
    assert_eq!(counts[0].value, 240.0);
    let matchers = selector_matchers("x").unwrap();
    assert_eq!(
        series(&storage, &matchers, 0, 6 * HOUR).unwrap(),
        vec![a, b]
    );
    assert_eq!(
        label_names(&storage, &[], 0, 6 * HOUR).unwrap(),
        vec!["__name__", "job"]
    );
    let either = selector_matchers(r#"{job="a" or job="b"}"#).unwrap();
    assert_eq!(either.len(), 2);
    assert!(selector_matchers("rate(x[5m])").is_err());
    assert_eq!(
        label_values(&storage, "job", &either, 0, HOUR).unwrap(),
        vec!["a", "b"]
    );
}

#[test]
fn histogram_times_cover_the_chunk_evenly() {
    let origin = sluice_block::chunkenc::Origin {
        file: "chunks/000001".into(),
        offset: 8,
    };
    let chunk = Chunk::new(Encoding::Histogram, vec![0u8, 5].into(), origin);
    let meta = ChunkMeta {
        min_time: 1000,
        max_time: 5000,
        reference: sluice_block::ChunkRef(0),
    };
    assert_eq!(
        histogram_times(&chunk, &meta),
        vec![1000, 2000, 3000, 4000, 5000]
    );
}

/// Rewrites the encoding byte of `labels`' chunks in the block in `dir` to
/// a native histogram's, with checksums to match, as a block holding native
/// histograms would have them.
fn make_histogram_chunks(dir: &Path, labels: &Labels) {
    let block = Block::open_dir(dir).unwrap();
    let matchers: Vec<Matcher> = labels
        .iter()
        .map(|label| Matcher::new(MatchOp::Equal, label.name.clone(), label.value.clone()).unwrap())
        .collect();
    let selected = block.select(&matchers, i64::MIN, i64::MAX, None).unwrap();
    for meta in &selected[0].chunks {
        let data_len = block.chunk(meta).unwrap().data().len();
        let segment = format!("{:06}", meta.reference.segment() + 1);
        let path = dir.join("chunks").join(segment);
        let mut bytes = std::fs::read(&path).unwrap();
        let mut position = meta.reference.offset() as usize;
        while bytes[position] >= 0x80 {
            position += 1;
        }
        let encoding_at = position + 1;
        bytes[encoding_at] = Encoding::Histogram.as_byte();
        let crc_at = encoding_at + 1 + data_len;
        let crc = sluice_block::crc32c(&bytes[encoding_at..crc_at]);
        bytes[crc_at..crc_at + 4].copy_from_slice(&crc.to_be_bytes());
        std::fs::write(&path, bytes).unwrap();
    }
}

#[test]
fn native_histogram_chunks_are_an_execution_error() {
    let runtime = sluice_testkit::io_runtime();
    let dir = TempDir::new("blockread-histograms").unwrap();
    let floats = Labels::from_pairs(&[("__name__", "x")]);
    let histograms = Labels::from_pairs(&[("__name__", "h")]);
    let mut writer = BlockWriter::new();
    for labels in [&floats, &histograms] {
        writer
            .add_series(labels.clone(), samples(0, HOUR, |_| 1.0))
            .unwrap();
    }
    let written = writer.write(dir.path()).unwrap();
    make_histogram_chunks(&dir.path().join(written.ulid.to_string()), &histograms);
    let storage = storage_over(dir.path(), &runtime);
    let options = QueryOptions::default();
    for query in ["h", "rate(h[5m])", "sum(h) + sum(x)"] {
        let error = Engine::new()
            .instant(&storage, query, HOUR / 2, &options)
            .expect_err(query);
        assert_eq!(error.error_type(), "execution", "{query}: {error}");
        assert!(error.to_string().contains("native histograms"), "{error}");
    }
    let QueryValue::Vector(found) = evaluate(&storage, "x", HOUR / 2) else {
        panic!("not a vector");
    };
    assert_eq!(found.len(), 1);
}

#[test]
fn the_head_and_blocks_read_as_one_store_without_double_counting() {
    let runtime = sluice_testkit::io_runtime();
    let dir = TempDir::new("blockread-head").unwrap();
    let a = Labels::from_pairs(&[("__name__", "x"), ("job", "a")]);
    let only_head = Labels::from_pairs(&[("__name__", "x"), ("job", "h")]);
    let counter = |t: i64| (t / 15_000) as f64;
    // A block of the first three hours; the head holds hours two to four,
    // so an hour of samples is in both.
    write(
        dir.path(),
        &vec![(a.clone(), samples(0, 3 * HOUR, counter))],
        &[],
    );
    let head = Arc::new(sluice_head::Head::new(sluice_head::HeadOptions {
        out_of_order_window_ms: 10 * HOUR,
        ..sluice_head::HeadOptions::default()
    }));
    let to_pairs =
        |samples: Vec<Sample>| -> Vec<(i64, f64)> { samples.iter().map(|s| (s.t, s.v)).collect() };
    let batch = [
        sluice_head::AppendSeries {
            labels: a.clone(),
            samples: to_pairs(samples(2 * HOUR, 4 * HOUR, counter)),
        },
        sluice_head::AppendSeries {
            labels: only_head.clone(),
            samples: to_pairs(samples(0, 4 * HOUR, |_| 2.0)),
        },
    ];
    head.append("anonymous", &batch, |_| Ok::<(), ()>(()))
        .unwrap();
    let storage = storage_over(dir.path(), &runtime).with_head(Arc::clone(&head), "anonymous");
    let memory = MemoryStorage::new();
    memory.append(&engine_labels(&a), &to_pairs(samples(0, 4 * HOUR, counter)));
    memory.append(
        &engine_labels(&only_head),
        &to_pairs(samples(0, 4 * HOUR, |_| 2.0)),
    );
    for query in [
        "count_over_time(x[4h])",
        "sum(rate(x[1h]))",
        "x",
        "count(x)",
    ] {
        for at in [HOUR + 7_000, 3 * HOUR - 1, 4 * HOUR - 15_001] {
            assert_eq!(
                format!("{:?}", evaluate(&storage, query, at)),
                format!("{:?}", evaluate(&memory, query, at)),
                "{query} at {at}"
            );
        }
    }
    let all = vec![vec![promql_parser::label::Matcher::new(
        promql_parser::label::MatchOp::Equal,
        "__name__",
        "x",
    )]];
    assert_eq!(
        series(&storage, &all, 0, 4 * HOUR).unwrap(),
        vec![a, only_head]
    );
    assert_eq!(
        label_values(&storage, "job", &[], 0, 4 * HOUR).unwrap(),
        vec!["a", "h"]
    );
}

#[test]
fn fetch_limits_fail_a_query_with_mimirs_messages() {
    let runtime = sluice_testkit::io_runtime();
    let dir = TempDir::new("blockread-fetch").unwrap();
    let data: Data = ["a", "b", "c"]
        .iter()
        .map(|job| {
            let labels = Labels::from_pairs(&[("__name__", "x"), ("job", job)]);
            (labels, samples(0, HOUR, |_| 1.0))
        })
        .collect();
    write(dir.path(), &data, &[]);
    let run = |query: &str, max_series: usize, max_bytes: usize| {
        let storage = storage_over(dir.path(), &runtime).with_fetch_limits(max_series, max_bytes);
        Engine::new()
            .instant(&storage, query, HOUR - 1, &QueryOptions::default())
            .map(|output| output.value)
    };
    let too_many = run("x", 2, 0).unwrap_err();
    assert_eq!(too_many.error_type(), "execution");
    assert_eq!(too_many.to_string(), series_message(2));
    assert!(
        series_message(2).starts_with(
            "the query exceeded the maximum number of series (limit: 2 series) (err-mimir-max-series-per-query)."
        )
    );
    assert!(run("x{job='a'} + x{job='b'}", 2, 0).is_ok());
    assert!(
        run("x{job='a'} or x{job=~'a|b'}", 2, 0).is_ok(),
        "a series read twice counts once"
    );
    assert!(run("x", 3, 0).is_ok());
    assert!(run("x", 0, 0).is_ok(), "0 is no limit");

    let bytes = run("x", 0, 1).unwrap_err();
    assert_eq!(bytes.to_string(), chunk_bytes_message(1));
    assert!(
        chunk_bytes_message(1).contains("(limit: 1 bytes) (err-mimir-max-chunks-bytes-per-query)")
    );
    assert!(run("nothing", 0, 1).is_ok(), "no chunks fetched");
    assert!(run("x", 0, 1 << 20).is_ok());
}

#[test]
fn the_series_limit_holds_on_the_metadata_endpoints() {
    let runtime = sluice_testkit::io_runtime();
    let dir = TempDir::new("blockread-fetch-metadata").unwrap();
    let data: Data = ["a", "b", "c"]
        .iter()
        .map(|job| {
            let labels = Labels::from_pairs(&[("__name__", "x"), ("job", job)]);
            (labels, samples(0, HOUR, |_| 1.0))
        })
        .collect();
    write(dir.path(), &data, &[]);
    let storage =
        |max_series: usize| storage_over(dir.path(), &runtime).with_fetch_limits(max_series, 0);
    let x = selector_matchers("x").unwrap();
    let refused = series(&storage(2), &x, 0, HOUR).unwrap_err();
    assert_eq!(refused.error_type(), "execution");
    assert_eq!(refused.to_string(), series_message(2));
    assert_eq!(series(&storage(3), &x, 0, HOUR).unwrap().len(), 3);
    let names = label_names(&storage(2), &x, 0, HOUR).unwrap_err();
    assert_eq!(names.to_string(), series_message(2));
    let values = label_values(&storage(2), "job", &x, 0, HOUR).unwrap_err();
    assert_eq!(values.to_string(), series_message(2));
    assert_eq!(
        label_values(&storage(2), "job", &[], 0, HOUR).unwrap(),
        ["a", "b", "c"],
        "without selectors the index answers and no series is fetched"
    );
    let one = selector_matchers("x{job='a'}").unwrap();
    assert_eq!(
        label_names(&storage(1), &one, 0, HOUR).unwrap(),
        ["__name__", "job"]
    );
}
