//! `wss://` on the loop: echo and pages over TLS 1.2 and 1.3, a Python
//! client over `ssl`, every bad client (plain text on the TLS port, a name
//! the certificate does not cover, an unknown CA, an expired certificate, a
//! handshake that stops half way) answered while the server carries on,
//! bad files refused before listening, and SIGHUP reloading the
//! certificate without dropping anyone.

mod support;

use std::{
    io::{Read, Write},
    process::{Command, Stdio},
    time::Duration,
};

use support::{tls::*, *};
use tungstenite::{Message, WebSocket};
use wsloop::Config;

fn tls_config(files: &ServerFiles) -> Config {
    Config { tls_cert: Some(files.cert.clone()), tls_key: Some(files.key.clone()), ..Config::default() }
}

/// A WebSocket over TLS to `addr`.
fn wss(addr: std::net::SocketAddr, pki: &Pki) -> WebSocket<TlsStream> {
    let stream = tls_connect(addr, pki.client_config(), "localhost");
    let (ws, response) = tungstenite::client("wss://localhost/", stream).expect("wss handshake");
    assert_eq!(response.status(), 101);
    ws
}

fn echo_once(ws: &mut WebSocket<TlsStream>, message: Message) {
    ws.send(message.clone()).unwrap();
    loop {
        match ws.read().unwrap() {
            Message::Ping(_) | Message::Pong(_) => continue,
            got => return assert_eq!(got, message),
        }
    }
}

/// Whether a TLS handshake with `config` for `name` fails (client side).
fn handshake_fails(addr: std::net::SocketAddr, config: std::sync::Arc<rustls::ClientConfig>, name: &str) -> bool {
    let mut stream = tls_connect(addr, config, name);
    stream.write_all(b"GET /stats HTTP/1.1\r\nHost: x\r\n\r\n").is_err() || {
        let mut buf = [0u8; 64];
        stream.read(&mut buf).is_err()
    }
}

#[test]
fn echo_and_pages_over_tls_1_3_and_1_2() {
    let pki = Pki::new("echo");
    let server = TestServer::start(tls_config(&pki.server("server", false)));
    let mut ws = wss(server.addr, &pki);
    assert_eq!(ws.get_ref().conn.protocol_version(), Some(rustls::ProtocolVersion::TLSv1_3));
    echo_once(&mut ws, Message::text("over TLS"));
    echo_once(&mut ws, Message::binary(vec![7; 100_000]));
    ws.close(None).unwrap();

    // TLS 1.2 too.
    let stream = tls_connect(server.addr, pki.client_config_for(&[&rustls::version::TLS12]), "localhost");
    let (mut ws, _) = tungstenite::client("wss://localhost/", stream).unwrap();
    assert_eq!(ws.get_ref().conn.protocol_version(), Some(rustls::ProtocolVersion::TLSv1_2));
    echo_once(&mut ws, Message::text("over TLS 1.2"));

    // The pages are served over TLS as well.
    let mut stream = tls_connect(server.addr, pki.client_config(), "localhost");
    stream.write_all(b"GET /stats HTTP/1.1\r\nHost: localhost\r\n\r\n").unwrap();
    let response = read_response_from(&mut stream);
    assert!(response.starts_with("HTTP/1.1 200 OK"), "{response}");
    assert!(response.contains("\"websocket_opened\": 2"), "{response}");
}

/// Reads a whole response (the server closes after it, with a close_notify).
fn read_response_from(stream: &mut TlsStream) -> String {
    let mut bytes = Vec::new();
    let _ = stream.read_to_end(&mut bytes);
    String::from_utf8_lossy(&bytes).into_owned()
}

#[test]
fn python_websockets_over_ssl() {
    let pki = Pki::new("python");
    let server = TestServer::start(tls_config(&pki.server("server", false)));
    let venv = python_venv();
    let script = r#"
import asyncio, ssl, sys, websockets
async def main():
    ctx = ssl.create_default_context(cafile=sys.argv[2])
    async with websockets.connect(sys.argv[1], ssl=ctx) as ws:
        for m in ["hello", b"\x00\xff", "x" * 70000]:
            await ws.send(m)
            assert await ws.recv() == m
    print("ok")
asyncio.run(asyncio.wait_for(main(), 10))
"#;
    let url = format!("wss://localhost:{}/", server.addr.port());
    let output = Command::new(venv.join("bin/python"))
        .args(["-c", script, &url, pki.ca_file().to_str().unwrap()])
        .output()
        .expect("python");
    assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
    assert_eq!(String::from_utf8_lossy(&output.stdout).trim(), "ok");
}

#[test]
fn bad_clients_get_their_answer_and_the_server_carries_on() {
    let pki = Pki::new("bad");
    let config = Config { handshake_timeout: Duration::from_millis(300), ..tls_config(&pki.server("server", false)) };
    let server = TestServer::start(config);

    // Plain HTTP on the TLS port: no HTTP answer (a TLS alert), and the end.
    let mut plain = std::net::TcpStream::connect(server.addr).unwrap();
    plain.set_read_timeout(Some(WAIT)).unwrap();
    plain.write_all(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n").unwrap();
    let mut answer = Vec::new();
    let _ = plain.read_to_end(&mut answer);
    assert!(!answer.starts_with(b"HTTP/"), "a plain-text answer on the TLS port");

    // A name the certificate does not cover, and a CA the client does not know.
    assert!(handshake_fails(server.addr, pki.client_config(), "wrong.example"));
    let stranger = Pki::new("stranger");
    assert!(handshake_fails(server.addr, stranger.client_config(), "localhost"));

    // A handshake that stops half way: dropped at --handshake-timeout.
    let mut half = std::net::TcpStream::connect(server.addr).unwrap();
    half.set_read_timeout(Some(WAIT)).unwrap();
    half.write_all(&[0x16, 0x03, 0x01, 0x02, 0x00, 0x01, 0x00]).unwrap();
    let mut rest = Vec::new();
    let started = std::time::Instant::now();
    let _ = half.read_to_end(&mut rest);
    assert!(started.elapsed() < WAIT, "the half handshake was never dropped");

    // Everyone else is served as before.
    let mut ws = wss(server.addr, &pki);
    echo_once(&mut ws, Message::text("still here"));
    let failures = server.finish().metrics.handshake_failures;
    let tls = failures[wsloop::handshake::HandshakeFailure::Tls as usize];
    let timeouts = failures[wsloop::handshake::HandshakeFailure::Timeout as usize];
    assert!(tls >= 3, "TLS failures counted: {tls}");
    assert_eq!(timeouts, 1);
}

#[test]
fn an_expired_certificate_is_refused_by_clients_and_counted() {
    let pki = Pki::new("expired");
    let server = TestServer::start(tls_config(&pki.server("old", true)));
    assert!(handshake_fails(server.addr, pki.client_config(), "localhost"));
    let failures = server.finish().metrics.handshake_failures;
    assert_eq!(failures[wsloop::handshake::HandshakeFailure::Tls as usize], 1);
}

#[test]
fn bad_tls_files_exit_2_with_one_line_before_listening() {
    let pki = Pki::new("files");
    let good = pki.server("good", false);
    let other = pki.server("other", false);
    let missing = pki.dir.join("missing.pem");
    let garbage = pki.dir.join("garbage.pem");
    std::fs::write(&garbage, "not a certificate").unwrap();
    let cases = [
        (missing.clone(), good.key.clone(), "missing.pem"),
        (garbage.clone(), good.key.clone(), "garbage.pem"),
        // A key that is not the certificate's.
        (good.cert.clone(), other.key.clone(), "good.pem"),
    ];
    for (cert, key, named) in cases {
        let output = Command::new(env!("CARGO_BIN_EXE_wsloop"))
            .args(["--listen", "127.0.0.1:0", "--tls-cert", cert.to_str().unwrap(), "--tls-key", key.to_str().unwrap()])
            .stdout(Stdio::null())
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert_eq!(output.status.code(), Some(2), "{named}: {stderr}");
        assert_eq!(stderr.trim().lines().count(), 1, "{named}: {stderr}");
        assert!(stderr.contains(named) && !stderr.contains("listening"), "{named}: {stderr}");
    }
}

#[test]
fn sighup_reloads_the_certificate_without_dropping_connections() {
    let pki = Pki::new("reload");
    let first = pki.server("first", false);
    let server =
        ServerProcess::start(&["--tls-cert", first.cert.to_str().unwrap(), "--tls-key", first.key.to_str().unwrap()]);
    let mut old = wss(server.addr, &pki);
    echo_once(&mut old, Message::text("before"));
    let peer_cn = |ws: &WebSocket<TlsStream>| {
        let der = ws.get_ref().conn.peer_certificates().unwrap()[0].to_vec();
        String::from_utf8_lossy(&der).contains("second")
    };
    assert!(!peer_cn(&old));

    // New files under the same names, then SIGHUP.
    let second = pki.server("second", false);
    std::fs::copy(&second.cert, &first.cert).unwrap();
    std::fs::copy(&second.key, &first.key).unwrap();
    server.signal(libc::SIGHUP);
    server.wait_for_log("TLS certificate reloaded");
    let mut new = wss(server.addr, &pki);
    assert!(peer_cn(&new), "a handshake after SIGHUP still got the old certificate");
    echo_once(&mut old, Message::text("the old connection stays"));
    echo_once(&mut new, Message::text("the new one works"));

    // A broken file: the reload fails, says why, and the certificate in force stays.
    std::fs::write(&first.cert, "broken").unwrap();
    server.signal(libc::SIGHUP);
    server.wait_for_log("not reloaded");
    let mut after = wss(server.addr, &pki);
    assert!(peer_cn(&after));
    echo_once(&mut after, Message::text("still serving"));
}
/// A loadgen run that went through clean, every handshake a TLS one.
fn assert_clean_tls_run(run: &support::loadgen::Run) {
    assert_eq!(run.code, Some(0), "{run:#?}");
    assert_eq!(run.int("/errors/total"), 0, "{run:#?}");
    assert!(run.int("/messages/received") > 0, "{run:#?}");
    let handshakes = run.int("/handshake/count");
    assert!(handshakes > 0, "{run:#?}");
    assert_eq!(run.int("/tls/handshakes"), handshakes, "{run:#?}");
    assert_eq!(run.int("/tls/full") + run.int("/tls/resumed"), handshakes);
    assert_eq!(run.int("/handshake/tls_latency_us/count"), handshakes);
}

/// loadgen over `wss://` against wsloop itself, with the test CA: echo
/// (TLS 1.3 and 1.2, and many records per message), churn (every handshake
/// resumed from wsloop's tickets, or none), and broadcast; the server
/// counts no TLS failure.
#[test]
fn loadgen_over_wss_against_wsloop_in_echo_churn_and_broadcast() {
    let pki = Pki::new("loadgen");
    let files = pki.server("server", false);
    let ca = pki.ca_file();
    let ca = ca.to_str().unwrap();
    let server = TestServer::start(tls_config(&files));
    let url = format!("wss://{}/", server.addr);
    let echo = support::loadgen::loadgen(&[&url, "--ca", ca, "-c", "20", "-k", "2", "-d", "1s", "--warmup", "200ms"]);
    assert_clean_tls_run(&echo);
    assert_eq!(echo.int("/tls/handshakes"), 20);
    assert_eq!(echo.int("/tls/versions/TLSv1.3"), 20);
    let tls12 = support::loadgen::loadgen(&[
        &url,
        "--ca",
        ca,
        "--tls-version",
        "1.2",
        "-c",
        "4",
        "--size",
        "100KiB",
        "-d",
        "1s",
        "--warmup",
        "0",
    ]);
    assert_clean_tls_run(&tls12);
    assert_eq!(tls12.int("/tls/versions/TLSv1.2"), 4);
    let churn = |resume: &str| support::loadgen::tls_churn(&url, ca, "4", resume);
    let resumed = churn("tickets");
    assert_clean_tls_run(&resumed);
    let (handshakes, n) = (resumed.int("/tls/handshakes"), resumed.int("/tls/resumed"));
    assert!(handshakes >= 10, "{resumed:#?}");
    assert!(n * 10 >= handshakes * 9, "{n} of {handshakes} resumed");
    let full = churn("none");
    assert_clean_tls_run(&full);
    assert_eq!(full.int("/tls/resumed"), 0);
    let metrics = server.finish().metrics;
    assert_eq!(metrics.handshake_failures[wsloop::handshake::HandshakeFailure::Tls as usize], 0);
    assert!(
        metrics.websockets_opened >= 24 + handshakes + full.int("/tls/handshakes"),
        "{}",
        metrics.websockets_opened
    );

    let rooms = TestServer::start(Config { mode: wsloop::Mode::Broadcast, ..tls_config(&files) });
    let url = format!("wss://{}/", rooms.addr);
    let fan_out = support::loadgen::tls_broadcast(&url, ca, &[]);
    assert_clean_tls_run(&fan_out);
    assert_eq!(fan_out.int("/tls/handshakes"), 12);
    assert!(fan_out.int("/broadcast/delivered") > 0, "{fan_out:#?}");
    assert_eq!(fan_out.int("/broadcast/delivered"), fan_out.int("/broadcast/expected_deliveries"));
    assert_eq!(rooms.finish().metrics.handshake_failures[wsloop::handshake::HandshakeFailure::Tls as usize], 0);
}
