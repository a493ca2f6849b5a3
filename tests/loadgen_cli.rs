//! loadgen as a user meets it: the URL as an argument, an interrupted run
//! reported as such, the live line redrawn in place on a terminal and one
//! line per tick in a log, and the saturation verdict in every summary.

mod support;

use std::{
    io::Read,
    os::fd::{FromRawFd, OwnedFd},
    process::{Command, Stdio},
    sync::mpsc,
    time::{Duration, Instant},
};

use support::{
    loadgen::{closed_port, loadgen, spawn_loadgen, temp_path, RUN_LIMIT},
    TestServer, WAIT,
};

/// Exit status of an interrupted run (loadgen's `EXIT_INTERRUPTED`).
const EXIT_INTERRUPTED: i32 = 3;

fn url(server: &TestServer) -> String {
    format!("ws://{}/", server.addr)
}

#[test]
fn the_url_argument_wins_over_loadgen_url_and_clashes_with_the_flag() {
    let server = TestServer::default();
    let nowhere = format!("ws://127.0.0.1:{}/", closed_port());
    // LOADGEN_URL points nowhere; the argument (the server) is used.
    let output = Command::new(env!("CARGO_BIN_EXE_loadgen"))
        .args([url(&server).as_str(), "-c", "2", "-d", "300ms", "--warmup", "0", "--quiet"])
        .env("LOADGEN_URL", &nowhere)
        .output()
        .expect("run loadgen");
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert_eq!(output.status.code(), Some(0), "{stdout}");
    assert!(stdout.contains(&url(&server)) && stdout.contains("result: ok"), "{stdout}");
    // The same URL twice, as an argument and with --url: a usage error.
    let target = url(&server);
    let run = loadgen(&[&target, "--url", &target, "-d", "300ms"]);
    assert_eq!(run.code, Some(2), "{run:#?}");
    assert!(run.stderr.contains("twice"), "{}", run.stderr);
}

#[test]
fn an_interrupted_run_says_so_and_exits_3() {
    let server = TestServer::default();
    let json = temp_path("interrupted.json");
    let mut child =
        spawn_loadgen(&[url(&server).as_str(), "-c", "4", "-d", "60s", "--warmup", "0", "--progress"], &json);
    // Wait until it measures, then Ctrl-C.
    let stderr = child.stderr.take().expect("piped stderr");
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let mut reader = std::io::BufReader::new(stderr);
        let mut line = String::new();
        while std::io::BufRead::read_line(&mut reader, &mut line).is_ok_and(|n| n > 0) {
            if tx.send(std::mem::take(&mut line)).is_err() {
                break;
            }
        }
    });
    let deadline = Instant::now() + WAIT;
    loop {
        let line = rx.recv_timeout(deadline.saturating_duration_since(Instant::now())).expect("no measure tick");
        if line.contains("measure") {
            break;
        }
    }
    // SAFETY: kill(2) on our own child's pid.
    assert_eq!(unsafe { libc::kill(child.id() as i32, libc::SIGINT) }, 0);
    let mut stdout = String::new();
    child.stdout.take().expect("piped stdout").read_to_string(&mut stdout).expect("read stdout");
    let deadline = Instant::now() + RUN_LIMIT;
    let status = loop {
        if let Some(status) = child.try_wait().expect("wait") {
            break status;
        }
        assert!(Instant::now() < deadline, "loadgen did not end after SIGINT");
        std::thread::sleep(Duration::from_millis(20));
    };
    let report: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&json).expect("the JSON report")).expect("valid JSON");
    let _ = std::fs::remove_file(&json);

    assert_eq!(status.code(), Some(EXIT_INTERRUPTED), "{stdout}");
    let result = stdout.lines().find(|l| l.starts_with("result:")).unwrap_or_default();
    assert!(result.starts_with("result: interrupted by SIGINT"), "{stdout}");
    assert_eq!(report["result"]["ok"], false);
    assert_eq!(report["result"]["status"], "interrupted");
    assert_eq!(report["result"]["interrupted_by"], "SIGINT");
    assert_eq!(report["result"]["exit_code"], EXIT_INTERRUPTED);
    // What ran is still reported, shorter than asked for.
    assert!(report["messages"]["received"].as_u64().unwrap_or(0) > 0, "{report:#}");
    assert!(report["window_s"].as_f64().unwrap_or(99.0) < 60.0, "{report:#}");
    assert_eq!(report["errors"]["total"], 0, "{report:#}");
}

/// Every summary says whether loadgen's own core was saturated, in the
/// text and in the JSON.
#[test]
fn every_summary_says_whether_loadgen_was_saturated() {
    let server = TestServer::default();
    let target = url(&server);
    let run = loadgen(&[&target, "-c", "4", "-d", "500ms", "--warmup", "0", "--quiet"]);
    assert_eq!(run.code, Some(0), "{run:#?}");
    let busy = run.float("/cpu/loop_busy");
    assert!((0.0..=1.0).contains(&busy), "{busy}");
    let saturated = run.report()["cpu"]["client_saturated"].as_bool().expect("client_saturated is a bool");
    assert_eq!(saturated, busy >= 0.9);
    let line = run.stdout.lines().find(|l| l.contains("loadgen busy")).unwrap_or_else(|| panic!("{}", run.stdout));
    assert!(line.contains(if saturated { "SATURATED" } else { "not saturated" }), "{line}");
    assert_eq!(run.stdout.contains("warning: loadgen's own core was saturated"), saturated, "{}", run.stdout);
}

#[test]
fn in_a_log_the_progress_is_one_line_per_tick() {
    let server = TestServer::default();
    let target = url(&server);
    let run = loadgen(&[&target, "-c", "2", "-d", "2200ms", "--warmup", "0", "--progress"]);
    assert_eq!(run.code, Some(0), "{run:#?}");
    let ticks: Vec<&str> = run.stderr.lines().filter(|l| l.contains("conns")).collect();
    assert!(ticks.len() >= 2, "{}", run.stderr);
    assert!(!run.stderr.contains('\r') && !run.stderr.contains('\x1b'), "{:?}", run.stderr);
}

/// A pseudo-terminal `columns` wide: (the side loadgen writes to, the side we read).
fn pty(columns: u16) -> (OwnedFd, OwnedFd) {
    let (mut master, mut slave) = (-1, -1);
    let size = libc::winsize { ws_row: 24, ws_col: columns, ws_xpixel: 0, ws_ypixel: 0 };
    // SAFETY: openpty writes the two descriptors; the name buffer is not asked for.
    let rc = unsafe { libc::openpty(&mut master, &mut slave, std::ptr::null_mut(), std::ptr::null(), &size) };
    assert_eq!(rc, 0, "openpty: {}", std::io::Error::last_os_error());
    // SAFETY: both descriptors are fresh and ours alone.
    unsafe { (OwnedFd::from_raw_fd(slave), OwnedFd::from_raw_fd(master)) }
}

#[test]
fn on_a_terminal_the_progress_line_is_redrawn_in_place() {
    const COLUMNS: u16 = 60;
    let server = TestServer::default();
    let (terminal, master) = pty(COLUMNS);
    let mut child = Command::new(env!("CARGO_BIN_EXE_loadgen"))
        .args([url(&server).as_str(), "-c", "2", "-d", "2200ms", "--warmup", "0"])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::from(terminal))
        .spawn()
        .expect("start loadgen");
    // Read the terminal until loadgen (the only holder of its other side) exits.
    let reader = std::thread::spawn(move || {
        let mut master = std::fs::File::from(master);
        let mut seen = Vec::new();
        let mut chunk = [0u8; 4096];
        // Reading a pty whose other side is closed fails with EIO: the end.
        while let Ok(n @ 1..) = master.read(&mut chunk) {
            seen.extend_from_slice(&chunk[..n]);
        }
        String::from_utf8_lossy(&seen).into_owned()
    });
    let mut stdout = String::new();
    child.stdout.take().expect("piped stdout").read_to_string(&mut stdout).expect("read stdout");
    let deadline = Instant::now() + RUN_LIMIT;
    while child.try_wait().expect("wait").is_none() {
        assert!(Instant::now() < deadline, "loadgen did not finish");
        std::thread::sleep(Duration::from_millis(20));
    }
    let shown = reader.join().expect("reader thread");
    assert!(stdout.contains("result: ok"), "{stdout}");

    let redraws: Vec<&str> = shown.split("\r\x1b[2K").skip(1).collect();
    assert!(redraws.len() >= 2, "{shown:?}");
    // One line, redrawn: no line ends until the run does (the terminal shows "\n" as "\r\n").
    assert_eq!(shown.matches('\n').count(), 1, "{shown:?}");
    assert!(shown.ends_with("\r\n"), "{shown:?}");
    for redraw in &redraws {
        let text = redraw.trim_end_matches(['\r', '\n']);
        assert!(text.contains("conns"), "{redraw:?}");
        assert!(text.chars().count() < usize::from(COLUMNS), "wider than the terminal: {text:?}");
    }
}
