//! The frame-path harness: one fuzz input is one client connection.
//!
//! Input layout (what the seeds write with [`encode_plan`]):
//!
//! | byte | meaning |
//! |---|---|
//! | 0 | bits 0-1: the limits ([`PRESETS`]); bit 2: the peer half-closes after its last byte; bits 3-5: how many bytes the peer takes per wakeup ([`WRITE_BUDGETS`]) |
//! | 1 | bits 0-4: `k`, how many chunk lengths follow |
//! | 2 .. 2+2k | `k` chunk lengths, u16 little-endian: the stream is cut into wakeups of these sizes, the rest being the last one |
//! | rest | the client's bytes (frames, or anything) |
//!
//! [`run`] opens a [`Connection`] with the limits, hands it the chunks one
//! wakeup each, lets it drain its output, and then checks, besides "no
//! panic":
//!
//! - the output is whole, well-formed server frames (unmasked, no RSV bits,
//!   control frames final and at most 125 bytes), at most one close frame,
//!   and nothing after it;
//! - the messages sent are, in order, the messages the client sent before its
//!   close frame (echo), none over the message limit, text always UTF-8;
//!   the pongs answer pings sent before that close; so nothing answers input
//!   that follows a close;
//! - no wakeup writes more than the peer takes, the output never exceeds
//!   the input plus one close frame, and the heap held at the peak stays
//!   within [`Connection::memory_bound`];
//! - a connection with output pending makes progress when the peer takes it.

use crate::{
    alloc,
    wire::{self, Decoded, BINARY, CLOSE, CONTINUATION, PING, PONG, TEXT},
};

/// The server-side limits and the peer's behaviour for one run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    pub max_frame_size: usize,
    pub max_message_size: usize,
    pub max_backpressure: usize,
    /// Bytes the peer takes per wakeup (`usize::MAX`: all).
    pub write_budget: usize,
}

/// `(max_frame_size, max_message_size, max_backpressure)`, chosen by bits 0-1
/// of the first byte.
pub const PRESETS: [(usize, usize, usize); 4] = [
    // Small: every limit is in reach of short inputs.
    (1024, 4096, 2048),
    // Tiny: a frame just over the control-frame size is already too big.
    (126, 300, 256),
    // Big enough for the 65,536-byte seeds.
    (80_000, 100_000, 64 << 10),
    // The server's defaults (16 MiB, 16 MiB, 1 MiB).
    (16 << 20, 16 << 20, 1 << 20),
];
pub const SMALL: u8 = 0;
pub const TINY: u8 = 1;
pub const BIG: u8 = 2;
pub const DEFAULTS: u8 = 3;
/// First-byte flag: the peer half-closes after its last byte.
pub const EOF: u8 = 4;

/// Bytes the peer takes per wakeup, chosen by bits 3-5 of the first byte.
pub const WRITE_BUDGETS: [usize; 8] = [usize::MAX, 7, 64, 128, 512, 4096, 16384, usize::MAX];

/// First-byte bits for write budget `WRITE_BUDGETS[index]`.
pub const fn budget(index: u8) -> u8 {
    (index & 7) << 3
}

/// Room for what a server may send beyond echoing what it got: its own
/// close frame (at most 127 bytes), with margin.
pub const OUTPUT_SLACK: usize = 256;

/// A fuzz input, decoded.
#[derive(Debug)]
pub struct Plan<'a> {
    pub limits: Limits,
    pub eof: bool,
    /// The client's bytes, one slice per wakeup; they add up to `stream`.
    pub chunks: Vec<&'a [u8]>,
    pub stream: &'a [u8],
}

/// Decodes the layout in the module doc. Any input is a valid plan.
pub fn plan(data: &[u8]) -> Plan<'_> {
    let config = data.first().copied().unwrap_or(0);
    let (max_frame_size, max_message_size, max_backpressure) = PRESETS[usize::from(config & 3)];
    let limits = Limits {
        max_frame_size,
        max_message_size,
        max_backpressure,
        write_budget: WRITE_BUDGETS[usize::from((config >> 3) & 7)],
    };
    let cuts = data.get(1).map_or(0, |b| usize::from(b & 31));
    let rest = data.get(2..).unwrap_or(&[]);
    let (lengths, stream) = rest.split_at((2 * cuts).min(rest.len()));
    let mut chunks = Vec::with_capacity(cuts + 1);
    let mut left = stream;
    for pair in lengths.chunks_exact(2) {
        let (chunk, after) = left.split_at(usize::from(u16::from_le_bytes([pair[0], pair[1]])).min(left.len()));
        chunks.push(chunk);
        left = after;
    }
    chunks.push(left);
    Plan { limits, eof: config & EOF != 0, chunks, stream }
}

/// The fuzz input for `stream` under first byte `config`, cut into wakeups
/// of `lengths` bytes (at most 31) and the rest.
pub fn encode_plan(config: u8, lengths: &[u16], stream: &[u8]) -> Vec<u8> {
    assert!(lengths.len() < 32, "at most 31 chunk lengths");
    let mut data = vec![config, lengths.len() as u8];
    for len in lengths {
        data.extend_from_slice(&len.to_le_bytes());
    }
    data.extend_from_slice(stream);
    data
}

/// The server side of one connection, after its handshake, as the code under
/// test runs it. Implemented by each frame target's adapter.
pub trait Connection {
    /// Makes what the server shares among its connections (the loop's
    /// metrics, its receive buffer), once per process; called before every
    /// run, outside the memory measurement.
    fn init() {}

    /// A connection with these limits (write budget included: a wakeup may
    /// hand the peer at most `limits.write_budget` bytes).
    fn open(limits: &Limits) -> Self;

    /// One wakeup: `input` arrived since the last one (it may be empty),
    /// `eof`: the peer has half-closed after it. Appends what the peer takes
    /// of the connection's output to `output`.
    fn wakeup(&mut self, input: &[u8], eof: bool, output: &mut Vec<u8>);

    /// Output the connection holds that the peer has not taken (0 once the
    /// connection is gone).
    fn pending_output(&self) -> usize;

    /// Output the server discarded, unsent, when it dropped the connection
    /// (0 if none). The harness then accepts output that ends in a frame
    /// cut short by no more than that; whether dropping it was fair is
    /// the adapter's to say and document (a peer that left without a close
    /// gets no guarantee).
    fn dropped_output(&self) -> usize {
        0
    }

    /// The most heap the connection may hold at once, beyond what was live
    /// when it opened, for `input_len` bytes of input.
    fn memory_bound(limits: &Limits, input_len: usize) -> usize;
}

/// Runs one fuzz input through `C` and checks the invariants in the module doc.
pub fn run<C: Connection>(data: &[u8]) {
    let plan = plan(data);
    let limits = plan.limits;
    let input_len = plan.stream.len();
    // Allocated before the measurement starts, and never grown (the output
    // bound below trips first).
    let mut output = Vec::with_capacity(input_len + 2 * OUTPUT_SLACK);
    C::init();
    let baseline = alloc::start();

    let mut conn = C::open(&limits);
    let last = plan.chunks.len() - 1;
    for (i, chunk) in plan.chunks.iter().enumerate() {
        wakeup(&mut conn, chunk, plan.eof && i == last, &mut output, &plan);
    }
    // The peer reads until the connection has nothing more for it.
    while conn.pending_output() > 0 {
        let before = output.len();
        wakeup(&mut conn, &[], plan.eof, &mut output, &plan);
        assert!(
            output.len() > before,
            "stuck: {} bytes of output pending and none taken by a peer taking {} per wakeup",
            conn.pending_output(),
            limits.write_budget
        );
    }
    let peak = alloc::peak().saturating_sub(baseline);
    let bound = C::memory_bound(&limits, input_len);
    assert!(
        peak <= bound,
        "held {peak} bytes of heap at the peak, over the bound of {bound}; {limits:?}, {input_len} bytes in"
    );
    let dropped = conn.dropped_output();
    drop(conn);
    check_output(plan.stream, &output, &limits, dropped);
}

fn wakeup<C: Connection>(conn: &mut C, input: &[u8], eof: bool, output: &mut Vec<u8>, plan: &Plan<'_>) {
    let before = output.len();
    conn.wakeup(input, eof, output);
    let taken = output.len() - before;
    assert!(
        taken <= plan.limits.write_budget,
        "one wakeup wrote {taken} bytes to a peer taking {}",
        plan.limits.write_budget
    );
    let bound = plan.stream.len() + OUTPUT_SLACK;
    assert!(output.len() <= bound, "{} bytes of output for {} bytes of input", output.len(), plan.stream.len());
}

/// What the client sent before its first close frame, as an echo server
/// sees it: complete data messages, and pings.
#[derive(Debug, Default)]
pub struct ClientView {
    pub messages: Vec<(u8, Vec<u8>)>,
    pub pings: Vec<Vec<u8>>,
}

/// Reads the client's stream permissively: frames are split by their headers
/// alone, and anything a server would reject (unmasked, RSV bits, bad
/// opcodes, stray continuations) is taken or skipped so that the view is an
/// upper bound of what a correct server can answer.
pub fn client_view(stream: &[u8]) -> ClientView {
    let mut view = ClientView::default();
    let mut current: Option<(u8, Vec<u8>)> = None;
    for frame in wire::decode_all(stream).0 {
        match frame.opcode {
            TEXT | BINARY => current = Some((frame.opcode, frame.payload)),
            CONTINUATION => {
                if let Some((_, payload)) = &mut current {
                    payload.extend_from_slice(&frame.payload);
                }
            }
            PING => view.pings.push(frame.payload),
            CLOSE => break,
            _ => {}
        }
        if frame.fin && matches!(frame.opcode, TEXT | BINARY | CONTINUATION) {
            view.messages.extend(current.take());
        }
    }
    view
}

/// Close codes an endpoint may send (RFC 6455 §7.4, and the IANA registry's
/// 1012-1014).
pub fn sendable_close_code(code: u16) -> bool {
    matches!(code, 1000..=1003 | 1007..=1014 | 3000..=4999)
}

/// Checks the server's whole output against the client's stream; the last
/// frame may be cut short by up to `dropped` bytes (see
/// [`Connection::dropped_output`]).
pub fn check_output(stream: &[u8], output: &[u8], limits: &Limits, dropped: usize) {
    let (frames, end) = wire::decode_all(output);
    let tail = &output[end..];
    if !tail.is_empty() || dropped > 0 {
        let whole = wire::parse_header(tail).map(|(header, _, len)| header as u64 + len);
        assert!(
            dropped > 0 && whole.is_none_or(|whole| whole <= (tail.len() + dropped) as u64),
            "the output ends in a partial frame {:02x?} (after {} whole frames), and the server says it dropped {dropped} bytes",
            &tail[..tail.len().min(32)],
            frames.len()
        );
    }
    let client = client_view(stream);
    let mut messages: Vec<(u8, Vec<u8>)> = Vec::new();
    let mut current: Option<(u8, Vec<u8>)> = None;
    let mut pongs = Vec::new();
    let mut closed = false;
    for frame in &frames {
        assert!(!closed, "the server sent a frame after its close frame: {}", show(frame));
        assert!(!frame.masked, "the server masked a frame: {}", show(frame));
        assert_eq!(frame.rsv, 0, "the server set RSV bits: {}", show(frame));
        if frame.opcode >= CLOSE {
            assert!(frame.fin && frame.payload.len() <= 125, "bad control frame from the server: {}", show(frame));
        }
        match frame.opcode {
            TEXT | BINARY => {
                assert!(current.is_none(), "the server began a message inside another: {}", show(frame));
                current = Some((frame.opcode, frame.payload.clone()));
            }
            CONTINUATION => match &mut current {
                Some((_, payload)) => payload.extend_from_slice(&frame.payload),
                None => panic!("the server sent a stray continuation: {}", show(frame)),
            },
            PONG => pongs.push(frame.payload.clone()),
            CLOSE => {
                check_close_payload(&frame.payload);
                closed = true;
            }
            PING => panic!("the server pinged, yet no time passed: {}", show(frame)),
            _ => panic!("the server sent a reserved opcode: {}", show(frame)),
        }
        if frame.fin && matches!(frame.opcode, TEXT | BINARY | CONTINUATION) {
            messages.extend(current.take());
        }
    }
    assert!(current.is_none(), "the server left a fragmented message unfinished");

    assert!(
        messages.len() <= client.messages.len(),
        "the server sent {} messages, the client {} before its close",
        messages.len(),
        client.messages.len()
    );
    for (i, (sent, received)) in messages.iter().zip(&client.messages).enumerate() {
        assert!(
            sent == received,
            "message {i}: the server sent opcode {} with {} bytes for the client's opcode {} with {} bytes",
            sent.0,
            sent.1.len(),
            received.0,
            received.1.len()
        );
        assert!(sent.1.len() <= limits.max_message_size, "message {i} of {} bytes is over the limit", sent.1.len());
        assert!(sent.0 != TEXT || std::str::from_utf8(&sent.1).is_ok(), "message {i}: text that is not UTF-8");
    }
    let mut pings = client.pings.iter();
    for (i, pong) in pongs.iter().enumerate() {
        assert!(pings.any(|ping| ping == pong), "pong {i} answers no ping sent before the close, in order");
    }
}

fn check_close_payload(payload: &[u8]) {
    match payload {
        [] => {}
        [_] => panic!("a close frame with a one-byte payload"),
        [hi, lo, reason @ ..] => {
            let code = u16::from_be_bytes([*hi, *lo]);
            assert!(sendable_close_code(code), "the server sent close code {code}");
            assert!(std::str::from_utf8(reason).is_ok(), "a close reason that is not UTF-8");
        }
    }
}

fn show(frame: &Decoded) -> String {
    let head: Vec<u8> = frame.payload.iter().copied().take(16).collect();
    format!(
        "fin {} rsv {} opcode {} masked {} {} bytes {:?}...",
        frame.fin,
        frame.rsv,
        frame.opcode,
        frame.masked,
        frame.payload.len(),
        String::from_utf8_lossy(&head)
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wire::Frame;

    #[test]
    fn the_first_bytes_choose_limits_and_chunks() {
        let data = encode_plan(BIG | EOF | budget(2), &[1, 0, 3], b"abcdefgh");
        let plan = plan(&data);
        assert_eq!(plan.limits.max_message_size, 100_000);
        assert_eq!(plan.limits.write_budget, 64);
        assert!(plan.eof);
        assert_eq!(plan.chunks, vec![&b"a"[..], b"", b"bcd", b"efgh"]);
        assert_eq!(plan.stream, b"abcdefgh");
    }

    #[test]
    fn short_or_empty_inputs_are_plans_too() {
        for data in [&[][..], &[7], &[0, 31], &[0, 3, 9]] {
            let plan = plan(data);
            assert_eq!(plan.chunks.concat(), plan.stream);
        }
        // Lengths past the end of the stream are cut to what is there.
        let data = encode_plan(0, &[100, 100], b"xy");
        assert_eq!(plan(&data).chunks, vec![&b"xy"[..], b"", b""]);
    }

    #[test]
    fn the_view_stops_at_the_close_and_reassembles_fragments() {
        let mut stream = Vec::new();
        for frame in [
            Frame::text("Hel").fin(false),
            Frame::ping("p"),
            Frame::continuation("lo"),
            Frame::close(1000, b""),
            Frame::binary("after the close"),
        ] {
            frame.encode(&mut stream);
        }
        let view = client_view(&stream);
        assert_eq!(view.messages, vec![(TEXT, b"Hello".to_vec())]);
        assert_eq!(view.pings, vec![b"p".to_vec()]);
    }

    fn server(frames: &[Frame]) -> Vec<u8> {
        frames.iter().flat_map(|f| f.clone().unmasked().to_bytes()).collect()
    }

    #[test]
    fn an_echo_passes_and_an_answer_after_the_close_does_not() {
        let limits = plan(&[BIG]).limits;
        let mut stream = Frame::text("hi").to_bytes();
        Frame::ping("x").encode(&mut stream);
        Frame::close(1000, b"bye").encode(&mut stream);
        let late = Frame::binary("late").to_bytes();
        stream.extend_from_slice(&late);
        let good = server(&[Frame::text("hi"), Frame::pong("x"), Frame::close(1000, b"")]);
        check_output(&stream, &good, &limits, 0);
        let answered_late = server(&[Frame::text("hi"), Frame::binary("late"), Frame::close(1000, b"")]);
        assert!(std::panic::catch_unwind(|| check_output(&stream, &answered_late, &limits, 0)).is_err());
        let after_close = server(&[Frame::close(1002, b""), Frame::text("hi")]);
        assert!(std::panic::catch_unwind(|| check_output(&stream, &after_close, &limits, 0)).is_err());
        let bad_code = server(&[Frame::close(1005, b"")]);
        assert!(std::panic::catch_unwind(|| check_output(&stream, &bad_code, &limits, 0)).is_err());
    }
}
