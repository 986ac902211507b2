//! Which object store the blocks live in, with Mimir's flag names
//! (`-blocks-storage.backend`, `-blocks-storage.filesystem.dir`,
//! `-blocks-storage.s3.*`), and opening it.

use std::path::PathBuf;
use std::str::FromStr;
use std::sync::Arc;
#[cfg(feature = "s3")]
use std::time::Duration;

use object_store::ObjectStore;
use object_store::local::LocalFileSystem;

use crate::{BucketError, Result};

/// `-blocks-storage.backend`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Backend {
    #[default]
    Filesystem,
    S3,
}

impl FromStr for Backend {
    type Err = String;

    fn from_str(text: &str) -> Result<Backend, String> {
        match text {
            "filesystem" => Ok(Backend::Filesystem),
            "s3" => Ok(Backend::S3),
            other => Err(format!(
                "unknown blocks storage backend {other:?} (want filesystem or s3)"
            )),
        }
    }
}

/// `-blocks-storage.s3.*`. An empty endpoint means AWS itself; empty keys
/// mean the standard AWS environment variables and instance credentials.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct S3Config {
    /// `host[:port]`, without a scheme, as Mimir takes it.
    pub endpoint: String,
    pub bucket_name: String,
    pub access_key_id: String,
    pub secret_access_key: String,
    pub region: String,
    /// Plain HTTP instead of HTTPS.
    pub insecure: bool,
}

/// Where the blocks are.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BucketConfig {
    pub backend: Backend,
    /// `-blocks-storage.filesystem.dir`.
    pub filesystem_dir: PathBuf,
    pub s3: S3Config,
}

impl Default for BucketConfig {
    fn default() -> BucketConfig {
        BucketConfig {
            backend: Backend::Filesystem,
            // Mimir's default; sluice's binary overrides it with its data dir.
            filesystem_dir: PathBuf::from("blocks"),
            s3: S3Config::default(),
        }
    }
}

impl BucketConfig {
    /// An S3-compatible store reached over plain HTTP with static keys
    /// (MinIO, Ceph or moto in a cluster or a test), region `us-east-1`.
    pub fn s3_plain_http(
        endpoint: impl Into<String>,
        bucket_name: impl Into<String>,
        access_key_id: impl Into<String>,
        secret_access_key: impl Into<String>,
    ) -> BucketConfig {
        BucketConfig {
            backend: Backend::S3,
            s3: S3Config {
                endpoint: endpoint.into(),
                bucket_name: bucket_name.into(),
                access_key_id: access_key_id.into(),
                secret_access_key: secret_access_key.into(),
                region: "us-east-1".into(),
                insecure: true,
            },
            ..BucketConfig::default()
        }
    }
}

/// The object store `config` names, and a name for it in errors.
pub(crate) fn open_store(config: &BucketConfig) -> Result<(Arc<dyn ObjectStore>, String)> {
    match config.backend {
        Backend::Filesystem => open_filesystem(&config.filesystem_dir),
        Backend::S3 => open_s3(&config.s3),
    }
}

fn open_failure(name: &str, source: object_store::Error) -> BucketError {
    BucketError::Store {
        bucket: name.to_owned(),
        op: "open",
        key: String::new(),
        source: Box::new(source),
    }
}

fn open_filesystem(dir: &std::path::Path) -> Result<(Arc<dyn ObjectStore>, String)> {
    let name = dir.display().to_string();
    // The default data directory may not exist yet; an existing one (a
    // Prometheus data directory) is left as it is.
    std::fs::create_dir_all(dir).map_err(|source| BucketError::Local {
        path: name.clone(),
        source,
    })?;
    let store =
        LocalFileSystem::new_with_prefix(dir).map_err(|source| open_failure(&name, source))?;
    Ok((Arc::new(store), name))
}

#[cfg(feature = "s3")]
fn open_s3(config: &S3Config) -> Result<(Arc<dyn ObjectStore>, String)> {
    use object_store::aws::AmazonS3Builder;

    if config.bucket_name.is_empty() {
        return Err(BucketError::Config(
            "-blocks-storage.s3.bucket-name is required with -blocks-storage.backend=s3".into(),
        ));
    }
    if !config.insecure && !cfg!(feature = "s3-tls") {
        return Err(BucketError::Config(
            "this build reaches S3 over plain HTTP only (no C crypto): set \
             -blocks-storage.s3.insecure=true, or build with the s3-tls feature for HTTPS"
                .into(),
        ));
    }
    let name = format!("s3://{}", config.bucket_name);
    let mut builder = AmazonS3Builder::from_env()
        .with_retry(retries())
        .with_bucket_name(&config.bucket_name)
        .with_allow_http(config.insecure)
        .with_crypto_provider(Arc::new(crate::crypto::RustCrypto));
    #[cfg(not(feature = "s3-tls"))]
    {
        builder = builder.with_http_connector(crate::http::PlainHttpConnector::default());
    }
    if !config.region.is_empty() {
        builder = builder.with_region(&config.region);
    }
    if !config.endpoint.is_empty() {
        let scheme = if config.insecure { "http" } else { "https" };
        builder = builder.with_endpoint(format!("{scheme}://{}", config.endpoint));
    }
    if !config.access_key_id.is_empty() {
        builder = builder
            .with_access_key_id(&config.access_key_id)
            .with_secret_access_key(&config.secret_access_key);
    }
    let store = builder
        .build()
        .map_err(|source| open_failure(&name, source))?;
    Ok((Arc::new(store), name))
}

/// A few quick retries: a query waits on every read, so a store that is
/// down must fail it in seconds (object_store's default retries for up to
/// three minutes, longer than the query timeout).
#[cfg(feature = "s3")]
fn retries() -> object_store::RetryConfig {
    object_store::RetryConfig {
        backoff: object_store::BackoffConfig {
            init_backoff: Duration::from_millis(100),
            max_backoff: Duration::from_secs(2),
            base: 2.0,
        },
        max_retries: 3,
        retry_timeout: Duration::from_secs(20),
    }
}

#[cfg(not(feature = "s3"))]
fn open_s3(_config: &S3Config) -> Result<(Arc<dyn ObjectStore>, String)> {
    Err(BucketError::Config(
        "this build has no S3 support (sluice-bucket's s3 feature is off)".into(),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backends_parse_by_mimir_name() {
        assert_eq!("filesystem".parse(), Ok(Backend::Filesystem));
        assert_eq!("s3".parse(), Ok(Backend::S3));
        assert!("gcs".parse::<Backend>().unwrap_err().contains("gcs"));
    }

    #[test]
    fn s3_without_a_bucket_name_is_refused() {
        let config = BucketConfig {
            backend: Backend::S3,
            ..BucketConfig::default()
        };
        let error = open_store(&config).err().unwrap().to_string();
        assert!(error.contains("s3"), "{error}");
    }
}
