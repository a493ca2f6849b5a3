//! Writes the seed corpora, `fuzz/corpus/<target>/`, from scratch:
//!
//! ```sh
//! cargo run --manifest-path fuzz/Cargo.toml --example seeds
//! ```
//!
//! frames: masked client frames of each kind and length form, fragmented
//! messages with interleaved control frames, close frames with valid and
//! invalid codes and reasons, UTF-8 (valid and not) split across fragments,
//! reserved opcodes, RSV bits, unmasked frames, headers announcing up to
//! 2^64-1 bytes, input after a close (the Autobahn TestSuite's cases 1-7
//! and 9 in spirit), under each limits preset, cut into wakeups, with a peer
//! that reads slowly or half-closes. Each starts with the two-byte plan
//! header of `wsloop_fuzz::frames` (see its doc).
//!
//! handshake_head: upgrade requests valid and not, plain requests for each
//! route, oversized and malformed heads.
//!
//! tls_records: a real ClientHello (rustls', as loadgen sends it), whole and
//! cut into reads of several sizes, re-framed into many small records (a
//! handshake message across records, read whole or a few records at a time,
//! or interrupted by a record of another kind), followed by garbage, an
//! alert, an oversized record, plain HTTP; for the client side, a server's first
//! flight (to another ClientHello, so it fails once encrypted, as fuzzed
//! input does). Each starts with the one-byte plan of `wsloop_fuzz::tls`.

use std::{fs, path::Path};

use wsloop::tls::records::Records;
use wsloop_fuzz::{
    frames::{budget, encode_plan, BIG, DEFAULTS, EOF, SMALL, TINY},
    tls,
    wire::{self, Frame, BINARY, CLOSE, MASK},
};

fn main() {
    let corpus = Path::new(env!("CARGO_MANIFEST_DIR")).join("corpus");
    let frames = frame_seeds();
    let heads = handshake_seeds();
    let records = tls_seeds();
    write(&corpus.join("frames"), &frames);
    write(&corpus.join("handshake_head"), &heads);
    write(&corpus.join("tls_records"), &records);
}

fn write(dir: &Path, seeds: &[(String, Vec<u8>)]) {
    if dir.exists() {
        fs::remove_dir_all(dir).unwrap();
    }
    fs::create_dir_all(dir).unwrap();
    let mut bytes = 0;
    for (name, data) in seeds {
        let path = dir.join(name);
        assert!(!path.exists(), "two seeds named {name}");
        fs::write(&path, data).unwrap();
        bytes += data.len();
    }
    println!("{}: {} seeds, {bytes} bytes", dir.display(), seeds.len());
}

fn stream(frames: &[Frame]) -> Vec<u8> {
    frames.iter().flat_map(Frame::to_bytes).collect()
}

/// A header announcing `len` bytes, and no payload.
fn header_only(opcode: u8, len: u64) -> Vec<u8> {
    let mut out = Vec::new();
    wire::header(true, 0, opcode, Some(MASK), len, &mut out);
    out
}

fn frame_seeds() -> Vec<(String, Vec<u8>)> {
    let mut seeds = Vec::new();
    let mut add = |name: &str, config: u8, lengths: &[u16], bytes: Vec<u8>| {
        seeds.push((name.to_string(), encode_plan(config, lengths, &bytes)));
    };
    let one = |frame: Frame| stream(&[frame]);

    // Each kind of frame, whole, in one wakeup.
    add("text_hello", BIG, &[], one(Frame::text("Hello")));
    add("text_empty", BIG, &[], one(Frame::text("")));
    add("text_utf8", BIG, &[], one(Frame::text("κόσμε ✓ 𝄞")));
    add("binary", BIG, &[], one(Frame::binary([0u8, 1, 2, 0x7f, 0x80, 0xff])));
    add("binary_empty", BIG, &[], one(Frame::binary([])));
    add("ping", BIG, &[], one(Frame::ping("ping payload")));
    add("ping_empty", BIG, &[], one(Frame::ping("")));
    add("pong_unsolicited", BIG, &[], one(Frame::pong("unsolicited")));
    add("close_empty", BIG, &[], one(Frame::new(CLOSE, [])));
    add("close_1000", BIG, &[], one(Frame::close(1000, b"")));
    add("close_1000_reason", BIG, &[], one(Frame::close(1000, b"bye")));
    add("close_one_byte_payload", BIG, &[], one(Frame::new(CLOSE, [3])));

    // Every length form at its edges.
    for len in [125usize, 126, 127, 65535, 65536] {
        add(&format!("binary_{len}"), BIG, &[], one(Frame::binary(vec![b'x'; len])));
    }
    add("text_126", BIG, &[], one(Frame::text(vec![b'y'; 126])));
    add("ping_125", BIG, &[], one(Frame::ping(vec![b'p'; 125])));
    add("ping_126_too_long", BIG, &[], one(Frame::ping(vec![b'p'; 126])));
    add("close_reason_123", BIG, &[], one(Frame::close(1000, &[b'r'; 123])));
    add("close_reason_124_too_long", BIG, &[], one(Frame::close(1000, &[b'r'; 124])));

    // Fragmentation, with control frames in between.
    let fragmented = stream(&[
        Frame::text("Hel").fin(false),
        Frame::ping("1"),
        Frame::continuation("lo, ").fin(false),
        Frame::ping("2"),
        Frame::pong("x"),
        Frame::continuation("world"),
    ]);
    add("fragmented_text_with_pings", BIG, &[], fragmented.clone());
    add("fragmented_text_with_pings_bytewise", BIG, &[1; 31], fragmented.clone());
    add(
        "fragmented_binary_3",
        BIG,
        &[],
        stream(&[
            Frame::binary(vec![1u8; 300]).fin(false),
            Frame::continuation(vec![2u8; 126]).fin(false),
            Frame::continuation(vec![3u8; 10]),
        ]),
    );
    add("fragmented_empty", BIG, &[], stream(&[Frame::text("").fin(false), Frame::continuation("")]));
    add("stray_continuation", BIG, &[], one(Frame::continuation("stray")));
    add("stray_continuation_unfinished", BIG, &[], one(Frame::continuation("stray").fin(false)));
    add("text_inside_fragmented_message", BIG, &[], stream(&[Frame::text("a").fin(false), Frame::text("b")]));
    add("ping_fragmented", BIG, &[], stream(&[Frame::ping("a").fin(false), Frame::continuation("b")]));
    add("close_fragmented", BIG, &[], stream(&[Frame::close(1000, b"").fin(false)]));

    // Close codes: the sendable ones, and those a peer must not send.
    for code in [1000u16, 1001, 1002, 1003, 1007, 1008, 1009, 1010, 1011, 1012, 3000, 3999, 4000, 4999] {
        add(&format!("close_code_{code}"), BIG, &[], one(Frame::close(code, b"reason")));
    }
    for code in [0u16, 999, 1004, 1005, 1006, 1015, 1016, 1100, 2000, 2999, 5000, 65535] {
        add(&format!("close_code_{code}_invalid"), BIG, &[], one(Frame::close(code, b"")));
    }
    add("close_reason_invalid_utf8", BIG, &[], one(Frame::close(1000, &[0xce, 0xba, 0xff, 0xfe])));

    // UTF-8: Autobahn 6.x in spirit.
    let kosme = "κόσμε".as_bytes();
    add(
        "text_invalid_utf8",
        BIG,
        &[],
        one(Frame::text(&b"\xce\xba\xe1\xbd\xb9\xcf\x83\xce\xbc\xce\xb5\xed\xa0\x80edited"[..])),
    );
    add("text_overlong_nul", BIG, &[], one(Frame::text(&b"\xc0\x80"[..])));
    add("text_codepoint_over_max", BIG, &[], one(Frame::text(&b"\xf4\x90\x80\x80"[..])));
    add(
        "text_valid_utf8_split_mid_codepoint",
        BIG,
        &[],
        stream(&[
            Frame::text(&kosme[..1]).fin(false),
            Frame::continuation(&kosme[1..4]).fin(false),
            Frame::continuation(&kosme[4..]),
        ]),
    );
    add(
        "text_invalid_utf8_split_across_fragments",
        BIG,
        &[],
        stream(&[
            Frame::text(&b"\xce\xba\xe1\xbd"[..]).fin(false),
            Frame::continuation(&b"\xb9\xcf\x83\xce\xbc\xce\xb5\xf4\x90"[..]).fin(false),
            Frame::continuation(&b"\x80\x80edited"[..]),
        ]),
    );
    // Invalid in the first fragment, more to come: a server may fail fast.
    add(
        "text_invalid_utf8_first_fragment",
        BIG,
        &[],
        stream(&[Frame::text(&b"\xce\xba\xff"[..]).fin(false), Frame::continuation("more")]),
    );
    let mut valid_then_invalid = stream(&[Frame::text(kosme).fin(false)]);
    valid_then_invalid.extend(one(Frame::continuation(&b"\xed\xa0\x80"[..]).fin(false)));
    add("text_invalid_utf8_second_fragment_unfinished", BIG, &[], valid_then_invalid);

    // Reserved opcodes and bits; unmasked frames.
    for opcode in [3u8, 4, 5, 6, 7, 0xb, 0xc, 0xd, 0xe, 0xf] {
        add(&format!("reserved_opcode_{opcode:x}"), BIG, &[], one(Frame::new(opcode, "x")));
    }
    for rsv in 1..=7u8 {
        add(&format!("text_rsv_{rsv}"), BIG, &[], one(Frame::text("rsv").rsv(rsv)));
    }
    add("ping_rsv_1", BIG, &[], one(Frame::ping("p").rsv(4)));
    add("text_unmasked", BIG, &[], one(Frame::text("unmasked").unmasked()));
    add("close_unmasked", BIG, &[], one(Frame::close(1000, b"").unmasked()));
    add("ping_unmasked_after_text", BIG, &[], stream(&[Frame::text("ok"), Frame::ping("u").unmasked()]));

    // Headers announcing more than any limit, with nothing or little after.
    for (name, len) in [
        ("2_pow_63", 1u64 << 63),
        ("2_pow_63_minus_1", (1u64 << 63) - 1),
        ("2_pow_64_minus_1", u64::MAX),
        ("2_pow_32", 1u64 << 32),
        ("16_mib", 16 << 20),
        ("16_mib_plus_1", (16 << 20) + 1),
    ] {
        add(&format!("header_{name}"), DEFAULTS, &[], header_only(BINARY, len));
    }
    let mut big_then_bytes = header_only(wire::TEXT, 1 << 63);
    big_then_bytes.extend_from_slice(b"some payload");
    add("header_2_pow_63_then_bytes", BIG, &[], big_then_bytes);
    add("header_16_mib_ping", DEFAULTS, &[], header_only(wire::PING, 16 << 20));
    add("frame_over_small_limit", SMALL, &[], one(Frame::binary(vec![0u8; 1025])));
    add("frame_at_small_limit", SMALL, &[], one(Frame::binary(vec![0u8; 1024])));
    add("frame_over_tiny_limit", TINY, &[], one(Frame::binary(vec![0u8; 127])));
    add(
        "message_over_small_limit_in_fragments",
        SMALL,
        &[],
        stream(&[
            Frame::binary(vec![1u8; 1000]).fin(false),
            Frame::continuation(vec![2u8; 1000]).fin(false),
            Frame::continuation(vec![3u8; 1000]).fin(false),
            Frame::continuation(vec![4u8; 1000]).fin(false),
            Frame::continuation(vec![5u8; 1000]),
        ]),
    );
    add(
        "message_over_tiny_limit_in_fragments",
        TINY,
        &[],
        stream(&[
            Frame::text(vec![b'a'; 120]).fin(false),
            Frame::ping("p"),
            Frame::continuation(vec![b'b'; 120]).fin(false),
            Frame::continuation(vec![b'c'; 120]),
        ]),
    );

    // Input after a close: nothing may answer it.
    add(
        "data_after_close",
        BIG,
        &[],
        stream(&[
            Frame::text("before"),
            Frame::close(1000, b"done"),
            Frame::text("after"),
            Frame::ping("after"),
            Frame::close(1000, b"again"),
        ]),
    );
    add(
        "data_after_close_separate_wakeups",
        BIG,
        &[12, 14, 11],
        stream(&[Frame::text("before"), Frame::close(1000, b"done"), Frame::text("after"), Frame::ping("after")]),
    );
    add(
        "data_after_protocol_error",
        BIG,
        &[],
        stream(&[Frame::text("ok"), Frame::new(5, "bad"), Frame::text("after"), Frame::ping("after")]),
    );

    // Many messages per wakeup, cut at awkward points, slow readers, half-closes.
    let mut many: Vec<Frame> = (0..40).map(|i| Frame::text(format!("message {i}"))).collect();
    many.insert(20, Frame::ping("in the middle"));
    many.push(Frame::close(1000, b""));
    let many = stream(&many);
    add("many_messages", BIG, &[], many.clone());
    add("many_messages_odd_cuts", BIG, &[1, 2, 3, 5, 8, 13, 21, 34, 55, 89, 144], many.clone());
    add("many_messages_slow_reader_7", BIG | budget(1), &[], many.clone());
    add("many_messages_slow_reader_64", SMALL | budget(2), &[100, 100, 100], many.clone());
    let backlog = stream(&(0..12).map(|i| Frame::binary(vec![i as u8; 1000])).collect::<Vec<_>>());
    add("backpressure_small_limits", SMALL | budget(4), &[3000, 3000], backlog.clone());
    add("backpressure_tiny_limits", TINY | budget(3), &[], stream(&vec![Frame::binary(vec![7u8; 100]); 8]));
    add("binary_65536_cut_in_header_and_payload", BIG, &[3, 5, 30_000], one(Frame::binary(vec![b'z'; 65536])));
    add("text_hello_bytewise", BIG, &[1; 10], one(Frame::text("Hello")));
    add("text_hello_then_eof", BIG | EOF, &[], one(Frame::text("Hello")));
    add("close_then_eof", BIG | EOF, &[], stream(&[Frame::text("x"), Frame::close(1000, b"")]));
    // The close reply does not fit one write, and the peer half-closes: the
    // rest of the reply must still go out (the gap the frames target found).
    add("close_then_eof_slow_reader", BIG | EOF | budget(1), &[], one(Frame::close(1000, b"bye bye")));
    let whole = one(Frame::binary(vec![9u8; 300]));
    add("partial_frame_then_eof", BIG | EOF, &[], whole[..100].to_vec());
    add("eof_only", BIG | EOF, &[], Vec::new());
    add("empty_wakeups", BIG, &[0, 0, 0, 0, 2, 0, 0], one(Frame::text("Hello")));
    add("defaults_text_hello", DEFAULTS, &[], one(Frame::text("Hello")));
    add("tiny_text_hello", TINY, &[], one(Frame::text("Hello")));
    add("small_text_hello", SMALL, &[], one(Frame::text("Hello")));

    // Not WebSocket at all.
    add("http_request_on_open_connection", BIG, &[], b"GET / HTTP/1.1\r\nHost: x\r\n\r\n".to_vec());
    add("zeros", BIG, &[], vec![0u8; 64]);
    add("ones", BIG, &[], vec![0xffu8; 64]);
    seeds
}

const UPGRADE: &str = "GET /chat HTTP/1.1\r\nHost: server.example.com\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
                       Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n";

/// The valid upgrade request with `extra` header lines, and the blank line.
fn upgrade_with(extra: &str) -> String {
    format!("{UPGRADE}{extra}\r\n")
}

fn handshake_seeds() -> Vec<(String, Vec<u8>)> {
    let mut seeds = Vec::new();
    let mut add = |name: &str, head: &[u8]| seeds.push((name.to_string(), head.to_vec()));

    add("upgrade", upgrade_with("").as_bytes());
    // POST /publish, with the token of the fuzz target's publishing policy.
    let publish = |headers: &str| format!("POST /publish/alerts HTTP/1.1\r\nHost: x\r\n{headers}\r\n");
    add("publish", publish("Authorization: Bearer fuzz-token\r\nContent-Length: 5\r\n").as_bytes());
    add(
        "publish_text",
        publish("Authorization: bearer  fuzz-token \r\nContent-Type: text/plain\r\nContent-Length: 2\r\n").as_bytes(),
    );
    add("publish_wrong_token", publish("Authorization: Bearer fuzz-tokem\r\nContent-Length: 5\r\n").as_bytes());
    add("publish_no_length", publish("Authorization: Bearer fuzz-token\r\n").as_bytes());
    add("publish_chunked", publish("Authorization: Bearer fuzz-token\r\nTransfer-Encoding: chunked\r\n").as_bytes());
    add("publish_too_large", publish("Authorization: Bearer fuzz-token\r\nContent-Length: 1001\r\n").as_bytes());
    add("publish_get", b"GET /publish/alerts HTTP/1.1\r\nHost: x\r\n\r\n");
    add("upgrade_origin_allowed", upgrade_with("Origin: https://a.example\r\n").as_bytes());
    add("upgrade_origin_denied", upgrade_with("Origin: https://evil.example\r\n").as_bytes());
    add("upgrade_origin_obs_text", b"GET / HTTP/1.1\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\nOrigin: https://\xff\xfe.example\r\n\r\n");
    add("upgrade_subprotocols", upgrade_with("Sec-WebSocket-Protocol: superchat, chat\r\n").as_bytes());
    add("upgrade_subprotocol_unknown", upgrade_with("Sec-WebSocket-Protocol: mqtt\r\n").as_bytes());
    add(
        "upgrade_extensions",
        upgrade_with("Sec-WebSocket-Extensions: permessage-deflate; client_max_window_bits\r\n").as_bytes(),
    );
    add(
        "upgrade_lowercase_and_lists",
        b"GET / HTTP/1.1\r\nhost: x\r\nupgrade: WebSocket\r\nconnection: keep-alive, Upgrade\r\n\
          sec-websocket-key: x3JJHMbDL1EzLkh9GBhXDw==\r\nsec-websocket-version:  13 \r\n\r\n",
    );
    add("upgrade_first_frame_after_head", &[upgrade_with("").as_bytes(), &Frame::text("early").to_bytes()].concat());
    add("upgrade_lf_only", upgrade_with("").replace("\r\n", "\n").as_bytes());
    add("upgrade_leading_crlf", format!("\r\n\r\n{}", upgrade_with("")).as_bytes());
    add("upgrade_http_1_0", upgrade_with("").replacen("HTTP/1.1", "HTTP/1.0", 1).as_bytes());
    add("upgrade_post", upgrade_with("").replacen("GET", "POST", 1).as_bytes());
    add("upgrade_version_8", upgrade_with("").replace("Version: 13", "Version: 8").as_bytes());
    add("upgrade_version_garbage", upgrade_with("").replace("Version: 13", "Version: 13, 8\x7f").as_bytes());
    add("upgrade_version_missing", upgrade_with("").replace("Sec-WebSocket-Version: 13\r\n", "").as_bytes());
    add(
        "upgrade_key_missing",
        upgrade_with("").replace("Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n", "").as_bytes(),
    );
    add("upgrade_key_invalid", upgrade_with("").replace("dGhlIHNhbXBsZSBub25jZQ==", "not base64!").as_bytes());
    add("upgrade_key_duplicate", upgrade_with("Sec-WebSocket-Key: AQIDBAUGBwgJCgsMDQ4PEA==\r\n").as_bytes());
    add("upgrade_connection_missing", upgrade_with("").replace("Connection: Upgrade\r\n", "").as_bytes());
    add("upgrade_connection_close", upgrade_with("").replace("Connection: Upgrade", "Connection: close").as_bytes());
    add("upgrade_h2c", upgrade_with("").replace("Upgrade: websocket", "Upgrade: h2c").as_bytes());
    add(
        "upgrade_absolute_target",
        upgrade_with("").replacen("/chat", "http://server.example.com/chat?x=1", 1).as_bytes(),
    );

    for target in ["/", "/stats", "/metrics", "/nope", "/stats?pretty=1", "*"] {
        let name = target.trim_start_matches('/').replace(['?', '=', '*'], "_");
        add(&format!("plain_get_{name}"), format!("GET {target} HTTP/1.1\r\nHost: x\r\n\r\n").as_bytes());
    }
    add("plain_head", b"HEAD /stats HTTP/1.1\r\nHost: x\r\n\r\n");
    add("plain_post", b"POST /stats HTTP/1.1\r\nHost: x\r\nContent-Length: 2\r\n\r\nhi");
    add("plain_options", b"OPTIONS * HTTP/1.1\r\n\r\n");

    let fields = |n: usize| (0..n).map(|i| format!("X-Field-{i}: {i}\r\n")).collect::<String>();
    add("headers_64", format!("GET / HTTP/1.1\r\n{}\r\n", fields(64)).as_bytes());
    add("headers_65_too_many", format!("GET / HTTP/1.1\r\n{}\r\n", fields(65)).as_bytes());
    add("upgrade_too_many_headers", upgrade_with(&fields(60)).as_bytes());
    add("head_over_16_kib", upgrade_with(&format!("X-Big: {}\r\n", "b".repeat(17 << 10))).as_bytes());

    add("partial_request_line", b"GET / HTT");
    add("partial_headers", UPGRADE.as_bytes());
    add("empty_lines_only", b"\r\n\r\n");
    add("header_without_colon", b"GET / HTTP/1.1\r\nUpgrade websocket\r\n\r\n");
    add("header_name_with_space", b"GET / HTTP/1.1\r\nUp grade: websocket\r\n\r\n");
    add("header_folded", b"GET / HTTP/1.1\r\nUpgrade: websocket\r\n  continued\r\n\r\n");
    add("bad_version", b"GET / HTTP/2.0\r\n\r\n");
    add("bad_method_chars", b"G(T / HTTP/1.1\r\n\r\n");
    add("nul_in_target", b"GET /\0 HTTP/1.1\r\n\r\n");
    add("tls_client_hello", b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03");
    add("websocket_frame_instead", &Frame::text("hello").to_bytes());
    seeds
}

/// A TLS record of `content_type` (22 handshake, 21 alert, 23 application
/// data) around `payload`, as sent before encryption starts.
fn record(content_type: u8, payload: &[u8]) -> Vec<u8> {
    let mut out = vec![content_type, 3, 3];
    out.extend_from_slice(&(payload.len() as u16).to_be_bytes());
    out.extend_from_slice(payload);
    out
}

fn tls_seeds() -> Vec<(String, Vec<u8>)> {
    let mut seeds = Vec::new();
    let mut add = |name: &str, server_side: bool, n: u8, bytes: &[u8]| {
        seeds.push((name.to_string(), tls::encode_plan(server_side, n, bytes)));
    };
    // A client's first flight: its ClientHello, one record.
    let mut client = Records::new(tls::client());
    client.open(&mut [], |_| Ok::<(), ()>(())).expect("a ClientHello");
    let hello = client.unsent().to_vec();
    for n in [0, 3, 40, 127] {
        add(&format!("client_hello_reads_of_{}", usize::from(n) * 37 + 1), true, n, &hello);
    }
    // The same handshake message re-framed into records of 100 bytes.
    let message = &hello[5..];
    let reframed: Vec<u8> = message.chunks(100).flat_map(|c| record(22, c)).collect();
    add("client_hello_in_100_byte_records", true, 127, &reframed);
    // Read 112 bytes at a time: rustls has half joined the message between
    // reads, when the connection writes (the state that once panicked).
    add("client_hello_in_100_byte_records_reads_of_112", true, 3, &reframed);
    let mut interleaved = reframed[..3 * 105].to_vec();
    interleaved.extend_from_slice(&record(23, &[0, 0]));
    add("client_hello_interleaved_with_another_record", true, 127, &interleaved);
    let mut then = |name: &str, tail: &[u8]| {
        let mut bytes = hello.clone();
        bytes.extend_from_slice(tail);
        add(&format!("client_hello_then_{name}"), true, 127, &bytes);
    };
    then("garbage_record", &record(23, &[0x5a; 300]));
    then("alert", &record(21, &[2, 40]));
    then("oversized_record", &[23, 3, 3, 0x48, 0x01]);
    then("http", b"GET / HTTP/1.1\r\nHost: x\r\n\r\n");
    add("http_on_the_tls_port", true, 127, b"GET / HTTP/1.1\r\nHost: x\r\n\r\n");
    add("empty_record", true, 127, &record(22, &[]));
    // A server's first flight (ServerHello, and its encrypted messages).
    let mut server = Records::new(tls::server());
    let mut to_server = hello.clone();
    server.open(&mut to_server, |_| Ok::<(), ()>(())).expect("the server's flight");
    let flight = server.unsent().to_vec();
    add("server_flight", false, 127, &flight);
    add("server_flight_reads_of_38", false, 1, &flight);
    add("server_alert", false, 127, &record(21, &[2, 40]));
    seeds
}
