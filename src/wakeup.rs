//! One wakeup of an open connection, top to bottom: read, parse, hand each
//! message to the application, queue the replies, flush, and return what
//! happened as a value ([`Served`]).
//!
//! This is the per-message hot path. For one 512-byte echo it is: one
//! `recv` into the loop's receive buffer, the frame header parsed and the
//! payload unmasked where it landed, the application called with a slice of
//! it, the reply's header written where the request's was (just before the
//! payload), and one `send` of header and payload together. Nothing is
//! allocated and nothing copied in user space. The next `recv` is not even tried: a short read means the
//! socket is drained (see [`crate::socket`]).
//!
//! Backpressure: once the output the peer has not taken passes
//! `--max-backpressure`, reading stops, and the input already received but
//! not parsed is kept (copied, this once) until the peer drains its output.

use std::io;

use bytes::Bytes;

use crate::{
    app::{App, CloseRequest, ConnectionId, Ctx, Message},
    clock::{self, Clock, Tick},
    fanout::Publish,
    metrics::Metrics,
    outbox::{self, Cork, Outbox},
    protocol::{
        writer::{self, put_close, put_frame},
        Event, Limits, Payload, Reader, Violation,
    },
    rooms::Rooms,
    socket::{Received, Transport},
};

/// Bytes one connection may receive per wakeup before it yields to the
/// others (it is served again right after, without waiting for epoll), so
/// that a flooding client cannot starve the rest of the loop.
pub const READ_BUDGET: usize = 1 << 20;

/// An open connection's protocol state.
#[derive(Debug, Default)]
pub struct Open {
    reader: Reader,
    /// Input received but not parsed when reading stopped under
    /// backpressure: parsed first at the next wakeup.
    stash: Option<Box<[u8]>>,
    /// Replies served whose output the kernel has not taken yet: their
    /// latency is recorded when it has, measured from `unrecorded_since`.
    unrecorded: u32,
    unrecorded_since: Tick,
}

impl Open {
    /// An open connection whose first input, received with the request
    /// head, is `first` (usually empty: clients wait for the 101).
    pub fn new(first: &[u8]) -> Self {
        Open { stash: (!first.is_empty()).then(|| first.into()), ..Open::default() }
    }

    /// The reader, for the closing handshake.
    pub fn take_reader(&mut self) -> Reader {
        std::mem::take(&mut self.reader)
    }

    /// Bytes of buffer the connection holds beyond its fixed size.
    pub fn buffered(&self) -> usize {
        self.reader.buffered_capacity() + self.stash.as_ref().map_or(0, |s| s.len())
    }
}

/// What the loop lends the connection being served: the loop-wide state
/// the hot path works with. The loop owns one and lends it by reference, so
/// handing it to a connection costs one pointer, not a struct per event.
pub struct Lent {
    /// The loop's receive buffer.
    pub rx: Box<[u8]>,
    /// The output of the connection being served, until its flush.
    pub cork: Cork,
    pub limits: Limits,
    /// `--max-backpressure`.
    pub max_backpressure: usize,
    /// Whether service latency is measured (not `--no-latency`).
    pub measure_latency: bool,
    pub metrics: Metrics,
    /// The loop clock, read once per poll.
    pub clock: Clock,
    /// The loop's rooms, and the messages published during this call
    /// (fanned out by the loop right after it).
    pub rooms: Rooms,
    pub published: Vec<Publish>,
}

impl Lent {
    /// The state for a loop under `config`'s limits.
    pub fn new(config: &crate::Config) -> Lent {
        // First: quanta calibrates once per process, in the first
        // `quanta::Clock::new`, and the callgrind scripts find it in here.
        let clock = Clock::new();
        Lent {
            rx: crate::sys::receive_buffer(),
            cork: Cork::default(),
            limits: limits(config),
            max_backpressure: config.max_backpressure,
            measure_latency: !config.no_latency,
            metrics: Metrics::default(),
            clock,
            rooms: Rooms::new(config.max_rooms, config.max_rooms_per_connection),
            published: Vec::new(),
        }
    }

    /// Takes `config`'s limits, with no rooms (the buffers, metrics and
    /// clock are kept: a harness reuses them for its next connection).
    pub fn configure(&mut self, config: &crate::Config) {
        self.limits = limits(config);
        self.max_backpressure = config.max_backpressure;
        self.measure_latency = !config.no_latency;
        self.rooms = Rooms::new(config.max_rooms, config.max_rooms_per_connection);
    }

    /// Everything but the receive buffer, for an application call.
    pub(crate) fn hand(&mut self) -> Hand<'_> {
        self.split().1
    }

    /// The receive buffer, and the rest as a [`Hand`].
    fn split(&mut self) -> (&mut [u8], Hand<'_>) {
        let hand = Hand {
            cork: &mut self.cork,
            metrics: &mut self.metrics,
            limits: &self.limits,
            fine: self.measure_latency.then_some(self.clock.fine()),
            rooms: &mut self.rooms,
            published: &mut self.published,
        };
        (&mut self.rx, hand)
    }
}

/// The frame and message limits `config` sets.
fn limits(config: &crate::Config) -> Limits {
    Limits { max_frame: config.effective_max_frame_size() as u64, max_message: config.max_message_size as u64 }
}

/// What one wakeup did.
#[derive(Debug, Default)]
pub struct Served {
    /// Data messages handed to the application.
    pub messages: u64,
    /// When the first of them was complete in memory (if latency is
    /// measured), a reading of the fine clock.
    first_complete: Option<u64>,
    /// A pong arrived (the peer is alive).
    pub pong: bool,
    /// Pending output is over the limit: reading is paused until it drains.
    pub backpressured: bool,
    /// The read budget ran out with input possibly left: serve again
    /// before the next poll (no new edge will announce that input).
    pub again: bool,
    /// Why the connection is no longer open, if it is not.
    pub end: Option<End>,
}

/// Why a connection stopped being open.
#[derive(Debug)]
pub enum End {
    /// The peer sent a close frame with this code (1005: none); the reply is queued.
    PeerClosed(u16),
    /// The peer broke the protocol; our close frame is queued.
    Violation(Violation),
    /// The application closed it; our close frame is queued.
    AppClosed(CloseRequest),
    /// End-of-file without a close frame, or a reset.
    PeerGone,
    /// A local socket error.
    Failed(io::Error),
}

impl End {
    fn from_io(error: io::Error) -> End {
        match error.kind() {
            io::ErrorKind::ConnectionReset | io::ErrorKind::ConnectionAborted | io::ErrorKind::BrokenPipe => {
                End::PeerGone
            }
            _ => End::Failed(error),
        }
    }
}

/// Serves one wakeup of an open connection (see the module docs).
pub fn serve<T: Transport, A: App>(
    open: &mut Open,
    socket: &mut T,
    outbox: &mut Outbox,
    id: ConnectionId,
    app: &mut A,
    lent: &mut Lent,
) -> Served {
    let mut served = Served::default();
    // Output left from an earlier wakeup goes first: if this is the
    // WRITABLE that drains it, reading can resume. (A 101 just corked goes
    // out here too.)
    if !outbox.is_empty() || !lent.cork.is_empty() {
        if let Err(e) = outbox::flush(socket, outbox, &mut lent.cork, &[]) {
            served.end = Some(End::from_io(e));
            return served;
        }
    }
    let mut budget = READ_BUDGET;
    while served.end.is_none() {
        if outbox.len() > lent.max_backpressure {
            served.backpressured = true;
            break;
        }
        let n = match open.stash.take() {
            Some(stash) => {
                lent.rx[..stash.len()].copy_from_slice(&stash);
                stash.len()
            }
            None if budget == 0 => {
                served.again = socket.may_read();
                break;
            }
            None => match socket.recv(&mut lent.rx) {
                Ok(Received::Data(n)) => {
                    budget = budget.saturating_sub(n);
                    n
                }
                Ok(Received::Nothing) => break,
                Ok(Received::Eof) => {
                    served.end = Some(End::PeerGone);
                    break;
                }
                Err(e) => {
                    served.end = Some(End::from_io(e));
                    break;
                }
            },
        };
        let room = lent.max_backpressure - outbox.len();
        let (rx, mut hand) = lent.split();
        let used = read_events(&mut open.reader, &mut rx[..n], id, app, &mut hand, room, &mut served);
        if used < n && served.end.is_none() {
            open.stash = Some(lent.rx[used..n].into());
        }
        if let Err(e) = outbox::flush(socket, outbox, &mut lent.cork, &lent.rx[..n]) {
            served.end.get_or_insert(End::from_io(e));
        }
        if !socket.may_read() && open.stash.is_none() {
            // A short read: nothing more until the next edge.
            break;
        }
    }
    if lent.measure_latency {
        record_latency(open, &served, outbox.len(), lent);
    }
    served
}

/// Times this wakeup's replies once the kernel has taken them all: two
/// clock reads per wakeup, none per message. Every reply is timed from
/// the moment the wakeup's first message was complete. Replies left
/// waiting for the kernel are recorded when it takes them, timed from
/// their wakeup (in millisecond ticks: they waited at least that long).
fn record_latency(open: &mut Open, served: &Served, pending: usize, lent: &mut Lent) {
    if pending > 0 {
        if served.messages > 0 {
            if open.unrecorded == 0 {
                open.unrecorded_since = lent.clock.now();
            }
            open.unrecorded = open.unrecorded.saturating_add(u32::try_from(served.messages).unwrap_or(u32::MAX));
        }
        return;
    }
    if served.first_complete.is_none() && open.unrecorded == 0 {
        return;
    }
    let fine = lent.clock.fine();
    let done = fine.raw();
    if let Some(start) = served.first_complete {
        lent.metrics.record_latency(fine.delta_as_nanos(start, done), served.messages);
    }
    if open.unrecorded > 0 {
        let waited = u64::from(clock::elapsed(open.unrecorded_since, lent.clock.now())) * 1_000_000;
        let since_poll = fine.delta_as_nanos(lent.clock.now_fine(), done);
        lent.metrics.record_latency(waited + since_poll, u64::from(open.unrecorded));
        open.unrecorded = 0;
    }
}

/// What the application's calls need of the loop: the [`Lent`] minus the
/// receive buffer (which [`read_events`] is reading meanwhile).
pub(crate) struct Hand<'h> {
    cork: &'h mut Cork,
    metrics: &'h mut Metrics,
    limits: &'h Limits,
    /// The fine clock, when latency is measured.
    fine: Option<&'h quanta::Clock>,
    rooms: &'h mut Rooms,
    published: &'h mut Vec<Publish>,
}

impl Hand<'_> {
    /// The context for an application call on connection `id`; payloads in
    /// `input` (addresses) or `assembled` are sent back without a copy.
    pub(crate) fn ctx<'c>(
        &'c mut self,
        id: ConnectionId,
        input: std::ops::Range<usize>,
        assembled: Option<&'c Bytes>,
        close: &'c mut Option<CloseRequest>,
    ) -> Ctx<'c> {
        Ctx {
            id,
            key: id.key(),
            cork: self.cork,
            input,
            assembled,
            header_room: None,
            metrics: self.metrics,
            close,
            rooms: self.rooms,
            published: self.published,
        }
    }

    /// Tells the application that connection `id` closed with `code`, then
    /// takes it out of all its rooms.
    pub(crate) fn closed<A: App>(&mut self, app: &mut A, id: ConnectionId, code: u16) {
        // Nothing may be sent any more: a close is already "requested".
        let mut closing = Some(CloseRequest { code, reason: String::new() });
        app.on_close(&mut self.ctx(id, 0..0, None, &mut closing), code);
        let rooms = &mut self.metrics.rooms;
        rooms.memberships -= self.rooms.joined_count(id.key()) as u64;
        self.rooms.leave_all(id.key(), |_| rooms.rooms -= 1);
    }
}

/// Parses `input` into events and acts on each, corking the replies.
/// Stops early (returning the bytes used) once the cork holds more than
/// `room` bytes; after a close or a violation the rest is ignored.
fn read_events<A: App>(
    reader: &mut Reader,
    input: &mut [u8],
    id: ConnectionId,
    app: &mut A,
    hand: &mut Hand<'_>,
    room: usize,
    served: &mut Served,
) -> usize {
    let base = input.as_ptr() as usize;
    let region = base..base + input.len();
    let (limits, fine) = (hand.limits, hand.fine);
    let mut pos = 0;
    while pos < input.len() {
        if hand.cork.len() > room {
            return pos;
        }
        let start = pos;
        let (used, event) = match reader.next(&mut input[pos..], limits) {
            Ok(next) => next,
            Err(violation) => {
                hand.cork.push_scratch(|s| put_close(s, violation.code.into(), violation.reason));
                hand.metrics.frames_out.close += 1;
                served.end = Some(End::Violation(violation));
                return input.len();
            }
        };
        pos += used;
        let Some(event) = event else { continue };
        match event {
            Event::Message(kind, payload) => {
                hand.metrics.count_received(kind, payload.as_slice().len());
                served.messages += 1;
                if let (Some(fine), None) = (fine, served.first_complete) {
                    served.first_complete = Some(fine.raw());
                }
                let mut close = None;
                match payload {
                    Payload::InPlace(data) => {
                        // Everything this call of the reader consumed before the
                        // payload (its frame's header) is free: the reply's
                        // header may go there ([`Cork::push_framed`]).
                        let at = data.as_ptr() as usize - base;
                        let mut cx = hand.ctx(id, region.clone(), None, &mut close);
                        cx.header_room = Some((at, at - start));
                        app.on_message(&mut cx, Message::new(kind, data));
                        hand.cork.place_header(input);
                    }
                    Payload::Assembled(data) => {
                        // Owned by `Bytes` now, so that a reply can share it.
                        let data = Bytes::from(data);
                        let mut cx = hand.ctx(id, region.clone(), Some(&data), &mut close);
                        app.on_message(&mut cx, Message::new(kind, &data));
                    }
                }
                if let Some(request) = close {
                    hand.cork.push_scratch(|s| put_close(s, request.code, &request.reason));
                    hand.metrics.frames_out.close += 1;
                    served.end = Some(End::AppClosed(request));
                    return input.len();
                }
            }
            Event::Ping(payload) => {
                hand.metrics.frames_in.ping += 1;
                hand.metrics.frames_out.pong += 1;
                hand.cork.push_scratch(|s| put_frame(s, writer::PONG, payload));
            }
            Event::Pong(_) => {
                hand.metrics.frames_in.pong += 1;
                served.pong = true;
            }
            Event::Close(frame) => {
                hand.metrics.frames_in.close += 1;
                hand.metrics.frames_out.close += 1;
                // Echo the status code (RFC 6455 §5.5.1); an empty close gets an empty one.
                match frame {
                    Some(frame) => hand.cork.push_scratch(|s| put_close(s, frame.code, "")),
                    None => hand.cork.push_scratch(|s| put_frame(s, writer::CLOSE, &[])),
                }
                served.end = Some(End::PeerClosed(frame.map_or(1005, |f| f.code)));
                return input.len();
            }
        }
    }
    pos
}

/// Where a connection that sent its close frame stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Awaiting {
    /// The peer's close came (or it broke the protocol, or went away).
    Done,
    /// Nothing more to read now.
    Waiting,
    /// The read budget ran out: serve again before the next poll.
    Again,
}

/// Reads and parses input after we sent a close frame, ignoring everything
/// but the peer's close.
pub fn await_close<T: Transport>(reader: &mut Reader, socket: &mut T, lent: &mut Lent) -> Awaiting {
    let mut budget = READ_BUDGET;
    loop {
        if budget == 0 {
            return if socket.may_read() { Awaiting::Again } else { Awaiting::Waiting };
        }
        let n = match socket.recv(&mut lent.rx) {
            Ok(Received::Data(n)) => n,
            Ok(Received::Nothing) => return Awaiting::Waiting,
            Ok(Received::Eof) | Err(_) => return Awaiting::Done,
        };
        budget = budget.saturating_sub(n);
        let mut pos = 0;
        while pos < n {
            match reader.next(&mut lent.rx[pos..n], &lent.limits) {
                Ok((used, event)) => {
                    pos += used;
                    if let Some(Event::Close(_)) = event {
                        lent.metrics.frames_in.close += 1;
                        return Awaiting::Done;
                    }
                }
                Err(_) => return Awaiting::Done,
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{
        modes::Echo,
        protocol::Kind,
        testing::{Harness, MemStream},
        Config,
    };

    /// A client's final frame of `opcode`, masked.
    fn client_frame(opcode: u8, payload: &[u8], mask: [u8; 4]) -> Vec<u8> {
        writer::client_frame(0x80 | opcode, payload, mask)
    }

    /// The server's frame of `kind` for a payload: final, unmasked.
    fn server_frame(kind: Kind, payload: &[u8]) -> Vec<u8> {
        let mut out = Vec::new();
        writer::put_frame(&mut out, writer::data_opcode(kind), payload);
        out
    }

    fn payload(len: usize, seed: u8) -> Vec<u8> {
        (0..len).map(|i| (i as u8).wrapping_mul(31).wrapping_add(seed)).collect()
    }

    fn harness(input: Vec<u8>, max_read: usize) -> Harness {
        let config = Config { max_message_size: 1 << 20, max_frame_size: 1 << 20, ..Config::default() };
        Harness::new(config, MemStream { max_read, ..MemStream::new(input) })
    }

    #[test]
    fn an_echo_goes_out_as_one_slice_its_header_where_the_request_header_was() {
        // Each length takes another header size (2, 4 and 10 bytes of ours).
        let messages = [payload(10, 1), payload(300, 2), payload(70_000, 3)];
        let input: Vec<u8> = messages.iter().flat_map(|m| client_frame(2, m, [9, 8, 7, 6])).collect();
        let mut h = harness(input, 0);
        assert_eq!(h.wakeup(&mut Echo).messages, 3);
        let expected: Vec<u8> = messages.iter().flat_map(|m| server_frame(Kind::Binary, m)).collect();
        assert!(h.stream.output == expected, "the replies differ from the messages");
        assert_eq!(h.stream.slices, 3, "one slice per reply: header and payload together");
    }

    #[test]
    fn a_header_cut_by_the_end_of_a_read_leaves_room_only_for_what_came_after() {
        // 8 header bytes (2, 2 of length, 4 of mask) for our 4: cut after 3,
        // five follow the cut and ours fits there; cut after 6, two do not.
        for (cut, slices) in [(3, 1), (6, 2)] {
            let frame = client_frame(1, &[b'a'; 500], [1, 2, 3, 4]);
            let mut h = harness(frame.clone(), 0);
            h.stream.readable_until = cut;
            assert_eq!(h.wakeup(&mut Echo).messages, 0);
            h.stream.readable_until = frame.len();
            assert_eq!(h.wakeup(&mut Echo).messages, 1);
            assert!(h.stream.output == server_frame(Kind::Text, &[b'a'; 500]), "cut after {cut}");
            assert_eq!(h.stream.slices, slices, "cut after {cut}");
        }
    }

    /// Sends each message three times: whole, its first half, whole again.
    struct Thrice;

    impl App for Thrice {
        fn on_message(&mut self, cx: &mut Ctx<'_>, message: Message<'_>) {
            let data = message.data();
            cx.send(Kind::Binary, data);
            cx.send(Kind::Binary, &data[..data.len() / 2]);
            cx.send(Kind::Binary, data);
        }
    }

    #[test]
    fn only_the_first_reply_takes_the_room_before_the_payload() {
        let messages = [payload(20, 5), payload(200, 6)];
        let input: Vec<u8> = messages.iter().flat_map(|m| client_frame(2, m, [4, 4, 4, 4])).collect();
        let mut h = harness(input, 0);
        assert_eq!(h.wakeup(&mut Thrice).messages, 2);
        let expected: Vec<u8> = messages
            .iter()
            .flat_map(|m| {
                [
                    server_frame(Kind::Binary, m),
                    server_frame(Kind::Binary, &m[..m.len() / 2]),
                    server_frame(Kind::Binary, m),
                ]
                .concat()
            })
            .collect();
        assert!(h.stream.output == expected, "a reply was overwritten");
    }
}
