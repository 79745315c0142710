//! A certificate authority made at test time, and server certificates it signs for 127.0.0.1.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, Issuer, KeyPair, KeyUsagePurpose};
use rustls::ServerConfig;
use rustls::pki_types::PrivatePkcs8KeyDer;

pub struct TestCa {
    issuer: Issuer<'static, KeyPair>,
}

impl TestCa {
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
