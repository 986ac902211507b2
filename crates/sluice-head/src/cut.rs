//! Handing the head's oldest samples over to a block: [`Head::take_before`]
//! closes a time range to writes and copies it out, the caller writes the
//! block and makes it visible, then [`Head::drop_before`] forgets it.
//! Between the two a query may see a sample in both; readers keep it once.

use sluice_block::{Labels, Sample};

use crate::Head;

impl Head {
    /// `tenant`'s oldest and newest sample, if it has any.
    pub fn time_range(&self, tenant: &str) -> Option<(i64, i64)> {
        let head = self.tenant(tenant)?;
        let max_t = head
            .append
            .lock()
            .unwrap_or_else(|poison| poison.into_inner())
            .max_t;
        let index = head.read_index();
        let min_t = index
            .by_labels
            .values()
            .map(|series| series.data().min_t)
            .min()?;
        (min_t != i64::MAX).then_some((min_t, max_t))
    }

    /// Refuses every later sample of `tenant` older than `end` (out of
    /// bounds) and returns the samples before `end`, per series, in time
    /// order. Nothing is dropped yet.
    pub fn take_before(&self, tenant: &str, end: i64) -> Vec<(Labels, Vec<Sample>)> {
        let Some(head) = self.tenant(tenant) else {
            return Vec::new();
        };
        let mut state = head
            .append
            .lock()
            .unwrap_or_else(|poison| poison.into_inner());
        state.floor = state.floor.max(end);
        let index = head.read_index();
        let mut taken = Vec::new();
        for series in index.by_labels.values() {
            let samples = series.data().samples_before(end);
            if !samples.is_empty() {
                let samples = samples
                    .into_iter()
                    .map(|(t, bits)| Sample {
                        t,
                        v: f64::from_bits(bits),
                    })
                    .collect();
                taken.push((series.labels.clone(), samples));
            }
        }
        taken
    }

    /// The time before which `tenant` accepts no sample: the end of the
    /// last range handed over to a block (`i64::MIN` before any).
    pub fn floor(&self, tenant: &str) -> i64 {
        self.tenant(tenant).map_or(i64::MIN, |head| {
            head.append
                .lock()
                .unwrap_or_else(|poison| poison.into_inner())
                .floor
        })
    }

    /// Forgets `tenant`'s samples before `end`, which a block now holds.
    pub fn drop_before(&self, tenant: &str, end: i64) {
        let Some(head) = self.tenant(tenant) else {
            return;
        };
        let index = head.read_index();
        for series in index.by_labels.values() {
            series.data().drop_before(end);
        }
    }
}
