//! Concatenating matrix answers by time, and slicing them by time.

use std::cmp::Ordering;
use std::collections::HashMap;

use sluice_proto::{Label, QueryData, ResultType, Series};

/// Prometheus's `labels.Compare`: pairwise by name then value, then the
/// shorter set first. This is the order the engine sorts a matrix in, so a
/// merged answer must use it to be byte-identical to an unsplit one.
pub fn compare_labels(a: &[Label], b: &[Label]) -> Ordering {
    for (x, y) in a.iter().zip(b) {
        let order = x.name.cmp(&y.name).then_with(|| x.value.cmp(&y.value));
        if order != Ordering::Equal {
            return order;
        }
    }
    a.len().cmp(&b.len())
}

/// Sorts samples by timestamp and keeps the first of equal timestamps. Only
/// needed when parts overlap (cache extents), so it is a repair, not the
/// normal path.
fn repair(series: &mut Series) {
    if !series.timestamps_ms.is_sorted_by(|a, b| a < b) {
        let mut samples: Vec<(i64, f64)> = series.samples().collect();
        samples.sort_by_key(|&(timestamp, _)| timestamp);
        samples.dedup_by_key(|&mut (timestamp, _)| timestamp);
        (series.timestamps_ms, series.values) = samples.into_iter().unzip();
    }
    if !series
        .histograms
        .is_sorted_by(|a, b| a.timestamp_ms < b.timestamp_ms)
    {
        series.histograms.sort_by_key(|sample| sample.timestamp_ms);
        series.histograms.dedup_by_key(|sample| sample.timestamp_ms);
    }
}

/// Concatenates matrices, given in time order, into one: each series (by
/// label set) gets the samples of every part in order, float and histogram
/// samples alike, and the series are sorted as Prometheus sorts a matrix.
/// Parts may overlap; the earlier part wins on a shared timestamp. `stats_json`
/// is not carried over: statistics of parts do not add up to the whole's.
pub fn concat_data(parts: impl IntoIterator<Item = QueryData>) -> QueryData {
    concat_data_with_room(parts, 0)
}

/// [`concat_data`], leaving room in every series for `room` more float
/// samples, so that a later concatenation appending that many moves the
/// series instead of copying them.
pub(crate) fn concat_data_with_room(
    parts: impl IntoIterator<Item = QueryData>,
    room: usize,
) -> QueryData {
    concat_data_keeping_first(parts, room).0
}

/// [`concat_data_with_room`], also telling whether every series of the
/// first part still begins with exactly that part's samples: true unless a
/// later part reached back into its time, so that the series had to be put
/// back in order.
pub(crate) fn concat_data_keeping_first(
    parts: impl IntoIterator<Item = QueryData>,
    room: usize,
) -> (QueryData, bool) {
    let parts: Vec<QueryData> = parts.into_iter().collect();
    // Each series (by label set) gets a slot, and each slot's whole length
    // is counted first, so its samples are allocated once: growing a week
    // of samples by doubling copies it several times over and touches
    // fresh memory each time.
    let mut slot_of_labels: HashMap<&[Label], usize> = HashMap::new();
    let mut lengths: Vec<(usize, usize)> = Vec::new();
    let mut slots: Vec<Vec<usize>> = Vec::with_capacity(parts.len());
    for part in &parts {
        let mut part_slots = Vec::with_capacity(part.series.len());
        for series in &part.series {
            let slot = *slot_of_labels
                .entry(series.labels.as_slice())
                .or_insert(lengths.len());
            if slot == lengths.len() {
                lengths.push((0, 0));
            }
            lengths[slot].0 += series.timestamps_ms.len();
            lengths[slot].1 += series.histograms.len();
            part_slots.push(slot);
        }
        slots.push(part_slots);
    }
    drop(slot_of_labels);
    // Slots are numbered in the order series are first met, so the first
    // part's are the lowest, one for each of its series unless it repeats
    // a label set (then its own samples are joined: not kept as they were).
    let first_part = slots.first().map_or(0, Vec::len);
    let first_part_distinct = slots
        .first()
        .and_then(|first| first.iter().max())
        .map_or(0, |&highest| highest + 1);
    let mut merged: Vec<Option<Series>> = (0..lengths.len()).map(|_| None).collect();
    let mut needs_repair = vec![false; lengths.len()];
    for (part, part_slots) in parts.into_iter().zip(slots) {
        for (mut series, slot) in part.series.into_iter().zip(part_slots) {
            match &mut merged[slot] {
                None => {
                    let (floats, histograms) = lengths[slot];
                    let floats = floats.saturating_add(room);
                    series
                        .timestamps_ms
                        .reserve_exact(floats.saturating_sub(series.timestamps_ms.len()));
                    series
                        .values
                        .reserve_exact(floats.saturating_sub(series.values.len()));
                    series
                        .histograms
                        .reserve_exact(histograms.saturating_sub(series.histograms.len()));
                    merged[slot] = Some(series);
                }
                Some(into) => {
                    let floats_in_order =
                        match (into.timestamps_ms.last(), series.timestamps_ms.first()) {
                            (Some(last), Some(first)) => last < first,
                            _ => true,
                        };
                    let histograms_in_order =
                        match (into.histograms.last(), series.histograms.first()) {
                            (Some(last), Some(first)) => last.timestamp_ms < first.timestamp_ms,
                            _ => true,
                        };
                    needs_repair[slot] |= !(floats_in_order && histograms_in_order);
                    into.timestamps_ms.extend(series.timestamps_ms);
                    into.values.extend(series.values);
                    into.histograms.extend(series.histograms);
                }
            }
        }
    }
    // A repair reorders, and may drop, samples of the parts before.
    let first_kept = first_part_distinct == first_part
        && !needs_repair[..first_part_distinct]
            .iter()
            .any(|&repair_it| repair_it);
    // Every slot was filled by the series that made it.
    let mut merged: Vec<Series> = merged.into_iter().flatten().collect();
    for (series, repair_it) in merged.iter_mut().zip(needs_repair) {
        if repair_it {
            repair(series);
        }
    }
    (sorted_matrix(merged), first_kept)
}

/// A matrix of `series`, sorted as Prometheus sorts one.
fn sorted_matrix(mut series: Vec<Series>) -> QueryData {
    series.sort_by(|a, b| compare_labels(&a.labels, &b.labels));
    QueryData {
        result_type: ResultType::Matrix as i32,
        series,
        ..QueryData::default()
    }
}

/// [`concat_data_with_room`] of `parts`, each cut by [`slice_data`] to its
/// `[start_ms, end_ms]` first, with every sample copied once, straight
/// into place: the slices are never made. Matrices with histograms or with
/// samples out of order take the general path.
pub fn concat_slices(parts: &[(&QueryData, i64, i64)], room: usize) -> QueryData {
    let plain = parts.iter().all(|(data, _, _)| {
        data.series.iter().all(|series| {
            series.histograms.is_empty()
                && series.timestamps_ms.len() == series.values.len()
                && series.timestamps_ms.is_sorted_by(|a, b| a < b)
        })
    });
    if !plain {
        let sliced = parts
            .iter()
            .map(|(data, start_ms, end_ms)| slice_data(data, *start_ms, *end_ms));
        return concat_data_with_room(sliced, room);
    }
    // Each run is the samples of one series of one part that fall inside
    // the part's range: (part, series, from, to), and the slot it goes to.
    let mut slot_of_labels: HashMap<&[Label], usize> = HashMap::new();
    let mut slot_labels: Vec<&[Label]> = Vec::new();
    let mut lengths: Vec<usize> = Vec::new();
    let mut runs: Vec<(&Series, usize, usize, usize)> = Vec::new();
    for (data, start_ms, end_ms) in parts {
        for series in &data.series {
            let timestamps = &series.timestamps_ms;
            let from = timestamps.partition_point(|t| t < start_ms);
            let to = timestamps.partition_point(|t| t <= end_ms).max(from);
            if from == to {
                continue;
            }
            let slot = *slot_of_labels
                .entry(series.labels.as_slice())
                .or_insert(lengths.len());
            if slot == lengths.len() {
                lengths.push(0);
                slot_labels.push(series.labels.as_slice());
            }
            lengths[slot] += to - from;
            runs.push((series, from, to, slot));
        }
    }
    let mut merged: Vec<Series> = lengths
        .iter()
        .zip(&slot_labels)
        .map(|(length, labels)| Series {
            labels: labels.to_vec(),
            timestamps_ms: Vec::with_capacity(length.saturating_add(room)),
            values: Vec::with_capacity(length.saturating_add(room)),
            ..Series::default()
        })
        .collect();
    // Every run is in order, so a series is in order exactly when each run
    // starts after the one before it ends: checked where they join, not
    // over every sample again.
    let mut out_of_order = vec![false; merged.len()];
    for (series, from, to, slot) in runs {
        let into = &mut merged[slot];
        if into
            .timestamps_ms
            .last()
            .is_some_and(|last| *last >= series.timestamps_ms[from])
        {
            out_of_order[slot] = true;
        }
        into.timestamps_ms
            .extend_from_slice(&series.timestamps_ms[from..to]);
        into.values.extend_from_slice(&series.values[from..to]);
    }
    // Parts in time order give ordered series; anything else (overlapping
    // parts) is put right as `concat_data` does: earlier parts win.
    for (series, out_of_order) in merged.iter_mut().zip(out_of_order) {
        if out_of_order {
            repair(series);
        }
    }
    sorted_matrix(merged)
}

/// The part of a matrix with timestamps in `[start_ms, end_ms]`; series left
/// without samples are dropped, as Prometheus omits them from a matrix.
pub fn slice_data(data: &QueryData, start_ms: i64, end_ms: i64) -> QueryData {
    let inside = |timestamp: i64| start_ms <= timestamp && timestamp <= end_ms;
    let series = data
        .series
        .iter()
        .filter_map(|series| {
            let mut sliced = Series {
                labels: series.labels.clone(),
                ..Series::default()
            };
            let timestamps = &series.timestamps_ms;
            if timestamps.is_sorted() && timestamps.len() == series.values.len() {
                // The usual case: one contiguous run, copied whole.
                let from = timestamps.partition_point(|t| *t < start_ms);
                let to = timestamps.partition_point(|t| *t <= end_ms);
                let to = to.max(from);
                sliced.timestamps_ms = timestamps[from..to].to_vec();
                sliced.values = series.values[from..to].to_vec();
            } else {
                for (timestamp, value) in series.samples().filter(|&(t, _)| inside(t)) {
                    sliced.push(timestamp, value);
                }
            }
            sliced.histograms = series
                .histograms
                .iter()
                .filter(|sample| inside(sample.timestamp_ms))
                .cloned()
                .collect();
            (!sliced.timestamps_ms.is_empty() || !sliced.histograms.is_empty()).then_some(sliced)
        })
        .collect();
    QueryData {
        result_type: ResultType::Matrix as i32,
        series,
        ..QueryData::default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use sluice_proto::HistogramSample;

    fn named_matrix(series: Vec<(u8, Vec<i64>)>) -> QueryData {
        QueryData {
            result_type: ResultType::Matrix as i32,
            series: series
                .into_iter()
                .map(|(name, timestamps)| Series {
                    labels: vec![Label {
                        name: "s".into(),
                        value: name.to_string(),
                    }],
                    values: timestamps.iter().map(|t| *t as f64 * 0.5).collect(),
                    timestamps_ms: timestamps,
                    ..Series::default()
                })
                .collect(),
            ..QueryData::default()
        }
    }

    proptest! {
        #[test]
        fn concat_slices_is_concat_of_slices(
            parts in prop::collection::vec(
                (
                    prop::collection::vec((0u8..4, prop::collection::vec(0i64..60, 0..20)), 0..4),
                    0i64..60,
                    0i64..60,
                    any::<bool>(),
                ),
                0..5,
            ),
            room in 0usize..8,
        ) {
            let parts: Vec<(QueryData, i64, i64)> = parts
                .into_iter()
                .map(|(series, start, end, sorted)| {
                    let series = series
                        .into_iter()
                        .map(|(name, mut timestamps)| {
                            if sorted {
                                timestamps.sort_unstable();
                                timestamps.dedup();
                            }
                            (name, timestamps)
                        })
                        .collect();
                    (named_matrix(series), start, end)
                })
                .collect();
            let borrowed: Vec<(&QueryData, i64, i64)> =
                parts.iter().map(|(data, start, end)| (data, *start, *end)).collect();
            let expected = concat_data_with_room(
                parts.iter().map(|(data, start, end)| slice_data(data, *start, *end)),
                room,
            );
            let got = concat_slices(&borrowed, room);
            prop_assert_eq!(&got, &expected);
        }
    }

    fn labels(pairs: &[(&str, &str)]) -> Vec<Label> {
        pairs
            .iter()
            .map(|(name, value)| Label {
                name: (*name).into(),
                value: (*value).into(),
            })
            .collect()
    }

    fn series(pairs: &[(&str, &str)], samples: &[(i64, f64)]) -> Series {
        let mut series = Series {
            labels: labels(pairs),
            ..Series::default()
        };
        for &(timestamp, value) in samples {
            series.push(timestamp, value);
        }
        series
    }

    fn matrix(series: Vec<Series>) -> QueryData {
        QueryData {
            result_type: ResultType::Matrix as i32,
            series,
            ..QueryData::default()
        }
    }

    #[test]
    fn labels_compare_like_prometheus() {
        let a = labels(&[("a", "1")]);
        let ab = labels(&[("a", "1"), ("b", "1")]);
        let a2 = labels(&[("a", "2")]);
        let b = labels(&[("b", "0")]);
        assert_eq!(compare_labels(&a, &ab), Ordering::Less);
        assert_eq!(compare_labels(&ab, &a2), Ordering::Less);
        assert_eq!(compare_labels(&a2, &b), Ordering::Less);
        assert_eq!(compare_labels(&[], &a), Ordering::Less);
        assert_eq!(compare_labels(&ab, &ab), Ordering::Equal);
        // Byte order, as Go compares strings: "Z" < "a".
        assert_eq!(
            compare_labels(&labels(&[("a", "Z")]), &labels(&[("a", "a")])),
            Ordering::Less
        );
    }

    #[test]
    fn concatenates_per_series_and_sorts_series() {
        let first = matrix(vec![
            series(&[("job", "b")], &[(1, 1.0)]),
            series(&[("job", "a")], &[(1, 2.0)]),
        ]);
        let second = matrix(vec![
            series(&[("job", "a")], &[(2, 3.0)]),
            series(&[("job", "c")], &[(2, 4.0)]),
        ]);
        let merged = concat_data([first, second]);
        assert_eq!(
            merged.series,
            vec![
                series(&[("job", "a")], &[(1, 2.0), (2, 3.0)]),
                series(&[("job", "b")], &[(1, 1.0)]),
                series(&[("job", "c")], &[(2, 4.0)]),
            ]
        );
        assert_eq!(merged.result_type, ResultType::Matrix as i32);
    }

    #[test]
    fn the_first_part_is_kept_unless_a_later_one_reaches_back_into_it() {
        let first = || {
            matrix(vec![
                series(&[("job", "a")], &[(1, 1.0), (2, 2.0)]),
                series(&[("job", "b")], &[(1, 3.0)]),
            ])
        };
        let after = matrix(vec![
            series(&[("job", "b")], &[(3, 4.0)]),
            series(&[("job", "c")], &[(0, 5.0)]),
        ]);
        // "c" is new and earlier than the rest: nothing of the first moves.
        let (_, kept) = concat_data_keeping_first([first(), after], 0);
        assert!(kept);
        let back = matrix(vec![series(&[("job", "a")], &[(0, 6.0), (3, 7.0)])]);
        let (merged, kept) = concat_data_keeping_first([first(), back], 0);
        assert!(!kept);
        assert_eq!(merged.series[0].timestamps_ms, vec![0, 1, 2, 3]);
        // A label set twice within the first part: joined, not kept as is.
        let twice = matrix(vec![
            series(&[("job", "a")], &[(1, 1.0)]),
            series(&[("job", "a")], &[(2, 2.0)]),
        ]);
        assert!(!concat_data_keeping_first([twice], 0).1);
    }

    #[test]
    fn histograms_concatenate_too() {
        let histogram = |timestamp_ms| HistogramSample {
            timestamp_ms,
            count: 1.0,
            ..HistogramSample::default()
        };
        let mut first = series(&[("a", "1")], &[]);
        first.histograms.push(histogram(1));
        let mut second = series(&[("a", "1")], &[]);
        second.histograms.push(histogram(2));
        let merged = concat_data([matrix(vec![first]), matrix(vec![second])]);
        assert_eq!(
            merged.series[0].histograms,
            vec![histogram(1), histogram(2)]
        );
    }

    #[test]
    fn overlapping_parts_keep_one_sample_per_timestamp() {
        let first = matrix(vec![series(&[("a", "1")], &[(1, 1.0), (2, 2.0)])]);
        let second = matrix(vec![series(&[("a", "1")], &[(2, 9.0), (3, 3.0)])]);
        let merged = concat_data([first, second]);
        assert_eq!(
            merged.series,
            vec![series(&[("a", "1")], &[(1, 1.0), (2, 2.0), (3, 3.0)])]
        );
    }

    #[test]
    fn slicing_drops_series_left_empty() {
        let data = matrix(vec![
            series(&[("a", "1")], &[(1, 1.0), (2, 2.0), (3, 3.0)]),
            series(&[("a", "2")], &[(5, 1.0)]),
        ]);
        let sliced = slice_data(&data, 2, 3);
        assert_eq!(
            sliced.series,
            vec![series(&[("a", "1")], &[(2, 2.0), (3, 3.0)])]
        );
    }

    #[test]
    fn slicing_keeps_exactly_the_samples_inside_sorted_or_not() {
        let sorted = matrix(vec![series(
            &[("a", "1")],
            &[(1, 1.0), (2, 2.0), (2, 2.5), (4, 4.0), (6, 6.0)],
        )]);
        assert_eq!(
            slice_data(&sorted, 2, 5).series,
            vec![series(&[("a", "1")], &[(2, 2.0), (2, 2.5), (4, 4.0)])]
        );
        assert!(slice_data(&sorted, 7, 9).series.is_empty());
        assert!(
            slice_data(&sorted, 5, 2).series.is_empty(),
            "an empty range"
        );
        // Stored bytes are untrusted: out of order, the samples inside are
        // still found, in the order they came.
        let unsorted = matrix(vec![series(&[("a", "1")], &[(4, 4.0), (1, 1.0), (3, 3.0)])]);
        assert_eq!(
            slice_data(&unsorted, 3, 4).series,
            vec![series(&[("a", "1")], &[(4, 4.0), (3, 3.0)])]
        );
    }
}
