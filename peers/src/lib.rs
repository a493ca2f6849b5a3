//! What the comparison peers share: the command line, the listening socket
//! (wsloop's own `listener::bind_std`, so that the comparison is like for
//! like), the open-file limit, the one `listening on` line the scripts wait
//! for, the tokio peers' runtime, and the broadcast peers' rooms.
//!
//! These servers exist only to be measured against wsloop by the scripts in
//! `scripts/`; none of this is part of wsloop.

use std::{future::Future, net::SocketAddr, path::PathBuf, process};

pub use wsloop::listener::is_resource_exhaustion;
use wsloop::{
    listener::{bind_std, ListenOptions},
    sys::raise_fd_limit,
};

/// tungstenite's own default read buffer (`WebSocketConfig::read_buffer_size`).
pub const TUNGSTENITE_DEFAULT_READ_BUFFER: usize = 128 * 1024;

/// The default capacity of a broadcast peer's channel per room
/// (`--capacity`): how many messages a member may fall behind its room
/// before it skips (and counts) the oldest ones. Far above what a
/// closed-loop publisher keeps in flight (one message each), so that a
/// member that keeps reading never lags in a closed-loop run; a fixed-rate
/// run that outpaces a member shows up as skipped messages, not as memory.
pub const DEFAULT_BROADCAST_CAPACITY: usize = 1024;

/// The optional flags a peer takes, beyond `--listen`.
#[derive(Debug, Clone, Copy, Default)]
pub struct Flags {
    /// `--read-buffer BYTES` (tungstenite's `read_buffer_size`).
    pub read_buffer: bool,
    /// `--capacity N` (a broadcast peer's messages in flight per room).
    pub capacity: bool,
    /// `--tls-cert FILE --tls-key FILE`, both required.
    pub tls: bool,
}

/// The parsed command line of a peer.
#[derive(Debug, Clone)]
pub struct Args {
    /// `--listen HOST:PORT` (port 0: the kernel picks one).
    pub listen: SocketAddr,
    /// `--read-buffer BYTES`, for the peers that take it.
    pub read_buffer: Option<usize>,
    /// `--capacity N` for the broadcast peers (default [`DEFAULT_BROADCAST_CAPACITY`]).
    pub capacity: usize,
    /// `--tls-cert FILE` (PEM, the chain, leaf first), for the TLS peer.
    pub tls_cert: Option<PathBuf>,
    /// `--tls-key FILE` (PEM, PKCS#8, SEC1 or PKCS#1), for the TLS peer.
    pub tls_key: Option<PathBuf>,
}

/// Parses `--listen HOST:PORT` (default 127.0.0.1:9001) and the optional
/// flags that `flags` allows; each also as `--flag=value`.
/// Prints usage and exits 0 on `--help`, or exits 2 on anything else
/// (including a TLS peer without both of its files).
pub fn parse_args(name: &str, flags: Flags) -> Args {
    let mut usage = format!("usage: {name} [--listen HOST:PORT]");
    if flags.read_buffer {
        usage.push_str(" [--read-buffer BYTES]");
    }
    if flags.capacity {
        usage.push_str(&format!(" [--capacity N (default {DEFAULT_BROADCAST_CAPACITY})]"));
    }
    if flags.tls {
        usage.push_str(" --tls-cert FILE --tls-key FILE");
    }
    let fail = |message: String| -> ! {
        eprintln!("{name}: {message}\n{usage}");
        process::exit(2)
    };
    let mut args = Args {
        listen: SocketAddr::from(([127, 0, 0, 1], 9001)),
        read_buffer: None,
        capacity: DEFAULT_BROADCAST_CAPACITY,
        tls_cert: None,
        tls_key: None,
    };
    let positive = |flag: &str, v: &str| match v.parse::<usize>() {
        Ok(n) if n > 0 => n,
        _ => fail(format!("{flag} {v}: not a positive number")),
    };
    let mut argv = std::env::args().skip(1);
    while let Some(arg) = argv.next() {
        if arg == "-h" || arg == "--help" {
            println!("{usage}");
            process::exit(0);
        }
        let (flag, inline) = match arg.split_once('=') {
            Some((flag, value)) => (flag.to_string(), Some(value.to_string())),
            None => (arg.clone(), None),
        };
        let mut value =
            || inline.clone().or_else(|| argv.next()).unwrap_or_else(|| fail(format!("{flag} needs a value")));
        match flag.as_str() {
            "--listen" => {
                let v = value();
                args.listen = v.parse().unwrap_or_else(|_| fail(format!("--listen {v}: not HOST:PORT")));
            }
            "--read-buffer" if flags.read_buffer => args.read_buffer = Some(positive(&flag, &value())),
            // tokio's broadcast channel takes up to usize::MAX / 2; anything near it is a typo.
            "--capacity" if flags.capacity => match positive(&flag, &value()) {
                n if n <= 1 << 24 => args.capacity = n,
                n => fail(format!("--capacity {n}: at most {}", 1 << 24)),
            },
            "--tls-cert" if flags.tls => args.tls_cert = Some(PathBuf::from(value())),
            "--tls-key" if flags.tls => args.tls_key = Some(PathBuf::from(value())),
            _ => fail(format!("unknown argument {arg}")),
        }
    }
    if flags.tls && (args.tls_cert.is_none() || args.tls_key.is_none()) {
        fail("--tls-cert and --tls-key are both required".to_string());
    }
    args
}

/// Binds or exits 1 with the reason, then prints the one line that the
/// scripts wait for, with the real port: `listening on HOST:PORT`.
/// The listener is set up as wsloop's (its default backlog, `SO_REUSEADDR`),
/// after raising the open-file limit as wsloop does.
pub fn bind_and_announce(name: &str, addr: SocketAddr) -> std::net::TcpListener {
    // Best effort, as in wsloop: the hard limit is what the machine allows.
    let _ = raise_fd_limit();
    let options = ListenOptions { backlog: wsloop::config::DEFAULT_BACKLOG, reuse_port: false };
    let listener = bind_std(addr, options).unwrap_or_else(|e| {
        eprintln!("{name}: cannot listen on {addr}: {e}");
        process::exit(1)
    });
    match listener.local_addr() {
        Ok(local) => eprintln!("listening on {local}"),
        Err(e) => {
            eprintln!("{name}: cannot read the listening address: {e}");
            process::exit(1)
        }
    }
    listener
}

/// Runs a tokio peer: a `current_thread` runtime, the listener handed to
/// `accept_loop`, until SIGINT or SIGTERM (exit 0). Dropping the runtime then
/// drops every connection task.
pub fn serve_until_signalled<F, Fut>(name: &str, listen: SocketAddr, accept_loop: F)
where
    F: FnOnce(tokio::net::TcpListener) -> Fut,
    Fut: Future<Output = ()> + Send + 'static,
{
    serve_until_signalled_then(name, listen, accept_loop, || {});
}

/// [`serve_until_signalled`], calling `at_signal` once the signal came and
/// before the runtime drops the connection tasks: what it sees (rooms open,
/// for one) is the state the clients left the server in.
pub fn serve_until_signalled_then<F, Fut, G>(name: &str, listen: SocketAddr, accept_loop: F, at_signal: G)
where
    F: FnOnce(tokio::net::TcpListener) -> Fut,
    Fut: Future<Output = ()> + Send + 'static,
    G: FnOnce(),
{
    use tokio::signal::unix::{signal, SignalKind};
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("tokio runtime");
    let listener = bind_and_announce(name, listen);
    runtime.block_on(async move {
        let listener = tokio::net::TcpListener::from_std(listener).expect("register the listener with tokio");
        let mut interrupt = signal(SignalKind::interrupt()).expect("SIGINT handler");
        let mut terminate = signal(SignalKind::terminate()).expect("SIGTERM handler");
        tokio::spawn(accept_loop(listener));
        tokio::select! {
            _ = interrupt.recv() => {}
            _ = terminate.recv() => {}
        }
        at_signal();
    });
}

/// The rooms of a tokio broadcast peer, the way tokio users build a chat: a
/// map from room name to a `tokio::sync::broadcast::Sender` behind a
/// `std::sync::Mutex`, shared by every connection task through an `Arc`.
/// A room is created by its first member and removed when its last member
/// leaves (the [`Membership`] drops). Each member holds a `Receiver`; a
/// member that falls more than the capacity behind gets
/// `RecvError::Lagged(n)`, skips those n messages (tokio's idiom), and they
/// are counted in [`Rooms::skipped`].
pub struct Rooms<T> {
    channels: std::sync::Mutex<std::collections::HashMap<String, tokio::sync::broadcast::Sender<T>>>,
    capacity: usize,
    skipped: std::sync::atomic::AtomicU64,
}

impl<T: Clone> Rooms<T> {
    /// No rooms yet; each room's channel will hold `capacity` messages.
    pub fn new(capacity: usize) -> std::sync::Arc<Self> {
        std::sync::Arc::new(Rooms { channels: Default::default(), capacity, skipped: Default::default() })
    }

    /// Joins (and creates, if it is the first member) room `name`.
    pub fn join(self: &std::sync::Arc<Self>, name: &str) -> Membership<T> {
        let mut channels = self.lock();
        let tx = match channels.get(name) {
            Some(tx) => tx.clone(),
            None => {
                let (tx, _) = tokio::sync::broadcast::channel(self.capacity);
                channels.insert(name.to_string(), tx.clone());
                tx
            }
        };
        // Subscribed under the lock, so that a leaving last member (which
        // also counts receivers under it) never removes a room being joined.
        let rx = tx.subscribe();
        drop(channels);
        Membership { rooms: self.clone(), room: name.to_string(), tx, rx: Some(rx) }
    }

    /// Messages skipped by members that lagged, over all rooms, so far.
    pub fn skipped(&self) -> u64 {
        self.skipped.load(std::sync::atomic::Ordering::Relaxed)
    }

    /// Rooms open now.
    pub fn len(&self) -> usize {
        self.lock().len()
    }

    /// Whether no room is open.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, std::collections::HashMap<String, tokio::sync::broadcast::Sender<T>>> {
        // A panic while holding the lock (there is none that can happen:
        // only map operations run under it) must not take the peer down.
        self.channels.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

/// One connection's place in one room: publish to it, receive from it.
/// Dropping it leaves the room, and removes the room if it was the last member.
pub struct Membership<T> {
    rooms: std::sync::Arc<Rooms<T>>,
    room: String,
    tx: tokio::sync::broadcast::Sender<T>,
    rx: Option<tokio::sync::broadcast::Receiver<T>>,
}

impl<T: Clone> Membership<T> {
    /// Sends `message` to every member of the room, this one included.
    /// Never waits: a full channel overwrites its oldest message, which
    /// members that had not received it yet then skip.
    pub fn publish(&self, message: T) {
        // Err only when there is no receiver, and this member is one.
        let _ = self.tx.send(message);
    }

    /// A handle on the room's channel, to publish from another future of
    /// the same task while this membership receives.
    pub fn sender(&self) -> tokio::sync::broadcast::Sender<T> {
        self.tx.clone()
    }

    /// The room's next message; messages this member lagged behind on are
    /// skipped and counted. Cancel-safe (as `broadcast::Receiver::recv`), so
    /// it can be raced in `select!`. None: the room's channel is closed,
    /// which cannot happen while this member holds a sender.
    pub async fn recv(&mut self) -> Option<T> {
        use tokio::sync::broadcast::error::RecvError;
        let rx = self.rx.as_mut()?;
        loop {
            match rx.recv().await {
                Ok(message) => return Some(message),
                Err(RecvError::Lagged(n)) => {
                    self.rooms.skipped.fetch_add(n, std::sync::atomic::Ordering::Relaxed);
                }
                Err(RecvError::Closed) => return None,
            }
        }
    }
}

impl<T> Drop for Membership<T> {
    fn drop(&mut self) {
        // Our receiver goes first; then, under the lock (joins subscribe under
        // it too), no receiver left means no member left.
        drop(self.rx.take());
        let mut channels = self.rooms.channels.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        if self.tx.receiver_count() == 0 && channels.get(&self.room).is_some_and(|tx| tx.same_channel(&self.tx)) {
            channels.remove(&self.room);
        }
    }
}

/// The room a request path names: the path without its query string
/// (`/chat/lobby?x=1` is room `/chat/lobby`; `/` is a room too).
pub fn room_of(target: &str) -> &str {
    target.split_once('?').map_or(target, |(path, _)| path)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn block_on<F: Future>(future: F) -> F::Output {
        tokio::runtime::Builder::new_current_thread().build().expect("runtime").block_on(future)
    }

    #[test]
    fn a_room_lives_from_its_first_join_to_its_last_leave() {
        let rooms = Rooms::<u32>::new(4);
        let a1 = rooms.join("/a");
        let a2 = rooms.join("/a");
        let b = rooms.join("/b");
        assert_eq!(rooms.len(), 2);
        drop(a1);
        assert_eq!(rooms.len(), 2, "/a still has a member");
        drop(a2);
        assert_eq!(rooms.len(), 1, "/a is gone with its last member");
        drop(b);
        assert!(rooms.is_empty());
        let again = rooms.join("/a");
        assert_eq!(rooms.len(), 1, "joining again creates it anew");
        drop(again);
        assert!(rooms.is_empty());
    }

    #[test]
    fn every_member_gets_the_room_s_messages_and_only_those() {
        let rooms = Rooms::<u32>::new(8);
        let (mut a1, mut a2, mut b) = (rooms.join("/a"), rooms.join("/a"), rooms.join("/b"));
        a1.publish(1);
        a2.sender().send(2).expect("a receiver");
        b.publish(3);
        block_on(async {
            assert_eq!((a1.recv().await, a1.recv().await), (Some(1), Some(2)), "the sender included");
            assert_eq!((a2.recv().await, a2.recv().await), (Some(1), Some(2)));
            assert_eq!(b.recv().await, Some(3));
        });
    }

    #[test]
    fn a_lagging_member_skips_and_counts() {
        let rooms = Rooms::<u32>::new(2);
        let mut slow = rooms.join("/a");
        for i in 0..5 {
            slow.publish(i);
        }
        // Capacity 2: the three oldest are gone; the member gets the last two.
        block_on(async { assert_eq!((slow.recv().await, slow.recv().await), (Some(3), Some(4))) });
        assert_eq!(rooms.skipped(), 3);
    }

    #[test]
    fn the_room_is_the_path_without_the_query() {
        assert_eq!(room_of("/chat/lobby?nick=ann"), "/chat/lobby");
        assert_eq!(room_of("/"), "/");
        assert_eq!(room_of("/?"), "/");
    }
}
