//! Helpers shared by the integration tests: an in-process server on port 0,
//! blocking clients, raw frames for the malformed-input tests, and the
//! `wsloop` binary as a child process for the signal and memory tests, and
//! throwaway TLS certificates (`tls`).
#![allow(dead_code)] // each test file uses a different subset

pub mod loadgen;
pub mod redis;
pub mod tls;

use std::{
    io::{BufRead, BufReader, Read, Write},
    net::{SocketAddr, TcpStream},
    process::{Child, Command, Stdio},
    thread::JoinHandle,
    time::{Duration, Instant},
};

use tungstenite::{
    protocol::{frame::coding::CloseCode, CloseFrame, Role},
    Message, WebSocket,
};
use wsloop::{Config, Server, StopHandle, Summary};

/// Generous bound for anything a test waits on: long enough for a loaded CI
/// machine, short enough that a hang fails the test instead of the job.
pub const WAIT: Duration = Duration::from_secs(10);

/// A server running on its own thread, stopped when dropped.
pub struct TestServer {
    pub addr: SocketAddr,
    pub stop: StopHandle,
    thread: Option<JoinHandle<Summary>>,
}

impl TestServer {
    pub fn start(config: Config) -> TestServer {
        let app = wsloop::modes::Builtin::for_config(&config);
        Self::start_app(config, app)
    }

    /// A server running `app` (an application as a user writes one).
    pub fn start_app<A: wsloop::app::App + Send + 'static>(config: Config, app: A) -> TestServer {
        let config = Config { listen: "127.0.0.1:0".parse().unwrap(), ..config };
        let mut server = Server::bind_with(config, app).expect("bind 127.0.0.1:0");
        let addr = server.local_addr();
        let stop = server.stop_handle();
        let thread = std::thread::spawn(move || server.run().expect("event loop"));
        TestServer { addr, stop, thread: Some(thread) }
    }

    pub fn default() -> TestServer {
        Self::start(Config::default())
    }

    /// Stops the server gracefully and returns its final figures.
    pub fn finish(mut self) -> Summary {
        self.stop.shutdown();
        self.thread.take().unwrap().join().expect("server thread panicked")
    }
}

impl Drop for TestServer {
    fn drop(&mut self) {
        if let Some(thread) = self.thread.take() {
            self.stop.stop_now();
            let _ = thread.join();
        }
    }
}

pub type Client = WebSocket<TcpStream>;

/// A blocking WebSocket client, with read and write timeouts so that a
/// missing answer fails the test instead of hanging it.
pub fn connect(addr: SocketAddr) -> Client {
    connect_to(addr, "/")
}

/// [`connect`] with a request path (in broadcast mode: the room).
pub fn connect_to(addr: SocketAddr, path: &str) -> Client {
    let stream = TcpStream::connect(addr).expect("connect");
    stream.set_read_timeout(Some(WAIT)).unwrap();
    stream.set_write_timeout(Some(WAIT)).unwrap();
    let (ws, response) = tungstenite::client(format!("ws://{addr}{path}"), stream).expect("handshake");
    assert_eq!(response.status(), 101);
    ws
}

/// `/stats`, parsed.
pub fn stats(addr: SocketAddr) -> serde_json::Value {
    let response = http_exchange(addr, b"GET /stats HTTP/1.1\r\nHost: x\r\n\r\n");
    assert_eq!(response.status, 200, "{}", response.body);
    assert!(response.head.contains("Content-Type: application/json"));
    serde_json::from_str(&response.body).expect("/stats is JSON")
}

/// A `POST` of `body` to `path`, with extra header lines (each ending in CRLF).
pub fn post(addr: SocketAddr, path: &str, headers: &str, body: &[u8]) -> HttpResponse {
    let mut request = format!("POST {path} HTTP/1.1\r\nHost: x\r\n{headers}\r\n").into_bytes();
    request.extend_from_slice(body);
    http_exchange(addr, &request)
}

/// Reads until a data message, a close frame or an error; pongs are skipped.
pub fn next_message(ws: &mut Client) -> Message {
    loop {
        match ws.read() {
            Ok(Message::Pong(_)) | Ok(Message::Ping(_)) => continue,
            Ok(message) => return message,
            Err(e) => panic!("expected a message, got {e}"),
        }
    }
}

/// Reads until the server's close frame and returns its code; the
/// connection must then end (tungstenite answers the close for us).
pub fn expect_close(ws: &mut Client) -> u16 {
    let deadline = Instant::now() + WAIT;
    while Instant::now() < deadline {
        match ws.read() {
            Ok(Message::Close(frame)) => return frame.map_or(1005, |f| u16::from(f.code)),
            Ok(_) => continue,
            Err(e) => panic!("expected a close frame, got error: {e}"),
        }
    }
    panic!("no close frame within {WAIT:?}");
}

/// Performs the opening handshake by hand and returns the raw stream,
/// positioned right after the 101 response.
pub fn raw_upgrade(addr: SocketAddr) -> TcpStream {
    let mut stream = TcpStream::connect(addr).expect("connect");
    stream.set_read_timeout(Some(WAIT)).unwrap();
    stream.write_all(upgrade_request("/").as_bytes()).unwrap();
    let head = read_head(&mut stream);
    assert!(head.starts_with("HTTP/1.1 101"), "{head}");
    stream
}

pub fn upgrade_request(path: &str) -> String {
    format!(
        "GET {path} HTTP/1.1\r\nHost: localhost\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
         Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n"
    )
}

/// Reads byte by byte up to the end of an HTTP head (so no frame byte after
/// it is consumed).
pub fn read_head(stream: &mut TcpStream) -> String {
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        match stream.read(&mut byte) {
            Ok(1) => head.push(byte[0]),
            other => {
                panic!("connection ended inside the response head ({other:?}): {:?}", String::from_utf8_lossy(&head))
            }
        }
    }
    String::from_utf8(head).unwrap()
}

/// An HTTP response read to the end of the connection.
pub struct HttpResponse {
    pub status: u16,
    pub head: String,
    pub body: String,
}

/// Sends `request` as is and reads the whole response (the server closes after it).
pub fn http_exchange(addr: SocketAddr, request: &[u8]) -> HttpResponse {
    let mut stream = TcpStream::connect(addr).expect("connect");
    stream.set_read_timeout(Some(WAIT)).unwrap();
    // The server may answer and close before taking all of a too-large request.
    let _ = stream.write_all(request);
    read_response(&mut stream)
}

pub fn read_response(stream: &mut TcpStream) -> HttpResponse {
    let mut bytes = Vec::new();
    let _ = stream.read_to_end(&mut bytes);
    let text = String::from_utf8_lossy(&bytes).into_owned();
    let (head, body) = text.split_once("\r\n\r\n").unwrap_or_else(|| panic!("no complete response: {text:?}"));
    let status =
        head.split(' ').nth(1).and_then(|s| s.parse().ok()).unwrap_or_else(|| panic!("bad status line: {head}"));
    HttpResponse { status, head: head.to_string(), body: body.to_string() }
}

/// A client frame, masked as RFC 6455 requires (or not, when testing that
/// the server refuses unmasked frames). `first` is FIN/RSV/opcode.
pub fn frame(first: u8, payload: &[u8], masked: bool) -> Vec<u8> {
    let mut out = vec![first];
    let mask_bit = if masked { 0x80 } else { 0 };
    match payload.len() {
        n if n < 126 => out.push(mask_bit | n as u8),
        n if n < 65536 => {
            out.push(mask_bit | 126);
            out.extend_from_slice(&(n as u16).to_be_bytes());
        }
        n => {
            out.push(mask_bit | 127);
            out.extend_from_slice(&(n as u64).to_be_bytes());
        }
    }
    if masked {
        let key = [0x37, 0xfa, 0x21, 0x3d];
        out.extend_from_slice(&key);
        out.extend(payload.iter().enumerate().map(|(i, b)| b ^ key[i % 4]));
    } else {
        out.extend_from_slice(payload);
    }
    out
}

/// Opcode bytes with FIN set.
pub const TEXT: u8 = 0x81;
pub const BINARY: u8 = 0x82;
pub const CLOSE: u8 = 0x88;
pub const PING: u8 = 0x89;

/// Sends raw bytes after a good handshake and returns the close code the
/// server answers with (read through tungstenite's own client).
pub fn close_code_after(addr: SocketAddr, bytes: &[u8]) -> u16 {
    let mut stream = raw_upgrade(addr);
    stream.write_all(bytes).unwrap();
    let mut ws = WebSocket::from_raw_socket(stream, Role::Client, None);
    expect_close(&mut ws)
}

pub fn close_frame(code: u16) -> Message {
    Message::Close(Some(CloseFrame { code: CloseCode::from(code), reason: "".into() }))
}

/// The `wsloop` binary, started on a free port with `args`; its stderr is
/// read until the `listening on` line gives the real port.
pub struct ServerProcess {
    pub child: Child,
    pub addr: SocketAddr,
    pub log: std::sync::mpsc::Receiver<String>,
}

impl ServerProcess {
    pub fn start(args: &[&str]) -> ServerProcess {
        Self::start_with(Command::new(env!("CARGO_BIN_EXE_wsloop")).args(args))
    }

    pub fn start_with(command: &mut Command) -> ServerProcess {
        let mut child = command
            .arg("--listen")
            .arg("127.0.0.1:0")
            .env("RUST_LOG", "info")
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn wsloop");
        let stderr = child.stderr.take().unwrap();
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        let addr = loop {
            let line = rx.recv_timeout(WAIT).expect("wsloop printed no 'listening on' line");
            if let Some(rest) = line.split("listening on ").nth(1) {
                break rest.split_whitespace().next().unwrap().parse().expect("address in the log line");
            }
        };
        ServerProcess { child, addr, log: rx }
    }

    pub fn pid(&self) -> i32 {
        self.child.id() as i32
    }

    pub fn signal(&self, signal: i32) {
        // SAFETY: kill(2) on our own child's pid.
        assert_eq!(unsafe { libc::kill(self.pid(), signal) }, 0);
    }

    /// Waits for the process to exit, up to `limit`; returns its exit code.
    pub fn wait_exit(&mut self, limit: Duration) -> Option<i32> {
        let deadline = Instant::now() + limit;
        while Instant::now() < deadline {
            if let Some(status) = self.child.try_wait().unwrap() {
                return status.code();
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        None
    }

    /// Resident memory in bytes, from /proc.
    pub fn rss_bytes(&self) -> u64 {
        proc_status_kib(self.pid(), "VmRSS:") * 1024
    }

    /// User plus system CPU time used so far, in clock ticks.
    pub fn cpu_ticks(&self) -> u64 {
        let stat = std::fs::read_to_string(format!("/proc/{}/stat", self.pid())).unwrap();
        let after_name = &stat[stat.rfind(')').unwrap() + 2..];
        let fields: Vec<&str> = after_name.split_whitespace().collect();
        // utime and stime are fields 14 and 15 of stat(5); 12 and 13 after the name.
        fields[11].parse::<u64>().unwrap() + fields[12].parse::<u64>().unwrap()
    }
}

impl Drop for ServerProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

pub fn proc_status_kib(pid: i32, field: &str) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let line = status.lines().find(|l| l.starts_with(field)).unwrap_or_else(|| panic!("no {field} in status"));
    line.split_whitespace().nth(1).unwrap().parse().unwrap()
}

/// Polls `condition` until it holds or `WAIT` passes.
pub fn eventually(what: &str, mut condition: impl FnMut() -> bool) {
    let deadline = Instant::now() + WAIT;
    while Instant::now() < deadline {
        if condition() {
            return;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    panic!("timed out waiting for {what}");
}

/// The project's pinned Python virtualenv (made by `scripts/pyenv.sh` on
/// first use): its directory.
pub fn python_venv() -> std::path::PathBuf {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
    let out = Command::new(root.join("scripts/pyenv.sh")).output().expect("run scripts/pyenv.sh");
    assert!(out.status.success(), "scripts/pyenv.sh failed:\n{}", String::from_utf8_lossy(&out.stderr));
    std::path::PathBuf::from(String::from_utf8(out.stdout).expect("a path").trim())
}
