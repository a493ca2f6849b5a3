//! `loadgen`: the load generator that saturates wsloop and tells the truth
//! about latency.
//!
//! # Layout
//!
//! - `cli`: flags, defaults and the checked [`cli::Settings`].
//! - `broadcast`: rooms, publishers and what every subscriber checks.
//! - `driver`: one mio event loop per thread: slab of connections, ramp,
//!   phases, open-loop send timer, sweep.
//! - `client`: one connection's state machine and its hot path.
//! - `handshake`: the request (tungstenite-built) and the 101's checks.
//! - `frames`: premasked outgoing frames, stamp patched per message.
//! - `inbound`: incoming frames parsed and verified in place.
//! - `plan`: the open-loop schedule, phases, the measurement window.
//! - `metrics`: histograms, counters and error kinds, merged across loops
//!   (`report` renders them: summary, JSON).
//! - `progress`: the once-a-second live line and timeline.
//! - `report`, `hgrm`: the summary, the JSON document and the `.hgrm` file.
//! - `sys`: timerfd, source-address binding, terminal width (what both
//!   loops share, CPU time included, is in `wsloop::sys`).
//! - `tls`: `wss://`: rustls over the loop's sockets, the TLS flags, the
//!   loop's session store.
//! - `output`: stdout and stderr, where a closed pipe never ends the run.
//! - `publish`: `loadgen publish`, one stamped `POST /publish/ROOM`.
//!
//! The payload layout it shares with servers is `wsloop::wire`.

// `print!` and `eprintln!` panic on a closed pipe; everything goes through
// `output`, which ignores such failures.
#![deny(clippy::print_stdout, clippy::print_stderr)]

mod broadcast;
mod cli;
mod client;
mod driver;
mod frames;
mod handshake;
mod hgrm;
mod inbound;
mod metrics;
mod output;
mod plan;
mod progress;
mod publish;
mod report;
mod sys;
mod tls;

use std::{
    fs::File,
    io::{BufWriter, Write},
    process::ExitCode,
    sync::{
        atomic::{AtomicBool, AtomicUsize, Ordering},
        mpsc, Arc,
    },
    thread,
    time::Duration,
};

use wsloop::{
    clock::monotonic_ns,
    sys::{raise_fd_limit, CpuTime},
};

use crate::{
    cli::{Cli, Mode, Settings, EXIT_INTERRUPTED},
    driver::{Common, Gate, LoopResult, Share},
    handshake::RequestTemplate,
    metrics::{OpenFailure, Stats},
    progress::Progress,
    report::{Inputs, Outcome, Report, Status},
};

/// Descriptors loadgen needs besides its connections: stdio, epoll and
/// timer per loop, the signal pipe, output files.
const SPARE_FDS: u64 = 64;

/// How often the live line (and the JSON timeline) is updated.
const TICK: Duration = Duration::from_secs(1);

fn main() -> ExitCode {
    let args: Vec<std::ffi::OsString> = std::env::args_os().collect();
    if args.get(1).is_some_and(|arg| arg == "publish") {
        return ExitCode::from(publish::main(args));
    }
    let cli = Cli::try_parse_args(args).unwrap_or_else(|e| e.exit());
    let settings = match cli.into_settings(output::stderr_is_terminal()) {
        Ok(settings) => settings,
        Err(message) => {
            // Same shape and exit status (2) as clap's own errors.
            output::stderr_line(&format!("error: {message}"));
            return ExitCode::from(2);
        }
    };
    match run(settings) {
        Ok(code) => ExitCode::from(code),
        Err(message) => {
            output::stderr_line(&format!("loadgen: {message}"));
            ExitCode::from(1)
        }
    }
}

/// Runs the whole test; `Err` is a one-line reason to exit 1 without a report.
fn run(settings: Settings) -> Result<u8, String> {
    check_limits(&settings)?;
    // One request per target and room (broadcast mode), else one per target:
    // target t's request for room r is number `t * rooms + r`.
    let rooms = settings.layout.map_or(1, |layout| layout.rooms);
    let requests = settings
        .targets
        .iter()
        .flat_map(|target| (0..rooms).map(move |room| (target, room)))
        .map(|(target, room)| {
            let uri = broadcast::room_uri(&target.uri, room, rooms)?;
            RequestTemplate::new(&uri, &settings.headers, &settings.subprotocols)
        })
        .collect::<Result<Vec<_>, String>>()?;
    let published = broadcast::Published::new(settings.layout.map_or(0, |layout| layout.publishers), settings.threads);
    let stop = Arc::new(AtomicBool::new(false));
    // Which signal stopped the run (0: none), for the report.
    let stopped_by = Arc::new(AtomicUsize::new(0));
    for signal in [signal_hook::consts::SIGINT, signal_hook::consts::SIGTERM] {
        // First Ctrl-C: end the measurement now and report; second: exit at once.
        signal_hook::flag::register_conditional_shutdown(signal, 130, stop.clone())
            .and_then(|_| signal_hook::flag::register_usize(signal, stopped_by.clone(), signal as usize))
            .and_then(|_| signal_hook::flag::register(signal, stop.clone()))
            .map_err(|e| format!("cannot install signal handlers: {e}"))?;
    }
    let common =
        Arc::new(Common { settings: settings.clone(), requests, published, gate: Gate::new(settings.threads), stop });

    let started_ns = monotonic_ns();
    let mut progress = Progress::new(settings.threads, started_ns, settings.progress);
    let results = if settings.threads == 1 {
        // One loop runs on the main thread: the process stays single-threaded,
        // which spares every system call glibc's cancellation bookkeeping
        // (about 60 instructions per message).
        let share = shares(&settings).remove(0);
        vec![driver::run(share, common, &mut progress).map_err(|e| format!("event loop failed: {e}"))?]
    } else {
        run_threads(&settings, &common, &mut progress)?
    };

    progress.finish();

    let mut stats = Stats::default();
    let mut window_ns = 0;
    let mut window_cpu = CpuTime::default();
    let mut loop_busy: f64 = 0.0;
    for result in &results {
        stats.merge(&result.stats);
        window_ns = window_ns.max(result.window.len_ns());
        window_cpu.add(&result.cpu);
        loop_busy = loop_busy.max(result.busy_fraction());
    }

    let interrupted = match stopped_by.load(Ordering::Relaxed) {
        0 => None,
        signal => Some(signal_name(signal as i32)),
    };
    let outcome = judge(&settings, &stats, interrupted, window_ns);
    let report = Report::new(Inputs {
        settings: &settings,
        stats: &stats,
        window_ns,
        window_cpu,
        loop_busy,
        process_cpu: CpuTime::process(),
        timeline: std::mem::take(&mut progress.ticks),
        outcome: outcome.clone(),
    });
    output::stdout(&report.summary(&settings));
    if let Some(path) = &settings.json {
        write_file(path, |out| serde_json::to_writer_pretty(&mut *out, &report).map_err(std::io::Error::from))?;
    }
    if let Some(path) = &settings.hgrm {
        write_file(path, |out| hgrm::write(&stats.latency, out))?;
    }
    if let Some(reason) = &outcome.reason {
        output::stderr_line(&format!("loadgen: {reason}"));
    }
    Ok(outcome.exit_code)
}

/// Runs one loop per thread; the main thread turns their samples into ticks.
fn run_threads(settings: &Settings, common: &Arc<Common>, progress: &mut Progress) -> Result<Vec<LoopResult>, String> {
    let (samples, sample_rx) = mpsc::channel();
    let mut loops = Vec::new();
    for share in shares(settings) {
        let (common, samples) = (common.clone(), samples.clone());
        let index = share.index;
        let handle = thread::Builder::new()
            .name(format!("loadgen-{index}"))
            .spawn(move || driver::run(share, common, samples))
            .map_err(|e| format!("cannot start thread {index}: {e}"))?;
        loops.push(handle);
    }
    drop(samples);

    // Until every loop has finished (and dropped its sender): samples in, ticks out.
    let mut next_tick = monotonic_ns() + TICK.as_nanos() as u64;
    loop {
        let wait = next_tick.saturating_sub(monotonic_ns());
        match sample_rx.recv_timeout(Duration::from_nanos(wait)) {
            Ok(sample) => progress.update(sample),
            Err(mpsc::RecvTimeoutError::Timeout) => {}
            Err(mpsc::RecvTimeoutError::Disconnected) => break,
        }
        let now = monotonic_ns();
        if now >= next_tick {
            progress.tick(now);
            next_tick += TICK.as_nanos() as u64;
        }
    }
    loops
        .into_iter()
        .enumerate()
        .map(|(index, handle)| {
            handle
                .join()
                .map_err(|_| format!("event loop {index} panicked"))?
                .map_err(|e| format!("event loop {index} failed: {e}"))
        })
        .collect()
}

/// Splits the run between the loops: connections (and with them the rate)
/// as evenly as they divide, so every connection gets the same rate.
/// Broadcast: the rate goes with the publishers (ids `0..publishers`; loop
/// `i` has the ids `i`, `i + threads`, ..., so its share of them divides the
/// same way).
fn shares(settings: &Settings) -> Vec<Share> {
    let threads = settings.threads as u64;
    let split = |total: u64, i: u64| total / threads + u64::from(i < total % threads);
    let senders = settings.layout.map_or(settings.connections, |layout| u64::from(layout.publishers));
    (0..threads)
        .map(|i| {
            let connections = split(settings.connections, i);
            Share {
                index: i as usize,
                connections,
                rate: settings.rate.map(|rate| rate as f64 * split(senders, i) as f64 / senders as f64),
                quota: settings.messages.map(|messages| split(messages, i)),
                connect_rate: settings.connect_rate.map(|rate| rate as f64 / threads as f64),
            }
        })
        .collect()
}

/// Refuses runs that cannot work on this machine, before opening anything.
fn check_limits(settings: &Settings) -> Result<(), String> {
    let needed = settings.connections + SPARE_FDS;
    match raise_fd_limit() {
        Ok(limit) if limit < needed => {
            return Err(format!(
                "{} connections need about {needed} file descriptors, but the limit is {limit}; raise it (ulimit -n)",
                settings.connections
            ))
        }
        Ok(_) => {}
        Err(e) => output::stderr_line(&format!("loadgen: warning: cannot read the open-file limit: {e}")),
    }
    if let Some(ports) = ephemeral_ports() {
        let sources = settings.source_ips.len().max(1) as u64;
        // Ports are per source address and per server address: connection i goes to target i mod T.
        let (busiest, connections) = connections_per_address(settings);
        if settings.mode != Mode::Churn && connections > ports * sources {
            return Err(format!(
                "{connections} connections to {busiest} need more than the {ports} local ports per source address \
                 (net.ipv4.ip_local_port_range); add --source-ip 127.0.0.2 (and more)"
            ));
        }
    }
    Ok(())
}

/// The server address that gets the most connections, and how many
/// (several URLs may name the same address).
fn connections_per_address(settings: &Settings) -> (std::net::SocketAddr, u64) {
    let targets = settings.targets.len() as u64;
    let mut per_address = std::collections::BTreeMap::new();
    for (i, target) in settings.targets.iter().enumerate() {
        let share = settings.connections / targets + u64::from((i as u64) < settings.connections % targets);
        *per_address.entry(target.addr).or_insert(0) += share;
    }
    per_address.into_iter().max_by_key(|(_, n)| *n).unwrap_or((settings.targets[0].addr, 0))
}

/// Size of the kernel's ephemeral port range, if readable.
fn ephemeral_ports() -> Option<u64> {
    let range = std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range").ok()?;
    let mut bounds = range.split_whitespace().map(|n| n.parse::<u64>());
    let (low, high) = (bounds.next()?.ok()?, bounds.next()?.ok()?);
    Some(high.checked_sub(low)? + 1)
}

/// Success, failure with its one-line reason, or an interrupted run.
///
/// Errors beyond `--max-errors` fail a run even if it was interrupted (they
/// happened); otherwise an interrupted run is neither a success nor a
/// failure, and says how much of it ran.
fn judge(settings: &Settings, stats: &Stats, interrupted: Option<&'static str>, window_ns: u64) -> Outcome {
    let describe = |pairs: Vec<(&str, u64)>| {
        pairs.into_iter().filter(|(_, n)| *n > 0).map(|(k, n)| format!("{k} {n}")).collect::<Vec<_>>().join(", ")
    };
    let failed = |reason: String| Outcome {
        ok: false,
        status: Status::Failed,
        exit_code: 1,
        reason: Some(reason),
        interrupted_by: interrupted,
    };
    let failures: Vec<(&str, u64)> =
        OpenFailure::ALL.iter().map(|f| (f.as_str(), stats.failures[*f as usize])).collect();
    let total = stats.errors_total();
    if total > settings.max_errors && (stats.opened > 0 || interrupted.is_some()) {
        let mut kinds: Vec<(&str, u64)> = failures;
        kinds.extend(metrics::Fault::ALL.iter().map(|f| (f.as_str(), stats.faults[*f as usize])));
        let mut reason = format!("{total} errors ({}) exceed --max-errors {}", describe(kinds), settings.max_errors);
        if let Some(signal) = interrupted {
            reason.push_str(&format!(" (interrupted by {signal})"));
        }
        return failed(reason);
    }
    if let Some(signal) = interrupted {
        let reason = format!(
            "interrupted by {signal}: measured {:.2} s of the {:.2} s asked for",
            window_ns as f64 / 1e9,
            settings.duration.as_secs_f64()
        );
        return Outcome {
            ok: false,
            status: Status::Interrupted,
            exit_code: EXIT_INTERRUPTED,
            reason: Some(reason),
            interrupted_by: Some(signal),
        };
    }
    if stats.opened == 0 {
        return failed(format!(
            "target {} unreachable: no connection succeeded ({})",
            settings.url,
            if stats.failures_total() == 0 { "no attempt finished".to_string() } else { describe(failures) }
        ));
    }
    Outcome { ok: true, status: Status::Ok, exit_code: 0, reason: None, interrupted_by: None }
}

/// The name of a signal loadgen handles.
fn signal_name(signal: i32) -> &'static str {
    match signal {
        signal_hook::consts::SIGINT => "SIGINT",
        signal_hook::consts::SIGTERM => "SIGTERM",
        _ => "a signal",
    }
}

fn write_file(
    path: &std::path::Path,
    write: impl FnOnce(&mut BufWriter<File>) -> std::io::Result<()>,
) -> Result<(), String> {
    let fail = |e: std::io::Error| format!("cannot write {}: {e}", path.display());
    let mut out = BufWriter::new(File::create(path).map_err(fail)?);
    write(&mut out).and_then(|_| out.flush()).map_err(fail)
}
