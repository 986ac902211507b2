//! Label sets as the index stores them: sorted by name, compared pair by pair
//! (Prometheus's `labels.Compare`), hashed with `labels.StableHash`.

use std::fmt;

/// One label pair.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct Label {
    pub name: String,
    pub value: String,
}

/// A series' labels, sorted by name. The derived order compares names then
/// values pair by pair, a shorter prefix first: the order of the index.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct Labels(Vec<Label>);

impl Labels {
    /// Sorts `labels` by name. Empty values are dropped: Prometheus treats a
    /// label with an empty value as absent.
    pub fn new(mut labels: Vec<Label>) -> Labels {
        labels.retain(|label| !label.value.is_empty());
        labels.sort();
        Labels(labels)
    }

    pub fn from_pairs(pairs: &[(&str, &str)]) -> Labels {
        Labels::new(
            pairs
                .iter()
                .map(|(name, value)| Label {
                    name: (*name).to_owned(),
                    value: (*value).to_owned(),
                })
                .collect(),
        )
    }

    /// Labels already sorted by the index; kept as read.
    pub(crate) fn from_sorted(labels: Vec<Label>) -> Labels {
        Labels(labels)
    }

    pub fn get(&self, name: &str) -> Option<&str> {
        self.0
            .iter()
            .find(|label| label.name == name)
            .map(|label| label.value.as_str())
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

    /// Prometheus's `labels.StableHash`: xxhash64 (seed 0) over each name and
    /// value followed by the byte 0xff. Stable across Prometheus versions, so
    /// shards computed here agree with Mimir's and Thanos's.
    pub fn stable_hash(&self) -> u64 {
        let mut hasher = xxhash_rust::xxh64::Xxh64::new(0);
        for label in &self.0 {
            hasher.update(label.name.as_bytes());
            hasher.update(&[0xff]);
            hasher.update(label.value.as_bytes());
            hasher.update(&[0xff]);
        }
        hasher.digest()
    }
}

impl fmt::Display for Labels {
    /// `{__name__="up", job="api"}`, as Prometheus prints label sets.
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        formatter.write_str("{")?;
        for (index, label) in self.0.iter().enumerate() {
            if index > 0 {
                formatter.write_str(", ")?;
            }
            write!(formatter, "{}={:?}", label.name, label.value)?;
        }
        formatter.write_str("}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stable_hash_matches_prometheus() {
        // The values Prometheus's TestStableHash pins.
        assert_eq!(Labels::default().stable_hash(), 0xef46_db37_51d8_e999);
        assert_eq!(
            Labels::from_pairs(&[("hello", "world")]).stable_hash(),
            0x347c_8ee7_a9e2_9708
        );
        let two = Labels::from_pairs(&[("__name__", "metric"), ("label", "value")]);
        assert_eq!(two.stable_hash(), 0xcbab_4054_0f26_097d);
    }

    #[test]
    fn order_is_pairwise_then_length() {
        let short = Labels::from_pairs(&[("a", "1")]);
        let long = Labels::from_pairs(&[("a", "1"), ("b", "0")]);
        let later = Labels::from_pairs(&[("a", "2")]);
        assert!(short < long && long < later);
        assert_eq!(long.to_string(), r#"{a="1", b="0"}"#);
    }
}
