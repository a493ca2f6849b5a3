//! Publishing: a message framed once, shared by every delivery.
//!
//! [`Fanout::frame`] writes the header and the payload into one buffer,
//! owned by a `Bytes` that every subscriber's output queue references: a
//! delivery is a reference count, never a copy or a re-encoding (uWebSockets
//! publishes the same way). The buffer's owner also times the fan-out: it
//! is dropped when the last reference goes, which is the moment the last
//! member's copy was taken by the kernel (or dropped for a slow consumer),
//! on whichever loop that happened; its drop records the time since the
//! message was complete in memory into the publishing loop's fan-out
//! histogram.

use std::sync::{Arc, Mutex};

use bytes::Bytes;
use hdrhistogram::Histogram;

use crate::{
    app::ConnectionId,
    protocol::{writer, Kind},
    rooms::RoomId,
    sys::latency_histogram,
};

/// Where the fan-out times of one loop's messages go until the loop
/// collects them ([`Fanout::take_latency`]). A lock, taken once per
/// published message (not per delivery), uncontended unless another loop
/// delivered the message last.
#[derive(Debug)]
struct Sink {
    clock: quanta::Clock,
    latency: Mutex<Histogram<u64>>,
}

/// A loop's publisher: frames messages and collects their fan-out times
/// (clones share the collection).
#[derive(Debug, Clone)]
pub struct Fanout {
    sink: Arc<Sink>,
}

/// The buffer behind a published frame.
struct Owned {
    frame: Vec<u8>,
    /// When the message was complete in memory (a reading of `sink.clock`).
    published: u64,
    sink: Arc<Sink>,
}

impl AsRef<[u8]> for Owned {
    fn as_ref(&self) -> &[u8] {
        &self.frame
    }
}

impl Drop for Owned {
    fn drop(&mut self) {
        let nanos = self.sink.clock.delta_as_nanos(self.published, self.sink.clock.raw());
        if let Ok(mut latency) = self.sink.latency.lock() {
            // Clamped: a value above the bound is kept at the bound rather than lost.
            let high = latency.high();
            latency.saturating_record(nanos.clamp(1, high));
        }
    }
}

impl Fanout {
    pub fn new(clock: quanta::Clock) -> Self {
        Fanout { sink: Arc::new(Sink { clock, latency: Mutex::new(latency_histogram()) }) }
    }

    /// One frame carrying `payload` as a `kind` message, to be shared by all
    /// its deliveries; its fan-out is timed from now.
    pub fn frame(&self, kind: Kind, payload: &[u8]) -> Bytes {
        let header = writer::header(writer::data_opcode(kind), payload.len());
        let mut frame = Vec::with_capacity(header.as_bytes().len() + payload.len());
        frame.extend_from_slice(header.as_bytes());
        frame.extend_from_slice(payload);
        Bytes::from_owner(Owned { frame, published: self.sink.clock.raw(), sink: self.sink.clone() })
    }

    /// The fan-out times recorded since the last call.
    pub fn take_latency(&self) -> Histogram<u64> {
        let mut taken = latency_histogram();
        if let Ok(mut latency) = self.sink.latency.lock() {
            std::mem::swap(&mut *latency, &mut taken);
        }
        taken
    }

    /// A copy of the fan-out times recorded since the last [`Fanout::take_latency`].
    pub fn peek_latency(&self) -> Histogram<u64> {
        match self.sink.latency.lock() {
            Ok(latency) => latency.clone(),
            Err(_) => latency_histogram(),
        }
    }
}

/// Where a published message came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Origin {
    /// A member's WebSocket message (or the application's `publish`).
    WebSocket,
    /// `POST /publish`, from this connection (of this loop), which waits
    /// for the delivery counts to answer.
    Http { id: ConnectionId },
}

/// The room a message is published to.
#[derive(Debug, Clone)]
pub enum Target {
    /// A room of this loop (a member published to its own room).
    Room(RoomId),
    /// A room by name, which may have no member on this loop (`POST
    /// /publish`, or an application publishing to any room).
    Named(Arc<str>),
}

/// A message waiting to be fanned out to a room.
#[derive(Debug)]
pub struct Publish {
    pub to: Target,
    pub kind: Kind,
    pub frame: Bytes,
    pub origin: Origin,
}

/// What happened to one message's deliveries.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Delivered {
    /// Members it was queued for.
    pub delivered: u64,
    /// Members it was not queued for: slow consumers (skipped, or closed).
    pub dropped: u64,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_frame_is_timed_when_its_last_reference_goes() {
        let frames = Fanout::new(quanta::Clock::new());
        let frame = frames.frame(Kind::Text, b"hello");
        assert_eq!(&frame[..], b"\x81\x05hello");
        let copies: Vec<Bytes> = (0..3).map(|_| frame.clone()).collect();
        drop(frame);
        assert_eq!(frames.peek_latency().len(), 0, "timed while deliveries were pending");
        drop(copies);
        assert_eq!(frames.take_latency().len(), 1);
        assert_eq!(frames.peek_latency().len(), 0);
    }
}
