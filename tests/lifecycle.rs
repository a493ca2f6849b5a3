//! Connections over time: idle pings and idle closes, graceful shutdown on
//! SIGTERM (and the impatient second signal), and running out of descriptors.

mod support;

use std::{
    io::Read,
    net::TcpStream,
    os::unix::process::CommandExt,
    process::Command,
    time::{Duration, Instant},
};

use support::*;
use tungstenite::Message;
use wsloop::Config;

#[test]
fn a_silent_peer_is_pinged_then_closed_with_1001() {
    let server = TestServer::start(Config { idle_timeout: Duration::from_millis(600), ..Config::default() });
    // Raw socket: reads what the server sends but never answers.
    let mut silent = raw_upgrade(server.addr);
    let started = Instant::now();
    let mut first = [0u8; 2];
    silent.read_exact(&mut first).unwrap();
    assert_eq!(first, [0x89, 0x00], "an empty ping first");
    let mut close = [0u8; 4];
    silent.read_exact(&mut close).unwrap();
    assert_eq!(close[0], 0x88, "then a close frame");
    assert_eq!(u16::from_be_bytes([close[2], close[3]]), 1001);
    assert!(started.elapsed() >= Duration::from_millis(500), "closed too early: {:?}", started.elapsed());
    let metrics = server.finish().metrics;
    assert_eq!(metrics.idle_closes, 1);
}

#[test]
fn a_quiet_peer_that_answers_pings_stays_connected() {
    let server = TestServer::start(Config { idle_timeout: Duration::from_millis(400), ..Config::default() });
    let mut ws = connect(server.addr);
    ws.get_mut().set_read_timeout(Some(Duration::from_millis(50))).unwrap();
    // Three idle timeouts long: tungstenite answers each ping while we read.
    let until = Instant::now() + Duration::from_millis(1200);
    let mut pings = 0;
    while Instant::now() < until {
        match ws.read() {
            Ok(Message::Ping(_)) => pings += 1,
            Ok(other) => panic!("unexpected {other:?}"),
            Err(tungstenite::Error::Io(e))
                if matches!(e.kind(), std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut) => {}
            Err(e) => panic!("connection lost: {e}"),
        }
    }
    assert!(pings >= 2, "expected idle pings, saw {pings}");
    ws.get_mut().set_read_timeout(Some(WAIT)).unwrap();
    ws.send(Message::text("still here")).unwrap();
    assert_eq!(next_message(&mut ws), Message::text("still here"));
}

#[test]
fn sigterm_sends_1001_to_every_client_and_exits_0() {
    let mut server = ServerProcess::start(&["--shutdown-timeout", "5s"]);
    let mut clients: Vec<_> = (0..50).map(|_| connect(server.addr)).collect();
    for ws in &mut clients {
        ws.send(Message::text("hi")).unwrap();
        assert_eq!(next_message(ws), Message::text("hi"));
    }
    server.signal(libc::SIGTERM);
    for ws in &mut clients {
        assert_eq!(expect_close(ws), 1001);
        // tungstenite sends our close reply when we read on.
        let _ = ws.read();
    }
    assert_eq!(server.wait_exit(WAIT), Some(0));
    // No more accepts.
    assert!(TcpStream::connect(server.addr).is_err());
    server.wait_for_log("shutdown complete");
}

#[test]
fn a_second_signal_exits_at_once() {
    let mut server = ServerProcess::start(&["--shutdown-timeout", "60s"]);
    // Never answers the close frame, so the graceful shutdown would wait 60 s.
    let _stubborn = raw_upgrade(server.addr);
    server.signal(libc::SIGINT);
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(server.wait_exit(Duration::ZERO), None, "still draining");
    server.signal(libc::SIGINT);
    assert_eq!(server.wait_exit(WAIT), Some(128 + libc::SIGINT));
}

#[test]
fn out_of_descriptors_does_not_spin_and_recovers() {
    const LIMIT: u64 = 48;
    let mut command = Command::new(env!("CARGO_BIN_EXE_wsloop"));
    // SAFETY: setrlimit in the child before exec; no allocation, no locks.
    unsafe {
        command.pre_exec(|| {
            let limit = libc::rlimit { rlim_cur: LIMIT, rlim_max: LIMIT };
            if libc::setrlimit(libc::RLIMIT_NOFILE, &limit) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    let server = ServerProcess::start_with(&mut command);
    // More connections than descriptors: the kernel completes them all, the
    // server can accept only some.
    let flood: Vec<TcpStream> = (0..LIMIT + 20).map(|_| TcpStream::connect(server.addr).unwrap()).collect();
    std::thread::sleep(Duration::from_millis(300));
    let before = server.cpu_ticks();
    std::thread::sleep(Duration::from_secs(1));
    let used = server.cpu_ticks() - before;
    // A spinning accept loop burns ~100 ticks a second; a paused one, ~0.
    assert!(used < 30, "server used {used} CPU ticks in 1 s while out of descriptors");
    server.wait_for_log("out of descriptors");
    drop(flood);
    // Once they are gone, service resumes.
    eventually("service after the flood", || {
        let Ok(stream) = TcpStream::connect(server.addr) else { return false };
        stream.set_read_timeout(Some(Duration::from_secs(2))).unwrap();
        match tungstenite::client(format!("ws://{}/", server.addr), stream) {
            Ok((mut ws, _)) => {
                ws.send(Message::text("back")).unwrap();
                next_message(&mut ws) == Message::text("back")
            }
            Err(_) => false,
        }
    });
}

#[test]
fn bad_flags_exit_2_and_a_taken_port_exits_1_naming_it() {
    let output = Command::new(env!("CARGO_BIN_EXE_wsloop")).args(["--max-message-size", "lots"]).output().unwrap();
    assert_eq!(output.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("--max-message-size"), "{stderr}");

    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = taken.local_addr().unwrap().to_string();
    let output = Command::new(env!("CARGO_BIN_EXE_wsloop")).args(["--listen", &addr]).output().unwrap();
    assert_eq!(output.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains(&addr) && stderr.contains("in use"), "{stderr}");
}
