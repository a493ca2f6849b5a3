//! Fault injection: small misbehaving servers (std threads, blocking
//! tungstenite or raw TCP) on 127.0.0.1:0. loadgen must name each fault
//! with the right kind and exit non-zero.

mod support;

use std::{
    io::{Read, Write},
    net::{TcpListener, TcpStream},
    thread,
    time::Duration,
};

use support::loadgen::{loadgen, Run};
use tungstenite::{protocol::frame::coding::CloseCode, protocol::CloseFrame, Message, WebSocket};

/// Serves every connection on its own thread with `serve`; returns the URL.
fn fake_server(serve: fn(TcpStream)) -> String {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("ws://{}/", listener.local_addr().unwrap());
    thread::spawn(move || {
        for stream in listener.incoming().flatten() {
            thread::spawn(move || serve(stream));
        }
    });
    url
}

/// A blocking WebSocket echo server whose `n`th message (from 1) on each
/// connection goes through `fault` instead of being echoed.
fn echo_with_fault(stream: TcpStream, n: usize, fault: impl Fn(&mut WebSocket<TcpStream>, Message) -> bool) {
    let Ok(mut ws) = tungstenite::accept(stream) else { return };
    let mut count = 0;
    while let Ok(message) = ws.read() {
        if !(message.is_binary() || message.is_text()) {
            continue;
        }
        count += 1;
        let keep_going = if count == n { fault(&mut ws, message) } else { ws.send(message).is_ok() };
        if !keep_going {
            break;
        }
    }
    // Finish whatever close handshake is under way.
    while ws.read().is_ok() {}
}

fn run(url: &str, extra: &[&str]) -> Run {
    let mut args = vec!["--url", url, "-d", "1s", "--warmup", "0", "--message-timeout", "500ms"];
    if !extra.contains(&"-c") {
        args.extend_from_slice(&["-c", "1"]);
    }
    args.extend_from_slice(extra);
    loadgen(&args)
}

fn assert_failed_with(run: &Run, kind: &str, count: u64) {
    assert_eq!(run.code, Some(1), "{run:#?}");
    assert_eq!(run.int(&format!("/errors/{kind}")), count, "{kind}: {run:#?}");
    assert_eq!(run.report()["result"]["ok"], false);
    assert!(run.report()["errors"]["first"][kind].is_string(), "the first {kind} is described");
    assert!(run.stdout.contains("result: FAILED"), "{}", run.stdout);
    let reason = run.stderr.lines().last().unwrap_or_default();
    assert!(reason.contains("exceed --max-errors 0") && reason.contains(kind), "{}", run.stderr);
}

#[test]
fn dropped_message_is_missing() {
    let url = fake_server(|stream| echo_with_fault(stream, 5, |_, _| true));
    // Pipelined: the gap shows when the next echo arrives.
    let pipelined = run(&url, &["--pipeline", "4"]);
    assert_failed_with(&pipelined, "missing", 1);
    assert_eq!(pipelined.int("/errors/corrupt"), 0);
    assert_eq!(pipelined.int("/errors/duplicate"), 0);
    // One in flight: the connection stalls until --message-timeout, then goes on.
    let closed_loop = run(&url, &["--pipeline", "1"]);
    assert_failed_with(&closed_loop, "missing", 1);
    assert!(closed_loop.int("/messages/received") > 5, "traffic resumed after the timeout");
}

#[test]
fn corrupted_message_is_corrupt() {
    let url = fake_server(|stream| {
        echo_with_fault(stream, 5, |ws, message| {
            let mut payload = message.into_data().to_vec();
            let last = payload.len() - 1;
            payload[last] ^= 0x01;
            ws.send(Message::binary(payload)).is_ok()
        })
    });
    let run = run(&url, &["--pipeline", "2"]);
    assert_failed_with(&run, "corrupt", 1);
    assert_eq!(run.int("/errors/missing"), 0);
    assert_eq!(run.int("/errors/duplicate"), 0);
}

#[test]
fn repeated_message_is_duplicate() {
    let url = fake_server(|stream| {
        echo_with_fault(stream, 5, |ws, message| ws.send(message.clone()).is_ok() && ws.send(message).is_ok())
    });
    let run = run(&url, &[]);
    assert_failed_with(&run, "duplicate", 1);
    assert_eq!(run.int("/errors/corrupt"), 0);
}

#[test]
fn server_closing_mid_run_is_closed() {
    let url = fake_server(|stream| {
        echo_with_fault(stream, 10, |ws, _| {
            let _ = ws.close(Some(CloseFrame { code: CloseCode::Away, reason: "bye".into() }));
            true
        })
    });
    let run = run(&url, &[]);
    assert_failed_with(&run, "closed", 1);
    assert_eq!(run.int("/connections/dropped"), 1);
    assert!(run.report()["errors"]["first"]["closed"].as_str().unwrap().contains("1001"));
}

#[test]
fn server_vanishing_mid_run_is_closed() {
    // No close frame: the TCP connection just ends.
    let url = fake_server(|stream| {
        let Ok(mut ws) = tungstenite::accept(stream) else { return };
        for _ in 0..10 {
            match ws.read() {
                Ok(message) => {
                    let _ = ws.send(message);
                }
                Err(_) => return,
            }
        }
        let _ = ws.get_mut().shutdown(std::net::Shutdown::Both);
    });
    let run = run(&url, &[]);
    assert_failed_with(&run, "closed", 1);
}

#[test]
fn server_breaking_the_framing_is_protocol() {
    let url = fake_server(|stream| {
        echo_with_fault(stream, 3, |ws, _| {
            // A masked frame: servers must never send one (RFC 6455 §5.1).
            let _ = ws.get_mut().write_all(&[0x82, 0x81, 1, 2, 3, 4, 0]);
            thread::sleep(Duration::from_secs(3));
            false
        })
    });
    let run = run(&url, &[]);
    assert_failed_with(&run, "protocol", 1);
}

#[test]
fn server_that_never_answers_the_handshake_times_out() {
    let url = fake_server(|mut stream| {
        // Read the request, say nothing, hold the connection until loadgen leaves.
        let mut buf = [0u8; 4096];
        while matches!(stream.read(&mut buf), Ok(n) if n > 0) {}
    });
    let run = run(&url, &["-c", "3", "--connect-timeout", "500ms"]);
    assert_eq!(run.code, Some(1), "{run:#?}");
    assert_eq!(run.int("/handshake/failures/handshake_timeout"), 3);
    assert_eq!(run.int("/errors/connect_failures"), 3);
    let reason = run.stderr.lines().last().unwrap_or_default();
    assert!(reason.contains("unreachable") && reason.contains("handshake_timeout 3"), "{}", run.stderr);
}

#[test]
fn http_error_status_is_counted_by_code() {
    let url = fake_server(|mut stream| {
        let mut buf = [0u8; 4096];
        let _ = stream.read(&mut buf);
        let _ = stream.write_all(b"HTTP/1.1 503 Service Unavailable\r\nContent-Length: 0\r\nConnection: close\r\n\r\n");
    });
    let run = run(&url, &["-c", "2"]);
    assert_eq!(run.code, Some(1), "{run:#?}");
    assert_eq!(run.int("/handshake/failures/http_status"), 2);
    assert_eq!(run.int("/handshake/http_statuses/503"), 2);
}

#[test]
fn wrong_accept_key_is_a_bad_response() {
    let url = fake_server(|mut stream| {
        let mut buf = [0u8; 4096];
        let _ = stream.read(&mut buf);
        let _ = stream.write_all(
            b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
              Sec-WebSocket-Accept: c2VjcmV0IGJ1dCB3cm9uZyE=\r\n\r\n",
        );
        thread::sleep(Duration::from_secs(2));
    });
    let run = run(&url, &["-c", "2"]);
    assert_eq!(run.code, Some(1), "{run:#?}");
    assert_eq!(run.int("/handshake/failures/bad_response"), 2);
    assert!(run.report()["errors"]["first"]["bad_response"].as_str().unwrap().contains("Sec-WebSocket-Accept"));
}

#[test]
fn tolerated_errors_do_not_fail_the_run() {
    let url = fake_server(|stream| echo_with_fault(stream, 5, |_, _| true));
    let run = run(&url, &["--pipeline", "4", "--max-errors", "1"]);
    assert_eq!(run.code, Some(0), "{run:#?}");
    assert_eq!(run.int("/errors/missing"), 1);
}
