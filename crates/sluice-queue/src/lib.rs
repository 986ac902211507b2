//! The tenant-fair request queue that sits between sluice's query-frontend (or
//! query-scheduler) and the queriers that pull work from it. Each tenant has
//! its own bounded FIFO; queriers are served tenants round robin so that one
//! tenant's burst cannot starve the others, and with shuffle sharding a tenant
//! is confined to a stable subset of queriers so that a bad tenant can only
//! hurt part of the fleet.
//!
//! Fairness is by cost, not count: a tenant's share is the querier slots it
//! holds, i.e. items handed out and not yet finished (see [`InFlightGuard`]).
//! A dequeue serves the tenant holding fewest slots, and a tenant that already
//! holds slots may not take the last `reserved_slots` idle ones, so a tenant
//! arriving beside a flood of slow work finds a free querier at once instead
//! of waiting for a multi-second piece to finish. The queue itself is generic over the item type and
//! knows nothing about queries; [`worker_stream`] is the owner's side of the
//! pull protocol that queriers drain it with, shared by the query-frontend
//! and the query-scheduler.
//!
//! Time is read from [`tokio::time::Instant`], so tests can drive deadlines and
//! the querier forget delay with `tokio::time::pause()` and `advance()`.

mod shard;
#[cfg(test)]
mod tests;
pub mod worker_stream;

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::fmt;
use std::ops::Bound;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use tokio::sync::Notify;
use tokio::time::Instant;

/// Settings of a [`RequestQueue`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct QueueConfig {
    /// Items a tenant may have queued at once; the next one is rejected with
    /// [`EnqueueError::TooManyRequests`]. `0` means no limit.
    pub max_outstanding_per_tenant: usize,
    /// Size of each tenant's shuffle shard of queriers; `0` lets every querier
    /// serve every tenant. Also off while there are no more queriers than this.
    pub max_queriers_per_tenant: usize,
    /// How long a querier whose last connection closed still counts as a shard
    /// member, so that a restarting querier does not reshuffle tenants. Its
    /// tenants wait for it (or for the delay to pass) in the meantime.
    pub querier_forget_delay: Duration,
    /// Idle querier slots a tenant that already holds slots may not take, so
    /// that another tenant finds one free at once. Capacity is the slots in
    /// use plus the dequeuers waiting; a tenant holding none may always take
    /// one. `0` turns the reserve off (fewest-held-first still applies).
    pub reserved_slots: usize,
    /// Per-tenant values of the two limits above, when they can differ by
    /// tenant (runtime overrides); the fields above are then unused.
    pub tenant_limits: Option<TenantLimitsFn>,
}

/// A tenant's own queue limits.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TenantQueueLimits {
    pub max_outstanding: usize,
    pub max_queriers: usize,
}

/// Where the queue reads each tenant's limits. Called under the queue's
/// lock, so it must be quick and must not call back into the queue.
#[derive(Clone)]
pub struct TenantLimitsFn(pub Arc<dyn Fn(&str) -> TenantQueueLimits + Send + Sync>);

impl std::fmt::Debug for TenantLimitsFn {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("TenantLimitsFn")
    }
}

impl PartialEq for TenantLimitsFn {
    fn eq(&self, other: &Self) -> bool {
        Arc::ptr_eq(&self.0, &other.0)
    }
}

impl Eq for TenantLimitsFn {}

impl QueueConfig {
    fn limits(&self, tenant: &str) -> TenantQueueLimits {
        match &self.tenant_limits {
            Some(limits) => (limits.0)(tenant),
            None => TenantQueueLimits {
                max_outstanding: self.max_outstanding_per_tenant,
                max_queriers: self.max_queriers_per_tenant,
            },
        }
    }

    /// Whether any tenant may have a shuffle shard, now or after a reload.
    fn sharding_possible(&self) -> bool {
        self.max_queriers_per_tenant > 0 || self.tenant_limits.is_some()
    }
}

impl Default for QueueConfig {
    fn default() -> Self {
        Self {
            max_outstanding_per_tenant: 100,
            max_queriers_per_tenant: 0,
            querier_forget_delay: Duration::ZERO,
            reserved_slots: 1,
            tenant_limits: None,
        }
    }
}

/// Why [`RequestQueue::enqueue`] refused an item (the item is dropped).
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum EnqueueError {
    /// The tenant already has `max_outstanding_per_tenant` items queued (HTTP 429).
    #[error("too many outstanding requests")]
    TooManyRequests,
    /// [`RequestQueue::stop`] was called (the process is shutting down).
    #[error("queue is stopped")]
    Stopped,
}

/// An item handed to a querier.
#[derive(Debug)]
pub struct Dequeued<T> {
    pub item: T,
    pub tenant: Arc<str>,
    /// When it was enqueued, for queue-wait metrics and for the "time spent
    /// queued" field sent to the querier.
    pub enqueued_at: Instant,
    /// The querier slot the item occupies, charged to its tenant until
    /// dropped: hold it until the work is answered, canceled or lost.
    pub in_flight: InFlightGuard,
}

/// One querier slot held by a tenant. Dropping it frees the slot and wakes a
/// waiting dequeuer if that lets a blocked tenant take one.
#[must_use = "dropping the guard frees the tenant's slot at once"]
pub struct InFlightGuard {
    queue: Arc<dyn Release>,
    tenant: Arc<str>,
}

impl Drop for InFlightGuard {
    fn drop(&mut self) {
        self.queue.release(&self.tenant);
    }
}

impl fmt::Debug for InFlightGuard {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("InFlightGuard")
            .field("tenant", &self.tenant)
            .finish()
    }
}

/// Tenant-fair queue of `T`. Cloning is cheap and every clone is the same queue.
pub struct RequestQueue<T> {
    shared: Arc<Shared<T>>,
}

impl<T> Clone for RequestQueue<T> {
    fn clone(&self) -> Self {
        Self {
            shared: Arc::clone(&self.shared),
        }
    }
}

impl<T> fmt::Debug for RequestQueue<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let st = self.shared.lock();
        f.debug_struct("RequestQueue")
            .field("len", &st.len)
            .field("tenants", &st.tenants.len())
            .field("queriers", &st.queriers.len())
            .field("stopped", &st.stopped)
            .finish()
    }
}

/// Proof that an item is queued. Dropping it while the item is still queued
/// removes the item at once (the client went away, or the owner's deadline
/// fired), so lengths and metrics never count abandoned work. Dropping it after
/// the item was dequeued does nothing.
#[must_use = "dropping the guard removes the item from the queue"]
pub struct QueuedGuard {
    queue: Arc<dyn Remove>,
    tenant: Arc<str>,
    id: u64,
    done: bool,
}

impl QueuedGuard {
    /// Removes the item if it is still queued; returns whether it was, i.e.
    /// whether no querier will ever see it (count it as discarded).
    pub fn cancel(mut self) -> bool {
        self.done = true;
        self.queue.remove(&self.tenant, self.id)
    }

    /// Whether the item is still waiting in the queue.
    pub fn is_queued(&self) -> bool {
        self.queue.contains(&self.tenant, self.id)
    }

    /// Lets the item stay queued after the guard is dropped; it then leaves
    /// only through a dequeue or its deadline.
    pub fn detach(mut self) {
        self.done = true;
    }
}

impl Drop for QueuedGuard {
    fn drop(&mut self) {
        if !self.done {
            self.queue.remove(&self.tenant, self.id);
        }
    }
}

impl fmt::Debug for QueuedGuard {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("QueuedGuard")
            .field("tenant", &self.tenant)
            .field("id", &self.id)
            .finish()
    }
}

/// One connection (worker stream) of a querier. Connections of the same
/// querier id share its round-robin cursor and its place in shuffle shards;
/// dropping the last one disconnects the querier (see `querier_forget_delay`).
pub struct QuerierHandle {
    queue: Arc<dyn Unregister>,
    querier_id: Arc<str>,
}

impl QuerierHandle {
    pub fn querier_id(&self) -> &str {
        &self.querier_id
    }
}

impl Drop for QuerierHandle {
    fn drop(&mut self) {
        self.queue.unregister(&self.querier_id);
    }
}

impl fmt::Debug for QuerierHandle {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("QuerierHandle")
            .field("querier_id", &self.querier_id)
            .finish()
    }
}

// Guards and handles are not generic so that callers can store them without
// naming the item type; they reach the queue through these.
trait Remove: Send + Sync {
    fn remove(&self, tenant: &str, id: u64) -> bool;
    fn contains(&self, tenant: &str, id: u64) -> bool;
}

trait Unregister: Send + Sync {
    fn unregister(&self, querier_id: &str);
}

trait Release: Send + Sync {
    fn release(&self, tenant: &str);
}

struct Shared<T> {
    config: QueueConfig,
    state: Mutex<State<T>>,
}

struct Entry<T> {
    id: u64,
    item: T,
    enqueued_at: Instant,
    deadline: Option<Instant>,
}

struct TenantQueue<T> {
    ring_pos: u64,
    // Ids increase along the deque, so a cancelled item is found by binary search.
    items: VecDeque<Entry<T>>,
    shard: Option<Shard>,
}

struct Shard {
    generation: u64,
    /// The tenant's shard size it was computed for (a reload may change it).
    size: usize,
    // Sorted; `None` means every querier.
    members: Option<Box<[Arc<str>]>>,
}

struct Querier {
    connections: usize,
    disconnected_at: Option<Instant>,
    shutting_down: bool,
    // Ring position of the tenant this querier was last served from; shared by
    // all its connections so that its pulls, taken together, go round robin.
    cursor: u64,
}

struct State<T> {
    tenants: HashMap<Arc<str>, TenantQueue<T>>,
    // Tenants with queued items in join order. Keys are never reused, so a
    // cursor stays meaningful after its tenant leaves and a new tenant always
    // joins at the end of the round.
    ring: BTreeMap<u64, Arc<str>>,
    next_ring_pos: u64,
    next_item_id: u64,
    len: usize,
    /// Tenants in `tenants` that are federated ids (`a|b`): while there are
    /// none, a tenant's own FIFO is all it is charged for.
    federated: usize,

    // Connected queriers plus disconnected ones still within the forget delay:
    // exactly the set shuffle shards are drawn from.
    queriers: HashMap<Arc<str>, Querier>,
    // Bumped whenever `queriers` gains or loses a member, invalidating shards.
    querier_generation: u64,
    next_forget_at: Option<Instant>,

    // Dequeuers asleep, oldest first. Each enqueue wakes one waiter that may
    // serve the tenant instead of all of them.
    waiting: BTreeMap<u64, Waiter>,
    // Woken dequeuers that have not run yet, with the tenant they were woken
    // for; if one gives up or takes another tenant's item, that tenant's
    // wakeup is passed on so its item is not left behind while others sleep.
    notified: HashMap<u64, Option<Arc<str>>>,
    next_waiter_id: u64,

    // Querier slots held per tenant (absent = none) and in total.
    in_flight: HashMap<Arc<str>, usize>,
    total_in_flight: usize,
    // Dequeue calls under way (asleep or not): the idle slots. With
    // `total_in_flight` they make the capacity the reserve is taken from.
    dequeuers: usize,

    stopped: bool,
}

struct Waiter {
    querier: Arc<str>,
    notify: Arc<Notify>,
}

impl<T> Shared<T> {
    fn lock(&self) -> MutexGuard<'_, State<T>> {
        // Nothing panics while the lock is held except on broken invariants;
        // keep serving rather than cascading panics through every caller.
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }
}

impl<T: Send + 'static> Remove for Shared<T> {
    fn remove(&self, tenant: &str, id: u64) -> bool {
        let removed = self.lock().remove_item(tenant, id);
        // Dropped outside the lock: `T` may run arbitrary code on drop.
        removed.is_some()
    }

    fn contains(&self, tenant: &str, id: u64) -> bool {
        let st = self.lock();
        st.tenants
            .get(tenant)
            .is_some_and(|tq| tq.items.binary_search_by_key(&id, |e| e.id).is_ok())
    }
}

impl<T: Send + 'static> Unregister for Shared<T> {
    fn unregister(&self, querier_id: &str) {
        let now = Instant::now();
        let mut st = self.lock();
        let Some(q) = st.queriers.get_mut(querier_id) else {
            return;
        };
        q.connections = q.connections.saturating_sub(1);
        if q.connections > 0 {
            return;
        }
        if q.shutting_down || self.config.querier_forget_delay.is_zero() {
            st.remove_querier(querier_id, &self.config);
        } else {
            q.disconnected_at = Some(now);
            let forget_at = now + self.config.querier_forget_delay;
            if st.next_forget_at.is_none_or(|t| forget_at < t) {
                st.next_forget_at = Some(forget_at);
                // Sleepers time their wait by the earliest forget; re-arm them so
                // the shards change on time even if nothing else happens.
                if self.config.sharding_possible() {
                    st.wake_all();
                }
            }
        }
    }
}

impl<T: Send + 'static> Release for Shared<T> {
    fn release(&self, tenant: &str) {
        let config = &self.config;
        let mut st = self.lock();
        st.release_slot(tenant);
        st.wake_allowed(config);
    }
}

impl<T> State<T> {
    /// The slots `tenant` holds. A federated `a|b` counts as its busiest
    /// member: its items compete with what each member already runs, so a
    /// tenant gains no extra share by federating.
    fn held(&self, tenant: &str) -> usize {
        let one = |member: &str| self.in_flight.get(member).copied().unwrap_or(0);
        if !tenant.contains('|') {
            return one(tenant);
        }
        tenant.split('|').map(one).max().unwrap_or(0)
    }

    /// Charges one slot to each tenant `tenant` names (itself, or each
    /// member of a federated id).
    fn charge_slot(&mut self, tenant: &Arc<str>) {
        if tenant.contains('|') {
            for member in tenant.split('|') {
                *self.in_flight.entry(Arc::from(member)).or_insert(0) += 1;
            }
        } else {
            *self.in_flight.entry(Arc::clone(tenant)).or_insert(0) += 1;
        }
        self.total_in_flight += 1;
    }

    /// Gives back a slot taken by `charge_slot`.
    fn release_slot(&mut self, tenant: &str) {
        let mut released = false;
        for member in tenant.split('|') {
            if let Some(held) = self.in_flight.get_mut(member) {
                released = true;
                *held -= 1;
                if *held == 0 {
                    self.in_flight.remove(member);
                }
            }
        }
        self.total_in_flight -= usize::from(released);
    }

    /// Whether a tenant holding `held` slots may take one more: always if it
    /// holds none, otherwise only while `reserved_slots` others stay idle.
    fn may_take(&self, held: usize, config: &QueueConfig) -> bool {
        let capacity = self.total_in_flight + self.dequeuers;
        // Once stopped, the reserve is ignored like shards, so draining
        // dequeuers only see an empty queue as empty.
        self.stopped || held == 0 || held + 1 + config.reserved_slots <= capacity
    }

    /// Wakes a sleeper for every queued tenant that may take a slot now (a
    /// slot was freed, or capacity grew where only other queriers sleep).
    fn wake_allowed(&mut self, config: &QueueConfig) {
        if self.len == 0 || self.waiting.is_empty() {
            return;
        }
        let tenants: Vec<Arc<str>> = self.ring.values().cloned().collect();
        for tenant in tenants {
            if self.waiting.is_empty() {
                return;
            }
            self.wake_for(&tenant, config);
        }
    }

    fn remove_item(&mut self, tenant: &str, id: u64) -> Option<Entry<T>> {
        let tq = self.tenants.get_mut(tenant)?;
        let idx = tq.items.binary_search_by_key(&id, |e| e.id).ok()?;
        let entry = tq.items.remove(idx);
        self.len -= 1;
        if tq.items.is_empty() {
            self.remove_tenant(tenant);
        }
        entry
    }

    fn remove_tenant(&mut self, tenant: &str) {
        if let Some(tq) = self.tenants.remove(tenant) {
            self.ring.remove(&tq.ring_pos);
            self.federated -= usize::from(tenant.contains('|'));
        }
    }

    /// Whether `tenant` may queue one more item: every tenant it names
    /// (one, or each of a federated `a|b`) must have room under its own
    /// limit, counting its FIFO and those of federated ids naming it, so a
    /// federated query is charged to each of its tenants.
    fn has_room(&self, tenant: &str, config: &QueueConfig) -> bool {
        tenant.split('|').all(|member| {
            let limit = config.limits(member).max_outstanding;
            limit == 0 || self.charged(member) < limit
        })
    }

    /// The items queued for `tenant`, alone or federated with others.
    fn charged(&self, tenant: &str) -> usize {
        let own = self.tenants.get(tenant).map_or(0, |tq| tq.items.len());
        if self.federated == 0 {
            return own;
        }
        let federated = self
            .tenants
            .iter()
            .filter(|(name, _)| name.contains('|') && name.split('|').any(|one| one == tenant))
            .map(|(_, tq)| tq.items.len());
        own + federated.sum::<usize>()
    }

    fn remove_querier(&mut self, querier_id: &str, config: &QueueConfig) {
        self.queriers.remove(querier_id);
        self.querier_set_changed(config);
    }

    fn querier_set_changed(&mut self, config: &QueueConfig) {
        self.querier_generation += 1;
        // Without sharding membership decides nothing, so sleepers need not know.
        if config.sharding_possible() {
            self.wake_all();
        }
    }

    fn wake_all(&mut self) {
        for (id, w) in std::mem::take(&mut self.waiting) {
            w.notify.notify_one();
            self.notified.insert(id, None);
        }
    }

    /// Forgets queriers whose forget delay has passed.
    fn forget_queriers(&mut self, now: Instant, config: &QueueConfig) {
        if self.next_forget_at.is_none_or(|t| now < t) {
            return;
        }
        let delay = config.querier_forget_delay;
        let before = self.queriers.len();
        self.queriers.retain(|_, q| match q.disconnected_at {
            Some(at) if q.connections == 0 => now < at + delay,
            _ => true,
        });
        self.next_forget_at = self
            .queriers
            .values()
            .filter(|q| q.connections == 0)
            .filter_map(|q| q.disconnected_at)
            .min()
            .map(|at| at + delay);
        if self.queriers.len() != before {
            self.querier_set_changed(config);
        }
    }

    /// Whether `querier` may serve `tenant`, computing the tenant's shard if
    /// the querier set changed since it was last computed.
    fn eligible(&mut self, tenant: &str, querier: &str, config: &QueueConfig) -> bool {
        if !config.sharding_possible() || self.stopped {
            return true;
        }
        if !self.ensure_shard(tenant, config) {
            return true;
        }
        match self.members(tenant) {
            Some(members) => members.binary_search_by(|m| (**m).cmp(querier)).is_ok(),
            None => true,
        }
    }

    /// Brings `tenant`'s shard up to date with the querier set; false if the
    /// tenant has nothing queued.
    fn ensure_shard(&mut self, tenant: &str, config: &QueueConfig) -> bool {
        let generation = self.querier_generation;
        let queriers = &self.queriers;
        let Some(tq) = self.tenants.get_mut(tenant) else {
            return false;
        };
        let size = config.limits(tenant).max_queriers;
        if tq
            .shard
            .as_ref()
            .is_none_or(|s| s.generation != generation || s.size != size)
        {
            tq.shard = Some(Shard {
                generation,
                size,
                members: shard::select(tenant, queriers.keys(), size),
            });
        }
        true
    }

    /// `tenant`'s shard as last computed by `ensure_shard`; `None` = everyone.
    fn members(&self, tenant: &str) -> Option<&[Arc<str>]> {
        self.tenants.get(tenant)?.shard.as_ref()?.members.as_deref()
    }

    /// Wakes the oldest sleeping dequeuer that may serve `tenant`, if any.
    fn wake_for(&mut self, tenant: &Arc<str>, config: &QueueConfig) {
        // A tenant blocked by the reserve gains nothing from a wakeup; waking
        // anyway would pass it from sleeper to sleeper in a loop.
        if self.waiting.is_empty() || !self.may_take(self.held(tenant), config) {
            return;
        }
        let chosen = if !config.sharding_possible() || self.stopped {
            self.waiting.keys().next().copied()
        } else {
            if !self.ensure_shard(tenant, config) {
                return;
            }
            match self.members(tenant) {
                None => self.waiting.keys().next().copied(),
                Some(members) => self
                    .waiting
                    .iter()
                    .find(|(_, w)| members.binary_search(&w.querier).is_ok())
                    .map(|(id, _)| *id),
            }
        };
        if let Some(id) = chosen {
            let w = self.waiting.remove(&id).expect("chosen from waiting");
            w.notify.notify_one();
            self.notified.insert(id, Some(Arc::clone(tenant)));
        }
    }

    /// Puts a dequeuer of `querier` to sleep on `notify`; returns its id.
    fn add_waiter(
        &mut self,
        querier: &Arc<str>,
        notify: &Arc<Notify>,
        config: &QueueConfig,
    ) -> u64 {
        let id = self.next_waiter_id;
        self.next_waiter_id += 1;
        self.waiting.insert(
            id,
            Waiter {
                querier: Arc::clone(querier),
                notify: Arc::clone(notify),
            },
        );
        if config.sharding_possible() {
            // This sleeper raised the capacity; a tenant it may not serve
            // may now take a slot on a querier that sleeps.
            self.wake_allowed(config);
        }
        id
    }

    /// Forgets a waiter; returns the tenant it had been woken for, if any.
    fn deregister_waiter(&mut self, id: u64) -> Option<Arc<str>> {
        if self.waiting.remove(&id).is_some() {
            return None;
        }
        self.notified.remove(&id).flatten()
    }

    /// Passes on the wakeup a waiter received for `tenant` but did not use.
    fn pass_on(
        &mut self,
        tenant: Option<Arc<str>>,
        taken_from: Option<&str>,
        config: &QueueConfig,
    ) {
        if let Some(t) = tenant
            && taken_from != Some(&*t)
            && self.tenants.contains_key(&t)
        {
            self.wake_for(&t, config);
        }
    }

    /// The tenant `querier` serves next: among the tenants it may serve and
    /// that may take a slot, the one holding fewest; ties go to the first
    /// after the querier's cursor in ring order (round robin).
    fn pick_tenant(&mut self, querier: &str, config: &QueueConfig) -> Option<(u64, Arc<str>)> {
        let mut pos = self.queriers.get(querier).map_or(0, |q| q.cursor);
        let mut best: Option<(usize, u64, Arc<str>)> = None;
        for _ in 0..self.ring.len() {
            let (&next, tenant) = self
                .ring
                .range((Bound::Excluded(pos), Bound::Unbounded))
                .next()
                .or_else(|| self.ring.iter().next())?;
            pos = next;
            let tenant = Arc::clone(tenant);
            if !self.eligible(&tenant, querier, config) {
                continue;
            }
            let held = self.held(&tenant);
            if !self.may_take(held, config) || best.as_ref().is_some_and(|b| b.0 <= held) {
                continue;
            }
            best = Some((held, pos, tenant));
            if held == 0 {
                // Nobody holds fewer; the rest of the round cannot win.
                break;
            }
        }
        best.map(|(_, pos, tenant)| (pos, tenant))
    }

    /// Pops `tenant`'s first live item, moving expired ones met on the way
    /// into `expired`; the tenant leaves the ring once emptied.
    fn pop_live(
        &mut self,
        tenant: &str,
        now: Instant,
        expired: &mut Vec<Entry<T>>,
    ) -> Option<Entry<T>> {
        let tq = self
            .tenants
            .get_mut(tenant)
            .expect("ring and tenants agree");
        let mut taken = None;
        while let Some(front) = tq.items.pop_front() {
            self.len -= 1;
            if front.deadline.is_some_and(|d| d <= now) {
                expired.push(front);
            } else {
                taken = Some(front);
                break;
            }
        }
        if tq.items.is_empty() {
            self.remove_tenant(tenant);
        }
        taken
    }

    /// Takes the next item for `querier` (see `pick_tenant`), charging its
    /// tenant a slot. Expired items met on the way are removed into `expired`.
    fn take(
        &mut self,
        querier: &str,
        now: Instant,
        config: &QueueConfig,
        expired: &mut Vec<Entry<T>>,
    ) -> Option<(Arc<str>, Entry<T>)> {
        // Each round that finds only expired items empties a tenant, so this ends.
        loop {
            let (pos, tenant) = self.pick_tenant(querier, config)?;
            let Some(entry) = self.pop_live(&tenant, now, expired) else {
                continue;
            };
            if let Some(q) = self.queriers.get_mut(querier) {
                q.cursor = pos;
            }
            self.charge_slot(&tenant);
            return Some((tenant, entry));
        }
    }
}

impl<T: Send + 'static> RequestQueue<T> {
    pub fn new(config: QueueConfig) -> Self {
        Self {
            shared: Arc::new(Shared {
                config,
                state: Mutex::new(State {
                    tenants: HashMap::new(),
                    ring: BTreeMap::new(),
                    next_ring_pos: 1,
                    next_item_id: 0,
                    federated: 0,
                    len: 0,
                    queriers: HashMap::new(),
                    querier_generation: 0,
                    next_forget_at: None,
                    waiting: BTreeMap::new(),
                    notified: HashMap::new(),
                    next_waiter_id: 0,
                    in_flight: HashMap::new(),
                    total_in_flight: 0,
                    dequeuers: 0,
                    stopped: false,
                }),
            }),
        }
    }

    pub fn config(&self) -> &QueueConfig {
        &self.shared.config
    }

    /// Adds `item` to the back of `tenant`'s FIFO and wakes one querier
    /// connection that may serve it.
    ///
    /// `deadline`: once it has passed the item is never handed out; a dequeue
    /// that meets it drops it silently. The queue does not report expiry: the
    /// owner is expected to enforce its own deadline (a timer that answers the
    /// client with 503 and drops the guard, which removes the item at once).
    pub fn enqueue(
        &self,
        tenant: &str,
        item: T,
        deadline: Option<Instant>,
    ) -> Result<QueuedGuard, EnqueueError> {
        let config = &self.shared.config;
        let now = Instant::now();
        let mut expired = Vec::new();
        let mut st = self.shared.lock();
        if st.stopped {
            return Err(EnqueueError::Stopped);
        }
        st.forget_queriers(now, config);
        let st = &mut *st;
        let (tenant, tq) = match st.tenants.get_key_value(tenant) {
            Some((name, _)) => {
                let name = Arc::clone(name);
                let tq = st.tenants.get_mut(&name).expect("just found");
                (name, tq)
            }
            None => {
                let name: Arc<str> = Arc::from(tenant);
                let ring_pos = st.next_ring_pos;
                st.next_ring_pos += 1;
                st.ring.insert(ring_pos, Arc::clone(&name));
                st.federated += usize::from(tenant.contains('|'));
                let tq = st.tenants.entry(Arc::clone(&name)).or_insert(TenantQueue {
                    ring_pos,
                    items: VecDeque::new(),
                    shard: None,
                });
                (name, tq)
            }
        };
        // Expired items at the front must not hold places under the limit.
        while tq
            .items
            .front()
            .is_some_and(|e| e.deadline.is_some_and(|d| d <= now))
        {
            expired.extend(tq.items.pop_front());
            st.len -= 1;
        }
        if !st.has_room(&tenant, config) {
            // A new tenant's empty FIFO is not kept.
            if st
                .tenants
                .get(&tenant)
                .is_some_and(|tq| tq.items.is_empty())
            {
                st.remove_tenant(&tenant);
            }
            return Err(EnqueueError::TooManyRequests);
        }
        let tq = st.tenants.get_mut(&tenant).expect("inserted above");
        let id = st.next_item_id;
        st.next_item_id += 1;
        tq.items.push_back(Entry {
            id,
            item,
            enqueued_at: now,
            deadline,
        });
        st.len += 1;
        st.wake_for(&tenant, config);
        // `expired` is declared before the lock guard, so it is dropped after
        // the lock is released.
        Ok(QueuedGuard {
            queue: Arc::clone(&self.shared) as Arc<dyn Remove>,
            tenant,
            id,
            done: false,
        })
    }

    /// Waits for the next item for `querier`: the tenant holding fewest
    /// querier slots first, tenants in round robin (per querier id) among
    /// equals, FIFO within a tenant, and with shuffle sharding only tenants
    /// whose shard includes this querier. A tenant that holds slots waits
    /// while taking one would leave fewer than `reserved_slots` idle.
    ///
    /// A waiting dequeue counts as an idle slot: call it only when the
    /// querier is ready to run what it returns.
    ///
    /// Returns `None` when the queue is stopped and empty (after [`stop`],
    /// shards are ignored so any querier helps drain), or when this querier
    /// announced shutdown via [`notify_querier_shutdown`].
    ///
    /// Cancel-safe: an item is only taken in the step that returns it, so
    /// dropping the future (e.g. losing a `select!`) loses nothing; a wakeup it
    /// had received is passed to another waiter. `querier` must come from this
    /// queue's [`register_querier`].
    ///
    /// [`stop`]: Self::stop
    /// [`notify_querier_shutdown`]: Self::notify_querier_shutdown
    /// [`register_querier`]: Self::register_querier
    pub async fn dequeue(&self, querier: &QuerierHandle) -> Option<Dequeued<T>> {
        let shared = &*self.shared;
        let config = &shared.config;
        let querier_id = &querier.querier_id;
        let mut registration = Registration {
            shared,
            id: None,
            counted: false,
        };
        let notify = Arc::new(Notify::new());
        loop {
            let mut expired = Vec::new();
            let wait_until = {
                let now = Instant::now();
                let mut st = shared.lock();
                if !registration.counted {
                    registration.counted = true;
                    st.dequeuers += 1;
                }
                let woken_for = registration
                    .id
                    .take()
                    .and_then(|id| st.deregister_waiter(id));
                st.forget_queriers(now, config);
                let shutting_down = st
                    .queriers
                    .get(&**querier_id)
                    .is_none_or(|q| q.shutting_down);
                let taken = if shutting_down {
                    None
                } else {
                    st.take(querier_id, now, config, &mut expired)
                };
                st.pass_on(woken_for, taken.as_ref().map(|(t, _)| &**t), config);
                // Once stopped, shards are ignored, so finding nothing means empty.
                if taken.is_some() || shutting_down || st.stopped {
                    registration.counted = false;
                    st.dequeuers -= 1;
                    drop(st);
                    drop(expired);
                    return taken.map(|(tenant, entry)| self.dequeued(tenant, entry));
                }
                registration.id = Some(st.add_waiter(querier_id, &notify, config));
                // Forgetting a querier only matters when it reshapes shards.
                st.next_forget_at.filter(|_| config.sharding_possible())
            };
            drop(expired);
            // A wakeup sent between unlocking and here is kept as a permit.
            match wait_until {
                Some(at) => {
                    tokio::select! {
                        () = notify.notified() => {}
                        () = tokio::time::sleep_until(at) => {}
                    }
                }
                None => notify.notified().await,
            }
        }
    }

    fn dequeued(&self, tenant: Arc<str>, entry: Entry<T>) -> Dequeued<T> {
        Dequeued {
            item: entry.item,
            tenant: Arc::clone(&tenant),
            enqueued_at: entry.enqueued_at,
            in_flight: InFlightGuard {
                queue: Arc::clone(&self.shared) as Arc<dyn Release>,
                tenant,
            },
        }
    }

    /// Querier slots `tenant` holds now (items handed out, not yet finished).
    pub fn tenant_in_flight(&self, tenant: &str) -> usize {
        self.shared.lock().held(tenant)
    }

    /// Registers one connection of `querier_id`. A querier that reconnects
    /// within the forget delay keeps its shard membership.
    pub fn register_querier(&self, querier_id: &str) -> QuerierHandle {
        let config = &self.shared.config;
        let mut st = self.shared.lock();
        st.forget_queriers(Instant::now(), config);
        let id = match st.queriers.get_key_value(querier_id) {
            Some((id, _)) => Arc::clone(id),
            None => Arc::from(querier_id),
        };
        match st.queriers.get_mut(&id) {
            Some(q) => {
                q.connections += 1;
                q.disconnected_at = None;
                q.shutting_down = false;
            }
            None => {
                st.queriers.insert(
                    Arc::clone(&id),
                    Querier {
                        connections: 1,
                        disconnected_at: None,
                        shutting_down: false,
                        cursor: 0,
                    },
                );
                st.querier_set_changed(config);
            }
        }
        QuerierHandle {
            queue: Arc::clone(&self.shared) as Arc<dyn Unregister>,
            querier_id: id,
        }
    }

    /// Records that `querier_id` is shutting down gracefully: its dequeues
    /// return `None` from now on, and it leaves shuffle shards as soon as its
    /// last connection closes instead of after the forget delay.
    pub fn notify_querier_shutdown(&self, querier_id: &str) {
        let config = &self.shared.config;
        let mut st = self.shared.lock();
        let Some(q) = st.queriers.get_mut(querier_id) else {
            return;
        };
        if q.connections == 0 {
            st.remove_querier(querier_id, config);
        } else {
            q.shutting_down = true;
            // Its sleeping connections must wake up to return `None`.
            st.wake_all();
        }
    }

    /// Querier ids with at least one open connection.
    pub fn connected_queriers(&self) -> usize {
        let st = self.shared.lock();
        st.queriers.values().filter(|q| q.connections > 0).count()
    }

    /// Open querier connections (worker streams) over all querier ids.
    pub fn connected_querier_workers(&self) -> usize {
        let st = self.shared.lock();
        st.queriers.values().map(|q| q.connections).sum()
    }

    /// Items queued over all tenants (expired ones count until a dequeue or
    /// their guard removes them).
    pub fn len(&self) -> usize {
        self.shared.lock().len
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    pub fn tenant_len(&self, tenant: &str) -> usize {
        self.shared
            .lock()
            .tenants
            .get(tenant)
            .map_or(0, |tq| tq.items.len())
    }

    /// Queue length of every tenant with queued items, in round-robin order.
    /// Tenants whose queue emptied are absent: a metrics exporter must reset
    /// their gauges itself.
    pub fn tenant_lengths(&self) -> Vec<(Arc<str>, usize)> {
        let st = self.shared.lock();
        st.ring
            .values()
            .map(|t| (Arc::clone(t), st.tenants[t].items.len()))
            .collect()
    }

    /// The querier ids allowed to serve `tenant` right now, sorted, or `None`
    /// when every querier may. Deterministic: every process with the same
    /// querier set and config computes the same shard.
    pub fn tenant_queriers(&self, tenant: &str) -> Option<Vec<Arc<str>>> {
        let config = &self.shared.config;
        let mut st = self.shared.lock();
        st.forget_queriers(Instant::now(), config);
        shard::select(
            tenant,
            st.queriers.keys(),
            config.limits(tenant).max_queriers,
        )
        .map(Vec::from)
    }

    /// Stops accepting items; dequeuers drain what is left (ignoring shards)
    /// and then get `None`. Idempotent.
    pub fn stop(&self) {
        let mut st = self.shared.lock();
        st.stopped = true;
        st.wake_all();
    }

    pub fn is_stopped(&self) -> bool {
        self.shared.lock().stopped
    }
}

/// A dequeue's place among the sleepers and the idle slot it counts as;
/// leaving it (the future was dropped) hands any wakeup it had received to
/// another sleeper.
struct Registration<'a, T> {
    shared: &'a Shared<T>,
    id: Option<u64>,
    counted: bool,
}

impl<T> Drop for Registration<'_, T> {
    fn drop(&mut self) {
        if self.id.is_none() && !self.counted {
            return;
        }
        let config = &self.shared.config;
        let mut st = self.shared.lock();
        if self.counted {
            st.dequeuers -= 1;
        }
        if let Some(id) = self.id {
            let woken_for = st.deregister_waiter(id);
            st.pass_on(woken_for, None, config);
        }
    }
}
