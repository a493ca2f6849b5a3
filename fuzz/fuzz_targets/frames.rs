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

use std::cell::RefCell;

use libfuzzer_sys::fuzz_target;
use wsloop::{
    modes::Echo,
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
    state: State,
    /// Output left unsent when the peer went away.
    dropped: usize,
}

thread_local! {
    /// The loop a server would have (receive buffer, cork, metrics): one per
    /// process here, made before the memory measurement, and given a new
    /// connection per run.
    static LOOP: RefCell<Harness> = RefCell::new(Harness::new(Config::default(), MemStream::default()));
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
    fn init() {
        LOOP.with(|_| {});
    }

    fn open(limits: &Limits) -> Self {
        let config = Config {
            max_frame_size: limits.max_frame_size,
            max_message_size: limits.max_message_size,
            max_backpressure: limits.max_backpressure,
            ..Config::default()
        };
        let stream = MemStream { write_budget: limits.write_budget, ..MemStream::default() };
        LOOP.with_borrow_mut(|h| h.reset(config, stream));
        Wakeup { state: State::Open, dropped: 0 }
    }

    fn wakeup(&mut self, input: &[u8], eof: bool, output: &mut Vec<u8>) {
        LOOP.with_borrow_mut(|h| self.wakeup_on(h, input, eof, output));
    }

    fn pending_output(&self) -> usize {
        if self.state == State::Gone {
            0
        } else {
            LOOP.with_borrow(|h| h.outbox.len())
        }
    }

    fn dropped_output(&self) -> usize {
        self.dropped
    }

    /// Buffers that follow what arrived: a message put together (a vector
    /// that may double), input kept under backpressure, output the peer has
    /// not taken (at most an echo of the input): each bounded by the input,
    /// never by what a header announces. (The loop's receive buffer and
    /// metrics are the loop's, made before the measurement.)
    fn memory_bound(_limits: &Limits, input_len: usize) -> usize {
        4 * input_len + (64 << 10)
    }
}

impl Wakeup {
    fn wakeup_on(&mut self, h: &mut Harness, input: &[u8], eof: bool, output: &mut Vec<u8>) {
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
}
