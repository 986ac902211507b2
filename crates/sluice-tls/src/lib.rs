//! TLS for sluice: the gRPC servers of frontends and schedulers (optionally
//! requiring client certificates, i.e. mutual TLS), every gRPC client between
//! roles, and the querier's HTTPS client to its downstream.
//!
//! Everything is rustls over graviola's provider: pure Rust and assembly, no
//! C compiler, so the default build carries no C-built crypto (ring and
//! aws-lc both build C). The rustls configurations are built here, from PEM
//! files named by flags, and handed to tonic and hyper as ready connectors
//! and accepted streams, so neither needs a TLS feature of its own.

mod grpc;
mod insecure;
mod pem;

use std::str::FromStr;
use std::sync::{Arc, OnceLock};

use rustls::crypto::CryptoProvider;
use rustls::server::WebPkiClientVerifier;

pub use grpc::{GrpcChannels, host_of, tls_incoming};

/// The one crypto provider sluice uses, shared by every configuration.
pub fn crypto_provider() -> Arc<CryptoProvider> {
    static PROVIDER: OnceLock<Arc<CryptoProvider>> = OnceLock::new();
    PROVIDER
        .get_or_init(|| Arc::new(rustls_graviola::default_provider()))
        .clone()
}

/// Fills `bytes` from the provider's secure random source.
pub fn fill_random(bytes: &mut [u8]) -> Result<(), String> {
    crypto_provider()
        .secure_random
        .fill(bytes)
        .map_err(|_| "the system's random source failed".to_owned())
}

/// How a client (a gRPC client between roles, or the downstream client)
/// speaks TLS. The flag families of Mimir's `tls-*` client settings.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ClientTls {
    pub enabled: bool,
    /// A client certificate to present (mutual TLS), with its key.
    pub cert_path: String,
    pub key_path: String,
    /// CA certificates the server's certificate must chain to; empty means
    /// the system's roots.
    pub ca_path: String,
    /// The name the server's certificate must carry; empty means the host
    /// of the address dialled.
    pub server_name: String,
    /// Accept any server certificate (testing only: it gives up on knowing
    /// who answers).
    pub insecure_skip_verify: bool,
}

impl ClientTls {
    /// The rustls configuration. It offers no ALPN protocols: the HTTP
    /// connector that uses it sets those for the versions it speaks.
    pub fn client_config(&self) -> Result<rustls::ClientConfig, String> {
        let builder = rustls::ClientConfig::builder_with_provider(crypto_provider())
            .with_safe_default_protocol_versions()
            .map_err(|error| format!("tls versions: {error}"))?;
        let builder = if self.insecure_skip_verify {
            builder
                .dangerous()
                .with_custom_certificate_verifier(insecure::AnyServerCertificate::new())
        } else {
            builder.with_root_certificates(self.roots()?)
        };
        let config = match (self.cert_path.is_empty(), self.key_path.is_empty()) {
            (true, true) => builder.with_no_client_auth(),
            (false, false) => builder
                .with_client_auth_cert(
                    pem::certificates(&self.cert_path)?,
                    pem::private_key(&self.key_path)?,
                )
                .map_err(|error| format!("client certificate {}: {error}", self.cert_path))?,
            _ => {
                return Err(
                    "a client certificate needs both tls-cert-path and tls-key-path".into(),
                );
            }
        };
        Ok(config)
    }

    fn roots(&self) -> Result<rustls::RootCertStore, String> {
        if !self.ca_path.is_empty() {
            return pem::root_store(&self.ca_path);
        }
        let mut roots = rustls::RootCertStore::empty();
        let found = rustls_native_certs::load_native_certs();
        for error in &found.errors {
            tracing::warn!(%error, "reading the system's CA certificates");
        }
        let (added, _ignored) = roots.add_parsable_certificates(found.certs);
        if added == 0 {
            return Err("no CA certificates found in the system's store; give tls-ca-path".into());
        }
        Ok(roots)
    }
}

/// Whether and how a TLS server asks for client certificates: the values of
/// Go's `tls.ClientAuthType` that Mimir's `-server.grpc-tls-client-auth`
/// takes, less the two that accept a certificate without verifying it (an
/// unverified certificate authenticates nobody).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum ClientAuth {
    #[default]
    NoClientCert,
    VerifyClientCertIfGiven,
    RequireAndVerifyClientCert,
}

impl FromStr for ClientAuth {
    type Err = String;

    fn from_str(text: &str) -> Result<ClientAuth, String> {
        match text {
            "" | "NoClientCert" => Ok(ClientAuth::NoClientCert),
            "VerifyClientCertIfGiven" => Ok(ClientAuth::VerifyClientCertIfGiven),
            "RequireAndVerifyClientCert" => Ok(ClientAuth::RequireAndVerifyClientCert),
            "RequestClientCert" | "RequireAnyClientCert" => Err(format!(
                "{text} accepts certificates without verifying them, which authenticates nobody: use VerifyClientCertIfGiven or RequireAndVerifyClientCert"
            )),
            other => Err(format!(
                "unknown client auth {other:?}: NoClientCert, VerifyClientCertIfGiven or RequireAndVerifyClientCert"
            )),
        }
    }
}

/// How a server (gRPC or HTTP) speaks TLS: Mimir's `-server.*-tls-*`.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ServerTls {
    pub cert_path: String,
    pub key_path: String,
    /// CA certificates client certificates must chain to.
    pub ca_path: String,
    pub client_auth: ClientAuth,
}

impl ServerTls {
    /// TLS is on once a certificate is given.
    pub fn is_enabled(&self) -> bool {
        !self.cert_path.is_empty()
    }

    /// The rustls configuration, offering the `alpn` protocols.
    pub fn server_config(&self, alpn: &[&[u8]]) -> Result<rustls::ServerConfig, String> {
        if self.cert_path.is_empty() || self.key_path.is_empty() {
            return Err("a TLS server needs both tls-cert-path and tls-key-path".into());
        }
        let builder = rustls::ServerConfig::builder_with_provider(crypto_provider())
            .with_safe_default_protocol_versions()
            .map_err(|error| format!("tls versions: {error}"))?;
        let builder = match self.client_auth {
            ClientAuth::NoClientCert => builder.with_no_client_auth(),
            verified => {
                if self.ca_path.is_empty() {
                    return Err(format!(
                        "client auth {verified:?} needs tls-ca-path (the CA client certificates must chain to)"
                    ));
                }
                let roots = Arc::new(pem::root_store(&self.ca_path)?);
                let verifier =
                    WebPkiClientVerifier::builder_with_provider(roots, crypto_provider());
                let verifier = match verified {
                    ClientAuth::VerifyClientCertIfGiven => verifier.allow_unauthenticated(),
                    _ => verifier,
                };
                let verifier = verifier
                    .build()
                    .map_err(|error| format!("client certificate verifier: {error}"))?;
                builder.with_client_cert_verifier(verifier)
            }
        };
        let mut config = builder
            .with_single_cert(
                pem::certificates(&self.cert_path)?,
                pem::private_key(&self.key_path)?,
            )
            .map_err(|error| format!("server certificate {}: {error}", self.cert_path))?;
        config.alpn_protocols = alpn.iter().map(|protocol| protocol.to_vec()).collect();
        Ok(config)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn client_auth_names_are_go_tls_names_and_unverified_ones_are_refused() {
        assert_eq!(
            "RequireAndVerifyClientCert".parse::<ClientAuth>(),
            Ok(ClientAuth::RequireAndVerifyClientCert)
        );
        assert_eq!("".parse::<ClientAuth>(), Ok(ClientAuth::NoClientCert));
        let refused = "RequireAnyClientCert".parse::<ClientAuth>().unwrap_err();
        assert!(refused.contains("authenticates nobody"), "{refused}");
        assert!("require".parse::<ClientAuth>().is_err());
    }

    #[test]
    fn configurations_name_the_file_that_is_wrong() {
        let missing = ServerTls {
            cert_path: "/nonexistent/cert.pem".into(),
            key_path: "/nonexistent/key.pem".into(),
            ..ServerTls::default()
        };
        let error = missing.server_config(&[]).unwrap_err();
        assert!(error.contains("/nonexistent/cert.pem"), "{error}");
        let half = ClientTls {
            enabled: true,
            cert_path: "/some/cert.pem".into(),
            ..ClientTls::default()
        };
        assert!(half.client_config().unwrap_err().contains("tls-key-path"));
        let no_ca = ServerTls {
            cert_path: "c".into(),
            key_path: "k".into(),
            client_auth: ClientAuth::RequireAndVerifyClientCert,
            ..ServerTls::default()
        };
        assert!(
            no_ca
                .server_config(&[])
                .unwrap_err()
                .contains("tls-ca-path")
        );
    }
}
