//! The few Linux calls loadgen alone needs that the standard library and
//! socket2 do not wrap (CPU time and the fd limit are in `wsloop::sys`):
//! a nanosecond timer for mio (`timerfd`),
//! `IP_BIND_ADDRESS_NO_PORT` for connecting from several source addresses,
//! and the terminal's width for the live line (`TIOCGWINSZ`).

use std::{
    io,
    net::{IpAddr, SocketAddr},
    os::fd::{AsRawFd, FromRawFd, OwnedFd},
};

use mio::{event::Source, unix::SourceFd, Interest, Registry, Token};
use socket2::{Domain, Protocol, Socket, Type};

/// A one-shot `CLOCK_MONOTONIC` timer that mio can poll.
///
/// mio's poll timeout is rounded up to whole milliseconds (epoll_wait's
/// unit), which would make every open-loop send up to 1 ms late, and that
/// lateness is measured as latency. A timerfd wakes the loop at the
/// nanosecond the next message is due.
#[derive(Debug)]
pub struct Timer {
    /// The timerfd; closed on drop.
    fd: OwnedFd,
}

impl Timer {
    pub fn new() -> io::Result<Timer> {
        // SAFETY: timerfd_create has no pointer arguments; we own the returned descriptor.
        let fd = unsafe { libc::timerfd_create(libc::CLOCK_MONOTONIC, libc::TFD_NONBLOCK | libc::TFD_CLOEXEC) };
        if fd < 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: `fd` is a fresh descriptor that nothing else owns.
        Ok(Timer { fd: unsafe { OwnedFd::from_raw_fd(fd) } })
    }

    /// Fires once at `deadline_ns` ([`wsloop::clock::monotonic_ns`] time),
    /// replacing any earlier setting. A deadline in the past fires at once.
    ///
    /// Setting the timer also clears a past expiry, and edge-triggered
    /// epoll reports every new one, so the descriptor is never read: that
    /// saves a `read` per open-loop wakeup.
    pub fn fire_at(&self, deadline_ns: u64) -> io::Result<()> {
        let deadline_ns = deadline_ns.max(1); // zero would disarm it
        let spec = libc::itimerspec {
            it_interval: libc::timespec { tv_sec: 0, tv_nsec: 0 },
            it_value: libc::timespec {
                tv_sec: (deadline_ns / 1_000_000_000) as libc::time_t,
                tv_nsec: (deadline_ns % 1_000_000_000) as libc::c_long,
            },
        };
        // SAFETY: valid descriptor and itimerspec; the old value is not asked for.
        let rc =
            unsafe { libc::timerfd_settime(self.fd.as_raw_fd(), libc::TFD_TIMER_ABSTIME, &spec, std::ptr::null_mut()) };
        if rc != 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(())
    }
}

impl Source for Timer {
    fn register(&mut self, registry: &Registry, token: Token, interests: Interest) -> io::Result<()> {
        SourceFd(&self.fd.as_raw_fd()).register(registry, token, interests)
    }

    fn reregister(&mut self, registry: &Registry, token: Token, interests: Interest) -> io::Result<()> {
        SourceFd(&self.fd.as_raw_fd()).reregister(registry, token, interests)
    }

    fn deregister(&mut self, registry: &Registry) -> io::Result<()> {
        SourceFd(&self.fd.as_raw_fd()).deregister(registry)
    }
}

/// The width of the terminal on stderr, in columns, if it is one.
pub fn stderr_columns() -> Option<usize> {
    // SAFETY: TIOCGWINSZ only writes the winsize struct we pass; all-zero is valid.
    let mut size: libc::winsize = unsafe { std::mem::zeroed() };
    // SAFETY: as above, on our own stderr descriptor.
    let rc = unsafe { libc::ioctl(libc::STDERR_FILENO, libc::TIOCGWINSZ, &mut size) };
    (rc == 0 && size.ws_col > 0).then_some(usize::from(size.ws_col))
}

/// Starts a non-blocking TCP connect to `target`, from `source` if given.
///
/// With a source address the socket must be bound before `connect`; plain
/// `bind(ip, 0)` would pick the local port at bind time, unique across every
/// destination, capping the source at ~28,000 connections in total.
/// `IP_BIND_ADDRESS_NO_PORT` defers the choice to `connect`, where only the
/// full 4-tuple must be unique (Linux 4.2+; ignored where unsupported).
pub fn start_connect(target: SocketAddr, source: Option<IpAddr>) -> io::Result<mio::net::TcpStream> {
    let socket = Socket::new(Domain::for_address(target), Type::STREAM.nonblocking().cloexec(), Some(Protocol::TCP))?;
    // Latency matters more than segment count for small messages.
    socket.set_tcp_nodelay(true)?;
    if let Some(ip) = source {
        if ip.is_ipv4() {
            let one: libc::c_int = 1;
            // SAFETY: valid socket and a c_int option value of the right size.
            unsafe {
                libc::setsockopt(
                    socket.as_raw_fd(),
                    libc::IPPROTO_IP,
                    libc::IP_BIND_ADDRESS_NO_PORT,
                    (&one as *const libc::c_int).cast(),
                    std::mem::size_of::<libc::c_int>() as libc::socklen_t,
                )
            };
        }
        socket.bind(&SocketAddr::new(ip, 0).into())?;
    }
    match socket.connect(&target.into()) {
        Ok(()) => {}
        Err(e) if e.raw_os_error() == Some(libc::EINPROGRESS) => {}
        Err(e) => return Err(e),
    }
    Ok(mio::net::TcpStream::from_std(socket.into()))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Re-arming without reading the expiry count fires again, and an
    /// expiry not re-armed is reported once (edge-triggered), not forever.
    #[test]
    fn timer_fires_and_rearms_without_being_read() {
        let mut poll = mio::Poll::new().unwrap();
        let mut events = mio::Events::with_capacity(4);
        let mut timer = Timer::new().unwrap();
        poll.registry().register(&mut timer, Token(7), Interest::READABLE).unwrap();
        let wait = Some(std::time::Duration::from_secs(5));
        for _ in 0..3 {
            timer.fire_at(wsloop::clock::monotonic_ns() + 1_000_000).unwrap();
            poll.poll(&mut events, wait).unwrap();
            assert_eq!(events.iter().next().map(|e| e.token()), Some(Token(7)));
        }
        // A deadline already past fires at once, also without a read before.
        timer.fire_at(1).unwrap();
        poll.poll(&mut events, wait).unwrap();
        assert_eq!(events.iter().next().map(|e| e.token()), Some(Token(7)));
        poll.poll(&mut events, Some(std::time::Duration::from_millis(20))).unwrap();
        assert!(events.is_empty(), "an expiry is reported once");
    }

    #[test]
    fn connects_from_a_source_address() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let source: IpAddr = "127.0.0.1".parse().unwrap();
        let stream = start_connect(listener.local_addr().unwrap(), Some(source)).unwrap();
        let (_accepted, peer) = listener.accept().unwrap();
        assert_eq!(peer.ip(), source);
        drop(stream);
    }
}
