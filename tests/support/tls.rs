//! Throwaway certificates for the TLS tests, made by each test with rcgen
//! (never committed keys): a test CA and the server certificates it signs,
//! all ECDSA P-256, written as PEM files into a temporary directory that is
//! removed when the [`TestCa`] is dropped.

use std::path::PathBuf;

use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair, KeyUsagePurpose,
    PKCS_ECDSA_P256_SHA256,
};

/// A test CA: its certificate as a PEM file (what clients trust), and its
/// key, to sign server certificates with.
pub struct TestCa {
    /// Where the files are (removed on drop).
    dir: PathBuf,
    /// The CA certificate, PEM: what `--ca` takes.
    pub ca_pem: PathBuf,
    /// The CA, to sign with.
    issuer: Issuer<'static, KeyPair>,
    /// Server certificates made so far (for their file names).
    issued: usize,
}

/// A server certificate and its key, as PEM files.
pub struct ServerCert {
    /// The certificate (PEM).
    pub cert_pem: PathBuf,
    /// Its private key (PKCS#8 PEM).
    pub key_pem: PathBuf,
}

impl TestCa {
    /// A new CA, in a fresh directory named after `name`.
    pub fn new(name: &str) -> TestCa {
        let dir = std::env::temp_dir().join(format!("wsloop-test-ca-{}-{name}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).expect("create the test CA's directory");
        let key = KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256).expect("CA key");
        let mut params = CertificateParams::new(Vec::<String>::new()).expect("CA parameters");
        params.distinguished_name.push(DnType::CommonName, "wsloop test CA (throwaway)");
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
        let cert = params.self_signed(&key).expect("self-sign the CA");
        let ca_pem = dir.join("ca.pem");
        std::fs::write(&ca_pem, cert.pem()).expect("write ca.pem");
        TestCa { dir, ca_pem, issuer: Issuer::new(params, key), issued: 0 }
    }

    /// A server certificate for `names` (DNS names or IP addresses), signed by this CA.
    pub fn server_cert(&mut self, names: &[&str]) -> ServerCert {
        let key = KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256).expect("server key");
        let names: Vec<String> = names.iter().map(|n| n.to_string()).collect();
        let mut params = CertificateParams::new(names.clone()).expect("server parameters");
        params.distinguished_name.push(DnType::CommonName, names.first().cloned().unwrap_or_default());
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
        let cert = params.signed_by(&key, &self.issuer).expect("sign the server certificate");
        self.issued += 1;
        let cert_pem = self.dir.join(format!("server-{}.pem", self.issued));
        let key_pem = self.dir.join(format!("server-{}.key", self.issued));
        std::fs::write(&cert_pem, cert.pem()).expect("write the server certificate");
        std::fs::write(&key_pem, key.serialize_pem()).expect("write the server key");
        ServerCert { cert_pem, key_pem }
    }
}

impl Drop for TestCa {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}
