//! peer-minimal-broadcast: the minimal fan-out ceiling.
//!
//! BENCHMARK BASELINE, NOT A PRODUCT. It shows what a broadcast server on
//! this machine can do at best: each message framed once, copied into each
//! member's output, and one `write` per member per loop iteration, however
//! many messages reached it. Like `peer-minimal` it hand-rolls the framing
//! and skips what a real server must do: no UTF-8 check, no timeouts, and no
//! limits beyond those that keep memory bounded; a protocol error (or a
//! message over 64 MiB) drops the connection without a close frame.
//!
//! Semantics (those of the other broadcast peers): a connection joins the
//! room named by its request path (the query string is not part of it);
//! every complete text or binary message a member sends (fragments are
//! reassembled) goes to every member of the room, the sender included, with
//! its opcode. Rooms are created on first join and freed when the last
//! member leaves; joining and leaving are O(1) (a room's members are a
//! vector, and each connection knows its index in it). Ping gets a pong,
//! close gets its close echoed, then the connection is dropped once written.
//!
//! Design:
//! - One mio loop (edge-triggered epoll), connections in a slab, rooms in
//!   another; each socket is registered once for READABLE | WRITABLE.
//! - At most one `read` per connection per loop iteration, into a 512 KiB
//!   buffer owned by the loop; a full read (more may be waiting) puts the
//!   connection on a list read again in the next iteration, which polls
//!   without waiting. So one publisher cannot fill its members' output with
//!   more than 512 KiB before they are written to.
//! - The messages completed by that read are framed once each (server
//!   header, unmasked payload) into one per-loop buffer, and each frame is
//!   appended to every member's output buffer, in the order they came: every
//!   member sees the room's messages in one order.
//! - After every event of the iteration is handled, each connection that got
//!   output is written once (corked): one `write` of all its pending bytes.
//!   A partial write keeps the rest, which the WRITABLE edge flushes.
//! - Memory stays bounded: a member whose pending output is over 1 MiB is
//!   skipped for a message (counted, printed at exit); a publisher whose own
//!   pending output is over 1 MiB is not read until it drains below, so its
//!   own copies are never skipped (a client may write without reading, as
//!   with an echo server, without losing anything or deadlocking). Pending
//!   output is thus at most 1 MiB plus one message for any member, plus one
//!   read's worth for a publisher.

use std::collections::HashMap;
use std::io::{self, Read, Write};
use std::time::Duration;

use mio::net::{TcpListener, TcpStream};
use mio::{Events, Interest, Poll, Token};
use signal_hook::consts::{SIGINT, SIGTERM};
use signal_hook_mio::v1_0::Signals;
use slab::Slab;

const NAME: &str = "peer-minimal-broadcast";
const LISTENER: Token = Token(usize::MAX - 1);
const SIGNALS: Token = Token(usize::MAX - 2);
const READ_BUFFER: usize = 512 * 1024;
const MAX_REQUEST: usize = 8192;
/// Pending output above which a member is skipped, and a publisher not read.
const MAX_OUTPUT: usize = 1 << 20;
/// A bigger message (however fragmented) drops the connection: it would be
/// held whole in memory. The other peers' limit.
const MAX_MESSAGE: usize = 64 << 20;
/// An output or message buffer bigger than this is freed once empty, so that
/// an idle connection holds no memory after a burst.
const KEEP_CAPACITY: usize = 64 * 1024;

/// Header length from the second byte: 2, plus 2 or 8 length bytes, plus 4 mask bytes.
fn header_len(b1: u8) -> usize {
    2 + match b1 & 0x7f {
        126 => 2,
        127 => 8,
        _ => 0,
    } + if b1 & 0x80 != 0 { 4 } else { 0 }
}

/// Appends a server frame header (FIN set, unmasked) for `len` payload bytes.
fn push_header(out: &mut Vec<u8>, first: u8, len: usize) {
    out.push(first);
    if len < 126 {
        out.push(len as u8);
    } else if len <= 0xffff {
        out.push(126);
        out.extend_from_slice(&(len as u16).to_be_bytes());
    } else {
        out.push(127);
        out.extend_from_slice(&(len as u64).to_be_bytes());
    }
}

/// Appends `payload` to `out`, unmasked; `pos` is the offset of `payload[0]` in the frame.
fn unmask_into(out: &mut Vec<u8>, payload: &[u8], mask: [u8; 4], pos: usize) {
    let start = out.len();
    out.extend_from_slice(payload);
    let key: [u8; 4] = std::array::from_fn(|i| mask[(pos + i) & 3]);
    let wide = u64::from_ne_bytes([key[0], key[1], key[2], key[3], key[0], key[1], key[2], key[3]]);
    let mut chunks = out[start..].chunks_exact_mut(8);
    for chunk in &mut chunks {
        let mut word = [0; 8];
        word.copy_from_slice(chunk);
        chunk.copy_from_slice(&(u64::from_ne_bytes(word) ^ wide).to_ne_bytes());
    }
    for (i, b) in chunks.into_remainder().iter_mut().enumerate() {
        *b ^= key[i & 3];
    }
}

/// The frames to broadcast from one read: server frames back to back.
#[derive(Default)]
struct Frames {
    bytes: Vec<u8>,
    ends: Vec<usize>,
}

impl Frames {
    fn push(&mut self, opcode: u8, payload: &[u8]) {
        push_header(&mut self.bytes, 0x80 | opcode, payload.len());
        self.bytes.extend_from_slice(payload);
        self.ends.push(self.bytes.len());
    }

    fn clear(&mut self) {
        self.bytes.clear();
        self.ends.clear();
    }
}

/// A client broke the protocol (or a limit): the connection is dropped.
struct Broken;

/// What feeding a read to the parser ended with.
enum Fed {
    /// Everything read is consumed; more may come.
    Open,
    /// A close frame came (its payload is in `Parser::control`); anything
    /// after it is ignored.
    Close,
}

/// Where a connection is in the byte stream of frames, and the message it
/// is assembling.
#[derive(Default)]
struct Parser {
    head: [u8; 14], // header bytes so far (a header can straddle two reads)
    head_len: usize,
    in_payload: bool,
    left: u64, // payload bytes of the current frame still to come
    mask: [u8; 4],
    mask_pos: usize,
    fin: bool,
    opcode: u8,         // of the current frame
    message_opcode: u8, // text or binary while a message is assembled, else 0
    message: Vec<u8>,   // its unmasked payload so far
    control: Vec<u8>,   // the current control frame's unmasked payload
}

impl Parser {
    /// Parses `input`: pongs go into `own` (the connection's output),
    /// complete messages into `frames`.
    fn feed(&mut self, mut input: &[u8], own: &mut Vec<u8>, frames: &mut Frames) -> Result<Fed, Broken> {
        loop {
            if !self.in_payload {
                loop {
                    let need = if self.head_len < 2 { 2 } else { header_len(self.head[1]) };
                    if self.head_len >= need {
                        break;
                    }
                    if input.is_empty() {
                        return Ok(Fed::Open);
                    }
                    let take = (need - self.head_len).min(input.len());
                    self.head[self.head_len..self.head_len + take].copy_from_slice(&input[..take]);
                    self.head_len += take;
                    input = &input[take..];
                }
                self.start_frame()?;
            }
            let take = self.left.min(input.len() as u64) as usize;
            let into = if self.opcode & 0x8 != 0 { &mut self.control } else { &mut self.message };
            unmask_into(into, &input[..take], self.mask, self.mask_pos);
            self.mask_pos = (self.mask_pos + take) & 3;
            self.left -= take as u64;
            input = &input[take..];
            if self.left > 0 {
                return Ok(Fed::Open); // the rest of this payload comes with a later read
            }
            self.in_payload = false;
            match self.opcode {
                0x8 => return Ok(Fed::Close),
                0x9 => {
                    push_header(own, 0x8A, self.control.len());
                    own.extend_from_slice(&self.control);
                }
                0xA => {} // pong: nothing to do
                _ if self.fin => {
                    frames.push(self.message_opcode, &self.message);
                    self.message_opcode = 0;
                    self.message.clear();
                    if self.message.capacity() > KEEP_CAPACITY {
                        self.message = Vec::new();
                    }
                }
                _ => {} // a fragment: the message goes on
            }
        }
    }

    /// The header in `head` is complete: check it and start its payload.
    fn start_frame(&mut self) -> Result<(), Broken> {
        let (b0, b1) = (self.head[0], self.head[1]);
        let ext = header_len(b1 & 0x7f) - 2; // extended length bytes: 0, 2 or 8
        let len = match ext {
            2 => u64::from(u16::from_be_bytes([self.head[2], self.head[3]])),
            8 => {
                let mut bytes = [0; 8];
                bytes.copy_from_slice(&self.head[2..10]);
                u64::from_be_bytes(bytes)
            }
            _ => u64::from(b1 & 0x7f),
        };
        self.mask = [0; 4];
        if b1 & 0x80 != 0 {
            self.mask.copy_from_slice(&self.head[2 + ext..6 + ext]);
        }
        self.fin = b0 & 0x80 != 0;
        self.opcode = b0 & 0x0f;
        match self.opcode {
            0x8..=0xA if self.fin && len <= 125 => self.control.clear(),
            0x1 | 0x2 if self.message_opcode == 0 => self.message_opcode = self.opcode,
            0x0 if self.message_opcode != 0 => {}
            _ => return Err(Broken), // reserved opcode, bad control frame, or fragments out of place
        }
        if self.opcode & 0x8 == 0 {
            if len > (MAX_MESSAGE - self.message.len()) as u64 {
                return Err(Broken);
            }
            self.message.reserve((len as usize).min(READ_BUFFER));
        }
        self.left = len;
        self.head_len = 0;
        self.mask_pos = 0;
        self.in_payload = true;
        Ok(())
    }
}

/// What the upgrade request came to.
enum Handshake {
    /// Not all of it is here yet.
    Partial,
    /// Answered with an error (in the output), or not HTTP: close.
    Refused,
    /// Answered with 101: `len` bytes were the request, and this is its room.
    Done { len: usize, room: String },
}

/// Answers the upgrade request in `input` into `out`.
fn handshake(input: &[u8], out: &mut Vec<u8>) -> Handshake {
    let mut headers = [httparse::EMPTY_HEADER; 32];
    let mut req = httparse::Request::new(&mut headers);
    let len = match req.parse(input) {
        Ok(httparse::Status::Complete(len)) => len,
        Ok(httparse::Status::Partial) if input.len() < MAX_REQUEST => return Handshake::Partial,
        _ => return Handshake::Refused, // malformed or too long: drop
    };
    let key = req.headers.iter().find(|h| h.name.eq_ignore_ascii_case("sec-websocket-key")).map(|h| h.value);
    let Some(key) = key else {
        out.extend_from_slice(b"HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\nConnection: close\r\n\r\n");
        return Handshake::Refused;
    };
    out.extend_from_slice(b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n");
    out.extend_from_slice(b"Sec-WebSocket-Accept: ");
    out.extend_from_slice(tungstenite::handshake::derive_accept_key(key).as_bytes());
    out.extend_from_slice(b"\r\n\r\n");
    let room = peers::room_of(req.path.unwrap_or("/")).to_string();
    Handshake::Done { len, room }
}

struct Conn {
    sock: TcpStream,
    upgraded: bool,
    request: Vec<u8>, // the HTTP request so far, only when it came in pieces
    parser: Parser,
    out: Vec<u8>, // output; `out[sent..]` is not written yet
    sent: usize,
    room: Option<(usize, usize)>, // (room key, index in its members)
    unread: bool,                 // input may be waiting that we have not read yet
    eof: bool,                    // the peer closed or failed: read on until 0
    dirty: bool,                  // on the list written at the end of this iteration
    resumed: bool,                // on the list read in the next iteration
    closing: bool,                // drop once `out` is written
}

impl Conn {
    fn pending(&self) -> usize {
        self.out.len() - self.sent
    }
}

struct Room {
    name: Box<str>,
    members: Vec<usize>,
}

struct Server {
    poll: Poll,
    listener: TcpListener,
    conns: Slab<Conn>,
    rooms: Slab<Room>,
    names: HashMap<Box<str>, usize>,
    rbuf: Vec<u8>,
    frames: Frames,
    dirty: Vec<usize>,  // connections with output to write at the end of this iteration
    resume: Vec<usize>, // connections to read in the next iteration without an edge
    skipped: u64,       // deliveries skipped because the member was over MAX_OUTPUT
}

impl Server {
    fn accept(&mut self) {
        loop {
            let (mut sock, _) = match self.listener.accept() {
                Ok(accepted) => accepted,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                // WouldBlock: all taken. Anything else (EMFILE...): give up until the next edge.
                Err(_) => return,
            };
            let _ = sock.set_nodelay(true);
            let entry = self.conns.vacant_entry();
            let interest = Interest::READABLE | Interest::WRITABLE;
            if self.poll.registry().register(&mut sock, Token(entry.key()), interest).is_ok() {
                entry.insert(Conn {
                    sock,
                    upgraded: false,
                    request: Vec::new(),
                    parser: Parser::default(),
                    out: Vec::new(),
                    sent: 0,
                    room: None,
                    unread: false,
                    eof: false,
                    dirty: false,
                    resumed: false,
                    closing: false,
                });
            }
        }
    }

    fn ready(&mut self, key: usize, event: &mio::event::Event) {
        let c = &mut self.conns[key];
        if event.is_read_closed() || event.is_error() {
            c.eof = true;
        }
        if event.is_readable() || c.eof {
            c.unread = true;
        }
        if event.is_writable() && c.pending() > 0 {
            self.mark_dirty(key);
        }
        self.read(key);
    }

    /// Puts `key` on the list read in the next iteration, once.
    fn mark_resumed(&mut self, key: usize) {
        let c = &mut self.conns[key];
        if !c.resumed {
            c.resumed = true;
            self.resume.push(key);
        }
    }

    /// Takes the list of connections to read again: each once (an entry
    /// left by a connection that is gone, whose key was taken again, can
    /// name a connection twice).
    fn take_resumed(&mut self) -> Vec<usize> {
        let mut resume = std::mem::take(&mut self.resume);
        resume.retain(|&key| match self.conns.get_mut(key) {
            Some(c) if c.resumed => {
                c.resumed = false;
                true
            }
            _ => false,
        });
        resume
    }

    fn mark_dirty(&mut self, key: usize) {
        let c = &mut self.conns[key];
        if !c.dirty {
            c.dirty = true;
            self.dirty.push(key);
        }
    }

    /// One read on connection `key`, if it may have input and may be read.
    fn read(&mut self, key: usize) {
        let c = &mut self.conns[key];
        // A connection over its output limit is read again once flushed below it.
        if !c.unread || c.closing || c.pending() > MAX_OUTPUT {
            return;
        }
        let n = match c.sock.read(&mut self.rbuf) {
            Ok(0) => return self.remove(key),
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                c.unread = false;
                return;
            }
            Err(e) if e.kind() == io::ErrorKind::Interrupted => return self.mark_resumed(key),
            Err(_) => return self.remove(key),
        };
        // A short read drained the socket (new data is a new edge); a full
        // one may have left more, and a closed peer is read until EOF.
        c.unread = n == self.rbuf.len() || c.eof;
        if c.unread {
            self.mark_resumed(key);
        }
        self.process(key, n);
    }

    /// Handles the `n` bytes just read into `rbuf` from connection `key`.
    fn process(&mut self, key: usize, n: usize) {
        self.frames.clear();
        let c = &mut self.conns[key];
        let mut join = None;
        let fed = if c.upgraded {
            c.parser.feed(&self.rbuf[..n], &mut c.out, &mut self.frames)
        } else {
            // The request nearly always comes in one read: parse it in place, and gather pieces only if not.
            if !c.request.is_empty() {
                c.request.extend_from_slice(&self.rbuf[..n]);
            }
            let input = if c.request.is_empty() { &self.rbuf[..n] } else { &c.request[..] };
            match handshake(input, &mut c.out) {
                Handshake::Partial => {
                    if c.request.is_empty() {
                        c.request.extend_from_slice(&self.rbuf[..n]);
                    }
                    return;
                }
                Handshake::Refused => {
                    c.closing = true;
                    return self.mark_dirty(key);
                }
                Handshake::Done { len, room } => {
                    c.upgraded = true;
                    join = Some(room);
                    let fed = c.parser.feed(&input[len..], &mut c.out, &mut self.frames);
                    c.request = Vec::new();
                    fed
                }
            }
        };
        if let Some(room) = join {
            self.join(key, &room);
        }
        let Ok(fed) = fed else {
            return self.remove(key);
        };
        self.mark_dirty(key); // a 101 or pongs, perhaps; writing nothing costs nothing
        self.deliver(key);
        if let Fed::Close = fed {
            self.leave(key);
            let c = &mut self.conns[key];
            push_header(&mut c.out, 0x88, c.parser.control.len());
            c.out.extend_from_slice(&c.parser.control);
            c.closing = true;
        }
    }

    /// Appends each frame in `frames` to every member of the room of `key`.
    fn deliver(&mut self, key: usize) {
        let Some((room, _)) = self.conns[key].room else {
            return;
        };
        let mut start = 0;
        for &end in &self.frames.ends {
            let frame = &self.frames.bytes[start..end];
            start = end;
            for &member in &self.rooms[room].members {
                let m = &mut self.conns[member];
                // The publisher itself is never skipped: it is not read while over the limit.
                if member != key && m.pending() > MAX_OUTPUT {
                    self.skipped += 1;
                    continue;
                }
                m.out.extend_from_slice(frame);
                if !m.dirty {
                    m.dirty = true;
                    self.dirty.push(member);
                }
            }
        }
    }

    fn join(&mut self, key: usize, name: &str) {
        let room = match self.names.get(name) {
            Some(&room) => room,
            None => {
                let room = self.rooms.insert(Room { name: name.into(), members: Vec::new() });
                self.names.insert(name.into(), room);
                room
            }
        };
        let members = &mut self.rooms[room].members;
        self.conns[key].room = Some((room, members.len()));
        members.push(key);
    }

    fn leave(&mut self, key: usize) {
        let Some((room, index)) = self.conns[key].room.take() else {
            return;
        };
        let members = &mut self.rooms[room].members;
        members.swap_remove(index);
        if let Some(&moved) = members.get(index) {
            self.conns[moved].room = Some((room, index));
        }
        if members.is_empty() {
            let freed = self.rooms.remove(room);
            self.names.remove(&freed.name);
        }
    }

    /// Leaves its room and drops the socket (which also takes it out of epoll).
    fn remove(&mut self, key: usize) {
        self.leave(key);
        self.conns.remove(key);
    }

    /// One write of everything pending, for each connection that got output.
    fn flush(&mut self) {
        let dirty = std::mem::take(&mut self.dirty);
        for &key in &dirty {
            let Some(c) = self.conns.get_mut(key) else {
                continue; // gone since (a stale entry may also name a new connection: harmless)
            };
            c.dirty = false;
            let was_over = c.pending() > MAX_OUTPUT;
            if c.pending() > 0 {
                match c.sock.write(&c.out[c.sent..]) {
                    Ok(n) => c.sent += n,
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock || e.kind() == io::ErrorKind::Interrupted => {}
                    Err(_) => {
                        self.remove(key); // gone mid-broadcast: the others carry on
                        continue;
                    }
                }
                if c.sent == c.out.len() {
                    c.out.clear();
                    c.sent = 0;
                    if c.out.capacity() > KEEP_CAPACITY {
                        c.out = Vec::new(); // give the memory back
                    }
                } else if c.sent >= KEEP_CAPACITY && c.sent * 2 >= c.out.len() {
                    c.out.drain(..c.sent); // the written half goes, so memory follows what is pending
                    c.sent = 0;
                }
                // Short: the WRITABLE edge marks it dirty again.
            }
            if c.closing && c.pending() == 0 {
                self.remove(key);
            } else if was_over && c.pending() <= MAX_OUTPUT && c.unread {
                self.mark_resumed(key); // was not read while over the limit
            }
        }
        // Keep the list's allocation for the next iteration.
        let mut dirty = dirty;
        dirty.clear();
        if self.dirty.is_empty() {
            self.dirty = dirty;
        }
    }
}

fn main() {
    let args = peers::parse_args(NAME, peers::Flags::default());
    let listener = peers::bind_and_announce(NAME, args.listen);
    let poll = Poll::new().unwrap_or_else(|e| fatal("epoll", e));
    let mut listener = TcpListener::from_std(listener);
    if let Err(e) = poll.registry().register(&mut listener, LISTENER, Interest::READABLE) {
        fatal("register the listener", e);
    }
    let mut signals = Signals::new([SIGINT, SIGTERM]).unwrap_or_else(|e| fatal("signal handlers", e));
    if let Err(e) = poll.registry().register(&mut signals, SIGNALS, Interest::READABLE) {
        fatal("register the signals", e);
    }
    let mut server = Server {
        poll,
        listener,
        conns: Slab::with_capacity(1024),
        rooms: Slab::new(),
        names: HashMap::new(),
        rbuf: vec![0; READ_BUFFER],
        frames: Frames::default(),
        dirty: Vec::new(),
        resume: Vec::new(),
        skipped: 0,
    };
    let mut events = Events::with_capacity(1024);
    loop {
        // Connections left to read from the last iteration: look, do not wait.
        let timeout = if server.resume.is_empty() { None } else { Some(Duration::ZERO) };
        match server.poll.poll(&mut events, timeout) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => fatal("epoll_wait", e),
        }
        let resume = server.take_resumed();
        for event in &events {
            match event.token() {
                LISTENER => server.accept(),
                SIGNALS => {
                    // SIGINT or SIGTERM: exit 0.
                    let (open, skipped) = (server.rooms.len(), server.skipped);
                    eprintln!("{NAME}: at exit: {open} rooms open, {skipped} deliveries skipped (members over {MAX_OUTPUT} bytes pending)");
                    return;
                }
                Token(key) => {
                    if server.conns.contains(key) {
                        server.ready(key, event);
                    }
                }
            }
        }
        for key in resume {
            // Gone since, or a key freed and taken again: reading a new connection is harmless.
            if server.conns.contains(key) {
                server.read(key);
            }
        }
        server.flush();
    }
}

fn fatal(what: &str, e: io::Error) -> ! {
    eprintln!("{NAME}: {what}: {e}");
    std::process::exit(1)
}
