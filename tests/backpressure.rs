//! A client that sends but never reads: the server stops reading it once its
//! pending output passes `--max-backpressure`, its buffer stays bounded, the
//! other clients do not notice, and if it stays stuck it is closed.

mod support;

use std::{
    io::Write,
    sync::{
        atomic::{AtomicBool, Ordering},
        Arc,
    },
    time::Duration,
};

use support::*;
use tungstenite::Message;
use wsloop::Config;

const BACKPRESSURE: usize = 64 << 10;
const MESSAGE: usize = 32 << 10;

/// What a flooder saw.
struct Flood {
    /// Bytes the kernel accepted from it.
    sent: usize,
    /// Whether the server dropped the connection (reset or broken pipe).
    dropped: bool,
}

/// Floods `addr` with `MESSAGE`-byte frames, never reading, until `stop` or
/// until the server drops the connection (bounded by `WAIT`).
fn spawn_flooder(addr: std::net::SocketAddr, stop: Arc<AtomicBool>) -> std::thread::JoinHandle<Flood> {
    std::thread::spawn(move || {
        let mut stream = raw_upgrade(addr);
        stream.set_write_timeout(Some(Duration::from_millis(100))).unwrap();
        let bytes = frame(BINARY, &[0x5a; MESSAGE]);
        let mut sent = 0;
        let deadline = std::time::Instant::now() + WAIT;
        while !stop.load(Ordering::Relaxed) && std::time::Instant::now() < deadline {
            // Resume mid-frame after a partial write, so the stream stays valid.
            let offset = sent % bytes.len();
            match stream.write(&bytes[offset..]) {
                Ok(n) => sent += n,
                Err(e) if matches!(e.kind(), std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut) => {}
                Err(_) => return Flood { sent, dropped: true },
            }
        }
        Flood { sent, dropped: false }
    })
}

#[test]
fn a_client_that_never_reads_is_paused_bounded_and_harmless() {
    let server = TestServer::start(Config {
        max_backpressure: BACKPRESSURE,
        max_message_size: MESSAGE,
        shutdown_timeout: Duration::from_millis(300),
        ..Config::default()
    });
    let stop = Arc::new(AtomicBool::new(false));
    let flooder = spawn_flooder(server.addr, stop.clone());

    // The well-behaved client keeps its service while the flood is stuck.
    let mut good = connect(server.addr);
    std::thread::sleep(Duration::from_millis(300));
    for i in 0..500 {
        good.send(Message::binary(vec![i as u8; 512])).unwrap();
        assert_eq!(next_message(&mut good), Message::binary(vec![i as u8; 512]));
    }
    stop.store(true, Ordering::Relaxed);
    let flood = flooder.join().unwrap();
    assert!(!flood.dropped, "the default idle timeout (120 s) must not have closed it yet");
    assert!(flood.sent > 4 * BACKPRESSURE, "the flooder got {} bytes out: not enough to test anything", flood.sent);

    let metrics = server.finish().metrics;
    assert!(metrics.backpressure_events >= 1, "reading was never paused");
    // Pending output never exceeds the limit plus one reply (and its header).
    let bound = (BACKPRESSURE + MESSAGE + 64) as u64;
    assert!(metrics.pending_output_peak <= bound, "peak {} over {bound}", metrics.pending_output_peak);
    assert!(
        metrics.pending_output_peak > BACKPRESSURE as u64 / 2,
        "peak {} never reached the limit",
        metrics.pending_output_peak
    );
}

#[test]
fn a_connection_stuck_over_the_limit_for_the_idle_timeout_is_closed() {
    let server = TestServer::start(Config {
        max_backpressure: BACKPRESSURE,
        max_message_size: MESSAGE,
        idle_timeout: Duration::from_millis(800),
        ..Config::default()
    });
    let flooder = spawn_flooder(server.addr, Arc::new(AtomicBool::new(false)));
    // Meanwhile the loop stays responsive to others.
    let mut good = connect(server.addr);
    for i in 0..50 {
        good.send(Message::text(format!("{i}"))).unwrap();
        assert_eq!(next_message(&mut good), Message::text(format!("{i}")));
    }
    let flood = flooder.join().unwrap();
    assert!(flood.dropped, "the server never dropped the stuck connection");
    drop(good);
    let metrics = server.finish().metrics;
    assert_eq!(metrics.slow_consumer_closes, 1);
    assert_eq!(metrics.closes.get(&1008), Some(&1));
}
