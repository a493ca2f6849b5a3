//! A whole server process: its loops (`--workers N`, one thread each, each
//! with its own `SO_REUSEPORT` listener on the same address: a connection
//! lives and dies on the loop that accepted it), the [`Hub`] they share, the
//! Redis bridge (`--redis`), and the signals that stop them all.
//!
//! With one loop and no Redis there is nothing to share: the loop runs alone
//! on the calling thread, exactly as [`Server::run`] does.

use std::{
    io,
    net::SocketAddr,
    sync::{Arc, OnceLock, Weak},
    thread,
};

use signal_hook::{
    consts::{SIGHUP, SIGINT, SIGTERM},
    iterator::Signals,
};
use tracing::error;

use crate::{
    app::App,
    bridge::{self, Bridge, BridgeConfig, Envelope},
    config::Config,
    hub::{Cross, Hub},
    protocol::Kind,
    server::{reload_tls, Ending, Server, Summary},
    tls::TlsAcceptor,
    StopHandle,
};

/// The loops of a process, bound and ready to run.
pub struct Process<A> {
    loops: Vec<Server<A>>,
    /// The hub, when the loops share one.
    hub: Option<Arc<Hub>>,
    /// The TLS configuration the loops share, with `--tls-cert`.
    tls: Option<Arc<TlsAcceptor>>,
}

impl<A: App + Send + 'static> Process<A> {
    /// Binds `config.workers` loops on `config.listen` (port 0 picks a free
    /// port for all of them), each running the application `make_app` makes
    /// for it, and starts the Redis bridge if asked.
    pub fn bind(config: Config, mut make_app: impl FnMut(usize) -> A) -> io::Result<Process<A>> {
        let workers = config.workers;
        let shared = workers > 1 || config.redis.is_some();
        // Several sockets on one port need SO_REUSEPORT on each, the first too.
        let first = Config { reuse_port: config.reuse_port || workers > 1, ..config.clone() };
        // One TLS configuration for all loops: SIGHUP reloads it once.
        let tls = config.tls().map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, e))?;
        let mut loops = vec![Server::bind_with_tls(first.clone(), make_app(0), tls.clone())?];
        let listen = loops[0].local_addr();
        for index in 1..workers {
            // Only the first loop serves --metrics-listen.
            let config = Config { listen, metrics_listen: None, ..first.clone() };
            loops.push(Server::bind_with_tls(config, make_app(index), tls.clone())?);
        }
        if !shared {
            return Ok(Process { loops, hub: None, tls });
        }
        let wakers = loops.iter().map(|server| server.stop_handle().waker()).collect();
        let hub_for_bridge: Arc<OnceLock<Weak<Hub>>> = Arc::default();
        let bridge = match &config.redis {
            Some(url) => Some(start_bridge(&config, &url.0, hub_for_bridge.clone())?),
            None => None,
        };
        let hub = Arc::new(Hub::new(wakers, bridge));
        let _ = hub_for_bridge.set(Arc::downgrade(&hub));
        for (index, server) in loops.iter_mut().enumerate() {
            server.join_hub(hub.clone(), index);
        }
        Ok(Process { loops, hub: Some(hub), tls })
    }

    /// The address every loop listens on.
    pub fn local_addr(&self) -> SocketAddr {
        self.loops[0].local_addr()
    }

    /// The `--metrics-listen` address actually bound, if any.
    pub fn metrics_local_addr(&self) -> Option<SocketAddr> {
        self.loops[0].metrics_local_addr()
    }

    /// Handles to stop every loop.
    pub fn stop_handles(&self) -> Vec<StopHandle> {
        self.loops.iter().map(Server::stop_handle).collect()
    }

    /// Runs every loop until SIGINT/SIGTERM (the first: a graceful shutdown
    /// of every loop; a second: at once), and returns the process's figures.
    pub fn run(self) -> io::Result<Summary> {
        let Process { mut loops, hub, tls } = self;
        if hub.is_none() && loops.len() == 1 {
            let mut server = loops.remove(0);
            server.handle_signals()?;
            return server.run();
        }
        let stops: Vec<StopHandle> = loops.iter().map(Server::stop_handle).collect();
        let mut signals = Signals::new([SIGINT, SIGTERM, SIGHUP])?;
        let signal_handle = signals.handle();
        let signal_thread = thread::Builder::new().name("wsloop-signals".into()).spawn(move || {
            let mut stops_asked = 0;
            for signal in signals.forever() {
                if signal == SIGHUP {
                    reload_tls(tls.as_deref());
                    continue;
                }
                stops_asked += 1;
                for stop in &stops {
                    if stops_asked == 1 {
                        stop.shutdown();
                    } else {
                        stop.stop_now();
                    }
                }
            }
        })?;
        let threads: Vec<_> = loops
            .into_iter()
            .enumerate()
            .map(|(index, mut server)| {
                thread::Builder::new().name(format!("wsloop-{index}")).spawn(move || server.run())
            })
            .collect::<io::Result<_>>()?;
        let mut summary: Option<Summary> = None;
        let mut failure = None;
        for (index, thread) in threads.into_iter().enumerate() {
            match thread.join() {
                Ok(Ok(loop_summary)) => merge(&mut summary, loop_summary),
                Ok(Err(e)) => {
                    error!(index, error = %e, "event loop failed");
                    failure.get_or_insert(e);
                }
                Err(_) => {
                    error!(index, "event loop panicked");
                    failure.get_or_insert(io::Error::other("an event loop panicked"));
                }
            }
        }
        signal_handle.close();
        let _ = signal_thread.join();
        if let Some(bridge) = hub.and_then(Arc::into_inner).and_then(Hub::into_bridge) {
            bridge.shutdown();
        }
        match (failure, summary) {
            (Some(e), _) => Err(e),
            (None, Some(summary)) => Ok(summary),
            (None, None) => Err(io::Error::other("no event loop ran")),
        }
    }
}

/// Adds one loop's summary to the process's.
fn merge(total: &mut Option<Summary>, one: Summary) {
    match total {
        None => *total = Some(one),
        Some(total) => {
            total.dropped += one.dropped;
            total.metrics.merge(&one.metrics);
            if let (Ending::Graceful, Ending::Immediate(_)) = (total.ended_by, one.ended_by) {
                total.ended_by = one.ended_by;
            }
        }
    }
}

/// Starts the bridge; what it receives from other processes goes to each
/// room's owner loop, to take its place in the room's order.
fn start_bridge(config: &Config, url: &str, hub: Arc<OnceLock<Weak<Hub>>>) -> io::Result<Bridge> {
    let bridge_config =
        BridgeConfig { url: url.to_string(), prefix: config.redis_prefix.clone(), queue: config.redis_queue };
    let mut batch = Vec::with_capacity(1);
    let deliver = move |envelope: Envelope| {
        let Some(hub) = hub.get().and_then(Weak::upgrade) else { return };
        let room: Arc<str> = envelope.room.into();
        let kind = if envelope.text { Kind::Text } else { Kind::Binary };
        let owner = hub.owner(&room);
        batch.push(Cross::FromRedis { room, kind, payload: envelope.payload });
        hub.post(owner, &mut batch);
    };
    Bridge::start(bridge_config, bridge::random_node_id(), Box::new(deliver))
}
