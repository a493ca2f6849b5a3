//! The WebSocket protocol, server side, without I/O: bytes in, events out;
//! events in, frames out. It never touches a socket, so the connection, the
//! benches, the unit tests and the fuzz targets all run exactly this code.
//!
//! - [`reader`]: client frames to [`Event`]s, every RFC 6455 rule checked.
//! - [`writer`]: server frame headers and control frames.
//! - [`mask`], [`utf8`]: unmasking in place; incremental UTF-8 validation.

pub mod mask;
pub mod reader;
pub mod utf8;
pub mod writer;

pub use reader::{CloseFrame, Event, Kind, Limits, Payload, Reader, Violation, MAX_CONTROL_PAYLOAD};
#[cfg(test)]
mod tests;
