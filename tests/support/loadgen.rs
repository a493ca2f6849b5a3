//! Helpers shared by the loadgen integration tests: running the binary with
//! a time bound, reading its JSON report and its .hgrm file.

use std::{
    io::Read,
    path::PathBuf,
    process::{Command, Stdio},
    sync::atomic::{AtomicUsize, Ordering},
    time::{Duration, Instant},
};

/// No loadgen run in these tests may take longer than this.
pub const RUN_LIMIT: Duration = Duration::from_secs(90);

/// What one loadgen run produced.
#[derive(Debug)]
pub struct Run {
    pub code: Option<i32>,
    pub stdout: String,
    pub stderr: String,
    /// The `--json` report, if the run wrote one.
    pub json: Option<serde_json::Value>,
    /// The `--hgrm` text, if the run wrote one.
    pub hgrm: Option<String>,
}

impl Run {
    /// The JSON report (panics with the run's output if there is none).
    pub fn report(&self) -> &serde_json::Value {
        self.json.as_ref().unwrap_or_else(|| panic!("no JSON report\n{self:#?}"))
    }

    /// An integer field of the report by JSON pointer, e.g. `/errors/total`.
    pub fn int(&self, pointer: &str) -> u64 {
        self.report()
            .pointer(pointer)
            .and_then(serde_json::Value::as_u64)
            .unwrap_or_else(|| panic!("{pointer} is not an integer in\n{:#}", self.report()))
    }

    pub fn float(&self, pointer: &str) -> f64 {
        self.report()
            .pointer(pointer)
            .and_then(serde_json::Value::as_f64)
            .unwrap_or_else(|| panic!("{pointer} is not a number in\n{:#}", self.report()))
    }
}

/// A one-second idle run whose connections ping every 200 ms (add `-c N`).
pub const IDLE_PINGING: &[&str] = &["--mode", "idle", "--ping-interval", "200ms", "-d", "1s", "--warmup", "0"];

/// One second of `wss://` churn (connect, one echo, close) on `connections`
/// connections, trusting `ca`, resuming sessions by `resume` (none, tickets
/// or ids), after a 300 ms warm-up that makes the first full handshakes.
pub fn tls_churn(url: &str, ca: &str, connections: &str, resume: &str) -> Run {
    loadgen(&[
        url,
        "--ca",
        ca,
        "--mode",
        "churn",
        "-c",
        connections,
        "--tls-resume",
        resume,
        "-d",
        "1s",
        "--warmup",
        "300ms",
    ])
}

/// One second of `wss://` broadcast, trusting `ca`: 12 connections over 2
/// rooms, 2 publishers at 40 msgs/s in all, after a 200 ms warm-up; `extra`
/// adds flags (e.g. `--threads 2`).
pub fn tls_broadcast(url: &str, ca: &str, extra: &[&str]) -> Run {
    let args = [url, "--ca", ca, "--mode", "broadcast", "-c", "12", "--rooms", "2", "--publishers", "2", "-R", "40"];
    loadgen(&[&args[..], extra, &["-d", "1s", "--warmup", "200ms"]].concat())
}

/// A fresh path under the system temp directory.
pub fn temp_path(name: &str) -> PathBuf {
    static COUNTER: AtomicUsize = AtomicUsize::new(0);
    let n = COUNTER.fetch_add(1, Ordering::Relaxed);
    std::env::temp_dir().join(format!("loadgen-test-{}-{n}-{name}", std::process::id()))
}

/// Starts loadgen with `args` plus `--json JSON`, stdin closed, stdout and
/// stderr piped: for the tests that read or close its output themselves.
pub fn spawn_loadgen(args: &[&str], json: &std::path::Path) -> std::process::Child {
    Command::new(env!("CARGO_BIN_EXE_loadgen"))
        .args(args)
        .arg("--json")
        .arg(json)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start loadgen")
}

/// Runs loadgen with `args` plus `--json` and `--hgrm` files, bounded by [`RUN_LIMIT`].
pub fn loadgen(args: &[&str]) -> Run {
    let json = temp_path("report.json");
    let hgrm = temp_path("latency.hgrm");
    let hgrm_arg = hgrm.to_str().expect("a UTF-8 temporary path");
    let mut child = spawn_loadgen(&[args, &["--hgrm", hgrm_arg]].concat(), &json);
    let mut stdout_pipe = child.stdout.take().unwrap();
    let mut stderr_pipe = child.stderr.take().unwrap();
    let out_reader = std::thread::spawn(move || {
        let mut s = String::new();
        let _ = stdout_pipe.read_to_string(&mut s);
        s
    });
    let err_reader = std::thread::spawn(move || {
        let mut s = String::new();
        let _ = stderr_pipe.read_to_string(&mut s);
        s
    });
    let started = Instant::now();
    let status = loop {
        if let Some(status) = child.try_wait().expect("wait for loadgen") {
            break status;
        }
        if started.elapsed() > RUN_LIMIT {
            let _ = child.kill();
            let _ = child.wait();
            panic!("loadgen {args:?} ran longer than {RUN_LIMIT:?}");
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    let run = Run {
        code: status.code(),
        stdout: out_reader.join().unwrap(),
        stderr: err_reader.join().unwrap(),
        json: std::fs::read(&json).ok().map(|bytes| serde_json::from_slice(&bytes).expect("the report is valid JSON")),
        hgrm: std::fs::read_to_string(&hgrm).ok(),
    };
    let _ = std::fs::remove_file(&json);
    let _ = std::fs::remove_file(&hgrm);
    run
}

/// The rows of an .hgrm file that plotters read: (value ms, quantile, total count, 1/(1-q)).
/// Panics if the file does not have the percentile-spectrum shape.
pub fn parse_hgrm(text: &str) -> Vec<(f64, f64, u64, f64)> {
    assert!(text.contains("Value") && text.contains("Percentile") && text.contains("TotalCount"), "{text}");
    let mut rows = Vec::new();
    for line in text.lines().filter(|l| !l.starts_with('#')) {
        let fields: Vec<&str> = line.split_whitespace().collect();
        if fields.len() != 4 {
            continue;
        }
        let (Ok(value), Ok(quantile), Ok(count)) =
            (fields[0].parse::<f64>(), fields[1].parse::<f64>(), fields[2].parse::<u64>())
        else {
            continue;
        };
        let inverse = if fields[3] == "inf" { f64::INFINITY } else { fields[3].parse().expect("1/(1-q) column") };
        rows.push((value, quantile, count, inverse));
    }
    assert!(!rows.is_empty(), "no percentile rows in\n{text}");
    for pair in rows.windows(2) {
        assert!(pair[0].0 <= pair[1].0 && pair[0].1 <= pair[1].1 && pair[0].2 <= pair[1].2, "not monotonic: {pair:?}");
    }
    let footer = text.lines().find(|l| l.starts_with("#[Max")).expect("#[Max ...] footer");
    let total: u64 = footer.rsplit('=').next().unwrap().trim().trim_end_matches(']').trim().parse().unwrap();
    assert_eq!(rows.last().unwrap().2, total, "the last row counts every value");
    rows
}

/// A port on 127.0.0.1 where nothing listens (bound, then released).
pub fn closed_port() -> u16 {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    listener.local_addr().unwrap().port()
}

/// A Python server from `tests/support/` (in the project's pinned
/// virtualenv, `scripts/pyenv.sh`) on a free port, stopped when dropped.
/// A failure to set it up fails the test.
pub struct PythonServer {
    /// The server process.
    child: std::process::Child,
    /// `ws://127.0.0.1:PORT/`.
    pub url: String,
}

impl PythonServer {
    /// Starts `tests/support/<script>` with `args`; it must print its port on its first line.
    pub fn start(script: &str, args: &[&str]) -> PythonServer {
        use std::io::{BufRead, BufReader};
        let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
        let out = Command::new(root.join("scripts/pyenv.sh")).output().expect("run scripts/pyenv.sh");
        assert!(out.status.success(), "scripts/pyenv.sh failed:\n{}", String::from_utf8_lossy(&out.stderr));
        let venv = String::from_utf8(out.stdout).expect("a path").trim().to_string();
        let mut child = Command::new(std::path::Path::new(&venv).join("bin/python"))
            .arg(root.join("tests/support").join(script))
            .args(args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .unwrap_or_else(|e| panic!("start {script}: {e}"));
        let mut first_line = String::new();
        BufReader::new(child.stdout.take().expect("piped stdout")).read_line(&mut first_line).expect("read the port");
        let port: u16 =
            first_line.trim().parse().unwrap_or_else(|_| panic!("no port from {script} {args:?}: {first_line:?}"));
        PythonServer { child, url: format!("ws://127.0.0.1:{port}/") }
    }
}

impl Drop for PythonServer {
    fn drop(&mut self) {
        drop(self.child.stdin.take()); // the server exits when its stdin closes
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
