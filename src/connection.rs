//! One connection: an explicit state machine, driven by readiness events
//! and by the loop's periodic sweep.
//!
//! ```text
//!   accept ─▶ Handshaking ──101──▶ Open ──we close (idle, shutdown, app)──▶ Closing ──peer's close──┐
//!                 │                  │                                                              ▼
//!                 │                  └──peer's close / protocol error: our last frame queued──▶ Lingering ─▶ (removed)
//!                 └──plain request or refusal: HTTP response queued────────────────────────────────▲
//! ```
//!
//! - **Handshaking**: reading the request head; the [`Decision`] on it is
//!   acted on in one place (`Connection::read_head`).
//! - **Open**: messages flow ([`wakeup::serve`]).
//! - **Closing**: our close frame is sent; reading on until the peer's.
//! - **Lingering**: our last words (an HTTP response, a close frame) are
//!   queued: send them, half-close, and read until the peer closes, so that
//!   it gets them instead of a reset. One state for refusals, pages and
//!   failed WebSockets.
//!
//! The socket and the pending output belong to the connection, not to a
//! state, so a state change never has to move them.
//!
//! The connection never drops its own socket: when it is finished it returns
//! [`Step::Remove`] and the loop frees the slab slot.

use std::{net::SocketAddr, time::Duration};

use bytes::Bytes;
use mio::{Interest, Registry, Token};
use tracing::{debug, error, info, warn};
use tungstenite::protocol::frame::coding::CloseCode;

use crate::{
    app::{App, ConnectionId, Request},
    clock::{self, Tick},
    config::{Config, SlowConsumer},
    fanout::{Delivered, Origin, Publish, Target},
    handshake::{self, Decision, HandshakeFailure, Head, PlainRequest, Policy, PublishRequest, Refusal, RefusalKind},
    http::{Response, Routes},
    hub::{Hub, Reply},
    metrics::Metrics,
    outbox::{self, Outbox},
    pages,
    protocol::{writer, Kind, Reader},
    socket::{Received, Socket, Transport},
    wakeup::{self, Awaiting, End, Lent, Open, Served},
};

/// How long we wait for the peer to answer a close we started (idle timeout,
/// protocol error), or to close after our last words, before dropping it.
pub const CLOSE_GRACE: Duration = Duration::from_secs(2);

/// Input a lingering connection may still send before we stop being polite.
const LINGER_LIMIT: usize = 256 << 10;

/// Everything a connection needs from its loop for one call.
pub struct Context<'a> {
    /// What the hot path needs: buffers, limits, metrics, the clock.
    pub lent: &'a mut Lent,
    pub registry: &'a Registry,
    pub config: &'a Config,
    pub policy: &'a Policy,
    /// With other loops: the hub they share, and this loop's index (the
    /// pages show the process; a publish waits for every loop's counts).
    pub hub: Option<(&'a Hub, usize)>,
    /// Where the server listens (for the pages).
    pub listen: SocketAddr,
}

pub use crate::sys::Readiness;

/// What became of one delivery ([`Connection::deliver`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Delivery {
    /// Queued; `drain`: the loop must write it out at the end of the
    /// iteration (the connection had nothing pending and is not waiting for
    /// WRITABLE).
    Queued { drain: bool },
    /// Skipped: a slow consumer under `--slow-consumer drop`.
    Skipped,
    /// A slow consumer under `--slow-consumer close`: the loop closes it
    /// once the fan-out is done ([`Connection::close_slow_consumer`]).
    Slow,
}

/// What the loop should do with the connection after a call.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Step {
    /// Keep it; it will be called on its next event.
    Keep,
    /// Serve it again before the next poll: it stopped reading for fairness
    /// with input left, and no new edge will announce that input.
    Again,
    /// It is finished: free its slot (which closes the socket).
    Remove,
}

enum State {
    /// Reading the request head.
    Handshaking(Handshaking),
    /// Reading a `POST /publish` body.
    Publishing(Box<Publishing>),
    /// Its message is published: waiting for every loop's delivery counts
    /// ([`Connection::on_published`]) to answer.
    Delivering(Delivering),
    /// `/stats` or `/metrics` with other loops: waiting for their figures
    /// ([`Connection::on_figures`]) to answer.
    Gathering(Box<Gathering>),
    /// Messages flow.
    Open(Open),
    /// We sent a close frame; reading until the peer's.
    Closing(Reader),
    /// Our last words are queued: send them, then wait for the peer to close.
    Lingering(Lingering),
}

struct Handshaking {
    /// The start of a request head that did not arrive in one piece.
    head: Vec<u8>,
    /// The routes this connection's listener serves.
    routes: Routes,
}

struct Delivering {
    /// The counts so far.
    counts: Delivered,
    /// Loops that have not reported yet.
    awaiting: usize,
}

/// The process's figures, being put together for a page.
struct Gathering {
    page: PlainRequest,
    /// This loop's figures as of the request, merged with the answers so far.
    metrics: Metrics,
    /// Open connections per loop.
    loops: Vec<u64>,
    /// Loops that have not answered yet.
    awaiting: usize,
}

struct Publishing {
    request: PublishRequest,
    /// What has arrived of the body (never more than `request.length`).
    body: Vec<u8>,
}

/// What reading a complete head led to.
enum Next {
    /// A WebSocket opened: serve it (frames may have come with the request).
    Open,
    /// A `POST /publish` head: read its body.
    Publish,
    Step(Step),
}

#[derive(Default)]
struct Lingering {
    /// Our FIN is sent (after the last words).
    shut_down: bool,
    /// Input read and thrown away since.
    discarded: usize,
}

pub struct Connection {
    socket: Socket,
    outbox: Outbox,
    state: State,
    id: ConnectionId,
    /// When inbound bytes last arrived: idle pings and the idle close count from here.
    last_seen: Tick,
    /// When the current phase must be over: the handshake, or the closing.
    deadline: Tick,
    /// When pending output went over the backpressure limit, while it is.
    backpressure_since: Option<Tick>,
    /// The close code to count: the peer's when it closed first, ours when
    /// we did; 0 if none was exchanged (counted as 1006).
    close_code: u16,
    /// Pending output last added to the loop's `pending_output_bytes` gauge.
    reported_pending: u32,
    /// The interest registered with epoll, so it is changed only when it must be.
    interest: Interest,
    /// An idle ping has not been answered yet.
    ping_sent: bool,
    /// Counted in `connections_open` (refusals and plain requests are not).
    counted_open: bool,
}

impl Connection {
    /// A freshly accepted connection, registered for READABLE, on a
    /// listener that serves `routes`.
    pub fn accepted(socket: Socket, id: ConnectionId, routes: Routes, cx: &mut Context<'_>) -> Self {
        cx.lent.metrics.connections_accepted += 1;
        cx.lent.metrics.connections_open += 1;
        let state = State::Handshaking(Handshaking { head: Vec::new(), routes });
        let mut connection = Self::new(socket, id, state, cx.lent.clock.now(), cx.config.handshake_timeout);
        connection.counted_open = true;
        connection
    }

    /// A connection over `--max-connections`: it is sent `refusal` and
    /// lingers briefly; it is not counted as open.
    pub fn refused(socket: Socket, id: ConnectionId, refusal: &Refusal, cx: &mut Context<'_>) -> Self {
        cx.lent.metrics.connections_accepted += 1;
        let mut connection =
            Self::new(socket, id, State::Lingering(Lingering::default()), cx.lent.clock.now(), CLOSE_GRACE);
        connection.outbox.push(Bytes::from(refusal.response.to_bytes()));
        connection
    }

    fn new(socket: Socket, id: ConnectionId, state: State, now: Tick, time_allowed: Duration) -> Self {
        Connection {
            socket,
            outbox: Outbox::default(),
            state,
            id,
            last_seen: now,
            deadline: now.wrapping_add(clock::ticks(time_allowed)),
            backpressure_since: None,
            close_code: 0,
            reported_pending: 0,
            interest: Interest::READABLE,
            ping_sent: false,
            counted_open: false,
        }
    }

    pub fn socket_mut(&mut self) -> &mut Socket {
        &mut self.socket
    }

    fn peer(&self) -> String {
        match self.socket.stream().peer_addr() {
            Ok(addr) => addr.to_string(),
            Err(_) => "(gone)".to_string(),
        }
    }

    /// The connection's id (unique in its loop).
    pub fn id(&self) -> ConnectionId {
        self.id
    }

    /// Whether the connection is a WebSocket that is open (messages may be sent to it).
    pub fn is_open(&self) -> bool {
        matches!(self.state, State::Open(_))
    }

    /// Queues `frame`, published to one of its rooms, unless the connection
    /// is a slow consumer: its pending output over `limit`
    /// (`--max-backpressure`, so what it holds stays within the limit plus
    /// one message).
    #[inline]
    pub fn deliver(&mut self, frame: &Bytes, limit: usize, policy: SlowConsumer) -> Delivery {
        if self.outbox.len() > limit {
            return match policy {
                SlowConsumer::Drop => Delivery::Skipped,
                SlowConsumer::Close => Delivery::Slow,
            };
        }
        let drain = self.outbox.is_empty() && !self.socket.write_blocked();
        self.outbox.push(frame.clone());
        Delivery::Queued { drain }
    }

    /// Writes what was delivered to it since its last write: once per loop
    /// iteration, however many messages it got (corked).
    #[inline]
    pub fn drain(&mut self, token: Token, cx: &mut Context<'_>) -> Step {
        let step = match outbox::flush(&mut self.socket, &mut self.outbox, &mut cx.lent.cork, &[]) {
            Ok(_) => Step::Keep,
            Err(_) => Step::Remove,
        };
        self.finish(token, step, cx)
    }

    /// Closes a room member that fell behind (`--slow-consumer close`): what
    /// it has not started receiving is dropped (the memory is freed at once),
    /// and close 1008 is queued behind what it has.
    pub fn close_slow_consumer<A: App>(&mut self, token: Token, app: &mut A, cx: &mut Context<'_>) -> Step {
        if !self.is_open() {
            return Step::Keep;
        }
        info!(peer = %self.peer(), pending = self.outbox.len(), "closing slow consumer: output backlog over the limit");
        cx.lent.metrics.slow_consumer_closes += 1;
        self.outbox.drop_unstarted();
        let step = self.start_close(CloseCode::Policy.into(), "slow consumer: output backlog over the limit", app, cx);
        self.finish(token, step, cx)
    }

    /// Handles one readiness event.
    pub fn on_ready<A: App>(&mut self, token: Token, ready: Readiness, app: &mut A, cx: &mut Context<'_>) -> Step {
        if ready.readable {
            self.last_seen = cx.lent.clock.now();
        }
        self.socket.on_event(ready.readable, ready.writable, ready.read_closed);
        let step = match self.state {
            State::Handshaking(_) => self.read_head(app, cx),
            State::Publishing(_) => self.read_body(cx),
            State::Delivering(_) | State::Gathering(_) => Step::Keep,
            State::Open(_) => self.serve_open(app, cx),
            State::Closing(_) => self.serve_closing(cx),
            State::Lingering(_) => self.serve_lingering(cx),
        };
        self.finish(token, step, cx)
    }

    /// Handles the periodic sweep: deadlines, idle pings and idle closes,
    /// slow consumers. Costs a few comparisons for a connection with nothing due.
    pub fn on_tick<A: App>(&mut self, token: Token, app: &mut A, cx: &mut Context<'_>) -> Step {
        let now = cx.lent.clock.now();
        self.outbox.release_if_empty();
        let step = match &self.state {
            State::Handshaking(_) | State::Publishing(_) if clock::is_past(self.deadline, now) => {
                info!(peer = %self.peer(), "handshake timed out");
                cx.lent.metrics.count_failure(HandshakeFailure::Timeout);
                Step::Remove
            }
            State::Closing(_) | State::Lingering(_) if clock::is_past(self.deadline, now) => Step::Remove,
            // A loop that cannot answer (it panicked) does not hold the page up.
            State::Gathering(_) if clock::is_past(self.deadline, now) => self.answer_gathered(cx),
            State::Open(_) => self.check_open_timers(app, cx),
            _ => Step::Keep,
        };
        self.finish(token, step, cx)
    }

    /// Starts the graceful shutdown of this connection: close 1001 if it is
    /// open, drop it if it never opened.
    pub fn on_shutdown<A: App>(&mut self, token: Token, deadline: Tick, app: &mut A, cx: &mut Context<'_>) -> Step {
        let step = match self.state {
            State::Handshaking(_) | State::Publishing(_) => Step::Remove,
            State::Delivering(_) | State::Gathering(_) => Step::Keep,
            State::Open(_) => {
                let step = self.start_close(CloseCode::Away.into(), "server shutting down", app, cx);
                self.deadline = deadline;
                step
            }
            // Already closing, on a deadline no later than the loop's own.
            State::Closing(_) | State::Lingering(_) => Step::Keep,
        };
        self.finish(token, step, cx)
    }

    /// Accounting for a connection the loop is about to free.
    pub fn on_remove<A: App>(&mut self, app: &mut A, cx: &mut Context<'_>) {
        if self.is_open() {
            // Dropped without a close handshake (peer gone, slow consumer, loop exit).
            self.end_websocket(app, cx);
        }
        let metrics = &mut cx.lent.metrics;
        self.stop_counting_open(metrics);
        metrics.pending_output_bytes = metrics.pending_output_bytes.saturating_sub(u64::from(self.reported_pending));
        self.reported_pending = 0;
    }

    /// The WebSocket is over: counted once, by its close code (1006 if none
    /// was exchanged), the application told, its rooms left. The connection
    /// lingers for its last words unless the caller moves it on.
    fn end_websocket<A: App>(&mut self, app: &mut A, cx: &mut Context<'_>) {
        let code = if self.close_code == 0 { 1006 } else { self.close_code };
        cx.lent.metrics.count_close(code);
        cx.lent.hand().closed(app, self.id, code);
        self.state = State::Lingering(Lingering::default());
        self.deadline = cx.lent.clock.now().wrapping_add(clock::ticks(CLOSE_GRACE));
    }

    fn stop_counting_open(&mut self, metrics: &mut Metrics) {
        if std::mem::take(&mut self.counted_open) {
            metrics.connections_open = metrics.connections_open.saturating_sub(1);
        }
    }

    /// Brings the pending-output gauge up to date and registers the interest
    /// the state now needs, if it changed.
    #[inline]
    pub fn finish(&mut self, token: Token, step: Step, cx: &mut Context<'_>) -> Step {
        if step == Step::Remove {
            return step;
        }
        let pending = u32::try_from(self.outbox.len()).unwrap_or(u32::MAX);
        if pending != self.reported_pending {
            let gauge = &mut cx.lent.metrics.pending_output_bytes;
            *gauge = (*gauge + u64::from(pending)).saturating_sub(u64::from(self.reported_pending));
            self.reported_pending = pending;
        }
        // READABLE always; WRITABLE too while output waits for the kernel.
        let waiting = !self.outbox.is_empty() || self.socket.write_blocked();
        let wanted = if waiting { Interest::READABLE | Interest::WRITABLE } else { Interest::READABLE };
        if wanted != self.interest {
            return self.reregister(token, wanted, step, cx);
        }
        step
    }

    /// Registers interest in `wanted` ([`Connection::finish`], out of line:
    /// most calls change nothing).
    #[inline(never)]
    fn reregister(&mut self, token: Token, wanted: Interest, step: Step, cx: &mut Context<'_>) -> Step {
        if let Err(e) = cx.registry.reregister(self.socket.stream_mut(), token, wanted) {
            error!(error = %e, "epoll_ctl failed; dropping the connection");
            return Step::Remove;
        }
        self.interest = wanted;
        step
    }

    /// Reads the request head; once it is complete, acts on the decision.
    fn read_head<A: App>(&mut self, app: &mut A, cx: &mut Context<'_>) -> Step {
        // The receive buffer is taken out of the context while the parsed
        // head borrows it, so the rest of the context stays usable.
        let mut rx = std::mem::take(&mut cx.lent.rx);
        let next = self.parse_head(&mut rx, app, cx);
        cx.lent.rx = rx;
        match next {
            Next::Open => self.serve_open(app, cx),
            Next::Publish => self.read_body(cx),
            Next::Step(step) => step,
        }
    }

    /// Reads into `rx` until the head is complete and acts on the decision.
    fn parse_head<A: App>(&mut self, rx: &mut [u8], app: &mut A, cx: &mut Context<'_>) -> Next {
        let State::Handshaking(hs) = &mut self.state else { return Next::Step(Step::Remove) };
        loop {
            // What arrived before goes first (only for a head in several pieces).
            let carried = hs.head.len();
            rx[..carried].copy_from_slice(&hs.head);
            let n = match self.socket.recv(&mut rx[carried..]) {
                Ok(Received::Data(n)) => carried + n,
                Ok(Received::Nothing) => return Next::Step(Step::Keep),
                Ok(Received::Eof) => return Next::Step(self.handshake_failed(HandshakeFailure::PeerClosed, cx)),
                Err(e) => return Next::Step(self.handshake_error(&e, cx)),
            };
            let mut headers = handshake::NO_HEADERS;
            let (len, request) = match handshake::parse_head(&rx[..n], &mut headers) {
                Head::Partial => {
                    hs.head.clear();
                    hs.head.extend_from_slice(&rx[..n]);
                    continue;
                }
                Head::Refused(refusal) => return Next::Step(self.refuse(refusal, cx)),
                Head::Complete { len, request } => (len, request),
            };
            return match handshake::decide(&request, cx.policy, hs.routes) {
                Decision::Upgrade(response) => {
                    // What followed the head is the WebSocket's first input.
                    self.state = State::Open(Open::new(&rx[len..n]));
                    match self.opened(&response, &request, app, cx) {
                        None => Next::Open,
                        Some(step) => Next::Step(step),
                    }
                }
                Decision::Publish(request) => {
                    self.stop_counting_open(&mut cx.lent.metrics);
                    // What followed the head is the start of the body.
                    let body = rx[len..n.min(len + request.length)].to_vec();
                    self.state = State::Publishing(Box::new(Publishing { request, body }));
                    Next::Publish
                }
                Decision::Plain(plain) => {
                    // Not a WebSocket after all: the figures it is answered
                    // with must not count it as an open connection.
                    self.stop_counting_open(&mut cx.lent.metrics);
                    cx.lent.metrics.count_http_request(plain.route);
                    Next::Step(self.answer_page(plain, cx))
                }
                Decision::Refuse(refusal) => Next::Step(self.refuse(refusal, cx)),
            };
        }
    }

    /// The WebSocket is open: the 101 is corked, and the application sees
    /// the request. `None` unless the application closed it at once.
    fn opened<A: App>(
        &mut self,
        response: &[u8],
        request: &httparse::Request<'_, '_>,
        app: &mut A,
        cx: &mut Context<'_>,
    ) -> Option<Step> {
        cx.lent.metrics.websockets_opened += 1;
        cx.lent.cork.push_scratch(|s| s.extend_from_slice(response));
        let target = request.path.unwrap_or("/");
        let (path, query) = match target.split_once('?') {
            Some((path, query)) => (path, Some(query)),
            None => (target, None),
        };
        let view = Request { path, query, headers: request.headers };
        let mut close = None;
        app.on_open(&mut cx.lent.hand().ctx(self.id, 0..0, None, &mut close), &view);
        let close = close?;
        cx.lent.cork.push_scratch(|s| writer::put_close(s, close.code, &close.reason));
        Some(self.closed_by_us(close.code, app, cx))
    }

    /// Reads the rest of a `POST /publish` body, then publishes it.
    fn read_body(&mut self, cx: &mut Context<'_>) -> Step {
        let State::Publishing(publishing) = &mut self.state else { return Step::Remove };
        while publishing.body.len() < publishing.request.length {
            let n = match self.socket.recv(&mut cx.lent.rx) {
                Ok(Received::Data(n)) => n,
                Ok(Received::Nothing) => return Step::Keep,
                Ok(Received::Eof) => return self.handshake_failed(HandshakeFailure::PeerClosed, cx),
                Err(e) => return self.handshake_error(&e, cx),
            };
            let wanted = publishing.request.length - publishing.body.len();
            publishing.body.extend_from_slice(&cx.lent.rx[..n.min(wanted)]);
        }
        let awaiting = cx.hub.map_or(1, |(hub, _)| hub.loops());
        let delivering = Delivering { counts: Delivered::default(), awaiting };
        let State::Publishing(publishing) = std::mem::replace(&mut self.state, State::Delivering(delivering)) else {
            return Step::Remove;
        };
        let Publishing { request, body } = *publishing;
        if request.text && std::str::from_utf8(&body).is_err() {
            let reason = "the body is not valid UTF-8, and Content-Type says text";
            return self.refuse(Refusal::new(RefusalKind::Publish, 400, reason), cx);
        }
        cx.lent.metrics.rooms.published_http += 1;
        let kind = if request.text { Kind::Text } else { Kind::Binary };
        let frame = cx.lent.metrics.fanout.frame(kind, &body);
        let to = Target::Named(request.room.into());
        cx.lent.published.push(Publish { to, kind, frame, origin: Origin::Http { id: self.id } });
        Step::Keep
    }

    /// Takes one loop's delivery counts for its `POST /publish`; answers
    /// once every loop has reported.
    pub fn on_published(&mut self, counts: Delivered, cx: &mut Context<'_>) -> Step {
        let State::Delivering(delivering) = &mut self.state else { return Step::Keep };
        delivering.counts.delivered += counts.delivered;
        delivering.counts.dropped += counts.dropped;
        delivering.awaiting = delivering.awaiting.saturating_sub(1);
        if delivering.awaiting > 0 {
            return Step::Keep;
        }
        let counts = delivering.counts;
        let body = format!("{{\"delivered\": {}, \"dropped\": {}}}\n", counts.delivered, counts.dropped);
        let response = Response::ok("application/json", body.into_bytes()).with_header("Cache-Control", "no-store");
        self.last_words(&response, cx)
    }

    /// Answers a plain request. With other loops, `/stats` and `/metrics`
    /// show the process: the others are asked for their figures, and the
    /// answer waits for them ([`Connection::on_figures`]).
    fn answer_page(&mut self, page: PlainRequest, cx: &mut Context<'_>) -> Step {
        let Some((hub, index)) = cx.hub.filter(|(hub, _)| hub.loops() > 1 && page.route.shows_figures()) else {
            let response = page_response(&page, &cx.lent.metrics, &[], cx);
            return self.last_words(&response, cx);
        };
        let own = &cx.lent.metrics;
        let mut loops = vec![0; hub.loops()];
        loops[index] = own.connections_open;
        hub.ask_figures(Reply { loop_index: index, to: self.id });
        let awaiting = hub.loops() - 1;
        self.state = State::Gathering(Box::new(Gathering { page, metrics: own.clone(), loops, awaiting }));
        Step::Keep
    }

    /// Takes loop `from`'s figures for the page being gathered; answers once
    /// every loop has sent its own.
    pub fn on_figures(&mut self, from: usize, metrics: &Metrics, cx: &mut Context<'_>) -> Step {
        let State::Gathering(gathering) = &mut self.state else { return Step::Keep };
        gathering.metrics.merge(metrics);
        if let Some(open) = gathering.loops.get_mut(from) {
            *open = metrics.connections_open;
        }
        gathering.awaiting = gathering.awaiting.saturating_sub(1);
        if gathering.awaiting > 0 {
            return Step::Keep;
        }
        self.answer_gathered(cx)
    }

    /// Answers the page with the figures gathered so far.
    fn answer_gathered(&mut self, cx: &mut Context<'_>) -> Step {
        let State::Gathering(gathering) = std::mem::replace(&mut self.state, State::Lingering(Lingering::default()))
        else {
            return Step::Remove;
        };
        if gathering.awaiting > 0 {
            warn!(missing = gathering.awaiting, "answering {} without every loop's figures", gathering.page.target);
        }
        let response = page_response(&gathering.page, &gathering.metrics, &gathering.loops, cx);
        self.last_words(&response, cx)
    }

    fn refuse(&mut self, refusal: Refusal, cx: &mut Context<'_>) -> Step {
        let response = &refusal.response;
        info!(peer = %self.peer(), status = response.status, reason = response.reason(), "refused handshake");
        cx.lent.metrics.count_refusal(refusal.kind);
        self.last_words(response, cx)
    }

    /// Sends an HTTP response, then lingers until the peer closes.
    fn last_words(&mut self, response: &Response, cx: &mut Context<'_>) -> Step {
        self.stop_counting_open(&mut cx.lent.metrics);
        self.outbox.push(Bytes::from(response.to_bytes()));
        self.linger(cx)
    }

    /// A read failed before the WebSocket opened: TLS refused, or a socket error.
    fn handshake_error(&mut self, error: &std::io::Error, cx: &mut Context<'_>) -> Step {
        if crate::tls::is_tls_failure(error) {
            info!(peer = %self.peer(), reason = %error, "TLS handshake failed");
            cx.lent.metrics.count_failure(HandshakeFailure::Tls);
            return Step::Remove;
        }
        self.handshake_failed(HandshakeFailure::Io, cx)
    }

    fn handshake_failed(&mut self, failure: HandshakeFailure, cx: &mut Context<'_>) -> Step {
        if failure == HandshakeFailure::PeerClosed {
            debug!(peer = %self.peer(), "peer closed during the handshake");
        } else {
            info!(peer = %self.peer(), reason = failure.as_str(), "handshake failed");
        }
        cx.lent.metrics.count_failure(failure);
        Step::Remove
    }

    /// The hot path: one wakeup of an open connection.
    fn serve_open<A: App>(&mut self, app: &mut A, cx: &mut Context<'_>) -> Step {
        let State::Open(open) = &mut self.state else { return Step::Remove };
        let served = wakeup::serve(open, &mut self.socket, &mut self.outbox, self.id, app, cx.lent);
        self.after_served(served, app, cx)
    }

    /// Acts on what a wakeup of the open connection did.
    fn after_served<A: App>(&mut self, served: Served, app: &mut A, cx: &mut Context<'_>) -> Step {
        let pending = self.outbox.len();
        cx.lent.metrics.pending_output_peak = cx.lent.metrics.pending_output_peak.max(pending as u64);
        if served.pong {
            self.ping_sent = false;
        }
        if served.backpressured {
            if self.backpressure_since.is_none() {
                self.backpressure_since = Some(cx.lent.clock.now());
                cx.lent.metrics.backpressure_events += 1;
            }
        } else if pending <= cx.config.max_backpressure {
            self.backpressure_since = None;
        }
        match served.end {
            None if served.again => Step::Again,
            None => Step::Keep,
            Some(End::PeerClosed(code)) => {
                self.close_code = code;
                self.end_websocket(app, cx);
                self.close_handshake_done(cx)
            }
            Some(End::Violation(violation)) => {
                info!(
                    peer = %self.peer(),
                    code = u16::from(violation.code),
                    reason = violation.reason,
                    "closing connection after protocol error"
                );
                self.close_code = violation.code.into();
                self.end_websocket(app, cx);
                self.linger(cx)
            }
            // Its close frame is out (or queued): wait for the peer's.
            Some(End::AppClosed(request)) => self.closed_by_us(request.code, app, cx),
            Some(End::PeerGone) => Step::Remove,
            Some(End::Failed(e)) => {
                info!(peer = %self.peer(), error = %e, "connection failed");
                Step::Remove
            }
        }
    }

    /// Our close frame is in the cork (or sent): flush it and wait for the peer's.
    fn closed_by_us<A: App>(&mut self, code: u16, app: &mut A, cx: &mut Context<'_>) -> Step {
        cx.lent.metrics.frames_out.close += 1;
        if self.close_code == 0 {
            self.close_code = code;
        }
        let reader = match &mut self.state {
            State::Open(open) => open.take_reader(),
            _ => Reader::default(),
        };
        self.end_websocket(app, cx);
        self.state = State::Closing(reader);
        self.deadline = cx.lent.clock.now().wrapping_add(clock::ticks(CLOSE_GRACE));
        if outbox::flush(&mut self.socket, &mut self.outbox, &mut cx.lent.cork, &[]).is_err() {
            return Step::Remove;
        }
        Step::Keep
    }

    /// Starts a clean close from our side (idle timeout, shutdown).
    fn start_close<A: App>(&mut self, code: u16, reason: &str, app: &mut A, cx: &mut Context<'_>) -> Step {
        cx.lent.cork.push_scratch(|s| writer::put_close(s, code, reason));
        self.closed_by_us(code, app, cx)
    }

    fn serve_closing(&mut self, cx: &mut Context<'_>) -> Step {
        if outbox::flush(&mut self.socket, &mut self.outbox, &mut cx.lent.cork, &[]).is_err() {
            return Step::Remove;
        }
        let State::Closing(reader) = &mut self.state else { return Step::Remove };
        match wakeup::await_close(reader, &mut self.socket, cx.lent) {
            Awaiting::Waiting => Step::Keep,
            Awaiting::Again => Step::Again,
            Awaiting::Done => self.close_handshake_done(cx),
        }
    }

    /// Both close frames are exchanged (ours may still be queued): the
    /// server closes the TCP connection first (RFC 6455 §7.1.1), at once if
    /// everything is sent, else once it is.
    fn close_handshake_done(&mut self, cx: &mut Context<'_>) -> Step {
        if outbox::flush(&mut self.socket, &mut self.outbox, &mut cx.lent.cork, &[]).is_err() || self.outbox.is_empty()
        {
            return Step::Remove;
        }
        self.linger(cx)
    }

    fn serve_lingering(&mut self, cx: &mut Context<'_>) -> Step {
        self.linger(cx)
    }

    /// Enters (or continues) the lingering close: sends the last words,
    /// half-closes, and reads (throwing it away) until the peer closes:
    /// `Remove` once it has, or once it sent more than [`LINGER_LIMIT`].
    fn linger(&mut self, cx: &mut Context<'_>) -> Step {
        if outbox::flush(&mut self.socket, &mut self.outbox, &mut cx.lent.cork, &[]).is_err() {
            return Step::Remove;
        }
        if !matches!(self.state, State::Lingering(_)) {
            self.state = State::Lingering(Lingering::default());
            self.deadline = cx.lent.clock.now().wrapping_add(clock::ticks(CLOSE_GRACE));
        }
        let State::Lingering(lingering) = &mut self.state else { return Step::Remove };
        if !self.outbox.is_empty() {
            return Step::Keep;
        }
        if !lingering.shut_down {
            // Our FIN follows the last words. If the shutdown fails the peer
            // has gone already.
            if self.socket.shutdown_write().is_err() {
                return Step::Remove;
            }
            lingering.shut_down = true;
        }
        loop {
            match self.socket.recv(&mut cx.lent.rx) {
                Ok(Received::Data(n)) => {
                    lingering.discarded += n;
                    if lingering.discarded > LINGER_LIMIT {
                        return Step::Remove;
                    }
                }
                Ok(Received::Nothing) => return Step::Keep,
                Ok(Received::Eof) | Err(_) => return Step::Remove,
            }
        }
    }

    fn check_open_timers<A: App>(&mut self, app: &mut A, cx: &mut Context<'_>) -> Step {
        let now = cx.lent.clock.now();
        let idle_timeout = cx.config.idle_timeout;
        let slow_limit = if idle_timeout.is_zero() { crate::config::DEFAULT_IDLE_TIMEOUT } else { idle_timeout };
        if let Some(since) = self.backpressure_since {
            if clock::elapsed(since, now) >= clock::ticks(slow_limit) {
                info!(peer = %self.peer(), "closing slow consumer: output backlog over the limit for the whole idle timeout");
                cx.lent.metrics.slow_consumer_closes += 1;
                if self.close_code == 0 {
                    self.close_code = CloseCode::Policy.into();
                }
                // Its output is stuck, so a close frame could not reach it: drop it.
                return Step::Remove;
            }
        }
        if idle_timeout.is_zero() {
            return Step::Keep;
        }
        let idle = clock::elapsed(self.last_seen, now);
        let timeout = clock::ticks(idle_timeout);
        if idle >= timeout {
            debug!(peer = %self.peer(), "closing idle connection");
            cx.lent.metrics.idle_closes += 1;
            return self.start_close(CloseCode::Away.into(), "idle timeout", app, cx);
        }
        if idle >= timeout / 2 && !self.ping_sent {
            self.ping_sent = true;
            cx.lent.metrics.frames_out.ping += 1;
            cx.lent.cork.push_scratch(|s| writer::put_frame(s, writer::PING, &[]));
            if outbox::flush(&mut self.socket, &mut self.outbox, &mut cx.lent.cork, &[]).is_err() {
                return Step::Remove;
            }
        }
        Step::Keep
    }
}

/// The response to a plain request, from `metrics` (this loop's, or the
/// process's with `loops`, each loop's open connections).
fn page_response(page: &PlainRequest, metrics: &Metrics, loops: &[u64], cx: &Context<'_>) -> Response {
    let source = pages::Source {
        metrics,
        loops,
        redis: cx.hub.and_then(|(hub, _)| hub.bridge()).map(|bridge| bridge.stats()),
        config: cx.config,
        listen: cx.listen,
        uptime: cx.lent.clock.uptime(),
    };
    pages::respond(page.route, &page.method, &page.target, &source)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The slab stores connections inline; their size is the per-connection
    /// memory floor. This pins it so that a change that grows it is noticed.
    #[test]
    fn connection_stays_small() {
        let size = std::mem::size_of::<Connection>();
        assert!(size <= 200, "Connection grew to {size} bytes");
    }
}
