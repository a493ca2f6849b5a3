//! The application interface: what runs on wsloop sees connections and
//! messages, never sockets, tokens or frames.
//!
//! An [`App`] is called on the loop's thread for each open, message and
//! close, with a [`Ctx`] for the connection concerned: send to it, close it,
//! (later: subscribe it to rooms and publish to them). Everything the
//! application sends in one call is corked with the rest of that wakeup's
//! output and written with one system call; a message sent back as it was
//! received is not even copied (see [`Ctx::send`]).

use std::ops::Range;

use bytes::Bytes;

use crate::{metrics::Metrics, outbox::Cork, protocol::Kind};

/// A connection, as the application knows it: unique for the life of the
/// loop (a slot reused by a later connection gets a new id).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ConnectionId(pub u64);

impl ConnectionId {
    /// The id of the `nth` connection a loop accepted, stored under slab `key`.
    pub(crate) fn new(key: usize, nth: u64) -> Self {
        // The count makes it unique; the key (in the low bits) helps debugging.
        ConnectionId(nth << 32 | (key as u64 & 0xffff_ffff))
    }

    /// The id's value, e.g. for a log line or a map key.
    pub fn get(self) -> u64 {
        self.0
    }
}

/// A complete data message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Message<'a> {
    kind: Kind,
    data: &'a [u8],
}

impl<'a> Message<'a> {
    /// Made only by the connection, after the reader checked the payload
    /// (valid UTF-8 for text).
    pub(crate) fn new(kind: Kind, data: &'a [u8]) -> Self {
        Message { kind, data }
    }

    pub fn kind(&self) -> Kind {
        self.kind
    }

    /// The payload.
    pub fn data(&self) -> &'a [u8] {
        self.data
    }

    /// The payload as text, for a text message.
    pub fn text(&self) -> Option<&'a str> {
        match self.kind {
            // Checked by the reader already; checking again costs little
            // next to what an application does with text, and keeps this
            // module free of `unsafe`.
            Kind::Text => std::str::from_utf8(self.data).ok(),
            Kind::Binary => None,
        }
    }
}

/// The upgrade request of a connection that just opened.
#[derive(Debug, Clone, Copy)]
pub struct Request<'a> {
    /// The path, without the query string, e.g. `/chat/lobby`.
    pub path: &'a str,
    /// What follows `?`, if anything.
    pub query: Option<&'a str>,
    /// The request's header fields.
    pub headers: &'a [httparse::Header<'a>],
}

impl<'a> Request<'a> {
    /// The first header field called `name` (any case).
    pub fn header(&self, name: &str) -> Option<&'a [u8]> {
        self.headers.iter().find(|h| h.name.eq_ignore_ascii_case(name)).map(|h| h.value)
    }
}

/// What an application does. Every method runs on the loop's thread and
/// must not block: the loop serves every other connection meanwhile.
pub trait App {
    /// A WebSocket connection opened (its 101 is queued).
    fn on_open(&mut self, cx: &mut Ctx<'_>, request: &Request<'_>) {
        let _ = (cx, request);
    }

    /// A complete text or binary message arrived.
    fn on_message(&mut self, cx: &mut Ctx<'_>, message: Message<'_>);

    /// The connection closed (`code`: the peer's close code, ours, or 1006
    /// when it ended without one). Nothing can be sent to it any more.
    fn on_close(&mut self, id: ConnectionId, code: u16) {
        let _ = (id, code);
    }
}

/// A close the application asked for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CloseRequest {
    pub code: u16,
    pub reason: String,
}

/// What the application may do with one connection during a call.
pub struct Ctx<'a> {
    pub(crate) id: ConnectionId,
    pub(crate) cork: &'a mut Cork,
    /// Where the payloads handed to the application may lie, so that one
    /// sent back is referenced instead of copied: the loop's receive buffer
    /// (as addresses), and a message put together from fragments.
    pub(crate) input: Range<usize>,
    pub(crate) assembled: Option<&'a Bytes>,
    pub(crate) metrics: &'a mut Metrics,
    pub(crate) close: &'a mut Option<CloseRequest>,
}

impl Ctx<'_> {
    /// This connection.
    pub fn id(&self) -> ConnectionId {
        self.id
    }

    /// Sends a message to this connection (after everything sent before).
    ///
    /// When `data` is a message this connection just received (or part of
    /// it), nothing is copied: the reply points at the bytes where they
    /// arrived, and the kernel copies them straight from there.
    pub fn send(&mut self, kind: Kind, data: &[u8]) {
        if self.close.is_some() {
            return;
        }
        self.cork.push_header(kind, data.len());
        let start = data.as_ptr() as usize;
        let end = start + data.len();
        if self.input.start <= start && end <= self.input.end {
            self.cork.push_input(start - self.input.start..end - self.input.start);
        } else if let Some(bytes) = self.assembled.filter(|b| contains(b, start, end)) {
            self.cork.push_shared(bytes.slice_ref(data));
        } else {
            self.cork.push_scratch(|s| s.extend_from_slice(data));
        }
        self.metrics.count_sent(kind, data.len());
    }

    /// Sends a text message.
    pub fn send_text(&mut self, text: &str) {
        self.send(Kind::Text, text.as_bytes());
    }

    /// Sends a binary message.
    pub fn send_binary(&mut self, data: &[u8]) {
        self.send(Kind::Binary, data);
    }

    /// Closes the connection with `code` (e.g. 1000, or 4000-4999 for the
    /// application's own codes) once what was sent before is out.
    pub fn close(&mut self, code: u16, reason: &str) {
        if self.close.is_none() {
            *self.close = Some(CloseRequest { code, reason: reason.to_string() });
        }
    }
}

fn contains(bytes: &Bytes, start: usize, end: usize) -> bool {
    let base = bytes.as_ptr() as usize;
    base <= start && end <= base + bytes.len()
}
