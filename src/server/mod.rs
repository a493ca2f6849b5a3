//! The event loop: poll, dispatch by token, serve, then housekeeping.
//!
//! One [`Server`] is one `mio::Poll` loop on one thread. It owns its listener,
//! its connections (in a `Slab` whose key is the connection's token, see
//! [`crate::token`]) and its metrics, so several can run side by side, one per
//! core, on `SO_REUSEPORT` listeners. The loop knows sockets and tokens; what
//! a connection does with its bytes is [`crate::connection`]'s business.
//!
//! Each iteration:
//! 1. `poll` until an event or the next timer (sweep, accept retry,
//!    shutdown deadline); read the clock once.
//! 2. Dispatch every event: connection events are served at once; the
//!    listener's is noted and accepted after the batch (below).
//! 3. Serve again the connections that yielded for fairness.
//! 4. Accept. Doing it after the batch means a slab key freed in this batch
//!    cannot be reused before the batch is over, so a stale event still in
//!    the batch can never reach a new connection that got the same key.
//! 5. Housekeeping: the periodic sweep (timeouts, idle pings), shutdown
//!    progress.

use std::{
    io,
    net::SocketAddr,
    sync::Arc,
    time::{Duration, Instant},
};

use mio::{event::Event, net::TcpListener, Events, Interest, Poll, Token};
use slab::Slab;
use tracing::{debug, error, info, warn};

mod delivery;

use delivery::Link;

use crate::{
    app::{App, ConnectionId},
    clock::{self, Tick},
    config::Config,
    connection::{Connection, Context, Readiness, Step, CLOSE_GRACE},
    handshake::{Policy, Refusal},
    http::Routes,
    hub::Hub,
    listener::{self, ListenOptions},
    metrics::Metrics,
    modes::Builtin,
    report::Snapshot,
    shutdown::{LoopRequest, ShutdownSignals, StopHandle},
    socket::Socket,
    sys,
    tls::TlsAcceptor,
    token,
    wakeup::Lent,
};

/// How long accepting pauses after the process ran out of descriptors: long
/// enough not to spin, short enough to recover quickly once some close.
const ACCEPT_PAUSE: Duration = Duration::from_millis(100);

/// Refused connections (HTTP 503 at the limit, 400s) still lingering; past
/// this, a connection over the limit is closed without a response.
const MAX_REFUSALS_IN_FLIGHT: usize = 1024;

/// What a finished run did, for the shutdown log and the exit code.
#[derive(Debug, Clone)]
pub struct Summary {
    /// Why the loop ended.
    pub ended_by: Ending,
    /// Connections still open when the loop ended (0 after a clean drain).
    pub dropped: usize,
    pub metrics: Metrics,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Ending {
    /// Every connection closed within the shutdown timeout, or the timeout passed.
    Graceful,
    /// A second stop request (or signal, with its number) cut the shutdown short.
    Immediate(Option<i32>),
}

/// Everything a connection may use during a call (see [`Context`]).
struct Shared {
    config: Config,
    policy: Policy,
    /// Buffers, limits, metrics, clock, rooms: lent to each call by reference.
    lent: Lent,
    listen: SocketAddr,
}

impl Shared {
    fn context<'a>(&'a mut self, registry: &'a mio::Registry, link: Option<&'a Link>) -> Context<'a> {
        Context {
            lent: &mut self.lent,
            registry,
            config: &self.config,
            policy: &self.policy,
            hub: link.map(|link| (&*link.hub, link.index)),
            listen: self.listen,
        }
    }
}

/// One event loop, running application `A` (by default the one `--mode`
/// names).
pub struct Server<A = Builtin> {
    /// What runs on the connections.
    app: A,
    /// Connections accepted so far: makes every [`ConnectionId`] unique.
    accepted: u64,
    poll: Poll,
    /// `None` once shutting down: no more accepts.
    listener: Option<TcpListener>,
    /// The `--metrics-listen` socket, if any (closed at shutdown too).
    metrics_listener: Option<TcpListener>,
    local_addr: SocketAddr,
    connections: Slab<Connection>,
    shared: Shared,
    signals: Option<ShutdownSignals>,
    stop: StopHandle,
    /// Connections to serve again before the next poll (they yielded).
    again: Vec<usize>,
    /// Room members with deliveries to write at the end of this iteration.
    dirty: Vec<usize>,
    /// Room members found to be slow consumers during a fan-out, to close after it.
    slow: Vec<usize>,
    /// With `--workers` or `--redis`: the hub this loop shares with the others.
    link: Option<Link>,
    /// With `--tls-cert`: the main port speaks TLS (shared by a process's loops).
    tls: Option<Arc<TlsAcceptor>>,
    /// Accepting is paused until then (out of descriptors).
    accept_paused_until: Option<Tick>,
    next_sweep: Tick,
    sweep_every: u32,
    /// When the next stats line (and latency window) is due, and the
    /// message counts at the last one (for rates).
    next_stats: Tick,
    stats_every: u32,
    last_stats: (Instant, u64, u64),
    /// Set once shutting down: when to give up on the stragglers.
    shutdown_deadline: Option<Tick>,
    ending: Option<Ending>,
}

impl Server<Builtin> {
    /// Binds the listeners `config` asks for and builds the loop around the
    /// application its `--mode` names.
    pub fn bind(config: Config) -> io::Result<Server> {
        let app = Builtin::for_config(&config);
        Server::bind_with(config, app)
    }
}

impl<A: App> Server<A> {
    /// Binds the listeners `config` asks for and builds the loop around
    /// `app` (loading the TLS files it names, if any).
    pub fn bind_with(config: Config, app: A) -> io::Result<Server<A>> {
        let tls = config.tls().map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, e))?;
        Self::bind_with_tls(config, app, tls)
    }

    /// [`Server::bind_with`] with a TLS configuration already loaded (the
    /// loops of a process share one, reloaded once on SIGHUP).
    pub fn bind_with_tls(config: Config, app: A, tls: Option<Arc<TlsAcceptor>>) -> io::Result<Server<A>> {
        let options = listener::ListenOptions { backlog: config.backlog, reuse_port: config.reuse_port };
        let listener = listener::bind(config.listen, options)
            .map_err(|e| io::Error::new(e.kind(), format!("cannot listen on {}: {e}", config.listen)))?;
        let metrics_listener = match config.metrics_listen {
            Some(addr) => {
                Some(listener::bind(addr, ListenOptions { backlog: 128, reuse_port: config.reuse_port }).map_err(
                    |e| io::Error::new(e.kind(), format!("cannot listen on {addr} (--metrics-listen): {e}")),
                )?)
            }
            None => None,
        };
        let mut server = Server::new(listener, config, app)
            .map_err(|e| io::Error::new(e.kind(), format!("cannot set up the event loop: {e}")))?;
        if let Some(mut metrics_listener) = metrics_listener {
            server.poll.registry().register(&mut metrics_listener, token::METRICS_LISTENER, Interest::READABLE)?;
            server.metrics_listener = Some(metrics_listener);
        }
        server.tls = tls;
        Ok(server)
    }

    /// Builds the loop around an already bound, non-blocking listener.
    pub fn new(mut listener: TcpListener, config: Config, app: A) -> io::Result<Server<A>> {
        config.validate().map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, e))?;
        let poll = Poll::new()?;
        poll.registry().register(&mut listener, token::LISTENER, Interest::READABLE)?;
        let stop = StopHandle::new(poll.registry())?;
        let local_addr = listener.local_addr()?;
        let sweep_every = sweep_interval(&config);
        let stats_every = clock::ticks(if config.stats_interval.is_zero() {
            crate::config::DEFAULT_STATS_INTERVAL
        } else {
            config.stats_interval
        });
        let policy = Policy::new(&config);
        let lent = Lent::new(&config);
        let started = lent.clock.started();
        Ok(Server {
            app,
            accepted: 0,
            poll,
            listener: Some(listener),
            metrics_listener: None,
            local_addr,
            connections: Slab::with_capacity(1024),
            shared: Shared { config, policy, lent, listen: local_addr },
            signals: None,
            stop,
            again: Vec::new(),
            dirty: Vec::new(),
            slow: Vec::new(),
            link: None,
            tls: None,
            accept_paused_until: None,
            next_sweep: sweep_every,
            sweep_every,
            next_stats: stats_every,
            stats_every,
            last_stats: (started, 0, 0),
            shutdown_deadline: None,
            ending: None,
        })
    }

    /// The address actually bound (the real port when asked for port 0).
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// The `--metrics-listen` address actually bound, if any.
    pub fn metrics_local_addr(&self) -> Option<SocketAddr> {
        self.metrics_listener.as_ref().and_then(|l| l.local_addr().ok())
    }

    /// Makes SIGINT/SIGTERM stop this loop (first: graceful, second: at once).
    pub fn handle_signals(&mut self) -> io::Result<()> {
        self.signals = Some(ShutdownSignals::register(self.poll.registry())?);
        Ok(())
    }

    /// A handle to stop the loop from another thread.
    pub fn stop_handle(&self) -> StopHandle {
        self.stop.clone()
    }

    /// The loop's figures so far.
    pub fn metrics(&self) -> &Metrics {
        &self.shared.lent.metrics
    }

    /// Makes this loop loop `index` of the process whose loops share `hub`
    /// (before it runs).
    pub fn join_hub(&mut self, hub: Arc<Hub>, index: usize) {
        if hub.bridge().is_some() {
            self.shared.lent.rooms.track_changes();
        }
        self.link = Some(Link::new(hub, index));
    }

    /// Runs until shut down.
    pub fn run(&mut self) -> io::Result<Summary> {
        let mut events = Events::with_capacity(sys::EVENTS_CAPACITY);
        while self.ending.is_none() {
            let timeout = self.poll_timeout();
            if let Err(e) = self.poll.poll(&mut events, Some(timeout)) {
                if e.kind() == io::ErrorKind::Interrupted {
                    continue;
                }
                return Err(e);
            }
            self.shared.lent.clock.update();

            let mut listener_ready = false;
            let mut metrics_listener_ready = false;
            for event in events.iter() {
                match event.token() {
                    token::LISTENER => listener_ready = true,
                    token::METRICS_LISTENER => metrics_listener_ready = true,
                    token::SIGNALS => {
                        let request = self.signals.as_mut().and_then(ShutdownSignals::take_request);
                        self.on_request(request);
                    }
                    token::WAKER => {
                        // One waker per loop: a stop request, or other loops' messages.
                        let request = self.stop.take_request();
                        self.on_request(request);
                        self.take_inbox();
                    }
                    token => self.on_connection_event(token, event),
                }
            }
            if self.ending.is_some() {
                break;
            }
            self.serve_again();
            let retry = self.accept_pause_over();
            if listener_ready || retry {
                self.accept(Listener::Main);
            }
            if metrics_listener_ready || retry {
                self.accept(Listener::Metrics);
            }
            self.drain();
            self.post_outgoing();
            self.housekeeping();
        }
        Ok(self.summary())
    }

    fn on_connection_event(&mut self, token: Token, event: &Event) {
        let Some(key) = token::connection_key(token) else { return };
        let Some(connection) = self.connections.get_mut(key) else {
            // Closed earlier in this batch; readiness is only a hint anyway.
            debug!(?token, "event for a connection that is gone");
            return;
        };
        let ready = Readiness::of(event);
        let step = connection.on_ready(
            token,
            ready,
            &mut self.app,
            &mut self.shared.context(self.poll.registry(), self.link.as_ref()),
        );
        self.apply(key, step);
    }

    /// Acts on what a call on connection `key` asked for, after fanning out
    /// what the call published.
    fn apply(&mut self, key: usize, step: Step) {
        match step {
            Step::Keep => {}
            Step::Again => self.again.push(key),
            Step::Remove => self.remove(key),
        }
        self.fan_out();
    }

    fn remove(&mut self, key: usize) {
        if let Some(mut connection) = self.connections.try_remove(key) {
            connection.on_remove(&mut self.app, &mut self.shared.context(self.poll.registry(), self.link.as_ref()));
            // Dropping closes the socket, which also removes it from epoll.
            drop(connection);
            if self.accept_paused_until.is_some() {
                // A descriptor was freed: accepting may work again.
                self.accept_paused_until = Some(self.shared.lent.clock.now());
            }
        }
    }

    fn serve_again(&mut self) {
        if self.again.is_empty() {
            return;
        }
        for key in std::mem::take(&mut self.again) {
            let token = token::for_connection(key);
            let Some(connection) = self.connections.get_mut(key) else { continue };
            let step = connection.on_ready(
                token,
                Readiness::default(),
                &mut self.app,
                &mut self.shared.context(self.poll.registry(), self.link.as_ref()),
            );
            self.apply(key, step);
        }
    }

    fn accept_pause_over(&self) -> bool {
        self.accept_paused_until.is_some_and(|until| clock::is_past(until, self.shared.lent.clock.now()))
    }

    /// Accepts until `WouldBlock` (the listeners are edge-triggered).
    fn accept(&mut self, which: Listener) {
        self.accept_paused_until = None;
        loop {
            let listener = match which {
                Listener::Main => &self.listener,
                Listener::Metrics => &self.metrics_listener,
            };
            let Some(listener) = listener else { return };
            let (stream, peer) = match listener.accept() {
                Ok(accepted) => accepted,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return,
                Err(e) if listener::is_per_connection(&e) => continue,
                Err(e) => {
                    if listener::is_resource_exhaustion(&e) {
                        self.shared.lent.metrics.accept_errors += 1;
                        warn!(error = %e, "cannot accept: out of descriptors or memory; pausing accepts");
                    } else {
                        error!(error = %e, "accept failed; pausing accepts");
                    }
                    let now = self.shared.lent.clock.now();
                    self.accept_paused_until = Some(now.wrapping_add(clock::ticks(ACCEPT_PAUSE)));
                    return;
                }
            };
            // Latency matters more than segment count for small messages.
            let _ = stream.set_nodelay(true);
            let own = self.shared.lent.metrics.connections_open;
            // --max-connections is for the process: with other loops, their
            // last reported counts are added.
            let open = self.link.as_ref().map_or(own, |link| link.hub.open_connections(link.index, own));
            let over_limit = which == Listener::Main && open >= self.shared.config.max_connections as u64;
            let refusals_in_flight = self.connections.len() - self.shared.lent.metrics.connections_open as usize;
            if over_limit && refusals_in_flight >= MAX_REFUSALS_IN_FLIGHT {
                self.shared.lent.metrics.count_refusal(crate::handshake::RefusalKind::TooManyConnections);
                debug!(%peer, "refused: connection limit, no room to send 503");
                continue;
            }
            let entry = self.connections.vacant_entry();
            let key = entry.key();
            let token = token::for_connection(key);
            // The main port speaks TLS with --tls-cert; --metrics-listen stays plain.
            let mut socket = match (&self.tls, which) {
                (Some(tls), Listener::Main) => match tls.accept() {
                    Ok(session) => Socket::with_tls(stream, session),
                    Err(e) => {
                        error!(%peer, error = %e, "cannot start a TLS session");
                        continue;
                    }
                },
                _ => Socket::new(stream),
            };
            if let Err(e) = self.poll.registry().register(socket.stream_mut(), token, Interest::READABLE) {
                error!(%peer, error = %e, "cannot register accepted connection");
                continue;
            }
            self.accepted += 1;
            let id = ConnectionId::new(key, self.accepted);
            let mut cx = self.shared.context(self.poll.registry(), self.link.as_ref());
            if over_limit {
                let refusal = Refusal::too_many_connections();
                info!(%peer, status = 503, reason = refusal.response.reason(), "refused connection");
                cx.lent.metrics.count_refusal(refusal.kind);
                entry.insert(Connection::refused(socket, id, &refusal, &mut cx));
                // Send the 503 now: the client may not send anything to wake us.
                let ready = Readiness { readable: true, writable: true, read_closed: false };
                let step = self.connections[key].on_ready(
                    token,
                    ready,
                    &mut self.app,
                    &mut self.shared.context(self.poll.registry(), self.link.as_ref()),
                );
                self.apply(key, step);
            } else {
                let routes = match which {
                    Listener::Metrics => Routes::MetricsOnly,
                    Listener::Main if cx.config.no_http_pages => Routes::None,
                    Listener::Main => Routes::All,
                };
                entry.insert(Connection::accepted(socket, id, routes, &mut cx));
            }
        }
    }

    fn housekeeping(&mut self) {
        let now = self.shared.lent.clock.now();
        if clock::is_past(self.next_sweep, now) {
            self.next_sweep = now.wrapping_add(self.sweep_every);
            self.sweep();
        }
        if clock::is_past(self.next_stats, now) {
            self.next_stats = now.wrapping_add(self.stats_every);
            self.end_stats_window();
        }
        if let Some(deadline) = self.shutdown_deadline {
            if self.connections.is_empty() || clock::is_past(deadline, now) {
                self.ending = Some(Ending::Graceful);
            }
        }
    }

    /// Closes the latency window and logs the headline figures.
    fn end_stats_window(&mut self) {
        let shared = &mut self.shared;
        shared.lent.metrics.rotate_window();
        if shared.config.stats_interval.is_zero() {
            return;
        }
        let now = shared.lent.clock.now_instant();
        let (previous, messages_in, messages_out) = self.last_stats;
        let snapshot = Snapshot::new(&shared.lent.metrics, &shared.config, shared.listen, shared.lent.clock.uptime());
        info!("stats: {}", snapshot.log_line(messages_in, messages_out, now - previous));
        self.last_stats = (now, shared.lent.metrics.messages_in(), shared.lent.metrics.messages_out());
    }

    /// Timeouts for every connection: a few comparisons each, every
    /// `sweep_every` ms, instead of a timer per connection.
    fn sweep(&mut self) {
        let mut finished = Vec::new();
        let mut cx = self.shared.context(self.poll.registry(), self.link.as_ref());
        for (key, connection) in self.connections.iter_mut() {
            if connection.on_tick(token::for_connection(key), &mut self.app, &mut cx) == Step::Remove {
                finished.push(key);
            }
        }
        for key in finished {
            self.remove(key);
        }
        if let Some(link) = &self.link {
            link.hub.report_open(link.index, self.shared.lent.metrics.connections_open);
        }
    }

    fn on_request(&mut self, request: Option<LoopRequest>) {
        match request {
            None => {}
            Some(LoopRequest::Graceful) if self.shutdown_deadline.is_none() => self.begin_shutdown(),
            Some(LoopRequest::Graceful) => self.ending = Some(Ending::Immediate(None)),
            Some(LoopRequest::Immediate(signal)) => self.ending = Some(Ending::Immediate(signal)),
            Some(LoopRequest::Reload) => reload_tls(self.tls.as_deref()),
        }
    }

    /// Stops accepting and sends close 1001 to every open connection.
    fn begin_shutdown(&mut self) {
        for mut listener in [self.listener.take(), self.metrics_listener.take()].into_iter().flatten() {
            let _ = self.poll.registry().deregister(&mut listener);
        }
        self.accept_paused_until = None;
        let now = self.shared.lent.clock.now();
        let deadline = now.wrapping_add(clock::ticks(self.shared.config.shutdown_timeout));
        self.shutdown_deadline = Some(deadline);
        info!(
            connections = self.connections.len(),
            timeout_ms = clock::ticks(self.shared.config.shutdown_timeout),
            "shutting down: no more accepts, closing every connection with 1001"
        );
        let keys: Vec<usize> = self.connections.iter().map(|(key, _)| key).collect();
        for key in keys {
            let token = token::for_connection(key);
            let step = self.connections[key].on_shutdown(
                token,
                deadline,
                &mut self.app,
                &mut self.shared.context(self.poll.registry(), self.link.as_ref()),
            );
            self.apply(key, step);
        }
        self.housekeeping();
    }

    fn poll_timeout(&self) -> Duration {
        if !self.again.is_empty() {
            return Duration::ZERO;
        }
        let now = self.shared.lent.clock.now();
        let until = |deadline: Tick| if clock::is_past(deadline, now) { 0 } else { clock::elapsed(now, deadline) };
        let mut wait = until(self.next_sweep).min(self.sweep_every);
        if let Some(paused_until) = self.accept_paused_until {
            wait = wait.min(until(paused_until));
        }
        if let Some(deadline) = self.shutdown_deadline {
            wait = wait.min(until(deadline));
        }
        Duration::from_millis(u64::from(wait))
    }

    fn summary(&mut self) -> Summary {
        let dropped = self.connections.len();
        for key in self.connections.iter().map(|(key, _)| key).collect::<Vec<_>>() {
            self.remove(key);
        }
        if let Some(link) = &self.link {
            link.hub.report_open(link.index, self.shared.lent.metrics.connections_open);
        }
        Summary {
            ended_by: self.ending.unwrap_or(Ending::Graceful),
            dropped,
            metrics: self.shared.lent.metrics.clone(),
        }
    }
}

/// SIGHUP: the TLS files again; one line either way (the old certificate
/// stays in force when the new one cannot be loaded).
pub fn reload_tls(tls: Option<&TlsAcceptor>) {
    match tls.map(TlsAcceptor::reload) {
        None => info!("SIGHUP: no TLS certificate to reload"),
        Some(Ok(())) => info!("SIGHUP: TLS certificate reloaded; new handshakes use it"),
        Some(Err(e)) => warn!(error = %e, "SIGHUP: TLS certificate not reloaded, the old one stays"),
    }
}

/// Which listening socket a connection came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Listener {
    /// The main port: WebSocket, and the pages unless `--no-http-pages`.
    Main,
    /// `--metrics-listen`: /metrics and /stats only.
    Metrics,
}

/// How often the sweep runs: a quarter of the shortest timeout it enforces,
/// between 50 ms and 1 s. With the defaults (2 s close grace) that is 500 ms.
fn sweep_interval(config: &Config) -> u32 {
    let mut shortest = config.handshake_timeout.min(CLOSE_GRACE);
    if !config.idle_timeout.is_zero() {
        shortest = shortest.min(config.idle_timeout / 2);
    }
    (clock::ticks(shortest) / 4).clamp(50, 1000)
}
