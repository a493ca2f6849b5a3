//! The Redis bridge: what joins this process's rooms to the same rooms in
//! other processes, through Redis pub/sub.
//!
//! The bridge knows rooms only by name: the loops tell it which rooms have
//! local members ([`Bridge::join`], [`Bridge::leave`]) and hand it the
//! messages to send ([`Bridge::publish`]); it hands back, through the
//! `deliver` callback given to [`Bridge::start`], every message another
//! process published in one of those rooms. None of these calls blocks: they
//! update a map or push into a bounded queue, and the bridge's two threads
//! do the talking to Redis.
//!
//! # Threads and connections
//!
//! - **The subscriber thread** owns a connection in subscribe mode (which
//!   can only (un)subscribe and ping). It SUBSCRIBEs to `prefix + room` when
//!   a room gets its first local member and UNSUBSCRIBEs when the last one
//!   leaves (reference counts, not one pattern subscription for everything:
//!   Redis then sends each process only the rooms it serves), and calls
//!   `deliver` for each message from another process.
//! - **The publisher thread** owns a second connection and sends the queued
//!   messages as PUBLISH commands, pipelined: whatever queued up while one
//!   batch was on its way goes out as the next batch, in one write. When the
//!   subscriber loses Redis (or gets it back), it pokes the publisher to
//!   check its own connection (or retry) at once, so that the two agree on
//!   whether Redis is there.
//!
//! Both use the `redis` crate's synchronous client. An async client would
//! need a runtime (tokio) in the server's dependency tree, which wsloop
//! keeps free of it (the benchmark peers that use tokio are a separate crate
//! for that reason), and it would buy nothing here: two connections, two
//! threads that block on them, no per-connection tasks. The one thing the
//! sync client cannot do is be woken while it waits for a message, so the
//! subscriber waits with a read timeout of [`SUBSCRIBER_TICK`] and applies
//! join/leave changes (and notices shutdown) between waits; a message still
//! wakes it at once, since the wait is a blocking read.
//!
//! # Wire format
//!
//! Each message on Redis is `PUBLISH prefix+room envelope`, where the
//! envelope is a fixed [`HEADER_LEN`]-byte header followed by the payload,
//! byte for byte (binary safe):
//!
//! | bytes | field |
//! |---|---|
//! | 0 | format version, [`WIRE_VERSION`] (1) |
//! | 1 | flags: bit 0 ([`FLAG_TEXT`]) set for a text message, clear for binary; other bits 0 |
//! | 2..10 | node id of the publishing process, unsigned 64-bit big-endian |
//! | 10.. | the payload (valid UTF-8 when the text flag is set) |
//!
//! A message carrying our own node id is our own publish coming back (this
//! process subscribes to the rooms it publishes in, and delivered the
//! message locally already): it is skipped and counted. An envelope that is
//! too short, has another version or unknown flags, or claims text that is
//! not UTF-8 is counted as malformed and dropped (a browser would close its
//! connection over invalid UTF-8 in a text frame).
//!
//! # Guarantees
//!
//! - **At most once** across processes. Messages published while the
//!   publisher connection is down, or lost with it, are dropped and counted
//!   ([`BridgeStats::dropped_redis_away`]); a subscriber that is disconnected
//!   misses what is published meanwhile (Redis keeps no pub/sub history).
//!   Local delivery is the caller's and does not depend on Redis.
//! - **Order**: one publisher connection per process, so the messages one
//!   process publishes to a room reach every other process in the order they
//!   were published. Messages of different processes interleave as Redis
//!   receives them.
//! - **Bounded memory**: at most [`BridgeConfig::queue`] messages wait to be
//!   published; beyond that [`Bridge::publish`] drops and counts
//!   ([`BridgeStats::dropped_queue_full`]).
//! - **Redis away**: at start or later, the bridge keeps accepting calls,
//!   logs one line per change of state (connected, lost, unreachable at
//!   start; never one per message or per attempt), reconnects with capped
//!   exponential backoff ([`BACKOFF_INITIAL`] doubling to [`BACKOFF_MAX`]),
//!   and on reconnection subscribes again to every room with local members.
//!   Redis also disconnects a subscriber that reads too slowly
//!   (`client-output-buffer-limit pubsub`); that is a lost connection too,
//!   and counts in [`BridgeStats::reconnects`].

use std::{
    collections::{HashMap, HashSet},
    hash::{BuildHasher, Hasher, RandomState},
    io::{self, Write as _},
    sync::{
        atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering},
        mpsc::{self, Receiver, RecvTimeoutError, SyncSender, TrySendError},
        Arc, Condvar, Mutex, MutexGuard,
    },
    thread::{self, JoinHandle},
    time::{Duration, Instant, SystemTime, UNIX_EPOCH},
};

use bytes::Bytes;
use redis::{
    io::tcp::TcpSettings, Client, Connection, IntoConnectionInfo, Msg, PubSub, RedisError, RedisResult, RedisWrite,
    ToRedisArgs, Value,
};
use serde::Serialize;
use tracing::{debug, info, warn};

/// Default channel namespace (`--redis-prefix`): several deployments can
/// share one Redis under different prefixes.
pub const DEFAULT_PREFIX: &str = "wsloop:";

/// Default bound of the publish queue, in messages: about 80 ms of a busy
/// process's output at 100k messages/s, enough to ride out a slow reply from
/// Redis without growing memory beyond it.
pub const DEFAULT_QUEUE: usize = 8192;

/// First wait before reconnecting: a restarting Redis needs about this long
/// to listen again, and retrying sooner only spends connects.
pub const BACKOFF_INITIAL: Duration = Duration::from_millis(100);

/// Longest wait between attempts: how long a process may stay cut off after
/// Redis is back. At 5 s even a thousand processes waiting for a dead Redis
/// make only 200 connection attempts a second.
pub const BACKOFF_MAX: Duration = Duration::from_secs(5);

/// Bound on a TCP connect plus the connection's set-up commands. On a LAN
/// these take a millisecond; a second means a host that drops our SYNs.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(1);

/// Bound on Redis's reply to a command (a PUBLISH pipeline, a (UN)SUBSCRIBE,
/// a PING) and on writing it. Redis answers in microseconds, so a second of
/// silence means it is gone or stopped: the connection is then dropped and
/// made again.
pub const COMMAND_TIMEOUT: Duration = Duration::from_secs(1);

/// How long the subscriber waits for a message before it looks at join and
/// leave changes and at shutdown: the sync client cannot be woken in its
/// read, so this bounds how late a change takes effect on an idle
/// connection. 100 empty wakeups a second cost next to nothing.
pub const SUBSCRIBER_TICK: Duration = Duration::from_millis(10);

/// A connection that has been quiet this long is PINGed, so that a Redis
/// that vanished without closing the connection (host down, network
/// partition) is noticed within this plus [`COMMAND_TIMEOUT`], not at the
/// next message.
pub const HEALTH_CHECK_INTERVAL: Duration = Duration::from_secs(1);

/// Most PUBLISH commands in one pipeline: bounds the command buffer and how
/// long the messages behind a batch wait for it.
pub const MAX_BATCH_MESSAGES: usize = 512;

/// A pipeline takes no more messages once its payloads pass this many bytes
/// (one large message still goes alone).
pub const MAX_BATCH_BYTES: usize = 1 << 20;

/// Most channels named in one SUBSCRIBE or UNSUBSCRIBE, so that
/// resubscribing tens of thousands of rooms after a reconnection is a few
/// commands of bounded size rather than one huge one.
pub const MAX_CHANNELS_PER_COMMAND: usize = 1024;

/// How long [`Bridge::shutdown`] waits for its threads: longer than the
/// longest call they can be blocked in (a command's write plus its reply).
pub const SHUTDOWN_TIMEOUT: Duration = Duration::from_secs(3);

/// The envelope's format version (its first byte).
pub const WIRE_VERSION: u8 = 1;

/// The envelope's flag for a text message (binary when clear).
pub const FLAG_TEXT: u8 = 1;

/// Length of the envelope header: version, flags, 8-byte node id.
pub const HEADER_LEN: usize = 10;

/// Where the bridge connects and how it names and queues things.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BridgeConfig {
    /// The Redis server, as `redis://[[USER]:PASSWORD@]HOST[:PORT][/DB]`
    /// (`redis+unix:///PATH` for a Unix socket). No TLS: `rediss://` is
    /// refused at start, terminate TLS in front of Redis if needed.
    pub url: String,
    /// Prepended to a room's name to make its Redis channel (`--redis-prefix`).
    pub prefix: String,
    /// Bound of the publish queue, in messages (at least 1); when it is
    /// full, [`Bridge::publish`] drops the message and counts it.
    pub queue: usize,
}

impl BridgeConfig {
    /// A configuration for `url` with the default prefix and queue bound.
    pub fn new(url: impl Into<String>) -> Self {
        BridgeConfig { url: url.into(), prefix: DEFAULT_PREFIX.to_owned(), queue: DEFAULT_QUEUE }
    }
}

/// A message as it crosses Redis: which room, text or binary, the payload.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Envelope {
    /// The room's name (the channel name without the prefix).
    pub room: Box<str>,
    /// A text message (its payload is valid UTF-8); binary when false.
    pub text: bool,
    /// The message itself.
    pub payload: Bytes,
}

/// The bridge's counters and state, for `/stats`, `/metrics` and the
/// monitor page. Counters count since [`Bridge::start`].
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct BridgeStats {
    /// Both connections (subscriber and publisher) are up.
    pub connected: bool,
    /// Messages Redis accepted from us (PUBLISH answered).
    pub published: u64,
    /// Messages from other processes handed to `deliver`.
    pub received: u64,
    /// Publishes refused because the queue was full.
    pub dropped_queue_full: u64,
    /// Publishes dropped because the publisher connection was down, or was
    /// lost (or answered an error) with them on their way.
    pub dropped_redis_away: u64,
    /// Our own messages coming back from Redis, skipped (already delivered
    /// locally).
    pub echoes_skipped: u64,
    /// Messages from Redis with a bad envelope, dropped.
    pub malformed: u64,
    /// Times the bridge got connected again after losing Redis (the first
    /// connection is not counted).
    pub reconnects: u64,
    /// Rooms with local interest (joined more often than left).
    pub rooms: usize,
    /// Channels the subscriber connection holds at Redis now (0 while away).
    pub subscribed: usize,
}

impl BridgeStats {
    /// All publishes that did not reach Redis.
    pub fn dropped(&self) -> u64 {
        self.dropped_queue_full + self.dropped_redis_away
    }
}

/// A node id for this process, for [`Bridge::start`]: random (std's hash
/// keys, seeded by the OS) mixed with the pid and the time, so that two
/// processes started in the same instant still get different ids.
pub fn random_node_id() -> u64 {
    let mut hasher = RandomState::new().build_hasher();
    hasher.write_u32(std::process::id());
    hasher.write_u128(SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_nanos()));
    hasher.finish()
}

/// The handle to a running bridge, owned by the process and shared by its
/// loops (it is `Send + Sync`; wrap it in an `Arc`). Dropping it stops the
/// bridge as [`Bridge::shutdown`] does.
pub struct Bridge {
    shared: Arc<Shared>,
    /// The publish queue's sending end; `None` once closing.
    queue: Option<SyncSender<Job>>,
    threads: Vec<JoinHandle<()>>,
}

impl Bridge {
    /// Starts the bridge's threads and returns at once: it never waits for
    /// Redis, which may be down at start (the threads connect in the
    /// background, and until they have, publishes are dropped and counted).
    ///
    /// `node_id` tags every message this process publishes, so that it can
    /// skip its own when Redis sends them back ([`random_node_id`] makes
    /// one). `deliver` is called on the bridge's subscriber thread for every
    /// message from another process, in a room with local interest; it
    /// should hand the message over (push it to the loops and wake them) and
    /// return: while it runs, no other message is read.
    ///
    /// Fails only on a configuration error (a URL the client refuses, a
    /// queue bound of 0) or when a thread cannot be spawned.
    pub fn start(config: BridgeConfig, node_id: u64, deliver: Box<dyn FnMut(Envelope) + Send>) -> io::Result<Bridge> {
        if config.queue == 0 {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                "the redis publish queue bound must be at least 1",
            ));
        }
        let invalid = |e: RedisError| io::Error::new(io::ErrorKind::InvalidInput, format!("redis url: {e}"));
        // Nagle's algorithm would hold a PUBLISH written while the previous
        // one is unacknowledged for up to 40 ms; latency matters more here.
        let info = config.url.as_str().into_connection_info().map_err(invalid)?;
        let client = Client::open(info.set_tcp_settings(TcpSettings::default().set_nodelay(true))).map_err(invalid)?;
        // Logged instead of the URL, which may carry a password.
        let addr = client.get_connection_info().addr().to_string();
        let shared = Arc::new(Shared {
            node_id,
            prefix: config.prefix.into(),
            addr,
            stop: Stop::default(),
            interest: Mutex::new(Interest::default()),
            interest_changed: AtomicBool::new(false),
            publisher_up: AtomicBool::new(false),
            poke: Mutex::new(None),
            link: Mutex::new(Link::default()),
            connected: AtomicBool::new(false),
            counters: Counters::default(),
        });
        let (queue, queued) = mpsc::sync_channel(config.queue);
        *lock(&shared.poke) = Some(queue.clone());
        let mut bridge = Bridge { shared: Arc::clone(&shared), queue: Some(queue), threads: Vec::with_capacity(2) };
        let (sub_shared, sub_client) = (Arc::clone(&shared), client.clone());
        // On failure `bridge` is dropped, which stops a thread already started.
        bridge.threads.push(
            thread::Builder::new()
                .name("redis-sub".into())
                .spawn(move || run_subscriber(&sub_shared, &sub_client, deliver))?,
        );
        bridge.threads.push(
            thread::Builder::new().name("redis-pub".into()).spawn(move || run_publisher(&shared, &client, &queued))?,
        );
        Ok(bridge)
    }

    /// Registers one more local member of `room`. The first one makes the
    /// bridge SUBSCRIBE to the room's channel (within [`SUBSCRIBER_TICK`]
    /// plus a round trip while connected; at the next connection otherwise).
    /// Never blocks on Redis.
    pub fn join(&self, room: &str) {
        let mut interest = lock(&self.shared.interest);
        if let Some(count) = interest.counts.get_mut(room) {
            *count += 1;
            return;
        }
        interest.counts.insert(room.into(), 1);
        interest.changed.insert(room.into());
        self.shared.counters.rooms.store(interest.counts.len(), Ordering::Relaxed);
        drop(interest);
        self.shared.interest_changed.store(true, Ordering::Release);
    }

    /// Removes one local member of `room`; after the last one the bridge
    /// UNSUBSCRIBEs, and delivers nothing more for the room. A leave without
    /// a matching join is ignored. Never blocks on Redis.
    pub fn leave(&self, room: &str) {
        let mut interest = lock(&self.shared.interest);
        let Some(count) = interest.counts.get_mut(room) else { return };
        *count -= 1;
        if *count > 0 {
            return;
        }
        interest.counts.remove(room);
        interest.changed.insert(room.into());
        self.shared.counters.rooms.store(interest.counts.len(), Ordering::Relaxed);
        drop(interest);
        self.shared.interest_changed.store(true, Ordering::Release);
    }

    /// Queues a message for the other processes' members of `room`. Returns
    /// false, and counts the message as dropped, when it will not be sent:
    /// the queue is full, or the publisher connection is down. Never blocks.
    pub fn publish(&self, room: &str, text: bool, payload: Bytes) -> bool {
        let counters = &self.shared.counters;
        if !self.shared.publisher_up.load(Ordering::Acquire) {
            counters.dropped_redis_away.fetch_add(1, Ordering::Relaxed);
            return false;
        }
        let Some(queue) = &self.queue else { return false };
        match queue.try_send(Job::Publish(Envelope { room: room.into(), text, payload })) {
            Ok(()) => true,
            Err(TrySendError::Full(_)) => {
                counters.dropped_queue_full.fetch_add(1, Ordering::Relaxed);
                false
            }
            // The publisher thread is gone (it only ends when told to).
            Err(TrySendError::Disconnected(_)) => {
                counters.dropped_redis_away.fetch_add(1, Ordering::Relaxed);
                false
            }
        }
    }

    /// The counters and state now.
    pub fn stats(&self) -> BridgeStats {
        let c = &self.shared.counters;
        BridgeStats {
            connected: self.shared.connected.load(Ordering::Acquire),
            published: c.published.load(Ordering::Relaxed),
            received: c.received.load(Ordering::Relaxed),
            dropped_queue_full: c.dropped_queue_full.load(Ordering::Relaxed),
            dropped_redis_away: c.dropped_redis_away.load(Ordering::Relaxed),
            echoes_skipped: c.echoes_skipped.load(Ordering::Relaxed),
            malformed: c.malformed.load(Ordering::Relaxed),
            reconnects: c.reconnects.load(Ordering::Relaxed),
            rooms: c.rooms.load(Ordering::Relaxed),
            subscribed: c.subscribed.load(Ordering::Relaxed),
        }
    }

    /// Stops the bridge: what is queued is still sent if Redis is up, then
    /// both connections close. Returns within [`SHUTDOWN_TIMEOUT`]; a thread
    /// still blocked then (in a `deliver` that does not return) is left to
    /// end on its own.
    pub fn shutdown(self) {
        drop(self);
    }

    fn close(&mut self) {
        self.shared.stop.request();
        // The publisher sends what is queued, then sees the queue closed.
        *lock(&self.shared.poke) = None;
        self.queue = None;
        let deadline = Instant::now() + SHUTDOWN_TIMEOUT;
        for thread in self.threads.drain(..) {
            while !thread.is_finished() && Instant::now() < deadline {
                thread::sleep(Duration::from_millis(1));
            }
            if !thread.is_finished() {
                warn!(thread = thread.thread().name(), "redis bridge thread did not stop in time; leaving it");
            } else if thread.join().is_err() {
                warn!("redis bridge thread had panicked");
            }
        }
    }
}

impl Drop for Bridge {
    fn drop(&mut self) {
        self.close();
    }
}

/// What the handle and the two threads share.
struct Shared {
    node_id: u64,
    prefix: Box<str>,
    /// Redis's address for the log (the URL may carry a password).
    addr: String,
    stop: Stop,
    interest: Mutex<Interest>,
    /// Set after `interest.changed` gained a room, so that the subscriber
    /// takes the lock only when there is something to do.
    interest_changed: AtomicBool,
    /// The publisher connection is up: `publish` drops at once when not.
    publisher_up: AtomicBool,
    /// A sender into the publish queue for [`Job::Check`]; `None` once
    /// closing, so that the queue can close.
    poke: Mutex<Option<SyncSender<Job>>>,
    link: Mutex<Link>,
    /// Both connections are up (what `stats` and the log report).
    connected: AtomicBool,
    counters: Counters,
}

#[derive(Default)]
struct Counters {
    published: AtomicU64,
    received: AtomicU64,
    dropped_queue_full: AtomicU64,
    dropped_redis_away: AtomicU64,
    echoes_skipped: AtomicU64,
    malformed: AtomicU64,
    reconnects: AtomicU64,
    rooms: AtomicUsize,
    subscribed: AtomicUsize,
}

/// What the publisher thread is asked to do.
enum Job {
    /// Publish this message.
    Publish(Envelope),
    /// The subscriber lost or regained Redis: if connected, PING now (the
    /// publisher's connection to the same Redis is likely dead too, and an
    /// idle one would only notice at its next health check, reporting
    /// `connected` and losing the next message meanwhile); if waiting to
    /// reconnect, try now.
    Check,
}

/// Local interest: members per room, and the rooms whose interest started
/// or ended since the subscriber last looked (it compares them with what it
/// holds, so a join and a leave in between cancel out).
#[derive(Default)]
struct Interest {
    counts: HashMap<Box<str>, usize>,
    changed: HashSet<Box<str>>,
}

/// The two connections, for the log and the `connected` state.
#[derive(Clone, Copy, Debug)]
enum Role {
    Subscriber,
    Publisher,
}

impl Role {
    fn as_str(self) -> &'static str {
        match self {
            Role::Subscriber => "subscriber",
            Role::Publisher => "publisher",
        }
    }
}

#[derive(Default)]
struct Link {
    /// Up, by [`Role`].
    up: [bool; 2],
    /// Both have been up at least once (so the next time is a reconnection).
    ever_connected: bool,
    /// A failure was logged since the last time both came up: later ones
    /// are only debug lines, so an outage logs one line however long it is.
    reported: bool,
}

impl Shared {
    fn channel(&self, room: &str) -> String {
        format!("{}{room}", self.prefix)
    }

    /// Asks the publisher to check its connection (see [`Job::Check`]).
    /// Skipped when the queue is full: the publisher is busy, and finds out
    /// from its next batch.
    fn poke_publisher(&self) {
        if let Some(poke) = lock(&self.poke).as_ref() {
            let _ = poke.try_send(Job::Check);
        }
    }

    fn link_up(&self, role: Role) {
        let mut link = lock(&self.link);
        link.up[role as usize] = true;
        if link.up == [true, true] && !self.connected.load(Ordering::Acquire) {
            self.connected.store(true, Ordering::Release);
            if link.ever_connected {
                self.counters.reconnects.fetch_add(1, Ordering::Relaxed);
                info!(redis = %self.addr, "redis bridge reconnected; local rooms subscribed again");
            } else {
                info!(redis = %self.addr, "redis bridge connected");
            }
            link.ever_connected = true;
            link.reported = false;
        }
    }

    fn link_lost(&self, role: Role, error: &RedisError) {
        let mut link = lock(&self.link);
        link.up[role as usize] = false;
        if self.connected.swap(false, Ordering::AcqRel) {
            link.reported = true;
            warn!(redis = %self.addr, connection = %role.as_str(), %error,
                "redis bridge lost Redis; rooms are local only until it is back, reconnecting");
        } else {
            debug!(redis = %self.addr, connection = %role.as_str(), %error, "redis connection lost");
        }
    }

    fn connect_failed(&self, role: Role, error: &RedisError) {
        let mut link = lock(&self.link);
        if link.reported {
            debug!(redis = %self.addr, connection = %role.as_str(), %error, "redis connect failed");
        } else {
            link.reported = true;
            warn!(redis = %self.addr, connection = %role.as_str(), %error,
                "redis bridge cannot reach Redis; rooms are local only until it can, retrying in the background");
        }
    }
}

/// The stop request: a flag the threads poll, and a condition variable that
/// cuts their backoff sleeps short.
#[derive(Default)]
struct Stop {
    flag: AtomicBool,
    lock: Mutex<()>,
    wake: Condvar,
}

impl Stop {
    fn request(&self) {
        self.flag.store(true, Ordering::Release);
        let _guard = lock(&self.lock);
        self.wake.notify_all();
    }

    fn requested(&self) -> bool {
        self.flag.load(Ordering::Acquire)
    }

    /// Sleeps for `duration` or until stop is requested; true if it was.
    fn sleep(&self, duration: Duration) -> bool {
        let deadline = Instant::now() + duration;
        let mut guard = lock(&self.lock);
        loop {
            if self.requested() {
                return true;
            }
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return false;
            }
            guard = self.wake.wait_timeout(guard, left).unwrap_or_else(|e| e.into_inner()).0;
        }
    }
}

/// Locks a mutex, also one poisoned by a panicking thread: every value
/// behind these locks is consistent between statements.
fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(|e| e.into_inner())
}

/// The reconnection schedule: [`BACKOFF_INITIAL`] doubling to [`BACKOFF_MAX`].
#[derive(Debug, Default)]
struct Backoff {
    failures: u32,
}

impl Backoff {
    /// The wait after one more failure.
    fn next_delay(&mut self) -> Duration {
        self.failures = self.failures.saturating_add(1);
        backoff_delay(self.failures)
    }

    fn reset(&mut self) {
        self.failures = 0;
    }
}

/// The wait after the `failures`-th consecutive failure (1-based).
fn backoff_delay(failures: u32) -> Duration {
    let doublings = failures.saturating_sub(1).min(16);
    BACKOFF_INITIAL.saturating_mul(1 << doublings).min(BACKOFF_MAX)
}

// ---------------------------------------------------------------------------
// The subscriber thread.

/// How a subscriber connection ended.
enum Ended {
    Stopped,
    Lost(RedisError),
}

fn run_subscriber(shared: &Shared, client: &Client, mut deliver: Box<dyn FnMut(Envelope) + Send>) {
    let mut backoff = Backoff::default();
    while !shared.stop.requested() {
        let ended = match client.get_connection_with_timeout(CONNECT_TIMEOUT) {
            Ok(mut con) => serve_subscriber(shared, &mut con, &mut *deliver, &mut backoff),
            Err(e) => {
                shared.connect_failed(Role::Subscriber, &e);
                if shared.stop.sleep(backoff.next_delay()) {
                    return;
                }
                continue;
            }
        };
        shared.counters.subscribed.store(0, Ordering::Relaxed);
        match ended {
            Ended::Stopped => return,
            Ended::Lost(e) => {
                shared.link_lost(Role::Subscriber, &e);
                shared.poke_publisher();
                if shared.stop.sleep(backoff.next_delay()) {
                    return;
                }
            }
        }
    }
}

/// Subscribes to every room with local interest, then reads messages until
/// the connection fails or stop is requested.
fn serve_subscriber(
    shared: &Shared,
    con: &mut Connection,
    deliver: &mut dyn FnMut(Envelope),
    backoff: &mut Backoff,
) -> Ended {
    // Waits for messages end after a tick; commands get longer.
    if let Err(e) = con.set_write_timeout(Some(COMMAND_TIMEOUT)).and(con.set_read_timeout(Some(SUBSCRIBER_TICK))) {
        return Ended::Lost(e);
    }
    let mut pubsub = con.as_pubsub();
    // The rooms subscribed on this connection.
    let mut held: HashSet<Box<str>> = HashSet::new();
    if let Err(e) = apply_interest(shared, &mut pubsub, &mut held, true) {
        return Ended::Lost(e);
    }
    shared.link_up(Role::Subscriber);
    shared.poke_publisher();
    backoff.reset();
    let mut last_heard = Instant::now();
    loop {
        if shared.stop.requested() {
            return Ended::Stopped;
        }
        if shared.interest_changed.swap(false, Ordering::AcqRel) {
            if let Err(e) = apply_interest(shared, &mut pubsub, &mut held, false) {
                return Ended::Lost(e);
            }
        }
        match pubsub.get_message() {
            Ok(msg) => {
                last_heard = Instant::now();
                handle_message(shared, &held, &msg, deliver);
            }
            Err(e) if e.is_timeout() => {
                if last_heard.elapsed() >= HEALTH_CHECK_INTERVAL {
                    if let Err(e) = with_command_timeout(&mut pubsub, |p| p.ping::<Value>()) {
                        return Ended::Lost(e);
                    }
                    last_heard = Instant::now();
                }
            }
            Err(e) => return Ended::Lost(e),
        }
    }
}

/// Brings the subscriptions in line with local interest: every room with
/// interest when `all` (a new connection holds nothing), else the rooms
/// whose interest changed since the last call.
fn apply_interest(
    shared: &Shared,
    pubsub: &mut PubSub<'_>,
    held: &mut HashSet<Box<str>>,
    all: bool,
) -> RedisResult<()> {
    let (mut add, mut remove) = (Vec::new(), Vec::new());
    {
        let mut interest = lock(&shared.interest);
        let rooms: Vec<Box<str>> = if all {
            interest.changed.clear();
            interest.counts.keys().cloned().collect()
        } else {
            interest.changed.drain().collect()
        };
        for room in rooms {
            match (interest.counts.contains_key(&room), held.contains(&room)) {
                (true, false) => add.push(room),
                (false, true) => remove.push(room),
                _ => {}
            }
        }
    }
    for rooms in add.chunks(MAX_CHANNELS_PER_COMMAND) {
        let channels: Vec<String> = rooms.iter().map(|room| shared.channel(room)).collect();
        with_command_timeout(pubsub, |p| p.subscribe(&channels))?;
        held.extend(rooms.iter().cloned());
    }
    for rooms in remove.chunks(MAX_CHANNELS_PER_COMMAND) {
        let channels: Vec<String> = rooms.iter().map(|room| shared.channel(room)).collect();
        // Taken out before the command: a message for these rooms read
        // while it is on its way is no longer delivered.
        for room in rooms {
            held.remove(room);
        }
        with_command_timeout(pubsub, |p| p.unsubscribe(&channels))?;
    }
    shared.counters.subscribed.store(held.len(), Ordering::Relaxed);
    Ok(())
}

/// Runs a command on the subscriber connection with [`COMMAND_TIMEOUT`] for
/// its reply instead of the short wait for messages.
fn with_command_timeout<T>(
    pubsub: &mut PubSub<'_>,
    command: impl FnOnce(&mut PubSub<'_>) -> RedisResult<T>,
) -> RedisResult<T> {
    pubsub.set_read_timeout(Some(COMMAND_TIMEOUT))?;
    let result = command(pubsub);
    pubsub.set_read_timeout(Some(SUBSCRIBER_TICK))?;
    result
}

/// One message from Redis: skipped if it is ours or for a room no longer
/// held, counted if malformed, else delivered.
fn handle_message(shared: &Shared, held: &HashSet<Box<str>>, msg: &Msg, deliver: &mut dyn FnMut(Envelope)) {
    let counters = &shared.counters;
    // A channel we hold always starts with the prefix; "?" (the client's
    // answer for a name that is not UTF-8) never matches a held room.
    let Some(room) = msg.get_channel_name().strip_prefix(&*shared.prefix) else { return };
    if !held.contains(room) {
        return;
    }
    match decode(msg.get_payload_bytes()) {
        Ok(wire) if wire.node_id == shared.node_id => {
            counters.echoes_skipped.fetch_add(1, Ordering::Relaxed);
        }
        Ok(wire) => {
            counters.received.fetch_add(1, Ordering::Relaxed);
            deliver(Envelope { room: room.into(), text: wire.text, payload: Bytes::copy_from_slice(wire.payload) });
        }
        Err(reason) => {
            // One line for the first; a flood of them must not flood the log.
            if counters.malformed.fetch_add(1, Ordering::Relaxed) == 0 {
                warn!(
                    channel = msg.get_channel_name(),
                    reason = reason.as_str(),
                    "malformed message from redis dropped; further ones are only counted"
                );
            } else {
                debug!(
                    channel = msg.get_channel_name(),
                    reason = reason.as_str(),
                    "malformed message from redis dropped"
                );
            }
        }
    }
}

// ---------------------------------------------------------------------------
// The publisher thread.

fn run_publisher(shared: &Shared, client: &Client, queued: &Receiver<Job>) {
    let mut backoff = Backoff::default();
    let mut batch = Vec::with_capacity(MAX_BATCH_MESSAGES);
    loop {
        let lost = match client.get_connection_with_timeout(CONNECT_TIMEOUT) {
            Ok(mut con) => {
                let ready =
                    con.set_write_timeout(Some(COMMAND_TIMEOUT)).and(con.set_read_timeout(Some(COMMAND_TIMEOUT)));
                match ready {
                    Ok(()) => {
                        shared.publisher_up.store(true, Ordering::Release);
                        shared.link_up(Role::Publisher);
                        backoff.reset();
                        let ended = serve_publisher(shared, &mut con, queued, &mut batch);
                        shared.publisher_up.store(false, Ordering::Release);
                        match ended {
                            Some(e) => e,
                            None => return,
                        }
                    }
                    Err(e) => e,
                }
            }
            Err(e) => {
                shared.connect_failed(Role::Publisher, &e);
                if !drop_while_away(shared, queued, backoff.next_delay()) {
                    return;
                }
                continue;
            }
        };
        shared.link_lost(Role::Publisher, &lost);
        if !drop_while_away(shared, queued, backoff.next_delay()) {
            return;
        }
    }
}

/// Publishes queued messages until the connection fails (returns the error)
/// or the queue is closed and empty (returns `None`). An idle connection is
/// PINGed every [`HEALTH_CHECK_INTERVAL`].
fn serve_publisher(
    shared: &Shared,
    con: &mut Connection,
    queued: &Receiver<Job>,
    batch: &mut Vec<Envelope>,
) -> Option<RedisError> {
    let counters = &shared.counters;
    loop {
        let first = match queued.recv_timeout(HEALTH_CHECK_INTERVAL) {
            Ok(Job::Publish(envelope)) => envelope,
            Ok(Job::Check) | Err(RecvTimeoutError::Timeout) => {
                if let Err(e) = redis::cmd("PING").query::<Value>(con) {
                    return Some(e);
                }
                continue;
            }
            Err(RecvTimeoutError::Disconnected) => return None,
        };
        let mut bytes = first.payload.len();
        batch.push(first);
        while batch.len() < MAX_BATCH_MESSAGES && bytes < MAX_BATCH_BYTES {
            match queued.try_recv() {
                Ok(Job::Publish(envelope)) => {
                    bytes += envelope.payload.len();
                    batch.push(envelope);
                }
                // This batch is the check.
                Ok(Job::Check) => {}
                Err(_) => break,
            }
        }
        let mut pipe = redis::pipe();
        for envelope in batch.iter() {
            pipe.cmd("PUBLISH")
                .arg(ChannelArg { prefix: &shared.prefix, room: &envelope.room })
                .arg(EnvelopeArg { node_id: shared.node_id, envelope })
                .ignore();
        }
        let count = batch.len();
        batch.clear();
        match send_pipeline(con, &pipe, count) {
            Ok(()) => {
                counters.published.fetch_add(count as u64, Ordering::Relaxed);
            }
            Err(e) => {
                // Whether Redis took some of them is unknown: at most once.
                counters.dropped_redis_away.fetch_add(count as u64, Ordering::Relaxed);
                return Some(e);
            }
        }
    }
}

/// Sends a pipeline of `count` commands and reads their replies, stopping
/// at the first failure. (`Pipeline::query` reads on after a timeout, one
/// more [`COMMAND_TIMEOUT`] per command: 512 s for a full batch to a frozen
/// Redis.) The connection is dropped after any failure, so the replies left
/// unread do not matter.
fn send_pipeline(con: &mut Connection, pipe: &redis::Pipeline, count: usize) -> RedisResult<()> {
    con.send_packed_command(&pipe.get_packed_pipeline())?;
    for _ in 0..count {
        if let Value::ServerError(e) = con.recv_response()? {
            return Err(e.into());
        }
    }
    Ok(())
}

/// Waits `delay` while the publisher connection is down, dropping (and
/// counting) what arrives in the queue meanwhile: messages that raced with
/// the loss. Ends early at a [`Job::Check`] (the subscriber got through:
/// so can we, without waiting out our own backoff). False when the queue is
/// closed (stop).
fn drop_while_away(shared: &Shared, queued: &Receiver<Job>, delay: Duration) -> bool {
    let deadline = Instant::now() + delay;
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return true;
        }
        match queued.recv_timeout(left) {
            Ok(Job::Publish(_)) => {
                shared.counters.dropped_redis_away.fetch_add(1, Ordering::Relaxed);
            }
            Ok(Job::Check) => return true,
            Err(RecvTimeoutError::Timeout) => return true,
            Err(RecvTimeoutError::Disconnected) => return false,
        }
    }
}

// ---------------------------------------------------------------------------
// The wire format.

/// The channel name as one command argument, written without building a
/// string first.
struct ChannelArg<'a> {
    prefix: &'a str,
    room: &'a str,
}

impl ToRedisArgs for ChannelArg<'_> {
    fn write_redis_args<W>(&self, out: &mut W)
    where
        W: ?Sized + RedisWrite,
    {
        let mut arg = out.writer_for_next_arg();
        // Writes into the command's own buffer, which cannot fail.
        let _ = arg.write_all(self.prefix.as_bytes());
        let _ = arg.write_all(self.room.as_bytes());
    }
}

/// A message's envelope (header, then payload) as one command argument,
/// written straight into the command's buffer.
struct EnvelopeArg<'a> {
    node_id: u64,
    envelope: &'a Envelope,
}

impl ToRedisArgs for EnvelopeArg<'_> {
    fn write_redis_args<W>(&self, out: &mut W)
    where
        W: ?Sized + RedisWrite,
    {
        let mut arg = out.writer_for_next_arg();
        // Writes into the command's own buffer, which cannot fail.
        let _ = arg.write_all(&header(self.node_id, self.envelope.text));
        let _ = arg.write_all(&self.envelope.payload);
    }
}

/// The envelope header for a message of `node_id`.
fn header(node_id: u64, text: bool) -> [u8; HEADER_LEN] {
    let mut header = [0; HEADER_LEN];
    header[0] = WIRE_VERSION;
    header[1] = if text { FLAG_TEXT } else { 0 };
    header[2..].copy_from_slice(&node_id.to_be_bytes());
    header
}

/// An envelope read from Redis.
#[derive(Debug, PartialEq, Eq)]
struct Wire<'a> {
    node_id: u64,
    text: bool,
    payload: &'a [u8],
}

/// Why an envelope was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Malformed {
    TooShort,
    UnknownVersion,
    UnknownFlags,
    TextNotUtf8,
}

impl Malformed {
    fn as_str(self) -> &'static str {
        match self {
            Malformed::TooShort => "shorter than the envelope header",
            Malformed::UnknownVersion => "unknown envelope version",
            Malformed::UnknownFlags => "unknown envelope flags",
            Malformed::TextNotUtf8 => "text message that is not UTF-8",
        }
    }
}

fn decode(data: &[u8]) -> Result<Wire<'_>, Malformed> {
    let Some((header, payload)) = data.split_first_chunk::<HEADER_LEN>() else { return Err(Malformed::TooShort) };
    if header[0] != WIRE_VERSION {
        return Err(Malformed::UnknownVersion);
    }
    let flags = header[1];
    if flags & !FLAG_TEXT != 0 {
        return Err(Malformed::UnknownFlags);
    }
    let text = flags & FLAG_TEXT != 0;
    if text && std::str::from_utf8(payload).is_err() {
        return Err(Malformed::TextNotUtf8);
    }
    let mut node_id = [0; 8];
    node_id.copy_from_slice(&header[2..]);
    Ok(Wire { node_id: u64::from_be_bytes(node_id), text, payload })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The argument the publisher writes for `envelope`, as bytes.
    fn encoded(node_id: u64, envelope: &Envelope) -> Vec<u8> {
        let mut args = EnvelopeArg { node_id, envelope }.to_redis_args();
        assert_eq!(args.len(), 1, "one argument");
        args.remove(0)
    }

    fn envelope(text: bool, payload: &'static [u8]) -> Envelope {
        Envelope { room: "lobby".into(), text, payload: Bytes::from_static(payload) }
    }

    #[test]
    fn envelope_layout_is_the_documented_one() {
        let bytes = encoded(0x0102_0304_0506_0708, &envelope(true, b"hi"));
        assert_eq!(bytes, [1, 1, 1, 2, 3, 4, 5, 6, 7, 8, b'h', b'i']);
        let bytes = encoded(7, &envelope(false, &[0, 255]));
        assert_eq!(bytes, [1, 0, 0, 0, 0, 0, 0, 0, 0, 7, 0, 255]);
    }

    #[test]
    fn envelope_round_trips() {
        for (node_id, text, payload) in [
            (0, true, &b""[..]),
            (u64::MAX, false, &b""[..]),
            (42, true, "héllo ✓".as_bytes()),
            (43, false, &[0, 1, 2, 0xff, 0xfe, b'\r', b'\n'][..]),
        ] {
            let env = Envelope { room: "r".into(), text, payload: Bytes::copy_from_slice(payload) };
            let bytes = encoded(node_id, &env);
            assert_eq!(bytes.len(), HEADER_LEN + payload.len());
            assert_eq!(decode(&bytes), Ok(Wire { node_id, text, payload }));
        }
        let large = vec![0xabu8; 1 << 20];
        let env = Envelope { room: "r".into(), text: false, payload: Bytes::from(large.clone()) };
        assert_eq!(decode(&encoded(9, &env)).map(|w| w.payload), Ok(&large[..]));
    }

    #[test]
    fn malformed_envelopes_are_refused() {
        let good = encoded(5, &envelope(true, b"ok"));
        assert!(decode(&good).is_ok());
        assert_eq!(decode(b""), Err(Malformed::TooShort));
        assert_eq!(decode(&good[..HEADER_LEN - 1]), Err(Malformed::TooShort));
        let mut bad = good.clone();
        bad[0] = 2;
        assert_eq!(decode(&bad), Err(Malformed::UnknownVersion));
        let mut bad = good.clone();
        bad[1] = 0x81;
        assert_eq!(decode(&bad), Err(Malformed::UnknownFlags));
        let mut bad = good.clone();
        bad.push(0xff);
        assert_eq!(decode(&bad), Err(Malformed::TextNotUtf8));
        // The same bytes are fine as a binary message.
        bad[1] = 0;
        assert!(decode(&bad).is_ok());
        // The header alone is an empty message.
        assert_eq!(decode(&good[..HEADER_LEN]).map(|w| w.payload.len()), Ok(0));
    }

    #[test]
    fn channel_is_prefix_then_room() {
        let args = ChannelArg { prefix: "wsloop:", room: "chat/1" }.to_redis_args();
        assert_eq!(args, vec![b"wsloop:chat/1".to_vec()]);
    }

    #[test]
    fn backoff_doubles_from_100ms_to_5s_and_stays() {
        let mut backoff = Backoff::default();
        let schedule: Vec<u128> = (0..10).map(|_| backoff.next_delay().as_millis()).collect();
        assert_eq!(schedule, [100, 200, 400, 800, 1600, 3200, 5000, 5000, 5000, 5000]);
        backoff.failures = u32::MAX - 1;
        assert_eq!(backoff.next_delay(), BACKOFF_MAX);
        assert_eq!(backoff.next_delay(), BACKOFF_MAX, "no overflow past u32::MAX failures");
        backoff.reset();
        assert_eq!(backoff.next_delay(), BACKOFF_INITIAL);
    }

    /// The subscriber relies on this: a read timeout in the middle of a
    /// message loses nothing, the next read completes the same message.
    #[test]
    fn parser_resumes_after_a_timeout_mid_message() {
        /// Hands out its parts one read at a time; `None` is a read that
        /// times out (what a socket read timeout returns).
        struct Trickle {
            parts: std::collections::VecDeque<Option<&'static [u8]>>,
        }
        impl io::Read for Trickle {
            fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
                match self.parts.pop_front() {
                    None => Ok(0),
                    Some(None) => Err(io::ErrorKind::WouldBlock.into()),
                    Some(Some(part)) => {
                        buf[..part.len()].copy_from_slice(part);
                        Ok(part.len())
                    }
                }
            }
        }
        let parts =
            [Some(&b"*3\r\n$7\r\nmessage\r\n$4\r\nro"[..]), None, Some(b"om\r\n$5\r\nhel"), None, Some(b"lo\r\n")];
        let mut reader = Trickle { parts: parts.into() };
        let mut parser = redis::Parser::new();
        let mut results = Vec::new();
        for _ in 0..3 {
            results.push(parser.parse_value(&mut reader));
        }
        assert!(results[0].as_ref().is_err_and(|e| e.is_timeout()), "{:?}", results[0]);
        assert!(results[1].as_ref().is_err_and(|e| e.is_timeout()), "{:?}", results[1]);
        let msg = results.pop().and_then(|v| v.ok()).and_then(Msg::from_owned_value).expect("the whole message");
        assert_eq!(msg.get_channel_name(), "room");
        assert_eq!(msg.get_payload_bytes(), b"hello");
    }

    #[test]
    fn bad_configuration_is_refused_at_start() {
        let refuse = |config: BridgeConfig| match Bridge::start(config, 1, Box::new(|_| {})) {
            Err(e) => assert_eq!(e.kind(), io::ErrorKind::InvalidInput, "{e}"),
            Ok(_) => panic!("started"),
        };
        refuse(BridgeConfig { queue: 0, ..BridgeConfig::new("redis://127.0.0.1:1") });
        refuse(BridgeConfig::new("http://127.0.0.1:6379"));
        refuse(BridgeConfig::new("rediss://127.0.0.1:6379"));
        refuse(BridgeConfig::new("not a url"));
    }

    #[test]
    fn handle_is_send_and_sync() {
        fn assert_send_sync<T: Send + Sync>() {}
        assert_send_sync::<Bridge>();
    }

    #[test]
    fn node_ids_differ() {
        assert_ne!(random_node_id(), random_node_id());
    }
}
