//! Echo over real sockets: sizes across every frame-length encoding,
//! fragmentation, ping/pong, the close handshake, and many clients at once.

mod support;

use std::io::Write;

use support::*;
use tungstenite::{
    protocol::{
        frame::{
            coding::{Data, OpCode},
            Frame,
        },
        Role,
    },
    Message, WebSocket,
};

/// 0, 125 and 126 straddle the 7-bit/16-bit length boundary, 65535 and
/// 65536 the 16-bit/64-bit one.
const SIZES: [usize; 6] = [0, 125, 126, 65535, 65536, 1 << 20];

fn pattern(len: usize) -> Vec<u8> {
    (0..len).map(|i| (i * 31 + 7) as u8).collect()
}

#[test]
fn echoes_binary_and_text_at_every_length_encoding() {
    let server = TestServer::default();
    let mut ws = connect(server.addr);
    for size in SIZES {
        let binary = Message::binary(pattern(size));
        ws.send(binary.clone()).unwrap();
        assert_eq!(next_message(&mut ws), binary, "binary of {size} bytes");

        let text = Message::text("é".repeat(size / 2) + &"a".repeat(size % 2));
        ws.send(text.clone()).unwrap();
        assert_eq!(next_message(&mut ws), text, "text of {size} bytes");
    }
    ws.close(None).unwrap();
    let summary = server.finish();
    assert_eq!(summary.metrics.messages_in(), 12);
    assert_eq!(summary.metrics.messages_out(), 12);
}

#[test]
fn reassembles_a_fragmented_message_with_a_ping_in_the_middle() {
    let server = TestServer::default();
    let mut ws = connect(server.addr);
    let parts: [&[u8]; 3] = [b"frag", b"men", b"ted"];
    let first = Frame::message(parts[0].to_vec(), OpCode::Data(Data::Text), false);
    ws.send(Message::Frame(first)).unwrap();
    ws.send(Message::Ping(b"mid".to_vec().into())).unwrap();
    let middle = Frame::message(parts[1].to_vec(), OpCode::Data(Data::Continue), false);
    ws.send(Message::Frame(middle)).unwrap();
    let last = Frame::message(parts[2].to_vec(), OpCode::Data(Data::Continue), true);
    ws.send(Message::Frame(last)).unwrap();

    // The pong comes first (control frames may interleave), then the whole message.
    assert_eq!(ws.read().unwrap(), Message::Pong(b"mid".to_vec().into()));
    assert_eq!(ws.read().unwrap(), Message::text("fragmented"));
}

#[test]
fn ping_gets_pong_with_the_same_payload() {
    let server = TestServer::default();
    let mut ws = connect(server.addr);
    ws.send(Message::Ping(b"are you there".to_vec().into())).unwrap();
    assert_eq!(ws.read().unwrap(), Message::Pong(b"are you there".to_vec().into()));
}

#[test]
fn close_is_answered_with_the_peers_code_and_the_connection_ends() {
    let server = TestServer::default();
    let mut ws = connect(server.addr);
    ws.send(close_frame(4321)).unwrap();
    match ws.read() {
        Ok(Message::Close(Some(frame))) => assert_eq!(u16::from(frame.code), 4321),
        other => panic!("expected the close reply, got {other:?}"),
    }
    // The server closes the TCP connection after its reply.
    assert!(matches!(ws.read(), Err(tungstenite::Error::ConnectionClosed)));
    let summary = server.finish();
    assert_eq!(summary.metrics.closes.get(&4321), Some(&1));
}

#[test]
fn frames_sent_with_the_request_are_not_lost() {
    // A client that does not wait for the 101 before its first frame.
    let server = TestServer::default();
    let mut stream = std::net::TcpStream::connect(server.addr).unwrap();
    stream.set_read_timeout(Some(WAIT)).unwrap();
    let mut bytes = upgrade_request("/").into_bytes();
    bytes.extend(frame(TEXT, b"eager"));
    stream.write_all(&bytes).unwrap();
    let head = read_head(&mut stream);
    assert!(head.starts_with("HTTP/1.1 101"), "{head}");
    let mut ws = WebSocket::from_raw_socket(stream, Role::Client, None);
    assert_eq!(ws.read().unwrap(), Message::text("eager"));
}

#[test]
fn a_request_trickled_one_byte_at_a_time_still_upgrades() {
    let server = TestServer::default();
    let mut stream = std::net::TcpStream::connect(server.addr).unwrap();
    stream.set_nodelay(true).unwrap();
    stream.set_read_timeout(Some(WAIT)).unwrap();
    for byte in upgrade_request("/chat").as_bytes() {
        stream.write_all(&[*byte]).unwrap();
        std::thread::sleep(std::time::Duration::from_micros(200));
    }
    let head = read_head(&mut stream);
    assert!(head.starts_with("HTTP/1.1 101"), "{head}");
    // RFC 6455 §1.3's key and accept pair.
    assert!(head.to_ascii_lowercase().contains("sec-websocket-accept: s3pplmbitxaq9kygzzhzrbk+xoo="), "{head}");
}

#[test]
fn a_thousand_concurrent_clients_each_echo_a_hundred_messages() {
    const CLIENTS: usize = 1000;
    const MESSAGES: usize = 100;
    const THREADS: usize = 20;
    let server = TestServer::default();
    let addr = server.addr;
    let workers: Vec<_> = (0..THREADS)
        .map(|t| {
            std::thread::spawn(move || {
                // All of this thread's clients are open at once; each round
                // sends one message on every client, then reads every echo.
                let mut clients: Vec<_> = (0..CLIENTS / THREADS).map(|_| connect(addr)).collect();
                for round in 0..MESSAGES {
                    for (i, ws) in clients.iter_mut().enumerate() {
                        ws.send(Message::text(format!("{t}/{i}/{round}"))).unwrap();
                    }
                    for (i, ws) in clients.iter_mut().enumerate() {
                        assert_eq!(next_message(ws), Message::text(format!("{t}/{i}/{round}")));
                    }
                }
                for ws in &mut clients {
                    ws.close(None).unwrap();
                }
                clients.len()
            })
        })
        .collect();
    let total: usize = workers.into_iter().map(|w| w.join().unwrap()).sum();
    assert_eq!(total, CLIENTS);
    let summary = server.finish();
    assert_eq!(summary.metrics.messages_out(), (CLIENTS * MESSAGES) as u64);
    assert_eq!(summary.metrics.connections_accepted, CLIENTS as u64);
}
