//! One connection: an explicit state machine, driven by readiness events and
//! by the loop's periodic sweep.
//!
//! ```text
//!   accept ─▶ Handshaking ──101──▶ Open ──close frame / error / idle / shutdown──▶ Closing ─▶ (removed)
//!                 │ refused: HTTP error, linger                                      ▲
//!                 └─────────────────────────────────────────────────────────────────┘
//! ```
//!
//! The connection never drops its own socket: when it is finished it returns
//! [`Step::Remove`] and the loop frees the slab slot. That keeps one rule
//! simple: the loop's receive buffer, lent for the duration of a call, is
//! always given back before a socket can be closed.

use std::{
    io,
    net::SocketAddr,
    time::{Duration, Instant},
};

use mio::{Interest, Registry, Token};
use tracing::{debug, error, info};
use tungstenite::{
    protocol::{frame::coding::CloseCode, WebSocketConfig},
    Error as WsError, Message, WebSocket,
};

use crate::{
    clock::{self, Tick},
    config::Config,
    cycle::{self, flush, Wakeup},
    handshake::{Failure, Handshake, Policy, Progress, Refusal},
    http::Routes,
    metrics::Metrics,
    pages,
    socket::{OutputState, RecvBuf, Socket},
    ws::{self, Disposition},
};

/// Bytes one connection may receive per wakeup before it yields to the
/// others (it is served again right after, without waiting for epoll).
pub const READ_BUDGET: usize = 1 << 20;

/// How long we wait for the peer to answer a close we started (idle timeout,
/// protocol error), or to close after an HTTP refusal, before dropping it.
pub const CLOSE_GRACE: Duration = Duration::from_secs(2);

/// Input a failed connection may still send while we wait for it to close.
const LINGER_LIMIT: usize = 256 << 10;

/// Everything a connection needs from its loop for one call.
pub struct Context<'a> {
    pub registry: &'a Registry,
    pub config: &'a Config,
    pub ws_config: &'a WebSocketConfig,
    pub policy: &'a Policy,
    pub metrics: &'a mut Metrics,
    /// The loop's receive buffer, lent to the connection being served.
    pub rx: &'a mut RecvBuf,
    /// The loop clock at this wakeup.
    pub now: Tick,
    pub now_instant: Instant,
    /// When the server started, and where it listens (for the pages).
    pub started: Instant,
    pub listen: SocketAddr,
}

/// A readiness event, as the connection sees it.
#[derive(Debug, Clone, Copy, Default)]
pub struct Readiness {
    pub readable: bool,
    pub writable: bool,
    /// The peer half-closed (EPOLLRDHUP): read on until the end-of-file.
    pub read_closed: bool,
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

pub enum State {
    /// Reading the request head, or writing the 101 or a refusal.
    Handshaking(Box<Handshake>),
    /// Messages flow.
    Open(WebSocket<Socket>),
    /// We sent a close frame and wait for the peer's, or for it to go.
    Closing(Closing),
    /// Placeholder while the state is moved from one variant to the next.
    Moving,
}

pub struct Closing {
    ws: WebSocket<Socket>,
    mode: CloseMode,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum CloseMode {
    /// A clean close we started (shutdown, idle timeout): keep reading through
    /// tungstenite until the peer's close frame completes the handshake.
    AwaitPeerClose,
    /// The peer broke the protocol: tungstenite's input state can no longer be
    /// trusted, so we only flush our close frame, half-close, and discard
    /// input until the peer closes (so it reads our close, not a reset).
    Linger { shut_down: bool },
}

/// A pong or an idle ping has not been answered yet.
const PING_SENT: u8 = 1;
/// Pending output is over `--max-backpressure`: reading is paused.
const BACKPRESSURED: u8 = 2;
/// Counted in `connections_open` (refusals are not).
const COUNTED_OPEN: u8 = 4;
/// Accepted on the `--metrics-listen` address: /metrics and /stats only.
const METRICS_ONLY: u8 = 8;

pub struct Connection {
    state: State,
    /// When inbound bytes last arrived: idle pings and the idle close count from here.
    last_seen: Tick,
    /// When the current phase must be over: the handshake, or the closing.
    deadline: Tick,
    /// When pending output went over the backpressure limit.
    backpressure_since: Tick,
    /// The close code to count when the connection is removed: the peer's
    /// when it closed first, ours when we did; 0 if none was exchanged (1006).
    close_code: u16,
    /// Pending output last added to the loop's `pending_output_bytes` gauge.
    reported_pending: u32,
    /// Replies served whose output the kernel has not taken yet: their
    /// latency is recorded when it has, measured from `unrecorded_since`.
    unrecorded: u32,
    unrecorded_since: Tick,
    /// The interest registered with epoll, so it is changed only when it must be.
    interest: Interest,
    flags: u8,
}

impl Connection {
    /// A freshly accepted connection, registered for READABLE.
    /// `metrics_only`: it came in on `--metrics-listen`.
    pub fn accepted(socket: Socket, metrics_only: bool, cx: &mut Context<'_>) -> Self {
        cx.metrics.connections_accepted += 1;
        cx.metrics.connections_open += 1;
        let flags = COUNTED_OPEN | if metrics_only { METRICS_ONLY } else { 0 };
        Self::new(Handshake::new(socket), cx.now, cx.config.handshake_timeout, flags)
    }

    /// A connection over `--max-connections`: it is sent `refusal` and lingers
    /// briefly; it is not counted as open.
    pub fn refused(socket: Socket, refusal: &Refusal, cx: &mut Context<'_>) -> Self {
        cx.metrics.connections_accepted += 1;
        Self::new(Handshake::refuse_now(socket, refusal), cx.now, CLOSE_GRACE, 0)
    }

    fn new(handshake: Handshake, now: Tick, time_allowed: Duration, flags: u8) -> Self {
        Connection {
            state: State::Handshaking(Box::new(handshake)),
            last_seen: now,
            deadline: now.wrapping_add(clock::ticks(time_allowed)),
            backpressure_since: 0,
            close_code: 0,
            reported_pending: 0,
            unrecorded: 0,
            unrecorded_since: 0,
            interest: Interest::READABLE,
            flags,
        }
    }

    pub fn socket_mut(&mut self) -> Option<&mut Socket> {
        match &mut self.state {
            State::Handshaking(hs) => Some(hs.socket_mut()),
            State::Open(ws) => Some(ws.get_mut()),
            State::Closing(closing) => Some(closing.ws.get_mut()),
            State::Moving => None,
        }
    }

    fn socket(&self) -> Option<&Socket> {
        match &self.state {
            State::Handshaking(hs) => Some(hs.socket()),
            State::Open(ws) => Some(ws.get_ref()),
            State::Closing(closing) => Some(closing.ws.get_ref()),
            State::Moving => None,
        }
    }

    fn peer(&self) -> String {
        match self.socket().map(|s| s.stream().peer_addr()) {
            Some(Ok(addr)) => addr.to_string(),
            _ => "(gone)".to_string(),
        }
    }

    /// Handles one readiness event.
    pub fn on_ready(&mut self, token: Token, ready: Readiness, cx: &mut Context<'_>) -> Step {
        if ready.readable {
            self.last_seen = cx.now;
            self.flags &= !PING_SENT;
        }
        let Some(socket) = self.socket_mut() else { return Step::Remove };
        socket.on_event(ready.readable, ready.writable, ready.read_closed);
        socket.lend(cx.rx, READ_BUDGET);
        let step = match self.state {
            State::Handshaking(_) => self.drive_handshake(cx),
            State::Open(_) => self.drive_open(cx),
            State::Closing(_) => self.drive_closing(),
            State::Moving => Step::Remove,
        };
        if let Some(socket) = self.socket_mut() {
            socket.give_back(cx.rx);
        }
        self.finish(token, step, cx)
    }

    /// Handles the periodic sweep: deadlines, idle pings and idle closes,
    /// slow consumers. Costs a few comparisons for a connection with nothing due.
    pub fn on_tick(&mut self, token: Token, cx: &mut Context<'_>) -> Step {
        let now = cx.now;
        let step = match &mut self.state {
            State::Handshaking(hs) => {
                if clock::is_past(self.deadline, now) {
                    if !hs.is_responding() {
                        info!(peer = %self.peer(), "handshake timed out");
                        cx.metrics.count_failure(Failure::Timeout);
                    }
                    Step::Remove
                } else {
                    Step::Keep
                }
            }
            State::Closing(_) => {
                if clock::is_past(self.deadline, now) {
                    Step::Remove
                } else {
                    Step::Keep
                }
            }
            State::Open(_) => self.check_open_timers(cx),
            State::Moving => Step::Remove,
        };
        self.finish(token, step, cx)
    }

    /// Starts the graceful shutdown of this connection: close 1001 if it is
    /// open, drop it if it never opened.
    pub fn on_shutdown(&mut self, token: Token, deadline: Tick, cx: &mut Context<'_>) -> Step {
        let step = match self.state {
            State::Handshaking(_) => Step::Remove,
            State::Open(_) => {
                self.start_close(CloseCode::Away, "server shutting down", cx);
                self.deadline = deadline;
                Step::Keep
            }
            // Already closing, on a deadline no later than the loop's own.
            State::Closing(_) => Step::Keep,
            State::Moving => Step::Remove,
        };
        self.finish(token, step, cx)
    }

    /// Accounting for a connection the loop is about to free.
    pub fn on_remove(&mut self, metrics: &mut Metrics) {
        stop_counting_open(&mut self.flags, metrics);
        metrics.pending_output_bytes = metrics.pending_output_bytes.saturating_sub(u64::from(self.reported_pending));
        self.reported_pending = 0;
        if matches!(self.state, State::Open(_) | State::Closing(_)) {
            metrics.count_close(if self.close_code == 0 { 1006 } else { self.close_code });
        }
    }

    /// Brings the pending-output gauge up to date and registers the interest
    /// the state now needs, if it changed.
    fn finish(&mut self, token: Token, step: Step, cx: &mut Context<'_>) -> Step {
        if step == Step::Remove {
            return step;
        }
        let pending = self.socket().map_or(0, |s| s.pending_output() as u32);
        if pending != self.reported_pending {
            let gauge = &mut cx.metrics.pending_output_bytes;
            *gauge = (*gauge + u64::from(pending)).saturating_sub(u64::from(self.reported_pending));
            self.reported_pending = pending;
        }
        let wanted = self.wanted_interest();
        if wanted != self.interest {
            let Some(socket) = self.socket_mut() else { return Step::Remove };
            if let Err(e) = cx.registry.reregister(socket.stream_mut(), token, wanted) {
                error!(error = %e, "epoll_ctl failed; dropping the connection");
                return Step::Remove;
            }
            self.interest = wanted;
        }
        step
    }

    /// READABLE always; WRITABLE too while output is waiting for the kernel.
    fn wanted_interest(&self) -> Interest {
        if self.socket().is_some_and(Socket::write_blocked) {
            Interest::READABLE | Interest::WRITABLE
        } else {
            Interest::READABLE
        }
    }

    fn drive_handshake(&mut self, cx: &mut Context<'_>) -> Step {
        let routes = if self.flags & METRICS_ONLY != 0 {
            Routes::MetricsOnly
        } else if cx.config.no_http_pages {
            Routes::None
        } else {
            Routes::All
        };
        let State::Handshaking(hs) = &mut self.state else { return Step::Remove };
        match hs.advance(cx.policy, routes) {
            Progress::Pending => Step::Keep,
            Progress::Request(request) => {
                // A plain HTTP request: not a WebSocket connection after all.
                stop_counting_open(&mut self.flags, cx.metrics);
                cx.metrics.count_http_request(request.route);
                let source = pages::Source {
                    metrics: cx.metrics,
                    config: cx.config,
                    listen: cx.listen,
                    uptime: cx.now_instant.saturating_duration_since(cx.started),
                };
                let response = pages::respond(request.route, &request.method, &request.target, &source);
                hs.respond(&response);
                self.deadline = cx.now.wrapping_add(clock::ticks(CLOSE_GRACE));
                self.drive_handshake(cx)
            }
            Progress::Refused(refusal) => {
                info!(
                    peer = %self.peer(),
                    status = refusal.response.status,
                    reason = refusal.response.reason(),
                    "refused handshake"
                );
                cx.metrics.count_refusal(refusal.kind);
                stop_counting_open(&mut self.flags, cx.metrics);
                self.deadline = cx.now.wrapping_add(clock::ticks(CLOSE_GRACE));
                // Deliver the response now.
                self.drive_handshake(cx)
            }
            Progress::Upgraded => {
                let State::Handshaking(hs) = std::mem::replace(&mut self.state, State::Moving) else {
                    unreachable!("matched Handshaking above")
                };
                self.state = State::Open(hs.into_websocket(*cx.ws_config));
                cx.metrics.websockets_opened += 1;
                // Frames may already be here (sent with the request, or since).
                self.drive_open(cx)
            }
            Progress::Failed(failure) => {
                if failure == Failure::PeerClosed {
                    debug!(peer = %self.peer(), "peer closed during the handshake");
                } else {
                    info!(peer = %self.peer(), reason = failure.as_str(), "handshake failed");
                }
                cx.metrics.count_failure(failure);
                Step::Remove
            }
            Progress::Finished => Step::Remove,
        }
    }

    /// The hot path: read every message the socket has, hand each to the
    /// application, queue the replies, and flush once per batch.
    fn drive_open(&mut self, cx: &mut Context<'_>) -> Step {
        let State::Open(ws) = &mut self.state else { return Step::Remove };
        let wakeup = cycle::serve(ws, &mut self.close_code, cx.config, cx.metrics);
        let (pending, budget_spent) = (ws.get_ref().pending_output(), ws.get_ref().budget_spent());
        if !cx.config.no_latency {
            self.record_latency(&wakeup, pending, cx);
        }
        cx.metrics.pending_output_peak = cx.metrics.pending_output_peak.max(pending as u64);
        if let Some(disposition) = wakeup.outcome {
            return self.on_disposition(disposition, cx);
        }
        if pending > cx.config.max_backpressure {
            if self.flags & BACKPRESSURED == 0 {
                self.flags |= BACKPRESSURED;
                self.backpressure_since = cx.now;
                cx.metrics.backpressure_events += 1;
            }
        } else {
            self.flags &= !BACKPRESSURED;
        }
        if budget_spent {
            Step::Again
        } else {
            Step::Keep
        }
    }

    /// Times this wakeup's replies once the kernel has taken them all: two
    /// clock reads per wakeup, none per message. Every reply is timed from
    /// the moment the wakeup's first message was complete. Replies left
    /// waiting for the kernel are recorded when it takes them, timed from
    /// their wakeup (in millisecond ticks: they waited at least that long).
    fn record_latency(&mut self, wakeup: &Wakeup, pending: usize, cx: &mut Context<'_>) {
        if pending > 0 {
            if wakeup.served > 0 {
                if self.unrecorded == 0 {
                    self.unrecorded_since = cx.now;
                }
                self.unrecorded = self.unrecorded.saturating_add(u32::try_from(wakeup.served).unwrap_or(u32::MAX));
            }
            return;
        }
        if wakeup.first_complete.is_none() && self.unrecorded == 0 {
            return;
        }
        let done = Instant::now();
        if let Some(start) = wakeup.first_complete {
            cx.metrics.record_latency(cycle::nanos(done - start), wakeup.served);
        }
        if self.unrecorded > 0 {
            let waited = u64::from(clock::elapsed(self.unrecorded_since, cx.now)) * 1_000_000;
            cx.metrics.record_latency(waited + cycle::nanos(done - cx.now_instant), u64::from(self.unrecorded));
            self.unrecorded = 0;
        }
    }

    fn drive_closing(&mut self) -> Step {
        let State::Closing(closing) = &mut self.state else { return Step::Remove };
        let ws = &mut closing.ws;
        match &mut closing.mode {
            CloseMode::AwaitPeerClose => {
                loop {
                    match ws.read() {
                        // Data the peer sent before it saw our close: dropped.
                        Ok(_) => {}
                        Err(WsError::Io(e)) if e.kind() == io::ErrorKind::WouldBlock => break,
                        Err(_) => return Step::Remove,
                    }
                }
                match flush(ws) {
                    None if ws.get_ref().budget_spent() => Step::Again,
                    None => Step::Keep,
                    Some(_) => Step::Remove,
                }
            }
            CloseMode::Linger { shut_down } => {
                if !*shut_down {
                    match flush(ws) {
                        None if ws.get_ref().pending_output() > 0 => return Step::Keep,
                        None => {
                            // Our close frame is out: FIN after it.
                            if ws.get_ref().shutdown_write().is_err() {
                                return Step::Remove;
                            }
                            *shut_down = true;
                        }
                        Some(_) => return Step::Remove,
                    }
                }
                match ws.get_mut().discard_input(LINGER_LIMIT) {
                    Ok(false) => Step::Keep,
                    Ok(true) | Err(_) => Step::Remove,
                }
            }
        }
    }

    fn on_disposition(&mut self, disposition: Disposition, cx: &mut Context<'_>) -> Step {
        match disposition {
            Disposition::Closed => Step::Remove,
            Disposition::PeerGone => Step::Remove,
            Disposition::Fail(code, reason) => {
                info!(peer = %self.peer(), code = u16::from(code), %reason, "closing connection after protocol error");
                self.fail(code, &reason, cx)
            }
            Disposition::Io(reason) => {
                info!(peer = %self.peer(), %reason, "connection failed");
                Step::Remove
            }
            Disposition::Bug(reason) => {
                error!(peer = %self.peer(), %reason, "bug: unexpected tungstenite state");
                Step::Remove
            }
        }
    }

    /// Fails the WebSocket connection (RFC 6455 §7.1.7) with `code`: close
    /// frame, then linger until the peer closes or the grace period ends.
    fn fail(&mut self, code: CloseCode, reason: &str, cx: &mut Context<'_>) -> Step {
        let State::Open(mut ws) = std::mem::replace(&mut self.state, State::Moving) else {
            return Step::Remove;
        };
        if self.close_code == 0 {
            self.close_code = code.into();
        }
        cx.metrics.frames_out.close += 1;
        match ws.close(Some(ws::close_frame(code, reason))) {
            Ok(()) => {}
            Err(WsError::Io(e)) if e.kind() == io::ErrorKind::WouldBlock => {}
            Err(_) => return Step::Remove,
        }
        self.state = State::Closing(Closing { ws, mode: CloseMode::Linger { shut_down: false } });
        self.deadline = cx.now.wrapping_add(clock::ticks(CLOSE_GRACE));
        self.drive_closing()
    }

    /// Starts a clean close from our side (idle timeout, shutdown).
    fn start_close(&mut self, code: CloseCode, reason: &str, cx: &mut Context<'_>) {
        let State::Open(mut ws) = std::mem::replace(&mut self.state, State::Moving) else { return };
        if !ws.can_write() {
            // The peer's close is being answered already; let tungstenite finish.
            self.state = State::Open(ws);
            return;
        }
        if self.close_code == 0 {
            self.close_code = code.into();
        }
        // Queued even when the flush blocks; any other error surfaces on the next call.
        let _ = ws.close(Some(ws::close_frame(code, reason)));
        cx.metrics.frames_out.close += 1;
        self.state = State::Closing(Closing { ws, mode: CloseMode::AwaitPeerClose });
        self.deadline = cx.now.wrapping_add(clock::ticks(CLOSE_GRACE));
    }

    fn check_open_timers(&mut self, cx: &mut Context<'_>) -> Step {
        let now = cx.now;
        let idle_timeout = cx.config.idle_timeout;
        let slow_limit = if idle_timeout.is_zero() { crate::config::DEFAULT_IDLE_TIMEOUT } else { idle_timeout };
        if self.flags & BACKPRESSURED != 0 && clock::elapsed(self.backpressure_since, now) >= clock::ticks(slow_limit) {
            info!(peer = %self.peer(), "closing slow consumer: output backlog over the limit for the whole idle timeout");
            cx.metrics.slow_consumer_closes += 1;
            if self.close_code == 0 {
                self.close_code = CloseCode::Policy.into();
            }
            // Its output is stuck, so a close frame could not reach it: drop it.
            return Step::Remove;
        }
        if idle_timeout.is_zero() {
            return Step::Keep;
        }
        let idle = clock::elapsed(self.last_seen, now);
        let timeout = clock::ticks(idle_timeout);
        if idle >= timeout {
            debug!(peer = %self.peer(), "closing idle connection");
            cx.metrics.idle_closes += 1;
            self.start_close(CloseCode::Away, "idle timeout", cx);
        } else if idle >= timeout / 2 && self.flags & PING_SENT == 0 {
            if let State::Open(ws) = &mut self.state {
                if ws.can_write() {
                    self.flags |= PING_SENT;
                    cx.metrics.frames_out.ping += 1;
                    let sent = ws.write(Message::Ping(Default::default())).and_then(|()| ws.flush());
                    match sent {
                        Ok(()) => {}
                        Err(WsError::Io(e)) if e.kind() == io::ErrorKind::WouldBlock => {}
                        Err(e) => return self.on_disposition(ws::classify(e), cx),
                    }
                }
            }
        }
        Step::Keep
    }
}

/// Takes a connection out of `connections_open` (a refusal, a plain HTTP
/// request, or its removal), once. A free function, so that it can be
/// called while the connection's state is borrowed.
fn stop_counting_open(flags: &mut u8, metrics: &mut Metrics) {
    if *flags & COUNTED_OPEN != 0 {
        *flags &= !COUNTED_OPEN;
        metrics.connections_open = metrics.connections_open.saturating_sub(1);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The slab stores connections inline; their size is the per-connection
    /// memory floor. This pins it so that a change that grows it is noticed.
    #[test]
    fn connection_stays_small() {
        let size = std::mem::size_of::<Connection>();
        assert!(size <= 360, "Connection grew to {size} bytes");
    }
}
