//! One connection: an explicit state machine driven by readiness events, the
//! loop's send schedule and its periodic sweep.
//!
//! ```text
//!   connect() ─▶ Connecting ─TCP up─▶ Handshaking ─101─▶ Open ─our close / peer close─▶ Closing ─▶ (removed)
//!                    │ refused, timeout          │ HTTP error, bad 101, timeout           │ EOF or deadline
//!                    └───────────────────────────┴──────────▶ (removed, failure counted) ◀─┘
//! ```
//!
//! `wss://` adds one state between TCP and the upgrade request,
//! `TlsHandshaking` (TLS alert, bad certificate, timeout: removed, failure
//! `tls` counted), and from then on every byte goes through the
//! connection's [`TlsStream`] (see [`crate::tls`]). `ws://` connections
//! have none, and their only extra work is the test that says so.
//!
//! The hot path, per echoed message: one `read` into the loop's buffer
//! (a short read means the socket is drained: no second `read` to collect
//! `EAGAIN`), the echo checked where it lies ([`crate::inbound`]), one clock
//! read, the stamp patched into the loop's premasked frame
//! ([`crate::frames`]), one `write`. Nothing is allocated.
//!
//! The connection never closes its own socket: when finished it returns
//! [`Step::Remove`] and the loop frees the slab slot (which closes the
//! descriptor) after calling [`Client::on_remove`] for the bookkeeping.

use std::{
    io::{self, Read, Write},
    net::{IpAddr, SocketAddr},
    ops::Range,
};

use mio::{net::TcpStream, Interest, Registry, Token};
use wsloop::{
    sys::Readiness,
    wire::{Encoding, Stamp, BINARY_STAMP_LEN},
};

use crate::{
    broadcast::{Layout, Subscriber, Verdict},
    cli::Mode,
    frames::{self, FrameTemplate},
    handshake::{self, Refused, RequestTemplate},
    inbound::{Echo, Expected, Handler, Inbound, ProtocolViolation},
    metrics::{self, Fault, OpenFailure, Stats},
    plan::{Schedule, Window},
    sys,
    tls::{self as tls_mod, TlsClient, TlsEnd, TlsStream},
};

/// How long we wait for the server to answer our close frame and end the
/// TCP connection before dropping it. RFC 6455 has the server close TCP
/// first, so its side, not ours, holds the `TIME_WAIT` (which matters in
/// churn mode: ours would exhaust the ephemeral ports in a minute).
pub const CLOSE_TIMEOUT_NS: u64 = 2_000_000_000;

/// Output kept for a blocked socket beyond which the buffer's memory is
/// given back once drained (a stalled connection must not pin it forever).
const PENDING_KEEP: usize = 64 << 10;

/// Everything a connection may use during a call: the loop's buffers, its
/// statistics and the run's parameters. Owned by the loop, lent per call.
pub struct Context {
    /// The workload, which decides what to send and when.
    pub mode: Mode,
    /// Binary or text data messages (the stamp's encoding).
    pub encoding: Encoding,
    /// Echo mode (and closed-loop broadcast): messages to keep in flight per connection.
    pub pipeline: u64,
    /// Each sender sends its next message when its last one is back (echo
    /// mode, broadcast without `--rate`), rather than on a schedule.
    pub closed_loop: bool,
    /// Record the uncorrected latency (from the actual send time) beside
    /// the corrected one: the open-loop modes, where the two differ.
    pub uncorrected: bool,
    /// Broadcast mode: rooms, publishers and slow subscribers.
    pub layout: Option<Layout>,
    /// `--message-timeout`: an echo later than this is missing.
    pub message_timeout_ns: u64,
    /// `--connect-timeout`: from `connect()` to the 101.
    pub connect_timeout_ns: u64,
    /// The payload every data message carries (stamp area aside); empty in idle mode.
    pub payload: Vec<u8>,
    /// The data (or, in idle mode, ping) frame every connection of the loop
    /// sends, premasked: each message only patches its stamp in, right
    /// before it is written (see [`crate::frames`]).
    pub frame: FrameTemplate,
    /// The handshake request every connection sends (with its own key):
    /// one per target and room (broadcast mode), else one per target; see
    /// [`Context::request`].
    pub requests: Vec<RequestTemplate>,
    /// Targets (URLs) the connections are spread over: connection `id` goes to `id % targets`.
    pub targets: usize,
    /// `wss://`: the loop's TLS configuration and session store; `None` for `ws://`.
    pub tls: Option<TlsClient>,
    /// The loop's figures.
    pub stats: Stats,
    /// The loop's receive buffer: every read lands here and is parsed in place.
    pub rx: Box<[u8]>,
    /// The loop's gather buffer, for writing several frames with one `write`.
    pub out: Vec<u8>,
    /// The clock at the current event (one read per event).
    pub now_ns: u64,
    /// Messages intended in this window are measured.
    pub window: Window,
    /// New messages may be sent (false during ramp, drain and close).
    pub sending: bool,
    /// Messages that may still be sent in the window (`--messages`; `u64::MAX` if unlimited).
    pub quota_left: u64,
    /// Connections in `Connecting` or `Handshaking`.
    pub connecting: usize,
    /// The loop is closing everything: a close from the server is the reply, not a fault.
    pub closing_all: bool,
}

impl Context {
    /// The request connection `id`, a member of room `room`, sends: its
    /// target's (`id % targets`) for that room.
    fn request(&self, id: u32, room: u32) -> &RequestTemplate {
        let rooms = self.requests.len() / self.targets.max(1);
        &self.requests[(id as usize % self.targets.max(1)) * rooms + room as usize]
    }
}

/// What the loop should do with a connection after a call.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Step {
    Keep,
    /// Finished: call [`Client::on_remove`] and free the slot.
    Remove,
}

enum State {
    /// `connect()` is in progress.
    Connecting,
    /// `wss://`: TCP is up; the TLS handshake is going on.
    TlsHandshaking {
        /// When TCP connected: the TLS part of the handshake latency starts here.
        tcp_up_ns: u64,
    },
    /// Sending the request, then reading the response.
    Handshaking(Box<Handshaking>),
    /// Messages flow.
    Open,
    /// A close frame has been sent (ours, or our reply to the server's);
    /// waiting for the server to end the TCP connection.
    Closing { deadline_ns: u64 },
}

struct Handshaking {
    /// This connection's request (its own `Sec-WebSocket-Key`).
    request: Vec<u8>,
    /// Bytes of it the kernel has taken.
    written: usize,
    /// The `Sec-WebSocket-Accept` the 101 must carry.
    expected_accept: String,
    /// The response so far (it may arrive in pieces).
    response: Vec<u8>,
    /// When TCP connected (the end of the handshake's TCP part).
    tcp_up_ns: u64,
    /// When the request was first written (after TCP, or TLS, was up): the
    /// upgrade part of the handshake latency starts here.
    upgrade_ns: u64,
}

/// Sequence bookkeeping: which messages are in flight and which are owed.
#[derive(Debug, Default)]
struct Tracker {
    /// The next sequence number to send.
    next_seq: u64,
    /// The next sequence number expected back; `next_seq - expected` are in flight.
    expected: u64,
    /// When the last echo arrived, or the first message after a quiet spell
    /// was sent: in-flight messages older than the timeout are missing.
    progress_ns: u64,
    /// Messages given up on at the last timeout: an echo of one of them is late, not a duplicate.
    lost: Range<u64>,
}

impl Tracker {
    fn in_flight(&self) -> u64 {
        self.next_seq - self.expected
    }
}

/// Why reading or writing an open connection stopped.
enum End {
    /// The server ended the TCP stream.
    Eof,
    Io(io::Error),
    Protocol(ProtocolViolation),
    /// The server sent a close frame (with this code).
    PeerClose(Option<u16>),
    /// `wss://`: a TLS error on an open connection (a bad record, an alert).
    Tls(rustls::Error),
}

pub struct Client {
    /// The socket, registered for READABLE | WRITABLE once (edge-triggered).
    stream: TcpStream,
    /// `wss://`: TLS over `stream`, from TCP up to the end; `None` for `ws://`.
    tls: Option<Box<TlsStream>>,
    /// Where the connection is in its life.
    state: State,
    /// Written into every stamp: an echo on the wrong connection is caught.
    id: u32,
    /// Position in the send schedule (rate and idle modes).
    pub slot: u64,
    /// When `connect()` was called: handshake latency and timeout start here.
    connect_ns: u64,
    /// This connection's masking key.
    mask: [u8; 4],
    /// The frame reader and checker.
    inbound: Inbound,
    /// Which messages are in flight.
    seq: Tracker,
    /// Output the kernel did not take (socket buffer full); sent first on the next WRITABLE.
    pending: Vec<u8>,
    /// A write came back short: nothing more is sent until `pending` drains.
    write_blocked: bool,
    /// The handshake completed (so removal counts as a closed connection, not an attempt).
    opened: bool,
    /// It sends data messages: every connection, except broadcast's non-publishers.
    sends: bool,
    /// Broadcast mode: its room and what it has received of it (empty otherwise).
    sub: Subscriber,
    /// When input last arrived: a slow subscriber draining at the end is
    /// done when this is some time ago.
    last_input_ns: u64,
}

impl Client {
    /// Starts connecting to `target` (from `source`), registered under `token`.
    pub fn connect(
        target: SocketAddr,
        source: Option<IpAddr>,
        id: u32,
        token: Token,
        registry: &Registry,
        cx: &mut Context,
    ) -> Result<Client, io::Error> {
        let mut stream = sys::start_connect(target, source)?;
        registry.register(&mut stream, token, Interest::READABLE | Interest::WRITABLE)?;
        cx.connecting += 1;
        let (sends, sub) = match &cx.layout {
            Some(layout) => (layout.is_publisher(id), Subscriber::new(layout, id)),
            None => (true, Subscriber::default()),
        };
        Ok(Client {
            stream,
            tls: None,
            state: State::Connecting,
            id,
            slot: 0,
            connect_ns: cx.now_ns,
            mask: random_mask(id, cx.now_ns),
            inbound: Inbound::default(),
            seq: Tracker::default(),
            pending: Vec::new(),
            write_blocked: false,
            opened: false,
            sends,
            sub,
            last_input_ns: cx.now_ns,
        })
    }

    /// The id written into its stamps (broadcast: its publisher id).
    pub fn id(&self) -> u32 {
        self.id
    }

    /// Whether the handshake completed.
    pub fn opened(&self) -> bool {
        self.opened
    }

    /// Whether it sends data messages (broadcast: whether it publishes).
    pub fn sends(&self) -> bool {
        self.sends
    }

    /// Data messages sent so far (broadcast: published).
    pub fn sent(&self) -> u64 {
        self.seq.next_seq
    }

    /// Broadcast mode: its room and what it received.
    pub fn subscriber(&self) -> &Subscriber {
        &self.sub
    }

    /// Broadcast mode: takes its subscriber state (when it leaves early, to
    /// be accounted for at the end).
    pub fn take_subscriber(&mut self) -> Subscriber {
        std::mem::take(&mut self.sub)
    }

    /// When input last arrived.
    pub fn last_input_ns(&self) -> u64 {
        self.last_input_ns
    }

    /// A `--slow` subscriber: it reads nothing while traffic runs.
    #[inline]
    fn paused(&self, cx: &Context) -> bool {
        self.sub.slow && cx.sending
    }

    /// A `--slow` subscriber, at the end of traffic: reads what is buffered
    /// (and from now on everything, as the others do).
    pub fn resume_reading(&mut self, cx: &mut Context) -> Step {
        if !self.is_open() {
            return Step::Keep;
        }
        self.last_input_ns = cx.now_ns;
        let result = self.read_input(false, cx);
        self.settle(result, cx)
    }

    pub fn is_open(&self) -> bool {
        matches!(self.state, State::Open)
    }

    /// Messages sent whose echo has not been accounted for.
    pub fn in_flight(&self) -> u64 {
        self.seq.in_flight()
    }

    /// Handles a readiness event.
    pub fn on_ready(&mut self, ready: Readiness, schedule: Option<&Schedule>, cx: &mut Context) -> Step {
        let Readiness { readable, writable, read_closed } = ready;
        match self.state {
            State::Connecting => {
                if !(readable || writable) {
                    return Step::Keep;
                }
                match self.connected() {
                    Ok(false) => Step::Keep,
                    Ok(true) if cx.tls.is_some() => self.start_tls(cx),
                    Ok(true) => self.start_handshake(cx.now_ns, Vec::new(), cx),
                    Err(e) => self.fail(OpenFailure::from_io(&e, false), format!("connect: {e}"), cx),
                }
            }
            State::TlsHandshaking { tcp_up_ns } => self.tls_handshake(tcp_up_ns, readable, cx),
            State::Handshaking(_) => self.handshake(writable, readable, cx),
            State::Open => {
                let result = self.serve(readable, writable, read_closed, schedule, cx);
                self.settle(result, cx)
            }
            State::Closing { .. } => match self.read_until_end(read_closed, cx) {
                Ok(()) => Step::Keep,
                Err(_) => Step::Remove,
            },
        }
    }

    /// Echo mode: sends enough messages to have `--pipeline` in flight.
    /// Called when traffic starts and after every batch of echoes.
    pub fn top_up(&mut self, cx: &mut Context) -> Step {
        let result = self.send_top_up(cx);
        self.settle(result.map(|_| ()), cx)
    }

    /// Rate and idle modes: sends every message the schedule says is due by now.
    pub fn send_due(&mut self, schedule: &Schedule, cx: &mut Context) -> Step {
        let result = self.send_scheduled(schedule, cx);
        self.settle(result, cx)
    }

    /// The periodic sweep: timeouts.
    pub fn on_tick(&mut self, cx: &mut Context) -> Step {
        let now = cx.now_ns;
        match self.state {
            State::Connecting if now.saturating_sub(self.connect_ns) > cx.connect_timeout_ns => {
                self.fail(OpenFailure::ConnectTimeout, "no TCP connection within --connect-timeout".into(), cx)
            }
            State::TlsHandshaking { .. } if now.saturating_sub(self.connect_ns) > cx.connect_timeout_ns => {
                self.fail(OpenFailure::HandshakeTimeout, "no TLS handshake within --connect-timeout".into(), cx)
            }
            State::Handshaking(_) if now.saturating_sub(self.connect_ns) > cx.connect_timeout_ns => {
                self.fail(OpenFailure::HandshakeTimeout, "no handshake response within --connect-timeout".into(), cx)
            }
            State::Open => {
                if self.seq.in_flight() > 0 && now.saturating_sub(self.seq.progress_ns) > cx.message_timeout_ns {
                    if cx.mode == Mode::Broadcast {
                        // A publisher's own message did not come back: send
                        // on. Whether anyone missed it is judged at the end.
                        self.seq.expected = self.seq.next_seq;
                        self.seq.progress_ns = now;
                        return self.top_up(cx);
                    }
                    self.give_up_in_flight("not echoed within --message-timeout", cx);
                    if cx.mode == Mode::Churn {
                        return self.begin_close(1000, cx);
                    }
                    return self.top_up(cx);
                }
                Step::Keep
            }
            State::Closing { deadline_ns } if now >= deadline_ns => {
                cx.stats.close_timeouts += 1;
                Step::Remove
            }
            _ => Step::Keep,
        }
    }

    /// The run is over: messages still in flight will not be waited for.
    pub fn finish(&mut self, cx: &mut Context) {
        if self.is_open() {
            self.give_up_in_flight("still in flight when the run ended", cx);
        }
    }

    /// Starts a clean close with `code`. A connection still connecting is simply dropped.
    pub fn begin_close(&mut self, code: u16, cx: &mut Context) -> Step {
        match self.state {
            State::Open => {
                let frame = frames::close(code, self.mask);
                if let Err(e) = self.write_or_keep(&frame) {
                    let _ = e;
                    return Step::Remove;
                }
                self.state = State::Closing { deadline_ns: cx.now_ns + CLOSE_TIMEOUT_NS };
                Step::Keep
            }
            State::Closing { .. } => Step::Keep,
            State::Connecting | State::TlsHandshaking { .. } | State::Handshaking(_) => Step::Remove,
        }
    }

    /// Bookkeeping before the loop frees the slot.
    pub fn on_remove(&mut self, cx: &mut Context) {
        if self.opened {
            cx.stats.connection_gone();
        } else {
            cx.connecting -= 1;
        }
    }

    // ----- connecting and the handshake -----

    /// Whether the non-blocking connect has completed (`Err` if it failed).
    fn connected(&self) -> io::Result<bool> {
        if let Some(e) = self.stream.take_error()? {
            return Err(e);
        }
        match self.stream.peer_addr() {
            Ok(_) => Ok(true),
            Err(e) if e.kind() == io::ErrorKind::NotConnected => Ok(false),
            Err(e) => Err(e),
        }
    }

    /// `wss://`: TCP is up; starts the TLS handshake (the ClientHello goes out now).
    fn start_tls(&mut self, cx: &mut Context) -> Step {
        let Some(client) = &cx.tls else { return Step::Remove };
        match client.connect() {
            Ok(tls) => self.tls = Some(tls),
            Err(e) => return self.fail_tls(&e, cx),
        }
        self.state = State::TlsHandshaking { tcp_up_ns: cx.now_ns };
        self.tls_handshake(cx.now_ns, false, cx)
    }

    /// `wss://`: drives the TLS handshake: writes what rustls has to send,
    /// reads what the server sent (when `readable`), until rustls says it is
    /// done; then the upgrade request goes out in the same call.
    fn tls_handshake(&mut self, tcp_up_ns: u64, readable: bool, cx: &mut Context) -> Step {
        let Some(tls) = self.tls.as_deref_mut() else { return Step::Remove };
        // Anything the server sends before our request is kept for the response.
        let mut early = Vec::new();
        if readable {
            loop {
                let n = match tls.read(&self.stream, &mut cx.rx) {
                    Ok(0) => {
                        let detail = "server closed the connection during the TLS handshake";
                        return self.fail(OpenFailure::Closed, detail.into(), cx);
                    }
                    Ok(n) => n,
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                    Err(e) => {
                        let detail = format!("during the TLS handshake: {e}");
                        return self.fail(OpenFailure::from_io(&e, true), detail, cx);
                    }
                };
                let received = tls.receive(&mut cx.rx[..n], |plain| {
                    early.extend_from_slice(plain);
                    Ok::<(), ()>(())
                });
                match received {
                    Ok(false) => {}
                    Ok(true) => {
                        let detail = "server ended TLS (close_notify) during the handshake";
                        return self.fail(OpenFailure::Closed, detail.into(), cx);
                    }
                    Err(TlsEnd::Tls(e)) => {
                        // Send the alert rustls queued, if the socket takes it.
                        let _ = tls.flush(&self.stream);
                        return self.fail_tls(&e, cx);
                    }
                    Err(TlsEnd::Plain(())) => {}
                }
                if n < cx.rx.len() {
                    break;
                }
            }
        }
        if tls.is_handshaking() {
            if let Err(e) = tls.flush(&self.stream) {
                return self.fail(OpenFailure::from_io(&e, true), format!("during the TLS handshake: {e}"), cx);
            }
            return Step::Keep;
        }
        // Done: rustls' last flight (our Finished) and the request go out in one write.
        self.start_handshake(tcp_up_ns, early, cx)
    }

    /// Counts a failed TLS handshake (kind `tls`, and its reason).
    fn fail_tls(&mut self, error: &rustls::Error, cx: &mut Context) -> Step {
        cx.stats.count_tls_failure(tls_mod::failure_reason(error));
        self.fail(OpenFailure::Tls, format!("TLS: {error}"), cx)
    }

    /// Sends the upgrade request (TCP, or TLS, is up since `tcp_up_ns`);
    /// `early` is what the server sent already (nothing, from a sane one).
    fn start_handshake(&mut self, tcp_up_ns: u64, early: Vec<u8>, cx: &mut Context) -> Step {
        let request = cx.request(self.id, self.sub.room).instantiate();
        self.state = State::Handshaking(Box::new(Handshaking {
            request: request.bytes,
            written: 0,
            expected_accept: request.expected_accept,
            response: early,
            tcp_up_ns,
            upgrade_ns: cx.now_ns,
        }));
        self.handshake(true, true, cx)
    }

    fn handshake(&mut self, writable: bool, readable: bool, cx: &mut Context) -> Step {
        let State::Handshaking(hs) = &mut self.state else { unreachable!("called while handshaking") };
        if writable {
            let sent = match self.tls.as_deref_mut() {
                None if hs.written < hs.request.len() => (&self.stream).write(&hs.request[hs.written..]),
                None => Ok(0),
                // Behind what rustls still holds (the handshake's last flight).
                Some(tls) if hs.written < hs.request.len() => {
                    tls.send(&self.stream, &hs.request[hs.written..]).map(|sent| sent.taken)
                }
                Some(tls) => tls.flush(&self.stream).map(|_| 0),
            };
            match sent {
                Ok(n) => hs.written += n,
                Err(e) if is_retry(&e) => {}
                Err(e) => return self.fail(OpenFailure::from_io(&e, true), format!("sending the request: {e}"), cx),
            }
        }
        if !readable || hs.written < hs.request.len() {
            return Step::Keep;
        }
        loop {
            match read_socket(&self.stream, &mut self.tls, &mut cx.rx) {
                Ok(0) => {
                    return self.fail(OpenFailure::Closed, "server closed the connection before answering".into(), cx)
                }
                Ok(n) => {
                    match self.tls.as_deref_mut() {
                        None => hs.response.extend_from_slice(&cx.rx[..n]),
                        Some(tls) => {
                            let received = tls.receive(&mut cx.rx[..n], |plain| {
                                hs.response.extend_from_slice(plain);
                                Ok::<(), ()>(())
                            });
                            let _ = tls.flush(&self.stream);
                            match received {
                                Ok(false) | Err(TlsEnd::Plain(())) => {}
                                Ok(true) => {
                                    let detail = "server ended TLS (close_notify) before answering";
                                    return self.fail(OpenFailure::Closed, detail.into(), cx);
                                }
                                Err(TlsEnd::Tls(e)) => return self.fail_tls(&e, cx),
                            }
                        }
                    }
                    let offered = cx.request(self.id, self.sub.room).offered();
                    match handshake::check_response(&hs.response, &hs.expected_accept, offered) {
                        Ok(None) if n < cx.rx.len() => return Step::Keep,
                        Ok(None) => continue,
                        Ok(Some(head_len)) => {
                            let tail = hs.response.split_off(head_len);
                            let (tcp_up_ns, upgrade_ns) = (hs.tcp_up_ns, hs.upgrade_ns);
                            return self.open(&tail, tcp_up_ns, upgrade_ns, cx);
                        }
                        Err(Refused::Status(status)) => {
                            cx.stats.count_http_status(status);
                            let head = String::from_utf8_lossy(&hs.response);
                            let line = head.lines().next().unwrap_or_default().to_string();
                            return self.fail(OpenFailure::HttpStatus, format!("server answered {line:?}"), cx);
                        }
                        Err(Refused::Invalid(why)) => return self.fail(OpenFailure::BadResponse, why, cx),
                    }
                }
                Err(e) if is_retry(&e) => return Step::Keep,
                Err(e) => return self.fail(OpenFailure::from_io(&e, true), format!("reading the response: {e}"), cx),
            }
        }
    }

    /// The 101 arrived: `tail` is whatever followed it in the same read.
    /// TCP was up at `tcp_up_ns`, and TLS (`wss://`) done at `upgrade_ns`,
    /// when the request was sent.
    fn open(&mut self, tail: &[u8], tcp_up_ns: u64, upgrade_ns: u64, cx: &mut Context) -> Step {
        self.state = State::Open;
        self.opened = true;
        cx.connecting -= 1;
        cx.stats.connection_opened();
        // Handshakes are measured during the ramp; in churn mode, where they
        // are the workload, only those started inside the window.
        let counted = cx.mode != Mode::Churn || cx.window.contains(self.connect_ns);
        if counted {
            let stats = &mut cx.stats;
            metrics::record(&mut stats.handshake, cx.now_ns - self.connect_ns);
            metrics::record(&mut stats.handshake_tcp, tcp_up_ns - self.connect_ns);
            metrics::record(&mut stats.handshake_upgrade, cx.now_ns - upgrade_ns);
            if let Some(tls) = &self.tls {
                metrics::record(&mut stats.handshake_tls, upgrade_ns - tcp_up_ns);
                let counts = &mut stats.tls;
                if tls.resumed() {
                    counts.resumed += 1;
                } else {
                    counts.full += 1;
                }
                *counts.versions.entry(tls.version_name()).or_default() += 1;
                *counts.cipher_suites.entry(tls.suite_name()).or_default() += 1;
            }
        }
        if cx.mode == Mode::Churn && counted {
            cx.stats.handshakes_in_window += 1;
        }
        let mut result = if tail.is_empty() { Ok(()) } else { self.take_input(tail, cx) };
        if result.is_ok() && cx.mode == Mode::Churn && cx.sending {
            result = self.send_messages(1, None, cx);
        }
        self.settle(result, cx)
    }

    fn fail(&mut self, failure: OpenFailure, detail: String, cx: &mut Context) -> Step {
        let id = self.id;
        cx.stats.count_failure(failure, || format!("connection {id}: {detail}"));
        Step::Remove
    }

    // ----- open: reading -----

    fn serve(
        &mut self,
        readable: bool,
        writable: bool,
        read_closed: bool,
        schedule: Option<&Schedule>,
        cx: &mut Context,
    ) -> Result<(), End> {
        if writable && self.write_blocked {
            self.flush_pending()?;
            if !self.write_blocked {
                // Unblocked: catch up with what came due meanwhile.
                match (cx.mode, schedule) {
                    (Mode::Rate | Mode::Idle | Mode::Broadcast, Some(schedule)) => self.send_scheduled(schedule, cx)?,
                    (Mode::Echo | Mode::Broadcast, _) => self.send_top_up(cx).map(|_| ())?,
                    _ => {}
                }
            }
        }
        if readable && !self.paused(cx) {
            let before = self.seq.expected;
            self.read_input(read_closed, cx)?;
            if self.seq.expected != before {
                match cx.mode {
                    Mode::Echo | Mode::Broadcast => {
                        self.send_top_up(cx)?;
                    }
                    Mode::Churn if self.seq.in_flight() == 0 => {
                        if cx.window.contains(self.connect_ns) {
                            cx.stats.cycles += 1;
                        }
                        return self.close_after_cycle(cx);
                    }
                    _ => {}
                }
            }
        }
        Ok(())
    }

    fn close_after_cycle(&mut self, cx: &mut Context) -> Result<(), End> {
        let frame = frames::close(1000, self.mask);
        self.write_or_keep(&frame).map_err(End::Io)?;
        self.state = State::Closing { deadline_ns: cx.now_ns + CLOSE_TIMEOUT_NS };
        Ok(())
    }

    /// Reads until the socket is drained, checking every echo.
    #[inline]
    fn read_input(&mut self, read_closed: bool, cx: &mut Context) -> Result<(), End> {
        loop {
            let n = match read_socket(&self.stream, &mut self.tls, &mut cx.rx) {
                Ok(0) => return Err(End::Eof),
                Ok(n) => n,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(()),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(End::Io(e)),
            };
            self.last_input_ns = cx.now_ns;
            if self.tls.is_some() {
                self.consume_tls(n, cx)?;
            } else {
                self.consume(n, cx)?;
            }
            // A short read took everything there was (edge-triggered: more
            // input raises a new event), unless the peer has half-closed, in
            // which case read on to the end of the stream.
            if n < cx.rx.len() && !read_closed {
                return Ok(());
            }
        }
    }

    /// Bytes that arrived with the 101 (in the handshake's buffer, not the loop's).
    fn take_input(&mut self, bytes: &[u8], cx: &mut Context) -> Result<(), End> {
        let basis = Basis::of(cx);
        let Context { stats, payload, encoding, .. } = cx;
        let expected = Expected { encoding: *encoding, payload: &payload[..] };
        let mut receive = Receive::new(self.id, &mut self.seq, &mut self.sub, stats, basis);
        self.inbound.feed(bytes, &expected, &mut receive).map_err(End::Protocol)?;
        let (ping, close) = (receive.ping.take(), receive.close.take());
        self.after_input(ping, close)
    }

    #[inline]
    fn consume(&mut self, n: usize, cx: &mut Context) -> Result<(), End> {
        let basis = Basis::of(cx);
        let Context { stats, payload, encoding, rx, .. } = cx;
        let expected = Expected { encoding: *encoding, payload: &payload[..] };
        let mut receive = Receive::new(self.id, &mut self.seq, &mut self.sub, stats, basis);
        self.inbound.feed(&rx[..n], &expected, &mut receive).map_err(End::Protocol)?;
        if receive.ping.is_none() && receive.close.is_none() {
            return Ok(());
        }
        let (ping, close) = (receive.ping.take(), receive.close.take());
        self.after_input(ping, close)
    }

    /// `wss://`'s [`Client::consume`]: the ciphertext in `cx.rx[..n]`
    /// through rustls, and its plaintext through the same checks. Never
    /// inlined, so that `ws://`'s [`Client::read_input`] stays the code it
    /// was, plus one test.
    #[inline(never)]
    fn consume_tls(&mut self, n: usize, cx: &mut Context) -> Result<(), End> {
        let basis = Basis::of(cx);
        let Context { stats, payload, encoding, rx, .. } = cx;
        let expected = Expected { encoding: *encoding, payload: &payload[..] };
        let Some(tls) = self.tls.as_deref_mut() else { return Ok(()) };
        let inbound = &mut self.inbound;
        let mut receive = Receive::new(self.id, &mut self.seq, &mut self.sub, stats, basis);
        let received = tls.receive(&mut rx[..n], |plain| inbound.feed(plain, &expected, &mut receive));
        let (ping, close) = (receive.ping.take(), receive.close.take());
        // What rustls has to send of its own (a close_notify, a key update's
        // answer, an alert), unless data is already waiting for WRITABLE.
        if tls.wants_write() && !self.write_blocked && !tls.flush(&self.stream).map_err(End::Io)? {
            self.write_blocked = true;
        }
        let peer_ended_tls = match received {
            Ok(closed) => closed,
            Err(TlsEnd::Tls(e)) => return Err(End::Tls(e)),
            Err(TlsEnd::Plain(violation)) => return Err(End::Protocol(violation)),
        };
        if ping.is_some() || close.is_some() {
            self.after_input(ping, close)?;
        }
        // close_notify without a close frame: the server ended the stream.
        // (While closing it is the expected end, answered already: wait for
        // its FIN, so that its side keeps the TIME_WAIT.)
        if peer_ended_tls && self.is_open() {
            return Err(End::Eof);
        }
        Ok(())
    }

    #[cold]
    fn after_input(&mut self, ping: Option<PingPayload>, close: Option<Option<u16>>) -> Result<(), End> {
        if let Some(ping) = ping {
            let pong = frames::pong(&ping.bytes[..ping.len], self.mask);
            self.write_or_keep(&pong).map_err(End::Io)?;
        }
        match close {
            Some(code) => Err(End::PeerClose(code)),
            None => Ok(()),
        }
    }

    /// Closing: reads (and checks, for late echoes) until the server ends the stream.
    fn read_until_end(&mut self, read_closed: bool, cx: &mut Context) -> Result<(), End> {
        if self.write_blocked {
            self.flush_pending()?;
        }
        match self.read_input(read_closed, cx) {
            // The server's close frame: our close was already sent; wait for its FIN.
            Err(End::PeerClose(_)) => self.read_input(read_closed, cx).or_else(|e| match e {
                End::PeerClose(_) => Ok(()),
                other => Err(other),
            }),
            other => other,
        }
    }

    /// What a failed read or write means, counted, as a [`Step`].
    #[inline]
    fn settle(&mut self, result: Result<(), End>, cx: &mut Context) -> Step {
        match result {
            Ok(()) => Step::Keep,
            Err(end) => self.settle_end(end, cx),
        }
    }

    #[cold]
    fn settle_end(&mut self, end: End, cx: &mut Context) -> Step {
        let id = self.id;
        let sent = self.seq.next_seq;
        if self.sub.slow && !cx.closing_all && !matches!(end, End::Protocol(_) | End::Tls(_)) {
            return self.slow_end(end, cx);
        }
        match end {
            End::PeerClose(code) if cx.closing_all => {
                let _ = code;
                Step::Remove
            }
            End::PeerClose(code) => {
                let code_text = code.map_or("no code".to_string(), |c| c.to_string());
                cx.stats.count_fault(Fault::Closed, 1, || {
                    format!("connection {id}: server sent close ({code_text}) after {sent} messages")
                });
                self.give_up_in_flight("in flight when the server closed the connection", cx);
                // Answer the close (RFC 6455 §5.5.1), then wait for the server to end TCP.
                let reply = frames::close(code.unwrap_or(1000), self.mask);
                if self.write_or_keep(&reply).is_err() {
                    return Step::Remove;
                }
                self.state = State::Closing { deadline_ns: cx.now_ns + CLOSE_TIMEOUT_NS };
                Step::Keep
            }
            End::Eof => {
                if !cx.closing_all {
                    cx.stats.count_fault(Fault::Closed, 1, || {
                        format!(
                            "connection {id}: server ended the TCP stream without a close frame after {sent} messages"
                        )
                    });
                    self.give_up_in_flight("in flight when the server closed the connection", cx);
                }
                Step::Remove
            }
            End::Io(e) => {
                if !cx.closing_all {
                    cx.stats.count_fault(Fault::Reset, 1, || format!("connection {id}: {e} after {sent} messages"));
                    self.give_up_in_flight("in flight when the connection was reset", cx);
                }
                Step::Remove
            }
            End::Protocol(violation) => {
                cx.stats.count_fault(Fault::Protocol, 1, || format!("connection {id}: {}", violation.0));
                self.give_up_in_flight("in flight when the server broke the protocol", cx);
                Step::Remove
            }
            End::Tls(e) => {
                if let Some(tls) = self.tls.as_deref_mut() {
                    // Send the alert rustls queued, if the socket takes it.
                    let _ = tls.flush(&self.stream);
                }
                cx.stats.count_fault(Fault::Protocol, 1, || format!("connection {id}: TLS: {e} after {sent} messages"));
                self.give_up_in_flight("in flight when TLS failed", cx);
                Step::Remove
            }
        }
    }

    /// A `--slow` subscriber ended by the server (closed for being slow, as
    /// a `--slow-consumer close` policy does): reported apart, not a fault.
    #[cold]
    fn slow_end(&mut self, end: End, cx: &mut Context) -> Step {
        let how = match &end {
            End::PeerClose(Some(code)) => code.to_string(),
            End::PeerClose(None) => "no code".to_string(),
            End::Eof => "eof".to_string(),
            End::Io(_) | End::Protocol(_) | End::Tls(_) => "reset".to_string(),
        };
        *cx.stats.fanout.slow_closed.entry(how).or_default() += 1;
        match end {
            End::PeerClose(code) => {
                // Answer the close (RFC 6455 §5.5.1), then wait for the server to end TCP.
                let reply = frames::close(code.unwrap_or(1000), self.mask);
                if self.write_or_keep(&reply).is_err() {
                    return Step::Remove;
                }
                self.state = State::Closing { deadline_ns: cx.now_ns + CLOSE_TIMEOUT_NS };
                Step::Keep
            }
            _ => Step::Remove,
        }
    }

    /// Counts every message in flight as missing and stops waiting for them.
    /// (Broadcast: only stops waiting; what was missed is judged at the end,
    /// per subscriber.)
    fn give_up_in_flight(&mut self, why: &str, cx: &mut Context) {
        let lost = self.seq.in_flight();
        if lost == 0 {
            return;
        }
        if cx.mode == Mode::Broadcast {
            self.seq.expected = self.seq.next_seq;
            return;
        }
        let (id, first) = (self.id, self.seq.expected);
        cx.stats.count_fault(Fault::Missing, lost, || format!("connection {id}: message {first} {why}"));
        self.seq.lost = self.seq.expected..self.seq.next_seq;
        self.seq.expected = self.seq.next_seq;
        self.seq.progress_ns = cx.now_ns;
    }

    // ----- open: writing -----

    /// Echo mode's top-up; returns how many messages were sent.
    #[inline]
    fn send_top_up(&mut self, cx: &mut Context) -> Result<u64, End> {
        if !cx.closed_loop || !self.sends || !cx.sending || self.write_blocked || !self.is_open() {
            return Ok(0);
        }
        let count = cx.pipeline.saturating_sub(self.seq.in_flight()).min(cx.quota_left);
        self.send_messages(count, None, cx)?;
        Ok(count)
    }

    fn send_scheduled(&mut self, schedule: &Schedule, cx: &mut Context) -> Result<(), End> {
        // (A broadcast subscriber that does not publish has no slot of its own.)
        if !self.sends || !cx.sending || self.write_blocked || !self.is_open() {
            return Ok(());
        }
        let due = schedule.due_count(self.slot, cx.now_ns);
        let count = due.saturating_sub(self.seq.next_seq);
        self.send_messages(count, Some(schedule), cx)
    }

    /// Sends `count` messages (stamped with their intended times from
    /// `schedule`, or now), in one `write`.
    #[inline]
    fn send_messages(&mut self, count: u64, schedule: Option<&Schedule>, cx: &mut Context) -> Result<(), End> {
        if count == 0 {
            return Ok(());
        }
        let now = cx.now_ns;
        let payload_len = if cx.mode == Mode::Idle { BINARY_STAMP_LEN } else { cx.payload.len() } as u64;
        if self.seq.in_flight() == 0 {
            self.seq.progress_ns = now;
        }
        let mut stamp = Stamp { seq: 0, intended_ns: now, sent_ns: now, connection: self.id };
        let window = cx.window;
        let count_one = |intended: u64, stats: &mut Stats, quota: &mut u64| {
            if window.contains(intended) {
                stats.sent += 1;
                stats.bytes_sent += payload_len;
                *quota = quota.saturating_sub(1);
            }
        };
        let result = if count == 1 {
            stamp.seq = self.seq.next_seq;
            if let Some(schedule) = schedule {
                stamp.intended_ns = schedule.intended(self.slot, stamp.seq);
            }
            count_one(stamp.intended_ns, &mut cx.stats, &mut cx.quota_left);
            self.seq.next_seq += 1;
            let bytes = cx.frame.stamp(&stamp);
            transmit(&self.stream, &mut self.tls, &mut self.pending, &mut self.write_blocked, bytes)
        } else {
            cx.out.clear();
            for _ in 0..count {
                stamp.seq = self.seq.next_seq;
                if let Some(schedule) = schedule {
                    stamp.intended_ns = schedule.intended(self.slot, stamp.seq);
                }
                count_one(stamp.intended_ns, &mut cx.stats, &mut cx.quota_left);
                self.seq.next_seq += 1;
                cx.out.extend_from_slice(cx.frame.stamp(&stamp));
            }
            transmit(&self.stream, &mut self.tls, &mut self.pending, &mut self.write_blocked, &cx.out)
        };
        result.map_err(End::Io)
    }

    /// Writes a control frame behind anything already queued.
    fn write_or_keep(&mut self, bytes: &[u8]) -> io::Result<()> {
        if self.write_blocked {
            self.pending.extend_from_slice(bytes);
            return Ok(());
        }
        transmit(&self.stream, &mut self.tls, &mut self.pending, &mut self.write_blocked, bytes)
    }

    fn flush_pending(&mut self) -> Result<(), End> {
        if let Some(tls) = self.tls.as_deref_mut() {
            if tls.flush_pending(&self.stream, &mut self.pending).map_err(End::Io)? {
                self.write_blocked = false;
                if self.pending.capacity() > PENDING_KEEP {
                    self.pending = Vec::new();
                }
            }
            return Ok(());
        }
        loop {
            match (&self.stream).write(&self.pending) {
                Ok(n) if n == self.pending.len() => {
                    self.pending.clear();
                    if self.pending.capacity() > PENDING_KEEP {
                        self.pending = Vec::new();
                    }
                    self.write_blocked = false;
                    return Ok(());
                }
                Ok(n) => {
                    self.pending.drain(..n);
                    return Ok(());
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(()),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(End::Io(e)),
            }
        }
    }
}

/// One `read` of the socket into `rx`: how many bytes of `rx` to parse
/// (for TLS, records after the end of one kept from the last read; see
/// [`TlsStream::read`]).
#[inline]
fn read_socket(stream: &TcpStream, tls: &mut Option<Box<TlsStream>>, rx: &mut [u8]) -> io::Result<usize> {
    match tls {
        None => (&*stream).read(rx),
        Some(tls) => tls.read(stream, rx),
    }
}

/// Writes `data`: over TLS if the connection has it, else with
/// [`write_or_keep`]. The one branch is all `ws://` pays for `wss://`.
#[inline]
fn transmit(
    stream: &TcpStream,
    tls: &mut Option<Box<TlsStream>>,
    pending: &mut Vec<u8>,
    blocked: &mut bool,
    data: &[u8],
) -> io::Result<()> {
    match tls {
        None => write_or_keep(stream, pending, blocked, data),
        Some(tls) => tls.write_or_keep(stream, pending, blocked, data),
    }
}

/// Writes `data` with one `write`; what the kernel does not take is kept in
/// `pending` and the socket marked blocked (a short write means its buffer
/// is full: trying again now would only return `EAGAIN`).
#[inline]
fn write_or_keep(stream: &TcpStream, pending: &mut Vec<u8>, blocked: &mut bool, data: &[u8]) -> io::Result<()> {
    let written = loop {
        match (&*stream).write(data) {
            Ok(n) => break n,
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => break 0,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        }
    };
    if written < data.len() {
        pending.extend_from_slice(&data[written..]);
        *blocked = true;
    }
    Ok(())
}

fn is_retry(e: &io::Error) -> bool {
    matches!(e.kind(), io::ErrorKind::WouldBlock | io::ErrorKind::Interrupted)
}

/// A masking key, per connection (its control frames) or per loop (its data
/// frames). It only has to differ between them (see [`crate::frames`]), so a
/// mix of an id and the clock does.
pub fn random_mask(id: u32, now_ns: u64) -> [u8; 4] {
    let mixed = (u64::from(id) ^ now_ns.rotate_left(29)).wrapping_mul(0x9e37_79b9_7f4a_7c15);
    ((mixed >> 32) as u32).to_ne_bytes()
}

/// A ping's payload, held until the pong can be written.
struct PingPayload {
    /// The payload (a control frame carries at most 125 bytes).
    bytes: [u8; 125],
    /// Bytes of `bytes` in use.
    len: usize,
}

/// What the echo checker needs of the loop's context besides the counters:
/// the parts of [`Context`] that are the same for every message of a read.
#[derive(Debug, Clone, Copy)]
struct Basis {
    /// Idle mode expects pongs, broadcast deliveries, the others echoes.
    mode: Mode,
    /// Messages intended in it are measured.
    window: Window,
    /// The receive time of everything in this read.
    now_ns: u64,
    /// Payload bytes per message, for the byte counters.
    payload_len: u64,
    /// Record the uncorrected latency too ([`Context::uncorrected`]).
    uncorrected: bool,
}

impl Basis {
    #[inline]
    fn of(cx: &Context) -> Basis {
        let payload_len = if cx.mode == Mode::Idle { BINARY_STAMP_LEN } else { cx.payload.len() } as u64;
        Basis { mode: cx.mode, window: cx.window, now_ns: cx.now_ns, payload_len, uncorrected: cx.uncorrected }
    }
}

/// The echo checker: what the reader hands over, judged against the
/// connection's sequence state, counted and timed.
struct Receive<'a> {
    /// The connection's id, which every intact echo must carry.
    id: u32,
    /// The connection's sequence state.
    seq: &'a mut Tracker,
    /// Broadcast mode: what the connection has received of its room.
    sub: &'a mut Subscriber,
    /// Where results are counted.
    stats: &'a mut Stats,
    /// Mode, window, time and sizes.
    basis: Basis,
    /// A ping to answer once the read is processed.
    ping: Option<PingPayload>,
    /// A close frame received (with its code, if any).
    close: Option<Option<u16>>,
}

impl<'a> Receive<'a> {
    #[inline]
    fn new(id: u32, seq: &'a mut Tracker, sub: &'a mut Subscriber, stats: &'a mut Stats, basis: Basis) -> Self {
        Receive { id, seq, sub, stats, basis, ping: None, close: None }
    }

    #[inline]
    fn intact(&mut self, stamp: Stamp) {
        let (id, expected) = (self.id, self.seq.expected);
        if stamp.connection != id {
            let other = stamp.connection;
            return self.corrupt_with(|| format!("connection {id}: got message {} of connection {other}", stamp.seq));
        }
        if stamp.seq >= self.seq.next_seq {
            return self.corrupt_with(|| format!("connection {id}: got message {} which was never sent", stamp.seq));
        }
        if stamp.seq < expected {
            if self.seq.lost.contains(&stamp.seq) {
                self.stats.late += 1;
            } else {
                self.stats.count_fault(Fault::Duplicate, 1, || {
                    format!("connection {id}: got message {} again (expected {expected})", stamp.seq)
                });
            }
            return;
        }
        if stamp.seq > expected {
            self.stats.count_fault(Fault::Missing, stamp.seq - expected, || {
                format!("connection {id}: message {expected} skipped (got {} next)", stamp.seq)
            });
        }
        self.seq.expected = stamp.seq + 1;
        self.seq.progress_ns = self.basis.now_ns;
        self.measure(stamp);
    }

    /// Broadcast: a message of the room (or not), from one of its publishers.
    #[inline]
    fn delivery(&mut self, stamp: Stamp) {
        match self.sub.deliver(stamp.connection, stamp.seq) {
            Verdict::InOrder => {}
            verdict => {
                if !self.unusual_delivery(verdict, stamp) {
                    return;
                }
            }
        }
        if stamp.connection == self.id {
            // Its own message, back: what paces a closed-loop publisher.
            if stamp.seq >= self.seq.next_seq {
                let id = self.id;
                return self.stats.count_fault(Fault::Corrupt, 1, || {
                    format!("connection {id}: got its own message {} which it never sent", stamp.seq)
                });
            }
            if stamp.seq >= self.seq.expected {
                self.seq.expected = stamp.seq + 1;
            }
            self.seq.progress_ns = self.basis.now_ns;
        }
        if self.sub.slow {
            // Read late by design: no figure but the live line's.
            self.stats.received_all += 1;
            self.stats.bytes_received_all += self.basis.payload_len;
            return;
        }
        self.measure(stamp);
    }

    /// Counts a delivery that is not the next of its publisher; returns
    /// whether it is still a delivery to measure (an out-of-order one is).
    #[cold]
    fn unusual_delivery(&mut self, verdict: Verdict, stamp: Stamp) -> bool {
        let (id, room, publisher, seq) = (self.id, self.sub.room, stamp.connection, stamp.seq);
        let (fault, detail): (Fault, &str) = match verdict {
            Verdict::InOrder => return true,
            Verdict::OutOfOrder => (Fault::OutOfOrder, "after a later one of the same publisher"),
            Verdict::TooOld => (Fault::OutOfOrder, "far behind later ones (a late message or a repeat)"),
            Verdict::Duplicate => (Fault::Duplicate, "again"),
            Verdict::Foreign => (Fault::Foreign, "from a connection that publishes in another room or in none"),
        };
        self.stats.count_fault(fault, 1, || {
            format!("connection {id} (room {room}): got message {seq} of publisher {publisher} {detail}")
        });
        verdict == Verdict::OutOfOrder
    }

    /// Idle mode: a stamped message (a publish reaching this connection),
    /// timed from its stamp's intended time, whenever it comes.
    fn idle_delivery(&mut self, stamp: Stamp) {
        let idle = &mut self.stats.idle;
        metrics::record(&mut idle.latency, self.basis.now_ns.saturating_sub(stamp.intended_ns));
        // An idle connection has no room: its subscriber record only counts what it got.
        self.sub.received += 1;
        if self.sub.received == 1 {
            idle.connections_reached += 1;
        }
    }

    /// An intact message, counted and, if intended in the window, timed.
    #[inline]
    fn measure(&mut self, stamp: Stamp) {
        let Basis { window, now_ns, payload_len, uncorrected, .. } = self.basis;
        self.stats.received_all += 1;
        self.stats.bytes_received_all += payload_len;
        if window.contains(stamp.intended_ns) {
            self.stats.received += 1;
            self.stats.bytes_received += payload_len;
            let latency = now_ns.saturating_sub(stamp.intended_ns);
            metrics::record(&mut self.stats.latency, latency);
            if !self.stats.by_target.is_empty() {
                let targets = self.stats.by_target.len();
                metrics::record(&mut self.stats.by_target[self.id as usize % targets], latency);
            }
            if uncorrected {
                metrics::record(&mut self.stats.uncorrected, now_ns.saturating_sub(stamp.sent_ns));
            }
        }
    }

    fn corrupt_with(&mut self, detail: impl FnOnce() -> String) {
        self.stats.count_fault(Fault::Corrupt, 1, detail);
        if self.basis.mode == Mode::Broadcast {
            // Whose message it was is unknown: a closed-loop publisher whose
            // own one it was goes on after --message-timeout.
            return;
        }
        // It was an echo of something: count it against the oldest in flight,
        // so the pipeline keeps moving.
        if self.seq.expected < self.seq.next_seq {
            self.seq.expected += 1;
        }
        self.seq.progress_ns = self.basis.now_ns;
    }
}

impl Handler for Receive<'_> {
    #[inline]
    fn echo(&mut self, echo: Echo) {
        match echo {
            Echo::Intact(stamp) if self.basis.mode == Mode::Broadcast => self.delivery(stamp),
            Echo::Intact(stamp) if self.basis.mode != Mode::Idle => self.intact(stamp),
            Echo::Intact(stamp) => self.idle_delivery(stamp),
            Echo::Corrupt(why) if self.basis.mode == Mode::Idle => {
                let idle = &mut self.stats.idle;
                idle.unstamped += 1;
                if idle.first_unstamped.is_none() {
                    idle.first_unstamped = Some(format!("connection {}: {why}", self.id));
                }
            }
            Echo::Corrupt(why) => {
                let (id, expected) = (self.id, self.seq.expected);
                self.corrupt_with(|| format!("connection {id}: message {expected}: {why}"))
            }
        }
    }

    fn ping(&mut self, payload: &[u8]) {
        let mut bytes = [0u8; 125];
        bytes[..payload.len()].copy_from_slice(payload);
        // Only the latest ping needs an answer (RFC 6455 §5.5.3).
        self.ping = Some(PingPayload { bytes, len: payload.len() });
    }

    fn pong(&mut self, payload: &[u8]) {
        if self.basis.mode != Mode::Idle {
            return; // unsolicited pongs are allowed and carry no meaning
        }
        match Stamp::read(Encoding::Binary, payload) {
            Ok(stamp) if payload.len() == BINARY_STAMP_LEN => self.intact(stamp),
            _ => {
                let id = self.id;
                self.corrupt_with(|| format!("connection {id}: pong payload is not the ping's"))
            }
        }
    }

    fn close(&mut self, code: Option<u16>) {
        self.close = Some(code);
    }
}
