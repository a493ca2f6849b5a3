//! Incremental UTF-8 validation: a text message is checked as its bytes
//! arrive, so an invalid byte fails the connection (close 1007) at once, in
//! the middle of a frame or of a fragmented message, not when the message
//! is complete (Autobahn cases 6.4.x).
//!
//! The standard library does the validation (`std::str::from_utf8`, which is
//! fast on ASCII and checks every rule: overlong forms, surrogates, the
//! upper bound). What this adds is the carry: up to three bytes of a code
//! point cut off at the end of a chunk, kept until the next chunk completes
//! it. `from_utf8` reports such a tail as "incomplete" (`error_len() ==
//! None`) only when it is a valid prefix, so a tail that can never become
//! valid is refused right away too.

/// The state between two chunks of one text message.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Utf8 {
    /// The start of a code point cut off by the end of the last chunk.
    carry: [u8; 4],
    /// Bytes of `carry` in use (0 to 3).
    carry_len: u8,
}

/// The bytes are not valid UTF-8.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Invalid;

impl Utf8 {
    /// Checks the next `chunk` of the message.
    pub fn push(&mut self, mut chunk: &[u8]) -> Result<(), Invalid> {
        if self.carry_len > 0 {
            let have = usize::from(self.carry_len);
            let need = sequence_len(self.carry[0]) - have;
            let take = need.min(chunk.len());
            self.carry[have..have + take].copy_from_slice(&chunk[..take]);
            let now = have + take;
            match std::str::from_utf8(&self.carry[..now]) {
                Ok(_) => self.carry_len = 0,
                // Still a valid prefix: wait for more.
                Err(e) if e.error_len().is_none() => {
                    self.carry_len = now as u8;
                    return Ok(());
                }
                Err(_) => return Err(Invalid),
            }
            chunk = &chunk[take..];
        }
        match std::str::from_utf8(chunk) {
            Ok(_) => Ok(()),
            Err(e) if e.error_len().is_none() => {
                let tail = &chunk[e.valid_up_to()..];
                self.carry[..tail.len()].copy_from_slice(tail);
                self.carry_len = tail.len() as u8;
                Ok(())
            }
            Err(_) => Err(Invalid),
        }
    }

    /// Checks that the message does not end inside a code point.
    pub fn finish(&mut self) -> Result<(), Invalid> {
        let complete = self.carry_len == 0;
        *self = Utf8::default();
        if complete {
            Ok(())
        } else {
            Err(Invalid)
        }
    }
}

/// Length of the sequence a leading byte starts. Only called on the first
/// byte of a carried tail, which `from_utf8` has accepted as a valid prefix,
/// so it is one of the multi-byte leads.
fn sequence_len(lead: u8) -> usize {
    match lead {
        0xC0..=0xDF => 2,
        0xE0..=0xEF => 3,
        _ => 4,
    }
}

/// Whether a whole message is valid UTF-8 (the common case: no state).
pub fn is_valid(bytes: &[u8]) -> bool {
    std::str::from_utf8(bytes).is_ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Feeds `bytes` split at every possible pair of points; the verdict must
    /// always be the same as `from_utf8` on the whole.
    fn agrees_at_every_split(bytes: &[u8]) {
        let whole = std::str::from_utf8(bytes).is_ok();
        for a in 0..=bytes.len() {
            for b in a..=bytes.len() {
                let mut v = Utf8::default();
                let verdict = v.push(&bytes[..a]).and_then(|_| v.push(&bytes[a..b])).and_then(|_| v.push(&bytes[b..]));
                let verdict = verdict.and_then(|_| v.finish()).is_ok();
                assert_eq!(verdict, whole, "{bytes:x?} split at {a}, {b}");
            }
        }
    }

    #[test]
    fn agrees_with_the_standard_library() {
        for text in ["", "hello", "κόσμε", "€", "𝄞 clef", "a\u{10FFFF}b", "\u{FEFF}"] {
            agrees_at_every_split(text.as_bytes());
        }
        for bad in [
            &[0xff][..],
            &[0xce, 0xba, 0xe1, 0x28],
            &[0xc0, 0x80],             // overlong NUL
            &[0xed, 0xa0, 0x80],       // a surrogate
            &[0xf4, 0x90, 0x80, 0x80], // above U+10FFFF
            &[0xe1, 0x80],             // cut short at the end
            &[0x80],                   // a lone continuation byte
        ] {
            agrees_at_every_split(bad);
        }
    }

    #[test]
    fn fails_at_the_first_bad_byte_not_at_the_end() {
        let mut v = Utf8::default();
        assert_eq!(v.push(&[0xce, 0xba, 0xe1]), Ok(()));
        // 0x28 cannot continue 0xe1: refused in this chunk, before any final frame.
        assert_eq!(v.push(&[0x28]), Err(Invalid));
        // A prefix that can never be valid is refused before it is complete.
        let mut v = Utf8::default();
        assert_eq!(v.push(&[0xf4, 0x90]), Err(Invalid));
        let mut v = Utf8::default();
        assert_eq!(v.push(&[0xf4]), Ok(()));
        assert_eq!(v.push(&[0x90]), Err(Invalid));
    }
}
