//! [`Socket`]: a connection's TCP stream, and the two rules that save
//! syscalls on it.
//!
//! 1. **A short read means the queue is empty.** With edge-triggered epoll, a
//!    `recv` that returns less than it asked for has taken everything there
//!    was; anything that arrives later raises a new edge. So the read that
//!    would only return `EAGAIN` is never made. (Not when the event carried
//!    `EPOLLRDHUP`: then we read on until the end-of-file.)
//! 2. **A short write means the send buffer is full**, so no write is tried
//!    again until the loop reports the socket writable.
//!
//! The loop knows sockets; what is read and written is the protocol's
//! business ([`crate::wakeup`]).

use std::{
    io::{self, IoSlice, Read, Write},
    net::Shutdown,
};

use mio::net::TcpStream;

use crate::sys::retry_interrupted;

/// What the wakeup and the flush need of a connection's stream: the TCP
/// [`Socket`], or an in-memory stream in the benches, tests and fuzz targets
/// ([`crate::testing::MemStream`]), so that those run exactly the
/// connection's code.
pub trait Transport {
    /// One read into `buf`.
    fn recv(&mut self, buf: &mut [u8]) -> io::Result<Received>;
    /// One gathered write of `slices` (`total` bytes in all): the bytes
    /// taken, 0 when the stream cannot take any now.
    fn send(&mut self, slices: &[IoSlice<'_>], total: usize) -> io::Result<usize>;
    /// Whether a read now could find anything.
    fn may_read(&self) -> bool;
    /// Whether the last write found the stream full.
    fn write_blocked(&self) -> bool;
}

/// What a [`Transport::recv`] got.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Received {
    /// This many bytes (more than 0).
    Data(usize),
    /// Nothing now: the socket is drained until its next readiness event.
    Nothing,
    /// The peer closed its side (end-of-file).
    Eof,
}

/// Where reading stands since the last readiness event.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum ReadState {
    /// Reading may find bytes.
    Ready,
    /// A short read, `EAGAIN` or an error: nothing more until the next edge.
    Drained,
    /// The peer half-closed (`EPOLLRDHUP`): read until the end-of-file even
    /// after short reads.
    ToEof,
}

/// A connection's stream with its read and write states.
#[derive(Debug)]
pub struct Socket {
    stream: TcpStream,
    read: ReadState,
    /// A write came back short: the send buffer is full until WRITABLE.
    write_blocked: bool,
}

impl Socket {
    pub fn new(stream: TcpStream) -> Self {
        Socket { stream, read: ReadState::Ready, write_blocked: false }
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
        if read_closed {
            self.read = ReadState::ToEof;
        } else if readable && self.read == ReadState::Drained {
            self.read = ReadState::Ready;
        }
        if writable {
            self.write_blocked = false;
        }
    }

    /// Half-closes: our FIN follows the bytes already written.
    pub fn shutdown_write(&self) -> io::Result<()> {
        self.stream.shutdown(Shutdown::Write)
    }
}

impl Transport for Socket {
    /// False after a short read.
    fn may_read(&self) -> bool {
        self.read != ReadState::Drained
    }

    /// Whether the send buffer was full at the last write.
    fn write_blocked(&self) -> bool {
        self.write_blocked
    }

    /// One `recv` into `buf`.
    fn recv(&mut self, buf: &mut [u8]) -> io::Result<Received> {
        if self.read == ReadState::Drained {
            return Ok(Received::Nothing);
        }
        match retry_interrupted(|| self.stream.read(buf)) {
            Ok(0) => {
                self.read = ReadState::Drained;
                Ok(Received::Eof)
            }
            Ok(n) => {
                if n < buf.len() && self.read == ReadState::Ready {
                    self.read = ReadState::Drained;
                }
                Ok(Received::Data(n))
            }
            Err(e) => {
                self.read = ReadState::Drained;
                if e.kind() == io::ErrorKind::WouldBlock {
                    Ok(Received::Nothing)
                } else {
                    Err(e)
                }
            }
        }
    }

    /// One `writev` of `slices`: the bytes the kernel took (0 when the send
    /// buffer is full, which is not an error).
    fn send(&mut self, slices: &[IoSlice<'_>], total: usize) -> io::Result<usize> {
        if self.write_blocked || total == 0 {
            return Ok(0);
        }
        match retry_interrupted(|| self.stream.write_vectored(slices)) {
            Ok(n) => {
                self.write_blocked = n < total;
                Ok(n)
            }
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                self.write_blocked = true;
                Ok(0)
            }
            Err(e) => Err(e),
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
        let fd = std::os::fd::AsRawFd::as_raw_fd(socket.stream());
        let mut fds = libc::pollfd { fd, events: libc::POLLIN, revents: 0 };
        // SAFETY: one valid pollfd, bounded wait.
        let ready = unsafe { libc::poll(&mut fds, 1, 2000) };
        assert_eq!(ready, 1, "the socket did not become readable within 2 s");
    }

    #[test]
    fn a_short_read_answers_the_next_read_without_a_syscall() {
        let (mut socket, mut client) = pair();
        client.write_all(b"hello").unwrap();
        wait_readable(&socket);
        let mut buf = [0u8; 64];
        assert_eq!(socket.recv(&mut buf).unwrap(), Received::Data(5));
        assert!(!socket.may_read());
        // Bytes sent now are not read until a new edge is reported.
        client.write_all(b"later").unwrap();
        std::thread::sleep(Duration::from_millis(20));
        assert_eq!(socket.recv(&mut buf).unwrap(), Received::Nothing);
        socket.on_event(true, false, false);
        assert_eq!(socket.recv(&mut buf).unwrap(), Received::Data(5));
        assert_eq!(&buf[..5], b"later");
    }

    #[test]
    fn a_full_read_keeps_reading_and_a_half_close_reads_to_the_end() {
        let (mut socket, mut client) = pair();
        client.write_all(&[7u8; 100]).unwrap();
        drop(client);
        wait_readable(&socket);
        socket.on_event(true, false, true);
        let mut buf = [0u8; 16];
        let mut total = 0;
        loop {
            match socket.recv(&mut buf).unwrap() {
                Received::Data(n) => total += n,
                Received::Eof => break,
                Received::Nothing => panic!("a half-closed socket reads to the end-of-file"),
            }
        }
        assert_eq!(total, 100);
        assert_eq!(socket.recv(&mut buf).unwrap(), Received::Nothing);
    }

    #[test]
    fn a_short_write_blocks_further_writes_until_writable() {
        let (mut socket, _client) = pair();
        let big = vec![1u8; 32 << 20];
        let n = socket.send(&[IoSlice::new(&big)], big.len()).unwrap();
        assert!(n < big.len(), "a 32 MiB write cannot fit an idle socket's buffers");
        assert!(socket.write_blocked());
        assert_eq!(socket.send(&[IoSlice::new(&big[n..])], big.len() - n).unwrap(), 0);
        socket.on_event(false, true, false);
        assert!(!socket.write_blocked());
    }
}
