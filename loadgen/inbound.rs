//! Incoming frames: parsed in place, checked as they stream by.
//!
//! Bytes are fed in whatever pieces `read` returns. Frame headers are parsed
//! by tungstenite ([`FrameHeader::parse`]); payload bytes are never
//! buffered: the stamp (the first 32 or 64 bytes of a message) is collected
//! into a small array, and every byte after it is compared, where it lies in
//! the read buffer, with the payload that was sent. So a message split across
//! reads or fragmented into several frames costs no copy and no allocation,
//! and the only state carried between reads is an incomplete frame header
//! (at most 14 bytes).
//!
//! Socket-free, so that tests can feed it scripted byte streams.

use std::io::Cursor;

use tungstenite::protocol::frame::{
    coding::{Control, Data, OpCode},
    FrameHeader,
};
use wsloop::wire::{filler, Encoding, Stamp, WireError};

/// Largest control frame payload (RFC 6455 §5.5).
const MAX_CONTROL_PAYLOAD: usize = 125;

/// Longest frame header: 2 bytes, 8 of extended length, 4 of mask.
const MAX_FRAME_HEADER: usize = 14;

/// What the data messages should look like.
#[derive(Debug, Clone, Copy)]
pub struct Expected<'a> {
    /// How the stamp is written.
    pub encoding: Encoding,
    /// The payload as sent, stamp area aside ([`wsloop::wire::payload_template`]).
    /// Empty in idle mode, where no echo is expected: any data message is
    /// then checked as a stamped payload of any length ([`Expected::any`]).
    pub payload: &'a [u8],
}

impl Expected<'_> {
    /// Idle mode: a data message is intact if it is a stamp (in the
    /// encoding its opcode says: hex for text, raw for binary) followed by
    /// the filler ([`wsloop::wire::filler`]), of whatever length; that is
    /// what `loadgen publish` (or a broadcast publisher) sends.
    #[inline]
    pub fn any(&self) -> bool {
        self.payload.is_empty()
    }

    /// The encoding of a message's stamp: the run's, or in idle mode its opcode's.
    #[inline]
    fn encoding_of(&self, is_text: bool) -> Encoding {
        match (self.any(), is_text) {
            (false, _) => self.encoding,
            (true, true) => Encoding::Text,
            (true, false) => Encoding::Binary,
        }
    }
}

/// A complete data message, checked.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Echo {
    /// Intact: the stamp it carried.
    Intact(Stamp),
    /// Not what was sent; says how.
    Corrupt(&'static str),
}

/// What the reader found, handed out as it goes.
pub trait Handler {
    /// A complete data message.
    fn echo(&mut self, echo: Echo);
    /// A ping: must be answered with a pong carrying `payload`.
    fn ping(&mut self, payload: &[u8]);
    /// A pong (the answer to our ping, or unsolicited).
    fn pong(&mut self, payload: &[u8]);
    /// A close frame, with its status code if it had one.
    fn close(&mut self, code: Option<u16>);
}

/// The server broke the framing rules; the connection cannot continue.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ProtocolViolation(pub &'static str);

/// Per-connection reader state.
#[derive(Debug)]
pub struct Inbound {
    /// An incomplete frame header from the end of the last read.
    carry: [u8; MAX_FRAME_HEADER],
    /// Bytes of `carry` in use.
    carry_len: u8,
    /// Inside a frame: what it is, and how many payload bytes are still to come.
    frame: Frame,
    /// Payload bytes of the current frame not yet seen.
    frame_left: u64,
    /// A data message has started and its final frame has not arrived.
    in_message: bool,
    /// The current data message is text (opcode 0x1), not binary.
    is_text: bool,
    /// A byte after the stamp differed from what was sent.
    mismatch: bool,
    /// Payload bytes of the current data message so far.
    message_len: u64,
    /// The message's stamp, collected as it arrives when it is split across reads.
    stamp: [u8; 64],
    /// The stamp, read straight from the input when it arrived in one piece (the usual case).
    decoded: Option<Result<Stamp, WireError>>,
    /// The current control frame's payload.
    control: [u8; MAX_CONTROL_PAYLOAD],
    /// Bytes of `control` in use.
    control_len: u8,
    /// A close frame was received: anything after it is ignored.
    closed: bool,
    /// The raw bytes of the last header tungstenite parsed, and its result.
    /// An echo server sends the same header for every message, so a header
    /// whose bytes equal these is known without parsing it again (the
    /// header's length is fixed by its first two bytes, so equal bytes mean
    /// an equal header).
    memo_raw: [u8; MAX_FRAME_HEADER],
    /// Bytes of `memo_raw` in use (0: nothing remembered).
    memo_len: u8,
    /// tungstenite's result for those bytes: the header and the payload length.
    memo: Option<(FrameHeader, u64)>,
    /// Set when the remembered header is a complete (final, unfragmented)
    /// text or binary frame: a message that starts with those bytes and is
    /// wholly in the input is checked in one step (see [`Inbound::feed`]).
    whole: Option<WholeMessage>,
}

/// The shape of the remembered header, when it is a whole message.
#[derive(Debug, Clone, Copy)]
struct WholeMessage {
    /// Bytes of the header.
    header_len: usize,
    /// Payload bytes it announces.
    payload_len: usize,
    /// Text (opcode 0x1) rather than binary.
    is_text: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Frame {
    /// Between frames.
    None,
    Data,
    Ping,
    Pong,
    Close,
}

impl Default for Inbound {
    fn default() -> Self {
        Inbound {
            carry: [0; MAX_FRAME_HEADER],
            carry_len: 0,
            frame: Frame::None,
            frame_left: 0,
            in_message: false,
            is_text: false,
            mismatch: false,
            message_len: 0,
            stamp: [0; 64],
            decoded: None,
            control: [0; MAX_CONTROL_PAYLOAD],
            control_len: 0,
            closed: false,
            memo_raw: [0; MAX_FRAME_HEADER],
            memo_len: 0,
            memo: None,
            whole: None,
        }
    }
}

impl Inbound {
    /// Whether a close frame has been received.
    #[cfg(test)]
    pub fn saw_close(&self) -> bool {
        self.closed
    }

    /// Whether the reader is between messages, with nothing partial held.
    #[cfg(test)]
    pub fn is_idle(&self) -> bool {
        self.carry_len == 0 && self.frame == Frame::None && !self.in_message
    }

    /// Consumes `data`, calling `handler` for every complete message and control frame.
    #[inline]
    pub fn feed(
        &mut self,
        mut data: &[u8],
        expected: &Expected<'_>,
        handler: &mut impl Handler,
    ) -> Result<(), ProtocolViolation> {
        // Fast path, for the usual input of an echo client: whole messages
        // carrying the header parsed last. Same checks as the general path
        // below, without its per-frame state changes.
        if let Some(whole) = self.whole {
            let end = whole.header_len + whole.payload_len;
            while self.frame == Frame::None
                && !self.closed
                && self.carry_len == 0
                && !self.in_message
                && data.len() >= end
                && same_bytes(&data[..whole.header_len], &self.memo_raw[..whole.header_len])
            {
                handler.echo(check_whole(&data[whole.header_len..end], whole.is_text, expected));
                data = &data[end..];
            }
        }
        while !data.is_empty() && !self.closed {
            if self.frame == Frame::None {
                let used = self.start_frame(data)?;
                data = &data[used..];
                if self.frame == Frame::None {
                    // Incomplete header: it is all in `carry` now.
                    debug_assert!(data.is_empty());
                    return Ok(());
                }
                if self.frame_left == 0 {
                    self.end_frame(expected, handler);
                }
                continue;
            }
            let take = data.len().min(usize::try_from(self.frame_left).unwrap_or(usize::MAX));
            let (chunk, rest) = data.split_at(take);
            data = rest;
            self.payload(chunk, expected);
            self.frame_left -= take as u64;
            if self.frame_left == 0 {
                self.end_frame(expected, handler);
            }
        }
        Ok(())
    }

    /// Parses a frame header from `carry` + `data`; returns how many bytes of
    /// `data` it used. Leaves `frame` at `None` if the header is incomplete.
    #[inline]
    fn start_frame(&mut self, data: &[u8]) -> Result<usize, ProtocolViolation> {
        let parsed = if self.carry_len == 0 {
            let memo_len = usize::from(self.memo_len);
            match &self.memo {
                Some(memo) if data.len() >= memo_len && same_bytes(&data[..memo_len], &self.memo_raw[..memo_len]) => {
                    Some((memo.clone(), memo_len))
                }
                _ => {
                    let mut cursor = Cursor::new(data);
                    match FrameHeader::parse(&mut cursor) {
                        Ok(Some(header)) => {
                            let used = cursor.position() as usize;
                            self.memo_raw[..used].copy_from_slice(&data[..used]);
                            self.memo_len = used as u8;
                            self.whole = whole_message(&header.0, header.1, used);
                            self.memo = Some(header.clone());
                            Some((header, used))
                        }
                        Ok(None) => None,
                        Err(_) => return Err(ProtocolViolation("reserved opcode")),
                    }
                }
            }
        } else {
            // Complete the carried header with the first bytes of `data`.
            let had = usize::from(self.carry_len);
            let add = (MAX_FRAME_HEADER - had).min(data.len());
            let mut joined = [0u8; MAX_FRAME_HEADER];
            joined[..had].copy_from_slice(&self.carry[..had]);
            joined[had..had + add].copy_from_slice(&data[..add]);
            let mut cursor = Cursor::new(&joined[..had + add]);
            match FrameHeader::parse(&mut cursor) {
                Ok(Some(header)) => Some((header, cursor.position() as usize - had)),
                Ok(None) => None,
                Err(_) => return Err(ProtocolViolation("reserved opcode")),
            }
        };
        let Some(((header, len), used)) = parsed else {
            // Keep the partial header (shorter than the longest header by construction).
            let had = usize::from(self.carry_len);
            self.carry[had..had + data.len()].copy_from_slice(data);
            self.carry_len += data.len() as u8;
            return Ok(data.len());
        };
        self.carry_len = 0;
        if header.mask.is_some() {
            return Err(ProtocolViolation("masked frame from the server"));
        }
        if header.rsv1 || header.rsv2 || header.rsv3 {
            return Err(ProtocolViolation("reserved bits set without an extension"));
        }
        self.frame = match header.opcode {
            OpCode::Data(data_opcode) => {
                match data_opcode {
                    Data::Continue if !self.in_message => {
                        return Err(ProtocolViolation("continuation frame without a message"))
                    }
                    Data::Continue => {}
                    _ if self.in_message => return Err(ProtocolViolation("new message inside a fragmented one")),
                    Data::Text | Data::Binary => self.begin_message(data_opcode),
                    Data::Reserved(_) => return Err(ProtocolViolation("reserved opcode")),
                }
                // A final frame ends the message once its payload is in (`end_frame`).
                self.in_message = !header.is_final;
                Frame::Data
            }
            OpCode::Control(control) => {
                if !header.is_final || len > MAX_CONTROL_PAYLOAD as u64 {
                    return Err(ProtocolViolation("fragmented or oversized control frame"));
                }
                self.control_len = 0;
                match control {
                    Control::Ping => Frame::Ping,
                    Control::Pong => Frame::Pong,
                    Control::Close => Frame::Close,
                    Control::Reserved(_) => return Err(ProtocolViolation("reserved opcode")),
                }
            }
        };
        self.frame_left = len;
        Ok(used)
    }

    fn begin_message(&mut self, opcode: Data) {
        self.message_len = 0;
        self.mismatch = false;
        self.decoded = None;
        self.is_text = opcode == Data::Text;
    }

    /// Takes payload bytes of the current frame.
    #[inline]
    fn payload(&mut self, chunk: &[u8], expected: &Expected<'_>) {
        match self.frame {
            Frame::Data => {
                let offset = usize::try_from(self.message_len).unwrap_or(usize::MAX);
                self.message_len += chunk.len() as u64;
                let encoding = expected.encoding_of(self.is_text);
                let stamp_len = if expected.any() {
                    encoding.stamp_len()
                } else {
                    encoding.stamp_len().min(expected.payload.len())
                };
                let mut chunk_at = 0;
                if offset == 0 && chunk.len() >= stamp_len && stamp_len > 0 {
                    self.decoded = Some(Stamp::read(encoding, &chunk[..stamp_len]));
                    chunk_at = stamp_len;
                } else if offset < stamp_len {
                    let n = (stamp_len - offset).min(chunk.len());
                    self.stamp[offset..offset + n].copy_from_slice(&chunk[..n]);
                    chunk_at = n;
                }
                let start = offset + chunk_at;
                if expected.any() {
                    if !is_filler(&chunk[chunk_at..], encoding, start) {
                        self.mismatch = true;
                    }
                    return;
                }
                let end = (offset + chunk.len()).min(expected.payload.len());
                if start < end && chunk[chunk_at..chunk_at + (end - start)] != expected.payload[start..end] {
                    self.mismatch = true;
                }
            }
            Frame::Ping | Frame::Pong | Frame::Close => {
                let at = usize::from(self.control_len);
                self.control[at..at + chunk.len()].copy_from_slice(chunk);
                self.control_len += chunk.len() as u8;
            }
            Frame::None => unreachable!("payload outside a frame"),
        }
    }

    #[inline]
    fn end_frame(&mut self, expected: &Expected<'_>, handler: &mut impl Handler) {
        let frame = std::mem::replace(&mut self.frame, Frame::None);
        let control = &self.control[..usize::from(self.control_len)];
        match frame {
            Frame::Data if !self.in_message => handler.echo(self.check_message(expected)),
            Frame::Data => {}
            Frame::Ping => handler.ping(control),
            Frame::Pong => handler.pong(control),
            Frame::Close => {
                self.closed = true;
                let code = (control.len() >= 2).then(|| u16::from_be_bytes([control[0], control[1]]));
                handler.close(code);
            }
            Frame::None => {}
        }
    }

    #[inline]
    fn check_message(&mut self, expected: &Expected<'_>) -> Echo {
        if expected.any() {
            let encoding = expected.encoding_of(self.is_text);
            if self.message_len < encoding.stamp_len() as u64 {
                return Echo::Corrupt("shorter than a stamp");
            }
            return match self.decoded.take().unwrap_or_else(|| Stamp::read(encoding, &self.stamp)) {
                Err(_) => Echo::Corrupt("no valid stamp"),
                Ok(_) if self.mismatch => Echo::Corrupt("not the filler after the stamp"),
                Ok(stamp) => Echo::Intact(stamp),
            };
        }
        if self.message_len != expected.payload.len() as u64 {
            return Echo::Corrupt("wrong length");
        }
        if self.is_text != (expected.encoding == Encoding::Text) {
            return Echo::Corrupt("wrong opcode (text/binary)");
        }
        if self.mismatch {
            return Echo::Corrupt("payload differs from what was sent");
        }
        match self.decoded.take().unwrap_or_else(|| Stamp::read(expected.encoding, &self.stamp)) {
            Ok(stamp) => Echo::Intact(stamp),
            Err(_) => Echo::Corrupt("stamp damaged"),
        }
    }
}

/// Whether `header` (of `header_len` bytes, announcing `payload_len`) is a
/// complete, valid text or binary frame from a server.
fn whole_message(header: &FrameHeader, payload_len: u64, header_len: usize) -> Option<WholeMessage> {
    let is_text = match header.opcode {
        OpCode::Data(Data::Text) => true,
        OpCode::Data(Data::Binary) => false,
        _ => return None,
    };
    let valid = header.is_final && header.mask.is_none() && !(header.rsv1 || header.rsv2 || header.rsv3);
    let payload_len = usize::try_from(payload_len).ok()?;
    valid.then_some(WholeMessage { header_len, payload_len, is_text })
}

/// Checks a message that arrived whole: the same checks, in the same order,
/// as [`Inbound::check_message`] makes on a message assembled piece by piece.
#[inline]
fn check_whole(payload: &[u8], is_text: bool, expected: &Expected<'_>) -> Echo {
    if expected.any() {
        let encoding = expected.encoding_of(is_text);
        let stamp_len = encoding.stamp_len();
        if payload.len() < stamp_len {
            return Echo::Corrupt("shorter than a stamp");
        }
        return match Stamp::read(encoding, payload) {
            Err(_) => Echo::Corrupt("no valid stamp"),
            Ok(_) if !is_filler(&payload[stamp_len..], encoding, stamp_len) => {
                Echo::Corrupt("not the filler after the stamp")
            }
            Ok(stamp) => Echo::Intact(stamp),
        };
    }
    if payload.len() != expected.payload.len() {
        return Echo::Corrupt("wrong length");
    }
    if is_text != (expected.encoding == Encoding::Text) {
        return Echo::Corrupt("wrong opcode (text/binary)");
    }
    let stamp_len = expected.encoding.stamp_len();
    if payload[stamp_len..] != expected.payload[stamp_len..] {
        return Echo::Corrupt("payload differs from what was sent");
    }
    match Stamp::read(expected.encoding, payload) {
        Ok(stamp) => Echo::Intact(stamp),
        Err(_) => Echo::Corrupt("stamp damaged"),
    }
}

/// Whether `bytes`, found at payload offset `at` (past the stamp), are the
/// filler [`wsloop::wire::payload_template`] puts there.
#[inline]
fn is_filler(bytes: &[u8], encoding: Encoding, at: usize) -> bool {
    bytes.iter().enumerate().all(|(i, byte)| *byte == filler(encoding, at + i))
}

/// Byte equality of two short slices, without a call to `memcmp`.
#[inline]
fn same_bytes(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).all(|(x, y)| x == y)
}

#[cfg(test)]
mod tests {
    use super::*;
    use wsloop::wire::payload_template;

    #[derive(Default)]
    struct Seen {
        echoes: Vec<Echo>,
        pings: Vec<Vec<u8>>,
        pongs: Vec<Vec<u8>>,
        closes: Vec<Option<u16>>,
    }

    impl Handler for Seen {
        fn echo(&mut self, echo: Echo) {
            self.echoes.push(echo);
        }
        fn ping(&mut self, payload: &[u8]) {
            self.pings.push(payload.to_vec());
        }
        fn pong(&mut self, payload: &[u8]) {
            self.pongs.push(payload.to_vec());
        }
        fn close(&mut self, code: Option<u16>) {
            self.closes.push(code);
        }
    }

    /// An unmasked server frame.
    fn frame(first: u8, payload: &[u8]) -> Vec<u8> {
        let mut out = vec![first];
        match payload.len() {
            n if n < 126 => out.push(n as u8),
            n if n < 65536 => {
                out.push(126);
                out.extend_from_slice(&(n as u16).to_be_bytes());
            }
            n => {
                out.push(127);
                out.extend_from_slice(&(n as u64).to_be_bytes());
            }
        }
        out.extend_from_slice(payload);
        out
    }

    fn message(encoding: Encoding, size: usize, seq: u64) -> Vec<u8> {
        let mut payload = payload_template(encoding, size);
        Stamp { seq, intended_ns: 10, sent_ns: 11, connection: 1 }.write(encoding, &mut payload);
        payload
    }

    fn feed_in_pieces(stream: &[u8], piece: usize, expected: &Expected<'_>) -> Seen {
        let mut inbound = Inbound::default();
        let mut seen = Seen::default();
        for chunk in stream.chunks(piece) {
            inbound.feed(chunk, expected, &mut seen).unwrap();
        }
        assert!(inbound.is_idle() || inbound.saw_close());
        seen
    }

    #[test]
    fn whole_split_and_fragmented_messages_verify() {
        for (encoding, size) in [(Encoding::Binary, 512), (Encoding::Text, 300), (Encoding::Binary, 70_000)] {
            let template = payload_template(encoding, size);
            let expected = Expected { encoding, payload: &template };
            let first = if encoding == Encoding::Text { 0x81 } else { 0x82 };
            let mut stream = Vec::new();
            stream.extend(frame(first, &message(encoding, size, 0)));
            // The same message fragmented in three, with a ping in the middle.
            let m = message(encoding, size, 1);
            stream.extend(frame(first & 0x0f, &m[..10]));
            stream.extend(frame(0x89, b"hb"));
            stream.extend(frame(0x00, &m[10..100]));
            stream.extend(frame(0x80, &m[100..]));
            stream.extend(frame(0x8a, b"pong"));
            stream.extend(frame(0x88, &1001u16.to_be_bytes()));
            stream.extend(frame(first, &message(encoding, size, 2))); // after close: ignored
            for piece in [1, 2, 3, 7, 64, 1000, usize::MAX] {
                let seen = feed_in_pieces(&stream, piece.min(stream.len()), &expected);
                let seqs: Vec<u64> = seen
                    .echoes
                    .iter()
                    .map(|e| match e {
                        Echo::Intact(s) => s.seq,
                        Echo::Corrupt(why) => panic!("{why} (piece {piece})"),
                    })
                    .collect();
                assert_eq!(seqs, [0, 1]);
                assert_eq!(seen.pings, [b"hb".to_vec()]);
                assert_eq!(seen.pongs, [b"pong".to_vec()]);
                assert_eq!(seen.closes, [Some(1001)]);
            }
        }
    }

    #[test]
    fn corruption_is_caught_and_named() {
        let template = payload_template(Encoding::Binary, 100);
        let expected = Expected { encoding: Encoding::Binary, payload: &template };
        // Each case after an intact message (so the header is remembered),
        // fed whole (fast path) and in pieces (general path): same verdicts.
        let run = |bytes: Vec<u8>| {
            let mut stream = frame(0x82, &message(Encoding::Binary, 100, 0));
            stream.extend_from_slice(&bytes);
            let whole = feed_in_pieces(&stream, stream.len(), &expected).echoes;
            let pieces = feed_in_pieces(&stream, 13, &expected).echoes;
            assert_eq!(whole, pieces);
            assert!(matches!(whole[0], Echo::Intact(_)));
            whole[1..].to_vec()
        };
        let mut filler = message(Encoding::Binary, 100, 0);
        filler[80] ^= 1;
        assert_eq!(run(frame(0x82, &filler)), [Echo::Corrupt("payload differs from what was sent")]);
        let mut stamp = message(Encoding::Binary, 100, 0);
        stamp[3] ^= 1;
        assert_eq!(run(frame(0x82, &stamp)), [Echo::Corrupt("stamp damaged")]);
        let short = message(Encoding::Binary, 100, 0)[..99].to_vec();
        assert_eq!(run(frame(0x82, &short)), [Echo::Corrupt("wrong length")]);
        let mut long = message(Encoding::Binary, 100, 0);
        long.push(0);
        assert_eq!(run(frame(0x82, &long)), [Echo::Corrupt("wrong length")]);
        assert_eq!(run(frame(0x81, &message(Encoding::Binary, 100, 0))), [Echo::Corrupt("wrong opcode (text/binary)")]);
    }

    #[test]
    fn a_remembered_header_is_only_reused_for_identical_bytes() {
        let template = payload_template(Encoding::Binary, 200);
        let expected = Expected { encoding: Encoding::Binary, payload: &template };
        let mut inbound = Inbound::default();
        let mut seen = Seen::default();
        let good = frame(0x82, &message(Encoding::Binary, 200, 0));
        let short = frame(0x82, &message(Encoding::Binary, 200, 1)[..199]); // same first 3 header bytes
        let text = frame(0x81, &message(Encoding::Binary, 200, 2));
        for bytes in [&good, &short, &good, &text, &good] {
            inbound.feed(bytes, &expected, &mut seen).unwrap();
        }
        assert!(matches!(seen.echoes[0], Echo::Intact(_)));
        assert_eq!(seen.echoes[1], Echo::Corrupt("wrong length"));
        assert!(matches!(seen.echoes[2], Echo::Intact(_)));
        assert_eq!(seen.echoes[3], Echo::Corrupt("wrong opcode (text/binary)"));
        assert!(matches!(seen.echoes[4], Echo::Intact(_)));
    }

    /// Idle mode (an empty expected payload): any stamped message of any
    /// length, text or binary, whole or in pieces; anything else is named.
    #[test]
    fn idle_mode_takes_any_stamped_message() {
        let expected = Expected { encoding: Encoding::Binary, payload: &[] };
        let mut stream = Vec::new();
        stream.extend(frame(0x82, &message(Encoding::Binary, 32, 7)));
        stream.extend(frame(0x81, &message(Encoding::Text, 700, 8)));
        stream.extend(frame(0x82, &message(Encoding::Binary, 70_000, 9)));
        // Fragmented, with a ping between.
        let m = message(Encoding::Binary, 512, 10);
        stream.extend(frame(0x02, &m[..20]));
        stream.extend(frame(0x89, b"hb"));
        stream.extend(frame(0x80, &m[20..]));
        let mut filler = message(Encoding::Binary, 100, 11);
        filler[90] ^= 1;
        stream.extend(frame(0x82, &filler));
        stream.extend(frame(0x82, &message(Encoding::Binary, 100, 12)[..31]));
        stream.extend(frame(0x81, b"hello, not a stamp; hello, not a stamp; hello, not a stamp; hello!"));
        stream.extend(frame(0x82, &message(Encoding::Text, 100, 13))); // a text stamp in a binary message
        for piece in [1, 5, 33, 1000, usize::MAX] {
            let seen = feed_in_pieces(&stream, piece.min(stream.len()), &expected);
            let verdicts: Vec<Result<u64, &str>> = seen
                .echoes
                .iter()
                .map(|e| match e {
                    Echo::Intact(s) => Ok(s.seq),
                    Echo::Corrupt(why) => Err(*why),
                })
                .collect();
            assert_eq!(
                verdicts,
                [
                    Ok(7),
                    Ok(8),
                    Ok(9),
                    Ok(10),
                    Err("not the filler after the stamp"),
                    Err("shorter than a stamp"),
                    Err("no valid stamp"),
                    Err("no valid stamp"),
                ],
                "piece {piece}"
            );
            assert_eq!(seen.pings, [b"hb".to_vec()]);
        }
    }

    #[test]
    fn framing_violations_are_refused() {
        let template = payload_template(Encoding::Binary, 40);
        let expected = Expected { encoding: Encoding::Binary, payload: &template };
        let violation = |bytes: &[u8]| {
            let mut seen = Seen::default();
            Inbound::default().feed(bytes, &expected, &mut seen).unwrap_err()
        };
        assert_eq!(violation(&[0x82, 0x80, 1, 2, 3, 4]).0, "masked frame from the server");
        assert_eq!(violation(&[0xc2, 0x00]).0, "reserved bits set without an extension");
        assert_eq!(violation(&[0x83, 0x00]).0, "reserved opcode");
        assert_eq!(violation(&[0x80, 0x00]).0, "continuation frame without a message");
        assert_eq!(violation(&[0x02, 0x00, 0x82, 0x00]).0, "new message inside a fragmented one");
        assert_eq!(violation(&[0x09, 0x00]).0, "fragmented or oversized control frame");
        assert_eq!(violation(&[0x89, 126, 0, 126]).0, "fragmented or oversized control frame");
    }
}
