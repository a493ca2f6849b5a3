//! Comparison peer: a tokio-tungstenite echo server, written the way its users
//! usually write one. Benchmark baseline, not a product.
//!
//! - One tokio `current_thread` runtime, one task per connection.
//! - `--read-buffer BYTES` sets `WebSocketConfig::read_buffer_size`; the
//!   default is tungstenite's own (128 KiB, allocated per connection); the
//!   benchmarks also run it with 4096.
//! - Per message: `ws.next()` yields a whole message (tungstenite reassembles
//!   fragments and checks UTF-8), and a text or binary one is echoed with
//!   `ws.send(msg)`, which writes it and flushes at once: one write per echo,
//!   as in the usual `while let Some(msg) = ws.next().await { ws.send(msg) }`
//!   loop. (The crate's echo-server example instead splits the stream and
//!   `forward`s it, which flushes only when the read side has nothing more;
//!   with one message in flight per connection both write once per echo.)
//! - Pings are answered by tungstenite itself (the pong is flushed on the
//!   next `next()`), and so is a close: after `Message::Close` the next
//!   `next()` sends the reply and ends the stream.
//! - TCP_NODELAY is set, as wsloop does, so that no peer waits on Nagle.

use futures_util::{SinkExt, StreamExt};
use peers::{is_resource_exhaustion, parse_args, TUNGSTENITE_DEFAULT_READ_BUFFER};
use std::time::Duration;
use tokio::net::{TcpListener, TcpStream};
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;

const NAME: &str = "peer-tokio-tungstenite";

fn main() {
    let args = parse_args(NAME, peers::Flags { read_buffer: true, ..Default::default() });
    let config =
        WebSocketConfig::default().read_buffer_size(args.read_buffer.unwrap_or(TUNGSTENITE_DEFAULT_READ_BUFFER));
    peers::serve_until_signalled(NAME, args.listen, |listener| accept_loop(listener, config));
}

async fn accept_loop(listener: TcpListener, config: WebSocketConfig) {
    loop {
        match listener.accept().await {
            Ok((stream, _)) => {
                tokio::spawn(echo(stream, config));
            }
            Err(e) if is_resource_exhaustion(&e) => tokio::time::sleep(Duration::from_millis(100)).await,
            Err(_) => {} // this one connection failed (reset before accept): take the next
        }
    }
}

async fn echo(stream: TcpStream, config: WebSocketConfig) {
    let _ = stream.set_nodelay(true);
    let Ok(mut ws) = tokio_tungstenite::accept_async_with_config(stream, Some(config)).await else {
        return;
    };
    while let Some(Ok(message)) = ws.next().await {
        if (message.is_text() || message.is_binary()) && ws.send(message).await.is_err() {
            return;
        }
    }
}
