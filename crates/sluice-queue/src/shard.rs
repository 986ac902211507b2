//! Shuffle sharding of queriers per tenant.
//!
//! Uses rendezvous (highest-random-weight) hashing rather than a seeded shuffle
//! of the sorted querier list: each querier gets a score from a stable hash of
//! (tenant, querier) and a tenant's shard is the `k` best scores. The result is
//! independent of registration order and of which process computes it, and a
//! querier joining or leaving only moves tenants whose shard it enters or
//! leaves, instead of reshuffling every tenant as an index-based shuffle does.

use std::sync::Arc;

const FNV_OFFSET: u64 = 0xcbf2_9ce4_8422_2325;
const FNV_PRIME: u64 = 0x0000_0100_0000_01b3;

// Hand-rolled so the value never changes with the Rust release or the
// platform: every frontend and scheduler must agree on every tenant's shard.
fn fnv1a(mut hash: u64, bytes: &[u8]) -> u64 {
    for &b in bytes {
        hash ^= u64::from(b);
        hash = hash.wrapping_mul(FNV_PRIME);
    }
    hash
}

// FNV alone mixes the last bytes poorly; the murmur3 finaliser spreads them
// over all 64 bits so the top-k choice is not biased by common id suffixes.
fn fmix64(mut h: u64) -> u64 {
    h ^= h >> 33;
    h = h.wrapping_mul(0xff51_afd7_ed55_8ccd);
    h ^= h >> 33;
    h = h.wrapping_mul(0xc4ce_b9fe_1a85_ec53);
    h ^= h >> 33;
    h
}

pub(crate) fn tenant_seed(tenant: &str) -> u64 {
    // 0xff never occurs in UTF-8, so ("ab", "c") and ("a", "bc") cannot collide.
    fnv1a(fnv1a(FNV_OFFSET, tenant.as_bytes()), &[0xff])
}

fn score(seed: u64, querier: &str) -> u64 {
    fmix64(fnv1a(seed, querier.as_bytes()))
}

/// The queriers allowed to serve `tenant`, sorted by id, or `None` when every
/// querier may (sharding off, or not more queriers than the shard size).
pub(crate) fn select<'a>(
    tenant: &str,
    queriers: impl ExactSizeIterator<Item = &'a Arc<str>>,
    shard_size: usize,
) -> Option<Box<[Arc<str>]>> {
    if shard_size == 0 || queriers.len() <= shard_size {
        return None;
    }
    let seed = tenant_seed(tenant);
    let mut scored: Vec<(u64, &Arc<str>)> = queriers.map(|q| (score(seed, q), q)).collect();
    // Ties (practically impossible) are broken by id so the choice stays total.
    let best_first =
        |a: &(u64, &Arc<str>), b: &(u64, &Arc<str>)| b.0.cmp(&a.0).then_with(|| a.1.cmp(b.1));
    scored.select_nth_unstable_by(shard_size - 1, best_first);
    let mut members: Vec<Arc<str>> = scored[..shard_size]
        .iter()
        .map(|(_, q)| Arc::clone(q))
        .collect();
    members.sort_unstable();
    Some(members.into_boxed_slice())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ids(n: usize) -> Vec<Arc<str>> {
        (0..n).map(|i| Arc::from(format!("querier-{i}"))).collect()
    }

    #[test]
    fn hash_is_pinned() {
        // Changing these values reshuffles every tenant in a running fleet.
        assert_eq!(fnv1a(FNV_OFFSET, b""), FNV_OFFSET);
        assert_eq!(fnv1a(FNV_OFFSET, b"a"), 0xaf63_dc4c_8601_ec8c);
    }

    #[test]
    fn shard_independent_of_order_and_minimal_change() {
        let all = ids(10);
        let a = select("tenant-1", all.iter(), 3).unwrap();
        let rev: Vec<_> = all.iter().rev().cloned().collect();
        assert_eq!(a, select("tenant-1", rev.iter(), 3).unwrap());
        assert_eq!(a.len(), 3);

        // Removing a querier outside the shard leaves the shard alone.
        let outsider = all.iter().find(|q| !a.contains(q)).unwrap();
        let fewer: Vec<_> = all.iter().filter(|q| *q != outsider).cloned().collect();
        assert_eq!(a, select("tenant-1", fewer.iter(), 3).unwrap());
    }

    #[test]
    fn no_shard_when_not_enough_queriers() {
        let all = ids(3);
        assert!(select("t", all.iter(), 0).is_none());
        assert!(select("t", all.iter(), 3).is_none());
        assert!(select("t", all.iter(), 5).is_none());
        assert!(select("t", all.iter(), 2).is_some());
    }

    #[test]
    fn tenants_spread_over_queriers() {
        let all = ids(10);
        let mut hits = [0usize; 10];
        for t in 0..1000 {
            for q in select(&format!("tenant-{t}"), all.iter(), 2)
                .unwrap()
                .iter()
            {
                let i: usize = q.trim_start_matches("querier-").parse().unwrap();
                hits[i] += 1;
            }
        }
        // 2000 picks over 10 queriers: each should be near 200.
        assert!(hits.iter().all(|&h| (120..280).contains(&h)), "{hits:?}");
    }
}
