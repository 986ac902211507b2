//! Step alignment and splitting a range query by time.
//!
//! A range query is evaluated at the grid `start + k*step <= end`. Splitting
//! must keep that grid exactly: every piece starts on a grid point, ends on
//! the grid point before the next piece starts, and the pieces together hold
//! every grid point once. Because each evaluation instant of PromQL depends
//! only on the instant itself (not on the query's range), concatenating the
//! pieces' answers then gives the unsplit answer, with the exceptions below.
//!
//! Per construct:
//! - selectors, range selectors, functions, aggregations, binary operators:
//!   evaluated per instant, safe.
//! - `offset d`, negative too: shifts the data read at an instant by a fixed
//!   amount, the same in every piece; safe.
//! - subqueries `[r:s]`: their inner grid is aligned to multiples of `s` from
//!   the epoch, not to the query's start, so it is the same in every piece; safe.
//! - `@ <fixed>`: a constant instant, the same in every piece; safe.
//! - `@ start()` / `@ end()`: mean the *query's* start and end, which differ
//!   per piece. They are pinned to the original query's fixed timestamps
//!   before splitting; when the rewritten tree cannot be printed faithfully
//!   (checked by re-parsing), the query runs whole.
//! - `limit`: truncates the series set per evaluation, and the pieces could
//!   keep different series, so such a query runs whole.
//! - `stats`: per-query statistics that cannot be summed back faithfully, so
//!   such a query runs whole.
//! - anything promql-parser rejects runs whole (the backend gives the error).

use sluice_proto::RangeQuery;

use crate::promql;

/// The split interval the frontend uses by default: one UTC day.
pub const DEFAULT_SPLIT_INTERVAL_MS: i64 = 24 * 60 * 60 * 1000;

/// `query` with start and end rounded down to multiples of the step, as
/// Cortex and Mimir do. This changes the answer (the grid moves), which is
/// why the frontend only does it when asked; in exchange every client moving
/// its window shares one grid, and thus cache entries.
pub fn align(query: &RangeQuery) -> RangeQuery {
    let mut aligned = query.clone();
    if query.step_ms > 0 {
        aligned.start_ms = query
            .start_ms
            .saturating_sub(query.start_ms.rem_euclid(query.step_ms));
        aligned.end_ms = query
            .end_ms
            .saturating_sub(query.end_ms.rem_euclid(query.step_ms));
    }
    aligned
}

/// The instants `query` is evaluated at: `start + k*step <= end`.
pub fn grid_points(query: &RangeQuery) -> impl Iterator<Item = i64> + '_ {
    let step = query.step_ms.max(1);
    let count = match last_grid_point(query) {
        // In i128 so that no pair of timestamps can overflow.
        Some(last) => (i128::from(last) - i128::from(query.start_ms)) / i128::from(step) + 1,
        None => 0,
    };
    let (start, step) = (i128::from(query.start_ms), i128::from(step));
    // Every point lies in [start, last], so the conversion never fails.
    (0..count).map(move |k| i64::try_from(start + k * step).unwrap_or(i64::MAX))
}

/// The last grid point of `query` (`None` if the grid is empty).
pub(crate) fn last_grid_point(query: &RangeQuery) -> Option<i64> {
    (query.step_ms > 0 && query.end_ms >= query.start_ms).then(|| {
        let (start, step) = (i128::from(query.start_ms), i128::from(query.step_ms));
        let last = start + (i128::from(query.end_ms) - start) / step * step;
        // `last` lies in [start, end], so it fits.
        i64::try_from(last).unwrap_or(query.end_ms)
    })
}

/// Splits `query` into pieces whose grid points each lie within one interval
/// `[k*interval, (k+1)*interval)` counted from the Unix epoch, so with 24h
/// the boundaries fall on UTC midnight and a piece never spans two days.
///
/// Every piece but possibly the last ends on its last grid point; the last
/// keeps the query's end. Queries that cannot be split safely (see the module
/// notes), an `interval_ms <= 0` (splitting off), a non-positive step or an
/// empty grid come back as one piece, unchanged. When the query holds
/// `@ start()`/`@ end()`, the pieces' query text is the pinned rewrite.
pub fn split(query: &RangeQuery, interval_ms: i64) -> Vec<RangeQuery> {
    let whole = || vec![query.clone()];
    let Some(last) = last_grid_point(query) else {
        return whole();
    };
    if interval_ms <= 0 || query.limit != 0 || !query.stats.is_empty() {
        return whole();
    }
    // Cheap exit before parsing: a query within one interval stays whole.
    if query.start_ms.div_euclid(interval_ms) == last.div_euclid(interval_ms) {
        return whole();
    }
    let Some(modifiers) = promql::time_modifiers(&query.query) else {
        return whole();
    };
    let text = if modifiers.start_or_end {
        match promql::pin_start_end(&query.query, query.start_ms, query.end_ms) {
            Some(pinned) => pinned,
            None => return whole(),
        }
    } else {
        query.query.clone()
    };

    let step = query.step_ms;
    let mut pieces = Vec::new();
    let mut start = query.start_ms;
    while start <= last {
        let boundary = start
            .div_euclid(interval_ms)
            .saturating_add(1)
            .saturating_mul(interval_ms);
        // The last grid point strictly before the boundary.
        let end = (start + (boundary.saturating_sub(1) - start) / step * step).min(last);
        pieces.push(RangeQuery {
            query: text.clone(),
            start_ms: start,
            end_ms: if end == last { query.end_ms } else { end },
            ..query.clone()
        });
        start = match end.checked_add(step) {
            Some(next) => next,
            None => break,
        };
    }
    pieces
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const HOUR: i64 = 3_600_000;
    const DAY: i64 = DEFAULT_SPLIT_INTERVAL_MS;

    fn range(query: &str, start_ms: i64, end_ms: i64, step_ms: i64) -> RangeQuery {
        RangeQuery {
            query: query.to_owned(),
            start_ms,
            end_ms,
            step_ms,
            ..RangeQuery::default()
        }
    }

    #[test]
    fn align_rounds_start_and_end_down_to_the_step() {
        let aligned = align(&range("up", 61_000, 179_999, 60_000));
        assert_eq!((aligned.start_ms, aligned.end_ms), (60_000, 120_000));
        let negative = align(&range("up", -1, 1, 60_000));
        assert_eq!((negative.start_ms, negative.end_ms), (-60_000, 0));
        let zero_step = range("up", 7, 9, 0);
        assert_eq!(align(&zero_step), zero_step);
    }

    #[test]
    fn splits_at_utc_midnight_on_the_query_grid() {
        // 22:00:30 on day 0 to 02:00:30 on day 2, step 7m: off-grid with midnight.
        let query = range(
            "up",
            22 * HOUR + 30_000,
            2 * DAY + 2 * HOUR + 30_000,
            420_000,
        );
        let pieces = split(&query, DAY);
        assert_eq!(pieces.len(), 3);
        assert_eq!(pieces[0].start_ms, query.start_ms);
        for pair in pieces.windows(2) {
            assert_eq!(pair[0].end_ms + query.step_ms, pair[1].start_ms);
            assert!(pair[0].end_ms < pair[1].start_ms.div_euclid(DAY) * DAY);
        }
        assert_eq!(pieces[2].end_ms, query.end_ms);
    }

    #[test]
    fn a_query_within_one_day_is_one_piece() {
        let query = range("up", DAY, 2 * DAY - 1, 60_000);
        assert_eq!(split(&query, DAY), vec![query]);
    }

    #[test]
    fn splitting_off_or_unsafe_keeps_the_query_whole() {
        let query = range("up", 0, 3 * DAY, 60_000);
        assert_eq!(split(&query, 0), vec![query.clone()]);
        let limited = RangeQuery {
            limit: 5,
            ..query.clone()
        };
        assert_eq!(split(&limited, DAY), vec![limited.clone()]);
        let stats = RangeQuery {
            stats: "all".into(),
            ..query.clone()
        };
        assert_eq!(split(&stats, DAY).len(), 1);
        let broken = range("sum(", 0, 3 * DAY, 60_000);
        assert_eq!(split(&broken, DAY).len(), 1);
        let pre_epoch = range("up @ start()", -3 * DAY, 0, 60_000);
        assert_eq!(split(&pre_epoch, DAY).len(), 1);
    }

    #[test]
    fn extreme_timestamps_do_not_overflow() {
        let huge = range("up", i64::MIN, i64::MAX, i64::MAX);
        assert_eq!(
            grid_points(&huge).collect::<Vec<_>>(),
            vec![i64::MIN, -1, i64::MAX - 1]
        );
        assert_eq!(split(&huge, DAY).len(), 3);
        let late = range("up", i64::MAX - 10, i64::MAX, 3);
        assert_eq!(split(&late, 1).len(), 4);
        assert_eq!(
            align(&range("up", i64::MIN, i64::MIN, 7)).start_ms,
            i64::MIN
        );
    }

    #[test]
    fn fixed_at_and_offsets_split_unchanged() {
        let query = range(
            "rate(up[5m] @ 1000 offset -1h) + up offset 1d",
            0,
            3 * DAY,
            60_000,
        );
        let pieces = split(&query, DAY);
        assert_eq!(pieces.len(), 4);
        assert!(pieces.iter().all(|piece| piece.query == query.query));
    }

    #[test]
    fn start_and_end_are_pinned_before_splitting() {
        let query = range("up @ start() - up @ end()", 0, 3 * DAY + 5, 60_000);
        let pieces = split(&query, DAY);
        assert_eq!(pieces.len(), 4);
        let expected = promql_parser::parser::parse("up @ 0 - up @ 259200.005").unwrap();
        for piece in &pieces {
            assert_eq!(
                promql_parser::parser::parse(&piece.query).unwrap(),
                expected
            );
        }
    }

    proptest! {
        #[test]
        fn pieces_cover_the_grid_exactly_once_within_days(
            start in -3 * DAY..10 * DAY,
            length in 0..5 * DAY,
            step in prop_oneof![Just(1_000i64), Just(15_000), Just(60_000), Just(420_000), 1..2 * DAY],
            interval in prop_oneof![Just(DAY), Just(HOUR), 1..2 * DAY],
        ) {
            let query = range("up", start, start + length, step);
            let pieces = split(&query, interval);
            let whole: Vec<i64> = grid_points(&query).collect();
            let joined: Vec<i64> = pieces.iter().flat_map(grid_points).collect();
            prop_assert_eq!(&joined, &whole);
            for piece in &pieces {
                prop_assert_eq!(piece.step_ms, step);
                let points: Vec<i64> = grid_points(piece).collect();
                prop_assert!(!points.is_empty());
                let day = points[0].div_euclid(interval);
                prop_assert!(points.iter().all(|p| p.div_euclid(interval) == day));
            }
            for pair in pieces.windows(2) {
                prop_assert_eq!(pair[0].end_ms + step, pair[1].start_ms);
                prop_assert!(pair[0].end_ms.div_euclid(interval) < pair[1].start_ms.div_euclid(interval));
            }
        }

        #[test]
        fn aligned_queries_sit_on_the_step(start in -10 * DAY..10 * DAY, length in 0..DAY, step in 1..DAY) {
            let aligned = align(&range("up", start, start + length, step));
            prop_assert_eq!(aligned.start_ms.rem_euclid(step), 0);
            prop_assert_eq!(aligned.end_ms.rem_euclid(step), 0);
            prop_assert!(aligned.start_ms <= start && start - aligned.start_ms < step);
            prop_assert!(aligned.end_ms <= start + length && start + length - aligned.end_ms < step);
        }
    }
}
