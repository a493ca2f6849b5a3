//! Comparison peer: a `wss://` echo server, tokio-tungstenite over
//! tokio-rustls, written the way its users usually write one. Benchmark
//! baseline, not a product: what wsloop's own TLS is measured against.
//!
//! - One tokio `current_thread` runtime (one core, like wsloop), one task per
//!   connection: `TlsAcceptor::accept`, then tokio-tungstenite's
//!   `accept_async_with_config` over the TLS stream, then the same echo loop
//!   as `peer-tokio-tungstenite` (`ws.next()`, `ws.send(msg)`: one message
//!   framed, encrypted into records and written and flushed per echo).
//! - rustls with its default crypto provider, aws-lc-rs, set explicitly;
//!   TLS 1.3 and 1.2, ALPN `http/1.1`, no client authentication, and
//!   otherwise rustls' defaults: its cipher suites and key exchange groups,
//!   a stateful session cache of 256 entries and TLS 1.3 tickets from it.
//! - `--tls-cert FILE` (the PEM chain, leaf first) and `--tls-key FILE` (PEM,
//!   PKCS#8, SEC1 or PKCS#1), both required; unreadable or bad files, or a
//!   key that does not match the certificate, exit 2 with one line before
//!   listening. `--read-buffer BYTES` as in `peer-tokio-tungstenite`.
//! - A client that fails its TLS or WebSocket handshake is dropped; nothing
//!   is logged per connection. TCP_NODELAY set.

use futures_util::{SinkExt, StreamExt};
use peers::{is_resource_exhaustion, parse_args, Flags, TUNGSTENITE_DEFAULT_READ_BUFFER};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::ServerConfig;
use std::path::Path;
use std::process;
use std::sync::Arc;
use std::time::Duration;
use tokio::net::{TcpListener, TcpStream};
use tokio_rustls::TlsAcceptor;
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;

const NAME: &str = "peer-tokio-rustls";

fn main() {
    let args = parse_args(NAME, Flags { read_buffer: true, tls: true, ..Flags::default() });
    let (Some(cert), Some(key)) = (&args.tls_cert, &args.tls_key) else {
        unreachable!("parse_args requires both TLS files")
    };
    let tls = tls_config(cert, key).unwrap_or_else(|message| {
        eprintln!("{NAME}: {message}");
        process::exit(2)
    });
    let acceptor = TlsAcceptor::from(Arc::new(tls));
    let config =
        WebSocketConfig::default().read_buffer_size(args.read_buffer.unwrap_or(TUNGSTENITE_DEFAULT_READ_BUFFER));
    peers::serve_until_signalled(NAME, args.listen, move |listener| accept_loop(listener, acceptor, config));
}

/// The server's TLS configuration from the two PEM files, or why not.
fn tls_config(cert: &Path, key: &Path) -> Result<ServerConfig, String> {
    let chain = CertificateDer::pem_file_iter(cert)
        .and_then(|certs| certs.collect::<Result<Vec<_>, _>>())
        .map_err(|e| format!("--tls-cert {}: {e}", cert.display()))?;
    if chain.is_empty() {
        return Err(format!("--tls-cert {}: no certificate in it", cert.display()));
    }
    let key_der = PrivateKeyDer::from_pem_file(key).map_err(|e| match e {
        rustls::pki_types::pem::Error::NoItemsFound => format!("--tls-key {}: no private key in it", key.display()),
        e => format!("--tls-key {}: {e}", key.display()),
    })?;
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let mut config = ServerConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])
        .map_err(|e| format!("TLS versions: {e}"))?
        .with_no_client_auth()
        .with_single_cert(chain, key_der)
        .map_err(|e| format!("--tls-cert {} with --tls-key {}: {e}", cert.display(), key.display()))?;
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(config)
}

async fn accept_loop(listener: TcpListener, acceptor: TlsAcceptor, config: WebSocketConfig) {
    loop {
        match listener.accept().await {
            Ok((stream, _)) => {
                tokio::spawn(echo(stream, acceptor.clone(), config));
            }
            Err(e) if is_resource_exhaustion(&e) => tokio::time::sleep(Duration::from_millis(100)).await,
            Err(_) => {} // this one connection failed (reset before accept): take the next
        }
    }
}

async fn echo(stream: TcpStream, acceptor: TlsAcceptor, config: WebSocketConfig) {
    let _ = stream.set_nodelay(true);
    let Ok(tls) = acceptor.accept(stream).await else {
        return;
    };
    let Ok(mut ws) = tokio_tungstenite::accept_async_with_config(tls, Some(config)).await else {
        return;
    };
    while let Some(Ok(message)) = ws.next().await {
        if (message.is_text() || message.is_binary()) && ws.send(message).await.is_err() {
            return;
        }
    }
}
