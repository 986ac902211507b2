//! How the `prometheus` executor reaches its downstream beyond the URL: TLS,
//! credentials and extra headers.
//!
//! Credentials are secrets: they are kept out of `Debug`, error messages
//! and logs, their header values are marked sensitive (HTTP/2 never
//! indexes them), and files holding them are read again when they change,
//! so a rotated token is used without a restart.

use std::sync::Mutex;
use std::time::{Duration, Instant, SystemTime};

use base64::Engine as _;
use hyper::header::{HeaderName, HeaderValue};

/// Everything about the downstream connection but its URL.
#[derive(Clone, Default)]
pub struct DownstreamOptions {
    /// For `https://` URLs: a CA file (else the system's roots), an
    /// optional client certificate, the server name, or no verification.
    pub tls: sluice_tls::ClientTls,
    pub basic_auth_username: String,
    pub basic_auth_password: String,
    pub basic_auth_password_file: String,
    pub bearer_token_file: String,
    /// Sent with every request, e.g. an API key header.
    pub headers: Vec<(String, String)>,
}

impl std::fmt::Debug for DownstreamOptions {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Names and paths only: values may be secrets.
        formatter
            .debug_struct("DownstreamOptions")
            .field("tls", &self.tls)
            .field("basic_auth_username", &self.basic_auth_username)
            .field("basic_auth_password", &"<redacted>")
            .field("basic_auth_password_file", &self.basic_auth_password_file)
            .field("bearer_token_file", &self.bearer_token_file)
            .field(
                "headers",
                &self
                    .headers
                    .iter()
                    .map(|(name, _)| name)
                    .collect::<Vec<_>>(),
            )
            .finish()
    }
}

/// Files are checked for changes at most this often.
const RELOAD_CHECK: Duration = Duration::from_secs(1);

/// A credential read from a file, as the `Authorization` value it makes.
pub(crate) struct SecretFile {
    path: String,
    render: fn(&str, &str) -> String,
    /// The user name for basic auth; empty for a bearer token.
    username: String,
    state: Mutex<FileState>,
}

struct FileState {
    checked: Instant,
    modified: Option<SystemTime>,
    value: HeaderValue,
}

impl SecretFile {
    fn open(
        path: &str,
        username: &str,
        render: fn(&str, &str) -> String,
    ) -> Result<SecretFile, String> {
        let (modified, value) = read_secret(path, username, render)?;
        Ok(SecretFile {
            path: path.to_owned(),
            render,
            username: username.to_owned(),
            state: Mutex::new(FileState {
                checked: Instant::now(),
                modified,
                value,
            }),
        })
    }

    /// The current value: the file is read again when its modification
    /// time changed; if it cannot be read, the last good value stays.
    fn value(&self) -> HeaderValue {
        let mut state = self
            .state
            .lock()
            .unwrap_or_else(|poison| poison.into_inner());
        if state.checked.elapsed() >= RELOAD_CHECK {
            state.checked = Instant::now();
            let modified = std::fs::metadata(&self.path)
                .and_then(|metadata| metadata.modified())
                .ok();
            if modified != state.modified {
                match read_secret(&self.path, &self.username, self.render) {
                    Ok((modified, value)) => {
                        state.modified = modified;
                        state.value = value;
                        tracing::info!(path = %self.path, "downstream credential file reloaded");
                    }
                    Err(error) => {
                        tracing::warn!(%error, "keeping the previous downstream credential")
                    }
                }
            }
        }
        state.value.clone()
    }
}

fn read_secret(
    path: &str,
    username: &str,
    render: fn(&str, &str) -> String,
) -> Result<(Option<SystemTime>, HeaderValue), String> {
    let metadata = std::fs::metadata(path)
        .map_err(|error| format!("reading credential file {path}: {error}"))?;
    let text = std::fs::read_to_string(path)
        .map_err(|error| format!("reading credential file {path}: {error}"))?;
    let secret = text.trim_end_matches(['\r', '\n']);
    if secret.is_empty() {
        return Err(format!("credential file {path} is empty"));
    }
    // The message must not quote the secret.
    let value = sensitive(&render(username, secret))
        .map_err(|_| format!("credential file {path} holds characters a header cannot carry"))?;
    Ok((metadata.modified().ok(), value))
}

fn sensitive(text: &str) -> Result<HeaderValue, hyper::header::InvalidHeaderValue> {
    let mut value = HeaderValue::from_str(text)?;
    value.set_sensitive(true);
    Ok(value)
}

fn basic(username: &str, password: &str) -> String {
    let encoded =
        base64::engine::general_purpose::STANDARD.encode(format!("{username}:{password}"));
    format!("Basic {encoded}")
}

fn bearer(_: &str, token: &str) -> String {
    format!("Bearer {token}")
}

/// The `Authorization` header every downstream request carries, if any.
pub(crate) enum Authorization {
    None,
    Fixed(HeaderValue),
    File(SecretFile),
}

impl Authorization {
    pub(crate) fn from_options(options: &DownstreamOptions) -> Result<Authorization, String> {
        let username = &options.basic_auth_username;
        let password_given =
            !options.basic_auth_password.is_empty() || !options.basic_auth_password_file.is_empty();
        let bearer_given = !options.bearer_token_file.is_empty();
        if bearer_given && (password_given || !username.is_empty()) {
            return Err("give the downstream basic auth or a bearer token, not both".into());
        }
        if password_given && username.is_empty() {
            return Err("downstream basic auth needs a username".into());
        }
        if !options.basic_auth_password.is_empty() && !options.basic_auth_password_file.is_empty() {
            return Err("give the downstream basic auth password or its file, not both".into());
        }
        if bearer_given {
            return SecretFile::open(&options.bearer_token_file, "", bearer)
                .map(Authorization::File);
        }
        if !options.basic_auth_password_file.is_empty() {
            return SecretFile::open(&options.basic_auth_password_file, username, basic)
                .map(Authorization::File);
        }
        if username.is_empty() {
            return Ok(Authorization::None);
        }
        sensitive(&basic(username, &options.basic_auth_password))
            .map(Authorization::Fixed)
            .map_err(|_| "the downstream basic auth username or password holds characters a header cannot carry".to_owned())
    }

    pub(crate) fn value(&self) -> Option<HeaderValue> {
        match self {
            Authorization::None => None,
            Authorization::Fixed(value) => Some(value.clone()),
            Authorization::File(file) => Some(file.value()),
        }
    }
}

/// The extra headers, parsed once and marked sensitive (they may be keys).
pub(crate) fn static_headers(
    headers: &[(String, String)],
) -> Result<Vec<(HeaderName, HeaderValue)>, String> {
    headers
        .iter()
        .map(|(name, value)| {
            let parsed_name = HeaderName::from_bytes(name.trim().as_bytes())
                .map_err(|_| format!("invalid downstream header name {name:?}"))?;
            let parsed_value = sensitive(value.trim()).map_err(|_| {
                format!("the value of downstream header {name} is not a valid header value")
            })?;
            Ok((parsed_name, parsed_value))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn options() -> DownstreamOptions {
        DownstreamOptions::default()
    }

    #[test]
    fn basic_auth_is_base64_of_user_and_password_and_hidden_from_debug() {
        let mut given = options();
        given.basic_auth_username = "sluice".into();
        given.basic_auth_password = "s3cret-pass".into();
        let value = Authorization::from_options(&given)
            .unwrap()
            .value()
            .unwrap();
        assert_eq!(value.to_str().unwrap(), "Basic c2x1aWNlOnMzY3JldC1wYXNz");
        assert!(value.is_sensitive());
        let debug = format!("{given:?} {value:?}");
        assert!(
            !debug.contains("s3cret-pass") && !debug.contains("c2x1aWNl"),
            "{debug}"
        );
    }

    #[test]
    fn conflicting_or_incomplete_credentials_are_refused() {
        let mut both = options();
        both.basic_auth_username = "u".into();
        both.bearer_token_file = "/tmp/token".into();
        assert!(Authorization::from_options(&both).is_err());
        let mut no_user = options();
        no_user.basic_auth_password = "p".into();
        assert!(Authorization::from_options(&no_user).is_err());
        let missing = DownstreamOptions {
            bearer_token_file: "/nonexistent/token".into(),
            ..options()
        };
        let error = Authorization::from_options(&missing).err().unwrap();
        assert!(error.contains("/nonexistent/token"), "{error}");
    }

    #[test]
    fn a_rotated_token_file_is_read_again_and_a_broken_one_keeps_the_last() {
        let dir = std::env::temp_dir().join(format!("sluice-token-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("token");
        std::fs::write(&path, "first-token\n").unwrap();
        let file = SecretFile::open(path.to_str().unwrap(), "", bearer).unwrap();
        assert_eq!(file.value().to_str().unwrap(), "Bearer first-token");
        std::fs::write(&path, "second-token").unwrap();
        // Backdate the last check and make the change visible by time.
        let later = SystemTime::now() + Duration::from_secs(5);
        std::fs::File::options()
            .write(true)
            .open(&path)
            .unwrap()
            .set_modified(later)
            .unwrap();
        file.state.lock().unwrap().checked = Instant::now() - RELOAD_CHECK;
        assert_eq!(file.value().to_str().unwrap(), "Bearer second-token");
        std::fs::write(&path, "").unwrap();
        std::fs::File::options()
            .write(true)
            .open(&path)
            .unwrap()
            .set_modified(later + Duration::from_secs(5))
            .unwrap();
        file.state.lock().unwrap().checked = Instant::now() - RELOAD_CHECK;
        assert_eq!(file.value().to_str().unwrap(), "Bearer second-token");
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn static_headers_are_checked_at_start() {
        let parsed = static_headers(&[("X-Api-Key".into(), " key ".into())]).unwrap();
        assert_eq!(parsed[0].0.as_str(), "x-api-key");
        assert_eq!(parsed[0].1.to_str().unwrap(), "key");
        assert!(static_headers(&[("bad name".into(), "v".into())]).is_err());
        let error = static_headers(&[("X-Key".into(), "line\nbreak".into())]).unwrap_err();
        assert!(!error.contains("line"), "{error}");
    }
}
