//! Client frames in, events out: the server side of RFC 6455's framing,
//! without I/O.
//!
//! The caller hands [`Reader::next`] the bytes it received, in whatever
//! pieces they came, and gets one [`Event`] at a time, each with the number
//! of input bytes it used. Headers are parsed by tungstenite
//! (`FrameHeader::parse`); every rule tungstenite's `WebSocketContext` would
//! apply is applied here, each with its close code (see [`Violation`]).
//!
//! Where the bytes live:
//! - **In place.** A whole message in one frame, wholly in the input, is
//!   unmasked where it lies and handed out as a slice of the input
//!   ([`Payload::InPlace`]): no copy, no allocation. This is the hot path.
//!   Whole control frames are handed out the same way.
//! - **Assembled.** A message in several frames, or one frame cut by the end
//!   of the input, is unmasked and UTF-8-checked as its bytes arrive and
//!   appended to a buffer that grows with what has arrived (never with what a
//!   header announces). The complete message is handed out by value
//!   ([`Payload::Assembled`]), so the reader holds nothing afterwards.
//! - **Idle.** Between messages the reader holds no buffer at all: its
//!   partial state is boxed and freed as soon as it is empty, so an idle
//!   connection costs the size of [`Reader`] (16 bytes).
//!
//! After a close frame or a violation the reader is finished: it ignores
//! everything that follows (a server must not act on input after a close).

use std::io::Cursor;

use tungstenite::protocol::frame::{
    coding::{CloseCode, Control, Data, OpCode},
    FrameHeader,
};

use super::{
    mask::unmask,
    utf8::{self, Utf8},
};

/// Longest frame header: 2 bytes, 8 of extended length, 4 of mask.
const MAX_HEADER: usize = 14;

/// Largest control frame payload (RFC 6455 §5.5).
pub const MAX_CONTROL_PAYLOAD: u64 = 125;

/// Size limits, checked on each frame header before its payload is buffered.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Largest frame payload (`--max-frame-size`).
    pub max_frame: u64,
    /// Largest message, all its fragments together (`--max-message-size`).
    pub max_message: u64,
}

/// Text or binary: the opcode a data message started with.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// Opcode 0x1: the payload is valid UTF-8 (checked).
    Text,
    /// Opcode 0x2.
    Binary,
}

/// A complete message's payload.
#[derive(Debug, PartialEq, Eq)]
pub enum Payload<'a> {
    /// Unmasked where it arrived, in the caller's input.
    InPlace(&'a [u8]),
    /// Put together from several frames or reads; now the caller's.
    Assembled(Vec<u8>),
}

impl Payload<'_> {
    pub fn as_slice(&self) -> &[u8] {
        match self {
            Payload::InPlace(bytes) => bytes,
            Payload::Assembled(bytes) => bytes,
        }
    }
}

/// A close frame's contents: a valid code and a UTF-8 reason.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CloseFrame<'a> {
    pub code: u16,
    pub reason: &'a str,
}

/// What the input contained.
#[derive(Debug, PartialEq, Eq)]
pub enum Event<'a> {
    /// A complete data message.
    Message(Kind, Payload<'a>),
    /// A ping: answer with a pong carrying the same payload.
    Ping(&'a [u8]),
    /// A pong.
    Pong(&'a [u8]),
    /// A close frame (`None`: without a status code). The reader is finished.
    Close(Option<CloseFrame<'a>>),
}

/// The peer broke the protocol: fail the connection with `code`
/// (RFC 6455 §7.1.7). The reader is finished.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Violation {
    /// 1002 (protocol error), 1007 (invalid UTF-8) or 1009 (too big).
    pub code: CloseCode,
    /// For the close frame and the log line.
    pub reason: &'static str,
}

impl Violation {
    fn protocol(reason: &'static str) -> Self {
        Violation { code: CloseCode::Protocol, reason }
    }
}

const INVALID_UTF8: Violation = Violation { code: CloseCode::Invalid, reason: "invalid UTF-8 in a text message" };

/// One connection's reader.
#[derive(Debug, Default)]
pub struct Reader {
    /// Everything between complete frames: `None` (no allocation) when idle.
    partial: Option<Box<Partial>>,
    /// The last whole message's header, to know the next one like it at once.
    memo: Memo,
    /// A close frame or a violation was read: the rest of the input is ignored.
    finished: bool,
}

/// tungstenite's verdict on the last header of a whole message (a final
/// text or binary frame that passed every check), kept as the raw bytes
/// before its mask. A client tends to send the same kind and length again
/// and again, and a header whose bytes before the mask are the same *is*
/// the same header (the first two bytes fix how many length bytes follow):
/// so the next such header is known from one word compare, with the same
/// verdict tungstenite gave. Only used with nothing in progress, the one
/// state in which that verdict holds.
#[derive(Debug, Default, Clone, Copy)]
struct Memo {
    /// The header's bytes before the mask, little-endian, in the low bytes.
    prefix: u32,
    /// Which bits of a 4-byte word are the prefix.
    prefix_mask: u32,
    /// Bytes of the prefix: 2, or 4 with a 16-bit length (0: nothing remembered).
    prefix_len: u8,
    text: bool,
    /// The payload length.
    len: u32,
}

impl Memo {
    /// Remembers the header `bytes` (mask included) of a whole message.
    fn remember(&mut self, bytes: &[u8], kind: Kind, len: u64) {
        let prefix_len = bytes.len().saturating_sub(4);
        let (Ok(len), 2 | 4) = (u32::try_from(len), prefix_len) else {
            *self = Memo::default();
            return;
        };
        let mut word = [0u8; 4];
        word[..prefix_len].copy_from_slice(&bytes[..prefix_len]);
        let prefix_mask = if prefix_len == 4 { u32::MAX } else { 0xffff };
        *self = Memo {
            prefix: u32::from_le_bytes(word),
            prefix_mask,
            prefix_len: prefix_len as u8,
            text: kind == Kind::Text,
            len,
        };
    }
}

/// The state a frame or a message leaves when it is cut by the end of the input.
#[derive(Debug, Default)]
struct Partial {
    /// The start of a header cut by the end of the input.
    head: [u8; MAX_HEADER],
    /// Bytes of `head` in use.
    head_len: u8,
    /// The frame whose payload is arriving.
    frame: Option<Frame>,
    /// The data message being put together.
    message: Option<Assembly>,
    /// The payload of a control frame cut by the end of the input (at most 125 bytes).
    control: Vec<u8>,
}

impl Partial {
    fn is_empty(&self) -> bool {
        self.head_len == 0 && self.frame.is_none() && self.message.is_none()
    }
}

/// A frame header that passed the checks.
#[derive(Debug, Clone, Copy)]
struct Frame {
    op: Op,
    fin: bool,
    mask: [u8; 4],
    /// Payload bytes not yet received.
    left: u64,
    /// Payload bytes received (the mask phase of the next one).
    seen: u64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Op {
    /// The first frame of a data message.
    Start(Kind),
    Continue,
    Ping,
    Pong,
    Close,
}

/// A data message in several pieces.
#[derive(Debug)]
struct Assembly {
    kind: Kind,
    data: Vec<u8>,
    utf8: Utf8,
}

impl Assembly {
    /// Appends a received (unmasked) piece, checking UTF-8 as it goes.
    fn push(&mut self, piece: &[u8]) -> Result<(), Violation> {
        if self.kind == Kind::Text {
            self.utf8.push(piece).map_err(|_| INVALID_UTF8)?;
        }
        self.data.extend_from_slice(piece);
        Ok(())
    }
}

impl Reader {
    /// Whether a close frame or a violation has ended the input.
    pub fn is_finished(&self) -> bool {
        self.finished
    }

    /// Bytes of buffer the reader holds for a partial frame or message
    /// (0 between messages).
    pub fn buffered_capacity(&self) -> usize {
        self.partial.as_ref().map_or(0, |p| {
            std::mem::size_of::<Partial>() + p.control.capacity() + p.message.as_ref().map_or(0, |m| m.data.capacity())
        })
    }

    /// Reads the next event from `input`, unmasking payloads in place.
    ///
    /// Returns the bytes of `input` used and the event, if one is complete;
    /// `(input.len(), None)` when all of it went into partial state. The
    /// caller passes the rest of its input (`&mut input[used..]`) next time.
    pub fn next<'a>(
        &'a mut self,
        input: &'a mut [u8],
        limits: &Limits,
    ) -> Result<(usize, Option<Event<'a>>), Violation> {
        // (A finished reader has no memo: `next_slow` answers it.)
        if self.partial.is_none() && self.memo.prefix_len != 0 && input.len() >= 4 {
            // The fast path: the same header as the last message's.
            let word = u32::from_le_bytes([input[0], input[1], input[2], input[3]]);
            let memo = self.memo;
            let (prefix_len, len) = (usize::from(memo.prefix_len), memo.len as usize);
            let header_len = prefix_len + 4;
            if word & memo.prefix_mask == memo.prefix && input.len() >= header_len + len {
                let mask = [input[prefix_len], input[prefix_len + 1], input[prefix_len + 2], input[prefix_len + 3]];
                let payload = &mut input[header_len..header_len + len];
                unmask(payload, mask, 0);
                if memo.text && !utf8::is_valid(payload) {
                    self.finish();
                    return Err(INVALID_UTF8);
                }
                let kind = if memo.text { Kind::Text } else { Kind::Binary };
                return Ok((header_len + len, Some(Event::Message(kind, Payload::InPlace(payload)))));
            }
        }
        self.next_slow(input, limits)
    }

    /// [`Reader::next`] for everything but a repeated whole-message header.
    #[inline(never)]
    fn next_slow<'a>(
        &'a mut self,
        input: &'a mut [u8],
        limits: &Limits,
    ) -> Result<(usize, Option<Event<'a>>), Violation> {
        if self.finished {
            // Nothing is kept for input that will never be used.
            self.partial = None;
            return Ok((input.len(), None));
        }
        // A free function over `partial` alone, so that `finished` can be set
        // while the event borrows the partial state.
        let result = read(&mut self.partial, &mut self.memo, input, limits);
        if matches!(result, Err(_) | Ok((_, Some(Event::Close(_))))) {
            // `finish`, field by field: `result` borrows `partial`.
            self.finished = true;
            self.memo = Memo::default();
        }
        result
    }

    /// No more input will be used (a violation, or the peer's close): the
    /// memo goes too, so that [`Reader::next`]'s fast path cannot match.
    fn finish(&mut self) {
        self.finished = true;
        self.memo = Memo::default();
    }
}

/// What [`scan`] found; the event is made from it once the scan's
/// mutable borrows are over.
enum Found {
    /// The input went into partial state.
    Nothing,
    /// A whole frame at this range of the input, unmasked.
    InPlace(Op, std::ops::Range<usize>),
    /// A control frame collected in `Partial::control`.
    Control(Op),
    /// A message put together from pieces.
    Assembled(Kind, Vec<u8>),
}

/// [`Reader::next`] on the reader's partial state.
fn read<'a>(
    slot: &'a mut Option<Box<Partial>>,
    memo: &mut Memo,
    input: &'a mut [u8],
    limits: &Limits,
) -> Result<(usize, Option<Event<'a>>), Violation> {
    let (used, found) = scan(slot, memo, input, limits)?;
    let event = match found {
        Found::Nothing => None,
        Found::InPlace(op, range) => Some(in_place(op, &input[range])?),
        Found::Control(op) => Some(control_event(op, slot.as_deref().map_or(&[][..], |p| &p.control))?),
        Found::Assembled(kind, data) => Some(Event::Message(kind, Payload::Assembled(data))),
    };
    Ok((used, event))
}

/// Consumes `input` up to the end of the next complete frame that makes an
/// event, or all of it.
fn scan(
    slot: &mut Option<Box<Partial>>,
    memo: &mut Memo,
    input: &mut [u8],
    limits: &Limits,
) -> Result<(usize, Found), Violation> {
    if let Some(partial) = slot {
        if partial.frame.is_none() {
            // A control payload handed out from `control` last time is done with.
            partial.control.clear();
        }
        if partial.is_empty() {
            *slot = None;
        }
    }
    let mut pos = 0;
    loop {
        let frame = match slot.as_deref().and_then(|p| p.frame) {
            Some(frame) => frame,
            None => {
                if pos == input.len() {
                    return Ok((pos, Found::Nothing));
                }
                let header_start = pos;
                let carried = slot.as_ref().is_some_and(|p| p.head_len > 0);
                let Some((header_len, frame)) = start_frame(slot, &input[pos..], limits)? else {
                    return Ok((input.len(), Found::Nothing));
                };
                pos += header_len;
                let available = (input.len() - pos) as u64;
                let in_message = slot.as_ref().is_some_and(|p| p.message.is_some());
                if frame.left <= available && (!in_message || is_control(frame.op)) {
                    let end = pos + frame.left as usize;
                    unmask(&mut input[pos..end], frame.mask, 0);
                    if matches!(frame.op, Op::Start(_)) && !frame.fin {
                        // The first fragment of a message: start putting it together.
                        take_piece(slot, frame.op, &input[pos..end])?;
                        pos = end;
                        continue;
                    }
                    // A whole message, or a whole control frame: hand it out where it lies.
                    if slot.as_ref().is_some_and(|p| p.is_empty()) {
                        *slot = None;
                    }
                    if let (Op::Start(kind), false, None) = (frame.op, carried, &slot) {
                        memo.remember(&input[header_start..pos], kind, frame.left);
                    }
                    return Ok((end, Found::InPlace(frame.op, pos..end)));
                }
                partial_mut(slot).frame = Some(frame);
                frame
            }
        };
        // Take what is here of the current frame's payload.
        let n = frame.left.min((input.len() - pos) as u64) as usize;
        let piece = &mut input[pos..pos + n];
        unmask(piece, frame.mask, frame.seen as usize);
        take_piece(slot, frame.op, piece)?;
        pos += n;
        let frame = Frame { left: frame.left - n as u64, seen: frame.seen + n as u64, ..frame };
        let partial = partial_mut(slot);
        if frame.left > 0 {
            partial.frame = Some(frame);
            return Ok((input.len(), Found::Nothing));
        }
        // The frame is complete.
        partial.frame = None;
        if is_control(frame.op) {
            return Ok((pos, Found::Control(frame.op)));
        }
        if frame.fin {
            let Some(mut message) = partial.message.take() else {
                return Err(Violation::protocol("continuation frame with nothing to continue"));
            };
            if message.kind == Kind::Text {
                message.utf8.finish().map_err(|_| INVALID_UTF8)?;
            }
            if partial.is_empty() {
                *slot = None;
            }
            return Ok((pos, Found::Assembled(message.kind, message.data)));
        }
    }
}

/// The partial state, allocated if need be.
fn partial_mut(slot: &mut Option<Box<Partial>>) -> &mut Partial {
    slot.get_or_insert_with(Box::default)
}

/// Parses and checks the next header, completing a header carried over
/// from the last input. `None`: the header is incomplete (and kept).
fn start_frame(
    slot: &mut Option<Box<Partial>>,
    input: &[u8],
    limits: &Limits,
) -> Result<Option<(usize, Frame)>, Violation> {
    let carried = slot.as_ref().map_or(0, |p| usize::from(p.head_len));
    let (header, len, header_len) = if carried == 0 {
        match parse_header(input)? {
            Some(parsed) => parsed,
            None => {
                // Shorter than a header (at most 13 bytes): keep it.
                let partial = partial_mut(slot);
                partial.head[..input.len()].copy_from_slice(input);
                partial.head_len = input.len() as u8;
                return Ok(None);
            }
        }
    } else {
        let partial = partial_mut(slot);
        let take = (MAX_HEADER - carried).min(input.len());
        partial.head[carried..carried + take].copy_from_slice(&input[..take]);
        match parse_header(&partial.head[..carried + take])? {
            Some((header, len, header_len)) => {
                partial.head_len = 0;
                (header, len, header_len - carried)
            }
            None => {
                partial.head_len = (carried + take) as u8;
                return Ok(None);
            }
        }
    };
    let assembled = slot.as_ref().and_then(|p| p.message.as_ref()).map(|m| m.data.len() as u64);
    let frame = check_header(&header, len, assembled, limits)?;
    Ok(Some((header_len, frame)))
}

/// Takes a received, unmasked piece of a frame's payload.
fn take_piece(slot: &mut Option<Box<Partial>>, op: Op, piece: &[u8]) -> Result<(), Violation> {
    let partial = partial_mut(slot);
    match op {
        // Later pieces of the same first frame find the message started.
        Op::Start(kind) => partial
            .message
            .get_or_insert_with(|| Assembly { kind, data: Vec::new(), utf8: Utf8::default() })
            .push(piece),
        Op::Continue => match &mut partial.message {
            Some(message) => message.push(piece),
            None => Err(Violation::protocol("continuation frame with nothing to continue")),
        },
        Op::Ping | Op::Pong | Op::Close => {
            partial.control.extend_from_slice(piece);
            Ok(())
        }
    }
}

fn is_control(op: Op) -> bool {
    matches!(op, Op::Ping | Op::Pong | Op::Close)
}

/// `(header, payload length, header length)`, or `None` if incomplete.
fn parse_header(bytes: &[u8]) -> Result<Option<(FrameHeader, u64, usize)>, Violation> {
    let mut cursor = Cursor::new(bytes);
    match FrameHeader::parse(&mut cursor) {
        Ok(Some((header, len))) => Ok(Some((header, len, cursor.position() as usize))),
        Ok(None) => Ok(None),
        // The only error a header can raise: opcodes 3-7 and 0xB-0xF.
        Err(_) => Err(Violation::protocol("reserved opcode")),
    }
}

/// The rules a header must pass before any of its payload is kept.
/// `assembled`: bytes of the fragmented message in progress, if any.
fn check_header(header: &FrameHeader, len: u64, assembled: Option<u64>, limits: &Limits) -> Result<Frame, Violation> {
    if header.rsv1 || header.rsv2 || header.rsv3 {
        return Err(Violation::protocol("reserved bits set, and no extension was negotiated"));
    }
    let Some(mask) = header.mask else {
        return Err(Violation::protocol("unmasked client frame"));
    };
    let op = match header.opcode {
        OpCode::Control(control) => {
            if !header.is_final {
                return Err(Violation::protocol("fragmented control frame"));
            }
            if len > MAX_CONTROL_PAYLOAD {
                return Err(Violation::protocol("control frame payload over 125 bytes"));
            }
            match control {
                Control::Ping => Op::Ping,
                Control::Pong => Op::Pong,
                Control::Close => Op::Close,
                Control::Reserved(_) => return Err(Violation::protocol("reserved opcode")),
            }
        }
        OpCode::Data(data) => {
            let op = match (data, assembled) {
                (Data::Continue, Some(_)) => Op::Continue,
                (Data::Continue, None) => {
                    return Err(Violation::protocol("continuation frame with nothing to continue"))
                }
                (Data::Text | Data::Binary, Some(_)) => {
                    return Err(Violation::protocol("new data frame inside a fragmented message"))
                }
                (Data::Text, None) => Op::Start(Kind::Text),
                (Data::Binary, None) => Op::Start(Kind::Binary),
                (Data::Reserved(_), _) => return Err(Violation::protocol("reserved opcode")),
            };
            if len > limits.max_frame {
                return Err(Violation { code: CloseCode::Size, reason: "frame over the frame-size limit" });
            }
            if assembled.unwrap_or(0).saturating_add(len) > limits.max_message {
                return Err(Violation { code: CloseCode::Size, reason: "message over the message-size limit" });
            }
            op
        }
    };
    Ok(Frame { op, fin: header.is_final, mask, left: len, seen: 0 })
}

/// The event for a whole frame unmasked in place, with no message in
/// progress (a data frame is then a whole message).
fn in_place(op: Op, payload: &[u8]) -> Result<Event<'_>, Violation> {
    match op {
        Op::Start(Kind::Text) if !utf8::is_valid(payload) => Err(INVALID_UTF8),
        Op::Start(kind) => Ok(Event::Message(kind, Payload::InPlace(payload))),
        // Not reached: a continuation needs a message in progress.
        Op::Continue => Err(Violation::protocol("continuation frame with nothing to continue")),
        control => control_event(control, payload),
    }
}

fn control_event(op: Op, payload: &[u8]) -> Result<Event<'_>, Violation> {
    Ok(match op {
        Op::Ping => Event::Ping(payload),
        Op::Pong => Event::Pong(payload),
        _ => Event::Close(close_frame(payload)?),
    })
}

/// Checks a close frame's payload (RFC 6455 §5.5.1, §7.4).
fn close_frame(payload: &[u8]) -> Result<Option<CloseFrame<'_>>, Violation> {
    match payload {
        [] => Ok(None),
        [_] => Err(Violation::protocol("close frame with a 1-byte payload")),
        [high, low, reason @ ..] => {
            let code = u16::from_be_bytes([*high, *low]);
            if !CloseCode::from(code).is_allowed() {
                return Err(Violation::protocol("close frame with an invalid status code"));
            }
            let reason = std::str::from_utf8(reason)
                .map_err(|_| Violation { code: CloseCode::Invalid, reason: "close reason is not UTF-8" })?;
            Ok(Some(CloseFrame { code, reason }))
        }
    }
}
