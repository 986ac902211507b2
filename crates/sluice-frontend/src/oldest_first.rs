//! A map bounded by bytes whose oldest values go first, and whose values
//! expire: the shape of every in-process copy the frontend keeps.

use std::collections::{HashMap, VecDeque};
use std::sync::Mutex;
use std::time::Duration;

use tokio::time::Instant;

use crate::clock::SharedClock;

/// Values bounded by a byte count the caller reckons for each; the oldest
/// go first. A key put again gets the new value and keeps its place. A
/// value is served for `ttl` after it was put (or the shorter time it was
/// put for: a tenant's own results-cache TTL), as the results cache's
/// backends serve theirs (`-query-frontend.results-cache-ttl`): these
/// copies must not outlive what they copy. An expired value waits for its
/// turn to go, unserved.
pub(crate) struct OldestFirst<K, V> {
    max_bytes: usize,
    ttl: Duration,
    clock: SharedClock,
    pub(crate) state: Mutex<OldestFirstState<K, V>>,
}

pub(crate) struct OldestFirstState<K, V> {
    /// Each value, its bytes, and when it stops being served.
    pub(crate) values: HashMap<K, (V, usize, Instant)>,
    pub(crate) order: VecDeque<K>,
    pub(crate) bytes: usize,
}

impl<K: std::hash::Hash + Eq + Clone, V: Clone> OldestFirst<K, V> {
    pub(crate) fn new(max_bytes: usize, ttl: Duration, clock: SharedClock) -> Self {
        OldestFirst {
            max_bytes,
            ttl,
            clock,
            state: Mutex::new(OldestFirstState {
                values: HashMap::new(),
                order: VecDeque::new(),
                bytes: 0,
            }),
        }
    }

    pub(crate) fn get<Q>(&self, key: &Q) -> Option<V>
    where
        K: std::borrow::Borrow<Q>,
        Q: std::hash::Hash + Eq + ?Sized,
    {
        let now = self.clock.now();
        let state = self.state.lock().expect("bounded map lock");
        state
            .values
            .get(key)
            .filter(|(_, _, expires)| now < *expires)
            .map(|(value, _, _)| value.clone())
    }

    /// Keeps `value`, counted as `bytes`; one over a quarter of the whole
    /// budget is not kept, so a single answer cannot flush everything.
    #[cfg(test)]
    pub(crate) fn put(&self, key: K, value: V, bytes: usize) {
        self.put_for(key, value, bytes, self.ttl);
    }

    /// [`OldestFirst::put`], served for at most `ttl`.
    pub(crate) fn put_for(&self, key: K, value: V, bytes: usize, ttl: Duration) {
        if bytes > self.max_bytes / 4 {
            return;
        }
        let expires = self.clock.now() + ttl.min(self.ttl);
        let mut state = self.state.lock().expect("bounded map lock");
        match state.values.insert(key.clone(), (value, bytes, expires)) {
            Some((_, replaced, _)) => state.bytes -= replaced,
            None => state.order.push_back(key),
        }
        state.bytes += bytes;
        while state.bytes > self.max_bytes {
            let Some(oldest) = state.order.pop_front() else {
                break;
            };
            if let Some((_, evicted, _)) = state.values.remove(&oldest) {
                state.bytes -= evicted;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::clock::ManualClock;

    #[test]
    fn values_expire_with_the_injected_clock() {
        let clock = ManualClock::at(0);
        let map = OldestFirst::new(1000, Duration::from_secs(60), clock.clone());
        map.put(1u8, "one", 10);
        clock.advance(Duration::from_secs(59));
        assert_eq!(map.get(&1), Some("one"));
        clock.advance(Duration::from_secs(1));
        assert_eq!(map.get(&1), None, "served for the ttl and no longer");
    }

    #[test]
    fn a_shorter_ttl_given_with_a_value_is_kept() {
        let clock = ManualClock::at(0);
        let map = OldestFirst::new(1000, Duration::from_secs(60), clock.clone());
        map.put_for(1u8, "one", 10, Duration::from_secs(5));
        map.put_for(2u8, "two", 10, Duration::from_secs(600));
        clock.advance(Duration::from_secs(5));
        assert_eq!(map.get(&1), None);
        clock.advance(Duration::from_secs(54));
        assert_eq!(map.get(&2), Some("two"));
        clock.advance(Duration::from_secs(1));
        assert_eq!(map.get(&2), None, "never longer than the map's own ttl");
    }
}
