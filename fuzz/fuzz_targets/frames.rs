//! The frame path: arbitrary bytes, cut into wakeups at points the input's
//! first bytes choose, through the code an open connection runs
//! (`wsloop::wakeup::serve` over `wsloop::testing`'s in-memory stream, with
//! the echo application); the invariants are checked by
//! `wsloop_fuzz::frames::run` (see its doc).
//!
//! Everything that knows wsloop's API is the adapter below; to fuzz another
//! implementation, write another `impl Connection` and name it in
//! `fuzz_target!`.

#![no_main]

use libfuzzer_sys::fuzz_target;
use wsloop::{
    modes::Echo,
    server::RECV_BUFFER_SIZE,
    testing::{Harness, MemStream},
    wakeup::End,
    Config,
};
use wsloop_fuzz::frames::{self, Connection, Limits};

fuzz_target!(|data: &[u8]| frames::run::<Wakeup>(data));

/// One open connection as the server runs it, and what `connection.rs`
/// does when the wakeup reports the end: after the peer's close (our reply
/// queued) or a violation (our close frame queued), deliver the last words
/// and read nothing more; when the peer is gone, drop.
struct Wakeup {
    harness: Harness,
    state: State,
    /// Output left unsent when the peer went away.
    dropped: usize,
}

#[derive(PartialEq)]
enum State {
    Open,
    /// Our last words are queued: send them, read nothing.
    Lingering,
    /// Dropped by the server.
    Gone,
}

impl Connection for Wakeup {
    fn open(limits: &Limits) -> Self {
        let config = Config {
            max_frame_size: limits.max_frame_size,
            max_message_size: limits.max_message_size,
            max_backpressure: limits.max_backpressure,
            ..Config::default()
        };
        let stream = MemStream { write_budget: limits.write_budget, ..MemStream::default() };
        Wakeup { harness: Harness::new(config, stream), state: State::Open, dropped: 0 }
    }

    fn wakeup(&mut self, input: &[u8], eof: bool, output: &mut Vec<u8>) {
        let h = &mut self.harness;
        h.stream.arrive(input, eof);
        std::mem::swap(&mut h.stream.output, output);
        match self.state {
            State::Open => match h.wakeup(&mut Echo).end {
                None => {}
                Some(End::PeerClosed(_) | End::Violation(_)) => self.state = State::Lingering,
                Some(End::PeerGone) => {
                    // A peer that left without a close gets no guarantee.
                    self.dropped = h.outbox.len();
                    self.state = State::Gone;
                }
                Some(other) => panic!("a wakeup over an in-memory stream ended with {other:?}"),
            },
            State::Lingering => {
                h.stream.pos = h.stream.input.len();
                if h.flush().is_err() {
                    self.state = State::Gone;
                }
            }
            State::Gone => {}
        }
        if self.state == State::Lingering && h.outbox.is_empty() {
            self.state = State::Gone;
        }
        std::mem::swap(&mut h.stream.output, output);
    }

    fn pending_output(&self) -> usize {
        if self.state == State::Gone {
            0
        } else {
            self.harness.outbox.len()
        }
    }

    fn dropped_output(&self) -> usize {
        self.dropped
    }

    /// The loop's receive buffer (the harness allocates one), and buffers
    /// that follow what arrived: a message put together (a vector that may
    /// double), input kept under backpressure, output the peer has not taken
    /// (at most an echo of the input): each bounded by the input, never by
    /// what a header announces.
    fn memory_bound(_limits: &Limits, input_len: usize) -> usize {
        RECV_BUFFER_SIZE + 4 * input_len + (64 << 10)
    }
}
