//! loadgen against a server we did not write: the Python `websockets`
//! echo server (tests/support/py_echo_server.py) from the project's pinned
//! virtualenv (scripts/pyenv.sh). A failure to set that up fails the test.

mod support;

use std::{
    io::{BufRead, BufReader},
    path::Path,
    process::{Child, Command, Stdio},
};

use support::loadgen::{self as lg, loadgen, IDLE_PINGING};

struct PyServer {
    child: Child,
    url: String,
}

impl PyServer {
    fn start() -> PyServer {
        let root = Path::new(env!("CARGO_MANIFEST_DIR"));
        let out = Command::new(root.join("scripts/pyenv.sh")).output().expect("run scripts/pyenv.sh");
        assert!(out.status.success(), "scripts/pyenv.sh failed:\n{}", String::from_utf8_lossy(&out.stderr));
        let venv = String::from_utf8(out.stdout).unwrap().trim().to_string();
        let mut child = Command::new(Path::new(&venv).join("bin/python"))
            .arg(root.join("tests/support/py_echo_server.py"))
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .expect("start the Python echo server");
        let mut first_line = String::new();
        BufReader::new(child.stdout.take().unwrap()).read_line(&mut first_line).expect("read the port");
        let port: u16 = first_line.trim().parse().unwrap_or_else(|_| panic!("no port from the server: {first_line:?}"));
        PyServer { child, url: format!("ws://127.0.0.1:{port}/") }
    }
}

impl Drop for PyServer {
    fn drop(&mut self) {
        drop(self.child.stdin.take()); // the server exits when its stdin closes
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn assert_intact(run: &lg::Run) {
    assert_eq!(run.code, Some(0), "{run:#?}");
    for kind in ["total", "corrupt", "missing", "duplicate", "closed", "reset", "protocol"] {
        assert_eq!(run.int(&format!("/errors/{kind}")), 0, "{kind}: {run:#?}");
    }
    assert!(run.int("/messages/received") > 0);
    assert_eq!(run.int("/messages/received"), run.int("/messages/sent"));
}

#[test]
fn python_websockets_echoes_binary_and_text_intact() {
    let server = PyServer::start();
    let binary = loadgen(&["--url", &server.url, "-c", "10", "--pipeline", "4", "-d", "2s", "--warmup", "200ms"]);
    assert_intact(&binary);
    let text = loadgen(&["--url", &server.url, "-c", "5", "--text", "--size", "2KiB", "-d", "1s", "--warmup", "0"]);
    assert_intact(&text);
    let large = loadgen(&["--url", &server.url, "-c", "2", "--size", "200KiB", "-d", "1s", "--warmup", "0"]);
    assert_intact(&large);
}

#[test]
fn python_websockets_in_rate_and_idle_modes() {
    let server = PyServer::start();
    let rate =
        loadgen(&["--url", &server.url, "--mode", "rate", "-R", "1000", "-c", "10", "-d", "2s", "--warmup", "0"]);
    assert_intact(&rate);
    let idle = loadgen(&[&["--url", &server.url, "-c", "50"], IDLE_PINGING].concat());
    assert_intact(&idle);
    assert_eq!(idle.int("/connections/established"), 50);
}
