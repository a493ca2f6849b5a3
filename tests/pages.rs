//! The HTTP side: `/stats` and `/metrics` count exactly what happened, a real
//! Prometheus parser accepts `/metrics`, the routes answer 404/405/HEAD
//! correctly, and `--metrics-listen` / `--no-http-pages` move them.

mod support;

use std::{
    io::Write,
    net::SocketAddr,
    process::{Command, Stdio},
};

use serde_json::Value;
use support::*;
use tungstenite::Message;
use wsloop::Config;

fn get(addr: SocketAddr, path: &str) -> HttpResponse {
    http_exchange(addr, format!("GET {path} HTTP/1.1\r\nHost: test\r\n\r\n").as_bytes())
}

/// `/metrics` parsed by prometheus_client's own parser (from the project's
/// pinned virtualenv).
fn prometheus(addr: SocketAddr) -> Value {
    let response = get(addr, "/metrics");
    assert_eq!(response.status, 200);
    assert!(response.head.contains("Content-Type: text/plain; version=0.0.4"), "{}", response.head);
    let venv = Command::new("scripts/pyenv.sh").output().expect("run scripts/pyenv.sh");
    assert!(venv.status.success(), "pyenv.sh failed: {}", String::from_utf8_lossy(&venv.stderr));
    let python = format!("{}/bin/python", String::from_utf8(venv.stdout).unwrap().trim());
    let mut child = Command::new(python)
        .arg("tests/support/parse_metrics.py")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .expect("start the parser");
    child.stdin.take().unwrap().write_all(response.body.as_bytes()).unwrap();
    let output = child.wait_with_output().unwrap();
    assert!(output.status.success(), "prometheus_client rejected /metrics:\n{}", response.body);
    serde_json::from_slice(&output.stdout).unwrap()
}

#[test]
fn stats_and_metrics_count_exactly_what_happened() {
    let server = TestServer::default();
    let mut ws = connect(server.addr);
    for i in 0..3 {
        ws.send(Message::text(format!("text {i}"))).unwrap();
        assert_eq!(next_message(&mut ws), Message::text(format!("text {i}")));
    }
    for i in 0..2 {
        ws.send(Message::binary(vec![i; 100])).unwrap();
        assert_eq!(next_message(&mut ws), Message::binary(vec![i; 100]));
    }
    for _ in 0..4 {
        ws.send(Message::Ping(b"p".to_vec().into())).unwrap();
        assert!(matches!(ws.read().unwrap(), Message::Pong(_)));
    }
    ws.send(Message::Pong(b"unsolicited".to_vec().into())).unwrap();
    ws.send(close_frame(1000)).unwrap();
    assert!(matches!(ws.read().unwrap(), Message::Close(_)));
    assert!(matches!(ws.read(), Err(tungstenite::Error::ConnectionClosed)));
    // Two refused connections.
    for _ in 0..2 {
        let bad = upgrade_request("/").replace("Version: 13", "Version: 7");
        assert_eq!(http_exchange(server.addr, bad.as_bytes()).status, 426);
    }

    let json = stats(server.addr);
    assert_eq!(json["frames_received"]["text"], 3);
    assert_eq!(json["frames_received"]["binary"], 2);
    assert_eq!(json["frames_received"]["ping"], 4);
    assert_eq!(json["frames_received"]["pong"], 1);
    assert_eq!(json["frames_received"]["close"], 1);
    assert_eq!(json["frames_sent"]["text"], 3);
    assert_eq!(json["frames_sent"]["binary"], 2);
    assert_eq!(json["frames_sent"]["pong"], 4);
    assert_eq!(json["messages"]["received"], 5);
    assert_eq!(json["messages"]["sent"], 5);
    assert_eq!(json["messages"]["bytes_received"], 3 * 6 + 2 * 100);
    assert_eq!(json["connections"]["websocket_opened"], 1);
    assert_eq!(json["connections"]["refused"]["unsupported_version"], 2);
    assert_eq!(json["connections"]["closed"]["1000"], 1);
    assert_eq!(json["connections"]["open"], 0);
    // The client, the two refused, and this request.
    assert_eq!(json["connections"]["accepted"], 4);
    assert_eq!(json["http_requests"]["stats"], 1);
    assert_eq!(json["latency"]["count"], 5);
    assert!(json["latency"]["p50_us"].as_f64().unwrap() > 0.0);
    assert!(json["process"]["resident_memory_bytes"].as_u64().unwrap() > 1 << 20);
    assert!(json["process"]["open_fds"].as_u64().unwrap() >= 3);

    let parsed = prometheus(server.addr);
    let samples = &parsed["samples"];
    let sample = |key: &str| samples[key].as_f64().unwrap_or_else(|| panic!("no sample {key} in {samples}"));
    assert_eq!(sample("wsloop_frames_received_total{type=text}"), 3.0);
    assert_eq!(sample("wsloop_frames_received_total{type=binary}"), 2.0);
    assert_eq!(sample("wsloop_frames_received_total{type=ping}"), 4.0);
    assert_eq!(sample("wsloop_frames_received_total{type=pong}"), 1.0);
    assert_eq!(sample("wsloop_messages_received_total{}"), 5.0);
    assert_eq!(sample("wsloop_connections_refused_total{reason=unsupported_version}"), 2.0);
    assert_eq!(sample("wsloop_disconnects_total{code=1000}"), 1.0);
    assert_eq!(sample("wsloop_connections{}"), 0.0);
    assert_eq!(sample("wsloop_http_requests_total{route=stats}"), 1.0);
    assert_eq!(sample("wsloop_http_requests_total{route=metrics}"), 1.0);
    assert_eq!(sample("wsloop_message_service_seconds_count{}"), 5.0);
    assert!(sample("wsloop_message_service_seconds{quantile=0.99}") > 0.0);
    assert!(sample("process_resident_memory_bytes{}") > 0.0);
    assert_eq!(parsed["types"]["wsloop_message_service_seconds"], "summary");
    assert_eq!(parsed["types"]["wsloop_messages_received"], "counter");
}

#[test]
fn routes_answer_404_405_and_head_correctly() {
    let server = TestServer::default();
    let page = get(server.addr, "/");
    assert_eq!(page.status, 200);
    assert!(page.head.contains("Content-Type: text/html"));
    assert!(page.body.contains("<html"));
    assert!(page.head.contains("Cross-Origin-Embedder-Policy: require-corp"), "{}", page.head);
    assert_eq!(get(server.addr, "/nope").status, 404);
    let post = http_exchange(server.addr, b"POST /stats HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\n\r\n");
    assert_eq!(post.status, 405);
    assert!(post.head.contains("Allow: GET, HEAD"));
    let head = http_exchange(server.addr, b"HEAD /metrics HTTP/1.1\r\nHost: x\r\n\r\n");
    assert_eq!(head.status, 200);
    assert!(head.body.is_empty());
    assert!(!head.head.contains("Content-Length: 0\r\n"));
}

#[test]
fn metrics_listen_and_no_http_pages() {
    let mut server = wsloop::Server::bind(Config {
        listen: "127.0.0.1:0".parse().unwrap(),
        metrics_listen: Some("127.0.0.1:0".parse().unwrap()),
        no_http_pages: true,
        ..Config::default()
    })
    .unwrap();
    let (public, private) = (server.local_addr(), server.metrics_local_addr().unwrap());
    let stop = server.stop_handle();
    let thread = std::thread::spawn(move || server.run().unwrap());

    // Public port: WebSocket only.
    for path in ["/", "/stats", "/metrics"] {
        assert_eq!(get(public, path).status, 404, "{path}");
    }
    let mut ws = connect(public);
    ws.send(Message::text("x")).unwrap();
    assert_eq!(next_message(&mut ws), Message::text("x"));
    // Private port: figures only, no page and no WebSocket.
    assert_eq!(get(private, "/metrics").status, 200);
    assert_eq!(stats(private)["messages"]["received"], 1);
    assert_eq!(get(private, "/").status, 404);
    assert_eq!(http_exchange(private, upgrade_request("/").as_bytes()).status, 404);
    drop(ws);
    stop.shutdown();
    thread.join().unwrap();
}

#[test]
fn the_stats_line_is_logged_every_interval() {
    let mut server = ServerProcess::start(&["--stats-interval", "1s"]);
    let mut ws = connect(server.addr);
    ws.send(Message::text("x")).unwrap();
    assert_eq!(next_message(&mut ws), Message::text("x"));
    // A stats line may come before the client connected: wait for one that
    // counts it (bounded), rather than judging the first.
    let deadline = std::time::Instant::now() + WAIT;
    let line = loop {
        let left = deadline.saturating_duration_since(std::time::Instant::now());
        let line = server.log.recv_timeout(left).expect("a stats line counting the client");
        if line.contains("stats:") && line.contains("connections 1 ") {
            break line;
        }
    };
    assert!(line.contains("msgs/s in") && line.contains("p99"), "{line}");
    server.signal(libc::SIGTERM);
    drop(ws);
    assert_eq!(server.wait_exit(WAIT), Some(0));
}
