//! Broadcast mode: who is in which room, who publishes, and what every
//! subscriber checks.
//!
//! # Roles from ids alone
//!
//! Connection ids are `0..connections` across all loops (loop `i` of `T`
//! creates ids `i`, `i + T`, `i + 2T`, ...), so every loop can tell any id's
//! role without asking the others ([`Layout`]):
//!
//! - connection `k` joins room `k % rooms`;
//! - connections `0..publishers` publish (so publisher `k` is in room
//!   `k % rooms`, and the publishers are spread over the rooms as evenly as
//!   they divide: room `r` has `publishers / rooms` of them, one more if
//!   `r < publishers % rooms`);
//! - connections `publishers..publishers + slow` are the `--slow` ones,
//!   which stop reading while traffic runs.
//!
//! Every connection subscribes (a publisher receives its own messages, as a
//! member of its room).
//!
//! # What a subscriber checks
//!
//! Each subscriber keeps one [`Stream`] per publisher of its room, found from
//! the publisher id in the stamp (publisher `k` of room `r` is stream
//! `k / rooms`): no state is shared between loops while traffic runs, so a
//! room's members may live on different threads. For each message it
//! receives (already checked byte for byte by [`crate::inbound`]):
//!
//! - from a publisher outside its room (or an id that is no publisher):
//!   [`Verdict::Foreign`], a leak between rooms;
//! - the next sequence number, or a later one (a gap): in order;
//! - an earlier one it has not had (one of the last [`REORDER_WINDOW`]):
//!   [`Verdict::OutOfOrder`]; one it has had: [`Verdict::Duplicate`];
//!   older than the window: [`Verdict::TooOld`] (a repeat or a very late
//!   message, which cannot be told apart without more state; counted as out
//!   of order).
//!
//! A gap is not counted when it is seen: a late message may still fill it
//! (that is an out-of-order delivery, not a loss). What never arrived is
//! judged at the end ([`Subscriber::settle`]), after the drain, against the
//! number of messages each publisher sent, which the loops publish once
//! they have stopped sending ([`Published`]).

use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};

use tungstenite::http::Uri;

/// How far back (in sequence numbers, per publisher) a subscriber remembers
/// which messages it has had: a message this much or less behind the newest
/// is told apart as out of order or duplicate; one older is [`Verdict::TooOld`].
/// One machine word of bits per stream.
pub const REORDER_WINDOW: u64 = 64;

/// The run's shape: rooms, publishers and slow subscribers over the
/// connection ids (see the module documentation).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Layout {
    /// `--rooms`.
    pub rooms: u32,
    /// `--publishers`.
    pub publishers: u32,
    /// `--slow`.
    pub slow: u32,
}

impl Layout {
    /// The room connection `id` joins.
    #[inline]
    pub fn room_of(&self, id: u32) -> u32 {
        id % self.rooms
    }

    /// Whether connection `id` publishes.
    #[inline]
    pub fn is_publisher(&self, id: u32) -> bool {
        id < self.publishers
    }

    /// Whether connection `id` is one of the `--slow` subscribers.
    pub fn is_slow(&self, id: u32) -> bool {
        id >= self.publishers && id - self.publishers < self.slow
    }

    /// Publishers in room `room`.
    pub fn publishers_in(&self, room: u32) -> u32 {
        self.publishers / self.rooms + u32::from(room < self.publishers % self.rooms)
    }
}

/// The URL of room `room` of `rooms`: with one room the URL itself; with
/// more, room `i` is the URL's path (without a trailing `/`) followed by
/// `/r<i>`, query kept: `ws://h/` gives `/r0`, `/r1`, ...; `ws://h/chat?t=1`
/// gives `/chat/r0?t=1`, ...
pub fn room_uri(uri: &Uri, room: u32, rooms: u32) -> Result<Uri, String> {
    if rooms <= 1 {
        return Ok(uri.clone());
    }
    let path = room_path(uri.path(), room, rooms);
    let path_and_query = match uri.query() {
        Some(query) => format!("{path}?{query}"),
        None => path,
    };
    let mut builder = Uri::builder().path_and_query(path_and_query);
    if let Some(scheme) = uri.scheme_str() {
        builder = builder.scheme(scheme);
    }
    if let Some(authority) = uri.authority() {
        builder = builder.authority(authority.as_str());
    }
    builder.build().map_err(|e| format!("cannot form the URL of room {room}: {e}"))
}

/// The path (the room's name on the server) of room `room` of `rooms`, from the URL's path.
pub fn room_path(path: &str, room: u32, rooms: u32) -> String {
    if rooms <= 1 {
        return if path.is_empty() { "/".to_string() } else { path.to_string() };
    }
    format!("{}/r{room}", path.trim_end_matches('/'))
}

/// What a subscriber expects from one publisher of its room.
#[derive(Debug, Clone, Copy, Default)]
struct Stream {
    /// One past the highest sequence number received.
    next: u64,
    /// Distinct messages received.
    received: u64,
    /// Which of the [`REORDER_WINDOW`] sequence numbers below `next` were
    /// received: bit `i` stands for `next - 1 - i`.
    seen: u64,
}

/// How a delivery fits what its subscriber had so far.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// The publisher's next message, or a later one (the gap is judged at the end).
    InOrder,
    /// An earlier message of the publisher, not received before.
    OutOfOrder,
    /// A message of the publisher received before.
    Duplicate,
    /// More than [`REORDER_WINDOW`] behind the newest of its publisher: a
    /// repeat or a very late message; counted as out of order, not as received.
    TooOld,
    /// From a publisher that is not in the subscriber's room (or from an id
    /// that publishes nowhere): a leak between rooms.
    Foreign,
}

/// One connection's view of its room: a stream per publisher of the room.
#[derive(Debug, Default)]
pub struct Subscriber {
    /// The room it joined.
    pub room: u32,
    /// `--rooms` (a publisher id's room is `id % rooms`).
    rooms: u32,
    /// `--publishers` (ids at or above it never publish).
    publishers: u32,
    /// One of the `--slow` subscribers: its losses are reported, not faults.
    pub slow: bool,
    /// Per publisher of the room, in publisher order (`id / rooms`). Empty
    /// outside broadcast mode.
    streams: Box<[Stream]>,
    /// Distinct messages received from all of them.
    pub received: u64,
}

/// A subscriber's account at the end of the run.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Settled {
    /// Messages its room's publishers sent: what it should have received.
    pub owed: u64,
    /// Distinct messages it received (at most `owed` of them counted).
    pub received: u64,
    /// `owed - received`, stream by stream.
    pub missing: u64,
    /// The first stream that came up short: (publisher id, received, sent).
    pub first_short: Option<(u32, u64, u64)>,
    /// A stream carried sequence numbers its publisher never sent: (publisher id, highest + 1, sent).
    pub never_sent: Option<(u32, u64, u64)>,
}

impl Subscriber {
    /// The subscriber for connection `id` in `layout`.
    pub fn new(layout: &Layout, id: u32) -> Subscriber {
        let room = layout.room_of(id);
        Subscriber {
            room,
            rooms: layout.rooms,
            publishers: layout.publishers,
            slow: layout.is_slow(id),
            streams: vec![Stream::default(); layout.publishers_in(room) as usize].into_boxed_slice(),
            received: 0,
        }
    }

    /// Takes message `seq` of publisher `publisher`.
    #[inline]
    pub fn deliver(&mut self, publisher: u32, seq: u64) -> Verdict {
        if publisher >= self.publishers || publisher % self.rooms != self.room {
            return Verdict::Foreign;
        }
        let Some(stream) = self.streams.get_mut((publisher / self.rooms) as usize) else {
            return Verdict::Foreign;
        };
        if seq == stream.next {
            // The usual case: the publisher's next message.
            stream.next += 1;
            stream.seen = (stream.seen << 1) | 1;
            stream.received += 1;
            self.received += 1;
            return Verdict::InOrder;
        }
        let verdict = stream.unusual(seq);
        if matches!(verdict, Verdict::InOrder | Verdict::OutOfOrder) {
            self.received += 1;
        }
        verdict
    }

    /// Whether it has had every message of `room_total` (the sum of what
    /// its room's publishers sent).
    pub fn complete(&self, room_total: u64) -> bool {
        self.received >= room_total
    }

    /// Its account, given what each publisher sent (`sent[id]`).
    pub fn settle(&self, sent: &[u64]) -> Settled {
        let mut settled = Settled::default();
        for (index, stream) in self.streams.iter().enumerate() {
            let id = self.room + index as u32 * self.rooms;
            let sent = sent.get(id as usize).copied().unwrap_or(0);
            let received = stream.received.min(sent);
            settled.owed += sent;
            settled.received += received;
            settled.missing += sent - received;
            if received < sent && settled.first_short.is_none() {
                settled.first_short = Some((id, stream.received, sent));
            }
            if stream.next > sent && settled.never_sent.is_none() {
                settled.never_sent = Some((id, stream.next, sent));
            }
        }
        settled
    }
}

impl Stream {
    /// A sequence number other than the next one.
    #[cold]
    fn unusual(&mut self, seq: u64) -> Verdict {
        if seq > self.next {
            // A gap: the skipped ones may still come (out of order) or not (missing, at the end).
            let shift = seq - self.next + 1;
            self.seen = if shift >= REORDER_WINDOW { 1 } else { (self.seen << shift) | 1 };
            self.next = seq.saturating_add(1);
            self.received += 1;
            return Verdict::InOrder;
        }
        let behind = self.next - 1 - seq;
        if behind >= REORDER_WINDOW {
            return Verdict::TooOld;
        }
        let bit = 1u64 << behind;
        if self.seen & bit != 0 {
            return Verdict::Duplicate;
        }
        self.seen |= bit;
        self.received += 1;
        Verdict::OutOfOrder
    }
}

/// What each publisher sent, published by the loops when they stop sending,
/// so that every loop can judge its subscribers' losses at the end.
#[derive(Debug)]
pub struct Published {
    /// Messages sent, by publisher id (final once `stopped` is the loop count).
    sent: Box<[AtomicU64]>,
    /// Loops that have stopped sending for good.
    stopped: AtomicUsize,
    /// Loops in the run.
    loops: usize,
}

impl Published {
    pub fn new(publishers: u32, loops: usize) -> Published {
        Published { sent: (0..publishers).map(|_| AtomicU64::new(0)).collect(), stopped: AtomicUsize::new(0), loops }
    }

    /// Records what publisher `id` sent (before its loop calls [`Published::stop`]).
    pub fn record(&self, id: u32, sent: u64) {
        if let Some(slot) = self.sent.get(id as usize) {
            slot.store(sent, Ordering::Relaxed);
        }
    }

    /// One loop will send no more (its publishers' counts are recorded).
    pub fn stop(&self) {
        // Release: the counts recorded before are seen by whoever sees this.
        self.stopped.fetch_add(1, Ordering::Release);
    }

    /// Every publisher's count, once every loop has stopped; `None` before.
    pub fn totals(&self) -> Option<Vec<u64>> {
        if self.stopped.load(Ordering::Acquire) < self.loops {
            return None;
        }
        Some(self.sent.iter().map(|n| n.load(Ordering::Relaxed)).collect())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn layout(rooms: u32, publishers: u32, slow: u32) -> Layout {
        Layout { rooms, publishers, slow }
    }

    #[test]
    fn roles_follow_from_ids() {
        let l = layout(3, 4, 2);
        assert_eq!((0..6).map(|id| l.room_of(id)).collect::<Vec<_>>(), [0, 1, 2, 0, 1, 2]);
        assert_eq!((0..7).filter(|id| l.is_publisher(*id)).count(), 4);
        assert_eq!((0..10).filter(|id| l.is_slow(*id)).collect::<Vec<_>>(), [4, 5]);
        // 4 publishers over 3 rooms: 2, 1, 1, and their ids.
        assert_eq!([l.publishers_in(0), l.publishers_in(1), l.publishers_in(2)], [2, 1, 1]);
    }

    #[test]
    fn rooms_are_named_from_the_path() {
        let uri = |s: &str| s.parse::<Uri>().unwrap();
        assert_eq!(room_uri(&uri("ws://h:1/chat?x=1"), 0, 1).unwrap(), uri("ws://h:1/chat?x=1"));
        assert_eq!(room_uri(&uri("ws://h:1/"), 2, 3).unwrap(), uri("ws://h:1/r2"));
        assert_eq!(room_uri(&uri("ws://h:1/chat/"), 0, 2).unwrap(), uri("ws://h:1/chat/r0"));
        assert_eq!(room_uri(&uri("ws://h:1/chat?t=1"), 1, 2).unwrap(), uri("ws://h:1/chat/r1?t=1"));
        assert_eq!(room_path("/", 0, 1), "/");
        assert_eq!(room_path("/", 1, 2), "/r1");
    }

    #[test]
    fn in_order_gaps_reorders_and_repeats() {
        let l = layout(2, 3, 0);
        // Connection 4 is in room 0, with publishers 0 and 2.
        let mut s = Subscriber::new(&l, 4);
        assert_eq!(s.deliver(0, 0), Verdict::InOrder);
        assert_eq!(s.deliver(2, 0), Verdict::InOrder);
        assert_eq!(s.deliver(0, 2), Verdict::InOrder); // gap: 1 not yet
        assert_eq!(s.deliver(0, 1), Verdict::OutOfOrder);
        assert_eq!(s.deliver(0, 1), Verdict::Duplicate);
        assert_eq!(s.deliver(0, 2), Verdict::Duplicate);
        assert_eq!(s.deliver(1, 0), Verdict::Foreign, "publisher 1 is in room 1");
        assert_eq!(s.deliver(7, 0), Verdict::Foreign, "7 publishes nowhere");
        assert_eq!(s.deliver(0, 200), Verdict::InOrder);
        assert_eq!(s.deliver(0, 100), Verdict::TooOld);
        assert_eq!(s.received, 5);
        // Publisher 0 sent 201, publisher 2 sent 2: 0..=2 and 200 of 0 arrived, 0 of 2.
        let settled = s.settle(&[201, 0, 2]);
        assert_eq!((settled.owed, settled.received, settled.missing), (203, 5, 198));
        assert_eq!(settled.first_short, Some((0, 4, 201)));
        assert_eq!(settled.never_sent, None);
        assert!(!s.complete(203));
        // A sequence number beyond what was sent is named.
        assert_eq!(s.settle(&[150, 0, 1]).never_sent, Some((0, 201, 150)));
    }

    #[test]
    fn a_complete_stream_has_nothing_missing() {
        let l = layout(1, 2, 1);
        let mut s = Subscriber::new(&l, 2);
        assert!(s.slow);
        for seq in 0..1000 {
            assert_eq!(s.deliver(seq as u32 % 2, seq / 2), Verdict::InOrder);
        }
        assert!(s.complete(1000));
        let settled = s.settle(&[500, 500]);
        assert_eq!((settled.owed, settled.received, settled.missing), (1000, 1000, 0));
    }

    #[test]
    fn totals_wait_for_every_loop() {
        let p = Published::new(3, 2);
        p.record(0, 10);
        p.stop();
        assert_eq!(p.totals(), None);
        p.record(1, 7);
        p.record(9, 1); // not a publisher: ignored
        p.stop();
        assert_eq!(p.totals(), Some(vec![10, 7, 0]));
    }
}
