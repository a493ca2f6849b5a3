//! The opening handshake: arbitrary bytes as a request head, through the
//! parser and decision the server runs on it, under each policy and set of routes. Checks,
//! besides "no panic": a decision for every complete head and none for an
//! incomplete one; an upgrade only for an upgrade the policy allows, with the
//! right `Sec-WebSocket-Accept`; a refusal with an HTTP error status; every
//! answer bounded by the head's size.
//!
//! The call under test is `decide` below: repoint it there.

#![no_main]

use std::sync::OnceLock;

use libfuzzer_sys::fuzz_target;
use tungstenite::handshake::derive_accept_key;
use wsloop::{
    config::{Secret, MAX_REQUEST_HEAD},
    handshake::{answer, Decision, Policy, MAX_HEADERS},
    http::Routes,
};

/// The publish token of the policy that turns publishing on (the seeds use it).
const TOKEN: &str = "fuzz-token";

/// The server's decision on `head` (its one head parser, then the
/// decision); `None` while the head is incomplete.
fn decide(head: &[u8], policy: &Policy, routes: Routes) -> Option<Decision> {
    answer(head, policy, routes).map(|(_, decision)| decision)
}

fuzz_target!(|head: &[u8]| {
    for (policy, routes) in cases() {
        check(head, policy, *routes, decide(head, policy, *routes));
    }
});

fn cases() -> &'static [(Policy, Routes)] {
    static CASES: OnceLock<Vec<(Policy, Routes)>> = OnceLock::new();
    CASES.get_or_init(|| {
        let strict = Policy {
            allowed_origins: vec!["https://a.example".into()],
            subprotocols: vec!["chat".into(), "superchat".into()],
            // Publishing on, with a small body limit.
            publish_token: Some(Secret(TOKEN.into())),
            max_publish: 1000,
        };
        vec![
            (Policy::default(), Routes::All),
            (strict, Routes::All),
            (Policy::default(), Routes::MetricsOnly),
            (Policy::default(), Routes::None),
        ]
    })
}

fn check(head: &[u8], policy: &Policy, routes: Routes, decision: Option<Decision>) {
    let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
    let mut request = httparse::Request::new(&mut headers);
    let parsed = request.parse(head);
    let complete = !matches!(parsed, Ok(httparse::Status::Partial));
    let Some(decision) = decision else {
        assert!(!complete, "no decision for a complete head ({parsed:?})");
        return;
    };
    if !complete {
        // The one answer to an incomplete head: it is already over the limit.
        let too_large = matches!(&decision, Decision::Refuse(r) if r.response.status == 431);
        assert!(too_large && head.len() > MAX_REQUEST_HEAD, "a decision on an incomplete head: {decision:?}");
        return;
    }
    let header = |name: &str| request.headers.iter().find(|h| h.name.eq_ignore_ascii_case(name)).map(|h| h.value);
    // The reasons quote the request (lossily: an invalid byte becomes three).
    let bound = 4 * head.len() + 1024;
    match decision {
        Decision::Upgrade(response) => {
            assert!(routes != Routes::MetricsOnly, "an upgrade on the metrics-only listener");
            assert!(parsed.is_ok() && request.method == Some("GET"), "an upgrade for a non-GET request");
            assert!(response.starts_with(b"HTTP/1.1 101 ") && response.ends_with(b"\r\n\r\n"));
            assert!(response.len() <= 1024, "a {}-byte 101 response", response.len());
            let key = header("sec-websocket-key").expect("an upgrade without Sec-WebSocket-Key");
            let accept = format!("sec-websocket-accept: {}\r\n", derive_accept_key(key));
            let text = String::from_utf8(response).expect("a 101 response that is not UTF-8").to_ascii_lowercase();
            assert!(text.contains(&accept.to_ascii_lowercase()), "wrong accept key in {text:?}");
            if !policy.allowed_origins.is_empty() {
                let origin = header("origin").expect("an upgrade without Origin under an allowlist");
                assert!(policy.allowed_origins.iter().any(|o| o.as_bytes() == origin), "an origin not allowed");
            }
            if let Some(line) = text.lines().find(|l| l.starts_with("sec-websocket-protocol:")) {
                let chosen = line["sec-websocket-protocol:".len()..].trim();
                assert!(policy.subprotocols.iter().any(|p| p == chosen), "a subprotocol the server does not speak");
            }
        }
        Decision::Refuse(refusal) => {
            let status = refusal.response.status;
            assert!((400..600).contains(&status), "a refusal with status {status}");
            let len = refusal.response.to_bytes().len();
            assert!(len <= bound, "a {len}-byte refusal for a {}-byte head", head.len());
        }
        Decision::Publish(publish) => {
            assert!(parsed.is_ok() && request.method == Some("POST"), "a publish that is not a POST");
            let token = policy.publish_token.as_ref().expect("a publish with publishing off");
            let auth = header("authorization").expect("a publish without Authorization");
            let offered = String::from_utf8_lossy(auth);
            assert!(offered.trim().ends_with(&token.0), "a publish with the wrong token: {offered:?}");
            assert!(publish.length <= policy.max_publish, "a publish over the limit");
            assert!(publish.room.starts_with('/') && publish.room.len() < head.len());
        }
        Decision::Plain(plain) => {
            assert!(parsed.is_ok(), "a page for a malformed head");
            assert!(plain.method.len() + plain.target.len() <= head.len());
        }
    }
}
