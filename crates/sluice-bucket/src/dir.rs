//! One block's files in the bucket, read by byte range: the
//! `sluice_block::RangeRead` of an object store.
//!
//! A block is immutable once its `meta.json` is uploaded, so its listing is
//! fetched once (one LIST request) and then answers `file_len`, `exists` and
//! `list` without further requests; every `read_range` is one ranged GET.

use std::collections::BTreeMap;
use std::ops::Range;
use std::sync::{Arc, OnceLock};

use bytes::Bytes;
use sluice_block::{Error as BlockError, RangeRead};

use crate::{Bucket, BucketError};

/// The files of the block at `prefix`, keyed by path within the block.
pub struct ObjectDir {
    bucket: Bucket,
    prefix: String,
    files: OnceLock<Arc<BTreeMap<String, u64>>>,
}

fn not_found(file: String) -> BlockError {
    BlockError::Io {
        file,
        op: "open",
        source: std::io::Error::from(std::io::ErrorKind::NotFound),
    }
}

fn bucket_failure(file: String, op: &'static str, error: BucketError) -> BlockError {
    let kind = match &error {
        BucketError::Store { source, .. }
            if matches!(**source, object_store::Error::NotFound { .. }) =>
        {
            std::io::ErrorKind::NotFound
        }
        _ => std::io::ErrorKind::Other,
    };
    BlockError::Io {
        file,
        op,
        source: std::io::Error::new(kind, error),
    }
}

impl ObjectDir {
    pub fn new(bucket: Bucket, prefix: String) -> ObjectDir {
        ObjectDir {
            bucket,
            prefix,
            files: OnceLock::new(),
        }
    }

    /// A directory whose listing is already known (from a bucket scan).
    pub fn with_listing(bucket: Bucket, prefix: String, files: BTreeMap<String, u64>) -> ObjectDir {
        let dir = ObjectDir::new(bucket, prefix);
        let _ = dir.files.set(Arc::new(files));
        dir
    }

    pub fn prefix(&self) -> &str {
        &self.prefix
    }

    /// The object key of `file`, which also names it in errors.
    fn key(&self, file: &str) -> String {
        format!("{}/{file}", self.prefix)
    }

    /// Every file of the block with its size, listed on first use.
    pub fn files(&self) -> sluice_block::Result<Arc<BTreeMap<String, u64>>> {
        if let Some(files) = self.files.get() {
            return Ok(files.clone());
        }
        let objects = self
            .bucket
            .list_all(Some(&self.prefix))
            .map_err(|error| bucket_failure(self.prefix.clone(), "list", error))?;
        let start = self.prefix.len() + 1;
        let files: BTreeMap<String, u64> = objects
            .into_iter()
            .filter_map(|object| Some((object.key.get(start..)?.to_owned(), object.size)))
            .collect();
        // A concurrent first use may have won; both listed the same block.
        Ok(self.files.get_or_init(|| Arc::new(files)).clone())
    }

    /// The block's size in bytes: the sum of its files.
    pub fn size(&self) -> sluice_block::Result<u64> {
        Ok(self.files()?.values().sum())
    }
}

impl ObjectDir {
    /// An error for the first of `ranges` that does not lie in `file`.
    fn check_ranges(&self, file: &str, ranges: &[Range<u64>]) -> sluice_block::Result<()> {
        let length = self.file_len(file)?;
        match ranges
            .iter()
            .find(|range| range.start > range.end || range.end > length)
        {
            None => Ok(()),
            Some(bad) => Err(BlockError::Corrupt {
                file: self.key(file),
                offset: bad.start,
                reason: format!(
                    "read of {}..{} past the end of the object ({length} bytes)",
                    bad.start, bad.end
                ),
            }),
        }
    }
}

impl RangeRead for ObjectDir {
    fn read_range(&self, file: &str, range: Range<u64>) -> sluice_block::Result<Bytes> {
        self.check_ranges(file, std::slice::from_ref(&range))?;
        self.bucket
            .get_range(&self.key(file), range)
            .map_err(|error| bucket_failure(self.key(file), "get range", error))
    }

    fn read_ranges(&self, file: &str, ranges: &[Range<u64>]) -> sluice_block::Result<Vec<Bytes>> {
        self.check_ranges(file, ranges)?;
        self.bucket
            .get_ranges(&self.key(file), ranges)
            .map_err(|error| bucket_failure(self.key(file), "get range", error))
    }

    fn file_len(&self, file: &str) -> sluice_block::Result<u64> {
        self.files()?
            .get(file)
            .copied()
            .ok_or_else(|| not_found(self.key(file)))
    }

    fn exists(&self, file: &str) -> sluice_block::Result<bool> {
        let files = self.files()?;
        let as_dir = format!("{file}/");
        Ok(files.contains_key(file)
            || files
                .range(as_dir.clone()..)
                .next()
                .is_some_and(|(name, _)| name.starts_with(&as_dir)))
    }

    fn list(&self, dir: &str) -> sluice_block::Result<Vec<String>> {
        let files = self.files()?;
        let as_dir = format!("{dir}/");
        Ok(files
            .range(as_dir.clone()..)
            .map_while(|(name, _)| name.strip_prefix(&as_dir))
            .filter(|rest| !rest.contains('/'))
            .map(str::to_owned)
            .collect())
    }
}
