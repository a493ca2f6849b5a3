//! The opening handshake's user-space cost: parse a browser's request head
//! (httparse), validate it and derive the accept key (tungstenite), render the
//! 101, and build the WebSocket. This bounds handshakes per second per core.

mod support;

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use support::MemSocket;
use tungstenite::{protocol::Role, WebSocket};
use wsloop::{
    handshake::{decide_head, Decision, Policy},
    http::Routes,
    ws::websocket_config,
    Config,
};

/// What Chrome sends (headers abridged only of cookies).
const CHROME: &[u8] = b"GET /chat HTTP/1.1\r\nHost: 127.0.0.1:9001\r\nConnection: Upgrade\r\nPragma: no-cache\r\n\
Cache-Control: no-cache\r\nUser-Agent: Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) \
Chrome/131.0.0.0 Safari/537.36\r\nUpgrade: websocket\r\nOrigin: http://127.0.0.1:9001\r\nSec-WebSocket-Version: 13\r\n\
Accept-Encoding: gzip, deflate, br, zstd\r\nAccept-Language: en-US,en;q=0.9\r\n\
Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Extensions: permessage-deflate; client_max_window_bits\r\n\r\n";

fn bench_handshake(c: &mut Criterion) {
    let policy = Policy::default();
    let ws_config = websocket_config(&Config::default());
    let mut group = c.benchmark_group("handshake");
    group.throughput(Throughput::Elements(1));
    group.bench_function("decide_101", |b| {
        b.iter(|| match decide_head(CHROME, &policy, Routes::All) {
            Some(Decision::Upgrade(response)) => response,
            other => panic!("{other:?}"),
        })
    });
    group.bench_function("decide_101_and_open", |b| {
        b.iter(|| {
            let Some(Decision::Upgrade(response)) = decide_head(CHROME, &policy, Routes::All) else { panic!() };
            let ws = WebSocket::from_partially_read(MemSocket::default(), Vec::new(), Role::Server, Some(ws_config));
            (response, ws)
        })
    });
    group.finish();
}

criterion_group!(benches, bench_handshake);
criterion_main!(benches);
