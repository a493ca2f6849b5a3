//! The opening handshake: the request head parsed once, and the answer to
//! it decided, without I/O.
//!
//! [`parse_head`] is the one head parser: connections, tests and the fuzz
//! target all run it. It applies the head-size limits (431) and reports a
//! complete head with the parsed request, or a refusal. [`decide`] answers a
//! complete request: the 101 for an acceptable upgrade (tungstenite's
//! `create_response` validates the request and derives
//! `Sec-WebSocket-Accept`; `write_response` renders it), a plain HTTP
//! request to route, or an HTTP error. The connection acts on the
//! [`Decision`] in one place ([`crate::connection`]).
//!
//! We do not use tungstenite's `MidHandshake`: on failure it consumes the
//! stream and returns only an error, so there would be no way to answer 400,
//! 426 or 431, to route a plain HTTP request, or to enforce a head-size
//! limit below its 64 KiB `AttackCheck`.

use tungstenite::{
    handshake::server::{create_response, write_response, Request},
    http,
};

pub use crate::labels::{Failure, RefusalKind};
use crate::{
    config::{Config, Secret, MAX_REQUEST_HEAD},
    http::{publish_room, route, Response, Route, Routes},
};

/// What the handshake may accept, from [`crate::Config`].
#[derive(Debug, Clone, Default)]
pub struct Policy {
    /// If not empty, the `Origin` values allowed to connect (others get 403).
    pub allowed_origins: Vec<String>,
    /// Subprotocols the server speaks.
    pub subprotocols: Vec<String>,
    /// `--publish-token`: `POST /publish` is off without one.
    pub publish_token: Option<Secret>,
    /// Largest `POST /publish` body (`--max-message-size`).
    pub max_publish: usize,
}

impl Policy {
    /// The policy `config` sets.
    pub fn new(config: &Config) -> Self {
        Policy {
            allowed_origins: config.allowed_origin.clone(),
            subprotocols: config.subprotocol.clone(),
            publish_token: config.publish_token.clone(),
            max_publish: config.max_message_size,
        }
    }
}

/// A `POST /publish/ROOM` that passed every check but the body's own.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PublishRequest {
    /// The room: the path its members connected to, e.g. `/alerts`.
    pub room: String,
    /// `Content-Type: text/...`: a text message (the body must be UTF-8).
    pub text: bool,
    /// The body's length (`Content-Length`, within the limit).
    pub length: usize,
}

/// A plain (non-upgrade) HTTP request, routed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PlainRequest {
    pub route: Route,
    pub method: String,
    pub target: String,
}

/// A refused request: the response to send and why.
#[derive(Debug, Clone)]
pub struct Refusal {
    pub kind: RefusalKind,
    pub response: Response,
}

impl Refusal {
    pub fn new(kind: RefusalKind, status: u16, reason: impl Into<String>) -> Self {
        Refusal { kind, response: Response::error(status, reason) }
    }

    /// The refusal for a connection over `--max-connections`.
    pub fn too_many_connections() -> Self {
        Refusal::new(RefusalKind::TooManyConnections, 503, "server at its connection limit, try again later")
            .with_header("Retry-After", "1")
    }

    fn with_header(mut self, name: &'static str, value: &str) -> Self {
        self.response = self.response.with_header(name, value);
        self
    }
}

/// The answer to a complete request head.
#[derive(Debug)]
pub enum Decision {
    /// Upgrade: the 101 response bytes.
    Upgrade(Vec<u8>),
    /// Refuse with an HTTP error.
    Refuse(Refusal),
    /// A plain HTTP request for one of the pages.
    Plain(PlainRequest),
    /// A `POST /publish` whose body is to be read and published.
    Publish(PublishRequest),
}

/// Most header fields in a request head (Chrome sends about 15).
pub const MAX_HEADERS: usize = 64;

/// Room for the parsed header fields of one head.
pub type Headers<'b> = [httparse::Header<'b>; MAX_HEADERS];

/// An empty [`Headers`], for [`parse_head`].
pub const NO_HEADERS: Headers<'static> = [httparse::EMPTY_HEADER; MAX_HEADERS];

/// What [`parse_head`] made of the bytes received so far.
#[derive(Debug)]
pub enum Head<'h, 'b> {
    /// Not complete yet (and within the size limit): wait for more.
    Partial,
    /// A complete head of `len` bytes (what follows is the peer's next input).
    Complete { len: usize, request: httparse::Request<'h, 'b> },
    /// Not a head we will answer with anything but this error.
    Refused(Refusal),
}

/// Parses the request head at the start of `bytes`: the one head parser.
/// Over [`MAX_REQUEST_HEAD`] bytes or [`MAX_HEADERS`] fields is a 431; bytes
/// that are not HTTP a 400.
pub fn parse_head<'h, 'b>(bytes: &'b [u8], headers: &'h mut Headers<'b>) -> Head<'h, 'b> {
    let too_large =
        || Refusal::new(RefusalKind::HeadTooLarge, 431, format!("request head larger than {MAX_REQUEST_HEAD} bytes"));
    let mut request = httparse::Request::new(headers);
    match request.parse(bytes) {
        Ok(httparse::Status::Complete(len)) if len <= MAX_REQUEST_HEAD => Head::Complete { len, request },
        Ok(httparse::Status::Complete(_)) => Head::Refused(too_large()),
        Ok(httparse::Status::Partial) if bytes.len() > MAX_REQUEST_HEAD => Head::Refused(too_large()),
        Ok(httparse::Status::Partial) => Head::Partial,
        Err(httparse::Error::TooManyHeaders) => Head::Refused(Refusal::new(
            RefusalKind::HeadTooLarge,
            431,
            format!("more than {MAX_HEADERS} header fields"),
        )),
        Err(e) => Head::Refused(Refusal::new(RefusalKind::Malformed, 400, format!("malformed HTTP request: {e}"))),
    }
}

/// [`parse_head`] and then [`decide`]: the answer to the head at the start of
/// `bytes`, with the head's length (`None` while incomplete). What the
/// fuzz target and the benches drive.
pub fn answer(bytes: &[u8], policy: &Policy, routes: Routes) -> Option<(usize, Decision)> {
    let mut headers = NO_HEADERS;
    match parse_head(bytes, &mut headers) {
        Head::Partial => None,
        Head::Complete { len, request } => Some((len, decide(&request, policy, routes))),
        Head::Refused(refusal) => Some((bytes.len(), Decision::Refuse(refusal))),
    }
}

/// Decides what to answer to a complete request head.
pub fn decide(parsed: &httparse::Request<'_, '_>, policy: &Policy, routes: Routes) -> Decision {
    let method = parsed.method.unwrap_or("");
    let path = parsed.path.unwrap_or("/");
    let header = |name: &str| parsed.headers.iter().find(|h| h.name.eq_ignore_ascii_case(name)).map(|h| h.value);

    if header("upgrade").is_none() {
        if let (Some(room), "POST") = (publish_room(path), method) {
            return decide_publish(room, &header, policy);
        }
        let (method, target) = (method.to_string(), path.to_string());
        return Decision::Plain(PlainRequest { route: route(&method, &target, routes), method, target });
    }
    if routes == Routes::MetricsOnly {
        return Decision::Refuse(Refusal::new(
            RefusalKind::NotUpgrade,
            404,
            format!("{path}: this address serves /metrics and /stats only, not WebSocket"),
        ));
    }
    if method != "GET" {
        return Decision::Refuse(
            Refusal::new(RefusalKind::Malformed, 405, format!("a WebSocket upgrade must use GET, not {method}"))
                .with_header("Allow", "GET"),
        );
    }
    if let Some(version) = header("sec-websocket-version") {
        if version.trim_ascii() != b"13" {
            let shown = String::from_utf8_lossy(version).into_owned();
            return Decision::Refuse(
                Refusal::new(
                    RefusalKind::UnsupportedVersion,
                    426,
                    format!("unsupported WebSocket version {shown:?}, this server speaks 13"),
                )
                .with_header("Sec-WebSocket-Version", "13"),
            );
        }
    }
    if !policy.allowed_origins.is_empty() {
        let origin = header("origin").map(|o| String::from_utf8_lossy(o).into_owned());
        let allowed = origin.as_deref().is_some_and(|o| policy.allowed_origins.iter().any(|a| a == o));
        if !allowed {
            return Decision::Refuse(Refusal::new(
                RefusalKind::OriginNotAllowed,
                403,
                format!("origin {} is not allowed", origin.as_deref().unwrap_or("(none)")),
            ));
        }
    }
    match upgrade_response(parsed, header("sec-websocket-protocol"), policy) {
        Ok(response) => Decision::Upgrade(response),
        Err(reason) => Decision::Refuse(Refusal::new(RefusalKind::Malformed, 400, reason)),
    }
}

/// Checks a `POST /publish/ROOM` head: publishing on, the token, the length
/// (before a byte of body is read), the kind of message.
fn decide_publish<'b>(room: &str, header: &dyn Fn(&str) -> Option<&'b [u8]>, policy: &Policy) -> Decision {
    let refuse = |status, reason: &str| Decision::Refuse(Refusal::new(RefusalKind::Publish, status, reason));
    let Some(token) = &policy.publish_token else {
        return refuse(404, "publishing is off: start wsloop with --publish-token");
    };
    let offered = header("authorization").and_then(|v| bearer_token(v));
    if !offered.is_some_and(|offered| same_secret(offered, token.0.as_bytes())) {
        return Decision::Refuse(
            Refusal::new(RefusalKind::Publish, 401, "POST /publish needs Authorization: Bearer with the publish token")
                .with_header("WWW-Authenticate", "Bearer"),
        );
    }
    if header("transfer-encoding").is_some() {
        return refuse(411, "send the message with Content-Length (chunked bodies are not accepted)");
    }
    let Some(length) = header("content-length") else {
        return refuse(411, "POST /publish needs Content-Length");
    };
    let Some(length) = std::str::from_utf8(length).ok().and_then(|l| l.trim().parse::<usize>().ok()) else {
        return refuse(400, "Content-Length is not a number");
    };
    if length > policy.max_publish {
        return refuse(413, &format!("a {length}-byte message is over the {}-byte limit", policy.max_publish));
    }
    let text = header("content-type").is_some_and(|t| t.len() >= 5 && t[..5].eq_ignore_ascii_case(b"text/"));
    Decision::Publish(PublishRequest { room: room.to_string(), text, length })
}

/// The token of an `Authorization: Bearer TOKEN` value.
fn bearer_token(value: &[u8]) -> Option<&[u8]> {
    let value = value.trim_ascii();
    if value.len() < 7 || !value[..7].eq_ignore_ascii_case(b"bearer ") {
        return None;
    }
    Some(value[7..].trim_ascii())
}

/// Compares a secret in time that depends only on the lengths, never on
/// where the first difference is (so the token cannot be guessed byte by
/// byte from response times).
fn same_secret(offered: &[u8], secret: &[u8]) -> bool {
    let mut difference = u8::from(offered.len() != secret.len());
    for (i, s) in secret.iter().enumerate() {
        difference |= s ^ offered.get(i).copied().unwrap_or(0);
    }
    std::hint::black_box(difference) == 0
}

/// The 101 for an upgrade request that passed our checks, if tungstenite
/// finds it valid too (else why not).
fn upgrade_response(
    parsed: &httparse::Request<'_, '_>,
    offered: Option<&[u8]>,
    policy: &Policy,
) -> Result<Vec<u8>, String> {
    let request = to_http_request(parsed)?;
    let mut response = create_response(&request).map_err(|e| format!("bad WebSocket upgrade request: {e}"))?;
    if let Some(chosen) = choose_subprotocol(offered, &policy.subprotocols) {
        if let Ok(value) = http::HeaderValue::from_str(chosen) {
            response.headers_mut().insert("Sec-WebSocket-Protocol", value);
        }
    }
    let mut bytes = Vec::with_capacity(160);
    write_response(&mut bytes, &response).map_err(|e| format!("bad WebSocket upgrade request: {e}"))?;
    Ok(bytes)
}

/// The first subprotocol the client offers that the server speaks
/// (RFC 6455 §4.2.2: the server selects one of the client's values, or none).
fn choose_subprotocol<'a>(offered: Option<&[u8]>, supported: &'a [String]) -> Option<&'a str> {
    let offered = std::str::from_utf8(offered?).ok()?;
    offered.split(',').map(str::trim).find_map(|p| supported.iter().find(|s| s.as_str() == p)).map(String::as_str)
}

/// The parsed head as the `http::Request` tungstenite validates.
fn to_http_request(parsed: &httparse::Request<'_, '_>) -> Result<Request, String> {
    let mut builder = http::Request::builder()
        .method(http::Method::GET)
        .uri(parsed.path.unwrap_or("/"))
        .version(if parsed.version == Some(1) { http::Version::HTTP_11 } else { http::Version::HTTP_10 });
    for header in parsed.headers.iter() {
        builder = builder.header(header.name, header.value);
    }
    builder.body(()).map_err(|e| format!("bad request header: {e}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    const GOOD: &str = "GET /chat HTTP/1.1\r\nHost: example.com\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
                        Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n";

    fn decide_on(head: &str, policy: &Policy) -> Decision {
        let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
        let mut parsed = httparse::Request::new(&mut headers);
        assert!(parsed.parse(head.as_bytes()).unwrap().is_complete());
        decide(&parsed, policy, Routes::All)
    }

    fn upgrade(head: &str, policy: &Policy) -> String {
        match decide_on(head, policy) {
            Decision::Upgrade(bytes) => String::from_utf8(bytes).unwrap(),
            other => panic!("expected an upgrade, got {other:?}"),
        }
    }

    fn refusal(head: &str, policy: &Policy) -> Refusal {
        match decide_on(head, policy) {
            Decision::Refuse(refusal) => refusal,
            other => panic!("expected a refusal, got {other:?}"),
        }
    }

    #[test]
    fn accepts_the_rfc_example() {
        let response = upgrade(GOOD, &Policy::default());
        assert!(response.starts_with("HTTP/1.1 101 Switching Protocols\r\n"));
        // RFC 6455 §1.3's worked example.
        assert!(response.contains("s3pPLMBiTxaQ9kYGzzhZRbK+xOo="));
        assert!(!response.to_ascii_lowercase().contains("sec-websocket-extensions"));
    }

    #[test]
    fn refuses_with_the_right_status() {
        let policy = Policy::default();
        let cases = [
            (GOOD.replace("Version: 13", "Version: 8"), 426, RefusalKind::UnsupportedVersion),
            (GOOD.replace("Connection: Upgrade", "Connection: keep-alive"), 400, RefusalKind::Malformed),
            (GOOD.replace("Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n", ""), 400, RefusalKind::Malformed),
            (GOOD.replace("dGhlIHNhbXBsZSBub25jZQ==", "short"), 400, RefusalKind::Malformed),
            (GOOD.replace("Sec-WebSocket-Version: 13\r\n", ""), 400, RefusalKind::Malformed),
            (GOOD.replace("GET", "POST"), 405, RefusalKind::Malformed),
            (GOOD.replace("HTTP/1.1", "HTTP/1.0"), 400, RefusalKind::Malformed),
        ];
        for (head, status, kind) in cases {
            let r = refusal(&head, &policy);
            assert_eq!((r.response.status, r.kind), (status, kind), "{head}");
            assert!(!r.response.reason().is_empty());
        }
        let r = refusal(&GOOD.replace("Version: 13", "Version: 8"), &policy);
        assert!(r.response.headers.contains(&("Sec-WebSocket-Version", "13".to_string())));
    }

    #[test]
    fn plain_requests_are_routed() {
        let plain = GOOD.replace("Upgrade: websocket\r\n", "").replace("GET /chat", "GET /stats");
        match decide_on(&plain, &Policy::default()) {
            Decision::Plain(request) => assert_eq!(request.route, Route::Stats),
            other => panic!("{other:?}"),
        }
        let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
        let mut parsed = httparse::Request::new(&mut headers);
        parsed.parse(GOOD.as_bytes()).unwrap();
        match decide(&parsed, &Policy::default(), Routes::MetricsOnly) {
            Decision::Refuse(r) => assert_eq!(r.response.status, 404),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn origin_allowlist() {
        let policy = Policy { allowed_origins: vec!["https://good.example".into()], ..Policy::default() };
        assert_eq!(refusal(GOOD, &policy).response.status, 403);
        let with_origin = GOOD.replace("Host:", "Origin: https://good.example\r\nHost:");
        upgrade(&with_origin, &policy);
        let bad_origin = GOOD.replace("Host:", "Origin: https://evil.example\r\nHost:");
        assert_eq!(refusal(&bad_origin, &policy).kind, RefusalKind::OriginNotAllowed);
    }

    #[test]
    fn selects_exactly_one_offered_subprotocol() {
        let policy = Policy { subprotocols: vec!["b".into(), "c".into()], ..Policy::default() };
        let offered = GOOD.replace("Host:", "Sec-WebSocket-Protocol: a, b, c\r\nHost:");
        let response = upgrade(&offered, &policy).to_ascii_lowercase();
        assert!(response.contains("sec-websocket-protocol: b\r\n"), "{response}");
        let none = GOOD.replace("Host:", "Sec-WebSocket-Protocol: x\r\nHost:");
        let response = upgrade(&none, &policy).to_ascii_lowercase();
        assert!(!response.contains("sec-websocket-protocol"));
    }
}
