//! Fast in-process hashing for the evaluator's per-step maps.
//!
//! The evaluator hashes label sets for every sample at every step; SipHash's
//! DoS resistance buys nothing there (keys come from stored series, not from
//! requests), and its cost dominated profiles, so maps use FxHash instead.

use std::collections::{HashMap, HashSet};
use std::hash::{BuildHasherDefault, Hash, Hasher};

use crate::labels::{Labels, METRIC_NAME};

/// The rustc "Fx" hash: rotate, xor and multiply per word.
#[derive(Default, Clone, Copy)]
pub(crate) struct FxHasher {
    hash: u64,
}

const SEED: u64 = 0x51_7c_c1_b7_27_22_0a_95;

impl FxHasher {
    #[inline]
    fn add(&mut self, word: u64) {
        self.hash = (self.hash.rotate_left(5) ^ word).wrapping_mul(SEED);
    }
}

impl Hasher for FxHasher {
    #[inline]
    fn write(&mut self, bytes: &[u8]) {
        let mut chunks = bytes.chunks_exact(8);
        for chunk in &mut chunks {
            let mut word = [0u8; 8];
            word.copy_from_slice(chunk);
            self.add(u64::from_le_bytes(word));
        }
        let rest = chunks.remainder();
        if !rest.is_empty() {
            let mut word = [0u8; 8];
            word[..rest.len()].copy_from_slice(rest);
            self.add(u64::from_le_bytes(word));
        }
    }

    #[inline]
    fn write_u8(&mut self, value: u8) {
        self.add(u64::from(value));
    }

    #[inline]
    fn write_u64(&mut self, value: u64) {
        self.add(value);
    }

    #[inline]
    fn write_usize(&mut self, value: usize) {
        self.add(value as u64);
    }

    #[inline]
    fn finish(&self) -> u64 {
        self.hash
    }
}

pub(crate) type FastBuild = BuildHasherDefault<FxHasher>;
pub(crate) type FastMap<K, V> = HashMap<K, V, FastBuild>;
pub(crate) type FastSet<K> = HashSet<K, FastBuild>;

/// Which labels of a series form a key (a join signature or an
/// aggregation group).
#[derive(Clone, Copy)]
pub(crate) enum KeySpec<'a> {
    /// Only these labels (`on(...)`, `by(...)`).
    Only(&'a [String]),
    /// All labels except these and the metric name (`ignoring(...)`, `without(...)`).
    AllBut(&'a [String]),
    /// No labels at all (an aggregation without grouping).
    Nothing,
}

impl KeySpec<'_> {
    fn includes(&self, name: &str) -> bool {
        match self {
            KeySpec::Only(names) => names.iter().any(|n| n == name),
            KeySpec::AllBut(names) => name != METRIC_NAME && !names.iter().any(|n| n == name),
            KeySpec::Nothing => false,
        }
    }

    /// A hash of the key's labels, computed without allocating.
    pub(crate) fn hash(&self, labels: &Labels) -> u64 {
        let mut hasher = FxHasher::default();
        for label in labels.iter() {
            if self.includes(&label.name) {
                label.name.hash(&mut hasher);
                label.value.hash(&mut hasher);
            }
        }
        hasher.finish()
    }

    /// The key's labels.
    pub(crate) fn labels(&self, labels: &Labels) -> Labels {
        match self {
            KeySpec::Only(names) => labels.keep_only(names),
            KeySpec::AllBut(names) => {
                let mut without = labels.without(names);
                without.remove(METRIC_NAME);
                without
            }
            KeySpec::Nothing => Labels::empty(),
        }
    }
}

/// A hash of a whole label set.
pub(crate) fn hash_labels(labels: &Labels) -> u64 {
    let mut hasher = FxHasher::default();
    labels.hash(&mut hasher);
    hasher.finish()
}
