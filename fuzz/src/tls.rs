//! The TLS target's harness: the input's first byte chooses the side and
//! where the bytes are cut into reads; the rest is what the peer sends.
//!
//! - Byte 0, low bit: 0, the server side (the bytes are a client's: a
//!   ClientHello and what follows); 1, the client side (loadgen's: the bytes
//!   answer its ClientHello).
//! - Byte 0, the other 7 bits (`n`): each read brings `n * 37 + 1` bytes,
//!   from one byte at a time to several records.
//!
//! Both sides are configured as wsloop's and loadgen's are (rustls with
//! aws-lc-rs, TLS 1.3 and 1.2, ALPN `http/1.1`), with a throwaway ECDSA P-256
//! certificate made once per process.

use std::sync::{Arc, OnceLock};

use rustls::{
    client::UnbufferedClientConnection,
    crypto::aws_lc_rs,
    pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer, ServerName},
    server::UnbufferedServerConnection,
    ClientConfig, RootCertStore, ServerConfig,
};

/// What a run is: the side, the size of each read, the peer's bytes.
pub struct Plan<'a> {
    pub server_side: bool,
    pub piece: usize,
    pub bytes: &'a [u8],
}

/// Reads `input` as a plan (see the module docs); `None` if it is empty.
pub fn plan(input: &[u8]) -> Option<Plan<'_>> {
    let (&first, bytes) = input.split_first()?;
    Some(Plan { server_side: first & 1 == 0, piece: usize::from(first >> 1) * 37 + 1, bytes })
}

/// The input for a plan: `server_side`, reads of `n * 37 + 1` bytes (n < 128).
pub fn encode_plan(server_side: bool, n: u8, bytes: &[u8]) -> Vec<u8> {
    let mut input = vec![(n.min(127) << 1) | u8::from(!server_side)];
    input.extend_from_slice(bytes);
    input
}

/// Both sides' configurations, made once.
fn configs() -> &'static (Arc<ServerConfig>, Arc<ClientConfig>) {
    static CONFIGS: OnceLock<(Arc<ServerConfig>, Arc<ClientConfig>)> = OnceLock::new();
    CONFIGS.get_or_init(|| {
        let cert = rcgen::generate_simple_self_signed(vec!["localhost".to_string()]).expect("a certificate");
        let der = CertificateDer::from(cert.cert.der().to_vec());
        let key = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(cert.signing_key.serialize_der()));
        let provider = Arc::new(aws_lc_rs::default_provider());
        let versions = &[&rustls::version::TLS13, &rustls::version::TLS12];
        let mut server = ServerConfig::builder_with_provider(provider.clone())
            .with_protocol_versions(versions)
            .expect("versions")
            .with_no_client_auth()
            .with_single_cert(vec![der.clone()], key)
            .expect("the certificate");
        server.alpn_protocols = vec![b"http/1.1".to_vec()];
        let mut roots = RootCertStore::empty();
        roots.add(der).expect("the certificate as a root");
        let mut client = ClientConfig::builder_with_provider(provider)
            .with_protocol_versions(versions)
            .expect("versions")
            .with_root_certificates(roots)
            .with_no_client_auth();
        client.alpn_protocols = vec![b"http/1.1".to_vec()];
        (Arc::new(server), Arc::new(client))
    })
}

/// A new server-side connection, as wsloop accepts one.
pub fn server() -> UnbufferedServerConnection {
    UnbufferedServerConnection::new(configs().0.clone()).expect("a server connection")
}

/// A new client-side connection, as loadgen opens one to `localhost`.
pub fn client() -> UnbufferedClientConnection {
    let name = ServerName::try_from("localhost").expect("a name");
    UnbufferedClientConnection::new(configs().1.clone(), name).expect("a client connection")
}
