//! Nobody reading the output must not kill anyone: wsloop keeps serving,
//! and still shuts down cleanly, after the reader of its stderr is gone
//! (`wsloop 2>&1 | head -2`); loadgen finishes its run, writes its report
//! and exits with its usual status after the readers of its stdout and
//! stderr are gone.

mod support;

use std::{
    io::{BufRead, BufReader},
    net::SocketAddr,
    process::{Command, Stdio},
    sync::mpsc,
    time::{Duration, Instant},
};

use support::{
    loadgen::{spawn_loadgen, temp_path},
    *,
};
use tungstenite::Message;

/// Reads lines from `pipe` on a thread until one satisfies `wanted`, closes
/// the pipe's read end, then sends that line: once it is received, nobody
/// reads the pipe any more.
fn read_then_close<R: std::io::Read + Send + 'static>(
    pipe: R,
    wanted: impl Fn(&str) -> bool + Send + 'static,
) -> mpsc::Receiver<String> {
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let mut lines = BufReader::new(pipe).lines().map_while(Result::ok);
        let found = lines.find(|line| wanted(line));
        drop(lines); // closes the read end
        if let Some(line) = found {
            let _ = tx.send(line);
        }
    });
    rx
}

/// A request the server refuses (no `Sec-WebSocket-Key`): 400, and one log line.
fn refused_request(addr: SocketAddr) -> u16 {
    let request = "GET / HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\r\n";
    http_exchange(addr, request.as_bytes()).status
}

#[test]
fn wsloop_keeps_serving_and_closes_cleanly_after_its_log_reader_is_gone() {
    let mut child = Command::new(env!("CARGO_BIN_EXE_wsloop"))
        // A stats line every second: more log lines while nobody reads.
        .args(["--listen", "127.0.0.1:0", "--stats-interval", "1s", "--shutdown-timeout", "5s"])
        .env("RUST_LOG", "info")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn wsloop");
    let started = Instant::now();
    let stderr = child.stderr.take().expect("piped stderr");
    let line = read_then_close(stderr, |l| l.contains("listening on"))
        .recv_timeout(WAIT)
        .expect("wsloop printed no 'listening on' line");
    let addr: SocketAddr = line
        .split("listening on ")
        .nth(1)
        .and_then(|rest| rest.split_whitespace().next())
        .and_then(|a| a.parse().ok())
        .unwrap_or_else(|| panic!("no address in {line:?}"));
    let mut server = ServerProcess { child, addr, log: mpsc::channel().1 };

    // Each refusal logs a line, written into the closed pipe (EPIPE).
    for _ in 0..5 {
        assert_eq!(refused_request(addr), 400);
    }
    let mut ws = connect(addr);
    ws.send(Message::text("after the pipe closed")).unwrap();
    assert_eq!(next_message(&mut ws), Message::text("after the pipe closed"));

    // Past two stats intervals, so stats lines were written too.
    std::thread::sleep(Duration::from_millis(2200).saturating_sub(started.elapsed()));
    assert_eq!(refused_request(addr), 400);
    ws.send(Message::binary(vec![7u8; 1000])).unwrap();
    assert_eq!(next_message(&mut ws), Message::binary(vec![7u8; 1000]));

    assert_eq!(server.wait_exit(Duration::ZERO), None, "wsloop exited while serving");
    server.signal(libc::SIGTERM);
    assert_eq!(expect_close(&mut ws), 1001);
    let _ = ws.read(); // tungstenite sends our close reply
    assert_eq!(server.wait_exit(WAIT), Some(0));
}

#[test]
fn loadgen_finishes_and_reports_after_its_output_readers_are_gone() {
    let server = TestServer::default();
    let json = temp_path("closed-pipes.json");
    let url = format!("ws://{}/", server.addr);
    let mut child =
        spawn_loadgen(&["--url", &url, "-c", "4", "--duration", "1500ms", "--warmup", "0", "--progress"], &json);
    // Close stdout at once: the summary meets a closed pipe.
    drop(child.stdout.take());
    // Read the first progress line, then close stderr: later progress lines
    // and the final messages meet a closed pipe.
    let stderr = child.stderr.take().expect("piped stderr");
    read_then_close(stderr, |l| l.contains("conns")).recv_timeout(WAIT).expect("no progress line");

    let deadline = Instant::now() + support::loadgen::RUN_LIMIT;
    let status = loop {
        if let Some(status) = child.try_wait().expect("wait for loadgen") {
            break status;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            panic!("loadgen did not finish");
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    let report = std::fs::read(&json).ok().and_then(|bytes| serde_json::from_slice::<serde_json::Value>(&bytes).ok());
    let _ = std::fs::remove_file(&json);
    assert_eq!(status.code(), Some(0), "loadgen exited with {status}");
    let report = report.expect("loadgen wrote its JSON report");
    assert_eq!(report["result"]["ok"], true, "{report:#}");
    assert!(report["messages"]["received"].as_u64().unwrap_or(0) > 0, "{report:#}");
}
