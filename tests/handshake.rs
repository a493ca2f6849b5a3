//! The opening handshake's refusals: each bad request gets the right HTTP
//! status with a one-line reason, and no bad client holds a slot for long.

mod support;

use std::{io::Write, net::TcpStream, time::Duration};

use support::*;
use tungstenite::Message;
use wsloop::Config;

#[test]
fn bad_requests_get_the_right_status_and_a_reason() {
    let server = TestServer::default();
    let good = upgrade_request("/");
    let cases: Vec<(&str, String, u16)> = vec![
        ("plain GET of an unknown page", "GET /nowhere HTTP/1.1\r\nHost: x\r\n\r\n".into(), 404),
        ("garbage", "\x16\x03\x01 this is not HTTP\r\n\r\n".into(), 400),
        ("no key", good.replace("Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n", ""), 400),
        ("bad key", good.replace("dGhlIHNhbXBsZSBub25jZQ==", "tooshort"), 400),
        ("no Connection: Upgrade", good.replace("Connection: Upgrade", "Connection: close"), 400),
        ("POST upgrade", good.replace("GET", "POST"), 405),
        ("version 8", good.replace("Version: 13", "Version: 8"), 426),
    ];
    for (what, request, status) in cases {
        let response = http_exchange(server.addr, request.as_bytes());
        assert_eq!(response.status, status, "{what}: {}", response.head);
        assert!(response.body.ends_with('\n') && response.body.trim().len() > 5, "{what}: reason {:?}", response.body);
        assert!(response.head.contains("Content-Length:"), "{what}");
        if status == 426 {
            assert!(response.head.contains("Sec-WebSocket-Version: 13"), "{}", response.head);
        }
    }
    let summary = server.finish();
    // The 404 is a plain HTTP answer, not a refused WebSocket.
    assert_eq!(summary.metrics.refused_total(), 6);
    assert_eq!(summary.metrics.connections_open, 0);
}

#[test]
fn a_request_head_over_16_kib_gets_431() {
    let server = TestServer::default();
    let huge = format!("GET / HTTP/1.1\r\nHost: x\r\nX-Padding: {}\r\n", "a".repeat(17 << 10));
    let response = http_exchange(server.addr, huge.as_bytes());
    assert_eq!(response.status, 431);
    // Just under the limit is fine.
    let mut request = upgrade_request("/");
    request.insert_str(request.len() - 2, &format!("X-Padding: {}\r\n", "a".repeat(15 << 10)));
    let mut stream = TcpStream::connect(server.addr).unwrap();
    stream.set_read_timeout(Some(WAIT)).unwrap();
    stream.write_all(request.as_bytes()).unwrap();
    assert!(read_head(&mut stream).starts_with("HTTP/1.1 101"));
}

#[test]
fn a_slowloris_handshake_is_dropped_and_its_slot_freed() {
    let server = TestServer::start(Config {
        max_connections: 1,
        handshake_timeout: Duration::from_millis(300),
        ..Config::default()
    });
    // Takes the only slot and never finishes its request.
    let mut slow = TcpStream::connect(server.addr).unwrap();
    slow.set_read_timeout(Some(WAIT)).unwrap();
    slow.write_all(b"GET / HTTP/1.1\r\nHost: x\r\n").unwrap();
    // While it holds the slot, a second connection is refused with 503.
    std::thread::sleep(Duration::from_millis(50));
    assert_eq!(http_exchange(server.addr, upgrade_request("/").as_bytes()).status, 503);
    // The server drops it at the deadline (end-of-file well before the
    // test's own 10 s read timeout), without a response...
    let mut rest = Vec::new();
    std::io::Read::read_to_end(&mut slow, &mut rest).expect("the server closes the connection");
    assert!(rest.is_empty(), "dropped without a response: {rest:?}");
    // ...and the slot is free again.
    let mut ws = connect(server.addr);
    ws.send(Message::text("my turn")).unwrap();
    assert_eq!(next_message(&mut ws), Message::text("my turn"));
    drop(ws);
    let summary = server.finish();
    assert_eq!(summary.metrics.handshake_failures[wsloop::handshake::HandshakeFailure::Timeout as usize], 1);
}

#[test]
fn over_max_connections_new_clients_get_503_and_the_others_are_untouched() {
    let server = TestServer::start(Config { max_connections: 3, ..Config::default() });
    let mut clients: Vec<_> = (0..3).map(|_| connect(server.addr)).collect();
    for _ in 0..5 {
        let response = http_exchange(server.addr, upgrade_request("/").as_bytes());
        assert_eq!(response.status, 503);
        assert!(response.head.contains("Retry-After: 1"));
        assert!(response.body.contains("connection limit"));
    }
    for (i, ws) in clients.iter_mut().enumerate() {
        ws.send(Message::text(format!("client {i}"))).unwrap();
        assert_eq!(next_message(ws), Message::text(format!("client {i}")));
    }
    // One leaves; a newcomer gets its place.
    clients.pop().unwrap().close(None).unwrap();
    eventually("a slot to free up", || {
        let mut stream = TcpStream::connect(server.addr).unwrap();
        stream.set_read_timeout(Some(WAIT)).unwrap();
        stream.write_all(upgrade_request("/").as_bytes()).unwrap();
        read_head(&mut stream).starts_with("HTTP/1.1 101")
    });
    drop(clients);
    let summary = server.finish();
    assert_eq!(summary.metrics.refused[wsloop::handshake::RefusalKind::TooManyConnections as usize] as usize, 5);
}

#[test]
fn origin_allowlist_and_subprotocol_selection() {
    let server = TestServer::start(Config {
        allowed_origin: vec!["https://ok.example".into()],
        subprotocol: vec!["chat.v2".into(), "chat.v1".into()],
        ..Config::default()
    });
    let with =
        |headers: &str| upgrade_request("/").replace("Host: localhost\r\n", &format!("Host: localhost\r\n{headers}"));
    assert_eq!(http_exchange(server.addr, with("Origin: https://evil.example\r\n").as_bytes()).status, 403);
    assert_eq!(http_exchange(server.addr, upgrade_request("/").as_bytes()).status, 403);

    let mut stream = TcpStream::connect(server.addr).unwrap();
    stream.set_read_timeout(Some(WAIT)).unwrap();
    let request = with("Origin: https://ok.example\r\nSec-WebSocket-Protocol: chat.v1, chat.v2\r\nSec-WebSocket-Extensions: permessage-deflate\r\n");
    stream.write_all(request.as_bytes()).unwrap();
    let head = read_head(&mut stream).to_ascii_lowercase();
    assert!(head.starts_with("http/1.1 101"), "{head}");
    // The client's first choice among those the server speaks, exactly one.
    assert!(head.contains("sec-websocket-protocol: chat.v1\r\n"), "{head}");
    // No extension is implemented, so none is accepted.
    assert!(!head.contains("sec-websocket-extensions"), "{head}");
}
