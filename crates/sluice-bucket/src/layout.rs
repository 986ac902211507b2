//! Where a bucket keeps its blocks. Two layouts are read, side by side:
//!
//! - `<tenant>/<ULID>/…`: Mimir and Cortex, one folder per tenant;
//! - `<ULID>/…` at the root: a Prometheus data directory or a Thanos bucket,
//!   read as the blocks of [`ANONYMOUS_TENANT`], the tenant every request
//!   belongs to when multi-tenancy is off.
//!
//! A tenant folder is listed recursively (one paginated LIST for all its
//! blocks, which also yields every file's size) unless it holds Mimir's
//! `bucket-index.json.gz`, which is read instead. Blocks marked for deletion
//! (`<block>/deletion-mark.json`, or Mimir's global
//! `<tenant>/markers/<ULID>-deletion-mark.json`) are left out: their
//! replacement is already there, and their files may vanish any moment.

use std::collections::BTreeMap;

use sluice_block::Ulid;

use crate::dir::ObjectDir;
use crate::index::{BUCKET_INDEX_FILE, live_blocks};
use crate::{Bucket, Object, Result};

/// The tenant of blocks at the bucket's root; the same name the frontend
/// gives every request when multi-tenancy is off.
pub const ANONYMOUS_TENANT: &str = "anonymous";

const DELETION_MARK: &str = "deletion-mark.json";

/// Folders at the root that are not tenants: a Prometheus data directory's
/// write-ahead log and head chunks, and names no tenant ID may take.
fn is_ignored_root_folder(name: &str) -> bool {
    matches!(name, "wal" | "chunks_head" | "lost+found") || name.starts_with(['.', '_'])
}

/// A block found in the bucket.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BlockLocation {
    pub tenant: String,
    pub ulid: Ulid,
    /// Its key prefix: `<tenant>/<ULID>` or `<ULID>`.
    pub prefix: String,
    /// Its files and their sizes, when the scan already listed them.
    pub files: Option<BTreeMap<String, u64>>,
}

impl BlockLocation {
    /// The block's files, for `sluice_block::Block::open`.
    pub fn dir(&self, bucket: &Bucket) -> ObjectDir {
        match &self.files {
            Some(files) => {
                ObjectDir::with_listing(bucket.clone(), self.prefix.clone(), files.clone())
            }
            None => ObjectDir::new(bucket.clone(), self.prefix.clone()),
        }
    }
}

/// Every block of every tenant in `bucket`, not marked for deletion,
/// ordered by tenant then ULID.
pub fn discover(bucket: &Bucket) -> Result<Vec<BlockLocation>> {
    let folders = bucket.list_dirs(None)?;
    let mut found = Vec::new();
    if folders.iter().any(|name| name.parse::<Ulid>().is_ok()) {
        found.extend(scan(bucket, None, ANONYMOUS_TENANT)?);
    }
    for tenant in &folders {
        if tenant.parse::<Ulid>().is_ok() || is_ignored_root_folder(tenant) {
            continue;
        }
        found.extend(tenant_blocks(bucket, tenant)?);
    }
    found.sort_by(|a, b| (&a.tenant, a.ulid).cmp(&(&b.tenant, b.ulid)));
    Ok(found)
}

fn tenant_blocks(bucket: &Bucket, tenant: &str) -> Result<Vec<BlockLocation>> {
    let index_key = format!("{tenant}/{BUCKET_INDEX_FILE}");
    let Some(gzipped) = bucket.get_optional(&index_key)? else {
        return scan(bucket, Some(tenant), tenant);
    };
    match live_blocks(&gzipped) {
        Ok(ulids) => Ok(ulids
            .into_iter()
            .map(|ulid| BlockLocation {
                tenant: tenant.to_owned(),
                ulid,
                prefix: format!("{tenant}/{ulid}"),
                files: None,
            })
            .collect()),
        Err(reason) => {
            tracing::warn!(bucket = bucket.name(), key = %index_key, %reason, "unreadable bucket index, listing the tenant instead");
            scan(bucket, Some(tenant), tenant)
        }
    }
}

/// The files of each block under `prefix`, and the blocks marked for deletion.
#[derive(Default)]
struct Scanned {
    blocks: BTreeMap<Ulid, BTreeMap<String, u64>>,
    marked: Vec<Ulid>,
}

fn group_by_block(objects: Vec<Object>, skip: usize) -> Scanned {
    let mut scanned = Scanned::default();
    for object in objects {
        let Some(relative) = object.key.get(skip..) else {
            continue;
        };
        let Some((first, rest)) = relative.split_once('/') else {
            continue;
        };
        if let Ok(ulid) = first.parse::<Ulid>() {
            if rest == DELETION_MARK {
                scanned.marked.push(ulid);
            }
            let files = scanned.blocks.entry(ulid).or_default();
            files.insert(rest.to_owned(), object.size);
        } else if first == "markers"
            && let Some(ulid) = rest.strip_suffix("-deletion-mark.json")
            && let Ok(ulid) = ulid.parse::<Ulid>()
        {
            scanned.marked.push(ulid);
        }
    }
    scanned
}

fn scan(bucket: &Bucket, prefix: Option<&str>, tenant: &str) -> Result<Vec<BlockLocation>> {
    let objects = bucket.list_all(prefix)?;
    let skip = prefix.map_or(0, |prefix| prefix.len() + 1);
    let mut scanned = group_by_block(objects, skip);
    for ulid in &scanned.marked {
        scanned.blocks.remove(ulid);
    }
    Ok(scanned
        .blocks
        .into_iter()
        .map(|(ulid, files)| BlockLocation {
            tenant: tenant.to_owned(),
            ulid,
            prefix: match prefix {
                Some(prefix) => format!("{prefix}/{ulid}"),
                None => ulid.to_string(),
            },
            files: Some(files),
        })
        .collect())
}

#[cfg(test)]
mod tests;
