//! Throwaway certificates for TLS tests, made with the `openssl` command
//! (installed by `scripts/install-test-deps.sh`): a CA, a server certificate
//! for `localhost` and `127.0.0.1`, a client certificate from the same CA,
//! and a client certificate from a second, untrusted CA. P-256 keys, valid
//! for two days.

use std::path::Path;
use std::process::Command;

use crate::process::TempDir;
use crate::require_binary;

/// A directory of PEM files; removed on drop.
pub struct TestPki {
    dir: TempDir,
}

const LEAF_EXTENSIONS: &str = "basicConstraints=CA:FALSE\nkeyUsage=critical,digitalSignature\nextendedKeyUsage=serverAuth,clientAuth\nsubjectAltName=DNS:localhost,IP:127.0.0.1\n";

impl TestPki {
    /// Generates every certificate; panics with openssl's output if it fails.
    pub fn generate() -> TestPki {
        let dir = TempDir::new("sluice-pki").expect("creating the PKI temp dir");
        std::fs::write(dir.path().join("leaf.ext"), LEAF_EXTENSIONS).expect("writing leaf.ext");
        const KEY: &str = "-newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes";
        for ca in ["ca", "rogue-ca"] {
            openssl(
                dir.path(),
                &format!(
                    "req -x509 {KEY} -days 2 -subj /CN=sluice-test-{ca} \
                     -addext basicConstraints=critical,CA:TRUE \
                     -addext keyUsage=critical,keyCertSign,cRLSign -keyout {ca}.key -out {ca}.pem"
                ),
            );
        }
        for (leaf, ca) in [
            ("server", "ca"),
            ("client", "ca"),
            ("rogue-client", "rogue-ca"),
        ] {
            openssl(
                dir.path(),
                &format!("req -new {KEY} -subj /CN={leaf} -keyout {leaf}.key -out {leaf}.csr"),
            );
            openssl(
                dir.path(),
                &format!(
                    "x509 -req -in {leaf}.csr -days 2 -CA {ca}.pem -CAkey {ca}.key \
                     -CAcreateserial -extfile leaf.ext -out {leaf}.pem"
                ),
            );
        }
        TestPki { dir }
    }

    /// The full path of one of the files, e.g. `ca.pem` or `client.key`.
    pub fn path(&self, name: &str) -> String {
        self.dir.path().join(name).display().to_string()
    }

    pub fn dir(&self) -> &Path {
        self.dir.path()
    }
}

/// Runs `openssl` with `args` (split at whitespace) in `dir`.
fn openssl(dir: &Path, args: &str) {
    let output = Command::new(require_binary("openssl"))
        .args(args.split_whitespace())
        .current_dir(dir)
        .output()
        .unwrap_or_else(|error| panic!("running openssl: {error}"));
    assert!(
        output.status.success(),
        "openssl {args} failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
}
