//! An in-memory stream for the benches, the tests and the fuzz targets: they
//! drive [`crate::wakeup::serve`] over it, so they run exactly the code a
//! connection runs, minus the system calls.

use std::io::{self, IoSlice};

use crate::socket::{Received, Transport};

/// Input served from a prepared buffer one "wakeup" at a time; output
/// appended to a buffer (or counted and thrown away), at most
/// `write_budget` bytes per wakeup, as a peer that reads slowly would take.
#[derive(Debug)]
pub struct MemStream {
    pub input: Vec<u8>,
    /// Next byte to serve.
    pub pos: usize,
    /// Reads stop here, as at a drained socket.
    pub readable_until: usize,
    /// Bytes at most per read (0: no limit), to cut the input into pieces.
    pub max_read: usize,
    /// Once all of `input` is read, report end-of-file.
    pub eof_at_end: bool,
    /// What was written, unless `discard_output`.
    pub output: Vec<u8>,
    /// Count written bytes in `written` only (for benches).
    pub discard_output: bool,
    /// Bytes written in all.
    pub written: usize,
    /// Slices handed to `send` in all (a `writev` of two counts two).
    pub slices: usize,
    /// Bytes the peer takes per wakeup (`usize::MAX`: all it is sent).
    pub write_budget: usize,
    /// What is left of the budget in this wakeup (reset by [`MemStream::next_wakeup`]).
    pub writable: usize,
}

impl Default for MemStream {
    fn default() -> Self {
        MemStream {
            input: Vec::new(),
            pos: 0,
            readable_until: 0,
            max_read: 0,
            eof_at_end: false,
            output: Vec::new(),
            discard_output: false,
            written: 0,
            slices: 0,
            write_budget: usize::MAX,
            writable: usize::MAX,
        }
    }
}

impl MemStream {
    /// A stream with all of `input` readable.
    pub fn new(input: Vec<u8>) -> Self {
        let readable_until = input.len();
        MemStream { input, readable_until, ..MemStream::default() }
    }

    /// `bytes` arrive (and are readable); `eof`: the peer half-closes after them.
    pub fn arrive(&mut self, bytes: &[u8], eof: bool) {
        self.input.extend_from_slice(bytes);
        self.readable_until = self.input.len();
        self.eof_at_end = eof;
    }

    /// A new readiness event: the peer takes `write_budget` more bytes.
    pub fn next_wakeup(&mut self) {
        self.writable = self.write_budget;
    }
}

impl Transport for MemStream {
    fn recv(&mut self, buf: &mut [u8]) -> io::Result<Received> {
        let available = self.readable_until.min(self.input.len()) - self.pos;
        if available == 0 {
            return Ok(if self.eof_at_end && self.pos == self.input.len() { Received::Eof } else { Received::Nothing });
        }
        let limit = if self.max_read == 0 { buf.len() } else { self.max_read.min(buf.len()) };
        let n = available.min(limit);
        buf[..n].copy_from_slice(&self.input[self.pos..self.pos + n]);
        self.pos += n;
        Ok(Received::Data(n))
    }

    fn send(&mut self, slices: &[IoSlice<'_>], total: usize) -> io::Result<usize> {
        let taken = total.min(self.writable);
        self.slices += slices.len();
        if !self.discard_output {
            let mut left = taken;
            for slice in slices {
                let n = slice.len().min(left);
                self.output.extend_from_slice(&slice[..n]);
                left -= n;
            }
        }
        if self.writable != usize::MAX {
            self.writable -= taken;
        }
        self.written += taken;
        Ok(taken)
    }

    fn may_read(&self) -> bool {
        self.pos < self.readable_until.min(self.input.len()) || self.eof_at_end
    }

    fn write_blocked(&self) -> bool {
        self.writable == 0
    }
}

/// One open connection over a [`MemStream`], with the loop-wide buffers a
/// server lends it: call [`Harness::wakeup`] as the loop would on each
/// readable event.
pub struct Harness {
    pub stream: MemStream,
    pub open: crate::wakeup::Open,
    pub outbox: crate::outbox::Outbox,
    /// The loop-wide state: metrics, rooms, and what was published (not
    /// fanned out: there is no loop here).
    pub lent: crate::wakeup::Lent,
}

impl Harness {
    /// An open connection under `config`'s limits, reading `stream`.
    pub fn new(config: crate::Config, stream: MemStream) -> Self {
        Harness {
            lent: crate::wakeup::Lent::new(&config),
            stream,
            open: crate::wakeup::Open::default(),
            outbox: crate::outbox::Outbox::default(),
        }
    }

    /// A new connection on the same loop: the loop-wide buffers and metrics
    /// are kept (a fuzz target measures the connection's memory, not the
    /// loop's).
    pub fn reset(&mut self, config: crate::Config, stream: MemStream) {
        self.lent.configure(&config);
        self.stream = stream;
        self.open = crate::wakeup::Open::default();
        self.outbox = crate::outbox::Outbox::default();
        self.lent.published.clear();
    }

    /// Sends what the connection has pending, as a WRITABLE event on a
    /// connection that only has last words to deliver would.
    pub fn flush(&mut self) -> std::io::Result<usize> {
        self.stream.next_wakeup();
        crate::outbox::flush(&mut self.stream, &mut self.outbox, &mut self.lent.cork, &[])
    }

    /// One wakeup: exactly what a readable event runs on an open connection.
    pub fn wakeup<A: crate::app::App>(&mut self, app: &mut A) -> crate::wakeup::Served {
        self.stream.next_wakeup();
        let id = crate::app::ConnectionId(1);
        crate::wakeup::serve(&mut self.open, &mut self.stream, &mut self.outbox, id, app, &mut self.lent)
    }
}
