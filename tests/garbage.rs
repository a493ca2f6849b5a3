//! Random and mutated input through the exact code a connection runs
//! (`cycle::serve` over tungstenite, and the handshake's `decide_head`), split
//! at random points into wakeups. Whatever arrives, nothing panics, no
//! message over the limit is delivered, and the output stays bounded.
//! Deterministic (seeded), so a failure reproduces.

#[path = "../benches/support/mod.rs"]
mod mem;

use tungstenite::{
    protocol::{
        frame::{
            coding::{Data, OpCode},
            Frame,
        },
        Role,
    },
    WebSocket,
};
use wsloop::{
    cycle,
    handshake::{decide_head, Policy},
    http::Routes,
    metrics::Metrics,
    ws::websocket_config,
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
        let mut frame = match rng.below(6) {
            0 => Frame::message(payload, OpCode::Data(Data::Binary), true),
            1 => Frame::message(payload, OpCode::Data(Data::Text), false),
            2 => Frame::message(payload, OpCode::Data(Data::Continue), true),
            // Over 125 bytes this is a protocol error, which is a fine case too.
            3 => Frame::ping(payload),
            _ => Frame::message(payload, OpCode::Data(Data::Text), true),
        };
        frame.header_mut().mask = Some([rng.next() as u8, 7, 9, 11]);
        frame.format(&mut bytes).unwrap();
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
        let socket = mem::MemSocket { input, eof_at_end: true, ..Default::default() };
        let mut ws = WebSocket::from_raw_socket(socket, Role::Server, Some(websocket_config(&config)));
        let mut metrics = Metrics::default();
        let mut close_code = 0;
        // Deliver the input in random slices, one wakeup each.
        loop {
            let s = ws.get_mut();
            s.readable_until = (s.readable_until + rng.below(2000) + 1).min(total);
            let wakeup = cycle::serve(&mut ws, &mut close_code, &config, &mut metrics);
            delivered += wakeup.served;
            if wakeup.outcome.is_some() {
                failed += 1;
                break;
            }
            if ws.get_ref().pos == total && ws.get_ref().readable_until == total {
                break;
            }
        }
        assert!(metrics.bytes_in <= 8 * 100_000, "case {case}: read more than it was sent");
        assert!(ws.get_ref().output.len() <= total + 16 * 1024, "case {case}: output out of proportion");
    }
    // Both kinds of outcome happened, so the test exercised something.
    assert!(delivered > 500 && failed > 500, "delivered {delivered}, failed {failed}");
}

#[test]
fn the_handshake_parser_survives_garbage() {
    let good = b"GET / HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
                 Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n";
    let mut rng = Rng(0x5eed_cafe_f00d_0002);
    let policy = Policy { allowed_origins: vec!["https://a".into()], subprotocols: vec!["x".into()] };
    let mut answered = 0;
    for case in 0..20_000 {
        let mut head = good.to_vec();
        mutate(&mut rng, &mut head);
        if case % 7 == 0 {
            head = (0..rng.below(300)).map(|_| rng.next() as u8).collect();
        }
        for routes in [Routes::All, Routes::MetricsOnly] {
            if decide_head(&head, &policy, routes).is_some() {
                answered += 1;
            }
        }
    }
    assert!(answered > 10_000, "only {answered} heads were complete enough to answer");
}
