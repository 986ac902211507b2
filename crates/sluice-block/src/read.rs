//! Ranged reads of a block's files. Readers in this crate never take a whole
//! file except where the format forces it (meta.json, tombstones); they ask a
//! [`RangeRead`] for byte ranges, so the same code serves a local directory,
//! memory and, later, an object store (where a ranged GET is the unit of cost).

use std::collections::HashMap;
use std::fs::File;
use std::ops::Range;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use bytes::Bytes;

use crate::error::{Error, Result};

/// A directory of files read by byte range. Paths are relative and use `/`
/// (`index`, `chunks/000001`).
pub trait RangeRead: Send + Sync {
    /// The bytes `range` of `file`. A range past the end of the file is an
    /// error naming the file and the offset.
    fn read_range(&self, file: &str, range: Range<u64>) -> Result<Bytes>;

    /// The length of `file` in bytes.
    fn file_len(&self, file: &str) -> Result<u64>;

    /// Whether `file` exists (tombstones are optional).
    fn exists(&self, file: &str) -> Result<bool>;

    /// The names of the files directly inside `dir`, sorted.
    fn list(&self, dir: &str) -> Result<Vec<String>>;

    /// The bytes of each of `ranges` of `file`, in order. Where a request
    /// costs more than its bytes (an object store) an implementation
    /// fetches nearby ranges with one request; this default reads each.
    fn read_ranges(&self, file: &str, ranges: &[Range<u64>]) -> Result<Vec<Bytes>> {
        ranges
            .iter()
            .map(|range| self.read_range(file, range.clone()))
            .collect()
    }

    /// The whole of `file`.
    fn read_all(&self, file: &str) -> Result<Bytes> {
        let length = self.file_len(file)?;
        self.read_range(file, 0..length)
    }
}

/// Groups `positions` (byte offsets, in any order) into runs to fetch with
/// one ranged read each: the indices of `positions` by ascending offset,
/// each offset at most `gap` past the one before and `limit` past the run's
/// first. Nearby small reads cost more apart (a request each) than together.
pub(crate) fn nearby_runs(positions: &[u64], gap: u64, limit: u64) -> Vec<Vec<usize>> {
    let mut order: Vec<usize> = (0..positions.len()).collect();
    order.sort_by_key(|index| positions[*index]);
    let mut runs: Vec<Vec<usize>> = Vec::new();
    for index in order {
        let position = positions[index];
        match runs.last_mut() {
            Some(run)
                if position - positions[run[run.len() - 1]] <= gap
                    && position - positions[run[0]] <= limit =>
            {
                run.push(index)
            }
            _ => runs.push(vec![index]),
        }
    }
    runs
}

/// `found`, with what the runs of a batched read left out (an item longer
/// than its read) read alone by `one`.
pub(crate) fn or_alone<T, R: Copy>(
    found: Vec<Option<T>>,
    references: &[R],
    one: impl Fn(R) -> Result<T>,
) -> Result<Vec<T>> {
    found
        .into_iter()
        .zip(references)
        .map(|(item, reference)| match item {
            Some(item) => Ok(item),
            None => one(*reference),
        })
        .collect()
}

fn check_range(file: &str, range: &Range<u64>, length: u64) -> Result<()> {
    if range.start > range.end || range.end > length {
        return Err(Error::corrupt(
            file,
            range.start,
            format_args!(
                "read of {}..{} past the end of the file ({length} bytes)",
                range.start, range.end
            ),
        ));
    }
    Ok(())
}

/// A directory on the local file system. Open files are kept, since a query
/// reads many small ranges of the same few files.
pub struct LocalDir {
    root: PathBuf,
    open_files: Mutex<HashMap<String, Arc<File>>>,
}

impl LocalDir {
    pub fn new(root: impl Into<PathBuf>) -> LocalDir {
        LocalDir {
            root: root.into(),
            open_files: Mutex::new(HashMap::new()),
        }
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    fn open(&self, file: &str) -> Result<Arc<File>> {
        let mut open_files = self
            .open_files
            .lock()
            .unwrap_or_else(|poison| poison.into_inner());
        if let Some(handle) = open_files.get(file) {
            return Ok(handle.clone());
        }
        let handle = Arc::new(
            File::open(self.root.join(file)).map_err(|source| Error::io(file, "open", source))?,
        );
        open_files.insert(file.to_owned(), handle.clone());
        Ok(handle)
    }
}

impl RangeRead for LocalDir {
    fn read_range(&self, file: &str, range: Range<u64>) -> Result<Bytes> {
        let handle = self.open(file)?;
        let length = handle
            .metadata()
            .map_err(|source| Error::io(file, "stat", source))?
            .len();
        check_range(file, &range, length)?;
        let mut buffer = vec![0u8; (range.end - range.start) as usize];
        handle
            .read_exact_at(&mut buffer, range.start)
            .map_err(|source| Error::io(file, "read", source))?;
        Ok(Bytes::from(buffer))
    }

    fn file_len(&self, file: &str) -> Result<u64> {
        let handle = self.open(file)?;
        Ok(handle
            .metadata()
            .map_err(|source| Error::io(file, "stat", source))?
            .len())
    }

    fn exists(&self, file: &str) -> Result<bool> {
        self.root
            .join(file)
            .try_exists()
            .map_err(|source| Error::io(file, "stat", source))
    }

    fn list(&self, dir: &str) -> Result<Vec<String>> {
        let entries = std::fs::read_dir(self.root.join(dir))
            .map_err(|source| Error::io(dir, "list", source))?;
        let mut names = Vec::new();
        for entry in entries {
            let entry = entry.map_err(|source| Error::io(dir, "list", source))?;
            if let Some(name) = entry.file_name().to_str() {
                names.push(name.to_owned());
            }
        }
        names.sort();
        Ok(names)
    }
}

/// Files held in memory: for tests, and for blocks small enough to fetch whole.
#[derive(Default, Clone)]
pub struct MemDir {
    files: HashMap<String, Bytes>,
}

impl MemDir {
    pub fn new() -> MemDir {
        MemDir::default()
    }

    pub fn insert(&mut self, file: impl Into<String>, bytes: impl Into<Bytes>) {
        self.files.insert(file.into(), bytes.into());
    }

    fn get(&self, file: &str) -> Result<&Bytes> {
        self.files.get(file).ok_or_else(|| {
            Error::io(
                file,
                "open",
                std::io::Error::from(std::io::ErrorKind::NotFound),
            )
        })
    }
}

impl RangeRead for MemDir {
    fn read_range(&self, file: &str, range: Range<u64>) -> Result<Bytes> {
        let bytes = self.get(file)?;
        check_range(file, &range, bytes.len() as u64)?;
        Ok(bytes.slice(range.start as usize..range.end as usize))
    }

    fn file_len(&self, file: &str) -> Result<u64> {
        Ok(self.get(file)?.len() as u64)
    }

    fn exists(&self, file: &str) -> Result<bool> {
        let prefix = format!("{file}/");
        Ok(
            self.files.contains_key(file)
                || self.files.keys().any(|name| name.starts_with(&prefix)),
        )
    }

    fn list(&self, dir: &str) -> Result<Vec<String>> {
        let prefix = format!("{dir}/");
        let mut names: Vec<String> = self
            .files
            .keys()
            .filter_map(|name| name.strip_prefix(&prefix))
            .filter(|rest| !rest.contains('/'))
            .map(str::to_owned)
            .collect();
        names.sort();
        Ok(names)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_range_past_the_end_names_file_and_offset() {
        let mut dir = MemDir::new();
        dir.insert("index", vec![0u8; 10]);
        let error = dir.read_range("index", 8..12).unwrap_err().to_string();
        assert_eq!(
            error,
            "index: corrupt at byte 8: read of 8..12 past the end of the file (10 bytes)"
        );
        assert_eq!(dir.read_range("index", 2..4).unwrap().len(), 2);
    }

    #[test]
    fn nearby_positions_share_a_run() {
        let positions = [500, 0, 90, 100, 10, 400, 1000];
        assert_eq!(
            nearby_runs(&positions, 100, 400),
            vec![vec![1, 4, 2, 3], vec![5, 0], vec![6]]
        );
        assert!(nearby_runs(&[], 1, 1).is_empty());
    }

    #[test]
    fn mem_dir_lists_one_level() {
        let mut dir = MemDir::new();
        dir.insert("chunks/000002", vec![]);
        dir.insert("chunks/000001", vec![]);
        dir.insert("index", vec![]);
        assert_eq!(dir.list("chunks").unwrap(), vec!["000001", "000002"]);
    }
}
