//! loadgen's writes to stdout and stderr.
//!
//! A closed pipe (`loadgen ... | head -3`, a log collector that went away)
//! or a full disk loses the text, never the run: the run finishes, writes
//! its `--json` and `--hgrm` files and exits with its usual status.
//! `print!` and `eprintln!` would panic there instead (the process ignores
//! SIGPIPE, so the write fails with EPIPE), which is why the crate denies
//! them.

use std::io::{self, IsTerminal, Write};

/// Writes `text` to stdout as is; a failure is ignored.
pub fn stdout(text: &str) {
    let mut out = io::stdout().lock();
    let _ = out.write_all(text.as_bytes()).and_then(|()| out.flush());
}

/// Writes `text` to stderr as is (no newline added); a failure is ignored.
pub fn stderr(text: &str) {
    let _ = io::stderr().lock().write_all(text.as_bytes());
}

/// Writes one line to stderr; a failure is ignored.
pub fn stderr_line(line: &str) {
    let mut err = io::stderr().lock();
    let _ = err.write_all(line.as_bytes()).and_then(|()| err.write_all(b"\n"));
}

/// Whether stderr is a terminal (the live line is then redrawn in place).
pub fn stderr_is_terminal() -> bool {
    io::stderr().is_terminal()
}
