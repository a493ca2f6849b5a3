//! peer-minimal: the minimal frame-echo ceiling.
//!
//! BENCHMARK BASELINE, NOT A PRODUCT. It shows what a server on this machine
//! can do at best: the least user-space work and the fewest syscalls that an
//! echo can get away with. It is the only place in the repository where
//! WebSocket framing is hand-rolled, on purpose, and it skips everything a
//! real server must do: no UTF-8 check, no message limits, no reassembly of
//! fragments (each frame is echoed as it comes, FIN bit and all), no timeouts,
//! no close handshake beyond echoing the close frame and dropping the socket.
//!
//! Design:
//! - One mio loop (edge-triggered epoll), connections in a slab. Each socket is
//!   registered once for READABLE | WRITABLE and never again: no epoll_ctl in
//!   steady state.
//! - Per readable event: one `read` into a 512 KiB buffer owned by the loop
//!   (like uWebSockets' per-loop receive buffer, so an idle connection holds no
//!   buffer). A read shorter than the buffer means the socket is drained (epoll
//!   reports new data as a new edge), so there is no extra read that only
//!   returns EAGAIN; a full read is followed by another.
//! - Every complete frame header in that read is turned into an unmasked
//!   server header (ping becomes pong, pongs are dropped, everything else keeps
//!   its first byte), and payload bytes are unmasked straight into one output
//!   buffer as they arrive, so a frame may straddle reads and is never held
//!   whole. Then one `write` of everything that read produced (corked output).
//! - A partial write keeps the rest in the connection's `pending` buffer,
//!   which the WRITABLE edge flushes; output produced meanwhile queues behind
//!   it. Reading stops only while over 64 MiB is pending (the only limit):
//!   a client may write a whole message of up to 64 MiB, the other peers'
//!   message limit, before it reads, without a deadlock.
//! - A close frame is echoed, then the socket is dropped once written.

use std::io::{self, Read, Write};

use mio::net::{TcpListener, TcpStream};
use mio::{Events, Interest, Poll, Token};
use signal_hook::consts::{SIGINT, SIGTERM};
use signal_hook_mio::v1_0::Signals;
use slab::Slab;

const NAME: &str = "peer-minimal";
const LISTENER: Token = Token(usize::MAX - 1);
const SIGNALS: Token = Token(usize::MAX - 2);
const READ_BUFFER: usize = 512 * 1024;
const MAX_REQUEST: usize = 8192;
const MAX_PENDING: usize = 64 << 20;

/// Where a connection is in the byte stream of frames.
#[derive(Default)]
struct Framer {
    head: [u8; 14], // header bytes so far (a header can straddle two reads)
    head_len: usize,
    in_payload: bool,
    left: u64, // payload bytes of the current frame still to come
    mask: [u8; 4],
    mask_pos: usize,
    echo: bool,  // false for a pong: read and dropped
    close: bool, // a close frame: the connection ends once it is echoed
}

struct Conn {
    sock: TcpStream,
    upgraded: bool,
    request: Vec<u8>, // the HTTP request so far, only when it came in pieces
    framer: Framer,
    pending: Vec<u8>, // output the socket did not take yet
    unread: bool,     // input may be waiting that we have not read yet
    closing: bool,    // drop once `pending` is written
}

/// Header length from the second byte: 2, plus 2 or 8 length bytes, plus 4 mask bytes.
fn header_len(b1: u8) -> usize {
    2 + match b1 & 0x7f {
        126 => 2,
        127 => 8,
        _ => 0,
    } + if b1 & 0x80 != 0 { 4 } else { 0 }
}

/// Appends `payload` to `out`, unmasked; `pos` is the offset of `payload[0]` in the frame.
fn unmask_into(out: &mut Vec<u8>, payload: &[u8], mask: [u8; 4], pos: usize) {
    let start = out.len();
    out.extend_from_slice(payload);
    let key: [u8; 4] = std::array::from_fn(|i| mask[(pos + i) & 3]);
    let wide = u64::from_ne_bytes([key[0], key[1], key[2], key[3], key[0], key[1], key[2], key[3]]);
    let mut chunks = out[start..].chunks_exact_mut(8);
    for chunk in &mut chunks {
        let x = u64::from_ne_bytes((*chunk).try_into().unwrap()) ^ wide;
        chunk.copy_from_slice(&x.to_ne_bytes());
    }
    for (i, b) in chunks.into_remainder().iter_mut().enumerate() {
        *b ^= key[i & 3];
    }
}

impl Framer {
    /// Echoes the frames in `input` into `out`. Returns false once a close
    /// frame has been echoed (the rest of the input is ignored).
    fn feed(&mut self, mut input: &[u8], out: &mut Vec<u8>) -> bool {
        loop {
            if !self.in_payload {
                while self.head_len < 2 || self.head_len < header_len(self.head[1]) {
                    if input.is_empty() {
                        return true;
                    }
                    let need = if self.head_len < 2 { 2 } else { header_len(self.head[1]) };
                    let take = (need - self.head_len).min(input.len());
                    self.head[self.head_len..self.head_len + take].copy_from_slice(&input[..take]);
                    self.head_len += take;
                    input = &input[take..];
                }
                self.start_frame(out);
            }
            let take = self.left.min(input.len() as u64) as usize;
            if self.echo {
                unmask_into(out, &input[..take], self.mask, self.mask_pos);
            }
            self.mask_pos = (self.mask_pos + take) & 3;
            self.left -= take as u64;
            input = &input[take..];
            if self.left > 0 {
                return true; // the rest of this payload comes with a later read
            }
            self.in_payload = false;
            if self.close {
                return false;
            }
        }
    }

    /// The header in `head` is complete: write the server's header for it.
    fn start_frame(&mut self, out: &mut Vec<u8>) {
        let (b0, b1) = (self.head[0], self.head[1]);
        let ext = header_len(b1 & 0x7f) - 2; // extended length bytes: 0, 2 or 8
        self.left = match ext {
            2 => u16::from_be_bytes([self.head[2], self.head[3]]) as u64,
            8 => u64::from_be_bytes(self.head[2..10].try_into().unwrap()),
            _ => (b1 & 0x7f) as u64,
        };
        self.mask = if b1 & 0x80 != 0 { self.head[2 + ext..6 + ext].try_into().unwrap() } else { [0; 4] };
        let opcode = b0 & 0x0f;
        self.echo = opcode != 0xA;
        self.close = opcode == 0x8;
        if self.echo {
            out.push(if opcode == 0x9 { (b0 & 0xf0) | 0xA } else { b0 });
            out.push(b1 & 0x7f);
            out.extend_from_slice(&self.head[2..2 + ext]);
        }
        self.head_len = 0;
        self.mask_pos = 0;
        self.in_payload = true;
    }
}

/// Answers the upgrade request in `input` into `out`, then echoes any frames
/// that followed it. Returns Some(keep open) once the request is complete
/// (Some(false): malformed, refused, or closed at once), None while partial.
fn handshake(input: &[u8], framer: &mut Framer, out: &mut Vec<u8>) -> Option<bool> {
    let mut headers = [httparse::EMPTY_HEADER; 32];
    let mut req = httparse::Request::new(&mut headers);
    let len = match req.parse(input) {
        Ok(httparse::Status::Complete(len)) => len,
        Ok(httparse::Status::Partial) if input.len() < MAX_REQUEST => return None,
        _ => return Some(false), // malformed or too long: drop
    };
    let key = req.headers.iter().find(|h| h.name.eq_ignore_ascii_case("sec-websocket-key")).map(|h| h.value);
    let Some(key) = key else {
        out.extend_from_slice(b"HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\nConnection: close\r\n\r\n");
        return Some(false);
    };
    out.extend_from_slice(b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n");
    out.extend_from_slice(b"Sec-WebSocket-Accept: ");
    out.extend_from_slice(tungstenite::handshake::derive_accept_key(key).as_bytes());
    out.extend_from_slice(b"\r\n\r\n");
    Some(framer.feed(&input[len..], out))
}

struct Server {
    poll: Poll,
    listener: TcpListener,
    conns: Slab<Conn>,
    rbuf: Vec<u8>,
    wbuf: Vec<u8>,
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
                let (request, framer, pending) = (Vec::new(), Framer::default(), Vec::new());
                entry.insert(Conn { sock, upgraded: false, request, framer, pending, unread: false, closing: false });
            }
        }
    }

    /// Handles one event on connection `key`; returns false to drop it.
    fn ready(&mut self, key: usize, event: &mio::event::Event) -> bool {
        let c = &mut self.conns[key];
        // Peer closed or error: read on past short reads until EOF shows up.
        let drain = event.is_read_closed() || event.is_error();
        if event.is_readable() || drain {
            c.unread = true;
        }
        // Output is pending only after a short write, which arms a WRITABLE
        // edge; an event without it would only get EAGAIN.
        if !c.pending.is_empty() && event.is_writable() {
            match c.sock.write(&c.pending) {
                Ok(n) if n == c.pending.len() => c.pending = Vec::new(), // give the memory back
                Ok(n) => drop(c.pending.drain(..n)),
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                Err(_) => return false,
            }
        }
        if c.closing {
            return !c.pending.is_empty();
        }
        while c.unread && c.pending.len() < MAX_PENDING {
            let n = match c.sock.read(&mut self.rbuf) {
                Ok(0) => return false,
                Ok(n) => n,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    c.unread = false;
                    return true;
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(_) => return false,
            };
            // A short read drained the socket; a full one may have left more.
            c.unread = n == self.rbuf.len() || drain;
            self.wbuf.clear();
            let keep_open = if c.upgraded {
                c.framer.feed(&self.rbuf[..n], &mut self.wbuf)
            } else {
                // The request nearly always comes in one read: parse it in place, and gather pieces only if not.
                if !c.request.is_empty() {
                    c.request.extend_from_slice(&self.rbuf[..n]);
                }
                let input = if c.request.is_empty() { &self.rbuf[..n] } else { &c.request[..] };
                match handshake(input, &mut c.framer, &mut self.wbuf) {
                    Some(keep_open) => {
                        (c.upgraded, c.request) = (true, Vec::new());
                        keep_open
                    }
                    None if c.request.is_empty() => {
                        c.request.extend_from_slice(&self.rbuf[..n]);
                        continue;
                    }
                    None => continue,
                }
            };
            if !c.pending.is_empty() {
                c.pending.extend_from_slice(&self.wbuf); // in order, behind what waits for WRITABLE
            } else if !self.wbuf.is_empty() {
                match c.sock.write(&self.wbuf) {
                    Ok(n) if n == self.wbuf.len() => {}
                    Ok(n) => c.pending.extend_from_slice(&self.wbuf[n..]),
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => c.pending.extend_from_slice(&self.wbuf),
                    Err(_) => return false,
                }
            }
            if !keep_open {
                c.closing = true;
                return !c.pending.is_empty();
            }
        }
        // Drained, or stopped at the limit with `unread` still set: then the
        // next WRITABLE edge that flushes below it resumes reading.
        true
    }
}

fn main() {
    let args = peers::parse_args(NAME, peers::Flags::default());
    let listener = peers::bind_and_announce(NAME, args.listen);
    let poll = Poll::new().expect("epoll");
    let mut listener = TcpListener::from_std(listener);
    poll.registry().register(&mut listener, LISTENER, Interest::READABLE).expect("register the listener");
    let mut signals = Signals::new([SIGINT, SIGTERM]).expect("signal handlers");
    poll.registry().register(&mut signals, SIGNALS, Interest::READABLE).expect("register the signals");
    let (rbuf, wbuf) = (vec![0; READ_BUFFER], Vec::with_capacity(READ_BUFFER + 1024));
    let mut server = Server { poll, listener, conns: Slab::with_capacity(1024), rbuf, wbuf };
    let mut events = Events::with_capacity(1024);
    loop {
        match server.poll.poll(&mut events, None) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => panic!("epoll_wait: {e}"),
        }
        for event in &events {
            match event.token() {
                LISTENER => server.accept(),
                SIGNALS => return, // SIGINT or SIGTERM: exit 0
                Token(key) => {
                    // Dropping the socket closes it, which also takes it out of epoll.
                    if server.conns.contains(key) && !server.ready(key, event) {
                        server.conns.remove(key);
                    }
                }
            }
        }
    }
}
