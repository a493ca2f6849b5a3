//! `wss://`: TLS with rustls on the loop's own non-blocking sockets.
//!
//! A `wss://` connection is a `ws://` one with TLS between the socket and
//! the WebSocket bytes ([`TlsStream`]); the loop, the frames and the checks
//! are the same. Nothing blocks and no thread is added. The records are the
//! server's code ([`wsloop::tls::records`], on rustls' unbuffered API):
//!
//! - **Reading**: one `read` of the socket into the loop's receive buffer,
//!   as for `ws://` (after the end of a record kept from the last read); the
//!   records are decrypted where they landed, and each record's plaintext
//!   goes to the frame reader.
//! - **Writing**: the frame is sealed into records in the loop's room for
//!   them and written with one `writev`. What the socket does not take is
//!   kept encrypted and sent on the next WRITABLE, before anything new; the
//!   rest waits in the connection's own `pending`, as for `ws://`.
//! - **The handshake** is driven by the same readiness events, in the
//!   connection's `TlsHandshaking` state (see [`crate::client`]). The cipher
//!   suites are offered in the browsers' order ([`browser_order_provider`]).
//!
//! Session resumption (`--tls-resume`) keeps the sessions and tickets of a
//! loop in one [`LoopSessions`] store shared by its connections, so that a
//! churning connection can resume what an earlier one received.
//!
//! Memory: rustls frees the handshake's state once it is done. What an
//! idle connection keeps is rustls' connection state (keys and record
//! layer): no buffer.

use std::{
    collections::VecDeque,
    fmt, fs,
    io::{self, IoSlice, Read},
    path::{Path, PathBuf},
    sync::{Arc, Mutex},
};

use clap::ValueEnum;
use mio::net::TcpStream;
use rustls::{
    client::{
        danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier},
        ClientSessionStore, Resumption, Tls12ClientSessionValue, Tls12Resumption, Tls13ClientSessionValue,
        UnbufferedClientConnection,
    },
    crypto::CryptoProvider,
    pki_types::{pem::PemObject, CertificateDer, ServerName, UnixTime},
    CipherSuite, ClientConfig, DigitallySignedStruct, HandshakeKind, NamedGroup, RootCertStore, SignatureScheme,
};
pub use wsloop::tls::records::TlsEnd;
use wsloop::{
    sys::retry_interrupted,
    tls::records::{Records, Sent},
};

/// The one application protocol offered (ALPN): a WebSocket starts as HTTP/1.1.
const ALPN_HTTP_1_1: &[u8] = b"http/1.1";

/// TLS 1.3 tickets a loop's store keeps per connection it runs: servers
/// send two per handshake (OpenSSL, rustls), and a churning connection
/// uses one per handshake, so two each cover every connection reconnecting
/// at once.
const TICKETS_PER_CONNECTION: usize = 2;

/// The store's smallest and largest ticket count per server: rustls' own
/// store keeps 8, too few for a loop that starts hundreds of connections at
/// once; the cap bounds memory (a ticket is a few hundred bytes).
const TICKETS_MIN: usize = 8;
/// See [`TICKETS_MIN`].
const TICKETS_MAX: usize = 1 << 14;

/// `--tls-resume`: how handshakes may resume earlier sessions.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum TlsResume {
    /// Every handshake is a full one.
    None,
    /// TLS 1.3 session tickets; on TLS 1.2, RFC 5077 tickets or session IDs (rustls' default).
    Tickets,
    /// TLS 1.2: session IDs only (the server keeps the sessions), no RFC 5077
    /// tickets; TLS 1.3 has no session IDs and resumes with its tickets.
    Ids,
}

impl TlsResume {
    pub fn as_str(self) -> &'static str {
        match self {
            TlsResume::None => "none",
            TlsResume::Tickets => "tickets",
            TlsResume::Ids => "ids",
        }
    }
}

/// `--tls-version`: which protocol versions are offered.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum TlsVersion {
    /// TLS 1.2 and 1.3: the server chooses (1.3 unless it has only 1.2).
    Any,
    /// TLS 1.2 only.
    #[value(name = "1.2")]
    Tls12,
    /// TLS 1.3 only.
    #[value(name = "1.3")]
    Tls13,
}

impl TlsVersion {
    pub fn as_str(self) -> &'static str {
        match self {
            TlsVersion::Any => "any",
            TlsVersion::Tls12 => "1.2",
            TlsVersion::Tls13 => "1.3",
        }
    }

    fn versions(self) -> &'static [&'static rustls::SupportedProtocolVersion] {
        /// TLS 1.2 alone.
        const TLS12: &[&rustls::SupportedProtocolVersion] = &[&rustls::version::TLS12];
        /// TLS 1.3 alone.
        const TLS13: &[&rustls::SupportedProtocolVersion] = &[&rustls::version::TLS13];
        match self {
            TlsVersion::Any => rustls::ALL_VERSIONS,
            TlsVersion::Tls12 => TLS12,
            TlsVersion::Tls13 => TLS13,
        }
    }
}

/// Which server certificates are accepted.
#[derive(Debug, Clone)]
pub enum Trust {
    /// Those that chain to Mozilla's roots (`webpki-roots`, compiled in).
    WebpkiRoots,
    /// Those that chain to the certificates of a PEM file (`--ca`).
    Ca {
        /// The file, for the report.
        path: PathBuf,
        /// Its certificates.
        roots: Arc<RootCertStore>,
    },
    /// Any at all (`--insecure`).
    Insecure,
}

impl Trust {
    /// The name in the report's `settings.tls_trust`.
    pub fn as_str(&self) -> &'static str {
        match self {
            Trust::WebpkiRoots => "webpki_roots",
            Trust::Ca { .. } => "ca",
            Trust::Insecure => "insecure",
        }
    }

    /// Reads `--ca FILE`: every certificate in it becomes a trust anchor.
    pub fn from_ca_file(path: &Path) -> Result<Trust, String> {
        let fail = |why: String| format!("--ca {}: {why}", path.display());
        let text = fs::read(path).map_err(|e| fail(e.to_string()))?;
        let mut roots = RootCertStore::empty();
        for cert in CertificateDer::pem_slice_iter(&text) {
            let cert = cert.map_err(|e| fail(format!("not PEM: {e}")))?;
            roots.add(cert).map_err(|e| fail(format!("not a usable CA certificate: {e}")))?;
        }
        if roots.is_empty() {
            return Err(fail("no certificate (a PEM file with BEGIN CERTIFICATE blocks is expected)".into()));
        }
        Ok(Trust::Ca { path: path.to_path_buf(), roots: Arc::new(roots) })
    }
}

/// The run's TLS settings (from the `wss://` URL and the TLS flags).
#[derive(Debug, Clone)]
pub struct TlsSettings {
    /// The URL's host: sent as SNI (unless it is an IP address, which
    /// RFC 6066 leaves out) and checked against the certificate.
    pub server_name: ServerName<'static>,
    /// Which certificates are accepted.
    pub trust: Trust,
    /// `--tls-resume`.
    pub resume: TlsResume,
    /// `--tls-version`.
    pub version: TlsVersion,
}

/// What a loop needs to open `wss://` connections: its own configuration
/// (with its own session store) and the server's name.
#[derive(Debug, Clone)]
pub struct TlsClient {
    /// Shared by the loop's connections.
    config: Arc<ClientConfig>,
    /// The name every connection asks for.
    server_name: ServerName<'static>,
}

impl TlsSettings {
    /// A loop's client configuration, its session store sized for the
    /// `connections` it runs. Each loop gets its own: no lock is shared
    /// between threads, and a ticket is resumed on the loop that got it.
    /// Called on the loop's own thread.
    pub fn client(&self, connections: u64) -> Result<TlsClient, String> {
        let provider = Arc::new(browser_order_provider());
        let builder = ClientConfig::builder_with_provider(provider.clone())
            .with_protocol_versions(self.version.versions())
            .map_err(|e| format!("TLS configuration: {e}"))?;
        let builder = match &self.trust {
            Trust::WebpkiRoots => {
                let roots = RootCertStore { roots: webpki_roots::TLS_SERVER_ROOTS.to_vec() };
                builder.with_root_certificates(roots)
            }
            Trust::Ca { roots, .. } => builder.with_root_certificates(roots.clone()),
            Trust::Insecure => {
                builder.dangerous().with_custom_certificate_verifier(Arc::new(AcceptAnyCertificate { provider }))
            }
        };
        let mut config = builder.with_no_client_auth();
        config.alpn_protocols = vec![ALPN_HTTP_1_1.to_vec()];
        config.resumption = match self.resume {
            TlsResume::None => Resumption::disabled(),
            resume => {
                let tickets = usize::try_from(connections)
                    .unwrap_or(usize::MAX)
                    .saturating_mul(TICKETS_PER_CONNECTION)
                    .clamp(TICKETS_MIN, TICKETS_MAX);
                let tls12 = match resume {
                    TlsResume::Ids => Tls12Resumption::SessionIdOnly,
                    _ => Tls12Resumption::SessionIdOrTickets,
                };
                Resumption::store(Arc::new(LoopSessions::new(tickets))).tls12_resumption(tls12)
            }
        };
        let client = TlsClient { config: Arc::new(config), server_name: self.server_name.clone() };
        // The first connection of a thread pays for aws-lc's start (its
        // random generator is seeded per thread): about 100 ms here, which
        // would land in the first handshakes' latency. Paid now instead, on
        // the loop's thread, before anything is measured.
        drop(client.connect().map_err(|e| format!("TLS configuration: {e}"))?);
        Ok(client)
    }
}

impl TlsClient {
    /// A new connection's TLS state; its ClientHello is ready to be written.
    pub fn connect(&self) -> Result<Box<TlsStream>, rustls::Error> {
        let conn = UnbufferedClientConnection::new(self.config.clone(), self.server_name.clone())?;
        let mut stream = TlsStream { records: Records::new(conn), close_notify_sent: false };
        // The ClientHello: rustls makes it at the first step.
        stream.receive(&mut [], |_| Ok::<(), ()>(())).map_err(|e| match e {
            TlsEnd::Tls(e) => e,
            TlsEnd::Plain(()) => rustls::Error::General("plaintext before the handshake".into()),
        })?;
        Ok(Box::new(stream))
    }
}

/// One connection's TLS: the records (rustls' state, what is still
/// arriving and what the socket has not taken; shared with the server,
/// [`wsloop::tls::records`]) over the connection's socket.
pub struct TlsStream {
    records: Records<UnbufferedClientConnection>,
    /// Our `close_notify` has been queued (it is sent once, in answer to the server's).
    close_notify_sent: bool,
}

impl TlsStream {
    /// Whether the handshake is still going on.
    pub fn is_handshaking(&self) -> bool {
        self.records.is_handshaking()
    }

    /// Whether records are waiting for the socket.
    #[inline]
    pub fn wants_write(&self) -> bool {
        !self.records.unsent().is_empty()
    }

    /// After the handshake: whether it resumed an earlier session.
    pub fn resumed(&self) -> bool {
        self.records.state().handshake_kind() == Some(HandshakeKind::Resumed)
    }

    /// After the handshake: the protocol version, as the report names it.
    pub fn version_name(&self) -> &'static str {
        match self.records.state().protocol_version() {
            Some(rustls::ProtocolVersion::TLSv1_3) => "TLSv1.3",
            Some(rustls::ProtocolVersion::TLSv1_2) => "TLSv1.2",
            _ => "other",
        }
    }

    /// After the handshake: the cipher suite, as the report names it.
    pub fn suite_name(&self) -> &'static str {
        self.records.state().negotiated_cipher_suite().and_then(|suite| suite.suite().as_str()).unwrap_or("unknown")
    }

    /// Writes the records waiting, until all are out or the socket is full
    /// (`Ok(false)`: the next WRITABLE goes on).
    #[inline]
    pub fn flush(&mut self, stream: &TcpStream) -> io::Result<bool> {
        self.records.flush(|slices| wsloop::sys::send_slices(stream, slices))
    }

    /// Seals `data` and writes it, until all of it is out or the socket is
    /// full; returns how much of `data` was taken (sealed: written, or kept
    /// to be written first at the next WRITABLE) and whether the socket is
    /// full.
    #[inline]
    pub fn send(&mut self, stream: &TcpStream, data: &[u8]) -> io::Result<Sent> {
        self.records.send(&[IoSlice::new(data)], data.len(), |slices| wsloop::sys::send_slices(stream, slices))
    }

    /// `ws://`'s write-or-keep, over TLS: what is not taken goes to
    /// `pending`, and the connection is marked blocked if anything (there
    /// or in the records) is left for the next WRITABLE. Never inlined, so
    /// that `ws://`'s send path stays the code it was, plus one test.
    #[inline(never)]
    pub fn write_or_keep(
        &mut self,
        stream: &TcpStream,
        pending: &mut Vec<u8>,
        blocked: &mut bool,
        data: &[u8],
    ) -> io::Result<()> {
        let sent = self.send(stream, data)?;
        if sent.taken < data.len() {
            pending.extend_from_slice(&data[sent.taken..]);
        }
        if sent.blocked || sent.taken < data.len() {
            *blocked = true;
        }
        Ok(())
    }

    /// On WRITABLE while blocked: the records waiting first, then
    /// `pending`. Returns whether everything went out (the connection is
    /// unblocked).
    pub fn flush_pending(&mut self, stream: &TcpStream, pending: &mut Vec<u8>) -> io::Result<bool> {
        if !self.flush(stream)? {
            return Ok(false);
        }
        while !pending.is_empty() {
            let sent = self.send(stream, pending)?;
            pending.drain(..sent.taken);
            if sent.blocked {
                return Ok(false);
            }
            if sent.taken == 0 {
                // The handshake is not done (not expected here): wait rather than spin.
                return Ok(false);
            }
        }
        Ok(true)
    }

    /// One `read` of the socket into `rx`, after the end of a record kept
    /// from the last one: how many bytes of `rx` to hand to
    /// [`TlsStream::receive`] (0: the server closed TCP). A read is short
    /// (the socket drained) when this is under `rx.len()`, as for `ws://`.
    #[inline]
    pub fn read(&mut self, stream: &TcpStream, rx: &mut [u8]) -> io::Result<usize> {
        let kept = self.records.take_unread(rx);
        match retry_interrupted(|| (&*stream).read(&mut rx[kept..])) {
            // Whatever was kept is the start of a record that never came.
            Ok(0) => Ok(0),
            Ok(n) => Ok(kept + n),
            Err(e) => {
                self.records.keep_unread(&rx[..kept]);
                Err(e)
            }
        }
    }

    /// Decrypts the records in `input` (what [`TlsStream::read`] gave) where
    /// they lie, and hands each record's plaintext to `plain`, in order.
    /// Returns whether the server has ended TLS (`close_notify`); our own is
    /// then queued in answer (the caller flushes it), so that a server that
    /// waits for it before ending TCP (Python's asyncio does) is not kept
    /// waiting.
    #[inline]
    pub fn receive<E>(
        &mut self,
        input: &mut [u8],
        plain: impl FnMut(&[u8]) -> Result<(), E>,
    ) -> Result<bool, TlsEnd<E>> {
        let opened = self.records.open(input, plain)?;
        if opened.peer_closed && !self.close_notify_sent {
            self.close_notify_sent = true;
            self.records.close_notify();
        }
        Ok(opened.peer_closed)
    }
}

/// The kind of a TLS failure, for `handshake.tls_failures` (and the first
/// occurrence's description keeps the detail).
pub fn failure_reason(error: &rustls::Error) -> &'static str {
    use rustls::Error;
    match error {
        Error::InvalidCertificate(_) => "bad_certificate",
        Error::AlertReceived(_) => "alert",
        Error::InappropriateMessage { .. }
        | Error::InappropriateHandshakeMessage { .. }
        | Error::InvalidMessage(_)
        | Error::DecryptError
        | Error::PeerIncompatible(_)
        | Error::PeerMisbehaved(_)
        | Error::PeerSentOversizedRecord
        | Error::NoApplicationProtocol => "protocol",
        _ => "other",
    }
}

/// Every TLS failure reason [`failure_reason`] gives, for the report's
/// table (every one present, zeros included).
pub const FAILURE_REASONS: [&str; 4] = ["bad_certificate", "alert", "protocol", "other"];

/// rustls' aws-lc-rs provider with its cipher suites offered in the order
/// browsers offer theirs: AES-128-GCM first (Chrome, Firefox and Safari all
/// list `TLS_AES_128_GCM_SHA256` first; it is also the suite RFC 8446 9.1
/// makes mandatory), then rustls' own order. rustls alone offers AES-256-GCM
/// with SHA-384 first, and a server that follows the client's order (rustls'
/// and OpenSSL's default) then runs the whole key schedule on SHA-384, which
/// no browser asks for: a load test should cost the server what browsers
/// cost it.
fn browser_order_provider() -> CryptoProvider {
    let mut provider = rustls::crypto::aws_lc_rs::default_provider();
    // A stable sort: the AES-128-GCM suites (TLS 1.3, then TLS 1.2 ECDSA and
    // RSA) move to the front, the rest keep rustls' order.
    provider.cipher_suites.sort_by_key(|suite| !is_aes_128_gcm(suite.suite()));
    provider
}

/// Whether `suite` is one of the AES-128-GCM suites.
fn is_aes_128_gcm(suite: CipherSuite) -> bool {
    matches!(
        suite,
        CipherSuite::TLS13_AES_128_GCM_SHA256
            | CipherSuite::TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256
            | CipherSuite::TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256
    )
}

/// `--insecure`: accepts every certificate, and every signature over the
/// handshake. A test server's self-signed certificate passes, and so does
/// an attacker's: the connection is encrypted but not authenticated.
#[derive(Debug)]
struct AcceptAnyCertificate {
    /// For the signature schemes to offer.
    provider: Arc<CryptoProvider>,
}

impl ServerCertVerifier for AcceptAnyCertificate {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        _message: &[u8],
        _cert: &CertificateDer<'_>,
        _dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        Ok(HandshakeSignatureValid::assertion())
    }

    fn verify_tls13_signature(
        &self,
        _message: &[u8],
        _cert: &CertificateDer<'_>,
        _dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        Ok(HandshakeSignatureValid::assertion())
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.provider.signature_verification_algorithms.supported_schemes()
    }
}

/// A loop's session store (rustls [`ClientSessionStore`]): per server
/// name, the latest TLS 1.2 session and up to `max_tickets` TLS 1.3
/// tickets. rustls' own `ClientSessionMemoryCache` keeps 8 tickets per
/// server, so of a batch of connections started at once all but 8 would
/// make full handshakes. Only its loop uses it: the lock is never contended.
struct LoopSessions {
    /// Sessions by server name (one name per run, in practice: a list
    /// searched in order is the cheapest map).
    servers: Mutex<Vec<(ServerName<'static>, Sessions)>>,
    /// TLS 1.3 tickets kept per server; the oldest goes first.
    max_tickets: usize,
}

/// What a [`LoopSessions`] keeps for one server.
#[derive(Default)]
struct Sessions {
    /// The key exchange group the server chose last (saves a HelloRetryRequest).
    kx_hint: Option<NamedGroup>,
    /// The latest TLS 1.2 session (resumed by session ID or ticket).
    tls12: Option<Tls12ClientSessionValue>,
    /// TLS 1.3 tickets, oldest first; each is used once.
    tls13: VecDeque<Tls13ClientSessionValue>,
}

impl LoopSessions {
    fn new(max_tickets: usize) -> LoopSessions {
        LoopSessions { servers: Mutex::new(Vec::new()), max_tickets }
    }

    /// Runs `f` on the sessions of `name` (created if absent). A poisoned
    /// lock (a panic elsewhere in this loop) loses nothing that matters:
    /// resumption is an optimisation.
    fn with<T>(&self, name: &ServerName<'_>, f: impl FnOnce(&mut Sessions) -> T) -> T {
        let mut servers = self.servers.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        let at = match servers.iter().position(|(known, _)| known == name) {
            Some(at) => at,
            None => {
                servers.push((name.to_owned(), Sessions::default()));
                servers.len() - 1
            }
        };
        f(&mut servers[at].1)
    }
}

impl fmt::Debug for LoopSessions {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // The secrets stay out of any debug output.
        f.debug_struct("LoopSessions").field("max_tickets", &self.max_tickets).finish_non_exhaustive()
    }
}

impl ClientSessionStore for LoopSessions {
    fn set_kx_hint(&self, server_name: ServerName<'static>, group: NamedGroup) {
        self.with(&server_name, |s| s.kx_hint = Some(group));
    }

    fn kx_hint(&self, server_name: &ServerName<'_>) -> Option<NamedGroup> {
        self.with(server_name, |s| s.kx_hint)
    }

    fn set_tls12_session(&self, server_name: ServerName<'static>, value: Tls12ClientSessionValue) {
        self.with(&server_name, |s| s.tls12 = Some(value));
    }

    fn tls12_session(&self, server_name: &ServerName<'_>) -> Option<Tls12ClientSessionValue> {
        self.with(server_name, |s| s.tls12.clone())
    }

    fn remove_tls12_session(&self, server_name: &ServerName<'static>) {
        self.with(server_name, |s| s.tls12 = None);
    }

    fn insert_tls13_ticket(&self, server_name: ServerName<'static>, value: Tls13ClientSessionValue) {
        let max = self.max_tickets;
        self.with(&server_name, |s| {
            if s.tls13.len() >= max {
                s.tls13.pop_front();
            }
            s.tls13.push_back(value);
        });
    }

    fn take_tls13_ticket(&self, server_name: &ServerName<'static>) -> Option<Tls13ClientSessionValue> {
        // The newest: the least likely to have expired.
        self.with(server_name, |s| s.tls13.pop_back())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn suites_are_offered_in_the_browsers_order() {
        let offered: Vec<CipherSuite> = browser_order_provider().cipher_suites.iter().map(|s| s.suite()).collect();
        let position = |suite| offered.iter().position(|s| *s == suite).expect("suite offered");
        // TLS 1.3: AES-128-GCM before AES-256-GCM before ChaCha20, as Chrome and Firefox.
        assert_eq!(offered[0], CipherSuite::TLS13_AES_128_GCM_SHA256);
        assert!(
            position(CipherSuite::TLS13_AES_256_GCM_SHA384) < position(CipherSuite::TLS13_CHACHA20_POLY1305_SHA256)
        );
        // TLS 1.2 too, and nothing rustls offers is dropped.
        assert!(
            position(CipherSuite::TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256)
                < position(CipherSuite::TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384)
        );
        assert_eq!(offered.len(), rustls::crypto::aws_lc_rs::default_provider().cipher_suites.len());
    }
}
