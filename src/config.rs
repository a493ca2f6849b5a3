//! Server configuration: one struct, read from the command line or the environment.
//!
//! Every field is a `--flag` and a `WSLOOP_...` environment variable (flag wins,
//! then the variable, then the default). Every default is a named constant below,
//! with the reason it has that value; `--help` shows it rendered from that
//! constant ([`shown`]) and [`Config::default`] uses it as is, so the two
//! cannot disagree.

use std::{
    net::{SocketAddr, ToSocketAddrs},
    sync::LazyLock,
    time::Duration,
};

use clap::{Args, ValueEnum};

use crate::units::{format_duration, format_size, parse_duration, parse_size};

/// Loopback, port 9001: the port the Autobahn TestSuite and most echo-server
/// examples use, and not reachable from outside the machine until asked.
pub const DEFAULT_LISTEN: &str = "127.0.0.1:9001";

/// Listen backlog. mio's own `bind` uses 128, which overflows (SYN drops, 1 s
/// client retries) in a connect storm; uSockets uses 512. The kernel caps it
/// at `net.core.somaxconn` (4096 on current kernels).
pub const DEFAULT_BACKLOG: u32 = 4096;

/// Open connections before new ones get HTTP 503. Kept under the usual
/// 20,000-descriptor process limit with room for the listener, the
/// refusals in flight and the log.
pub const DEFAULT_MAX_CONNECTIONS: usize = 10_000;

/// Largest message accepted (reassembled from all its fragments); bigger ones
/// are answered with close 1009. 16 MiB is the largest payload the Autobahn
/// TestSuite sends (case 9.1.6), and far below tungstenite's 64 MiB default.
pub const DEFAULT_MAX_MESSAGE_SIZE: usize = 16 << 20;

/// Largest single frame accepted. A frame can never usefully exceed a
/// message, so the default matches the message limit; the check runs on the
/// frame header, before a byte of payload is buffered.
pub const DEFAULT_MAX_FRAME_SIZE: usize = 16 << 20;

/// Pending output per connection above which the server stops reading from
/// that connection until the peer drains it (echo flow control). 1 MiB lets a
/// fast peer keep a deep pipeline while bounding a stalled one.
pub const DEFAULT_MAX_BACKPRESSURE: usize = 1 << 20;

/// Time allowed from accept to a complete request head (slowloris defence).
pub const DEFAULT_HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// A connection silent this long is closed with 1001; halfway through it is
/// pinged, so a live peer that simply has nothing to say stays connected.
/// uWebSockets' default.
pub const DEFAULT_IDLE_TIMEOUT: Duration = Duration::from_secs(120);

/// On SIGINT/SIGTERM, how long to wait for clients to answer close 1001.
pub const DEFAULT_SHUTDOWN_TIMEOUT: Duration = Duration::from_secs(5);

/// How often the headline figures are logged: often enough to watch a
/// run, rarely enough not to flood a log kept for weeks.
pub const DEFAULT_STATS_INTERVAL: Duration = Duration::from_secs(10);

/// The shortest `--stats-interval` (other than 0, off). When idle the loop
/// looks at the clock only on its timeout sweep, up to 500 ms apart, so a
/// shorter interval would silently run at the sweep's pace; one line a
/// second is also more than a person reads.
pub const MIN_STATS_INTERVAL: Duration = Duration::from_secs(1);

/// Largest HTTP request head; a bigger one is answered with 431. Browsers send
/// well under 2 KiB; 16 KiB leaves room for large cookies.
pub const MAX_REQUEST_HEAD: usize = 16 << 10;

/// Rooms a server holds at most: far beyond a chat service's rooms per
/// process, and a bound on what a client creating rooms at will can cost
/// (a room is a name and a member list, about 100 bytes).
pub const DEFAULT_MAX_ROOMS: usize = 100_000;

/// Rooms one connection may be in at once: a browser tab follows a few
/// rooms (a chat, its notifications, a dashboard); leaving a room finds the
/// member among its rooms, so this also bounds that search.
pub const DEFAULT_MAX_ROOMS_PER_CONNECTION: usize = 16;

/// The defaults above as `--help` shows them (`16MiB`, `10s`): made from
/// the constants, once, so that the text cannot drift from the value.
mod shown {
    use super::*;

    pub static MAX_MESSAGE_SIZE: LazyLock<String> = LazyLock::new(|| format_size(DEFAULT_MAX_MESSAGE_SIZE));
    pub static MAX_FRAME_SIZE: LazyLock<String> = LazyLock::new(|| format_size(DEFAULT_MAX_FRAME_SIZE));
    pub static MAX_BACKPRESSURE: LazyLock<String> = LazyLock::new(|| format_size(DEFAULT_MAX_BACKPRESSURE));
    pub static HANDSHAKE_TIMEOUT: LazyLock<String> = LazyLock::new(|| format_duration(DEFAULT_HANDSHAKE_TIMEOUT));
    pub static IDLE_TIMEOUT: LazyLock<String> = LazyLock::new(|| format_duration(DEFAULT_IDLE_TIMEOUT));
    pub static SHUTDOWN_TIMEOUT: LazyLock<String> = LazyLock::new(|| format_duration(DEFAULT_SHUTDOWN_TIMEOUT));
    pub static STATS_INTERVAL: LazyLock<String> = LazyLock::new(|| format_duration(DEFAULT_STATS_INTERVAL));
}

/// What the server does with the messages it receives.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Mode {
    /// Send every text or binary message back to its sender, same opcode.
    Echo,
    /// Every connection joins the room named by its request path; every text
    /// or binary message a member sends goes to every member of that room,
    /// the sender included.
    Broadcast,
}

impl Mode {
    pub fn as_str(self) -> &'static str {
        match self {
            Mode::Echo => "echo",
            Mode::Broadcast => "broadcast",
        }
    }
}

/// What happens to a room member whose pending output is over
/// `--max-backpressure` when a message for it arrives.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum SlowConsumer {
    /// Close it with 1008 (uWebSockets' `closeOnBackpressureLimit`,
    /// Centrifugo's "slow" disconnect): it would only fall further behind.
    Close,
    /// Skip the message for it (counted); it keeps its place.
    Drop,
}

impl SlowConsumer {
    pub fn as_str(self) -> &'static str {
        match self {
            SlowConsumer::Close => "close",
            SlowConsumer::Drop => "drop",
        }
    }
}

/// A secret from the command line or the environment: never shown by
/// `Debug` (so never in a log line).
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(pub String);

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Secret(..)")
    }
}

/// Everything the server can be told at start-up.
#[derive(Debug, Clone, Args)]
pub struct Config {
    /// Address to listen on, HOST:PORT (port 0 picks a free port; the log says which).
    #[arg(long, env = "WSLOOP_LISTEN", default_value = DEFAULT_LISTEN, value_parser = parse_listen)]
    pub listen: SocketAddr,

    /// What to do with received messages.
    #[arg(long, env = "WSLOOP_MODE", value_enum, default_value_t = Mode::Echo)]
    pub mode: Mode,

    /// Listen backlog (the kernel caps it at net.core.somaxconn).
    #[arg(long, env = "WSLOOP_BACKLOG", default_value_t = DEFAULT_BACKLOG)]
    pub backlog: u32,

    /// Set SO_REUSEPORT on the listener, so several processes can share the port.
    #[arg(long, env = "WSLOOP_REUSE_PORT")]
    pub reuse_port: bool,

    /// Open connections allowed; beyond it new connections get HTTP 503.
    #[arg(long, env = "WSLOOP_MAX_CONNECTIONS", default_value_t = DEFAULT_MAX_CONNECTIONS,
          value_parser = parse_positive_count)]
    pub max_connections: usize,

    /// Largest message accepted, e.g. 16MiB; bigger ones get close 1009.
    #[arg(long, env = "WSLOOP_MAX_MESSAGE_SIZE", default_value = shown::MAX_MESSAGE_SIZE.as_str(),
          value_parser = parse_positive_size)]
    pub max_message_size: usize,

    /// Largest single frame accepted; bigger ones get close 1009.
    #[arg(long, env = "WSLOOP_MAX_FRAME_SIZE", default_value = shown::MAX_FRAME_SIZE.as_str(),
          value_parser = parse_positive_size)]
    pub max_frame_size: usize,

    /// Pending output per connection before the server stops reading from it.
    #[arg(long, env = "WSLOOP_MAX_BACKPRESSURE", default_value = shown::MAX_BACKPRESSURE.as_str(),
          value_parser = parse_positive_size)]
    pub max_backpressure: usize,

    /// Time allowed to complete the opening handshake, e.g. 10s or 500ms.
    #[arg(long, env = "WSLOOP_HANDSHAKE_TIMEOUT", default_value = shown::HANDSHAKE_TIMEOUT.as_str(),
          value_parser = parse_positive_duration)]
    pub handshake_timeout: Duration,

    /// Close a connection silent this long (pinged halfway); 0 turns it off.
    #[arg(long, env = "WSLOOP_IDLE_TIMEOUT", default_value = shown::IDLE_TIMEOUT.as_str(),
          value_parser = parse_duration)]
    pub idle_timeout: Duration,

    /// On SIGINT/SIGTERM, time to wait for clients to answer close 1001.
    #[arg(long, env = "WSLOOP_SHUTDOWN_TIMEOUT", default_value = shown::SHUTDOWN_TIMEOUT.as_str(),
          value_parser = parse_duration)]
    pub shutdown_timeout: Duration,

    /// Accept only handshakes whose Origin is one of these (repeatable; default: any).
    #[arg(long = "allowed-origin", env = "WSLOOP_ALLOWED_ORIGINS", value_delimiter = ',')]
    pub allowed_origin: Vec<String>,

    /// Subprotocols the server speaks (repeatable); of those the client
    /// offers, its first choice that is on this list is selected.
    #[arg(long = "subprotocol", env = "WSLOOP_SUBPROTOCOLS", value_delimiter = ',')]
    pub subprotocol: Vec<String>,

    /// Also serve /metrics and /stats on this address (HOST:PORT), e.g. one
    /// kept private while the main port is public.
    #[arg(long, env = "WSLOOP_METRICS_LISTEN", value_parser = parse_listen)]
    pub metrics_listen: Option<SocketAddr>,

    /// Do not serve the monitor page, /stats or /metrics on the main port
    /// (they stay on --metrics-listen, if given).
    #[arg(long, env = "WSLOOP_NO_HTTP_PAGES")]
    pub no_http_pages: bool,

    /// Do not measure per-message service latency (saves two clock reads per
    /// wakeup that carries messages).
    #[arg(long, env = "WSLOOP_NO_LATENCY")]
    pub no_latency: bool,

    /// Log one line of headline figures this often, at least 1s; 0 turns it off.
    #[arg(long, env = "WSLOOP_STATS_INTERVAL", default_value = shown::STATS_INTERVAL.as_str(),
          value_parser = parse_duration)]
    pub stats_interval: Duration,

    /// For a room member over --max-backpressure when a room message comes:
    /// close it with 1008, or drop the message for it.
    #[arg(long, env = "WSLOOP_SLOW_CONSUMER", value_enum, default_value_t = SlowConsumer::Close)]
    pub slow_consumer: SlowConsumer,

    /// Rooms the server holds at most; joins beyond are refused.
    #[arg(long, env = "WSLOOP_MAX_ROOMS", default_value_t = DEFAULT_MAX_ROOMS, value_parser = parse_positive_count)]
    pub max_rooms: usize,

    /// Rooms one connection may be in at once.
    #[arg(long, env = "WSLOOP_MAX_ROOMS_PER_CONNECTION", default_value_t = DEFAULT_MAX_ROOMS_PER_CONNECTION,
          value_parser = parse_positive_count)]
    pub max_rooms_per_connection: usize,

    /// Turn on POST /publish/ROOM, which then needs `Authorization: Bearer TOKEN`.
    #[arg(long, env = "WSLOOP_PUBLISH_TOKEN", hide_env_values = true, value_parser = parse_secret)]
    pub publish_token: Option<Secret>,

    /// Event loops (threads), each with its own SO_REUSEPORT listener on the
    /// address; rooms span them.
    #[arg(long, env = "WSLOOP_WORKERS", default_value_t = 1, value_parser = parse_positive_count)]
    pub workers: usize,

    /// Join rooms across processes through Redis pub/sub, e.g. redis://127.0.0.1:6379/0.
    #[arg(long, env = "WSLOOP_REDIS", hide_env_values = true, value_parser = parse_redis_url)]
    pub redis: Option<Secret>,

    /// Prefix of the Redis channel names, so deployments can share a Redis.
    #[arg(long, env = "WSLOOP_REDIS_PREFIX", default_value = crate::bridge::DEFAULT_PREFIX)]
    pub redis_prefix: String,

    /// Serve wss:// (and https:// pages) on --listen with this certificate
    /// chain (PEM); needs --tls-key. SIGHUP reloads both.
    #[arg(long, env = "WSLOOP_TLS_CERT", requires = "tls_key")]
    pub tls_cert: Option<std::path::PathBuf>,

    /// The private key of --tls-cert (PEM: PKCS#8, PKCS#1 or SEC1).
    #[arg(long, env = "WSLOOP_TLS_KEY", requires = "tls_cert")]
    pub tls_key: Option<std::path::PathBuf>,

    /// Messages waiting to be published to Redis at most; beyond, they are dropped and counted.
    #[arg(long, env = "WSLOOP_REDIS_QUEUE", default_value_t = crate::bridge::DEFAULT_QUEUE,
          value_parser = parse_positive_count)]
    pub redis_queue: usize,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            listen: DEFAULT_LISTEN.parse().expect("DEFAULT_LISTEN is a socket address"),
            mode: Mode::Echo,
            backlog: DEFAULT_BACKLOG,
            reuse_port: false,
            max_connections: DEFAULT_MAX_CONNECTIONS,
            max_message_size: DEFAULT_MAX_MESSAGE_SIZE,
            max_frame_size: DEFAULT_MAX_FRAME_SIZE,
            max_backpressure: DEFAULT_MAX_BACKPRESSURE,
            handshake_timeout: DEFAULT_HANDSHAKE_TIMEOUT,
            idle_timeout: DEFAULT_IDLE_TIMEOUT,
            shutdown_timeout: DEFAULT_SHUTDOWN_TIMEOUT,
            allowed_origin: Vec::new(),
            subprotocol: Vec::new(),
            metrics_listen: None,
            no_http_pages: false,
            no_latency: false,
            stats_interval: DEFAULT_STATS_INTERVAL,
            slow_consumer: SlowConsumer::Close,
            max_rooms: DEFAULT_MAX_ROOMS,
            max_rooms_per_connection: DEFAULT_MAX_ROOMS_PER_CONNECTION,
            publish_token: None,
            workers: 1,
            redis: None,
            redis_prefix: crate::bridge::DEFAULT_PREFIX.to_string(),
            redis_queue: crate::bridge::DEFAULT_QUEUE,
            tls_cert: None,
            tls_key: None,
        }
    }
}

/// Most loops one process runs: far more than the cores of any machine
/// (each loop is a thread meant to have a core to itself).
const MAX_WORKERS: usize = 256;

/// The longest timeout the loop's millisecond clock can measure: its ticks are
/// `u32` and compared with wrapping arithmetic, which is exact for spans
/// under 2^31 ms (24 days).
const MAX_TIMEOUT: Duration = Duration::from_secs(20 * 24 * 3600);

impl Config {
    /// The TLS configuration `--tls-cert` and `--tls-key` name, loaded
    /// (`None` without them). The error is one line naming the bad file.
    pub fn tls(&self) -> Result<Option<std::sync::Arc<crate::tls::TlsAcceptor>>, String> {
        match (&self.tls_cert, &self.tls_key) {
            (Some(cert), Some(key)) => crate::tls::TlsAcceptor::load(cert, key).map(|a| Some(std::sync::Arc::new(a))),
            (None, None) => Ok(None),
            _ => Err("--tls-cert and --tls-key go together".into()),
        }
    }

    /// Checks the values that no single flag parser can: the relations
    /// between them and the clock's range. Called before the server starts, so
    /// that nothing can fail this way inside the event loop.
    pub fn validate(&self) -> Result<(), String> {
        for (name, value) in [
            ("--handshake-timeout", self.handshake_timeout),
            ("--idle-timeout", self.idle_timeout),
            ("--shutdown-timeout", self.shutdown_timeout),
            ("--stats-interval", self.stats_interval),
        ] {
            if value > MAX_TIMEOUT {
                return Err(format!("{name} {} is longer than the 20-day maximum", format_duration(value)));
            }
        }
        if self.workers > MAX_WORKERS {
            return Err(format!("--workers must be at most {MAX_WORKERS}"));
        }
        if !self.idle_timeout.is_zero() && self.idle_timeout < Duration::from_millis(100) {
            return Err("--idle-timeout must be 0 (off) or at least 100ms".into());
        }
        if !self.stats_interval.is_zero() && self.stats_interval < MIN_STATS_INTERVAL {
            return Err(format!(
                "--stats-interval {} is below the {} minimum (0 turns the stats line off)",
                format_duration(self.stats_interval),
                format_duration(MIN_STATS_INTERVAL)
            ));
        }
        // Pending output (at most the backpressure limit plus one message) is
        // counted in a u32 per connection.
        if self.max_message_size > 1 << 30 || self.max_backpressure > 1 << 30 {
            return Err("--max-message-size and --max-backpressure must be at most 1GiB".into());
        }
        Ok(())
    }

    /// The frame limit actually enforced: a frame larger than the message
    /// limit could never be accepted anyway.
    pub fn effective_max_frame_size(&self) -> usize {
        self.max_frame_size.min(self.max_message_size)
    }

    /// One line with the limits in force, for the start-up log.
    pub fn summary(&self) -> String {
        format!(
            "mode {}, max-connections {}, max-message-size {}, max-frame-size {}, max-backpressure {}, \
             handshake-timeout {}, idle-timeout {}, shutdown-timeout {}, backlog {}{}",
            self.mode.as_str(),
            self.max_connections,
            format_size(self.max_message_size),
            format_size(self.effective_max_frame_size()),
            format_size(self.max_backpressure),
            format_duration(self.handshake_timeout),
            if self.idle_timeout.is_zero() { "off".to_string() } else { format_duration(self.idle_timeout) },
            format_duration(self.shutdown_timeout),
            self.backlog,
            if self.reuse_port { ", reuse-port" } else { "" },
        ) + if self.no_latency { ", no-latency" } else { "" }
            + if self.no_http_pages { ", no-http-pages" } else { "" }
            + &if self.mode == Mode::Broadcast {
                format!(
                    ", slow-consumer {}, max-rooms {}, max-rooms-per-connection {}",
                    self.slow_consumer.as_str(),
                    self.max_rooms,
                    self.max_rooms_per_connection
                )
            } else {
                String::new()
            }
            + if self.publish_token.is_some() { ", publish on" } else { "" }
            + &if self.workers > 1 { format!(", workers {}", self.workers) } else { String::new() }
            + if self.redis.is_some() { ", redis on" } else { "" }
            + if self.tls_cert.is_some() { ", tls" } else { "" }
    }
}

/// A Redis URL may carry a password: it is kept as a [`Secret`].
fn parse_redis_url(text: &str) -> Result<Secret, String> {
    if !text.starts_with("redis://") {
        return Err("must be redis://HOST:PORT[/DB] (rediss:// is not supported)".into());
    }
    Ok(Secret(text.to_string()))
}

fn parse_secret(text: &str) -> Result<Secret, String> {
    if text.is_empty() {
        return Err("must not be empty".into());
    }
    Ok(Secret(text.to_string()))
}

fn parse_listen(text: &str) -> Result<SocketAddr, String> {
    if let Ok(addr) = text.parse() {
        return Ok(addr);
    }
    match text.to_socket_addrs() {
        Ok(mut addrs) => addrs.next().ok_or_else(|| format!("{text:?} resolves to no address")),
        Err(e) => Err(format!("{text:?} is not HOST:PORT ({e})")),
    }
}

fn parse_positive_size(text: &str) -> Result<usize, String> {
    match parse_size(text)? {
        0 => Err("must be greater than 0".into()),
        n => Ok(n),
    }
}

fn parse_positive_count(text: &str) -> Result<usize, String> {
    match crate::units::parse_count(text)? {
        0 => Err("must be greater than 0".into()),
        n => usize::try_from(n).map_err(|_| "too large".to_string()),
    }
}

fn parse_positive_duration(text: &str) -> Result<Duration, String> {
    let d = parse_duration(text)?;
    if d.is_zero() {
        return Err("must be greater than 0".into());
    }
    Ok(d)
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[derive(Parser)]
    struct Cli {
        #[command(flatten)]
        config: Config,
    }

    /// The flag defaults and `Config::default()` come from the same
    /// constants; this pins that they parse back to the same values. The
    /// command is parsed with every argument's variable removed, so that a
    /// `WSLOOP_...` variable in the test's environment cannot change (or
    /// skip) the comparison.
    #[test]
    fn clap_defaults_match_default() {
        use clap::{CommandFactory, FromArgMatches};
        let command = Cli::command().mut_args(|arg| arg.env(None));
        let matches = command.try_get_matches_from(["wsloop"]).expect("defaults parse");
        let parsed = Cli::from_arg_matches(&matches).expect("defaults make a config").config;
        assert_eq!(format!("{parsed:?}"), format!("{:?}", Config::default()));
        assert!(Config::default().validate().is_ok());
    }

    #[test]
    fn bad_values_are_refused() {
        assert!(Cli::try_parse_from(["wsloop", "--max-message-size", "0"]).is_err());
        assert!(Cli::try_parse_from(["wsloop", "--listen", "nonsense"]).is_err());
        assert!(Cli::try_parse_from(["wsloop", "--handshake-timeout", "0"]).is_err());
        let cli = Cli::try_parse_from(["wsloop", "--idle-timeout", "30d"]);
        assert!(cli.is_err());
        let cli = Cli::try_parse_from(["wsloop", "--idle-timeout", "1000h"]).unwrap();
        assert!(cli.config.validate().is_err());
    }

    /// The floor is refused below, accepted at, shown in `--help`; 0 stays "off".
    #[test]
    fn stats_interval_has_a_floor() {
        let interval = |text: &str| Cli::try_parse_from(["wsloop", "--stats-interval", text]).unwrap().config;
        let error = interval("1ms").validate().unwrap_err();
        assert!(
            error.contains("--stats-interval 1ms") && error.contains(&format_duration(MIN_STATS_INTERVAL)),
            "{error}"
        );
        assert!(interval("999ms").validate().is_err());
        assert!(interval(&format_duration(MIN_STATS_INTERVAL)).validate().is_ok());
        assert!(interval("0").validate().is_ok());
        use clap::CommandFactory;
        let help = Cli::command().render_long_help().to_string();
        let line = help.lines().skip_while(|l| !l.contains("--stats-interval")).nth(1).unwrap_or_default();
        assert!(line.contains(&format!("at least {}", format_duration(MIN_STATS_INTERVAL))), "{help}");
    }

    #[test]
    fn frame_limit_never_exceeds_message_limit() {
        let config = Config { max_message_size: 1000, max_frame_size: 5000, ..Config::default() };
        assert_eq!(config.effective_max_frame_size(), 1000);
    }
}
