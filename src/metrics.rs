//! Counters and the service-latency histogram of one event loop.
//!
//! Each loop owns one `Metrics` and updates it without synchronisation;
//! reports merge the loops' values ([`Metrics::merge`]). The histogram is
//! per loop, never per connection: at 3 significant figures over 1 ns..60 s
//! one costs about 200 KiB.

use std::collections::BTreeMap;

use hdrhistogram::Histogram;

use crate::{
    fanout::Fanout,
    labels::{Failure, RefusalKind, Route},
    protocol::Kind,
};

/// Highest latency the histogram tracks (60 s, in nanoseconds); larger
/// values are clamped to it.
const LATENCY_MAX_NS: u64 = 60_000_000_000;

/// Frames by type. Data messages count once however fragmented; outgoing
/// pongs count the pings answered while open.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct FrameCounts {
    pub text: u64,
    pub binary: u64,
    pub ping: u64,
    pub pong: u64,
    pub close: u64,
}

impl FrameCounts {
    fn merge(&mut self, other: &FrameCounts) {
        self.text += other.text;
        self.binary += other.binary;
        self.ping += other.ping;
        self.pong += other.pong;
        self.close += other.close;
    }
}

/// Rooms and what was published to them.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct RoomCounts {
    /// Rooms with members now (a gauge).
    pub rooms: u64,
    /// Memberships now, all rooms together (a gauge).
    pub memberships: u64,
    /// Messages published from WebSocket members (or the application).
    pub published_websocket: u64,
    /// Messages published with `POST /publish`.
    pub published_http: u64,
    /// Messages queued for a member.
    pub deliveries: u64,
    /// Deliveries not made: the member was a slow consumer (skipped or closed).
    pub deliveries_dropped: u64,
    /// Joins refused (`--max-rooms`, `--max-rooms-per-connection`, a bad name).
    pub joins_refused: u64,
}

impl RoomCounts {
    fn merge(&mut self, other: &RoomCounts) {
        self.rooms += other.rooms;
        self.memberships += other.memberships;
        self.published_websocket += other.published_websocket;
        self.published_http += other.published_http;
        self.deliveries += other.deliveries;
        self.deliveries_dropped += other.deliveries_dropped;
        self.joins_refused += other.joins_refused;
    }
}

#[derive(Debug, Clone)]
pub struct Metrics {
    /// Connections accepted and not yet closed, that count against
    /// `--max-connections` (refused ones and plain HTTP requests excluded).
    pub connections_open: u64,
    /// TCP connections accepted, whatever they turned out to be.
    pub connections_accepted: u64,
    /// Handshakes that completed (101 sent).
    pub websockets_opened: u64,
    /// Plain HTTP requests answered, by route (index = position in `Route::ALL`).
    pub http_requests: [u64; Route::ALL.len()],
    /// Requests refused with an HTTP error, by [`RefusalKind`] (index = position in `RefusalKind::ALL`).
    pub refused: [u64; RefusalKind::ALL.len()],
    /// Handshakes that ended without a response, by [`Failure`].
    pub handshake_failures: [u64; Failure::ALL.len()],
    /// Closed WebSocket connections by close code: the peer's code when it
    /// closed, ours when we did; 1006 when the TCP connection ended without one.
    pub closes: BTreeMap<u16, u64>,
    /// `accept` failures for lack of descriptors or memory (EMFILE, ENFILE, ...).
    pub accept_errors: u64,
    /// Payload bytes of the data messages received and sent (their counts
    /// are the text and binary frame counts, see [`Metrics::messages_in`]).
    pub bytes_in: u64,
    pub bytes_out: u64,
    pub frames_in: FrameCounts,
    pub frames_out: FrameCounts,
    /// Output queued and not yet accepted by the kernel, all connections.
    pub pending_output_bytes: u64,
    /// Times a connection's pending output passed `--max-backpressure` (reading paused).
    pub backpressure_events: u64,
    /// The most output any one connection has had pending after a flush: by
    /// design at most `--max-backpressure` plus one maximal reply.
    pub pending_output_peak: u64,
    /// Connections closed for staying over the backpressure limit too long.
    pub slow_consumer_closes: u64,
    /// Connections closed by the idle timeout.
    pub idle_closes: u64,
    /// Service latency in nanoseconds, since start up to the last
    /// [`Metrics::rotate_window`] (with the current window:
    /// [`Metrics::latency_total`]): from the moment a message was complete in
    /// memory to the moment the kernel accepted the last byte of its reply.
    pub latency: Histogram<u64>,
    /// The same over the last complete window of [`Metrics::rotate_window`]
    /// (recent figures for the monitor page and the stats log line).
    pub latency_window: Histogram<u64>,
    /// The window being filled.
    latency_current: Histogram<u64>,
    pub rooms: RoomCounts,
    /// Frames published messages and collects their fan-out times: from the
    /// moment a message to a room is complete in memory to the moment the
    /// last member's copy is taken by the kernel.
    pub fanout: Fanout,
    /// Fan-out times since start, up to the last [`Metrics::rotate_window`]
    /// (with the rest: [`Metrics::fanout_latency_total`]).
    pub fanout_latency: Histogram<u64>,
    /// Fan-out times over the last complete window.
    pub fanout_latency_window: Histogram<u64>,
}

impl Default for Metrics {
    fn default() -> Self {
        Metrics {
            connections_open: 0,
            connections_accepted: 0,
            websockets_opened: 0,
            http_requests: [0; Route::ALL.len()],
            refused: [0; RefusalKind::ALL.len()],
            handshake_failures: [0; Failure::ALL.len()],
            closes: BTreeMap::new(),
            accept_errors: 0,
            bytes_in: 0,
            bytes_out: 0,
            frames_in: FrameCounts::default(),
            frames_out: FrameCounts::default(),
            pending_output_bytes: 0,
            backpressure_events: 0,
            pending_output_peak: 0,
            slow_consumer_closes: 0,
            idle_closes: 0,
            latency: new_latency_histogram(),
            latency_window: new_latency_histogram(),
            latency_current: new_latency_histogram(),
            rooms: RoomCounts::default(),
            fanout: Fanout::new(quanta::Clock::new()),
            fanout_latency: new_latency_histogram(),
            fanout_latency_window: new_latency_histogram(),
        }
    }
}

impl Metrics {
    /// Data messages (text and binary) received.
    pub fn messages_in(&self) -> u64 {
        self.frames_in.text + self.frames_in.binary
    }

    /// Data messages (text and binary) sent.
    pub fn messages_out(&self) -> u64 {
        self.frames_out.text + self.frames_out.binary
    }

    /// A data message of `len` payload bytes received.
    #[inline]
    pub fn count_received(&mut self, kind: Kind, len: usize) {
        match kind {
            Kind::Text => self.frames_in.text += 1,
            Kind::Binary => self.frames_in.binary += 1,
        }
        self.bytes_in += len as u64;
    }

    /// A data message of `len` payload bytes sent (queued).
    #[inline]
    pub fn count_sent(&mut self, kind: Kind, len: usize) {
        match kind {
            Kind::Text => self.frames_out.text += 1,
            Kind::Binary => self.frames_out.binary += 1,
        }
        self.bytes_out += len as u64;
    }

    pub fn count_refusal(&mut self, kind: RefusalKind) {
        self.refused[kind as usize] += 1;
    }

    pub fn count_failure(&mut self, failure: Failure) {
        self.handshake_failures[failure as usize] += 1;
    }

    pub fn count_close(&mut self, code: u16) {
        *self.closes.entry(code).or_default() += 1;
    }

    /// Records `count` messages that each took `nanos` to serve: one
    /// histogram update (the total since start is brought up to date from
    /// the window, see [`Metrics::latency_total`]).
    #[inline]
    pub fn record_latency(&mut self, nanos: u64, count: u64) {
        // Clamped: a value above the bound is kept at the bound rather than lost.
        let nanos = nanos.clamp(1, LATENCY_MAX_NS);
        self.latency_current.saturating_record_n(nanos, count);
    }

    /// Ends the current latency windows: they become `latency_window` and
    /// `fanout_latency_window`, and are added to the totals since start.
    pub fn rotate_window(&mut self) {
        // Same bounds on both sides, so adding cannot fail.
        let _ = self.latency.add(&self.latency_current);
        std::mem::swap(&mut self.latency_window, &mut self.latency_current);
        self.latency_current.reset();
        self.fanout_latency_window = self.fanout.take_latency();
        let _ = self.fanout_latency.add(&self.fanout_latency_window);
    }

    /// Fan-out times since start, the window being filled included.
    pub fn fanout_latency_total(&self) -> Histogram<u64> {
        let mut total = self.fanout_latency.clone();
        let _ = total.add(self.fanout.peek_latency());
        total
    }

    /// Service latency since start, the window being filled included.
    pub fn latency_total(&self) -> Histogram<u64> {
        let mut total = self.latency.clone();
        let _ = total.add(&self.latency_current);
        total
    }

    pub fn count_http_request(&mut self, route: Route) {
        self.http_requests[route as usize] += 1;
    }

    pub fn refused_total(&self) -> u64 {
        self.refused.iter().sum()
    }

    /// Adds another loop's figures to these.
    pub fn merge(&mut self, other: &Metrics) {
        self.connections_open += other.connections_open;
        self.connections_accepted += other.connections_accepted;
        self.websockets_opened += other.websockets_opened;
        for (a, b) in self.http_requests.iter_mut().zip(other.http_requests) {
            *a += b;
        }
        for (a, b) in self.refused.iter_mut().zip(other.refused) {
            *a += b;
        }
        for (a, b) in self.handshake_failures.iter_mut().zip(other.handshake_failures) {
            *a += b;
        }
        for (code, n) in &other.closes {
            *self.closes.entry(*code).or_default() += n;
        }
        self.accept_errors += other.accept_errors;
        self.bytes_in += other.bytes_in;
        self.bytes_out += other.bytes_out;
        self.frames_in.merge(&other.frames_in);
        self.frames_out.merge(&other.frames_out);
        self.pending_output_bytes += other.pending_output_bytes;
        self.backpressure_events += other.backpressure_events;
        self.pending_output_peak = self.pending_output_peak.max(other.pending_output_peak);
        self.slow_consumer_closes += other.slow_consumer_closes;
        self.idle_closes += other.idle_closes;
        // Same bounds on both sides, so adding cannot fail.
        let _ = self.latency.add(&other.latency);
        let _ = self.latency_window.add(&other.latency_window);
        let _ = self.latency_current.add(&other.latency_current);
        self.rooms.merge(&other.rooms);
        let _ = self.fanout_latency.add(other.fanout_latency_total());
        let _ = self.fanout_latency_window.add(&other.fanout_latency_window);
    }
}

/// A latency histogram: 1 ns to 60 s at 3 significant figures (about 200 KiB).
pub fn new_latency_histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1, LATENCY_MAX_NS, 3).expect("valid histogram bounds")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_and_merges() {
        let mut a = Metrics::default();
        let mut b = Metrics::default();
        a.count_refusal(RefusalKind::TooManyConnections);
        b.count_refusal(RefusalKind::TooManyConnections);
        b.count_failure(Failure::Timeout);
        a.count_close(1000);
        b.count_close(1000);
        b.count_close(1002);
        a.record_latency(5_000, 3);
        b.record_latency(u64::MAX, 1);
        a.merge(&b);
        assert_eq!(a.refused[RefusalKind::TooManyConnections as usize], 2);
        assert_eq!(a.refused_total(), 2);
        assert_eq!(a.handshake_failures[Failure::Timeout as usize], 1);
        assert_eq!(a.closes.get(&1000), Some(&2));
        assert_eq!(a.closes.get(&1002), Some(&1));
        assert_eq!(a.latency_total().len(), 4);
        assert!(a.latency_total().max() >= 59_000_000_000);
        assert_eq!(a.latency_window.len(), 0);
        a.rotate_window();
        assert_eq!(a.latency_window.len(), 4);
        assert_eq!(a.latency_total().len(), 4);
        a.rotate_window();
        assert_eq!(a.latency_window.len(), 0);
        assert_eq!(a.latency.len(), 4);
        assert_eq!(a.latency_total().len(), 4);
    }
}
