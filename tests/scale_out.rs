//! Beyond one loop and one process: `--workers 2` delivers across loops in
//! one order and shows the process as a whole; two processes share a room
//! through a real redis-server, and keep serving their local members when
//! Redis goes away, then join up again when it is back.

mod support;

use std::time::{Duration, Instant};

use support::{redis::RedisServer, *};
use tungstenite::Message;

const TOKEN: &str = "t0ken";

fn text(s: &str) -> Message {
    Message::text(s.to_string())
}

fn line(ws: &mut Client) -> String {
    match next_message(ws) {
        Message::Text(text) => text.to_string(),
        other => panic!("expected text, got {other:?}"),
    }
}

/// Expects that nothing arrives on `ws` for a moment (a message that must
/// not be delivered), then puts the read timeout back.
fn nothing_arrives(ws: &mut Client) {
    ws.get_mut().set_read_timeout(Some(Duration::from_millis(300))).unwrap();
    match ws.read() {
        Err(tungstenite::Error::Io(e))
            if matches!(e.kind(), std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut) => {}
        other => panic!("expected nothing, got {other:?}"),
    }
    ws.get_mut().set_read_timeout(Some(WAIT)).unwrap();
}

#[test]
fn workers_share_rooms_in_one_order_and_report_the_process() {
    let server = ServerProcess::start(&["--mode", "broadcast", "--workers", "2", "--publish-token", TOKEN]);
    // SO_REUSEPORT spreads connections by a hash: with 16, both loops get some.
    let mut members: Vec<Client> = (0..16).map(|_| connect_to(server.addr, "/room")).collect();
    eventually("members on both loops", || {
        let s = stats(server.addr);
        let loops = s["loops"].as_array().cloned().unwrap_or_default();
        loops.len() == 2
            && loops.iter().all(|l| l["connections"].as_u64().unwrap_or(0) > 0)
            && s["rooms"]["memberships"] == 16
    });
    // Two senders (on whichever loops), interleaved: every member, on both
    // loops, sees the same order.
    for round in 0..20 {
        members[0].send(text(&format!("a{round}"))).unwrap();
        members[15].send(text(&format!("b{round}"))).unwrap();
    }
    let seen: Vec<Vec<String>> = members.iter_mut().map(|ws| (0..40).map(|_| line(ws)).collect()).collect();
    for other in &seen[1..] {
        assert_eq!(other, &seen[0]);
    }
    // POST /publish, answered once every loop has delivered.
    let headers = format!("Authorization: Bearer {TOKEN}\r\nContent-Type: text/plain\r\nContent-Length: 2\r\n");
    let response = post(server.addr, "/publish/room", &headers, b"hi");
    assert_eq!(response.status, 200, "{}", response.body);
    let counts: serde_json::Value = serde_json::from_str(&response.body).unwrap();
    assert_eq!(counts["delivered"], 16);
    for ws in &mut members {
        assert_eq!(line(ws), "hi");
    }
    // The figures are the process's as of the request: every loop is asked
    // for its own, so every delivery already made is counted, on both loops.
    let s = stats(server.addr);
    assert_eq!(s["rooms"]["deliveries"], 16 * 41, "{s}");
    assert_eq!(s["connections"]["open"], 16, "{s}");
    let loops: Vec<u64> = s["loops"].as_array().unwrap().iter().map(|l| l["connections"].as_u64().unwrap()).collect();
    assert_eq!(loops.iter().sum::<u64>(), 16, "{s}");
    // SIGTERM closes every client on every loop with 1001.
    let mut server = server;
    server.signal(libc::SIGTERM);
    for ws in &mut members {
        assert_eq!(expect_close(ws), 1001);
    }
    assert_eq!(server.wait_exit(WAIT), Some(0));
}

/// A wsloop process in broadcast mode joined to `redis`.
fn node(redis: &RedisServer) -> ServerProcess {
    let url = redis.url();
    ServerProcess::start(&["--mode", "broadcast", "--redis", &url, "--publish-token", TOKEN])
}

fn redis_connected(addr: std::net::SocketAddr) -> bool {
    stats(addr)["redis"]["connected"] == true
}

#[test]
fn two_processes_share_a_room_through_redis_and_survive_its_outage() {
    let mut redis = RedisServer::start();
    let (a, b) = (node(&redis), node(&redis));
    let mut on_a = connect_to(a.addr, "/lobby");
    let mut on_b = connect_to(b.addr, "/lobby");
    let mut elsewhere = connect_to(b.addr, "/other");
    eventually("both subscribed", || {
        redis_connected(a.addr) && redis_connected(b.addr) && redis.subscribers("wsloop:/lobby") == 2
    });

    // From a member on A: both members get each message exactly once, in order.
    for i in 0..20 {
        on_a.send(text(&format!("m{i}"))).unwrap();
    }
    for i in 0..20 {
        assert_eq!(line(&mut on_a), format!("m{i}"));
        assert_eq!(line(&mut on_b), format!("m{i}"));
    }
    nothing_arrives(&mut on_a); // not twice (A skips its own echo from Redis)
    nothing_arrives(&mut elsewhere);

    // POST /publish on A reaches B.
    let headers = format!("Authorization: Bearer {TOKEN}\r\nContent-Type: text/plain\r\nContent-Length: 5\r\n");
    assert_eq!(post(a.addr, "/publish/lobby", &headers, b"hello").status, 200);
    assert_eq!(line(&mut on_a), "hello");
    assert_eq!(line(&mut on_b), "hello");

    // Redis goes away: each process keeps serving its own members.
    redis.kill();
    eventually("both see Redis gone", || !redis_connected(a.addr) && !redis_connected(b.addr));
    on_b.send(text("local only")).unwrap();
    assert_eq!(line(&mut on_b), "local only");
    on_a.send(text("also local")).unwrap();
    assert_eq!(line(&mut on_a), "also local");
    nothing_arrives(&mut on_b);

    // Redis is back: cross-process delivery resumes without restarting wsloop.
    redis.restart();
    eventually("both resubscribed", || {
        redis_connected(a.addr) && redis_connected(b.addr) && redis.subscribers("wsloop:/lobby") == 2
    });
    let deadline = Instant::now() + WAIT;
    on_a.send(text("back")).unwrap();
    assert_eq!(line(&mut on_a), "back");
    assert_eq!(line(&mut on_b), "back");
    assert!(Instant::now() < deadline);
    // The bridge counts a publish once Redis took it, on its own thread: a
    // read of the figures can come before the last one is counted.
    eventually("A's 22 publishes counted", || stats(a.addr)["redis"]["published"].as_u64() >= Some(22));
    let s = stats(a.addr);
    assert!(s["redis"]["reconnects"].as_u64().unwrap() >= 1, "{}", s["redis"]);
}
