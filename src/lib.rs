//! # wsloop
//!
//! A WebSocket server that holds tens of thousands of connections on one
//! `mio` event loop, and the pieces its load generator shares with it.
//!
//! The layers, from the socket up (the loop knows sockets, the protocol
//! layer knows frames, the application sees messages). One message, from
//! socket to reply, reads top to bottom in [`wakeup::serve`].
//!
//! The process and its loops:
//! - [`process`]: a whole server process: `--workers` loops, signals, the summary.
//! - [`server`]: one event loop: poll, dispatch by token, accept, sweep;
//!   `server::delivery` is its side of rooms (fan-out, inboxes, drain).
//! - [`hub`]: what the loops of one process share (inboxes, room owners, open counts).
//! - [`bridge`]: rooms across processes through Redis pub/sub (its own threads).
//! - [`shutdown`]: signals and the stop handle.
//!
//! One connection:
//! - [`connection`]: its state machine (handshaking, open, closing, lingering).
//! - [`wakeup`]: one wakeup of an open connection: read, parse, app, flush.
//! - [`handshake`]: the opening handshake, without I/O: one head parser, one decision.
//! - [`socket`]: the TCP (or TLS) stream and the two rules that save syscalls.
//! - [`outbox`]: what a wakeup sends (corked) and what the kernel still owes.
//! - [`tls`]: the server's rustls configuration, loaded and reloaded from PEM;
//!   `tls::records`: one connection's TLS records without I/O (loadgen's too).
//!
//! The protocol and the application:
//! - [`protocol`]: RFC 6455 frames without I/O: a reader (bytes in, events
//!   out) and a writer (frame headers).
//! - [`app`]: the application interface: connections and messages, never sockets.
//! - [`modes`]: `--mode echo` and `--mode broadcast`, written against [`app`].
//! - [`rooms`]: which connections of a loop are in which room.
//! - [`fanout`]: a published message, framed once and shared by every delivery.
//!
//! Figures and pages:
//! - [`metrics`]: the counters and histograms of one loop (where they are kept).
//! - [`report`]: their renderings: `/stats` JSON, `/metrics` Prometheus, the log line.
//! - [`labels`](mod@labels): what the counters count by (refusals, failures, routes).
//! - [`http`], [`pages`]: plain HTTP requests and responses; what each route answers.
//!
//! Shared with loadgen, and small things:
//! - [`sys`]: what both loops need from the OS and mio (token map, readiness,
//!   receive buffer, histogram, CPU time, fd limit).
//! - [`clock`]: the loops' coarse clock and the fine one.
//! - [`wire`]: the stamped payload layout loadgen sends.
//! - [`listener`], [`token`]: the socket2 listener; the server's reserved tokens.
//! - [`config`], [`units`]: the configuration; parsing `16MiB` and `10s`.
//! - [`testing`]: an in-memory stream and harness for benches, tests and fuzzing.

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
pub mod report;
pub mod rooms;
pub mod server;
pub mod shutdown;
pub mod socket;
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
