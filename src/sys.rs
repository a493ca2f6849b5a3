//! What both event loops (the server's and loadgen's) need from the
//! operating system and from mio, written once: the slab-key/token map,
//! readiness as the loops read it, the receive buffer and events capacity,
//! the latency histogram, CPU time, the open-file limit, `EINTR` retry, and
//! the two system calls of the hot path.

use std::io::{self, IoSlice};
use std::os::fd::AsFd;

use hdrhistogram::Histogram;
use mio::{event::Event, Token};

/// Events taken from epoll per wakeup: enough that a burst of thousands of
/// ready sockets costs a few `epoll_wait` calls, not thousands.
pub const EVENTS_CAPACITY: usize = 1024;

/// Size of a loop's one receive buffer: a `read` takes up to this much,
/// whatever the connection. Large enough that a pipelined connection is
/// drained in one call, small enough to stay in L2 cache (uWebSockets uses
/// 512 KiB per loop).
pub const RECV_BUFFER_SIZE: usize = 256 << 10;

/// A loop's receive buffer ([`RECV_BUFFER_SIZE`] bytes, zeroed once).
pub fn receive_buffer() -> Box<[u8]> {
    vec![0; RECV_BUFFER_SIZE].into_boxed_slice()
}

/// Highest latency the histograms track (60 s, in nanoseconds); larger
/// values are clamped to it, not lost.
pub const LATENCY_MAX_NS: u64 = 60_000_000_000;

/// Significant figures of every histogram: 0.1% resolution, the usual
/// HdrHistogram choice (wrk2 uses 3 as well).
pub const SIGNIFICANT_FIGURES: u8 = 3;

/// A latency histogram in nanoseconds, 1 ns to 60 s (about 200 KiB).
pub fn latency_histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1, LATENCY_MAX_NS, SIGNIFICANT_FIGURES).expect("valid histogram bounds")
}

/// Slab keys and mio tokens: the first `reserved` tokens name the loop's
/// own sources (listener, timer, waker...), and a connection stored under
/// slab key `k` is registered as token `k + reserved`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TokenMap {
    reserved: usize,
}

impl TokenMap {
    pub const fn new(reserved: usize) -> TokenMap {
        TokenMap { reserved }
    }

    /// The token the connection under slab key `key` is registered with.
    pub fn token(self, key: usize) -> Token {
        Token(key + self.reserved)
    }

    /// The slab key of a connection token, or `None` for a reserved token.
    pub fn key(self, token: Token) -> Option<usize> {
        token.0.checked_sub(self.reserved)
    }
}

/// What one event says a connection may do.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Readiness {
    /// Read: data, the end of the stream, or an error to collect by reading.
    pub readable: bool,
    /// Write: room in the socket buffer, or an error to collect by writing.
    pub writable: bool,
    /// The peer half-closed (EPOLLRDHUP): read on until the end-of-file.
    pub read_closed: bool,
}

impl Readiness {
    /// An event's readiness. A hang-up or an error counts as readable and
    /// writable: the next read or write returns it, and that is where the
    /// loops handle it.
    pub fn of(event: &Event) -> Readiness {
        Readiness {
            readable: event.is_readable() || event.is_read_closed() || event.is_error(),
            writable: event.is_writable() || event.is_write_closed() || event.is_error(),
            read_closed: event.is_read_closed(),
        }
    }
}

/// CPU time used, in nanoseconds.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct CpuTime {
    /// Time running the program's own code.
    pub user_ns: u64,
    /// Time in the kernel on its behalf (system calls: for a loop, most of it).
    pub system_ns: u64,
}

impl CpuTime {
    /// The calling thread's CPU time (a loop's own cost, excluding the others).
    pub fn thread() -> CpuTime {
        rusage(libc::RUSAGE_THREAD)
    }

    /// The whole process's CPU time, all threads.
    pub fn process() -> CpuTime {
        rusage(libc::RUSAGE_SELF)
    }

    pub fn total_ns(&self) -> u64 {
        self.user_ns + self.system_ns
    }

    pub fn since(&self, earlier: &CpuTime) -> CpuTime {
        CpuTime {
            user_ns: self.user_ns.saturating_sub(earlier.user_ns),
            system_ns: self.system_ns.saturating_sub(earlier.system_ns),
        }
    }

    pub fn add(&mut self, other: &CpuTime) {
        self.user_ns += other.user_ns;
        self.system_ns += other.system_ns;
    }
}

fn rusage(who: libc::c_int) -> CpuTime {
    // SAFETY: getrusage only writes the struct we pass; an all-zero rusage is valid.
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    // SAFETY: as above; `who` is RUSAGE_SELF or RUSAGE_THREAD, which cannot fail.
    unsafe { libc::getrusage(who, &mut usage) };
    let ns = |tv: libc::timeval| tv.tv_sec as u64 * 1_000_000_000 + tv.tv_usec as u64 * 1_000;
    CpuTime { user_ns: ns(usage.ru_utime), system_ns: ns(usage.ru_stime) }
}

/// Raises the soft open-file limit to the hard limit; returns the new soft limit.
///
/// The default soft limit (often 1024) would cap a loop far below the
/// connections asked for; the hard limit is what the administrator allows.
pub fn raise_fd_limit() -> io::Result<u64> {
    let mut limit = libc::rlimit { rlim_cur: 0, rlim_max: 0 };
    // SAFETY: getrlimit/setrlimit only read and write the struct we pass.
    unsafe {
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) != 0 {
            return Err(io::Error::last_os_error());
        }
        if limit.rlim_cur < limit.rlim_max {
            limit.rlim_cur = limit.rlim_max;
            if libc::setrlimit(libc::RLIMIT_NOFILE, &limit) != 0 {
                return Err(io::Error::last_os_error());
            }
        }
    }
    Ok(limit.rlim_cur)
}

/// Runs `op` again while it fails with `EINTR` (a signal arrived during the
/// call): mio's examples retry the same way, and nothing is lost by it.
/// Always inlined: it wraps the system call of every message, and
/// out of line its frame alone cost 30 instructions per message.
#[inline(always)]
pub fn retry_interrupted<T>(mut op: impl FnMut() -> io::Result<T>) -> io::Result<T> {
    loop {
        match op() {
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            other => return other,
        }
    }
}

/// `recv(2)` on a socket, and [`writev`], made with rustix: on Linux a
/// direct system call, without glibc's wrapper. In a process with more than
/// one thread (`--workers`, loadgen's `--threads`), glibc makes each call
/// that may block a cancellation point, `__pthread_enable_asynccancel`
/// before and `__pthread_disable_asynccancel` after: two atomic operations
/// and about 60 instructions per call, on every message. Nothing here
/// cancels threads, so the loops skip them.
#[inline]
pub fn recv(socket: &impl AsFd, buf: &mut [u8]) -> io::Result<usize> {
    let (taken, _) = rustix::net::recv(socket, buf, rustix::net::RecvFlags::empty())?;
    Ok(taken)
}

/// `send(2)` of `bytes` on a socket (see [`recv`]): the bytes taken. For
/// one slice this is cheaper than `writev`: no vector of slices to copy in
/// and check, and none of the file layer `writev` goes through.
#[inline]
pub fn send(socket: &impl AsFd, bytes: &[u8]) -> io::Result<usize> {
    Ok(rustix::net::send(socket, bytes, rustix::net::SendFlags::empty())?)
}

/// One gathered write of `slices`: a [`send`] when there is one slice, a
/// [`writev`] otherwise.
#[inline(always)]
pub fn send_slices(socket: &impl AsFd, slices: &[IoSlice<'_>]) -> io::Result<usize> {
    match slices {
        [one] => send(socket, one),
        _ => writev(socket, slices),
    }
}

/// Slices one `writev` takes at most (Linux's `IOV_MAX`): the kernel
/// refuses more.
pub const IOV_MAX: usize = 1024;

/// `writev(2)` of `slices` on a socket (see [`recv`]): the bytes taken. At
/// most [`IOV_MAX`] slices are written, as `std` does.
#[inline]
pub fn writev(socket: &impl AsFd, slices: &[IoSlice<'_>]) -> io::Result<usize> {
    Ok(rustix::io::writev(socket, &slices[..slices.len().min(IOV_MAX)])?)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_and_tokens_round_trip_past_the_reserved_ones() {
        let map = TokenMap::new(4);
        for key in [0, 1, 77, usize::MAX - 4] {
            assert!(map.token(key).0 >= 4);
            assert_eq!(map.key(map.token(key)), Some(key));
        }
        for reserved in 0..4 {
            assert_eq!(map.key(Token(reserved)), None);
        }
    }

    #[test]
    fn cpu_time_grows_and_differences_do_not_underflow() {
        let before = CpuTime::thread();
        let mut x = 0u64;
        for i in 0..2_000_000u64 {
            x = x.wrapping_mul(31).wrapping_add(i);
        }
        std::hint::black_box(x);
        let after = CpuTime::thread();
        assert!(after.total_ns() >= before.total_ns());
        assert!(CpuTime::process().total_ns() >= after.total_ns(), "the process includes the thread");
        assert_eq!(before.since(&after).total_ns(), 0, "saturates, never wraps");
    }

    #[test]
    fn writev_gathers_and_recv_reads_and_errors_come_back_as_errors() {
        use std::net::{TcpListener, TcpStream};
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let client = TcpStream::connect(listener.local_addr().unwrap()).unwrap();
        let (server, _) = listener.accept().unwrap();
        let sent = writev(&client, &[IoSlice::new(b"head"), IoSlice::new(b""), IoSlice::new(b"payload")]).unwrap();
        assert_eq!(sent, 11);
        let mut buf = [0u8; 64];
        let mut got = Vec::new();
        while got.len() < 11 {
            let n = recv(&server, &mut buf).unwrap();
            got.extend_from_slice(&buf[..n]);
        }
        assert_eq!(got, b"headpayload");
        server.set_nonblocking(true).unwrap();
        assert_eq!(recv(&server, &mut buf).unwrap_err().kind(), io::ErrorKind::WouldBlock);
        drop(client);
        server.set_nonblocking(false).unwrap();
        assert_eq!(recv(&server, &mut buf).unwrap(), 0, "end of file");
        // A listening socket cannot be read: the kernel's error, not a panic.
        assert!(recv(&listener, &mut buf).is_err());
    }
}
