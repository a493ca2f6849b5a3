//! What the comparison peers share: the command line, the listening socket
//! (built as wsloop builds its own, so that the comparison is like for like),
//! the open-file limit and the one `listening on` line the scripts wait for.
//!
//! These servers exist only to be measured against wsloop by the scripts in
//! `scripts/`; none of this is part of wsloop.

use std::{io, net::SocketAddr, process};

/// The accept-queue length, the same as wsloop's default (`--backlog 4096`):
/// a connect storm overflows a shorter queue, and the kernel then drops SYNs
/// and the clients retry a second later, which would measure the queue.
pub const BACKLOG: i32 = 4096;

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

/// Binds a non-blocking listener as wsloop does: `SO_REUSEADDR`, backlog
/// [`BACKLOG`], IPv6 sockets v6-only. Raises the open-file limit first, so
/// that a c10k run is not capped at the default soft limit of 1024.
pub fn bind(addr: SocketAddr) -> io::Result<std::net::TcpListener> {
    raise_fd_limit();
    use socket2::{Domain, Protocol, Socket, Type};
    let socket = Socket::new(Domain::for_address(addr), Type::STREAM.nonblocking().cloexec(), Some(Protocol::TCP))?;
    socket.set_reuse_address(true)?;
    if addr.is_ipv6() {
        socket.set_only_v6(true)?;
    }
    socket.bind(&addr.into())?;
    socket.listen(BACKLOG)?;
    Ok(socket.into())
}

/// Binds or exits 1 with the reason, then prints the one line that the
/// scripts wait for, with the real port: `listening on HOST:PORT`.
pub fn bind_and_announce(name: &str, addr: SocketAddr) -> std::net::TcpListener {
    let listener = bind(addr).unwrap_or_else(|e| {
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

/// Raises the soft open-file limit to the hard limit (best effort).
pub fn raise_fd_limit() {
    let mut limit = libc::rlimit { rlim_cur: 0, rlim_max: 0 };
    // SAFETY: getrlimit/setrlimit only read and write the struct we pass.
    unsafe {
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) == 0 && limit.rlim_cur < limit.rlim_max {
            limit.rlim_cur = limit.rlim_max;
            libc::setrlimit(libc::RLIMIT_NOFILE, &limit);
        }
    }
}

/// Whether an `accept` error is about the system (out of descriptors or
/// memory), where retrying at once would spin; the peers then pause briefly.
pub fn is_resource_exhaustion(err: &io::Error) -> bool {
    matches!(err.raw_os_error(), Some(libc::EMFILE | libc::ENFILE | libc::ENOBUFS | libc::ENOMEM))
}
