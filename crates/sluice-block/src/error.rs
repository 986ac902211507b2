//! The one error type of the crate. Every message names the file and, where
//! bytes were at fault, the byte offset in that file, so a corrupt block can be
//! located with `xxd -s OFFSET` without a debugger.

use std::fmt;

/// What can go wrong reading or writing a block.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The bytes at `offset` of `file` are not what the format allows.
    #[error("{file}: corrupt at byte {offset}: {reason}")]
    Corrupt {
        file: String,
        offset: u64,
        reason: String,
    },
    /// A CRC32 (Castagnoli) over a section did not match the stored one.
    #[error(
        "{file}: checksum mismatch for bytes {start}..{end}: stored {stored:#010x}, computed {computed:#010x}"
    )]
    Checksum {
        file: String,
        start: u64,
        end: u64,
        stored: u32,
        computed: u32,
    },
    /// A chunk holds samples this crate does not decode (histograms).
    #[error("{file}: chunk at byte {offset} is {encoding}, not float samples")]
    NotFloat {
        file: String,
        offset: u64,
        encoding: crate::chunkenc::Encoding,
    },
    /// The file system or object store failed.
    #[error("{file}: {op}: {source}")]
    Io {
        file: String,
        op: &'static str,
        source: std::io::Error,
    },
    /// `meta.json` did not parse or could not be encoded.
    #[error("{file}: {source}")]
    Json {
        file: String,
        source: serde_json::Error,
    },
    /// A label matcher could not be built (a regular expression that does not compile).
    #[error("invalid matcher {matcher}: {reason}")]
    Matcher { matcher: String, reason: String },
    /// The caller asked the writer for something the format cannot hold
    /// (unsorted samples, duplicate series, too many symbols).
    #[error("invalid input: {0}")]
    InvalidInput(String),
}

/// The crate's result type.
pub type Result<T, E = Error> = std::result::Result<T, E>;

impl Error {
    /// A corruption error; `reason` is formatted only when the error happens.
    pub(crate) fn corrupt(file: &str, offset: u64, reason: impl fmt::Display) -> Error {
        Error::Corrupt {
            file: file.to_owned(),
            offset,
            reason: reason.to_string(),
        }
    }

    pub(crate) fn io(file: &str, op: &'static str, source: std::io::Error) -> Error {
        Error::Io {
            file: file.to_owned(),
            op,
            source,
        }
    }
}
