//! A tenant's blocks as the compactor sees them in the bucket, and Mimir's
//! deletion marks: a block to delete first gets `<tenant>/<ULID>/deletion-mark.json`
//! and the global `<tenant>/markers/<ULID>-deletion-mark.json` (queriers
//! stop reading it at their next sync), and its files go only once the mark
//! is older than `-compactor.deletion-delay`, so that a query that opened
//! the block before the mark still finds every file it reads.

use std::collections::{BTreeMap, BTreeSet};

use bytes::Bytes;
use serde::{Deserialize, Serialize};
use sluice_block::Ulid;
use sluice_block::meta::META_FILE;
use sluice_bucket::{Bucket, BucketError};

const DELETION_MARK: &str = "deletion-mark.json";
const BUCKET_INDEX: &str = "bucket-index.json.gz";

/// `deletion-mark.json`, as Mimir and Thanos write it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct DeletionMark {
    pub id: Ulid,
    /// Unix seconds.
    pub deletion_time: i64,
    pub version: u32,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub details: String,
}

/// What one listing of a tenant's folder found.
#[derive(Debug, Default)]
pub struct TenantListing {
    /// Blocks with a meta.json and no deletion mark.
    pub live: BTreeSet<Ulid>,
    /// Blocks marked for deletion, with every file key each still has.
    pub marked: BTreeMap<Ulid, Vec<String>>,
    /// Block folders without meta.json or mark: uploads under way, or
    /// abandoned by a crash.
    pub partial: BTreeSet<Ulid>,
    /// Whether a Mimir bucket index lists the tenant: then Mimir's own
    /// compactor owns it, and queriers would not see new blocks.
    pub has_bucket_index: bool,
}

fn global_marker(tenant: &str, ulid: Ulid) -> String {
    format!("{tenant}/markers/{ulid}-{DELETION_MARK}")
}

/// Lists `tenant`'s folder once.
pub fn list_tenant(bucket: &Bucket, tenant: &str) -> Result<TenantListing, BucketError> {
    let prefix = format!("{tenant}/");
    let mut files: BTreeMap<Ulid, Vec<String>> = BTreeMap::new();
    let mut marked = BTreeSet::new();
    let mut listing = TenantListing::default();
    for object in bucket.list_all(Some(tenant))? {
        let Some(relative) = object.key.strip_prefix(&prefix) else {
            continue;
        };
        if relative == BUCKET_INDEX {
            listing.has_bucket_index = true;
        }
        let Some((first, rest)) = relative.split_once('/') else {
            continue;
        };
        if let Ok(ulid) = first.parse::<Ulid>() {
            if rest == DELETION_MARK {
                marked.insert(ulid);
            }
            files.entry(ulid).or_default().push(object.key.clone());
        } else if first == "markers"
            && let Some(ulid) = rest.strip_suffix(&format!("-{DELETION_MARK}"))
            && let Ok(ulid) = ulid.parse::<Ulid>()
        {
            marked.insert(ulid);
            files.entry(ulid).or_default();
        }
    }
    for (ulid, keys) in files {
        if marked.contains(&ulid) {
            listing.marked.insert(ulid, keys);
        } else if keys
            .iter()
            .any(|key| key.ends_with(&format!("/{META_FILE}")))
        {
            listing.live.insert(ulid);
        } else {
            listing.partial.insert(ulid);
        }
    }
    Ok(listing)
}

/// Marks `ulid` of `tenant` for deletion at `now_s` (Unix seconds).
pub fn mark_for_deletion(
    bucket: &Bucket,
    tenant: &str,
    ulid: Ulid,
    now_s: i64,
    details: &str,
) -> Result<(), BucketError> {
    let mark = DeletionMark {
        id: ulid,
        deletion_time: now_s,
        version: 1,
        details: details.to_owned(),
    };
    let bytes = Bytes::from(serde_json::to_vec(&mark).expect("a mark always encodes"));
    bucket.put(&format!("{tenant}/{ulid}/{DELETION_MARK}"), bytes.clone())?;
    bucket.put(&global_marker(tenant, ulid), bytes)
}

/// When the mark of a marked block was written (Unix seconds): from the
/// block's own mark, else the global one; `None` if neither reads.
pub fn marked_at(bucket: &Bucket, tenant: &str, ulid: Ulid) -> Result<Option<i64>, BucketError> {
    for key in [
        format!("{tenant}/{ulid}/{DELETION_MARK}"),
        global_marker(tenant, ulid),
    ] {
        if let Some(bytes) = bucket.get_optional(&key)?
            && let Ok(mark) = serde_json::from_slice::<DeletionMark>(&bytes)
        {
            return Ok(Some(mark.deletion_time));
        }
    }
    Ok(None)
}

/// Deletes a marked block: meta.json first (what is left is no block to
/// anyone), its mark last, then the global marker, so an interrupted
/// deletion is found marked and finished by the next run.
pub fn delete_block(
    bucket: &Bucket,
    tenant: &str,
    ulid: Ulid,
    keys: &[String],
) -> Result<(), BucketError> {
    let mut ordered = keys.to_vec();
    ordered.sort_by_key(|key| {
        if key.ends_with(&format!("/{META_FILE}")) {
            0
        } else if key.ends_with(&format!("/{DELETION_MARK}")) {
            2
        } else {
            1
        }
    });
    for key in &ordered {
        bucket.delete(key)?;
    }
    bucket.delete(&global_marker(tenant, ulid))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_mark_reads_as_mimir_writes_it() {
        let text = br#"{"id":"01FSCTA0A4M1YQHZQ4B2VTGS2R","deletion_time":1642000000,"version":1}"#;
        let mark: DeletionMark = serde_json::from_slice(text).unwrap();
        assert_eq!(mark.deletion_time, 1_642_000_000);
        assert_eq!(serde_json::to_vec(&mark).unwrap(), text.to_vec());
    }
}
