//! What the comparison peers share: the command line, the listening socket
//! (wsloop's own `listener::bind_std`, so that the comparison is like for
//! like), the open-file limit, the one `listening on` line the scripts wait
//! for, and the tokio peers' runtime.
//!
//! These servers exist only to be measured against wsloop by the scripts in
//! `scripts/`; none of this is part of wsloop.

use std::{future::Future, net::SocketAddr, process};

pub use wsloop::listener::is_resource_exhaustion;
use wsloop::listener::{bind_std, raise_fd_limit, ListenOptions};

/// tungstenite's own default read buffer (`WebSocketConfig::read_buffer_size`).
pub const TUNGSTENITE_DEFAULT_READ_BUFFER: usize = 128 * 1024;

/// The parsed command line of a peer.
#[derive(Debug, Clone)]
pub struct Args {
    /// `--listen HOST:PORT` (port 0: the kernel picks one).
    pub listen: SocketAddr,
    /// `--read-buffer BYTES`, for the peers that take it.
    pub read_buffer: Option<usize>,
}

/// Parses `--listen HOST:PORT` (default 127.0.0.1:9001) and, where
/// `read_buffer` is allowed, `--read-buffer BYTES`; both also as `--flag=value`.
/// Prints usage and exits 0 on `--help`, or exits 2 on anything else.
pub fn parse_args(name: &str, allow_read_buffer: bool) -> Args {
    let usage = if allow_read_buffer {
        format!("usage: {name} [--listen HOST:PORT] [--read-buffer BYTES]")
    } else {
        format!("usage: {name} [--listen HOST:PORT]")
    };
    let fail = |message: String| -> ! {
        eprintln!("{name}: {message}\n{usage}");
        process::exit(2)
    };
    let mut args = Args { listen: SocketAddr::from(([127, 0, 0, 1], 9001)), read_buffer: None };
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
            "--read-buffer" if allow_read_buffer => {
                let v = value();
                match v.parse::<usize>() {
                    Ok(n) if n > 0 => args.read_buffer = Some(n),
                    _ => fail(format!("--read-buffer {v}: not a positive number of bytes")),
                }
            }
            _ => fail(format!("unknown argument {arg}")),
        }
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
    });
}
