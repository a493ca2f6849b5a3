//! loadgen over `wss://`: against Python `websockets` over the standard
//! library's `ssl` (OpenSSL: tests/support/py_tls_server.py, from the
//! pinned virtualenv of scripts/pyenv.sh), with a throwaway CA and server
//! certificates made by each test (tests/support/tls.rs). Every mode, the
//! certificate checks (`--ca`, `--insecure`, a certificate for another
//! name), session resumption (TLS 1.3 tickets, TLS 1.2 session IDs) as
//! loadgen and the server both count it, and what a server that does not
//! speak TLS gets.

mod support;

use std::{
    io::{BufRead, BufReader, Read},
    net::TcpListener,
    path::Path,
    process::{Child, ChildStdout, Command, Stdio},
};

use support::{
    loadgen::{self as lg, loadgen, IDLE_PINGING},
    tls::{Pki, ServerFiles},
    TestServer,
};

/// A Python `wss://` server, stopped (and its own count of handshakes read) by [`TlsServer::finish`].
struct TlsServer {
    /// The server process.
    child: Child,
    /// Its stdout, after the port line: the final count comes there.
    stdout: BufReader<ChildStdout>,
    /// The port it listens on.
    port: u16,
}

/// The Python server's own count: TLS handshakes, and how many OpenSSL says resumed.
#[derive(Debug, PartialEq, Eq)]
struct ServerCount {
    handshakes: u64,
    resumed: u64,
}

impl TlsServer {
    /// Starts py_tls_server.py with `cert` and the extra `args`.
    fn start(cert: &ServerFiles, args: &[&str]) -> TlsServer {
        let root = Path::new(env!("CARGO_MANIFEST_DIR"));
        let out = Command::new(root.join("scripts/pyenv.sh")).output().expect("run scripts/pyenv.sh");
        assert!(out.status.success(), "scripts/pyenv.sh failed:\n{}", String::from_utf8_lossy(&out.stderr));
        let venv = String::from_utf8(out.stdout).expect("a path").trim().to_string();
        let mut child = Command::new(Path::new(&venv).join("bin/python"))
            .arg(root.join("tests/support/py_tls_server.py"))
            .arg("--cert")
            .arg(&cert.cert)
            .arg("--key")
            .arg(&cert.key)
            .args(args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .expect("start the Python TLS server");
        let mut stdout = BufReader::new(child.stdout.take().expect("piped stdout"));
        let mut first_line = String::new();
        stdout.read_line(&mut first_line).expect("read the port");
        let port = first_line.trim().parse().unwrap_or_else(|_| panic!("no port from the server: {first_line:?}"));
        TlsServer { child, stdout, port }
    }

    /// `wss://HOST:PORT/`.
    fn url(&self, host: &str) -> String {
        format!("wss://{host}:{}/", self.port)
    }

    /// Stops the server (it exits when its stdin closes) and returns its count.
    fn finish(mut self) -> ServerCount {
        drop(self.child.stdin.take());
        let mut rest = String::new();
        let _ = self.stdout.read_to_string(&mut rest);
        let _ = self.child.wait();
        let words: Vec<&str> = rest.split_whitespace().collect();
        match words.as_slice() {
            ["handshakes", n, "resumed", m] => {
                ServerCount { handshakes: n.parse().expect("a count"), resumed: m.parse().expect("a count") }
            }
            _ => panic!("no count from the server: {rest:?}"),
        }
    }
}

impl Drop for TlsServer {
    fn drop(&mut self) {
        drop(self.child.stdin.take());
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A CA, its file as loadgen's `--ca` argument, and a server certificate
/// for 127.0.0.1 and localhost.
struct TestPki {
    /// Held so that its directory (the files below) lives as long as this.
    _ca: Pki,
    ca_pem: String,
    cert: ServerFiles,
}

fn test_pki(name: &str) -> TestPki {
    let ca = Pki::new(name);
    let cert = ca.server_for("server", &["localhost", "127.0.0.1"]);
    let ca_pem = ca.ca_file().to_str().expect("a UTF-8 temporary path").to_string();
    TestPki { _ca: ca, ca_pem, cert }
}

/// A run with every message echoed intact and every handshake a TLS one.
fn assert_intact_over_tls(run: &lg::Run) {
    assert_eq!(run.code, Some(0), "{run:#?}");
    for kind in ["total", "corrupt", "missing", "duplicate", "closed", "reset", "protocol"] {
        assert_eq!(run.int(&format!("/errors/{kind}")), 0, "{kind}: {run:#?}");
    }
    assert!(run.int("/messages/received") > 0, "{run:#?}");
    let handshakes = run.int("/handshake/count");
    assert!(handshakes > 0);
    assert_eq!(run.int("/tls/handshakes"), handshakes);
    // The three parts of every measured handshake.
    for part in ["tcp_latency_us", "tls_latency_us", "upgrade_latency_us"] {
        assert_eq!(run.int(&format!("/handshake/{part}/count")), handshakes, "{part}");
    }
    let total = run.float("/handshake/latency_us/p50");
    assert!(run.float("/handshake/tls_latency_us/p50") <= total * 1.01, "the TLS part is within the whole");
    assert!(run.stdout.contains("    tls        p50"), "{}", run.stdout);
}

#[test]
fn wss_echo_with_the_test_ca_in_every_size_and_encoding() {
    let TestPki { ca_pem, cert, .. } = &test_pki("echo");
    let server = TlsServer::start(cert, &[]);
    let url = server.url("127.0.0.1");
    let run = loadgen(&[&url, "--ca", ca_pem, "-c", "10", "-k", "4", "-d", "1s", "--warmup", "200ms"]);
    assert_intact_over_tls(&run);
    assert_eq!(run.int("/tls/handshakes"), 10);
    assert_eq!(run.int("/tls/versions/TLSv1.3"), 10);
    assert_eq!(run.report()["settings"]["tls_trust"], "ca");
    assert_eq!(run.report()["settings"]["tls_resume"], "tickets");
    assert_eq!(run.int("/handshake/tls_failures/bad_certificate"), 0);
    // By name (SNI localhost), text, and messages of many records.
    let by_name = server.url("localhost");
    let text = loadgen(&[&by_name, "--ca", ca_pem, "-c", "3", "--text", "--size", "2KiB", "-d", "1s", "--warmup", "0"]);
    assert_intact_over_tls(&text);
    let large = loadgen(&[&url, "--ca", ca_pem, "-c", "2", "--size", "200KiB", "-k", "2", "-d", "1s", "--warmup", "0"]);
    assert_intact_over_tls(&large);
    // TLS 1.2 as well.
    let tls12 = loadgen(&[&url, "--ca", ca_pem, "-c", "3", "--tls-version", "1.2", "-d", "500ms", "--warmup", "0"]);
    assert_intact_over_tls(&tls12);
    assert_eq!(tls12.int("/tls/versions/TLSv1.2"), 3);
    let count = server.finish();
    assert_eq!(count.handshakes, 10 + 3 + 2 + 3, "the server saw every handshake: {count:?}");
}

#[test]
fn a_certificate_for_another_name_fails_as_tls_unless_insecure() {
    let ca = Pki::new("wrong-name");
    let wrong = ca.server_for("server", &["wrong.example"]);
    let server = TlsServer::start(&wrong, &[]);
    let url = server.url("127.0.0.1");
    let ca_file = ca.ca_file();
    let refused = loadgen(&[&url, "--ca", ca_file.to_str().unwrap(), "-c", "3", "-d", "500ms", "--warmup", "0"]);
    assert_eq!(refused.code, Some(1), "{refused:#?}");
    assert_eq!(refused.int("/handshake/failures/tls"), 3);
    assert_eq!(refused.int("/handshake/tls_failures/bad_certificate"), 3);
    assert_eq!(refused.int("/errors/connect_failures"), 3);
    let first = refused.report()["errors"]["first"]["tls"].as_str().unwrap_or_default().to_string();
    assert!(first.contains("NotValidForName") || first.contains("not valid for name"), "{first}");
    assert!(refused.stdout.contains("tls failed   bad_certificate x3"), "{}", refused.stdout);
    // The built-in roots do not know the test CA either.
    let unknown = loadgen(&[&url, "-c", "2", "-d", "500ms", "--warmup", "0"]);
    assert_eq!(unknown.int("/handshake/tls_failures/bad_certificate"), 2, "{unknown:#?}");
    assert!(unknown.report()["errors"]["first"]["tls"].as_str().unwrap_or_default().contains("UnknownIssuer"));
    // --insecure takes it anyway.
    let insecure = loadgen(&[&url, "--insecure", "-c", "3", "-d", "1s", "--warmup", "0"]);
    assert_intact_over_tls(&insecure);
    assert_eq!(insecure.report()["settings"]["tls_trust"], "insecure");
}

#[test]
fn churn_resumes_tls_13_sessions_with_tickets_and_none_without() {
    let TestPki { ca_pem, cert, .. } = &test_pki("churn13");
    let server = TlsServer::start(cert, &[]);
    let url = server.url("127.0.0.1");
    let churn = |resume: &str| lg::tls_churn(&url, ca_pem, "4", resume);
    let resumed = churn("tickets");
    assert_intact_over_tls(&resumed);
    let (handshakes, n) = (resumed.int("/tls/handshakes"), resumed.int("/tls/resumed"));
    assert!(handshakes >= 10, "{resumed:#?}");
    // The warm-up made the first (full) handshakes; from then on each
    // connection finds a ticket that an earlier one got.
    assert!(n * 10 >= handshakes * 9, "{n} of {handshakes} resumed");
    assert_eq!(resumed.int("/tls/full") + n, handshakes);
    assert!(resumed.stdout.contains(&format!("{} resumed", n)), "{}", resumed.stdout);
    let full = churn("none");
    assert_intact_over_tls(&full);
    assert_eq!(full.int("/tls/resumed"), 0);
    assert_eq!(full.report()["settings"]["tls_resume"], "none");
    let count = server.finish();
    // The server agrees: at least what loadgen measured (the window) resumed, and none of the second run.
    assert!(count.resumed >= n && count.resumed < count.handshakes, "{count:?}");
}

#[test]
fn churn_resumes_tls_12_sessions_by_id() {
    let TestPki { ca_pem, cert, .. } = &test_pki("churn12");
    // No tickets: the server resumes from its session cache, by session ID.
    let server = TlsServer::start(cert, &["--max-version", "1.2", "--no-tickets"]);
    let url = server.url("127.0.0.1");
    let run = lg::tls_churn(&url, ca_pem, "3", "ids");
    assert_intact_over_tls(&run);
    let handshakes = run.int("/tls/handshakes");
    assert_eq!(run.int("/tls/versions/TLSv1.2"), handshakes);
    assert!(run.int("/tls/resumed") * 10 >= handshakes * 9, "{run:#?}");
    assert_eq!(run.report()["settings"]["tls_resume"], "ids");
    let count = server.finish();
    assert!(count.resumed >= run.int("/tls/resumed"), "{count:?}");
}

#[test]
fn rate_idle_and_broadcast_over_tls() {
    let TestPki { ca_pem, cert, .. } = &test_pki("modes");
    let echo = TlsServer::start(cert, &[]);
    let url = echo.url("127.0.0.1");
    let rate = loadgen(&[&url, "--ca", ca_pem, "--mode", "rate", "-R", "500", "-c", "5", "-d", "1s", "--warmup", "0"]);
    assert_intact_over_tls(&rate);
    assert_eq!(rate.int("/messages/received"), rate.int("/messages/sent"));
    let idle = loadgen(&[&[url.as_str(), "--ca", ca_pem, "-c", "20"], IDLE_PINGING].concat());
    assert_intact_over_tls(&idle);
    assert_eq!(idle.int("/connections/established"), 20);
    drop(echo);
    let rooms = TlsServer::start(cert, &["--app", "broadcast"]);
    let url = rooms.url("127.0.0.1");
    let fan_out = lg::tls_broadcast(&url, ca_pem, &["--threads", "2"]);
    assert_intact_over_tls(&fan_out);
    assert_eq!(fan_out.int("/broadcast/delivered"), fan_out.int("/broadcast/expected_deliveries"));
    assert!(fan_out.int("/broadcast/delivered") > 0);
}

/// A server that does not speak TLS (wsloop itself, which answers the
/// ClientHello with a 400), and one that never answers: failures `tls`
/// (reason `protocol`) and `handshake_timeout`.
#[test]
fn servers_that_do_not_speak_tls_get_their_failure_kinds() {
    let plain = TestServer::default();
    let url = format!("wss://{}/", plain.addr);
    let run = loadgen(&[&url, "--insecure", "-c", "3", "-d", "500ms", "--warmup", "0"]);
    assert_eq!(run.code, Some(1), "{run:#?}");
    assert_eq!(run.int("/handshake/failures/tls"), 3, "{run:#?}");
    assert_eq!(run.int("/handshake/tls_failures/protocol"), 3);
    drop(plain);

    let silent = TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("wss://{}/", silent.local_addr().unwrap());
    let run = loadgen(&[&url, "--insecure", "-c", "2", "--connect-timeout", "300ms", "-d", "500ms", "--warmup", "0"]);
    assert_eq!(run.int("/handshake/failures/handshake_timeout"), 2, "{run:#?}");
    let first = run.report()["errors"]["first"]["handshake_timeout"].as_str().unwrap_or_default().to_string();
    assert!(first.contains("TLS"), "{first}");
}

#[test]
fn tls_flags_are_documented_and_need_wss() {
    let out = Command::new(env!("CARGO_BIN_EXE_loadgen")).arg("--help").output().unwrap();
    let help = String::from_utf8(out.stdout).unwrap();
    for flag in ["--ca", "--insecure", "--tls-resume", "--tls-version", "wss://"] {
        assert!(help.contains(flag), "--help does not mention {flag}");
    }
    assert!(help.contains("INSECURE: accept ANY server certificate"), "{help}");
    for args in [
        &["ws://127.0.0.1:9/", "--insecure"][..],
        &["ws://127.0.0.1:9/", "--tls-resume", "none"],
        &["wss://127.0.0.1:9/", "--ca", "/nonexistent/ca.pem"],
        &["wss://127.0.0.1:9/", "--ca", "x.pem", "--insecure"],
    ] {
        let out = Command::new(env!("CARGO_BIN_EXE_loadgen")).args(args).output().unwrap();
        assert_eq!(out.status.code(), Some(2), "{args:?}");
    }
    // A ws:// report says nothing of TLS but the handshake's two parts.
    let server = TestServer::default();
    let run = loadgen(&[&format!("ws://{}/", server.addr), "-c", "2", "-d", "300ms", "--warmup", "0"]);
    assert_eq!(run.code, Some(0), "{run:#?}");
    assert!(run.report()["tls"].is_null() && run.report()["handshake"]["tls_latency_us"].is_null());
    assert!(run.report()["settings"]["tls_trust"].is_null());
    assert_eq!(run.int("/handshake/tcp_latency_us/count"), 2);
    assert_eq!(run.int("/handshake/upgrade_latency_us/count"), 2);
}
