//! Random and mutated input through the code a connection runs: the
//! wakeup of an open connection (`wakeup::serve`, over an in-memory stream)
//! and the handshake's head parser and decision (`handshake::answer`), split
//! at random points into wakeups. Whatever arrives, nothing panics, no
//! message over the limit is delivered, and the output stays bounded.
//! Deterministic (seeded), so a failure reproduces. (The coverage-guided
//! fuzz targets in `fuzz/` go further; this runs in every `cargo test`.)

use wsloop::{
    handshake::{answer, Policy},
    http::Routes,
    modes::Echo,
    protocol::writer::client_frame,
    testing::{Harness, MemStream},
    Config,
};

/// xorshift64*: small, seeded, good enough to pick mutations.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }
    fn below(&mut self, n: usize) -> usize {
        (self.next() % n.max(1) as u64) as usize
    }
}

/// A plausible client stream: masked frames of every kind, some fragmented.
fn valid_stream(rng: &mut Rng) -> Vec<u8> {
    let mut bytes = Vec::new();
    for _ in 0..rng.below(8) + 1 {
        let len = [0, 1, 125, 126, 300, 70_000][rng.below(6)];
        let payload: Vec<u8> = (0..len).map(|_| b'a' + rng.below(26) as u8).collect();
        let first = match rng.below(6) {
            0 => 0x82,
            1 => 0x01,
            2 => 0x80,
            // Over 125 bytes this is a protocol error, which is a fine case too.
            3 => 0x89,
            _ => 0x81,
        };
        bytes.extend(client_frame(first, &payload, [rng.next() as u8, 7, 9, 11]));
    }
    bytes
}

fn mutate(rng: &mut Rng, bytes: &mut Vec<u8>) {
    for _ in 0..rng.below(6) {
        if bytes.is_empty() {
            return;
        }
        let at = rng.below(bytes.len());
        match rng.below(5) {
            0 => bytes[at] ^= 1 << rng.below(8),
            1 => bytes[at] = rng.next() as u8,
            2 => bytes.truncate(at),
            3 => bytes.insert(at, rng.next() as u8),
            _ => {
                let extra: Vec<u8> = (0..rng.below(40)).map(|_| rng.next() as u8).collect();
                bytes.splice(at..at, extra);
            }
        }
    }
}

#[test]
fn the_hot_path_survives_mutated_frame_streams() {
    let config = Config { max_message_size: 100_000, max_frame_size: 80_000, ..Config::default() };
    let mut rng = Rng(0x5eed_cafe_f00d_0001);
    let (mut delivered, mut failed) = (0, 0);
    for case in 0..1500 {
        let mut input = valid_stream(&mut rng);
        if case % 4 != 0 {
            mutate(&mut rng, &mut input);
        }
        if case % 10 == 0 {
            input = (0..rng.below(200)).map(|_| rng.next() as u8).collect();
        }
        let total = input.len();
        let stream = MemStream { input, readable_until: 0, max_read: rng.below(3000) + 1, ..MemStream::default() };
        let mut harness = Harness::new(config.clone(), stream);
        // Deliver the input in random slices, one wakeup each.
        loop {
            let s = &mut harness.stream;
            s.readable_until = (s.readable_until + rng.below(2000) + 1).min(total);
            s.eof_at_end = s.readable_until == total;
            let served = harness.wakeup(&mut Echo);
            delivered += served.messages;
            if served.end.is_some() {
                failed += 1;
                break;
            }
            if harness.stream.pos == total {
                break;
            }
        }
        assert!(harness.lent.metrics.bytes_in <= total as u64, "case {case}: delivered more than it was sent");
        assert!(harness.stream.output.len() <= total + 256, "case {case}: output out of proportion");
        assert!(harness.open.buffered() <= 2 * 100_000 + 4096, "case {case}: buffers beyond the limits");
    }
    // Both kinds of outcome happened, so the test exercised something.
    assert!(delivered > 500 && failed > 500, "delivered {delivered}, failed {failed}");
}

#[test]
fn the_handshake_parser_survives_garbage() {
    let good = b"GET / HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
                 Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n";
    let mut rng = Rng(0x5eed_cafe_f00d_0002);
    let policy = Policy {
        allowed_origins: vec!["https://a".into()],
        subprotocols: vec!["x".into()],
        publish_token: Some(wsloop::config::Secret("t".into())),
        max_publish: 1000,
    };
    let mut answered = 0;
    for case in 0..20_000 {
        let mut head = good.to_vec();
        mutate(&mut rng, &mut head);
        if case % 7 == 0 {
            head = (0..rng.below(300)).map(|_| rng.next() as u8).collect();
        }
        for routes in [Routes::All, Routes::MetricsOnly] {
            if answer(&head, &policy, routes).is_some() {
                answered += 1;
            }
        }
    }
    assert!(answered > 10_000, "only {answered} heads were complete enough to answer");
}
