//! The payload layout of loadgen's data messages, shared by everything that
//! reads them (loadgen checks every echo; a server may read the stamp to
//! measure one-way or broadcast latency).
//!
//! Every data message starts with a [`Stamp`]; the rest of the payload is a
//! fixed filler ([`filler`]) that the receiver compares byte for byte, so a
//! corrupted, truncated or foreign message is caught, not just a wrong
//! sequence number.
//!
//! ```text
//! binary (32 bytes, little-endian)          text (64 bytes)
//!   0..8   seq           message number       the same 32 bytes as lowercase
//!   8..16  intended_ns   when it was due      hex, so that a text payload is
//!  16..24  sent_ns       when it was written  valid UTF-8 (RFC 6455 §5.6)
//!  24..28  connection    sender's id
//!  28..32  check         mixes the four fields above
//! ```
//!
//! Times are `CLOCK_MONOTONIC` nanoseconds ([`crate::clock::monotonic_ns`]): the same
//! clock in every thread and every process on the machine, so a stamp
//! written by loadgen can be read by a server on the same host.
//!
//! `intended_ns` and `sent_ns` differ only in open-loop (rate) mode: the time
//! the schedule said the message was due, and the time it was actually
//! written. Latency measured from the first is free of coordinated omission
//! (wrk2); the second gives the uncorrected figure kept beside it.

/// Bytes of a binary stamp.
pub const BINARY_STAMP_LEN: usize = 32;

/// Bytes of a text stamp: each binary byte as two hex digits.
pub const TEXT_STAMP_LEN: usize = 2 * BINARY_STAMP_LEN;

/// How the stamp and the filler are written.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Encoding {
    /// Raw bytes: a binary message (opcode 0x2).
    Binary,
    /// ASCII only: a text message (opcode 0x1), which must be valid UTF-8.
    Text,
}

impl Encoding {
    /// Bytes the stamp occupies at the start of the payload: the smallest
    /// payload this encoding can carry.
    pub const fn stamp_len(self) -> usize {
        match self {
            Encoding::Binary => BINARY_STAMP_LEN,
            Encoding::Text => TEXT_STAMP_LEN,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Encoding::Binary => "binary",
            Encoding::Text => "text",
        }
    }
}

/// The per-message header.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Stamp {
    /// Per-connection message number, from 0 with no gaps: a gap is a lost
    /// message, a repeat a duplicate.
    pub seq: u64,
    /// When the message was due to be sent ([`crate::clock::monotonic_ns`]).
    pub intended_ns: u64,
    /// When it was handed to the kernel ([`crate::clock::monotonic_ns`]).
    pub sent_ns: u64,
    /// The sending connection's id: an echo that comes back on another
    /// connection (a server mixing up its clients) fails the check.
    pub connection: u32,
}

/// Why a stamp could not be read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WireError {
    /// Shorter than the stamp.
    TooShort,
    /// A text stamp with a byte that is not a lowercase hex digit.
    NotHex,
    /// The check word does not match the fields: the stamp was altered.
    BadCheck,
}

impl std::fmt::Display for WireError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            WireError::TooShort => "payload shorter than the stamp",
            WireError::NotHex => "text stamp is not hex",
            WireError::BadCheck => "stamp check word does not match",
        })
    }
}

impl std::error::Error for WireError {}

impl Stamp {
    /// The binary form as four 64-bit words: word `i` is bytes `8i..8i+8`
    /// read as little-endian. Lets a sender patch (and mask) the stamp with
    /// four word operations instead of 32 byte operations.
    #[inline]
    pub fn to_words(&self) -> [u64; 4] {
        [self.seq, self.intended_ns, self.sent_ns, u64::from(self.connection) | u64::from(self.check()) << 32]
    }

    /// The 32-byte binary form.
    #[inline]
    pub fn to_bytes(&self) -> [u8; BINARY_STAMP_LEN] {
        let mut out = [0u8; BINARY_STAMP_LEN];
        for (chunk, word) in out.chunks_exact_mut(8).zip(self.to_words()) {
            chunk.copy_from_slice(&word.to_le_bytes());
        }
        out
    }

    /// Reads the binary form, verifying the check word.
    #[inline]
    pub fn from_bytes(bytes: &[u8; BINARY_STAMP_LEN]) -> Result<Stamp, WireError> {
        let u64_at = |at: usize| u64::from_le_bytes(bytes[at..at + 8].try_into().expect("8 bytes"));
        let stamp = Stamp {
            seq: u64_at(0),
            intended_ns: u64_at(8),
            sent_ns: u64_at(16),
            connection: u32::from_le_bytes(bytes[24..28].try_into().expect("4 bytes")),
        };
        let check = u32::from_le_bytes(bytes[28..32].try_into().expect("4 bytes"));
        if check != stamp.check() {
            return Err(WireError::BadCheck);
        }
        Ok(stamp)
    }

    /// Writes the stamp in `encoding` into the first `encoding.stamp_len()` bytes of `out`.
    #[inline]
    pub fn write(&self, encoding: Encoding, out: &mut [u8]) {
        let bytes = self.to_bytes();
        match encoding {
            Encoding::Binary => out[..BINARY_STAMP_LEN].copy_from_slice(&bytes),
            Encoding::Text => hex_encode(&bytes, &mut out[..TEXT_STAMP_LEN]),
        }
    }

    /// Reads a stamp in `encoding` from the start of `payload`.
    #[inline]
    pub fn read(encoding: Encoding, payload: &[u8]) -> Result<Stamp, WireError> {
        if payload.len() < encoding.stamp_len() {
            return Err(WireError::TooShort);
        }
        match encoding {
            Encoding::Binary => Stamp::from_bytes(payload[..BINARY_STAMP_LEN].try_into().expect("32 bytes")),
            Encoding::Text => {
                let mut bytes = [0u8; BINARY_STAMP_LEN];
                hex_decode(&payload[..TEXT_STAMP_LEN], &mut bytes)?;
                Stamp::from_bytes(&bytes)
            }
        }
    }

    /// A 32-bit mix of all the fields (one multiply): not cryptographic, it
    /// only has to make an accidental change to any field visible.
    #[inline]
    fn check(&self) -> u32 {
        let mixed = self.seq
            ^ self.intended_ns.rotate_left(17)
            ^ self.sent_ns.rotate_left(41)
            ^ (u64::from(self.connection) << 13)
            ^ 0x5753_4c4f_4f50_2d31; // "WSLOOP-1": a zeroed stamp does not pass
        (mixed.wrapping_mul(0x9e37_79b9_7f4a_7c15) >> 32) as u32
    }
}

/// A complete payload of `size` bytes: room for the stamp (zeroes), then the
/// filler. Senders build their frame from it once and patch the stamp in for
/// each message; receivers compare everything after the stamp with it.
///
/// Panics if `size` is smaller than the stamp (validated at start-up).
pub fn payload_template(encoding: Encoding, size: usize) -> Vec<u8> {
    let stamp_len = encoding.stamp_len();
    assert!(size >= stamp_len, "a {} payload needs at least {stamp_len} bytes", encoding.as_str());
    let mut payload = vec![0u8; size];
    if encoding == Encoding::Text {
        // Keep the whole template valid UTF-8, stamp area included.
        payload[..stamp_len].fill(b'0');
    }
    for (i, byte) in payload.iter_mut().enumerate().skip(stamp_len) {
        *byte = filler(encoding, i);
    }
    payload
}

/// The filler byte at payload offset `index` (which is at least the stamp length).
///
/// Binary: a sequence that is neither zero nor constant (so a zeroed or
/// shifted buffer is caught); text: printable ASCII cycling through the
/// alphabet, easy to read in a packet capture.
#[inline]
pub fn filler(encoding: Encoding, index: usize) -> u8 {
    match encoding {
        Encoding::Binary => (index as u8).wrapping_mul(167).wrapping_add(13),
        Encoding::Text => b'a' + (index % 26) as u8,
    }
}

const HEX: &[u8; 16] = b"0123456789abcdef";

#[inline]
fn hex_encode(bytes: &[u8], out: &mut [u8]) {
    for (pair, byte) in out.chunks_exact_mut(2).zip(bytes) {
        pair[0] = HEX[usize::from(byte >> 4)];
        pair[1] = HEX[usize::from(byte & 0xf)];
    }
}

#[inline]
fn hex_decode(text: &[u8], out: &mut [u8]) -> Result<(), WireError> {
    #[inline]
    fn digit(c: u8) -> Result<u8, WireError> {
        match c {
            b'0'..=b'9' => Ok(c - b'0'),
            b'a'..=b'f' => Ok(c - b'a' + 10),
            _ => Err(WireError::NotHex),
        }
    }
    for (byte, pair) in out.iter_mut().zip(text.chunks_exact(2)) {
        *byte = (digit(pair[0])? << 4) | digit(pair[1])?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> Stamp {
        Stamp { seq: 42, intended_ns: 1_000_000_123, sent_ns: 1_000_000_456, connection: 7 }
    }

    #[test]
    fn round_trips_in_both_encodings() {
        for encoding in [Encoding::Binary, Encoding::Text] {
            let mut payload = payload_template(encoding, 100);
            sample().write(encoding, &mut payload);
            assert_eq!(Stamp::read(encoding, &payload), Ok(sample()));
        }
    }

    #[test]
    fn any_changed_bit_fails_the_check() {
        let bytes = sample().to_bytes();
        for bit in 0..BINARY_STAMP_LEN * 8 {
            let mut changed = bytes;
            changed[bit / 8] ^= 1 << (bit % 8);
            assert_eq!(Stamp::from_bytes(&changed), Err(WireError::BadCheck), "bit {bit}");
        }
        assert_eq!(Stamp::from_bytes(&[0; BINARY_STAMP_LEN]), Err(WireError::BadCheck));
    }

    #[test]
    fn words_are_the_bytes_in_little_endian() {
        let stamp = sample();
        let bytes = stamp.to_bytes();
        for (i, word) in stamp.to_words().iter().enumerate() {
            assert_eq!(word.to_le_bytes(), bytes[8 * i..8 * i + 8]);
        }
    }

    #[test]
    fn text_payloads_are_ascii() {
        let mut payload = payload_template(Encoding::Text, 300);
        assert!(payload.is_ascii());
        Stamp { seq: u64::MAX, intended_ns: u64::MAX, sent_ns: 0, connection: u32::MAX }
            .write(Encoding::Text, &mut payload);
        assert!(std::str::from_utf8(&payload).is_ok());
        assert!(payload.is_ascii());
    }

    #[test]
    fn bad_text_and_short_payloads_are_refused() {
        let mut payload = payload_template(Encoding::Text, 64);
        sample().write(Encoding::Text, &mut payload);
        payload[5] = b'G';
        assert_eq!(Stamp::read(Encoding::Text, &payload), Err(WireError::NotHex));
        assert_eq!(Stamp::read(Encoding::Binary, &[0; 31]), Err(WireError::TooShort));
    }

    #[test]
    fn binary_filler_is_not_constant() {
        let payload = payload_template(Encoding::Binary, 64);
        assert!(payload[BINARY_STAMP_LEN..].windows(2).all(|w| w[0] != w[1]));
    }

    #[test]
    fn monotonic_clock_moves_forward() {
        let a = crate::clock::monotonic_ns();
        let b = crate::clock::monotonic_ns();
        assert!(b >= a && a > 0);
    }
}
