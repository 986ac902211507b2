//! Accepting samples: check each against the series and the batch so far,
//! let the caller log what passed, then apply it. Appends and WAL replay
//! share this path, so a replayed head decides exactly as the live one did.

use std::collections::HashMap;
use std::hash::BuildHasher as _;
use std::sync::Arc;

use sluice_block::Labels;
use sluice_wal::Entry;

use crate::series::{MemSeries, SeriesData};
use crate::{AppendState, Head, HeadOptions, LabelHasher, TenantHead};

/// One series of a write: labels already validated and sorted, samples in
/// the order sent.
#[derive(Clone, Debug)]
pub struct AppendSeries {
    pub labels: Labels,
    pub samples: Vec<(i64, f64)>,
}

/// Why the head refused a sample.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Rejection {
    /// Older than the series' newest sample, with no out-of-order window.
    OutOfOrder,
    /// Too old for the head (behind the newest sample by more than half a
    /// block range, or before the last block cut).
    OutOfBounds,
    /// Older than the out-of-order window allows.
    TooOld,
    /// A different value at a timestamp already stored.
    DuplicateTimestamp,
    /// A new series beyond the tenant's series limit (the limit).
    SeriesLimit(usize),
}

/// A refused sample: which series of the batch, and when.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Rejected {
    pub rejection: Rejection,
    pub series: usize,
    pub timestamp: i64,
}

impl Rejected {
    /// The message a sender gets, as Mimir's ingester words it.
    pub fn message(&self, labels: &Labels, options: &HeadOptions) -> String {
        let (cause, id) = match self.rejection {
            Rejection::OutOfOrder => ("another sample with a more recent timestamp has already been ingested and out-of-order samples are not allowed".to_owned(), "sample-out-of-order"),
            Rejection::OutOfBounds => ("its timestamp is too old".to_owned(), "sample-timestamp-too-old"),
            Rejection::TooOld => (format!("another sample with a more recent timestamp has already been ingested and this sample is beyond the out-of-order time window of {}ms", options.out_of_order_window_ms), "sample-timestamp-too-old"),
            Rejection::DuplicateTimestamp => ("another sample with the same timestamp, but a different value, has already been ingested".to_owned(), "sample-duplicate-timestamp"),
            // Mimir names no series here: the limit is the tenant's, not the series'.
            Rejection::SeriesLimit(limit) => return series_limit_message(limit),
        };
        format!(
            "the sample has been rejected because {cause} (err-mimir-{id}). The affected sample has timestamp {} and is from series {labels}",
            self.timestamp
        )
    }
}

/// The message a write over the tenant's series limit gets, Mimir's words.
pub fn series_limit_message(limit: usize) -> String {
    format!(
        "per-user series limit of {limit} exceeded (err-mimir-max-series-per-user). To adjust the related per-tenant limit, configure -ingester.max-global-series-per-user, or contact your service administrator."
    )
}

/// What one append did.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct AppendOutcome {
    pub accepted: usize,
    /// Samples equal to stored ones: ignored, not errors.
    pub duplicates: usize,
    pub created_series: usize,
    pub rejected: Vec<Rejected>,
    /// Replay only: samples whose series reference the WAL never defined
    /// (a damaged log), skipped.
    pub unknown_references: usize,
}

enum Decision {
    InOrder,
    OutOfOrder,
    Duplicate,
    Refuse(Rejection),
}

/// One series as a batch changes it, before anything is applied.
struct Target {
    existing: Option<Arc<MemSeries>>,
    /// A new series' labels; empty for an existing one (its own are used).
    labels: Labels,
    hash: u64,
    reference: u64,
    max_t: i64,
    last_bits: u64,
    /// Accepted: (t, value bits, in order).
    accepted: Vec<(i64, u64, bool)>,
    /// A new series the tenant's series limit leaves no room for.
    over_limit: bool,
}

impl Target {
    fn labels(&self) -> &Labels {
        self.existing
            .as_ref()
            .map_or(&self.labels, |series| &series.labels)
    }

    fn stored_bits(&self, data: Option<&SeriesData>, t: i64) -> Option<u64> {
        let pending = self.accepted.iter().rev().find(|(at, _, _)| *at == t);
        pending
            .map(|(_, bits, _)| *bits)
            .or_else(|| data.and_then(|data| data.bits_at(t)))
    }

    fn decide(&self, data: Option<&SeriesData>, t: i64, bits: u64, bounds: &Bounds) -> Decision {
        if self.over_limit {
            return Decision::Refuse(Rejection::SeriesLimit(bounds.max_series));
        }
        if t > self.max_t {
            return match t < bounds.in_order_floor {
                true => Decision::Refuse(Rejection::OutOfBounds),
                false => Decision::InOrder,
            };
        }
        match self.stored_bits(data, t) {
            Some(stored) if stored == bits => return Decision::Duplicate,
            Some(_) => return Decision::Refuse(Rejection::DuplicateTimestamp),
            None => {}
        }
        if bounds.window_ms == 0 {
            return match t < bounds.in_order_floor {
                true => Decision::Refuse(Rejection::OutOfBounds),
                false => Decision::Refuse(Rejection::OutOfOrder),
            };
        }
        match t < bounds.out_of_order_floor {
            true => Decision::Refuse(Rejection::TooOld),
            false => Decision::OutOfOrder,
        }
    }
}

/// A tenant's limits for one batch, fixed at its start.
struct Bounds {
    /// The tenant's series limit (0: none) and the new series it still
    /// allows in this batch.
    max_series: usize,
    series_room: usize,
    window_ms: i64,
    in_order_floor: i64,
    out_of_order_floor: i64,
}

impl Bounds {
    fn new(state: &AppendState, options: &HeadOptions, limit: SeriesLimit) -> Bounds {
        let behind = |distance: i64| match state.max_t {
            i64::MIN => i64::MIN,
            max_t => max_t.saturating_sub(distance),
        };
        let in_order_floor = match options.out_of_order_window_ms {
            0 => behind(options.block_range_ms / 2).max(state.floor),
            _ => state.floor,
        };
        Bounds {
            max_series: limit.max_series,
            series_room: limit.max_series.saturating_sub(limit.current),
            window_ms: options.out_of_order_window_ms,
            in_order_floor,
            out_of_order_floor: behind(options.out_of_order_window_ms).max(state.floor),
        }
    }
}

/// A batch being planned: its targets by labels, and what it decided.
struct Plan {
    targets: Vec<Target>,
    /// Indexes into `targets`, by their labels' hash.
    by_labels: hashbrown::HashTable<usize>,
    hasher: LabelHasher,
    outcome: AppendOutcome,
    bounds: Bounds,
}

impl Plan {
    fn target(
        &mut self,
        head: &Head,
        tenant: &TenantHead,
        labels: &Labels,
        reference: Option<u64>,
    ) -> usize {
        let hash = self.hasher.hash_one(labels);
        let targets = &self.targets;
        if let Some(found) = self
            .by_labels
            .find(hash, |&index| targets[index].labels() == labels)
        {
            return *found;
        }
        let existing = tenant.read_index().by_labels.get(labels).cloned();
        let (max_t, last_bits) = existing.as_ref().map_or((i64::MIN, 0), |series| {
            let data = series.data();
            (data.max_t, data.last_bits)
        });
        // Replay (a reference given) re-creates what was once accepted.
        let over_limit = existing.is_none()
            && reference.is_none()
            && self.bounds.max_series > 0
            && !self.take_series_room();
        let reference = match (&existing, reference) {
            (Some(series), _) => series.reference,
            (None, Some(reference)) => reference,
            (None, None) => head.new_reference(),
        };
        self.targets.push(Target {
            labels: match existing {
                Some(_) => Labels::default(),
                None => labels.clone(),
            },
            existing,
            hash,
            reference,
            max_t,
            last_bits,
            accepted: Vec::new(),
            over_limit,
        });
        let (index, targets) = (self.targets.len() - 1, &self.targets);
        self.by_labels
            .insert_unique(hash, index, |&index| targets[index].hash);
        index
    }

    fn take_series_room(&mut self) -> bool {
        match self.bounds.series_room.checked_sub(1) {
            Some(left) => {
                self.bounds.series_room = left;
                true
            }
            None => false,
        }
    }

    fn sample(&mut self, target: usize, series: usize, t: i64, value: f64) {
        let bits = value.to_bits();
        let target = &mut self.targets[target];
        let existing = target.existing.clone();
        let data = existing.as_ref().map(|series| series.data());
        match target.decide(data.as_deref(), t, bits, &self.bounds) {
            Decision::InOrder => {
                target.accepted.push((t, bits, true));
                target.max_t = t;
                target.last_bits = bits;
            }
            Decision::OutOfOrder => target.accepted.push((t, bits, false)),
            Decision::Duplicate => self.outcome.duplicates += 1,
            Decision::Refuse(rejection) => self.outcome.rejected.push(Rejected {
                rejection,
                series,
                timestamp: t,
            }),
        }
    }

    /// The WAL entry of what was accepted: new series first, then samples.
    fn entry(&self, tenant: &str) -> Entry {
        let mut entry = Entry {
            tenant: tenant.to_owned(),
            ..Entry::default()
        };
        for target in self
            .targets
            .iter()
            .filter(|target| !target.accepted.is_empty())
        {
            if target.existing.is_none() {
                let labels = target
                    .labels
                    .iter()
                    .map(|label| (label.name.clone(), label.value.clone()));
                entry.series.push((target.reference, labels.collect()));
            }
            let samples = target
                .accepted
                .iter()
                .map(|(t, bits, _)| (target.reference, *t, f64::from_bits(*bits)));
            entry.samples.extend(samples);
        }
        entry
    }
}

/// A tenant's series limit as one batch sees it.
#[derive(Clone, Copy, Default)]
struct SeriesLimit {
    max_series: usize,
    current: usize,
}

impl Head {
    fn plan(&self, state: &AppendState, limit: SeriesLimit) -> Plan {
        Plan {
            targets: Vec::new(),
            by_labels: hashbrown::HashTable::new(),
            hasher: LabelHasher::default(),
            outcome: AppendOutcome::default(),
            bounds: Bounds::new(state, &self.options, limit),
        }
    }

    /// Appends a batch to `tenant`: plans it, hands the WAL entry of what
    /// passed to `log` (also when empty: the caller decides whether to
    /// write), and applies it only if `log` succeeds. Writers of one
    /// tenant run one at a time.
    pub fn append<T, E>(
        &self,
        tenant: &str,
        batch: &[AppendSeries],
        log: impl FnOnce(&Entry) -> Result<T, E>,
    ) -> Result<(AppendOutcome, T), E> {
        self.append_limited(tenant, batch, 0, log)
    }

    /// [`Head::append`] with at most `max_series` series for the tenant
    /// (0: no limit): the samples of a new series beyond it are refused
    /// ([`Rejection::SeriesLimit`]), those of existing series still taken.
    pub fn append_limited<T, E>(
        &self,
        tenant: &str,
        batch: &[AppendSeries],
        max_series: usize,
        log: impl FnOnce(&Entry) -> Result<T, E>,
    ) -> Result<(AppendOutcome, T), E> {
        let tenant_head = self.tenant_or_new(tenant);
        let mut state = tenant_head
            .append
            .lock()
            .unwrap_or_else(|poison| poison.into_inner());
        // Counted under the append lock: no other writer of the tenant
        // creates series meanwhile.
        let limit = SeriesLimit {
            max_series,
            current: match max_series {
                0 => 0,
                _ => tenant_head.read_index().by_labels.len(),
            },
        };
        let mut plan = self.plan(&state, limit);
        for (position, series) in batch.iter().enumerate() {
            let target = plan.target(self, &tenant_head, &series.labels, None);
            for (t, value) in &series.samples {
                plan.sample(target, position, *t, *value);
            }
        }
        let logged = log(&plan.entry(tenant))?;
        let outcome = self.apply(&tenant_head, &mut state, plan);
        Ok((outcome, logged))
    }

    /// Applies a WAL entry as [`Head::append`] applied it the first time.
    pub fn replay(&self, entry: &Entry, references: &mut HashMap<u64, Labels>) -> AppendOutcome {
        let tenant_head = self.tenant_or_new(&entry.tenant);
        let mut state = tenant_head
            .append
            .lock()
            .unwrap_or_else(|poison| poison.into_inner());
        let mut plan = self.plan(&state, SeriesLimit::default());
        for (reference, pairs) in &entry.series {
            let labels = Labels::new(
                pairs
                    .iter()
                    .map(|(name, value)| sluice_block::Label {
                        name: name.clone(),
                        value: value.clone(),
                    })
                    .collect(),
            );
            self.saw_reference(*reference);
            references.insert(*reference, labels);
        }
        let mut unknown = 0;
        for (reference, t, value) in &entry.samples {
            let Some(labels) = references.get(reference) else {
                unknown += 1;
                continue;
            };
            let target = plan.target(self, &tenant_head, labels, Some(*reference));
            plan.sample(target, 0, *t, *value);
        }
        let mut outcome = self.apply(&tenant_head, &mut state, plan);
        outcome.unknown_references = unknown;
        outcome
    }

    fn apply(&self, tenant: &TenantHead, state: &mut AppendState, plan: Plan) -> AppendOutcome {
        let mut outcome = plan.outcome;
        for target in plan
            .targets
            .into_iter()
            .filter(|target| !target.accepted.is_empty())
        {
            let series = match target.existing {
                Some(series) => series,
                None => {
                    outcome.created_series += 1;
                    self.insert(tenant, MemSeries::new(target.labels, target.reference))
                }
            };
            let mut data = series.data();
            for (t, bits, in_order) in target.accepted {
                match in_order {
                    true => data.push(t, bits, self.options.block_range_ms),
                    false => data.push_out_of_order(t, bits),
                }
                state.max_t = state.max_t.max(t);
                outcome.accepted += 1;
            }
        }
        outcome
    }

    fn insert(&self, tenant: &TenantHead, series: MemSeries) -> Arc<MemSeries> {
        let series = Arc::new(series);
        let mut index = tenant
            .index
            .write()
            .unwrap_or_else(|poison| poison.into_inner());
        index
            .by_labels
            .insert(series.labels.clone(), Arc::clone(&series));
        let name = series.labels.get("__name__").unwrap_or_default().to_owned();
        index
            .by_name
            .entry(name)
            .or_default()
            .push(Arc::clone(&series));
        series
    }
}
