//! Label sets: the identity of a series.

use std::fmt;

/// The reserved label carrying the metric name.
pub const METRIC_NAME: &str = "__name__";

/// One label pair.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Label {
    pub name: String,
    pub value: String,
}

/// A set of labels, always sorted by name with unique names and no empty values,
/// so that equality, hashing and ordering are structural.
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash)]
pub struct Labels(Vec<Label>);

impl Labels {
    pub fn empty() -> Self {
        Labels(Vec::new())
    }

    /// Builds a label set from pairs in any order; empty values are dropped
    /// because Prometheus treats an empty label as an absent one.
    pub fn from_pairs<N: Into<String>, V: Into<String>>(
        pairs: impl IntoIterator<Item = (N, V)>,
    ) -> Self {
        let mut labels: Vec<Label> = pairs
            .into_iter()
            .map(|(name, value)| Label {
                name: name.into(),
                value: value.into(),
            })
            .filter(|label| !label.value.is_empty())
            .collect();
        labels.sort_by(|a, b| a.name.cmp(&b.name));
        labels.dedup_by(|later, earlier| later.name == earlier.name);
        Labels(labels)
    }

    pub fn iter(&self) -> impl Iterator<Item = &Label> {
        self.0.iter()
    }

    pub fn len(&self) -> usize {
        self.0.len()
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// The value of `name`, or "" when absent (Prometheus' convention).
    pub fn get(&self, name: &str) -> &str {
        match self
            .0
            .binary_search_by(|label| label.name.as_str().cmp(name))
        {
            Ok(index) => &self.0[index].value,
            Err(_) => "",
        }
    }

    pub fn has(&self, name: &str) -> bool {
        self.0
            .binary_search_by(|label| label.name.as_str().cmp(name))
            .is_ok()
    }

    pub fn metric_name(&self) -> &str {
        // `__name__` sorts before every lowercase name, so it is nearly
        // always first; checking there avoids a search on hot paths.
        match self.0.first() {
            Some(first) if first.name == METRIC_NAME => &first.value,
            _ => self.get(METRIC_NAME),
        }
    }

    /// Sets (or with an empty value, removes) one label.
    pub fn set(&mut self, name: &str, value: &str) {
        match self
            .0
            .binary_search_by(|label| label.name.as_str().cmp(name))
        {
            Ok(index) if value.is_empty() => {
                self.0.remove(index);
            }
            Ok(index) => self.0[index].value = value.to_string(),
            Err(_) if value.is_empty() => {}
            Err(index) => self.0.insert(
                index,
                Label {
                    name: name.to_string(),
                    value: value.to_string(),
                },
            ),
        }
    }

    pub fn remove(&mut self, name: &str) {
        self.set(name, "");
    }

    /// The labels without the metric name and the metadata labels that
    /// describe it (`__type__`, `__unit__`), which go with the name when an
    /// operation changes what the series measures.
    pub fn without_metric_name(&self) -> Labels {
        let mut copy = self.clone();
        copy.remove(METRIC_NAME);
        copy.remove("__type__");
        copy.remove("__unit__");
        copy
    }

    /// Keeps only the listed names.
    pub fn keep_only(&self, names: &[String]) -> Labels {
        Labels(
            self.0
                .iter()
                .filter(|label| names.contains(&label.name))
                .cloned()
                .collect(),
        )
    }

    /// Removes the listed names.
    pub fn without(&self, names: &[String]) -> Labels {
        Labels(
            self.0
                .iter()
                .filter(|label| !names.contains(&label.name))
                .cloned()
                .collect(),
        )
    }

    /// A stable 64-bit hash (FNV-1a over names and values with separators);
    /// stable across processes and versions, which shard assignment relies on.
    pub fn stable_hash(&self) -> u64 {
        const OFFSET: u64 = 0xcbf2_9ce4_8422_2325;
        const PRIME: u64 = 0x0000_0100_0000_01b3;
        let mut hash = OFFSET;
        for label in &self.0 {
            for byte in label
                .name
                .bytes()
                .chain([0xff])
                .chain(label.value.bytes())
                .chain([0xff])
            {
                hash ^= u64::from(byte);
                hash = hash.wrapping_mul(PRIME);
            }
        }
        hash
    }
}

impl PartialOrd for Labels {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}

impl Ord for Labels {
    /// Prometheus' order: pairwise by name then value; a prefix sorts first.
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        for (a, b) in self.0.iter().zip(other.0.iter()) {
            let by_name = a.name.cmp(&b.name);
            if by_name != std::cmp::Ordering::Equal {
                return by_name;
            }
            let by_value = a.value.cmp(&b.value);
            if by_value != std::cmp::Ordering::Equal {
                return by_value;
            }
        }
        self.0.len().cmp(&other.0.len())
    }
}

impl fmt::Display for Labels {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{{")?;
        for (index, label) in self.0.iter().enumerate() {
            if index > 0 {
                write!(f, ", ")?;
            }
            write!(f, "{}={:?}", label.name, label.value)?;
        }
        write!(f, "}}")
    }
}

/// The hash Prometheus computes for a label set (xxHash64 over
/// `name 0xff value 0xff ...`). `limit_ratio` derives its sampling from it,
/// so using the same function keeps the same series as Prometheus does.
pub(crate) fn prometheus_hash(labels: &Labels) -> u64 {
    let mut bytes = Vec::with_capacity(128);
    for label in labels.iter() {
        bytes.extend_from_slice(label.name.as_bytes());
        bytes.push(0xff);
        bytes.extend_from_slice(label.value.as_bytes());
        bytes.push(0xff);
    }
    xxhash64(&bytes)
}

fn xxhash64(input: &[u8]) -> u64 {
    const P1: u64 = 0x9E37_79B1_85EB_CA87;
    const P2: u64 = 0xC2B2_AE3D_27D4_EB4F;
    const P3: u64 = 0x1656_67B1_9E37_79F9;
    const P4: u64 = 0x85EB_CA77_C2B2_AE63;
    const P5: u64 = 0x27D4_EB2F_1656_67C5;
    fn round(acc: u64, lane: u64) -> u64 {
        acc.wrapping_add(lane.wrapping_mul(P2))
            .rotate_left(31)
            .wrapping_mul(P1)
    }
    fn merge(acc: u64, value: u64) -> u64 {
        (acc ^ round(0, value)).wrapping_mul(P1).wrapping_add(P4)
    }
    fn read64(bytes: &[u8]) -> u64 {
        let mut word = [0u8; 8];
        word.copy_from_slice(&bytes[..8]);
        u64::from_le_bytes(word)
    }
    let mut rest = input;
    let mut hash;
    if input.len() >= 32 {
        let mut v1 = P1.wrapping_add(P2);
        let mut v2 = P2;
        let mut v3 = 0u64;
        let mut v4 = 0u64.wrapping_sub(P1);
        while rest.len() >= 32 {
            v1 = round(v1, read64(&rest[0..]));
            v2 = round(v2, read64(&rest[8..]));
            v3 = round(v3, read64(&rest[16..]));
            v4 = round(v4, read64(&rest[24..]));
            rest = &rest[32..];
        }
        hash = v1
            .rotate_left(1)
            .wrapping_add(v2.rotate_left(7))
            .wrapping_add(v3.rotate_left(12))
            .wrapping_add(v4.rotate_left(18));
        hash = merge(hash, v1);
        hash = merge(hash, v2);
        hash = merge(hash, v3);
        hash = merge(hash, v4);
    } else {
        hash = P5;
    }
    hash = hash.wrapping_add(input.len() as u64);
    while rest.len() >= 8 {
        hash ^= round(0, read64(rest));
        hash = hash.rotate_left(27).wrapping_mul(P1).wrapping_add(P4);
        rest = &rest[8..];
    }
    if rest.len() >= 4 {
        let mut word = [0u8; 4];
        word.copy_from_slice(&rest[..4]);
        hash ^= u64::from(u32::from_le_bytes(word)).wrapping_mul(P1);
        hash = hash.rotate_left(23).wrapping_mul(P2).wrapping_add(P3);
        rest = &rest[4..];
    }
    for byte in rest {
        hash ^= u64::from(*byte).wrapping_mul(P5);
        hash = hash.rotate_left(11).wrapping_mul(P1);
    }
    hash ^= hash >> 33;
    hash = hash.wrapping_mul(P2);
    hash ^= hash >> 29;
    hash = hash.wrapping_mul(P3);
    hash ^= hash >> 32;
    hash
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn xxhash_matches_reference_vectors() {
        assert_eq!(xxhash64(b""), 0xEF46_DB37_51D8_E999);
        assert_eq!(xxhash64(b"a"), 0xD24E_C4F1_A98C_6E5B);
        assert_eq!(
            xxhash64(b"Nobody inspects the spammish repetition"),
            0xFBCE_A83C_8A37_8BF1
        );
    }

    #[test]
    fn labels_sort_and_drop_empty_values() {
        let labels = Labels::from_pairs([("b", "2"), ("a", "1"), ("c", "")]);
        assert_eq!(labels.to_string(), "{a=\"1\", b=\"2\"}");
    }
}
