//! Which blocks to merge next, by the rules of Prometheus's leveled
//! compactor (which Thanos and Mimir plan with too):
//!
//! 1. blocks whose time ranges overlap are merged first, whatever their
//!    size (vertical compaction: out-of-order data, a backfill);
//! 2. otherwise, leaving out the newest block (so that a block just cut
//!    waits a whole range before it is merged, as Prometheus does), for each
//!    range after the first, smallest first: the blocks lying wholly inside
//!    one aligned window of that range are merged when there are at least
//!    two and either they span the whole window or a later block exists, so
//!    the window will not receive more.
//!
//! The planner sees only time ranges; what it returns is merged by
//! [`crate::merge`].

use sluice_block::Ulid;

/// What planning needs of a block.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Span {
    pub ulid: Ulid,
    /// First sample time (ms), inclusive.
    pub min_time: i64,
    /// End of the range (ms), exclusive, as meta.json has it.
    pub max_time: i64,
}

/// The blocks to merge into one next, or none. `ranges` are the compaction
/// ranges in ms, ascending (`-compactor.block-ranges`).
pub fn plan(blocks: &[Span], ranges: &[i64]) -> Vec<Ulid> {
    let mut sorted = blocks.to_vec();
    sorted.sort_by_key(|span| (span.min_time, span.ulid));
    let overlapping = first_overlap(&sorted);
    if !overlapping.is_empty() {
        return overlapping.iter().map(|span| span.ulid).collect();
    }
    sorted.pop();
    by_range(&sorted, ranges)
        .map(|group| group.iter().map(|span| span.ulid).collect())
        .unwrap_or_default()
}

/// The first run of blocks (sorted by start) each overlapping the union of
/// the ones before it.
fn first_overlap(sorted: &[Span]) -> &[Span] {
    let Some(first) = sorted.first() else {
        return &[];
    };
    let mut reach = first.max_time;
    let mut start = 0;
    for (index, span) in sorted.iter().enumerate().skip(1) {
        if span.min_time < reach {
            reach = reach.max(span.max_time);
            continue;
        }
        if index - start > 1 {
            return &sorted[start..index];
        }
        start = index;
        reach = span.max_time;
    }
    if sorted.len() - start > 1 {
        return &sorted[start..];
    }
    &[]
}

fn by_range<'a>(sorted: &'a [Span], ranges: &[i64]) -> Option<&'a [Span]> {
    let newest_start = sorted.last()?.min_time;
    for &range in ranges.iter().skip(1) {
        for group in aligned_groups(sorted, range) {
            let (first, last) = (group[0], group[group.len() - 1]);
            let spans_window = last.max_time - first.min_time == range;
            if group.len() > 1 && (spans_window || last.max_time <= newest_start) {
                return Some(group);
            }
        }
    }
    None
}

/// The runs of `sorted` blocks that each lie inside one window
/// `[k * range, (k + 1) * range)`; a block wider than its window (already
/// at this size, or misaligned) belongs to none.
fn aligned_groups(sorted: &[Span], range: i64) -> Vec<&[Span]> {
    let mut groups = Vec::new();
    let mut index = 0;
    while index < sorted.len() {
        let window_end = sorted[index].min_time.div_euclid(range) * range + range;
        if sorted[index].max_time > window_end {
            index += 1;
            continue;
        }
        let start = index;
        while index < sorted.len() && sorted[index].max_time <= window_end {
            index += 1;
        }
        groups.push(&sorted[start..index]);
    }
    groups
}

#[cfg(test)]
mod tests {
    use super::*;

    const H: i64 = 3_600_000;
    const RANGES: [i64; 3] = [2 * H, 12 * H, 24 * H];

    fn span(id: u128, min_time: i64, max_time: i64) -> Span {
        Span {
            ulid: Ulid(id),
            min_time,
            max_time,
        }
    }

    /// Head blocks as sluice cuts them: from the first sample to the last + 1.
    fn two_hour_blocks(count: i64) -> Vec<Span> {
        (0..count)
            .map(|k| span(k as u128 + 1, k * 2 * H + 15_000, (k + 1) * 2 * H - 14_999))
            .collect()
    }

    fn ids(ulids: &[Ulid]) -> Vec<u128> {
        ulids.iter().map(|ulid| ulid.0).collect()
    }

    #[test]
    fn a_full_window_of_small_blocks_is_merged_once_a_later_block_exists() {
        // Six 2h blocks fill [0, 12h); the eighth is left out as the
        // newest, and the seventh shows the window is over.
        assert_eq!(ids(&plan(&two_hour_blocks(8), &RANGES)), [1, 2, 3, 4, 5, 6]);
        // With seven, the seventh is left out and the sixth could still be
        // followed by a block of the same window: nothing to do yet.
        assert!(plan(&two_hour_blocks(7), &RANGES).is_empty());
    }

    #[test]
    fn an_unfinished_window_waits_but_a_passed_one_does_not() {
        // Blocks 1, 2 in [0, 12h), then a block at 13h: the window is over.
        let blocks = [
            span(1, 0, 2 * H),
            span(2, 2 * H, 4 * H),
            span(3, 13 * H, 14 * H),
            span(4, 15 * H, 16 * H),
        ];
        assert_eq!(ids(&plan(&blocks, &RANGES)), [1, 2]);
        // Only blocks in the newest window, the newest left out: one block.
        assert!(plan(&blocks[2..], &RANGES).is_empty());
    }

    #[test]
    fn merged_windows_go_on_to_the_next_range() {
        let blocks = [
            span(1, 0, 12 * H),
            span(2, 12 * H, 24 * H),
            span(3, 24 * H, 26 * H),
        ];
        assert_eq!(ids(&plan(&blocks, &RANGES)), [1, 2]);
        // A block as wide as the largest range is never merged again.
        let done = [
            span(1, 0, 24 * H),
            span(2, 24 * H, 48 * H),
            span(3, 48 * H, 50 * H),
        ];
        assert!(plan(&done, &RANGES).is_empty());
    }

    #[test]
    fn overlapping_blocks_are_merged_first_whatever_their_size() {
        let blocks = [
            span(1, 0, 2 * H),
            span(2, 2 * H, 4 * H),
            span(3, 3 * H, 5 * H),
            span(4, 4 * H + 1, 6 * H),
            span(5, 30 * H, 32 * H),
        ];
        // 3 overlaps 2, and 4 overlaps the union of 2 and 3.
        assert_eq!(ids(&plan(&blocks, &RANGES)), [2, 3, 4]);
        // The newest block is not spared when it overlaps.
        let late = [span(1, 0, 2 * H), span(2, H, 3 * H)];
        assert_eq!(ids(&plan(&late, &RANGES)), [1, 2]);
    }

    #[test]
    fn blocks_across_a_window_boundary_or_alone_are_left() {
        assert!(plan(&[], &RANGES).is_empty());
        assert!(plan(&[span(1, 0, 2 * H)], &RANGES).is_empty());
        // Block 2 crosses 12h: it fits no 12h window, so 1 and 3 are alone
        // in theirs; all three fit the first 24h window once it is over.
        let blocks = [
            span(1, 0, 2 * H),
            span(2, 11 * H, 13 * H),
            span(3, 14 * H, 16 * H),
            span(4, 40 * H, 41 * H),
            span(5, 42 * H, 43 * H),
        ];
        assert!(plan(&blocks[..4], &RANGES).is_empty());
        assert_eq!(ids(&plan(&blocks, &RANGES)), [1, 2, 3]);
        // Negative times align downwards too.
        let before_epoch = [
            span(1, -4 * H, -2 * H),
            span(2, -2 * H, 0),
            span(3, H, 2 * H),
            span(4, 20 * H, 21 * H),
        ];
        assert_eq!(ids(&plan(&before_epoch, &RANGES)), [1, 2]);
        // With one range nothing is merged but overlaps.
        assert!(plan(&two_hour_blocks(7), &[2 * H]).is_empty());
    }
}
