//! The command line, and the checked [`Settings`] the run uses.
//!
//! Every flag also reads a `LOADGEN_...` environment variable (flag first,
//! then the variable, then the default), and every default is a named
//! constant with the reason for its value. Numbers take the suffixes
//! `wsloop` uses (`10k`, `512B`, `4KiB`, `250ms`, `5s`).

use std::{
    ffi::OsString,
    net::{IpAddr, SocketAddr, ToSocketAddrs},
    path::PathBuf,
    time::Duration,
};

use crate::{
    broadcast::Layout,
    tls::{TlsResume, TlsSettings, TlsVersion, Trust},
};
use clap::{parser::ValueSource, CommandFactory, FromArgMatches, Parser, ValueEnum};
use tungstenite::http::Uri;
use wsloop::{
    units::{parse_count, parse_duration, parse_size},
    wire::Encoding,
};

/// Where to connect when no URL is given: wsloop's default address.
pub const DEFAULT_URL: &str = "ws://127.0.0.1:9001/";

/// Connections opened when `-c` is not given: enough to load one server core.
pub const DEFAULT_CONNECTIONS: &str = "100";

/// Connection attempts in flight at once during the ramp when no
/// `--connect-rate` is set: as fast as the server accepts, in batches that
/// stay well inside a 4096 listen backlog (a full backlog drops SYNs and
/// costs a 1 s retransmit, which would show up as handshake latency).
pub const DEFAULT_CONNECT_BATCH: usize = 256;

/// Time from `connect()` to the 101 before an attempt counts as failed.
/// Longer than one SYN retransmit (1 s) plus a busy server's accept delay.
pub const DEFAULT_CONNECT_TIMEOUT: &str = "10s";

/// Payload bytes per message: a typical small chat/game/trading message, and
/// the size the project's efficiency targets are stated for.
pub const DEFAULT_SIZE: &str = "512B";

/// Largest payload accepted: wsloop's default message limit.
pub const MAX_SIZE: usize = 16 << 20;

/// Measurement length.
pub const DEFAULT_DURATION: &str = "10s";

/// Traffic before measuring starts: lets the server's caches, allocator and
/// the kernel's socket buffers settle.
pub const DEFAULT_WARMUP: &str = "1s";

/// How long an echo may take before the message counts as missing; also how
/// long the run waits for echoes still in flight after the window ends.
pub const DEFAULT_MESSAGE_TIMEOUT: &str = "5s";

/// Ping period in idle mode: uWebSockets' scale test uses 16 s, under the
/// 30 s to 120 s idle timeouts servers and load balancers commonly use.
pub const DEFAULT_PING_INTERVAL: &str = "16s";

/// Rooms in broadcast mode when `--rooms` is not given: one, the URL's path.
pub const DEFAULT_ROOMS: u64 = 1;

/// Publishers in broadcast mode when `--publishers` is not given: one sender
/// and everyone else listening, the shape of a notification or a dashboard feed.
pub const DEFAULT_PUBLISHERS: u64 = 1;

/// `--tls-resume` when not given: tickets, what browsers and TLS libraries
/// do by default, so that churn mode measures the handshakes real clients
/// make when they come back.
pub const DEFAULT_TLS_RESUME: TlsResume = TlsResume::Tickets;

/// Most messages in flight per connection (`--pipeline`).
const MAX_PIPELINE: u32 = 1 << 16;

/// Exit status of a run ended early by SIGINT or SIGTERM (its report covers
/// what ran; `result.ok` is false). 0, 1 and 2 are taken: success, failure,
/// bad flags.
pub const EXIT_INTERRUPTED: u8 = 3;

/// How the live progress is shown.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ProgressOutput {
    /// Not at all (`--quiet`, or stderr is not a terminal and `--progress` was not given).
    Off,
    /// One line per second, each on a line of its own: stderr is a file or
    /// a pipe, read later as a log.
    Lines,
    /// One line redrawn in place every second: stderr is a terminal.
    Redraw,
}

/// What the connections do.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Mode {
    /// Closed loop: each connection keeps --pipeline messages in flight and
    /// sends the next one when an echo returns. The throughput benchmark.
    Echo,
    /// Open loop: --rate messages per second in total on a fixed schedule;
    /// latency counts from each message's intended send time. The latency benchmark.
    Rate,
    /// Open the connections and hold them for --duration, pinging every
    /// --ping-interval. The c10k test. Data messages that carry a valid stamp
    /// (such as a `loadgen publish` reaching them) are counted as deliveries
    /// and timed from the stamp.
    Idle,
    /// Connect, exchange one message, close, repeat, on --connections slots.
    /// The handshake benchmark.
    Churn,
    /// Fan-out, against a broadcast server (wsloop --mode broadcast): every
    /// connection joins one of --rooms rooms by its path, --publishers of them
    /// send (--rate in total, open loop; without --rate each sends its next
    /// message when its previous one came back to it), and every member checks
    /// that it gets each message of its room once, in order, intact.
    Broadcast,
}

impl Mode {
    pub fn as_str(self) -> &'static str {
        match self {
            Mode::Echo => "echo",
            Mode::Rate => "rate",
            Mode::Idle => "idle",
            Mode::Churn => "churn",
            Mode::Broadcast => "broadcast",
        }
    }
}

/// A WebSocket load generator that tells the truth about latency.
///
/// Opens --connections to a WebSocket echo server, drives them in one of five
/// modes, checks every echo byte for byte, and reports throughput, latency
/// percentiles (from each message's intended send time) and errors by kind,
/// e.g. `loadgen ws://127.0.0.1:9001/ -c 500 -d 10s`.
///
/// Several URLs spread the connections round-robin over them (connection i
/// to URL i mod N), e.g. over wsloop processes that share rooms through Redis.
///
/// `loadgen publish [URL] --room ROOM --token T` instead sends one stamped
/// POST /publish/ROOM and prints the answer (see `loadgen publish --help`);
/// idle-mode connections time its arrival.
///
/// Exit status: 0 success; 1 if the target cannot be reached, errors exceed
/// --max-errors or the machine's limits do not allow the run; 2 on bad
/// flags; 3 if interrupted (SIGINT/SIGTERM) before the end, with the report
/// of what ran (a second signal exits at once with 130).
#[derive(Debug, Parser)]
#[command(name = "loadgen", version)]
pub struct Cli {
    /// Target, ws://HOST:PORT/PATH or wss://HOST:PORT/PATH [default: ws://127.0.0.1:9001/].
    /// Several URLs: connection i goes to URL i mod N (e.g. several wsloop
    /// processes sharing rooms through Redis; in broadcast mode they must all
    /// have the same path; all ws:// or all wss:// to one host name).
    #[arg(value_name = "URL")]
    pub target: Vec<String>,

    /// The target as a flag, instead of the URL argument (not both);
    /// repeatable, like several URL arguments. LOADGEN_URL holds one URL.
    #[arg(long, env = "LOADGEN_URL")]
    pub url: Vec<String>,

    /// Whether `--url` was on the command line rather than in LOADGEN_URL:
    /// a URL argument beside `--url` is an error, beside the variable it wins.
    #[arg(skip)]
    pub url_on_command_line: bool,

    /// Workload.
    #[arg(long, env = "LOADGEN_MODE", value_enum, default_value_t = Mode::Echo)]
    pub mode: Mode,

    /// Connections to open (in churn mode: connections open at any moment), e.g. 10k.
    #[arg(short = 'c', long, env = "LOADGEN_CONNECTIONS", default_value = DEFAULT_CONNECTIONS,
          value_parser = parse_positive_count)]
    pub connections: u64,

    /// Event loops (threads); connections and --rate are split evenly between them.
    #[arg(short = 't', long, env = "LOADGEN_THREADS", default_value_t = 1, value_parser = parse_positive_count)]
    pub threads: u64,

    /// New connections per second during the ramp (default: as fast as the server accepts, in batches).
    #[arg(long, env = "LOADGEN_CONNECT_RATE", value_parser = parse_positive_count)]
    pub connect_rate: Option<u64>,

    /// Connection attempts in flight at once (per thread) while ramping up.
    #[arg(long, env = "LOADGEN_CONNECT_BATCH", default_value_t = DEFAULT_CONNECT_BATCH as u64,
          value_parser = parse_positive_count)]
    pub connect_batch: u64,

    /// Time allowed from connect() to the server's 101 response.
    #[arg(long, env = "LOADGEN_CONNECT_TIMEOUT", default_value = DEFAULT_CONNECT_TIMEOUT,
          value_parser = parse_positive_duration)]
    pub connect_timeout: Duration,

    /// Local address to connect from (repeatable): connections are spread
    /// over them, each giving about 28,000 more ports per target (e.g. 127.0.0.2).
    #[arg(long = "source-ip", env = "LOADGEN_SOURCE_IPS", value_delimiter = ',')]
    pub source_ip: Vec<IpAddr>,

    /// Extra request header, "Name: value" (repeatable).
    #[arg(long = "header", short = 'H', env = "LOADGEN_HEADERS", value_parser = parse_header)]
    pub header: Vec<(String, String)>,

    /// Subprotocol to offer (repeatable); the server must select one of them.
    #[arg(long = "subprotocol", env = "LOADGEN_SUBPROTOCOLS", value_delimiter = ',')]
    pub subprotocol: Vec<String>,

    /// Payload bytes per message (at least 32 for binary, 64 for text), e.g. 512 or 4KiB.
    #[arg(short = 's', long, env = "LOADGEN_SIZE", default_value = DEFAULT_SIZE, value_parser = parse_size)]
    pub size: usize,

    /// Send text messages (ASCII payload, opcode 0x1).
    #[arg(long, env = "LOADGEN_TEXT", conflicts_with = "binary")]
    pub text: bool,

    /// Send binary messages (opcode 0x2); the default.
    #[arg(long, env = "LOADGEN_BINARY")]
    pub binary: bool,

    /// Echo mode (and broadcast mode without --rate: each publisher): messages each connection keeps in flight.
    #[arg(short = 'k', long, env = "LOADGEN_PIPELINE", default_value_t = 1, value_parser = parse_pipeline)]
    pub pipeline: u32,

    /// Rate mode: messages per second in total, spread evenly over the connections, e.g. 50k.
    /// Broadcast mode: messages published per second in total, spread over the publishers.
    #[arg(short = 'R', long, env = "LOADGEN_RATE", value_parser = parse_positive_count)]
    pub rate: Option<u64>,

    /// Broadcast mode: rooms to spread the connections over (connection i joins room i mod R).
    /// With 1 the room is the URL's path; with more, room i is the path followed by
    /// `/r<i>` (ws://h/ gives /r0, /r1, ...; ws://h/chat gives /chat/r0, ...), query kept [default: 1].
    #[arg(long, env = "LOADGEN_ROOMS", value_parser = parse_positive_count)]
    pub rooms: Option<u64>,

    /// Broadcast mode: connections that send, spread as evenly as possible over the rooms;
    /// every connection (publishers too) subscribes to its room [default: 1].
    #[arg(long, env = "LOADGEN_PUBLISHERS", value_parser = parse_positive_count)]
    pub publishers: Option<u64>,

    /// Broadcast mode: subscribers (never publishers) that stop reading while traffic runs,
    /// so that the server's slow-consumer policy applies to them; they read what is buffered
    /// at the end, and what they lost is reported apart, without failing the run [default: 0].
    #[arg(long, env = "LOADGEN_SLOW", value_parser = parse_count)]
    pub slow: Option<u64>,

    /// How long to measure, after the ramp and the warm-up, e.g. 30s.
    #[arg(short = 'd', long, env = "LOADGEN_DURATION", default_value = DEFAULT_DURATION,
          value_parser = parse_positive_duration)]
    pub duration: Duration,

    /// Traffic before the measurement starts; excluded from every figure.
    #[arg(long, env = "LOADGEN_WARMUP", default_value = DEFAULT_WARMUP, value_parser = parse_duration)]
    pub warmup: Duration,

    /// Echo mode: stop after this many messages in total (or at --duration, whichever comes first).
    #[arg(short = 'n', long, env = "LOADGEN_MESSAGES", value_parser = parse_positive_count)]
    pub messages: Option<u64>,

    /// An echo not back within this time counts as missing; also how long the run waits
    /// at the end for messages still in flight (broadcast: for deliveries still on their way).
    #[arg(long, env = "LOADGEN_MESSAGE_TIMEOUT", default_value = DEFAULT_MESSAGE_TIMEOUT,
          value_parser = parse_positive_duration)]
    pub message_timeout: Duration,

    /// Idle mode: time between pings on each connection.
    #[arg(long, env = "LOADGEN_PING_INTERVAL", default_value = DEFAULT_PING_INTERVAL,
          value_parser = parse_positive_duration)]
    pub ping_interval: Duration,

    /// Errors (failed connections and faults of any kind) tolerated before the run fails.
    #[arg(long, env = "LOADGEN_MAX_ERRORS", default_value_t = 0)]
    pub max_errors: u64,

    /// wss://: trust the CA certificates in this PEM file (a test CA, a private one)
    /// instead of the built-in Mozilla roots.
    #[arg(long, env = "LOADGEN_CA", value_name = "FILE", conflicts_with = "insecure")]
    pub ca: Option<PathBuf>,

    /// wss://: INSECURE: accept ANY server certificate, without checking who signed it,
    /// its name or its dates, nor the server's signature. For a test server with a
    /// self-signed certificate only: anyone in the path can read and change the traffic.
    #[arg(long, env = "LOADGEN_INSECURE")]
    pub insecure: bool,

    /// wss://: session resumption. tickets: TLS 1.3 tickets (TLS 1.2: tickets or session IDs);
    /// ids: TLS 1.2 session IDs only (TLS 1.3 still resumes with tickets); none: every
    /// handshake is a full one. A loop's connections share one session store, so in churn
    /// mode a new connection resumes what an earlier one got [default: tickets].
    #[arg(long, env = "LOADGEN_TLS_RESUME", value_enum)]
    pub tls_resume: Option<TlsResume>,

    /// wss://: the TLS versions offered: any (1.2 and 1.3, the server chooses), 1.2 or 1.3 [default: any].
    /// Cipher suites are offered in the browsers' order, AES-128-GCM first.
    #[arg(long, env = "LOADGEN_TLS_VERSION", value_enum)]
    pub tls_version: Option<TlsVersion>,

    /// Write the results as one JSON document to this file (field reference in the README, "Load testing").
    #[arg(long, env = "LOADGEN_JSON")]
    pub json: Option<PathBuf>,

    /// Write the latency distribution to this file in HdrHistogram's percentile format (.hgrm, milliseconds).
    #[arg(long, env = "LOADGEN_HGRM")]
    pub hgrm: Option<PathBuf>,

    /// No live progress line.
    #[arg(short = 'q', long, env = "LOADGEN_QUIET", conflicts_with = "progress")]
    pub quiet: bool,

    /// Show the live progress line even when stderr is not a terminal.
    #[arg(long, env = "LOADGEN_PROGRESS")]
    pub progress: bool,
}

/// The checked, resolved configuration of a run.
#[derive(Debug, Clone)]
pub struct Settings {
    pub mode: Mode,
    /// The first target's URL as given (argument, --url or LOADGEN_URL), for the report.
    pub url: String,
    /// Every target, in the order given: connection `i` goes to target `i % targets.len()`.
    pub targets: Vec<Target>,
    /// `wss://`: how to speak TLS (to every target); `None` for `ws://`.
    pub tls: Option<TlsSettings>,
    pub connections: u64,
    /// Event loops, one per thread.
    pub threads: usize,
    pub connect_rate: Option<u64>,
    /// Connection attempts in flight per loop while ramping.
    pub connect_batch: usize,
    pub connect_timeout: Duration,
    /// Local addresses to spread connections over (empty: the kernel's choice).
    pub source_ips: Vec<IpAddr>,
    /// Extra request headers.
    pub headers: Vec<(String, String)>,
    /// Subprotocols offered; the server must pick one of them.
    pub subprotocols: Vec<String>,
    pub size: usize,
    /// Binary or text messages.
    pub encoding: Encoding,
    pub pipeline: u32,
    pub rate: Option<u64>,
    /// Broadcast mode: the rooms, publishers and slow subscribers; `None` in the other modes.
    pub layout: Option<Layout>,
    pub duration: Duration,
    pub warmup: Duration,
    pub messages: Option<u64>,
    pub message_timeout: Duration,
    pub ping_interval: Duration,
    pub max_errors: u64,
    pub json: Option<PathBuf>,
    pub hgrm: Option<PathBuf>,
    /// How to show the live line (decided from --quiet, --progress and whether stderr is a terminal).
    pub progress: ProgressOutput,
}

/// One server to connect to.
#[derive(Debug, Clone)]
pub struct Target {
    /// The URL as given.
    pub url: String,
    /// The parsed URL, for the request line and Host header.
    pub uri: Uri,
    /// The address it resolved to.
    pub addr: SocketAddr,
    /// `wss://`.
    pub secure: bool,
    /// The host, brackets of an IPv6 literal removed: what TLS checks.
    pub host: String,
}

impl Target {
    /// Parses and resolves `url`; `Err` is a one-line reason.
    fn resolve(url: String) -> Result<Target, String> {
        let uri: Uri = url.parse().map_err(|e| format!("URL {url:?} is not a URL: {e}"))?;
        let secure = match uri.scheme_str() {
            Some("ws") => false,
            Some("wss") => true,
            _ => return Err(format!("URL {url:?} must start with ws:// or wss://")),
        };
        let host = uri.host().filter(|h| !h.is_empty()).ok_or_else(|| format!("URL {url:?} has no host"))?;
        let port = uri.port_u16().unwrap_or(if secure { 443 } else { 80 });
        // Brackets around an IPv6 literal are URL syntax, not part of the address.
        let host_for_lookup = host.trim_start_matches('[').trim_end_matches(']');
        let addr = (host_for_lookup, port)
            .to_socket_addrs()
            .map_err(|e| format!("cannot resolve {host}: {e}"))?
            .next()
            .ok_or_else(|| format!("{host} resolves to no address"))?;
        let host = host_for_lookup.to_string();
        Ok(Target { url, uri, addr, secure, host })
    }
}

impl Cli {
    /// Parses `args` (the program name first) like [`Parser::try_parse_from`],
    /// and notes where `--url` came from.
    pub fn try_parse_args<I, T>(args: I) -> Result<Cli, clap::Error>
    where
        I: IntoIterator<Item = T>,
        T: Into<OsString> + Clone,
    {
        let mut command = Cli::command();
        let matches = command.try_get_matches_from_mut(args)?;
        let mut cli = Cli::from_arg_matches(&matches).map_err(|e| e.format(&mut command))?;
        cli.url_on_command_line = matches.value_source("url") == Some(ValueSource::CommandLine);
        Ok(cli)
    }

    /// Broadcast mode's rooms, publishers and slow subscribers, checked;
    /// `None` in the other modes (where giving any of them is an error).
    fn layout(&self) -> Result<Option<Layout>, String> {
        if self.mode != Mode::Broadcast {
            for (flag, given) in [
                ("--rooms", self.rooms.is_some()),
                ("--publishers", self.publishers.is_some()),
                ("--slow", self.slow.is_some()),
            ] {
                if given {
                    return Err(format!("{flag} applies to --mode broadcast"));
                }
            }
            return Ok(None);
        }
        let connections = self.connections;
        let rooms = self.rooms.unwrap_or(DEFAULT_ROOMS);
        let publishers = self.publishers.unwrap_or(DEFAULT_PUBLISHERS);
        let slow = self.slow.unwrap_or(0);
        // Connection ids (and so publisher ids in the stamp) are 32-bit.
        if u32::try_from(connections).is_err() {
            return Err(format!("--connections {connections} is above {} in broadcast mode", u32::MAX));
        }
        if rooms > connections {
            return Err(format!("--rooms {rooms} is more than --connections {connections}: every room needs a member"));
        }
        if publishers > connections {
            return Err(format!("--publishers {publishers} is more than --connections {connections}"));
        }
        if publishers + slow > connections {
            return Err(format!(
                "--publishers {publishers} and --slow {slow} are more than --connections {connections} \
                 (a slow subscriber never publishes)"
            ));
        }
        Ok(Some(Layout { rooms: rooms as u32, publishers: publishers as u32, slow: slow as u32 }))
    }

    /// The TLS settings of a `wss://` run (`--ca` read here, so that a bad
    /// file is a usage error); for `ws://`, `None`, and any TLS flag is an error.
    fn tls_settings(&self, secure: bool, host: &str) -> Result<Option<TlsSettings>, String> {
        if !secure {
            for (flag, given) in [
                ("--ca", self.ca.is_some()),
                ("--insecure", self.insecure),
                ("--tls-resume", self.tls_resume.is_some()),
                ("--tls-version", self.tls_version.is_some()),
            ] {
                if given {
                    return Err(format!("{flag} applies to wss:// URLs"));
                }
            }
            return Ok(None);
        }
        let server_name = rustls::pki_types::ServerName::try_from(host)
            .map_err(|e| format!("{host:?} is not a host name TLS can check: {e}"))?
            .to_owned();
        let trust = match (&self.ca, self.insecure) {
            (Some(path), _) => Trust::from_ca_file(path)?,
            (None, true) => Trust::Insecure,
            (None, false) => Trust::WebpkiRoots,
        };
        Ok(Some(TlsSettings {
            server_name,
            trust,
            resume: self.tls_resume.unwrap_or(DEFAULT_TLS_RESUME),
            version: self.tls_version.unwrap_or(TlsVersion::Any),
        }))
    }

    /// Checks what no single flag parser can, resolves the target, and
    /// returns the run's settings; `Err` is a one-line reason (exit 2).
    pub fn into_settings(self, stderr_is_terminal: bool) -> Result<Settings, String> {
        let layout = self.layout()?;
        let urls = match (self.target.is_empty(), self.url.is_empty()) {
            (false, false) if self.url_on_command_line => {
                return Err("the URL is given twice: as an argument and with --url; give one".into())
            }
            // The argument comes from the command line, which beats LOADGEN_URL.
            (false, _) => self.target.clone(),
            (true, false) => self.url.clone(),
            (true, true) => vec![DEFAULT_URL.to_string()],
        };
        let targets = urls.into_iter().map(Target::resolve).collect::<Result<Vec<_>, _>>()?;
        let first = &targets[0];
        let secure = first.secure;
        if let Some(other) = targets.iter().find(|t| t.secure != secure || t.host != first.host) {
            return Err(format!(
                "every URL must be ws:// or every one wss:// to one host name: {} and {} differ",
                first.url, other.url
            ));
        }
        let tls = self.tls_settings(secure, &first.host)?;
        if layout.is_some() {
            // A room is named by the path (the server ignores the query): every
            // process must be asked for the same one.
            if let Some(other) = targets.iter().find(|t| t.uri.path() != first.uri.path()) {
                return Err(format!(
                    "in broadcast mode every URL names the same room: {} and {} have different paths",
                    first.url, other.url
                ));
            }
        }
        if targets.len() as u64 > self.connections {
            return Err(format!("{} URLs are more than --connections {}", targets.len(), self.connections));
        }

        let encoding = if self.text { Encoding::Text } else { Encoding::Binary };
        let min_size = if self.mode == Mode::Idle { 0 } else { encoding.stamp_len() };
        if self.size < min_size {
            return Err(format!(
                "--size {} is below the {min_size}-byte minimum for {} messages (the stamp: sequence number and times)",
                self.size,
                encoding.as_str()
            ));
        }
        if self.size > MAX_SIZE {
            return Err(format!("--size {} is above the {MAX_SIZE}-byte maximum", self.size));
        }
        match (self.mode, self.rate) {
            (Mode::Rate, None) => return Err("--mode rate needs --rate (messages per second in total)".into()),
            (Mode::Broadcast, _) => {}
            (Mode::Echo | Mode::Idle | Mode::Churn, Some(_)) => {
                return Err(format!("--rate applies to --mode rate, not --mode {}", self.mode.as_str()))
            }
            _ => {}
        }
        if self.messages.is_some() && self.mode != Mode::Echo {
            return Err("--messages applies to --mode echo".into());
        }
        let closed_loop = self.mode == Mode::Echo || (self.mode == Mode::Broadcast && self.rate.is_none());
        if self.pipeline != 1 && !closed_loop {
            return Err("--pipeline applies to --mode echo and to --mode broadcast without --rate".into());
        }
        if self.threads > self.connections {
            return Err(format!("--threads {} is more than --connections {}", self.threads, self.connections));
        }
        if self.threads > 1024 {
            return Err("--threads is above 1024".into());
        }
        if self.source_ip.iter().any(|ip| targets.iter().any(|t| ip.is_ipv4() != t.addr.is_ipv4())) {
            return Err("--source-ip must be of the same family (IPv4/IPv6) as the target".into());
        }
        if let (Some(rate), None) = (self.rate, layout) {
            if rate < self.threads {
                return Err(format!("--rate {rate} is below one message per second per thread"));
            }
        }
        if self.mode == Mode::Idle && self.ping_interval < Duration::from_millis(10) {
            return Err("--ping-interval must be at least 10ms".into());
        }
        let progress = match (self.quiet, self.progress, stderr_is_terminal) {
            (true, _, _) => ProgressOutput::Off,
            (false, _, true) => ProgressOutput::Redraw,
            (false, true, false) => ProgressOutput::Lines,
            (false, false, false) => ProgressOutput::Off,
        };
        Ok(Settings {
            mode: self.mode,
            url: first.url.clone(),
            targets,
            tls,
            connections: self.connections,
            threads: self.threads as usize,
            connect_rate: self.connect_rate,
            connect_batch: usize::try_from(self.connect_batch).unwrap_or(usize::MAX),
            connect_timeout: self.connect_timeout,
            source_ips: self.source_ip,
            headers: self.header,
            subprotocols: self.subprotocol,
            size: self.size,
            encoding,
            pipeline: self.pipeline,
            rate: self.rate,
            layout,
            duration: self.duration,
            warmup: self.warmup,
            messages: self.messages,
            message_timeout: self.message_timeout,
            ping_interval: self.ping_interval,
            max_errors: self.max_errors,
            json: self.json,
            hgrm: self.hgrm,
            progress,
        })
    }
}

impl Settings {
    /// The target of connection `id`: connections go round-robin over the URLs.
    #[inline]
    pub fn target_index(&self, id: u32) -> usize {
        id as usize % self.targets.len()
    }

    /// One line describing the run, for the summary's first line.
    pub fn describe(&self) -> String {
        use wsloop::units::format_duration;
        let threads = if self.threads == 1 { "1 thread".to_string() } else { format!("{} threads", self.threads) };
        let workload = match self.mode {
            Mode::Echo => format!("{} B {}, pipeline {}", self.size, self.encoding.as_str(), self.pipeline),
            Mode::Rate => format!("{} B {}, {} msgs/s", self.size, self.encoding.as_str(), self.rate.unwrap_or(0)),
            Mode::Idle => format!("ping every {}", format_duration(self.ping_interval)),
            Mode::Churn => format!("{} B {}, one message per connection", self.size, self.encoding.as_str()),
            Mode::Broadcast => {
                let layout = self.layout.unwrap_or(Layout { rooms: 1, publishers: 1, slow: 0 });
                let plural = |n: u32, what: &str| format!("{n} {what}{}", if n == 1 { "" } else { "s" });
                let pace = match self.rate {
                    Some(rate) => format!("{rate} msgs/s"),
                    None => format!("closed loop, pipeline {}", self.pipeline),
                };
                let slow = if layout.slow > 0 { format!(", {} slow", layout.slow) } else { String::new() };
                format!(
                    "{}, {}{slow}, {} B {}, {pace}",
                    plural(layout.rooms, "room"),
                    plural(layout.publishers, "publisher"),
                    self.size,
                    self.encoding.as_str()
                )
            }
        };
        let length = match self.messages {
            Some(n) => format!("{n} messages (at most {})", format_duration(self.duration)),
            None => format_duration(self.duration),
        };
        let urls: Vec<&str> = self.targets.iter().map(|t| t.url.as_str()).collect();
        format!(
            "{} {}: {} connections ({threads}), {workload}, {length} after {} warm-up",
            self.mode.as_str(),
            urls.join(" "),
            self.connections,
            format_duration(self.warmup)
        )
    }
}

fn parse_positive_count(text: &str) -> Result<u64, String> {
    match parse_count(text)? {
        0 => Err("must be greater than 0".into()),
        n => Ok(n),
    }
}

fn parse_positive_duration(text: &str) -> Result<Duration, String> {
    let duration = parse_duration(text)?;
    if duration.is_zero() {
        return Err("must be greater than 0".into());
    }
    Ok(duration)
}

fn parse_pipeline(text: &str) -> Result<u32, String> {
    let n = parse_positive_count(text)?;
    if n > u64::from(MAX_PIPELINE) {
        return Err(format!("must be at most {MAX_PIPELINE}"));
    }
    Ok(n as u32)
}

fn parse_header(text: &str) -> Result<(String, String), String> {
    let (name, value) = text.split_once(':').ok_or_else(|| format!("{text:?} is not \"Name: value\""))?;
    let name = name.trim();
    if name.is_empty() || !name.bytes().all(|b| b.is_ascii_alphanumeric() || b"-_!#$%&'*+.^`|~".contains(&b)) {
        return Err(format!("{name:?} is not a valid header name"));
    }
    Ok((name.to_string(), value.trim().to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn settings(args: &[&str]) -> Result<Settings, String> {
        let mut argv = vec!["loadgen"];
        argv.extend_from_slice(args);
        Cli::try_parse_args(argv).map_err(|e| e.to_string())?.into_settings(false)
    }

    #[test]
    fn defaults_are_valid() {
        let s = settings(&[]).unwrap();
        assert_eq!(s.mode, Mode::Echo);
        assert_eq!(s.size, 512);
        assert_eq!(s.connections, 100);
        assert_eq!(s.targets[0].addr, "127.0.0.1:9001".parse().unwrap());
        assert_eq!(s.targets.len(), 1);
        assert_eq!(s.progress, ProgressOutput::Off);
    }

    /// The URL as the first argument, as wrk, oha and websocat take it; or
    /// with --url; not both.
    #[test]
    fn the_url_is_an_argument_or_a_flag() {
        let s = settings(&["ws://127.0.0.1:9100/a", "-c", "5"]).unwrap();
        assert_eq!((s.targets[0].addr.port(), s.url.as_str(), s.connections), (9100, "ws://127.0.0.1:9100/a", 5));
        let s = settings(&["-c", "5", "ws://127.0.0.1:9101/"]).unwrap();
        assert_eq!(s.targets[0].addr.port(), 9101);
        let s = settings(&["--url", "ws://127.0.0.1:9102/"]).unwrap();
        assert_eq!(s.targets[0].addr.port(), 9102);
        let both = settings(&["ws://127.0.0.1:9103/", "--url", "ws://127.0.0.1:9104/"]).unwrap_err();
        assert!(both.contains("twice"), "{both}");
        // A URL in LOADGEN_URL (not on the command line) gives way to the argument.
        let mut cli = Cli::try_parse_args(["loadgen", "ws://127.0.0.1:9107/"]).unwrap();
        assert!(!cli.url_on_command_line);
        cli.url = vec!["ws://127.0.0.1:9108/".into()];
        assert_eq!(cli.into_settings(false).unwrap().targets[0].addr.port(), 9107);
        assert!(Cli::try_parse_args(["loadgen", "--url", "ws://127.0.0.1:9109/"]).unwrap().url_on_command_line);
    }

    /// Several targets: URL arguments or a repeated --url (not both), in
    /// order; connection i goes to target i mod N; in broadcast mode they
    /// must name the same room.
    #[test]
    fn several_targets_in_order() {
        let ports = |s: &Settings| s.targets.iter().map(|t| t.addr.port()).collect::<Vec<_>>();
        let s = settings(&["ws://127.0.0.1:9105/", "ws://127.0.0.1:9106/x", "-c", "5"]).unwrap();
        assert_eq!(ports(&s), [9105, 9106]);
        assert_eq!(s.url, "ws://127.0.0.1:9105/");
        assert_eq!((0..5).map(|id| s.target_index(id)).collect::<Vec<_>>(), [0, 1, 0, 1, 0]);
        assert!(s.describe().contains("ws://127.0.0.1:9105/ ws://127.0.0.1:9106/x"), "{}", s.describe());
        let s = settings(&[
            "--url",
            "ws://127.0.0.1:9107/",
            "--url",
            "ws://127.0.0.1:9108/",
            "--url",
            "ws://127.0.0.1:9107/",
        ])
        .unwrap();
        assert_eq!(ports(&s), [9107, 9108, 9107]);
        let mixed = settings(&["ws://127.0.0.1:9105/", "--url", "ws://127.0.0.1:9106/"]).unwrap_err();
        assert!(mixed.contains("twice"), "{mixed}");
        assert!(settings(&["ws://127.0.0.1:1/", "ws://127.0.0.1:2/", "ws://127.0.0.1:3/", "-c", "2"])
            .unwrap_err()
            .contains("more than --connections"));
        assert!(settings(&["ws://127.0.0.1:1/", "wss://127.0.0.1:2/"]).is_err(), "every URL is checked");
        assert!(settings(&["wss://127.0.0.1:1/", "wss://localhost:2/"]).is_err(), "one host name for TLS");
        let both = settings(&["wss://127.0.0.1:1/", "wss://127.0.0.1:2/", "-c", "2"]).unwrap();
        assert_eq!((both.targets.len(), both.tls.is_some()), (2, true), "several wss:// URLs to one host");
        // Broadcast: one room on every process.
        let b = |urls: &[&str]| {
            let mut args = vec!["--mode", "broadcast", "-c", "4"];
            args.extend_from_slice(urls);
            settings(&args)
        };
        assert!(b(&["ws://127.0.0.1:1/feed?x=1", "ws://127.0.0.1:2/feed?x=1"]).is_ok());
        assert!(b(&["ws://127.0.0.1:1", "ws://127.0.0.1:2/"]).is_ok(), "an empty path is /");
        let other_room = b(&["ws://127.0.0.1:1/feed", "ws://127.0.0.1:2/other"]).unwrap_err();
        assert!(other_room.contains("same room"), "{other_room}");
        assert!(b(&["ws://127.0.0.1:1/feed", "ws://127.0.0.1:2/feed?x=1"]).is_ok(), "the server ignores the query");
    }

    /// Where the live line goes: redrawn on a terminal, a line per tick in a log.
    #[test]
    fn progress_output_follows_the_terminal() {
        let with = |args: &[&str], terminal: bool| {
            let mut argv = vec!["loadgen"];
            argv.extend_from_slice(args);
            Cli::try_parse_args(argv).unwrap().into_settings(terminal).unwrap().progress
        };
        assert_eq!(with(&[], true), ProgressOutput::Redraw);
        assert_eq!(with(&["--progress"], true), ProgressOutput::Redraw);
        assert_eq!(with(&["--progress"], false), ProgressOutput::Lines);
        assert_eq!(with(&[], false), ProgressOutput::Off);
        assert_eq!(with(&["--quiet"], true), ProgressOutput::Off);
    }

    #[test]
    fn suffixes_and_modes() {
        let s = settings(&["--mode", "rate", "-R", "20k", "-c", "1k", "-d", "250ms", "--text", "-s", "1KiB"]).unwrap();
        assert_eq!(s.rate, Some(20_000));
        assert_eq!(s.connections, 1000);
        assert_eq!(s.duration, Duration::from_millis(250));
        assert_eq!(s.encoding, Encoding::Text);
        assert_eq!(s.size, 1024);
    }

    #[test]
    fn bad_combinations_are_refused() {
        assert!(settings(&["--mode", "rate"]).is_err(), "rate needs --rate");
        assert!(settings(&["--rate", "100"]).is_err(), "--rate only in rate mode");
        assert!(settings(&["--size", "31"]).is_err(), "below the binary stamp");
        assert!(settings(&["--text", "--size", "63"]).is_err(), "below the text stamp");
        assert!(settings(&["--text", "--binary"]).is_err());
        assert!(settings(&["--url", "wss://127.0.0.1/", "--ca", "/nonexistent/ca.pem"]).is_err());
        assert!(settings(&["--url", "ws://127.0.0.1/", "--insecure"]).is_err(), "TLS flags need wss://");
        assert!(settings(&["--url", "ws://127.0.0.1/", "--tls-resume", "none"]).is_err());
        assert!(settings(&["--url", "wss://127.0.0.1/", "--insecure", "--ca", "x.pem"]).is_err());
        assert!(settings(&["--url", "http://127.0.0.1/"]).is_err());
        assert!(settings(&["-c", "2", "--threads", "3"]).is_err());
        assert!(settings(&["--pipeline", "0"]).is_err());
        assert!(settings(&["--header", "no colon"]).is_err());
        assert!(settings(&["--duration", "0"]).is_err());
        assert!(settings(&["--mode", "idle", "--messages", "10"]).is_err());
    }

    #[test]
    fn broadcast_layout_and_its_limits() {
        let s = settings(&["--mode", "broadcast", "-c", "10"]).unwrap();
        assert_eq!(s.layout, Some(Layout { rooms: 1, publishers: 1, slow: 0 }));
        assert_eq!(s.rate, None, "closed loop without --rate");
        let s = settings(&[
            "--mode",
            "broadcast",
            "-c",
            "10",
            "--rooms",
            "3",
            "--publishers",
            "4",
            "--slow",
            "2",
            "-R",
            "1",
        ])
        .unwrap();
        assert_eq!(s.layout, Some(Layout { rooms: 3, publishers: 4, slow: 2 }));
        assert!(s.describe().contains("3 rooms, 4 publishers, 2 slow"), "{}", s.describe());
        assert!(settings(&["--mode", "broadcast", "-c", "10", "-k", "4"]).is_ok(), "closed loop may pipeline");
        let refused = |args: &[&str]| {
            let mut all = vec!["--mode", "broadcast", "-c", "10"];
            all.extend_from_slice(args);
            settings(&all).unwrap_err()
        };
        assert!(refused(&["--rooms", "11"]).contains("every room needs a member"));
        assert!(refused(&["--publishers", "11"]).contains("--publishers"));
        assert!(refused(&["--publishers", "5", "--slow", "6"]).contains("never publishes"));
        assert!(refused(&["-R", "100", "-k", "2"]).contains("--pipeline"));
        assert!(refused(&["--messages", "5"]).contains("--messages"));
        assert!(settings(&["--rooms", "2"]).unwrap_err().contains("applies to --mode broadcast"));
        assert!(settings(&["--mode", "rate", "-R", "10", "--slow", "1"]).is_err());
    }

    #[test]
    fn wss_urls_and_tls_flags() {
        let s = settings(&["wss://127.0.0.1/chat"]).unwrap();
        assert_eq!(s.targets[0].addr.port(), 443, "wss:// defaults to 443");
        let tls = s.tls.expect("TLS settings for wss://");
        assert_eq!(
            (tls.resume, tls.version, tls.trust.as_str()),
            (TlsResume::Tickets, TlsVersion::Any, "webpki_roots")
        );
        assert_eq!(tls.server_name.to_str(), "127.0.0.1");
        let s =
            settings(&["wss://localhost:9443/", "--insecure", "--tls-resume", "ids", "--tls-version", "1.2"]).unwrap();
        let tls = s.tls.unwrap();
        assert_eq!((tls.resume, tls.version, tls.trust.as_str()), (TlsResume::Ids, TlsVersion::Tls12, "insecure"));
        assert_eq!(tls.server_name.to_str(), "localhost");
        assert!(settings(&["ws://127.0.0.1/"]).unwrap().tls.is_none());
        let empty = std::env::temp_dir().join(format!("loadgen-cli-empty-{}.pem", std::process::id()));
        std::fs::write(&empty, "not a certificate\n").unwrap();
        let refused = settings(&["wss://127.0.0.1/", "--ca", empty.to_str().unwrap()]).unwrap_err();
        let _ = std::fs::remove_file(&empty);
        assert!(refused.contains("no certificate"), "{refused}");
    }

    #[test]
    fn headers_and_url_parts() {
        let s = settings(&["--url", "ws://localhost:8080/chat?room=1", "-H", "Authorization: Bearer x"]).unwrap();
        assert_eq!(s.targets[0].addr.port(), 8080);
        assert_eq!(s.targets[0].uri.path_and_query().unwrap().as_str(), "/chat?room=1");
        assert_eq!(s.headers, vec![("Authorization".to_string(), "Bearer x".to_string())]);
    }
}
