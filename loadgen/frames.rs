//! Outgoing frames: built once by tungstenite, patched per message.
//!
//! RFC 6455 requires every client frame to be masked (payload XORed with a
//! 4-byte key). Masking 512 bytes per message would cost more than everything
//! else loadgen does per message, so each loop's data frame is built and
//! masked once, at start ([`FrameTemplate`]); sending a message only rewrites
//! the stamp (32 or 64 bytes), already XORed with the mask at its offsets,
//! and the frame is written (or copied into the connection's queue) before
//! the next connection stamps it. The filler after the stamp never changes,
//! so it stays correctly masked. One frame per loop rather than one per
//! connection: 10,000 connections of 16 KiB messages would otherwise hold
//! 160 MiB of identical filler, and every send would read its connection's
//! copy from memory long out of cache.
//!
//! The mask is random per loop (data frames) and per connection (control
//! frames), and fixed for their lifetime. RFC 6455 asks for a fresh key per
//! frame so that a browser script cannot choose the bytes a proxy sees; a
//! load generator sends only its own fixed filler, so that threat does not
//! apply, and servers cannot tell the difference.
//!
//! Control frames (ping, pong, close) are rare and built on demand.

use tungstenite::protocol::{
    frame::{
        coding::{CloseCode, Data, OpCode},
        Frame,
    },
    CloseFrame,
};
use wsloop::wire::{Encoding, Stamp, BINARY_STAMP_LEN};

/// A connection's data (or ping) frame, masked, with the stamp's place known.
#[derive(Debug)]
pub struct FrameTemplate {
    /// The whole frame on the wire: header, mask key, masked payload.
    bytes: Box<[u8]>,
    /// Offset of the payload (after the 2 to 14 header bytes).
    payload_at: usize,
    /// The mask repeated to 8 bytes: the stamp starts at payload offset 0 and
    /// its length is a multiple of 8, so every 8-byte word meets the mask at
    /// the same phase.
    mask8: u64,
    /// How the stamp is written (binary words or hex text).
    encoding: Encoding,
}

impl FrameTemplate {
    /// A data message frame carrying `payload` (a [`wsloop::wire::payload_template`]).
    pub fn data(payload: &[u8], encoding: Encoding, mask: [u8; 4]) -> Self {
        let opcode = match encoding {
            Encoding::Binary => OpCode::Data(Data::Binary),
            Encoding::Text => OpCode::Data(Data::Text),
        };
        Self::build(Frame::message(payload.to_vec(), opcode, true), payload.len(), encoding, mask)
    }

    /// A ping frame carrying only a binary stamp (idle mode's heartbeat; the pong must echo it).
    pub fn ping(mask: [u8; 4]) -> Self {
        Self::build(Frame::ping(vec![0u8; BINARY_STAMP_LEN]), BINARY_STAMP_LEN, Encoding::Binary, mask)
    }

    fn build(mut frame: Frame, payload_len: usize, encoding: Encoding, mask: [u8; 4]) -> Self {
        frame.header_mut().mask = Some(mask);
        let mut bytes = Vec::with_capacity(payload_len + 14);
        frame.format(&mut bytes).expect("formatting into a Vec cannot fail");
        let payload_at = bytes.len() - payload_len;
        let mask8 = u64::from_ne_bytes([mask[0], mask[1], mask[2], mask[3], mask[0], mask[1], mask[2], mask[3]]);
        FrameTemplate { bytes: bytes.into_boxed_slice(), payload_at, mask8, encoding }
    }

    /// Writes `stamp` into the frame (masked) and returns the whole frame.
    #[inline]
    pub fn stamp(&mut self, stamp: &Stamp) -> &[u8] {
        match self.encoding {
            Encoding::Binary => {
                let out = &mut self.bytes[self.payload_at..self.payload_at + BINARY_STAMP_LEN];
                for (dst, word) in out.chunks_exact_mut(8).zip(stamp.to_words()) {
                    // The word's bytes in wire order, XORed with the mask in wire order.
                    let masked = u64::from_ne_bytes(word.to_le_bytes()) ^ self.mask8;
                    dst.copy_from_slice(&masked.to_ne_bytes());
                }
            }
            Encoding::Text => {
                let mut plain = [0u8; 64];
                stamp.write(Encoding::Text, &mut plain);
                let out = &mut self.bytes[self.payload_at..self.payload_at + plain.len()];
                for (dst, src) in out.chunks_exact_mut(8).zip(plain.chunks_exact(8)) {
                    let masked = u64::from_ne_bytes(src.try_into().expect("8 bytes")) ^ self.mask8;
                    dst.copy_from_slice(&masked.to_ne_bytes());
                }
            }
        }
        &self.bytes
    }
}

/// A masked pong answering a ping with `payload` (RFC 6455 §5.5.3: same payload).
pub fn pong(payload: &[u8], mask: [u8; 4]) -> Vec<u8> {
    masked(Frame::pong(payload.to_vec()), mask)
}

/// A masked close frame with `code` (1000 when we finish, or the server's
/// code echoed back when it closed first).
pub fn close(code: u16, mask: [u8; 4]) -> Vec<u8> {
    masked(Frame::close(Some(CloseFrame { code: CloseCode::from(code), reason: "".into() })), mask)
}

fn masked(mut frame: Frame, mask: [u8; 4]) -> Vec<u8> {
    frame.header_mut().mask = Some(mask);
    let mut bytes = Vec::with_capacity(frame.len() + 4);
    frame.format(&mut bytes).expect("formatting into a Vec cannot fail");
    bytes
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Cursor;
    use tungstenite::protocol::frame::FrameHeader;
    use wsloop::wire::payload_template;

    /// Unmasks `frame` the way a server does, with tungstenite's own parser.
    fn unmask(frame: &[u8]) -> (FrameHeader, Vec<u8>) {
        let mut cursor = Cursor::new(frame);
        let (header, len) = FrameHeader::parse(&mut cursor).unwrap().unwrap();
        let at = cursor.position() as usize;
        let mut payload = frame[at..].to_vec();
        assert_eq!(payload.len() as u64, len);
        let mask = header.mask.expect("client frames are masked");
        for (i, byte) in payload.iter_mut().enumerate() {
            *byte ^= mask[i % 4];
        }
        (header, payload)
    }

    #[test]
    fn patched_stamps_unmask_to_the_right_payload() {
        for (encoding, size) in [(Encoding::Binary, 512), (Encoding::Text, 200), (Encoding::Binary, 70_000)] {
            let payload = payload_template(encoding, size);
            let mut template = FrameTemplate::data(&payload, encoding, [0x11, 0x22, 0x33, 0xf4]);
            for seq in [0, 1, u64::MAX] {
                let stamp = Stamp { seq, intended_ns: 5, sent_ns: 6, connection: 9 };
                let (header, plain) = unmask(template.stamp(&stamp));
                assert!(header.is_final);
                assert_eq!(Stamp::read(encoding, &plain), Ok(stamp));
                assert_eq!(plain[encoding.stamp_len()..], payload[encoding.stamp_len()..]);
                if encoding == Encoding::Text {
                    assert!(std::str::from_utf8(&plain).is_ok());
                }
            }
        }
    }

    #[test]
    fn control_frames_are_masked_and_well_formed() {
        let mut ping = FrameTemplate::ping([1, 2, 3, 4]);
        let stamp = Stamp { seq: 3, intended_ns: 1, sent_ns: 2, connection: 4 };
        let (header, plain) = unmask(ping.stamp(&stamp));
        assert_eq!(header.opcode, OpCode::Control(tungstenite::protocol::frame::coding::Control::Ping));
        assert_eq!(Stamp::read(Encoding::Binary, &plain), Ok(stamp));
        let (_, plain) = unmask(&pong(b"abc", [9, 9, 9, 9]));
        assert_eq!(plain, b"abc");
        let (_, plain) = unmask(&close(1000, [5, 6, 7, 8]));
        assert_eq!(plain, 1000u16.to_be_bytes());
    }
}
