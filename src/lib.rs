//! # wsloop
//!
//! A WebSocket server that holds tens of thousands of connections on one
//! `mio` event loop, and the pieces its load generator shares with it.
//!
//! The layers, from the socket up (the loop knows sockets, the protocol
//! layer knows frames, the application sees messages):
//!
//! - [`server`]: the event loop: poll, dispatch by token, accept, sweep.
//! - [`connection`]: one connection's state machine (handshaking, open, closing).
//! - [`cycle`]: the per-message hot path of an open connection (generic, benchable).
//! - [`handshake`]: the opening handshake: request head, refusals, the 101.
//! - [`ws`]: tungstenite's configuration and what its errors mean.
//! - [`handler`]: what the application does with a message (echo).
//! - [`socket`]: the stream tungstenite reads and writes: shared receive
//!   buffer, syscall avoidance, pending-output accounting.
//! - [`listener`]: the socket2 listener; accept-error classification.
//! - [`token`], [`clock`]: token layout; the loop's coarse clock.
//! - [`shutdown`]: signals and the stop handle.
//! - [`bridge`]: rooms across processes through Redis pub/sub (its own threads).
//! - [`metrics`], [`stats`]: counters and histograms per loop; their
//!   `/stats` JSON, `/metrics` Prometheus text and log-line renderings.
//! - [`http`], [`pages`]: plain HTTP routes and responses; the monitor page.
//! - [`config`], [`units`]: the configuration; parsing `16MiB` and `10s`.
//! - [`wire`]: the stamped payload layout loadgen sends (sequence number,
//!   send times), shared so any tool can read it.

pub mod app;
pub mod bridge;
pub mod clock;
pub mod config;
pub mod connection;
pub mod fanout;
pub mod handshake;
pub mod http;
pub mod hub;
pub mod labels;
pub mod listener;
pub mod metrics;
pub mod modes;
pub mod outbox;
pub mod pages;
pub mod process;
pub mod protocol;
pub mod rooms;
pub mod server;
pub mod shutdown;
pub mod socket;
pub mod stats;
pub mod sys;
pub mod testing;
pub mod tls;
pub mod token;
pub mod units;
pub mod wakeup;
pub mod wire;

pub use config::{Config, Mode};
pub use server::{Ending, Server, Summary};
pub use shutdown::StopHandle;
