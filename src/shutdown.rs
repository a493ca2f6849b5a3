//! Ways to stop the loop: SIGINT/SIGTERM, and a [`StopHandle`] for code that
//! embeds the server (tests, and [`crate::process`] for its loops).
//!
//! Both only post a request; the loop itself carries it out between
//! wakeups: the first request starts a graceful shutdown (stop accepting,
//! close 1001 to everyone, wait up to `--shutdown-timeout`), a second one
//! stops at once.

use std::{
    io,
    sync::{
        atomic::{AtomicU8, Ordering},
        Arc,
    },
};

use mio::{Interest, Registry, Waker};
use signal_hook::consts::{SIGHUP, SIGINT, SIGTERM};
use signal_hook_mio::v1_0::Signals;

use crate::token;

/// What the loop has been asked to do.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Request {
    /// Close everyone with 1001 and exit within the shutdown timeout.
    Graceful,
    /// Exit now (the second signal). Carries the signal number, if any.
    Immediate(Option<i32>),
    /// SIGHUP: load the TLS certificate again.
    Reload,
}

/// SIGINT and SIGTERM (and SIGHUP, which asks for a TLS reload), delivered
/// through a pipe registered with the loop
/// (signal-hook's self-pipe: the handler itself only writes a byte).
pub struct ShutdownSignals {
    signals: Signals,
    received: u32,
}

impl ShutdownSignals {
    /// Installs the handlers and registers the pipe under [`token::SIGNALS`].
    pub fn register(registry: &Registry) -> io::Result<Self> {
        let mut signals = Signals::new([SIGINT, SIGTERM, SIGHUP])?;
        registry.register(&mut signals, token::SIGNALS, Interest::READABLE)?;
        Ok(ShutdownSignals { signals, received: 0 })
    }

    /// The request the signals received since the last call amount to.
    pub fn take_request(&mut self) -> Option<Request> {
        let mut request = None;
        for signal in self.signals.pending() {
            if signal == SIGHUP {
                request = request.or(Some(Request::Reload));
                continue;
            }
            self.received += 1;
            request = Some(if self.received == 1 { Request::Graceful } else { Request::Immediate(Some(signal)) });
        }
        request
    }
}

const NONE: u8 = 0;
const GRACEFUL: u8 = 1;
const IMMEDIATE: u8 = 2;

/// A handle that asks a running server, from any thread, to stop.
#[derive(Clone, Debug)]
pub struct StopHandle {
    waker: Arc<Waker>,
    request: Arc<AtomicU8>,
}

impl StopHandle {
    pub(crate) fn new(registry: &Registry) -> io::Result<Self> {
        Ok(StopHandle { waker: Arc::new(Waker::new(registry, token::WAKER)?), request: Arc::new(AtomicU8::new(NONE)) })
    }

    /// Graceful shutdown: close 1001 to every client, then exit.
    pub fn shutdown(&self) {
        self.post(GRACEFUL);
    }

    /// Stop at once, dropping every connection.
    pub fn stop_now(&self) {
        self.post(IMMEDIATE);
    }

    fn post(&self, request: u8) {
        self.request.fetch_max(request, Ordering::SeqCst);
        // A failed wake means the loop is gone already.
        let _ = self.waker.wake();
    }

    /// The loop's waker (a loop has one): other loops wake it with it too.
    pub fn waker(&self) -> Arc<Waker> {
        self.waker.clone()
    }

    /// The request posted since the last call (called by the loop on wake).
    pub(crate) fn take_request(&self) -> Option<Request> {
        match self.request.swap(NONE, Ordering::SeqCst) {
            GRACEFUL => Some(Request::Graceful),
            IMMEDIATE => Some(Request::Immediate(None)),
            _ => None,
        }
    }
}
