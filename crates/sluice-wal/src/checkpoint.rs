//! Checkpoints: once the head's oldest samples are in a block, the segments
//! that hold them are replaced by one file, `checkpoint.NNNNNNNN`, holding
//! what of them is still needed (series definitions, samples not yet in a
//! block), framed as a segment is. Replay reads the newest checkpoint, then
//! the segments numbered after it. A checkpoint is written under a
//! temporary name, fsynced and renamed, so a crash leaves the old state or
//! the new one; segments it replaces are removed only after.

use std::fs::File;
use std::io::Write as _;
use std::path::Path;

use crate::{Wal, WalError, frames, io_error, segment_name, segments};

const PREFIX: &str = "checkpoint.";

/// The numbers of the checkpoints in `dir`, in order.
pub(crate) fn checkpoints(dir: &Path) -> Result<Vec<u64>, WalError> {
    let mut found = Vec::new();
    for entry in std::fs::read_dir(dir).map_err(io_error(dir, "list"))? {
        let entry = entry.map_err(io_error(dir, "list"))?;
        let name = entry.file_name();
        let number = name
            .to_str()
            .and_then(|name| name.strip_prefix(PREFIX))
            .filter(|number| number.len() == 8)
            .and_then(|number| number.parse::<u64>().ok());
        found.extend(number);
    }
    found.sort_unstable();
    Ok(found)
}

pub(crate) fn checkpoint_name(last_segment: u64) -> String {
    format!("{PREFIX}{last_segment:08}")
}

/// The intact records of a checkpoint file, and whether it was damaged.
pub(crate) fn read(dir: &Path, number: u64) -> Result<(Vec<Vec<u8>>, bool), WalError> {
    let path = dir.join(checkpoint_name(number));
    let bytes = std::fs::read(&path).map_err(io_error(&path, "read"))?;
    let (records, good) = frames(&bytes);
    Ok((
        records.into_iter().map(<[u8]>::to_vec).collect(),
        good < bytes.len(),
    ))
}

impl Wal {
    /// Every record the log holds from before segment `first_kept`: the
    /// newest checkpoint's, then those of the segments after it and before
    /// `first_kept`.
    pub fn read_before(
        &self,
        first_kept: u64,
        mut each: impl FnMut(&[u8]),
    ) -> Result<(), WalError> {
        let dir = &self.options.dir;
        let latest = checkpoints(dir)?.last().copied();
        if let Some(number) = latest {
            read(dir, number)?.0.iter().for_each(|record| each(record));
        }
        for index in segments(dir)? {
            if index >= first_kept || latest.is_some_and(|number| index <= number) {
                continue;
            }
            let path = dir.join(segment_name(index));
            let bytes = std::fs::read(&path).map_err(io_error(&path, "read"))?;
            frames(&bytes).0.into_iter().for_each(&mut each);
        }
        Ok(())
    }

    /// Replaces everything before segment `first_kept` by a checkpoint of
    /// `records`, then removes the segments and older checkpoints it replaces.
    pub fn checkpoint(&self, first_kept: u64, records: &[Vec<u8>]) -> Result<(), WalError> {
        let dir = &self.options.dir;
        let number = first_kept.saturating_sub(1);
        let path = dir.join(checkpoint_name(number));
        let temporary = dir.join(format!("{}.tmp", checkpoint_name(number)));
        let mut file = File::create(&temporary).map_err(io_error(&temporary, "create"))?;
        for record in records.iter().filter(|record| !record.is_empty()) {
            file.write_all(&crate::frame(record))
                .map_err(io_error(&temporary, "write"))?;
        }
        file.sync_all().map_err(io_error(&temporary, "fsync"))?;
        std::fs::rename(&temporary, &path).map_err(io_error(&path, "rename"))?;
        if let Ok(directory) = File::open(dir) {
            let _ = directory.sync_all();
        }
        for older in checkpoints(dir)?
            .into_iter()
            .filter(|older| *older < number)
        {
            let older = dir.join(checkpoint_name(older));
            std::fs::remove_file(&older).map_err(io_error(&older, "remove"))?;
        }
        self.truncate_before(first_kept).map(|_| ())
    }
}
