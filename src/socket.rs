//! [`Socket`]: a connection's TCP stream, as tungstenite reads and writes it.
//!
//! tungstenite drives `Read`/`Write` on whatever stream it is given; this
//! wrapper is where the loop saves syscalls and memory without touching the
//! protocol:
//!
//! 1. **One shared receive buffer per loop** (uWebSockets' design). The loop
//!    lends its [`RecvBuf`] to the connection being served; one `recv` fills
//!    it with everything the kernel holds, and tungstenite copies it out in
//!    small pieces. So a connection's own read buffer can stay a few hundred
//!    bytes (memory per idle connection) while a 16 KiB message still costs
//!    one syscall.
//! 2. **A short read means the queue is empty.** With edge-triggered epoll, a
//!    `recv` that returns less than it asked for has taken everything there
//!    was; anything that arrives later raises a new edge. So the next read in
//!    this wakeup, which would only return `EAGAIN`, is answered without the
//!    syscall. (Not when the event carried `EPOLLRDHUP`: then we read on
//!    until the end-of-file.)
//! 3. **A short write means the send buffer is full**, so the next write
//!    returns `WouldBlock` without a syscall until the loop reports the
//!    socket writable again.
//! 4. **Exact pending output.** tungstenite hands its whole output buffer to
//!    every `write`, so the length asked for minus the length taken is the
//!    number of bytes still queued, which tungstenite itself has no API for.

use std::io::{self, Read, Write};
use std::net::Shutdown;

use mio::net::TcpStream;

/// What the hot path needs to know of a stream beyond `Read + Write`.
pub trait OutputState {
    /// Bytes the last write left unsent (queued in tungstenite).
    fn pending_output(&self) -> usize;
}

impl OutputState for Socket {
    fn pending_output(&self) -> usize {
        self.pending_output as usize
    }
}

/// A receive buffer: bytes `start..end` of `data` are received and not yet
/// consumed. Offsets are `u32` (buffers are at most a few hundred KiB) to keep
/// the placeholder every connection carries small.
#[derive(Debug, Default)]
pub struct RecvBuf {
    data: Box<[u8]>,
    start: u32,
    end: u32,
}

impl RecvBuf {
    /// A buffer of `capacity` bytes (allocated and zeroed once, at loop start).
    pub fn with_capacity(capacity: usize) -> Self {
        assert!(capacity <= u32::MAX as usize, "receive buffer over 4 GiB");
        RecvBuf { data: vec![0; capacity].into_boxed_slice(), start: 0, end: 0 }
    }

    fn unread(&self) -> &[u8] {
        &self.data[self.start as usize..self.end as usize]
    }

    fn is_empty(&self) -> bool {
        self.start == self.end
    }

    fn capacity(&self) -> usize {
        self.data.len()
    }

    /// Copies as much as fits into `out` and consumes it.
    fn copy_to(&mut self, out: &mut [u8]) -> usize {
        let start = self.start as usize;
        let n = out.len().min(self.end as usize - start);
        out[..n].copy_from_slice(&self.data[start..start + n]);
        self.start += n as u32;
        if self.start == self.end {
            self.start = 0;
            self.end = 0;
        }
        n
    }

    /// One `recv` into the (empty) buffer.
    fn fill(&mut self, stream: &mut TcpStream) -> io::Result<usize> {
        debug_assert!(self.is_empty());
        let n = read_retrying(stream, &mut self.data)?;
        self.start = 0;
        self.end = n as u32;
        Ok(n)
    }
}

/// The connection's stream plus the bookkeeping described in the module docs.
#[derive(Debug)]
pub struct Socket {
    stream: TcpStream,
    /// The loop's receive buffer while this connection is being served
    /// (a zero-capacity placeholder otherwise).
    lent: RecvBuf,
    /// Bytes received but not consumed when the connection last gave the
    /// loop's buffer back (it stopped reading under backpressure); they are
    /// served before anything new, from an offset (so draining it in
    /// tungstenite's small reads copies each byte once). `None`, without
    /// allocation, almost always; boxed so that the rare case costs every
    /// connection 8 bytes.
    spill: Option<Box<RecvBuf>>,
    /// Bytes the last write left in tungstenite's output buffer (bounded by
    /// the backpressure limit plus one message, see [`crate::ws`]).
    pending_output: u32,
    /// Bytes that may still be read in this wakeup (fairness, see [`Socket::lend`]).
    read_budget: u32,
    flags: u8,
}

/// A read came back short: the kernel's queue is empty until the next edge.
const READ_DRAINED: u8 = 1;
/// A write came back short: the send buffer is full until the next WRITABLE.
const WRITE_BLOCKED: u8 = 2;
/// The event carried EPOLLRDHUP: keep reading until the end-of-file.
const READ_CLOSED_HINT: u8 = 4;
/// The read budget ran out in this wakeup: the loop should come back.
const BUDGET_SPENT: u8 = 8;

impl Socket {
    pub fn new(stream: TcpStream) -> Self {
        Socket { stream, lent: RecvBuf::default(), spill: None, pending_output: 0, read_budget: 0, flags: 0 }
    }

    /// The mio source, for (re)registration.
    pub fn stream_mut(&mut self) -> &mut TcpStream {
        &mut self.stream
    }

    pub fn stream(&self) -> &TcpStream {
        &self.stream
    }

    /// Takes note of a readiness event before the connection is served.
    pub fn on_event(&mut self, readable: bool, writable: bool, read_closed: bool) {
        if readable {
            self.flags &= !READ_DRAINED;
        }
        if writable {
            self.flags &= !WRITE_BLOCKED;
        }
        if read_closed {
            self.flags |= READ_CLOSED_HINT;
        }
    }

    /// Lends the loop's receive buffer to this connection for one wakeup, with
    /// `budget` bytes that may be received before the connection must yield to
    /// others (so a flooding client cannot starve the rest of the loop).
    pub fn lend(&mut self, buf: &mut RecvBuf, budget: usize) {
        debug_assert!(buf.is_empty() && self.lent.capacity() == 0);
        std::mem::swap(&mut self.lent, buf);
        self.read_budget = u32::try_from(budget).unwrap_or(u32::MAX);
        self.flags &= !BUDGET_SPENT;
    }

    /// Returns the loop's buffer. Unconsumed bytes stay with the connection.
    /// (The lent buffer is filled only once the spill is used up, so at most
    /// one of the two holds bytes here.)
    pub fn give_back(&mut self, buf: &mut RecvBuf) {
        if !self.lent.is_empty() {
            debug_assert!(self.spill.is_none());
            let unread = self.lent.unread();
            self.spill = Some(Box::new(RecvBuf { data: unread.into(), start: 0, end: unread.len() as u32 }));
            self.lent.start = 0;
            self.lent.end = 0;
        }
        std::mem::swap(&mut self.lent, buf);
    }

    /// Whether the last write attempt left output queued (the caller wants WRITABLE).
    pub fn write_blocked(&self) -> bool {
        self.flags & WRITE_BLOCKED != 0
    }

    /// Whether this wakeup stopped reading because its budget ran out, with
    /// input possibly left: the loop must serve the connection again without
    /// waiting for an edge that may never come.
    pub fn budget_spent(&self) -> bool {
        self.flags & BUDGET_SPENT != 0
    }

    /// Half-closes: our FIN follows the bytes already written.
    pub fn shutdown_write(&self) -> io::Result<()> {
        self.stream.shutdown(Shutdown::Write)
    }

    /// Reads and throws away input: `Ok(true)` at end-of-file, `Ok(false)` when
    /// nothing more is there now. Used while lingering after our last words,
    /// so the peer receives them instead of a reset. At most `limit` bytes.
    pub fn discard_input(&mut self, limit: usize) -> io::Result<bool> {
        self.spill = None;
        let mut discarded = 0;
        let mut scratch = [0u8; 4096];
        while discarded <= limit {
            let got = if self.lent.capacity() > 0 {
                self.lent.start = 0;
                self.lent.end = 0;
                read_retrying(&mut self.stream, &mut self.lent.data)
            } else {
                read_retrying(&mut self.stream, &mut scratch)
            };
            match got {
                Ok(0) => return Ok(true),
                Ok(n) => discarded += n,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(false),
                Err(e) => return Err(e),
            }
        }
        self.lent.start = 0;
        self.lent.end = 0;
        Err(io::Error::other("peer kept sending while we were closing"))
    }

    /// Writes as much of `data` as the kernel takes now (used for HTTP
    /// responses before tungstenite owns the stream).
    pub fn write_some(&mut self, data: &[u8]) -> io::Result<usize> {
        match self.write(data) {
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => Ok(0),
            other => other,
        }
    }
}

impl Read for Socket {
    fn read(&mut self, out: &mut [u8]) -> io::Result<usize> {
        if out.is_empty() {
            return Ok(0);
        }
        if let Some(spill) = &mut self.spill {
            let n = spill.copy_to(out);
            if spill.is_empty() {
                self.spill = None;
            }
            return Ok(n);
        }
        if self.lent.is_empty() {
            if self.flags & READ_DRAINED != 0 {
                return Err(io::ErrorKind::WouldBlock.into());
            }
            if self.lent.capacity() == 0 {
                // Not lent (not inside a wakeup): read straight into the caller's buffer.
                let n = read_retrying(&mut self.stream, out).inspect_err(|_| self.note_read_failed())?;
                self.note_read(n, out.len());
                return Ok(n);
            }
            if self.read_budget == 0 {
                self.flags |= BUDGET_SPENT;
                return Err(io::ErrorKind::WouldBlock.into());
            }
            let n = self.lent.fill(&mut self.stream).inspect_err(|_| self.note_read_failed())?;
            self.read_budget = self.read_budget.saturating_sub(n as u32);
            let asked = self.lent.capacity();
            self.note_read(n, asked);
            if n == 0 {
                return Ok(0);
            }
        }
        Ok(self.lent.copy_to(out))
    }
}

impl Socket {
    /// After a read of `got` bytes out of `asked`: end-of-file, or a short
    /// read (unless the peer half-closed: then read on to the end-of-file),
    /// means nothing more until the next edge.
    fn note_read(&mut self, got: usize, asked: usize) {
        if got == 0 || (got < asked && self.flags & READ_CLOSED_HINT == 0) {
            self.flags |= READ_DRAINED;
        }
    }

    /// After a failed read: `WouldBlock` or a socket error, nothing more to read now.
    fn note_read_failed(&mut self) {
        self.flags |= READ_DRAINED;
    }
}

impl Write for Socket {
    fn write(&mut self, data: &[u8]) -> io::Result<usize> {
        if self.flags & WRITE_BLOCKED != 0 {
            self.pending_output = saturating_u32(data.len());
            return Err(io::ErrorKind::WouldBlock.into());
        }
        loop {
            match self.stream.write(data) {
                Ok(n) => {
                    self.pending_output = saturating_u32(data.len() - n);
                    if n < data.len() {
                        self.flags |= WRITE_BLOCKED;
                    }
                    return Ok(n);
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    self.pending_output = saturating_u32(data.len());
                    self.flags |= WRITE_BLOCKED;
                    return Err(e);
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(e),
            }
        }
    }

    fn flush(&mut self) -> io::Result<()> {
        // TCP has no user-space buffer here: every write went to the kernel.
        Ok(())
    }
}

fn saturating_u32(n: usize) -> u32 {
    u32::try_from(n).unwrap_or(u32::MAX)
}

fn read_retrying(stream: &mut TcpStream, buf: &mut [u8]) -> io::Result<usize> {
    loop {
        match stream.read(buf) {
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            other => return other,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::{TcpListener, TcpStream as StdStream};
    use std::time::Duration;

    fn pair() -> (Socket, StdStream) {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let client = StdStream::connect(listener.local_addr().unwrap()).unwrap();
        let (server, _) = listener.accept().unwrap();
        server.set_nonblocking(true).unwrap();
        (Socket::new(TcpStream::from_std(server)), client)
    }

    fn wait_readable(socket: &Socket) {
        let mut fds =
            libc::pollfd { fd: std::os::fd::AsRawFd::as_raw_fd(socket.stream()), events: libc::POLLIN, revents: 0 };
        // SAFETY: one valid pollfd, bounded wait.
        unsafe { libc::poll(&mut fds, 1, 2000) };
    }

    #[test]
    fn short_read_answers_the_next_read_without_a_syscall() {
        let (mut socket, mut client) = pair();
        client.write_all(b"hello").unwrap();
        wait_readable(&socket);
        let mut loop_buf = RecvBuf::with_capacity(64);
        socket.on_event(true, false, false);
        socket.lend(&mut loop_buf, 1 << 20);
        let mut out = [0u8; 3];
        assert_eq!(socket.read(&mut out).unwrap(), 3);
        assert_eq!(&out, b"hel");
        assert_eq!(socket.read(&mut out).unwrap(), 2);
        assert_eq!(&out[..2], b"lo");
        // Bytes sent now are not read until a new edge is reported.
        client.write_all(b"later").unwrap();
        std::thread::sleep(Duration::from_millis(20));
        assert_eq!(socket.read(&mut out).unwrap_err().kind(), io::ErrorKind::WouldBlock);
        socket.on_event(true, false, false);
        assert_eq!(socket.read(&mut out).unwrap(), 3);
        socket.give_back(&mut loop_buf);
        // The unread "er" stays with the connection, ahead of anything new.
        socket.lend(&mut loop_buf, 1 << 20);
        assert_eq!(socket.read(&mut out).unwrap(), 2);
        assert_eq!(&out[..2], b"er");
        socket.give_back(&mut loop_buf);
        assert_eq!(loop_buf.capacity(), 64);
    }

    #[test]
    fn budget_stops_reading_and_asks_to_come_back() {
        let (mut socket, mut client) = pair();
        client.write_all(&[7u8; 100]).unwrap();
        wait_readable(&socket);
        let mut loop_buf = RecvBuf::with_capacity(16);
        socket.on_event(true, false, false);
        socket.lend(&mut loop_buf, 20);
        let mut out = [0u8; 100];
        let mut total = 0;
        loop {
            match socket.read(&mut out) {
                Ok(n) => total += n,
                Err(e) => {
                    assert_eq!(e.kind(), io::ErrorKind::WouldBlock);
                    break;
                }
            }
        }
        assert_eq!(total, 32, "two 16-byte fills, then the 20-byte budget is spent");
        assert!(socket.budget_spent());
        socket.give_back(&mut loop_buf);
    }

    #[test]
    fn eof_reads_as_zero() {
        let (mut socket, client) = pair();
        drop(client);
        wait_readable(&socket);
        let mut loop_buf = RecvBuf::with_capacity(16);
        socket.on_event(true, false, true);
        socket.lend(&mut loop_buf, 1 << 20);
        let mut out = [0u8; 8];
        assert_eq!(socket.read(&mut out).unwrap(), 0);
        // And the next read does not go back to the kernel for more.
        assert_eq!(socket.read(&mut out).unwrap_err().kind(), io::ErrorKind::WouldBlock);
        socket.give_back(&mut loop_buf);
    }

    #[test]
    fn pending_output_is_what_the_kernel_did_not_take() {
        let (mut socket, _client) = pair();
        let big = vec![1u8; 32 << 20];
        let n = socket.write(&big).unwrap();
        assert!(n < big.len(), "a 32 MiB write cannot fit an idle socket's buffers");
        assert_eq!(socket.pending_output(), big.len() - n);
        assert!(socket.write_blocked());
        // Blocked: the next write is refused without a syscall, and counted.
        assert_eq!(socket.write(&big[n..]).unwrap_err().kind(), io::ErrorKind::WouldBlock);
        assert_eq!(socket.pending_output(), big.len() - n);
    }
}
