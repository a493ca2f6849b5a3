//! Rooms in `--mode broadcast`: a connection joins the room its path names;
//! what a member sends reaches every member of the room, the sender
//! included, in one order, and never another room; closing leaves; slow
//! consumers are closed or skipped with the memory bounded; and `POST
//! /publish` reaches a room, with every refusal the issue lists.

mod support;

use std::{io::Write, time::Duration};

use support::*;
use tungstenite::Message;
use wsloop::config::{Config, Mode, Secret, SlowConsumer};

fn broadcast() -> Config {
    Config { mode: Mode::Broadcast, ..Config::default() }
}

const TOKEN: &str = "s3cret-token";

fn with_publish() -> Config {
    Config { publish_token: Some(Secret(TOKEN.into())), ..broadcast() }
}

fn auth() -> String {
    format!("Authorization: Bearer {TOKEN}\r\n")
}

fn text(s: &str) -> Message {
    Message::text(s.to_string())
}

#[test]
fn a_message_reaches_every_member_of_its_room_the_sender_included_and_no_other_room() {
    let server = TestServer::start(broadcast());
    let mut a1 = connect_to(server.addr, "/a");
    let mut a2 = connect_to(server.addr, "/a?token=ignored");
    let mut b1 = connect_to(server.addr, "/b");
    eventually("three members in two rooms", || {
        let s = stats(server.addr);
        s["rooms"]["memberships"] == 3 && s["rooms"]["rooms"] == 2
    });
    a1.send(text("to room a")).unwrap();
    assert_eq!(next_message(&mut a1), text("to room a"));
    assert_eq!(next_message(&mut a2), text("to room a"));
    // Binary keeps its opcode.
    a2.send(Message::binary(vec![1, 2, 3])).unwrap();
    assert_eq!(next_message(&mut a1), Message::binary(vec![1, 2, 3]));
    assert_eq!(next_message(&mut a2), Message::binary(vec![1, 2, 3]));
    // Room b saw none of it: its first message is its own.
    b1.send(text("to room b")).unwrap();
    assert_eq!(next_message(&mut b1), text("to room b"));
    let s = stats(server.addr);
    assert_eq!(s["rooms"]["published"]["websocket"], 3);
    assert_eq!(s["rooms"]["deliveries"], 5);
}

#[test]
fn every_member_sees_the_rooms_messages_in_one_order() {
    let server = TestServer::start(broadcast());
    let mut members: Vec<Client> = (0..4).map(|_| connect_to(server.addr, "/chat/lobby")).collect();
    eventually("four members", || stats(server.addr)["rooms"]["memberships"] == 4);
    // Three senders, interleaved, without waiting for each other.
    for round in 0..50 {
        for (sender, ws) in members.iter_mut().enumerate().take(3) {
            ws.send(text(&format!("{sender}:{round}"))).unwrap();
        }
    }
    let seen: Vec<Vec<Message>> = members.iter_mut().map(|ws| (0..150).map(|_| next_message(ws)).collect()).collect();
    for other in &seen[1..] {
        assert_eq!(other, &seen[0], "two members saw the room in different orders");
    }
    // Each sender's own messages are in its order.
    for sender in 0..3 {
        let prefix = format!("{sender}:");
        let rounds: Vec<u32> =
            seen[0].iter().filter_map(|m| m.to_text().ok()?.strip_prefix(&prefix)?.parse().ok()).collect();
        assert_eq!(rounds, (0..50).collect::<Vec<_>>());
    }
}

#[test]
fn closing_leaves_every_room_and_frees_it() {
    let server = TestServer::start(broadcast());
    let mut clients: Vec<Client> = ["/x", "/x", "/y"].iter().map(|p| connect_to(server.addr, p)).collect();
    eventually("members", || stats(server.addr)["rooms"]["memberships"] == 3);
    clients[0].close(None).unwrap();
    drop(clients.remove(2)); // gone without a close frame
    eventually("two left", || {
        let s = stats(server.addr);
        s["rooms"]["memberships"] == 1 && s["rooms"]["rooms"] == 1
    });
    // The remaining member still gets its room's messages.
    clients[1].send(text("still here")).unwrap();
    assert_eq!(next_message(&mut clients[1]), text("still here"));
    drop(clients);
    eventually("everyone gone", || {
        let s = stats(server.addr);
        s["rooms"]["memberships"] == 0 && s["rooms"]["rooms"] == 0
    });
}

#[test]
fn room_limits_are_refused_with_1008_and_counted() {
    let server = TestServer::start(Config { max_rooms: 2, ..broadcast() });
    let _a = connect_to(server.addr, "/one");
    let _b = connect_to(server.addr, "/two");
    let mut c = connect_to(server.addr, "/three");
    assert_eq!(expect_close(&mut c), 1008);
    // An existing room can still be joined.
    let mut d = connect_to(server.addr, "/one");
    d.send(text("ok")).unwrap();
    assert_eq!(next_message(&mut d), text("ok"));
    assert_eq!(stats(server.addr)["rooms"]["joins_refused"], 1);
}

/// A member of `room` that never reads: its raw socket, after the 101.
fn stalled_member(addr: std::net::SocketAddr, room: &str) -> std::net::TcpStream {
    let mut stream = std::net::TcpStream::connect(addr).unwrap();
    stream.set_read_timeout(Some(WAIT)).unwrap();
    stream.write_all(upgrade_request(room).as_bytes()).unwrap();
    let head = read_head(&mut stream);
    assert!(head.starts_with("HTTP/1.1 101"), "{head}");
    stream
}

const LIMIT: usize = 64 << 10;
const MESSAGE: usize = 4 << 10;

/// A server with `config`, a room of three (a member that never reads, a
/// publisher and a reading member), after the publisher sent 3,000
/// messages of [`MESSAGE`] bytes: enough to fill the stalled member's
/// socket buffers and then its limit. Returns the server, the stalled
/// member's socket and the two others (still members while they live).
fn flooded_room(config: Config) -> (TestServer, std::net::TcpStream, [Client; 2]) {
    let server = TestServer::start(config);
    let stalled = stalled_member(server.addr, "/feed");
    let mut publisher = connect_to(server.addr, "/feed");
    let mut reader = connect_to(server.addr, "/feed");
    eventually("three members", || stats(server.addr)["rooms"]["memberships"] == 3);
    for i in 0..3000 {
        publisher.send(Message::binary(vec![i as u8; MESSAGE])).unwrap();
        // The publisher and a reading member keep up: nothing lost for them.
        assert_eq!(next_message(&mut publisher), Message::binary(vec![i as u8; MESSAGE]));
        assert_eq!(next_message(&mut reader), Message::binary(vec![i as u8; MESSAGE]));
    }
    (server, stalled, [publisher, reader])
}

#[test]
fn a_slow_consumer_is_closed_with_1008_and_its_memory_bounded() {
    let (server, stalled, _members) =
        flooded_room(Config { max_backpressure: LIMIT, max_message_size: MESSAGE, ..broadcast() });
    let s = stats(server.addr);
    assert_eq!(s["backpressure"]["slow_consumer_closes"], 1, "{s}");
    assert_eq!(s["rooms"]["memberships"], 2, "the slow consumer left its room");
    assert!(s["rooms"]["deliveries_dropped"].as_u64().unwrap() >= 1);
    // What it held never passed the limit plus one message (and its header).
    let peak = s["backpressure"]["pending_output_peak_bytes"].as_u64().unwrap();
    assert!(peak <= (LIMIT + MESSAGE + 16) as u64, "peak {peak}");
    drop(stalled);
    let metrics = server.finish().metrics;
    assert_eq!(metrics.closes.get(&1008).copied(), Some(1), "{:?}", metrics.closes);
}

#[test]
fn with_drop_a_slow_consumer_keeps_its_place_and_only_it_loses_messages() {
    let config =
        Config { max_backpressure: LIMIT, max_message_size: MESSAGE, slow_consumer: SlowConsumer::Drop, ..broadcast() };
    let (server, stalled, _members) = flooded_room(config);
    let s = stats(server.addr);
    assert_eq!(s["rooms"]["memberships"], 3, "it kept its place");
    assert_eq!(s["backpressure"]["slow_consumer_closes"], 0);
    let dropped = s["rooms"]["deliveries_dropped"].as_u64().unwrap();
    assert!(dropped > 1000, "only {dropped} dropped");
    assert_eq!(s["rooms"]["deliveries"].as_u64().unwrap() + dropped, 3 * 3000);
    let peak = s["backpressure"]["pending_output_peak_bytes"].as_u64().unwrap();
    assert!(peak <= (LIMIT + MESSAGE + 16) as u64, "peak {peak}");
    // It reads again and gets whole messages, none twice in a row.
    let mut ws = tungstenite::WebSocket::from_raw_socket(stalled, tungstenite::protocol::Role::Client, None);
    let mut last = None;
    for _ in 0..10 {
        let Message::Binary(data) = next_message(&mut ws) else { panic!("not a binary message") };
        assert_eq!(data.len(), MESSAGE);
        assert!(data.iter().all(|b| *b == data[0]), "a message cut or mixed with another");
        assert_ne!(Some(data[0]), last, "a message delivered twice");
        last = Some(data[0]);
    }
}

#[test]
fn publish_over_http_reaches_the_room() {
    let server = TestServer::start(with_publish());
    let mut a = connect_to(server.addr, "/alerts");
    let mut b = connect_to(server.addr, "/alerts");
    let mut other = connect_to(server.addr, "/other");
    eventually("members", || stats(server.addr)["rooms"]["memberships"] == 3);
    let headers = format!("{}Content-Type: text/plain; charset=utf-8\r\nContent-Length: 5\r\n", auth());
    let response = post(server.addr, "/publish/alerts", &headers, b"fire!");
    assert_eq!(response.status, 200, "{}", response.body);
    let counts: serde_json::Value = serde_json::from_str(&response.body).unwrap();
    assert_eq!(counts, serde_json::json!({"delivered": 2, "dropped": 0}));
    assert_eq!(next_message(&mut a), text("fire!"));
    assert_eq!(next_message(&mut b), text("fire!"));
    // Anything but text/... is binary; an empty room gets nothing and says so.
    let headers = format!("{}Content-Type: application/json\r\nContent-Length: 2\r\n", auth());
    assert_eq!(post(server.addr, "/publish/alerts", &headers, b"{}").status, 200);
    assert_eq!(next_message(&mut a), Message::binary(b"{}".to_vec()));
    let empty = post(server.addr, "/publish/nobody", &headers, b"{}");
    assert_eq!(serde_json::from_str::<serde_json::Value>(&empty.body).unwrap()["delivered"], 0);
    // The other room got nothing.
    other.send(text("mine")).unwrap();
    assert_eq!(next_message(&mut other), text("mine"));
    assert_eq!(stats(server.addr)["rooms"]["published"]["http"], 3);
}

#[test]
fn publish_refusals_have_their_statuses() {
    let server = TestServer::start(Config { max_message_size: 100, ..with_publish() });
    let ok_length = "Content-Length: 2\r\n";
    let cases: Vec<(&str, String, Vec<u8>, u16)> = vec![
        ("no token", ok_length.to_string(), b"hi".to_vec(), 401),
        ("wrong token", format!("Authorization: Bearer nope\r\n{ok_length}"), b"hi".to_vec(), 401),
        ("other scheme", format!("Authorization: Basic {TOKEN}\r\n{ok_length}"), b"hi".to_vec(), 401),
        ("no length", auth(), Vec::new(), 411),
        ("chunked", format!("{}Transfer-Encoding: chunked\r\n", auth()), b"2\r\nhi\r\n0\r\n\r\n".to_vec(), 411),
        ("bad length", format!("{}Content-Length: two\r\n", auth()), b"hi".to_vec(), 400),
        ("too large", format!("{}Content-Length: 101\r\n", auth()), vec![b'x'; 101], 413),
        ("text that is not UTF-8", format!("{}Content-Type: text/plain\r\n{ok_length}", auth()), vec![0xff, 0xfe], 400),
    ];
    for (what, headers, body, status) in cases {
        let response = post(server.addr, "/publish/room", &headers, &body);
        assert_eq!(response.status, status, "{what}: {}", response.body);
        assert!(!response.body.trim().is_empty(), "{what}: no reason given");
        assert!(!response.body.contains(TOKEN), "{what}: the token is in the answer");
    }
    let unauthorized = post(server.addr, "/publish/room", ok_length, b"hi");
    assert!(unauthorized.head.contains("WWW-Authenticate: Bearer"));
    let get = http_exchange(server.addr, b"GET /publish/room HTTP/1.1\r\nHost: x\r\n\r\n");
    assert_eq!(get.status, 405);
    assert!(get.head.contains("Allow: POST"));
    assert!(stats(server.addr)["connections"]["refused"]["publish"].as_u64().unwrap() >= 8);
}

#[test]
fn publish_is_off_without_a_token_and_served_on_the_metrics_address() {
    let off = TestServer::start(broadcast());
    let headers = format!("{}Content-Length: 2\r\n", auth());
    assert_eq!(post(off.addr, "/publish/room", &headers, b"hi").status, 404);

    let metrics_addr = free_port();
    let server = TestServer::start(Config { metrics_listen: Some(metrics_addr), ..with_publish() });
    let mut member = connect_to(server.addr, "/private");
    eventually("member", || stats(server.addr)["rooms"]["memberships"] == 1);
    assert_eq!(post(metrics_addr, "/publish/private", &headers, b"hi").status, 200);
    assert_eq!(next_message(&mut member), Message::binary(b"hi".to_vec()));
}

/// A free port on loopback, for `--metrics-listen` (bound and released).
fn free_port() -> std::net::SocketAddr {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    drop(listener);
    std::thread::sleep(Duration::from_millis(10));
    addr
}
