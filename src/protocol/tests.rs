//! The reader's rules, one test each, fed through every way the input can
//! be cut: whole, byte by byte, and at every single split point.

use tungstenite::protocol::frame::coding::CloseCode;

use super::{writer::client_frame, Event, Kind, Limits, Reader, Violation};

const MASK: [u8; 4] = [0x37, 0xfa, 0x21, 0x3d];
const TEXT: u8 = 0x81;
const BINARY: u8 = 0x82;
const CLOSE: u8 = 0x88;
const PING: u8 = 0x89;
const PONG: u8 = 0x8A;
const LIMITS: Limits = Limits { max_frame: 1000, max_message: 2000 };

/// An event, owned, for comparisons.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Seen {
    Text(String),
    Binary(Vec<u8>),
    Ping(Vec<u8>),
    Pong(Vec<u8>),
    Close(Option<(u16, String)>),
    Failed(u16),
}

fn frame(first: u8, payload: &[u8]) -> Vec<u8> {
    client_frame(first, payload, MASK)
}

/// Feeds `input` in the given pieces and records every event.
fn feed(pieces: &[&[u8]], limits: &Limits) -> Vec<Seen> {
    let mut reader = Reader::default();
    let mut seen = Vec::new();
    for piece in pieces {
        let mut buf = piece.to_vec();
        let mut pos = 0;
        loop {
            match reader.next(&mut buf[pos..], limits) {
                Ok((used, event)) => {
                    if let Some(event) = event {
                        seen.push(match event {
                            Event::Message(Kind::Text, p) => {
                                Seen::Text(String::from_utf8(p.as_slice().to_vec()).unwrap())
                            }
                            Event::Message(Kind::Binary, p) => Seen::Binary(p.as_slice().to_vec()),
                            Event::Ping(p) => Seen::Ping(p.to_vec()),
                            Event::Pong(p) => Seen::Pong(p.to_vec()),
                            Event::Close(c) => Seen::Close(c.map(|c| (c.code, c.reason.to_string()))),
                        });
                    } else {
                        assert_eq!(used, buf.len() - pos, "no event, so all input must be used");
                    }
                    pos += used;
                    if pos == buf.len() {
                        break;
                    }
                }
                Err(Violation { code, .. }) => {
                    seen.push(Seen::Failed(code.into()));
                    return seen;
                }
            }
        }
    }
    seen
}

/// The events for `input` must be `expected` however the input is cut.
fn check(input: &[u8], expected: &[Seen]) {
    check_with(input, expected, &LIMITS);
}

fn check_with(input: &[u8], expected: &[Seen], limits: &Limits) {
    assert_eq!(feed(&[input], limits), expected, "whole");
    let bytes: Vec<&[u8]> = input.chunks(1).collect();
    assert_eq!(feed(&bytes, limits), expected, "byte by byte");
    for at in 0..input.len() {
        let (a, b) = input.split_at(at);
        assert_eq!(feed(&[a, b], limits), expected, "split at {at}");
    }
}

fn text(s: &str) -> Seen {
    Seen::Text(s.to_string())
}

#[test]
fn whole_messages_of_each_kind() {
    check(&frame(TEXT, b"hello"), &[text("hello")]);
    check(&frame(BINARY, &[0, 1, 255]), &[Seen::Binary(vec![0, 1, 255])]);
    check(&frame(TEXT, b""), &[text("")]);
    check(&frame(BINARY, &[7; 300]), &[Seen::Binary(vec![7; 300])]);
    let two = [frame(TEXT, b"a"), frame(BINARY, b"b")].concat();
    check(&two, &[text("a"), Seen::Binary(b"b".to_vec())]);
}

#[test]
fn repeated_headers_are_known_at_once_with_the_same_verdict() {
    // Same kind and length, different masks: after the first, each header
    // is recognised from its bytes before the mask.
    let same: Vec<u8> = (0..5u8).flat_map(|i| client_frame(BINARY, &[i; 10], [i, 1, 2, 3])).collect();
    let expected: Vec<Seen> = (0..5u8).map(|i| Seen::Binary(vec![i; 10])).collect();
    check(&same, &expected);
    // A 16-bit length, then a different length, then the first again.
    let mixed =
        [frame(TEXT, &[b'a'; 300]), frame(TEXT, &[b'b'; 300]), frame(TEXT, b"c"), frame(TEXT, &[b'd'; 300])].concat();
    check(&mixed, &[text(&"a".repeat(300)), text(&"b".repeat(300)), text("c"), text(&"d".repeat(300))]);
    // The fast path checks UTF-8 too.
    let bad = [frame(TEXT, b"ab"), frame(TEXT, &[0xff, b'a'])].concat();
    check(&bad, &[text("ab"), Seen::Failed(1007)]);
    // And it does not apply inside a fragmented message.
    let inside = [frame(TEXT, b"ab"), frame(0x01, b"cd"), frame(TEXT, b"ef")].concat();
    check(&inside, &[text("ab"), Seen::Failed(1002)]);
}

#[test]
fn a_whole_frame_is_handed_out_in_place_and_costs_no_buffer() {
    let mut reader = Reader::default();
    let mut input = frame(BINARY, &[9; 600]);
    let len = input.len();
    let start = input.as_ptr() as usize;
    let (used, event) = reader.next(&mut input, &LIMITS).unwrap();
    assert_eq!(used, len);
    match event {
        Some(Event::Message(Kind::Binary, super::Payload::InPlace(p))) => {
            assert_eq!(p, &[9; 600][..]);
            assert!(p.as_ptr() as usize >= start && (p.as_ptr() as usize) < start + len);
        }
        other => panic!("{other:?}"),
    }
    assert_eq!(reader.buffered_capacity(), 0);
}

#[test]
fn fragmented_messages_are_put_together() {
    let input = [frame(0x01, b"hel"), frame(0x00, b"l"), frame(0x80, b"o")].concat();
    check(&input, &[text("hello")]);
    let input = [frame(0x02, &[1]), frame(0x80, &[2, 3])].concat();
    check(&input, &[Seen::Binary(vec![1, 2, 3])]);
    // Empty fragments are fine.
    let input = [frame(0x01, b""), frame(0x00, b""), frame(0x80, b"x")].concat();
    check(&input, &[text("x")]);
}

#[test]
fn pings_inside_a_fragmented_message_are_answered_and_the_message_survives() {
    let input =
        [frame(0x01, b"fra"), frame(PING, b"p1"), frame(0x00, b"gm"), frame(PONG, b""), frame(0x80, b"ent")].concat();
    check(&input, &[Seen::Ping(b"p1".to_vec()), Seen::Pong(vec![]), text("fragment")]);
}

#[test]
fn the_buffer_is_released_after_a_message() {
    let mut reader = Reader::default();
    let input = frame(BINARY, &[5; 900]);
    // In two pieces: the first goes into a buffer sized to what arrived.
    let (mut a, mut b) = (input[..500].to_vec(), input[500..].to_vec());
    assert_eq!(reader.next(&mut a, &LIMITS).unwrap(), (500, None));
    let held = reader.buffered_capacity();
    assert!(held > 0 && held < 900 + 200, "holds {held} for ~490 bytes arrived");
    let b_len = b.len();
    let (used, event) = reader.next(&mut b, &LIMITS).unwrap();
    assert_eq!(used, b_len);
    assert!(matches!(event, Some(Event::Message(Kind::Binary, super::Payload::Assembled(ref d))) if d.len() == 900));
    drop(event);
    assert_eq!(reader.buffered_capacity(), 0);
}

#[test]
fn a_header_announcing_a_huge_frame_reserves_nothing() {
    let limits = Limits { max_frame: 16 << 20, max_message: 16 << 20 };
    let mut reader = Reader::default();
    let mut header = vec![BINARY, 0x80 | 127];
    header.extend_from_slice(&(16u64 << 20).to_be_bytes());
    header.extend_from_slice(&MASK);
    assert_eq!(reader.next(&mut header, &limits).unwrap(), (14, None));
    assert!(reader.buffered_capacity() < 256, "reserved {}", reader.buffered_capacity());
}

#[test]
fn size_limits_close_with_1009() {
    check(&frame(BINARY, &[0; 1001]), &[Seen::Failed(1009)]);
    check(&frame(BINARY, &[0; 1000]), &[Seen::Binary(vec![0; 1000])]);
    let fragments = [frame(0x02, &[0; 1000]), frame(0x00, &[0; 1000]), frame(0x80, &[0; 1])].concat();
    check(&fragments, &[Seen::Failed(1009)]);
    for claimed in [u64::MAX, 1 << 63, 1 << 40] {
        let mut header = vec![BINARY, 0x80 | 127];
        header.extend_from_slice(&claimed.to_be_bytes());
        header.extend_from_slice(&MASK);
        check(&header, &[Seen::Failed(1009)]);
    }
}

#[test]
fn protocol_violations_close_with_1002() {
    let unmasked = {
        let mut f = frame(TEXT, b"hi");
        f[1] &= 0x7f;
        f.drain(2..6);
        f
    };
    let cases: Vec<(&str, Vec<u8>)> = vec![
        ("unmasked frame", unmasked),
        ("RSV1", frame(0xC1, b"hi")),
        ("RSV2", frame(0xA1, b"hi")),
        ("RSV3", frame(0x91, b"hi")),
        ("reserved data opcode 3", frame(0x83, b"")),
        ("reserved data opcode 7", frame(0x87, b"")),
        ("reserved control opcode 0xB", frame(0x8B, b"")),
        ("reserved control opcode 0xF", frame(0x8F, b"")),
        ("ping over 125 bytes", frame(PING, &[0; 126])),
        ("close over 125 bytes", frame(CLOSE, &[0x03, 0xe8].repeat(63))),
        ("fragmented ping", frame(0x09, b"x")),
        ("fragmented close", frame(0x08, b"")),
        ("continuation with nothing to continue", frame(0x80, b"x")),
        ("non-final continuation with nothing to continue", frame(0x00, b"x")),
        ("new text frame inside a fragmented message", [frame(0x01, b"a"), frame(TEXT, b"b")].concat()),
        ("new binary frame inside a fragmented message", [frame(0x02, b"a"), frame(0x02, b"b")].concat()),
        ("close with a 1-byte payload", frame(CLOSE, &[3])),
    ];
    for (what, input) in cases {
        let seen = feed(&[&input], &LIMITS);
        assert_eq!(seen, [Seen::Failed(1002)], "{what}");
        check(&input, &[Seen::Failed(1002)]);
    }
    // A ping of exactly 125 bytes is fine.
    check(&frame(PING, &[1; 125]), &[Seen::Ping(vec![1; 125])]);
}

#[test]
fn close_codes_the_rfc_allows_and_refuses() {
    for code in [1000u16, 1001, 1002, 1003, 1007, 1008, 1009, 1010, 1011, 3000, 3999, 4000, 4999] {
        let input = frame(CLOSE, &[&code.to_be_bytes()[..], b"bye"].concat());
        check(&input, &[Seen::Close(Some((code, "bye".into())))]);
    }
    for code in [0u16, 999, 1004, 1005, 1006, 1015, 1016, 1100, 2000, 2999, 5000, 65535] {
        check(&frame(CLOSE, &code.to_be_bytes()), &[Seen::Failed(1002)]);
    }
    check(&frame(CLOSE, b""), &[Seen::Close(None)]);
    check(&frame(CLOSE, &[0x03, 0xe8, 0xff]), &[Seen::Failed(1007)]);
}

#[test]
fn nothing_after_a_close_is_read() {
    let input = [frame(CLOSE, &1000u16.to_be_bytes()), frame(TEXT, b"late"), vec![0xff; 20]].concat();
    check(&input, &[Seen::Close(Some((1000, String::new())))]);
    let input = [frame(0x83, b""), frame(TEXT, b"late")].concat();
    check(&input, &[Seen::Failed(1002)]);
}

#[test]
fn invalid_utf8_closes_with_1007_at_the_first_bad_byte() {
    check(&frame(TEXT, &[0xce, 0xba, 0xff]), &[Seen::Failed(1007)]);
    // Valid so far, then a fragment that makes it invalid: refused with
    // that fragment, though the message has not ended.
    let input = [frame(0x01, &[0xce, 0xba, 0xe1]), frame(0x00, &[0x28])].concat();
    check(&input, &[Seen::Failed(1007)]);
    // A message that ends inside a code point.
    let input = [frame(0x01, b"ok"), frame(0x80, &[0xe1, 0x80])].concat();
    check(&input, &[Seen::Failed(1007)]);
    // A code point split across fragments is fine.
    let input = [frame(0x01, &[0xce]), frame(0x80, &[0xba])].concat();
    check(&input, &[text("κ")]);
    // Binary messages are not checked.
    check(&frame(BINARY, &[0xff]), &[Seen::Binary(vec![0xff])]);
}

#[test]
fn fail_fast_inside_a_single_frame_that_is_still_arriving() {
    let mut reader = Reader::default();
    let input = frame(TEXT, &[b'a', b'b', 0xff, b'c', b'd', b'e']);
    // Header and the first three payload bytes: the 0xff is already there.
    let mut first = input[..9].to_vec();
    let result = reader.next(&mut first, &LIMITS);
    assert_eq!(result.map(|(u, e)| (u, e.is_some())).unwrap_err().code, CloseCode::Invalid);
    assert!(reader.is_finished());
}
