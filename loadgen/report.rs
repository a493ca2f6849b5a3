//! The results: one [`Report`] built from the merged loop figures, printed
//! as a human summary and written as JSON.
//!
//! The JSON field names are a stable interface for scripts (documented in
//! the README, "Load testing"); add fields, never rename them. Latencies are in
//! microseconds, rates per second, sizes in bytes (payload only: frame
//! headers and TCP/IP overhead excluded), MB are 10^6 bytes.

use std::{collections::BTreeMap, fmt::Write as _};

use hdrhistogram::Histogram;
use serde::Serialize;
use wsloop::sys::CpuTime;

use crate::{
    cli::{Mode, Settings},
    metrics::{Fault, OpenFailure, Stats},
    progress::{group, Tick},
    tls::{Trust, FAILURE_REASONS},
};

/// The JSON document's version: bumped only if a field changes meaning.
pub const SCHEMA: &str = "loadgen-report/1";

/// A loop busy (not waiting in `epoll_wait`) for at least this fraction of
/// the window counts as saturated: it hardly ever waited for the server, so
/// its own speed, not the server's, set the pace. A loop that keeps up with
/// the server waits for each batch of echoes; 10% of slack is what is left
/// when it barely does.
pub const SATURATED_BUSY: f64 = 0.9;

#[derive(Debug, Serialize)]
pub struct Report {
    /// [`SCHEMA`].
    pub schema: &'static str,
    /// The workload (`echo`, `rate`, `idle`, `churn`).
    pub mode: &'static str,
    /// The target as given (with several, the first).
    pub url: String,
    /// Every target, in order: connection `i` went to target `i mod N`,
    /// with the latency of what came back on that target's connections.
    pub targets: Vec<TargetOut>,
    /// The run's parameters.
    pub settings: SettingsOut,
    /// Success, or why not.
    pub result: Outcome,
    /// Length of the measurement window, seconds.
    pub window_s: f64,
    /// What happened to the connections.
    pub connections: Connections,
    /// Handshake latency and failures.
    pub handshake: Handshakes,
    /// `wss://`: what the measured handshakes negotiated, resumed or not; null for `ws://`.
    pub tls: Option<TlsOut>,
    /// Counts and throughput of the window.
    pub messages: Messages,
    /// Round trip from each message's intended send time (ping RTT in idle mode).
    pub latency_us: Latency,
    /// Broadcast mode: rooms, publishing and fan-out, the whole run's
    /// delivery account, the slow subscribers' losses; null in the other modes.
    pub broadcast: Option<BroadcastOut>,
    /// Rate mode: round trip from the actual send time (what ignoring coordinated omission reports).
    pub latency_uncorrected_us: Option<Latency>,
    /// Idle mode: stamped data messages that arrived (a publish reaching the
    /// held connections); null in the other modes.
    pub idle: Option<IdleOut>,
    /// Every error by kind.
    pub errors: Errors,
    /// loadgen's own CPU time.
    pub cpu: Cpu,
    /// One entry per second of the run.
    pub timeline: Vec<Tick>,
}

#[derive(Debug, Serialize)]
pub struct SettingsOut {
    /// `--connections`.
    pub connections: u64,
    /// `--threads`.
    pub threads: usize,
    /// `--size`.
    pub size_bytes: usize,
    /// `binary` or `text`.
    pub encoding: &'static str,
    /// `--pipeline`.
    pub pipeline: u32,
    /// `--rate`.
    pub rate_per_s: Option<u64>,
    /// `--messages`.
    pub messages: Option<u64>,
    /// `--duration`.
    pub duration_s: f64,
    /// `--warmup`.
    pub warmup_s: f64,
    /// `--connect-rate`.
    pub connect_rate_per_s: Option<u64>,
    /// `--connect-batch`.
    pub connect_batch: usize,
    /// `--connect-timeout`.
    pub connect_timeout_s: f64,
    /// `--message-timeout`.
    pub message_timeout_s: f64,
    /// `--ping-interval`.
    pub ping_interval_s: f64,
    /// `--max-errors`.
    pub max_errors: u64,
    /// `--source-ip`.
    pub source_ips: Vec<String>,
    /// `--rooms` (broadcast mode; null otherwise).
    pub rooms: Option<u32>,
    /// `--publishers` (broadcast mode; null otherwise).
    pub publishers: Option<u32>,
    /// `--slow` (broadcast mode; null otherwise).
    pub slow: Option<u32>,
    /// `wss://`: which certificates were accepted: `webpki_roots` (Mozilla's,
    /// built in), `ca` (`--ca`) or `insecure` (`--insecure`: any); null for `ws://`.
    pub tls_trust: Option<&'static str>,
    /// `--ca` (null without it).
    pub tls_ca: Option<String>,
    /// `--tls-resume` (`wss://`; null for `ws://`).
    pub tls_resume: Option<&'static str>,
    /// `--tls-version` (`wss://`; null for `ws://`).
    pub tls_version: Option<&'static str>,
}

#[derive(Debug, Serialize)]
pub struct TlsOut {
    /// TLS handshakes measured (= `handshake.count`).
    pub handshakes: u64,
    /// Of those, full handshakes (certificate and key exchange).
    pub full: u64,
    /// Of those, handshakes that resumed an earlier session (ticket or session ID).
    pub resumed: u64,
    /// `resumed / handshakes`; null when none was measured.
    pub resumed_fraction: Option<f64>,
    /// Handshakes by protocol version (`"TLSv1.3"`, `"TLSv1.2"`).
    pub versions: BTreeMap<&'static str, u64>,
    /// Handshakes by cipher suite (`"TLS13_AES_256_GCM_SHA384"`).
    pub cipher_suites: BTreeMap<&'static str, u64>,
}

#[derive(Debug, Serialize)]
pub struct TargetOut {
    /// The URL as given.
    pub url: String,
    /// Connections planned for it (connection `i` goes to target `i mod N`).
    pub connections: u64,
    /// `latency_us` over the messages received on its connections
    /// (broadcast: deliveries to its subscribers, whichever target published them).
    pub latency_us: Latency,
}

#[derive(Debug, Serialize)]
pub struct IdleOut {
    /// Data messages with a valid stamp and filler (`wsloop::wire`) received, whenever they arrived.
    pub deliveries: u64,
    /// Connections that received at least one.
    pub connections_reached: u64,
    /// From each stamp's intended time to its arrival (CLOCK_MONOTONIC: publisher on the same host).
    pub latency_us: Latency,
    /// Data messages that were not a stamped payload (neither deliveries nor errors).
    pub unstamped: u64,
    /// What the first of those looked like; null if none.
    pub first_unstamped: Option<String>,
}

#[derive(Debug, Serialize)]
pub struct BroadcastOut {
    /// `--rooms`.
    pub rooms: u32,
    /// `--publishers`.
    pub publishers: u32,
    /// Subscribers (every connection that opened, publishers included) that are not `--slow`.
    pub subscribers: u64,
    /// Messages published with an intended send time in the window (`messages.sent`).
    pub published: u64,
    /// `published / window_s`.
    pub published_per_s: f64,
    /// Their deliveries to the subscribers that are not slow, intact, whenever
    /// they arrived (`messages.received`): what the latency figures cover.
    pub deliveries: u64,
    /// `deliveries / window_s`.
    pub deliveries_per_s: f64,
    /// `deliveries / published`: how many subscribers each message reached
    /// (the room's size, slow subscribers aside); null when nothing was published.
    pub fan_out: Option<f64>,
    /// The whole run (warm-up and drain included): deliveries owed to the
    /// subscribers that are not slow (what their rooms' publishers sent).
    pub expected_deliveries: u64,
    /// Of those, the ones that arrived; the rest is `errors.missing`.
    pub delivered: u64,
    /// The `--slow` subscribers: what they lost, which fails nothing.
    pub slow: SlowOut,
}

#[derive(Debug, Serialize)]
pub struct SlowOut {
    /// Slow subscribers that opened.
    pub subscribers: u64,
    /// Deliveries owed to them over the whole run.
    pub expected_deliveries: u64,
    /// Of those, the ones that arrived (read after traffic stopped).
    pub delivered: u64,
    /// `expected_deliveries - delivered`: what the server's slow-consumer policy dropped.
    pub lost: u64,
    /// `lost / expected_deliveries`; null when nothing was owed.
    pub lost_fraction: Option<f64>,
    /// How the server ended slow subscribers before loadgen did: by close
    /// code (`"1008"`), `"no code"`, `"eof"` (no close frame), `"reset"`.
    pub closed_by_server: BTreeMap<String, u64>,
}

#[derive(Debug, Serialize, Clone)]
pub struct Outcome {
    /// Whether the run succeeded (false when it failed or was interrupted).
    pub ok: bool,
    /// `ok`, `failed` or `interrupted`.
    pub status: Status,
    /// The process's exit status.
    pub exit_code: u8,
    /// Why the run failed or how far an interrupted run got (one line); null on success.
    pub reason: Option<String>,
    /// The signal that ended the run early (`SIGINT`, `SIGTERM`), if one did.
    pub interrupted_by: Option<&'static str>,
}

/// How a run ended.
#[derive(Debug, Serialize, Clone, Copy, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum Status {
    /// It ran to the end within `--max-errors`.
    Ok,
    /// Unreachable target or too many errors.
    Failed,
    /// Stopped early by SIGINT or SIGTERM; the figures cover what ran.
    Interrupted,
}

#[derive(Debug, Serialize)]
pub struct Connections {
    /// `--connections`.
    pub target: u64,
    /// Handshakes completed (in churn mode: over the whole run).
    pub established: u64,
    /// Attempts that failed (see `handshake.failures`).
    pub failed: u64,
    /// Most connections open at once.
    pub peak_open: u64,
    /// Open connections that the server closed or reset (`errors.closed + errors.reset`).
    pub dropped: u64,
}

#[derive(Debug, Serialize)]
pub struct Handshakes {
    /// Handshakes measured (all of them; in churn mode those started in the window).
    pub count: u64,
    /// Churn mode: handshakes completed per second in the window.
    pub per_s: Option<f64>,
    /// From `connect()` to the complete 101 response.
    pub latency_us: Latency,
    /// Its first part: from `connect()` to TCP connected.
    pub tcp_latency_us: Latency,
    /// `wss://`: its second part, from TCP connected to the TLS handshake done; null for `ws://`.
    pub tls_latency_us: Option<Latency>,
    /// Its last part: from the upgrade request (sent once TCP, or TLS, is up) to the complete 101.
    pub upgrade_latency_us: Latency,
    /// Failed attempts by kind (every kind present, zeros included).
    pub failures: BTreeMap<&'static str, u64>,
    /// Non-101 responses by status code.
    pub http_statuses: BTreeMap<String, u64>,
    /// `wss://`: the `tls` failures by reason (`bad_certificate`, `alert`,
    /// `protocol`, `other`; every one present, zeros included); null for `ws://`.
    pub tls_failures: Option<BTreeMap<&'static str, u64>>,
}

#[derive(Debug, Serialize)]
pub struct Messages {
    /// Messages (pings in idle mode) sent with an intended time in the window.
    pub sent: u64,
    /// Their echoes received intact (whenever they arrived).
    pub received: u64,
    /// Payload bytes of `sent`.
    pub bytes_sent: u64,
    /// Payload bytes of `received`.
    pub bytes_received: u64,
    /// `received / window_s`.
    pub per_s: f64,
    /// `bytes_received / window_s / 10^6`.
    pub mb_per_s: f64,
    /// Echoes that arrived after they had been counted missing.
    pub late: u64,
    /// Rate mode: sends due on connections that had dropped.
    pub not_sent: u64,
    /// Churn mode: connect–echo–close cycles completed in the window.
    pub churn_cycles: u64,
}

#[derive(Debug, Serialize, Clone, Copy)]
pub struct Latency {
    /// Values recorded.
    pub count: u64,
    /// Smallest value.
    pub min: f64,
    /// Arithmetic mean.
    pub mean: f64,
    /// Standard deviation.
    pub stdev: f64,
    /// Median.
    pub p50: f64,
    /// 90th percentile.
    pub p90: f64,
    /// 99th percentile.
    pub p99: f64,
    /// 99.9th percentile.
    pub p99_9: f64,
    /// 99.99th percentile.
    pub p99_99: f64,
    /// Largest value.
    pub max: f64,
}

#[derive(Debug, Serialize)]
pub struct Errors {
    /// Everything `--max-errors` is compared with: `connect_failures` plus every fault below.
    pub total: u64,
    /// Failed connection attempts.
    pub connect_failures: u64,
    /// See [`Fault::Corrupt`].
    pub corrupt: u64,
    /// See [`Fault::Missing`].
    pub missing: u64,
    /// See [`Fault::Duplicate`].
    pub duplicate: u64,
    /// See [`Fault::Closed`].
    pub closed: u64,
    /// See [`Fault::Reset`].
    pub reset: u64,
    /// See [`Fault::Protocol`].
    pub protocol: u64,
    /// See [`Fault::OutOfOrder`] (broadcast).
    pub out_of_order: u64,
    /// See [`Fault::Foreign`] (broadcast).
    pub foreign: u64,
    /// The first occurrence of each kind, described.
    pub first: BTreeMap<&'static str, String>,
}

#[derive(Debug, Serialize)]
pub struct Cpu {
    /// User time of the loop threads inside the measurement window.
    pub window_user_s: f64,
    /// System time of the same threads in the same window.
    pub window_system_s: f64,
    /// Window CPU time over the window length: 1.0 is one core busy.
    pub cores_busy: f64,
    /// Window CPU time per message received, microseconds.
    pub per_message_us: Option<f64>,
    /// How busy the busiest loop was in the window (1.0 = all of it): the
    /// larger of the time it spent not waiting in `epoll_wait` (running, in
    /// the kernel, or waiting for a CPU, which CPU time misses) and its CPU
    /// time. Near 1.0 it never waited for the server.
    pub loop_busy: f64,
    /// `loop_busy` reached [`SATURATED_BUSY`]: the client, not the server,
    /// may have set the pace of this run.
    pub client_saturated: bool,
    /// User time of the whole process, start to exit (ramp, close and reporting included).
    pub process_user_s: f64,
    /// System time of the whole process.
    pub process_system_s: f64,
}

impl Latency {
    pub fn from_histogram(h: &Histogram<u64>) -> Latency {
        if h.is_empty() {
            return Latency {
                count: 0,
                min: 0.0,
                mean: 0.0,
                stdev: 0.0,
                p50: 0.0,
                p90: 0.0,
                p99: 0.0,
                p99_9: 0.0,
                p99_99: 0.0,
                max: 0.0,
            };
        }
        let us = |ns: u64| ns as f64 / 1e3;
        Latency {
            count: h.len(),
            min: us(h.min()),
            mean: h.mean() / 1e3,
            stdev: h.stdev() / 1e3,
            p50: us(h.value_at_quantile(0.5)),
            p90: us(h.value_at_quantile(0.9)),
            p99: us(h.value_at_quantile(0.99)),
            p99_9: us(h.value_at_quantile(0.999)),
            p99_99: us(h.value_at_quantile(0.9999)),
            max: us(h.max()),
        }
    }
}

/// Everything the report is built from.
pub struct Inputs<'a> {
    /// The run's settings.
    pub settings: &'a Settings,
    /// All loops' figures, merged.
    pub stats: &'a Stats,
    /// The measurement window's length (the longest of the loops').
    pub window_ns: u64,
    /// The loops' CPU time inside their windows.
    pub window_cpu: CpuTime,
    /// The busiest loop's busy fraction of its window.
    pub loop_busy: f64,
    /// The whole process's CPU time.
    pub process_cpu: CpuTime,
    /// One entry per second.
    pub timeline: Vec<Tick>,
    /// Success, or why not.
    pub outcome: Outcome,
}

impl Report {
    pub fn new(inputs: Inputs<'_>) -> Report {
        let Inputs { settings: s, stats, window_ns, window_cpu, loop_busy, process_cpu, timeline, outcome } = inputs;
        let window_s = window_ns as f64 / 1e9;
        let per_s = |n: u64| if window_s > 0.0 { n as f64 / window_s } else { 0.0 };
        let secs = |d: std::time::Duration| d.as_secs_f64();
        let fault = |f: Fault| stats.faults[f as usize];
        Report {
            schema: SCHEMA,
            mode: s.mode.as_str(),
            url: s.url.clone(),
            targets: s
                .targets
                .iter()
                .enumerate()
                .map(|(i, target)| {
                    let n = s.targets.len() as u64;
                    TargetOut {
                        url: target.url.clone(),
                        connections: s.connections / n + u64::from((i as u64) < s.connections % n),
                        latency_us: Latency::from_histogram(stats.by_target.get(i).unwrap_or(&stats.latency)),
                    }
                })
                .collect(),
            settings: SettingsOut {
                connections: s.connections,
                threads: s.threads,
                size_bytes: s.size,
                encoding: s.encoding.as_str(),
                pipeline: s.pipeline,
                rate_per_s: s.rate,
                messages: s.messages,
                duration_s: secs(s.duration),
                warmup_s: secs(s.warmup),
                connect_rate_per_s: s.connect_rate,
                connect_batch: s.connect_batch,
                connect_timeout_s: secs(s.connect_timeout),
                message_timeout_s: secs(s.message_timeout),
                ping_interval_s: secs(s.ping_interval),
                max_errors: s.max_errors,
                source_ips: s.source_ips.iter().map(|ip| ip.to_string()).collect(),
                rooms: s.layout.map(|l| l.rooms),
                publishers: s.layout.map(|l| l.publishers),
                slow: s.layout.map(|l| l.slow),
                tls_trust: s.tls.as_ref().map(|t| t.trust.as_str()),
                tls_ca: s.tls.as_ref().and_then(|t| match &t.trust {
                    Trust::Ca { path, .. } => Some(path.display().to_string()),
                    _ => None,
                }),
                tls_resume: s.tls.as_ref().map(|t| t.resume.as_str()),
                tls_version: s.tls.as_ref().map(|t| t.version.as_str()),
            },
            result: outcome,
            window_s,
            connections: Connections {
                target: s.connections,
                established: stats.opened,
                failed: stats.failures_total(),
                peak_open: stats.peak_open,
                dropped: fault(Fault::Closed) + fault(Fault::Reset),
            },
            handshake: Handshakes {
                count: stats.handshake.len(),
                per_s: (s.mode == Mode::Churn).then(|| per_s(stats.handshakes_in_window)),
                latency_us: Latency::from_histogram(&stats.handshake),
                tcp_latency_us: Latency::from_histogram(&stats.handshake_tcp),
                tls_latency_us: s.tls.as_ref().map(|_| Latency::from_histogram(&stats.handshake_tls)),
                upgrade_latency_us: Latency::from_histogram(&stats.handshake_upgrade),
                failures: OpenFailure::ALL.iter().map(|f| (f.as_str(), stats.failures[*f as usize])).collect(),
                http_statuses: stats.http_statuses.iter().map(|(code, n)| (code.to_string(), *n)).collect(),
                tls_failures: s.tls.as_ref().map(|_| {
                    FAILURE_REASONS
                        .iter()
                        .map(|reason| (*reason, stats.tls_failures.get(reason).copied().unwrap_or(0)))
                        .collect()
                }),
            },
            tls: s.tls.as_ref().map(|_| {
                let t = &stats.tls;
                let handshakes = t.full + t.resumed;
                TlsOut {
                    handshakes,
                    full: t.full,
                    resumed: t.resumed,
                    resumed_fraction: (handshakes > 0).then(|| t.resumed as f64 / handshakes as f64),
                    versions: t.versions.clone(),
                    cipher_suites: t.cipher_suites.clone(),
                }
            }),
            messages: Messages {
                sent: stats.sent,
                received: stats.received,
                bytes_sent: stats.bytes_sent,
                bytes_received: stats.bytes_received,
                per_s: per_s(stats.received),
                mb_per_s: per_s(stats.bytes_received) / 1e6,
                late: stats.late,
                not_sent: stats.not_sent,
                churn_cycles: stats.cycles,
            },
            latency_us: Latency::from_histogram(&stats.latency),
            broadcast: s.layout.map(|layout| {
                let f = &stats.fanout;
                let slow_lost = f.slow_owed.saturating_sub(f.slow_delivered);
                BroadcastOut {
                    rooms: layout.rooms,
                    publishers: layout.publishers,
                    subscribers: f.subscribers,
                    published: stats.sent,
                    published_per_s: per_s(stats.sent),
                    deliveries: stats.received,
                    deliveries_per_s: per_s(stats.received),
                    fan_out: (stats.sent > 0).then(|| stats.received as f64 / stats.sent as f64),
                    expected_deliveries: f.owed,
                    delivered: f.delivered,
                    slow: SlowOut {
                        subscribers: f.slow_subscribers,
                        expected_deliveries: f.slow_owed,
                        delivered: f.slow_delivered,
                        lost: slow_lost,
                        lost_fraction: (f.slow_owed > 0).then(|| slow_lost as f64 / f.slow_owed as f64),
                        closed_by_server: f.slow_closed.clone(),
                    },
                }
            }),
            latency_uncorrected_us: s.rate.is_some().then(|| Latency::from_histogram(&stats.uncorrected)),
            idle: (s.mode == Mode::Idle).then(|| IdleOut {
                deliveries: stats.idle.latency.len(),
                connections_reached: stats.idle.connections_reached,
                latency_us: Latency::from_histogram(&stats.idle.latency),
                unstamped: stats.idle.unstamped,
                first_unstamped: stats.idle.first_unstamped.clone(),
            }),
            errors: Errors {
                total: stats.errors_total(),
                connect_failures: stats.failures_total(),
                corrupt: fault(Fault::Corrupt),
                missing: fault(Fault::Missing),
                duplicate: fault(Fault::Duplicate),
                closed: fault(Fault::Closed),
                reset: fault(Fault::Reset),
                protocol: fault(Fault::Protocol),
                out_of_order: fault(Fault::OutOfOrder),
                foreign: fault(Fault::Foreign),
                first: stats.first_seen.clone(),
            },
            cpu: Cpu {
                window_user_s: window_cpu.user_ns as f64 / 1e9,
                window_system_s: window_cpu.system_ns as f64 / 1e9,
                cores_busy: if window_ns > 0 { window_cpu.total_ns() as f64 / window_ns as f64 } else { 0.0 },
                per_message_us: (stats.received > 0)
                    .then(|| window_cpu.total_ns() as f64 / stats.received as f64 / 1e3),
                loop_busy,
                client_saturated: window_ns > 0 && loop_busy >= SATURATED_BUSY,
                process_user_s: process_cpu.user_ns as f64 / 1e9,
                process_system_s: process_cpu.system_ns as f64 / 1e9,
            },
            timeline,
        }
    }

    /// The human summary (stdout).
    pub fn summary(&self, settings: &Settings) -> String {
        let mut out = String::new();
        let _ = writeln!(out, "loadgen {}", settings.describe());
        let c = &self.connections;
        let _ = writeln!(
            out,
            "  connections  {} established of {}{}, {} failed, peak {} open, {} dropped",
            group(c.established),
            group(c.target),
            if settings.mode == Mode::Churn { " at a time" } else { "" },
            group(c.failed),
            group(c.peak_open),
            group(c.dropped)
        );
        let h = &self.handshake;
        let rate = h.per_s.map(|r| format!("  {} handshakes/s", group(r as u64))).unwrap_or_default();
        let _ = writeln!(out, "  handshakes   {}{rate}  ({} measured)", percentiles(&h.latency_us), group(h.count));
        if h.count > 0 {
            let _ = writeln!(out, "    tcp        {}  (connect)", percentiles(&h.tcp_latency_us));
            if let (Some(latency), Some(tls)) = (&h.tls_latency_us, &self.tls) {
                let versions: Vec<String> = tls.versions.iter().map(|(v, n)| format!("{v} x{}", group(*n))).collect();
                let _ = writeln!(
                    out,
                    "    tls        {}  ({}; {} resumed, {} full)",
                    percentiles(latency),
                    versions.join(", "),
                    group(tls.resumed),
                    group(tls.full)
                );
            }
            let _ = writeln!(out, "    upgrade    {}  (request to 101)", percentiles(&h.upgrade_latency_us));
        }
        let m = &self.messages;
        if let Some(b) = &self.broadcast {
            self.broadcast_lines(b, &mut out);
        } else {
            let what = if settings.mode == Mode::Idle { "pings" } else { "echoes" };
            let _ = writeln!(
                out,
                "  throughput   {} msgs/s  {:.2} MB/s  ({} {what} in {:.2} s{})",
                group(m.per_s as u64),
                m.mb_per_s,
                group(m.received),
                self.window_s,
                if settings.mode == Mode::Churn {
                    format!(", {} cycles", group(m.churn_cycles))
                } else {
                    String::new()
                }
            );
        }
        let label = if settings.mode == Mode::Idle { "ping rtt   " } else { "latency    " };
        let basis = match (settings.mode, settings.rate) {
            (Mode::Rate, _) => "  (from intended send time)",
            (Mode::Broadcast, Some(_)) => "  (from intended send time to each subscriber)",
            (Mode::Broadcast, None) => "  (from send time to each subscriber)",
            _ => "",
        };
        let _ = writeln!(out, "  {label}  {}{basis}", percentiles(&self.latency_us));
        if let Some(uncorrected) = &self.latency_uncorrected_us {
            let _ = writeln!(out, "  uncorrected  {}  (from actual send time)", percentiles(uncorrected));
        }
        if self.targets.len() > 1 {
            for (i, target) in self.targets.iter().enumerate() {
                let _ = writeln!(
                    out,
                    "  target {i:<5} {}  ({}, {} connections)",
                    percentiles(&target.latency_us),
                    target.url,
                    group(target.connections)
                );
            }
        }
        if let Some(idle) = &self.idle {
            Report::idle_lines(idle, self.connections.established, &mut out);
        }
        if let Some(b) = &self.broadcast {
            Report::broadcast_account(b, &mut out);
        }
        let e = &self.errors;
        if e.total == 0 {
            let _ = writeln!(out, "  errors       none");
        } else {
            let mut kinds: Vec<String> = self
                .handshake
                .failures
                .iter()
                .filter(|(_, n)| **n > 0)
                .map(|(kind, n)| format!("connect {kind} {}", group(*n)))
                .collect();
            for (kind, n) in [
                ("corrupt", e.corrupt),
                ("missing", e.missing),
                ("duplicate", e.duplicate),
                ("closed", e.closed),
                ("reset", e.reset),
                ("protocol", e.protocol),
                ("out_of_order", e.out_of_order),
                ("foreign", e.foreign),
            ] {
                if n > 0 {
                    kinds.push(format!("{kind} {}", group(n)));
                }
            }
            let _ = writeln!(out, "  errors       {}: {}", group(e.total), kinds.join(", "));
            for (kind, detail) in &e.first {
                let _ = writeln!(out, "               first {kind}: {detail}");
            }
        }
        if let Some(reasons) = &self.handshake.tls_failures {
            let failed: Vec<String> =
                reasons.iter().filter(|(_, n)| **n > 0).map(|(k, n)| format!("{k} x{}", group(*n))).collect();
            if !failed.is_empty() {
                let _ = writeln!(out, "  tls failed   {}", failed.join(", "));
            }
        }
        if !self.handshake.http_statuses.is_empty() {
            let statuses: Vec<String> = self.handshake.http_statuses.iter().map(|(k, n)| format!("{k} x{n}")).collect();
            let _ = writeln!(out, "  http status  {}", statuses.join(", "));
        }
        let cpu = &self.cpu;
        let per_message = cpu.per_message_us.map(|us| format!("; {us:.2} us per message")).unwrap_or_default();
        let _ = writeln!(
            out,
            "  loadgen cpu  {:.2} s in the window (user {:.2}, sys {:.2}) = {:.0}% of one core{per_message}",
            cpu.window_user_s + cpu.window_system_s,
            cpu.window_user_s,
            cpu.window_system_s,
            cpu.cores_busy * 100.0
        );
        let _ = writeln!(
            out,
            "  loadgen busy {:.0}% of the window{}, waiting for the server the rest: {}",
            cpu.loop_busy * 100.0,
            if settings.threads > 1 { " (its busiest loop)" } else { "" },
            if cpu.client_saturated { "SATURATED" } else { "not saturated" }
        );
        if cpu.client_saturated {
            let _ = writeln!(
                out,
                "warning: loadgen's own core was saturated: these figures may measure the client, not the \
                 server; add --threads, or give loadgen a core of its own"
            );
        }
        let _ = match (self.result.status, &self.result.reason) {
            (Status::Ok, _) => writeln!(out, "result: ok"),
            // The reason starts "interrupted by SIGINT: ...".
            (Status::Interrupted, Some(reason)) => writeln!(out, "result: {reason}"),
            (_, reason) => writeln!(out, "result: FAILED: {}", reason.as_deref().unwrap_or("unknown")),
        };
        out
    }
}

impl Report {
    /// Broadcast mode's lines, in place of the throughput line.
    fn broadcast_lines(&self, b: &BroadcastOut, out: &mut String) {
        let plural = |n: u64, what: &str| format!("{} {what}{}", group(n), if n == 1 { "" } else { "s" });
        let _ = writeln!(
            out,
            "  published    {} msgs/s  ({} in {:.2} s by {} in {})",
            group(b.published_per_s as u64),
            group(b.published),
            self.window_s,
            plural(u64::from(b.publishers), "publisher"),
            plural(u64::from(b.rooms), "room"),
        );
        let fan_out = b.fan_out.map(|f| format!(", fan-out {f:.1}")).unwrap_or_default();
        let _ = writeln!(
            out,
            "  deliveries   {} deliveries/s  {:.2} MB/s  ({} in {:.2} s{fan_out})",
            group(b.deliveries_per_s as u64),
            self.messages.mb_per_s,
            group(b.deliveries),
            self.window_s,
        );
    }

    /// Idle mode's stamped deliveries (a publish reaching the held connections).
    fn idle_lines(idle: &IdleOut, established: u64, out: &mut String) {
        if idle.deliveries == 0 {
            let _ = writeln!(out, "  deliveries   none (no stamped data message arrived)");
        } else {
            let l = &idle.latency_us;
            let f = |us: f64| format_latency((us * 1e3) as u64);
            let _ = writeln!(
                out,
                "  deliveries   {} stamped messages reached {} of {} connections: p50 {}  p99 {}  max {}  \
                 (from the stamp's intended time)",
                group(idle.deliveries),
                group(idle.connections_reached),
                group(established),
                f(l.p50),
                f(l.p99),
                f(l.max)
            );
        }
        if idle.unstamped > 0 {
            let first = idle.first_unstamped.as_deref().unwrap_or("");
            let _ = writeln!(
                out,
                "  unstamped    {} data messages without a valid stamp (first: {first})",
                group(idle.unstamped)
            );
        }
    }

    /// Broadcast mode's account of the whole run, after the latency lines.
    fn broadcast_account(b: &BroadcastOut, out: &mut String) {
        let plural = |n: u64, what: &str| format!("{} {what}{}", group(n), if n == 1 { "" } else { "s" });
        let missing = b.expected_deliveries.saturating_sub(b.delivered);
        let verdict = if missing == 0 { "none missing".to_string() } else { format!("{} missing", group(missing)) };
        let _ = writeln!(
            out,
            "  delivered    {} of {} owed over the run to {}, {verdict}",
            group(b.delivered),
            group(b.expected_deliveries),
            plural(b.subscribers, "subscriber"),
        );
        let slow = &b.slow;
        if slow.subscribers > 0 {
            let percent = slow.lost_fraction.map(|f| format!(" ({:.1}%)", f * 100.0)).unwrap_or_default();
            let closed = if slow.closed_by_server.is_empty() {
                String::new()
            } else {
                let how: Vec<String> = slow.closed_by_server.iter().map(|(k, n)| format!("{k} x{n}")).collect();
                format!("; closed by the server: {}", how.join(", "))
            };
            let _ = writeln!(
                out,
                "  slow         {} stopped reading and lost {} of {} deliveries{percent}{closed}: not a fault",
                plural(slow.subscribers, "subscriber"),
                group(slow.lost),
                group(slow.expected_deliveries),
            );
        }
    }
}

fn percentiles(l: &Latency) -> String {
    if l.count == 0 {
        return "(none measured)".to_string();
    }
    let f = |us: f64| format_latency((us * 1e3) as u64);
    format!(
        "p50 {}  p90 {}  p99 {}  p99.9 {}  p99.99 {}  max {}",
        f(l.p50),
        f(l.p90),
        f(l.p99),
        f(l.p99_9),
        f(l.p99_99),
        f(l.max)
    )
}

/// A latency in the unit that suits it: `850ns`, `41.2us`, `1.23ms`, `2.50s`.
pub fn format_latency(ns: u64) -> String {
    match ns {
        0..=999 => format!("{ns}ns"),
        1_000..=99_999 => format!("{:.1}us", ns as f64 / 1e3),
        100_000..=999_999 => format!("{:.0}us", ns as f64 / 1e3),
        1_000_000..=999_999_999 => format!("{:.2}ms", ns as f64 / 1e6),
        _ => format!("{:.2}s", ns as f64 / 1e9),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn latencies_read_naturally() {
        assert_eq!(format_latency(850), "850ns");
        assert_eq!(format_latency(41_234), "41.2us");
        assert_eq!(format_latency(412_340), "412us");
        assert_eq!(format_latency(1_234_567), "1.23ms");
        assert_eq!(format_latency(2_500_000_000), "2.50s");
    }

    /// The saturation verdict: a warning line and `client_saturated` at and
    /// above [`SATURATED_BUSY`], the "not saturated" line below it.
    #[test]
    fn a_saturated_client_is_flagged_in_text_and_json() {
        use clap::Parser as _;
        let settings = crate::cli::Cli::try_parse_from(["loadgen"]).unwrap().into_settings(false).unwrap();
        let stats = Stats::default();
        let report = |loop_busy: f64| {
            Report::new(Inputs {
                settings: &settings,
                stats: &stats,
                window_ns: 1_000_000_000,
                window_cpu: CpuTime { user_ns: 100_000_000, system_ns: 800_000_000 },
                loop_busy,
                process_cpu: CpuTime::default(),
                timeline: Vec::new(),
                outcome: Outcome { ok: true, status: Status::Ok, exit_code: 0, reason: None, interrupted_by: None },
            })
        };
        let busy = report(SATURATED_BUSY);
        let text = busy.summary(&settings);
        assert!(busy.cpu.client_saturated, "{text}");
        assert!(text.contains("loadgen busy 90% of the window, waiting for the server the rest: SATURATED"), "{text}");
        assert!(text.contains("warning: loadgen's own core was saturated"), "{text}");
        let json = serde_json::to_value(&busy).unwrap();
        assert_eq!(json["cpu"]["client_saturated"], true);
        assert!((json["cpu"]["cores_busy"].as_f64().unwrap() - 0.9).abs() < 1e-9);

        let idle = report(0.5);
        let text = idle.summary(&settings);
        assert!(!idle.cpu.client_saturated);
        assert!(text.contains("busy 50% of the window, waiting for the server the rest: not saturated"), "{text}");
        assert!(!text.contains("warning"), "{text}");
    }

    #[test]
    fn empty_histogram_reports_zeros() {
        let l = Latency::from_histogram(&crate::metrics::latency_histogram());
        assert_eq!(l.count, 0);
        assert_eq!(l.max, 0.0);
    }
}
