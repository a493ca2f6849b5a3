//! Comparison peer: a tokio-tungstenite broadcast (chat room) server, written
//! the way its users usually write one. Benchmark baseline, not a product.
//!
//! - One tokio `current_thread` runtime, one task per connection.
//! - Rooms: a connection joins the room named by its request path (`/` and
//!   `/chat/lobby` are rooms; the query string is not part of the name), read
//!   in the handshake callback of `accept_hdr_async_with_config`. Each room
//!   is a `tokio::sync::broadcast` channel of `--capacity` messages
//!   (default 1024), in a `Mutex<HashMap>` shared by every task
//!   (`peers::Rooms`), created on first join and removed when its last
//!   member leaves.
//! - Per message: `ws.next()` yields a whole text or binary message, which is
//!   published to the room with `broadcast::Sender::send` (the sender
//!   included; the payload is `Bytes`, shared, not copied); every member's
//!   task then `recv`s it and `ws.send(msg)`s it, which frames it for that
//!   member, writes and flushes: one frame encoding and one write per
//!   delivery.
//! - The task races `rx.recv()` against `ws.next()` in a `select!` (both
//!   cancel-safe), deliveries first (`biased`): a member writes what its room
//!   sent before it reads more, so a publisher is slowed down by its own
//!   socket rather than lagging its own channel.
//! - A member more than `--capacity` messages behind gets
//!   `RecvError::Lagged(n)`, skips them and counts them (the tokio idiom);
//!   the total is printed at exit.
//! - Pings are answered by tungstenite itself; after a close, deliveries
//!   stop and the next `next()` sends the close reply and ends the stream.
//! - `--read-buffer BYTES` as in `peer-tokio-tungstenite`; TCP_NODELAY set.

use futures_util::{SinkExt, StreamExt};
use peers::{is_resource_exhaustion, parse_args, room_of, Flags, Rooms, TUNGSTENITE_DEFAULT_READ_BUFFER};
use std::sync::Arc;
use std::time::Duration;
use tokio::net::{TcpListener, TcpStream};
use tokio_tungstenite::tungstenite::handshake::server::{ErrorResponse, Request, Response};
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;
use tokio_tungstenite::tungstenite::Message;

const NAME: &str = "peer-tokio-tungstenite-broadcast";

fn main() {
    let args = parse_args(NAME, Flags { read_buffer: true, capacity: true, ..Flags::default() });
    let config =
        WebSocketConfig::default().read_buffer_size(args.read_buffer.unwrap_or(TUNGSTENITE_DEFAULT_READ_BUFFER));
    let rooms = Rooms::<Message>::new(args.capacity);
    let shared = rooms.clone();
    let at_signal = || {
        let (open, skipped, capacity) = (rooms.len(), rooms.skipped(), args.capacity);
        eprintln!(
            "{NAME}: at exit: {open} rooms open, {skipped} messages skipped by lagging members (capacity {capacity})"
        );
    };
    peers::serve_until_signalled_then(
        NAME,
        args.listen,
        move |listener| accept_loop(listener, config, shared),
        at_signal,
    );
}

async fn accept_loop(listener: TcpListener, config: WebSocketConfig, rooms: Arc<Rooms<Message>>) {
    loop {
        match listener.accept().await {
            Ok((stream, _)) => {
                tokio::spawn(member(stream, config, rooms.clone()));
            }
            Err(e) if is_resource_exhaustion(&e) => tokio::time::sleep(Duration::from_millis(100)).await,
            Err(_) => {} // this one connection failed (reset before accept): take the next
        }
    }
}

async fn member(stream: TcpStream, config: WebSocketConfig, rooms: Arc<Rooms<Message>>) {
    let _ = stream.set_nodelay(true);
    let mut room = String::new();
    // The error type is tungstenite's `Callback` signature, not ours to shrink.
    #[allow(clippy::result_large_err)]
    let callback = |request: &Request, response: Response| {
        room = room_of(request.uri().path()).to_string();
        Ok::<_, ErrorResponse>(response)
    };
    let Ok(mut ws) = tokio_tungstenite::accept_hdr_async_with_config(stream, callback, Some(config)).await else {
        return;
    };
    // Leaves the room when the task ends, however it ends.
    let mut membership = rooms.join(&room);
    loop {
        tokio::select! {
            biased;
            delivery = membership.recv() => match delivery {
                Some(message) => {
                    if ws.send(message).await.is_err() {
                        return;
                    }
                }
                None => return,
            },
            incoming = ws.next() => match incoming {
                Some(Ok(message @ (Message::Text(_) | Message::Binary(_)))) => membership.publish(message),
                Some(Ok(Message::Close(_))) => break,
                Some(Ok(_)) => {} // ping (tungstenite queues the pong), pong
                Some(Err(_)) | None => return,
            },
        }
    }
    // The peer closed: no more deliveries (tungstenite refuses to send after
    // a close); the next read flushes the close reply and ends the stream.
    drop(membership);
    while let Some(Ok(_)) = ws.next().await {}
}
