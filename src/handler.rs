//! Application behaviour: what the server does with a received message.
//!
//! Pure and socket-free: it sees messages, never frames or sockets, and
//! answers with what to send. The connection does the sending (corked, one
//! flush per wakeup).

use tungstenite::Message;

use crate::config::Mode;

/// What to send in answer to one received data message.
#[derive(Debug, PartialEq)]
pub enum Reply {
    /// Send this message back to the sender.
    Send(Message),
    /// Send nothing.
    Nothing,
}

/// The reply to a text or binary `message` in `mode`.
///
/// Echo returns the very message: its payload is a slice of the connection's
/// input buffer, copied once, into the output buffer, when it is written.
pub fn on_message(mode: Mode, message: Message) -> Reply {
    match mode {
        Mode::Echo => Reply::Send(message),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn echo_keeps_payload_and_opcode() {
        let text = Message::text("héllo");
        assert_eq!(on_message(Mode::Echo, text.clone()), Reply::Send(text));
        let binary = Message::binary(vec![0u8, 1, 2, 255]);
        assert_eq!(on_message(Mode::Echo, binary.clone()), Reply::Send(binary));
        let empty = Message::binary(Vec::new());
        assert_eq!(on_message(Mode::Echo, empty.clone()), Reply::Send(empty));
    }
}
