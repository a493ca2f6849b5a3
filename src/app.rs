//! The application interface: what runs on wsloop sees connections and
//! messages, never sockets, tokens or frames.
//!
//! An [`App`] is called on the loop's thread for each open, message and
//! close, with a [`Ctx`] for the connection concerned: send to it, close it,
//! subscribe it to rooms and unsubscribe it, publish to a room. Everything
//! the application sends in one call is corked with the rest of that
//! wakeup's output and written with one system call; a message sent back as
//! it was received is not even copied (see [`Ctx::send`]). A message
//! published to a room is framed once and shared by all its members (see
//! [`crate::fanout`]).

use std::ops::Range;

use bytes::Bytes;

use crate::{
    fanout::{Origin, Publish, Target},
    metrics::Metrics,
    outbox::Cork,
    protocol::Kind,
    rooms::{Left, RoomError, RoomId, Rooms},
};

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

    /// The slab key of the connection (the low half).
    pub(crate) fn key(self) -> usize {
        (self.0 & 0xffff_ffff) as usize
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
    /// when it ended without one). Nothing can be sent to it any more; it is
    /// still in its rooms until this returns (then it leaves them all), so
    /// the application can publish a farewell.
    fn on_close(&mut self, cx: &mut Ctx<'_>, code: u16) {
        let _ = (cx, code);
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
    /// The connection's slab key (what rooms list as members).
    pub(crate) key: usize,
    pub(crate) cork: &'a mut Cork,
    /// Where the payloads handed to the application may lie, so that one
    /// sent back is referenced instead of copied: the loop's receive buffer
    /// (as addresses), and a message put together from fragments.
    pub(crate) input: Range<usize>,
    pub(crate) assembled: Option<&'a Bytes>,
    /// The message being handled, when it lies in the receive buffer: the
    /// offset of its payload there, and how many bytes before it nothing
    /// needs any more (its frame's header). Sending it back unchanged puts
    /// the reply's header there, so that header and payload go out as one
    /// slice. Taken by the first such send.
    pub(crate) header_room: Option<(usize, usize)>,
    pub(crate) metrics: &'a mut Metrics,
    /// A close requested, or the connection is closing: nothing more is sent.
    pub(crate) close: &'a mut Option<CloseRequest>,
    pub(crate) rooms: &'a mut Rooms,
    /// Messages published during the call, fanned out right after it.
    pub(crate) published: &'a mut Vec<Publish>,
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
        let start = data.as_ptr() as usize;
        let end = start + data.len();
        if self.input.start <= start && end <= self.input.end {
            let range = start - self.input.start..end - self.input.start;
            // The room before the message's payload, to its first send that
            // starts there; none otherwise (the header goes on its own).
            let room = self.header_room.take_if(|(at, _)| *at == range.start).map_or(0, |(_, room)| room);
            self.cork.push_framed(kind, range, room);
        } else {
            self.cork.push_header(kind, data.len());
            match self.assembled.filter(|b| contains(b, start, end)) {
                Some(bytes) => self.cork.push_shared(bytes.slice_ref(data)),
                None => self.cork.push_scratch(|s| s.extend_from_slice(data)),
            }
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

impl Ctx<'_> {
    /// Makes this connection a member of `room` (creating it), so that it
    /// receives what is published there. Joining a room it is in already is
    /// not an error. Refused beyond `--max-rooms` or
    /// `--max-rooms-per-connection`, or for a name empty or over 1 KiB.
    pub fn subscribe(&mut self, room: &str) -> Result<RoomId, RoomError> {
        match self.rooms.join(self.key, room) {
            Ok(joined) => {
                if !joined.already {
                    self.metrics.rooms.memberships += 1;
                    self.metrics.rooms.rooms += u64::from(joined.created);
                }
                Ok(joined.room)
            }
            Err(e) => {
                self.metrics.rooms.joins_refused += 1;
                Err(e)
            }
        }
    }

    /// Takes this connection out of `room`; false if it was not in it.
    pub fn unsubscribe(&mut self, room: &str) -> bool {
        match self.rooms.leave(self.key, room) {
            Left::NotMember => false,
            left => {
                self.metrics.rooms.memberships -= 1;
                self.metrics.rooms.rooms -= u64::from(left == Left::Freed);
                true
            }
        }
    }

    /// The `nth` room this connection is in (in the order it joined them,
    /// while it leaves none).
    pub fn room(&self, nth: usize) -> Option<RoomId> {
        self.rooms.joined(self.key, nth)
    }

    /// The name of `room`, while it exists.
    pub fn room_name(&self, room: RoomId) -> Option<&str> {
        self.rooms.name(room)
    }

    /// Publishes a message to every member of the room called `room` (this
    /// connection too, if it is one), on every loop (and, with `--redis`,
    /// every process).
    pub fn publish(&mut self, room: &str, kind: Kind, data: &[u8]) {
        let to = match self.rooms.find(room) {
            Some(id) => Target::Room(id),
            None => Target::Named(room.into()),
        };
        self.publish_at(to, kind, data);
    }

    /// [`Ctx::publish`] of a text message.
    pub fn publish_text(&mut self, room: &str, text: &str) {
        self.publish(room, Kind::Text, text.as_bytes());
    }

    /// [`Ctx::publish`] to a room by id (no name lookup).
    #[inline]
    pub fn publish_to(&mut self, room: RoomId, kind: Kind, data: &[u8]) {
        self.publish_at(Target::Room(room), kind, data);
    }

    fn publish_at(&mut self, to: Target, kind: Kind, data: &[u8]) {
        self.metrics.rooms.published_websocket += 1;
        let frame = self.metrics.fanout.frame(kind, data);
        self.published.push(Publish { to, kind, frame, origin: Origin::WebSocket });
    }
}

fn contains(bytes: &Bytes, start: usize, end: usize) -> bool {
    let base = bytes.as_ptr() as usize;
    base <= start && end <= base + bytes.len()
}
