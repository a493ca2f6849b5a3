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
//!
//! On the `wss://` port the socket carries a TLS connection
//! ([`Records`]): `recv` reads records with one `recv`, has them decrypted
//! where they landed and hands out the plaintext; `send` seals plaintext
//! into records and writes them with one `send`. The handshake happens in
//! the same calls, before the first plaintext comes out. Both rules hold
//! there too.

use std::{
    convert::Infallible,
    io::{self, IoSlice},
    net::Shutdown,
};

use mio::net::TcpStream;
use rustls::server::UnbufferedServerConnection;

use crate::{
    sys::{self, retry_interrupted},
    tls::{
        records::{Records, TlsEnd},
        TlsFailure,
    },
};

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
    /// Writes what the transport itself still holds (TLS records); nothing
    /// for a plain stream. `send` writes those first too, in the same call,
    /// so this is only needed when there is nothing new to send.
    fn flush_pending(&mut self) -> io::Result<()> {
        Ok(())
    }
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
    /// On the `wss://` port: the TLS connection (boxed: rustls' state is a
    /// few KiB a plain connection need not carry).
    tls: Option<Box<Records<UnbufferedServerConnection>>>,
    read: ReadState,
    /// A write came back short: the send buffer is full until WRITABLE.
    write_blocked: bool,
}

impl Socket {
    pub fn new(stream: TcpStream) -> Self {
        Socket { stream, tls: None, read: ReadState::Ready, write_blocked: false }
    }

    /// A socket whose bytes go through `tls`.
    pub fn with_tls(stream: TcpStream, tls: UnbufferedServerConnection) -> Self {
        Socket { tls: Some(Box::new(Records::new(tls))), ..Socket::new(stream) }
    }

    /// Whether this is a TLS connection.
    pub fn is_tls(&self) -> bool {
        self.tls.is_some()
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

    /// Whether the peer's end of TLS (close_notify) has arrived.
    #[inline]
    fn tls_ended(&self) -> bool {
        self.tls.as_ref().is_some_and(|tls| tls.peer_closed())
    }

    /// Half-closes: our FIN follows the bytes already written (on TLS,
    /// after a close_notify alert).
    pub fn shutdown_write(&mut self) -> io::Result<()> {
        if let Some(tls) = &mut self.tls {
            tls.close_notify();
            self.flush_pending()?;
        }
        self.stream.shutdown(Shutdown::Write)
    }

    /// Writes the TLS records waiting for the socket (handshake flights,
    /// tickets, alerts), until the socket is full; a plain stream holds
    /// none, and pays one test here.
    #[inline]
    fn push_records(&mut self) -> io::Result<()> {
        if self.tls.is_none() {
            return Ok(());
        }
        self.push_tls_records()
    }

    #[inline(never)]
    fn push_tls_records(&mut self) -> io::Result<()> {
        let stream = &self.stream;
        let Some(tls) = &mut self.tls else { return Ok(()) };
        if !tls.flush(|slices| sys::send_slices(stream, slices))? {
            self.write_blocked = true;
        }
        Ok(())
    }

    /// [`Transport::recv`] through TLS: one `recv` of records into the
    /// back half of `buf`, after the end of a record kept from the last
    /// one; decrypted where they landed, their plaintext copied into the
    /// front half ([`Records::open`]); again until the socket is drained or
    /// the front half is full. A read asks for no more than the front half
    /// has room for (plaintext is never longer than its records), so a short
    /// read means the socket is drained: rule 1 holds here too.
    #[inline(never)]
    fn recv_tls(&mut self, buf: &mut [u8]) -> io::Result<Received> {
        // Handshake messages (or an alert) still waiting go out first.
        if !self.write_blocked {
            self.push_records()?;
        }
        let (plain, records) = buf.split_at_mut(buf.len() / 2);
        let mut filled = 0;
        let mut ended = self.tls_ended();
        while !ended && self.read != ReadState::Drained {
            let room = (plain.len() - filled).min(records.len());
            let kept = match &mut self.tls {
                Some(tls) if room >= tls.unread_len() + MIN_RECORD_READ => tls.take_unread(records),
                _ => break,
            };
            let received = self.recv_plain(&mut records[kept..room]);
            let Some(tls) = &mut self.tls else { break };
            let (n, eof) = match received {
                Ok(Received::Data(n)) => (n, false),
                Ok(Received::Eof) => (0, true),
                Ok(Received::Nothing) => {
                    tls.keep_unread(&records[..kept]);
                    break;
                }
                Err(e) => return Err(e),
            };
            let opened = tls.open(&mut records[..kept + n], |piece| {
                plain[filled..filled + piece.len()].copy_from_slice(piece);
                filled += piece.len();
                Ok::<(), Infallible>(())
            });
            match opened {
                Ok(opened) => ended = opened.peer_closed || eof,
                Err(TlsEnd::Tls(e)) => {
                    // Send rustls' alert saying why, if the socket takes it.
                    let _ = self.push_records();
                    return Err(io::Error::new(io::ErrorKind::InvalidData, TlsFailure(e)));
                }
                Err(TlsEnd::Plain(never)) => match never {},
            }
            self.push_unless_answered(filled > 0)?;
        }
        Ok(match (filled, ended) {
            (0, true) => Received::Eof,
            (0, false) => Received::Nothing,
            (n, _) => Received::Data(n),
        })
    }

    /// Writes what rustls has to say now while the handshake runs, or when
    /// no `plaintext` came (a TLS 1.2 client waits for our Finished).
    /// Otherwise the plaintext is answered in this wakeup, and the records
    /// (TLS 1.3 tickets after the client's Finished) leave with that answer,
    /// in one write ([`Socket::send_tls`]).
    fn push_unless_answered(&mut self, plaintext: bool) -> io::Result<()> {
        if self.tls.as_ref().is_some_and(|tls| !tls.unsent().is_empty() && (!plaintext || tls.is_handshaking())) {
            self.push_records()?;
        }
        Ok(())
    }

    /// One `recv` from the TCP stream into `buf`, noting a short read as
    /// drained: the plain [`Transport::recv`], and how TLS records arrive.
    #[inline]
    fn recv_plain(&mut self, buf: &mut [u8]) -> io::Result<Received> {
        if self.read == ReadState::Drained {
            return Ok(Received::Nothing);
        }
        match retry_interrupted(|| sys::recv(&self.stream, buf)) {
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

    /// [`Transport::send`] through TLS: the plaintext sealed into records
    /// and written with one `send` per batch of up to two records, behind the records
    /// already waiting ([`Records::send`]). What the socket does not take
    /// of a batch is kept encrypted, and no more is sealed until it has
    /// gone: the rest of the output waits in the connection's queue,
    /// unencrypted and bounded by `--max-backpressure`, as on plain TCP.
    #[inline(never)]
    fn send_tls(&mut self, slices: &[IoSlice<'_>], total: usize) -> io::Result<usize> {
        let stream = &self.stream;
        let Some(tls) = &mut self.tls else { return Ok(0) };
        let sent = tls.send(slices, total, |slices| sys::send_slices(stream, slices))?;
        self.write_blocked = sent.blocked;
        Ok(sent.taken)
    }
}

/// The smallest read of records worth a system call.
const MIN_RECORD_READ: usize = 4 << 10;

impl Transport for Socket {
    /// False after a short read.
    fn may_read(&self) -> bool {
        self.read != ReadState::Drained
    }

    /// Whether the send buffer was full at the last write.
    fn write_blocked(&self) -> bool {
        self.write_blocked
    }

    fn flush_pending(&mut self) -> io::Result<()> {
        if self.write_blocked {
            return Ok(());
        }
        self.push_records()
    }

    /// One `recv` into `buf` (through TLS: see the module docs).
    #[inline]
    fn recv(&mut self, buf: &mut [u8]) -> io::Result<Received> {
        if self.tls.is_some() {
            return self.recv_tls(buf);
        }
        self.recv_plain(buf)
    }

    /// One `writev` of `slices` (a `send` when there is one): the bytes the
    /// kernel took (0 when the send buffer is full, which is not an error). Always inlined: it is one
    /// test and a system call, at every flush of every connection.
    #[inline(always)]
    fn send(&mut self, slices: &[IoSlice<'_>], total: usize) -> io::Result<usize> {
        if self.write_blocked || total == 0 {
            return Ok(0);
        }
        if self.tls.is_some() {
            return self.send_tls(slices, total);
        }
        match retry_interrupted(|| sys::send_slices(&self.stream, slices)) {
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
    use std::io::Write;
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
