//! The hashes S3's request signing (SigV4) needs, from RustCrypto's pure-Rust
//! sha2 and hmac, so that the S3 backend builds without aws-lc-rs or ring.

use hmac::{Hmac, KeyInit, Mac};
use object_store::client::{
    CryptoProvider, DigestAlgorithm, DigestContext, HmacContext, Signer, SigningAlgorithm,
};
use sha2::{Digest, Sha256};

/// SHA-256 and HMAC-SHA-256; no RSA (only Google Cloud's service accounts use it).
#[derive(Debug)]
pub(crate) struct RustCrypto;

fn unsupported(what: String) -> object_store::Error {
    object_store::Error::NotSupported {
        source: what.into(),
    }
}

struct Sha256Context {
    hasher: Sha256,
    output: Vec<u8>,
}

impl DigestContext for Sha256Context {
    fn update(&mut self, data: &[u8]) {
        self.hasher.update(data);
    }

    fn finish(&mut self) -> object_store::Result<&[u8]> {
        self.output = self.hasher.finalize_reset().to_vec();
        Ok(&self.output)
    }
}

struct HmacSha256Context {
    /// Taken by `finish`, which object_store calls once.
    mac: Option<Hmac<Sha256>>,
    output: Vec<u8>,
}

impl HmacContext for HmacSha256Context {
    fn update(&mut self, data: &[u8]) {
        if let Some(mac) = self.mac.as_mut() {
            mac.update(data);
        }
    }

    fn finish(&mut self) -> object_store::Result<&[u8]> {
        if let Some(mac) = self.mac.take() {
            self.output = mac.finalize().into_bytes().to_vec();
        }
        Ok(&self.output)
    }
}

impl CryptoProvider for RustCrypto {
    fn digest(&self, algorithm: DigestAlgorithm) -> object_store::Result<Box<dyn DigestContext>> {
        match algorithm {
            DigestAlgorithm::Sha256 => Ok(Box::new(Sha256Context {
                hasher: Sha256::new(),
                output: Vec::new(),
            })),
            other => Err(unsupported(format!("digest {other:?}"))),
        }
    }

    fn hmac(
        &self,
        algorithm: DigestAlgorithm,
        secret: &[u8],
    ) -> object_store::Result<Box<dyn HmacContext>> {
        match algorithm {
            DigestAlgorithm::Sha256 => {
                // HMAC takes a key of any length, so this cannot fail.
                let mac = <Hmac<Sha256> as KeyInit>::new_from_slice(secret)
                    .map_err(|error| unsupported(format!("hmac key: {error}")))?;
                Ok(Box::new(HmacSha256Context {
                    mac: Some(mac),
                    output: Vec::new(),
                }))
            }
            other => Err(unsupported(format!("hmac {other:?}"))),
        }
    }

    fn sign(
        &self,
        algorithm: SigningAlgorithm,
        _pem: &[u8],
    ) -> object_store::Result<Box<dyn Signer>> {
        Err(unsupported(format!("signing with {algorithm:?}")))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hex(bytes: &[u8]) -> String {
        bytes.iter().map(|byte| format!("{byte:02x}")).collect()
    }

    #[test]
    fn matches_the_published_test_vectors() {
        let mut digest = RustCrypto.digest(DigestAlgorithm::Sha256).unwrap();
        digest.update(b"abc");
        assert_eq!(
            hex(digest.finish().unwrap()),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
        // RFC 4231, test case 2.
        let mut mac = RustCrypto.hmac(DigestAlgorithm::Sha256, b"Jefe").unwrap();
        mac.update(b"what do ya want for nothing?");
        assert_eq!(
            hex(mac.finish().unwrap()),
            "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843"
        );
    }
}
