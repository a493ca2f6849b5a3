//! The opening handshake's user-space cost: parse a browser's request head
//! (httparse), validate it and derive the accept key (tungstenite), and
//! render the 101: the code a connection runs on a complete head. This
//! bounds handshakes per second per core.

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use wsloop::{
    handshake::{answer, Decision, Policy},
    http::Routes,
};

/// What Chrome sends (headers abridged only of cookies).
const CHROME: &[u8] = b"GET /chat HTTP/1.1\r\nHost: 127.0.0.1:9001\r\nConnection: Upgrade\r\nPragma: no-cache\r\n\
Cache-Control: no-cache\r\nUser-Agent: Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) \
Chrome/131.0.0.0 Safari/537.36\r\nUpgrade: websocket\r\nOrigin: http://127.0.0.1:9001\r\nSec-WebSocket-Version: 13\r\n\
Accept-Encoding: gzip, deflate, br, zstd\r\nAccept-Language: en-US,en;q=0.9\r\n\
Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Extensions: permessage-deflate; client_max_window_bits\r\n\r\n";

fn bench_handshake(c: &mut Criterion) {
    let policy = Policy::default();
    let mut group = c.benchmark_group("handshake");
    group.throughput(Throughput::Elements(1));
    group.bench_function("decide_101", |b| {
        b.iter(|| match answer(CHROME, &policy, Routes::All) {
            Some((_, Decision::Upgrade(response))) => response,
            other => panic!("{other:?}"),
        })
    });
    group.finish();
}

criterion_group!(benches, bench_handshake);
criterion_main!(benches);
