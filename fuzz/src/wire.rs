//! RFC 6455 §5.2 frames, written and read without tungstenite or wsloop.
//!
//! The encoder writes any header, valid or not (RSV bits, reserved opcodes,
//! unmasked, lengths up to 2^64-1), for the seed corpus. The decoder is
//! permissive: it splits a byte stream into frames by their headers alone and
//! judges nothing, which is what the invariants need to know what a client
//! sent and what a server answered.

pub const CONTINUATION: u8 = 0x0;
pub const TEXT: u8 = 0x1;
pub const BINARY: u8 = 0x2;
pub const CLOSE: u8 = 0x8;
pub const PING: u8 = 0x9;
pub const PONG: u8 = 0xA;

/// The masking key the seeds use unless they say otherwise.
pub const MASK: [u8; 4] = [0x37, 0xfa, 0x21, 0x3d];

/// A frame to encode.
#[derive(Debug, Clone)]
pub struct Frame {
    pub fin: bool,
    /// RSV1..RSV3 as the low three bits.
    pub rsv: u8,
    pub opcode: u8,
    pub mask: Option<[u8; 4]>,
    pub payload: Vec<u8>,
}

impl Frame {
    /// A final, masked frame (what a correct client sends).
    pub fn new(opcode: u8, payload: impl Into<Vec<u8>>) -> Self {
        Frame { fin: true, rsv: 0, opcode, mask: Some(MASK), payload: payload.into() }
    }

    pub fn text(payload: impl Into<Vec<u8>>) -> Self {
        Frame::new(TEXT, payload)
    }

    pub fn binary(payload: impl Into<Vec<u8>>) -> Self {
        Frame::new(BINARY, payload)
    }

    pub fn continuation(payload: impl Into<Vec<u8>>) -> Self {
        Frame::new(CONTINUATION, payload)
    }

    pub fn ping(payload: impl Into<Vec<u8>>) -> Self {
        Frame::new(PING, payload)
    }

    pub fn pong(payload: impl Into<Vec<u8>>) -> Self {
        Frame::new(PONG, payload)
    }

    /// A close frame with this code and reason (bytes, so it may be invalid UTF-8).
    pub fn close(code: u16, reason: &[u8]) -> Self {
        let mut payload = code.to_be_bytes().to_vec();
        payload.extend_from_slice(reason);
        Frame::new(CLOSE, payload)
    }

    pub fn fin(mut self, fin: bool) -> Self {
        self.fin = fin;
        self
    }

    pub fn rsv(mut self, rsv: u8) -> Self {
        self.rsv = rsv & 7;
        self
    }

    pub fn unmasked(mut self) -> Self {
        self.mask = None;
        self
    }

    pub fn encode(&self, out: &mut Vec<u8>) {
        header(self.fin, self.rsv, self.opcode, self.mask, self.payload.len() as u64, out);
        let start = out.len();
        out.extend_from_slice(&self.payload);
        if let Some(mask) = self.mask {
            apply_mask(&mut out[start..], mask);
        }
    }

    pub fn to_bytes(&self) -> Vec<u8> {
        let mut out = Vec::new();
        self.encode(&mut out);
        out
    }
}

/// Writes a frame header announcing `len` payload bytes, in the shortest
/// length form (7, 16 or 64 bits), with the masking key if any.
pub fn header(fin: bool, rsv: u8, opcode: u8, mask: Option<[u8; 4]>, len: u64, out: &mut Vec<u8>) {
    out.push(u8::from(fin) << 7 | (rsv & 7) << 4 | (opcode & 0xf));
    let masked = if mask.is_some() { 0x80 } else { 0 };
    if len < 126 {
        out.push(masked | len as u8);
    } else if len <= 0xffff {
        out.push(masked | 126);
        out.extend_from_slice(&(len as u16).to_be_bytes());
    } else {
        out.push(masked | 127);
        out.extend_from_slice(&len.to_be_bytes());
    }
    if let Some(mask) = mask {
        out.extend_from_slice(&mask);
    }
}

pub fn apply_mask(data: &mut [u8], mask: [u8; 4]) {
    for (i, b) in data.iter_mut().enumerate() {
        *b ^= mask[i % 4];
    }
}

/// A frame as found in a byte stream, its payload unmasked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Decoded {
    pub fin: bool,
    pub rsv: u8,
    pub opcode: u8,
    pub masked: bool,
    pub payload: Vec<u8>,
    /// Where in the stream the frame ends.
    pub end: usize,
}

/// A frame header: `(header length, masking key, payload length)`; `None`
/// until the whole header is in `bytes`.
pub fn parse_header(bytes: &[u8]) -> Option<(usize, Option<[u8; 4]>, u64)> {
    let b1 = *bytes.get(1)?;
    let (len, at) = match b1 & 0x7f {
        126 => (u64::from(u16::from_be_bytes(bytes.get(2..4)?.try_into().ok()?)), 4),
        127 => (u64::from_be_bytes(bytes.get(2..10)?.try_into().ok()?), 10),
        n => (u64::from(n), 2),
    };
    if b1 & 0x80 == 0 {
        return Some((at, None, len));
    }
    Some((at + 4, Some(bytes.get(at..at + 4)?.try_into().ok()?), len))
}

/// Decodes the frame at the start of `bytes`; `None` if it is not complete
/// (including a header announcing more than `bytes` could ever hold).
pub fn decode(bytes: &[u8]) -> Option<Decoded> {
    let (header_len, mask, len) = parse_header(bytes)?;
    let len = usize::try_from(len).ok()?;
    let end = header_len.checked_add(len)?;
    let mut payload = bytes.get(header_len..end)?.to_vec();
    if let Some(mask) = mask {
        apply_mask(&mut payload, mask);
    }
    let b0 = bytes[0];
    Some(Decoded { fin: b0 & 0x80 != 0, rsv: (b0 >> 4) & 7, opcode: b0 & 0xf, masked: mask.is_some(), payload, end })
}

/// Every complete frame at the start of `bytes`, in order, and where the
/// complete frames end.
pub fn decode_all(bytes: &[u8]) -> (Vec<Decoded>, usize) {
    let mut frames = Vec::new();
    let mut at = 0;
    while let Some(mut frame) = decode(&bytes[at..]) {
        at += frame.end;
        frame.end = at;
        frames.push(frame);
    }
    (frames, at)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn encode_then_decode_round_trips_every_length_form() {
        for len in [0, 1, 125, 126, 65535, 65536] {
            let frame = Frame::binary(vec![7u8; len]).fin(false).rsv(5);
            let bytes = frame.to_bytes();
            let decoded = decode(&bytes).unwrap();
            assert_eq!((decoded.fin, decoded.rsv, decoded.opcode, decoded.masked), (false, 5, BINARY, true));
            assert_eq!(decoded.payload, frame.payload);
            assert_eq!(decoded.end, bytes.len());
            assert_eq!(decode(&bytes[..bytes.len() - 1]), None, "a truncated frame is incomplete");
        }
    }

    #[test]
    fn a_header_announcing_2_pow_63_is_incomplete_not_a_panic() {
        let mut bytes = Vec::new();
        header(true, 0, BINARY, Some(MASK), 1 << 63, &mut bytes);
        bytes.extend_from_slice(b"abc");
        assert_eq!(decode(&bytes), None);
        assert_eq!(decode_all(&bytes).1, 0);
    }

    #[test]
    fn decode_all_splits_a_stream() {
        let mut bytes = Frame::text("ab").to_bytes();
        bytes.extend(Frame::ping("").unmasked().to_bytes());
        bytes.push(0x81);
        let (frames, end) = decode_all(&bytes);
        assert_eq!(frames.len(), 2);
        assert_eq!(frames[0].payload, b"ab");
        assert!(!frames[1].masked);
        assert_eq!(end, bytes.len() - 1);
    }
}
