//! Certificates and keys from PEM files; every error names the file.

use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};

pub(crate) fn certificates(path: &str) -> Result<Vec<CertificateDer<'static>>, String> {
    let certificates = CertificateDer::pem_file_iter(path)
        .map_err(|error| format!("reading certificates from {path}: {error}"))?
        .collect::<Result<Vec<_>, _>>()
        .map_err(|error| format!("reading certificates from {path}: {error}"))?;
    if certificates.is_empty() {
        return Err(format!("no PEM certificate in {path}"));
    }
    Ok(certificates)
}

pub(crate) fn private_key(path: &str) -> Result<PrivateKeyDer<'static>, String> {
    PrivateKeyDer::from_pem_file(path)
        .map_err(|error| format!("reading a private key from {path}: {error}"))
}

pub(crate) fn root_store(path: &str) -> Result<rustls::RootCertStore, String> {
    let mut roots = rustls::RootCertStore::empty();
    for certificate in certificates(path)? {
        roots
            .add(certificate)
            .map_err(|error| format!("CA certificate in {path}: {error}"))?;
    }
    Ok(roots)
}
