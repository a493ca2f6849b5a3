//! Comparison peer: a fastwebsockets echo server, as its authors' own
//! `examples/echo_server.rs` writes one. Benchmark baseline, not a product.
//!
//! - One tokio `current_thread` runtime, one task per connection; the HTTP
//!   upgrade goes through hyper 1 (`fastwebsockets::upgrade`), and the
//!   WebSocket task runs inside `tokio::task::unconstrained`, as in the example.
//! - Per message: `FragmentCollector::read_frame` yields a whole message
//!   (fragments reassembled, text checked as UTF-8), and a text or binary one
//!   is echoed with `write_frame`, which writes it at once: the header and the
//!   payload in one `writev` when the payload is over 1 KiB (the crate's
//!   default `writev_threshold`), else one `write` of a copy. No flush policy
//!   beyond that: fastwebsockets has no write buffer.
//! - Left at the crate's defaults: auto-pong (a ping is answered inside
//!   `read_frame`), auto-close (a close is answered there, then returned, and
//!   the loop ends), vectored writes on, 64 MiB message limit.
//! - Differences from the example: it prints nothing per connection, binds
//!   with wsloop's backlog, sets TCP_NODELAY (as wsloop does), and exits 0 on
//!   SIGINT/SIGTERM.

use fastwebsockets::{upgrade, FragmentCollector, OpCode, WebSocketError};
use http_body_util::Empty;
use hyper::body::{Bytes, Incoming};
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Request, Response};
use peers::{is_resource_exhaustion, parse_args};
use std::time::Duration;
use tokio::net::TcpListener;

const NAME: &str = "peer-fastwebsockets";

fn main() {
    let args = parse_args(NAME, peers::Flags::default());
    peers::serve_until_signalled(NAME, args.listen, accept_loop);
}

async fn accept_loop(listener: TcpListener) {
    loop {
        let stream = match listener.accept().await {
            Ok((stream, _)) => stream,
            Err(e) if is_resource_exhaustion(&e) => {
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
            Err(_) => continue, // this one connection failed: take the next
        };
        let _ = stream.set_nodelay(true);
        tokio::spawn(async move {
            let io = hyper_util::rt::TokioIo::new(stream);
            let _ = http1::Builder::new().serve_connection(io, service_fn(server_upgrade)).with_upgrades().await;
        });
    }
}

async fn server_upgrade(mut request: Request<Incoming>) -> Result<Response<Empty<Bytes>>, WebSocketError> {
    let (response, upgraded) = upgrade::upgrade(&mut request)?;
    tokio::task::spawn(async move {
        let _ = tokio::task::unconstrained(echo(upgraded)).await;
    });
    Ok(response)
}

async fn echo(upgraded: upgrade::UpgradeFut) -> Result<(), WebSocketError> {
    let mut ws = FragmentCollector::new(upgraded.await?);
    loop {
        let frame = ws.read_frame().await?;
        match frame.opcode {
            OpCode::Close => return Ok(()),
            OpCode::Text | OpCode::Binary => ws.write_frame(frame).await?,
            _ => {}
        }
    }
}
