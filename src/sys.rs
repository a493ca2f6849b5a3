//! Small operating-system idioms both event loops (the server's and
//! loadgen's) use, written once.

use std::io;

/// Runs `op` again while it fails with `EINTR` (a signal arrived during the
/// call): mio's examples retry the same way, and nothing is lost by it.
#[inline]
pub fn retry_interrupted<T>(mut op: impl FnMut() -> io::Result<T>) -> io::Result<T> {
    loop {
        match op() {
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            other => return other,
        }
    }
}
