//! An in-memory stream for the benches (and `tests/garbage.rs`): input served
//! from a prepared buffer one "wakeup" at a time, output appended to a sink
//! that nobody reads.

use std::io::{self, Read, Write};

use wsloop::socket::OutputState;

#[derive(Debug, Default)]
pub struct MemSocket {
    pub input: Vec<u8>,
    /// Next byte to serve.
    pub pos: usize,
    /// Reads stop here with `WouldBlock`, as a drained socket does.
    pub readable_until: usize,
    pub output: Vec<u8>,
    /// Once all of `input` is read, report end-of-file rather than `WouldBlock`.
    pub eof_at_end: bool,
}

impl Read for MemSocket {
    fn read(&mut self, out: &mut [u8]) -> io::Result<usize> {
        if self.eof_at_end && self.pos == self.input.len() {
            return Ok(0);
        }
        let available = self.readable_until - self.pos;
        if available == 0 {
            return Err(io::ErrorKind::WouldBlock.into());
        }
        let n = available.min(out.len());
        out[..n].copy_from_slice(&self.input[self.pos..self.pos + n]);
        self.pos += n;
        Ok(n)
    }
}

impl Write for MemSocket {
    fn write(&mut self, data: &[u8]) -> io::Result<usize> {
        self.output.extend_from_slice(data);
        Ok(data.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

impl OutputState for MemSocket {
    fn pending_output(&self) -> usize {
        0
    }
}
