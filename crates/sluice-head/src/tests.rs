use std::collections::HashMap;

use sluice_block::{Labels, MatchOp, Matcher, XorIterator};
use sluice_wal::Entry;

use super::*;

const MINUTE: i64 = 60_000;

fn labels(name: &str, job: &str) -> Labels {
    Labels::from_pairs(&[("__name__", name), ("job", job)])
}

fn series(name: &str, samples: &[(i64, f64)]) -> AppendSeries {
    AppendSeries {
        labels: labels(name, "a"),
        samples: samples.to_vec(),
    }
}

/// Appends, recording the WAL entries the head asked to log.
fn append(head: &Head, log: &mut Vec<Entry>, batch: &[AppendSeries]) -> AppendOutcome {
    let (outcome, ()) = head
        .append("t", batch, |entry| {
            log.push(entry.clone());
            Ok::<(), ()>(())
        })
        .unwrap();
    outcome
}

fn samples(head: &Head, name: &str) -> Vec<(i64, f64)> {
    let selected = head.select("t", &[Matcher::equal("__name__", name)], i64::MIN, i64::MAX);
    let mut out: Vec<(i64, f64)> = selected
        .iter()
        .flat_map(|series| &series.chunks)
        .flat_map(|chunk| XorIterator::new(chunk.data.clone()).unwrap())
        .map(|sample| {
            let sample = sample.unwrap();
            (sample.t, sample.v)
        })
        .collect();
    out.sort_by_key(|(t, _)| *t);
    out
}

#[test]
fn appended_samples_are_queryable_at_once_across_chunks() {
    let head = Head::new(HeadOptions::default());
    let mut log = Vec::new();
    let written: Vec<(i64, f64)> = (0..300).map(|i| (i * 15_000, i as f64)).collect();
    let outcome = append(&head, &mut log, &[series("up", &written)]);
    assert_eq!((outcome.accepted, outcome.created_series), (300, 1));
    assert_eq!(samples(&head, "up"), written);
    let chunks = &head.select("t", &[], i64::MIN, i64::MAX)[0].chunks;
    assert_eq!(chunks.len(), 3, "120 samples a chunk");
    let middle = head.select("t", &[], 2_000 * 15_000 / 10, 2_000 * 15_000 / 10);
    assert_eq!(middle[0].chunks.len(), 1, "only the overlapping chunk");
    assert_eq!(log.len(), 1);
    assert_eq!((log[0].series.len(), log[0].samples.len()), (1, 300));
}

#[test]
fn retries_store_nothing_twice_and_log_nothing() {
    let head = Head::new(HeadOptions::default());
    let mut log = Vec::new();
    let batch = [series("up", &[(1000, 1.0), (2000, 2.0), (3000, 3.0)])];
    append(&head, &mut log, &batch);
    let retry = append(&head, &mut log, &batch);
    assert_eq!((retry.accepted, retry.duplicates), (0, 3));
    assert!(retry.rejected.is_empty());
    assert_eq!(samples(&head, "up").len(), 3);
    assert!(log[1].samples.is_empty() && log[1].series.is_empty());
}

#[test]
fn out_of_order_and_duplicate_timestamps_are_refused() {
    let head = Head::new(HeadOptions::default());
    let mut log = Vec::new();
    append(&head, &mut log, &[series("up", &[(10 * MINUTE, 1.0)])]);
    let outcome = append(
        &head,
        &mut log,
        &[series(
            "up",
            &[(5 * MINUTE, 1.0), (10 * MINUTE, 9.0), (11 * MINUTE, 2.0)],
        )],
    );
    let kinds: Vec<Rejection> = outcome.rejected.iter().map(|r| r.rejection).collect();
    assert_eq!(
        kinds,
        vec![Rejection::OutOfOrder, Rejection::DuplicateTimestamp]
    );
    assert_eq!(outcome.accepted, 1);
    // Over half a block range behind the tenant's newest: out of bounds.
    append(&head, &mut log, &[series("up", &[(200 * MINUTE, 3.0)])]);
    let outcome = append(&head, &mut log, &[series("new_metric", &[(0, 1.0)])]);
    assert_eq!(outcome.rejected[0].rejection, Rejection::OutOfBounds);
    assert_eq!(
        head.series_count("t"),
        1,
        "a series with nothing accepted is not created"
    );
    let message = outcome.rejected[0].message(&labels("new_metric", "a"), &head.options());
    assert_eq!(
        message,
        "the sample has been rejected because its timestamp is too old (err-mimir-sample-timestamp-too-old). The affected sample has timestamp 0 and is from series {__name__=\"new_metric\", job=\"a\"}"
    );
}

#[test]
fn the_out_of_order_window_accepts_late_samples() {
    let head = Head::new(HeadOptions {
        out_of_order_window_ms: 30 * MINUTE,
        ..HeadOptions::default()
    });
    let mut log = Vec::new();
    append(&head, &mut log, &[series("up", &[(60 * MINUTE, 1.0)])]);
    let outcome = append(
        &head,
        &mut log,
        &[series(
            "up",
            &[(40 * MINUTE, 2.0), (20 * MINUTE, 3.0), (40 * MINUTE, 2.0)],
        )],
    );
    assert_eq!(outcome.accepted, 1);
    assert_eq!(outcome.duplicates, 1);
    assert_eq!(outcome.rejected[0].rejection, Rejection::TooOld);
    assert_eq!(
        samples(&head, "up"),
        vec![(40 * MINUTE, 2.0), (60 * MINUTE, 1.0)]
    );
}

#[test]
fn a_failed_log_applies_nothing() {
    let head = Head::new(HeadOptions::default());
    let result = head.append("t", &[series("up", &[(1, 1.0)])], |_| {
        Err::<(), _>("disk full")
    });
    assert_eq!(result.unwrap_err(), "disk full");
    assert_eq!(head.series_count("t"), 0);
    assert!(samples(&head, "up").is_empty());
}

#[test]
fn replaying_the_log_rebuilds_the_same_head() {
    let options = HeadOptions {
        out_of_order_window_ms: 10 * MINUTE,
        ..HeadOptions::default()
    };
    let head = Head::new(options);
    let mut log = Vec::new();
    for step in 0..50i64 {
        let batch = [
            series("up", &[(step * MINUTE, step as f64)]),
            AppendSeries {
                labels: labels("up", &format!("job{}", step % 3)),
                samples: vec![
                    (step * MINUTE - 5 * MINUTE, -(step as f64)),
                    (step * MINUTE, f64::NAN),
                ],
            },
        ];
        append(&head, &mut log, &batch);
    }
    let replayed = Head::new(options);
    let mut references = HashMap::new();
    let encoded: Vec<Vec<u8>> = log.iter().map(Entry::encode).collect();
    for bytes in &encoded {
        let outcome = replayed.replay(&Entry::decode(bytes).unwrap(), &mut references);
        assert!(outcome.rejected.is_empty());
    }
    let all = |head: &Head| -> Vec<(Labels, Vec<(i64, u64)>)> {
        let mut out: Vec<_> = head
            .select(
                "t",
                &[Matcher::new(MatchOp::Regex, "job", ".+").unwrap()],
                i64::MIN,
                i64::MAX,
            )
            .into_iter()
            .map(|series| {
                let mut points: Vec<(i64, u64)> = series
                    .chunks
                    .iter()
                    .flat_map(|chunk| XorIterator::new(chunk.data.clone()).unwrap())
                    .map(|sample| sample.map(|s| (s.t, s.v.to_bits())).unwrap())
                    .collect();
                points.sort_unstable();
                (series.labels, points)
            })
            .collect();
        out.sort();
        out
    };
    assert_eq!(all(&replayed), all(&head));
    assert_eq!(replayed.series_count("t"), 4);
    // New series after replay get references the log has not used.
    assert!(replayed.new_reference() > 4);
}

#[test]
fn tenants_are_apart() {
    let head = Head::new(HeadOptions::default());
    head.append("a", &[series("up", &[(1, 1.0)])], |_| Ok::<(), ()>(()))
        .unwrap();
    assert_eq!(head.select("b", &[], i64::MIN, i64::MAX).len(), 0);
    assert_eq!(head.select("a", &[], i64::MIN, i64::MAX).len(), 1);
    assert_eq!(head.tenants(), vec!["a".to_owned()]);
}

#[test]
fn cutting_hands_over_the_oldest_samples_and_closes_their_range() {
    let head = Head::new(HeadOptions {
        out_of_order_window_ms: 4 * 60 * MINUTE,
        ..HeadOptions::default()
    });
    let mut log = Vec::new();
    let early: Vec<(i64, f64)> = (0..200).map(|i| (i * MINUTE, i as f64)).collect();
    append(&head, &mut log, &[series("up", &early)]);
    append(&head, &mut log, &[series("up", &[(30 * MINUTE + 1, -1.0)])]);
    assert_eq!(head.time_range("t"), Some((0, 199 * MINUTE)));
    let two_hours = 120 * MINUTE;
    let taken = head.take_before("t", two_hours);
    assert_eq!(taken.len(), 1);
    assert_eq!(taken[0].1.len(), 121, "120 in order and one out of order");
    assert!(taken[0].1.windows(2).all(|pair| pair[0].t < pair[1].t));
    // The range is closed to writes, even within the out-of-order window.
    let late = append(&head, &mut log, &[series("up", &[(two_hours - 1, 5.0)])]);
    assert_eq!(late.rejected[0].rejection, Rejection::TooOld);
    head.drop_before("t", two_hours);
    let left = samples(&head, "up");
    assert_eq!(left.len(), 80);
    assert_eq!(left[0].0, two_hours);
    assert_eq!(head.time_range("t"), Some((two_hours, 199 * MINUTE)));
    // Everything: the open chunk goes too, and order is still kept.
    head.take_before("t", 199 * MINUTE + 1);
    head.drop_before("t", 199 * MINUTE + 1);
    assert!(samples(&head, "up").is_empty());
    assert_eq!(head.time_range("t"), None);
    let outcome = append(
        &head,
        &mut log,
        &[series("up", &[(199 * MINUTE, 1.0), (200 * MINUTE, 1.0)])],
    );
    assert_eq!((outcome.accepted, outcome.rejected.len()), (1, 1));
}

#[test]
fn new_series_beyond_the_limit_are_refused_and_existing_ones_still_grow() {
    let head = Head::new(HeadOptions::default());
    let limited = |batch: &[AppendSeries], max_series: usize| {
        head.append_limited("t", batch, max_series, |_| Ok::<(), ()>(()))
            .unwrap()
            .0
    };
    let first = limited(&[series("a", &[(0, 1.0)]), series("b", &[(0, 1.0)])], 3);
    assert_eq!((first.accepted, first.created_series), (2, 2));
    let batch = [
        series("a", &[(MINUTE, 2.0)]),
        series("c", &[(MINUTE, 1.0)]),
        series("d", &[(MINUTE, 1.0), (2 * MINUTE, 2.0)]),
    ];
    let second = limited(&batch, 3);
    assert_eq!((second.accepted, second.created_series), (2, 1));
    let refused: Vec<(Rejection, usize)> = second
        .rejected
        .iter()
        .map(|rejected| (rejected.rejection, rejected.series))
        .collect();
    assert_eq!(
        refused,
        vec![
            (Rejection::SeriesLimit(3), 2),
            (Rejection::SeriesLimit(3), 2)
        ]
    );
    assert!(samples(&head, "d").is_empty());
    assert_eq!(
        second.rejected[0].message(&labels("d", "a"), &HeadOptions::default()),
        "per-user series limit of 3 exceeded (err-mimir-max-series-per-user). To adjust the related per-tenant limit, configure -ingester.max-global-series-per-user, or contact your service administrator."
    );
    // A raised limit lets it in; no limit (0) never refuses.
    assert_eq!(
        limited(&[series("d", &[(MINUTE, 1.0)])], 4).created_series,
        1
    );
    assert_eq!(
        limited(&[series("e", &[(MINUTE, 1.0)])], 0).created_series,
        1
    );
    assert_eq!(head.series_count("t"), 5);
}
