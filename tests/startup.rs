//! What wsloop says when it starts, or refuses to: the open-file limit
//! against the descriptors `--max-connections` needs, a `--metrics-listen`
//! address that is taken, and a `--stats-interval` below its floor.

mod support;

use std::{
    io::{BufRead, BufReader},
    os::unix::process::CommandExt,
    process::{Command, Stdio},
    sync::mpsc,
    time::Instant,
};

use support::WAIT;

/// How a start-up went: the exit status if the process ended within
/// [`WAIT`] (`None` if it was still running and was killed, or was killed
/// once it was listening), and every stderr line up to then.
struct Startup {
    code: Option<i32>,
    lines: Vec<String>,
}

/// Runs wsloop on a free port with `args` and, if `fd_limit` is given,
/// that open-file limit (soft and hard). Collects stderr until the
/// `listening on` line or the exit; a server still running is killed.
fn start(args: &[&str], fd_limit: Option<u64>) -> Startup {
    let mut command = Command::new(env!("CARGO_BIN_EXE_wsloop"));
    command.args(["--listen", "127.0.0.1:0"]).args(args).env("RUST_LOG", "info");
    if let Some(limit) = fd_limit {
        // SAFETY: setrlimit in the child before exec; no allocation, no locks.
        unsafe {
            command.pre_exec(move || {
                let limit = libc::rlimit { rlim_cur: limit, rlim_max: limit };
                if libc::setrlimit(libc::RLIMIT_NOFILE, &limit) != 0 {
                    return Err(std::io::Error::last_os_error());
                }
                Ok(())
            });
        }
    }
    let mut child = command.stdout(Stdio::null()).stderr(Stdio::piped()).spawn().expect("spawn wsloop");
    let stderr = child.stderr.take().expect("piped stderr");
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    let deadline = Instant::now() + WAIT;
    let mut lines = Vec::new();
    loop {
        match rx.recv_timeout(deadline.saturating_duration_since(Instant::now())) {
            Ok(line) => {
                let listening = line.contains("listening on");
                lines.push(line);
                if listening {
                    break;
                }
            }
            // Stderr closed: the process is exiting.
            Err(mpsc::RecvTimeoutError::Disconnected) => break,
            Err(mpsc::RecvTimeoutError::Timeout) => break,
        }
    }
    let code = loop {
        match child.try_wait().expect("wait for wsloop") {
            Some(status) => break status.code(),
            None if lines.iter().any(|l| l.contains("listening on")) || Instant::now() >= deadline => {
                let _ = child.kill();
                let _ = child.wait();
                break None;
            }
            None => std::thread::sleep(std::time::Duration::from_millis(10)),
        }
    };
    Startup { code, lines }
}

#[test]
fn the_fd_warning_compares_the_limit_with_connections_plus_headroom() {
    // The headroom is src/main.rs's FD_HEADROOM.
    const LIMIT: u64 = 1000;
    const HEADROOM: u64 = 64;
    let warning = |lines: &[String]| lines.iter().find(|l| l.contains("open-file limit")).cloned();

    // At the limit: the connections fit, the headroom does not. The
    // warning says so with the real figures, not that the limit is below
    // --max-connections.
    let startup = start(&["--max-connections", &LIMIT.to_string()], Some(LIMIT));
    let line = warning(&startup.lines).unwrap_or_else(|| panic!("no warning in {:?}", startup.lines));
    assert!(
        line.contains(&format!("limit={LIMIT}")) && line.contains(&format!("needed={}", LIMIT + HEADROOM)),
        "{line}"
    );
    assert!(!line.contains("below --max-connections"), "{line}");

    // Connections plus headroom exactly at the limit: nothing to warn about.
    let startup = start(&["--max-connections", &(LIMIT - HEADROOM).to_string()], Some(LIMIT));
    assert!(startup.lines.iter().any(|l| l.contains("listening on")), "{:?}", startup.lines);
    assert_eq!(warning(&startup.lines), None);
}

#[test]
fn a_taken_metrics_port_is_one_line_naming_that_address() {
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = taken.local_addr().unwrap().to_string();
    let startup = start(&["--metrics-listen", &addr], None);
    assert_eq!(startup.code, Some(1), "{:?}", startup.lines);
    let lines: Vec<&String> = startup.lines.iter().filter(|l| !l.trim().is_empty()).collect();
    assert_eq!(lines.len(), 1, "{lines:?}");
    assert!(lines[0].contains(&format!("cannot listen on {addr}")), "{}", lines[0]);
    assert!(lines[0].contains("--metrics-listen") && lines[0].contains("in use"), "{}", lines[0]);
    // The main address (which was free) is not blamed.
    assert!(!lines[0].contains("127.0.0.1:0"), "{}", lines[0]);
}

#[test]
fn a_stats_interval_below_the_floor_is_refused_with_exit_2() {
    let startup = start(&["--stats-interval", "1ms"], None);
    assert_eq!(startup.code, Some(2), "{:?}", startup.lines);
    let text = startup.lines.join("\n");
    assert!(text.contains("--stats-interval 1ms") && text.contains("1s minimum"), "{text}");
    // 0 still means off, and the floor itself is accepted.
    for ok in ["0", "1s"] {
        let startup = start(&["--stats-interval", ok], None);
        assert!(startup.lines.iter().any(|l| l.contains("listening on")), "{ok}: {:?}", startup.lines);
    }
}
