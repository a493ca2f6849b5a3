//! loadgen against wsloop, both for real: the server runs in-process on
//! 127.0.0.1:0, loadgen as its binary. Short runs (about 2 s); the checks
//! are on what the report says, never on how fast anything was.

mod support;

use std::{net::SocketAddr, thread::JoinHandle};

use support::loadgen::{closed_port, loadgen, parse_hgrm, Run};

struct Wsloop {
    url: String,
    stop: wsloop::StopHandle,
    thread: Option<JoinHandle<()>>,
}

impl Wsloop {
    fn start() -> Wsloop {
        Wsloop::with(wsloop::Config::default())
    }

    fn with(config: wsloop::Config) -> Wsloop {
        let config = wsloop::Config { listen: "127.0.0.1:0".parse().unwrap(), ..config };
        let mut server = wsloop::Server::bind(config).expect("bind wsloop");
        let addr: SocketAddr = server.local_addr();
        let stop = server.stop_handle();
        let thread = std::thread::spawn(move || {
            server.run().expect("wsloop runs");
        });
        Wsloop { url: format!("ws://{addr}/"), stop, thread: Some(thread) }
    }
}

impl Drop for Wsloop {
    fn drop(&mut self) {
        self.stop.shutdown();
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

fn run(server: &Wsloop, args: &[&str]) -> Run {
    let mut all = vec!["--url", &server.url];
    all.extend_from_slice(args);
    loadgen(&all)
}

fn assert_clean(run: &Run) {
    assert_eq!(run.code, Some(0), "{run:#?}");
    assert_eq!(run.int("/errors/total"), 0, "{run:#?}");
    assert_eq!(run.report()["result"]["ok"], true);
    assert!(run.stdout.contains("result: ok"), "{}", run.stdout);
}

/// The latency summary is a consistent set of percentiles over `count` values.
fn assert_latency(run: &Run, pointer: &str, count: u64) {
    let l = &run.report().pointer(pointer).unwrap_or_else(|| panic!("no {pointer}"));
    assert_eq!(l["count"].as_u64(), Some(count), "{pointer}");
    let order = ["min", "p50", "p90", "p99", "p99_9", "p99_99", "max"];
    let values: Vec<f64> = order.iter().map(|k| l[k].as_f64().unwrap_or_else(|| panic!("{pointer}/{k}"))).collect();
    assert!(values.windows(2).all(|w| w[0] <= w[1]), "{pointer} percentiles out of order: {values:?}");
    assert!(values[0] > 0.0);
}

#[test]
fn echo_mode_reports_json_and_hgrm() {
    let server = Wsloop::start();
    let run = run(&server, &["--mode", "echo", "-c", "20", "--pipeline", "2", "-d", "2s", "--warmup", "300ms"]);
    assert_clean(&run);
    let report = run.report();
    assert_eq!(report["schema"], "loadgen-report/1");
    assert_eq!(report["mode"], "echo");
    assert_eq!(run.int("/settings/connections"), 20);
    assert_eq!(run.int("/settings/size_bytes"), 512);
    assert_eq!(run.int("/connections/established"), 20);
    assert_eq!(run.int("/connections/failed"), 0);
    assert_eq!(run.int("/connections/dropped"), 0);
    assert_eq!(run.int("/handshake/count"), 20);
    let received = run.int("/messages/received");
    assert!(received > 0);
    assert_eq!(run.int("/messages/sent"), received, "every message sent in the window came back");
    assert_eq!(run.int("/messages/bytes_received"), received * 512);
    assert!(run.float("/messages/per_s") > 0.0);
    assert!(run.float("/window_s") > 1.0);
    assert_latency(&run, "/latency_us", received);
    assert_latency(&run, "/handshake/latency_us", 20);
    assert!(report["latency_uncorrected_us"].is_null(), "closed loop: intended time is the send time");
    for kind in ["corrupt", "missing", "duplicate", "closed", "reset", "protocol", "connect_failures"] {
        assert_eq!(run.int(&format!("/errors/{kind}")), 0, "{kind}");
    }
    assert!(run.float("/cpu/per_message_us") > 0.0);
    assert!(!report["timeline"].as_array().unwrap().is_empty());
    let rows = parse_hgrm(run.hgrm.as_deref().expect("an .hgrm file"));
    assert_eq!(rows.last().unwrap().2, received);
}

#[test]
fn echo_stops_after_the_requested_message_count() {
    let server = Wsloop::start();
    let run = run(&server, &["-c", "10", "--pipeline", "4", "--messages", "3000", "--warmup", "0", "-d", "60s"]);
    assert_clean(&run);
    assert_eq!(run.int("/messages/sent"), 3000);
    assert_eq!(run.int("/messages/received"), 3000);
}

#[test]
fn echo_with_two_threads_and_text_payloads() {
    let server = Wsloop::start();
    let run = run(&server, &["-c", "9", "-t", "2", "--text", "--size", "100", "-d", "1s", "--warmup", "0"]);
    assert_clean(&run);
    assert_eq!(run.int("/connections/established"), 9);
    assert_eq!(run.report()["settings"]["encoding"], "text");
    assert!(run.int("/messages/received") > 0);
}

#[test]
fn rate_mode_sends_on_schedule_and_keeps_both_histograms() {
    let server = Wsloop::start();
    let run = run(&server, &["--mode", "rate", "--rate", "2000", "-c", "10", "-d", "2s", "--warmup", "300ms"]);
    assert_clean(&run);
    // The schedule alone decides what is sent: 2000/s for 2 s, however late the sends.
    let sent = run.int("/messages/sent");
    assert!((3990..=4010).contains(&sent), "sent {sent}");
    let received = run.int("/messages/received");
    assert_eq!(received, sent);
    assert_latency(&run, "/latency_us", received);
    assert_latency(&run, "/latency_uncorrected_us", received);
    // Each message's intended time is at or before its send time, so every
    // corrected percentile is at least the uncorrected one.
    for key in ["p50", "p99", "max"] {
        let corrected = run.float(&format!("/latency_us/{key}"));
        let uncorrected = run.float(&format!("/latency_uncorrected_us/{key}"));
        assert!(corrected >= uncorrected, "{key}: {corrected} < {uncorrected}");
    }
    assert!(run.stdout.contains("uncorrected"), "{}", run.stdout);
    parse_hgrm(run.hgrm.as_deref().unwrap());
}

#[test]
fn idle_mode_holds_every_connection_and_pings() {
    let server = Wsloop::start();
    let run = run(
        &server,
        &[
            "--mode",
            "idle",
            "-c",
            "300",
            "--ping-interval",
            "250ms",
            "-d",
            "2s",
            "--warmup",
            "0",
            "--source-ip",
            "127.0.0.1",
            "--source-ip",
            "127.0.0.2",
        ],
    );
    assert_clean(&run);
    assert_eq!(run.int("/connections/established"), 300);
    assert_eq!(run.int("/connections/peak_open"), 300);
    assert_eq!(run.int("/connections/dropped"), 0);
    // 300 connections pinging every 250 ms for 2 s.
    let pings = run.int("/messages/received");
    assert!((2390..=2410).contains(&pings), "pings {pings}");
    assert_latency(&run, "/latency_us", pings);
    let timeline = run.report()["timeline"].as_array().unwrap();
    assert!(timeline.iter().any(|t| t["connections_open"] == 300), "{timeline:?}");
}

#[test]
fn churn_mode_measures_handshakes() {
    let server = Wsloop::start();
    let run = run(&server, &["--mode", "churn", "-c", "8", "-d", "2s", "--warmup", "200ms"]);
    assert_clean(&run);
    let cycles = run.int("/messages/churn_cycles");
    assert!(cycles > 0);
    assert!(run.float("/handshake/per_s") > 0.0);
    assert!(run.int("/handshake/count") >= cycles);
    assert!(run.int("/connections/established") > 8, "connections are replaced");
    assert_eq!(run.int("/connections/peak_open"), 8);
}

#[test]
fn subprotocols_are_negotiated_and_checked() {
    let config = wsloop::Config { subprotocol: vec!["chat.v2".into()], ..Default::default() };
    let server = Wsloop::with(config);
    let agreed =
        run(&server, &["-c", "3", "--subprotocol", "chat.v1,chat.v2", "-H", "X-Test: 1", "-d", "1s", "--warmup", "0"]);
    assert_clean(&agreed);
    // The server selects none of these: RFC 6455 lets the client fail the connection, and loadgen does.
    let refused = run(&server, &["-c", "3", "--subprotocol", "other", "-d", "1s", "--warmup", "0"]);
    assert_eq!(refused.code, Some(1), "{refused:#?}");
    assert_eq!(refused.int("/handshake/failures/bad_response"), 3);
}

#[test]
fn unreachable_target_fails_with_one_line() {
    let url = format!("ws://127.0.0.1:{}/", closed_port());
    let run = loadgen(&["--url", &url, "-c", "5", "-d", "1s"]);
    assert_eq!(run.code, Some(1), "{run:#?}");
    assert_eq!(run.int("/handshake/failures/refused"), 5);
    assert_eq!(run.report()["result"]["ok"], false);
    let last = run.stderr.lines().last().unwrap_or_default();
    assert!(last.contains("unreachable") && last.contains("refused 5"), "{}", run.stderr);
}

#[test]
fn bad_flags_exit_2_with_a_reason() {
    for args in
        [&["--size", "8"][..], &["--mode", "rate"], &["--connections", "zero"], &["--url", "ws://x/", "--insecure"]]
    {
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_loadgen")).args(args).output().unwrap();
        assert_eq!(out.status.code(), Some(2), "{args:?}");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(stderr.starts_with("error:"), "{args:?}: {stderr}");
    }
}

#[test]
fn help_documents_every_flag() {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_loadgen")).arg("--help").output().unwrap();
    assert!(out.status.success());
    let help = String::from_utf8(out.stdout).unwrap();
    let flags = [
        "--url",
        "--mode",
        "--connections",
        "--threads",
        "--connect-rate",
        "--connect-batch",
        "--connect-timeout",
        "--source-ip",
        "--header",
        "--subprotocol",
        "--size",
        "--text",
        "--binary",
        "--pipeline",
        "--rate",
        "--duration",
        "--warmup",
        "--messages",
        "--message-timeout",
        "--ping-interval",
        "--max-errors",
        "--json",
        "--hgrm",
        "--quiet",
        "--progress",
    ];
    for flag in flags {
        // A flag line: "      --flag <VALUE>" or "  -x, --flag <VALUE>".
        let line = help.lines().find(|l| {
            let t = l.trim();
            let t = if t.len() > 4 && t.as_bytes()[2] == b',' { &t[4..] } else { t };
            t == flag || t.starts_with(&format!("{flag} "))
        });
        let line = line.unwrap_or_else(|| panic!("{flag} missing from --help:\n{help}"));
        // Clap puts the help text on the lines after the flag in long help.
        let at = help.find(line).unwrap() + line.len();
        let text = help[at..].lines().nth(1).unwrap_or_default().trim();
        assert!(!text.is_empty() && !text.starts_with('-'), "{flag} has no help text:\n{help}");
    }
}
