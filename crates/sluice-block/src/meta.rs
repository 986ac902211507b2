//! `meta.json`: a block's identity (ULID), time range (`maxTime` exclusive),
//! counts and compaction lineage, plus Thanos's external labels when a Thanos
//! sidecar or receiver wrote the block. Unknown Thanos fields are kept so a
//! rewrite does not lose them.

use std::collections::BTreeMap;
use std::fmt;
use std::hash::{BuildHasher, RandomState};
use std::path::Path;
use std::str::FromStr;
use std::time::{SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Deserializer, Serialize, Serializer};

use crate::error::{Error, Result};
use crate::read::RangeRead;

pub const META_FILE: &str = "meta.json";

/// Crockford's base32 alphabet, as ULIDs spell themselves.
const ALPHABET: &[u8; 32] = b"0123456789ABCDEFGHJKMNPQRSTVWXYZ";

/// A ULID: 48 bits of milliseconds since the epoch, then 80 random bits,
/// written as 26 base32 characters. It names a block's directory.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Ulid(pub u128);

impl Ulid {
    pub fn from_parts(timestamp_ms: u64, random: u128) -> Ulid {
        Ulid(u128::from(timestamp_ms & 0xFFFF_FFFF_FFFF) << 80 | (random & ((1u128 << 80) - 1)))
    }

    /// A new ULID for now. The random part comes from the standard library's
    /// per-process random hash keys, which is enough to keep names unique.
    pub fn generate() -> Ulid {
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap_or_default();
        let state = RandomState::new();
        let high = state.hash_one(now.as_nanos());
        let low = state.hash_one(high);
        Ulid::from_parts(
            now.as_millis() as u64,
            u128::from(high) << 64 | u128::from(low),
        )
    }

    pub fn timestamp_ms(self) -> u64 {
        (self.0 >> 80) as u64
    }
}

impl fmt::Display for Ulid {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut text = [0u8; 26];
        for (index, character) in text.iter_mut().enumerate() {
            let shift = 5 * (25 - index);
            *character = ALPHABET[((self.0 >> shift) & 31) as usize];
        }
        formatter.write_str(std::str::from_utf8(&text).map_err(|_| fmt::Error)?)
    }
}

impl FromStr for Ulid {
    type Err = String;

    fn from_str(text: &str) -> Result<Ulid, String> {
        if text.len() != 26 {
            return Err(format!("ULID {text:?} is not 26 characters"));
        }
        let mut value = 0u128;
        for (index, character) in text.bytes().enumerate() {
            let upper = character.to_ascii_uppercase();
            let Some(digit) = ALPHABET.iter().position(|&letter| letter == upper) else {
                return Err(format!(
                    "ULID {text:?} has {:?} at {index}",
                    character as char
                ));
            };
            // 26 characters hold 130 bits: the first may only use three.
            if index == 0 && digit > 7 {
                return Err(format!("ULID {text:?} overflows 128 bits"));
            }
            value = value << 5 | digit as u128;
        }
        Ok(Ulid(value))
    }
}

impl Serialize for Ulid {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for Ulid {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Ulid, D::Error> {
        let text = String::deserialize(deserializer)?;
        text.parse().map_err(serde::de::Error::custom)
    }
}

fn is_zero(value: &u64) -> bool {
    *value == 0
}

/// Counts kept in `meta.json`; Prometheus omits zeros.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct BlockStats {
    #[serde(default, skip_serializing_if = "is_zero")]
    pub num_samples: u64,
    #[serde(default, skip_serializing_if = "is_zero")]
    pub num_float_samples: u64,
    #[serde(default, skip_serializing_if = "is_zero")]
    pub num_histogram_samples: u64,
    #[serde(default, skip_serializing_if = "is_zero")]
    pub num_series: u64,
    #[serde(default, skip_serializing_if = "is_zero")]
    pub num_chunks: u64,
    #[serde(default, skip_serializing_if = "is_zero")]
    pub num_tombstones: u64,
}

/// A parent block of a compacted block.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct BlockDesc {
    pub ulid: Ulid,
    pub min_time: i64,
    pub max_time: i64,
}

/// How the block came to be: level 1 from the head, higher from compaction.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Compaction {
    pub level: u32,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub sources: Vec<Ulid>,
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub deletable: bool,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub parents: Vec<BlockDesc>,
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub failed: bool,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub hints: Vec<String>,
}

/// The `thanos` section: external labels (which identify the Prometheus the
/// block came from) and whatever else Thanos keeps there, untouched.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct ThanosMeta {
    #[serde(default)]
    pub labels: BTreeMap<String, String>,
    #[serde(flatten)]
    pub other: serde_json::Map<String, serde_json::Value>,
}

/// The contents of `meta.json`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct BlockMeta {
    pub ulid: Ulid,
    /// First timestamp in the block, inclusive (ms).
    pub min_time: i64,
    /// End of the block's range, exclusive: last timestamp + 1.
    pub max_time: i64,
    #[serde(default)]
    pub stats: BlockStats,
    #[serde(default)]
    pub compaction: Compaction,
    pub version: u32,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub thanos: Option<ThanosMeta>,
}

impl BlockMeta {
    /// Parses `meta.json` and checks its version.
    pub fn parse(bytes: &[u8]) -> Result<BlockMeta> {
        let meta: BlockMeta = serde_json::from_slice(bytes).map_err(|source| Error::Json {
            file: META_FILE.into(),
            source,
        })?;
        if meta.version != 1 {
            return Err(Error::corrupt(
                META_FILE,
                0,
                format_args!("meta.json version {} is not 1", meta.version),
            ));
        }
        Ok(meta)
    }

    pub fn read(dir: &dyn RangeRead) -> Result<BlockMeta> {
        BlockMeta::parse(&dir.read_all(META_FILE)?)
    }

    /// Encodes as Prometheus does: indented with tabs.
    pub fn to_json(&self) -> Result<Vec<u8>> {
        let mut out = Vec::new();
        let formatter = serde_json::ser::PrettyFormatter::with_indent(b"\t");
        let mut serializer = serde_json::Serializer::with_formatter(&mut out, formatter);
        self.serialize(&mut serializer)
            .map_err(|source| Error::Json {
                file: META_FILE.into(),
                source,
            })?;
        Ok(out)
    }

    /// Writes `<block_dir>/meta.json` through a temporary file and a rename,
    /// so a reader never sees half of it.
    pub fn write(&self, block_dir: &Path) -> Result<()> {
        let temporary = block_dir.join("meta.json.tmp");
        std::fs::write(&temporary, self.to_json()?)
            .map_err(|source| Error::io(META_FILE, "write", source))?;
        std::fs::rename(&temporary, block_dir.join(META_FILE))
            .map_err(|source| Error::io(META_FILE, "rename", source))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_prometheus_meta_and_round_trips() {
        let text = r#"{
	"ulid": "01M90ZVNASNCFYV5NTK1SR2XHP",
	"minTime": 1000,
	"maxTime": 3001,
	"stats": {"numSamples": 3, "numSeries": 1, "numChunks": 1},
	"compaction": {"level": 1, "sources": ["01M90ZVNASNCFYV5NTK1SR2XHP"]},
	"version": 1
}"#;
        let meta = BlockMeta::parse(text.as_bytes()).unwrap();
        assert_eq!(meta.ulid.to_string(), "01M90ZVNASNCFYV5NTK1SR2XHP");
        assert_eq!(
            (meta.min_time, meta.max_time, meta.stats.num_samples),
            (1000, 3001, 3)
        );
        assert_eq!(meta.compaction.sources, vec![meta.ulid]);
        assert_eq!(BlockMeta::parse(&meta.to_json().unwrap()).unwrap(), meta);
    }

    #[test]
    fn keeps_thanos_labels_and_unknown_fields() {
        let text = r#"{"ulid":"01ARZ3NDEKTSV4RRFFQ69G5FAV","minTime":0,"maxTime":1,"version":1,
            "compaction":{"level":2,"parents":[{"ulid":"01ARZ3NDEKTSV4RRFFQ69G5FAV","minTime":0,"maxTime":1}]},
            "thanos":{"labels":{"cluster":"eu"},"downsample":{"resolution":0},"source":"sidecar"}}"#;
        let meta = BlockMeta::parse(text.as_bytes()).unwrap();
        let thanos = meta.thanos.as_ref().unwrap();
        assert_eq!(thanos.labels["cluster"], "eu");
        assert_eq!(thanos.other["source"], "sidecar");
        assert_eq!(BlockMeta::parse(&meta.to_json().unwrap()).unwrap(), meta);
    }

    #[test]
    fn ulids_round_trip_and_bad_ones_are_errors() {
        let ulid = Ulid::from_parts(1_469_918_176_385, 0x1234_5678_9abc_def0_1234);
        assert_eq!(ulid.to_string().parse::<Ulid>().unwrap(), ulid);
        assert_eq!(ulid.timestamp_ms(), 1_469_918_176_385);
        assert_eq!(ulid.to_string()[..10], *"01ARYZ6S41");
        assert!("81ARZ3NDEKTSV4RRFFQ69G5FAV".parse::<Ulid>().is_err());
        assert!("01ARZ3NDEKTSV4RRFFQ69G5FAU".parse::<Ulid>().is_err());
        assert_ne!(Ulid::generate(), Ulid::generate());
        let error = BlockMeta::parse(b"{\"ulid\": 5}").unwrap_err().to_string();
        assert!(error.starts_with("meta.json: "), "{error}");
    }
}
