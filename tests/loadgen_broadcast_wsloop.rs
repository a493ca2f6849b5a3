//! loadgen `--mode broadcast` against `wsloop --mode broadcast`, both for
//! real: the server runs in-process on 127.0.0.1:0, loadgen as its binary.
//! Every delivery accounted for in clean runs (several rooms, publishers,
//! threads, open and closed loop, one room of 2,000); slow subscribers
//! under both slow-consumer policies reported apart. Short runs (about 1 to
//! 3 s each); the checks are on what the report says, never on how fast
//! anything was.

mod support;

use std::thread::JoinHandle;

use support::loadgen::{loadgen, Run};
use wsloop::{
    config::SlowConsumer,
    {Config, Mode},
};

/// A broadcast wsloop on its own thread, stopped when dropped.
struct Wsloop {
    /// `ws://127.0.0.1:PORT/`.
    url: String,
    /// Stops it.
    stop: wsloop::StopHandle,
    /// Its event loop.
    thread: Option<JoinHandle<()>>,
}

impl Wsloop {
    fn start(config: Config) -> Wsloop {
        let config = Config { listen: "127.0.0.1:0".parse().unwrap(), mode: Mode::Broadcast, ..config };
        let mut server = wsloop::Server::bind(config).expect("bind wsloop");
        let url = format!("ws://{}/", server.local_addr());
        let stop = server.stop_handle();
        let thread = std::thread::spawn(move || {
            server.run().expect("wsloop runs");
        });
        Wsloop { url, stop, thread: Some(thread) }
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

/// A broadcast run, 1 s after a 200 ms warm-up unless `extra` says otherwise.
fn broadcast(server: &Wsloop, extra: &[&str]) -> Run {
    let mut args = vec!["--url", &server.url, "--mode", "broadcast"];
    for (flag, default) in [("-d", "1s"), ("--warmup", "200ms")] {
        if !extra.contains(&flag) {
            args.extend_from_slice(&[flag, default]);
        }
    }
    args.extend_from_slice(extra);
    loadgen(&args)
}

/// Exit 0, no error of any kind, every delivery owed arrived, and each
/// message published in the window reached the `fan_out` members of its room.
fn assert_clean(run: &Run, fan_out: u64) {
    assert_eq!(run.code, Some(0), "{run:#?}");
    assert_eq!(run.int("/errors/total"), 0, "{run:#?}");
    let owed = run.int("/broadcast/expected_deliveries");
    assert!(owed > 0, "{run:#?}");
    assert_eq!(run.int("/broadcast/delivered"), owed);
    let published = run.int("/broadcast/published");
    assert!(published > 0);
    assert_eq!(run.int("/broadcast/deliveries"), fan_out * published, "{:#}", run.report());
    assert!(run.stdout.contains("result: ok"), "{}", run.stdout);
}

#[test]
fn closed_loop_over_rooms_and_threads() {
    let server = Wsloop::start(Config::default());
    // 200 connections in 4 rooms of 50, 8 publishers (2 per room), 2 loops, 4 in flight each.
    let run = broadcast(&server, &["-c", "200", "--rooms", "4", "--publishers", "8", "-t", "2", "-k", "4"]);
    assert_clean(&run, 50);
}

#[test]
fn open_loop_text_over_rooms_and_threads() {
    let server = Wsloop::start(Config::default());
    let run = broadcast(&server, &["-c", "90", "--rooms", "3", "--publishers", "6", "-t", "2", "-R", "2000", "--text"]);
    assert_clean(&run, 30);
    assert!(run.report()["latency_uncorrected_us"]["count"].as_u64() > Some(0));
}

/// The shape of the 10,000-subscriber target run, scaled down: one room,
/// one publisher at 10 messages per second; every message reaches everyone.
#[test]
fn one_room_of_2000_with_one_publisher() {
    let server = Wsloop::start(Config { max_connections: 2500, ..Config::default() });
    let run = broadcast(&server, &["-c", "2000", "-R", "10", "-d", "2s", "--warmup", "500ms"]);
    assert_clean(&run, 2000);
    assert_eq!(run.int("/broadcast/subscribers"), 2000);
}

/// A slow subscriber among 4, with 64 KiB messages (about 29 MB for each
/// member): the kernel takes a few MB per connection before wsloop holds
/// anything, then its --max-backpressure applies. 4 MiB leaves the others a
/// wide margin: to be over it one would have to stop reading for a third
/// of a second (which the loaded machines tests run on can still do to
/// 256 KiB).
fn slow_run(policy: SlowConsumer) -> Run {
    let server = Wsloop::start(Config {
        slow_consumer: policy,
        max_backpressure: 4 << 20,
        max_message_size: 1 << 20,
        ..Config::default()
    });
    broadcast(&server, &["-c", "4", "--slow", "1", "-R", "200", "--size", "64KiB", "-d", "2s"])
}

#[test]
fn slow_subscribers_with_slow_consumer_drop() {
    let run = slow_run(SlowConsumer::Drop);
    assert_clean(&run, 3);
    let (owed, got, lost) = (
        run.int("/broadcast/slow/expected_deliveries"),
        run.int("/broadcast/slow/delivered"),
        run.int("/broadcast/slow/lost"),
    );
    assert_eq!(run.int("/broadcast/slow/subscribers"), 1);
    assert!(lost > 0 && got > 0 && got + lost == owed, "owed {owed}, got {got}, lost {lost}");
    assert!(run.report()["broadcast"]["slow"]["closed_by_server"].as_object().unwrap().is_empty());
}

#[test]
fn slow_subscribers_with_slow_consumer_close() {
    let run = slow_run(SlowConsumer::Close);
    assert_clean(&run, 3);
    assert_eq!(run.int("/broadcast/slow/closed_by_server/1008"), 1, "{:#}", run.report());
    assert!(run.int("/broadcast/slow/lost") > 0);
    assert!(run.stdout.contains("closed by the server: 1008 x1"), "{}", run.stdout);
}
