//! Bad input after the handshake: each gets the RFC 6455 close code, and the
//! server stays healthy for everyone else.

mod support;

use support::*;
use tungstenite::Message;
use wsloop::Config;

fn small_limits() -> Config {
    Config { max_message_size: 1024, max_frame_size: 1024, ..Config::default() }
}

#[test]
fn oversized_messages_and_frames_get_1009() {
    let server = TestServer::start(small_limits());
    // One frame over the limit.
    assert_eq!(close_code_after(server.addr, &frame(BINARY, &[1; 1025])), 1009);
    // Small fragments summing past the limit.
    let mut fragments = frame(0x02, &[1; 600]);
    fragments.extend(frame(0x80, &[1; 600]));
    assert_eq!(close_code_after(server.addr, &fragments), 1009);
    // Exactly the limit is fine.
    let mut ws = connect(server.addr);
    ws.send(Message::binary(vec![3; 1024])).unwrap();
    assert_eq!(next_message(&mut ws), Message::binary(vec![3; 1024]));
}

#[test]
fn a_header_claiming_huge_lengths_is_just_a_header() {
    // Default limits (16 MiB): the claimed length is refused from the header
    // alone, before any payload arrives or is allocated.
    let server = TestServer::default();
    for claimed in [u64::MAX >> 1, 1 << 40, (16 << 20) + 1] {
        let mut header = vec![BINARY, 0x80 | 127];
        header.extend_from_slice(&claimed.to_be_bytes());
        header.extend_from_slice(&[1, 2, 3, 4]);
        assert_eq!(close_code_after(server.addr, &header), 1009, "claimed {claimed}");
    }
    // Still serving.
    let mut ws = connect(server.addr);
    ws.send(Message::text("alive")).unwrap();
    assert_eq!(next_message(&mut ws), Message::text("alive"));
}

#[test]
fn protocol_violations_get_1002() {
    let server = TestServer::default();
    let cases: Vec<(&str, Vec<u8>)> = vec![
        ("unmasked frame", vec![TEXT, 2, b'h', b'i']),
        ("RSV1 without an extension", frame(0xC1, b"hi")),
        ("RSV3 without an extension", frame(0x91, b"hi")),
        ("reserved data opcode 3", frame(0x83, b"")),
        ("reserved control opcode 0xB", frame(0x8B, b"")),
        ("control frame over 125 bytes", frame(PING, &[0; 126])),
        ("fragmented control frame", frame(0x09, b"x")),
        ("continuation with nothing to continue", frame(0x80, b"x")),
        ("new data frame inside a fragmented message", [frame(0x01, b"a"), frame(TEXT, b"b")].concat()),
        ("close with a 1-byte payload", frame(CLOSE, &[3])),
        ("close code 999", frame(CLOSE, &999u16.to_be_bytes())),
        ("close code 1005 on the wire", frame(CLOSE, &1005u16.to_be_bytes())),
        ("close code 1015 on the wire", frame(CLOSE, &1015u16.to_be_bytes())),
        ("unassigned close code 2999", frame(CLOSE, &2999u16.to_be_bytes())),
    ];
    for (what, bytes) in cases {
        assert_eq!(close_code_after(server.addr, &bytes), 1002, "{what}");
    }
    let summary = server.finish();
    assert!(summary.metrics.closes.get(&1002).copied().unwrap_or(0) >= 10, "{:?}", summary.metrics.closes);
}

#[test]
fn invalid_utf8_gets_1007_even_split_across_fragments() {
    let server = TestServer::default();
    assert_eq!(close_code_after(server.addr, &frame(TEXT, &[0xce, 0xba, 0xff])), 1007);
    // A valid first fragment, then one that makes the sequence invalid: the
    // server fails as soon as it sees it, without waiting for the final frame.
    let split = [frame(0x01, &[0xce, 0xba, 0xe1]), frame(0x00, &[0x28])].concat();
    assert_eq!(close_code_after(server.addr, &split), 1007);
    // A code point split across fragments is fine.
    let mut ws = connect(server.addr);
    let mut stream_bytes = frame(0x01, &[0xce]);
    stream_bytes.extend(frame(0x80, &[0xba]));
    std::io::Write::write_all(ws.get_mut(), &stream_bytes).unwrap();
    assert_eq!(next_message(&mut ws), Message::text("κ"));
    // A close reason that is not UTF-8.
    let close = [&1000u16.to_be_bytes()[..], &[0xff, 0xfe]].concat();
    assert_eq!(close_code_after(server.addr, &frame(CLOSE, &close)), 1007);
}

#[test]
fn a_misbehaving_client_does_not_disturb_the_others() {
    let server = TestServer::default();
    let mut good = connect(server.addr);
    for round in 0..20 {
        assert_eq!(close_code_after(server.addr, &frame(0x83, b"")), 1002);
        good.send(Message::text(format!("still here {round}"))).unwrap();
        assert_eq!(next_message(&mut good), Message::text(format!("still here {round}")));
    }
}
