//! `wsloop`: parse the command line, bind, run the loop, report.

// Nothing here may print with `print!`/`eprintln!`: they panic when the
// stream is closed (`wsloop 2>&1 | head -2`), and a server must not die
// because nobody reads its log. Everything goes through `tracing` and
// [`LossyStderr`], or through `report`, which ignore such failures.
#![deny(clippy::print_stdout, clippy::print_stderr)]

use std::{
    io::{self, Write},
    process::ExitCode,
    sync::atomic::{AtomicU64, Ordering},
};

use clap::Parser;
use tracing::{error, info, warn};
use wsloop::{listener, modes::Builtin, process::Process, Config, Ending};

/// Descriptors the server needs besides one per connection: stdio, epoll,
/// the listeners, the signal pipe and the waker (about ten), and room for
/// the HTTP 503 refusals that are still being answered at the connection cap.
const FD_HEADROOM: usize = 64;

/// A WebSocket echo server that holds tens of thousands of connections on one
/// mio event loop. Every flag can also be set with the environment variable
/// shown under it.
#[derive(Parser)]
#[command(name = "wsloop", version)]
struct Cli {
    #[command(flatten)]
    config: Config,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    init_logging();
    // Bad values, and TLS files that cannot be used, end here, before listening.
    if let Err(message) = cli.config.validate().and_then(|()| cli.config.tls().map(|_| ())) {
        // Same shape and exit status (2) as clap's own errors.
        report(&format!("error: {message}"));
        return ExitCode::from(2);
    }
    let needed = cli.config.max_connections.saturating_add(FD_HEADROOM);
    match listener::raise_fd_limit() {
        Ok(limit) if limit < needed as u64 => warn!(
            limit,
            needed,
            max_connections = cli.config.max_connections,
            headroom = FD_HEADROOM,
            "the open-file limit is below what --max-connections needs (one descriptor per connection \
             plus headroom); raise it (ulimit -n / LimitNOFILE)"
        ),
        Ok(_) => {}
        Err(e) => warn!(error = %e, "cannot read or raise the open-file limit"),
    }

    let config = cli.config.clone();
    let process = match Process::bind(cli.config.clone(), |_| Builtin::for_config(&config)) {
        Ok(process) => process,
        Err(e) => {
            // The error names the address that failed (main or --metrics-listen).
            error!("{e}");
            return ExitCode::from(1);
        }
    };
    info!("listening on {} ({})", process.local_addr(), cli.config.summary());
    if let Some(addr) = process.metrics_local_addr() {
        info!("serving /metrics and /stats on {addr}");
    }

    let summary = match process.run() {
        Ok(summary) => summary,
        Err(e) => {
            error!("event loop failed: {e}");
            return ExitCode::from(1);
        }
    };
    let m = &summary.metrics;
    info!(
        connections_accepted = m.connections_accepted,
        refused = m.refused_total(),
        messages_in = m.messages_in(),
        messages_out = m.messages_out(),
        dropped_at_exit = summary.dropped,
        "shutdown complete"
    );
    let lost = LOST_LOG_WRITES.load(Ordering::Relaxed);
    if lost > 0 {
        // Reaches a reader only if the log came back (a full disk that was cleared).
        warn!(lost, "log writes failed and were dropped");
    }
    match summary.ended_by {
        Ending::Graceful => ExitCode::SUCCESS,
        // The conventional status of a process ended by a signal.
        Ending::Immediate(signal) => ExitCode::from(128 + signal.unwrap_or(2).clamp(1, 127) as u8),
    }
}

fn init_logging() {
    use std::io::IsTerminal;
    use tracing_subscriber::EnvFilter;
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(|| LossyStderr)
        .with_ansi(std::io::stderr().is_terminal())
        .with_target(false)
        // On a failed write tracing-subscriber would say so with `eprintln!`,
        // which panics when the failure is stderr's own: that killed the server.
        .log_internal_errors(false)
        .init();
}

/// Log writes that failed (EPIPE once nobody reads the pipe, ENOSPC, ...).
static LOST_LOG_WRITES: AtomicU64 = AtomicU64::new(0);

/// stderr for the log, where a failed write is counted and dropped: the
/// line is lost, the server goes on.
struct LossyStderr;

impl Write for LossyStderr {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        match io::stderr().write(buf) {
            Ok(n) => Ok(n),
            Err(e) if e.kind() == io::ErrorKind::Interrupted => Err(e), // write_all retries it
            Err(_) => {
                LOST_LOG_WRITES.fetch_add(1, Ordering::Relaxed);
                Ok(buf.len())
            }
        }
    }

    fn flush(&mut self) -> io::Result<()> {
        let _ = io::stderr().flush();
        Ok(())
    }
}

/// One line on stderr, outside the log (before logging is set up, or
/// instead of it); a failure to write it is ignored.
fn report(line: &str) {
    let _ = writeln!(LossyStderr, "{line}");
}
