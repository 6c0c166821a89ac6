//! A throw-away certificate authority made at test time, and a server certificate it signed for
//! `127.0.0.1`/`localhost`. (A self-signed CA:TRUE certificate used directly as the server's was seen
//! to make the storage SDK hang silently; a CA-signed leaf works.)

use std::path::PathBuf;

use rcgen::{
    BasicConstraints, CertificateParams, CertifiedIssuer, DnType, ExtendedKeyUsagePurpose, IsCa,
    KeyPair, KeyUsagePurpose,
};

/// PEM files on disk, deleted with the directory when the value is dropped.
#[derive(Debug)]
pub struct TestCa {
    _dir: tempfile::TempDir,
    /// The CA certificate: what clients trust (`EXTRA_CA_CERTS_FILE`).
    pub ca_pem: PathBuf,
    /// The server certificate and its key: what a test server presents.
    pub cert_pem: PathBuf,
    pub key_pem: PathBuf,
}

impl TestCa {
    /// A new CA and leaf, written to a new temporary directory.
    // No `Default`: making keys and files is not a default value.
    #[allow(clippy::new_without_default)]
    pub fn new() -> Self {
        let mut ca_params = CertificateParams::new(Vec::<String>::new()).unwrap();
        ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        ca_params
            .distinguished_name
            .push(DnType::CommonName, "teams-cdr-functions test CA");
        ca_params.key_usages = vec![
            KeyUsagePurpose::KeyCertSign,
            KeyUsagePurpose::CrlSign,
            KeyUsagePurpose::DigitalSignature,
        ];
        let ca = CertifiedIssuer::self_signed(ca_params, KeyPair::generate().unwrap()).unwrap();

        let mut leaf =
            CertificateParams::new(vec!["localhost".to_owned(), "127.0.0.1".to_owned()]).unwrap();
        leaf.distinguished_name
            .push(DnType::CommonName, "localhost");
        leaf.is_ca = IsCa::ExplicitNoCa;
        leaf.key_usages = vec![
            KeyUsagePurpose::DigitalSignature,
            KeyUsagePurpose::KeyEncipherment,
        ];
        leaf.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
        let leaf_key = KeyPair::generate().unwrap();
        let leaf_cert = leaf.signed_by(&leaf_key, &ca).unwrap();

        let dir = tempfile::tempdir().unwrap();
        let write = |name: &str, pem: String| {
            let path = dir.path().join(name);
            std::fs::write(&path, pem).unwrap();
            path
        };
        Self {
            ca_pem: write("ca.pem", ca.pem()),
            cert_pem: write("cert.pem", leaf_cert.pem()),
            key_pem: write("key.pem", leaf_key.serialize_pem()),
            _dir: dir,
        }
    }
}
