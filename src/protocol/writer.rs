//! Server frames out: headers written with tungstenite's codec
//! (`FrameHeader::format`), never masked (RFC 6455 §5.1: a server must not
//! mask), always final (the server never fragments what it sends).

use std::io::Cursor;

use tungstenite::protocol::frame::{
    coding::{Control, Data, OpCode},
    FrameHeader,
};

use super::Kind;

/// Longest unmasked header: 2 bytes and 8 of extended length.
pub const MAX_HEADER: usize = 10;

/// Longest close reason: a control payload is at most 125 bytes, 2 of them the code.
pub const MAX_CLOSE_REASON: usize = 123;

/// The opcodes of the control frames the server sends.
pub const PONG: OpCode = OpCode::Control(Control::Pong);
pub const PING: OpCode = OpCode::Control(Control::Ping);
pub const CLOSE: OpCode = OpCode::Control(Control::Close);

/// An encoded frame header.
#[derive(Debug, Clone, Copy)]
pub struct Header {
    bytes: [u8; MAX_HEADER],
    len: u8,
}

impl Header {
    pub fn as_bytes(&self) -> &[u8] {
        &self.bytes[..usize::from(self.len)]
    }

    /// Writes the header at the start of `out`, with copies of a fixed size
    /// (2, 4 or 10 bytes: moves, where a copy of a variable length is a
    /// call to `memcpy`).
    #[inline]
    pub fn write_to(&self, out: &mut [u8]) {
        match self.len {
            2 => out[..2].copy_from_slice(&self.bytes[..2]),
            4 => out[..4].copy_from_slice(&self.bytes[..4]),
            _ => out[..MAX_HEADER].copy_from_slice(&self.bytes),
        }
    }
}

/// The opcode of a data message of `kind`.
pub fn data_opcode(kind: Kind) -> OpCode {
    OpCode::Data(match kind {
        Kind::Text => Data::Text,
        Kind::Binary => Data::Binary,
    })
}

/// The header of a final, unmasked frame carrying `len` payload bytes.
#[inline]
pub fn header(opcode: OpCode, len: usize) -> Header {
    let mut bytes = [0u8; MAX_HEADER];
    let mut cursor = Cursor::new(&mut bytes[..]);
    let header = FrameHeader { is_final: true, rsv1: false, rsv2: false, rsv3: false, opcode, mask: None };
    // Cannot fail: an unmasked header is at most MAX_HEADER bytes.
    let formatted = header.format(len as u64, &mut cursor);
    debug_assert!(formatted.is_ok());
    let len = cursor.position() as u8;
    Header { bytes, len }
}

/// The length of the header at the start of `frame`, a frame this module
/// wrote (unmasked): 2 bytes, plus 2 or 8 of extended length.
pub fn header_len(frame: &[u8]) -> usize {
    match frame.get(1).map(|b| b & 0x7f) {
        Some(126) => 4,
        Some(127) => 10,
        _ => 2,
    }
}

/// Appends a whole frame (header and payload) to `out`.
pub fn put_frame(out: &mut Vec<u8>, opcode: OpCode, payload: &[u8]) {
    out.extend_from_slice(header(opcode, payload.len()).as_bytes());
    out.extend_from_slice(payload);
}

/// Appends a close frame with `code` and `reason`, the reason cut to fit a
/// control frame on a character boundary.
pub fn put_close(out: &mut Vec<u8>, code: u16, reason: &str) {
    let mut end = reason.len().min(MAX_CLOSE_REASON);
    while !reason.is_char_boundary(end) {
        end -= 1;
    }
    let reason = &reason.as_bytes()[..end];
    out.extend_from_slice(header(CLOSE, 2 + reason.len()).as_bytes());
    out.extend_from_slice(&code.to_be_bytes());
    out.extend_from_slice(reason);
}

/// A client frame (masked with `mask`), as a browser would send it: the
/// encoder every test, bench and fuzz seed uses. `first` is the frame's
/// first byte (FIN, RSV and opcode bits), so malformed frames can be made too.
pub fn client_frame(first: u8, payload: &[u8], mask: [u8; 4]) -> Vec<u8> {
    let opcode = OpCode::from(first & 0x0F);
    let header = FrameHeader {
        is_final: first & 0x80 != 0,
        rsv1: first & 0x40 != 0,
        rsv2: first & 0x20 != 0,
        rsv3: first & 0x10 != 0,
        opcode,
        mask: Some(mask),
    };
    let mut out = Vec::with_capacity(payload.len() + 14);
    // Writing into a Vec cannot fail.
    let _ = header.format(payload.len() as u64, &mut out);
    // The opcode byte as given, reserved values included (`OpCode::from` keeps them).
    out[0] = first;
    let start = out.len();
    out.extend_from_slice(payload);
    super::mask::unmask(&mut out[start..], mask, 0);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn headers_use_the_shortest_length_form() {
        let text = data_opcode(Kind::Text);
        assert_eq!(header(text, 0).as_bytes(), [0x81, 0]);
        assert_eq!(header(text, 125).as_bytes(), [0x81, 125]);
        assert_eq!(header(data_opcode(Kind::Binary), 126).as_bytes(), [0x82, 126, 0, 126]);
        assert_eq!(header(text, 65536).as_bytes(), [0x81, 127, 0, 0, 0, 0, 0, 1, 0, 0]);
    }

    #[test]
    fn header_len_reads_back_what_header_wrote() {
        for len in [0, 125, 126, 65535, 65536] {
            assert_eq!(header_len(header(PING, len).as_bytes()), header(PING, len).as_bytes().len());
        }
    }

    #[test]
    fn close_reason_is_cut_on_a_character_boundary() {
        let mut out = Vec::new();
        put_close(&mut out, 1002, &"é".repeat(100));
        // 2 header bytes, 2 code bytes, at most 123 reason bytes, still UTF-8.
        assert!(out.len() <= 2 + 125);
        assert_eq!(&out[2..4], &1002u16.to_be_bytes());
        assert!(std::str::from_utf8(&out[4..]).is_ok());
        assert_eq!(out[1] as usize, out.len() - 2);
    }
}
