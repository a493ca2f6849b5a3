//! tungstenite glue: how we configure it and how we read its errors.
//!
//! Framing, masking, UTF-8 validation, fragmentation, ping/pong and the close
//! handshake are tungstenite's. This module decides only (1) the buffer sizes
//! that make tens of thousands of connections cheap and (2) what each error
//! means for the connection: a close code to send, a peer that is gone, or
//! a clean end.

use tungstenite::{
    error::{CapacityError, Error, ProtocolError},
    protocol::{frame::coding::CloseCode, CloseFrame, WebSocketConfig},
};

use crate::config::Config;

/// tungstenite's `read_buffer_size`: the capacity of each connection's own
/// input buffer, and the most it copies per `read` call.
///
/// tungstenite's default, 128 KiB, is allocated eagerly and zero-filled before
/// every read: 1.25 GiB of resident memory at 10,000 connections, and a 128 KiB
/// memset per message. Here the loop's shared receive buffer takes each
/// `recv` (see [`crate::socket`]), so this only sets the size of the copies
/// out of it; 512 bytes keeps an idle connection's buffer small, and a frame
/// header plus a small message fit in one copy. Bigger frames grow the buffer
/// to their size (tungstenite reserves the announced length, after checking
/// it against the frame limit).
pub const READ_BUFFER_SIZE: usize = 512;

/// Room in tungstenite's output buffer beyond the backpressure limit and one
/// maximal reply: pongs and a close frame (each at most 127 bytes) and
/// headers.
const OUTPUT_SLACK: usize = 4096;

/// The tungstenite configuration for `config`.
///
/// Output is corked: `write_buffer_size` is set just under the hard limit, so
/// `write()` only queues and the connection's single `flush()` per wakeup does
/// the syscall. The hard limit (`max_write_buffer_size`) is the backpressure
/// limit plus one maximal reply: the connection stops reading once its
/// pending output passes `--max-backpressure`, so the last message read may
/// add at most one more reply on top. Pending output is therefore bounded.
pub fn websocket_config(config: &Config) -> WebSocketConfig {
    let max_output = config.max_backpressure.saturating_add(config.max_message_size).saturating_add(OUTPUT_SLACK);
    WebSocketConfig::default()
        .read_buffer_size(READ_BUFFER_SIZE)
        .write_buffer_size(max_output - 1)
        .max_write_buffer_size(max_output)
        .max_message_size(Some(config.max_message_size))
        .max_frame_size(Some(config.effective_max_frame_size()))
        .accept_unmasked_frames(false)
}

/// What a tungstenite error means for the connection.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Disposition {
    /// The close handshake completed: drop the connection, all is well.
    Closed,
    /// The peer vanished (reset, end-of-file without a close frame).
    PeerGone,
    /// The peer broke the protocol: send a close frame with this code and
    /// reason, then drop once the peer has read it.
    Fail(CloseCode, String),
    /// A local socket error: drop the connection.
    Io(String),
    /// An error that means a bug in how we drive tungstenite.
    Bug(String),
}

/// Classifies an error returned by `read`, `write` or `flush` (other than
/// `WouldBlock`, which the caller handles first).
pub fn classify(error: Error) -> Disposition {
    match error {
        Error::ConnectionClosed => Disposition::Closed,
        Error::Protocol(ProtocolError::ResetWithoutClosingHandshake) => Disposition::PeerGone,
        Error::Io(e) => match e.kind() {
            std::io::ErrorKind::ConnectionReset
            | std::io::ErrorKind::ConnectionAborted
            | std::io::ErrorKind::BrokenPipe
            | std::io::ErrorKind::UnexpectedEof => Disposition::PeerGone,
            _ => Disposition::Io(e.to_string()),
        },
        Error::Capacity(CapacityError::MessageTooLong { size, max_size }) => {
            Disposition::Fail(CloseCode::Size, format!("message of {size} bytes is over the {max_size}-byte limit"))
        }
        Error::Capacity(e) => Disposition::Fail(CloseCode::Size, e.to_string()),
        Error::Utf8(_) => Disposition::Fail(CloseCode::Invalid, "invalid UTF-8 in text".into()),
        Error::Protocol(e) => Disposition::Fail(CloseCode::Protocol, e.to_string()),
        Error::WriteBufferFull(_) => Disposition::Fail(CloseCode::Policy, "output backlog over its limit".into()),
        Error::AlreadyClosed => Disposition::Bug("operation on a connection tungstenite already closed".into()),
        other => Disposition::Bug(other.to_string()),
    }
}

/// A close frame with `reason` cut to fit a control frame (125 bytes
/// including the 2-byte code), on a character boundary.
pub fn close_frame(code: CloseCode, reason: &str) -> CloseFrame {
    let mut end = reason.len().min(123);
    while !reason.is_char_boundary(end) {
        end -= 1;
    }
    CloseFrame { code, reason: reason[..end].to_owned().into() }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn config_is_valid_and_corked() {
        // tungstenite asserts this inside from_raw_socket, i.e. inside the loop.
        let ws = websocket_config(&Config::default());
        assert!(ws.max_write_buffer_size > ws.write_buffer_size);
        assert!(ws.write_buffer_size > Config::default().max_backpressure);
        assert_eq!(ws.max_frame_size, Some(16 << 20));
        assert_eq!(ws.max_message_size, Some(16 << 20));
        assert!(!ws.accept_unmasked_frames);
    }

    #[test]
    fn errors_map_to_rfc_close_codes() {
        let size = Error::Capacity(CapacityError::MessageTooLong { size: 10, max_size: 5 });
        assert!(matches!(classify(size), Disposition::Fail(CloseCode::Size, _)));
        assert!(matches!(classify(Error::Utf8("x".into())), Disposition::Fail(CloseCode::Invalid, _)));
        let protocol = Error::Protocol(ProtocolError::NonZeroReservedBits);
        assert!(matches!(classify(protocol), Disposition::Fail(CloseCode::Protocol, _)));
        assert_eq!(classify(Error::ConnectionClosed), Disposition::Closed);
        let reset = Error::Io(std::io::ErrorKind::ConnectionReset.into());
        assert_eq!(classify(reset), Disposition::PeerGone);
        assert!(matches!(classify(Error::AlreadyClosed), Disposition::Bug(_)));
    }

    #[test]
    fn close_reason_fits_a_control_frame() {
        let long = "é".repeat(100);
        let frame = close_frame(CloseCode::Protocol, &long);
        assert!(frame.reason.len() <= 123);
        assert!(frame.reason.as_str().chars().all(|c| c == 'é'));
    }
}
