use std::sync::Arc;

use proptest::prelude::*;

use super::*;
use crate::matcher::MatchOp;
use crate::read::MemDir;

fn entry(pairs: &[(&str, &str)], chunks: &[(i64, i64, u64)]) -> SeriesEntry {
    SeriesEntry {
        labels: Labels::from_pairs(pairs),
        chunks: chunks
            .iter()
            .map(|&(min_time, max_time, reference)| ChunkMeta {
                min_time,
                max_time,
                reference: ChunkRef(reference),
            })
            .collect(),
    }
}

fn sample_series() -> Vec<SeriesEntry> {
    let mut series = vec![
        entry(
            &[("__name__", "up"), ("job", "api")],
            &[(0, 100, 8), (101, 200, 40)],
        ),
        entry(
            &[("__name__", "up"), ("job", "db"), ("env", "prod")],
            &[(-50, 7, 80)],
        ),
        entry(&[("__name__", "up"), ("job", "db"), ("env", "dev")], &[]),
        entry(
            &[
                ("__name__", "http_requests_total"),
                ("job", "api"),
                ("env", "prod"),
            ],
            &[(5, 5, 1 << 32 | 8)],
        ),
    ];
    series.sort_by(|left, right| left.labels.cmp(&right.labels));
    series
}

fn open(bytes: Vec<u8>) -> Result<IndexReader> {
    let mut dir = MemDir::new();
    dir.insert("index", bytes);
    IndexReader::open(Arc::new(dir))
}

#[test]
fn round_trips_series_symbols_and_label_values() {
    let series = sample_series();
    let (bytes, references) = write_index(&series).unwrap();
    let reader = open(bytes).unwrap();
    assert_eq!(reader.all_postings().unwrap(), references);
    for (reference, expected) in references.iter().zip(&series) {
        assert_eq!(&reader.series(*reference).unwrap(), expected);
    }
    assert_eq!(reader.label_names(), vec!["__name__", "env", "job"]);
    assert_eq!(reader.label_values("env"), vec!["dev", "prod"]);
    assert_eq!(reader.symbols().len(), 9);
    assert_eq!(reader.postings("job", "db").unwrap().len(), 2);
    assert!(reader.postings("job", "nope").unwrap().is_empty());
}

fn selected(reader: &IndexReader, matchers: &[(MatchOp, &str, &str)]) -> Vec<String> {
    let matchers: Vec<Matcher> = matchers
        .iter()
        .map(|(op, name, value)| Matcher::new(*op, *name, *value).unwrap())
        .collect();
    let references = reader.select(&matchers).unwrap();
    references
        .into_iter()
        .map(|reference| reader.series(reference).unwrap().labels.to_string())
        .collect()
}

#[test]
fn matchers_follow_prometheus_semantics() {
    let (bytes, _) = write_index(&sample_series()).unwrap();
    let reader = open(bytes).unwrap();
    use MatchOp::*;
    let up_api = r#"{__name__="up", job="api"}"#;
    let up_dev = r#"{__name__="up", env="dev", job="db"}"#;
    let up_prod = r#"{__name__="up", env="prod", job="db"}"#;
    let http = r#"{__name__="http_requests_total", env="prod", job="api"}"#;
    // Series come in label order: `env` sorts before `job`.
    assert_eq!(
        selected(&reader, &[(Equal, "__name__", "up")]),
        vec![up_dev, up_prod, up_api]
    );
    assert_eq!(
        selected(
            &reader,
            &[(Equal, "__name__", "up"), (NotEqual, "job", "db")]
        ),
        vec![up_api]
    );
    assert_eq!(selected(&reader, &[(Equal, "env", "")]), vec![up_api]);
    assert_eq!(
        selected(&reader, &[(NotEqual, "env", "")]),
        vec![http, up_dev, up_prod]
    );
    assert_eq!(
        selected(&reader, &[(Regex, "env", "pro")]),
        Vec::<String>::new()
    );
    assert_eq!(
        selected(&reader, &[(Regex, "env", "prod|")]),
        vec![http, up_prod, up_api]
    );
    assert_eq!(
        selected(
            &reader,
            &[(NotRegex, "job", "d.*"), (Regex, "__name__", ".+")]
        ),
        vec![http, up_api]
    );
    assert_eq!(
        selected(&reader, &[(Equal, "missing", "x")]),
        Vec::<String>::new()
    );
    assert_eq!(selected(&reader, &[(NotEqual, "missing", "x")]).len(), 4);
    assert_eq!(selected(&reader, &[]).len(), 4);
}

#[test]
fn reads_an_index_prometheus_wrote() {
    // promtool 2.42 `tsdb create-blocks-from openmetrics` of one series `m`:
    // its layout differs from ours (TOC offsets before padding, an empty
    // symbol), which the reader must not care about.
    let bytes = include_bytes!("../../testdata/promtool-2.42/index").to_vec();
    let reader = open(bytes).unwrap();
    assert_eq!(reader.symbols(), ["", "__name__", "m"]);
    let references = reader.select(&[Matcher::equal("__name__", "m")]).unwrap();
    assert_eq!(references, vec![2]);
    let expected = entry(&[("__name__", "m")], &[(1000, 3000, 8)]);
    assert_eq!(reader.series(2).unwrap(), expected);
}

#[test]
fn corruption_is_reported_with_file_and_offset() {
    let (mut bytes, references) = write_index(&sample_series()).unwrap();
    let series_offset = references[0] as usize * 16;
    bytes[series_offset + 2] ^= 0x40;
    let reader = open(bytes).unwrap();
    let error = reader.series(references[0]).unwrap_err().to_string();
    assert!(
        error.starts_with(&format!(
            "index: checksum mismatch for bytes {}..",
            series_offset + 1
        )),
        "{error}"
    );
    let error = open(vec![0; 100]).err().unwrap().to_string();
    assert_eq!(
        error,
        "index: corrupt at byte 0: magic 0x00000000, want 0xbaaad700"
    );
}

#[test]
fn unsorted_series_are_refused() {
    let mut series = sample_series();
    series.swap(0, 1);
    assert!(matches!(write_index(&series), Err(Error::InvalidInput(_))));
}

fn arbitrary_series() -> impl Strategy<Value = Vec<SeriesEntry>> {
    prop::collection::btree_map(
        prop::collection::btree_map("[a-c]{1,2}", "[x-z]{0,2}", 1..4),
        prop::collection::vec((0i64..1000, 0i64..1000), 0..4),
        1..12,
    )
    .prop_map(|map| {
        map.into_iter()
            .map(|(labels, spans)| {
                let labels = Labels::new(
                    labels
                        .into_iter()
                        .map(|(name, value)| Label { name, value })
                        .collect(),
                );
                let mut time = 0;
                let chunks = spans
                    .into_iter()
                    .enumerate()
                    .map(|(index, (gap, length))| {
                        let min_time = time + gap + 1;
                        time = min_time + length;
                        ChunkMeta {
                            min_time,
                            max_time: time,
                            reference: ChunkRef(8 + index as u64 * 100),
                        }
                    })
                    .collect();
                SeriesEntry { labels, chunks }
            })
            .collect::<Vec<_>>()
    })
    .prop_map(|mut series| {
        series.sort_by(|left, right| left.labels.cmp(&right.labels));
        series.dedup_by(|left, right| left.labels == right.labels);
        series
    })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(sluice_testkit::fuzz_cases(128)))]

    #[test]
    fn any_series_round_trip(series in arbitrary_series()) {
        let (bytes, references) = write_index(&series).unwrap();
        let reader = open(bytes).unwrap();
        prop_assert_eq!(reader.all_postings().unwrap(), references.clone());
        for (reference, expected) in references.iter().zip(&series) {
            prop_assert_eq!(&reader.series(*reference).unwrap(), expected);
        }
        // In one batch, backwards and with a repeat, as one at a time.
        let mut batch: Vec<SeriesRef> = references.iter().rev().copied().collect();
        batch.extend(references.first().copied());
        let expected: Vec<SeriesEntry> = batch.iter().map(|reference| reader.series(*reference).unwrap()).collect();
        prop_assert_eq!(reader.series_many(&batch).unwrap(), expected);
    }

    #[test]
    fn mutated_indexes_never_panic(
        series in arbitrary_series(),
        flips in prop::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 1..6),
        cut in any::<prop::sample::Index>(),
        truncate in any::<bool>(),
    ) {
        let (mut bytes, references) = write_index(&series).unwrap();
        for (index, byte) in flips {
            let position = index.index(bytes.len());
            bytes[position] ^= byte;
        }
        if truncate {
            let cut = cut.index(bytes.len() + 1);
            bytes.truncate(cut);
        }
        if let Ok(reader) = open(bytes) {
            let matchers = [Matcher::new(MatchOp::Regex, "a", "x.*").unwrap(), Matcher::new(MatchOp::NotEqual, "b", "").unwrap()];
            let _ = reader.select(&matchers);
            for reference in references.iter().copied().chain([0, 1, u32::MAX]) {
                let _ = reader.series(reference);
            }
            let _ = reader.series_many(&references);
            let _ = reader.series_many(&[1, u32::MAX, 0]);
        }
    }
}

#[test]
fn a_postings_offset_past_the_postings_is_an_error_not_a_panic() {
    // Two postings lists whose offsets are rewritten to lie past the TOC's
    // limit: the reader must refuse them with an error.
    let (bytes, _) = write_index(&sample_series()).unwrap();
    let mut reader = open(bytes).unwrap();
    for entries in reader.postings.values_mut() {
        for entry in entries.iter_mut() {
            entry.start += 10_000;
        }
    }
    let limit = reader.file_len - TOC_LEN;
    let toc = Toc::default();
    set_postings_ends(&mut reader.postings, &toc, limit);
    assert!(
        reader
            .select(&[Matcher::new(MatchOp::Regex, "job", ".+").unwrap()])
            .is_err()
    );
}
