//! The bucket's error: every message names the bucket and the object.

/// What can go wrong talking to the bucket.
#[derive(Debug, thiserror::Error)]
pub enum BucketError {
    /// The object store refused or failed a request.
    #[error("bucket {bucket}: {op} {key:?}: {source}")]
    Store {
        bucket: String,
        op: &'static str,
        key: String,
        /// Boxed: object_store's error is large, and errors are the rare path.
        source: Box<object_store::Error>,
    },
    /// The runtime that drives the bucket's requests has shut down.
    #[error("bucket {bucket}: {key:?}: the runtime serving the bucket has shut down")]
    RuntimeGone { bucket: String, key: String },
    /// An object holds something other than what its name promises.
    #[error("bucket {bucket}: {key:?}: {reason}")]
    Invalid {
        bucket: String,
        key: String,
        reason: String,
    },
    /// A local file to upload could not be read.
    #[error("{path}: {source}")]
    Local {
        path: String,
        source: std::io::Error,
    },
    /// The configuration does not describe a usable bucket.
    #[error("blocks storage: {0}")]
    Config(String),
}
