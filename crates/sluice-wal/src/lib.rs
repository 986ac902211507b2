//! The store's write-ahead log: every accepted write is a record here before
//! its sender hears "OK", and the head is rebuilt from the records on start.
//!
//! Records live in numbered segment files (`00000001`, `00000002`, ... under
//! the WAL directory), each record framed as a 4-byte little-endian length,
//! a CRC32C of the payload and the payload ([`Entry`] is what the store
//! writes). A segment is closed at `segment_size` bytes and fsynced then.
//!
//! **Durability** ([`SyncPolicy`]): a record is written with `write(2)`
//! before the write is acknowledged, so a process killed at any moment
//! (SIGKILL, OOM, a panic) loses no acknowledged sample: the kernel holds
//! the bytes. A power loss or kernel crash can lose what the kernel had not
//! yet written back: with [`SyncPolicy::Never`] (Prometheus's behaviour)
//! up to the last ~30 s (Linux's default `dirty_expire_centisecs`); with
//! [`SyncPolicy::Always`] nothing acknowledged, at the cost of an fsync per
//! write, shared by the writes that arrive while one runs (group commit).
//!
//! **Damage**: replay stops at the first record whose frame is cut short or
//! whose CRC does not match (a torn write at a crash, a bad disk sector).
//! That segment is cut there and any later segments removed, with a warning
//! and [`Replay::corruptions`] counted; start-up never fails over it.

mod checkpoint;
mod record;

use std::fs::{File, OpenOptions};
use std::io::{self, Write as _};
use std::path::{Path, PathBuf};
use std::sync::Mutex;

pub use record::Entry;

/// Why the WAL failed.
#[derive(Debug, thiserror::Error)]
pub enum WalError {
    #[error("wal {path}: {operation}: {source}")]
    Io {
        path: String,
        operation: &'static str,
        source: io::Error,
    },
    #[error("wal record at byte {offset}: {reason}")]
    Record { offset: usize, reason: String },
    #[error("wal record of {0} bytes is larger than a segment")]
    TooLarge(usize),
}

fn io_error(path: &Path, operation: &'static str) -> impl FnOnce(io::Error) -> WalError {
    let path = path.display().to_string();
    move |source| WalError::Io {
        path,
        operation,
        source,
    }
}

/// When the WAL asks the kernel to put records on the disk.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SyncPolicy {
    /// At segment boundaries only; see the crate documentation for the cost.
    Never,
    /// Before every acknowledgement (group-committed).
    Always,
}

/// Where the WAL is and how it writes.
#[derive(Clone, Debug)]
pub struct WalOptions {
    pub dir: PathBuf,
    pub segment_size: u64,
    pub sync: SyncPolicy,
}

impl WalOptions {
    /// 128 MiB segments, as Prometheus's.
    pub fn new(dir: impl Into<PathBuf>, sync: SyncPolicy) -> WalOptions {
        WalOptions {
            dir: dir.into(),
            segment_size: 128 << 20,
            sync,
        }
    }
}

/// What replay found.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Replay {
    pub segments: usize,
    pub records: u64,
    pub bytes: u64,
    /// Places where a damaged tail was cut (0 or 1).
    pub corruptions: u64,
    /// Bytes dropped by cutting, later segments included.
    pub dropped_bytes: u64,
}

const HEADER: usize = 8;

struct Writer {
    file: File,
    segment: u64,
    offset: u64,
    /// Records written so far, this process.
    written: u64,
}

/// The open log.
pub struct Wal {
    options: WalOptions,
    writer: Mutex<Writer>,
    /// Records known to be on disk; fsyncs are serialized by this lock.
    synced: Mutex<u64>,
}

pub fn segment_name(index: u64) -> String {
    format!("{index:08}")
}

/// The numbered segments in `dir`, in order.
fn segments(dir: &Path) -> Result<Vec<u64>, WalError> {
    let mut found = Vec::new();
    for entry in std::fs::read_dir(dir).map_err(io_error(dir, "list"))? {
        let entry = entry.map_err(io_error(dir, "list"))?;
        let name = entry.file_name();
        let Some(name) = name.to_str() else { continue };
        if name.len() == 8
            && let Ok(index) = name.parse::<u64>()
        {
            found.push(index);
        }
    }
    found.sort_unstable();
    Ok(found)
}

/// A record as written: length, CRC32C, payload.
pub(crate) fn frame(payload: &[u8]) -> Vec<u8> {
    let mut frame = Vec::with_capacity(HEADER + payload.len());
    frame.extend_from_slice(&(payload.len() as u32).to_le_bytes());
    frame.extend_from_slice(&sluice_block::crc32c(payload).to_le_bytes());
    frame.extend_from_slice(payload);
    frame
}

/// Frames in `bytes`: the payloads of whole, intact records, and the offset
/// where the first damaged one starts (or the length when none is).
fn frames(bytes: &[u8]) -> (Vec<&[u8]>, usize) {
    let mut records = Vec::new();
    let mut offset = 0;
    while bytes.len() - offset >= HEADER {
        let length = u32::from_le_bytes(bytes[offset..offset + 4].try_into().unwrap_or_default());
        let crc = u32::from_le_bytes(bytes[offset + 4..offset + 8].try_into().unwrap_or_default());
        let start = offset + HEADER;
        let Some(end) = start
            .checked_add(length as usize)
            .filter(|end| *end <= bytes.len())
        else {
            return (records, offset);
        };
        let payload = &bytes[start..end];
        if length == 0 || sluice_block::crc32c(payload) != crc {
            return (records, offset);
        }
        records.push(payload);
        offset = end;
    }
    (records, offset)
}

impl Wal {
    /// Opens the WAL in `options.dir` (created if missing), handing every
    /// intact record to `apply` in order, then cutting any damaged tail.
    pub fn open(
        options: WalOptions,
        mut apply: impl FnMut(&[u8]),
    ) -> Result<(Wal, Replay), WalError> {
        std::fs::create_dir_all(&options.dir).map_err(io_error(&options.dir, "create"))?;
        let mut replay = Replay::default();
        let latest = checkpoint::checkpoints(&options.dir)?.last().copied();
        if let Some(number) = latest {
            let (records, damaged) = checkpoint::read(&options.dir, number)?;
            replay.records += records.len() as u64;
            records.iter().for_each(|record| apply(record));
            if damaged {
                tracing::warn!(
                    checkpoint = number,
                    "wal: damaged checkpoint read up to its last good record"
                );
                replay.corruptions += 1;
            }
        }
        // Segments a checkpoint replaced but a crash left behind.
        let found: Vec<u64> = segments(&options.dir)?
            .into_iter()
            .filter(|index| latest.is_none_or(|number| *index > number))
            .collect();
        let mut last = found
            .last()
            .copied()
            .unwrap_or_else(|| latest.map_or(1, |number| number + 1));
        for (position, index) in found.iter().enumerate() {
            let path = options.dir.join(segment_name(*index));
            let bytes = std::fs::read(&path).map_err(io_error(&path, "read"))?;
            let (records, good) = frames(&bytes);
            replay.segments += 1;
            replay.records += records.len() as u64;
            replay.bytes += good as u64;
            records.into_iter().for_each(&mut apply);
            if good < bytes.len() {
                let later = &found[position + 1..];
                replay.dropped_bytes += cut(&options.dir, *index, good, &bytes, later)?;
                replay.corruptions += 1;
                last = *index;
                break;
            }
        }
        let path = options.dir.join(segment_name(last));
        let file = OpenOptions::new()
            .create(true)
            .append(true)
            .open(&path)
            .map_err(io_error(&path, "open"))?;
        let offset = file.metadata().map_err(io_error(&path, "stat"))?.len();
        let writer = Writer {
            file,
            segment: last,
            offset,
            written: 0,
        };
        let wal = Wal {
            options,
            writer: Mutex::new(writer),
            synced: Mutex::new(0),
        };
        Ok((wal, replay))
    }

    /// Appends one record and, with [`SyncPolicy::Always`], waits until it
    /// is on disk. When this returns Ok the record survives a crash of the
    /// process (and, with `Always`, of the machine).
    pub fn append(&self, payload: &[u8]) -> Result<(), WalError> {
        let sequence = self.write(payload)?;
        self.commit(sequence)
    }

    /// Writes one record and returns its sequence number for [`Wal::commit`].
    /// Callers that write under a lock of their own commit after releasing
    /// it, so that the fsyncs of concurrent writers can be shared.
    pub fn write(&self, payload: &[u8]) -> Result<u64, WalError> {
        let framed_length = (HEADER + payload.len()) as u64;
        if payload.is_empty() || framed_length > self.options.segment_size {
            return Err(WalError::TooLarge(payload.len()));
        }
        let frame = frame(payload);
        let mut writer = self
            .writer
            .lock()
            .unwrap_or_else(|poison| poison.into_inner());
        if writer.offset > 0 && writer.offset + framed_length > self.options.segment_size {
            self.next_segment(&mut writer)?;
        }
        let path = self.options.dir.join(segment_name(writer.segment));
        if let Err(error) = writer.file.write_all(&frame) {
            // A partial frame would hide every later record from replay:
            // cut it off so the segment ends at the last whole record.
            let _ = writer.file.set_len(writer.offset);
            return Err(io_error(&path, "write")(error));
        }
        writer.offset += framed_length;
        writer.written += 1;
        Ok(writer.written)
    }

    /// Closes the current segment (fsynced) and starts the next.
    fn next_segment(&self, writer: &mut Writer) -> Result<(), WalError> {
        let old = self.options.dir.join(segment_name(writer.segment));
        writer.file.sync_data().map_err(io_error(&old, "fsync"))?;
        let next = writer.segment + 1;
        let path = self.options.dir.join(segment_name(next));
        writer.file = OpenOptions::new()
            .create(true)
            .append(true)
            .open(&path)
            .map_err(io_error(&path, "create"))?;
        writer.segment = next;
        writer.offset = 0;
        Ok(())
    }

    /// Returns once the record `sequence` is as durable as the policy asks.
    pub fn commit(&self, sequence: u64) -> Result<(), WalError> {
        match self.options.sync {
            SyncPolicy::Always => self.sync_through(sequence),
            SyncPolicy::Never => Ok(()),
        }
    }

    /// Group commit: one fsync covers every record written before it began,
    /// so writers that queue behind a running fsync usually find their
    /// record already synced.
    fn sync_through(&self, sequence: u64) -> Result<(), WalError> {
        let mut synced = self
            .synced
            .lock()
            .unwrap_or_else(|poison| poison.into_inner());
        if *synced >= sequence {
            return Ok(());
        }
        let (file, written, segment) = {
            let writer = self
                .writer
                .lock()
                .unwrap_or_else(|poison| poison.into_inner());
            let path = self.options.dir.join(segment_name(writer.segment));
            let file = writer.file.try_clone().map_err(io_error(&path, "dup"))?;
            (file, writer.written, writer.segment)
        };
        let path = self.options.dir.join(segment_name(segment));
        file.sync_data().map_err(io_error(&path, "fsync"))?;
        *synced = written;
        Ok(())
    }

    /// Starts a new segment now and returns its number: records written
    /// after this call are in it or later ones.
    pub fn cut(&self) -> Result<u64, WalError> {
        let mut writer = self
            .writer
            .lock()
            .unwrap_or_else(|poison| poison.into_inner());
        if writer.offset > 0 {
            self.next_segment(&mut writer)?;
        }
        Ok(writer.segment)
    }

    /// Removes every segment numbered below `first_kept`; returns how many.
    pub fn truncate_before(&self, first_kept: u64) -> Result<usize, WalError> {
        let mut removed = 0;
        for index in segments(&self.options.dir)? {
            if index < first_kept {
                let path = self.options.dir.join(segment_name(index));
                std::fs::remove_file(&path).map_err(io_error(&path, "remove"))?;
                removed += 1;
            }
        }
        Ok(removed)
    }

    pub fn dir(&self) -> &Path {
        &self.options.dir
    }
}

/// Cuts segment `index` at `good` bytes and removes the `later` segments;
/// returns the bytes dropped.
fn cut(dir: &Path, index: u64, good: usize, bytes: &[u8], later: &[u64]) -> Result<u64, WalError> {
    let path = dir.join(segment_name(index));
    let mut dropped = (bytes.len() - good) as u64;
    let file = OpenOptions::new()
        .write(true)
        .open(&path)
        .map_err(io_error(&path, "open"))?;
    file.set_len(good as u64)
        .map_err(io_error(&path, "truncate"))?;
    file.sync_all().map_err(io_error(&path, "fsync"))?;
    for later_index in later {
        let later_path = dir.join(segment_name(*later_index));
        dropped += std::fs::metadata(&later_path)
            .map(|meta| meta.len())
            .unwrap_or(0);
        std::fs::remove_file(&later_path).map_err(io_error(&later_path, "remove"))?;
    }
    tracing::warn!(
        segment = %path.display(),
        offset = good,
        dropped_bytes = dropped,
        removed_segments = later.len(),
        "wal: damaged tail cut at the last good record"
    );
    Ok(dropped)
}

#[cfg(test)]
mod tests;
