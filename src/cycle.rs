//! One wakeup's work on an open WebSocket: read every message the socket
//! has, hand each to the application, queue the replies, flush once per
//! batch.
//!
//! This is the per-message hot path. It is generic over the stream (anything
//! `Read + Write` that can say how much output it left pending), so the
//! benches run exactly this code over in-memory streams.

use std::{
    io::{self, Read, Write},
    time::{Duration, Instant},
};

use tungstenite::{Error as WsError, Message, WebSocket};

use crate::{
    config::Config,
    handler::{self, Reply},
    metrics::Metrics,
    socket::OutputState,
    ws::{self, Disposition},
};

/// Upper bound on a frame header, for estimating queued output.
const FRAME_HEADER_MAX: usize = 14;

/// What one wakeup did.
#[derive(Debug)]
pub struct Wakeup {
    /// Replies queued (and flushed, unless output is left pending).
    pub served: u64,
    /// When the first data message was complete in memory, if latency is measured.
    pub first_complete: Option<Instant>,
    /// What went wrong, if anything (`None`: all well, or blocked with output queued).
    pub outcome: Option<Disposition>,
}

/// Serves one wakeup of an open connection.
///
/// Output left from an earlier wakeup goes first: if this is the WRITABLE
/// that drains it, reading can resume. Then read and reply until the input
/// runs out, corking the replies; flush when it has run out, or when the
/// replies queued pass `--max-backpressure`. If that flush empties the
/// output, read on: the input left behind would raise no new edge.
pub fn serve<S: Read + Write + OutputState>(
    ws: &mut WebSocket<S>,
    close_code: &mut u16,
    config: &Config,
    metrics: &mut Metrics,
) -> Wakeup {
    let limit = config.max_backpressure;
    let mut outcome = if ws.get_ref().pending_output() > 0 { flush(ws) } else { None };
    let mut served = 0;
    let mut first_complete = None;
    while outcome.is_none() {
        let batch = read_batch(ws, limit, close_code, config, metrics);
        served += batch.served;
        first_complete = first_complete.or(batch.first_complete);
        outcome = batch.error.or_else(|| flush(ws));
        if outcome.is_some() || !batch.output_full || ws.get_ref().pending_output() > limit {
            break;
        }
    }
    Wakeup { served, first_complete, outcome }
}

/// What one [`read_batch`] did.
struct Batch {
    /// Replies queued.
    served: u64,
    /// When the first data message was complete in memory (if latency is measured).
    first_complete: Option<Instant>,
    /// It stopped because the queued replies passed the backpressure limit
    /// (not because the input ran out).
    output_full: bool,
    error: Option<Disposition>,
}

/// Reads messages until the input runs out or the replies queued (plus the
/// output already pending) pass `limit`, and queues the application's
/// replies without flushing them.
fn read_batch<S: Read + Write + OutputState>(
    ws: &mut WebSocket<S>,
    limit: usize,
    close_code: &mut u16,
    config: &Config,
    metrics: &mut Metrics,
) -> Batch {
    let mut queued = ws.get_ref().pending_output();
    let mut batch = Batch { served: 0, first_complete: None, output_full: false, error: None };
    loop {
        if queued > limit {
            batch.output_full = true;
            return batch;
        }
        let message = match ws.read() {
            Ok(message) => message,
            Err(WsError::Io(e)) if e.kind() == io::ErrorKind::WouldBlock => return batch,
            Err(e) => {
                batch.error = Some(ws::classify(e));
                return batch;
            }
        };
        let frames = &mut metrics.frames_in;
        match &message {
            Message::Text(text) => {
                frames.text += 1;
                metrics.bytes_in += text.len() as u64;
            }
            Message::Binary(data) => {
                frames.binary += 1;
                metrics.bytes_in += data.len() as u64;
            }
            Message::Ping(_) => {
                frames.ping += 1;
                // tungstenite answers it (while open).
                metrics.frames_out.pong += 1;
                continue;
            }
            Message::Pong(_) => {
                frames.pong += 1;
                continue;
            }
            Message::Close(frame) => {
                frames.close += 1;
                // tungstenite answers it.
                metrics.frames_out.close += 1;
                if *close_code == 0 {
                    *close_code = frame.as_ref().map_or(1005, |f| u16::from(f.code));
                }
                // tungstenite has queued the reply; the next read flushes it
                // and reports ConnectionClosed.
                continue;
            }
            Message::Frame(_) => continue,
        }
        if batch.first_complete.is_none() && !config.no_latency {
            batch.first_complete = Some(Instant::now());
        }
        if let Reply::Send(reply) = handler::on_message(config.mode, message) {
            let len = reply.len();
            match &reply {
                Message::Text(_) => metrics.frames_out.text += 1,
                _ => metrics.frames_out.binary += 1,
            }
            match ws.write(reply) {
                Ok(()) => {}
                // Queued; only the flush that write() attempted (after a pong) blocked.
                Err(WsError::Io(e)) if e.kind() == io::ErrorKind::WouldBlock => {}
                Err(e) => {
                    batch.error = Some(ws::classify(e));
                    return batch;
                }
            }
            queued += len + FRAME_HEADER_MAX;
            batch.served += 1;
            metrics.bytes_out += len as u64;
        }
    }
}

/// A duration in nanoseconds, saturating.
pub fn nanos(duration: Duration) -> u64 {
    u64::try_from(duration.as_nanos()).unwrap_or(u64::MAX)
}

/// Flushes tungstenite's output: `None` if all is well (done, or blocked
/// with the rest queued), else what the error means.
pub fn flush<S: Read + Write>(ws: &mut WebSocket<S>) -> Option<Disposition> {
    match ws.flush() {
        Ok(()) => None,
        Err(WsError::Io(e)) if e.kind() == io::ErrorKind::WouldBlock => None,
        Err(e) => Some(ws::classify(e)),
    }
}
