//! A certificate authority made at test time, and server certificates it signs for 127.0.0.1,
//! shared by the TLS tests of the `http` and `mail` plugins.
#![allow(
    clippy::unwrap_used,
    reason = "test support: a panic here is the test's failure report"
)]

use std::path::{Path, PathBuf};
use std::sync::Arc;

use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, Issuer, KeyPair, KeyUsagePurpose};
use rustls::ServerConfig;
use rustls::pki_types::PrivatePkcs8KeyDer;

/// A CA whose certificate a test hands to the client as its only trusted root.
#[derive(Debug)]
pub struct TestCa {
    issuer: Issuer<'static, KeyPair>,
}

impl Default for TestCa {
    fn default() -> Self {
        Self::new()
    }
}

impl TestCa {
    /// A CA with a fresh key.
    pub fn new() -> Self {
        Self::with_key(KeyPair::generate().unwrap())
    }

    /// A CA of another name, as a server outside the trusted bundle would use. (One of the
    /// same name would fail as a bad signature rather than an unknown issuer.)
    pub fn stranger() -> Self {
        Self {
            issuer: Issuer::new(ca_params("Stranger CA"), KeyPair::generate().unwrap()),
        }
    }

    /// The same CA again from its key: its name and key identifier derive from these params
    /// and the key alone, so certificates it signs chain to the saved `ca.pem`.
    pub fn load(dir: &Path) -> Self {
        let key = std::fs::read_to_string(dir.join("ca-key.pem")).unwrap();
        Self::with_key(KeyPair::from_pem(&key).unwrap())
    }

    fn with_key(key: KeyPair) -> Self {
        Self {
            issuer: Issuer::new(ca_params(CA_NAME), key),
        }
    }

    /// Writes `ca.pem` (for SSL_CERT_FILE) and `ca-key.pem` into `dir`; returns `ca.pem`.
    pub fn save(&self, dir: &Path) -> PathBuf {
        let cert = ca_params(CA_NAME).self_signed(self.issuer.key()).unwrap();
        let path = dir.join("ca.pem");
        std::fs::write(&path, cert.pem()).unwrap();
        std::fs::write(dir.join("ca-key.pem"), self.issuer.key().serialize_pem()).unwrap();
        path
    }

    /// A fresh certificate for `names` and its key, both PEM, for a server that reads files
    /// (PostgreSQL).
    pub fn server_pem(&self, names: &[&str]) -> (String, String) {
        let key = KeyPair::generate().unwrap();
        let cert =
            CertificateParams::new(names.iter().map(|n| (*n).to_owned()).collect::<Vec<_>>())
                .unwrap()
                .signed_by(&key, &self.issuer)
                .unwrap();
        (cert.pem(), key.serialize_pem())
    }

    /// A TLS server config with a fresh certificate for 127.0.0.1 and localhost.
    pub fn server_config(&self) -> Arc<ServerConfig> {
        let key = KeyPair::generate().unwrap();
        let cert = CertificateParams::new(vec!["127.0.0.1".to_owned(), "localhost".to_owned()])
            .unwrap()
            .signed_by(&key, &self.issuer)
            .unwrap();
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let config = ServerConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_no_client_auth()
            .with_single_cert(
                vec![cert.der().clone()],
                PrivatePkcs8KeyDer::from(key.serialize_der()).into(),
            )
            .unwrap();
        Arc::new(config)
    }
}

/// Runs the calling test, named `test` as `cargo test --exact` names it, again in a child
/// process whose `SSL_CERT_FILE` holds only a new CA's certificate: the trusted roots are read
/// once per process, so a test cannot change them in its own. In the child this returns that CA;
/// in the parent it returns `None` once the child passed, and panics with its output if not.
pub fn rerun_trusting_new_ca(test: &str) -> Option<TestCa> {
    const CHILD: &str = "PACER_TEST_CA_DIR";
    if let Some(dir) = std::env::var_os(CHILD) {
        return Some(TestCa::load(Path::new(&dir)));
    }
    let dir = tempfile::tempdir().unwrap();
    let ca_file = TestCa::new().save(dir.path());
    let output = std::process::Command::new(std::env::current_exe().unwrap())
        .args(["--exact", test, "--nocapture"])
        .env(CHILD, dir.path())
        .env("SSL_CERT_FILE", ca_file)
        .env_remove("SSL_CERT_DIR")
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        output.status.success() && stdout.contains("1 passed"),
        "the child test failed:\n{stdout}\n{stderr}"
    );
    None
}

const CA_NAME: &str = "Pacer test CA";

fn ca_params(name: &str) -> CertificateParams {
    let mut params = CertificateParams::new(Vec::new()).unwrap();
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    params.distinguished_name.push(DnType::CommonName, name);
    params.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    params
}
