//! loadgen beyond one server: several targets (a room's members on two
//! wsloop processes joined through a real redis-server, every delivery
//! accounted for, latency per target), idle connections that time a
//! stamped `loadgen publish` reaching them, and what `loadgen publish`
//! says when the server refuses.

mod support;

use std::{process::Command, thread::JoinHandle};

use support::{
    loadgen::{closed_port, loadgen, temp_path, Run},
    redis::RedisServer,
    *,
};

const TOKEN: &str = "s3cret";

/// A broadcast wsloop process joined to `redis`, with publishing on.
fn node(redis: &RedisServer) -> ServerProcess {
    ServerProcess::start(&["--mode", "broadcast", "--redis", &redis.url(), "--publish-token", TOKEN])
}

/// A member of `/feed` on each node, held by the test, and both nodes
/// subscribed in Redis: joining is asynchronous across processes (a message
/// published before the other node's SUBSCRIBE is in place reaches only its
/// own process), so the runs below start once the room is known everywhere.
fn hold_room(redis: &RedisServer, nodes: &[&ServerProcess]) -> Vec<Client> {
    let keepers = nodes.iter().map(|n| connect_to(n.addr, "/feed")).collect();
    eventually("the room subscribed on every node", || redis.subscribers("wsloop:/feed") == nodes.len() as i64);
    keepers
}

/// loadgen with `args` on a thread of its own (the test does something meanwhile).
fn loadgen_in_background(args: Vec<String>) -> JoinHandle<Run> {
    std::thread::spawn(move || loadgen(&args.iter().map(String::as_str).collect::<Vec<_>>()))
}

/// `loadgen publish ARGS`, with its exit status and stdout.
fn publish(args: &[&str]) -> (Option<i32>, String, String) {
    let output = Command::new(env!("CARGO_BIN_EXE_loadgen")).arg("publish").args(args).output().expect("run loadgen");
    (
        output.status.code(),
        String::from_utf8_lossy(&output.stdout).into_owned(),
        String::from_utf8_lossy(&output.stderr).into_owned(),
    )
}

/// Broadcast over two URLs: connection i on process i mod 2, publisher 0 on
/// the first and publisher 1 on the second, so messages cross Redis both
/// ways; every member gets every message once, in order.
#[test]
fn broadcast_across_two_processes_through_redis() {
    let redis = RedisServer::start();
    let (a, b) = (node(&redis), node(&redis));
    let _keepers = hold_room(&redis, &[&a, &b]);
    let (url_a, url_b) = (format!("ws://{}/feed", a.addr), format!("ws://{}/feed", b.addr));
    let run = loadgen(&[
        &url_a,
        &url_b,
        "--mode",
        "broadcast",
        "-c",
        "40",
        "--publishers",
        "2",
        "-R",
        "200",
        "-d",
        "1s",
        "--warmup",
        "200ms",
    ]);
    assert_eq!(run.code, Some(0), "{run:#?}");
    assert_eq!(run.int("/errors/total"), 0, "{run:#?}");
    let owed = run.int("/broadcast/expected_deliveries");
    assert!(owed > 0);
    assert_eq!(run.int("/broadcast/delivered"), owed);
    let (published, deliveries) = (run.int("/broadcast/published"), run.int("/broadcast/deliveries"));
    assert!(published > 0);
    assert_eq!(deliveries, 40 * published, "{:#}", run.report());
    // Per target: half the connections each, and together every delivery.
    let targets = run.report()["targets"].as_array().expect("targets").clone();
    assert_eq!(targets.len(), 2);
    assert_eq!((targets[0]["url"].as_str(), targets[1]["url"].as_str()), (Some(url_a.as_str()), Some(url_b.as_str())));
    assert!(targets.iter().all(|t| t["connections"] == 20));
    let counts: Vec<u64> = targets.iter().map(|t| t["latency_us"]["count"].as_u64().unwrap_or(0)).collect();
    assert_eq!(counts, [deliveries / 2, deliveries / 2]);
    assert!(run.stdout.contains("target 1     p50") && run.stdout.contains(&url_b), "{}", run.stdout);
    // Everyone left but the keepers.
    eventually("loadgen's members gone", || {
        stats(a.addr)["rooms"]["memberships"] == 1 && stats(b.addr)["rooms"]["memberships"] == 1
    });
}

/// The c100k measurement in small: idle connections on two processes, one
/// stamped POST /publish on the first reaches all of them, each timed from
/// the stamp; a publish without a stamp is counted apart, not as an error.
#[test]
fn idle_connections_time_a_stamped_publish_across_processes() {
    let redis = RedisServer::start();
    let (a, b) = (node(&redis), node(&redis));
    let json = temp_path("publish.json");
    let args = [format!("ws://{}/feed", a.addr), format!("ws://{}/feed", b.addr)];
    let idle = loadgen_in_background(
        [&args[..], &["--mode", "idle", "-c", "30", "-d", "4s", "--warmup", "0"].map(String::from)[..]].concat(),
    );
    eventually("30 members in the room", || {
        let members = |n: &ServerProcess| stats(n.addr)["rooms"]["memberships"].as_u64().unwrap_or(0);
        members(&a) + members(&b) == 30 && redis.subscribers("wsloop:/feed") == 2
    });
    let (code, stdout, stderr) = publish(&[
        &format!("http://{}", a.addr),
        "--room",
        "feed",
        "--token",
        TOKEN,
        "--size",
        "200",
        "--json",
        json.to_str().unwrap(),
    ]);
    assert_eq!(code, Some(0), "{stdout}{stderr}");
    assert!(stdout.contains("answer 200 after") && stdout.contains("delivered 15, dropped 0"), "{stdout}");
    let published: serde_json::Value = serde_json::from_slice(&std::fs::read(&json).unwrap()).unwrap();
    let _ = std::fs::remove_file(&json);
    assert_eq!(published["schema"], "loadgen-publish/1");
    assert_eq!((published["status"].as_u64(), published["delivered"].as_u64()), (Some(200), Some(15)));
    assert!(published["stamp"]["intended_ns"].as_u64() > Some(0));
    // Anything else in the room is not a delivery, nor an error.
    let headers = format!("Authorization: Bearer {TOKEN}\r\nContent-Type: text/plain\r\nContent-Length: 5\r\n");
    assert_eq!(post(a.addr, "/publish/feed", &headers, b"hello").status, 200);

    let run = idle.join().expect("loadgen thread");
    assert_eq!(run.code, Some(0), "{run:#?}");
    assert_eq!(run.int("/errors/total"), 0);
    assert_eq!(run.int("/idle/deliveries"), 30, "{:#}", run.report()["idle"]);
    assert_eq!(run.int("/idle/connections_reached"), 30);
    assert_eq!(run.int("/idle/unstamped"), 30);
    let max_us = run.float("/idle/latency_us/max");
    assert!(max_us > 0.0 && max_us < 4e6, "{max_us}");
    assert!(run.stdout.contains("deliveries   30 stamped messages reached 30 of 30 connections"), "{}", run.stdout);
    assert!(run.stdout.contains("unstamped    30 data messages without a valid stamp"), "{}", run.stdout);
}

/// A refused publish is a failure with the server's status; an unreachable
/// server is one line; a bad room is a usage error.
#[test]
fn publish_reports_what_went_wrong() {
    let server = ServerProcess::start(&["--mode", "broadcast", "--publish-token", TOKEN]);
    let url = format!("http://{}", server.addr);
    let (code, stdout, stderr) = publish(&[&url, "--room", "/feed", "--token", "wrong"]);
    assert_eq!(code, Some(1), "{stdout}{stderr}");
    assert!(stdout.contains("answer 401"), "{stdout}");
    assert!(stderr.contains("answered 401"), "{stderr}");
    // Publishing off: 404.
    let off = ServerProcess::start(&["--mode", "broadcast"]);
    let (code, stdout, _) = publish(&[&format!("http://{}", off.addr), "--room", "/feed", "--token", TOKEN]);
    assert_eq!(code, Some(1));
    assert!(stdout.contains("answer 404"), "{stdout}");
    let nowhere = format!("http://127.0.0.1:{}", closed_port());
    let (code, _, stderr) = publish(&[&nowhere, "--room", "/feed", "--token", TOKEN]);
    assert_eq!(code, Some(1));
    assert!(stderr.contains("cannot connect"), "{stderr}");
    let (code, _, stderr) = publish(&[&url, "--token", TOKEN]);
    assert_eq!(code, Some(2), "{stderr}");
    assert!(stderr.contains("no room"), "{stderr}");
}
