//! What one event loop counts: histograms, message counters, and every
//! error by kind.
//!
//! Each loop owns one [`Stats`] and updates it without synchronisation; the
//! report merges the loops' values ([`Stats::merge`]). Histograms are per
//! loop, never per connection (one costs about 220 KiB).
//!
//! Only messages whose *intended* send time falls in the measurement window
//! (after the warm-up, before the end) are recorded in histograms and
//! throughput counters, whenever their echo arrives: so warm-up traffic is
//! excluded from every figure, and the slowest messages of the window are not
//! cut off because their echo came after it ended. Errors are counted over the
//! whole run: a corrupted message is a fault whenever it happens.

use std::collections::BTreeMap;

use hdrhistogram::Histogram;

pub use wsloop::sys::{latency_histogram, LATENCY_MAX_NS};

/// Why a connection could not be opened (TCP connect through the 101).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OpenFailure {
    /// The target refused the TCP connection (nothing listening, or a full backlog with `tcp_abort_on_overflow`).
    Refused,
    /// TCP did not connect within `--connect-timeout`.
    ConnectTimeout,
    /// TCP connected but no complete response arrived within `--connect-timeout`.
    HandshakeTimeout,
    /// The server answered with an HTTP status other than 101 (codes counted separately).
    HttpStatus,
    /// A 101 that breaks RFC 6455 §4.1 (accept key, Upgrade, Connection,
    /// subprotocol, extensions), or a response that is not HTTP.
    BadResponse,
    /// `wss://`: the TLS handshake failed: a certificate refused, an alert
    /// from the server, or an answer that is not TLS (reasons counted apart).
    Tls,
    /// The connection was reset during the handshake.
    Reset,
    /// The server closed the connection before answering.
    Closed,
    /// No local port left for this source address (EADDRNOTAVAIL): use more `--source-ip`.
    NoLocalPort,
    /// Out of file descriptors (EMFILE/ENFILE): raise `ulimit -n`.
    TooManyFiles,
    /// Anything else (no route, permission, ...).
    Other,
}

impl OpenFailure {
    pub const ALL: [OpenFailure; 11] = [
        OpenFailure::Refused,
        OpenFailure::ConnectTimeout,
        OpenFailure::HandshakeTimeout,
        OpenFailure::HttpStatus,
        OpenFailure::BadResponse,
        OpenFailure::Tls,
        OpenFailure::Reset,
        OpenFailure::Closed,
        OpenFailure::NoLocalPort,
        OpenFailure::TooManyFiles,
        OpenFailure::Other,
    ];

    /// The name used in the summary and as the JSON key.
    pub fn as_str(self) -> &'static str {
        match self {
            OpenFailure::Refused => "refused",
            OpenFailure::ConnectTimeout => "connect_timeout",
            OpenFailure::HandshakeTimeout => "handshake_timeout",
            OpenFailure::HttpStatus => "http_status",
            OpenFailure::BadResponse => "bad_response",
            OpenFailure::Tls => "tls",
            OpenFailure::Reset => "reset",
            OpenFailure::Closed => "closed",
            OpenFailure::NoLocalPort => "no_local_port",
            OpenFailure::TooManyFiles => "too_many_files",
            OpenFailure::Other => "other",
        }
    }

    /// Classifies a socket error seen while connecting or handshaking.
    pub fn from_io(err: &std::io::Error, tcp_connected: bool) -> OpenFailure {
        match err.raw_os_error() {
            Some(libc::ECONNREFUSED) => OpenFailure::Refused,
            Some(libc::ETIMEDOUT) if !tcp_connected => OpenFailure::ConnectTimeout,
            Some(libc::ECONNRESET | libc::EPIPE | libc::ECONNABORTED) => OpenFailure::Reset,
            Some(libc::EADDRNOTAVAIL | libc::EADDRINUSE) => OpenFailure::NoLocalPort,
            Some(libc::EMFILE | libc::ENFILE) => OpenFailure::TooManyFiles,
            _ => OpenFailure::Other,
        }
    }
}

/// Something that went wrong after a connection was open.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fault {
    /// An echo whose bytes differ from what was sent: payload, length,
    /// opcode, stamp check word, or the sender's connection id.
    Corrupt,
    /// A message never echoed: skipped in the sequence, not back within
    /// `--message-timeout`, or still in flight when its connection dropped.
    /// Broadcast: a delivery owed to a subscriber (not `--slow`) that had
    /// not arrived when the drain ended, judged at the end.
    Missing,
    /// A sequence number that was already received or skipped (a repeat, or
    /// an echo out of order). Broadcast: a publisher's message received twice.
    Duplicate,
    /// The server closed an open connection (close frame or end of stream)
    /// before loadgen did.
    Closed,
    /// An open connection was reset.
    Reset,
    /// The server broke the framing rules (masked frame, reserved opcode or
    /// bits, bad continuation, oversized control frame).
    Protocol,
    /// Broadcast: a message of a publisher that arrived after a later one of
    /// the same publisher (or one so late that it cannot be told from a repeat).
    OutOfOrder,
    /// Broadcast: a message from a publisher of another room (a leak between rooms).
    Foreign,
}

impl Fault {
    pub const ALL: [Fault; 8] = [
        Fault::Corrupt,
        Fault::Missing,
        Fault::Duplicate,
        Fault::Closed,
        Fault::Reset,
        Fault::Protocol,
        Fault::OutOfOrder,
        Fault::Foreign,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Fault::Corrupt => "corrupt",
            Fault::Missing => "missing",
            Fault::Duplicate => "duplicate",
            Fault::Closed => "closed",
            Fault::Reset => "reset",
            Fault::Protocol => "protocol",
            Fault::OutOfOrder => "out_of_order",
            Fault::Foreign => "foreign",
        }
    }
}

/// One loop's figures.
#[derive(Debug, Clone)]
pub struct Stats {
    /// Round-trip latency from each message's intended send time (in closed
    /// loop modes, the actual send time): the coordinated-omission-free figure.
    pub latency: Histogram<u64>,
    /// Round-trip latency from the actual send time (rate mode only): what a
    /// naive load generator would report, kept to show the difference.
    pub uncorrected: Histogram<u64>,
    /// From `connect()` to the complete 101 response.
    pub handshake: Histogram<u64>,
    /// Its first part: from `connect()` until TCP is connected.
    pub handshake_tcp: Histogram<u64>,
    /// `wss://`: its second part, from TCP connected to the TLS handshake done.
    pub handshake_tls: Histogram<u64>,
    /// Its last part: from the upgrade request (sent when TCP, or TLS, is
    /// up) to the complete 101.
    pub handshake_upgrade: Histogram<u64>,
    /// Data messages (pings in idle mode) sent and echoed in the window, and their payload bytes.
    pub sent: u64,
    /// Their echoes, received intact.
    pub received: u64,
    /// Payload bytes of `sent`.
    pub bytes_sent: u64,
    /// Payload bytes of `received`.
    pub bytes_received: u64,
    /// Every echo whatever its send time, warm-up included: what the live
    /// line shows as current activity.
    pub received_all: u64,
    /// Payload bytes of `received_all`.
    pub bytes_received_all: u64,
    /// Connections that completed the handshake.
    pub opened: u64,
    /// Connections currently open (reported once a second).
    pub open_now: u64,
    /// Most connections open at once.
    pub peak_open: u64,
    /// Connection attempts that failed, by [`OpenFailure`].
    pub failures: [u64; OpenFailure::ALL.len()],
    /// Non-101 HTTP statuses received, by code.
    pub http_statuses: BTreeMap<u16, u64>,
    /// `wss://`: TLS handshake failures by reason ([`crate::tls::failure_reason`]).
    pub tls_failures: BTreeMap<&'static str, u64>,
    /// `wss://`: the measured handshakes' TLS, what the report's `tls` says.
    pub tls: TlsCounts,
    /// Faults after the handshake, by [`Fault`].
    pub faults: [u64; Fault::ALL.len()],
    /// The first occurrence of each failure and fault, for the summary: the
    /// count says how often, this says what it looked like.
    pub first_seen: BTreeMap<&'static str, String>,
    /// Echoes of messages already counted missing after `--message-timeout`.
    pub late: u64,
    /// Churn cycles completed (connect, one echo, close) in the window.
    pub cycles: u64,
    /// Handshakes completed in the window (churn's handshake rate).
    pub handshakes_in_window: u64,
    /// Closes we started that the server did not complete in time (then dropped).
    pub close_timeouts: u64,
    /// Rate-mode sends that were due on a connection that had dropped.
    pub not_sent: u64,
    /// Broadcast: the losses judged at the end (the others are faults).
    pub fanout: Fanout,
    /// Idle mode: what arrived besides pongs (a publish reaching the subscribers).
    pub idle: IdleDeliveries,
    /// With several targets: `latency` per target (connection `id` is
    /// target `id % len`); empty with one, which the report then takes from `latency`.
    pub by_target: Vec<Histogram<u64>>,
}

/// Idle mode's deliveries: data messages that carry a valid stamp
/// (`wsloop::wire`), such as a `POST /publish` of `loadgen publish` reaching
/// every held connection, counted whenever they arrive (the window does
/// not apply: the publisher is outside this run).
#[derive(Debug, Clone)]
pub struct IdleDeliveries {
    /// From each stamp's intended time to its arrival (the same clock on one host).
    pub latency: Histogram<u64>,
    /// Connections that received at least one.
    pub connections_reached: u64,
    /// Data messages that were not a stamped payload (not counted as deliveries, nor as errors).
    pub unstamped: u64,
    /// What the first of those looked like.
    pub first_unstamped: Option<String>,
}

impl Default for IdleDeliveries {
    fn default() -> Self {
        IdleDeliveries { latency: latency_histogram(), connections_reached: 0, unstamped: 0, first_unstamped: None }
    }
}

impl IdleDeliveries {
    fn merge(&mut self, other: &IdleDeliveries) {
        let _ = self.latency.add(&other.latency);
        self.connections_reached += other.connections_reached;
        self.unstamped += other.unstamped;
        if self.first_unstamped.is_none() {
            self.first_unstamped.clone_from(&other.first_unstamped);
        }
    }
}

/// `wss://`: what the measured handshakes negotiated (those whose latency
/// is in `handshake`: in churn mode, the ones started in the window).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TlsCounts {
    /// Handshakes that resumed an earlier session (a ticket or a session ID).
    pub resumed: u64,
    /// Full handshakes (certificate and key exchange).
    pub full: u64,
    /// By protocol version (`"TLSv1.3"`).
    pub versions: BTreeMap<&'static str, u64>,
    /// By cipher suite (`"TLS13_AES_256_GCM_SHA384"`).
    pub cipher_suites: BTreeMap<&'static str, u64>,
}

impl TlsCounts {
    fn merge(&mut self, other: &TlsCounts) {
        self.resumed += other.resumed;
        self.full += other.full;
        for (version, n) in &other.versions {
            *self.versions.entry(version).or_default() += n;
        }
        for (suite, n) in &other.cipher_suites {
            *self.cipher_suites.entry(suite).or_default() += n;
        }
    }
}

/// Broadcast mode's account of the whole run (warm-up included): what the
/// subscribers should have received, what they did, apart for the `--slow`
/// ones, whose losses are the server's slow-consumer policy at work.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Fanout {
    /// Subscribers (not slow) that opened and were accounted for.
    pub subscribers: u64,
    /// Messages their rooms' publishers sent, summed over them: the deliveries owed.
    pub owed: u64,
    /// Distinct messages they received of those.
    pub delivered: u64,
    /// `--slow` subscribers that opened.
    pub slow_subscribers: u64,
    /// Deliveries owed to them.
    pub slow_owed: u64,
    /// Distinct messages they received.
    pub slow_delivered: u64,
    /// How the server ended slow subscribers before loadgen did: by close
    /// code (`"1008"`), `"no code"`, `"eof"` (no close frame) or `"reset"`.
    pub slow_closed: BTreeMap<String, u64>,
}

impl Fanout {
    fn merge(&mut self, other: &Fanout) {
        self.subscribers += other.subscribers;
        self.owed += other.owed;
        self.delivered += other.delivered;
        self.slow_subscribers += other.slow_subscribers;
        self.slow_owed += other.slow_owed;
        self.slow_delivered += other.slow_delivered;
        for (how, n) in &other.slow_closed {
            *self.slow_closed.entry(how.clone()).or_default() += n;
        }
    }
}

impl Default for Stats {
    fn default() -> Self {
        Stats {
            latency: latency_histogram(),
            uncorrected: latency_histogram(),
            handshake: latency_histogram(),
            handshake_tcp: latency_histogram(),
            handshake_tls: latency_histogram(),
            handshake_upgrade: latency_histogram(),
            sent: 0,
            received: 0,
            bytes_sent: 0,
            bytes_received: 0,
            received_all: 0,
            bytes_received_all: 0,
            opened: 0,
            open_now: 0,
            peak_open: 0,
            failures: [0; OpenFailure::ALL.len()],
            http_statuses: BTreeMap::new(),
            tls_failures: BTreeMap::new(),
            tls: TlsCounts::default(),
            faults: [0; Fault::ALL.len()],
            first_seen: BTreeMap::new(),
            late: 0,
            cycles: 0,
            handshakes_in_window: 0,
            close_timeouts: 0,
            not_sent: 0,
            fanout: Fanout::default(),
            idle: IdleDeliveries::default(),
            by_target: Vec::new(),
        }
    }
}

/// Records `nanos` in `histogram`, clamped to its range.
#[inline]
pub fn record(histogram: &mut Histogram<u64>, nanos: u64) {
    histogram.saturating_record(nanos.clamp(1, LATENCY_MAX_NS));
}

impl Stats {
    /// Counts a failed connection attempt; `detail` describes the first one of its kind.
    pub fn count_failure(&mut self, failure: OpenFailure, detail: impl FnOnce() -> String) {
        self.failures[failure as usize] += 1;
        self.first_seen.entry(failure.as_str()).or_insert_with(detail);
    }

    /// Counts `n` faults of one kind; `detail` describes the first one.
    pub fn count_fault(&mut self, fault: Fault, n: u64, detail: impl FnOnce() -> String) {
        if n == 0 {
            return;
        }
        self.faults[fault as usize] += n;
        self.first_seen.entry(fault.as_str()).or_insert_with(detail);
    }

    pub fn count_http_status(&mut self, status: u16) {
        *self.http_statuses.entry(status).or_default() += 1;
    }

    /// Counts a failed TLS handshake's reason (the failure itself is counted by [`Stats::count_failure`]).
    pub fn count_tls_failure(&mut self, reason: &'static str) {
        *self.tls_failures.entry(reason).or_default() += 1;
    }

    pub fn connection_opened(&mut self) {
        self.opened += 1;
        self.open_now += 1;
        self.peak_open = self.peak_open.max(self.open_now);
    }

    pub fn connection_gone(&mut self) {
        self.open_now = self.open_now.saturating_sub(1);
    }

    pub fn failures_total(&self) -> u64 {
        self.failures.iter().sum()
    }

    pub fn faults_total(&self) -> u64 {
        self.faults.iter().sum()
    }

    /// Everything `--max-errors` is compared with: failed connection
    /// attempts and faults on open connections.
    pub fn errors_total(&self) -> u64 {
        self.failures_total() + self.faults_total()
    }

    /// Adds another loop's figures to these.
    pub fn merge(&mut self, other: &Stats) {
        // Same bounds on every side, so adding cannot fail.
        let _ = self.latency.add(&other.latency);
        let _ = self.uncorrected.add(&other.uncorrected);
        let _ = self.handshake.add(&other.handshake);
        let _ = self.handshake_tcp.add(&other.handshake_tcp);
        let _ = self.handshake_tls.add(&other.handshake_tls);
        let _ = self.handshake_upgrade.add(&other.handshake_upgrade);
        self.sent += other.sent;
        self.received += other.received;
        self.bytes_sent += other.bytes_sent;
        self.bytes_received += other.bytes_received;
        self.received_all += other.received_all;
        self.bytes_received_all += other.bytes_received_all;
        self.opened += other.opened;
        self.open_now += other.open_now;
        self.peak_open += other.peak_open;
        for (a, b) in self.failures.iter_mut().zip(other.failures) {
            *a += b;
        }
        for (code, n) in &other.http_statuses {
            *self.http_statuses.entry(*code).or_default() += n;
        }
        for (reason, n) in &other.tls_failures {
            *self.tls_failures.entry(reason).or_default() += n;
        }
        self.tls.merge(&other.tls);
        for (a, b) in self.faults.iter_mut().zip(other.faults) {
            *a += b;
        }
        for (kind, detail) in &other.first_seen {
            self.first_seen.entry(kind).or_insert_with(|| detail.clone());
        }
        self.late += other.late;
        self.cycles += other.cycles;
        self.handshakes_in_window += other.handshakes_in_window;
        self.close_timeouts += other.close_timeouts;
        self.not_sent += other.not_sent;
        self.fanout.merge(&other.fanout);
        self.idle.merge(&other.idle);
        if self.by_target.len() < other.by_target.len() {
            self.by_target.resize_with(other.by_target.len(), latency_histogram);
        }
        for (mine, theirs) in self.by_target.iter_mut().zip(&other.by_target) {
            let _ = mine.add(theirs);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kinds_index_their_arrays() {
        for (i, failure) in OpenFailure::ALL.iter().enumerate() {
            assert_eq!(*failure as usize, i);
        }
        for (i, fault) in Fault::ALL.iter().enumerate() {
            assert_eq!(*fault as usize, i);
        }
    }

    #[test]
    fn counts_merge_and_keep_the_first_detail() {
        let mut a = Stats::default();
        let mut b = Stats::default();
        a.count_fault(Fault::Corrupt, 1, || "first".into());
        b.count_fault(Fault::Corrupt, 2, || "second".into());
        b.count_failure(OpenFailure::Refused, || "refused".into());
        b.count_http_status(503);
        record(&mut b.latency, 0);
        record(&mut b.latency, u64::MAX);
        a.merge(&b);
        assert_eq!(a.faults[Fault::Corrupt as usize], 3);
        assert_eq!(a.first_seen["corrupt"], "first");
        assert_eq!(a.errors_total(), 4);
        assert_eq!(a.http_statuses[&503], 1);
        assert_eq!(a.latency.len(), 2);
    }

    #[test]
    fn classifies_socket_errors() {
        let e = |code| std::io::Error::from_raw_os_error(code);
        assert_eq!(OpenFailure::from_io(&e(libc::ECONNREFUSED), false), OpenFailure::Refused);
        assert_eq!(OpenFailure::from_io(&e(libc::ETIMEDOUT), false), OpenFailure::ConnectTimeout);
        assert_eq!(OpenFailure::from_io(&e(libc::EADDRNOTAVAIL), false), OpenFailure::NoLocalPort);
        assert_eq!(OpenFailure::from_io(&e(libc::EMFILE), false), OpenFailure::TooManyFiles);
        assert_eq!(OpenFailure::from_io(&e(libc::ECONNRESET), true), OpenFailure::Reset);
    }
}
