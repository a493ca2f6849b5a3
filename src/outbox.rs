//! Output: what one wakeup has to send ([`Cork`]), what a connection still
//! owes the kernel ([`Outbox`]), and the one `writev` that sends both
//! ([`flush`]).
//!
//! A reply is not copied to be sent. The [`Cork`] lists the wakeup's output
//! in order as *segments*: a range of the loop's receive buffer (an echoed
//! payload, unmasked where it arrived, usually with its reply's header
//! written in front of it, [`Cork::push_framed`]), a range of the loop's
//! scratch buffer (frame headers, pongs, close frames), or a shared `Bytes`
//! (a message put together from fragments, a frame published to a room: one
//! allocation, shared by every connection it goes to). [`flush`] hands all
//! of them to the kernel in one `writev` (a `send` when they are one slice),
//! after whatever the connection still had pending. Only what the kernel
//! does not take is kept: shared segments by reference, the rest copied
//! once into the connection's [`Outbox`], in order.

use std::{io, io::IoSlice, ops::Range};

use bytes::Bytes;

use crate::{
    protocol::{
        writer::{self, Header},
        Kind,
    },
    socket::Transport,
};

/// Slices per `writev`; more are sent in several calls.
const MAX_SLICES: usize = crate::sys::IOV_MAX;

/// Output a connection has queued and the kernel has not taken yet.
#[derive(Debug, Default)]
pub struct Outbox {
    /// The pending bytes, in order, from `chunks[head]` on; never empty
    /// chunks. A `Vec` with a moving head rather than a `VecDeque`: sending
    /// everything, what a room member does at almost every delivery, is a
    /// `clear`, which costs a fraction of `VecDeque`'s `pop_front`.
    chunks: Vec<Bytes>,
    /// Chunks already sent (emptied, waiting for a `clear` or a compaction).
    head: usize,
    /// Bytes of `chunks[head]` already sent.
    front_sent: usize,
    /// Pending bytes in all.
    len: usize,
}

impl Outbox {
    /// Pending bytes.
    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Queues `bytes` after everything pending.
    pub fn push(&mut self, bytes: Bytes) {
        if !bytes.is_empty() {
            self.len += bytes.len();
            self.chunks.push(bytes);
        }
    }

    /// Drops everything not yet started, keeping the remainder of a chunk
    /// the kernel has taken part of (cutting it would corrupt the stream).
    /// Returns the bytes dropped.
    pub fn drop_unstarted(&mut self) -> usize {
        let keep = usize::from(self.front_sent > 0);
        let dropped: usize = self.pending().iter().skip(keep).map(Bytes::len).sum();
        self.chunks.truncate(self.head + keep);
        self.len -= dropped;
        dropped
    }

    /// Marks the first `n` pending bytes as sent.
    fn consume(&mut self, mut n: usize) {
        if n == self.len {
            // All of it, the usual case: no lengths to walk through.
            self.chunks.clear();
            self.head = 0;
            self.front_sent = 0;
            self.len = 0;
            return;
        }
        while n > 0 {
            let Some(front) = self.chunks.get_mut(self.head) else { break };
            let left = front.len() - self.front_sent;
            if n < left {
                self.front_sent += n;
                self.len -= n;
                break;
            }
            n -= left;
            self.len -= left;
            self.front_sent = 0;
            // Emptied in place (an empty `Bytes` frees nothing), and the
            // sent chunks dropped from the front once they are half of all.
            *front = Bytes::new();
            self.head += 1;
        }
        if self.head > self.chunks.len() / 2 {
            self.chunks.drain(..self.head);
            self.head = 0;
        }
    }

    /// The chunks not sent yet (the first maybe in part: `front_sent`).
    fn pending(&self) -> &[Bytes] {
        &self.chunks[self.head..]
    }

    /// Gives the queue's memory back if nothing is pending: called at each
    /// sweep, not when the queue empties, so that a room member getting a
    /// message every wakeup does not allocate and free its queue each time,
    /// while a connection that once had a backlog is back to its idle size
    /// within a sweep.
    pub fn release_if_empty(&mut self) {
        if self.is_empty() && self.chunks.capacity() > 0 {
            self.chunks = Vec::new();
            self.head = 0;
        }
    }
}

/// One piece of a wakeup's output.
#[derive(Debug)]
enum Segment {
    /// A frame header, inline.
    Header(Header),
    /// A range of the loop's receive buffer.
    Input(Range<usize>),
    /// A range of [`Cork::scratch`].
    Scratch(Range<usize>),
    /// Bytes shared with others (or owned).
    Shared(Bytes),
}

impl Segment {
    /// The bytes, given the buffers the ranges are ranges of.
    #[inline]
    fn bytes<'a>(&'a self, input: &'a [u8], scratch: &'a [u8]) -> &'a [u8] {
        match self {
            Segment::Header(header) => header.as_bytes(),
            Segment::Input(r) => &input[r.clone()],
            Segment::Scratch(r) => &scratch[r.clone()],
            Segment::Shared(b) => b,
        }
    }
}

/// The output of the connection being served, in order, until [`flush`]:
/// the loop owns one and lends it to each connection in turn.
#[derive(Debug, Default)]
pub struct Cork {
    segments: Vec<Segment>,
    /// Small output made here: frame headers, control frames, copied payloads.
    scratch: Vec<u8>,
    /// Bytes in `segments`.
    len: usize,
    /// Room for the `writev` slices, kept between flushes (see [`recycle`]).
    slices: Vec<IoSlice<'static>>,
    /// The last header tungstenite formatted, and for what: replies of one
    /// kind and length in a row (an echo benchmark, a feed of same-sized
    /// updates) reuse it.
    last_header: Option<(Kind, usize, Header)>,
    /// A header to write into the receive buffer, at this offset, before
    /// the flush ([`Cork::push_framed`], [`Cork::place_header`]).
    unplaced: Option<(usize, Header)>,
}

impl Cork {
    /// Bytes waiting in the cork.
    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Queues the header of a data frame of `kind` with `len` payload bytes.
    #[inline]
    pub fn push_header(&mut self, kind: Kind, len: usize) {
        let header = self.header(kind, len);
        self.len += header.as_bytes().len();
        self.segments.push(Segment::Header(header));
    }

    /// The header of a data frame of `kind` with `len` payload bytes.
    #[inline]
    fn header(&mut self, kind: Kind, len: usize) -> Header {
        match self.last_header {
            Some((k, l, header)) if k == kind && l == len => header,
            _ => {
                let header = writer::header(writer::data_opcode(kind), len);
                self.last_header = Some((kind, len, header));
                header
            }
        }
    }

    /// Queues a data frame of `kind` whose payload is `range` of the
    /// receive buffer, with `room` bytes before it that nothing needs any
    /// more (the header of the frame it came in): the header goes there
    /// ([`Cork::place_header`] writes it), so that header and payload leave
    /// as one slice, a `send` rather than a `writev` of two. A client's
    /// header is always 4 bytes longer than ours (its masking key), so there
    /// is room unless its header was cut by the end of the previous read.
    /// With too little `room` (0: none) the header is a segment of its own.
    #[inline]
    pub fn push_framed(&mut self, kind: Kind, range: Range<usize>, room: usize) {
        let header = self.header(kind, range.len());
        let len = header.as_bytes().len();
        if len > room || self.unplaced.is_some() {
            self.len += len;
            self.segments.push(Segment::Header(header));
            self.push_input(range);
            return;
        }
        self.unplaced = Some((range.start - len, header));
        self.push_input(range.start - len..range.end);
    }

    /// Writes the header [`Cork::push_framed`] queued into `input` (the
    /// receive buffer its offset is an offset of), once the application no
    /// longer holds the message. Until then those bytes are the old header,
    /// which nothing reads.
    #[inline]
    pub fn place_header(&mut self, input: &mut [u8]) {
        if let Some((at, header)) = self.unplaced.take() {
            header.write_to(&mut input[at..]);
        }
    }

    /// Queues `range` of the receive buffer that [`flush`] will be given.
    pub fn push_input(&mut self, range: Range<usize>) {
        if range.is_empty() {
            return;
        }
        self.len += range.len();
        // A range that continues the previous one extends it.
        if let Some(Segment::Input(last)) = self.segments.last_mut() {
            if last.end == range.start {
                last.end = range.end;
                return;
            }
        }
        self.segments.push(Segment::Input(range));
    }

    /// Queues bytes written by `write` into the scratch buffer.
    pub fn push_scratch(&mut self, write: impl FnOnce(&mut Vec<u8>)) {
        let start = self.scratch.len();
        write(&mut self.scratch);
        let end = self.scratch.len();
        if start == end {
            return;
        }
        self.len += end - start;
        if let Some(Segment::Scratch(last)) = self.segments.last_mut() {
            if last.end == start {
                last.end = end;
                return;
            }
        }
        self.segments.push(Segment::Scratch(start..end));
    }

    /// Queues shared bytes.
    pub fn push_shared(&mut self, bytes: Bytes) {
        if !bytes.is_empty() {
            self.len += bytes.len();
            self.segments.push(Segment::Shared(bytes));
        }
    }

    fn clear(&mut self) {
        self.segments.clear();
        self.scratch.clear();
        self.len = 0;
    }
}

/// Sends `outbox` and then `cork` (whose input ranges are ranges of
/// `input`) with as few `writev`s as the kernel allows (one, unless there
/// are over 1024 pieces), and moves what it did not take into `outbox`.
/// Returns the bytes sent. The cork is empty afterwards.
///
/// The usual cases, a few corked pieces and nothing pending (an echo) or a
/// few pending chunks and nothing corked (a room member after a fan-out),
/// are decided here, inline at every caller; the rest is `flush_many`.
#[inline]
pub fn flush<T: Transport>(socket: &mut T, outbox: &mut Outbox, cork: &mut Cork, input: &[u8]) -> io::Result<usize> {
    // What the transport holds (TLS records: session tickets, the end of a
    // handshake) goes before anything new. With nothing new it goes alone;
    // otherwise `send` writes it in the same `writev` as the new bytes (rustls
    // sends its records in order), so that a 101 and the tickets that came
    // before it leave in one write.
    if outbox.is_empty() && cork.len == 0 {
        socket.flush_pending()?;
    }
    if outbox.is_empty() && cork.segments.len() <= FEW && !socket.write_blocked() {
        return flush_few(socket, outbox, cork, input);
    }
    if cork.is_empty() && outbox.pending().len() <= FEW && !socket.write_blocked() {
        return flush_pending(socket, outbox);
    }
    flush_many(socket, outbox, cork, input)
}

/// [`flush`] of many pieces, or into a full socket: the slices in the
/// cork's reusable vector, as many `writev`s as `IOV_MAX` requires.
#[inline(never)]
fn flush_many<T: Transport>(socket: &mut T, outbox: &mut Outbox, cork: &mut Cork, input: &[u8]) -> io::Result<usize> {
    let total = outbox.len + cork.len;
    let mut sent = 0;
    let mut result = Ok(());
    if total > 0 && !socket.write_blocked() {
        let mut slices = recycle(std::mem::take(&mut cork.slices));
        // Pieces already sent by an earlier call in this loop.
        let mut skip = 0;
        loop {
            slices.clear();
            let mut batch = 0;
            let pending =
                outbox.pending().iter().enumerate().map(|(i, c)| if i == 0 { &c[outbox.front_sent..] } else { c });
            let corked = cork.segments.iter().map(|s| s.bytes(input, &cork.scratch));
            for piece in pending.chain(corked).skip(skip).take(MAX_SLICES) {
                batch += piece.len();
                slices.push(IoSlice::new(piece));
            }
            let count = slices.len();
            match socket.send(&slices, batch) {
                Ok(n) => sent += n,
                Err(e) => {
                    result = Err(e);
                    break;
                }
            }
            if sent == total || socket.write_blocked() || count < MAX_SLICES {
                break;
            }
            skip += count;
        }
        cork.slices = recycle(slices);
    }
    // What was sent comes off the front: the outbox first, then the cork.
    let from_outbox = sent.min(outbox.len);
    outbox.consume(from_outbox);
    keep_unsent(outbox, cork, input, sent - from_outbox);
    cork.clear();
    result.map(|()| sent)
}

/// Pieces [`flush_few`] handles with slices on the stack.
const FEW: usize = 4;

/// [`flush`] for the usual case, nothing pending and a few pieces (an echo:
/// header and payload): the slices go on the stack.
#[inline]
fn flush_few<T: Transport>(socket: &mut T, outbox: &mut Outbox, cork: &mut Cork, input: &[u8]) -> io::Result<usize> {
    if cork.len == 0 {
        cork.clear();
        return Ok(0);
    }
    let mut slices = [IoSlice::new(&[]); FEW];
    let count = cork.segments.len();
    for (slice, segment) in slices.iter_mut().zip(&cork.segments) {
        *slice = IoSlice::new(segment.bytes(input, &cork.scratch));
    }
    let result = socket.send(&slices[..count], cork.len);
    let sent = *result.as_ref().unwrap_or(&0);
    if sent < cork.len {
        keep_unsent(outbox, cork, input, sent);
    }
    cork.clear();
    result
}

/// [`flush`] of the outbox alone when it holds a few chunks: what a room
/// member has after a fan-out (a shared frame or a few), the slices on the
/// stack.
#[inline]
fn flush_pending<T: Transport>(socket: &mut T, outbox: &mut Outbox) -> io::Result<usize> {
    if outbox.is_empty() {
        return Ok(0);
    }
    let pending = outbox.pending();
    if let [only] = pending {
        // One message since the last write: most deliveries.
        let sent = socket.send(&[IoSlice::new(&only[outbox.front_sent..])], outbox.len)?;
        outbox.consume(sent);
        return Ok(sent);
    }
    let mut slices = [IoSlice::new(&[]); FEW];
    let count = pending.len();
    for (i, (slice, chunk)) in slices.iter_mut().zip(pending).enumerate() {
        let start = if i == 0 { outbox.front_sent } else { 0 };
        *slice = IoSlice::new(&chunk[start..]);
    }
    let sent = socket.send(&slices[..count], outbox.len)?;
    outbox.consume(sent);
    Ok(sent)
}

/// Moves the cork's output after its first `sent` bytes into `outbox`:
/// shared pieces by reference, the rest copied into one buffer per run.
fn keep_unsent(outbox: &mut Outbox, cork: &Cork, input: &[u8], mut sent: usize) {
    let mut copy: Vec<u8> = Vec::new();
    for segment in &cork.segments {
        let bytes = segment.bytes(input, &cork.scratch);
        if sent >= bytes.len() {
            sent -= bytes.len();
            continue;
        }
        let unsent = sent..bytes.len();
        sent = 0;
        match segment {
            Segment::Shared(b) => {
                if !copy.is_empty() {
                    outbox.push(Bytes::from(std::mem::take(&mut copy)));
                }
                outbox.push(b.slice(unsent));
            }
            _ => copy.extend_from_slice(&bytes[unsent]),
        }
    }
    if !copy.is_empty() {
        outbox.push(Bytes::from(copy));
    }
}

/// An empty vector of slices with `v`'s allocation, for any lifetime: the
/// slices of one flush borrow that flush's buffers, but the vector's memory
/// can serve every flush. (Collecting an emptied vector through `map` reuses
/// its allocation: the element types have the same layout.)
fn recycle<'a, 'b>(mut v: Vec<IoSlice<'a>>) -> Vec<IoSlice<'b>> {
    v.clear();
    v.into_iter().map(|_| IoSlice::new(&[])).collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::socket::Socket;
    use mio::net::TcpStream;
    use std::{io::Read, net::TcpListener};

    fn pair() -> (Socket, std::net::TcpStream) {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let client = std::net::TcpStream::connect(listener.local_addr().unwrap()).unwrap();
        let (server, _) = listener.accept().unwrap();
        server.set_nonblocking(true).unwrap();
        client.set_read_timeout(Some(std::time::Duration::from_secs(5))).unwrap();
        (Socket::new(TcpStream::from_std(server)), client)
    }

    #[test]
    fn segments_go_out_in_order_in_one_write() {
        let (mut socket, mut client) = pair();
        let input = b"..hello..world".to_vec();
        let (mut outbox, mut cork) = (Outbox::default(), Cork::default());
        outbox.push(Bytes::from_static(b"[old]"));
        cork.push_scratch(|s| s.extend_from_slice(b"<"));
        cork.push_input(2..7);
        cork.push_shared(Bytes::from_static(b"|"));
        cork.push_input(9..14);
        cork.push_scratch(|s| s.extend_from_slice(b">"));
        assert_eq!(flush(&mut socket, &mut outbox, &mut cork, &input).unwrap(), 18);
        assert!(outbox.is_empty() && cork.is_empty());
        let mut got = [0u8; 18];
        client.read_exact(&mut got).unwrap();
        assert_eq!(&got, b"[old]<hello|world>");
    }

    #[test]
    fn what_the_kernel_does_not_take_is_kept_in_order() {
        let (mut socket, mut client) = pair();
        let big = vec![b'x'; 16 << 20];
        let (mut outbox, mut cork) = (Outbox::default(), Cork::default());
        cork.push_input(0..big.len());
        cork.push_scratch(|s| s.extend_from_slice(b"end"));
        let sent = flush(&mut socket, &mut outbox, &mut cork, &big).unwrap();
        assert!(sent < big.len(), "16 MiB cannot fit an idle socket's buffers");
        assert_eq!(outbox.len(), big.len() + 3 - sent);
        // The reader drains; the rest goes out on later flushes.
        let reader = std::thread::spawn(move || {
            let mut all = Vec::new();
            client.read_to_end(&mut all).unwrap();
            all
        });
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        while !outbox.is_empty() && std::time::Instant::now() < deadline {
            socket.on_event(false, true, false);
            flush(&mut socket, &mut outbox, &mut cork, &[]).unwrap();
            std::thread::sleep(std::time::Duration::from_millis(1));
        }
        assert!(outbox.is_empty());
        drop(socket);
        let all = reader.join().unwrap();
        assert_eq!(all.len(), big.len() + 3);
        assert!(all.ends_with(b"xend"));
        // The queue keeps its memory until the sweep gives it back.
        assert!(outbox.chunks.capacity() > 0);
        outbox.release_if_empty();
        assert_eq!(outbox.chunks.capacity(), 0);
    }

    #[test]
    fn dropping_unstarted_output_keeps_a_started_chunk() {
        let mut outbox = Outbox::default();
        outbox.push(Bytes::from_static(b"abcd"));
        outbox.push(Bytes::from_static(b"efgh"));
        outbox.consume(2);
        assert_eq!(outbox.drop_unstarted(), 4);
        assert_eq!(outbox.len(), 2);
        outbox.consume(2);
        assert!(outbox.is_empty());
        assert_eq!(outbox.drop_unstarted(), 0);
    }

    #[test]
    fn recycling_keeps_the_allocation() {
        let mut v: Vec<IoSlice<'static>> = Vec::with_capacity(64);
        v.push(IoSlice::new(b"x"));
        let ptr = v.as_ptr() as usize;
        let w: Vec<IoSlice<'_>> = recycle(v);
        assert!(w.is_empty() && w.capacity() >= 64);
        assert_eq!(w.as_ptr() as usize, ptr, "the flush would allocate");
    }
}
