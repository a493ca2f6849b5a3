//! What an idle open connection costs the server: resident memory of the
//! `wsloop` process with 2,000 idle clients against the same process with
//! none, read from /proc.

mod support;

use std::time::Duration;

use support::*;
use tungstenite::Message;

#[test]
fn an_idle_open_connection_costs_under_8_kib() {
    const CLIENTS: usize = 2000;
    let server = ServerProcess::start(&[]);
    // Warm up: one connection touches the loop's buffers, as any first client would.
    let mut warm = connect(server.addr);
    warm.send(Message::binary(vec![1; 512])).unwrap();
    assert_eq!(next_message(&mut warm), Message::binary(vec![1; 512]));
    std::thread::sleep(Duration::from_millis(200));
    let before = server.rss_bytes();

    let mut clients = Vec::with_capacity(CLIENTS);
    for i in 0..CLIENTS {
        let mut ws = connect(server.addr);
        // Each one used once: a small echo and a ping, then silence.
        ws.send(Message::text(format!("client {i}"))).unwrap();
        assert_eq!(next_message(&mut ws), Message::text(format!("client {i}")));
        clients.push(ws);
    }
    std::thread::sleep(Duration::from_millis(300));
    let after = server.rss_bytes();
    let per_connection = after.saturating_sub(before) / CLIENTS as u64;
    eprintln!(
        "server RSS {} KiB with 1 connection, {} KiB with {}: {per_connection} bytes per idle connection",
        before / 1024,
        after / 1024,
        CLIENTS + 1
    );
    assert!(per_connection < 8 << 10, "{per_connection} bytes per idle connection");
    // Everyone is still served.
    for ws in clients.iter_mut().step_by(97) {
        ws.send(Message::text("still")).unwrap();
        assert_eq!(next_message(ws), Message::text("still"));
    }
}
