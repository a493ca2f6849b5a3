//! The once-a-second view: loops send [`Sample`]s, the main thread turns
//! them into a [`Tick`] (the live line on stderr and the JSON timeline).
//!
//! On a terminal the live line is redrawn in place, as oha and k6 do
//! (carriage return, erase the line, the new figures; cut to the terminal's
//! width so it never wraps); in a file or a pipe each tick is a line of its
//! own, so the log keeps the whole run.
//!
//! Loops send cumulative counters, so a lost or late sample costs
//! resolution, never accuracy: rates are differences between two samples
//! of the same loop divided by the time between them.

use hdrhistogram::Histogram;
use serde::Serialize;

use crate::{cli::ProgressOutput, output, plan::Phase};

/// Go to the start of the line and erase it (ANSI "erase in line", whole line).
const REDRAW: &str = "\r\x1b[2K";

/// One loop's state at one moment (cumulative since the loop started).
#[derive(Debug, Clone)]
pub struct Sample {
    /// Which loop sent it.
    pub loop_index: usize,
    /// When (monotonic clock).
    pub at_ns: u64,
    /// The loop's phase.
    pub phase: Phase,
    /// Connections open.
    pub open: u64,
    /// Echoes received so far, warm-up included.
    pub received_all: u64,
    /// Their payload bytes.
    pub bytes_received_all: u64,
    /// Handshakes completed.
    pub handshakes: u64,
    /// Errors so far.
    pub errors: u64,
    /// Latency measured so far in the window (none before it).
    pub latency: Option<Histogram<u64>>,
}

/// Where a loop delivers its samples: a channel to the main thread, or,
/// when the only loop runs on the main thread, the [`Progress`] itself.
pub trait SampleSink {
    fn deliver(&mut self, sample: Sample);
}

impl SampleSink for std::sync::mpsc::Sender<Sample> {
    fn deliver(&mut self, sample: Sample) {
        // The receiver is gone only if the main thread is exiting anyway.
        let _ = self.send(sample);
    }
}

/// The single loop on the main thread ticks once per sample (once a second).
impl SampleSink for Progress {
    fn deliver(&mut self, sample: Sample) {
        let at = sample.at_ns;
        self.update(sample);
        self.tick(at);
    }
}

impl<T: SampleSink> SampleSink for &mut T {
    fn deliver(&mut self, sample: Sample) {
        (**self).deliver(sample);
    }
}

/// One second of the run, all loops together.
#[derive(Debug, Clone, Serialize)]
pub struct Tick {
    /// Seconds since loadgen started.
    pub t_s: f64,
    /// The phase of the first loop (ramp, warmup, measure, drain, close).
    pub phase: &'static str,
    /// Connections open in all loops.
    pub connections_open: u64,
    /// Echoes received per second (pongs in idle mode), warm-up included.
    pub messages_per_s: f64,
    /// Echoed payload, 10^6 bytes per second.
    pub mb_per_s: f64,
    /// Handshakes completed per second.
    pub handshakes_per_s: f64,
    /// Errors so far (cumulative).
    pub errors: u64,
    /// Median latency of the window so far, in microseconds (none before the window opens).
    pub p50_us: Option<f64>,
    /// 99th percentile of the window so far, in microseconds (none before the window opens).
    pub p99_us: Option<f64>,
}

/// Collects samples and produces ticks.
pub struct Progress {
    /// When loadgen started: ticks are stamped relative to it.
    start_ns: u64,
    /// Each loop's latest sample.
    latest: Vec<Option<Sample>>,
    /// Each loop's one before, for rates.
    previous: Vec<Option<Sample>>,
    /// Every tick so far: the JSON timeline.
    pub ticks: Vec<Tick>,
    /// Where and how the live line is shown.
    show: ProgressOutput,
    /// A redrawn line is on the terminal, not yet ended with a newline.
    line_open: bool,
}

impl Progress {
    pub fn new(loops: usize, start_ns: u64, show: ProgressOutput) -> Progress {
        Progress {
            start_ns,
            latest: vec![None; loops],
            previous: vec![None; loops],
            ticks: Vec::new(),
            show,
            line_open: false,
        }
    }

    pub fn update(&mut self, sample: Sample) {
        let slot = sample.loop_index;
        self.previous[slot] = self.latest[slot].take();
        self.latest[slot] = Some(sample);
    }

    /// Records a tick from the latest samples and prints the live line if asked.
    pub fn tick(&mut self, now_ns: u64) {
        let mut tick = Tick {
            t_s: now_ns.saturating_sub(self.start_ns) as f64 / 1e9,
            phase: "ramp",
            connections_open: 0,
            messages_per_s: 0.0,
            mb_per_s: 0.0,
            handshakes_per_s: 0.0,
            errors: 0,
            p50_us: None,
            p99_us: None,
        };
        // Cumulative latency of all loops: the one loop's own histogram when
        // there is only one (no copy), a merged copy otherwise.
        let mut merged: Option<Histogram<u64>> = None;
        let mut only: Option<&Histogram<u64>> = None;
        for (i, (latest, previous)) in self.latest.iter().zip(&self.previous).enumerate() {
            let Some(latest) = latest else { continue };
            if i == 0 {
                tick.phase = latest.phase.as_str();
            }
            tick.connections_open += latest.open;
            tick.errors += latest.errors;
            if let Some(previous) = previous {
                let seconds = latest.at_ns.saturating_sub(previous.at_ns) as f64 / 1e9;
                if seconds > 0.0 {
                    let rate = |a: u64, b: u64| a.saturating_sub(b) as f64 / seconds;
                    tick.messages_per_s += rate(latest.received_all, previous.received_all);
                    tick.mb_per_s += rate(latest.bytes_received_all, previous.bytes_received_all) / 1e6;
                    tick.handshakes_per_s += rate(latest.handshakes, previous.handshakes);
                }
            }
            if let Some(h) = &latest.latency {
                match (&mut merged, only) {
                    (None, None) => only = Some(h),
                    (None, Some(first)) => {
                        let mut sum = first.clone();
                        let _ = sum.add(h);
                        merged = Some(sum);
                    }
                    (Some(sum), _) => {
                        let _ = sum.add(h);
                    }
                }
            }
        }
        if let Some(h) = merged.as_ref().or(only).filter(|h| !h.is_empty()) {
            tick.p50_us = Some(h.value_at_quantile(0.5) as f64 / 1e3);
            tick.p99_us = Some(h.value_at_quantile(0.99) as f64 / 1e3);
        }
        match self.show {
            ProgressOutput::Off => {}
            ProgressOutput::Lines => output::stderr_line(&line(&tick)),
            ProgressOutput::Redraw => {
                output::stderr(&redrawn(&line(&tick), crate::sys::stderr_columns()));
                self.line_open = true;
            }
        }
        self.ticks.push(tick);
    }

    /// Ends a redrawn line, so that what follows (the summary) starts on a
    /// line of its own and the last figures stay visible.
    pub fn finish(&mut self) {
        if self.line_open {
            output::stderr("\n");
            self.line_open = false;
        }
    }
}

/// The live line as redrawn on a terminal `columns` wide: back to the start
/// of the line, erase it, the line cut to fit (a wrapped line could not be
/// redrawn with a carriage return).
pub fn redrawn(line: &str, columns: Option<usize>) -> String {
    // One column spare: a line that fills the last column wraps on some terminals.
    let mut fit = columns.map_or(line.len(), |c| c.saturating_sub(1)).min(line.len());
    while !line.is_char_boundary(fit) {
        fit -= 1;
    }
    format!("{REDRAW}{}", &line[..fit])
}

/// The live line: `[  12s] measure  conns 500  msgs/s 123,456  MB/s 63.2  p50 41us  p99 95us  errors 0`.
pub fn line(tick: &Tick) -> String {
    let latency = match (tick.p50_us, tick.p99_us) {
        (Some(p50), Some(p99)) => format!("  p50 {}  p99 {}", stats_us(p50), stats_us(p99)),
        _ => String::new(),
    };
    let handshakes = if tick.handshakes_per_s > 0.0 {
        format!("  hs/s {}", group(tick.handshakes_per_s as u64))
    } else {
        String::new()
    };
    format!(
        "[{:>5.0}s] {:<7}  conns {}  msgs/s {}  MB/s {:.1}{handshakes}{latency}  errors {}",
        tick.t_s,
        tick.phase,
        tick.connections_open,
        group(tick.messages_per_s as u64),
        tick.mb_per_s,
        tick.errors
    )
}

fn stats_us(us: f64) -> String {
    crate::report::format_latency((us * 1e3) as u64)
}

/// 1234567 → "1,234,567".
pub fn group(n: u64) -> String {
    let digits = n.to_string();
    let mut out = String::with_capacity(digits.len() + digits.len() / 3);
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample(loop_index: usize, at_s: u64, received: u64) -> Sample {
        let mut latency = crate::metrics::latency_histogram();
        latency.record(50_000).unwrap();
        Sample {
            loop_index,
            at_ns: at_s * 1_000_000_000,
            phase: Phase::Measure,
            open: 10,
            received_all: received,
            bytes_received_all: received * 100,
            handshakes: 10,
            errors: 1,
            latency: Some(latency),
        }
    }

    #[test]
    fn rates_come_from_each_loops_own_snapshots() {
        let mut progress = Progress::new(2, 0, ProgressOutput::Off);
        progress.update(sample(0, 1, 1000));
        progress.update(sample(1, 1, 500));
        progress.update(sample(0, 2, 3000));
        progress.update(sample(1, 3, 1500)); // two seconds later: 500/s
        progress.tick(3_000_000_000);
        let tick = &progress.ticks[0];
        assert_eq!(tick.connections_open, 20);
        assert_eq!(tick.errors, 2);
        assert!((tick.messages_per_s - 2500.0).abs() < 1e-6);
        assert_eq!(tick.p50_us.map(|v| v.round()), Some(50.0));
        assert!(line(tick).contains("msgs/s 2,500"));
    }

    #[test]
    fn a_redrawn_line_starts_over_and_fits_the_terminal() {
        let text = "[    1s] measure  conns 10  msgs/s 2,500  MB/s 1.3  errors 0";
        assert_eq!(redrawn(text, None), format!("\r\x1b[2K{text}"));
        assert_eq!(redrawn(text, Some(21)), "\r\x1b[2K[    1s] measure  co");
        assert!(!redrawn(text, Some(200)).contains('\n'));
        assert_eq!(redrawn("ab\u{b5}c", Some(4)), "\r\x1b[2Kab", "cut at a character boundary");
    }

    #[test]
    fn groups_thousands() {
        assert_eq!(group(0), "0");
        assert_eq!(group(999), "999");
        assert_eq!(group(1000), "1,000");
        assert_eq!(group(1234567), "1,234,567");
    }
}
