//! The server's figures as the outside world reads them: `/stats` (JSON),
//! `/metrics` (Prometheus text exposition format 0.0.4) and the periodic log
//! line. One [`Snapshot`] feeds all three, so they always agree.

use std::{collections::BTreeMap, fmt::Write as _, net::SocketAddr, time::Duration};

use hdrhistogram::Histogram;
use serde::Serialize;

use crate::{
    bridge::BridgeStats,
    config::Config,
    labels::{Failure, RefusalKind, Route},
    metrics::{FrameCounts, Metrics},
};

/// Everything `/stats` returns. Field names are stable: scripts read them.
#[derive(Debug, Serialize)]
pub struct Snapshot {
    pub server: ServerInfo,
    pub connections: Connections,
    /// Plain HTTP requests answered, by route (`monitor`, `stats`, `metrics`, `not_found`, `method_not_allowed`).
    pub http_requests: BTreeMap<&'static str, u64>,
    pub messages: Messages,
    /// Frames received, by type; a fragmented data message counts once.
    pub frames_received: Frames,
    /// Frames sent, by type (pongs: pings answered).
    pub frames_sent: Frames,
    pub backpressure: Backpressure,
    /// Service latency since start: message complete in memory to reply accepted by the kernel.
    pub latency: Latency,
    /// The same over the last complete `--stats-interval` window.
    pub latency_recent: Latency,
    pub rooms: Rooms,
    /// Fan-out latency since start: a message to a room complete in memory
    /// to its last member's copy taken by the kernel.
    pub fanout_latency: Latency,
    /// The same over the last complete `--stats-interval` window.
    pub fanout_latency_recent: Latency,
    pub process: Process,
    /// With `--workers`: open connections on each loop (the figures above
    /// are the process's, all loops summed).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub loops: Vec<LoopInfo>,
    /// With `--redis`: the bridge to other processes.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub redis: Option<BridgeStats>,
}

#[derive(Debug, Serialize)]
pub struct LoopInfo {
    pub index: usize,
    pub connections: u64,
}

#[derive(Debug, Serialize)]
pub struct Rooms {
    /// Rooms with members now.
    pub rooms: u64,
    /// Memberships now, all rooms together.
    pub memberships: u64,
    /// Messages published, by source (`websocket`, `http`).
    pub published: BTreeMap<&'static str, u64>,
    /// Messages queued for a member.
    pub deliveries: u64,
    /// Deliveries not made to slow consumers (skipped, or closed).
    pub deliveries_dropped: u64,
    /// Joins refused by `--max-rooms`, `--max-rooms-per-connection` or a bad name.
    pub joins_refused: u64,
}

#[derive(Debug, Serialize)]
pub struct ServerInfo {
    pub version: &'static str,
    pub mode: &'static str,
    pub listen: String,
    pub uptime_seconds: f64,
    /// False when started with `--no-latency` (the latency figures stay empty).
    pub latency_recording: bool,
    /// `POST /publish` is on (`--publish-token` was given).
    pub publish_enabled: bool,
    /// Event loops (`--workers`).
    pub workers: usize,
}

#[derive(Debug, Serialize)]
pub struct Connections {
    /// Open now: handshaking, open or closing (counts against `max`).
    pub open: u64,
    /// `--max-connections`.
    pub max: u64,
    /// TCP connections accepted, whatever they turned out to be.
    pub accepted: u64,
    /// WebSocket handshakes completed.
    pub websocket_opened: u64,
    /// Requests refused with an HTTP error, by reason.
    pub refused: BTreeMap<&'static str, u64>,
    /// Handshakes that ended without a response, by reason.
    pub handshake_failures: BTreeMap<&'static str, u64>,
    /// Closed WebSocket connections by close code (1006: ended without one).
    pub closed: BTreeMap<String, u64>,
    /// Connections closed by the idle timeout.
    pub idle_closes: u64,
    /// `accept` failures for lack of descriptors or memory.
    pub accept_errors: u64,
}

#[derive(Debug, Serialize)]
pub struct Messages {
    pub received: u64,
    pub sent: u64,
    /// Payload bytes of data messages.
    pub bytes_received: u64,
    pub bytes_sent: u64,
}

#[derive(Debug, Serialize)]
pub struct Frames {
    pub text: u64,
    pub binary: u64,
    pub ping: u64,
    pub pong: u64,
    pub close: u64,
}

#[derive(Debug, Serialize)]
pub struct Backpressure {
    /// Times a connection's pending output passed `--max-backpressure`.
    pub events: u64,
    /// Connections closed for staying over it for the idle timeout.
    pub slow_consumer_closes: u64,
    /// Output queued for the kernel now, all connections.
    pub pending_output_bytes: u64,
    /// The most any one connection has had pending.
    pub pending_output_peak_bytes: u64,
}

#[derive(Debug, Serialize)]
pub struct Latency {
    pub count: u64,
    pub mean_us: f64,
    pub p50_us: f64,
    pub p90_us: f64,
    pub p99_us: f64,
    pub p99_9_us: f64,
    pub max_us: f64,
}

#[derive(Debug, Serialize)]
pub struct Process {
    pub resident_memory_bytes: u64,
    pub open_fds: u64,
    pub cpu_seconds: f64,
}

impl Snapshot {
    pub fn new(metrics: &Metrics, config: &Config, listen: SocketAddr, uptime: Duration) -> Snapshot {
        let m = metrics;
        Snapshot {
            server: ServerInfo {
                version: env!("CARGO_PKG_VERSION"),
                mode: config.mode.as_str(),
                listen: listen.to_string(),
                uptime_seconds: uptime.as_secs_f64(),
                latency_recording: !config.no_latency,
                publish_enabled: config.publish_token.is_some(),
                workers: config.workers,
            },
            connections: Connections {
                open: m.connections_open,
                max: config.max_connections as u64,
                accepted: m.connections_accepted,
                websocket_opened: m.websockets_opened,
                refused: RefusalKind::ALL.iter().map(|k| (k.as_str(), m.refused[*k as usize])).collect(),
                handshake_failures: Failure::ALL
                    .iter()
                    .map(|f| (f.as_str(), m.handshake_failures[*f as usize]))
                    .collect(),
                closed: m.closes.iter().map(|(code, n)| (code.to_string(), *n)).collect(),
                idle_closes: m.idle_closes,
                accept_errors: m.accept_errors,
            },
            http_requests: Route::ALL.iter().map(|r| (r.as_str(), m.http_requests[*r as usize])).collect(),
            messages: Messages {
                received: m.messages_in(),
                sent: m.messages_out(),
                bytes_received: m.bytes_in,
                bytes_sent: m.bytes_out,
            },
            frames_received: Frames::from(&m.frames_in),
            frames_sent: Frames::from(&m.frames_out),
            backpressure: Backpressure {
                events: m.backpressure_events,
                slow_consumer_closes: m.slow_consumer_closes,
                pending_output_bytes: m.pending_output_bytes,
                pending_output_peak_bytes: m.pending_output_peak,
            },
            latency: Latency::from(&m.latency_total()),
            latency_recent: Latency::from(&m.latency_window),
            rooms: Rooms {
                rooms: m.rooms.rooms,
                memberships: m.rooms.memberships,
                published: [("http", m.rooms.published_http), ("websocket", m.rooms.published_websocket)]
                    .into_iter()
                    .collect(),
                deliveries: m.rooms.deliveries,
                deliveries_dropped: m.rooms.deliveries_dropped,
                joins_refused: m.rooms.joins_refused,
            },
            fanout_latency: Latency::from(&m.fanout_latency_total()),
            fanout_latency_recent: Latency::from(&m.fanout_latency_window),
            process: Process::current(),
            loops: Vec::new(),
            redis: None,
        }
    }

    /// Adds what only a process of several loops, or with Redis, has.
    pub fn with_process(mut self, loops: &[u64], redis: Option<BridgeStats>) -> Snapshot {
        self.loops = loops.iter().enumerate().map(|(index, &connections)| LoopInfo { index, connections }).collect();
        self.redis = redis;
        self
    }

    pub fn to_json(&self) -> Vec<u8> {
        // Serializing plain structs of numbers and strings cannot fail.
        serde_json::to_vec_pretty(self).unwrap_or_default()
    }

    /// The Prometheus text exposition format, version 0.0.4: counters end in
    /// `_total`, units are seconds and bytes, latency is a summary.
    pub fn to_prometheus(&self, metrics: &Metrics) -> String {
        let mut out = String::with_capacity(4096);
        let mut family = |name: &str, kind: &str, help: &str, samples: &[(String, f64)]| {
            let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} {kind}");
            for (labels, value) in samples {
                let _ = writeln!(out, "{name}{labels} {value}");
            }
        };
        let one = |v: u64| vec![(String::new(), v as f64)];
        let labelled = |label: &str, values: &mut dyn Iterator<Item = (String, u64)>| -> Vec<(String, f64)> {
            values.map(|(k, v)| (format!("{{{label}=\"{k}\"}}"), v as f64)).collect()
        };
        let c = &self.connections;
        family(
            "wsloop_build_info",
            "gauge",
            "Version of the running server.",
            &[(format!("{{version=\"{}\"}}", self.server.version), 1.0)],
        );
        family(
            "wsloop_uptime_seconds",
            "gauge",
            "Seconds since the server started.",
            &[(String::new(), self.server.uptime_seconds)],
        );
        family("wsloop_connections", "gauge", "Connections open now (handshaking, open or closing).", &one(c.open));
        family("wsloop_connections_max", "gauge", "The --max-connections limit.", &one(c.max));
        family("wsloop_connections_accepted_total", "counter", "TCP connections accepted.", &one(c.accepted));
        family("wsloop_websocket_opened_total", "counter", "WebSocket handshakes completed.", &one(c.websocket_opened));
        family(
            "wsloop_connections_refused_total",
            "counter",
            "Requests refused with an HTTP error, by reason.",
            &labelled("reason", &mut c.refused.iter().map(|(k, v)| (k.to_string(), *v))),
        );
        family(
            "wsloop_handshake_failures_total",
            "counter",
            "Handshakes that ended without a response, by reason.",
            &labelled("reason", &mut c.handshake_failures.iter().map(|(k, v)| (k.to_string(), *v))),
        );
        family(
            "wsloop_disconnects_total",
            "counter",
            "Closed WebSocket connections by close code (1006: none exchanged).",
            &labelled("code", &mut c.closed.iter().map(|(k, v)| (k.clone(), *v))),
        );
        family("wsloop_idle_closes_total", "counter", "Connections closed by the idle timeout.", &one(c.idle_closes));
        family(
            "wsloop_accept_errors_total",
            "counter",
            "accept() failures for lack of descriptors or memory.",
            &one(c.accept_errors),
        );
        family(
            "wsloop_http_requests_total",
            "counter",
            "Plain HTTP requests answered, by route.",
            &labelled("route", &mut self.http_requests.iter().map(|(k, v)| (k.to_string(), *v))),
        );
        let msg = &self.messages;
        family("wsloop_messages_received_total", "counter", "Data messages received.", &one(msg.received));
        family("wsloop_messages_sent_total", "counter", "Data messages sent.", &one(msg.sent));
        family(
            "wsloop_received_bytes_total",
            "counter",
            "Payload bytes of data messages received.",
            &one(msg.bytes_received),
        );
        family("wsloop_sent_bytes_total", "counter", "Payload bytes of data messages sent.", &one(msg.bytes_sent));
        family(
            "wsloop_frames_received_total",
            "counter",
            "Frames received, by type.",
            &self.frames_received.labelled(),
        );
        family("wsloop_frames_sent_total", "counter", "Frames sent, by type.", &self.frames_sent.labelled());
        let bp = &self.backpressure;
        family(
            "wsloop_backpressure_events_total",
            "counter",
            "Times a connection's pending output passed the limit.",
            &one(bp.events),
        );
        family(
            "wsloop_slow_consumer_closes_total",
            "counter",
            "Connections closed for staying over the limit.",
            &one(bp.slow_consumer_closes),
        );
        family(
            "wsloop_pending_output_bytes",
            "gauge",
            "Output queued for the kernel, all connections.",
            &one(bp.pending_output_bytes),
        );
        family(
            "wsloop_pending_output_peak_bytes",
            "gauge",
            "The most output one connection has had pending.",
            &one(bp.pending_output_peak_bytes),
        );

        let r = &self.rooms;
        family("wsloop_rooms", "gauge", "Rooms with members.", &one(r.rooms));
        family("wsloop_room_memberships", "gauge", "Memberships, all rooms together.", &one(r.memberships));
        family(
            "wsloop_messages_published_total",
            "counter",
            "Messages published to rooms, by source.",
            &labelled("source", &mut r.published.iter().map(|(k, v)| (k.to_string(), *v))),
        );
        family("wsloop_deliveries_total", "counter", "Published messages queued for a member.", &one(r.deliveries));
        family(
            "wsloop_deliveries_dropped_total",
            "counter",
            "Deliveries not made to slow consumers.",
            &one(r.deliveries_dropped),
        );
        family("wsloop_room_joins_refused_total", "counter", "Room joins refused by a limit.", &one(r.joins_refused));

        let summary = |h: &Histogram<u64>| {
            let mut samples: Vec<(String, f64)> = [0.5, 0.9, 0.99, 0.999]
                .iter()
                .map(|q| (format!("{{quantile=\"{q}\"}}"), quantile_ns(h, *q) as f64 / 1e9))
                .collect();
            // A summary's _sum and _count samples follow its quantiles.
            samples.push(("_sum".to_string(), h.mean() * h.len() as f64 / 1e9));
            samples.push(("_count".to_string(), h.len() as f64));
            samples
        };
        family(
            "wsloop_message_service_seconds",
            "summary",
            "Service latency: message complete in memory to reply accepted by the kernel.",
            &summary(&metrics.latency_total()),
        );
        family(
            "wsloop_fanout_seconds",
            "summary",
            "Fan-out latency: message to a room complete in memory to the last member's copy accepted by the kernel.",
            &summary(&metrics.fanout_latency_total()),
        );

        if !self.loops.is_empty() {
            let per_loop: Vec<(String, f64)> =
                self.loops.iter().map(|l| (format!("{{loop=\"{}\"}}", l.index), l.connections as f64)).collect();
            family("wsloop_loop_connections", "gauge", "Connections open on each event loop.", &per_loop);
        }
        if let Some(r) = &self.redis {
            family(
                "wsloop_redis_connected",
                "gauge",
                "1 while the Redis bridge is connected.",
                &one(u64::from(r.connected)),
            );
            family("wsloop_redis_published_total", "counter", "Messages published to Redis.", &one(r.published));
            family("wsloop_redis_received_total", "counter", "Messages from other processes.", &one(r.received));
            family(
                "wsloop_redis_dropped_total",
                "counter",
                "Messages not published to Redis, by reason.",
                &labelled(
                    "reason",
                    &mut [("queue_full", r.dropped_queue_full), ("redis_away", r.dropped_redis_away)]
                        .into_iter()
                        .map(|(k, v)| (k.to_string(), v)),
                ),
            );
            family("wsloop_redis_reconnects_total", "counter", "Times Redis was reached again.", &one(r.reconnects));
            family("wsloop_redis_rooms", "gauge", "Rooms subscribed to at Redis.", &one(r.subscribed as u64));
        }
        let p = &self.process;
        family(
            "process_resident_memory_bytes",
            "gauge",
            "Resident memory size in bytes.",
            &one(p.resident_memory_bytes),
        );
        family("process_open_fds", "gauge", "Number of open file descriptors.", &one(p.open_fds));
        family(
            "process_cpu_seconds_total",
            "counter",
            "User and system CPU time spent in seconds.",
            &[(String::new(), p.cpu_seconds)],
        );
        out
    }

    /// The periodic log line's fields, with rates over `interval` from `previous`.
    pub fn log_line(&self, previous_in: u64, previous_out: u64, interval: Duration) -> String {
        let secs = interval.as_secs_f64().max(1e-3);
        let recent = &self.latency_recent;
        format!(
            "connections {} | msgs/s in {:.0} out {:.0} | latency p50 {:.0}us p99 {:.0}us max {:.0}us | pending {} B | rss {} MiB",
            self.connections.open,
            (self.messages.received - previous_in) as f64 / secs,
            (self.messages.sent - previous_out) as f64 / secs,
            recent.p50_us,
            recent.p99_us,
            recent.max_us,
            self.backpressure.pending_output_bytes,
            self.process.resident_memory_bytes >> 20,
        )
    }
}

impl From<&FrameCounts> for Frames {
    fn from(f: &FrameCounts) -> Frames {
        Frames { text: f.text, binary: f.binary, ping: f.ping, pong: f.pong, close: f.close }
    }
}

impl Frames {
    fn labelled(&self) -> Vec<(String, f64)> {
        [("text", self.text), ("binary", self.binary), ("ping", self.ping), ("pong", self.pong), ("close", self.close)]
            .iter()
            .map(|(t, v)| (format!("{{type=\"{t}\"}}"), *v as f64))
            .collect()
    }
}

impl From<&Histogram<u64>> for Latency {
    fn from(h: &Histogram<u64>) -> Latency {
        let us = |ns: u64| ns as f64 / 1000.0;
        Latency {
            count: h.len(),
            mean_us: if h.is_empty() { 0.0 } else { h.mean() / 1000.0 },
            p50_us: us(quantile_ns(h, 0.5)),
            p90_us: us(quantile_ns(h, 0.9)),
            p99_us: us(quantile_ns(h, 0.99)),
            p99_9_us: us(quantile_ns(h, 0.999)),
            max_us: us(if h.is_empty() { 0 } else { h.max() }),
        }
    }
}

fn quantile_ns(h: &Histogram<u64>, q: f64) -> u64 {
    if h.is_empty() {
        0
    } else {
        h.value_at_quantile(q)
    }
}

impl Process {
    /// Reads this process's figures from /proc and getrusage (a few
    /// syscalls: only on a scrape or a log line, never per message).
    pub fn current() -> Process {
        Process { resident_memory_bytes: resident_bytes(), open_fds: open_fds(), cpu_seconds: cpu_seconds() }
    }
}

fn resident_bytes() -> u64 {
    let statm = std::fs::read_to_string("/proc/self/statm").unwrap_or_default();
    let pages: u64 = statm.split_whitespace().nth(1).and_then(|p| p.parse().ok()).unwrap_or(0);
    // SAFETY: sysconf has no preconditions.
    let page = unsafe { libc::sysconf(libc::_SC_PAGESIZE) };
    pages * u64::try_from(page).unwrap_or(4096)
}

fn open_fds() -> u64 {
    // Minus one: the directory handle used to count them.
    std::fs::read_dir("/proc/self/fd").map(|d| d.count().saturating_sub(1) as u64).unwrap_or(0)
}

fn cpu_seconds() -> f64 {
    let mut usage = std::mem::MaybeUninit::<libc::rusage>::zeroed();
    // SAFETY: getrusage fills the struct we pass.
    if unsafe { libc::getrusage(libc::RUSAGE_SELF, usage.as_mut_ptr()) } != 0 {
        return 0.0;
    }
    // SAFETY: initialised by the successful call above.
    let usage = unsafe { usage.assume_init() };
    let secs = |t: libc::timeval| t.tv_sec as f64 + t.tv_usec as f64 / 1e6;
    secs(usage.ru_utime) + secs(usage.ru_stime)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> (Metrics, Config) {
        let mut m = Metrics::default();
        m.connections_open = 2;
        m.connections_accepted = 5;
        m.count_close(1000);
        m.count_refusal(RefusalKind::TooManyConnections);
        m.frames_in.text = 7;
        m.frames_in.ping = 3;
        m.record_latency(20_000, 10);
        (m, Config::default())
    }

    #[test]
    fn json_has_the_documented_fields() {
        let (m, config) = sample();
        let snapshot = Snapshot::new(&m, &config, "127.0.0.1:9001".parse().unwrap(), Duration::from_secs(3));
        let json: serde_json::Value = serde_json::from_slice(&snapshot.to_json()).unwrap();
        assert_eq!(json["connections"]["open"], 2);
        assert_eq!(json["connections"]["refused"]["too_many_connections"], 1);
        assert_eq!(json["connections"]["closed"]["1000"], 1);
        assert_eq!(json["frames_received"]["ping"], 3);
        assert_eq!(json["messages"]["received"], 7);
        assert_eq!(json["latency"]["count"], 10);
        assert!((json["latency"]["p50_us"].as_f64().unwrap() - 20.0).abs() < 0.1);
        assert!(json["process"]["resident_memory_bytes"].as_u64().unwrap() > 0);
        assert!(json["process"]["open_fds"].as_u64().unwrap() > 0);
    }

    #[test]
    fn prometheus_text_is_well_formed() {
        let (m, config) = sample();
        let snapshot = Snapshot::new(&m, &config, "127.0.0.1:9001".parse().unwrap(), Duration::from_secs(3));
        let text = snapshot.to_prometheus(&m);
        assert!(text.contains("# TYPE wsloop_connections gauge\nwsloop_connections 2\n"));
        assert!(text.contains("wsloop_connections_refused_total{reason=\"too_many_connections\"} 1\n"));
        assert!(text.contains("wsloop_disconnects_total{code=\"1000\"} 1\n"));
        assert!(text.contains("wsloop_message_service_seconds_count 10\n"));
        for line in text.lines().filter(|l| !l.starts_with('#')) {
            let (name, value) = line.rsplit_once(' ').unwrap();
            assert!(value.parse::<f64>().is_ok(), "{line}");
            assert!(name.starts_with("wsloop_") || name.starts_with("process_"), "{line}");
        }
        for line in text.lines().filter(|l| l.starts_with("# TYPE")) {
            let name = line.split_whitespace().nth(2).unwrap();
            if line.ends_with("counter") {
                assert!(name.ends_with("_total"), "{line}");
            }
        }
    }
}
