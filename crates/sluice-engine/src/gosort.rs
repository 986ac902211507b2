//! Go's `sort.Sort` and `container/heap`, rewritten, for the places where
//! Prometheus leaves the order of equal values to them: `sort`, `sort_desc`,
//! `topk`, `bottomk` and `limitk`. Neither is stable, but both are
//! deterministic, so following their steps exactly gives ties (`sort(up)`
//! with every target up, `topk(3, ...)` over equal rates) the very order and
//! choice Prometheus gives them.
//!
//! `sort.Sort` is pattern-defeating quicksort since Go 1.19: insertion sort
//! up to 12 elements, then median-of-three (Tukey's ninther from 50) pivots,
//! a partial insertion sort for nearly sorted input, a partition of
//! elements equal to the previous pivot, and heapsort once too many
//! partitions were unbalanced.

/// A slice and the `Less` of the Go `sort.Interface` it stands for.
struct Sorter<'a, T, F> {
    data: &'a mut [T],
    less: F,
}

impl<T, F: Fn(&T, &T) -> bool> Sorter<'_, T, F> {
    fn less(&self, i: usize, j: usize) -> bool {
        (self.less)(&self.data[i], &self.data[j])
    }

    fn insertion_sort(&mut self, a: usize, b: usize) {
        for i in a + 1..b {
            let mut j = i;
            while j > a && self.less(j, j - 1) {
                self.data.swap(j, j - 1);
                j -= 1;
            }
        }
    }

    fn sift_down(&mut self, lo: usize, hi: usize, first: usize) {
        let mut root = lo;
        loop {
            let mut child = 2 * root + 1;
            if child >= hi {
                return;
            }
            if child + 1 < hi && self.less(first + child, first + child + 1) {
                child += 1;
            }
            if !self.less(first + root, first + child) {
                return;
            }
            self.data.swap(first + root, first + child);
            root = child;
        }
    }

    fn heap_sort(&mut self, a: usize, b: usize) {
        let (first, hi) = (a, b - a);
        for i in (0..=(hi - 1) / 2).rev() {
            self.sift_down(i, hi, first);
        }
        for i in (0..hi).rev() {
            self.data.swap(first, first + i);
            self.sift_down(0, i, first);
        }
    }

    fn pdqsort(&mut self, mut a: usize, mut b: usize, mut limit: u32) {
        const MAX_INSERTION: usize = 12;
        let (mut was_balanced, mut was_partitioned) = (true, true);
        loop {
            let length = b - a;
            if length <= MAX_INSERTION {
                self.insertion_sort(a, b);
                return;
            }
            if limit == 0 {
                self.heap_sort(a, b);
                return;
            }
            if !was_balanced {
                self.break_patterns(a, b);
                limit -= 1;
            }
            let (mut pivot, mut hint) = self.choose_pivot(a, b);
            if hint == Hint::Decreasing {
                self.data[a..b].reverse();
                pivot = (b - 1) - (pivot - a);
                hint = Hint::Increasing;
            }
            if was_balanced
                && was_partitioned
                && hint == Hint::Increasing
                && self.partial_insertion_sort(a, b)
            {
                return;
            }
            // Many elements equal to the previous pivot: set them aside.
            if a > 0 && !self.less(a - 1, pivot) {
                a = self.partition_equal(a, b, pivot);
                continue;
            }
            let (mid, already_partitioned) = self.partition(a, b, pivot);
            was_partitioned = already_partitioned;
            let (left, right) = (mid - a, b - mid);
            let balance_threshold = length / 8;
            if left < right {
                was_balanced = left >= balance_threshold;
                self.pdqsort(a, mid, limit);
                a = mid + 1;
            } else {
                was_balanced = right >= balance_threshold;
                self.pdqsort(mid + 1, b, limit);
                b = mid;
            }
        }
    }

    /// One quicksort partition around `data[pivot]`, moved to `a` first;
    /// returns where the pivot ends and whether nothing had to move.
    fn partition(&mut self, a: usize, b: usize, pivot: usize) -> (usize, bool) {
        self.data.swap(a, pivot);
        // Signed: `j` may step below `i` (past `a`) before the loop ends.
        let (mut i, mut j) = (a as isize + 1, b as isize - 1);
        let mut untouched = true;
        loop {
            while i <= j && self.less(i as usize, a) {
                i += 1;
            }
            while i <= j && !self.less(j as usize, a) {
                j -= 1;
            }
            if i > j {
                self.data.swap(j as usize, a);
                return (j as usize, untouched);
            }
            self.data.swap(i as usize, j as usize);
            i += 1;
            j -= 1;
            untouched = false;
        }
    }

    fn partition_equal(&mut self, a: usize, b: usize, pivot: usize) -> usize {
        self.data.swap(a, pivot);
        let (mut i, mut j) = (a as isize + 1, b as isize - 1);
        loop {
            while i <= j && !self.less(a, i as usize) {
                i += 1;
            }
            while i <= j && self.less(a, j as usize) {
                j -= 1;
            }
            if i > j {
                break;
            }
            self.data.swap(i as usize, j as usize);
            i += 1;
            j -= 1;
        }
        i as usize
    }

    fn partial_insertion_sort(&mut self, a: usize, b: usize) -> bool {
        const MAX_STEPS: usize = 5;
        const SHORTEST_SHIFTING: usize = 50;
        let mut i = a + 1;
        for _ in 0..MAX_STEPS {
            while i < b && !self.less(i, i - 1) {
                i += 1;
            }
            if i == b {
                return true;
            }
            if b - a < SHORTEST_SHIFTING {
                return false;
            }
            self.data.swap(i, i - 1);
            if i - a >= 2 {
                let mut j = i - 1;
                while j >= 1 && self.less(j, j - 1) {
                    self.data.swap(j, j - 1);
                    j -= 1;
                }
            }
            if b - i >= 2 {
                let mut j = i + 1;
                while j < b && self.less(j, j - 1) {
                    self.data.swap(j, j - 1);
                    j += 1;
                }
            }
        }
        false
    }

    fn break_patterns(&mut self, a: usize, b: usize) {
        let length = b - a;
        if length < 8 {
            return;
        }
        let mut random = length as u64;
        let modulus = 1usize << (usize::BITS - length.leading_zeros());
        let middle = a + (length / 4) * 2;
        for index in middle - 1..=middle + 1 {
            // xorshift64 with Go's constants.
            random ^= random << 13;
            random ^= random >> 7;
            random ^= random << 17;
            let mut other = (random as usize) & (modulus - 1);
            if other >= length {
                other -= length;
            }
            self.data.swap(index, a + other);
        }
    }

    fn choose_pivot(&mut self, a: usize, b: usize) -> (usize, Hint) {
        const SHORTEST_NINTHER: usize = 50;
        const MAX_SWAPS: usize = 4 * 3;
        let length = b - a;
        let mut swaps = 0;
        let (mut i, mut j, mut k) = (a + length / 4, a + length / 4 * 2, a + length / 4 * 3);
        if length >= 8 {
            if length >= SHORTEST_NINTHER {
                i = self.median(i - 1, i, i + 1, &mut swaps);
                j = self.median(j - 1, j, j + 1, &mut swaps);
                k = self.median(k - 1, k, k + 1, &mut swaps);
            }
            j = self.median(i, j, k, &mut swaps);
        }
        match swaps {
            0 => (j, Hint::Increasing),
            MAX_SWAPS => (j, Hint::Decreasing),
            _ => (j, Hint::Unknown),
        }
    }

    fn order2(&self, a: usize, b: usize, swaps: &mut usize) -> (usize, usize) {
        if self.less(b, a) {
            *swaps += 1;
            return (b, a);
        }
        (a, b)
    }

    fn median(&self, a: usize, b: usize, c: usize, swaps: &mut usize) -> usize {
        let (a, b) = self.order2(a, b, swaps);
        let (b, c) = self.order2(b, c, swaps);
        let (_, b) = self.order2(a, b, swaps);
        let _ = c;
        b
    }
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Hint {
    Unknown,
    Increasing,
    Decreasing,
}

/// Sorts `data` as Go's `sort.Sort` does with `less` as the interface's
/// `Less`: the same result, ties included.
pub(crate) fn sort<T>(data: &mut [T], less: impl Fn(&T, &T) -> bool) {
    let length = data.len();
    if length <= 1 {
        return;
    }
    let limit = usize::BITS - length.leading_zeros();
    Sorter { data, less }.pdqsort(0, length, limit);
}

/// Go's `heap.Push`: appends `item` and moves it up.
pub(crate) fn heap_push<T>(heap: &mut Vec<T>, item: T, less: impl Fn(&T, &T) -> bool) {
    heap.push(item);
    let last = heap.len() - 1;
    heap_up(heap, last, &less);
}

/// Go's `heap.Fix`: restores the heap after `heap[index]` changed.
pub(crate) fn heap_fix<T>(heap: &mut [T], index: usize, less: impl Fn(&T, &T) -> bool) {
    if !heap_down(heap, index, &less) {
        heap_up(heap, index, &less);
    }
}

fn heap_up<T>(heap: &mut [T], mut child: usize, less: &impl Fn(&T, &T) -> bool) {
    while child > 0 {
        let parent = (child - 1) / 2;
        if !less(&heap[child], &heap[parent]) {
            return;
        }
        heap.swap(parent, child);
        child = parent;
    }
}

fn heap_down<T>(heap: &mut [T], start: usize, less: &impl Fn(&T, &T) -> bool) -> bool {
    let mut parent = start;
    loop {
        let left = 2 * parent + 1;
        if left >= heap.len() {
            break;
        }
        let mut child = left;
        if left + 1 < heap.len() && less(&heap[left + 1], &heap[left]) {
            child = left + 1;
        }
        if !less(&heap[child], &heap[parent]) {
            break;
        }
        heap.swap(parent, child);
        parent = child;
    }
    parent > start
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    proptest! {
        #[test]
        fn sorts_like_a_sort(mut values in prop::collection::vec(0u8..20, 0..300)) {
            let mut expected = values.clone();
            expected.sort_unstable();
            sort(&mut values, |a, b| a < b);
            prop_assert_eq!(values, expected);
        }

        #[test]
        fn the_heap_keeps_its_least_on_top(values in prop::collection::vec(any::<i32>(), 1..100)) {
            let mut heap = Vec::new();
            for value in &values {
                heap_push(&mut heap, *value, |a, b| a < b);
            }
            prop_assert_eq!(heap[0], *values.iter().min().unwrap());
            heap[0] = i32::MAX;
            heap_fix(&mut heap, 0, |a, b| a < b);
            let mut rest = values.clone();
            rest.sort_unstable();
            prop_assert_eq!(heap[0], *rest.get(1).unwrap_or(&i32::MAX));
        }
    }

    /// Up to 12 elements Go insertion sorts, which keeps ties in order;
    /// longer inputs with ties are checked against Prometheus itself by
    /// `crates/sluice/tests/blocks_compare.rs` (`sort_desc`, `topk`).
    #[test]
    fn short_inputs_keep_ties_in_order() {
        let mut short: Vec<(u8, u8)> = (0..12).map(|i| ((i % 2) as u8, i as u8)).collect();
        sort(&mut short, |a, b| a.0 < b.0);
        let seconds: Vec<u8> = short.iter().map(|pair| pair.1).collect();
        assert_eq!(seconds, vec![0, 2, 4, 6, 8, 10, 1, 3, 5, 7, 9, 11]);
    }
}
