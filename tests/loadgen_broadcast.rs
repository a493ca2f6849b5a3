//! loadgen `--mode broadcast` against a small broadcast server on Python's
//! `websockets` (tests/support/py_broadcast_server.py, which joins by path
//! and fans out to every member, the sender included): clean runs pass,
//! each fault the server is told to commit fails the run with its own
//! counter, and slow subscribers' losses are reported apart without failing.
//! Short runs (about 1 to 3 s each); the checks are on what the report
//! says, never on how fast anything was.

mod support;

use support::loadgen::{loadgen, parse_hgrm, PythonServer, Run};

const SCRIPT: &str = "py_broadcast_server.py";

/// A broadcast run, 1 s after a 200 ms warm-up unless `extra` says otherwise.
fn broadcast(url: &str, extra: &[&str]) -> Run {
    let mut args = vec!["--url", url, "--mode", "broadcast", "--warmup", "200ms"];
    if !extra.contains(&"-d") {
        args.extend_from_slice(&["-d", "1s"]);
    }
    args.extend_from_slice(extra);
    loadgen(&args)
}

/// Exit 0, no error of any kind, and every delivery owed arrived.
fn assert_clean(run: &Run) {
    assert_eq!(run.code, Some(0), "{run:#?}");
    let kinds = ["total", "corrupt", "missing", "duplicate", "out_of_order", "foreign", "closed", "reset", "protocol"];
    for kind in kinds {
        assert_eq!(run.int(&format!("/errors/{kind}")), 0, "{kind}: {run:#?}");
    }
    assert!(run.stdout.contains("result: ok"), "{}", run.stdout);
    assert!(run.int("/broadcast/published") > 0, "{run:#?}");
    let owed = run.int("/broadcast/expected_deliveries");
    assert!(owed > 0);
    assert_eq!(run.int("/broadcast/delivered"), owed);
    assert!(run.stdout.contains("none missing"), "{}", run.stdout);
}

/// Exit 1 with exactly `count` errors of `kind` and none of the other
/// integrity kinds, named in the summary and the reason.
fn assert_failed_with(run: &Run, kind: &str, count: u64) {
    assert_eq!(run.code, Some(1), "{run:#?}");
    assert_eq!(run.int(&format!("/errors/{kind}")), count, "{kind}: {run:#?}");
    for other in ["corrupt", "missing", "duplicate", "out_of_order", "foreign", "closed", "reset", "protocol"] {
        if other != kind {
            assert_eq!(run.int(&format!("/errors/{other}")), 0, "{other} beside {kind}: {run:#?}");
        }
    }
    assert!(run.report()["errors"]["first"][kind].is_string(), "the first {kind} is described");
    assert!(run.stdout.contains("result: FAILED"), "{}", run.stdout);
    let reason = run.stderr.lines().last().unwrap_or_default();
    assert!(reason.contains("exceed --max-errors 0") && reason.contains(kind), "{}", run.stderr);
}

#[test]
fn closed_loop_over_rooms_and_threads_is_clean() {
    let server = PythonServer::start(SCRIPT, &[]);
    // 12 connections in 3 rooms of 4; 5 publishers (2, 2, 1 per room); 2 loops.
    let run = broadcast(&server.url, &["-c", "12", "--rooms", "3", "--publishers", "5", "-t", "2"]);
    assert_clean(&run);
    let json = run.report();
    assert_eq!(json["mode"], "broadcast");
    assert_eq!((json["settings"]["rooms"].as_u64(), json["settings"]["publishers"].as_u64()), (Some(3), Some(5)));
    assert_eq!(run.int("/broadcast/subscribers"), 12);
    // Every message reaches the 4 members of its room, its sender included.
    let (published, deliveries) = (run.int("/broadcast/published"), run.int("/broadcast/deliveries"));
    assert_eq!(deliveries, 4 * published, "{json:#}");
    assert_eq!(run.float("/broadcast/fan_out"), 4.0);
    assert_eq!(run.int("/messages/sent"), published);
    assert_eq!(run.int("/messages/received"), deliveries);
    assert_eq!(run.int("/latency_us/count"), deliveries);
    assert!(json["latency_uncorrected_us"].is_null(), "closed loop: intended = actual send time");
    let rows = parse_hgrm(run.hgrm.as_deref().expect("an .hgrm file"));
    assert_eq!(rows.last().unwrap().2, deliveries);
    assert!(run.stdout.contains("fan-out 4.0"), "{}", run.stdout);
    assert!(run.stdout.contains("by 5 publishers in 3 rooms"), "{}", run.stdout);
}

#[test]
fn open_loop_text_over_rooms_and_threads_is_clean() {
    let server = PythonServer::start(SCRIPT, &[]);
    let run = broadcast(
        &server.url,
        &["-c", "10", "--rooms", "2", "--publishers", "4", "-t", "2", "-R", "1000", "--text", "--size", "200"],
    );
    assert_clean(&run);
    // 1,000 msgs/s for 1 s, give or take the schedule's edges.
    let published = run.int("/broadcast/published");
    assert!((900..=1100).contains(&published), "published {published}");
    assert_eq!(run.int("/broadcast/deliveries"), 5 * published);
    let uncorrected = &run.report()["latency_uncorrected_us"];
    assert_eq!(uncorrected["count"].as_u64(), Some(5 * published), "open loop keeps both histograms");
    assert!(run.stdout.contains("from intended send time to each subscriber"), "{}", run.stdout);
}

/// Fault runs: 2 rooms of 3, one publisher each, closed loop; a short
/// message timeout so that the drain gives up on the dropped one quickly.
fn fault_run(fault: &str) -> Run {
    let server = PythonServer::start(SCRIPT, &[fault, "40"]);
    broadcast(&server.url, &["-c", "6", "--rooms", "2", "--publishers", "2", "--message-timeout", "1s"])
}

#[test]
fn a_dropped_delivery_is_missing() {
    let run = fault_run("--drop");
    assert_failed_with(&run, "missing", 1);
    let owed = run.int("/broadcast/expected_deliveries");
    assert_eq!(run.int("/broadcast/delivered"), owed - 1);
    assert!(run.stdout.contains(" 1 missing"), "{}", run.stdout);
}

#[test]
fn a_repeated_delivery_is_duplicate() {
    assert_failed_with(&fault_run("--duplicate"), "duplicate", 1);
}

#[test]
fn two_deliveries_swapped_are_out_of_order() {
    let run = fault_run("--reorder");
    assert_failed_with(&run, "out_of_order", 1);
    // Late, not lost.
    assert_eq!(run.int("/broadcast/delivered"), run.int("/broadcast/expected_deliveries"));
}

#[test]
fn a_delivery_into_another_room_is_foreign() {
    assert_failed_with(&fault_run("--leak"), "foreign", 1);
}

/// A slow subscriber against a server that drops what a member with over
/// 8 MB of backlog would get: its losses are shown apart, and the run passes.
/// 64 KiB messages, so that the kernel's socket buffers (several MB on
/// loopback) fill within the run.
#[test]
fn a_slow_subscriber_loses_messages_without_failing_the_run() {
    let server = PythonServer::start(SCRIPT, &["--slow-limit", "8000000", "--slow-policy", "drop"]);
    let run = broadcast(&server.url, &["-c", "4", "--slow", "1", "-R", "400", "--size", "64KiB", "-d", "2s"]);
    assert_clean(&run);
    assert_eq!(run.int("/broadcast/subscribers"), 3, "the slow one is counted apart");
    assert_eq!(run.int("/broadcast/slow/subscribers"), 1);
    let (owed, got, lost) = (
        run.int("/broadcast/slow/expected_deliveries"),
        run.int("/broadcast/slow/delivered"),
        run.int("/broadcast/slow/lost"),
    );
    assert_eq!(owed, run.int("/broadcast/expected_deliveries") / 3, "it was owed what each other member was");
    assert!(lost > 0 && got > 0 && got + lost == owed, "owed {owed}, got {got}, lost {lost}");
    assert!(run.report()["broadcast"]["slow"]["closed_by_server"].as_object().unwrap().is_empty());
    let line = run.stdout.lines().find(|l| l.trim_start().starts_with("slow ")).expect("a slow line");
    assert!(line.contains("1 subscriber stopped reading and lost") && line.contains("not a fault"), "{line}");
}

/// The other policy: the server closes the slow subscriber with 1008, which
/// is reported with its losses, and fails nothing either.
#[test]
fn a_slow_subscriber_closed_with_1008_is_reported() {
    let server = PythonServer::start(SCRIPT, &["--slow-limit", "8000000", "--slow-policy", "close"]);
    let run = broadcast(&server.url, &["-c", "4", "--slow", "1", "-R", "400", "--size", "64KiB", "-d", "2s"]);
    assert_clean(&run);
    assert_eq!(run.int("/broadcast/slow/closed_by_server/1008"), 1, "{:#}", run.report());
    assert!(run.int("/broadcast/slow/lost") > 0);
    assert!(run.stdout.contains("closed by the server: 1008 x1"), "{}", run.stdout);
}

#[test]
fn broadcast_flags_are_documented_and_checked() {
    let loadgen = env!("CARGO_BIN_EXE_loadgen");
    let out = std::process::Command::new(loadgen).arg("--help").output().unwrap();
    let help = String::from_utf8(out.stdout).unwrap();
    for flag in ["--rooms <ROOMS>", "--publishers <PUBLISHERS>", "--slow <SLOW>"] {
        assert!(help.contains(flag), "{flag} missing from --help");
    }
    assert!(help.contains("/r<i>"), "--help says how rooms are named");
    for args in [
        &["--rooms", "2"][..],
        &["--mode", "broadcast", "-c", "4", "--rooms", "5"],
        &["--mode", "broadcast", "-c", "4", "--publishers", "2", "--slow", "3"],
    ] {
        let out = std::process::Command::new(loadgen).args(args).output().unwrap();
        assert_eq!(out.status.code(), Some(2), "{args:?}");
        assert!(String::from_utf8_lossy(&out.stderr).starts_with("error:"), "{args:?}");
    }
}
