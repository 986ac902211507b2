//! Checks the crate against real Prometheus: blocks promtool makes are read
//! back sample for sample, and blocks this crate writes are accepted by
//! `promtool tsdb list`, `analyze` and `dump`. promtool comes with Debian's
//! `prometheus` package (scripts/install-test-deps.sh); without it these
//! tests fail rather than skip, so a missing tool is never a silent pass.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::process::Command;

use sluice_block::{Block, BlockWriter, Labels, STALE_NAN, Sample, Ulid};

/// Samples by series, as written or as read.
type SeriesMap = BTreeMap<Labels, Vec<Sample>>;

fn promtool(args: &[&str]) -> String {
    let output = Command::new("promtool")
        .args(args)
        .output()
        .unwrap_or_else(|error| {
            panic!("promtool is required for these tests (apt-get install prometheus): {error}")
        });
    assert!(
        output.status.success(),
        "promtool {args:?} failed: {}\n{}",
        output.status,
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8(output.stdout).unwrap()
}

fn temp_dir(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("sluice-block-{name}-{}", Ulid::generate()));
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// 3 metrics × 4 series × 6 hours at 30 s (8,640 samples), timestamps with
/// milliseconds, values of every magnitude and some NaN.
fn generated_series() -> SeriesMap {
    let start = 1_700_000_000_000i64;
    let mut series = SeriesMap::new();
    for (metric_index, metric) in ["temperature_celsius", "queue_depth", "ratio"]
        .iter()
        .enumerate()
    {
        for instance in 0..4 {
            let labels = Labels::from_pairs(&[
                ("__name__", metric),
                ("instance", &format!("host-{instance}")),
                ("zone", ["a", "b"][instance % 2]),
            ]);
            let samples = (0..720i64)
                .map(|step| {
                    let t = start + step * 30_000 + (step * 7) % 1000;
                    let v = match (step + instance as i64) % 150 {
                        0 => f64::NAN,
                        _ => {
                            ((step * 37 + metric_index as i64 * 11) % 1000) as f64
                                * 10f64.powi(metric_index as i32 * 3 - 3)
                                - 5.0
                        }
                    };
                    Sample { t, v }
                })
                .collect();
            series.insert(labels, samples);
        }
    }
    series
}

fn openmetrics(series: &SeriesMap) -> String {
    let mut text = String::new();
    let mut current_metric = String::new();
    for (labels, samples) in series {
        let metric = labels.get("__name__").unwrap();
        if metric != current_metric {
            writeln!(text, "# TYPE {metric} gauge").unwrap();
            current_metric = metric.to_owned();
        }
        let rest: Vec<String> = labels
            .iter()
            .filter(|label| label.name != "__name__")
            .map(|label| format!("{}=\"{}\"", label.name, label.value))
            .collect();
        for sample in samples {
            let value = if sample.v.is_nan() {
                "NaN".to_owned()
            } else {
                sample.v.to_string()
            };
            writeln!(
                text,
                "{metric}{{{}}} {value} {}.{:03}",
                rest.join(","),
                sample.t / 1000,
                sample.t % 1000
            )
            .unwrap();
        }
    }
    text.push_str("# EOF\n");
    text
}

fn block_dirs(db: &Path) -> Vec<PathBuf> {
    let mut dirs: Vec<PathBuf> = std::fs::read_dir(db)
        .unwrap()
        .map(|entry| entry.unwrap().path())
        .filter(|path| path.join("meta.json").exists())
        .collect();
    dirs.sort();
    dirs
}

/// Every sample of every block under `db`, merged by series.
fn read_db(db: &Path) -> SeriesMap {
    let mut series = SeriesMap::new();
    for dir in block_dirs(db) {
        let block = Block::open_dir(&dir).unwrap();
        let mut samples_in_block = 0;
        for selected in block.select(&[], i64::MIN, i64::MAX, None).unwrap() {
            let samples: Vec<Sample> = block
                .samples(&selected, i64::MIN, i64::MAX)
                .collect::<Result<_, _>>()
                .unwrap();
            samples_in_block += samples.len() as u64;
            series.entry(selected.labels).or_default().extend(samples);
        }
        assert_eq!(
            samples_in_block,
            block.meta().stats.num_samples,
            "{}",
            dir.display()
        );
    }
    series
}

/// Equal timestamps and values, any NaN matching any NaN (the text format
/// cannot say which NaN).
fn assert_same_samples(read: &SeriesMap, written: &SeriesMap) {
    assert_eq!(
        read.keys().collect::<Vec<_>>(),
        written.keys().collect::<Vec<_>>()
    );
    for (labels, expected) in written {
        let actual = &read[labels];
        assert_eq!(actual.len(), expected.len(), "{labels}");
        for (actual, expected) in actual.iter().zip(expected) {
            let same_value = actual.v.to_bits() == expected.v.to_bits()
                || (actual.v.is_nan() && expected.v.is_nan());
            assert!(
                actual.t == expected.t && same_value,
                "{labels}: read {actual:?}, wrote {expected:?}"
            );
        }
    }
}

#[test]
fn blocks_promtool_creates_read_back_sample_for_sample() {
    let dir = temp_dir("from-promtool");
    let written = generated_series();
    std::fs::write(dir.join("input.om"), openmetrics(&written)).unwrap();
    let db = dir.join("db");
    promtool(&[
        "tsdb",
        "create-blocks-from",
        "openmetrics",
        dir.join("input.om").to_str().unwrap(),
        db.to_str().unwrap(),
    ]);
    // Six hours fall into several two-hour blocks.
    assert!(block_dirs(&db).len() >= 3, "{:?}", block_dirs(&db));
    assert_same_samples(&read_db(&db), &written);
    std::fs::remove_dir_all(&dir).unwrap();
}

fn written_block(db: &Path) -> (sluice_block::BlockMeta, SeriesMap) {
    let mut series = generated_series();
    // A stale marker and a far-off sample exercise the 64-bit buckets.
    let first = series.values_mut().next().unwrap();
    first[100].v = STALE_NAN;
    let last_t = first.last().unwrap().t;
    first.push(Sample {
        t: last_t + 40_000_000,
        v: 1e300,
    });
    // Small segments, so promtool also reads chunks past `chunks/000001`.
    let mut writer = BlockWriter::new().segment_size(8 * 1024);
    for (labels, samples) in &series {
        writer.add_series(labels.clone(), samples.clone()).unwrap();
    }
    let meta = writer.write(db).unwrap();
    assert!(
        db.join(meta.ulid.to_string())
            .join("chunks/000002")
            .exists()
    );
    (meta, series)
}

#[test]
fn promtool_lists_and_analyzes_blocks_we_write() {
    let db = temp_dir("to-promtool");
    let (meta, series) = written_block(&db);
    let listing = promtool(&["tsdb", "list", db.to_str().unwrap()]);
    let row: Vec<&str> = listing
        .lines()
        .find(|line| line.starts_with(&meta.ulid.to_string()))
        .unwrap()
        .split_whitespace()
        .collect();
    // ULID, min time, max time, duration, samples, chunks, series, size.
    assert_eq!(row[1], meta.min_time.to_string(), "{listing}");
    assert_eq!(row[2], meta.max_time.to_string(), "{listing}");
    let samples: usize = series.values().map(Vec::len).sum();
    assert_eq!(row[4], samples.to_string(), "{listing}");
    assert_eq!(row[5], meta.stats.num_chunks.to_string(), "{listing}");
    assert_eq!(row[6], "12", "{listing}");
    let analysis = promtool(&[
        "tsdb",
        "analyze",
        db.to_str().unwrap(),
        &meta.ulid.to_string(),
    ]);
    for expected in [
        "Series: 12",
        "Label names: 3",
        "Postings (unique label pairs): 9",
        "Postings entries (total label pairs): 36",
    ] {
        assert!(
            analysis.lines().any(|line| line == expected),
            "want {expected:?} in\n{analysis}"
        );
    }
    std::fs::remove_dir_all(&db).unwrap();
}

fn parse_dump(dump: &str) -> SeriesMap {
    let mut series = SeriesMap::new();
    for line in dump.lines() {
        // `{__name__="m", a="b"} value timestamp`
        let (labels, rest) = line.rsplit_once("} ").unwrap();
        let pairs: Vec<(String, String)> = labels
            .trim_start_matches('{')
            .split(", ")
            .map(|pair| {
                let (name, value) = pair.split_once('=').unwrap();
                (name.to_owned(), value.trim_matches('"').to_owned())
            })
            .collect();
        let borrowed: Vec<(&str, &str)> = pairs
            .iter()
            .map(|(name, value)| (name.as_str(), value.as_str()))
            .collect();
        let (value, t) = rest.split_once(' ').unwrap();
        let sample = Sample {
            t: t.parse().unwrap(),
            v: value.parse().unwrap(),
        };
        series
            .entry(Labels::from_pairs(&borrowed))
            .or_default()
            .push(sample);
    }
    series
}

#[test]
fn promtool_dump_prints_the_samples_we_wrote() {
    let db = temp_dir("dump");
    let (_, series) = written_block(&db);
    // promtool 2.42's dump opens the WAL directory and fails without one.
    std::fs::create_dir_all(db.join("wal")).unwrap();
    let dump = promtool(&["tsdb", "dump", db.to_str().unwrap()]);
    assert_same_samples(&parse_dump(&dump), &series);
    std::fs::remove_dir_all(&db).unwrap();
}
