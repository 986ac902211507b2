//! Mimir's per-tenant bucket index, `<tenant>/bucket-index.json.gz`: the
//! tenant's complete blocks and deletion marks, written by Mimir's compactor
//! so that readers need one GET instead of listing the tenant. Only the
//! fields sluice uses are read; versions 1 and 2 share them.

use std::collections::BTreeSet;
use std::io::Read;

use serde::Deserialize;
use sluice_block::Ulid;

pub(crate) const BUCKET_INDEX_FILE: &str = "bucket-index.json.gz";

#[derive(Deserialize)]
struct IndexBlock {
    block_id: Ulid,
}

#[derive(Deserialize)]
struct DeletionMark {
    block_id: Ulid,
}

#[derive(Deserialize)]
struct BucketIndex {
    version: u32,
    #[serde(default)]
    blocks: Vec<IndexBlock>,
    #[serde(default)]
    block_deletion_marks: Vec<DeletionMark>,
}

/// The blocks the gzipped index lists and that are not marked for deletion.
pub(crate) fn live_blocks(gzipped: &[u8]) -> Result<Vec<Ulid>, String> {
    let mut json = Vec::new();
    flate2::read::GzDecoder::new(gzipped)
        .read_to_end(&mut json)
        .map_err(|error| format!("not gzip: {error}"))?;
    let index: BucketIndex =
        serde_json::from_slice(&json).map_err(|error| format!("not a bucket index: {error}"))?;
    if !(1..=2).contains(&index.version) {
        return Err(format!("unknown bucket index version {}", index.version));
    }
    let deleted: BTreeSet<Ulid> = index
        .block_deletion_marks
        .iter()
        .map(|mark| mark.block_id)
        .collect();
    Ok(index
        .blocks
        .iter()
        .map(|block| block.block_id)
        .filter(|ulid| !deleted.contains(ulid))
        .collect())
}

#[cfg(test)]
pub(crate) fn gzip(json: &str) -> Vec<u8> {
    use std::io::Write;
    let mut encoder = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    encoder.write_all(json.as_bytes()).unwrap();
    encoder.finish().unwrap()
}

#[cfg(test)]
mod tests {
    use super::*;

    const A: &str = "01ARZ3NDEKTSV4RRFFQ69G5FAV";
    const B: &str = "01BX5ZZKBKACTAV9WEVGEMMVRZ";

    #[test]
    fn marked_blocks_are_left_out() {
        let json = format!(
            r#"{{"version":2,"blocks":[{{"block_id":"{A}","min_time":0,"max_time":7200000}},
            {{"block_id":"{B}","min_time":0,"max_time":7200000}}],
            "block_deletion_marks":[{{"block_id":"{B}","deletion_time":1}}],"updated_at":5}}"#
        );
        assert_eq!(live_blocks(&gzip(&json)).unwrap(), vec![A.parse().unwrap()]);
    }

    #[test]
    fn garbage_and_unknown_versions_are_errors() {
        assert!(live_blocks(b"{}").unwrap_err().contains("gzip"));
        let future = gzip(r#"{"version":9,"blocks":[]}"#);
        assert!(live_blocks(&future).unwrap_err().contains("version 9"));
    }

    fn ulid(seed: (u64, u128)) -> Ulid {
        Ulid::from_parts(seed.0 % (1 << 48), seed.1 % (1 << 80))
    }

    proptest::proptest! {
        #![proptest_config(proptest::test_runner::Config::with_cases(sluice_testkit::fuzz_cases(256)))]

        /// Whatever blocks and marks an index lists, in any order and with
        /// fields sluice does not read, the live blocks are the listed ones
        /// without a mark, in the index's order.
        #[test]
        fn live_blocks_are_the_unmarked_ones(
            blocks in proptest::collection::vec((proptest::prelude::any::<u64>(), proptest::prelude::any::<u128>()), 0..20),
            marked in proptest::collection::vec(proptest::prelude::any::<proptest::sample::Index>(), 0..5),
            version in 1u32..=2,
        ) {
            let ulids: Vec<Ulid> = blocks.iter().copied().map(ulid).collect();
            let marks: Vec<Ulid> = marked
                .iter()
                .filter(|_| !ulids.is_empty())
                .map(|index| ulids[index.index(ulids.len())])
                .collect();
            let listed: Vec<String> = ulids
                .iter()
                .map(|ulid| format!(r#"{{"block_id":"{ulid}","min_time":0,"max_time":7200000,"segments_format":"1b6d","segments_num":1}}"#))
                .collect();
            let deleted: Vec<String> = marks
                .iter()
                .map(|ulid| format!(r#"{{"block_id":"{ulid}","deletion_time":1}}"#))
                .collect();
            let json = format!(
                r#"{{"version":{version},"blocks":[{}],"block_deletion_marks":[{}],"updated_at":5}}"#,
                listed.join(","),
                deleted.join(",")
            );
            let expected: Vec<Ulid> = ulids.iter().copied().filter(|ulid| !marks.contains(ulid)).collect();
            proptest::prop_assert_eq!(live_blocks(&gzip(&json)).unwrap(), expected);
        }

        /// Damaged gzip, damaged JSON inside good gzip: an error, never a panic.
        #[test]
        fn damaged_indexes_are_errors(
            flips in proptest::collection::vec((proptest::prelude::any::<proptest::sample::Index>(), proptest::prelude::any::<u8>()), 1..6),
            cut in proptest::prelude::any::<proptest::sample::Index>(),
            inside in proptest::prelude::any::<bool>(),
        ) {
            let json = format!(
                r#"{{"version":2,"blocks":[{{"block_id":"{A}"}},{{"block_id":"{B}"}}],"block_deletion_marks":[{{"block_id":"{B}"}}]}}"#
            );
            let mut bytes = if inside { json.into_bytes() } else { gzip(&json) };
            for (index, byte) in flips {
                let position = index.index(bytes.len());
                bytes[position] ^= byte;
            }
            bytes.truncate(cut.index(bytes.len() + 1).max(1));
            let input = if inside {
                gzip(&String::from_utf8_lossy(&bytes))
            } else {
                bytes
            };
            if let Ok(live) = live_blocks(&input) {
                proptest::prop_assert!(live.len() <= 2);
            }
        }
    }
}
