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
}
