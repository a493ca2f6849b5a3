//! `wss://`: the server's TLS configuration (rustls, with the aws-lc-rs
//! crypto provider), loaded from PEM files and reloaded on SIGHUP, and
//! [`records`]: one connection's TLS records without I/O, which the server
//! and loadgen share.
//!
//! The TLS itself runs in the loop, non-blocking, inside [`crate::socket`]:
//! each connection on the main port gets a rustls connection, and the
//! socket's `recv` and `send` pass bytes through it ([`records::Records`]),
//! so the handshake and the records are driven by the same readiness events
//! as everything else, under the same `--handshake-timeout`. The protocol
//! layer above sees plaintext.
//!
//! The kernel's TLS (kTLS, `setsockopt(TCP_ULP, "tls")`) would take the
//! record layer off the loop after the handshake; this machine's kernel does
//! not offer it (`/proc/sys/net/ipv4/tcp_available_ulp` lists only `mptcp`),
//! so it is not used.

pub mod records;

use std::{
    fmt, io,
    path::{Path, PathBuf},
    sync::{Arc, Mutex},
};

use rustls::{
    crypto::aws_lc_rs,
    pki_types::{pem::PemObject, CertificateDer, PrivateKeyDer},
    server::ServerSessionMemoryCache,
    server::UnbufferedServerConnection,
    ServerConfig,
};

/// Sessions kept for resumption by session id (TLS 1.2 clients that do not
/// take tickets); tickets (stateless) serve the others.
const SESSION_CACHE: usize = 10_000;

/// The certificate and key in force, and where they came from.
pub struct TlsAcceptor {
    current: Mutex<Arc<ServerConfig>>,
    cert: PathBuf,
    key: PathBuf,
}

impl fmt::Debug for TlsAcceptor {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TlsAcceptor").field("cert", &self.cert).field("key", &self.key).finish()
    }
}

impl TlsAcceptor {
    /// Loads `cert` (a PEM chain, the server's certificate first) and `key`
    /// (PEM, PKCS#8, PKCS#1 or SEC1). The error is one line that names the
    /// file and what is wrong with it.
    pub fn load(cert: &Path, key: &Path) -> Result<TlsAcceptor, String> {
        let config = server_config(cert, key)?;
        Ok(TlsAcceptor { current: Mutex::new(config), cert: cert.to_path_buf(), key: key.to_path_buf() })
    }

    /// Loads the files again (SIGHUP): new handshakes use the new
    /// certificate, open connections keep theirs. On failure the old one
    /// stays in force.
    pub fn reload(&self) -> Result<(), String> {
        let config = server_config(&self.cert, &self.key)?;
        match self.current.lock() {
            Ok(mut current) => *current = config,
            Err(poisoned) => *poisoned.into_inner() = config,
        }
        Ok(())
    }

    /// A server-side TLS connection for a freshly accepted socket.
    pub fn accept(&self) -> io::Result<UnbufferedServerConnection> {
        let config = match self.current.lock() {
            Ok(current) => current.clone(),
            Err(poisoned) => poisoned.into_inner().clone(),
        };
        UnbufferedServerConnection::new(config).map_err(io::Error::other)
    }
}

/// The rustls configuration: TLS 1.2 and 1.3, ALPN `http/1.1`, no client
/// certificates, tickets and a session cache for resumption.
fn server_config(cert: &Path, key: &Path) -> Result<Arc<ServerConfig>, String> {
    let chain: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(cert)
        .and_then(|certs| certs.collect())
        .map_err(|e| format!("--tls-cert {}: {e}", cert.display()))?;
    if chain.is_empty() {
        return Err(format!("--tls-cert {}: no certificate in it", cert.display()));
    }
    let private = PrivateKeyDer::from_pem_file(key).map_err(|e| format!("--tls-key {}: {e}", key.display()))?;
    let provider = Arc::new(aws_lc_rs::default_provider());
    let mut config = ServerConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])
        .map_err(|e| format!("TLS configuration: {e}"))?
        .with_no_client_auth()
        .with_single_cert(chain, private)
        .map_err(|e| format!("--tls-cert {} and --tls-key {}: {e}", cert.display(), key.display()))?;
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    config.ticketer = aws_lc_rs::Ticketer::new().map_err(|e| format!("TLS session tickets: {e}"))?;
    config.session_storage = ServerSessionMemoryCache::new(SESSION_CACHE);
    Ok(Arc::new(config))
}

/// A TLS failure (an alert, a bad record), as the error `Socket::recv`
/// returns, so that the connection can count it as such.
#[derive(Debug)]
pub struct TlsFailure(pub rustls::Error);

impl fmt::Display for TlsFailure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "TLS: {}", self.0)
    }
}

impl std::error::Error for TlsFailure {}

/// Whether `error` is a [`TlsFailure`].
pub fn is_tls_failure(error: &io::Error) -> bool {
    error.get_ref().is_some_and(|inner| inner.is::<TlsFailure>())
}
