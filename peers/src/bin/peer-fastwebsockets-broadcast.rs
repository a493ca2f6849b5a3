//! Comparison peer: a fastwebsockets broadcast (chat room) server, built as
//! the crate's users build one. Benchmark baseline, not a product.
//!
//! - One tokio `current_thread` runtime, one task per connection; the HTTP
//!   upgrade goes through hyper 1 (`fastwebsockets::upgrade`) as in
//!   `peer-fastwebsockets`. Unlike there (and the crate's echo example), the
//!   task is not `unconstrained`: its reader would then read everything its
//!   socket holds before its writer, or any other member's, gets a turn, so
//!   a pipelining publisher would lag its own channel; tokio's cooperative
//!   budget (the default) lets them take turns.
//! - Rooms: the room is the request path without its query string; each is a
//!   `tokio::sync::broadcast` channel of `--capacity` (default 1024)
//!   `(OpCode, Bytes)` messages, in a `Mutex<HashMap>` shared by every task
//!   (`peers::Rooms`), created on first join and removed when its last member
//!   leaves.
//! - Reading and writing at once: `read_frame` is not cancel-safe (it
//!   consumes header bytes before it awaits the rest), so it cannot be raced
//!   against `recv()` in a `select!`. The connection is split instead with
//!   the crate's own `WebSocket::split` (its `unstable-split` feature) over
//!   `tokio::io::split`; one task runs two loops that never get cancelled
//!   mid-way: a reader (`FragmentCollectorRead::read_frame`, a whole message)
//!   that publishes each text or binary message to the room, and a writer
//!   that `recv`s the room's messages and writes each one itself with
//!   `write_frame` (header and payload in one `writev` over 1 KiB, else one
//!   `write`; no write buffer). The write half sits behind a
//!   `tokio::sync::Mutex`, since the reader writes too: pongs and the close
//!   reply (auto-pong and auto-close stay on).
//! - A member more than `--capacity` messages behind gets
//!   `RecvError::Lagged(n)`, skips them and counts them; the total is printed
//!   at exit. Since reading and writing take turns rather than the writer
//!   going first, a publisher that pipelines more than `--capacity` messages
//!   faster than its own socket drains can lag on its own messages too (as
//!   an echo through the room); a closed-loop publisher never does.
//! - The room is joined when the upgrade request is answered, before the 101
//!   goes out, so a client that has its 101 gets every later message.
//!   TCP_NODELAY set.

use fastwebsockets::{upgrade, FragmentCollectorRead, Frame, OpCode, Payload, WebSocketError};
use http_body_util::Empty;
use hyper::body::{Bytes, Incoming};
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Request, Response};
use peers::{is_resource_exhaustion, parse_args, room_of, Flags, Membership, Rooms};
use std::sync::Arc;
use std::time::Duration;
use tokio::net::TcpListener;
use tokio::sync::Mutex;

const NAME: &str = "peer-fastwebsockets-broadcast";

/// What a room carries: the opcode (text or binary) and the whole payload, shared.
type Message = (OpCode, Bytes);

fn main() {
    let args = parse_args(NAME, Flags { capacity: true, ..Flags::default() });
    let rooms = Rooms::<Message>::new(args.capacity);
    let shared = rooms.clone();
    let at_signal = || {
        let (open, skipped, capacity) = (rooms.len(), rooms.skipped(), args.capacity);
        eprintln!(
            "{NAME}: at exit: {open} rooms open, {skipped} messages skipped by lagging members (capacity {capacity})"
        );
    };
    peers::serve_until_signalled_then(NAME, args.listen, move |listener| accept_loop(listener, shared), at_signal);
}

async fn accept_loop(listener: TcpListener, rooms: Arc<Rooms<Message>>) {
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
        let rooms = rooms.clone();
        tokio::spawn(async move {
            let io = hyper_util::rt::TokioIo::new(stream);
            let service = service_fn(move |request| server_upgrade(request, rooms.clone()));
            let _ = http1::Builder::new().serve_connection(io, service).with_upgrades().await;
        });
    }
}

async fn server_upgrade(
    mut request: Request<Incoming>,
    rooms: Arc<Rooms<Message>>,
) -> Result<Response<Empty<Bytes>>, WebSocketError> {
    let (response, upgraded) = upgrade::upgrade(&mut request)?;
    // Joined before the 101 goes out, so that a message sent by anyone once
    // this client has its answer reaches it. Leaves the room when the task
    // ends, however it ends (a failed upgrade included).
    let membership = rooms.join(room_of(request.uri().path()));
    tokio::task::spawn(async move {
        let _ = member(upgraded, membership).await;
    });
    Ok(response)
}

async fn member(upgraded: upgrade::UpgradeFut, mut membership: Membership<Message>) -> Result<(), WebSocketError> {
    let (read, write) = upgraded.await?.split(tokio::io::split);
    let mut read = FragmentCollectorRead::new(read);
    let write = &Mutex::new(write);
    // The reader publishes through its own handle on the room while the
    // writer holds the membership to receive.
    let room_tx = membership.sender();
    let reader = async {
        // The reader's own writes: pongs and the close reply.
        let mut obligated = |frame: Frame<'static>| async move { write.lock().await.write_frame(frame).await };
        loop {
            let frame = read.read_frame(&mut obligated).await?;
            match frame.opcode {
                OpCode::Close => return Ok(()), // the reply went out through `obligated`
                opcode @ (OpCode::Text | OpCode::Binary) => {
                    // Err only without receivers, and this member is one.
                    let _ = room_tx.send((opcode, Bytes::from(Vec::from(frame.payload))));
                }
                _ => {}
            }
        }
    };
    let writer = async {
        while let Some((opcode, payload)) = membership.recv().await {
            let frame = Frame::new(true, opcode, None, Payload::Borrowed(&payload));
            write.lock().await.write_frame(frame).await?;
        }
        Ok(())
    };
    tokio::select! {
        result = reader => result,
        result = writer => result,
    }
}
