//! The bucket that holds Prometheus TSDB blocks, through `object_store`: a
//! local directory by default, S3-compatible object storage as the first
//! remote backend. It knows the bucket's layouts ([`discover`]): Mimir's and
//! Cortex's `<tenant>/<ULID>/`, and ULID directories at the root (a Prometheus
//! data directory, a Thanos bucket) read as the blocks of the single tenant
//! used when multi-tenancy is off. Blocks marked for deletion are left out,
//! and a tenant's `bucket-index.json.gz` (Mimir) replaces listing it.
//!
//! Block files are read through [`ObjectDir`], an implementation of
//! `sluice_block::RangeRead` that issues ranged GETs only, never a whole
//! object except where the block format itself needs one (meta.json,
//! tombstones).
//!
//! **Sync over async.** `RangeRead` stays synchronous and each call is
//! bridged onto the async runtime ([`bridge`]): the readers and the PromQL
//! engine are synchronous, CPU-bound code that already runs on Tokio's
//! blocking pool, and an async trait would have to be threaded through every
//! decoder of the block crate and the engine for no gain there. The bridge
//! spawns the request onto the runtime and parks the *calling* (blocking)
//! thread on a channel, so the runtime's workers are never blocked. Callers
//! must therefore be on a blocking thread (`spawn_blocking`) or a plain
//! thread, never on a runtime worker.
//!
//! **S3 without C.** object_store's `aws` feature brings aws-lc-rs (C) for
//! TLS and signing. The `s3` feature (default, and on in the `sluice`
//! binary) uses `aws-base` with a pure-Rust signer (RustCrypto's sha2 and
//! hmac) and a hyper client without TLS: S3-compatible stores reached over
//! plain HTTP (MinIO, Ceph, in-cluster endpoints: `-blocks-storage.s3.insecure`).
//! HTTPS needs the opt-in `s3-tls` feature, which builds aws-lc-rs.

mod bridge;
mod config;
#[cfg(feature = "s3")]
mod crypto;
mod dir;
mod error;
#[cfg(all(feature = "s3", not(feature = "s3-tls")))]
mod http;
mod index;
mod layout;

use std::ops::Range;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use bytes::Bytes;
use futures_util::{StreamExt, TryStreamExt};
use object_store::path::Path as ObjectPath;
use object_store::{ObjectStore, ObjectStoreExt, PutPayload};
use tokio::runtime::Handle;

pub use config::{Backend, BucketConfig, S3Config};
pub use dir::ObjectDir;
pub use error::BucketError;
pub use layout::{ANONYMOUS_TENANT, BlockLocation, discover};

/// The bucket's result type.
pub type Result<T, E = BucketError> = std::result::Result<T, E>;

/// Ranges of one object closer than this are fetched with one ranged GET:
/// against an object store a request costs far more (tens of ms, and a
/// price per request) than the few KiB of gap it transfers.
pub const COALESCE_GAP_BYTES: u64 = 64 * 1024;
/// Ranged GETs of one batch in flight at once.
const PARALLEL_GETS: usize = 8;

/// The requests a bucket has made, by operation, for metrics.
#[derive(Debug, Default)]
pub struct Operations {
    pub get: AtomicU64,
    pub get_range: AtomicU64,
    pub list: AtomicU64,
    pub put: AtomicU64,
    pub delete: AtomicU64,
}

/// An object store plus the runtime that drives its requests.
#[derive(Clone)]
pub struct Bucket {
    store: Arc<dyn ObjectStore>,
    runtime: Handle,
    /// Names the bucket in errors: a directory or `s3://name`.
    name: Arc<str>,
    operations: Arc<Operations>,
}

impl std::fmt::Debug for Bucket {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        formatter.debug_tuple("Bucket").field(&self.name).finish()
    }
}

/// One object found by a listing: its key and size in bytes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Object {
    pub key: String,
    pub size: u64,
}

impl Bucket {
    /// A bucket over any object store; `runtime` runs its requests.
    pub fn new(store: Arc<dyn ObjectStore>, name: impl Into<Arc<str>>, runtime: Handle) -> Bucket {
        Bucket {
            store,
            runtime,
            name: name.into(),
            operations: Arc::default(),
        }
    }

    /// How many requests of each kind this bucket (and its clones) made.
    pub fn operations(&self) -> &Operations {
        &self.operations
    }

    fn count(&self, counter: fn(&Operations) -> &AtomicU64, requests: usize) {
        counter(&self.operations).fetch_add(requests as u64, Ordering::Relaxed);
    }

    /// The bucket `config` describes.
    pub fn open(config: &BucketConfig, runtime: Handle) -> Result<Bucket> {
        let (store, name) = config::open_store(config)?;
        Ok(Bucket::new(store, name, runtime))
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    pub fn store(&self) -> &Arc<dyn ObjectStore> {
        &self.store
    }

    fn failure(&self, op: &'static str, key: &str, source: object_store::Error) -> BucketError {
        BucketError::Store {
            bucket: self.name.to_string(),
            op,
            key: key.to_owned(),
            source: Box::new(source),
        }
    }

    fn run<T: Send + 'static>(
        &self,
        key: &str,
        future: impl Future<Output = object_store::Result<T>> + Send + 'static,
        op: &'static str,
    ) -> Result<T> {
        match bridge::wait(&self.runtime, future) {
            Some(outcome) => outcome.map_err(|source| self.failure(op, key, source)),
            None => Err(BucketError::RuntimeGone {
                bucket: self.name.to_string(),
                key: key.to_owned(),
            }),
        }
    }

    /// The bytes `range` of object `key`, by one ranged GET.
    pub fn get_range(&self, key: &str, range: Range<u64>) -> Result<Bytes> {
        if range.is_empty() {
            return Ok(Bytes::new());
        }
        let store = self.store.clone();
        let location = ObjectPath::from(key);
        self.count(|operations| &operations.get_range, 1);
        self.run(
            key,
            async move { store.get_range(&location, range).await },
            "get range",
        )
    }

    /// The bytes of each of `ranges` of object `key`, in order: ranges
    /// less than [`COALESCE_GAP_BYTES`] apart are fetched with one ranged
    /// GET, several GETs at once.
    pub fn get_ranges(&self, key: &str, ranges: &[Range<u64>]) -> Result<Vec<Bytes>> {
        let merged = coalesce(ranges, COALESCE_GAP_BYTES);
        let store = self.store.clone();
        let location = ObjectPath::from(key);
        let requests = merged.clone();
        self.count(|operations| &operations.get_range, merged.len());
        let fetched = self.run(
            key,
            async move {
                futures_util::stream::iter(requests)
                    .map(|range| {
                        let store = store.clone();
                        let location = location.clone();
                        async move { store.get_range(&location, range).await }
                    })
                    .buffered(PARALLEL_GETS)
                    .try_collect::<Vec<Bytes>>()
                    .await
            },
            "get range",
        )?;
        Ok(ranges
            .iter()
            .map(|range| {
                if range.is_empty() {
                    return Bytes::new();
                }
                let index = merged.partition_point(|outer| outer.end < range.end);
                let outer = &merged[index];
                let start = (range.start - outer.start) as usize;
                fetched[index].slice(start..start + (range.end - range.start) as usize)
            })
            .collect())
    }

    /// The whole object `key`, or `None` when there is none.
    pub fn get_optional(&self, key: &str) -> Result<Option<Bytes>> {
        self.count(|operations| &operations.get, 1);
        let store = self.store.clone();
        let location = ObjectPath::from(key);
        let fetched = self.run(
            key,
            async move {
                match store.get(&location).await {
                    Ok(found) => found.bytes().await.map(Some),
                    Err(object_store::Error::NotFound { .. }) => Ok(None),
                    Err(error) => Err(error),
                }
            },
            "get",
        )?;
        Ok(fetched)
    }

    /// Every object under `prefix` (all of the bucket for `None`), recursively.
    pub fn list_all(&self, prefix: Option<&str>) -> Result<Vec<Object>> {
        self.count(|operations| &operations.list, 1);
        let store = self.store.clone();
        let location = prefix.map(ObjectPath::from);
        let listed = self.run(
            prefix.unwrap_or(""),
            async move {
                store
                    .list(location.as_ref())
                    .map_ok(|meta| Object {
                        key: meta.location.to_string(),
                        size: meta.size,
                    })
                    .try_collect::<Vec<Object>>()
                    .await
            },
            "list",
        )?;
        Ok(listed)
    }

    /// The names of the "directories" directly under `prefix`.
    pub fn list_dirs(&self, prefix: Option<&str>) -> Result<Vec<String>> {
        self.count(|operations| &operations.list, 1);
        let store = self.store.clone();
        let location = prefix.map(ObjectPath::from);
        let listed = self.run(
            prefix.unwrap_or(""),
            async move { store.list_with_delimiter(location.as_ref()).await },
            "list",
        )?;
        let mut names: Vec<String> = listed
            .common_prefixes
            .iter()
            .filter_map(|dir| dir.filename().map(str::to_owned))
            .collect();
        names.sort();
        Ok(names)
    }

    /// Writes `bytes` as object `key`.
    pub fn put(&self, key: &str, bytes: Bytes) -> Result<()> {
        self.count(|operations| &operations.put, 1);
        let store = self.store.clone();
        let location = ObjectPath::from(key);
        self.run(
            key,
            async move {
                store
                    .put(&location, PutPayload::from_bytes(bytes))
                    .await
                    .map(drop)
            },
            "put",
        )
    }

    /// Deletes object `key`; one already gone is not an error, so that a
    /// deletion interrupted half-way can simply be run again.
    pub fn delete(&self, key: &str) -> Result<()> {
        self.count(|operations| &operations.delete, 1);
        let store = self.store.clone();
        let location = ObjectPath::from(key);
        self.run(
            key,
            async move {
                match store.delete(&location).await {
                    Err(object_store::Error::NotFound { .. }) => Ok(()),
                    outcome => outcome,
                }
            },
            "delete",
        )
    }

    /// Uploads the block directory `local` as `prefix/...`, `meta.json` last
    /// so that a reader never takes a half-uploaded block for a whole one.
    pub fn upload_block(&self, local: &Path, prefix: &str) -> Result<()> {
        let mut files = Vec::new();
        collect_files(local, "", &mut files)?;
        files.sort_by_key(|name| name == sluice_block::meta::META_FILE);
        for (uploaded, name) in files.iter().enumerate() {
            let path = local.join(name);
            let put = std::fs::read(&path)
                .map_err(|source| BucketError::Local {
                    path: path.display().to_string(),
                    source,
                })
                .and_then(|bytes| self.put(&format!("{prefix}/{name}"), Bytes::from(bytes)));
            if let Err(error) = put {
                // Without meta.json the files are no block, but a listing
                // would still find them: take them away (best effort).
                for name in &files[..uploaded] {
                    let _ = self.delete(&format!("{prefix}/{name}"));
                }
                return Err(error);
            }
        }
        Ok(())
    }

    /// The files of the block at `prefix` (`<tenant>/<ULID>` or `<ULID>`).
    pub fn block_dir(&self, prefix: &str) -> ObjectDir {
        ObjectDir::new(self.clone(), prefix.to_owned())
    }
}

/// `ranges` (any order, possibly overlapping) merged into sorted ranges
/// that cover them, any two closer than `gap` bytes joined.
fn coalesce(ranges: &[Range<u64>], gap: u64) -> Vec<Range<u64>> {
    let mut sorted: Vec<Range<u64>> = ranges.iter().filter(|r| !r.is_empty()).cloned().collect();
    sorted.sort_by_key(|range| range.start);
    let mut merged: Vec<Range<u64>> = Vec::new();
    for range in sorted {
        match merged.last_mut() {
            Some(last) if range.start <= last.end.saturating_add(gap) => {
                last.end = last.end.max(range.end)
            }
            _ => merged.push(range),
        }
    }
    merged
}

fn collect_files(dir: &Path, relative: &str, out: &mut Vec<String>) -> Result<()> {
    let local_error = |source| BucketError::Local {
        path: dir.display().to_string(),
        source,
    };
    for entry in std::fs::read_dir(dir).map_err(local_error)? {
        let entry = entry.map_err(local_error)?;
        let name = entry.file_name().to_string_lossy().into_owned();
        let joined = if relative.is_empty() {
            name
        } else {
            format!("{relative}/{name}")
        };
        if entry.file_type().map_err(local_error)?.is_dir() {
            collect_files(&entry.path(), &joined, out)?;
        } else {
            out.push(joined);
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nearby_ranges_coalesce_and_far_ones_do_not() {
        let ranges = [100..200, 0..50, 150..300, 10_000..10_100, 300..300];
        assert_eq!(coalesce(&ranges, 64), vec![0..300, 10_000..10_100]);
        assert_eq!(coalesce(&ranges, 0), vec![0..50, 100..300, 10_000..10_100]);
        assert!(coalesce(&[], 64).is_empty());
    }

    #[test]
    fn get_ranges_slices_each_range_out_of_fewer_gets() {
        let runtime = sluice_testkit::io_runtime();
        let dir = sluice_testkit::TempDir::new("bucket-ranges").unwrap();
        let config = BucketConfig {
            filesystem_dir: dir.path().to_owned(),
            ..BucketConfig::default()
        };
        let bucket = Bucket::open(&config, runtime.handle().clone()).unwrap();
        let bytes: Vec<u8> = (0..200_000u32).map(|i| (i % 251) as u8).collect();
        bucket.put("object", Bytes::from(bytes.clone())).unwrap();
        let ranges = [
            150_000..150_010,
            5..20,
            10..40,
            1_000..1_500,
            150_000..150_000,
            199_999..199_999,
        ];
        let fetched = bucket.get_ranges("object", &ranges).unwrap();
        for (range, got) in ranges.iter().zip(&fetched) {
            assert_eq!(
                got.as_ref(),
                &bytes[range.start as usize..range.end as usize]
            );
        }
        // Two GETs: 5..1_500 and 150_000..150_010.
        assert_eq!(bucket.operations().get_range.load(Ordering::Relaxed), 2);
    }
}
