//! The listening socket, built with socket2 and handed to mio.
//!
//! mio's own `TcpListener::bind` fixes the backlog at 128 and sets no
//! `SO_REUSEPORT`; both matter here: a connect storm of thousands overflows a
//! 128-entry accept queue (the kernel drops SYNs and clients retry a second
//! later), and running one loop per core means several sockets on one port.

use std::{io, net::SocketAddr};

use socket2::{Domain, Protocol, Socket, Type};

/// Options for [`bind`].
#[derive(Debug, Clone, Copy)]
pub struct ListenOptions {
    /// Accept-queue length (capped by the kernel at `net.core.somaxconn`).
    pub backlog: u32,
    /// Set `SO_REUSEPORT`, so several sockets (processes or loops) share the port.
    pub reuse_port: bool,
}

/// Binds a non-blocking listener on `addr`, ready for `mio::Poll`.
///
/// `SO_REUSEADDR` is always set, so a restart does not wait for `TIME_WAIT`
/// sockets of the previous run.
pub fn bind(addr: SocketAddr, options: ListenOptions) -> io::Result<mio::net::TcpListener> {
    bind_std(addr, options).map(mio::net::TcpListener::from_std)
}

/// The same listener as a `std` one, for other event loops (the benchmark
/// peers hand it to tokio, so that every server is set up alike).
pub fn bind_std(addr: SocketAddr, options: ListenOptions) -> io::Result<std::net::TcpListener> {
    let socket = Socket::new(Domain::for_address(addr), Type::STREAM.nonblocking().cloexec(), Some(Protocol::TCP))?;
    socket.set_reuse_address(true)?;
    if options.reuse_port {
        socket.set_reuse_port(true)?;
    }
    if addr.is_ipv6() {
        // Listen on exactly the address asked for, as the IPv4 case does.
        socket.set_only_v6(true)?;
    }
    socket.bind(&addr.into())?;
    let backlog = i32::try_from(options.backlog).unwrap_or(i32::MAX);
    socket.listen(backlog)?;
    Ok(socket.into())
}

/// Whether an `accept` error means the process or system is out of
/// descriptors or memory: retrying at once would spin, so the caller must
/// back off (libuv #690, tokio #3529).
pub fn is_resource_exhaustion(err: &io::Error) -> bool {
    matches!(err.raw_os_error(), Some(libc::EMFILE | libc::ENFILE | libc::ENOBUFS | libc::ENOMEM))
}

/// Whether an `accept` error concerns only the one connection being accepted
/// (it was reset or aborted before we got to it): skip it and accept the next.
pub fn is_per_connection(err: &io::Error) -> bool {
    matches!(err.raw_os_error(), Some(libc::ECONNABORTED | libc::ECONNRESET | libc::EPROTO | libc::EPERM | libc::EINTR))
        || err.kind() == io::ErrorKind::Interrupted
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn binds_port_zero_and_reports_the_real_port() {
        let options = ListenOptions { backlog: 1024, reuse_port: true };
        let listener = bind("127.0.0.1:0".parse().unwrap(), options).unwrap();
        let addr = listener.local_addr().unwrap();
        assert_ne!(addr.port(), 0);
        // SO_REUSEPORT lets a second socket share the port.
        let second = bind(addr, options).unwrap();
        assert_eq!(second.local_addr().unwrap(), addr);
    }

    #[test]
    fn bind_conflict_is_an_error() {
        let options = ListenOptions { backlog: 16, reuse_port: false };
        let listener = bind("127.0.0.1:0".parse().unwrap(), options).unwrap();
        let err = bind(listener.local_addr().unwrap(), options).unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::AddrInUse);
    }

    #[test]
    fn classifies_accept_errors() {
        assert!(is_resource_exhaustion(&io::Error::from_raw_os_error(libc::EMFILE)));
        assert!(is_resource_exhaustion(&io::Error::from_raw_os_error(libc::ENFILE)));
        assert!(!is_resource_exhaustion(&io::Error::from_raw_os_error(libc::ECONNABORTED)));
        assert!(is_per_connection(&io::Error::from_raw_os_error(libc::ECONNABORTED)));
    }
}
